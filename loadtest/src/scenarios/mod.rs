//! The scenarios, and what they share: the run context, submitting and following a scan,
//! generating data on every core, the progress bar.
//!
//! Each scenario generates all its request bodies first, then starts its clock, drives the
//! engine, verifies the rows in PostgreSQL, and returns a [`ScenarioReport`]. A refusal, a
//! time-out or an unreadable answer is counted and reported; no scenario stops on one.

pub mod audit;
pub mod baseline;
pub mod batch;
pub mod burst;
pub mod cluster;
pub mod fairness;
pub mod mixed;
pub mod rls;
pub mod scans;
pub mod soak;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use crate::cli::GlobalOptions;
use crate::engine_client::{with_retries_when, EngineClient, ScanAccepted, ScanState, Unanswered};
use crate::memory::{MemoryReport, MemorySampler};
use crate::report::{DataReport, ScenarioReport};
use crate::statistics::{round_to_thousandths, TimelinePoint};
use crate::written_records::WrittenRecordsSampler;

/// Consecutive unreadable status answers after which a scan is given up as "status unreadable"
/// rather than polled until the deadline.
const MAX_CONSECUTIVE_STATUS_FAILURES: u32 = 20;

/// What every scenario runs against.
pub struct Context {
    pub global: GlobalOptions,
    pub client: EngineClient,
    pub database_url: String,
    pub engine_pid_opt: Option<u32>,
    /// Why the engine's memory cannot be sampled, when it cannot.
    pub engine_pid_error_opt: Option<String>,
    pub command_line: Vec<String>,
}

impl Context {
    /// A report of `scenario` that started at `started_at`, with what every report takes from
    /// the run (command line, settings, URLs, the client's endpoint statistics) and the rest
    /// empty: the scenario fills in what it measured (`ScenarioReport { …, ..base }`).
    pub fn report(
        &self,
        scenario: &'static str,
        options: impl serde::Serialize,
        started_at: DateTime<Utc>,
    ) -> ScenarioReport {
        ScenarioReport {
            scenario,
            passed: false,
            started_at,
            finished_at: Utc::now(),
            command_line: self.command_line.clone(),
            settings: self.settings(options),
            engine_url: self.global.engine_url.clone(),
            database_url: crate::database::redact_password(&self.database_url),
            data: DataReport::default(),
            engine_throughput_opt: None,
            baseline_opt: None,
            engine_to_baseline_ratio_opt: None,
            endpoints: self.client.recorder.reports(),
            details: serde_json::Value::Null,
            memory_opt: None,
            memory_error_opt: None,
            verification: crate::database::Verification::default(),
            timeline: Vec::new(),
            notes: Vec::new(),
            summary_en: Vec::new(),
            summary_vi: Vec::new(),
            success_latencies: self.client.recorder.success_histograms(),
            machine_opt: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.global.timeout_secs)
    }

    pub fn start_memory_sampler(&self) -> Option<MemorySampler> {
        self.engine_pid_opt.map(MemorySampler::start)
    }

    /// The options in force, as JSON, for the report.
    pub fn settings(&self, scenario_options: impl serde::Serialize) -> serde_json::Value {
        serde_json::json!({
            "global": self.global,
            "scenario": scenario_options,
            "token_sent": self.client_has_token(),
        })
    }

    fn client_has_token(&self) -> bool {
        self.global.token_opt.is_some()
    }
}

/// Stops a memory sampler and explains a missing report.
pub async fn finish_memory(
    context: &Context,
    sampler_opt: Option<MemorySampler>,
) -> (Option<MemoryReport>, Option<String>) {
    match sampler_opt {
        Some(sampler) => match sampler.finish().await {
            Some(report) => (Some(report), None),
            None => (
                None,
                Some("the engine's /proc status could not be read at the end".to_string()),
            ),
        },
        None => (None, context.engine_pid_error_opt.clone()),
    }
}

