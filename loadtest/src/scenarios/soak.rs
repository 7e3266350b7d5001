//! `soak`: the `mixed` traffic (dashboard reads, scans, batches) for `--duration-secs`
//! (default 30 minutes) at a sustainable rate, plus an admin changing tenant limits every 10 s;
//! meanwhile the engine's RSS, open file descriptors, database connections and staged backlog
//! are sampled every `--sample-secs`, charted, and compared between the minute after the
//! warm-up and the traffic's last minute (goal: under 5 % growth), with every error counted
//! (goal: 0).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{mixed, Context};
use crate::cli::{MixedOptions, SoakOptions, WriteKind};
use crate::database;
use crate::memory::parse_memory_status;
use crate::report::{number_en, number_vi, ScenarioReport};
use crate::statistics::round_to_thousandths;

/// One sample of the engine's resources.
#[derive(Debug, Clone, Serialize)]
struct ResourceSample {
    second: f64,
    rss_kib: u64,
    open_file_descriptors: u64,
    database_connections: i64,
    staged_backlog_records: i64,
}

#[derive(Debug, Default, Serialize)]
struct Growth {
    /// Median over the minute after the warm-up, and over the last minute.
    after_warm_up: f64,
    at_end: f64,
    percent: f64,
}

pub async fn run(context: &Context, options: &SoakOptions) -> ScenarioReport {
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<ResourceSample>>> = Arc::default();
    let limit_changes = Arc::new(AtomicU64::new(0));
    let limit_change_errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let soak_started_at = chrono::Utc::now();
    let sampler = tokio::spawn(sample_resources(
        context.engine_pid_opt,
        context.database_url.clone(),
        Duration::from_secs(options.sample_secs.max(1)),
        started,
        stop.clone(),
        samples.clone(),
    ));
    let changer = tokio::spawn(change_limits(
        context.global.engine_url.clone(),
        context.global.token_opt.clone(),
        stop.clone(),
        limit_changes.clone(),
        limit_change_errors.clone(),
    ));

    let mixed_options = MixedOptions {
        duration_secs: options.duration_secs,
        clients: 8,
        tenants: 20,
        rate: options.rate,
        read_percent: 70,
        write_kind: WriteKind::Both,
        batch_size: options.batch_size,
        scan_records: options.scan_records,
        max_requests: u64::MAX,
    };
    let mut report = mixed::run(context, &mixed_options).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let _ = changer.await;

    let samples = samples
        .lock()
        .map(|samples| samples.clone())
        .unwrap_or_default();
    // The traffic window, in the samples' seconds: from mixed's start (after its first scans)
    // for its window, so the drain that follows (the load test polling every accepted scan at
    // once) is not taken for the engine's steady state.
    let window_start = (report.started_at - soak_started_at).num_milliseconds() as f64 / 1000.0;
    let window_seconds = report.details["window_seconds"].as_f64().unwrap_or(0.0);
    let window_end = window_start + window_seconds;
    let growth = |value: fn(&ResourceSample) -> f64| -> Growth {
        let warm_up = window_start + options.warm_up_secs as f64;
        let end = window_end;
        let median = |from: f64, to: f64| {
            let mut values: Vec<f64> = samples
                .iter()
                .filter(|sample| sample.second >= from && sample.second < to)
                .map(value)
                .collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0)
        };
        let after_warm_up = median(warm_up, warm_up + 60.0);
        let at_end = median(end - 60.0, end);
        Growth {
            after_warm_up,
            at_end,
            percent: round_to_thousandths((at_end / after_warm_up.max(1e-9) - 1.0) * 100.0),
        }
    };
    let rss = growth(|sample| sample.rss_kib as f64);
    let descriptors = growth(|sample| sample.open_file_descriptors as f64);
    let connections = growth(|sample| sample.database_connections as f64);
    let backlog = growth(|sample| sample.staged_backlog_records as f64);
    let server_errors: u64 = report
        .endpoints
        .values()
        .map(|endpoint| {
            endpoint.transport_errors
                + endpoint
                    .statuses
                    .iter()
                    .filter(|(status, _)| status.starts_with('5'))
                    .map(|(_, count)| count)
                    .sum::<u64>()
        })
        .sum();
    let change_errors = limit_change_errors
        .lock()
        .map(|errors| errors.clone())
        .unwrap_or_default();
    let errors = server_errors + change_errors.len() as u64;
    let rss_first_kib = samples.first().map_or(0, |sample| sample.rss_kib);
    let rss_last_kib = samples.last().map_or(0, |sample| sample.rss_kib);

    let chart_path = context.global.report_dir.join(format!(
        "soak-{}-resources.svg",
        report.started_at.format("%Y%m%dT%H%M%SZ")
    ));
    if let Err(error) = crate::chart::write_resource_chart(
        &chart_path,
        "soak — engine resources",
        &[
            (
                "RSS MiB",
                samples
                    .iter()
                    .map(|sample| (sample.second, sample.rss_kib as f64 / 1024.0))
                    .collect(),
            ),
            (
                "open file descriptors",
                samples
                    .iter()
                    .map(|sample| (sample.second, sample.open_file_descriptors as f64))
                    .collect(),
            ),
            (
                "database connections",
                samples
                    .iter()
                    .map(|sample| (sample.second, sample.database_connections as f64))
                    .collect(),
            ),
            (
                "staged backlog (thousand records)",
                samples
                    .iter()
                    .map(|sample| (sample.second, sample.staged_backlog_records as f64 / 1000.0))
                    .collect(),
            ),
        ],
    ) {
        report.notes.push(error);
    }

    report.summary_en.push(format!(
        "Soak: {} samples over {} s; RSS {} MiB at start, {} MiB after the warm-up, {} MiB at the end ({:+} % since the warm-up); file descriptors {:+} %, connections {:+} %; {} limit changes; {} errors (5xx, transport, failed limit changes).",
        samples.len(),
        number_en(samples.last().map_or(0.0, |sample| sample.second), 0),
        number_en(rss_first_kib as f64 / 1024.0, 1),
        number_en(rss.after_warm_up / 1024.0, 1),
        number_en(rss_last_kib as f64 / 1024.0, 1),
        rss.percent,
        descriptors.percent,
        connections.percent,
        limit_changes.load(Ordering::Relaxed),
        errors,
    ));
    report.summary_vi.push(format!(
        "Chạy dài: {} mẫu trong {} giây; RSS {} MiB lúc đầu, {} MiB sau khởi động, {} MiB lúc cuối ({:+} % so với sau khởi động); mô tả tệp {:+} %, kết nối {:+} %; {} lần đổi giới hạn; {} lỗi (5xx, lỗi truyền tải, đổi giới hạn thất bại).",
        samples.len(),
        number_vi(samples.last().map_or(0.0, |sample| sample.second), 0),
        number_vi(rss_first_kib as f64 / 1024.0, 1),
        number_vi(rss.after_warm_up / 1024.0, 1),
        number_vi(rss_last_kib as f64 / 1024.0, 1),
        rss.percent,
        descriptors.percent,
        connections.percent,
        limit_changes.load(Ordering::Relaxed),
        errors,
    ));
    let mixed_details = std::mem::take(&mut report.details);
    report.details = json!({
        "mixed": mixed_details,
        "soak": {
            "warm_up_secs": options.warm_up_secs,
            "traffic_window_seconds": [window_start, window_end],
            "rss_growth": rss,
            "file_descriptor_growth": descriptors,
            "connection_growth": connections,
            "backlog_growth": backlog,
            "limit_changes": limit_changes.load(Ordering::Relaxed),
            "limit_change_errors": change_errors,
            "errors": errors,
            "resource_chart": chart_path,
            "samples": samples,
        },
    });
    report.scenario = "soak";
    report.passed = report.passed && errors == 0 && rss.percent < 5.0;
    report
}

