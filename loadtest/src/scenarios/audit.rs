//! `audit`: the audit log at size. Loads R entries (default 12 million) spread over the last M
//! months (default 24) and T tenants straight into `audit_log` by `COPY` (creating the months'
//! partitions as the engine does), then reads one tenant's last 30 days through
//! `GET /admin/audit` (the first page N times, then every page by cursor), then runs
//! `ingest-engine audit maintain` with `audit.retain_months` = K (default 12) and times the
//! archive of every older month: rows/s, Parquet bytes against the partitions' size in
//! PostgreSQL.
//!
//! Verification: the entries found for the tenant's 30 days through the API equal a
//! `count(*)` of the table; after the archive, the catalogue holds every row of the archived
//! months and their partitions are gone.
//!
//! Run the engine with `INGEST__AUDIT__RETAIN_MONTHS=1200` so its own maintenance pass does
//! not archive the loaded months before the scenario times it.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use futures_util::SinkExt;
use serde::Serialize;
use uuid::Uuid;

use super::{finish_memory, Context};
use crate::cli::AuditOptions;
use crate::database::{self, Verification};
use crate::report::{common_summary_lines, number_en, number_vi, DataReport, ScenarioReport};
use crate::statistics::round_to_thousandths;

/// Connections loading at once.
const LOADERS: usize = 4;
/// Entries per COPY statement.
const ROWS_PER_COPY: usize = 200_000;

#[derive(Debug, Default, Serialize)]
struct AuditDetails {
    entries_loaded: u64,
    months: u32,
    tenants: usize,
    load_seconds: f64,
    load_rows_per_second: f64,
    /// The tenant read, its entries in the last 30 days (by `count(*)`).
    tenant_entries_30_days: i64,
    first_page_reads: usize,
    first_page_p50_ms: f64,
    first_page_p95_ms: f64,
    first_page_max_ms: f64,
    /// Every page of the 30 days, by cursor, 100 entries a page.
    full_read_pages: usize,
    full_read_entries: i64,
    full_read_seconds: f64,
    archive_ran: bool,
    archive_months: i64,
    archive_rows: i64,
    archive_seconds: f64,
    archive_rows_per_second: f64,
    /// `pg_total_relation_size` of the archived partitions (table, indexes, TOAST) before.
    partitions_bytes: i64,
    parquet_bytes: i64,
    parquet_to_partition_ratio: f64,
    archive_output: String,
}

