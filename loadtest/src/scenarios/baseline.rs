//! `baseline`: the same kind of rows loaded by plain binary `COPY` straight into
//! `processing_activities` over `--writers` connections, with no engine involved.
//!
//! This is the upper bound the engine is compared with: what PostgreSQL on this machine
//! accepts when nothing parses JSON, stages, throttles or commits in chunks. Each tenant's rows
//! are one `COPY` statement (one transaction) on whichever connection is free; the `COPY`
//! streams are encoded before the clock starts, just as the engine's request bodies are
//! serialised before its clock starts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;

use super::{generate_in_parallel, now_unix_micros, progress_bar, Context};
use crate::cli::BaselineOptions;
use crate::copy_encoding::encode_scan;
use crate::data::generate_records;
use crate::database::{self, Verification};
use crate::psql_copy;
use crate::report::{
    common_summary_lines, number_en, number_vi, BaselineReport, DataReport, ScenarioReport,
    Settling, Throughput,
};
use crate::statistics::{round_to_thousandths, LatencyHistogram, Timeline};

/// Errors a baseline keeps verbatim.
const SAMPLE_ERRORS_KEPT: usize = 5;

/// One tenant's rows, ready to stream.
struct CopyJob {
    tenant_id: Uuid,
    stream: Bytes,
    records: usize,
}

/// What the writer connections share while the baseline runs.
#[derive(Default)]
struct CopyProgress {
    written_per_tenant: BTreeMap<Uuid, i64>,
    statements: u64,
    failed_statements: u64,
    sample_errors: Vec<String>,
    latency: LatencyHistogram,
}

pub async fn run(context: &Context, options: &BaselineOptions) -> ScenarioReport {
    let started_at = Utc::now();
    let baseline = measure(context, options.tenants, options.records, Before::Nothing).await;
    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    push_baseline_summary(&baseline, &mut summary_en, &mut summary_vi);
    let (english, vietnamese) = common_summary_lines(&baseline.verification, None);
    summary_en.extend(english);
    summary_vi.extend(vietnamese);
    let records = (options.tenants * options.records) as u64;
    ScenarioReport {
        scenario: "baseline",
        passed: passed(Some(&baseline)),
        started_at,
        finished_at: Utc::now(),
        command_line: context.command_line.clone(),
        settings: context.settings(options),
        engine_url: context.global.engine_url.clone(),
        database_url: database::redact_password(&context.database_url),
        data: DataReport {
            records,
            request_bodies: 0,
            body_bytes: 0,
            generation_seconds: baseline.encoding_seconds,
        },
        engine_throughput_opt: None,
        verification: baseline.verification.clone(),
        timeline: Vec::new(),
        baseline_opt: Some(baseline),
        engine_to_baseline_ratio_opt: None,
        endpoints: BTreeMap::new(),
        details: serde_json::Value::Null,
        memory_opt: None,
        memory_error_opt: None,
        notes: vec![
            "No engine involved: rows go straight into processing_activities by binary COPY."
                .to_string(),
        ],
        summary_en,
        summary_vi,
        success_latencies: Vec::new(),
        machine_opt: None,
    }
}

/// The engine's records/s as a fraction of the baseline's, when there is a baseline.
pub fn ratio(engine_records_per_second: f64, baseline_opt: Option<&BaselineReport>) -> Option<f64> {
    let baseline = baseline_opt?.throughput.records_per_second;
    (baseline > 0.0).then(|| round_to_thousandths(engine_records_per_second / baseline))
}

/// The baseline of a scenario whose engine part has just run (see [`measure`]), unless the
/// scenario skips it.
pub async fn after_engine_part(
    context: &Context,
    tenants: usize,
    records: usize,
    skip: bool,
) -> Option<BaselineReport> {
    if skip {
        return None;
    }
    Some(measure(context, tenants, records, Before::EnginePart).await)
}

/// What ran on the database just before a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    Nothing,
    /// An engine part: its rows' vacuum, its WAL's checkpoint and the dirty pages of its
    /// verification's reads are still in progress unless the database is settled first.
    EnginePart,
}

