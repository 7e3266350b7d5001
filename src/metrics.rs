//! Every metric the engine exports, declared once with its description and unit.
//!
//! Names follow `ingest_<name>_<unit>[_total]`. Labels are low-cardinality and never carry
//! personal data: routes are templates (`/data-scans/{scan_id}`), not paths; regions are four
//! values (`domain::Region`); tenant ids appear only on the top-N backlog gauge, bounded by
//! [`TOP_TENANTS`]. Counters are incremented once
//! per chunk, request or sample, never per record.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const RECORDS_ACCEPTED: &str = "ingest_records_accepted_total";
pub const RECORDS_WRITTEN: &str = "ingest_records_written_total";
pub const RECORDS_FAILED: &str = "ingest_records_failed_total";
pub const SCANS_FINISHED: &str = "ingest_scans_finished_total";
pub const HTTP_REQUESTS: &str = "ingest_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "ingest_http_request_duration_seconds";
pub const CHUNK_WRITE_DURATION: &str = "ingest_chunk_write_duration_seconds";
pub const SUBMISSION_STAGE_DURATION: &str = "ingest_submission_stage_duration_seconds";
pub const CHUNK_STAGE_DURATION: &str = "ingest_chunk_stage_duration_seconds";
pub const CHUNKS_PER_TRANSACTION: &str = "ingest_writer_chunks_per_transaction";
pub const SHARED_TRANSACTIONS_REDONE: &str = "ingest_writer_shared_transactions_redone_total";
pub const COPY_ROWS_PER_SECOND: &str = "ingest_copy_rows_per_second";
pub const BACKLOG_RECORDS: &str = "ingest_backlog_records";
pub const TENANT_BACKLOG_RECORDS: &str = "ingest_tenant_backlog_records";
pub const SUBMISSIONS_REJECTED: &str = "ingest_submissions_rejected_total";
pub const WRITER_RESTARTS: &str = "ingest_writer_restarts_total";
pub const WRITE_RETRIES: &str = "ingest_write_retries_total";
pub const DEAD_LETTERS: &str = "ingest_dead_letters_total";
pub const CHUNKS_REFUSED: &str = "ingest_chunks_refused_total";
pub const REQUEST_DATABASE_ERRORS: &str = "ingest_request_database_errors_total";
pub const HTTP_PROTOCOL_ERRORS: &str = "ingest_http_protocol_errors_total";
pub const AUDIT_PARTITIONS_AHEAD: &str = "ingest_audit_partitions_ahead";
pub const AUDIT_UPKEEP_RUNS: &str = "ingest_audit_upkeep_runs_total";
pub const AUDIT_ARCHIVE_RUNS: &str = "ingest_audit_archive_runs_total";
pub const AUDIT_ARCHIVED_ROWS: &str = "ingest_audit_archived_rows_total";
pub const CLUSTER_LIVE_INSTANCES: &str = "ingest_cluster_live_instances";
pub const CLUSTER_HEARTBEAT_FAILURES: &str = "ingest_cluster_heartbeat_failures_total";
pub const CLUSTER_TENANTS_OWNED: &str = "ingest_cluster_tenants_owned";
pub const CLUSTER_OWNERSHIP_CHANGES: &str = "ingest_cluster_ownership_changes_total";
pub const CLUSTER_FENCED_WRITES: &str = "ingest_cluster_fenced_writes_total";
pub const ADMISSION_REFUSALS: &str = "ingest_admission_refusals_total";
pub const ADMISSION_IN_USE_BYTES: &str = "ingest_admission_in_use_bytes";
pub const ADMISSION_WAITING: &str = "ingest_admission_waiting";
pub const WEBHOOK_DELIVERIES: &str = "ingest_webhook_deliveries_total";
pub const WEBHOOK_ATTEMPT_DURATION: &str = "ingest_webhook_attempt_duration_seconds";
pub const WEBHOOK_DUE_DELIVERIES: &str = "ingest_webhook_due_deliveries";
pub const WEBHOOK_OLDEST_DUE: &str = "ingest_webhook_oldest_due_seconds";
pub const WEBHOOK_FAILED_DELIVERIES: &str = "ingest_webhook_failed_deliveries";
pub const POOL_CONNECTIONS: &str = "ingest_pool_connections";
pub const POOL_UTILIZATION: &str = "ingest_pool_utilization_ratio";
pub const POSTGRES_CACHE_HIT_RATIO: &str = "ingest_postgres_cache_hit_ratio";
pub const POSTGRES_CHECKPOINTS: &str = "ingest_postgres_checkpoints_total";
pub const TENANT_ACTORS: &str = "ingest_tenant_actors";

