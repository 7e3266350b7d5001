use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{accepted_scan_id, activities, activity, assert_error, spawn_app};

const COMPLETION: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_scan_is_accepted_then_completed_with_exact_counts() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let response = app.post_scan(tenant, activities(2_500)).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "pending");
    assert_eq!(accepted["status_vi"], "đang chờ");
    assert_eq!(accepted["records_total"], 2_500);
    let scan_id = accepted["scan_id"].as_str().unwrap();
    assert_eq!(
        accepted["status_url"],
        format!("/data-scans/{scan_id}?tenant_id={tenant}")
    );

    let scan = app.wait_for_scan(tenant, scan_id, COMPLETION).await;
    assert_eq!(scan["status"], "completed");
    assert_eq!(scan["status_vi"], "hoàn thành");
    assert_eq!(scan["records_processed"], 2_500);
    assert_eq!(scan["records_failed"], 0);
    assert_eq!(scan["progress_percent"], 100.0);
    assert!(scan["started_at"].is_string() && scan["completed_at"].is_string());
    assert_eq!(app.activities_of(tenant).await, 2_500);
    // Each record landed once, with its own index and the scan's id.
    let distinct = app
        .count(
            "SELECT count(DISTINCT record_index) FROM processing_activities WHERE tenant_id = $1 AND scan_id = $2",
            &[&tenant, &Uuid::parse_str(scan_id).unwrap()],
        )
        .await;
    assert_eq!(distinct, 2_500);
    assert_eq!(
        app.count("SELECT count(*) FROM staged_chunks", &[]).await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn text_is_stored_verbatim() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let record = json!({
        "activity_name": "Robert'); DROP TABLE processing_activities;-- Hồ sơ",
        "pdpl_category": "Category 1: Sensitive Personal Data",
        "data_fields": ["dữ liệu sinh trắc học", "\"quoted\" \\ backslash"],
        "data_recipients": []
    });
    let response = app.post_scan(tenant, vec![record]).await;
    let scan_id = accepted_scan_id(response).await;
    app.wait_for_scan(tenant, &scan_id, COMPLETION).await;
    let row = app
        .db()
        .await
        .query_one(
            "SELECT activity_name, pdpl_category, data_fields, purpose, data_recipients FROM processing_activities WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "Robert'); DROP TABLE processing_activities;-- Hồ sơ"
    );
    assert_eq!(
        row.get::<_, String>(1),
        "Category 1: Sensitive Personal Data"
    );
    assert_eq!(
        row.get::<_, Vec<String>>(2),
        vec!["dữ liệu sinh trắc học", "\"quoted\" \\ backslash"]
    );
    assert_eq!(row.get::<_, Option<String>>(3), None);
    assert_eq!(row.get::<_, Option<Vec<String>>>(4), Some(vec![]));
    app.stop().await;
}

#[tokio::test]
async fn a_hundred_tenants_submitting_at_once_all_complete_exactly() {
    let app = spawn_app().await;
    let tenants: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let records = activities(1_000);
    let submissions = tenants.iter().map(|tenant| {
        let (app, records) = (&app, records.clone());
        async move {
            let response = app.post_scan(*tenant, records).await;
            accepted_scan_id(response).await
        }
    });
    let scan_ids = futures_util::future::join_all(submissions).await;
    for (tenant, scan_id) in tenants.iter().zip(&scan_ids) {
        let scan = app.wait_for_scan(*tenant, scan_id, COMPLETION).await;
        assert_eq!(scan["status"], "completed");
        assert_eq!(scan["records_processed"], 1_000);
    }
    for tenant in &tenants {
        assert_eq!(app.activities_of(*tenant).await, 1_000, "tenant {tenant}");
    }
    let duplicates = app
        .count(
            "SELECT count(*) FROM (SELECT tenant_id, scan_id, record_index FROM processing_activities \
             GROUP BY 1, 2, 3 HAVING count(*) > 1) AS duplicated",
            &[],
        )
        .await;
    assert_eq!(duplicates, 0);
    app.assert_activity_counts_are_exact().await;
    app.stop().await;
}

