//! Failure paths: poison records and dead letters, a PostgreSQL restart mid-ingestion, SIGKILL
//! at several points of ingestion, and a battery of hostile requests.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use ingest_engine::store::connections;
use ingest_engine::store::embedded::{ClusterOptions, EmbeddedCluster};

use crate::helpers::{
    accepted_scan_id, activities, assert_error, repository_path, scratch_directory, spawn_app,
    spawn_app_on, spawn_app_with,
};

const COMPLETION: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_poison_record_is_dead_lettered_and_its_chunk_written_then_replayed_once() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    // A rule the engine does not know: PostgreSQL refuses the record with a permanent error.
    app.db()
        .await
        .batch_execute("ALTER TABLE processing_activities ADD CONSTRAINT no_poison CHECK (activity_name NOT LIKE 'POISON%')")
        .await
        .unwrap();
    let mut records = activities(2_500);
    records[1_234]["activity_name"] = json!("POISON pill");
    let accepted: Value = app.post_scan(tenant, records).await.json().await.unwrap();
    let scan_id = accepted["scan_id"].as_str().unwrap().to_string();
    let scan = app.wait_for_scan(tenant, &scan_id, COMPLETION).await;
    assert_eq!(scan["status"], "completed_with_errors");
    assert_eq!(scan["records_processed"], 2_499);
    assert_eq!(scan["records_failed"], 1);
    assert_eq!(app.activities_of(tenant).await, 2_499);
    app.assert_activity_counts_are_exact().await;

    let listed: Value = app
        .get(&format!("/admin/dead-letters?tenant_id={tenant}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 1);
    let dead_letter = &listed["dead_letters"][0];
    assert_eq!(dead_letter["record_index"], 1_234);
    assert_eq!(dead_letter["status"], "pending");
    assert!(
        dead_letter["error"].as_str().unwrap().contains("no_poison"),
        "{dead_letter}"
    );
    let replay_path = format!(
        "/admin/dead-letters/{}/replay",
        dead_letter["dead_letter_id"]
    );

    // Replaying before the cause is fixed records the new failure, and nothing loops.
    let response = app
        .request(Method::POST, &replay_path)
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "replay_failed").await;
    let attempts: i32 = app
        .db()
        .await
        .query_one("SELECT attempts FROM dead_letters", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(app.activities_of(tenant).await, 2_499);

    app.db()
        .await
        .batch_execute("ALTER TABLE processing_activities DROP CONSTRAINT no_poison")
        .await
        .unwrap();
    let response = app
        .request(Method::POST, &replay_path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_error(
        app.request(Method::POST, &replay_path)
            .send()
            .await
            .unwrap(),
        409,
        "already_replayed",
    )
    .await;
    assert_eq!(app.activities_of(tenant).await, 2_500);
    let poison_rows = app
        .count(
            "SELECT count(*) FROM processing_activities WHERE tenant_id = $1 AND record_index = 1234",
            &[&tenant],
        )
        .await;
    assert_eq!(poison_rows, 1);
    let scan = app.get_scan(tenant, &scan_id).await;
    assert_eq!(scan["status"], "completed");
    assert_eq!(scan["records_processed"], 2_500);
    assert_eq!(scan["records_failed"], 0);
    assert_error(
        app.request(Method::POST, "/admin/dead-letters/999999/replay")
            .send()
            .await
            .unwrap(),
        404,
        "dead_letter_not_found",
    )
    .await;
    // Each replay is one audit entry: the refused one and the one that wrote the record (the
    // 409 and the 404 changed nothing and wrote none); the scan finished once.
    for (action, entries) in [
        ("dead_letter_replay_failed", 1),
        ("dead_letter_replayed", 1),
        ("scan_completed_with_errors", 1),
    ] {
        let counted = app
            .count(
                "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = $2",
                &[&tenant, &action],
            )
            .await;
        assert_eq!(counted, entries, "{action}");
    }
    app.assert_activity_counts_are_exact().await;
    app.stop().await;
}

#[tokio::test]
async fn a_poison_record_in_a_batch_is_reported_and_the_rest_committed() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    app.db()
        .await
        .batch_execute("ALTER TABLE processing_activities ADD CONSTRAINT no_poison CHECK (activity_name NOT LIKE 'POISON%')")
        .await
        .unwrap();
    let mut records = activities(3_000);
    records[10]["activity_name"] = json!("POISON");
    records[2_999]["activity_name"] = json!("POISON again");
    let response = app
        .post_json(
            &format!("/batch/processing-activities?tenant_id={tenant}"),
            &json!({ "activities": records }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["records_created"], 2_998);
    assert_eq!(body["records_failed"], 2);
    assert_eq!(app.activities_of(tenant).await, 2_998);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM dead_letters WHERE scan_id IS NULL",
            &[]
        )
        .await,
        2
    );
    app.assert_activity_counts_are_exact().await;
    app.stop().await;
}

