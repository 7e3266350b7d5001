//! Archive, then drop; and retention. An old month is archived to a Parquet file that reads
//! back row for row as the table held it, catalogued, then detached and dropped; a maintenance
//! process killed after each step leaves the partition or a verified file, and the next run
//! finishes; retention deletes only old finished scans while an ingestion runs.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{
    accepted_scan_id, activities, scratch_directory, spawn_app, spawn_app_with, test_settings,
    url_of, TestApp,
};
use ingest_engine::audit::parquet_file::{self, ArchivedEntry};

/// A month old enough to archive with the default `audit.retain_months` (12): 14 to 23 months
/// before this one, by `months_back`.
async fn old_month(app: &TestApp, months_back: i32) -> NaiveDate {
    app.db()
        .await
        .query_one(
            "SELECT (date_trunc('month', now() AT TIME ZONE 'Asia/Ho_Chi_Minh') - make_interval(months => $1))::date",
            &[&months_back],
        )
        .await
        .unwrap()
        .get(0)
}

/// Creates `month`'s partition and fills it with `rows` entries of Vietnamese text, nulls
/// inside the details, and several tenants. Returns the partition's name.
async fn seed_month(app: &TestApp, month: NaiveDate, rows: i32) -> String {
    let client = app.db().await;
    client
        .execute(
            "SELECT ingest_audit_month_partition($1, 'Asia/Ho_Chi_Minh')",
            &[&month],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO audit_log (tenant_id, occurred_at, event_id, actor, action, subject, details, summary, summary_vi) \
             SELECT CASE WHEN i % 3 = 0 THEN '00000000-0000-0000-0000-000000000000'::uuid ELSE md5('t' || (i % 7))::uuid END, \
                    ($1::date::timestamp AT TIME ZONE 'Asia/Ho_Chi_Minh') + make_interval(secs => i * 37.5), \
                    md5('e' || i)::uuid, 'bootstrap', 'limits_changed', 'Tổ chức ' || i, \
                    jsonb_build_object('before', NULL, 'after', jsonb_build_object('burst', i, 'name', 'Công ty Hà Nội ' || i)), \
                    'tenant limits changed', 'đã thay đổi giới hạn của tổ chức' \
             FROM generate_series(1, $2) AS i",
            &[&month, &rows],
        )
        .await
        .unwrap();
    format!("audit_log_y{}", month.format("%Ym%m"))
}

/// The table's rows as the archive writes them, in its order.
async fn table_rows(app: &TestApp, table: &str) -> Vec<ArchivedEntry> {
    app.db()
        .await
        .query(
            &format!(
                "SELECT tenant_id, (extract(epoch FROM occurred_at) * 1000000)::bigint AS micros, event_id, actor, action, subject, details::text AS details, summary, summary_vi \
                 FROM {table} ORDER BY occurred_at, event_id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| ArchivedEntry {
            tenant_id: row.get("tenant_id"),
            occurred_at_micros: row.get("micros"),
            event_id: row.get("event_id"),
            actor: row.get("actor"),
            action: row.get("action"),
            subject: row.get("subject"),
            details: row.get("details"),
            summary: row.get("summary"),
            summary_vi: row.get("summary_vi"),
        })
        .collect()
}

async fn table_exists(app: &TestApp, table: &str) -> bool {
    app.count(
        "SELECT count(*) FROM pg_class WHERE relname = $1",
        &[&table],
    )
    .await
        == 1
}

/// The catalogue's path and rows for `month`, if catalogued.
async fn catalogued(app: &TestApp, month: NaiveDate) -> Option<(String, i64)> {
    app.db()
        .await
        .query_opt(
            "SELECT path, rows FROM audit_archives WHERE month = $1",
            &[&month],
        )
        .await
        .unwrap()
        .map(|row| (row.get("path"), row.get("rows")))
}