/// Loads `tenants` × `records` rows (the streams `0..tenants` of the run's seed, under fresh
/// tenant ids) and reports the rate and the verification of those tenants. After an engine
/// part, the database is first brought to rest (`database::settle`, untimed) unless
/// `--unsettled-baseline`, so the baseline does not pay for what the engine part left running.
async fn measure(
    context: &Context,
    tenants: usize,
    records: usize,
    before: Before,
) -> BaselineReport {
    let writers = context.global.writers.max(1);
    let seed = context.global.seed;
    let encoding_started = Instant::now();
    let created_at_unix_micros = now_unix_micros();
    let jobs: Vec<CopyJob> = tokio::task::spawn_blocking(move || {
        generate_in_parallel(tenants, |tenant_index| {
            let tenant_id = Uuid::new_v4();
            let rows = generate_records(seed, tenant_index as u64, records);
            let stream = encode_scan(tenant_id, Uuid::new_v4(), &rows, created_at_unix_micros);
            CopyJob {
                tenant_id,
                stream: Bytes::from(stream),
                records,
            }
        })
    })
    .await
    .expect("encoding does not panic");
    let encoding_seconds = round_to_thousandths(encoding_started.elapsed().as_secs_f64());
    let expected_rows: BTreeMap<Uuid, i64> = jobs
        .iter()
        .map(|job| (job.tenant_id, job.records as i64))
        .collect();
    let total_records = (tenants * records) as u64;
    let settling = settle_after(context, before).await;

    let mut connections = Vec::with_capacity(writers);
    let mut connect_error_opt = None;
    for _ in 0..writers {
        match database::connect(&context.database_url).await {
            Ok(client) => connections.push(client),
            Err(error) => {
                connect_error_opt = Some(error);
                break;
            }
        }
    }
    if let Some(error) = connect_error_opt {
        return failed_baseline(writers, encoding_seconds, settling, &expected_rows, error);
    }

    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<VecDeque<CopyJob>>()));
    let shared = Arc::new(Mutex::new(CopyProgress::default()));
    let progress = progress_bar(total_records, "plain COPY");
    let started = Instant::now();
    let timeline = Arc::new(Timeline::starting_at(started));
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|connection| {
            let (queue, shared, timeline, progress) = (
                queue.clone(),
                shared.clone(),
                timeline.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let job_opt = queue
                        .lock()
                        .expect("no code panics holding this lock")
                        .pop_front();
                    let Some(job) = job_opt else { break };
                    let statement_started = Instant::now();
                    let outcome = database::copy_rows(&connection, job.stream).await;
                    let latency = statement_started.elapsed();
                    let mut so_far = shared.lock().expect("no code panics holding this lock");
                    so_far.statements += 1;
                    match outcome {
                        Ok(rows) => {
                            so_far.latency.record(latency);
                            so_far.written_per_tenant.insert(job.tenant_id, rows as i64);
                            timeline.add(rows);
                            progress.inc(rows);
                        }
                        Err(error) => {
                            so_far.failed_statements += 1;
                            if so_far.sample_errors.len() < SAMPLE_ERRORS_KEPT {
                                so_far.sample_errors.push(error);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    // A writer task only loops over the queue and records outcomes: it ends when the queue is
    // empty, and a database error is recorded, not raised.
    futures_util::future::join_all(tasks).await;
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let outcome = std::mem::take(&mut *shared.lock().expect("no code panics holding this lock"));
    let records_written: i64 = outcome.written_per_tenant.values().sum();
    // Rows of a failed COPY were rolled back: the tenant must have none.
    let expected_after: BTreeMap<Uuid, i64> = expected_rows
        .keys()
        .map(|tenant_id| {
            let written = outcome
                .written_per_tenant
                .get(tenant_id)
                .copied()
                .unwrap_or(0);
            (*tenant_id, written)
        })
        .collect();
    let mut verification = database::verify(&context.database_url, &expected_after).await;
    if records_written as u64 != total_records {
        verification.passed = false;
    }
    let psql_copy_opt = if context.global.no_psql_copy {
        None
    } else {
        Some(
            psql_copy::measure(
                &context.global.psql,
                &context.database_url,
                seed,
                tenants,
                records,
                writers,
            )
            .await,
        )
    };
    BaselineReport {
        copy_format: "binary",
        connections: writers,
        copy_statements: outcome.statements,
        failed_copy_statements: outcome.failed_statements,
        sample_errors: outcome.sample_errors,
        throughput: Throughput {
            records: records_written as u64,
            seconds: round_to_thousandths(elapsed.as_secs_f64()),
            records_per_second: round_to_thousandths(
                records_written as f64 / elapsed.as_secs_f64().max(1e-9),
            ),
            measured: "from the first COPY statement to the last commit".to_string(),
        },
        copy_latency: outcome.latency.summary(),
        verification,
        timeline: timeline.points(),
        encoding_seconds,
        settled: settling,
        psql_copy_opt,
    }
}

/// Settles the database before a baseline that follows an engine part (see [`measure`]).
async fn settle_after(context: &Context, before: Before) -> Settling {
    if before == Before::Nothing {
        return Settling::NotAsked {
            reason: "nothing ran before it",
        };
    }
    if context.global.unsettled_baseline {
        return Settling::NotAsked {
            reason: "--unsettled-baseline",
        };
    }
    let started = Instant::now();
    match database::settle(&context.database_url).await {
        Ok(()) => Settling::Done {
            seconds: round_to_thousandths(started.elapsed().as_secs_f64()),
        },
        Err(error) => {
            eprintln!("note: the database was not settled before the baseline: {error}");
            Settling::Failed { error }
        }
    }
}

fn failed_baseline(
    writers: usize,
    encoding_seconds: f64,
    settling: Settling,
    expected_rows: &BTreeMap<Uuid, i64>,
    error: String,
) -> BaselineReport {
    BaselineReport {
        copy_format: "binary",
        connections: writers,
        copy_statements: 0,
        failed_copy_statements: 0,
        sample_errors: vec![error.clone()],
        throughput: Throughput {
            records: 0,
            seconds: 0.0,
            records_per_second: 0.0,
            measured: "not measured: no database connection".to_string(),
        },
        copy_latency: LatencyHistogram::new().summary(),
        verification: Verification::not_passed(expected_rows, Some(error)),
        timeline: Vec::new(),
        encoding_seconds,
        settled: settling,
        psql_copy_opt: None,
    }
}

/// Whether a scenario's baseline, if it ran one, loaded and verified every row; a scenario
/// without a baseline is not failed by its absence.
pub fn passed(baseline_opt: Option<&BaselineReport>) -> bool {
    baseline_opt.map_or(true, |baseline| {
        baseline.verification.passed
            && baseline.failed_copy_statements == 0
            && baseline
                .psql_copy_opt
                .as_ref()
                .map_or(true, |psql_copy| psql_copy.verification.passed)
    })
}

/// The baseline's lines of a summary.
pub fn push_baseline_summary(
    baseline: &BaselineReport,
    english: &mut Vec<String>,
    vietnamese: &mut Vec<String>,
) {
    english.push(format!(
        "Plain binary COPY ({} connections): {} records in {} s = {} records/s (COPY of one tenant p50 {} ms, p99 {} ms); {} failed statements.",
        baseline.connections,
        number_en(baseline.throughput.records as f64, 0),
        number_en(baseline.throughput.seconds, 2),
        number_en(baseline.throughput.records_per_second, 0),
        number_en(baseline.copy_latency.p50_ms, 1),
        number_en(baseline.copy_latency.p99_ms, 1),
        baseline.failed_copy_statements,
    ));
    vietnamese.push(format!(
        "COPY nhị phân trực tiếp ({} kết nối): {} bản ghi trong {} giây = {} bản ghi/giây (COPY của một tổ chức p50 {} ms, p99 {} ms); {} câu lệnh lỗi.",
        baseline.connections,
        number_vi(baseline.throughput.records as f64, 0),
        number_vi(baseline.throughput.seconds, 2),
        number_vi(baseline.throughput.records_per_second, 0),
        number_vi(baseline.copy_latency.p50_ms, 1),
        number_vi(baseline.copy_latency.p99_ms, 1),
        baseline.failed_copy_statements,
    ));
    match &baseline.settled {
        Settling::NotAsked { .. } => {}
        Settling::Done { seconds } => {
            english.push(format!(
                "Before COPY's clock started, the database was brought to rest (VACUUM, CHECKPOINT; {} s, untimed).",
                number_en(*seconds, 1),
            ));
            vietnamese.push(format!(
                "Trước khi tính giờ COPY, cơ sở dữ liệu được đưa về trạng thái nghỉ (VACUUM, CHECKPOINT; {} giây, không tính giờ).",
                number_vi(*seconds, 1),
            ));
        }
        Settling::Failed { error } => {
            english.push(format!(
                "The database could not be brought to rest before COPY ({error}): the baseline also paid for what ran before it."
            ));
            vietnamese.push(format!(
                "Không đưa được cơ sở dữ liệu về trạng thái nghỉ trước COPY ({error}): phần đối chứng còn chịu cả những việc chạy trước nó."
            ));
        }
    }
    if let Some(psql_copy) = &baseline.psql_copy_opt {
        english.push(format!(
            "psql \\copy, text format ({} processes): {} records in {} s = {} records/s; verification {}{}.",
            psql_copy.processes,
            number_en(psql_copy.throughput.records as f64, 0),
            number_en(psql_copy.throughput.seconds, 2),
            number_en(psql_copy.throughput.records_per_second, 0),
            if psql_copy.verification.passed { "passed" } else { "FAILED" },
            psql_copy.errors.first().map(|error| format!(" ({error})")).unwrap_or_default(),
        ));
        vietnamese.push(format!(
            "psql \\copy, định dạng văn bản ({} tiến trình): {} bản ghi trong {} giây = {} bản ghi/giây; kiểm tra dữ liệu {}{}.",
            psql_copy.processes,
            number_vi(psql_copy.throughput.records as f64, 0),
            number_vi(psql_copy.throughput.seconds, 2),
            number_vi(psql_copy.throughput.records_per_second, 0),
            if psql_copy.verification.passed { "đạt" } else { "KHÔNG ĐẠT" },
            psql_copy.errors.first().map(|error| format!(" ({error})")).unwrap_or_default(),
        ));
    }
    if !baseline.verification.passed {
        english.push(format!(
            "Baseline verification FAILED: {:?}",
            baseline.verification.error_opt
        ));
        vietnamese.push(format!(
            "Kiểm tra dữ liệu COPY trực tiếp KHÔNG ĐẠT: {:?}",
            baseline.verification.error_opt
        ));
    }
}