/// One scan as the load test saw it, from submission to its last status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FollowedScan {
    pub tenant_id: Uuid,
    #[serde(rename = "scan_id")]
    pub scan_id_opt: Option<Uuid>,
    pub records_sent: usize,
    pub submitted_at: DateTime<Utc>,
    /// Submissions made: more than 1 when the engine answered 429 or 503 first.
    pub submit_attempts: u32,
    /// The wait before each retry, in seconds: the answer's `Retry-After`, or 1 s.
    pub retry_waits_seconds: Vec<f64>,
    /// From sending the first attempt to the last answer (or giving up).
    pub submit_seconds: f64,
    /// `completed`, `completed_with_errors`, `failed`, or what kept the load test from knowing:
    /// `refused <status>`, `no response`, `unreadable answer`, `timed out`, `status unreadable`.
    pub final_status: String,
    pub records_processed: i64,
    pub records_failed: i64,
    /// The engine's `completed_at` (same machine, same clock), or when the finish was seen.
    #[serde(rename = "finished_at")]
    pub finished_at_opt: Option<DateTime<Utc>>,
}

impl FollowedScan {
    /// True when the engine answered 202.
    pub fn was_accepted(&self) -> bool {
        self.scan_id_opt.is_some()
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.final_status.as_str(),
            "completed" | "completed_with_errors" | "failed"
        )
    }

    /// Seconds from `origin` to the scan's finish.
    pub fn seconds_since(&self, origin: DateTime<Utc>) -> Option<f64> {
        let finished_at = self.finished_at_opt?;
        Some((finished_at - origin).num_microseconds()? as f64 / 1e6)
    }
}

/// Submits scans and follows them to their end, feeding the progress bar and a shared count
/// of records done.
#[derive(Clone)]
pub struct ScanWatch {
    pub client: EngineClient,
    pub poll_interval: Duration,
    pub deadline: Instant,
    pub progress: ProgressBar,
    /// Records processed or failed so far across the scans this watch follows.
    pub records_done: Arc<AtomicI64>,
    /// See `--max-attempts`.
    pub max_attempts: u32,
    /// Whether a submission that got no answer is sent again (only bodies with an idempotency
    /// key are safe to send again).
    pub unanswered: Unanswered,
}

impl ScanWatch {
    pub async fn submit_and_follow(
        &self,
        tenant_id: Uuid,
        body: Bytes,
        records_sent: usize,
    ) -> FollowedScan {
        let followed = self.submit(tenant_id, body, records_sent).await;
        match followed.scan_id_opt {
            Some(scan_id) => self.follow(followed, scan_id).await,
            None => followed,
        }
    }

    /// Submits one scan (retrying 429 and 503, see
    /// [`with_retries`](crate::engine_client::with_retries), and requests that got no answer
    /// when the watch says so); a refused one comes back with no scan id and its reason.
    pub async fn submit(&self, tenant_id: Uuid, body: Bytes, records_sent: usize) -> FollowedScan {
        let mut followed = FollowedScan {
            tenant_id,
            scan_id_opt: None,
            records_sent,
            submitted_at: Utc::now(),
            submit_attempts: 0,
            retry_waits_seconds: Vec::new(),
            submit_seconds: 0.0,
            final_status: String::new(),
            records_processed: 0,
            records_failed: 0,
            finished_at_opt: None,
        };
        let submit_started = Instant::now();
        let (outcome, attempts, waits) =
            with_retries_when(self.max_attempts, self.unanswered, || {
                self.client.submit_scan(body.clone())
            })
            .await;
        followed.submit_attempts = attempts;
        followed.retry_waits_seconds = waits.iter().map(Duration::as_secs_f64).collect();
        followed.submit_seconds = round_to_thousandths(submit_started.elapsed().as_secs_f64());
        match outcome {
            Err(_) => followed.final_status = "no response".to_string(),
            Ok(exchange) if exchange.status != 202 => {
                followed.final_status = format!("refused {}", exchange.status);
            }
            Ok(exchange) => match serde_json::from_slice::<ScanAccepted>(&exchange.body) {
                Ok(accepted) => {
                    followed.scan_id_opt = Some(accepted.scan_id);
                    followed.final_status = "pending".to_string();
                    if accepted.records_total != records_sent as i64 {
                        followed.final_status = format!(
                            "pending (engine counted {} records)",
                            accepted.records_total
                        );
                    }
                }
                Err(_) => followed.final_status = "unreadable answer".to_string(),
            },
        }
        followed
    }