pub async fn run(context: &Context, options: &AuditOptions) -> ScenarioReport {
    let started_at = Utc::now();
    let mut notes = Vec::new();
    let mut details = AuditDetails {
        months: options.months,
        tenants: options.tenants,
        ..AuditDetails::default()
    };
    let sampler_opt = context.start_memory_sampler();
    let outcome = drive(context, options, &mut details, &mut notes).await;
    let (memory_opt, memory_error_opt) = finish_memory(context, sampler_opt).await;
    let mut verification = Verification::not_passed(&BTreeMap::new(), None);
    match outcome {
        Ok(found_equal) => {
            verification.passed = found_equal;
            verification.rows_expected = details.tenant_entries_30_days + details.archive_rows;
            verification.rows_found = details.full_read_entries + details.archive_rows;
        }
        Err(error) => verification.error_opt = Some(error),
    }

    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    summary_en.push(format!(
        "{} audit entries over {} months and {} tenants loaded by COPY in {} s ({} rows/s).",
        number_en(details.entries_loaded as f64, 0),
        details.months,
        details.tenants,
        number_en(details.load_seconds, 1),
        number_en(details.load_rows_per_second, 0),
    ));
    summary_vi.push(format!(
        "Đã nạp {} mục nhật ký kiểm toán trong {} tháng, {} tổ chức bằng COPY trong {} giây ({} dòng/giây).",
        number_vi(details.entries_loaded as f64, 0),
        details.months,
        details.tenants,
        number_vi(details.load_seconds, 1),
        number_vi(details.load_rows_per_second, 0),
    ));
    summary_en.push(format!(
        "GET /admin/audit, one tenant's last 30 days ({} entries), first page: p50 {} ms, p95 {} ms, max {} ms over {} reads; all {} pages in {} s.",
        details.tenant_entries_30_days,
        number_en(details.first_page_p50_ms, 2),
        number_en(details.first_page_p95_ms, 2),
        number_en(details.first_page_max_ms, 2),
        details.first_page_reads,
        details.full_read_pages,
        number_en(details.full_read_seconds, 2),
    ));
    summary_vi.push(format!(
        "GET /admin/audit, 30 ngày gần nhất của một tổ chức ({} mục), trang đầu: p50 {} ms, p95 {} ms, tối đa {} ms qua {} lần đọc; cả {} trang trong {} giây.",
        details.tenant_entries_30_days,
        number_vi(details.first_page_p50_ms, 2),
        number_vi(details.first_page_p95_ms, 2),
        number_vi(details.first_page_max_ms, 2),
        details.first_page_reads,
        details.full_read_pages,
        number_vi(details.full_read_seconds, 2),
    ));
    if details.archive_ran {
        summary_en.push(format!(
            "Archive: {} months, {} rows in {} s = {} rows/s; Parquet {} MB against {} MB in PostgreSQL ({}×).",
            details.archive_months,
            number_en(details.archive_rows as f64, 0),
            number_en(details.archive_seconds, 1),
            number_en(details.archive_rows_per_second, 0),
            number_en(details.parquet_bytes as f64 / 1e6, 1),
            number_en(details.partitions_bytes as f64 / 1e6, 1),
            number_en(details.parquet_to_partition_ratio, 3),
        ));
        summary_vi.push(format!(
            "Lưu trữ: {} tháng, {} dòng trong {} giây = {} dòng/giây; Parquet {} MB so với {} MB trong PostgreSQL ({}×).",
            details.archive_months,
            number_vi(details.archive_rows as f64, 0),
            number_vi(details.archive_seconds, 1),
            number_vi(details.archive_rows_per_second, 0),
            number_vi(details.parquet_bytes as f64 / 1e6, 1),
            number_vi(details.partitions_bytes as f64 / 1e6, 1),
            number_vi(details.parquet_to_partition_ratio, 3),
        ));
    }
    let (english, vietnamese) = common_summary_lines(&verification, memory_opt.as_ref());
    summary_en.extend(english);
    summary_vi.extend(vietnamese);

    ScenarioReport {
        scenario: "audit",
        passed: verification.passed,
        started_at,
        finished_at: Utc::now(),
        command_line: context.command_line.clone(),
        settings: context.settings(options),
        engine_url: context.global.engine_url.clone(),
        database_url: database::redact_password(&context.database_url),
        data: DataReport {
            records: details.entries_loaded,
            request_bodies: 0,
            body_bytes: 0,
            generation_seconds: 0.0,
        },
        engine_throughput_opt: None,
        baseline_opt: None,
        engine_to_baseline_ratio_opt: None,
        endpoints: context.client.recorder.reports(),
        details: serde_json::to_value(&details).unwrap_or_default(),
        memory_opt,
        memory_error_opt,
        verification,
        timeline: Vec::new(),
        notes,
        summary_en,
        summary_vi,
        success_latencies: context.client.recorder.success_histograms(),
        machine_opt: None,
    }
}

/// The tenant ids of the load: fixed by the seed, so a rerun reads the same tenant.
fn tenant_id(seed: u64, index: usize) -> Uuid {
    Uuid::from_u128(((seed as u128) << 64) | (index as u128 + 1))
}

