//! The admin API (admin scope): tenants, their limits and live state, pause and resume, keys.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::auth::authenticate;
use super::error::ErrorBody;
use super::headers::HeaderText;
use super::openapi::{
    KeyScopeName, LimitsChangeBody, NewKey, TenantFilter, TenantRegionName, LIMIT_MAX, LIMIT_MIN,
};
use super::{parse_json, respond, ApiError, AppState};
use crate::actors::messages::LimitsChanged;
use crate::domain::audit::AuditAction;
use crate::domain::auth::{self, Principal, Scope};
use crate::domain::{client_text, TenantId};
use crate::store::dead_letters::{self, ReplayOutcome};
use crate::store::governance::{self, LimitsChange, NewTenant, TenantRow};

/// `GET /admin/cluster`.
#[derive(Serialize, ToSchema)]
pub struct InstanceList {
    /// The instance that answered.
    instance_id: String,
    live_instances: usize,
    instances: Vec<InstanceBody>,
}

/// One engine instance on this database.
#[derive(Serialize, ToSchema)]
pub struct InstanceBody {
    instance_id: String,
    http_address: String,
    this_instance: bool,
    alive: bool,
    /// `alive` or `lost`.
    #[schema(example = "alive")]
    status: &'static str,
    #[schema(example = "đang hoạt động")]
    status_vi: &'static str,
    started_at: DateTime<Utc>,
    last_heartbeat_at: DateTime<Utc>,
    since_heartbeat_ms: i64,
    lease_expires_at: DateTime<Utc>,
    /// Tenants whose actor runs on this instance (their ownership lease).
    tenants_owned: i64,
}

/// `GET /admin/tenants/{tenant_id}`: the tenant and the instance that owns it.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantWithOwner)]
pub struct TenantWithOwnerBody {
    #[serde(flatten)]
    tenant: TenantBody,
    /// The instance running the tenant's actor; null when no live instance owns it (it is
    /// taken by the next instance that has work for it).
    owner: Option<TenantOwnerBody>,
}

/// A tenant's owner.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantOwner)]
pub struct TenantOwnerBody {
    instance_id: String,
    http_address: String,
    /// Grows at every change of owner.
    epoch: i64,
    this_instance: bool,
}

/// A tenant: its limits and live state.
#[derive(Serialize, ToSchema)]
#[schema(as = Tenant)]
pub struct TenantBody {
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    name: String,
    #[schema(value_type = Option<TenantRegionName>)]
    region: Option<String>,
    limits: TenantLimitsBody,
    paused: bool,
    /// `active` or `paused`.
    #[schema(example = "active")]
    status: &'static str,
    #[schema(example = "đang hoạt động")]
    status_vi: &'static str,
    /// Records accepted and not yet written.
    backlog_records: i64,
    in_flight_chunks: usize,
    queued_chunks: usize,
    current_rate_records_per_second: f64,
    created_at: DateTime<Utc>,
}

/// A tenant's throttle.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantLimits)]
pub struct TenantLimitsBody {
    records_per_second: i64,
    burst: i64,
    max_backlog_records: i64,
}

/// `GET /admin/tenants`.
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    count: usize,
    tenants: Vec<TenantBody>,
}

/// `201` to `POST /admin/keys`: the token, shown this once.
#[derive(Serialize, ToSchema)]
pub struct MintedKey {
    key_id: Uuid,
    /// The bearer token; only its hash is stored.
    token: String,
    #[schema(value_type = KeyScopeName)]
    scope: &'static str,
    tenant_id: Option<Uuid>,
    name: String,
    message: &'static str,
    message_vi: &'static str,
}

/// `DELETE /admin/keys/{key_id}`.
#[derive(Serialize, ToSchema)]
pub struct RevokedKey {
    key_id: Uuid,
    revoked: bool,
    message: &'static str,
    message_vi: &'static str,
}

/// `GET /admin/dead-letters`.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    count: usize,
    dead_letters: Vec<DeadLetterBody>,
}

/// A record the database refused, kept with its error.
#[derive(Serialize, ToSchema)]
#[schema(as = DeadLetter)]
pub struct DeadLetterBody {
    dead_letter_id: i64,
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    scan_id: Option<Uuid>,
    record_index: i32,
    error: String,
    attempts: i32,
    created_at: DateTime<Utc>,
    replayed_at: Option<DateTime<Utc>>,
    /// `pending` or `replayed`.
    #[schema(example = "pending")]
    status: &'static str,
    #[schema(example = "đang chờ xử lý")]
    status_vi: &'static str,
}

