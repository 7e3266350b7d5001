//! The read side: row-level security in PostgreSQL, the analytics routes, the read pool.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use crate::helpers::{activities, activity, assert_error, spawn_app, spawn_app_with, TestApp};

const SENSITIVE: &str = "Category 1: Sensitive Personal Data";
const BASIC: &str = "Category 2: Basic Personal Data";
const PUBLIC: &str = "Category 3: Public Data";

/// Inserts `count` activities of `tenant_id` directly, as the tables' owner (what writers are).
async fn insert_activities(app: &TestApp, tenant_id: Uuid, count: i32) {
    app.db()
        .await
        .execute(
            "INSERT INTO processing_activities \
                 (id, tenant_id, record_index, activity_name, pdpl_category, data_fields, created_at) \
             SELECT gen_random_uuid(), $1, index, 'Hồ sơ ' || index, $2, ARRAY['họ và tên'], now() \
             FROM generate_series(0, $3 - 1) AS index",
            &[&tenant_id, &BASIC, &count],
        )
        .await
        .expect("activities are inserted");
}

async fn insert_scan(app: &TestApp, tenant_id: Uuid) {
    app.db()
        .await
        .batch_execute(&format!(
            "INSERT INTO tenants (tenant_id, records_per_second, burst, max_backlog_records) \
                 VALUES ('{tenant_id}', 1, 1, 1) ON CONFLICT DO NOTHING; \
             INSERT INTO scans (tenant_id, scan_id, status, priority, records_total) \
                 VALUES ('{tenant_id}', gen_random_uuid(), 'pending', 2, 1)"
        ))
        .await
        .expect("a scan is inserted");
}

/// The tenants whose rows `sql` returns when run as the reader role, in a transaction that sets
/// `app.tenant_id` to `tenant_setting_opt` (or sets nothing).
async fn tenants_seen_by_reader(
    app: &TestApp,
    tenant_setting_opt: Option<&str>,
    sql: &str,
) -> Vec<Uuid> {
    let mut client = app.db().await;
    client
        .batch_execute("SET ROLE ingest_reader")
        .await
        .expect("the engine's user may act as the reader role");
    let transaction = client.transaction().await.unwrap();
    if let Some(setting) = tenant_setting_opt {
        transaction
            .execute("SELECT set_config('app.tenant_id', $1, true)", &[&setting])
            .await
            .unwrap();
    }
    let rows = transaction.query(sql, &[]).await.unwrap();
    transaction.commit().await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test]
async fn postgresql_limits_the_reader_role_to_the_tenant_of_the_transaction() {
    let app = spawn_app().await;
    let (tenant_a, tenant_b) = (Uuid::new_v4(), Uuid::new_v4());
    insert_activities(&app, tenant_a, 3).await;
    insert_activities(&app, tenant_b, 5).await;
    insert_scan(&app, tenant_a).await;
    insert_scan(&app, tenant_b).await;
    app.db()
        .await
        .execute(
            "INSERT INTO activity_counts (tenant_id, pdpl_category, activities) \
             VALUES ($1, 'Category 3: Public Data', 3), ($2, 'Category 3: Public Data', 5)",
            &[&tenant_a, &tenant_b],
        )
        .await
        .unwrap();

    // No WHERE clause at all: the policy alone decides.
    for table in ["processing_activities", "scans", "activity_counts"] {
        let sql = format!("SELECT tenant_id FROM {table}");
        let seen = tenants_seen_by_reader(&app, Some(&tenant_a.to_string()), &sql).await;
        let expected = if table == "processing_activities" {
            3
        } else {
            1
        };
        assert_eq!(seen.len(), expected, "{table}");
        assert!(seen.iter().all(|tenant| *tenant == tenant_a), "{table}");

        assert!(tenants_seen_by_reader(&app, None, &sql).await.is_empty());
        for malformed in ["", "not-a-uuid", "' OR true --"] {
            assert!(
                tenants_seen_by_reader(&app, Some(malformed), &sql)
                    .await
                    .is_empty(),
                "{table} with {malformed:?}"
            );
        }
    }
    // Asking for the other tenant explicitly finds nothing either.
    let seen = tenants_seen_by_reader(
        &app,
        Some(&tenant_a.to_string()),
        &format!("SELECT tenant_id FROM processing_activities WHERE tenant_id = '{tenant_b}'"),
    )
    .await;
    assert!(seen.is_empty());
    // The setting is transaction-local: the next transaction on the connection sees nothing.
    let mut client = app.db().await;
    client
        .batch_execute("SET ROLE ingest_reader")
        .await
        .unwrap();
    let transaction = client.transaction().await.unwrap();
    transaction
        .execute(
            "SELECT set_config('app.tenant_id', $1, true)",
            &[&tenant_a.to_string()],
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    let after: i64 = client
        .query_one("SELECT count(*) FROM processing_activities", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, 0);
    // The reader reads; it cannot write, nor read other tables.
    for statement in [
        "DELETE FROM processing_activities",
        "UPDATE activity_counts SET activities = 0",
        "INSERT INTO scans (tenant_id, scan_id, status, priority, records_total) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'pending', 2, 1)",
        "SELECT count(*) FROM staged_chunks",
        "SELECT count(*) FROM api_keys",
    ] {
        let error = client.batch_execute(statement).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}"
        );
    }
    // The owner (the writers' role) is not subject to the policies.
    assert_eq!(
        app.count("SELECT count(*) FROM processing_activities", &[])
            .await,
        8
    );
    app.stop().await;
}

