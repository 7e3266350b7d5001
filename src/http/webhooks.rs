//! The webhook routes (SPEC section 9), for an admin or the tenant's own key:
//! `POST/GET /admin/tenants/{id}/webhooks`, `DELETE /admin/tenants/{id}/webhooks/{endpoint_id}`,
//! `GET /admin/tenants/{id}/webhook-deliveries?status=&limit=` and
//! `POST /admin/tenants/{id}/webhook-deliveries/{delivery_id}/redeliver`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::admin::{parse_tenant_path, tenant_not_found};
use super::auth::authenticate;
use super::headers::HeaderText;
use super::{parse_json, respond, ApiError, AppState, Query};
use crate::domain::audit::AuditEvent;
use crate::domain::auth::{Denial, Principal, Scope};
use crate::domain::TenantId;
use crate::store::webhooks::{
    self as store, DeliveryRow, EndpointRow, NewEndpoint, Redelivery, EVENTS,
};
use crate::webhooks::address::{self, TargetPolicy};
use crate::webhooks::signing;

/// Longest description of an endpoint, in characters.
const DESCRIPTION_MAX_CHARS: usize = 500;
const DELIVERY_DEFAULT_LIMIT: i64 = 100;
const DELIVERY_MAX_LIMIT: i64 = 1_000;
const DELIVERY_STATUSES: [&str; 3] = ["pending", "succeeded", "failed"];

/// An admin, or a key of this very tenant; the tenant must exist.
async fn tenant_manager(
    state: &AppState,
    authorization: HeaderText,
    tenant_text: &str,
) -> Result<(Principal, TenantId), ApiError> {
    let principal = authenticate(state, &authorization).await?;
    let tenant_id = parse_tenant_path(tenant_text)?;
    match principal.scope {
        Scope::Admin => {}
        Scope::Tenant(own) if own == tenant_id => {}
        Scope::Tenant(_) => return Err(Denial::OtherTenant.into()),
        Scope::Service => return Err(Denial::AdminOnly.into()),
    }
    if crate::store::governance::tenant(&state.pool, tenant_id)
        .await?
        .is_none()
    {
        return Err(tenant_not_found());
    }
    Ok((principal, tenant_id))
}

fn parse_id(text: &str, code: &'static str, what: &str, what_vi: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::bad_request(
            code,
            format!("the {what} must be a UUID"),
            format!("{what_vi} phải là một UUID"),
        )
    })
}

fn endpoint_json(endpoint: &EndpointRow) -> serde_json::Value {
    json!({
        "endpoint_id": endpoint.endpoint_id,
        "tenant_id": endpoint.tenant_id,
        "url": endpoint.url,
        "events": endpoint.events,
        "description": endpoint.description_opt,
        "created_at": endpoint.created_at,
    })
}