/// Tenants with the largest backlogs that get their own backlog series.
pub const TOP_TENANTS: usize = 10;

/// Chunk writes take from about a millisecond to, under an outage, tens of seconds.
const CHUNK_WRITE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// A writer's transaction holds one chunk, or up to four staged chunks of different tenants.
const CHUNKS_PER_TRANSACTION_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0];
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Series not updated for this long disappear (tenants that left the top-N, for instance);
/// every gauge is refreshed by the sampler far more often.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Times the consecutive stages of one piece of work into one histogram: each
/// [`StageTimer::lap`] records the time since the previous lap under its stage's label.
pub struct StageTimer {
    metric: &'static str,
    kind_label: Option<(&'static str, &'static str)>,
    last: std::time::Instant,
}

impl StageTimer {
    pub fn submission(route: &'static str) -> StageTimer {
        StageTimer {
            metric: SUBMISSION_STAGE_DURATION,
            kind_label: Some(("route", route)),
            last: std::time::Instant::now(),
        }
    }

    pub fn chunk() -> StageTimer {
        StageTimer {
            metric: CHUNK_STAGE_DURATION,
            kind_label: None,
            last: std::time::Instant::now(),
        }
    }

    pub fn lap(&mut self, stage: &'static str) {
        let now = std::time::Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        match self.kind_label {
            Some((name, value)) => {
                metrics::histogram!(self.metric, name => value, "stage" => stage).record(seconds)
            }
            None => metrics::histogram!(self.metric, "stage" => stage).record(seconds),
        }
    }
}

