//! `rls`: what row-level security costs the dashboard's reads, per tenant size.
//!
//! Loads about 10 million activities (by default one tenant of 1,000,000 rows, one of 100,000,
//! one of 1,000, and 8,899 tenants of 1,000) server-side, with their `activity_counts` and 200
//! scans for each measured tenant. Then, for each measured tenant and each dashboard statement
//! (the engine's own: `ingest_engine::store::{reads, queries}`), it runs the statement as the
//! reader role with the tenant set for the transaction (row-level security on), and the same
//! statement as the tables' owner (no policy applies; the statement's own `tenant_id = $1`
//! does the filtering), alternating the two, `--rounds` times each, on two connections with the
//! same settings as the engine's read pool (`jit = off`). Only the statement is timed. Where
//! the p50 overhead exceeds 10 %, the report holds `EXPLAIN ANALYZE` of both.

use std::time::Instant;

use chrono::Utc;
use serde::Serialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;
use uuid::Uuid;

use super::{finish_memory, Context};
use crate::cli::RlsOptions;
use crate::database::{self, Verification};
use crate::report::{common_summary_lines, number_en, number_vi, DataReport, ScenarioReport};
use crate::statistics::round_to_thousandths;
use ingest_engine::store::{queries, reads};

/// A statement's parameters with the types the engine binds them with.
type TypedParameters<'a> = Vec<(&'a (dyn ToSql + Sync), Type)>;

/// Loads run on this many connections at once.
const LOADERS: usize = 4;

