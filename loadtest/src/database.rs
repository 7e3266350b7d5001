//! Everything the load test does in PostgreSQL: finding the engine's private cluster,
//! verifying what landed, and the plain `COPY` of the baseline.
//!
//! **Invariant:** only this module runs SQL, but for the two scenarios that measure the
//! database itself (`audit` loads and archives audit entries, `rls` times the dashboard's
//! statements), whose statements are their subject.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use futures_util::SinkExt;
use serde::Serialize;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use crate::copy_encoding::COPY_COLUMNS;

/// The line of `postmaster.pid` that holds the port (PostgreSQL's `LOCK_FILE_LINE_PORT`).
const POSTMASTER_PORT_LINE: usize = 4;

/// The engine's embedded cluster: superuser `ingest`, database `ingest`, trust authentication
/// on the loopback interface only.
const EMBEDDED_USER_AND_DATABASE: &str = "ingest@127.0.0.1";

/// What verification found in `processing_activities`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    pub passed: bool,
    pub tenants_checked: usize,
    pub rows_expected: i64,
    pub rows_found: i64,
    /// Tenants whose row count differs from what the engine acknowledged (at most 20 shown).
    pub mismatches: Vec<TenantCountMismatch>,
    pub mismatched_tenants: usize,
    /// Groups of `(tenant_id, scan_id, record_index)` present more than once.
    pub duplicate_groups: i64,
    /// Why verification could not run, if it could not.
    pub error_opt: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantCountMismatch {
    pub tenant_id: Uuid,
    pub expected: i64,
    pub found: i64,
}

/// The database URL of the cluster whose `postmaster.pid` is at `path`.
pub fn database_url_from_postmaster_pid(path: &Path) -> Result<String, String> {
    let contents = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "cannot read {} ({error}); is the engine running with its embedded PostgreSQL? \
             Pass --database-url or --postmaster-pid",
            path.display()
        )
    })?;
    let port = parse_postmaster_port(&contents)
        .map_err(|reason| format!("{}: {reason}", path.display()))?;
    Ok(format!(
        "postgres://{EMBEDDED_USER_AND_DATABASE}:{port}/ingest"
    ))
}

/// The port on line 4 of a `postmaster.pid` file.
pub fn parse_postmaster_port(contents: &str) -> Result<u16, String> {
    let line = contents
        .lines()
        .nth(POSTMASTER_PORT_LINE - 1)
        .ok_or_else(|| format!("no line {POSTMASTER_PORT_LINE} (the port) in postmaster.pid"))?;
    let port: u16 = line.trim().parse().map_err(|_| {
        format!("line {POSTMASTER_PORT_LINE} of postmaster.pid is not a port: {line:?}")
    })?;
    if port == 0 {
        return Err("postmaster.pid names port 0".to_string());
    }
    Ok(port)
}

/// A connection whose driver runs on its own task until the client is dropped.
pub async fn connect(database_url: &str) -> Result<Client, String> {
    let (client, connection) =
        tokio_postgres::connect(database_url, NoTls)
            .await
            .map_err(|error| {
                format!(
                    "cannot connect to {}: {error}",
                    redact_password(database_url)
                )
            })?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error here is reported by the
        // client's next query, so there is nothing more to do with it.
        let _ = connection.await;
    });
    Ok(client)
}

/// Makes the cluster's WAL segment files exist before a scenario, as they do on a cluster that
/// has run for a while: switches to a new segment `max_wal_size` / segment size times (each
/// switch creates the next file, zero-filled, as PostgreSQL does), then checkpoints, which
/// keeps the passed files for reuse (up to `max_wal_size`, from the distance just written).
/// Without this, a scenario on a fresh cluster charges the creation of its first gigabytes of
/// WAL to whatever runs first (the engine), and the baseline after it reuses those files.
/// Needs a role allowed to run `pg_switch_wal()` and `CHECKPOINT` (the private cluster's
/// superuser). Returns the number of segment switches.
pub async fn prepare_wal_segments(database_url: &str) -> Result<u64, String> {
    let client = connect(database_url).await?;
    let row = client
        .query_one(
            "SELECT (SELECT setting::bigint FROM pg_settings WHERE name = 'max_wal_size'), \
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
            &[],
        )
        .await
        .map_err(|error| format!("cannot read the WAL settings: {error}"))?;
    // max_wal_size is in megabytes, wal_segment_size in bytes.
    let (max_wal_megabytes, segment_bytes): (i64, i64) = (row.get(0), row.get(1));
    let switches = (max_wal_megabytes * 1024 * 1024 / segment_bytes.max(1)).max(0) as u64;
    for _ in 0..switches {
        // A switch needs WAL written since the last one: a transaction id's commit is some.
        client
            .batch_execute("SELECT txid_current()")
            .await
            .map_err(|error| format!("cannot write WAL: {error}"))?;
        client
            .batch_execute("SELECT pg_switch_wal()")
            .await
            .map_err(|error| format!("cannot switch WAL segments: {error}"))?;
    }
    client
        .batch_execute("CHECKPOINT")
        .await
        .map_err(|error| format!("cannot checkpoint: {error}"))?;
    Ok(switches)
}

