//! The admin API (admin scope): tenants, their limits and live state, pause and resume, keys.

use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::auth::authenticate;
use super::headers::HeaderText;
use super::{parse_json, respond, ApiError, AppState};
use crate::actors::messages::LimitsChanged;
use crate::domain::audit::AuditAction;
use crate::domain::auth::{self, Principal, Scope};
use crate::domain::{client_text, TenantId};
use crate::store::dead_letters::{self, ReplayOutcome};
use crate::store::governance::{self, LimitsChange, NewTenant, TenantRow};

/// Most tenants one `GET /admin/tenants` lists.
const TENANT_LIST_LIMIT: i64 = 10_000;

async fn admin(state: &AppState, authorization: HeaderText) -> Result<Principal, ApiError> {
    let principal = authenticate(state, &authorization).await?;
    principal.require_admin()?;
    Ok(principal)
}

/// `GET /admin/cluster`: the engine instances on this database, alive first, by the
/// database's clock.
pub async fn list_instances(state: Arc<AppState>, authorization: HeaderText) -> Response {
    respond(
        async {
            admin(&state, authorization).await?;
            let instances = crate::store::instances::instances(&state.pool).await?;
            let owned: std::collections::HashMap<String, i64> =
                crate::store::ownership::owned_counts(&state.pool)
                    .await?
                    .into_iter()
                    .collect();
            let listed: Vec<serde_json::Value> = instances
                .iter()
                .map(|instance| {
                    json!({
                        "instance_id": instance.instance_id,
                        "http_address": instance.http_address,
                        "this_instance": instance.instance_id == state.instance_id,
                        "alive": instance.alive,
                        "status": if instance.alive { "alive" } else { "lost" },
                        "status_vi": if instance.alive { "đang hoạt động" } else { "mất kết nối" },
                        "started_at": instance.started_at,
                        "last_heartbeat_at": instance.heartbeat_at,
                        "since_heartbeat_ms": instance.since_heartbeat_ms,
                        "lease_expires_at": instance.lease_expires_at,
                        "tenants_owned": owned.get(&instance.instance_id).copied().unwrap_or(0),
                    })
                })
                .collect();
            Ok(warp::reply::json(&json!({
                "instance_id": state.instance_id,
                "live_instances": instances.iter().filter(|instance| instance.alive).count(),
                "instances": listed,
            }))
            .into_response())
        }
        .await,
    )
}

fn tenant_json(state: &AppState, tenant: &TenantRow) -> serde_json::Value {
    let live_opt = state
        .engine
        .board()
        .get(&tenant.tenant_id)
        .map(|entry| entry.clone());
    let now = Instant::now();
    json!({
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "region": tenant.region_opt,
        "limits": {
            "records_per_second": tenant.limits.records_per_second,
            "burst": tenant.limits.burst,
            "max_backlog_records": tenant.limits.max_backlog_records,
        },
        "paused": tenant.limits.paused,
        "status": if tenant.limits.paused { "paused" } else { "active" },
        "status_vi": if tenant.limits.paused { "tạm dừng" } else { "đang hoạt động" },
        "backlog_records": tenant.backlog_records,
        "in_flight_chunks": live_opt.as_ref().map_or(0, |live| live.in_flight_chunks),
        "queued_chunks": live_opt.as_ref().map_or(0, |live| live.queued_chunks),
        "current_rate_records_per_second": live_opt.as_ref().map_or(0.0, |live| live.current_rate(now)),
        "created_at": tenant.created_at,
    })
}

pub(super) fn parse_tenant_path(text: &str) -> Result<TenantId, ApiError> {
    Uuid::parse_str(text).map(TenantId).map_err(|_| {
        ApiError::bad_request(
            "invalid_tenant_id",
            "the tenant id must be a UUID",
            "mã tổ chức phải là một UUID",
        )
    })
}

