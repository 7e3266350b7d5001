//! `mixed`: for a fixed time, concurrent clients at a fixed total rate each choose per request
//! between a dashboard
//! read (70 % by default: a page of activities or the compliance summary of one tenant, SPEC
//! section 3) and a write (a batch, a scan, or either).
//!
//! Before the clock starts every dashboard tenant gets one scan and waits for it, so reads
//! have rows to read. During the window, scans go to the dashboard tenants (each scan has its
//! own id, so rows stay distinguishable) and batches go to fresh tenants (see `batch.rs` for
//! why). After the window, the load test waits for the accepted scans to finish, then verifies.
//! The read routes may not exist yet: their statuses are counted, whatever they are.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::{
    finish_insert_sampler, finish_memory, generate_in_parallel, progress_bar, start_insert_sampler,
    Context, FollowedScan, ScanWatch, TIMELINE_NOTE,
};
use crate::cli::{MixedOptions, WriteKind};
use crate::data::{batch_body, generate_records, scan_body, SplitMix64};
use crate::database;
use crate::engine_client::{
    BatchCreated, EngineClient, ScanAccepted, ACTIVITIES_PAGE, COMPLIANCE_SUMMARY, SUBMIT_BATCH,
    SUBMIT_SCAN,
};
use crate::report::{
    common_summary_lines, number_en, number_vi, DataReport, ScenarioReport, Throughput,
};
use crate::statistics::round_to_thousandths;

/// Where the data streams of this scenario start, so its records differ from the others'.
const MIXED_STREAM_OFFSET: u64 = 2_000_000;

/// Distinct batch bodies; a batch body carries no tenant, so each is reused for many tenants.
const BATCH_BODY_POOL: usize = 8;

/// How often the first scans and the scans accepted in the window are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Default, Serialize)]
struct MixedDetails {
    window_seconds: f64,
    requests: u64,
    reads: u64,
    reads_per_second: f64,
    /// Reads answered 2xx.
    reads_succeeded: u64,
    batches_sent: u64,
    batches_created: u64,
    scans_sent: u64,
    scans_accepted: u64,
    /// Records acknowledged during the window: created by a 201 or accepted by a 202.
    records_acknowledged: i64,
    /// After the window: how long the accepted scans took to finish.
    drain_seconds: f64,
    /// Index scans / (index + sequential scans) per table the dashboard reads, during the
    /// window and the drain (from `pg_stat_user_tables`).
    index_usage: BTreeMap<String, f64>,
    scans_unfinished: usize,
    warm_up_scans_completed: usize,
}

/// What the clients share during the window.
struct Shared {
    expected_rows: Mutex<BTreeMap<Uuid, i64>>,
    accepted_scans: Mutex<Vec<FollowedScan>>,
    details: Mutex<MixedDetails>,
    /// Requests started so far, against `--max-requests`.
    requests_started: AtomicU64,
}

