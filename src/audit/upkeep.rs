//! Partition upkeep: the current month and `audit.premake_months` ahead (months in
//! `audit.timezone`) always have their partition, created at start-up and then every
//! `audit.maintenance_interval_secs`, by whichever instance gets there first (they take turns
//! on an advisory lock; the second finds nothing to create). Each run is an audit entry.
//! Creating a partition waits at most a short `lock_timeout` for the log's lock, so upkeep never
//! holds the log's writers (scans being accepted and finished) queued behind it; a run that
//! timed out is retried after [`RETRY_AFTER_FAILURE`].

use std::time::Duration;

use serde_json::json;

use crate::actors::backoff::backoff;
use crate::config::AuditSettings;
use crate::domain::audit::AuditEvent;
use crate::store::audit_log::{self, UpkeepReport};
use crate::store::{Pool, StoreError};

/// A failed maintenance pass is tried again this soon, not at the next interval.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// One upkeep run.
pub async fn run(pool: &Pool, settings: &AuditSettings) -> Result<UpkeepReport, StoreError> {
    let result = audit_log::ensure_partitions(
        pool,
        &settings.timezone,
        settings.premake_months,
        |report| {
            let created: Vec<String> = report.created.iter().map(ToString::to_string).collect();
            AuditEvent::audit_maintenance(
                "partitions",
                json!({ "created": created, "months_ahead": report.months_ahead }),
                report.created.len(),
                report.months_ahead,
            )
        },
    )
    .await;
    match &result {
        Ok(report) => {
            metrics::counter!(crate::metrics::AUDIT_UPKEEP_RUNS, "outcome" => "ok").increment(1);
            metrics::gauge!(crate::metrics::AUDIT_PARTITIONS_AHEAD).set(report.months_ahead as f64);
            if !report.created.is_empty() {
                tracing::info!(created = ?report.created, months_ahead = report.months_ahead, "audit partitions created");
            }
        }
        Err(error) => {
            metrics::counter!(crate::metrics::AUDIT_UPKEEP_RUNS, "outcome" => "failed")
                .increment(1);
            tracing::warn!(%error, "audit upkeep failed; retrying soon");
        }
    }
    result
}

/// The run at start-up: the engine does not serve before this month's partition exists.
/// Retries a few times with backoff (another instance's upkeep, a lock time-out), then fails.
pub async fn run_at_startup(
    pool: &Pool,
    settings: &AuditSettings,
) -> Result<UpkeepReport, StoreError> {
    let mut attempt = 0;
    loop {
        match run(pool, settings).await {
            Err(error) if error.is_retryable() && attempt < 5 => {
                tokio::time::sleep(backoff(
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                    attempt,
                ))
                .await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
