//! `batch`: C concurrent clients each post their batches of B records one after another to
//! `POST /batch/processing-activities`, which answers 201 only once the records are committed.
//!
//! Every batch is posted for its own fresh tenant. Batch rows have no scan id, so within one
//! tenant two batches both have a record 0, 1, 2...: only with one batch per tenant does
//! `(tenant_id, scan_id, record_index)` identify a record and the duplicate check prove
//! something. The clients are the concurrency; the tenants only label the rows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::{
    finish_insert_sampler, finish_memory, generate_in_parallel, progress_bar, start_insert_sampler,
    Context, TIMELINE_NOTE,
};
use crate::cli::BatchOptions;
use crate::data::{batch_body, generate_records};
use crate::database;
use crate::engine_client::{with_retries, BatchCreated, SUBMIT_BATCH};
use crate::report::{
    common_summary_lines, number_en, number_vi, DataReport, ScenarioReport, Throughput,
};
use crate::statistics::round_to_thousandths;

/// Where the data streams of this scenario start, so its records differ from the scans'.
const BATCH_STREAM_OFFSET: u64 = 1_000_000;

#[derive(Debug, Default, Serialize)]
struct BatchDetails {
    batches_sent: usize,
    batches_created: usize,
    /// Records the 201 answers report as created.
    records_created: i64,
    /// Records the 201 answers report as failed (all generated records are valid: should be 0).
    records_failed: i64,
    /// Batches answered 429 or 503 at first and sent again after the Retry-After.
    retried_batches: usize,
    /// 201 answers whose `records_created` differs from the batch's size.
    short_batches: usize,
    /// From the first request to the last answer.
    wall_seconds: f64,
}