pub async fn run(context: &Context, options: &MixedOptions) -> ScenarioReport {
    let seed = context.global.seed;
    let tenant_count = options.tenants.max(1);
    let (scan_records, batch_size) = (options.scan_records, options.batch_size);
    let generation_started = Instant::now();
    let tenant_ids: Vec<Uuid> = (0..tenant_count).map(|_| Uuid::new_v4()).collect();
    let (scan_bodies, batch_bodies) = tokio::task::spawn_blocking({
        let tenant_ids = tenant_ids.clone();
        move || {
            let scan_bodies = generate_in_parallel(tenant_count, |tenant_index| {
                let records = generate_records(
                    seed,
                    MIXED_STREAM_OFFSET + tenant_index as u64,
                    scan_records,
                );
                scan_body(tenant_ids[tenant_index], &records)
            });
            let batch_bodies = generate_in_parallel(BATCH_BODY_POOL, |body_index| {
                let stream = MIXED_STREAM_OFFSET + 100_000 + body_index as u64;
                batch_body(&generate_records(seed, stream, batch_size))
            });
            (scan_bodies, batch_bodies)
        }
    })
    .await
    .expect("generation does not panic");
    let data = DataReport {
        records: (tenant_count * scan_records + BATCH_BODY_POOL * batch_size) as u64,
        request_bodies: (tenant_count + BATCH_BODY_POOL) as u64,
        body_bytes: scan_bodies
            .iter()
            .chain(batch_bodies.iter())
            .map(|body| body.len() as u64)
            .sum(),
        generation_seconds: round_to_thousandths(generation_started.elapsed().as_secs_f64()),
    };
    let shared = Arc::new(Shared {
        expected_rows: Mutex::new(tenant_ids.iter().map(|tenant_id| (*tenant_id, 0)).collect()),
        accepted_scans: Mutex::new(Vec::new()),
        details: Mutex::new(MixedDetails::default()),
        requests_started: AtomicU64::new(0),
    });

    let warm_up_scans_completed =
        warm_up(context, &tenant_ids, &scan_bodies, scan_records, &shared).await;
    let rows_before_window: i64 = shared
        .expected_rows
        .lock()
        .expect("no code panics holding this lock")
        .values()
        .sum();

    let scans_before = database::table_scan_counts(&context.database_url).await;
    let memory_sampler_opt = context.start_memory_sampler();
    let insert_sampler = start_insert_sampler(context).await;
    let started_at = Utc::now();
    let started = Instant::now();
    let window = Duration::from_secs(options.duration_secs);
    let deadline = started + window;
    let progress = progress_bar(window.as_millis() as u64, "mixed (ms)");
    let ticker = tokio::spawn({
        let progress = progress.clone();
        async move {
            while Instant::now() < deadline {
                progress.set_position(started.elapsed().as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    let scan_bodies = Arc::new(scan_bodies);
    let batch_bodies = Arc::new(batch_bodies);
    let tenant_ids = Arc::new(tenant_ids);
    let clients = options.clients.max(1);
    let pace_interval_opt =
        (options.rate > 0).then(|| Duration::from_secs_f64(clients as f64 / options.rate as f64));
    let tasks: Vec<_> = (0..clients)
        .map(|client_index| {
            let client = context.client.clone();
            let shared = shared.clone();
            let (scan_bodies, batch_bodies, tenant_ids) = (
                scan_bodies.clone(),
                batch_bodies.clone(),
                tenant_ids.clone(),
            );
            let options = options.clone();
            let mut random = SplitMix64::new(
                seed ^ (client_index as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F),
            );
            tokio::spawn(async move {
                // Open loop: each client keeps its share of the rate whatever the latency, as
                // dashboard users and scanners do; a slow answer delays only that client.
                let mut pace_opt = pace_interval_opt.map(|interval| {
                    let mut pace = tokio::time::interval(interval);
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    pace
                });
                let traffic = Traffic {
                    client: &client,
                    shared: &shared,
                    scan_bodies: &scan_bodies,
                    batch_bodies: &batch_bodies,
                    tenant_ids: &tenant_ids,
                    scan_records,
                };
                while Instant::now() < deadline
                    && shared.requests_started.fetch_add(1, Ordering::Relaxed)
                        < options.max_requests
                {
                    if let Some(pace) = pace_opt.as_mut() {
                        pace.tick().await;
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    traffic.one_request(&options, &mut random).await;
                }
            })
        })
        .collect();
    futures_util::future::join_all(tasks).await;
    let window_seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    progress.finish_and_clear();

    let endpoints = context.client.recorder.reports();
    let drain_started = Instant::now();
    let accepted_scans = std::mem::take(
        &mut *shared
            .accepted_scans
            .lock()
            .expect("no code panics holding this lock"),
    );
    let finished_scans = drain(context, accepted_scans).await;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    // PostgreSQL publishes a backend's counts within a second of its going idle.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let scans_after = database::table_scan_counts(&context.database_url).await;
    let (memory_opt, memory_error_opt) = finish_memory(context, memory_sampler_opt).await;

    let expected_rows = shared
        .expected_rows
        .lock()
        .expect("no code panics holding this lock")
        .clone();
    let mut sampler_notes = Vec::new();
    let timeline = finish_insert_sampler(
        insert_sampler,
        expected_rows.values().sum::<i64>() - rows_before_window,
        &mut sampler_notes,
    )
    .await;
    let verification = database::verify(&context.database_url, &expected_rows).await;
    let mut details = std::mem::take(
        &mut *shared
            .details
            .lock()
            .expect("no code panics holding this lock"),
    );
    details.window_seconds = round_to_thousandths(window_seconds);
    details.requests = details.reads + details.batches_sent + details.scans_sent;
    details.reads_per_second =
        round_to_thousandths(details.reads as f64 / window_seconds.max(1e-9));
    details.drain_seconds = round_to_thousandths(drain_seconds);
    if let (Ok(before), Ok(after)) = (&scans_before, &scans_after) {
        for (table, (index_after, sequential_after)) in after {
            let (index_before, sequential_before) = before.get(table).copied().unwrap_or((0, 0));
            let index = index_after - index_before;
            let sequential = sequential_after - sequential_before;
            if index + sequential > 0 {
                details.index_usage.insert(
                    table.clone(),
                    round_to_thousandths(index as f64 / (index + sequential) as f64),
                );
            }
        }
    }
    details.scans_unfinished = finished_scans
        .iter()
        .filter(|scan| !scan.is_finished())
        .count();
    details.warm_up_scans_completed = warm_up_scans_completed;
    let engine_throughput = Throughput {
        records: details.records_acknowledged.max(0) as u64,
        seconds: details.window_seconds,
        records_per_second: round_to_thousandths(
            details.records_acknowledged as f64 / window_seconds.max(1e-9),
        ),
        measured: "records acknowledged during the window (201 created + 202 accepted)".to_string(),
    };

    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    summary_en.push(format!(
        "{} s, {} clients: {} requests; {} reads ({} per second, {} answered 2xx); {} of {} batches created, {} of {} scans accepted; {} records acknowledged = {} records/s.",
        number_en(details.window_seconds, 1),
        options.clients,
        details.requests,
        details.reads,
        number_en(details.reads_per_second, 1),
        details.reads_succeeded,
        details.batches_created,
        details.batches_sent,
        details.scans_accepted,
        details.scans_sent,
        number_en(details.records_acknowledged as f64, 0),
        number_en(engine_throughput.records_per_second, 0),
    ));
    summary_vi.push(format!(
        "{} giây, {} máy khách: {} yêu cầu; {} lượt đọc ({} lượt/giây, {} lượt trả về 2xx); {}/{} lô được tạo, {}/{} lượt quét được chấp nhận; {} bản ghi được xác nhận = {} bản ghi/giây.",
        number_vi(details.window_seconds, 1),
        options.clients,
        details.requests,
        details.reads,
        number_vi(details.reads_per_second, 1),
        details.reads_succeeded,
        details.batches_created,
        details.batches_sent,
        details.scans_accepted,
        details.scans_sent,
        number_vi(details.records_acknowledged as f64, 0),
        number_vi(engine_throughput.records_per_second, 0),
    ));
    for endpoint in [
        ACTIVITIES_PAGE,
        COMPLIANCE_SUMMARY,
        SUBMIT_BATCH,
        SUBMIT_SCAN,
    ] {
        if let Some(report) = endpoints.get(endpoint) {
            let latency = &report.latency_all;
            summary_en.push(format!(
                "{endpoint}: statuses {:?}, latency p50 {} ms, p99 {} ms (all statuses).",
                report.statuses,
                number_en(latency.p50_ms, 1),
                number_en(latency.p99_ms, 1),
            ));
            summary_vi.push(format!(
                "{endpoint}: mã trạng thái {:?}, độ trễ p50 {} ms, p99 {} ms (mọi mã trạng thái).",
                report.statuses,
                number_vi(latency.p50_ms, 1),
                number_vi(latency.p99_ms, 1),
            ));
        }
    }
    summary_en.push(format!(
        "Index scans among the scans of the tables the dashboard reads: {:?}.",
        details.index_usage
    ));
    summary_vi.push(format!(
        "Tỷ lệ quét theo chỉ mục trên các bảng mà bảng điều khiển đọc: {:?}.",
        details.index_usage
    ));
    summary_en.push(format!(
        "After the window, the accepted scans took {} s more to finish ({} unfinished).",
        number_en(details.drain_seconds, 2),
        details.scans_unfinished,
    ));
    summary_vi.push(format!(
        "Sau khoảng thời gian đo, các lượt quét đã được chấp nhận cần thêm {} giây để hoàn thành ({} lượt chưa xong).",
        number_vi(details.drain_seconds, 2),
        details.scans_unfinished,
    ));
    let (english, vietnamese) = common_summary_lines(&verification, memory_opt.as_ref());
    summary_en.extend(english);
    summary_vi.extend(vietnamese);

    let mut notes = vec![
        "Latency and statuses cover the window only; polls of scans after it are not counted."
            .to_string(),
        "Scans go to the dashboard tenants, batches to fresh tenants (one per batch).".to_string(),
        format!("{TIMELINE_NOTE} It covers the window and the time the accepted scans took to finish after it."),
    ];
    notes.extend(sampler_notes);
    if details.reads_succeeded < details.reads {
        notes.push(format!(
            "{} of {} reads were not answered 2xx: the read routes may not exist yet (404).",
            details.reads - details.reads_succeeded,
            details.reads
        ));
    }
    ScenarioReport {
        scenario: "mixed",
        passed: verification.passed && details.scans_unfinished == 0,
        started_at,
        finished_at: Utc::now(),
        command_line: context.command_line.clone(),
        settings: context.settings(options),
        engine_url: context.global.engine_url.clone(),
        database_url: database::redact_password(&context.database_url),
        data,
        engine_throughput_opt: Some(engine_throughput),
        baseline_opt: None,
        engine_to_baseline_ratio_opt: None,
        endpoints,
        details: serde_json::to_value(&details).unwrap_or_default(),
        memory_opt,
        memory_error_opt,
        verification,
        timeline,
        notes,
        summary_en,
        summary_vi,
        success_latencies: context.client.recorder.success_histograms(),
        machine_opt: None,
    }
}

/// One client's view of the window.
struct Traffic<'a> {
    client: &'a EngineClient,
    shared: &'a Shared,
    scan_bodies: &'a [Bytes],
    batch_bodies: &'a [Bytes],
    tenant_ids: &'a [Uuid],
    scan_records: usize,
}

impl Traffic<'_> {
    async fn one_request(&self, options: &MixedOptions, random: &mut SplitMix64) {
        if random.chance(options.read_percent) {
            self.read(random).await;
            return;
        }
        let write_batch = match options.write_kind {
            WriteKind::Batches => true,
            WriteKind::Scans => false,
            WriteKind::Both => random.chance(50),
        };
        if write_batch {
            self.write_batch(random).await;
        } else {
            self.write_scan(random).await;
        }
    }

    async fn read(&self, random: &mut SplitMix64) {
        let tenant_id = self.tenant_ids[random.below(self.tenant_ids.len())];
        let outcome = if random.chance(50) {
            self.client.activities_page(tenant_id).await
        } else {
            self.client.compliance_summary(tenant_id).await
        };
        let succeeded = matches!(&outcome, Ok(exchange) if (200..300).contains(&exchange.status));
        let mut details = self
            .shared
            .details
            .lock()
            .expect("no code panics holding this lock");
        details.reads += 1;
        details.reads_succeeded += u64::from(succeeded);
    }

    async fn write_batch(&self, random: &mut SplitMix64) {
        let tenant_id = Uuid::new_v4();
        let body = self.batch_bodies[random.below(self.batch_bodies.len())].clone();
        let created_opt = match self.client.submit_batch(tenant_id, body).await {
            Ok(exchange) if exchange.status == 201 => {
                serde_json::from_slice::<BatchCreated>(&exchange.body).ok()
            }
            _ => None,
        };
        let created = created_opt
            .as_ref()
            .map_or(0, |created| created.records_created);
        self.shared
            .expected_rows
            .lock()
            .expect("no code panics holding this lock")
            .insert(tenant_id, created);
        let mut details = self
            .shared
            .details
            .lock()
            .expect("no code panics holding this lock");
        details.batches_sent += 1;
        if created_opt.is_some() {
            details.batches_created += 1;
            details.records_acknowledged += created;
        }
    }

    async fn write_scan(&self, random: &mut SplitMix64) {
        let tenant_index = random.below(self.tenant_ids.len());
        let tenant_id = self.tenant_ids[tenant_index];
        let submitted_at = Utc::now();
        let accepted_opt = match self
            .client
            .submit_scan(self.scan_bodies[tenant_index].clone())
            .await
        {
            Ok(exchange) if exchange.status == 202 => {
                serde_json::from_slice::<ScanAccepted>(&exchange.body).ok()
            }
            _ => None,
        };
        let mut details = self
            .shared
            .details
            .lock()
            .expect("no code panics holding this lock");
        details.scans_sent += 1;
        let Some(accepted) = accepted_opt else {
            return;
        };
        details.scans_accepted += 1;
        details.records_acknowledged += self.scan_records as i64;
        *self
            .shared
            .expected_rows
            .lock()
            .expect("no code panics holding this lock")
            .entry(tenant_id)
            .or_insert(0) += self.scan_records as i64;
        self.shared
            .accepted_scans
            .lock()
            .expect("no code panics holding this lock")
            .push(FollowedScan {
                tenant_id,
                scan_id_opt: Some(accepted.scan_id),
                records_sent: self.scan_records,
                submitted_at,
                submit_attempts: 1,
                retry_waits_seconds: Vec::new(),
                submit_seconds: 0.0,
                final_status: "pending".to_string(),
                records_processed: 0,
                records_failed: 0,
                finished_at_opt: None,
            });
    }
}

/// Gives every dashboard tenant one finished scan, off the clock and off the statistics;
/// returns how many completed.
async fn warm_up(
    context: &Context,
    tenant_ids: &[Uuid],
    scan_bodies: &[Bytes],
    scan_records: usize,
    shared: &Shared,
) -> usize {
    let progress = progress_bar((tenant_ids.len() * scan_records) as u64, "first scans");
    let watch = ScanWatch {
        client: context.client.with_fresh_statistics(),
        poll_interval: POLL_INTERVAL,
        deadline: Instant::now() + context.timeout(),
        progress: progress.clone(),
        records_done: Arc::new(AtomicI64::new(0)),
        max_attempts: context.global.max_attempts,
        unanswered: crate::engine_client::Unanswered::Return,
    };
    let tasks: Vec<_> = tenant_ids
        .iter()
        .zip(scan_bodies)
        .map(|(tenant_id, body)| {
            let (watch, tenant_id, body) = (watch.clone(), *tenant_id, body.clone());
            tokio::spawn(
                async move { watch.submit_and_follow(tenant_id, body, scan_records).await },
            )
        })
        .collect();
    let mut completed = 0;
    for joined in futures_util::future::join_all(tasks).await {
        let scan = joined.expect("following a scan records failures and does not panic");
        if scan.was_accepted() {
            *shared
                .expected_rows
                .lock()
                .expect("no code panics holding this lock")
                .entry(scan.tenant_id)
                .or_insert(0) += scan.records_sent as i64;
        }
        completed += usize::from(scan.final_status == "completed");
    }
    progress.finish_and_clear();
    completed
}

/// Follows the scans accepted in the window until they finish (or the timeout passes).
async fn drain(context: &Context, accepted_scans: Vec<FollowedScan>) -> Vec<FollowedScan> {
    let total: usize = accepted_scans.iter().map(|scan| scan.records_sent).sum();
    let progress = progress_bar(total as u64, "draining scans");
    let watch = ScanWatch {
        client: context.client.with_fresh_statistics(),
        poll_interval: POLL_INTERVAL,
        deadline: Instant::now() + context.timeout(),
        progress: progress.clone(),
        records_done: Arc::new(AtomicI64::new(0)),
        max_attempts: context.global.max_attempts,
        unanswered: crate::engine_client::Unanswered::Return,
    };
    let tasks: Vec<_> = accepted_scans
        .into_iter()
        .filter_map(|scan| {
            let scan_id = scan.scan_id_opt?;
            let watch = watch.clone();
            Some(tokio::spawn(
                async move { watch.follow(scan, scan_id).await },
            ))
        })
        .collect();
    let finished = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("following a scan records failures and does not panic"))
        .collect();
    progress.finish_and_clear();
    finished
}