fn delivery_json(delivery: &DeliveryRow) -> serde_json::Value {
    let status_vi = match delivery.status.as_str() {
        "succeeded" => "đã gửi thành công",
        "failed" => "gửi thất bại",
        _ => "đang chờ gửi",
    };
    json!({
        "delivery_id": delivery.delivery_id,
        "webhook_id": delivery.delivery_id,
        "tenant_id": delivery.tenant_id,
        "endpoint_id": delivery.endpoint_id,
        "event": delivery.event,
        "scan_id": delivery.scan_id,
        "status": delivery.status,
        "status_vi": status_vi,
        "attempts": delivery.attempts,
        "total_attempts": delivery.total_attempts,
        "redeliveries": delivery.redeliveries,
        "next_attempt_at": (delivery.status == "pending").then_some(delivery.next_attempt_at),
        "last_attempt_at": delivery.last_attempt_at_opt,
        "last_status_code": delivery.last_status_code_opt,
        "last_error": delivery.last_error_opt,
        "created_at": delivery.created_at,
        "completed_at": delivery.completed_at_opt,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    url: String,
    events: Vec<String>,
    description: Option<String>,
}

/// The URL without its query string, for the audit log (a query may carry a receiver's token).
fn url_for_audit(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

pub async fn register(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
    body: Result<bytes::Bytes, ApiError>,
) -> Response {
    respond(
        async {
            let (principal, tenant_id) =
                tenant_manager(&state, authorization, &tenant_text).await?;
            let request: RegisterBody = parse_json(&body?)?;
            let events = validate_events(request.events)?;
            let description_opt = validate_description(request.description)?;
            let policy = TargetPolicy::from_settings(&state.settings.webhooks);
            let url = address::parse_url(request.url.trim(), policy).map_err(|refusal| {
                ApiError::bad_request("invalid_webhook_url", refusal.message, refusal.message_vi)
            })?;
            address::check_target(&url, policy).await.map_err(|refusal| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "webhook_target_refused",
                    refusal.message,
                    refusal.message_vi,
                )
            })?;
            let limit = state.settings.webhooks.max_endpoints_per_tenant;
            if store::endpoint_count(&state.pool, tenant_id).await? >= limit {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "too_many_webhooks",
                    format!("this tenant already has {limit} webhook endpoints; delete one first"),
                    format!("tổ chức này đã có {limit} điểm nhận webhook; hãy xóa bớt trước"),
                ));
            }
            let endpoint = NewEndpoint {
                tenant_id,
                endpoint_id: Uuid::now_v7(),
                url: url.to_string(),
                events,
                description_opt,
                signing_secret: signing::new_secret(),
            };
            let event = AuditEvent::webhook_registered(
                &principal,
                tenant_id,
                endpoint.endpoint_id,
                &url_for_audit(&url),
                &endpoint.events,
            );
            let stored = store::create_endpoint(&state.pool, &endpoint, &event)
                .await?
                .ok_or_else(tenant_not_found)?;
            let mut body = endpoint_json(&stored);
            body["signing_secret"] = json!(endpoint.signing_secret);
            body["message"] = json!(
                "keep the signing secret: it is shown only now, and verifies each delivery's webhook-signature"
            );
            body["message_vi"] = json!(
                "hãy lưu khóa ký: khóa chỉ hiển thị lần này, dùng để xác minh webhook-signature của mỗi lần gửi"
            );
            Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
        }
        .await,
    )
}

fn validate_events(events: Vec<String>) -> Result<Vec<String>, ApiError> {
    let allowed = EVENTS.join(", ");
    if events.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("events must list at least one of {allowed}"),
            format!("events phải có ít nhất một trong {allowed}"),
        ));
    }
    let mut chosen: Vec<String> = Vec::new();
    for event in events {
        if !EVENTS.contains(&event.as_str()) {
            let shown = crate::domain::client_text::shown(&event, 64);
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("unknown event \"{shown}\": events are {allowed}"),
                format!("sự kiện không hợp lệ \"{shown}\": các sự kiện là {allowed}"),
            ));
        }
        if !chosen.contains(&event) {
            chosen.push(event);
        }
    }
    Ok(chosen)
}

fn validate_description(description_opt: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(description) = description_opt else {
        return Ok(None);
    };
    if description.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("description must be at most {DESCRIPTION_MAX_CHARS} characters"),
            format!("description tối đa {DESCRIPTION_MAX_CHARS} ký tự"),
        ));
    }
    if description.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "description must not contain control characters",
            "description không được chứa ký tự điều khiển",
        ));
    }
    Ok(Some(description))
}

pub async fn list(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    respond(
        async {
            let (_, tenant_id) = tenant_manager(&state, authorization, &tenant_text).await?;
            let endpoints = store::endpoints(&state.pool, tenant_id).await?;
            let listed: Vec<serde_json::Value> = endpoints.iter().map(endpoint_json).collect();
            Ok(
                warp::reply::json(&json!({ "count": listed.len(), "webhooks": listed }))
                    .into_response(),
            )
        }
        .await,
    )
}