/// Staged chunks of different tenants that wait for a writer together share its transaction
/// (rows of several tenants with one `xmin`), still at most one chunk of a scan per
/// transaction, so each scan's progress moves a chunk at a time. A poison record in one of them
/// costs the others nothing: the shared transaction is redone chunk by chunk, the record is
/// dead-lettered, and every other record is written exactly once.
#[tokio::test]
async fn waiting_chunks_of_different_tenants_share_a_transaction_and_a_poison_record_stays_in_its_own(
) {
    let app = spawn_app_with(|settings| {
        settings.writers.count = 1;
        settings.ingest.chunk_records = 100;
        settings.ingest.large_scan_chunk_records = 100;
    })
    .await;
    app.db()
        .await
        .batch_execute("ALTER TABLE processing_activities ADD CONSTRAINT no_poison CHECK (activity_name NOT LIKE 'POISON%')")
        .await
        .unwrap();
    let redone_before = app.metric(REDONE).await;
    let tenants: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let submissions = tenants.iter().enumerate().map(|(position, tenant)| {
        let mut records = activities(2_000);
        if position == 0 {
            records[777]["activity_name"] = json!("POISON pill");
        }
        let app = &app;
        async move { accepted_scan_id(app.post_scan(*tenant, records).await).await }
    });
    let scan_ids = futures_util::future::join_all(submissions).await;
    for (position, (tenant, scan_id)) in tenants.iter().zip(&scan_ids).enumerate() {
        let scan = app.wait_for_scan(*tenant, scan_id, COMPLETION).await;
        let failed = if position == 0 { 1 } else { 0 };
        assert_eq!(scan["records_failed"], failed, "{scan}");
        assert_eq!(scan["records_processed"], 2_000 - failed, "{scan}");
        assert_eq!(app.activities_of(*tenant).await, 2_000 - failed);
    }
    assert_eq!(
        app.count(
            "SELECT count(*) FROM dead_letters WHERE tenant_id = $1",
            &[&tenants[0]]
        )
        .await,
        1
    );
    app.assert_activity_counts_are_exact().await;
    let shared_transactions = app
        .count(
            "SELECT count(*) FROM (SELECT xmin::text FROM processing_activities \
             WHERE tenant_id = ANY($1) GROUP BY xmin::text HAVING count(DISTINCT tenant_id) > 1) AS shared",
            &[&tenants],
        )
        .await;
    assert!(
        shared_transactions > 0,
        "no transaction held chunks of two tenants"
    );
    let most_of_one_scan_in_a_transaction = app
        .count(
            "SELECT max(rows)::int8 FROM (SELECT count(*) AS rows FROM processing_activities \
             WHERE tenant_id = ANY($1) GROUP BY xmin::text, scan_id) AS per_transaction",
            &[&tenants],
        )
        .await;
    assert_eq!(most_of_one_scan_in_a_transaction, 100);
    assert!(
        app.metric(REDONE).await > redone_before,
        "the shared transaction with the poison record is counted as redone"
    );
    app.stop().await;
}

const REDONE: &str = "ingest_writer_shared_transactions_redone_total";

