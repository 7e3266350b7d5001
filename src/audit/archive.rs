//! Archive, then drop (SPEC section 7): each month older than `audit.retain_months` is written
//! to one Parquet file under `audit.archive_dir`, in this order, each step idempotent:
//!
//! 1. rows read in `(occurred_at, event_id)` order, written to `<month>.parquet.partial`,
//!    fsynced; the file read back and checked against the partition (rows, first and last
//!    time);
//! 2. renamed to `audit_log_<YYYY-MM>.parquet`, the directory fsynced;
//! 3. recorded in `audit_archives` (path, rows, bytes, sha256, first and last time);
//! 4. `DETACH PARTITION … CONCURRENTLY` (or `FINALIZE` of one an interrupted run left pending);
//! 5. `DROP TABLE`.
//!
//! A run killed anywhere leaves the partition, a verified catalogued file, or both, never
//! neither: the table is dropped only after step 3, and a later run that finds a catalogued
//! month re-checks the file (rows, times, checksum) before it detaches or drops anything,
//! writing the file again if it does not match. Only one instance archives at a time (a session
//! lock on the run's own connection, which `DETACH … CONCURRENTLY` needs anyway: it cannot run
//! inside a transaction).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::DateTime;
use tokio_postgres::Config;

use super::parquet_file::{self, ArchiveWriter};
use crate::config::AuditSettings;
use crate::domain::audit::AuditEvent;
use crate::store::audit_log::{self, ArchiveRow, MonthPartition};

/// Rows per Parquet row group (and per batch read from the partition).
const ROWS_PER_GROUP: usize = 50_000;

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Another instance was archiving: this run did nothing.
    pub locked_elsewhere: bool,
    /// Months archived and dropped by this run, `YYYY-MM`.
    pub months: Vec<String>,
    pub rows: i64,
    pub bytes: i64,
}

/// Archives and drops every month older than `audit.retain_months`, on its own connection.
pub async fn run(database: &Config, settings: &AuditSettings) -> anyhow::Result<ArchiveReport> {
    let mut client = crate::store::connect(database).await?;
    if !audit_log::try_lock_archive(&client).await? {
        return Ok(ArchiveReport {
            locked_elsewhere: true,
            ..ArchiveReport::default()
        });
    }
    let months =
        audit_log::months_to_archive(&client, &settings.timezone, settings.retain_months).await?;
    let mut report = ArchiveReport::default();
    if months.is_empty() {
        return Ok(report);
    }
    std::fs::create_dir_all(&settings.archive_dir)
        .with_context(|| format!("creating {}", settings.archive_dir.display()))?;
    for partition in &months {
        let archive = archive_month(&mut client, &settings.archive_dir, partition)
            .await
            .with_context(|| format!("archiving {}", partition.table))?;
        report
            .months
            .push(partition.month.format("%Y-%m").to_string());
        report.rows += archive.rows;
        report.bytes += archive.bytes;
    }
    let event = AuditEvent::audit_archived(&report.months, report.rows, report.bytes);
    audit_log::record(&client, &event).await?;
    Ok(report)
}

async fn archive_month(
    client: &mut tokio_postgres::Client,
    directory: &Path,
    partition: &MonthPartition,
) -> anyhow::Result<ArchiveRow> {
    let (rows, first_opt, last_opt) = audit_log::month_summary(&*client, &partition.table).await?;
    let existing_opt = audit_log::catalogued(&*client, partition.month).await?;
    let verified_opt = existing_opt.filter(|existing| {
        file_matches(
            Path::new(&existing.path),
            existing,
            rows,
            first_opt,
            last_opt,
        )
    });
    let archive = match verified_opt {
        Some(archive) => archive,
        None => {
            let archive =
                write_file(client, directory, partition, rows, first_opt, last_opt).await?;
            audit_log::catalogue(&*client, &archive).await?;
            kill_point("catalogued");
            archive
        }
    };
    if partition.attached {
        audit_log::detach(client, partition).await?;
        kill_point("detached");
    }
    audit_log::drop_month(client, &partition.table).await?;
    tracing::info!(month = %partition.month, rows = archive.rows, bytes = archive.bytes, path = %archive.path, "audit month archived and dropped");
    Ok(archive)
}

/// Steps 1 and 2: the month's file, written, fsynced, checked and renamed into place.
async fn write_file(
    client: &mut tokio_postgres::Client,
    directory: &Path,
    partition: &MonthPartition,
    rows: i64,
    first_opt: Option<i64>,
    last_opt: Option<i64>,
) -> anyhow::Result<ArchiveRow> {
    let name = format!("audit_log_{}.parquet", partition.month.format("%Y-%m"));
    let final_path = directory.join(&name);
    let partial_path = directory.join(format!("{name}.partial"));
    let mut writer = ArchiveWriter::create(&partial_path)?;
    audit_log::read_month(client, &partition.table, ROWS_PER_GROUP, |entries| {
        writer.write(&entries)
    })
    .await?;
    writer.finish()?;
    kill_point("written");
    let summary = parquet_file::verify(&partial_path)?;
    if summary.rows != rows
        || summary.first_occurred_at_micros_opt != first_opt
        || summary.last_occurred_at_micros_opt != last_opt
    {
        bail!(
            "the file read back holds {} rows from {:?} to {:?}; the partition {rows} from {first_opt:?} to {last_opt:?}",
            summary.rows,
            summary.first_occurred_at_micros_opt,
            summary.last_occurred_at_micros_opt
        );
    }
    std::fs::rename(&partial_path, &final_path)
        .with_context(|| format!("renaming {}", partial_path.display()))?;
    sync_directory(directory)?;
    kill_point("renamed");
    let absolute = std::fs::canonicalize(&final_path).unwrap_or(final_path);
    Ok(ArchiveRow {
        month: partition.month,
        path: absolute.to_string_lossy().into_owned(),
        rows,
        bytes: summary.bytes,
        sha256: summary.sha256,
        first_occurred_at_opt: first_opt.and_then(DateTime::from_timestamp_micros),
        last_occurred_at_opt: last_opt.and_then(DateTime::from_timestamp_micros),
        archived_at: chrono::Utc::now(),
    })
}

/// Whether the catalogued file is there and still what was recorded, and what the partition
/// holds (when the partition still exists).
fn file_matches(
    path: &Path,
    recorded: &ArchiveRow,
    rows: i64,
    first_opt: Option<i64>,
    last_opt: Option<i64>,
) -> bool {
    let Ok(summary) = parquet_file::verify(path) else {
        return false;
    };
    summary.sha256 == recorded.sha256
        && summary.rows == recorded.rows
        && summary.rows == rows
        && summary.first_occurred_at_micros_opt == first_opt
        && summary.last_occurred_at_micros_opt == last_opt
}

fn sync_directory(directory: &Path) -> anyhow::Result<()> {
    std::fs::File::open(directory)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("fsync of {}", directory.display()))
}

/// The failure tests' hook: with `INGEST_AUDIT_ARCHIVE_KILL_AFTER` set to a step (`written`,
/// `renamed`, `catalogued`, `detached`), the process kills itself (SIGKILL) right after it, as
/// a crash or `kill -9` there would.
fn kill_point(step: &str) {
    if std::env::var("INGEST_AUDIT_ARCHIVE_KILL_AFTER").as_deref() == Ok(step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// The archive file a month is written to, for operators and tests.
pub fn file_name(month: chrono::NaiveDate) -> PathBuf {
    PathBuf::from(format!("audit_log_{}.parquet", month.format("%Y-%m")))
}