/// Installs the Prometheus recorder (once per process) and returns the handle that renders
/// `GET /metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(CHUNK_WRITE_DURATION.into()),
                    CHUNK_WRITE_BUCKETS,
                )
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(CHUNKS_PER_TRANSACTION.into()),
                        CHUNKS_PER_TRANSACTION_BUCKETS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(HTTP_REQUEST_DURATION.into()),
                        HTTP_BUCKETS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(SUBMISSION_STAGE_DURATION.into()),
                        HTTP_BUCKETS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(CHUNK_STAGE_DURATION.into()),
                        CHUNK_WRITE_BUCKETS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(WEBHOOK_ATTEMPT_DURATION.into()),
                        HTTP_BUCKETS,
                    )
                })
                .expect("bucket lists are non-empty constants")
                .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(IDLE_TIMEOUT))
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder can only exist if something else installed one first; the engine
            // then still serves, with this handle rendering nothing.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe();
            register_zeroes();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        RECORDS_ACCEPTED,
        Unit::Count,
        "Valid records accepted, by route (scan, batch)."
    );
    describe_counter!(
        RECORDS_WRITTEN,
        Unit::Count,
        "Records committed to processing_activities, by the tenant's region (north, central, \
         south, unassigned)."
    );
    describe_counter!(
        RECORDS_FAILED,
        Unit::Count,
        "Records not written, by reason (invalid, dead_letter, unwritten)."
    );
    describe_counter!(
        SCANS_FINISHED,
        Unit::Count,
        "Scans that reached a final status, by status and the tenant's region."
    );
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests, by route template, method and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route template and method."
    );
    describe_histogram!(
        CHUNK_WRITE_DURATION,
        Unit::Seconds,
        "Duration of the write transaction of each chunk (one transaction may hold several \
         chunks, see ingest_writer_chunks_per_transaction)."
    );
    describe_histogram!(
        CHUNKS_PER_TRANSACTION,
        Unit::Count,
        "Chunks a writer applied in one transaction: one, or up to four staged chunks of \
         different tenants that were waiting together."
    );
    describe_counter!(
        SHARED_TRANSACTIONS_REDONE,
        Unit::Count,
        "Shared writer transactions that failed (a record the database refused, a lost fence, a \
         deadlock, a lost connection) and were rolled back, their chunks then applied one \
         transaction each."
    );
    describe_histogram!(
        SUBMISSION_STAGE_DURATION,
        Unit::Seconds,
        "Time a submission spends in each stage before its answer, by route (scan, batch) and \
         stage (admission_wait, body_read, parse_encode, stage for scans, write for batches)."
    );
    describe_histogram!(
        CHUNK_STAGE_DURATION,
        Unit::Seconds,
        "Time of each stage of a writer's transaction, by stage (fetch: take the staged \
         chunks and decompress them; copy; finish: advance the scans and commit)."
    );
    describe_gauge!(
        COPY_ROWS_PER_SECOND,
        Unit::CountPerSecond,
        "Rows per second of the latest write transaction."
    );
    describe_gauge!(
        BACKLOG_RECORDS,
        Unit::Count,
        "Records staged and not yet written, all tenants."
    );
    describe_gauge!(
        TENANT_BACKLOG_RECORDS,
        Unit::Count,
        "Records staged for the tenants with the largest backlogs (top 10 only)."
    );
    describe_counter!(
        SUBMISSIONS_REJECTED,
        Unit::Count,
        "Submissions refused, by reason."
    );
    describe_counter!(
        WRITER_RESTARTS,
        Unit::Count,
        "Writer reconnect attempts after a lost connection (backing off while the database is \
         unreachable), and writer restarts by their supervisor."
    );
    describe_counter!(
        WRITE_RETRIES,
        Unit::Count,
        "Chunk writes retried after a retryable error."
    );
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Records moved to the dead-letter store, by the tenant's region."
    );
    describe_counter!(
        CHUNKS_REFUSED,
        Unit::Count,
        "Attempts at a staged chunk that failed with a permanent error no record was isolated \
         for (the chunk stays staged and is offered again at the next sweep)."
    );
    describe_counter!(
        REQUEST_DATABASE_ERRORS,
        Unit::Count,
        "Requests the database failed, by class: retryable (503 with Retry-After), data \
         (SQLSTATE class 22, 422), integrity (class 23, 409) or other (503, not retryable)."
    );
    describe_counter!(
        HTTP_PROTOCOL_ERRORS,
        Unit::Count,
        "Requests refused before routing for breaking HTTP/1.1 (400), an over-long URI (414) \
         or too many or too large headers (431), by status."
    );
    describe_gauge!(
        AUDIT_PARTITIONS_AHEAD,
        Unit::Count,
        "Months after the current one whose audit log partitions exist (upkeep keeps \
         audit.premake_months ready; fewer than 2 alerts)."
    );
    describe_counter!(
        AUDIT_UPKEEP_RUNS,
        Unit::Count,
        "Audit upkeep runs of this instance, by outcome (ok, failed)."
    );
    describe_counter!(
        AUDIT_ARCHIVE_RUNS,
        Unit::Count,
        "Audit archive runs of this instance, by outcome (ok, failed)."
    );
    describe_counter!(
        AUDIT_ARCHIVED_ROWS,
        Unit::Count,
        "Audit entries written to verified Parquet archives and dropped from PostgreSQL."
    );
    describe_gauge!(
        CLUSTER_LIVE_INSTANCES,
        Unit::Count,
        "Engine instances on this database whose lease has not expired (by the database's \
         clock), as this instance saw at its last heartbeat."
    );
    describe_gauge!(
        CLUSTER_TENANTS_OWNED,
        Unit::Count,
        "Tenants this instance owns (their actors may run only here)."
    );
    describe_counter!(
        CLUSTER_OWNERSHIP_CHANGES,
        Unit::Count,
        "Tenant ownership changes made by this instance, by kind (claimed: taken unowned or from \
         a lost instance; handed_over: given to the instance it prefers; released: handed back \
         at shutdown)."
    );
    describe_gauge!(
        ADMISSION_IN_USE_BYTES,
        Unit::Bytes,
        "Admission budget held by submissions being read, parsed and staged, by lane (small; \
         large: charged more than a quarter of ingest.admission_budget_bytes)."
    );
    describe_gauge!(
        ADMISSION_WAITING,
        Unit::Count,
        "Submissions waiting for their turn in the admission budget, by lane."
    );
    describe_counter!(
        ADMISSION_REFUSALS,
        Unit::Count,
        "Submissions answered 503 engine_saturated by admission, by reason (estimated: refused \
         at once, their turn estimated beyond ingest.admission_wait_secs; waited: refused after \
         waiting that long)."
    );
    describe_counter!(
        CLUSTER_FENCED_WRITES,
        Unit::Count,
        "Tenant actors of this instance whose chunk transaction was refused because another \
         instance owns the tenant now (nothing was written; the actor stopped)."
    );
    describe_counter!(
        CLUSTER_HEARTBEAT_FAILURES,
        Unit::Count,
        "Heartbeats of this instance that could not renew its lease."
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        Unit::Count,
        "Connections by pool (request, writers) and state (idle, active)."
    );
    describe_gauge!(
        POOL_UTILIZATION,
        Unit::Percent,
        "Share of a pool's maximum size in use, 0 to 1."
    );
    describe_gauge!(
        POSTGRES_CACHE_HIT_RATIO,
        Unit::Percent,
        "PostgreSQL buffer cache hit ratio of the engine's database, 0 to 1."
    );
    describe_counter!(
        POSTGRES_CHECKPOINTS,
        Unit::Count,
        "PostgreSQL checkpoints since its statistics reset, by kind (timed, requested)."
    );
    describe_gauge!(TENANT_ACTORS, Unit::Count, "Tenant actors running.");
    describe_counter!(
        WEBHOOK_DELIVERIES,
        Unit::Count,
        "Webhook delivery attempts of this instance, by outcome (succeeded; retried: a failed \
         attempt with attempts left; failed: the last attempt failed; superseded: the attempt \
         outlived its lease or its endpoint)."
    );
    describe_histogram!(
        WEBHOOK_ATTEMPT_DURATION,
        Unit::Seconds,
        "Webhook delivery attempts, from connecting to the response's status (or the error)."
    );
    describe_gauge!(
        WEBHOOK_DUE_DELIVERIES,
        Unit::Count,
        "Webhook deliveries due now and not being attempted, on every instance."
    );
    describe_gauge!(
        WEBHOOK_OLDEST_DUE,
        Unit::Seconds,
        "How long the oldest due webhook delivery has waited (0 when none is due)."
    );
    describe_gauge!(
        WEBHOOK_FAILED_DELIVERIES,
        Unit::Count,
        "Webhook deliveries that failed after their last attempt and were not redelivered."
    );
}