#[tokio::test]
async fn invalid_records_are_reported_and_their_neighbours_written() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let mut records = activities(1_200);
    records[3] = json!({ "activity_name": "Thiếu danh mục", "data_fields": [] });
    records[500] = json!({ "activity_name": "NUL\u{0000}byte", "pdpl_category": "Category 3: Public Data", "data_fields": [] });
    records[1_100]["data_fields"] = json!(["ok", 5]);
    records[1_199]["unexpected"] = json!("typo");
    let response = app.post_scan(tenant, records).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["records_invalid"], 4);
    let scan_id = accepted["scan_id"].as_str().unwrap();

    let scan = app.wait_for_scan(tenant, scan_id, COMPLETION).await;
    assert_eq!(scan["status"], "completed_with_errors");
    assert_eq!(scan["status_vi"], "hoàn thành có lỗi");
    assert_eq!(scan["records_processed"], 1_196);
    assert_eq!(scan["records_failed"], 4);
    let errors = scan["errors"].as_array().unwrap();
    let reported: Vec<(u64, &str)> = errors
        .iter()
        .map(|error| {
            (
                error["index"].as_u64().unwrap(),
                error["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        vec![
            (3, "pdpl_category"),
            (500, "activity_name"),
            (1_100, "data_fields[1]"),
            (1_199, "unexpected")
        ]
    );
    assert!(errors.iter().all(|error| error["error_vi"]
        .as_str()
        .is_some_and(|text| !text.is_empty())));
    assert_eq!(app.activities_of(tenant).await, 1_196);
    let nul_neighbours = app
        .count(
            "SELECT count(*) FROM processing_activities WHERE tenant_id = $1 AND record_index IN (499, 501)",
            &[&tenant],
        )
        .await;
    assert_eq!(nul_neighbours, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_scan_with_no_valid_record_is_refused_and_stores_nothing() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let response = app
        .post_scan(tenant, vec![json!({}), json!({ "activity_name": "" })])
        .await;
    let body = assert_error(response, 422, "no_valid_records").await;
    assert_eq!(body["details"]["records_failed"], 2);
    assert_eq!(body["details"]["errors"].as_array().unwrap().len(), 2);
    assert_eq!(app.count("SELECT count(*) FROM scans", &[]).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_scan() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let body = json!({ "tenant_id": tenant, "activities": activities(1_500), "idempotency_key": "nightly-2026-11-23" });
    let first: Value = app
        .post_json("/data-scans", &body)
        .await
        .json()
        .await
        .unwrap();
    let second_response = app.post_json("/data-scans", &body).await;
    assert_eq!(second_response.status(), 202);
    let second: Value = second_response.json().await.unwrap();
    assert_eq!(first["scan_id"], second["scan_id"]);
    // The same key for another tenant is another scan.
    let other_tenant = Uuid::new_v4();
    let other: Value = app
        .post_json(
            "/data-scans",
            &json!({ "tenant_id": other_tenant, "activities": activities(10), "idempotency_key": "nightly-2026-11-23" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(other["scan_id"], first["scan_id"]);

    app.wait_for_scan(tenant, first["scan_id"].as_str().unwrap(), COMPLETION)
        .await;
    assert_eq!(app.activities_of(tenant).await, 1_500);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM scans WHERE tenant_id = $1",
            &[&tenant]
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_older_than_a_day_starts_a_new_scan() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let body =
        json!({ "tenant_id": tenant, "activities": activities(3), "idempotency_key": "weekly" });
    let first: Value = app
        .post_json("/data-scans", &body)
        .await
        .json()
        .await
        .unwrap();
    app.wait_for_scan(tenant, first["scan_id"].as_str().unwrap(), COMPLETION)
        .await;
    app.db()
        .await
        .execute(
            "UPDATE scans SET created_at = now() - interval '25 hours'",
            &[],
        )
        .await
        .unwrap();
    let second: Value = app
        .post_json("/data-scans", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(first["scan_id"], second["scan_id"]);
    app.wait_for_scan(tenant, second["scan_id"].as_str().unwrap(), COMPLETION)
        .await;
    assert_eq!(app.activities_of(tenant).await, 6);
    app.stop().await;
}

#[tokio::test]
async fn more_than_a_hundred_thousand_records_are_refused() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let record = activity(0);
    let response = app.post_scan(tenant, vec![record; 100_001]).await;
    let body = assert_error(response, 413, "too_many_records").await;
    assert_eq!(body["details"]["max_records"], 100_000);
    assert_eq!(app.count("SELECT count(*) FROM scans", &[]).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let app =
        crate::helpers::spawn_app_with(|settings| settings.http.max_scan_body_bytes = 10_000).await;
    let response = app.post_scan(Uuid::new_v4(), activities(200)).await;
    assert_error(response, 413, "payload_too_large").await;
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_scan_is_not_found() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let accepted: Value = app
        .post_scan(tenant, activities(5))
        .await
        .json()
        .await
        .unwrap();
    let scan_id = accepted["scan_id"].as_str().unwrap();
    let response = app
        .get(&format!(
            "/data-scans/{scan_id}?tenant_id={}",
            Uuid::new_v4()
        ))
        .await;
    assert_error(response, 404, "not_found").await;
    let response = app
        .get(&format!("/data-scans/not-a-uuid?tenant_id={tenant}"))
        .await;
    assert_error(response, 400, "invalid_scan_id").await;
    let response = app.get(&format!("/data-scans/{scan_id}")).await;
    assert_error(response, 400, "missing_tenant_id").await;
    app.stop().await;
}

#[tokio::test]
async fn a_tenants_scans_are_listed_newest_first() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let mut scan_ids = Vec::new();
    for _ in 0..3 {
        let accepted: Value = app
            .post_scan(tenant, activities(10))
            .await
            .json()
            .await
            .unwrap();
        scan_ids.push(accepted["scan_id"].as_str().unwrap().to_string());
    }
    for scan_id in &scan_ids {
        app.wait_for_scan(tenant, scan_id, COMPLETION).await;
    }
    app.post_scan(Uuid::new_v4(), activities(10)).await;
    let listed: Value = app
        .get(&format!(
            "/data-scans?tenant_id={tenant}&status=completed&limit=2"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 2);
    let listed_ids: Vec<&str> = listed["scans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|scan| scan["scan_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed_ids, vec![scan_ids[2].as_str(), scan_ids[1].as_str()]);
    let response = app
        .get(&format!("/data-scans?tenant_id={tenant}&status=done"))
        .await;
    assert_error(response, 400, "invalid_status").await;
    let response = app
        .get(&format!("/data-scans?tenant_id={tenant}&limit=0"))
        .await;
    assert_error(response, 400, "invalid_limit").await;
    app.stop().await;
}

#[tokio::test]
async fn malformed_submissions_get_bilingual_400s() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("application/json", "{".into(), 400, "malformed_request"),
        ("application/json", "[]".into(), 400, "malformed_request"),
        (
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}"}}"#),
            400,
            "malformed_request",
        ),
        (
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":[],"extra":1}}"#),
            400,
            "malformed_request",
        ),
        (
            "application/json",
            r#"{"tenant_id":"not-a-uuid","activities":[]}"#.into(),
            400,
            "invalid_field",
        ),
        (
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":[]}}"#),
            400,
            "no_records",
        ),
        (
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":{{}}}}"#),
            400,
            "malformed_request",
        ),
        (
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":[{{}}],"priority":"urgent"}}"#),
            400,
            "invalid_field",
        ),
        (
            "application/json",
            format!(r#"{{"tenant_id":"{tenant}","activities":[{{}}],"idempotency_key":""}}"#),
            400,
            "invalid_field",
        ),
        (
            "application/json",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            400,
            "malformed_request",
        ),
        ("text/plain", "{}".into(), 415, "unsupported_media_type"),
    ];
    for (content_type, body, status, code) in cases {
        let response = app
            .post_raw("/data-scans", content_type, body.clone())
            .await;
        assert_eq!(
            response.status(),
            status,
            "{code}: {}",
            &body[..body.len().min(80)]
        );
        assert_error(response, status, code).await;
    }
    let invalid_utf8 = app
        .post_raw(
            "/data-scans",
            "application/json",
            vec![b'{', 0xff, 0xfe, b'}'],
        )
        .await;
    assert_error(invalid_utf8, 400, "malformed_request").await;
    assert_eq!(app.get("/health").await.status(), 200);
    app.stop().await;
}

/// A scan whose body reaches `ingest.large_scan_body_bytes` is staged in chunks of
/// `ingest.large_scan_chunk_records`; a smaller one in chunks of `ingest.chunk_records`.
/// The record counts of a tenant's staged chunks, in staging order.
async fn staged_record_counts(client: &tokio_postgres::Client, tenant: Uuid) -> Vec<i32> {
    client
        .query(
            "SELECT record_count FROM staged_chunks WHERE tenant_id = $1 ORDER BY chunk_id",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The API promises progress at least every 1,000 records, and a scan's progress advances once
/// per chunk: with the shipped settings, a scan past `large_scan_body_bytes` too is staged in
/// chunks of at most 1,000 records.
#[tokio::test]
async fn with_default_settings_a_large_scans_progress_advances_every_1000_records() {
    let app = spawn_app().await;
    let client = app.db().await;
    let tenant = app.paused_tenant().await;
    let body = serde_json::to_vec(&json!({"tenant_id": tenant, "activities": activities(27_000)}))
        .unwrap();
    assert!(
        body.len() >= 8 << 20,
        "{} bytes: past large_scan_body_bytes",
        body.len()
    );
    let response = app.post_raw("/data-scans", "application/json", body).await;
    assert_eq!(response.status(), 202);
    let counts = staged_record_counts(&client, tenant).await;
    assert_eq!(counts.iter().sum::<i32>(), 27_000);
    assert!(counts.iter().all(|count| *count <= 1_000), "{counts:?}");
}

#[tokio::test]
async fn a_large_scan_is_staged_in_larger_chunks() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.ingest.chunk_records = 100;
        settings.ingest.large_scan_chunk_records = 500;
        settings.ingest.large_scan_body_bytes = 200_000;
    })
    .await;
    let client = app.db().await;
    // Paused: the chunks stay staged, to be counted.
    let (large, small) = (app.paused_tenant().await, app.paused_tenant().await);
    // About 330 kB and 100 kB of body.
    assert_eq!(app.post_scan(large, activities(1_000)).await.status(), 202);
    assert_eq!(app.post_scan(small, activities(300)).await.status(), 202);
    for (tenant, expected) in [(large, vec![500, 500]), (small, vec![100, 100, 100])] {
        let chunks = staged_record_counts(&client, tenant).await;
        assert_eq!(chunks, expected, "tenant {tenant}");
    }
}

/// Scan bodies of 1 to 16 MiB are read into buffers kept from earlier bodies
/// (`memory::BodyBuffers`): one after another, each body must be read whole and alone, with
/// nothing of the body before it.
#[tokio::test]
async fn consecutive_large_scans_are_each_stored_exactly_as_sent() {
    let app = spawn_app().await;
    let (first_tenant, second_tenant) = (Uuid::new_v4(), Uuid::new_v4());
    let first = activities(6_000);
    let second: Vec<Value> = (0..4_000)
        .map(|index| {
            json!({
                "activity_name": format!("Chăm sóc khách hàng {index}"),
                "pdpl_category": "Category 1: Sensitive Personal Data",
                "data_fields": ["số điện thoại", "địa chỉ thường trú", "lịch sử giao dịch"],
                "purpose": "Hỗ trợ khách hàng qua tổng đài và ứng dụng di động",
            })
        })
        .collect();
    // Both kept-buffer sized, the second smaller: it is read into the first one's buffer.
    let size = |tenant: Uuid, records: &Vec<Value>| {
        serde_json::to_vec(&json!({"tenant_id": tenant, "activities": records}))
            .unwrap()
            .len()
    };
    let (first_size, second_size) = (size(first_tenant, &first), size(second_tenant, &second));
    assert!(
        first_size > second_size && second_size > 1 << 20,
        "{first_size} {second_size}"
    );
    let mut scans = Vec::new();
    for (tenant, records) in [(first_tenant, first), (second_tenant, second)] {
        let response = app.post_scan(tenant, records).await;
        scans.push((tenant, accepted_scan_id(response).await));
    }
    for (tenant, scan_id) in &scans {
        let scan = app.wait_for_scan(*tenant, scan_id, COMPLETION).await;
        assert_eq!(scan["status"], "completed", "{scan}");
    }
    // Per tenant: rows, distinct indexes, and rows whose name is the prefix and their index.
    let db = app.db().await;
    for (tenant, prefix, expected) in [
        (first_tenant, "Quản lý hồ sơ nhân sự ", 6_000_i64),
        (second_tenant, "Chăm sóc khách hàng ", 4_000),
    ] {
        let row = db
            .query_one(
                "SELECT count(*), count(DISTINCT record_index), \
                        count(*) FILTER (WHERE activity_name = $2 || record_index) \
                 FROM processing_activities WHERE tenant_id = $1",
                &[&tenant, &prefix],
            )
            .await
            .unwrap();
        let counts: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(counts, (expected, expected, expected), "{prefix}");
    }
    app.assert_activity_counts_are_exact().await;
    app.stop().await;
}
