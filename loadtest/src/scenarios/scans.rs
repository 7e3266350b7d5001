//! `scans`: N tenants each submit one data scan of M records at the same moment (the
//! scheduled-scan burst of SPEC section 1), and each scan is followed until it finishes. Then
//! the same rows are loaded by plain `COPY` under fresh tenant ids, and the report gives the
//! engine's rate as a fraction of that baseline.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::baseline::{self, push_baseline_summary};
use super::{
    expect_rows, finish_insert_sampler, finish_memory, generate_scan_bodies, start_insert_sampler,
    submit_all_and_follow, Context, FollowedScan, TIMELINE_NOTE,
};
use crate::cli::ScansOptions;
use crate::database;
use crate::engine_client::SUBMIT_SCAN;
use crate::report::{common_summary_lines, number_en, number_vi, ScenarioReport, Throughput};
use crate::statistics::{round_to_thousandths, summarize_seconds, SecondsSummary};

#[derive(Debug, Serialize)]
struct ScansDetails {
    scans_submitted: usize,
    scans_accepted: usize,
    /// Scans answered 429 or 503 at first and submitted again after the Retry-After.
    scans_retried: usize,
    scans_by_final_status: BTreeMap<String, usize>,
    /// From the first submission to the last scan's completion.
    end_to_end_seconds: f64,
    /// Each scan's completion, in seconds from the first submission.
    #[serde(rename = "completion_seconds")]
    completion_seconds_opt: Option<SecondsSummary>,
    scans: Vec<ScanCompletion>,
}

#[derive(Debug, Serialize)]
struct ScanCompletion {
    #[serde(flatten)]
    scan: FollowedScan,
    #[serde(rename = "completion_seconds")]
    completion_seconds_opt: Option<f64>,
}