/// `POST /admin/dead-letters/{dead_letter_id}/replay`: the record was written.
#[derive(Serialize, ToSchema)]
pub struct ReplayedDeadLetter {
    dead_letter_id: i64,
    #[schema(value_type = Uuid)]
    tenant_id: TenantId,
    replayed: bool,
    message: &'static str,
    message_vi: &'static str,
}

const ADMIN_ONLY: &str = "Needs an admin key / Cần khóa quản trị";
const INVALID_TENANT_ID: &str = "The tenant id is not a UUID / Mã tổ chức không phải UUID";
const NO_SUCH_TENANT: &str = "No such tenant / Không có tổ chức này";
const MALFORMED_BODY: &str = "Malformed body or field / Nội dung hoặc trường không hợp lệ";
const BODY_TOO_LARGE: &str = "Body over 64 KiB / Nội dung vượt quá 64 KiB";
const NOT_JSON: &str = "Not application/json / Không phải application/json";

/// Most tenants one `GET /admin/tenants` lists.
const TENANT_LIST_LIMIT: i64 = 10_000;

async fn admin(state: &AppState, authorization: HeaderText) -> Result<Principal, ApiError> {
    let principal = authenticate(state, &authorization).await?;
    principal.require_admin()?;
    Ok(principal)
}

/// `GET /admin/cluster`: the engine instances on this database, alive first, by the
/// database's clock.
#[utoipa::path(
    get,
    path = "/admin/cluster",
    tag = "admin",
    summary = "Engine instances / Các phiên bản máy chủ",
    description = "The engine instances sharing this database, alive first. — Các phiên bản máy \
                   chủ dùng chung cơ sở dữ liệu này, phiên bản đang hoạt động trước.",
    responses(
        (status = 200, description = "The instances / Các phiên bản", body = InstanceList),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
    )
)]
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
            let live_instances = instances.iter().filter(|instance| instance.alive).count();
            let listed: Vec<InstanceBody> = instances
                .into_iter()
                .map(|instance| InstanceBody {
                    this_instance: instance.instance_id == state.instance_id,
                    tenants_owned: owned.get(&instance.instance_id).copied().unwrap_or(0),
                    status: if instance.alive { "alive" } else { "lost" },
                    status_vi: if instance.alive {
                        "đang hoạt động"
                    } else {
                        "mất kết nối"
                    },
                    instance_id: instance.instance_id,
                    http_address: instance.http_address,
                    alive: instance.alive,
                    started_at: instance.started_at,
                    last_heartbeat_at: instance.heartbeat_at,
                    since_heartbeat_ms: instance.since_heartbeat_ms,
                    lease_expires_at: instance.lease_expires_at,
                })
                .collect();
            Ok(warp::reply::json(&InstanceList {
                instance_id: state.instance_id.clone(),
                live_instances,
                instances: listed,
            })
            .into_response())
        }
        .await,
    )
}

fn tenant_body(state: &AppState, tenant: &TenantRow) -> TenantBody {
    let live_opt = state
        .engine
        .board()
        .get(&tenant.tenant_id)
        .map(|entry| entry.clone());
    let now = Instant::now();
    TenantBody {
        tenant_id: tenant.tenant_id,
        name: tenant.name.clone(),
        region: tenant.region_opt.clone(),
        limits: TenantLimitsBody {
            records_per_second: tenant.limits.records_per_second,
            burst: tenant.limits.burst,
            max_backlog_records: tenant.limits.max_backlog_records,
        },
        paused: tenant.limits.paused,
        status: if tenant.limits.paused {
            "paused"
        } else {
            "active"
        },
        status_vi: if tenant.limits.paused {
            "tạm dừng"
        } else {
            "đang hoạt động"
        },
        backlog_records: tenant.backlog_records,
        in_flight_chunks: live_opt.as_ref().map_or(0, |live| live.in_flight_chunks),
        queued_chunks: live_opt.as_ref().map_or(0, |live| live.queued_chunks),
        current_rate_records_per_second: live_opt
            .as_ref()
            .map_or(0.0, |live| live.current_rate(now)),
        created_at: tenant.created_at,
    }
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

/// `POST /admin/tenants` body. Limits left out take the configured defaults.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewTenant)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    /// Chosen by the engine (a UUIDv7) when left out.
    tenant_id: Option<Uuid>,
    /// 1 to 200 characters, not only spaces, without U+0000.
    #[schema(
        min_length = 1,
        max_length = 200,
        // Some character that is not U+0000 nor Unicode White_Space (what `str::trim` removes;
        // regular-expression dialects disagree on `\s`, so the class is spelled out).
        pattern = "^[^\\u0000]*[^\\u0000\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$",
        example = "Công ty Cổ phần Hà Nội"
    )]
    name: String,
    #[schema(value_type = Option<TenantRegionName>)]
    region: Option<String>,
    #[serde(default, deserialize_with = "whole_number_opt")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    records_per_second: Option<i64>,
    #[serde(default, deserialize_with = "whole_number_opt")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    burst: Option<i64>,
    #[serde(default, deserialize_with = "whole_number_opt")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_backlog_records: Option<i64>,
}