    /// Polls an accepted scan until it finishes, the deadline passes, or its status stays
    /// unreadable.
    pub async fn follow(&self, mut followed: FollowedScan, scan_id: Uuid) -> FollowedScan {
        let mut records_seen: i64 = 0;
        let mut consecutive_failures = 0;
        loop {
            if Instant::now() >= self.deadline {
                followed.final_status = "timed out".to_string();
                return followed;
            }
            tokio::time::sleep(self.poll_interval).await;
            let state_opt = match self.client.scan_status(followed.tenant_id, scan_id).await {
                Ok(exchange) if exchange.status == 200 => {
                    serde_json::from_slice::<ScanState>(&exchange.body).ok()
                }
                _ => None,
            };
            let Some(state) = state_opt else {
                consecutive_failures += 1;
                if consecutive_failures >= MAX_CONSECUTIVE_STATUS_FAILURES {
                    followed.final_status = "status unreadable".to_string();
                    return followed;
                }
                continue;
            };
            consecutive_failures = 0;
            let records_now = state.records_processed + state.records_failed;
            let newly_done = records_now - records_seen;
            if newly_done > 0 {
                self.progress.inc(newly_done as u64);
                self.records_done.fetch_add(newly_done, Ordering::Relaxed);
                records_seen = records_now;
            }
            followed.records_processed = state.records_processed;
            followed.records_failed = state.records_failed;
            followed.final_status = state.status.clone();
            if state.is_finished() {
                followed.finished_at_opt = Some(state.completed_at_opt.unwrap_or_else(Utc::now));
                if state.records_total != followed.records_sent as i64 {
                    followed.final_status = format!(
                        "{} (engine counted {} records)",
                        state.status, state.records_total
                    );
                }
                return followed;
            }
        }
    }
}

/// Submits every `(tenant, body)` at the same moment and follows each scan to its end, with a
/// progress bar labelled `label`. Returns when the first submission left, and every scan.
pub async fn submit_all_and_follow(
    context: &Context,
    bodies: Vec<(Uuid, Bytes)>,
    records_per_scan: usize,
    poll_interval: Duration,
    label: &str,
) -> (DateTime<Utc>, Vec<FollowedScan>) {
    submit_all_and_follow_through(
        context,
        &context.client,
        context.global.max_attempts,
        Unanswered::Return,
        bodies,
        records_per_scan,
        poll_interval,
        label,
    )
    .await
}

/// [`submit_all_and_follow`] through `client` (another engine, or a load balancer), with up to
/// `max_attempts` per submission, sending one again after no answer when `unanswered` says so.
#[allow(clippy::too_many_arguments)]
pub async fn submit_all_and_follow_through(
    context: &Context,
    client: &EngineClient,
    max_attempts: u32,
    unanswered: Unanswered,
    bodies: Vec<(Uuid, Bytes)>,
    records_per_scan: usize,
    poll_interval: Duration,
    label: &str,
) -> (DateTime<Utc>, Vec<FollowedScan>) {
    let progress = progress_bar((bodies.len() * records_per_scan) as u64, label);
    let started_at = Utc::now();
    let watch = ScanWatch {
        client: client.clone(),
        poll_interval,
        deadline: Instant::now() + context.timeout(),
        progress: progress.clone(),
        records_done: Arc::new(AtomicI64::new(0)),
        max_attempts,
        unanswered,
    };
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|(tenant_id, body)| {
            let watch = watch.clone();
            tokio::spawn(async move {
                watch
                    .submit_and_follow(tenant_id, body, records_per_scan)
                    .await
            })
        })
        .collect();
    let followed: Vec<FollowedScan> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("following a scan records failures and does not panic"))
        .collect();
    progress.finish_and_clear();
    (started_at, followed)
}