pub(super) fn tenant_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "tenant_not_found",
        "no tenant has this id",
        "không có tổ chức nào với mã này",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenantBody {
    tenant_id: Option<Uuid>,
    name: String,
    region: Option<String>,
    records_per_second: Option<i64>,
    burst: Option<i64>,
    max_backlog_records: Option<i64>,
}

pub async fn create_tenant(
    state: Arc<AppState>,
    authorization: HeaderText,
    body: Result<bytes::Bytes, ApiError>,
) -> Response {
    respond(
        async {
            let principal = admin(&state, authorization).await?;
            let request: CreateTenantBody = parse_json(&body?)?;
            if request.name.trim().is_empty()
                || request.name.chars().count() > 200
                || request.name.contains('\0')
            {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "name must be 1 to 200 characters",
                    "name phải dài từ 1 đến 200 ký tự",
                ));
            }
            if let Some(region) = &request.region {
                if !["north", "central", "south"].contains(&region.as_str()) {
                    return Err(ApiError::bad_request(
                        "invalid_field",
                        "region must be one of north, central, south",
                        "region phải là một trong north, central, south",
                    ));
                }
            }
            validate_limits(
                request.records_per_second,
                request.burst,
                request.max_backlog_records,
            )?;
            let new_tenant = NewTenant {
                tenant_id: TenantId(request.tenant_id.unwrap_or_else(Uuid::now_v7)),
                name: request.name,
                region_opt: request.region,
                records_per_second_opt: request.records_per_second,
                burst_opt: request.burst,
                max_backlog_records_opt: request.max_backlog_records,
            };
            let defaults = crate::actors::tenant_defaults(&state.settings);
            let tenant = governance::create_tenant(&state.pool, &principal, &new_tenant, defaults)
                .await?
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "tenant_exists",
                        "a tenant with this id already exists",
                        "đã có tổ chức với mã này",
                    )
                })?;
            Ok(warp::reply::with_status(
                warp::reply::json(&tenant_json(&state, &tenant)),
                StatusCode::CREATED,
            )
            .into_response())
        }
        .await,
    )
}

pub async fn list_tenants(state: Arc<AppState>, authorization: HeaderText) -> Response {
    respond(
        async {
            admin(&state, authorization).await?;
            let tenants = governance::tenants(&state.pool, TENANT_LIST_LIMIT).await?;
            let body = json!({
                "count": tenants.len(),
                "tenants": tenants.iter().map(|tenant| tenant_json(&state, tenant)).collect::<Vec<_>>(),
            });
            Ok(warp::reply::json(&body).into_response())
        }
        .await,
    )
}

pub async fn show_tenant(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    respond(
        async {
            admin(&state, authorization).await?;
            let tenant_id = parse_tenant_path(&tenant_text)?;
            let tenant = governance::tenant(&state.pool, tenant_id)
                .await?
                .ok_or_else(tenant_not_found)?;
            let mut body = tenant_json(&state, &tenant);
            // Which instance runs the tenant's actor (null: none live owns it right now).
            body["owner"] =
                match crate::store::ownership::live_owner(&state.pool, tenant_id).await? {
                    Some((instance_id, http_address, epoch)) => json!({
                        "instance_id": instance_id,
                        "http_address": http_address,
                        "epoch": epoch,
                        "this_instance": instance_id == state.instance_id,
                    }),
                    None => serde_json::Value::Null,
                };
            Ok(warp::reply::json(&body).into_response())
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    records_per_second: Option<i64>,
    burst: Option<i64>,
    max_backlog_records: Option<i64>,
}

fn validate_limits(
    records_per_second_opt: Option<i64>,
    burst_opt: Option<i64>,
    max_backlog_opt: Option<i64>,
) -> Result<(), ApiError> {
    for (name, value_opt) in [
        ("records_per_second", records_per_second_opt),
        ("burst", burst_opt),
        ("max_backlog_records", max_backlog_opt),
    ] {
        if let Some(value) = value_opt {
            if !(1..=1_000_000_000).contains(&value) {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    format!("{name} must be an integer from 1 to 1000000000"),
                    format!("{name} phải là số nguyên từ 1 đến 1000000000"),
                ));
            }
        }
    }
    Ok(())
}

