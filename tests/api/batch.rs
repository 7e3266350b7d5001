use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{activities, assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_ten_thousand_record_batch_is_committed_before_its_201() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let response = app
        .post_json(
            &format!("/batch/processing-activities?tenant_id={tenant}"),
            &json!({ "activities": activities(10_000) }),
        )
        .await;
    assert_eq!(response.status(), 201);
    // Read before anything else happens: 201 means committed.
    assert_eq!(app.activities_of(tenant).await, 10_000);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["records_created"], 10_000);
    assert_eq!(body["records_failed"], 0);
    assert!(body["execution_time_seconds"].as_f64().unwrap() > 0.0);
    assert!(body["message_vi"].as_str().unwrap().contains("đã tạo"));
    let batch_rows = app
        .count(
            "SELECT count(*) FROM processing_activities WHERE tenant_id = $1 AND scan_id IS NULL",
            &[&tenant],
        )
        .await;
    assert_eq!(batch_rows, 10_000);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_reports_invalid_records_and_writes_the_rest() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let mut records = activities(20);
    records[4]["pdpl_category"] = json!("Category 9");
    records[9]["activity_name"] = json!("x".repeat(501));
    let response = app
        .post_json(
            &format!("/batch/processing-activities?tenant_id={tenant}"),
            &json!({ "activities": records }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["records_created"], 18);
    assert_eq!(body["records_failed"], 2);
    assert_eq!(body["errors"][0]["index"], 4);
    assert_eq!(body["errors"][1]["field"], "activity_name");
    assert_eq!(app.activities_of(tenant).await, 18);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_refusals() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let path = format!("/batch/processing-activities?tenant_id={tenant}");
    assert_error(
        app.post_json(&path, &json!({ "activities": [{}] })).await,
        422,
        "no_valid_records",
    )
    .await;
    assert_error(
        app.post_json(&path, &json!({ "activities": activities(10_001) }))
            .await,
        413,
        "too_many_records",
    )
    .await;
    assert_error(
        app.post_json(
            "/batch/processing-activities",
            &json!({ "activities": activities(1) }),
        )
        .await,
        400,
        "missing_tenant_id",
    )
    .await;
    assert_error(
        app.post_json(
            "/batch/processing-activities?tenant_id=x",
            &json!({ "activities": activities(1) }),
        )
        .await,
        400,
        "invalid_field",
    )
    .await;
    assert_eq!(app.activities_of(tenant).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_that_would_wait_too_long_for_its_throttle_gets_429() {
    let app = spawn_app_with(|settings| settings.ingest.batch_max_wait_secs = 2).await;
    let tenant = Uuid::new_v4();
    app.db()
        .await
        .execute(
            "INSERT INTO tenants (tenant_id, records_per_second, burst, max_backlog_records) VALUES ($1, 100, 100, 1000000)",
            &[&tenant],
        )
        .await
        .unwrap();
    let response = app
        .post_json(
            &format!("/batch/processing-activities?tenant_id={tenant}"),
            &json!({ "activities": activities(1_000) }),
        )
        .await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 2, "{retry_after}");
    assert_error(response, 429, "tenant_throttled").await;
    assert_eq!(app.activities_of(tenant).await, 0);
    app.stop().await;
}