pub async fn delete(
    tenant_text: String,
    endpoint_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    respond(
        async {
            let (principal, tenant_id) =
                tenant_manager(&state, authorization, &tenant_text).await?;
            let endpoint_id = parse_id(
                &endpoint_text,
                "invalid_endpoint_id",
                "endpoint id",
                "mã điểm nhận webhook",
            )?;
            let deleted = store::delete_endpoint(&state.pool, tenant_id, endpoint_id, |row| {
                let url_text = reqwest::Url::parse(&row.url)
                    .map(|url| url_for_audit(&url))
                    .unwrap_or_default();
                AuditEvent::webhook_deleted(&principal, tenant_id, endpoint_id, &url_text)
            })
            .await?;
            match deleted {
                Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "webhook_not_found",
                    "this tenant has no webhook endpoint with this id",
                    "tổ chức này không có điểm nhận webhook nào với mã này",
                )),
            }
        }
        .await,
    )
}

pub async fn list_deliveries(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
) -> Response {
    respond(
        async {
            let (_, tenant_id) = tenant_manager(&state, authorization, &tenant_text).await?;
            let status_opt = match query.get("status").map(String::as_str) {
                None | Some("") => None,
                Some(status) if DELIVERY_STATUSES.contains(&status) => Some(status),
                Some(_) => {
                    let allowed = DELIVERY_STATUSES.join(", ");
                    return Err(ApiError::bad_request(
                        "invalid_status",
                        format!("status must be one of {allowed}"),
                        format!("status phải là một trong {allowed}"),
                    ));
                }
            };
            let limit = match query.get("limit") {
                None => DELIVERY_DEFAULT_LIMIT,
                Some(text) => text
                    .parse::<i64>()
                    .ok()
                    .filter(|limit| (1..=DELIVERY_MAX_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_limit",
                            format!("limit must be an integer from 1 to {DELIVERY_MAX_LIMIT}"),
                            format!("limit phải là số nguyên từ 1 đến {DELIVERY_MAX_LIMIT}"),
                        )
                    })?,
            };
            let deliveries = store::deliveries(&state.pool, tenant_id, status_opt, limit).await?;
            let listed: Vec<serde_json::Value> = deliveries.iter().map(delivery_json).collect();
            Ok(
                warp::reply::json(&json!({ "count": listed.len(), "deliveries": listed }))
                    .into_response(),
            )
        }
        .await,
    )
}

pub async fn redeliver(
    tenant_text: String,
    delivery_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    respond(
        async {
            let (principal, tenant_id) =
                tenant_manager(&state, authorization, &tenant_text).await?;
            let delivery_id = parse_id(
                &delivery_text,
                "invalid_delivery_id",
                "delivery id",
                "mã lần gửi",
            )?;
            let event = AuditEvent::webhook_redelivered(&principal, tenant_id, delivery_id);
            match store::redeliver(&state.pool, tenant_id, delivery_id, &event).await? {
                Redelivery::Scheduled => {
                    state.engine.scan_finished().notify_one();
                    Ok(warp::reply::with_status(
                        warp::reply::json(&json!({
                            "delivery_id": delivery_id,
                            "status": "pending",
                            "status_vi": "đang chờ gửi",
                            "message": "the delivery will be sent again with the same webhook-id",
                            "message_vi": "lần gửi sẽ được gửi lại với cùng webhook-id",
                        })),
                        StatusCode::ACCEPTED,
                    )
                    .into_response())
                }
                Redelivery::AlreadyPending => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "delivery_pending",
                    "this delivery is still pending; it will be attempted on its own",
                    "lần gửi này vẫn đang chờ; hệ thống sẽ tự gửi",
                )),
                Redelivery::NotFound => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "delivery_not_found",
                    "this tenant has no webhook delivery with this id",
                    "tổ chức này không có lần gửi webhook nào với mã này",
                )),
            }
        }
        .await,
    )
}
