//! Retention's SQL (SPEC section 7): finished scans (with their error lists) and replayed dead
//! letters older than `retention.scan_days`, deleted in small batches, each its own short
//! transaction that skips rows another transaction holds, so a run never waits for, or holds
//! up, ingestion. Pending and processing scans, staged chunks and activities are never
//! touched: only rows whose status is final (or whose replay is done) match.

use super::{Pool, StoreError};

/// Rows deleted per transaction.
pub const BATCH: i64 = 1_000;

/// Deletes one batch of finished scans older than `days`; returns how many.
pub async fn delete_finished_scans(pool: &Pool, days: u32) -> Result<u64, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    Ok(connection
        .execute(
            "DELETE FROM scans WHERE (tenant_id, scan_id) IN ( \
                 SELECT tenant_id, scan_id FROM scans \
                 WHERE status IN ('completed', 'completed_with_errors', 'failed') \
                   AND completed_at < now() - make_interval(days => $1) \
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&(days as i32), &BATCH],
        )
        .await?)
}

/// Deletes one batch of dead letters replayed more than `days` ago; returns how many.
pub async fn delete_replayed_dead_letters(pool: &Pool, days: u32) -> Result<u64, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    Ok(connection
        .execute(
            "DELETE FROM dead_letters WHERE (tenant_id, dead_letter_id) IN ( \
                 SELECT tenant_id, dead_letter_id FROM dead_letters \
                 WHERE replayed_at < now() - make_interval(days => $1) \
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&(days as i32), &BATCH],
        )
        .await?)
}