/// A scan is staged by several statements sent together (the scan, its audit entry, its chunks
/// in groups, the owner's notification), and PostgreSQL answers every statement behind a
/// failed one "current transaction is aborted": the client still gets the failure's own cause
/// (here a data exception, so 422 with its SQLSTATE), whichever statement failed, and nothing
/// of the scan is stored.
#[tokio::test]
async fn a_failing_staging_statement_reports_its_own_cause() {
    let app = spawn_app().await;
    // One tenant's scans are refused as the scan row is inserted (the first statement), the
    // other's at the last chunk (of a 40,500-record scan, the only one of 500 records).
    let (refused_scan, refused_chunk) = (Uuid::new_v4(), Uuid::new_v4());
    app.db()
        .await
        .batch_execute(&format!(
            "CREATE FUNCTION refuse_for_the_test() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'invalid_parameter_value'; END $$; \
             CREATE TRIGGER refuse_scan BEFORE INSERT ON scans FOR EACH ROW \
             WHEN (NEW.tenant_id = '{refused_scan}') EXECUTE FUNCTION refuse_for_the_test(); \
             CREATE TRIGGER refuse_last_chunk BEFORE INSERT ON staged_chunks FOR EACH ROW \
             WHEN (NEW.tenant_id = '{refused_chunk}' AND NEW.record_count = 500) \
             EXECUTE FUNCTION refuse_for_the_test();"
        ))
        .await
        .unwrap();
    for (tenant, records, submissions) in [
        (refused_scan, activities(1_000), 8),
        (refused_chunk, activities(40_500), 2),
    ] {
        for _ in 0..submissions {
            let response = app.post_scan(tenant, records.clone()).await;
            let body = assert_error(response, 422, "refused_by_database").await;
            assert_eq!(body["details"]["sqlstate"], "22023", "{body}");
        }
        for table in ["scans", "staged_chunks", "audit_log"] {
            let stored = app
                .count(
                    &format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
                    &[&tenant],
                )
                .await;
            assert_eq!(stored, 0, "{table}");
        }
    }
    app.stop().await;
}

/// PostgreSQL restarts in the middle of an ingestion: every scan still completes with exact
/// counts, and the writers were restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scan_completes_exactly_across_a_postgresql_restart() {
    every_scan_completes_exactly_across(Outage::FastShutdown).await;
}

/// PostgreSQL crashes (immediate shutdown: no final WAL flush, crash recovery at the next
/// start) in the middle of an ingestion, right after a scan was reported complete: that scan is
/// still complete after the restart, and every other scan completes with exact counts. Chunk
/// commits that had not reached the disk are lost with their whole transaction, so their chunks
/// are still staged and are applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scan_completes_exactly_across_a_postgresql_crash() {
    every_scan_completes_exactly_across(Outage::Crash).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// SIGINT: clients are disconnected and a shutdown checkpoint is written.
    FastShutdown,
    /// SIGQUIT: every process exits at once, WAL not yet flushed is lost.
    Crash,
}

/// Writers of the PostgreSQL outage tests, and their first retry delay.
const WRITERS: usize = 4;
const RETRY_BASE_MS: u64 = 50;