pub async fn run(context: &Context, options: &BatchOptions) -> ScenarioReport {
    let seed = context.global.seed;
    let batch_size = options.batch_size;
    let batch_count = options.clients * options.batches_per_client;
    let generation_started = Instant::now();
    let batches: Vec<(Uuid, Bytes)> = tokio::task::spawn_blocking(move || {
        generate_in_parallel(batch_count, |batch_index| {
            let records =
                generate_records(seed, BATCH_STREAM_OFFSET + batch_index as u64, batch_size);
            (Uuid::new_v4(), batch_body(&records))
        })
    })
    .await
    .expect("generation does not panic");
    let data = DataReport {
        records: (batch_count * batch_size) as u64,
        request_bodies: batch_count as u64,
        body_bytes: batches.iter().map(|(_, body)| body.len() as u64).sum(),
        generation_seconds: round_to_thousandths(generation_started.elapsed().as_secs_f64()),
    };

    // Client c posts batches c, c + C, c + 2C...: every client has its own list.
    let mut per_client: Vec<Vec<(Uuid, Bytes)>> = vec![Vec::new(); options.clients];
    for (batch_index, batch) in batches.into_iter().enumerate() {
        per_client[batch_index % options.clients].push(batch);
    }

    let progress = progress_bar(data.records, "engine batches");
    let memory_sampler_opt = context.start_memory_sampler();
    let insert_sampler = start_insert_sampler(context).await;
    let started_at = Utc::now();
    let started = Instant::now();
    let expected_rows = Arc::new(Mutex::new(BTreeMap::<Uuid, i64>::new()));
    let details = Arc::new(Mutex::new(BatchDetails::default()));
    let max_attempts = context.global.max_attempts;
    let tasks: Vec<_> = per_client
        .into_iter()
        .map(|client_batches| {
            let (client, progress) = (context.client.clone(), progress.clone());
            let (expected_rows, details) = (expected_rows.clone(), details.clone());
            tokio::spawn(async move {
                for (tenant_id, body) in client_batches {
                    let (outcome, attempts) = with_retries(max_attempts, || {
                        client.submit_batch(tenant_id, body.clone())
                    })
                    .await;
                    let created_opt = match outcome {
                        Ok(exchange) if exchange.status == 201 => {
                            serde_json::from_slice::<BatchCreated>(&exchange.body).ok()
                        }
                        _ => None,
                    };
                    let mut totals = details.lock().expect("no code panics holding this lock");
                    totals.batches_sent += 1;
                    totals.retried_batches += usize::from(attempts > 1);
                    // A refused batch wrote nothing (SPEC: 201 only once committed; 429 and 503
                    // say nothing was written), so its tenant must have no row.
                    let created = created_opt
                        .as_ref()
                        .map_or(0, |created| created.records_created);
                    if let Some(answer) = &created_opt {
                        totals.batches_created += 1;
                        totals.records_created += answer.records_created;
                        totals.records_failed += answer.records_failed;
                        if answer.records_created != batch_size as i64 {
                            totals.short_batches += 1;
                        }
                        progress.inc(answer.records_created.max(0) as u64);
                    }
                    expected_rows
                        .lock()
                        .expect("no code panics holding this lock")
                        .insert(tenant_id, created);
                }
            })
        })
        .collect();
    futures_util::future::join_all(tasks).await;
    let wall_seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let (memory_opt, memory_error_opt) = finish_memory(context, memory_sampler_opt).await;

    let expected_rows = std::mem::take(
        &mut *expected_rows
            .lock()
            .expect("no code panics holding this lock"),
    );
    let mut notes = vec![
        "Each batch is posted for its own fresh tenant, so (tenant_id, NULL scan_id, record_index) identifies a record and the duplicate check is meaningful.".to_string(),
        TIMELINE_NOTE.to_string(),
    ];
    let timeline =
        finish_insert_sampler(insert_sampler, expected_rows.values().sum(), &mut notes).await;
    let verification = database::verify(&context.database_url, &expected_rows).await;
    let mut details =
        std::mem::take(&mut *details.lock().expect("no code panics holding this lock"));
    details.wall_seconds = round_to_thousandths(wall_seconds);
    let engine_throughput = Throughput {
        records: details.records_created.max(0) as u64,
        seconds: details.wall_seconds,
        records_per_second: round_to_thousandths(
            details.records_created as f64 / wall_seconds.max(1e-9),
        ),
        measured: "records created (201) from the first request to the last answer".to_string(),
    };
    let endpoints = context.client.recorder.reports();

    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    summary_en.push(format!(
        "{} clients × {} batches of {} records: {} of {} batches created; {} records in {} s = {} records/s.",
        options.clients,
        options.batches_per_client,
        number_en(batch_size as f64, 0),
        details.batches_created,
        details.batches_sent,
        number_en(details.records_created as f64, 0),
        number_en(details.wall_seconds, 2),
        number_en(engine_throughput.records_per_second, 0),
    ));
    summary_vi.push(format!(
        "{} máy khách × {} lô {} bản ghi: {}/{} lô được tạo; {} bản ghi trong {} giây = {} bản ghi/giây.",
        options.clients,
        options.batches_per_client,
        number_vi(batch_size as f64, 0),
        details.batches_created,
        details.batches_sent,
        number_vi(details.records_created as f64, 0),
        number_vi(details.wall_seconds, 2),
        number_vi(engine_throughput.records_per_second, 0),
    ));
    if let Some(submit) = endpoints.get(SUBMIT_BATCH) {
        let latency = &submit.latency_success;
        summary_en.push(format!(
            "POST /batch/processing-activities latency (201): p50 {} ms, p95 {} ms, p99 {} ms, max {} ms; statuses {:?}.",
            number_en(latency.p50_ms, 1),
            number_en(latency.p95_ms, 1),
            number_en(latency.p99_ms, 1),
            number_en(latency.max_ms, 1),
            submit.statuses,
        ));
        summary_vi.push(format!(
            "Độ trễ POST /batch/processing-activities (201): p50 {} ms, p95 {} ms, p99 {} ms, tối đa {} ms; mã trạng thái {:?}.",
            number_vi(latency.p50_ms, 1),
            number_vi(latency.p95_ms, 1),
            number_vi(latency.p99_ms, 1),
            number_vi(latency.max_ms, 1),
            submit.statuses,
        ));
    }
    let (english, vietnamese) = common_summary_lines(&verification, memory_opt.as_ref());
    summary_en.extend(english);
    summary_vi.extend(vietnamese);

    ScenarioReport {
        scenario: "batch",
        passed: verification.passed
            && details.batches_created == details.batches_sent
            && details.short_batches == 0,
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