/// Counters start at zero rather than absent, so `increase()` in alert rules sees the first
/// event, and dashboards show 0 instead of "no data".
fn register_zeroes() {
    for name in [WRITER_RESTARTS, WRITE_RETRIES, CHUNKS_REFUSED] {
        metrics::counter!(name).increment(0);
    }
    for region in crate::domain::Region::ALL.map(crate::domain::Region::as_str) {
        metrics::counter!(RECORDS_WRITTEN, "region" => region).increment(0);
        metrics::counter!(DEAD_LETTERS, "region" => region).increment(0);
        for status in ["completed", "completed_with_errors", "failed"] {
            metrics::counter!(SCANS_FINISHED, "status" => status, "region" => region).increment(0);
        }
    }
    for route in ["scan", "batch"] {
        metrics::counter!(RECORDS_ACCEPTED, "route" => route).increment(0);
    }
    for reason in ["invalid", "dead_letter", "unwritten"] {
        metrics::counter!(RECORDS_FAILED, "reason" => reason).increment(0);
    }
    for outcome in ["ok", "failed"] {
        metrics::counter!(AUDIT_UPKEEP_RUNS, "outcome" => outcome).increment(0);
        metrics::counter!(AUDIT_ARCHIVE_RUNS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(AUDIT_ARCHIVED_ROWS).increment(0);
    metrics::counter!(CLUSTER_HEARTBEAT_FAILURES).increment(0);
    metrics::counter!(CLUSTER_FENCED_WRITES).increment(0);
    for reason in ["estimated", "waited"] {
        metrics::counter!(ADMISSION_REFUSALS, "reason" => reason).increment(0);
    }
    for lane in ["small", "large"] {
        metrics::gauge!(ADMISSION_IN_USE_BYTES, "lane" => lane).set(0.0);
        metrics::gauge!(ADMISSION_WAITING, "lane" => lane).set(0.0);
    }
    for kind in ["claimed", "handed_over", "released"] {
        metrics::counter!(CLUSTER_OWNERSHIP_CHANGES, "kind" => kind).increment(0);
    }
    for outcome in ["succeeded", "retried", "failed", "superseded"] {
        metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(0);
    }
    for class in ["retryable", "data", "integrity", "other"] {
        metrics::counter!(REQUEST_DATABASE_ERRORS, "class" => class).increment(0);
    }
    for status in ["400", "414", "431"] {
        metrics::counter!(HTTP_PROTOCOL_ERRORS, "status" => status).increment(0);
    }
    for reason in [
        "tenant_backlog_full",
        "engine_saturated",
        "tenant_throttled",
        "shutting_down",
        "database_unavailable",
    ] {
        metrics::counter!(SUBMISSIONS_REJECTED, "reason" => reason).increment(0);
    }
}