fn categorised(category: &str, index: usize) -> Value {
    let mut record = activity(index);
    record["pdpl_category"] = json!(category);
    record
}

async fn post_batch(app: &TestApp, tenant_id: Uuid, records: Vec<Value>) {
    let response = app
        .post_json(
            &format!("/batch/processing-activities?tenant_id={tenant_id}"),
            &json!({ "activities": records }),
        )
        .await;
    assert_eq!(response.status(), 201);
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("a JSON body")
}

#[tokio::test]
async fn the_compliance_summary_counts_each_category_of_one_tenant() {
    let app = spawn_app().await;
    let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mut records: Vec<Value> = (0..5).map(|index| categorised(SENSITIVE, index)).collect();
    records.extend((5..8).map(|index| categorised(BASIC, index)));
    post_batch(&app, tenant, records).await;
    post_batch(&app, other, vec![categorised(PUBLIC, 0)]).await;

    let summary = get_json(
        &app,
        &format!("/analytics/compliance-summary?tenant_id={tenant}"),
    )
    .await;
    assert_eq!(
        summary,
        json!({
            "tenant_id": tenant,
            "total_activities": 8,
            "categories": [
                { "category": SENSITIVE, "category_vi": "Loại 1: Dữ liệu cá nhân nhạy cảm", "count": 5 },
                { "category": BASIC, "category_vi": "Loại 2: Dữ liệu cá nhân cơ bản", "count": 3 },
                { "category": PUBLIC, "category_vi": "Loại 3: Dữ liệu công khai", "count": 0 },
            ],
        })
    );
    // A tenant with nothing yet gets every category at zero.
    let empty = get_json(
        &app,
        &format!("/analytics/compliance-summary?tenant_id={}", Uuid::new_v4()),
    )
    .await;
    assert_eq!(empty["total_activities"], 0);
    assert_eq!(empty["categories"].as_array().unwrap().len(), 3);
    assert!(empty["categories"]
        .as_array()
        .unwrap()
        .iter()
        .all(|category| category["count"] == 0));
    app.stop().await;
}

#[tokio::test]
async fn an_activity_page_returns_every_stored_field() {
    let app = spawn_app().await;
    let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
    post_batch(&app, tenant, activities(3)).await;
    post_batch(&app, other, activities(2)).await;
    let page = get_json(
        &app,
        &format!("/analytics/processing-activities?tenant_id={tenant}"),
    )
    .await;
    assert_eq!(page["tenant_id"], json!(tenant));
    assert_eq!(page["count"], 3);
    assert_eq!(page["next_cursor"], Value::Null);
    let first = &page["activities"][0];
    let posted = activity(0);
    for field in [
        "activity_name",
        "pdpl_category",
        "data_fields",
        "purpose",
        "legal_basis",
        "retention_period",
        "data_recipients",
    ] {
        assert_eq!(first[field], posted[field], "{field}");
    }
    assert_eq!(first["tenant_id"], json!(tenant));
    assert_eq!(first["record_index"], 0);
    assert_eq!(first["scan_id"], Value::Null, "a batch has no scan");
    assert!(Uuid::parse_str(first["id"].as_str().unwrap()).is_ok());
    assert!(first["created_at"].is_string());
    app.stop().await;
}

