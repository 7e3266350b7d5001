//! The webhook routes (SPEC section 9), for an admin or the tenant's own key:
//! `POST/GET /admin/tenants/{id}/webhooks`, `DELETE /admin/tenants/{id}/webhooks/{endpoint_id}`,
//! `GET /admin/tenants/{id}/webhook-deliveries?status=&limit=` and
//! `POST /admin/tenants/{id}/webhook-deliveries/{delivery_id}/redeliver`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::admin::{parse_tenant_path, tenant_not_found};
use super::auth::authenticate;
use super::error::ErrorBody;
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

/// A webhook endpoint (its secret is never shown after registration).
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub struct EndpointBody {
    endpoint_id: Uuid,
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    url: String,
    #[schema(value_type = Vec<super::openapi::WebhookEventName>)]
    events: Vec<String>,
    description: Option<String>,
    created_at: DateTime<Utc>,
}

impl EndpointBody {
    fn of(endpoint: &EndpointRow) -> EndpointBody {
        EndpointBody {
            endpoint_id: endpoint.endpoint_id,
            tenant_id: endpoint.tenant_id,
            url: endpoint.url.clone(),
            events: endpoint.events.clone(),
            description: endpoint.description_opt.clone(),
            created_at: endpoint.created_at,
        }
    }
}

/// `POST /admin/tenants/{tenant_id}/webhooks` answer: the endpoint and its signing secret,
/// shown this once.
#[derive(Serialize, ToSchema)]
#[schema(as = RegisteredWebhook)]
pub struct RegisteredBody {
    #[serde(flatten)]
    endpoint: EndpointBody,
    /// `whsec_` and the base64 of the HMAC key that signs every delivery.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    signing_secret: String,
    message: &'static str,
    message_vi: &'static str,
}

/// A tenant's endpoints.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookList)]
pub struct EndpointList {
    count: usize,
    webhooks: Vec<EndpointBody>,
}

/// A webhook delivery: one scan's announcement to one endpoint.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct DeliveryBody {
    delivery_id: Uuid,
    /// The `webhook-id` header of every attempt (the delivery id).
    webhook_id: Uuid,
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    endpoint_id: Uuid,
    #[schema(value_type = super::openapi::WebhookEventName)]
    event: String,
    scan_id: Uuid,
    #[schema(value_type = super::openapi::DeliveryStatusName)]
    status: String,
    #[schema(example = "đang chờ gửi")]
    status_vi: &'static str,
    /// Attempts in the current round (a redelivery starts a new one).
    attempts: i32,
    total_attempts: i32,
    redeliveries: i32,
    /// When the next attempt is due (pending deliveries only).
    next_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    /// The last answer's status code, if an answer came.
    last_status_code: Option<i32>,
    /// What went wrong with the last attempt, if it failed.
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl DeliveryBody {
    fn of(delivery: &DeliveryRow) -> DeliveryBody {
        let status_vi = match delivery.status.as_str() {
            "succeeded" => "đã gửi thành công",
            "failed" => "gửi thất bại",
            _ => "đang chờ gửi",
        };
        DeliveryBody {
            delivery_id: delivery.delivery_id,
            webhook_id: delivery.delivery_id,
            tenant_id: delivery.tenant_id,
            endpoint_id: delivery.endpoint_id,
            event: delivery.event.clone(),
            scan_id: delivery.scan_id,
            status: delivery.status.clone(),
            status_vi,
            attempts: delivery.attempts,
            total_attempts: delivery.total_attempts,
            redeliveries: delivery.redeliveries,
            next_attempt_at: (delivery.status == "pending").then_some(delivery.next_attempt_at),
            last_attempt_at: delivery.last_attempt_at_opt,
            last_status_code: delivery.last_status_code_opt,
            last_error: delivery.last_error_opt.clone(),
            created_at: delivery.created_at,
            completed_at: delivery.completed_at_opt,
        }
    }
}

/// A tenant's deliveries, newest first.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDeliveryList)]
pub struct DeliveryList {
    count: usize,
    deliveries: Vec<DeliveryBody>,
}