#[tokio::test]
async fn an_old_month_is_archived_read_back_row_for_row_and_dropped() {
    let archive_dir = scratch_directory().join("archive");
    let app = spawn_app_with(|settings| settings.audit.archive_dir = archive_dir.clone()).await;
    let month = old_month(&app, 14).await;
    let table = seed_month(&app, month, 5_000).await;
    let before = table_rows(&app, &table).await;
    assert_eq!(before.len(), 5_000);

    let mut settings = test_settings();
    settings.audit.archive_dir = archive_dir.clone();
    let report = ingest_engine::audit::archive::run(&app.database, &settings.audit)
        .await
        .unwrap();
    assert_eq!(report.months, vec![month.format("%Y-%m").to_string()]);
    assert_eq!(report.rows, 5_000);

    let (path, rows) = catalogued(&app, month)
        .await
        .expect("the month is catalogued");
    assert_eq!(rows, 5_000);
    assert_eq!(
        Path::new(&path),
        archive_dir
            .join(format!("audit_log_{}.parquet", month.format("%Y-%m")))
            .canonicalize()
            .unwrap()
    );
    assert_eq!(parquet_file::read_all(Path::new(&path)).unwrap(), before);
    assert!(
        !table_exists(&app, &table).await,
        "the partition is dropped"
    );
    assert!(!archive_dir
        .join(format!(
            "audit_log_{}.parquet.partial",
            month.format("%Y-%m")
        ))
        .exists());
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE action = 'audit_archived'",
            &[]
        )
        .await,
        1
    );
    // A read over that month says where the rest is.
    let from = format!("{}T00:00:00%2B07:00", month.format("%Y-%m-%d"));
    let answer: Value = app
        .get(&format!("/admin/audit?from={from}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["archived_months"][0]["month"],
        month.format("%Y-%m").to_string(),
        "{answer}"
    );
    // A second run finds nothing to do.
    let again = ingest_engine::audit::archive::run(&app.database, &settings.audit)
        .await
        .unwrap();
    assert!(again.months.is_empty());
    app.stop().await;
}

/// `ingest-engine audit maintain` against the test database, killed after `kill_after` if set.
fn maintain(
    app: &TestApp,
    archive_dir: &Path,
    kill_after_opt: Option<&str>,
) -> std::process::ExitStatus {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingest-engine"));
    command
        .args(["audit", "maintain"])
        .env("DATABASE_URL", url_of(&app.database))
        .env("INGEST__AUDIT__ARCHIVE_DIR", archive_dir)
        .env_remove("INGEST_AUDIT_ARCHIVE_KILL_AFTER")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(step) = kill_after_opt {
        command.env("INGEST_AUDIT_ARCHIVE_KILL_AFTER", step);
    }
    let output = command.output().expect("the engine binary runs");
    if kill_after_opt.is_none() {
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            printed.contains("archive:") && printed.contains("lưu trữ:"),
            "{printed}"
        );
    }
    output.status
}