/// Writes into `tenant` until told to stop: batches through the API (their ids sort after every
/// existing one) and, when `behind_too`, rows inserted directly with ids just after existing
/// ones, which land inside pages already read and pages not yet read (a scan accepted earlier
/// and written later does the same). Returns how many rows it wrote.
fn write_concurrently(
    app: &Arc<TestApp>,
    tenant: Uuid,
    existing_ids: Vec<Uuid>,
    behind_too: bool,
    mut stop: watch::Receiver<bool>,
    written: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        let client = app.db().await;
        let mut round = 0usize;
        while !*stop.borrow() {
            post_batch(&app, tenant, activities(20)).await;
            written.fetch_add(20, Ordering::SeqCst);
            if behind_too {
                let ids: Vec<Uuid> = existing_ids
                    .iter()
                    .skip(round % 7)
                    .step_by(97)
                    .map(|id| Uuid::from_u128(id.as_u128() + 1 + round as u128))
                    .collect();
                let inserted = client
                    .execute(
                        "INSERT INTO processing_activities \
                             (id, tenant_id, record_index, activity_name, pdpl_category, data_fields, created_at) \
                         SELECT id, $1, 0, 'chèn sau', $2, ARRAY['họ và tên'], now() FROM unnest($3::uuid[]) AS id",
                        &[&tenant, &BASIC, &ids],
                    )
                    .await
                    .expect("rows are inserted behind the cursor");
                written.fetch_add(inserted as usize, Ordering::SeqCst);
            }
            round += 1;
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    })
}

