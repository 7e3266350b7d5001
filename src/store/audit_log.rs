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
    let statement = client.prepare(RECORD).await?;
    record_prepared(client, &statement, event).await
}

/// The statement of [`record`], for a caller that prepares its statements together.
pub const RECORD: &str = "INSERT INTO audit_log (tenant_id, occurred_at, event_id, actor, action, subject, details, summary, summary_vi) \
     VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8)";

/// [`record`] with [`RECORD`] already prepared: the entry is sent at the first poll.
pub async fn record_prepared(
    client: &impl tokio_postgres::GenericClient,
    statement: &tokio_postgres::Statement,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    client
        .execute(
            statement,
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
    record(&**connection, event).await
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
    months_ahead_on(&**connection, time_zone).await
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

/// A month's partition of the log, attached or left detached by an interrupted archive run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthPartition {
    /// The month's first day in the log's time zone.
    pub month: NaiveDate,
    pub table: String,
    /// Still a partition of `audit_log` (false: detached, waiting to be dropped).
    pub attached: bool,
    /// A `DETACH … CONCURRENTLY` was interrupted: it must be finalized.
    pub detach_pending: bool,
}

/// The log's month tables older than `retain_months` before the current month (in
/// `time_zone`), oldest first: attached partitions, and tables an interrupted run detached.
pub async fn months_to_archive(
    client: &impl tokio_postgres::GenericClient,
    time_zone: &str,
    retain_months: u32,
) -> Result<Vec<MonthPartition>, StoreError> {
    let rows = client
        .query(
            "SELECT to_date(substr(c.relname, 12, 4) || substr(c.relname, 17, 2) || '01', 'YYYYMMDD') AS month, \
                    c.relname::text AS table_name, \
                    i.inhrelid IS NOT NULL AS attached, \
                    coalesce(i.inhdetachpending, false) AS detach_pending \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() \
             LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'audit_log'::regclass \
             WHERE c.relkind = 'r' AND c.relname ~ '^audit_log_y[0-9]{4}m[0-9]{2}$' \
               AND to_date(substr(c.relname, 12, 4) || substr(c.relname, 17, 2) || '01', 'YYYYMMDD') \
                   < (date_trunc('month', now() AT TIME ZONE $1) - make_interval(months => $2))::date \
             ORDER BY month",
            &[&time_zone, &(retain_months as i32)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(MonthPartition {
                month: row.try_get("month")?,
                table: row.try_get("table_name")?,
                attached: row.try_get("attached")?,
                detach_pending: row.try_get("detach_pending")?,
            })
        })
        .collect()
}

/// A month table's rows, first and last time (microseconds since the epoch, UTC).
pub async fn month_summary(
    client: &impl tokio_postgres::GenericClient,
    table: &str,
) -> Result<(i64, Option<i64>, Option<i64>), StoreError> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) AS rows, \
                        (extract(epoch FROM min(occurred_at)) * 1000000)::bigint AS first_micros, \
                        (extract(epoch FROM max(occurred_at)) * 1000000)::bigint AS last_micros \
                 FROM {}",
                quoted(table)
            ),
            &[],
        )
        .await?;
    Ok((
        row.try_get("rows")?,
        row.try_get("first_micros")?,
        row.try_get("last_micros")?,
    ))
}

