//! One maintenance pass: partition upkeep, then archive, then retention. Each step is safe
//! with several instances (an advisory lock for upkeep, a session lock for the archive,
//! `SKIP LOCKED` batches for retention) and each failure is reported without stopping the
//! others.

use std::time::Duration;

use tokio_postgres::Config;

use super::archive::{self, ArchiveReport};
use super::retention::{self, RetentionReport};
use super::upkeep;
use crate::config::Settings;
use crate::store::audit_log::UpkeepReport;
use crate::store::Pool;

/// What one pass did, step by step.
#[derive(Debug)]
pub struct MaintenanceReport {
    pub upkeep: anyhow::Result<UpkeepReport>,
    pub archive: anyhow::Result<ArchiveReport>,
    pub retention: anyhow::Result<RetentionReport>,
}

impl MaintenanceReport {
    pub fn succeeded(&self) -> bool {
        self.upkeep.is_ok() && self.archive.is_ok() && self.retention.is_ok()
    }

    /// The pass in English and Vietnamese, one line per step (what `audit maintain` prints).
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        match &self.upkeep {
            Ok(report) => lines.push(format!(
                "partitions: {} created, {} months ready ahead / phân vùng: đã tạo {}, sẵn sàng {} tháng tới",
                report.created.len(), report.months_ahead, report.created.len(), report.months_ahead
            )),
            Err(error) => lines.push(format!("partitions failed / tạo phân vùng thất bại: {error:#}")),
        }
        match &self.archive {
            Ok(report) if report.locked_elsewhere => lines.push(
                "archive: another instance is archiving / lưu trữ: một phiên bản khác đang lưu trữ".to_string(),
            ),
            Ok(report) => lines.push(format!(
                "archive: {} months ({}) archived and dropped, {} entries, {} bytes / lưu trữ: {} tháng đã ghi ra Parquet và xóa, {} mục, {} byte",
                report.months.len(), report.months.join(", "), report.rows, report.bytes,
                report.months.len(), report.rows, report.bytes
            )),
            Err(error) => lines.push(format!("archive failed / lưu trữ thất bại: {error:#}")),
        }
        match &self.retention {
            Ok(report) => lines.push(format!(
                "retention: {} finished scans and {} replayed dead letters deleted / lưu giữ: đã xóa {} lượt quét đã xong và {} bản ghi lỗi đã ghi lại",
                report.scans_deleted, report.dead_letters_deleted, report.scans_deleted, report.dead_letters_deleted
            )),
            Err(error) => lines.push(format!("retention failed / xóa dữ liệu cũ thất bại: {error:#}")),
        }
        lines.join("\n")
    }
}

/// Runs the three steps once.
pub async fn run_pass(pool: &Pool, database: &Config, settings: &Settings) -> MaintenanceReport {
    let upkeep = upkeep::run(pool, &settings.audit)
        .await
        .map_err(anyhow::Error::from);
    let archive = archive::run(database, &settings.audit).await;
    let outcome = if archive.is_ok() { "ok" } else { "failed" };
    metrics::counter!(crate::metrics::AUDIT_ARCHIVE_RUNS, "outcome" => outcome).increment(1);
    match &archive {
        Ok(report) if !report.months.is_empty() => {
            metrics::counter!(crate::metrics::AUDIT_ARCHIVED_ROWS).increment(report.rows as u64);
        }
        Err(error) => tracing::error!(error = format!("{error:#}"), "audit archive failed"),
        _ => {}
    }
    let retention = retention::run(pool, settings.retention.scan_days)
        .await
        .map_err(anyhow::Error::from);
    if let Err(error) = &retention {
        tracing::warn!(error = format!("{error:#}"), "retention failed");
    }
    MaintenanceReport {
        upkeep,
        archive,
        retention,
    }
}

/// The pass as a background job: every `audit.maintenance_interval_secs`, or sooner after a
/// failure.
pub struct MaintenanceJob {
    pub pool: Pool,
    pub database: Config,
    pub settings: Settings,
}

impl crate::jobs::Job for MaintenanceJob {
    fn name(&self) -> &'static str {
        "audit_maintenance"
    }

    async fn run_once(&mut self) -> Duration {
        let report = run_pass(&self.pool, &self.database, &self.settings).await;
        if report.succeeded() {
            Duration::from_secs(self.settings.audit.maintenance_interval_secs.max(1))
        } else {
            upkeep::RETRY_AFTER_FAILURE
        }
    }
}