async fn stored_ids(app: &TestApp, tenant: Uuid) -> Vec<Uuid> {
    app.db()
        .await
        .query(
            "SELECT id FROM processing_activities WHERE tenant_id = $1 ORDER BY id",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Pages through `tenant`'s activities by cursor or by skip, collecting ids in order.
async fn page_through(app: &TestApp, tenant: Uuid, by_cursor: bool) -> (Vec<Uuid>, usize) {
    let mut ids: Vec<Uuid> = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let path = if by_cursor {
            format!("/analytics/processing-activities?tenant_id={tenant}&limit=100&cursor={cursor}")
        } else {
            format!(
                "/analytics/processing-activities?tenant_id={tenant}&limit=100&skip={}",
                ids.len()
            )
        };
        let page = get_json(app, &path).await;
        pages += 1;
        for activity in page["activities"].as_array().unwrap() {
            assert_eq!(activity["tenant_id"], json!(tenant));
            ids.push(Uuid::parse_str(activity["id"].as_str().unwrap()).unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return (ids, pages),
        }
    }
}

async fn paging_under_concurrent_writes(by_cursor: bool) {
    let app = Arc::new(spawn_app().await);
    let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
    post_batch(&app, tenant, activities(2_500)).await;
    post_batch(&app, other, activities(300)).await;
    let existing = stored_ids(&app, tenant).await;
    assert_eq!(existing.len(), 2_500);

    let (stop, stopped) = watch::channel(false);
    let written = Arc::new(AtomicUsize::new(0));
    // Offset paging is only stable when new rows sort after the pages (see `PageStart`).
    let writer = write_concurrently(
        &app,
        tenant,
        existing.clone(),
        by_cursor,
        stopped,
        written.clone(),
    );
    let wait_started = Instant::now();
    while written.load(Ordering::SeqCst) == 0 {
        assert!(
            wait_started.elapsed() < Duration::from_secs(30),
            "no write happened"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let written_before = written.load(Ordering::SeqCst);
    let (paged, pages) = page_through(&app, tenant, by_cursor).await;
    let written_during = written.load(Ordering::SeqCst) - written_before;
    stop.send(true).unwrap();
    writer.await.unwrap();

    let unique: HashSet<Uuid> = paged.iter().copied().collect();
    assert_eq!(unique.len(), paged.len(), "an activity was returned twice");
    let missing = existing.iter().filter(|id| !unique.contains(id)).count();
    assert_eq!(
        missing, 0,
        "activities that existed when paging began were skipped"
    );
    assert!(
        paged.windows(2).all(|pair| pair[0] < pair[1]),
        "pages are in id order"
    );
    assert!(pages >= 25, "{pages} pages");
    assert!(written_during > 0, "the writes overlapped the paging");
    let app = Arc::into_inner(app).expect("the writer task is done");
    app.stop().await;
}

#[tokio::test]
async fn cursor_paging_under_concurrent_writes_neither_repeats_nor_skips() {
    paging_under_concurrent_writes(true).await;
}

#[tokio::test]
async fn skip_paging_under_appended_writes_neither_repeats_nor_skips() {
    paging_under_concurrent_writes(false).await;
}

#[tokio::test]
async fn bad_read_parameters_get_bilingual_400s() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let summary = "/analytics/compliance-summary";
    let activities_path = "/analytics/processing-activities";
    assert_error(app.get(summary).await, 400, "missing_tenant_id").await;
    assert_error(
        app.get(&format!("{summary}?tenant_id=12345")).await,
        400,
        "invalid_field",
    )
    .await;
    assert_error(app.get(activities_path).await, 400, "missing_tenant_id").await;
    let cursor = Uuid::now_v7().simple().to_string();
    for (parameters, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("limit=many", "invalid_limit"),
        ("skip=-1", "invalid_skip"),
        ("skip=1.5", "invalid_skip"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("cursor=%27%20OR%201%3D1", "invalid_cursor"),
        (
            &format!("cursor={cursor}&skip=10") as &str,
            "conflicting_parameters",
        ),
    ] {
        let response = app
            .get(&format!(
                "{activities_path}?tenant_id={tenant}&{parameters}"
            ))
            .await;
        assert_error(response, 400, code).await;
    }
    // The limits themselves are accepted.
    for parameters in [
        "limit=1",
        "limit=1000&skip=0",
        &format!("cursor={cursor}&skip=0"),
    ] {
        get_json(
            &app,
            &format!("{activities_path}?tenant_id={tenant}&{parameters}"),
        )
        .await;
    }
    app.stop().await;
}

#[tokio::test]
async fn connection_pools_reports_each_pool() {
    let app = spawn_app().await;
    // One read first, so the read pool has opened a connection.
    get_json(
        &app,
        &format!("/analytics/compliance-summary?tenant_id={}", Uuid::new_v4()),
    )
    .await;
    let body = get_json(&app, "/health/connection-pools").await;
    for pool in ["read_pool", "write_pool"] {
        let usage = &body[pool];
        assert_eq!(usage["pool_size"], 8, "{pool}");
        for field in ["checked_out", "checked_in", "utilization_percent"] {
            assert!(usage[field].is_number(), "{pool}.{field}: {body}");
        }
        assert_eq!(usage["status"], "healthy", "{body}");
        assert_eq!(usage["status_vi"], "hoạt động tốt", "{body}");
    }
    assert_eq!(body["write_pool"]["dedicated_writer_connections"], 2);
    assert!(body["recommendation"]
        .as_str()
        .is_some_and(|text| !text.is_empty()));
    assert!(body["recommendation_vi"]
        .as_str()
        .is_some_and(|text| !text.is_empty()));
    app.stop().await;
}

#[tokio::test]
async fn a_saturated_read_pool_is_reported_and_does_not_stop_submissions() {
    let app = spawn_app_with(|settings| settings.database.read_pool_size = 1).await;
    let tenant = Uuid::new_v4();
    // Hold every reader off the activities table, so the one read connection stays checked out.
    let mut blocker = app.db().await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE processing_activities IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let blocked_read = {
        let http = app.http.clone();
        let url = format!(
            "{}/analytics/processing-activities?tenant_id={tenant}",
            app.address
        );
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(crate::helpers::BOOTSTRAP_ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let pools = loop {
        let pools = get_json(&app, "/health/connection-pools").await;
        if pools["read_pool"]["checked_out"] == 1 {
            break pools;
        }
        assert!(
            Instant::now() < deadline,
            "the read never checked out: {pools}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pools["read_pool"]["status"], "saturated", "{pools}");
    assert_eq!(pools["read_pool"]["status_vi"], "quá tải");
    assert_eq!(pools["read_pool"]["utilization_percent"], 100.0);
    assert!(pools["recommendation"]
        .as_str()
        .unwrap()
        .contains("database.read_pool_size"));
    assert_eq!(pools["write_pool"]["status"], "healthy", "{pools}");
    // Submissions stage on the request pool, untouched by the reads.
    let response = app.post_scan(tenant, activities(10)).await;
    assert_eq!(response.status(), 202);

    lock.rollback().await.unwrap();
    assert_eq!(blocked_read.await.unwrap(), 200);
    app.stop().await;
}