/// Reads a month table in `(occurred_at, event_id)` order, `batch` rows at a time, handing each
/// batch to `visit` (so a month of millions of entries is never held at once).
pub async fn read_month(
    client: &mut tokio_postgres::Client,
    table: &str,
    batch: usize,
    mut visit: impl FnMut(Vec<crate::audit::parquet_file::ArchivedEntry>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use futures_util::{pin_mut, TryStreamExt};
    let transaction = client.build_transaction().read_only(true).start().await?;
    let statement = format!(
        "SELECT tenant_id, (extract(epoch FROM occurred_at) * 1000000)::bigint AS occurred_at_micros, \
                event_id, actor, action, subject, details::text AS details, summary, summary_vi \
         FROM {} ORDER BY occurred_at, event_id",
        quoted(table)
    );
    let rows = transaction
        .query_raw(&statement, std::iter::empty::<&(dyn ToSql + Sync)>())
        .await?;
    pin_mut!(rows);
    let mut entries = Vec::with_capacity(batch);
    while let Some(row) = rows.try_next().await? {
        entries.push(crate::audit::parquet_file::ArchivedEntry {
            tenant_id: row.try_get("tenant_id")?,
            occurred_at_micros: row.try_get("occurred_at_micros")?,
            event_id: row.try_get("event_id")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            subject: row.try_get("subject")?,
            details: row.try_get("details")?,
            summary: row.try_get("summary")?,
            summary_vi: row.try_get("summary_vi")?,
        });
        if entries.len() == batch {
            visit(std::mem::replace(&mut entries, Vec::with_capacity(batch)))?;
        }
    }
    if !entries.is_empty() {
        visit(entries)?;
    }
    transaction.commit().await?;
    Ok(())
}

/// The catalogue's entry for `month`, if any.
pub async fn catalogued(
    client: &impl tokio_postgres::GenericClient,
    month: NaiveDate,
) -> Result<Option<ArchiveRow>, StoreError> {
    client
        .query_opt(
            &format!("SELECT {ARCHIVE_COLUMNS} FROM audit_archives WHERE month = $1"),
            &[&month],
        )
        .await?
        .as_ref()
        .map(archive_from_row)
        .transpose()
}

/// Records (or, after a rewrite, replaces) a month's verified file in the catalogue.
pub async fn catalogue(
    client: &impl tokio_postgres::GenericClient,
    archive: &ArchiveRow,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO audit_archives (month, path, rows, bytes, sha256, first_occurred_at, last_occurred_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (month) DO UPDATE SET path = excluded.path, rows = excluded.rows, \
                 bytes = excluded.bytes, sha256 = excluded.sha256, \
                 first_occurred_at = excluded.first_occurred_at, \
                 last_occurred_at = excluded.last_occurred_at, archived_at = now()",
            &[
                &archive.month,
                &archive.path,
                &archive.rows,
                &archive.bytes,
                &archive.sha256,
                &archive.first_occurred_at_opt,
                &archive.last_occurred_at_opt,
            ],
        )
        .await?;
    Ok(())
}

/// Detaches a month's partition without blocking the log's writers: `DETACH … CONCURRENTLY`
/// (its own statement, outside any transaction), or `FINALIZE` for one an interrupted run left
/// pending.
pub async fn detach(
    client: &tokio_postgres::Client,
    partition: &MonthPartition,
) -> Result<(), StoreError> {
    let mode = if partition.detach_pending {
        "FINALIZE"
    } else {
        "CONCURRENTLY"
    };
    client
        .simple_query(&format!(
            "ALTER TABLE audit_log DETACH PARTITION {} {mode}",
            quoted(&partition.table)
        ))
        .await?;
    Ok(())
}

/// Drops a detached month table.
pub async fn drop_month(client: &tokio_postgres::Client, table: &str) -> Result<(), StoreError> {
    client
        .simple_query(&format!("DROP TABLE IF EXISTS {}", quoted(table)))
        .await?;
    Ok(())
}

/// A session lock held by the instance archiving (released when its connection closes): only
/// one archives at a time. `false` if another instance holds it.
pub async fn try_lock_archive(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&ARCHIVE_LOCK])
        .await?;
    Ok(row.get(0))
}

const ARCHIVE_LOCK: i64 = 0x6175_6469_745f_6172; // "audit_ar"

/// A month table's name, quoted (it only ever matches `audit_log_yYYYYmMM`).
fn quoted(table: &str) -> String {
    format!("\"{}\"", table.replace('"', "\"\""))
}