/// One scan body per tenant (`tenants` fresh tenant ids), of `records` records each from the
/// streams `first_stream..first_stream + tenants` of the run's seed, generated on every core
/// before any timing; with `key_prefix_opt`, each carries the idempotency key
/// `<prefix>-<tenant id>`. Returns the bodies and their [`DataReport`].
pub async fn generate_scan_bodies(
    context: &Context,
    tenants: usize,
    records: usize,
    first_stream: usize,
    key_prefix_opt: Option<&'static str>,
) -> (Vec<(Uuid, Bytes)>, DataReport) {
    let seed = context.global.seed;
    let generation_started = Instant::now();
    let bodies: Vec<(Uuid, Bytes)> = tokio::task::spawn_blocking(move || {
        generate_in_parallel(tenants, |tenant_index| {
            let tenant_id = Uuid::new_v4();
            let stream = (first_stream + tenant_index) as u64;
            let generated = crate::data::generate_records(seed, stream, records);
            let body = match key_prefix_opt {
                Some(prefix) => crate::data::keyed_scan_body(
                    tenant_id,
                    &generated,
                    &format!("{prefix}-{tenant_id}"),
                ),
                None => crate::data::scan_body(tenant_id, &generated),
            };
            (tenant_id, body)
        })
    })
    .await
    .expect("generation only formats and serialises, which does not panic");
    let data = DataReport {
        records: (tenants * records) as u64,
        request_bodies: bodies.len() as u64,
        body_bytes: bodies.iter().map(|(_, body)| body.len() as u64).sum(),
        generation_seconds: round_to_thousandths(generation_started.elapsed().as_secs_f64()),
    };
    (bodies, data)
}

/// Records written by the finished scans of `followed`, and the seconds from `origin` to the
/// last one's completion.
pub fn finished_records_and_seconds(
    followed: &[FollowedScan],
    origin: DateTime<Utc>,
) -> (i64, f64) {
    let finished = || followed.iter().filter(|scan| scan.is_finished());
    let records = finished().map(|scan| scan.records_processed).sum();
    let seconds = finished()
        .filter_map(|scan| scan.seconds_since(origin))
        .fold(0.0, f64::max);
    (records, seconds)
}

/// Adds each scan's tenant to `expected_rows`: the records it sent if it was accepted, else 0.
pub fn expect_rows(expected_rows: &mut BTreeMap<Uuid, i64>, followed: &[FollowedScan]) {
    for scan in followed {
        let expected = if scan.was_accepted() {
            scan.records_sent as i64
        } else {
            0
        };
        expected_rows.insert(scan.tenant_id, expected);
    }
}

/// Starts sampling records written per second (see [`WrittenRecordsSampler`]).
pub async fn start_insert_sampler(context: &Context) -> Result<WrittenRecordsSampler, String> {
    WrittenRecordsSampler::start(&context.global.engine_url).await
}

/// The timeline of records written per second, once `expected_rows` are seen; a sampler that
/// could not run costs only the timeline, and the reason goes into `notes`.
pub async fn finish_insert_sampler(
    sampler: Result<WrittenRecordsSampler, String>,
    expected_rows: i64,
    notes: &mut Vec<String>,
) -> Vec<TimelinePoint> {
    match sampler {
        Ok(sampler) => match sampler.finish(expected_rows).await {
            Ok(points) => points,
            Err(error) => {
                notes.push(format!("no timeline: {error}"));
                Vec::new()
            }
        },
        Err(error) => {
            notes.push(format!("no timeline: {error}"));
            Vec::new()
        }
    }
}

/// The note every report with a timeline carries.
pub const TIMELINE_NOTE: &str = "The timeline is records the engine wrote per second, from its own counter ingest_records_written_total (incremented as each chunk's transaction commits), read from GET /metrics every 0.5 s.";

/// A progress bar over `total` records.
pub fn progress_bar(total: u64, message: &str) -> ProgressBar {
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
        .expect("the template is constant and valid"),
    );
    progress.set_message(message.to_string());
    progress
}

/// `make(index)` for every index in `0..count`, spread over the machine's cores, in order.
/// Generation is CPU work done before timing; doing it on every core keeps runs short.
pub fn generate_in_parallel<T: Send>(count: usize, make: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map(|cores| cores.get())
        .unwrap_or(1)
        .min(count.max(1));
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread_index| {
                let make = &make;
                scope.spawn(move || {
                    let start = thread_index * per_thread;
                    let end = (start + per_thread).min(count);
                    (start..end).map(make).collect::<Vec<T>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .expect("generation only formats and serialises, which does not panic")
            })
            .collect()
    })
}

/// Microseconds since the Unix epoch, for `created_at` of baseline rows.
pub fn now_unix_micros() -> i64 {
    Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_generation_keeps_the_order() {
        let values = generate_in_parallel(1_001, |index| index * 2);
        assert_eq!(
            values,
            (0..1_001).map(|index| index * 2).collect::<Vec<_>>()
        );
        assert!(generate_in_parallel(0, |index| index).is_empty());
    }
}
