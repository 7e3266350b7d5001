//! The audit log's SQL: writing an entry inside the caller's transaction, the monthly
//! partitions' upkeep, and reading entries newest first.
//!
//! **Invariant:** an entry is written by the transaction of the change it records (the caller
//! passes its transaction), so it exists exactly when the change committed. Nothing here
//! updates or deletes an entry.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Pool, StoreError};
use crate::domain::audit::AuditEvent;
use crate::domain::TenantId;

/// Writes `event` in the caller's transaction, at the database's clock.
pub async fn record(
    client: &impl tokio_postgres::GenericClient,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO audit_log (tenant_id, occurred_at, event_id, actor, action, subject, details, summary, summary_vi) \
             VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8)",
            &[
                &event.tenant_id.0,
                &event.event_id,
                &event.actor,
                &event.action.as_str(),
                &event.subject,
                &event.details,
                &event.summary,
                &event.summary_vi,
            ],
        )
        .await?;
    Ok(())
}

/// Writes `event` in a transaction of its own, for a change that is not one transaction (a
/// batch, whose chunks commit one by one).
pub async fn record_alone(pool: &Pool, event: &AuditEvent) -> Result<(), StoreError> {
    let connection = super::connections::checkout(pool).await?;
    record(&*connection, event).await
}

/// Serialises the upkeep of every instance on one database.
const UPKEEP_LOCK: i64 = 0x6175_6469_745f_6d6b; // "audit_mk"

/// Longest a partition's creation waits for its parent's lock before giving up (and retrying
/// later), so upkeep never holds writers of the log queued behind it for longer.
const UPKEEP_LOCK_TIMEOUT: &str = "500ms";

/// What one upkeep pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpkeepReport {
    /// The first days of the months whose partitions this pass created.
    pub created: Vec<NaiveDate>,
    /// Months after the current one whose partitions exist, counted up to the first missing.
    pub months_ahead: i64,
}

/// Creates the partitions of the current month and `premake_months` ahead (months in
/// `time_zone`) that are missing, and records the run in the log, in one transaction under an
/// advisory lock (instances doing it at once take turns; the second finds nothing to do) and a
/// short `lock_timeout` (a lock-timeout error is retryable: the caller tries again later).
pub async fn ensure_partitions(
    pool: &Pool,
    time_zone: &str,
    premake_months: u32,
    event: impl FnOnce(&UpkeepReport) -> AuditEvent,
) -> Result<UpkeepReport, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&UPKEEP_LOCK])
        .await?;
    transaction
        .batch_execute(&format!("SET LOCAL lock_timeout = '{UPKEEP_LOCK_TIMEOUT}'"))
        .await?;
    let rows = transaction
        .query(
            "SELECT month_start, ingest_audit_month_partition(month_start, $1) AS created \
             FROM (SELECT (date_trunc('month', now() AT TIME ZONE $1) \
                           + make_interval(months => ahead))::date AS month_start \
                   FROM generate_series(0, $2) AS ahead) AS months \
             ORDER BY month_start",
            &[&time_zone, &(premake_months as i32)],
        )
        .await?;
    let created = rows
        .iter()
        .filter(|row| row.get::<_, bool>("created"))
        .map(|row| row.get("month_start"))
        .collect();
    let months_ahead = months_ahead_on(&transaction, time_zone).await?;
    let report = UpkeepReport {
        created,
        months_ahead,
    };
    record(&transaction, &event(&report)).await?;
    transaction.commit().await?;
    Ok(report)
}

/// Months after the current one (in `time_zone`) whose partitions exist, up to the first gap.
pub async fn months_ahead(pool: &Pool, time_zone: &str) -> Result<i64, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    months_ahead_on(&*connection, time_zone).await
}

async fn months_ahead_on(
    client: &impl tokio_postgres::GenericClient,
    time_zone: &str,
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT coalesce(min(ahead) - 1, 24)::bigint AS ready \
             FROM generate_series(1, 25) AS ahead \
             WHERE to_regclass(to_char(date_trunc('month', now() AT TIME ZONE $1) \
                                       + make_interval(months => ahead), \
                                       '\"audit_log_y\"YYYY\"m\"MM')) IS NULL",
            &[&time_zone],
        )
        .await?;
    Ok(row.get("ready"))
}

/// Which entries a read wants, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant_opt: Option<TenantId>,
    pub action_opt: Option<String>,
    pub from_opt: Option<DateTime<Utc>>,
    pub to_opt: Option<DateTime<Utc>>,
    /// Entries strictly older than this (occurred_at, event_id): the previous page's last.
    pub after_opt: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// One entry as read, its time already rendered in the log's time zone.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// RFC 3339 with the offset of `audit.timezone`.
    pub occurred_at_local: String,
    pub tenant_id: Uuid,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: Value,
    pub summary: String,
    pub summary_vi: String,
}

/// An archived month a read's range covers.
#[derive(Debug, Clone)]
pub struct ArchiveRow {
    pub month: NaiveDate,
    pub path: String,
    pub rows: i64,
    pub bytes: i64,
    pub sha256: String,
    pub first_occurred_at_opt: Option<DateTime<Utc>>,
    pub last_occurred_at_opt: Option<DateTime<Utc>>,
    pub archived_at: DateTime<Utc>,
}