/// Brings the database to rest before a measurement that follows another one: `VACUUM`
/// (which also sets the hint bits a verification's reads would otherwise leave to be written),
/// then `CHECKPOINT`, which writes every dirty page. A baseline run right after an engine part
/// then starts as the engine part did, with no vacuum, checkpoint or page writes of the earlier
/// part in progress; nothing of this is timed. A manual `VACUUM` waits at most
/// `deadlock_timeout` for an autovacuum of the same table, which then gives way.
/// Needs a role allowed to run `CHECKPOINT` (the private cluster's superuser).
pub async fn settle(database_url: &str) -> Result<(), String> {
    let client = connect(database_url).await?;
    client
        .batch_execute("VACUUM")
        .await
        .map_err(|error| format!("cannot vacuum: {error}"))?;
    client
        .batch_execute("CHECKPOINT")
        .await
        .map_err(|error| format!("cannot checkpoint: {error}"))
}

impl Verification {
    /// A verification of `expected_rows` that has not (or could not) run: it does not pass.
    pub fn not_passed(
        expected_rows: &BTreeMap<Uuid, i64>,
        error_opt: Option<String>,
    ) -> Verification {
        Verification {
            passed: false,
            tenants_checked: expected_rows.len(),
            rows_expected: expected_rows.values().sum(),
            rows_found: 0,
            mismatches: Vec::new(),
            mismatched_tenants: 0,
            duplicate_groups: 0,
            error_opt,
        }
    }
}

/// Checks that each tenant of `expected_rows` has exactly that many rows, and that no
/// `(tenant_id, scan_id, record_index)` is present twice. Never fails: a database error is
/// recorded in the verification, which then does not pass.
pub async fn verify(database_url: &str, expected_rows: &BTreeMap<Uuid, i64>) -> Verification {
    let mut verification = Verification::not_passed(expected_rows, None);
    if let Err(error) = verify_into(database_url, expected_rows, &mut verification).await {
        verification.error_opt = Some(error);
        return verification;
    }
    verification.passed = verification.mismatched_tenants == 0
        && verification.duplicate_groups == 0
        && verification.error_opt.is_none();
    verification
}

async fn verify_into(
    database_url: &str,
    expected_rows: &BTreeMap<Uuid, i64>,
    verification: &mut Verification,
) -> Result<(), String> {
    const MISMATCHES_SHOWN: usize = 20;
    let client = connect(database_url).await?;
    let tenant_ids: Vec<Uuid> = expected_rows.keys().copied().collect();
    let counted = client
        .query(
            "SELECT tenant_id, count(*) FROM processing_activities \
             WHERE tenant_id = ANY($1) GROUP BY tenant_id",
            &[&tenant_ids],
        )
        .await
        .map_err(|error| format!("counting rows per tenant failed: {error}"))?;
    let found_rows: BTreeMap<Uuid, i64> = counted
        .iter()
        .map(|row| (row.get::<_, Uuid>(0), row.get::<_, i64>(1)))
        .collect();
    verification.rows_found = found_rows.values().sum();
    for (tenant_id, expected) in expected_rows {
        let found = found_rows.get(tenant_id).copied().unwrap_or(0);
        if found != *expected {
            verification.mismatched_tenants += 1;
            if verification.mismatches.len() < MISMATCHES_SHOWN {
                verification.mismatches.push(TenantCountMismatch {
                    tenant_id: *tenant_id,
                    expected: *expected,
                    found,
                });
            }
        }
    }
    let duplicates = client
        .query_one(
            "SELECT count(*) FROM (SELECT tenant_id, scan_id, record_index \
             FROM processing_activities WHERE tenant_id = ANY($1) \
             GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
            &[&tenant_ids],
        )
        .await
        .map_err(|error| format!("looking for duplicates failed: {error}"))?;
    verification.duplicate_groups = duplicates.get(0);
    Ok(())
}