/// Samples the engine's resources until `stop`.
async fn sample_resources(
    engine_pid_opt: Option<u32>,
    database_url: String,
    interval: Duration,
    started: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<ResourceSample>>>,
) {
    let Ok(client) = database::connect(&database_url).await else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        let (rss_kib, descriptors) = match engine_pid_opt {
            Some(pid) => (
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|status| parse_memory_status(&status))
                    .map_or(0, |status| status.rss_kib),
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map_or(0, |entries| entries.count() as u64),
            ),
            None => (0, 0),
        };
        let counts = database::engine_resources(&client).await.unwrap_or((0, 0));
        if let Ok(mut samples) = samples.lock() {
            samples.push(ResourceSample {
                second: round_to_thousandths(started.elapsed().as_secs_f64()),
                rss_kib,
                open_file_descriptors: descriptors,
                database_connections: counts.0,
                staged_backlog_records: counts.1,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// An admin changing three tenants' limits every 10 s, until `stop`.
async fn change_limits(
    engine_url: String,
    token_opt: Option<String>,
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let http = reqwest::Client::new();
    let with_token = |request: reqwest::RequestBuilder| match &token_opt {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let tenants: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for tenant in &tenants {
        let body = json!({ "tenant_id": tenant, "name": "Công ty chạy dài" });
        let _ = with_token(http.post(format!("{engine_url}/admin/tenants")).json(&body))
            .send()
            .await;
    }
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        round += 1;
        let tenant = tenants[(round % 3) as usize];
        let rate = if round % 2 == 0 { 100_000 } else { 90_000 };
        let request = http
            .put(format!("{engine_url}/admin/tenants/{tenant}/limits"))
            .json(&json!({ "records_per_second": rate }));
        match with_token(request).send().await {
            Ok(response) if response.status().is_success() => {
                changes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => {
                if let Ok(mut errors) = errors.lock() {
                    errors.push(format!("PUT limits answered {}", response.status()));
                }
            }
            Err(error) => {
                if let Ok(mut errors) = errors.lock() {
                    errors.push(format!("PUT limits failed: {error}"));
                }
            }
        }
    }
}
