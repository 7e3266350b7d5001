//! `burst`: N tenants each submit one scan of R records at the same moment (default 100 ×
//! 100,000: the largest scans of SPEC section 1, all in the same minute). Each client behaves as
//! the README asks of one: it sends its scan with an idempotency key, and when the engine
//! answers 503 or 429 it waits the answer's `Retry-After` and sends the same body again. The
//! report gives how many were accepted at the first try, the retries and the waits the engine
//! asked for, the time to the last 202 and to the last completion, the rate against plain COPY
//! of the same rows in the same run, and the engine's peak memory; then every row is verified.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use super::baseline::{self, push_baseline_summary};
use super::{
    expect_rows, finish_memory, finished_records_and_seconds, generate_scan_bodies,
    submit_all_and_follow_through, Context, FollowedScan,
};
use crate::cli::BurstOptions;
use crate::database;
use crate::engine_client::{Unanswered, SUBMIT_SCAN};
use crate::report::{common_summary_lines, number_en, number_vi, ScenarioReport, Throughput};
use crate::statistics::{round_to_thousandths, summarize_seconds, SecondsSummary};

/// Goal of the end-to-end rate against plain COPY (issue 20).
const RATE_RATIO_GOAL: f64 = 0.7;
/// Goal of the engine's peak memory, in MiB.
const PEAK_RSS_GOAL_MIB: f64 = 256.0;

#[derive(Debug, Serialize)]
struct BurstDetails {
    scans_submitted: usize,
    scans_accepted: usize,
    accepted_at_first_try: usize,
    /// Submissions sent again (all scans together).
    retries: u32,
    /// Scans by the number of submissions they took ("1", "2", …).
    scans_by_attempts: BTreeMap<u32, usize>,
    /// The waits the engine asked for (`Retry-After`) before each retry.
    #[serde(rename = "retry_waits")]
    retry_waits_opt: Option<SecondsSummary>,
    scans_by_final_status: BTreeMap<String, usize>,
    /// From the first submission to the last 202.
    last_accepted_seconds: f64,
    /// From the first submission to the last scan's completion.
    end_to_end_seconds: f64,
    /// Each scan's acceptance (its 202), in seconds from the first submission.
    #[serde(rename = "accepted_seconds")]
    accepted_seconds_opt: Option<SecondsSummary>,
}