async fn every_scan_completes_exactly_across(outage: Outage) {
    // The crash runs on the shipped settings, whose commits wait for their flush unless the
    // engine says otherwise; the test settings turn that off for every transaction, which
    // would let a crash lose acknowledged scans.
    let config_file = match outage {
        Outage::FastShutdown => "config/postgresql-test.conf",
        Outage::Crash => "config/postgresql.conf",
    };
    let data_dir = scratch_directory().join("postgres");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = ClusterOptions {
        data_dir,
        port,
        os_user: "postgres".into(),
        config_file_opt: Some(repository_path(config_file)),
        startup_timeout: Duration::from_secs(60),
        search_path_opt: None,
        relocation_root_opt: None,
    };
    let start_options = options.clone();
    let mut cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&start_options))
        .await
        .unwrap()
        .unwrap();
    let database = connections::parse_url(&cluster.database_url(), Duration::from_secs(5)).unwrap();
    connections::ensure_database(&database).await.unwrap();
    let app = spawn_app_on(database, |settings| {
        settings.writers.count = WRITERS;
        settings.writers.retry_base_ms = RETRY_BASE_MS;
        // Above the outage, so reconnect attempts double all the way through it.
        settings.writers.retry_cap_ms = 8_000;
        settings.database.pool_timeout_secs = 2;
        // Each tenant is paced at 5,000 records a second, so writing its 20,000 takes at least
        // 3 s and the restart below lands while writers are busy, however fast this machine.
        settings.tenants.default_records_per_second = 5_000;
        settings.tenants.default_burst = 5_000;
    })
    .await;

    let tenants: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let mut scan_ids = Vec::new();
    for tenant in &tenants {
        let response = app.post_scan(*tenant, activities(20_000)).await;
        scan_ids.push(accepted_scan_id(response).await);
    }
    // Wait for writing to be under way, then restart PostgreSQL under the writers.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let scan = app.get_scan(tenants[0], &scan_ids[0]).await;
        if scan["records_processed"].as_i64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing written: {scan}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut completed_before_opt = None;
    if outage == Outage::Crash {
        let tenant = Uuid::new_v4();
        let response = app.post_scan(tenant, activities(1_000)).await;
        let scan_id = accepted_scan_id(response).await;
        let scan = app.wait_for_scan(tenant, &scan_id, COMPLETION).await;
        assert_eq!(scan["status"], "completed", "{scan}");
        let postmaster_pid = std::fs::read_to_string(options.data_dir.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse::<i32>()
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(postmaster_pid),
            nix::sys::signal::Signal::SIGQUIT,
        )
        .unwrap();
        completed_before_opt = Some((tenant, scan_id));
    }
    let outage_started = Instant::now();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap();
    // While it is down: the engine stays up and says so.
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/health/database").await.status(), 503);
    let refused = app.post_scan(Uuid::new_v4(), activities(10)).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, 503, "database_unavailable").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restart_options = options.clone();
    let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&restart_options))
        .await
        .unwrap()
        .unwrap();
    let outage_duration = outage_started.elapsed();
    if let Some((tenant, scan_id)) = completed_before_opt {
        // Read at once, before the engine's next sweep could apply a lost chunk again.
        let database =
            connections::parse_url(&cluster.database_url(), Duration::from_secs(5)).unwrap();
        let client = ingest_engine::store::connect(&database).await.unwrap();
        let row = client
            .query_one(
                "SELECT status, records_processed FROM scans WHERE scan_id = $1::text::uuid",
                &[&scan_id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>("status"), "completed");
        assert_eq!(row.get::<_, i32>("records_processed"), 1_000);
        assert_eq!(app.activities_of(tenant).await, 1_000);
    }

    for (tenant, scan_id) in tenants.iter().zip(&scan_ids) {
        let scan = app.wait_for_scan(*tenant, scan_id, COMPLETION).await;
        assert_eq!(scan["status"], "completed", "{scan}");
        assert_eq!(scan["records_processed"], 20_000);
        assert_eq!(app.activities_of(*tenant).await, 20_000);
    }
    let duplicates = app
        .count(
            "SELECT count(*) FROM (SELECT scan_id, record_index FROM processing_activities GROUP BY 1, 2 HAVING count(*) > 1) AS duplicated",
            &[],
        )
        .await;
    assert_eq!(duplicates, 0);
    let health: Value = app.get("/health/database").await.json().await.unwrap();
    assert_eq!(health["status"], "healthy");
    // Writers reconnect with exponential backoff: over an outage of T seconds each makes about
    // log2(T / base) attempts, however many chunk attempts failed meanwhile (one restart per
    // failed chunk attempt came to hundreds).
    let restarts = health["writers"]["restarts"].as_u64().unwrap();
    let doublings = (outage_duration.as_secs_f64() / (RETRY_BASE_MS as f64 / 1000.0))
        .log2()
        .ceil() as u64;
    let bound = WRITERS as u64 * (doublings + 3);
    assert!(
        restarts > 0 && restarts <= bound,
        "{restarts} writer restarts over an outage of {outage_duration:?} (bound {bound}): {health}"
    );
    app.assert_activity_counts_are_exact().await;
    app.stop().await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

/// A hostile request: method, path, content type, body, expected status and error code.
type HostileCase = (Method, String, &'static str, Vec<u8>, u16, &'static str);

/// A hostile request gets its status and a bilingual error; the engine serves on.
#[tokio::test]
async fn hostile_requests_get_clear_errors_and_never_a_500() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let record = serde_json::to_string(&activities(1)[0]).unwrap();
    let scan =
        |activities: &str| format!(r#"{{"tenant_id":"{tenant}","activities":[{activities}]}}"#);
    let with_field = |field: &str, value: &str| {
        let mut object: serde_json::Map<String, Value> = serde_json::from_str(&record).unwrap();
        object.insert(field.to_string(), serde_json::from_str(value).unwrap());
        scan(&Value::Object(object).to_string())
    };
    let batch_path = format!("/batch/processing-activities?tenant_id={tenant}");
    let long = "x".repeat(2_001);
    // (method, path, content type, body, status, code)
    // A record whose name holds a byte that is never UTF-8: the whole body is refused.
    let not_utf8_record = {
        let mut object: serde_json::Map<String, Value> = serde_json::from_str(&record).unwrap();
        object.remove("activity_name");
        let rest = Value::Object(object).to_string();
        [
            b"{\"activity_name\":\"\xff\",".as_slice(),
            &rest.as_bytes()[1..],
        ]
        .concat()
    };
    let scan_not_utf8 = [
        format!(r#"{{"tenant_id":"{tenant}","activities":["#).as_bytes(),
        &not_utf8_record,
        b"]}",
    ]
    .concat();
    let batch_not_utf8 = [b"{\"activities\":[".as_slice(), &not_utf8_record, b"]}"].concat();
    let mut cases: Vec<HostileCase> = vec![
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan_not_utf8,
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            batch_path.clone(),
            "application/json",
            batch_not_utf8,
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            b"".to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            b"null".to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            b"42".to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            b"\"text\"".to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            b"{".to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            b"{}".to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            b"{\"tenant_id\":5,\"activities\":[]}".to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}"}}"#).into_bytes(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":null}}"#).into_bytes(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":"x"}}"#).into_bytes(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":[],"activities":[]}}"#).into_bytes(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":[{record}],"unknown":true}}"#)
                .into_bytes(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan("").into_bytes(),
            400,
            "no_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            br#"{"tenant_id":"not-a-uuid","activities":[{}]}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            br#"{"tenant_id":"00000000-0000-0000-0000-00000000000g","activities":[{}]}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":[{record}],"priority":"urgent"}}"#)
                .into_bytes(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":[{record}],"priority":7}}"#)
                .into_bytes(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":[{record}],"idempotency_key":""}}"#)
                .into_bytes(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(
                r#"{{"tenant_id":"{tenant}","activities":[{record}],"idempotency_key":"{}"}}"#,
                "k".repeat(300)
            )
            .into_bytes(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            format!(
                r#"{{"tenant_id":"{tenant}","activities":[{record}],"idempotency_key":"a\u0000b"}}"#
            )
            .into_bytes(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan("{}").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan("1,2,3").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan("null").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan("[]").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("activity_name", "\"\"").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("activity_name", "null").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("activity_name", "[\"a\"]").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("activity_name", "\"a\\u0000\"").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("activity_name", &format!("\"{}\"", "y".repeat(501))).into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("pdpl_category", "\"category 2: basic personal data\"").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("pdpl_category", "2").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("data_fields", "{}").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("data_fields", "[null]").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("data_fields", &format!("[\"{}\"]", "z".repeat(201))).into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field(
                "data_fields",
                &format!("[{}]", vec!["\"f\""; 101].join(",")),
            )
            .into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("purpose", &format!("\"{long}\"")).into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("legal_basis", "true").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("retention_period", &format!("\"{}\"", "r".repeat(101))).into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("data_recipients", "[\"\"]").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("data_recipients", "\"one\"").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            with_field("extra_field", "1").into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan(&format!("{}{}", "[".repeat(200), "]".repeat(200))).into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))).into_bytes(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan(&format!(
                "{}{}",
                "{\"a\":".repeat(100_000),
                "}".repeat(100_000)
            ))
            .into_bytes(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            vec![b'{', 0xc3, 0x28, b'}'],
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/json",
            scan(&format!("\"{}\"", "\u{0000}")).into_bytes(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "text/plain",
            scan(&record).into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "application/x-www-form-urlencoded",
            b"tenant_id=x".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            "/data-scans".into(),
            "multipart/form-data; boundary=x",
            b"--x--".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            batch_path.clone(),
            "application/json",
            b"[]".to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            batch_path.clone(),
            "application/json",
            br#"{"activities":[]}"#.to_vec(),
            400,
            "no_records",
        ),
        (
            Method::POST,
            batch_path.clone(),
            "application/json",
            br#"{"activities":[{}],"tenant_id":"x"}"#.to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::POST,
            batch_path.clone(),
            "application/json",
            br#"{"activities":[{"activity_name":"a"}]}"#.to_vec(),
            422,
            "no_valid_records",
        ),
        (
            Method::POST,
            "/batch/processing-activities?tenant_id=%zz".into(),
            "application/json",
            br#"{"activities":[{}]}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            Method::POST,
            "/batch/processing-activities?tenant_id=".into(),
            "application/json",
            br#"{"activities":[{}]}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            Method::GET,
            format!("/data-scans/{}?tenant_id={tenant}", Uuid::new_v4()),
            "application/json",
            vec![],
            404,
            "not_found",
        ),
        (
            Method::GET,
            format!("/data-scans/1%27%20OR%201=1?tenant_id={tenant}"),
            "application/json",
            vec![],
            400,
            "invalid_scan_id",
        ),
        (
            Method::GET,
            "/data-scans?tenant_id=1;DROP%20TABLE%20scans".into(),
            "application/json",
            vec![],
            400,
            "invalid_field",
        ),
        (
            Method::GET,
            format!("/data-scans?tenant_id={tenant}&limit=-1"),
            "application/json",
            vec![],
            400,
            "invalid_limit",
        ),
        (
            Method::GET,
            format!("/data-scans?tenant_id={tenant}&limit=99999999999999999999"),
            "application/json",
            vec![],
            400,
            "invalid_limit",
        ),
        (
            Method::GET,
            format!("/data-scans?tenant_id={tenant}&status=%00"),
            "application/json",
            vec![],
            400,
            "invalid_status",
        ),
        (
            Method::PUT,
            "/data-scans".into(),
            "application/json",
            vec![],
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/../../etc/passwd".into(),
            "application/json",
            vec![],
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/admin/tenants/%00".into(),
            "application/json",
            vec![],
            400,
            "invalid_tenant_id",
        ),
        (
            Method::POST,
            "/admin/dead-letters/-5/replay".into(),
            "application/json",
            vec![],
            400,
            "invalid_dead_letter_id",
        ),
        (
            Method::POST,
            "/admin/keys".into(),
            "application/json",
            br#"{"scope":"admin","tenant_id":"x"}"#.to_vec(),
            400,
            "malformed_request",
        ),
        (
            Method::PUT,
            format!("/admin/tenants/{tenant}/limits"),
            "application/json",
            br#"{"records_per_second":-1}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            Method::PUT,
            format!("/admin/tenants/{tenant}/limits"),
            "application/json",
            br#"{"records_per_second":1e99}"#.to_vec(),
            400,
            "malformed_request",
        ),
    ];
    let scan_body_limit = 64 * 1024 * 1024;
    cases.push((
        Method::POST,
        "/data-scans".into(),
        "application/json",
        vec![b' '; scan_body_limit + 1],
        413,
        "payload_too_large",
    ));
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for (method, path, content_type, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).to_string();
        let response = app
            .request(method.clone(), &path)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path} {shown}");
        let error = assert_error(response, status, code).await;
        assert!(!error["error_vi"].as_str().unwrap().is_empty());
    }
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(
        app.count("SELECT count(*) FROM processing_activities", &[])
            .await,
        0
    );
    app.stop().await;
}