/// A limit: an integer, also when written with a zero fraction (`1000.0`), which JSON's
/// `integer` allows and some clients send. A fraction is refused.
fn whole_number_opt<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    let number_opt: Option<serde_json::Number> = Option::deserialize(deserializer)?;
    let Some(number) = number_opt else {
        return Ok(None);
    };
    if let Some(integer) = number.as_i64() {
        return Ok(Some(integer));
    }
    // Whole numbers beyond 2^53 are not exact as floats; no limit is near them.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match number.as_f64() {
        Some(float) if float.fract() == 0.0 && float.abs() <= EXACT => Ok(Some(float as i64)),
        _ => Err(serde::de::Error::custom(format!(
            "invalid value: {number}, expected an integer"
        ))),
    }
}

/// Registers a tenant.
#[utoipa::path(
    post,
    path = "/admin/tenants",
    tag = "admin",
    summary = "Register a tenant / Đăng ký tổ chức",
    description = "Registers a tenant with a name, an optional region and optional limits. — \
                   Đăng ký một tổ chức với tên, miền (tùy chọn) và giới hạn (tùy chọn).",
    request_body = CreateTenantBody,
    responses(
        (status = 201, description = "Registered / Đã đăng ký", body = TenantBody),
        (status = 400, description = MALFORMED_BODY, body = ErrorBody),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
        (status = 409, description = "A tenant has this id / Đã có tổ chức với mã này", body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 415, description = NOT_JSON, body = ErrorBody),
    )
)]
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
                warp::reply::json(&tenant_body(&state, &tenant)),
                StatusCode::CREATED,
            )
            .into_response())
        }
        .await,
    )
}

/// Every tenant (at most 10,000).
#[utoipa::path(
    get,
    path = "/admin/tenants",
    tag = "admin",
    summary = "Tenants / Các tổ chức",
    description = "Every tenant with its limits and live state. — Mọi tổ chức cùng giới hạn và \
                   trạng thái hiện tại.",
    responses(
        (status = 200, description = "The tenants / Các tổ chức", body = TenantList),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
    )
)]
pub async fn list_tenants(state: Arc<AppState>, authorization: HeaderText) -> Response {
    respond(
        async {
            admin(&state, authorization).await?;
            let tenants = governance::tenants(&state.pool, TENANT_LIST_LIMIT).await?;
            let body = TenantList {
                count: tenants.len(),
                tenants: tenants
                    .iter()
                    .map(|tenant| tenant_body(&state, tenant))
                    .collect(),
            };
            Ok(warp::reply::json(&body).into_response())
        }
        .await,
    )
}

/// One tenant.
#[utoipa::path(
    get,
    path = "/admin/tenants/{tenant_id}",
    tag = "admin",
    summary = "A tenant / Một tổ chức",
    description = "A tenant's limits and live state: backlog, chunks in flight, current rate, \
                   and the instance that owns it. — Giới hạn và trạng thái hiện tại của một tổ \
                   chức: hàng đợi, phần đang ghi, tốc độ hiện tại, và phiên bản máy chủ đang phụ \
                   trách tổ chức.",
    params(("tenant_id" = Uuid, Path, description = "The tenant / Mã tổ chức")),
    responses(
        (status = 200, description = "The tenant / Tổ chức", body = TenantWithOwnerBody),
        (status = 400, description = INVALID_TENANT_ID, body = ErrorBody),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
        (status = 404, description = NO_SUCH_TENANT, body = ErrorBody),
    )
)]
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
            let owner = crate::store::ownership::live_owner(&state.pool, tenant_id)
                .await?
                .map(|(instance_id, http_address, epoch)| TenantOwnerBody {
                    this_instance: instance_id == state.instance_id,
                    instance_id,
                    http_address,
                    epoch,
                });
            Ok(warp::reply::json(&TenantWithOwnerBody {
                tenant: tenant_body(&state, &tenant),
                owner,
            })
            .into_response())
        }
        .await,
    )
}

