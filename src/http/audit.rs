//! The audit log's read routes: `GET /admin/audit` (admin scope; a tenant key reads its own
//! tenant's entries only) and `GET /admin/audit/archives` (admin scope).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use warp::reply::Response;
use warp::Reply;

use super::auth::authenticate;
use super::error::ErrorBody;
use super::headers::HeaderText;
use super::ingest::parse_tenant_id_param;
use super::openapi::AuditActionName;
use super::{respond, ApiError, AppState, Query};
use crate::domain::audit::AuditAction;
use crate::domain::auth::{Denial, Scope};
use crate::store::audit_log::{self, ArchiveRow, AuditQuery};

/// `GET /admin/audit`.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    count: usize,
    entries: Vec<AuditEntryBody>,
    /// The next page's `cursor`; null on the last page.
    next_cursor: Option<String>,
    /// The time zone of `occurred_at` (`audit.timezone`).
    #[schema(example = "Asia/Ho_Chi_Minh")]
    time_zone: String,
    /// Months of the asked range already archived to Parquet (read them there).
    archived_months: Vec<ArchiveBody>,
}

/// One audit log entry.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditEntryBody {
    event_id: Uuid,
    /// RFC 3339, with the offset of `time_zone`.
    #[schema(format = DateTime)]
    occurred_at: String,
    tenant_id: Uuid,
    actor: String,
    #[schema(value_type = AuditActionName)]
    action: String,
    subject: String,
    #[schema(value_type = Object)]
    details: serde_json::Value,
    summary: String,
    summary_vi: String,
}

/// `GET /admin/audit/archives`.
#[derive(Serialize, ToSchema)]
pub struct ArchiveList {
    count: usize,
    archives: Vec<ArchiveBody>,
}

/// One month of the audit log, archived to a Parquet file.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditArchive)]
pub struct ArchiveBody {
    /// `YYYY-MM`.
    #[schema(example = "2026-10")]
    month: String,
    path: String,
    rows: i64,
    bytes: i64,
    sha256: String,
    first_occurred_at: Option<DateTime<Utc>>,
    last_occurred_at: Option<DateTime<Utc>>,
    archived_at: DateTime<Utc>,
}

const AUDIT_DEFAULT_LIMIT: i64 = 100;
const AUDIT_MAX_LIMIT: i64 = 1_000;

/// Reads the audit log, newest first.
#[utoipa::path(
    get,
    path = "/admin/audit",
    tag = "admin",
    summary = "Audit log / Nhật ký kiểm toán",
    description = "Entries newest first, by tenant, action and time range. An admin key reads \
                   every tenant's entries; a tenant key its own tenant's only. — Các mục mới nhất \
                   trước, lọc theo tổ chức, hành động và khoảng thời gian. Khóa quản trị đọc được \
                   mọi tổ chức; khóa của tổ chức chỉ đọc được mục của chính tổ chức đó.",
    params(
        ("tenant_id" = Option<Uuid>, Query, description = "Only this tenant's / Chỉ của tổ chức này"),
        ("action" = Option<AuditActionName>, Query, description = "Only this action / Chỉ hành động này"),
        ("from" = Option<String>, Query, format = DateTime, description = "From this time (RFC 3339) / Từ thời điểm này (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Before this time (RFC 3339) / Trước thời điểm này (RFC 3339)"),
        ("cursor" = Option<String>, Query, pattern = "^-?[0-9]{1,19}_[0-9a-fA-F]{32}$", description = "A previous page's next_cursor / Giá trị next_cursor của trang trước"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100) / Kích thước trang (mặc định 100)"),
    ),
    responses(
        (status = 200, description = "The entries / Các mục", body = AuditPage),
        (status = 400, description = "Malformed parameter / Tham số không hợp lệ", body = ErrorBody),
        (status = 403, description = "A service key, or another tenant's entries / Khóa dịch vụ, hoặc mục của tổ chức khác", body = ErrorBody),
    )
)]
pub async fn read_audit(state: Arc<AppState>, authorization: HeaderText, query: Query) -> Response {
    respond(read_audit_inner(state, authorization, query).await)
}

