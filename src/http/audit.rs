//! The audit log's read routes: `GET /admin/audit` (admin scope; a tenant key reads its own
//! tenant's entries only) and `GET /admin/audit/archives` (admin scope).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;
use warp::reply::Response;
use warp::Reply;

use super::auth::authenticate;
use super::headers::HeaderText;
use super::ingest::parse_tenant_id_param;
use super::{respond, ApiError, AppState, Query};
use crate::domain::audit::AuditAction;
use crate::domain::auth::{Denial, Scope};
use crate::store::audit_log::{self, ArchiveRow, AuditQuery};

const AUDIT_DEFAULT_LIMIT: i64 = 100;
const AUDIT_MAX_LIMIT: i64 = 1_000;

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
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            json!({
                "event_id": entry.event_id,
                "occurred_at": entry.occurred_at_local,
                "tenant_id": entry.tenant_id,
                "actor": entry.actor,
                "action": entry.action,
                "subject": entry.subject,
                "details": entry.details,
                "summary": entry.summary,
                "summary_vi": entry.summary_vi,
            })
        })
        .collect();
    let body = json!({
        "count": entries.len(),
        "entries": entries,
        "next_cursor": next_cursor,
        "time_zone": state.settings.audit.timezone,
        "archived_months": archives.iter().map(archive_json).collect::<Vec<_>>(),
    });
    Ok(warp::reply::json(&body).into_response())
}

pub async fn list_archives(state: Arc<AppState>, authorization: HeaderText) -> Response {
    respond(
        async {
            let principal = authenticate(&state, &authorization).await?;
            principal.require_admin()?;
            let archives = audit_log::archives(&state.pool).await?;
            let body = json!({
                "count": archives.len(),
                "archives": archives.iter().map(archive_json).collect::<Vec<_>>(),
            });
            Ok(warp::reply::json(&body).into_response())
        }
        .await,
    )
}

fn archive_json(archive: &ArchiveRow) -> serde_json::Value {
    json!({
        "month": archive.month.format("%Y-%m").to_string(),
        "path": archive.path,
        "rows": archive.rows,
        "bytes": archive.bytes,
        "sha256": archive.sha256,
        "first_occurred_at": archive.first_occurred_at_opt,
        "last_occurred_at": archive.last_occurred_at_opt,
        "archived_at": archive.archived_at,
    })
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

fn parse_cursor(text: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    text.split_once('_')
        .and_then(|(micros, id)| {
            let time = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
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
    }
}