/// `PUT /admin/tenants/{tenant_id}/limits` body: at least one limit (described by
/// [`LimitsChangeBody`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    #[serde(default, deserialize_with = "whole_number_opt")]
    records_per_second: Option<i64>,
    #[serde(default, deserialize_with = "whole_number_opt")]
    burst: Option<i64>,
    #[serde(default, deserialize_with = "whole_number_opt")]
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
            if !(LIMIT_MIN..=LIMIT_MAX).contains(&value) {
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

/// Changes a tenant's limits.
#[utoipa::path(
    put,
    path = "/admin/tenants/{tenant_id}/limits",
    tag = "admin",
    summary = "Change a tenant's limits / Thay đổi giới hạn của tổ chức",
    description = "Persisted, and in force within one second without a restart. — Được lưu lại \
                   và có hiệu lực trong vòng một giây, không cần khởi động lại.",
    params(("tenant_id" = Uuid, Path, description = "The tenant / Mã tổ chức")),
    request_body = LimitsChangeBody,
    responses(
        (status = 200, description = "The tenant / Tổ chức", body = TenantBody),
        (status = 400, description = MALFORMED_BODY, body = ErrorBody),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
        (status = 404, description = NO_SUCH_TENANT, body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 415, description = NOT_JSON, body = ErrorBody),
    )
)]
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

/// Pauses a tenant.
#[utoipa::path(
    post,
    path = "/admin/tenants/{tenant_id}/pause",
    tag = "admin",
    summary = "Pause a tenant / Tạm dừng tổ chức",
    description = "A paused tenant's scans are still accepted (within its backlog limit) but \
                   not written until it is resumed. — Lần quét của tổ chức bị tạm dừng vẫn được \
                   nhận (trong giới hạn hàng đợi) nhưng chỉ được ghi sau khi tiếp tục.",
    params(("tenant_id" = Uuid, Path, description = "The tenant / Mã tổ chức")),
    responses(
        (status = 200, description = "The tenant / Tổ chức", body = TenantBody),
        (status = 400, description = INVALID_TENANT_ID, body = ErrorBody),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
        (status = 404, description = NO_SUCH_TENANT, body = ErrorBody),
    )
)]
pub async fn pause(
    tenant_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    set_paused(tenant_text, state, authorization, true).await
}

/// Resumes a paused tenant.
#[utoipa::path(
    post,
    path = "/admin/tenants/{tenant_id}/resume",
    tag = "admin",
    summary = "Resume a tenant / Tiếp tục tổ chức",
    description = "Its waiting scans are written again. — Các lần quét đang chờ của tổ chức \
                   được ghi tiếp.",
    params(("tenant_id" = Uuid, Path, description = "The tenant / Mã tổ chức")),
    responses(
        (status = 200, description = "The tenant / Tổ chức", body = TenantBody),
        (status = 400, description = INVALID_TENANT_ID, body = ErrorBody),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
        (status = 404, description = NO_SUCH_TENANT, body = ErrorBody),
    )
)]
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
    Ok(warp::reply::json(&tenant_body(state, &tenant)).into_response())
}

/// `POST /admin/keys` body (described by [`NewKey`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintKeyBody {
    scope: String,
    tenant_id: Option<Uuid>,
    #[serde(default)]
    name: String,
}

/// Mints an API key.
#[utoipa::path(
    post,
    path = "/admin/keys",
    tag = "admin",
    summary = "Mint an API key / Tạo khóa API",
    description = "The token is shown once; only its hash is stored. — Mã truy cập chỉ hiển thị \
                   một lần; hệ thống chỉ lưu giá trị băm.",
    request_body = NewKey,
    responses(
        (status = 201, description = "Minted / Đã tạo", body = MintedKey),
        (status = 400, description = MALFORMED_BODY, body = ErrorBody),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
        (status = 404, description = NO_SUCH_TENANT, body = ErrorBody),
        (status = 413, description = BODY_TOO_LARGE, body = ErrorBody),
        (status = 415, description = NOT_JSON, body = ErrorBody),
    )
)]
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
            let body = MintedKey {
                key_id,
                token,
                scope: scope.name(),
                tenant_id: request.tenant_id,
                name: request.name,
                message: "store this token now: it is shown only once",
                message_vi: "hãy lưu mã này ngay: nó chỉ được hiển thị một lần",
            };
            Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
        }
        .await,
    )
}

