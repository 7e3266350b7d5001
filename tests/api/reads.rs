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
    let run_starts: Vec<Uuid> = existing_ids
        .iter()
        .enumerate()
        .filter(|(index, id)| *index == 0 || existing_ids[index - 1].as_u128() + 1 != id.as_u128())
        .map(|(_, id)| *id)
        .collect();
    tokio::spawn(async move {
        let client = app.db().await;
        let mut round = 0usize;
        while !*stop.borrow() {
            post_batch(&app, tenant, activities(20)).await;
            written.fetch_add(20, Ordering::SeqCst);
            if behind_too {
                // A submission's ids count up from its own random start, so rows can be put
                // among the existing ones only between two submissions' runs: just before the
                // first id of a run, a little further each round.
                let ids: Vec<Uuid> = run_starts
                    .iter()
                    .skip(round % 3)
                    .step_by(2)
                    .map(|id| Uuid::from_u128(id.as_u128() - 1 - round as u128))
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
    for _ in 0..25 {
        post_batch(&app, tenant, activities(100)).await;
    }
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

/// The operators' regional summary counts tenants and activities per region and category as
/// the table holds them (zeros included), for admin and service keys only.
#[tokio::test]
async fn the_regional_summary_counts_each_region_and_category() {
    let app = spawn_app().await;
    let mut expected_tenants = std::collections::BTreeMap::new();
    let mut some_tenant = Uuid::nil();
    for (region_opt, count) in [(Some("north"), 2), (Some("south"), 1), (None, 1)] {
        for _ in 0..count {
            let tenant = Uuid::new_v4();
            some_tenant = tenant;
            let mut body = json!({ "tenant_id": tenant, "name": "Công ty" });
            if let Some(region) = region_opt {
                body["region"] = json!(region);
            }
            assert_eq!(app.post_json("/admin/tenants", &body).await.status(), 201);
            post_batch(
                &app,
                tenant,
                (0..7)
                    .map(|index| {
                        categorised(
                            [
                                "Category 1: Sensitive Personal Data",
                                "Category 3: Public Data",
                            ][index % 2],
                            index,
                        )
                    })
                    .collect(),
            )
            .await;
            *expected_tenants
                .entry(region_opt.unwrap_or("unassigned"))
                .or_insert(0) += 1;
        }
    }
    let summary = get_json(&app, "/analytics/regional-summary").await;
    let regions = summary["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 4, "{summary}");
    let client = app.db().await;
    for region in regions {
        let name = region["region"].as_str().unwrap();
        let tenants = expected_tenants.get(name).copied().unwrap_or(0);
        assert_eq!(region["tenants"], tenants, "{summary}");
        for category in region["categories"].as_array().unwrap() {
            let counted: i64 = client
                .query_one(
                    "SELECT count(*) FROM processing_activities a JOIN tenants t USING (tenant_id) \
                     WHERE coalesce(t.region, 'unassigned') = $1 AND a.pdpl_category = $2",
                    &[&name, &category["category"].as_str().unwrap()],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(category["count"], counted, "{name}: {summary}");
        }
    }
    assert_eq!(summary["total_activities"], 28);
    assert_eq!(regions[0]["region_vi"], "Miền Bắc");
    // A tenant key gets 403.
    let minted: Value = app
        .post_json(
            "/admin/keys",
            &json!({ "scope": "tenant", "tenant_id": some_tenant }),
        )
        .await
        .json()
        .await
        .unwrap();
    let denied = app
        .request_as(
            reqwest::Method::GET,
            "/analytics/regional-summary",
            minted["token"].as_str(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    app.stop().await;
}

/// A statement's parameters with the types the engine binds them with.
type TypedParameters<'a> = Vec<(
    &'a (dyn tokio_postgres::types::ToSql + Sync),
    tokio_postgres::types::Type,
)>;

/// Whether an EXPLAIN (FORMAT JSON) plan holds an index scan whose index condition is on
/// `tenant_id`.
fn uses_tenant_index_condition(plan: &Value) -> bool {
    match plan {
        Value::Object(node) => {
            let is_index_scan = node
                .get("Node Type")
                .and_then(Value::as_str)
                .is_some_and(|kind| {
                    matches!(kind, "Index Scan" | "Index Only Scan" | "Bitmap Index Scan")
                });
            let on_tenant = node
                .get("Index Cond")
                .and_then(Value::as_str)
                .is_some_and(|condition| condition.contains("tenant_id"));
            (is_index_scan && on_tenant) || node.values().any(uses_tenant_index_condition)
        }
        Value::Array(items) => items.iter().any(uses_tenant_index_condition),
        _ => false,
    }
}

/// Regression guard: every dashboard statement, planned as the reader role for one tenant
/// (row-level security on), finds the tenant's rows through an index condition on
/// `tenant_id`, on tables big enough that a sequential scan would be planned otherwise.
#[tokio::test]
async fn every_dashboard_query_reads_through_an_index_condition_on_tenant_id() {
    use ingest_engine::store::{queries, reads};
    use tokio_postgres::types::Type;
    let app = spawn_app().await;
    let tenants: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for tenant in &tenants {
        insert_activities(&app, *tenant, 2_000).await;
        for _ in 0..20 {
            insert_scan(&app, *tenant).await;
        }
    }
    let client = app.db().await;
    client
        .batch_execute(
            "INSERT INTO activity_counts (tenant_id, pdpl_category, activities) \
             SELECT gen_random_uuid(), c, 10 FROM generate_series(1, 5000), \
                 unnest(ARRAY['Category 1: Sensitive Personal Data', 'Category 2: Basic Personal Data']) AS c; \
             ANALYZE processing_activities; ANALYZE scans; ANALYZE activity_counts;",
        )
        .await
        .unwrap();
    let tenant = tenants[7];
    let (skip, limit, after, scan_id) = (1_000i64, 101i64, Uuid::nil(), Uuid::new_v4());
    let status_opt: Option<&str> = None;
    let statements: Vec<(&str, &str, TypedParameters)> = vec![
        (
            "compliance summary",
            reads::COMPLIANCE_SUMMARY_SQL,
            vec![(&tenant, Type::UUID)],
        ),
        (
            "activities by offset",
            reads::ACTIVITIES_BY_OFFSET_SQL,
            vec![
                (&tenant, Type::UUID),
                (&skip, Type::INT8),
                (&limit, Type::INT8),
            ],
        ),
        (
            "activities by cursor",
            reads::ACTIVITIES_AFTER_SQL,
            vec![
                (&tenant, Type::UUID),
                (&after, Type::UUID),
                (&limit, Type::INT8),
            ],
        ),
        (
            "scan status",
            queries::SCAN_STATUS_SQL,
            vec![(&tenant, Type::UUID), (&scan_id, Type::UUID)],
        ),
        (
            "scan list",
            queries::SCAN_LIST_SQL,
            vec![
                (&tenant, Type::UUID),
                (&status_opt, Type::TEXT),
                (&limit, Type::INT8),
            ],
        ),
    ];
    let mut client = client;
    for (name, sql, parameters) in statements {
        let transaction = client.transaction().await.unwrap();
        transaction
            .batch_execute("SET LOCAL ROLE ingest_reader")
            .await
            .unwrap();
        transaction
            .execute(
                "SELECT set_config('app.tenant_id', $1, true)",
                &[&tenant.to_string()],
            )
            .await
            .unwrap();
        let rows = transaction
            .query_typed(&format!("EXPLAIN (FORMAT JSON) {sql}"), &parameters)
            .await
            .unwrap();
        let plan: Value = rows[0].get(0);
        transaction.rollback().await.unwrap();
        assert!(
            uses_tenant_index_condition(&plan),
            "{name}: no index condition on tenant_id: {plan}"
        );
    }
    app.stop().await;
}