/// Streams one complete binary `COPY` stream into `processing_activities`, in its own
/// (implicit) transaction, and returns the number of rows PostgreSQL reports.
pub async fn copy_rows(client: &Client, stream: Bytes) -> Result<u64, String> {
    let statement =
        format!("COPY processing_activities ({COPY_COLUMNS}) FROM STDIN (FORMAT binary)");
    let sink = client
        .copy_in::<_, Bytes>(statement.as_str())
        .await
        .map_err(|error| format!("starting COPY failed: {error}"))?;
    let mut sink = std::pin::pin!(sink);
    sink.send(stream)
        .await
        .map_err(|error| format!("sending COPY data failed: {error}"))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(|error| format!("finishing COPY failed: {error}"))
}

/// Index and sequential scans so far of the tables the dashboard reads.
pub async fn table_scan_counts(database_url: &str) -> Result<BTreeMap<String, (i64, i64)>, String> {
    let client = connect(database_url).await?;
    let rows = client
        .query(
            "SELECT relname::text, coalesce(idx_scan, 0), coalesce(seq_scan, 0) FROM pg_stat_user_tables \
             WHERE relname IN ('processing_activities', 'scans', 'activity_counts')",
            &[],
        )
        .await
        .map_err(|error| format!("reading pg_stat_user_tables failed: {error}"))?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect())
}

/// The engine's database connections (every backend on its database but this one) and its
/// staged backlog in records, for the `soak` scenario's samples.
pub async fn engine_resources(client: &Client) -> Result<(i64, i64), String> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()), \
                    (SELECT coalesce(sum(record_count), 0)::bigint FROM staged_chunks)",
            &[],
        )
        .await
        .map_err(|error| format!("reading connections and backlog failed: {error}"))?;
    Ok((row.get(0), row.get(1)))
}

/// `url` with any password replaced by `***`, for messages and reports.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host_part)) = rest.split_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host_part}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `postmaster.pid` of PostgreSQL 16, as the engine's private cluster writes it.
    const POSTMASTER_PID: &str = "48211\n/var/tmp/loadtest-pg\n1732380000\n41873\n\n127.0.0.1\n  1234567    32769\nready   \n";

    #[test]
    fn the_port_is_the_fourth_line() {
        assert_eq!(parse_postmaster_port(POSTMASTER_PID), Ok(41873));
    }

    #[test]
    fn malformed_postmaster_files_are_refused_with_a_reason() {
        assert!(parse_postmaster_port("48211\n/data\n")
            .unwrap_err()
            .contains("no line 4"));
        assert!(parse_postmaster_port("1\n2\n3\nnot-a-port\n")
            .unwrap_err()
            .contains("not a port"));
        assert!(parse_postmaster_port("1\n2\n3\n0\n").is_err());
    }

    #[test]
    fn the_url_names_the_embedded_superuser_and_database() {
        let directory = std::env::temp_dir().join(format!("loadtest-pid-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("postmaster.pid");
        std::fs::write(&path, POSTMASTER_PID).unwrap();
        let url = database_url_from_postmaster_pid(&path);
        std::fs::remove_dir_all(&directory).unwrap();
        assert_eq!(url.unwrap(), "postgres://ingest@127.0.0.1:41873/ingest");
        assert!(
            database_url_from_postmaster_pid(Path::new("/nonexistent/postmaster.pid")).is_err()
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://ingest:secret@db:5432/ingest"),
            "postgres://ingest:***@db:5432/ingest"
        );
        assert_eq!(
            redact_password("postgres://ingest@127.0.0.1:5432/ingest"),
            "postgres://ingest@127.0.0.1:5432/ingest"
        );
    }
}