#[tokio::test]
async fn a_maintenance_killed_at_each_archive_step_loses_nothing_and_the_next_run_finishes() {
    let app = spawn_app().await;
    let archive_dir = scratch_directory().join("archive");
    for (position, step) in ["written", "renamed", "catalogued", "detached"]
        .into_iter()
        .enumerate()
    {
        let month = old_month(&app, 14 + position as i32).await;
        let table = seed_month(&app, month, 2_000).await;
        let before = table_rows(&app, &table).await;

        let status = maintain(&app, &archive_dir, Some(step));
        assert_eq!(status.signal(), Some(9), "{step}: {status:?}");
        // The partition, or a verified, catalogued file: never neither.
        let partition_kept = table_exists(&app, &table).await;
        let verified_file = match catalogued(&app, month).await {
            Some((path, rows)) => parquet_file::verify(Path::new(&path))
                .is_ok_and(|summary| summary.rows == rows && rows == 2_000),
            None => false,
        };
        assert!(
            partition_kept || verified_file,
            "{step}: neither the partition nor a verified file"
        );

        let status = maintain(&app, &archive_dir, None);
        assert!(status.success(), "{step}: {status:?}");
        assert!(
            !table_exists(&app, &table).await,
            "{step}: the partition is dropped"
        );
        let (path, rows) = catalogued(&app, month).await.expect("catalogued");
        assert_eq!(rows, 2_000, "{step}");
        assert_eq!(
            parquet_file::read_all(Path::new(&path)).unwrap(),
            before,
            "{step}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn retention_deletes_only_old_finished_scans_while_an_ingestion_runs() {
    let app = spawn_app().await;
    let (finished_tenant, paused_tenant, busy_tenant) =
        (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // Two finished scans, made 40 days old; one recent.
    let mut old_scans = Vec::new();
    for _ in 0..2 {
        let scan_id = accepted_scan_id(app.post_scan(finished_tenant, activities(10)).await).await;
        app.wait_for_scan(finished_tenant, &scan_id, Duration::from_secs(60))
            .await;
        old_scans.push(scan_id);
    }
    let recent = accepted_scan_id(app.post_scan(finished_tenant, activities(10)).await).await;
    app.wait_for_scan(finished_tenant, &recent, Duration::from_secs(60))
        .await;
    // A scan of a paused tenant: pending, with staged chunks, made 40 days old too.
    app.post_json(
        "/admin/tenants",
        &serde_json::json!({ "tenant_id": paused_tenant, "name": "Tạm dừng" }),
    )
    .await;
    let pause = app
        .request(
            reqwest::Method::POST,
            &format!("/admin/tenants/{paused_tenant}/pause"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pause.status(), 200);
    let pending = accepted_scan_id(app.post_scan(paused_tenant, activities(2_000)).await).await;
    let client = app.db().await;
    client
        .execute(
            "UPDATE scans SET created_at = now() - interval '40 days', \
                 completed_at = CASE WHEN completed_at IS NULL THEN NULL ELSE now() - interval '40 days' END \
             WHERE scan_id::text = ANY($1)",
            &[&vec![old_scans[0].clone(), old_scans[1].clone(), pending.clone()]],
        )
        .await
        .unwrap();

    // An ingestion under way while retention runs.
    let busy = accepted_scan_id(app.post_scan(busy_tenant, activities(30_000)).await).await;
    let settings = test_settings();
    let report = ingest_engine::audit::retention::run(
        &app.pool_for_tests().await,
        settings.retention.scan_days,
    )
    .await
    .unwrap();
    assert_eq!(report.scans_deleted, 2);

    let remaining = |scan_id: String| {
        let app = &app;
        async move {
            app.count(
                "SELECT count(*) FROM scans WHERE scan_id::text = $1",
                &[&scan_id],
            )
            .await
        }
    };
    assert_eq!(remaining(old_scans[0].clone()).await, 0);
    assert_eq!(remaining(old_scans[1].clone()).await, 0);
    assert_eq!(remaining(recent.clone()).await, 1);
    assert_eq!(remaining(pending.clone()).await, 1);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM staged_chunks WHERE scan_id::text = $1",
            &[&pending]
        )
        .await,
        2
    );
    // The activities old scans wrote stay.
    assert_eq!(app.activities_of(finished_tenant).await, 30);
    let scan = app
        .wait_for_scan(busy_tenant, &busy, Duration::from_secs(120))
        .await;
    assert_eq!(scan["status"], "completed");
    assert_eq!(app.activities_of(busy_tenant).await, 30_000);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE action = 'retention_run'",
            &[]
        )
        .await,
        1
    );
    app.stop().await;
}

/// A `DETACH … CONCURRENTLY` interrupted in its second phase (its session terminated while it
/// waits for an older snapshot) leaves the partition "detach pending"; the next run finalizes
/// the detach and finishes the archive.
#[tokio::test]
async fn a_detach_left_pending_is_finalized_by_the_next_run() {
    let app = spawn_app().await;
    let archive_dir = scratch_directory().join("archive");
    let month = old_month(&app, 15).await;
    let table = seed_month(&app, month, 1_000).await;
    // An open snapshot that has seen the log: the concurrent detach waits for it.
    let mut holder = app.db().await;
    let holding = holder
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    holding
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_ingest-engine"))
        .args(["audit", "maintain"])
        .env("DATABASE_URL", url_of(&app.database))
        .env("INGEST__AUDIT__ARCHIVE_DIR", &archive_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let observer = app.db().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let detaching_pid: i32 = loop {
        let row_opt = observer
            .query_opt(
                "SELECT a.pid FROM pg_stat_activity a, pg_inherits i \
                 WHERE a.query LIKE 'ALTER TABLE audit_log DETACH PARTITION%' \
                   AND i.inhrelid = $1::text::regclass AND i.inhdetachpending",
                &[&table],
            )
            .await
            .unwrap();
        if let Some(row) = row_opt {
            break row.get(0);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the detach never started waiting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    observer
        .execute("SELECT pg_terminate_backend($1)", &[&detaching_pid])
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    holding.rollback().await.unwrap();
    let pending = app
        .count(
            "SELECT count(*) FROM pg_inherits WHERE inhrelid = $1::text::regclass AND inhdetachpending",
            &[&table],
        )
        .await;
    assert_eq!(pending, 1, "the detach is left pending");

    let status = maintain(&app, &archive_dir, None);
    assert!(status.success(), "{status:?}");
    assert!(!table_exists(&app, &table).await);
    let (path, rows) = catalogued(&app, month).await.expect("catalogued");
    assert_eq!(rows, 1_000);
    assert_eq!(parquet_file::verify(Path::new(&path)).unwrap().rows, 1_000);
    app.stop().await;
}
