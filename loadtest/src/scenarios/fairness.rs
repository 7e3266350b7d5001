//! `fairness`: one tenant submits a backlog of 1,000,000 records (10 scans of 100,000, all at
//! once); from the first backlog scan's acceptance on, other tenants each submit a 1,000-record
//! scan, one every `--small-interval-ms`. SPEC section 6: one tenant's huge backlog must not delay another
//! tenant's small scan. The report gives each small scan's completion time (from its own
//! submission to the engine's `completed_at`) next to the backlog's, and how far the backlog
//! had got when each small scan finished.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::{
    finish_insert_sampler, finish_memory, generate_in_parallel, progress_bar, start_insert_sampler,
    Context, FollowedScan, ScanWatch, TIMELINE_NOTE,
};
use crate::cli::FairnessOptions;
use crate::data::{generate_records, scan_body};
use crate::database;
use crate::report::{
    common_summary_lines, number_en, number_vi, DataReport, ScenarioReport, Throughput,
};
use crate::statistics::{round_to_thousandths, summarize_seconds, SecondsSummary};

/// Where the data streams of this scenario start, so its records differ from the others'.
const FAIRNESS_STREAM_OFFSET: u64 = 3_000_000;

/// How often the backlog's scans are polled: only its progress is needed, not a precise end.
const BACKLOG_POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize)]
struct FairnessDetails {
    backlog_tenant_id: Uuid,
    backlog_records: usize,
    backlog_scans_accepted: usize,
    /// From the start until all the backlog's scans were answered.
    backlog_submission_seconds: f64,
    /// From the start until the first backlog scan was answered: when small tenants start.
    first_backlog_answer_seconds: f64,
    /// From the first backlog submission to the last backlog scan's `completed_at`.
    #[serde(rename = "backlog_completion_seconds")]
    backlog_completion_seconds_opt: Option<f64>,
    backlog_scans: Vec<FollowedScan>,
    small_scans_accepted: usize,
    /// Each small scan's completion time, from its own submission.
    #[serde(rename = "small_scan_completion_seconds")]
    small_scan_completion_seconds_opt: Option<SecondsSummary>,
    small_scans: Vec<SmallScan>,
    /// True when every small scan finished before the backlog did.
    small_scans_finished_before_backlog: bool,
}

#[derive(Debug, Serialize)]
struct SmallScan {
    #[serde(flatten)]
    scan: FollowedScan,
    #[serde(rename = "completion_seconds")]
    completion_seconds_opt: Option<f64>,
    /// Share of the backlog written when this small scan's finish was seen.
    backlog_percent_done_when_finished: f64,
}