/// `POST .../redeliver` answer.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookRedelivery)]
pub struct RedeliveryBody {
    delivery_id: Uuid,
    #[schema(value_type = super::openapi::DeliveryStatusName)]
    status: &'static str,
    status_vi: &'static str,
    message: &'static str,
    message_vi: &'static str,
}

const NOT_MANAGER: &str = "Needs an admin key or this tenant's own key / Cần khóa quản trị hoặc \
     khóa của chính tổ chức này";
const INVALID_TENANT_ID: &str = "The tenant id is not a UUID / Mã tổ chức không phải UUID";
const NO_SUCH_TENANT: &str = "No such tenant / Không có tổ chức này";

/// `POST /admin/tenants/{tenant_id}/webhooks` body.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewWebhook)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// `https://` (or `http://` where allowed), at most 2,048 characters, without credentials
    /// or fragment, resolving to public addresses only unless
    /// `webhooks.allow_private_targets`.
    #[schema(
        max_length = 2048,
        pattern = "^https?://[^\\s/?#@]+([/?][^\\s#]*)?$",
        example = "https://scanner.example.vn/hooks/pdpl"
    )]
    url: String,
    /// At least one; repeats are kept once.
    #[schema(value_type = Vec<super::openapi::WebhookEventName>, min_items = 1)]
    events: Vec<String>,
    /// At most 500 characters, no control characters.
    #[schema(max_length = 500, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    description: Option<String>,
}

/// The URL without its query string, for the audit log (a query may carry a receiver's token).
fn url_for_audit(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

/// Registers a webhook endpoint.
#[utoipa::path(
    post,
    path = "/admin/tenants/{tenant_id}/webhooks",
    tag = "webhooks",
    summary = "Register a webhook endpoint / Đăng ký điểm nhận webhook",
    description = "The engine posts each finished scan of the tenant to the URL, signed \
                   (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature). The \
                   signing secret is in this answer only. — Hệ thống gửi mỗi lượt quét đã xong \
                   của tổ chức tới URL, có chữ ký (Standard Webhooks). Khóa ký chỉ có trong câu \
                   trả lời này.",
    params(("tenant_id" = Uuid, Path, description = "The tenant / Mã tổ chức")),
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered / Đã đăng ký", body = RegisteredBody),
        (status = 400, description = "Malformed body, URL, events or description / Nội dung, URL, sự kiện hoặc mô tả không hợp lệ", body = ErrorBody),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = NO_SUCH_TENANT, body = ErrorBody),
        (status = 409, description = "The tenant has its maximum of endpoints / Tổ chức đã có số điểm nhận tối đa", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB / Nội dung vượt quá 64 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json / Không phải application/json", body = ErrorBody),
        (status = 422, description = "The URL resolves to a non-public address / URL trỏ tới địa chỉ không công khai", body = ErrorBody),
    )
)]
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
            address::check_target(&url, policy)
                .await
                .map_err(|refusal| {
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
            let body = RegisteredBody {
                endpoint: EndpointBody::of(&stored),
                signing_secret: endpoint.signing_secret,
                message: "keep the signing secret: it is shown only now, and verifies each \
                          delivery's webhook-signature",
                message_vi: "hãy lưu khóa ký: khóa chỉ hiển thị lần này, dùng để xác minh \
                             webhook-signature của mỗi lần gửi",
            };
            Ok(
                warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED)
                    .into_response(),
            )
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

/// A tenant's endpoints.
#[utoipa::path(
    get,
    path = "/admin/tenants/{tenant_id}/webhooks",
    tag = "webhooks",
    summary = "Webhook endpoints / Các điểm nhận webhook",
    description = "The tenant's endpoints, oldest first, without their secrets. — Các điểm nhận \
                   của tổ chức, cũ nhất trước, không kèm khóa ký.",
    params(("tenant_id" = Uuid, Path, description = "The tenant / Mã tổ chức")),
    responses(
        (status = 200, description = "The endpoints / Các điểm nhận", body = EndpointList),
        (status = 400, description = INVALID_TENANT_ID, body = ErrorBody),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = NO_SUCH_TENANT, body = ErrorBody),
    )
)]
pub async fn list(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    respond(
        async {
            let (_, tenant_id) = tenant_manager(&state, authorization, &tenant_text).await?;
            let endpoints = store::endpoints(&state.pool, tenant_id).await?;
            let webhooks: Vec<EndpointBody> = endpoints.iter().map(EndpointBody::of).collect();
            Ok(warp::reply::json(&EndpointList {
                count: webhooks.len(),
                webhooks,
            })
            .into_response())
        }
        .await,
    )
}

