//! Scan reads (status, lists) on the read pool, and the request pool's health ping.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::reads::begin_tenant_read;
use super::{Pool, ReadPool, StoreError};
use crate::domain::{Priority, RecordError, ScanStatus, TenantId};

/// The columns [`ScanRow::from_row`] reads.
macro_rules! scan_columns {
    () => {
        "tenant_id, scan_id, status, priority, records_total, records_processed, \
         records_failed, errors, created_at, started_at, completed_at"
    };
}
pub const SCAN_COLUMNS: &str = scan_columns!();

/// The scan reads, public so a test can check their plans under the reader role.
pub const SCAN_STATUS_SQL: &str = concat!(
    "SELECT ",
    scan_columns!(),
    " FROM scans WHERE tenant_id = $1 AND scan_id = $2"
);
pub const SCAN_LIST_SQL: &str = concat!(
    "SELECT ",
    scan_columns!(),
    " FROM scans WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) \
     ORDER BY created_at DESC LIMIT $3"
);

/// A scan as stored.
#[derive(Debug, Clone)]
pub struct ScanRow {
    pub tenant_id: TenantId,
    pub scan_id: Uuid,
    pub status: ScanStatus,
    pub priority: Priority,
    pub records_total: i32,
    pub records_processed: i32,
    pub records_failed: i32,
    pub errors: Vec<RecordError>,
    pub created_at: DateTime<Utc>,
    pub started_at_opt: Option<DateTime<Utc>>,
    pub completed_at_opt: Option<DateTime<Utc>>,
}

impl ScanRow {
    pub fn from_row(row: &tokio_postgres::Row) -> Result<ScanRow, StoreError> {
        let status_text: &str = row.try_get("status")?;
        let status = ScanStatus::parse(status_text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown scan status {status_text:?}")))?;
        let errors_json: serde_json::Value = row.try_get("errors")?;
        let errors = serde_json::from_value(errors_json)
            .map_err(|error| StoreError::Corrupt(format!("scan errors: {error}")))?;
        Ok(ScanRow {
            tenant_id: TenantId(row.try_get("tenant_id")?),
            scan_id: row.try_get("scan_id")?,
            status,
            priority: Priority::from_rank(row.try_get("priority")?),
            records_total: row.try_get("records_total")?,
            records_processed: row.try_get("records_processed")?,
            records_failed: row.try_get("records_failed")?,
            errors,
            created_at: row.try_get("created_at")?,
            started_at_opt: row.try_get("started_at")?,
            completed_at_opt: row.try_get("completed_at")?,
        })
    }
}

/// A tenant's scan; `None` also for another tenant's scan, which row-level security hides.
pub async fn scan(
    pool: &ReadPool,
    tenant_id: TenantId,
    scan_id: Uuid,
) -> Result<Option<ScanRow>, StoreError> {
    let mut connection = pool.get().await?;
    let transaction = begin_tenant_read(&mut connection, tenant_id).await?;
    let row_opt = transaction
        .query_typed_opt(
            SCAN_STATUS_SQL,
            &[(&tenant_id.0, Type::UUID), (&scan_id, Type::UUID)],
        )
        .await?;
    transaction.commit().await?;
    row_opt.map(|row| ScanRow::from_row(&row)).transpose()
}

/// A tenant's most recent scans, optionally of one status.
pub async fn scans(
    pool: &ReadPool,
    tenant_id: TenantId,
    status_opt: Option<ScanStatus>,
    limit: i64,
) -> Result<Vec<ScanRow>, StoreError> {
    let mut connection = pool.get().await?;
    let transaction = begin_tenant_read(&mut connection, tenant_id).await?;
    let status_text_opt = status_opt.map(ScanStatus::as_str);
    let rows = transaction
        .query_typed(
            SCAN_LIST_SQL,
            &[
                (&tenant_id.0, Type::UUID),
                (&status_text_opt, Type::TEXT),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    transaction.commit().await?;
    rows.iter().map(ScanRow::from_row).collect()
}

/// One round trip on a request-pool connection.
pub async fn ping(pool: &Pool) -> Result<(), StoreError> {
    let connection = super::connections::checkout(pool).await?;
    connection.simple_query("SELECT 1").await?;
    Ok(())
}

/// PostgreSQL's own counters, for the metrics sampler.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseStatistics {
    pub cache_hit_ratio: f64,
    pub checkpoints_timed: i64,
    pub checkpoints_requested: i64,
}

pub async fn database_statistics(pool: &Pool) -> Result<DatabaseStatistics, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let row = connection
        .query_one(
            "SELECT coalesce(d.blks_hit::float8 / nullif(d.blks_hit + d.blks_read, 0), 1.0) AS cache_hit_ratio, \
                    b.checkpoints_timed, b.checkpoints_req \
             FROM pg_stat_database d, pg_stat_bgwriter b WHERE d.datname = current_database()",
            &[],
        )
        .await?;
    Ok(DatabaseStatistics {
        cache_hit_ratio: row.try_get("cache_hit_ratio")?,
        checkpoints_timed: row.try_get("checkpoints_timed")?,
        checkpoints_requested: row.try_get("checkpoints_req")?,
    })
}

/// The tenants with the most staged records, largest first.
pub async fn largest_backlogs(pool: &Pool, limit: i64) -> Result<Vec<(TenantId, i64)>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let rows = connection
        .query(
            "SELECT tenant_id, sum(record_count)::bigint AS records FROM staged_chunks \
             GROUP BY tenant_id ORDER BY records DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (TenantId(row.get("tenant_id")), row.get("records")))
        .collect())
}