async fn read_audit_inner(
    state: Arc<AppState>,
    authorization: HeaderText,
    query: Query,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &authorization).await?;
    let asked_opt = query
        .get("tenant_id")
        .map(|text| parse_tenant_id_param(text))
        .transpose()?;
    // A tenant key reads its own entries, whether or not it names its tenant.
    let tenant_opt = match principal.scope {
        Scope::Admin => asked_opt,
        Scope::Tenant(own) => match asked_opt {
            Some(asked) if asked != own => return Err(Denial::OtherTenant.into()),
            _ => Some(own),
        },
        Scope::Service => return Err(Denial::AdminOnly.into()),
    };
    let action_opt = match query.get("action") {
        None => None,
        Some(action) if AuditAction::NAMES.contains(&action.as_str()) => Some(action.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_action",
                format!("action must be one of {}", AuditAction::NAMES.join(", ")),
                format!("action phải là một trong {}", AuditAction::NAMES.join(", ")),
            ))
        }
    };
    let limit = match query.get("limit") {
        None => AUDIT_DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=AUDIT_MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be an integer from 1 to {AUDIT_MAX_LIMIT}"),
                    format!("limit phải là số nguyên từ 1 đến {AUDIT_MAX_LIMIT}"),
                )
            })?,
    };
    let audit_query = AuditQuery {
        tenant_opt,
        action_opt,
        from_opt: time_param(&query, "from")?,
        to_opt: time_param(&query, "to")?,
        after_opt: query
            .get("cursor")
            .map(|text| parse_cursor(text))
            .transpose()?,
        limit,
    };
    let (entries, archives) =
        audit_log::read(&state.pool, &state.settings.audit.timezone, &audit_query).await?;
    let next_cursor = (entries.len() as i64 == limit)
        .then(|| {
            entries
                .last()
                .map(|last| cursor_of(last.occurred_at, last.event_id))
        })
        .flatten();
    let entries: Vec<AuditEntryBody> = entries
        .into_iter()
        .map(|entry| AuditEntryBody {
            event_id: entry.event_id,
            occurred_at: entry.occurred_at_local,
            tenant_id: entry.tenant_id,
            actor: entry.actor,
            action: entry.action,
            subject: entry.subject,
            details: entry.details,
            summary: entry.summary,
            summary_vi: entry.summary_vi,
        })
        .collect();
    let body = AuditPage {
        count: entries.len(),
        entries,
        next_cursor,
        time_zone: state.settings.audit.timezone.clone(),
        archived_months: archives.iter().map(archive_body).collect(),
    };
    Ok(warp::reply::json(&body).into_response())
}

/// The audit log's archived months.
#[utoipa::path(
    get,
    path = "/admin/audit/archives",
    tag = "admin",
    summary = "Audit archives / Kho lưu trữ nhật ký kiểm toán",
    description = "Months of the audit log archived to Parquet files, with their checksums. — \
                   Các tháng nhật ký kiểm toán đã lưu trữ thành tệp Parquet, kèm mã kiểm tra.",
    responses(
        (status = 200, description = "The archives / Các bản lưu trữ", body = ArchiveList),
        (status = 403, description = "Needs an admin key / Cần khóa quản trị", body = ErrorBody),
    )
)]
pub async fn list_archives(state: Arc<AppState>, authorization: HeaderText) -> Response {
    respond(
        async {
            let principal = authenticate(&state, &authorization).await?;
            principal.require_admin()?;
            let archives = audit_log::archives(&state.pool).await?;
            let body = ArchiveList {
                count: archives.len(),
                archives: archives.iter().map(archive_body).collect(),
            };
            Ok(warp::reply::json(&body).into_response())
        }
        .await,
    )
}

fn archive_body(archive: &ArchiveRow) -> ArchiveBody {
    ArchiveBody {
        month: archive.month.format("%Y-%m").to_string(),
        path: archive.path.clone(),
        rows: archive.rows,
        bytes: archive.bytes,
        sha256: archive.sha256.clone(),
        first_occurred_at: archive.first_occurred_at_opt,
        last_occurred_at: archive.last_occurred_at_opt,
        archived_at: archive.archived_at,
    }
}

/// `from` / `to`: RFC 3339 times (with their offset).
fn time_param(query: &Query, name: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
    query
        .get(name)
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|time| time.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_time",
                        format!("{name} must be an RFC 3339 time, e.g. 2026-11-01T00:00:00+07:00"),
                        format!("{name} phải là thời điểm theo RFC 3339, ví dụ 2026-11-01T00:00:00+07:00"),
                    )
                })
        })
        .transpose()
}

/// A page's last entry as the next page's start: its time in microseconds and its id.
fn cursor_of(occurred_at: DateTime<Utc>, event_id: Uuid) -> String {
    format!("{}_{}", occurred_at.timestamp_micros(), event_id.simple())
}

/// Cursor times outside years 1 to 9999 name no entry, and PostgreSQL refuses some of them
/// (before 4713 BC); they are malformed cursors, not database errors.
const CURSOR_MICROS: std::ops::RangeInclusive<i64> =
    -62_135_596_800_000_000..=253_402_300_799_999_999;

fn parse_cursor(text: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    text.split_once('_')
        .and_then(|(micros, id)| {
            let micros: i64 = micros
                .parse()
                .ok()
                .filter(|micros| CURSOR_MICROS.contains(micros))?;
            let time = DateTime::from_timestamp_micros(micros)?;
            Some((time, Uuid::try_parse(id).ok()?))
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor must be the next_cursor of a previous page",
                "cursor phải là giá trị next_cursor của trang trước",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_the_entry_it_names() {
        let time = DateTime::from_timestamp_micros(1_796_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(parse_cursor(&cursor_of(time, id)).unwrap(), (time, id));
        assert!(parse_cursor("nope").is_err());
        assert!(parse_cursor("12_zz").is_err());
        // Found by schemathesis: a time PostgreSQL cannot hold was a 422 from the database.
        let id = Uuid::nil().simple().to_string();
        assert!(parse_cursor(&format!("-1142380670341364866_{id}")).is_err());
        assert!(parse_cursor(&format!("253402300800000000_{id}")).is_err());
        assert!(parse_cursor(&format!("-62135596800000000_{id}")).is_ok());
    }
}
