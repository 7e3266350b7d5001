//! Retention (SPEC section 7): finished scans and replayed dead letters older than
//! `retention.scan_days` are deleted in batches of [`store::retention::BATCH`], each its own
//! short transaction that skips locked rows; the run is one audit entry.

use crate::domain::audit::AuditEvent;
use crate::store::{audit_log, retention, Pool, StoreError};

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub scans_deleted: u64,
    pub dead_letters_deleted: u64,
}

pub async fn run(pool: &Pool, scan_days: u32) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport::default();
    loop {
        let deleted = retention::delete_finished_scans(pool, scan_days).await?;
        report.scans_deleted += deleted;
        if deleted < retention::BATCH as u64 {
            break;
        }
    }
    loop {
        let deleted = retention::delete_replayed_dead_letters(pool, scan_days).await?;
        report.dead_letters_deleted += deleted;
        if deleted < retention::BATCH as u64 {
            break;
        }
    }
    let event =
        AuditEvent::retention_run(scan_days, report.scans_deleted, report.dead_letters_deleted);
    audit_log::record_alone(pool, &event).await?;
    Ok(report)
}