#[derive(Debug, Serialize)]
struct ReadComparison {
    tenant_rows: i64,
    read: String,
    rls_p50_ms: f64,
    rls_p95_ms: f64,
    owner_p50_ms: f64,
    owner_p95_ms: f64,
    overhead_p50_percent: f64,
    overhead_p95_percent: f64,
    /// `EXPLAIN ANALYZE` of both, when the p50 overhead exceeds 10 %.
    #[serde(skip_serializing_if = "Option::is_none")]
    explain_rls: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explain_owner: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct RlsDetails {
    rows_loaded: i64,
    load_seconds: f64,
    rounds: usize,
    comparisons: Vec<ReadComparison>,
}

pub async fn run(context: &Context, options: &RlsOptions) -> ScenarioReport {
    let started_at = Utc::now();
    let mut details = RlsDetails {
        rounds: options.rounds,
        ..RlsDetails::default()
    };
    let mut notes = Vec::new();
    let sampler_opt = context.start_memory_sampler();
    let outcome = drive(context, options, &mut details).await;
    let (memory_opt, memory_error_opt) = finish_memory(context, sampler_opt).await;
    let mut verification = Verification::not_passed(&Default::default(), None);
    match outcome {
        Ok(()) => {
            verification.passed = true;
            verification.rows_expected = details.rows_loaded;
            verification.rows_found = details.rows_loaded;
        }
        Err(error) => verification.error_opt = Some(error),
    }
    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    summary_en.push(format!(
        "{} activities loaded in {} s; each read {} times with and without row-level security, interleaved.",
        number_en(details.rows_loaded as f64, 0),
        number_en(details.load_seconds, 1),
        details.rounds
    ));
    summary_vi.push(format!(
        "Đã nạp {} hoạt động trong {} giây; mỗi truy vấn đọc {} lần có và không có bảo mật theo dòng, xen kẽ.",
        number_vi(details.rows_loaded as f64, 0),
        number_vi(details.load_seconds, 1),
        details.rounds
    ));
    for comparison in &details.comparisons {
        summary_en.push(format!(
            "{} rows, {}: p50 {} ms with RLS, {} ms without ({:+} %); p95 {} / {} ms ({:+} %).",
            number_en(comparison.tenant_rows as f64, 0),
            comparison.read,
            number_en(comparison.rls_p50_ms, 3),
            number_en(comparison.owner_p50_ms, 3),
            comparison.overhead_p50_percent,
            number_en(comparison.rls_p95_ms, 3),
            number_en(comparison.owner_p95_ms, 3),
            comparison.overhead_p95_percent,
        ));
        summary_vi.push(format!(
            "{} dòng, {}: p50 {} ms có RLS, {} ms không có ({:+} %); p95 {} / {} ms ({:+} %).",
            number_vi(comparison.tenant_rows as f64, 0),
            comparison.read,
            number_vi(comparison.rls_p50_ms, 3),
            number_vi(comparison.owner_p50_ms, 3),
            comparison.overhead_p50_percent,
            number_vi(comparison.rls_p95_ms, 3),
            number_vi(comparison.owner_p95_ms, 3),
            comparison.overhead_p95_percent,
        ));
        if comparison.explain_rls.is_some() {
            notes.push(format!(
                "{} rows, {}: overhead above 10 %; EXPLAIN ANALYZE of both is in details",
                comparison.tenant_rows, comparison.read
            ));
        }
    }
    let (english, vietnamese) = common_summary_lines(&verification, memory_opt.as_ref());
    summary_en.extend(english);
    summary_vi.extend(vietnamese);
    ScenarioReport {
        scenario: "rls",
        passed: verification.passed,
        started_at,
        finished_at: Utc::now(),
        command_line: context.command_line.clone(),
        settings: context.settings(options),
        engine_url: context.global.engine_url.clone(),
        database_url: database::redact_password(&context.database_url),
        data: DataReport {
            records: details.rows_loaded as u64,
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
        success_latencies: Vec::new(),
        machine_opt: None,
    }
}

/// Inserts `rows` activities of `tenant` server-side, records `first..first + rows`.
async fn insert_activities(
    client: &Client,
    tenant: Uuid,
    first: i64,
    rows: i64,
) -> Result<(), String> {
    client
        .execute(
            "INSERT INTO processing_activities (id, tenant_id, record_index, activity_name, pdpl_category, \
                 data_fields, purpose, legal_basis, created_at) \
             SELECT gen_random_uuid(), $1, i, 'Quản lý hồ sơ nhân sự ' || i, \
                 (ARRAY['Category 1: Sensitive Personal Data', 'Category 2: Basic Personal Data', \
                        'Category 3: Public Data'])[1 + i % 3], \
                 ARRAY['họ và tên', 'số CCCD', 'địa chỉ email'], 'Tính lương và bảo hiểm xã hội', \
                 'Hợp đồng lao động', now() \
             FROM generate_series($2::bigint, $2::bigint + $3::bigint - 1) AS i",
            &[&tenant, &first, &rows],
        )
        .await
        .map_err(|error| format!("loading activities: {error}"))?;
    Ok(())
}

async fn drive(
    context: &Context,
    options: &RlsOptions,
    details: &mut RlsDetails,
) -> Result<(), String> {
    let owner = database::connect(&context.database_url).await?;
    let measured: Vec<(Uuid, i64)> = options
        .measured_sizes
        .iter()
        .map(|size| (Uuid::new_v4(), *size as i64))
        .collect();
    // Every tenant row first (the activities reference nothing, but scans and counts do).
    let fillers: Vec<Uuid> = (0..options.filler_tenants)
        .map(|_| Uuid::new_v4())
        .collect();
    let every_tenant: Vec<Uuid> = measured
        .iter()
        .map(|(tenant, _)| *tenant)
        .chain(fillers.iter().copied())
        .collect();
    owner
        .execute(
            "INSERT INTO tenants (tenant_id, name, records_per_second, burst, max_backlog_records) \
             SELECT t, 'Tổ chức thử tải', 100000, 100000, 5000000 FROM unnest($1::uuid[]) AS t",
            &[&every_tenant],
        )
        .await
        .map_err(|error| format!("creating tenants: {error}"))?;

    // Load: slices of the measured tenants and every filler, spread over the loaders.
    let mut jobs: Vec<(Uuid, i64, i64)> = Vec::new();
    for (tenant, size) in &measured {
        let slice = (size / LOADERS as i64).max(1);
        let mut first = 0;
        while first < *size {
            jobs.push((*tenant, first, slice.min(size - first)));
            first += slice;
        }
    }
    for tenant in &fillers {
        jobs.push((*tenant, 0, options.filler_rows as i64));
    }
    let load_started = Instant::now();
    let shared = std::sync::Arc::new(std::sync::Mutex::new(jobs));
    let mut loaders = Vec::new();
    for _ in 0..LOADERS {
        let (shared, database_url) = (shared.clone(), context.database_url.clone());
        loaders.push(tokio::spawn(async move {
            let client = database::connect(&database_url).await?;
            let mut loaded = 0i64;
            loop {
                let job_opt = shared
                    .lock()
                    .map_err(|_| "a loader panicked".to_string())?
                    .pop();
                let Some((tenant, first, rows)) = job_opt else {
                    return Ok::<i64, String>(loaded);
                };
                insert_activities(&client, tenant, first, rows).await?;
                loaded += rows;
            }
        }));
    }
    for loader in loaders {
        details.rows_loaded += loader.await.map_err(|error| error.to_string())??;
    }
    owner
        .batch_execute(&format!(
            "INSERT INTO activity_counts (tenant_id, pdpl_category, activities) \
             SELECT tenant_id, pdpl_category, count(*) FROM processing_activities \
             WHERE tenant_id = ANY('{{{}}}'::uuid[]) GROUP BY 1, 2 \
             ON CONFLICT (tenant_id, pdpl_category) DO UPDATE SET activities = excluded.activities; \
             ANALYZE processing_activities; ANALYZE activity_counts;",
            every_tenant.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",")
        ))
        .await
        .map_err(|error| format!("counting activities: {error}"))?;
    for (tenant, _) in &measured {
        owner
            .execute(
                "INSERT INTO scans (tenant_id, scan_id, status, priority, records_total, records_processed, created_at, completed_at) \
                 SELECT $1, gen_random_uuid(), 'completed', 2, 1000, 1000, now() - make_interval(mins => i), now() \
                 FROM generate_series(1, 200) AS i",
                &[tenant],
            )
            .await
            .map_err(|error| format!("creating scans: {error}"))?;
    }
    owner
        .batch_execute("ANALYZE scans")
        .await
        .map_err(|error| error.to_string())?;
    details.load_seconds = round_to_thousandths(load_started.elapsed().as_secs_f64());

    // The two connections, set up as the engine's read pool sets up its own.
    let reader = database::connect(&context.database_url).await?;
    reader
        .batch_execute("SET ROLE ingest_reader; SET jit = off")
        .await
        .map_err(|error| format!("becoming the reader role: {error}"))?;
    owner
        .batch_execute("SET jit = off")
        .await
        .map_err(|error| error.to_string())?;

    for (tenant, size) in &measured {
        let cursor_row = owner
            .query_one(
                "SELECT id FROM processing_activities WHERE tenant_id = $1 ORDER BY id OFFSET $2 LIMIT 1",
                &[tenant, &(size / 2)],
            )
            .await
            .map_err(|error| error.to_string())?;
        let middle: Uuid = cursor_row.get(0);
        let a_scan: Uuid = owner
            .query_one(
                "SELECT scan_id FROM scans WHERE tenant_id = $1 LIMIT 1",
                &[tenant],
            )
            .await
            .map_err(|error| error.to_string())?
            .get(0);
        let limit: i64 = 101;
        let status_none: Option<&str> = None;
        let mut reads_to_time: Vec<(String, &str, TypedParameters)> = vec![
            (
                "compliance summary".into(),
                reads::COMPLIANCE_SUMMARY_SQL,
                vec![(tenant, Type::UUID)],
            ),
            (
                "page by cursor".into(),
                reads::ACTIVITIES_AFTER_SQL,
                vec![
                    (tenant, Type::UUID),
                    (&middle, Type::UUID),
                    (&limit, Type::INT8),
                ],
            ),
            (
                "scan status".into(),
                queries::SCAN_STATUS_SQL,
                vec![(tenant, Type::UUID), (&a_scan, Type::UUID)],
            ),
            (
                "scan list".into(),
                queries::SCAN_LIST_SQL,
                vec![
                    (tenant, Type::UUID),
                    (&status_none, Type::TEXT),
                    (&limit, Type::INT8),
                ],
            ),
        ];
        let depths: Vec<i64> = [0i64, 1_000, 10_000]
            .into_iter()
            .filter(|depth| depth < size)
            .collect();
        for depth in &depths {
            reads_to_time.push((
                format!("page by offset {depth}"),
                reads::ACTIVITIES_BY_OFFSET_SQL,
                vec![
                    (tenant, Type::UUID),
                    (depth, Type::INT8),
                    (&limit, Type::INT8),
                ],
            ));
        }
        for (read, sql, parameters) in reads_to_time {
            let comparison = compare(
                &reader,
                &owner,
                *tenant,
                *size,
                &read,
                sql,
                &parameters,
                options.rounds,
            )
            .await?;
            details.comparisons.push(comparison);
        }
    }
    Ok(())
}

/// Times `sql` as the reader (policy on) and as the owner, alternately.
#[allow(clippy::too_many_arguments)]
async fn compare(
    reader: &Client,
    owner: &Client,
    tenant: Uuid,
    size: i64,
    read: &str,
    sql: &str,
    parameters: &[(&(dyn ToSql + Sync), Type)],
    rounds: usize,
) -> Result<ReadComparison, String> {
    let tenant_text = tenant.to_string();
    let (mut with_policy, mut without) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    // One untimed round each first: catalog caches, buffers.
    for round in 0..=rounds {
        for as_reader in [round % 2 == 0, round % 2 == 1] {
            let client = if as_reader { reader } else { owner };
            client
                .batch_execute("BEGIN READ ONLY")
                .await
                .map_err(|error| error.to_string())?;
            if as_reader {
                client
                    .query_typed(
                        "SELECT set_config('app.tenant_id', $1, true)",
                        &[(&tenant_text, Type::TEXT)],
                    )
                    .await
                    .map_err(|error| error.to_string())?;
            }
            let started = Instant::now();
            let rows = client
                .query_typed(sql, parameters)
                .await
                .map_err(|error| format!("{read}: {error}"))?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|error| error.to_string())?;
            if rows.is_empty() && !read.starts_with("scan status") {
                return Err(format!(
                    "{read} for a tenant of {size} rows returned nothing"
                ));
            }
            if round > 0 {
                if as_reader {
                    with_policy.push(elapsed)
                } else {
                    without.push(elapsed)
                }
            }
        }
    }
    let percentile = |values: &mut Vec<f64>, share: f64| {
        values.sort_by(f64::total_cmp);
        values[((values.len() as f64 * share).ceil() as usize)
            .saturating_sub(1)
            .min(values.len() - 1)]
    };
    let (rls_p50, rls_p95) = (
        percentile(&mut with_policy, 0.5),
        percentile(&mut with_policy, 0.95),
    );
    let (owner_p50, owner_p95) = (
        percentile(&mut without, 0.5),
        percentile(&mut without, 0.95),
    );
    let overhead =
        |with: f64, base: f64| round_to_thousandths((with / base.max(1e-9) - 1.0) * 100.0);
    let overhead_p50 = overhead(rls_p50, owner_p50);
    let (mut explain_rls, mut explain_owner) = (None, None);
    if overhead_p50 > 10.0 {
        explain_rls = Some(explain(reader, Some(&tenant_text), sql, parameters).await?);
        explain_owner = Some(explain(owner, None, sql, parameters).await?);
    }
    Ok(ReadComparison {
        tenant_rows: size,
        read: read.to_string(),
        rls_p50_ms: round_to_thousandths(rls_p50),
        rls_p95_ms: round_to_thousandths(rls_p95),
        owner_p50_ms: round_to_thousandths(owner_p50),
        owner_p95_ms: round_to_thousandths(owner_p95),
        overhead_p50_percent: overhead_p50,
        overhead_p95_percent: overhead(rls_p95, owner_p95),
        explain_rls,
        explain_owner,
    })
}

async fn explain(
    client: &Client,
    tenant_opt: Option<&str>,
    sql: &str,
    parameters: &[(&(dyn ToSql + Sync), Type)],
) -> Result<String, String> {
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .map_err(|error| error.to_string())?;
    if let Some(tenant) = tenant_opt {
        client
            .query_typed(
                "SELECT set_config('app.tenant_id', $1, true)",
                &[(&tenant, Type::TEXT)],
            )
            .await
            .map_err(|error| error.to_string())?;
    }
    let rows = client
        .query_typed(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), parameters)
        .await
        .map_err(|error| error.to_string())?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|error| error.to_string())?;
    Ok(rows
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n"))
}