pub async fn run(context: &Context, options: &FairnessOptions) -> ScenarioReport {
    let seed = context.global.seed;
    let backlog_tenant_id = Uuid::new_v4();
    let (backlog_scans, backlog_scan_records) =
        (options.backlog_scans, options.backlog_scan_records);
    let (small_tenants, small_scan_records) = (options.small_tenants, options.small_scan_records);
    let generation_started = Instant::now();
    let (backlog_bodies, small_bodies) = tokio::task::spawn_blocking(move || {
        let backlog_bodies = generate_in_parallel(backlog_scans, |scan_index| {
            let stream = FAIRNESS_STREAM_OFFSET + scan_index as u64;
            scan_body(
                backlog_tenant_id,
                &generate_records(seed, stream, backlog_scan_records),
            )
        });
        let small_bodies = generate_in_parallel(small_tenants, |tenant_index| {
            let tenant_id = Uuid::new_v4();
            let stream = FAIRNESS_STREAM_OFFSET + 100_000 + tenant_index as u64;
            let body = scan_body(
                tenant_id,
                &generate_records(seed, stream, small_scan_records),
            );
            (tenant_id, body)
        });
        (backlog_bodies, small_bodies)
    })
    .await
    .expect("generation does not panic");
    let backlog_records = backlog_scans * backlog_scan_records;
    let small_records = small_tenants * small_scan_records;
    let data = DataReport {
        records: (backlog_records + small_records) as u64,
        request_bodies: (backlog_scans + small_tenants) as u64,
        body_bytes: backlog_bodies
            .iter()
            .chain(small_bodies.iter().map(|(_, body)| body))
            .map(|body: &Bytes| body.len() as u64)
            .sum(),
        generation_seconds: round_to_thousandths(generation_started.elapsed().as_secs_f64()),
    };

    let progress = progress_bar(data.records, "fairness");
    let memory_sampler_opt = context.start_memory_sampler();
    let insert_sampler = start_insert_sampler(context).await;
    let started_at = Utc::now();
    let started = Instant::now();
    let deadline = started + context.timeout();
    let backlog_done = Arc::new(AtomicI64::new(0));
    let backlog_client = context.client.with_fresh_statistics();
    let backlog_watch = ScanWatch {
        client: backlog_client.clone(),
        poll_interval: BACKLOG_POLL_INTERVAL,
        deadline,
        progress: progress.clone(),
        records_done: backlog_done.clone(),
        max_attempts: context.global.max_attempts,
        unanswered: crate::engine_client::Unanswered::Return,
    };
    let small_watch = ScanWatch {
        client: context.client.clone(),
        poll_interval: Duration::from_millis(options.poll_interval_ms),
        deadline,
        progress: progress.clone(),
        records_done: Arc::new(AtomicI64::new(0)),
        max_attempts: context.global.max_attempts,
        unanswered: crate::engine_client::Unanswered::Return,
    };

    // The whole backlog is submitted at once, as a scanner flushing its queue would, and
    // followed in the background. The small tenants start arriving as soon as the first
    // backlog scan is accepted, so they meet a backlog that is still being staged and written:
    // submitted one after another, staging alone took longer than writing (the first runs),
    // and the small scans only ever met an almost finished backlog. Each backlog task reports
    // its submission's end on this channel; it closes when all have, accepted or not.
    let (submitted_sender, mut submitted_receiver) = tokio::sync::mpsc::unbounded_channel::<()>();
    let backlog_tasks: Vec<_> = backlog_bodies
        .into_iter()
        .map(|body| {
            let (watch, submitted_sender) = (backlog_watch.clone(), submitted_sender.clone());
            tokio::spawn(async move {
                let submitted = watch
                    .submit(backlog_tenant_id, body, backlog_scan_records)
                    .await;
                // The receiver lives until every small scan is sent; nothing to do if not.
                let _ = submitted_sender.send(());
                drop(submitted_sender);
                match submitted.scan_id_opt {
                    Some(scan_id) => watch.follow(submitted, scan_id).await,
                    None => submitted,
                }
            })
        })
        .collect();
    drop(submitted_sender);
    let _ = submitted_receiver.recv().await;
    let first_backlog_answer_seconds = started.elapsed().as_secs_f64();

    let mut small_tasks = Vec::with_capacity(small_tenants);
    for (small_index, (tenant_id, body)) in small_bodies.into_iter().enumerate() {
        if small_index > 0 {
            tokio::time::sleep(Duration::from_millis(options.small_interval_ms)).await;
        }
        let (watch, backlog_done) = (small_watch.clone(), backlog_done.clone());
        small_tasks.push(tokio::spawn(async move {
            let scan = watch
                .submit_and_follow(tenant_id, body, small_scan_records)
                .await;
            let backlog_percent =
                backlog_done.load(Ordering::Relaxed) as f64 * 100.0 / backlog_records.max(1) as f64;
            (scan, round_to_thousandths(backlog_percent))
        }));
    }
    let small_results: Vec<(FollowedScan, f64)> = futures_util::future::join_all(small_tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("following a scan records failures and does not panic"))
        .collect();
    let backlog_results: Vec<FollowedScan> = futures_util::future::join_all(backlog_tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("following a scan records failures and does not panic"))
        .collect();
    progress.finish_and_clear();
    let (memory_opt, memory_error_opt) = finish_memory(context, memory_sampler_opt).await;

    let backlog_submission_seconds = backlog_results
        .iter()
        .map(|scan| {
            scan.submit_seconds + (scan.submitted_at - started_at).num_milliseconds() as f64 / 1e3
        })
        .fold(0.0, f64::max);
    let backlog_finished = backlog_results.iter().all(FollowedScan::is_finished);
    let backlog_finished_at_opt = backlog_finished
        .then(|| {
            backlog_results
                .iter()
                .filter_map(|scan| scan.finished_at_opt)
                .max()
        })
        .flatten();
    let backlog_completion_seconds_opt = backlog_finished_at_opt.map(|finished_at| {
        round_to_thousandths(
            (finished_at - started_at).num_microseconds().unwrap_or(0) as f64 / 1e6,
        )
    });
    let small_scans: Vec<SmallScan> = small_results
        .into_iter()
        .map(|(scan, backlog_percent)| SmallScan {
            completion_seconds_opt: scan
                .seconds_since(scan.submitted_at)
                .filter(|_| scan.is_finished())
                .map(round_to_thousandths),
            backlog_percent_done_when_finished: backlog_percent,
            scan,
        })
        .collect();
    let small_seconds: Vec<f64> = small_scans
        .iter()
        .filter_map(|small| small.completion_seconds_opt)
        .collect();
    let small_scans_finished_before_backlog = small_scans.iter().all(|small| {
        match (small.scan.finished_at_opt, backlog_finished_at_opt) {
            (Some(small_finished), Some(backlog_finished)) => small_finished < backlog_finished,
            (Some(_), None) => true,
            (None, _) => false,
        }
    });

    let mut expected_rows = BTreeMap::new();
    let backlog_accepted = backlog_results
        .iter()
        .filter(|scan| scan.was_accepted())
        .count();
    expected_rows.insert(
        backlog_tenant_id,
        (backlog_accepted * backlog_scan_records) as i64,
    );
    for small in &small_scans {
        let expected = if small.scan.was_accepted() {
            small_scan_records as i64
        } else {
            0
        };
        expected_rows.insert(small.scan.tenant_id, expected);
    }
    let mut notes = vec![
        "Small scans' completion is measured from each one's own submission to its completed_at; the backlog's from its first submission.".to_string(),
        "Endpoints marked (backlog) are the large tenant's requests; the others are the small tenants'.".to_string(),
        "backlog_percent_done_when_finished comes from the backlog scans' status polls (every 500 ms, from each one's 202 on).".to_string(),
        TIMELINE_NOTE.to_string(),
    ];
    let timeline =
        finish_insert_sampler(insert_sampler, expected_rows.values().sum(), &mut notes).await;
    let verification = database::verify(&context.database_url, &expected_rows).await;
    let records_written: i64 = backlog_results
        .iter()
        .chain(small_scans.iter().map(|small| &small.scan))
        .filter(|scan| scan.is_finished())
        .map(|scan| scan.records_processed)
        .sum();
    let last_finish_seconds = backlog_results
        .iter()
        .chain(small_scans.iter().map(|small| &small.scan))
        .filter_map(|scan| scan.seconds_since(started_at))
        .fold(0.0, f64::max);
    let engine_throughput = Throughput {
        records: records_written.max(0) as u64,
        seconds: round_to_thousandths(last_finish_seconds),
        records_per_second: round_to_thousandths(
            records_written as f64 / last_finish_seconds.max(1e-9),
        ),
        measured: "all finished scans, from the first backlog submission to the last completed_at"
            .to_string(),
    };

    let all_finished = backlog_finished && small_scans.iter().all(|small| small.scan.is_finished());
    let details = FairnessDetails {
        backlog_tenant_id,
        backlog_records,
        backlog_scans_accepted: backlog_accepted,
        backlog_submission_seconds: round_to_thousandths(backlog_submission_seconds),
        first_backlog_answer_seconds: round_to_thousandths(first_backlog_answer_seconds),
        backlog_completion_seconds_opt,
        backlog_scans: backlog_results,
        small_scans_accepted: small_scans
            .iter()
            .filter(|small| small.scan.was_accepted())
            .count(),
        small_scan_completion_seconds_opt: summarize_seconds(&small_seconds),
        small_scans,
        small_scans_finished_before_backlog,
    };

    let mut endpoints = context.client.recorder.reports();
    for (name, report) in backlog_client.recorder.reports() {
        endpoints.insert(format!("{name} (backlog)"), report);
    }
    let mut success_latencies = context.client.recorder.success_histograms();
    for (name, histogram) in backlog_client.recorder.success_histograms() {
        success_latencies.push((format!("{name} (backlog)"), histogram));
    }

    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    let backlog_seconds_text_en = backlog_completion_seconds_opt
        .map_or("did not finish".to_string(), |seconds| {
            format!("finished after {} s", number_en(seconds, 2))
        });
    let backlog_seconds_text_vi = backlog_completion_seconds_opt
        .map_or("chưa hoàn thành".to_string(), |seconds| {
            format!("hoàn thành sau {} giây", number_vi(seconds, 2))
        });
    summary_en.push(format!(
        "Backlog of {} records ({} scans sent at once, {} accepted, the last after {} s) {backlog_seconds_text_en}.",
        number_en(backlog_records as f64, 0),
        backlog_scans,
        details.backlog_scans_accepted,
        number_en(details.backlog_submission_seconds, 2),
    ));
    summary_vi.push(format!(
        "Tồn đọng {} bản ghi ({} lượt quét gửi cùng lúc, {} lượt được chấp nhận, lượt cuối sau {} giây) {backlog_seconds_text_vi}.",
        number_vi(backlog_records as f64, 0),
        backlog_scans,
        details.backlog_scans_accepted,
        number_vi(details.backlog_submission_seconds, 2),
    ));
    if let Some(small) = &details.small_scan_completion_seconds_opt {
        summary_en.push(format!(
            "{} small scans of {} records: completion p50 {} s, p95 {} s, max {} s after their own submission; all before the backlog: {}.",
            small.count,
            number_en(small_scan_records as f64, 0),
            number_en(small.p50_seconds, 2),
            number_en(small.p95_seconds, 2),
            number_en(small.max_seconds, 2),
            if small_scans_finished_before_backlog { "yes" } else { "no" },
        ));
        summary_vi.push(format!(
            "{} lượt quét nhỏ {} bản ghi: hoàn thành p50 {} giây, p95 {} giây, tối đa {} giây sau khi gửi; tất cả xong trước khối tồn đọng: {}.",
            small.count,
            number_vi(small_scan_records as f64, 0),
            number_vi(small.p50_seconds, 2),
            number_vi(small.p95_seconds, 2),
            number_vi(small.max_seconds, 2),
            if small_scans_finished_before_backlog { "có" } else { "không" },
        ));
    }
    let (english, vietnamese) = common_summary_lines(&verification, memory_opt.as_ref());
    summary_en.extend(english);
    summary_vi.extend(vietnamese);

    ScenarioReport {
        scenario: "fairness",
        passed: verification.passed && all_finished,
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
        success_latencies,
        machine_opt: None,
    }
}