/// Deletes an endpoint.
#[utoipa::path(
    delete,
    path = "/admin/tenants/{tenant_id}/webhooks/{endpoint_id}",
    tag = "webhooks",
    summary = "Delete a webhook endpoint / Xóa điểm nhận webhook",
    description = "The endpoint and its deliveries, pending ones included, are deleted. — Xóa \
                   điểm nhận cùng các lần gửi của nó, kể cả các lần đang chờ.",
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant / Mã tổ chức"),
        ("endpoint_id" = Uuid, Path, description = "The endpoint / Mã điểm nhận"),
    ),
    responses(
        (status = 204, description = "Deleted / Đã xóa"),
        (status = 400, description = "An id is not a UUID / Một mã không phải UUID", body = ErrorBody),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = "No such tenant or endpoint / Không có tổ chức hoặc điểm nhận này", body = ErrorBody),
    )
)]
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

/// A tenant's deliveries.
#[utoipa::path(
    get,
    path = "/admin/tenants/{tenant_id}/webhook-deliveries",
    tag = "webhooks",
    summary = "Webhook deliveries / Các lần gửi webhook",
    description = "Newest first, with attempts and the last status code or error. — Mới nhất \
                   trước, kèm số lần thử và mã trạng thái hoặc lỗi gần nhất.",
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant / Mã tổ chức"),
        ("status" = Option<super::openapi::DeliveryStatusName>, Query, description = "Only deliveries in this status / Chỉ các lần gửi ở trạng thái này"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100) / Tối đa bấy nhiêu (mặc định 100)"),
    ),
    responses(
        (status = 200, description = "The deliveries / Các lần gửi", body = DeliveryList),
        (status = 400, description = "Bad tenant id, status or limit / Mã tổ chức, trạng thái hoặc limit không hợp lệ", body = ErrorBody),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = NO_SUCH_TENANT, body = ErrorBody),
    )
)]
pub async fn list_deliveries(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
) -> Response {
    respond(
        async {
            let (_, tenant_id) = tenant_manager(&state, authorization, &tenant_text).await?;
            // An empty status is not a status (the document lists the three).
            let status_opt = match query.get("status").map(String::as_str) {
                None => None,
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
            let deliveries: Vec<DeliveryBody> = deliveries.iter().map(DeliveryBody::of).collect();
            Ok(warp::reply::json(&DeliveryList {
                count: deliveries.len(),
                deliveries,
            })
            .into_response())
        }
        .await,
    )
}

/// Sends a delivery again.
#[utoipa::path(
    post,
    path = "/admin/tenants/{tenant_id}/webhook-deliveries/{delivery_id}/redeliver",
    tag = "webhooks",
    summary = "Redeliver / Gửi lại",
    description = "A failed or succeeded delivery is sent again with the same webhook-id, as a \
                   new round of attempts. — Một lần gửi thất bại hoặc đã thành công được gửi lại \
                   với cùng webhook-id, như một lượt thử mới.",
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant / Mã tổ chức"),
        ("delivery_id" = Uuid, Path, description = "The delivery / Mã lần gửi"),
    ),
    responses(
        (status = 202, description = "Scheduled / Đã lên lịch gửi lại", body = RedeliveryBody),
        (status = 400, description = "An id is not a UUID / Một mã không phải UUID", body = ErrorBody),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = "No such tenant or delivery / Không có tổ chức hoặc lần gửi này", body = ErrorBody),
        (status = 409, description = "Still pending / Vẫn đang chờ gửi", body = ErrorBody),
    )
)]
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
                        warp::reply::json(&RedeliveryBody {
                            delivery_id,
                            status: "pending",
                            status_vi: "đang chờ gửi",
                            message: "the delivery will be sent again with the same webhook-id",
                            message_vi: "lần gửi sẽ được gửi lại với cùng webhook-id",
                        }),
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