/// Loads, reads, archives; returns whether the API's entries equal the table's count.
async fn drive(
    context: &Context,
    options: &AuditOptions,
    details: &mut AuditDetails,
    notes: &mut Vec<String>,
) -> Result<bool, String> {
    let client = database::connect(&context.database_url).await?;
    client
        .execute(
            "SELECT ingest_audit_month_partition((date_trunc('month', now() AT TIME ZONE $1) \
                 - make_interval(months => back))::date, $1) \
             FROM generate_series(0, $2) AS back",
            &[&options.time_zone, &(options.months as i32)],
        )
        .await
        .map_err(|error| format!("creating the months' partitions: {error}"))?;

    // Load: each loader COPYs its share of the rows, spread evenly over the window.
    let now = Utc::now();
    let window = ChronoDuration::days(30 * options.months as i64 - 1);
    let start = now - window;
    let load_started = Instant::now();
    let mut loaders = Vec::new();
    for loader in 0..LOADERS {
        let database_url = context.database_url.clone();
        let (rows, tenants, seed) = (options.rows, options.tenants, context.global.seed);
        loaders.push(tokio::spawn(async move {
            let client = database::connect(&database_url).await?;
            let mut loaded = 0u64;
            let mut index = loader;
            while index < rows {
                let mut text = String::with_capacity(ROWS_PER_COPY * 300);
                let mut in_this_copy = 0;
                while index < rows && in_this_copy < ROWS_PER_COPY {
                    let micros = start.timestamp_micros()
                        + (window.num_microseconds().unwrap_or(0) as f64 * index as f64
                            / rows as f64) as i64;
                    let time = chrono::DateTime::from_timestamp_micros(micros).unwrap_or(now);
                    let tenant = tenant_id(seed, index % tenants);
                    let event_id = Uuid::from_u128(((micros as u128) << 64) | index as u128);
                    text.push_str(&format!(
                        "{tenant}\t{}\t{event_id}\tbootstrap\tlimits_changed\t{tenant}\t{{\"after\": {{\"burst\": {index}}}}}\ttenant limits changed\tđã thay đổi giới hạn của tổ chức\n",
                        time.to_rfc3339_opts(SecondsFormat::Micros, true)
                    ));
                    index += LOADERS;
                    in_this_copy += 1;
                }
                let sink = client
                    .copy_in::<_, Bytes>(
                        "COPY audit_log (tenant_id, occurred_at, event_id, actor, action, subject, details, summary, summary_vi) FROM STDIN",
                    )
                    .await
                    .map_err(|error| format!("starting COPY: {error}"))?;
                let mut sink = std::pin::pin!(sink);
                sink.send(Bytes::from(text))
                    .await
                    .map_err(|error| format!("sending COPY data: {error}"))?;
                loaded += sink
                    .as_mut()
                    .finish()
                    .await
                    .map_err(|error| format!("finishing COPY: {error}"))?;
            }
            Ok::<u64, String>(loaded)
        }));
    }
    for loader in loaders {
        details.entries_loaded += loader.await.map_err(|error| error.to_string())??;
    }
    details.load_seconds = round_to_thousandths(load_started.elapsed().as_secs_f64());
    details.load_rows_per_second =
        round_to_thousandths(details.entries_loaded as f64 / details.load_seconds.max(1e-9));
    client
        .batch_execute("ANALYZE audit_log")
        .await
        .map_err(|error| format!("ANALYZE: {error}"))?;

    // Read: the first tenant's last 30 days.
    let tenant = tenant_id(context.global.seed, 0);
    let from = now - ChronoDuration::days(30);
    let from_text = from.to_rfc3339_opts(SecondsFormat::Secs, true);
    details.tenant_entries_30_days = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND occurred_at >= $2::text::timestamptz",
            &[&tenant, &from_text],
        )
        .await
        .map_err(|error| format!("counting the tenant's entries: {error}"))?
        .get(0);
    let mut latencies = Vec::with_capacity(options.reads);
    for _ in 0..options.reads {
        let started = Instant::now();
        let exchange = context.client.audit_page(tenant, &from_text, None).await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        if exchange.status != 200 {
            return Err(format!("GET /admin/audit answered {}", exchange.status));
        }
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |share: f64| {
        latencies
            .get(((latencies.len() as f64 * share).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    details.first_page_reads = latencies.len();
    details.first_page_p50_ms = round_to_thousandths(percentile(0.50));
    details.first_page_p95_ms = round_to_thousandths(percentile(0.95));
    details.first_page_max_ms = round_to_thousandths(percentile(1.0));
    let full_started = Instant::now();
    let mut cursor_opt: Option<String> = None;
    loop {
        let exchange = context
            .client
            .audit_page(tenant, &from_text, cursor_opt.as_deref())
            .await?;
        let page: serde_json::Value = serde_json::from_slice(&exchange.body)
            .map_err(|error| format!("an audit page is not JSON: {error}"))?;
        details.full_read_pages += 1;
        details.full_read_entries += page["count"].as_i64().unwrap_or(0);
        match page["next_cursor"].as_str() {
            Some(cursor) => cursor_opt = Some(cursor.to_string()),
            None => break,
        }
    }
    details.full_read_seconds = round_to_thousandths(full_started.elapsed().as_secs_f64());
    let read_equal = details.full_read_entries == details.tenant_entries_30_days;
    if !read_equal {
        notes.push(format!(
            "the API listed {} entries for the tenant's 30 days; the table holds {}",
            details.full_read_entries, details.tenant_entries_30_days
        ));
    }

    if options.skip_archive {
        return Ok(read_equal);
    }
    // Archive: every month older than retain_months, by the operator command, timed.
    let sizes = client
        .query_one(
            "SELECT count(*) AS months, coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint AS bytes \
             FROM pg_inherits WHERE inhparent = 'audit_log'::regclass \
               AND to_date(substr(inhrelid::regclass::text, 12, 4) || substr(inhrelid::regclass::text, 17, 2) || '01', 'YYYYMMDD') \
                   < (date_trunc('month', now() AT TIME ZONE $1) - make_interval(months => $2))::date",
            &[&options.time_zone, &(options.retain_months as i32)],
        )
        .await
        .map_err(|error| format!("measuring the partitions: {error}"))?;
    details.partitions_bytes = sizes.get("bytes");
    let rows_to_archive: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE occurred_at < \
                 ((date_trunc('month', now() AT TIME ZONE $1) - make_interval(months => $2)) AT TIME ZONE $1)",
            &[&options.time_zone, &(options.retain_months as i32)],
        )
        .await
        .map_err(|error| format!("counting the rows to archive: {error}"))?
        .get(0);
    // What this run catalogues (a month archived again replaces its entry): by the
    // database's clock.
    let archive_clock: String = client
        .query_one("SELECT now()::text", &[])
        .await
        .map_err(|error| error.to_string())?
        .get(0);
    let archive_started = Instant::now();
    let output = tokio::process::Command::new(&options.engine_binary)
        .args(["audit", "maintain"])
        .env("DATABASE_URL", &context.database_url)
        .env(
            "INGEST__AUDIT__RETAIN_MONTHS",
            options.retain_months.to_string(),
        )
        .env("INGEST__AUDIT__TIMEZONE", &options.time_zone)
        .env("INGEST__AUDIT__ARCHIVE_DIR", &options.archive_dir)
        .output()
        .await
        .map_err(|error| format!("running {}: {error}", options.engine_binary.display()))?;
    details.archive_seconds = round_to_thousandths(archive_started.elapsed().as_secs_f64());
    details.archive_output = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "audit maintain failed: {}{}",
            details.archive_output,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    details.archive_ran = true;
    let catalogue = client
        .query_one(
            "SELECT count(*) AS months, coalesce(sum(rows), 0)::bigint AS rows, coalesce(sum(bytes), 0)::bigint AS bytes \
             FROM audit_archives WHERE archived_at >= $1::text::timestamptz",
            &[&archive_clock],
        )
        .await
        .map_err(|error| error.to_string())?;
    details.archive_months = catalogue.get("months");
    details.archive_rows = catalogue.get("rows");
    details.parquet_bytes = catalogue.get("bytes");
    details.archive_rows_per_second =
        round_to_thousandths(details.archive_rows as f64 / details.archive_seconds.max(1e-9));
    details.parquet_to_partition_ratio = round_to_thousandths(
        details.parquet_bytes as f64 / (details.partitions_bytes as f64).max(1.0),
    );
    let left: i64 = sizes.get("months");
    let remaining_old: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_log'::regclass \
               AND to_date(substr(inhrelid::regclass::text, 12, 4) || substr(inhrelid::regclass::text, 17, 2) || '01', 'YYYYMMDD') \
                   < (date_trunc('month', now() AT TIME ZONE $1) - make_interval(months => $2))::date",
            &[&options.time_zone, &(options.retain_months as i32)],
        )
        .await
        .map_err(|error| error.to_string())?
        .get(0);
    if remaining_old != 0
        || details.archive_months != left
        || details.archive_rows != rows_to_archive
    {
        notes.push(format!(
            "{left} months ({rows_to_archive} rows) were old enough to archive; {} months ({} rows) were archived, {remaining_old} partitions remain",
            details.archive_months, details.archive_rows
        ));
        return Ok(false);
    }
    Ok(read_equal)
}