/// Entries matching `query`, newest first, and the archived months its range covers. Only the
/// conditions asked for are in the statement, so the planner prunes partitions by time and
/// walks the `(tenant_id, occurred_at, event_id)` key backwards for one tenant.
pub async fn read(
    pool: &Pool,
    time_zone: &str,
    query: &AuditQuery,
) -> Result<(Vec<AuditEntry>, Vec<ArchiveRow>), StoreError> {
    let mut conditions: Vec<String> = Vec::new();
    let mut parameters: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    // Each condition names its parameters `?`, numbered in order here.
    fn add(
        conditions: &mut Vec<String>,
        parameters: &mut Vec<Box<dyn ToSql + Sync + Send>>,
        condition: &str,
        values: Vec<Box<dyn ToSql + Sync + Send>>,
    ) {
        let mut numbered = String::new();
        let mut pieces = condition.split('?');
        numbered.push_str(pieces.next().unwrap_or(""));
        for (value, piece) in values.into_iter().zip(pieces) {
            parameters.push(value);
            numbered.push_str(&format!("${}{piece}", parameters.len()));
        }
        conditions.push(numbered);
    }
    if let Some(tenant) = query.tenant_opt {
        add(
            &mut conditions,
            &mut parameters,
            "tenant_id = ?",
            vec![Box::new(tenant.0)],
        );
    }
    if let Some(action) = &query.action_opt {
        add(
            &mut conditions,
            &mut parameters,
            "action = ?",
            vec![Box::new(action.clone())],
        );
    }
    if let Some(from) = query.from_opt {
        add(
            &mut conditions,
            &mut parameters,
            "occurred_at >= ?",
            vec![Box::new(from)],
        );
    }
    if let Some(to) = query.to_opt {
        add(
            &mut conditions,
            &mut parameters,
            "occurred_at < ?",
            vec![Box::new(to)],
        );
    }
    if let Some((occurred_at, event_id)) = query.after_opt {
        // The first condition lets the planner prune newer partitions.
        add(
            &mut conditions,
            &mut parameters,
            "occurred_at <= ? AND (occurred_at, event_id) < (?, ?)",
            vec![
                Box::new(occurred_at),
                Box::new(occurred_at),
                Box::new(event_id),
            ],
        );
    }
    parameters.push(Box::new(query.limit));
    let limit_position = parameters.len();
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT event_id, occurred_at, \
                to_char(occurred_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.USTZH:TZM') AS occurred_at_local, \
                tenant_id, actor, action, subject, details, summary, summary_vi \
         FROM audit_log {where_clause} \
         ORDER BY occurred_at DESC, event_id DESC LIMIT ${limit_position}"
    );
    let mut connection = super::connections::checkout(pool).await?;
    let transaction = connection
        .build_transaction()
        .read_only(true)
        .start()
        .await?;
    // Renders times in the log's zone (to_char uses the session's), for this transaction only.
    transaction
        .execute("SELECT set_config('TimeZone', $1, true)", &[&time_zone])
        .await?;
    let borrowed: Vec<&(dyn ToSql + Sync)> = parameters
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = transaction.query(&sql, &borrowed).await?;
    let entries = rows
        .iter()
        .map(|row| {
            Ok(AuditEntry {
                event_id: row.try_get("event_id")?,
                occurred_at: row.try_get("occurred_at")?,
                occurred_at_local: row.try_get("occurred_at_local")?,
                tenant_id: row.try_get("tenant_id")?,
                actor: row.try_get("actor")?,
                action: row.try_get("action")?,
                subject: row.try_get("subject")?,
                details: row.try_get("details")?,
                summary: row.try_get("summary")?,
                summary_vi: row.try_get("summary_vi")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let archive_rows = transaction
        .query(
            &format!(
                "SELECT {ARCHIVE_COLUMNS} FROM audit_archives \
                 WHERE ($1::timestamptz IS NULL OR last_occurred_at >= $1) \
                   AND ($2::timestamptz IS NULL OR first_occurred_at < $2) \
                 ORDER BY month DESC"
            ),
            &[&query.from_opt, &query.to_opt],
        )
        .await?;
    transaction.commit().await?;
    let archives = archive_rows
        .iter()
        .map(archive_from_row)
        .collect::<Result<_, _>>()?;
    Ok((entries, archives))
}

const ARCHIVE_COLUMNS: &str =
    "month, path, rows, bytes, sha256, first_occurred_at, last_occurred_at, archived_at";

fn archive_from_row(row: &tokio_postgres::Row) -> Result<ArchiveRow, StoreError> {
    Ok(ArchiveRow {
        month: row.try_get("month")?,
        path: row.try_get("path")?,
        rows: row.try_get("rows")?,
        bytes: row.try_get("bytes")?,
        sha256: row.try_get("sha256")?,
        first_occurred_at_opt: row.try_get("first_occurred_at")?,
        last_occurred_at_opt: row.try_get("last_occurred_at")?,
        archived_at: row.try_get("archived_at")?,
    })
}

/// The archive catalogue, newest month first.
pub async fn archives(pool: &Pool) -> Result<Vec<ArchiveRow>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let rows = connection
        .query(
            &format!("SELECT {ARCHIVE_COLUMNS} FROM audit_archives ORDER BY month DESC"),
            &[],
        )
        .await?;
    rows.iter().map(archive_from_row).collect()
}