pub async fn run(context: &Context, options: &ScansOptions) -> ScenarioReport {
    let records_per_scan = options.records;
    let (bodies, data) =
        generate_scan_bodies(context, options.tenants, records_per_scan, 0, None).await;

    let memory_sampler_opt = context.start_memory_sampler();
    let insert_sampler = start_insert_sampler(context).await;
    let (started_at, followed) = submit_all_and_follow(
        context,
        bodies,
        records_per_scan,
        Duration::from_millis(options.poll_interval_ms),
        "engine scans",
    )
    .await;
    let (memory_opt, memory_error_opt) = finish_memory(context, memory_sampler_opt).await;
    let mut notes = vec![
        "Records/s counts records in finished scans over the time from the first POST to the last completed_at (the engine's clock, on this machine).".to_string(),
        TIMELINE_NOTE.to_string(),
        "The baseline loads the same generated rows (same seed and streams) under fresh tenant ids, after the engine part, pre-encoded as binary COPY; the database is brought to rest (VACUUM, CHECKPOINT) before its clock starts, unless --unsettled-baseline.".to_string(),
    ];

    let mut expected_rows = BTreeMap::new();
    expect_rows(&mut expected_rows, &followed);
    let completions: Vec<ScanCompletion> = followed
        .into_iter()
        .map(|scan| ScanCompletion {
            completion_seconds_opt: scan
                .seconds_since(started_at)
                .filter(|_| scan.is_finished())
                .map(round_to_thousandths),
            scan,
        })
        .collect();
    let completion_seconds: Vec<f64> = completions
        .iter()
        .filter_map(|completion| completion.completion_seconds_opt)
        .collect();
    let end_to_end_seconds = completion_seconds.iter().copied().fold(0.0, f64::max);
    let records_written: i64 = completions
        .iter()
        .filter(|completion| completion.scan.is_finished())
        .map(|completion| completion.scan.records_processed)
        .sum();
    let engine_throughput = Throughput {
        records: records_written as u64,
        seconds: round_to_thousandths(end_to_end_seconds),
        records_per_second: round_to_thousandths(
            records_written as f64 / end_to_end_seconds.max(1e-9),
        ),
        measured: "from the first POST /data-scans to the last scan's completed_at".to_string(),
    };

    let timeline =
        finish_insert_sampler(insert_sampler, expected_rows.values().sum(), &mut notes).await;
    let verification = database::verify(&context.database_url, &expected_rows).await;
    let mut scans_by_final_status = BTreeMap::new();
    for completion in &completions {
        *scans_by_final_status
            .entry(completion.scan.final_status.clone())
            .or_insert(0) += 1;
    }
    let all_completed = scans_by_final_status.get("completed") == Some(&options.tenants);

    let baseline_opt = baseline::after_engine_part(
        context,
        options.tenants,
        records_per_scan,
        options.skip_baseline,
    )
    .await;
    let ratio_opt = baseline::ratio(engine_throughput.records_per_second, baseline_opt.as_ref());

    let endpoints = context.client.recorder.reports();
    let details = ScansDetails {
        scans_submitted: options.tenants,
        scans_accepted: completions
            .iter()
            .filter(|completion| completion.scan.was_accepted())
            .count(),
        scans_retried: completions
            .iter()
            .filter(|completion| completion.scan.submit_attempts > 1)
            .count(),
        scans_by_final_status,
        end_to_end_seconds: round_to_thousandths(end_to_end_seconds),
        completion_seconds_opt: summarize_seconds(&completion_seconds),
        scans: completions,
    };

    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    summary_en.push(format!(
        "{} tenants × {} records: {} of {} scans accepted, statuses {:?}; {} records written in {} s = {} records/s.",
        options.tenants,
        number_en(records_per_scan as f64, 0),
        details.scans_accepted,
        options.tenants,
        details.scans_by_final_status,
        number_en(engine_throughput.records as f64, 0),
        number_en(engine_throughput.seconds, 2),
        number_en(engine_throughput.records_per_second, 0),
    ));
    summary_vi.push(format!(
        "{} tổ chức × {} bản ghi: {}/{} lượt quét được chấp nhận, trạng thái {:?}; đã ghi {} bản ghi trong {} giây = {} bản ghi/giây.",
        options.tenants,
        number_vi(records_per_scan as f64, 0),
        details.scans_accepted,
        options.tenants,
        details.scans_by_final_status,
        number_vi(engine_throughput.records as f64, 0),
        number_vi(engine_throughput.seconds, 2),
        number_vi(engine_throughput.records_per_second, 0),
    ));
    if let Some(submit) = endpoints.get(SUBMIT_SCAN) {
        let latency = &submit.latency_success;
        summary_en.push(format!(
            "POST /data-scans latency (202): p50 {} ms, p95 {} ms, p99 {} ms, max {} ms; statuses of all {} attempts {:?} ({} scans retried after 429/503).",
            number_en(latency.p50_ms, 1),
            number_en(latency.p95_ms, 1),
            number_en(latency.p99_ms, 1),
            number_en(latency.max_ms, 1),
            submit.requests,
            submit.statuses,
            details.scans_retried,
        ));
        summary_vi.push(format!(
            "Độ trễ POST /data-scans (202): p50 {} ms, p95 {} ms, p99 {} ms, tối đa {} ms; mã trạng thái của cả {} lần gửi {:?} ({} lượt quét được gửi lại sau 429/503).",
            number_vi(latency.p50_ms, 1),
            number_vi(latency.p95_ms, 1),
            number_vi(latency.p99_ms, 1),
            number_vi(latency.max_ms, 1),
            submit.requests,
            submit.statuses,
            details.scans_retried,
        ));
    }
    if let Some(completion) = &details.completion_seconds_opt {
        summary_en.push(format!(
            "Scan completion after the first submission: first {} s, median {} s, last {} s.",
            number_en(completion.min_seconds, 2),
            number_en(completion.p50_seconds, 2),
            number_en(completion.max_seconds, 2),
        ));
        summary_vi.push(format!(
            "Thời điểm hoàn thành lượt quét (tính từ lần gửi đầu tiên): sớm nhất {} giây, trung vị {} giây, muộn nhất {} giây.",
            number_vi(completion.min_seconds, 2),
            number_vi(completion.p50_seconds, 2),
            number_vi(completion.max_seconds, 2),
        ));
    }
    if let Some(baseline) = &baseline_opt {
        push_baseline_summary(baseline, &mut summary_en, &mut summary_vi);
    }
    if let Some(ratio) = ratio_opt {
        summary_en.push(format!(
            "Engine / plain COPY = {} ({} % of the baseline rate).",
            number_en(ratio, 3),
            number_en(ratio * 100.0, 1)
        ));
        summary_vi.push(format!(
            "Engine / COPY trực tiếp = {} (bằng {} % tốc độ cơ sở).",
            number_vi(ratio, 3),
            number_vi(ratio * 100.0, 1)
        ));
    }
    let (english, vietnamese) = common_summary_lines(&verification, memory_opt.as_ref());
    summary_en.extend(english);
    summary_vi.extend(vietnamese);

    let baseline_passed = baseline::passed(baseline_opt.as_ref());
    ScenarioReport {
        passed: verification.passed && all_completed && baseline_passed,
        data,
        engine_throughput_opt: Some(engine_throughput),
        baseline_opt,
        engine_to_baseline_ratio_opt: ratio_opt,
        details: serde_json::to_value(&details).unwrap_or_default(),
        memory_opt,
        memory_error_opt,
        verification,
        timeline,
        notes,
        summary_en,
        summary_vi,
        ..context.report("scans", options, started_at)
    }
}