pub async fn run(context: &Context, options: &BurstOptions) -> ScenarioReport {
    let records_per_scan = options.records;
    let (bodies, data) = generate_scan_bodies(
        context,
        options.tenants,
        records_per_scan,
        0,
        Some("loadtest-burst"),
    )
    .await;

    let memory_sampler_opt = context.start_memory_sampler();
    let (started_at, followed) = submit_all_and_follow_through(
        context,
        &context.client,
        options.max_attempts,
        Unanswered::Retry,
        bodies,
        records_per_scan,
        Duration::from_millis(options.poll_interval_ms),
        "burst",
    )
    .await;
    let (memory_opt, memory_error_opt) = finish_memory(context, memory_sampler_opt).await;
    let notes = vec![
        "Records/s counts records in finished scans over the time from the first POST to the last completed_at (the engine's clock, on this machine).".to_string(),
        "Each client retries a 503 or 429 after its Retry-After (honoured up to 120 s), with the same body and idempotency key.".to_string(),
        "The baseline loads the same generated rows (same seed and streams) under fresh tenant ids, after the engine part, pre-encoded as binary COPY; the database is brought to rest (VACUUM, CHECKPOINT) before its clock starts, unless --unsettled-baseline.".to_string(),
    ];

    let accepted_seconds: Vec<f64> = followed
        .iter()
        .filter(|scan| scan.was_accepted())
        .map(accepted_after(started_at))
        .collect();
    let (records_written, end_to_end_seconds) = finished_records_and_seconds(&followed, started_at);
    let engine_throughput = Throughput {
        records: records_written as u64,
        seconds: round_to_thousandths(end_to_end_seconds),
        records_per_second: round_to_thousandths(
            records_written as f64 / end_to_end_seconds.max(1e-9),
        ),
        measured: "from the first POST /data-scans to the last scan's completed_at".to_string(),
    };
    let mut expected_rows = BTreeMap::new();
    expect_rows(&mut expected_rows, &followed);
    let verification = database::verify(&context.database_url, &expected_rows).await;
    let mut scans_by_final_status = BTreeMap::new();
    let mut scans_by_attempts = BTreeMap::new();
    for scan in &followed {
        *scans_by_final_status
            .entry(scan.final_status.clone())
            .or_insert(0) += 1;
        *scans_by_attempts.entry(scan.submit_attempts).or_insert(0) += 1;
    }
    let retry_waits: Vec<f64> = followed
        .iter()
        .flat_map(|scan| scan.retry_waits_seconds.iter().copied())
        .collect();
    let all_completed = scans_by_final_status.get("completed") == Some(&options.tenants);
    let details = BurstDetails {
        scans_submitted: options.tenants,
        scans_accepted: accepted_seconds.len(),
        accepted_at_first_try: followed
            .iter()
            .filter(|scan| scan.was_accepted() && scan.submit_attempts == 1)
            .count(),
        retries: followed
            .iter()
            .map(|scan| scan.submit_attempts.saturating_sub(1))
            .sum(),
        scans_by_attempts,
        retry_waits_opt: summarize_seconds(&retry_waits),
        scans_by_final_status,
        last_accepted_seconds: round_to_thousandths(
            accepted_seconds.iter().copied().fold(0.0, f64::max),
        ),
        end_to_end_seconds: round_to_thousandths(end_to_end_seconds),
        accepted_seconds_opt: summarize_seconds(&accepted_seconds),
    };

    let baseline_opt = baseline::after_engine_part(
        context,
        options.tenants,
        records_per_scan,
        options.skip_baseline,
    )
    .await;
    let ratio_opt = baseline::ratio(engine_throughput.records_per_second, baseline_opt.as_ref());

    let endpoints = context.client.recorder.reports();
    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    summary_en.push(format!(
        "{} tenants × {} records at once: {} of {} scans accepted ({} at the first try, {} retries; attempts per scan {:?}), statuses {:?}.",
        options.tenants,
        number_en(records_per_scan as f64, 0),
        details.scans_accepted,
        options.tenants,
        details.accepted_at_first_try,
        details.retries,
        details.scans_by_attempts,
        details.scans_by_final_status,
    ));
    summary_vi.push(format!(
        "{} tổ chức × {} bản ghi cùng lúc: {}/{} lượt quét được chấp nhận ({} ngay lần đầu, {} lần gửi lại; số lần gửi mỗi lượt quét {:?}), trạng thái {:?}.",
        options.tenants,
        number_vi(records_per_scan as f64, 0),
        details.scans_accepted,
        options.tenants,
        details.accepted_at_first_try,
        details.retries,
        details.scans_by_attempts,
        details.scans_by_final_status,
    ));
    if let Some(waits) = &details.retry_waits_opt {
        summary_en.push(format!(
            "Retry-After asked by the engine: min {} s, median {} s, max {} s.",
            number_en(waits.min_seconds, 0),
            number_en(waits.p50_seconds, 0),
            number_en(waits.max_seconds, 0),
        ));
        summary_vi.push(format!(
            "Retry-After do engine yêu cầu: nhỏ nhất {} giây, trung vị {} giây, lớn nhất {} giây.",
            number_vi(waits.min_seconds, 0),
            number_vi(waits.p50_seconds, 0),
            number_vi(waits.max_seconds, 0),
        ));
    }
    summary_en.push(format!(
        "Last 202 after {} s; last completion after {} s: {} records = {} records/s.",
        number_en(details.last_accepted_seconds, 2),
        number_en(details.end_to_end_seconds, 2),
        number_en(engine_throughput.records as f64, 0),
        number_en(engine_throughput.records_per_second, 0),
    ));
    summary_vi.push(format!(
        "Phản hồi 202 cuối cùng sau {} giây; lượt quét cuối cùng hoàn thành sau {} giây: {} bản ghi = {} bản ghi/giây.",
        number_vi(details.last_accepted_seconds, 2),
        number_vi(details.end_to_end_seconds, 2),
        number_vi(engine_throughput.records as f64, 0),
        number_vi(engine_throughput.records_per_second, 0),
    ));
    if let Some(submit) = endpoints.get(SUBMIT_SCAN) {
        let latency = &submit.latency_success;
        summary_en.push(format!(
            "POST /data-scans (202): p50 {} ms, p99 {} ms, max {} ms; statuses of all {} attempts {:?}.",
            number_en(latency.p50_ms, 0),
            number_en(latency.p99_ms, 0),
            number_en(latency.max_ms, 0),
            submit.requests,
            submit.statuses,
        ));
        summary_vi.push(format!(
            "POST /data-scans (202): p50 {} ms, p99 {} ms, tối đa {} ms; mã trạng thái của cả {} lần gửi {:?}.",
            number_vi(latency.p50_ms, 0),
            number_vi(latency.p99_ms, 0),
            number_vi(latency.max_ms, 0),
            submit.requests,
            submit.statuses,
        ));
    }
    if let Some(baseline) = &baseline_opt {
        push_baseline_summary(baseline, &mut summary_en, &mut summary_vi);
    }
    if let Some(ratio) = ratio_opt {
        let met = ratio >= RATE_RATIO_GOAL;
        summary_en.push(format!(
            "Engine / plain COPY = {} (goal ≥ {}: {}).",
            number_en(ratio, 3),
            RATE_RATIO_GOAL,
            if met { "met" } else { "not met" },
        ));
        summary_vi.push(format!(
            "Engine / COPY trực tiếp = {} (mục tiêu ≥ {}: {}).",
            number_vi(ratio, 3),
            RATE_RATIO_GOAL,
            if met { "đạt" } else { "chưa đạt" },
        ));
    }
    if let Some(memory) = &memory_opt {
        let peak_mib = memory.peak_rss_sampled_kib as f64 / 1024.0;
        let met = peak_mib < PEAK_RSS_GOAL_MIB;
        summary_en.push(format!(
            "Engine peak RSS {} MiB (goal under {} MiB: {}).",
            number_en(peak_mib, 1),
            PEAK_RSS_GOAL_MIB,
            if met { "met" } else { "not met" },
        ));
        summary_vi.push(format!(
            "RSS cao nhất của engine {} MiB (mục tiêu dưới {} MiB: {}).",
            number_vi(peak_mib, 1),
            PEAK_RSS_GOAL_MIB,
            if met { "đạt" } else { "chưa đạt" },
        ));
    }
    let (english, vietnamese) = common_summary_lines(&verification, memory_opt.as_ref());
    summary_en.extend(english);
    summary_vi.extend(vietnamese);

    ScenarioReport {
        passed: verification.passed && all_completed && baseline::passed(baseline_opt.as_ref()),
        data,
        engine_throughput_opt: Some(engine_throughput),
        baseline_opt,
        engine_to_baseline_ratio_opt: ratio_opt,
        details: serde_json::to_value(&details).unwrap_or_default(),
        memory_opt,
        memory_error_opt,
        verification,
        notes,
        summary_en,
        summary_vi,
        ..context.report("burst", options, started_at)
    }
}

/// Seconds from `origin` to the scan's 202: its first submission plus the time its attempts
/// (and the waits between them) took.
fn accepted_after(origin: chrono::DateTime<Utc>) -> impl Fn(&FollowedScan) -> f64 {
    move |scan| {
        let first_sent = (scan.submitted_at - origin)
            .num_microseconds()
            .map_or(0.0, |micros| micros as f64 / 1e6);
        round_to_thousandths(first_sent + scan.submit_seconds)
    }
}