pub async fn set_limits(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
    body: Result<bytes::Bytes, ApiError>,
) -> Response {
    respond(
        async {
            let principal = admin(&state, authorization).await?;
            let tenant_id = parse_tenant_path(&tenant_text)?;
            let request: LimitsBody = parse_json(&body?)?;
            if request.records_per_second.is_none()
                && request.burst.is_none()
                && request.max_backlog_records.is_none()
            {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "give at least one of records_per_second, burst, max_backlog_records",
                    "cần ít nhất một trong records_per_second, burst, max_backlog_records",
                ));
            }
            validate_limits(
                request.records_per_second,
                request.burst,
                request.max_backlog_records,
            )?;
            let change = LimitsChange {
                records_per_second_opt: request.records_per_second,
                burst_opt: request.burst,
                max_backlog_records_opt: request.max_backlog_records,
                paused_opt: None,
            };
            change_and_notify(
                &state,
                &principal,
                tenant_id,
                AuditAction::LimitsChanged,
                change,
            )
            .await
        }
        .await,
    )
}

pub async fn pause(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    set_paused(tenant_text, state, authorization, true).await
}

pub async fn resume(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    set_paused(tenant_text, state, authorization, false).await
}

async fn set_paused(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
    paused: bool,
) -> Response {
    respond(
        async {
            let principal = admin(&state, authorization).await?;
            let tenant_id = parse_tenant_path(&tenant_text)?;
            let change = LimitsChange {
                paused_opt: Some(paused),
                ..LimitsChange::default()
            };
            let action = if paused {
                AuditAction::TenantPaused
            } else {
                AuditAction::TenantResumed
            };
            change_and_notify(&state, &principal, tenant_id, action, change).await
        }
        .await,
    )
}

/// Persists a change, then tells the tenant's actor at once (other instances learn it from
/// their next sweep).
async fn change_and_notify(
    state: &AppState,
    principal: &Principal,
    tenant_id: TenantId,
    action: AuditAction,
    change: LimitsChange,
) -> Result<Response, ApiError> {
    let tenant = governance::change_limits(&state.pool, principal, tenant_id, action, change)
        .await?
        .ok_or_else(tenant_not_found)?;
    state.engine.limits_changed(LimitsChanged {
        tenant_id,
        limits: tenant.limits,
    });
    Ok(warp::reply::json(&tenant_json(state, &tenant)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintKeyBody {
    scope: String,
    tenant_id: Option<Uuid>,
    #[serde(default)]
    name: String,
}

pub async fn mint_key(
    state: Arc<AppState>,
    authorization: HeaderText,
    body: Result<bytes::Bytes, ApiError>,
) -> Response {
    respond(
        async {
            let principal = admin(&state, authorization).await?;
            let request: MintKeyBody = parse_json(&body?)?;
            let scope = match (request.scope.as_str(), request.tenant_id) {
                ("admin", None) => Scope::Admin,
                ("service", None) => Scope::Service,
                ("tenant", Some(tenant)) => Scope::Tenant(TenantId(tenant)),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_scope",
                        "scope must be admin, service, or tenant with a tenant_id (and only tenant takes a tenant_id)",
                        "scope phải là admin, service, hoặc tenant kèm tenant_id (chỉ tenant mới có tenant_id)",
                    ))
                }
            };
            if request.name.chars().count() > 200 || request.name.contains('\0') {
                return Err(ApiError::bad_request("invalid_field", "name must be at most 200 characters", "name tối đa 200 ký tự"));
            }
            let (key_id, token, secret_hash) = auth::mint_key();
            if !governance::insert_key(&state.pool, &principal, key_id, &secret_hash, scope, &request.name).await? {
                return Err(tenant_not_found());
            }
            let body = json!({
                "key_id": key_id,
                "token": token,
                "scope": scope.name(),
                "tenant_id": request.tenant_id,
                "name": request.name,
                "message": "store this token now: it is shown only once",
                "message_vi": "hãy lưu mã này ngay: nó chỉ được hiển thị một lần",
            });
            Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
        }
        .await,
    )
}