/// Revokes an API key, at once.
#[utoipa::path(
    delete,
    path = "/admin/keys/{key_id}",
    tag = "admin",
    summary = "Revoke an API key / Thu hồi khóa API",
    description = "Effective on the next request, on every instance. — Có hiệu lực từ yêu cầu \
                   tiếp theo, trên mọi phiên bản máy chủ.",
    params(("key_id" = Uuid, Path, description = "The key / Mã khóa")),
    responses(
        (status = 200, description = "Revoked / Đã thu hồi", body = RevokedKey),
        (status = 400, description = "The key id is not a UUID / Mã khóa không phải UUID", body = ErrorBody),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
        (status = 404, description = "No active key has this id / Không có khóa đang hoạt động với mã này", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    key_text: String,
    state: Arc<AppState>,
    authorization: HeaderText,
) -> Response {
    respond(
        async {
            let principal = admin(&state, authorization).await?;
            let key_id = Uuid::parse_str(&key_text).map_err(|_| {
                ApiError::bad_request(
                    "invalid_key_id",
                    "the key id must be a UUID",
                    "mã khóa phải là một UUID",
                )
            })?;
            if !governance::revoke_key(&state.pool, &principal, key_id).await? {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "key_not_found",
                    "no active key has this id",
                    "không có khóa đang hoạt động nào với mã này",
                ));
            }
            let body = RevokedKey {
                key_id,
                revoked: true,
                message: "key revoked",
                message_vi: "đã thu hồi khóa",
            };
            Ok(warp::reply::json(&body).into_response())
        }
        .await,
    )
}

/// Most dead letters one `GET /admin/dead-letters` lists.
const DEAD_LETTER_LIST_LIMIT: i64 = 1_000;

/// Dead letters, newest first.
#[utoipa::path(
    get,
    path = "/admin/dead-letters",
    tag = "admin",
    summary = "Dead letters / Bản ghi lỗi",
    description = "Records the database refused, newest first (at most 1,000); one tenant's or \
                   all. — Các bản ghi bị cơ sở dữ liệu từ chối, mới nhất trước (tối đa 1.000); \
                   của một tổ chức hoặc tất cả.",
    params(("tenant_id" = Option<TenantFilter>, Query, description = "Only this tenant's; empty for every tenant / Chỉ của tổ chức này; để trống cho mọi tổ chức")),
    responses(
        (status = 200, description = "The dead letters / Các bản ghi lỗi", body = DeadLetterList),
        (status = 400, description = INVALID_TENANT_ID, body = ErrorBody),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
    )
)]
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
            let rows =
                dead_letters::dead_letters(&state.pool, tenant_opt, DEAD_LETTER_LIST_LIMIT).await?;
            let items: Vec<DeadLetterBody> = rows
                .into_iter()
                .map(|row| {
                    let replayed = row.replayed_at_opt.is_some();
                    DeadLetterBody {
                        dead_letter_id: row.dead_letter_id,
                        tenant_id: row.tenant_id,
                        scan_id: row.scan_id_opt,
                        record_index: row.record_index,
                        error: row.error,
                        attempts: row.attempts,
                        created_at: row.created_at,
                        replayed_at: row.replayed_at_opt,
                        status: if replayed { "replayed" } else { "pending" },
                        status_vi: if replayed {
                            "đã ghi lại"
                        } else {
                            "đang chờ xử lý"
                        },
                    }
                })
                .collect();
            Ok(warp::reply::json(&DeadLetterList {
                count: items.len(),
                dead_letters: items,
            })
            .into_response())
        }
        .await,
    )
}

/// Writes a dead letter again, once its cause is fixed.
#[utoipa::path(
    post,
    path = "/admin/dead-letters/{dead_letter_id}/replay",
    tag = "admin",
    summary = "Replay a dead letter / Ghi lại bản ghi lỗi",
    description = "Writes the record again (once); 422 with the new error if it still fails. — \
                   Ghi lại bản ghi (một lần); 422 kèm lỗi mới nếu vẫn thất bại.",
    params(("dead_letter_id" = i64, Path, minimum = 1, description = "The dead letter / Mã bản ghi lỗi")),
    responses(
        (status = 200, description = "Written / Đã ghi", body = ReplayedDeadLetter),
        (status = 400, description = "The id is not a positive integer / Mã không phải số nguyên dương", body = ErrorBody),
        (status = 403, description = ADMIN_ONLY, body = ErrorBody),
        (status = 404, description = "No such dead letter / Không có bản ghi lỗi này", body = ErrorBody),
        (status = 409, description = "Already replayed / Đã được ghi lại", body = ErrorBody),
        (status = 422, description = "Refused again / Vẫn bị từ chối", body = ErrorBody),
    )
)]
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
                ReplayOutcome::Written { tenant_id } => {
                    Ok(warp::reply::json(&ReplayedDeadLetter {
                        dead_letter_id,
                        tenant_id,
                        replayed: true,
                        message: "the record was written",
                        message_vi: "bản ghi đã được ghi thành công",
                    })
                    .into_response())
                }
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