pub async fn revoke_key(
    key_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    respond(
        async {
            let principal = admin(&state, authorization).await?;
            let key_id = Uuid::parse_str(&key_text).map_err(|_| {
                ApiError::bad_request("invalid_key_id", "the key id must be a UUID", "mã khóa phải là một UUID")
            })?;
            if !governance::revoke_key(&state.pool, &principal, key_id).await? {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "key_not_found",
                    "no active key has this id",
                    "không có khóa đang hoạt động nào với mã này",
                ));
            }
            let body = json!({ "key_id": key_id, "revoked": true, "message": "key revoked", "message_vi": "đã thu hồi khóa" });
            Ok(warp::reply::json(&body).into_response())
        }
        .await,
    )
}

/// Most dead letters one `GET /admin/dead-letters` lists.
const DEAD_LETTER_LIST_LIMIT: i64 = 1_000;

pub async fn list_dead_letters(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: super::Query,
) -> Response {
    respond(
        async {
            admin(&state, authorization).await?;
            let tenant_opt = match query.get("tenant_id").filter(|text| !text.is_empty()) {
                Some(text) => Some(crate::submission::parse_tenant_id(text)?),
                None => None,
            };
            let rows = dead_letters::dead_letters(&state.pool, tenant_opt, DEAD_LETTER_LIST_LIMIT).await?;
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    json!({
                        "dead_letter_id": row.dead_letter_id,
                        "tenant_id": row.tenant_id,
                        "scan_id": row.scan_id_opt,
                        "record_index": row.record_index,
                        "error": row.error,
                        "attempts": row.attempts,
                        "created_at": row.created_at,
                        "replayed_at": row.replayed_at_opt,
                        "status": if row.replayed_at_opt.is_some() { "replayed" } else { "pending" },
                        "status_vi": if row.replayed_at_opt.is_some() { "đã ghi lại" } else { "đang chờ xử lý" },
                    })
                })
                .collect();
            Ok(warp::reply::json(&json!({ "count": items.len(), "dead_letters": items })).into_response())
        }
        .await,
    )
}

pub async fn replay_dead_letter(
    id_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    respond(
        async {
            let principal = admin(&state, authorization).await?;
            let dead_letter_id: i64 =
                id_text.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_dead_letter_id",
                        "the dead letter id must be a positive integer",
                        "mã bản ghi lỗi phải là số nguyên dương",
                    )
                })?;
            match dead_letters::replay(&state.pool, &principal, dead_letter_id).await? {
                ReplayOutcome::Written { tenant_id } => Ok(warp::reply::json(&json!({
                    "dead_letter_id": dead_letter_id,
                    "tenant_id": tenant_id,
                    "replayed": true,
                    "message": "the record was written",
                    "message_vi": "bản ghi đã được ghi thành công",
                }))
                .into_response()),
                ReplayOutcome::StillFailing { tenant_id, error } => {
                    let error = client_text::shown(&error, client_text::MESSAGE_MAX_CHARS);
                    Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "replay_failed",
                        format!("the record was refused again: {error}"),
                        format!("bản ghi vẫn bị từ chối: {error}"),
                    )
                    .with_details(
                        json!({ "dead_letter_id": dead_letter_id, "tenant_id": tenant_id }),
                    ))
                }
                ReplayOutcome::AlreadyReplayed => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "already_replayed",
                    "this dead letter was already replayed",
                    "bản ghi lỗi này đã được ghi lại trước đó",
                )),
                ReplayOutcome::NotFound => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "dead_letter_not_found",
                    "no dead letter has this id",
                    "không có bản ghi lỗi nào với mã này",
                )),
            }
        }
        .await,
    )
}
