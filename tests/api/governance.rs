//! Keys and scopes, the admin API, throttling, backlog limits, pause and resume, fairness.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    accepted_scan_id, activities, assert_error, spawn_app, spawn_app_on, spawn_app_with, TestApp,
};

const COMPLETION: Duration = Duration::from_secs(90);

async fn create_tenant(app: &TestApp, body: Value) -> Uuid {
    let response = app.post_json("/admin/tenants", &body).await;
    assert_eq!(response.status(), 201);
    let tenant: Value = response.json().await.unwrap();
    Uuid::parse_str(tenant["tenant_id"].as_str().unwrap()).unwrap()
}

async fn mint(app: &TestApp, body: Value) -> (String, String) {
    let response = app.post_json("/admin/keys", &body).await;
    assert_eq!(response.status(), 201);
    let key: Value = response.json().await.unwrap();
    (
        key["key_id"].as_str().unwrap().to_string(),
        key["token"].as_str().unwrap().to_string(),
    )
}

async fn scan_as(
    app: &TestApp,
    token: Option<&str>,
    tenant: Uuid,
    count: usize,
) -> reqwest::Response {
    app.request_as(Method::POST, "/data-scans", token)
        .json(&json!({ "tenant_id": tenant, "activities": activities(count) }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tokens_and_scopes_decide_what_a_caller_may_do() {
    let app = spawn_app().await;
    let tenant_a = create_tenant(&app, json!({ "name": "Công ty A", "region": "north" })).await;
    let tenant_b = create_tenant(&app, json!({ "name": "Công ty B", "region": "south" })).await;
    let (key_a_id, key_a) = mint(
        &app,
        json!({ "scope": "tenant", "tenant_id": tenant_a, "name": "máy quét A" }),
    )
    .await;
    let (_, service_key) = mint(&app, json!({ "scope": "service" })).await;

    // No token, a malformed token, an unknown key: 401 with a challenge.
    let response = scan_as(&app, None, tenant_a, 1).await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_error(response, 401, "missing_token").await;
    assert_error(
        scan_as(&app, Some("not-a-key"), tenant_a, 1).await,
        401,
        "invalid_token",
    )
    .await;
    let forged = format!("{}x", &key_a[..key_a.len() - 1]);
    assert_error(
        scan_as(&app, Some(&forged), tenant_a, 1).await,
        401,
        "invalid_token",
    )
    .await;

    // A tenant key works for its tenant and gets 403 for another.
    let response = scan_as(&app, Some(&key_a), tenant_a, 5).await;
    assert_eq!(response.status(), 202);
    let scan_a: Value = response.json().await.unwrap();
    assert_error(
        scan_as(&app, Some(&key_a), tenant_b, 5).await,
        403,
        "tenant_out_of_scope",
    )
    .await;
    let response = app
        .request_as(
            Method::GET,
            &format!("/data-scans?tenant_id={tenant_b}"),
            Some(&key_a),
        )
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "tenant_out_of_scope").await;
    let response = app
        .request_as(
            Method::POST,
            &format!("/batch/processing-activities?tenant_id={tenant_b}"),
            Some(&key_a),
        )
        .json(&json!({ "activities": activities(1) }))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "tenant_out_of_scope").await;

    for read in [
        "/analytics/compliance-summary",
        "/analytics/processing-activities",
    ] {
        let response = app
            .request_as(
                Method::GET,
                &format!("{read}?tenant_id={tenant_b}"),
                Some(&key_a),
            )
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "tenant_out_of_scope").await;
        let response = app
            .request_as(Method::GET, &format!("{read}?tenant_id={tenant_a}"), None)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "missing_token").await;
    }

    // Another tenant's scan is a 404, never a hint that it exists.
    let scan_b: Value = scan_as(&app, Some(&service_key), tenant_b, 5)
        .await
        .json()
        .await
        .unwrap();
    let response = app
        .request_as(
            Method::GET,
            &format!(
                "/data-scans/{}?tenant_id={tenant_a}",
                scan_b["scan_id"].as_str().unwrap()
            ),
            Some(&key_a),
        )
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    let response = app
        .request_as(
            Method::GET,
            &format!(
                "/data-scans/{}?tenant_id={tenant_a}",
                scan_a["scan_id"].as_str().unwrap()
            ),
            Some(&key_a),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Admin routes refuse service and tenant keys.
    for token in [&service_key, &key_a] {
        let response = app
            .request_as(Method::GET, "/admin/tenants", Some(token))
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "admin_scope_required").await;
    }

    // A service key registers a tenant it names for the first time.
    let new_tenant = Uuid::new_v4();
    assert_eq!(
        scan_as(&app, Some(&service_key), new_tenant, 3)
            .await
            .status(),
        202
    );
    assert_eq!(
        app.get(&format!("/admin/tenants/{new_tenant}"))
            .await
            .status(),
        200
    );

    // Revocation takes effect on the next request.
    let response = app
        .request(Method::DELETE, &format!("/admin/keys/{key_a_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_error(
        scan_as(&app, Some(&key_a), tenant_a, 1).await,
        401,
        "invalid_token",
    )
    .await;
    let response = app
        .request(Method::DELETE, &format!("/admin/keys/{key_a_id}"))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "key_not_found").await;

    // Keys are stored only as hashes; every admin action is audited.
    let client = app.db().await;
    let secret = key_a.rsplit('_').next().unwrap();
    let plaintext_copies: i64 = client
        .query_one(
            "SELECT count(*) FROM api_keys WHERE position(convert_to($1, 'UTF8') IN secret_hash) > 0 OR name LIKE '%' || $1 || '%'",
            &[&secret],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plaintext_copies, 0);
    let hashes: i64 = client
        .query_one(
            "SELECT count(*) FROM api_keys WHERE octet_length(secret_hash) = 32",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hashes, 2);
    let actions: Vec<String> = client
        .query(
            "SELECT action FROM audit_log \
             WHERE action NOT IN ('audit_maintenance', 'scan_accepted', 'scan_completed') \
             ORDER BY occurred_at, event_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        actions,
        vec![
            "tenant_created",
            "tenant_created",
            "key_minted",
            "key_minted",
            "key_revoked"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn admin_requests_are_validated() {
    let app = spawn_app().await;
    assert_error(
        app.post_json("/admin/tenants", &json!({ "name": "" }))
            .await,
        400,
        "invalid_field",
    )
    .await;
    assert_error(
        app.post_json("/admin/tenants", &json!({ "name": "X", "region": "west" }))
            .await,
        400,
        "invalid_field",
    )
    .await;
    assert_error(
        app.post_json("/admin/tenants", &json!({ "name": "X", "burst": 0 }))
            .await,
        400,
        "invalid_field",
    )
    .await;
    assert_error(
        app.post_json("/admin/tenants", &json!({ "name": "X", "colour": "red" }))
            .await,
        400,
        "malformed_request",
    )
    .await;
    let tenant = create_tenant(&app, json!({ "name": "Sở Y tế", "region": "central" })).await;
    assert_error(
        app.post_json(
            "/admin/tenants",
            &json!({ "tenant_id": tenant, "name": "again" }),
        )
        .await,
        409,
        "tenant_exists",
    )
    .await;
    assert_error(
        app.post_json("/admin/keys", &json!({ "scope": "tenant" }))
            .await,
        400,
        "invalid_scope",
    )
    .await;
    assert_error(
        app.post_json("/admin/keys", &json!({ "scope": "root" }))
            .await,
        400,
        "invalid_scope",
    )
    .await;
    assert_error(
        app.post_json(
            "/admin/keys",
            &json!({ "scope": "tenant", "tenant_id": Uuid::new_v4() }),
        )
        .await,
        404,
        "tenant_not_found",
    )
    .await;
    assert_error(
        app.get(&format!("/admin/tenants/{}", Uuid::new_v4())).await,
        404,
        "tenant_not_found",
    )
    .await;
    assert_error(
        app.get("/admin/tenants/nope").await,
        400,
        "invalid_tenant_id",
    )
    .await;
    let response = app
        .request(Method::PUT, &format!("/admin/tenants/{tenant}/limits"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_field").await;
    let listed: Value = app.get("/admin/tenants").await.json().await.unwrap();
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["tenants"][0]["region"], "central");
    assert_eq!(listed["tenants"][0]["status_vi"], "đang hoạt động");
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_throttled_to_a_thousand_records_a_second_takes_at_least_eight_seconds_for_ten_thousand(
) {
    let app = spawn_app().await;
    let tenant = create_tenant(
        &app,
        json!({ "name": "Chậm", "records_per_second": 1000, "burst": 1000 }),
    )
    .await;
    let started = Instant::now();
    let accepted: Value = app
        .post_scan(tenant, activities(10_000))
        .await
        .json()
        .await
        .unwrap();
    let scan = app
        .wait_for_scan(tenant, accepted["scan_id"].as_str().unwrap(), COMPLETION)
        .await;
    let elapsed = started.elapsed();
    assert_eq!(scan["records_processed"], 10_000);
    assert!(elapsed >= Duration::from_secs(8), "finished in {elapsed:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_full_backlog_gets_429_with_retry_after() {
    let app = spawn_app().await;
    let tenant = create_tenant(
        &app,
        json!({ "name": "Đầy", "records_per_second": 500, "max_backlog_records": 1500 }),
    )
    .await;
    assert_eq!(
        app.request(Method::POST, &format!("/admin/tenants/{tenant}/pause"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(app.post_scan(tenant, activities(1_000)).await.status(), 202);
    let response = app.post_scan(tenant, activities(1_000)).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        retry_after, 1,
        "500 records over the limit at 500 records/s"
    );
    let body = assert_error(response, 429, "tenant_backlog_full").await;
    assert_eq!(body["details"]["backlog_records"], 1_000);
    // Raising the limit applies at once, without a restart.
    let response = app
        .request(Method::PUT, &format!("/admin/tenants/{tenant}/limits"))
        .json(&json!({ "max_backlog_records": 5000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.post_scan(tenant, activities(1_000)).await.status(), 202);
    let shown: Value = app
        .get(&format!("/admin/tenants/{tenant}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["backlog_records"], 2_000);
    assert_eq!(shown["paused"], true);
    app.stop().await;
}

#[tokio::test]
async fn a_paused_tenant_is_accepted_but_written_only_after_resume_even_across_a_restart() {
    let first = spawn_app().await;
    let tenant = create_tenant(&first, json!({ "name": "Tạm dừng" })).await;
    let response = first
        .request(Method::POST, &format!("/admin/tenants/{tenant}/pause"))
        .send()
        .await
        .unwrap();
    let paused: Value = response.json().await.unwrap();
    assert_eq!(paused["status_vi"], "tạm dừng");
    let limits = first
        .request(Method::PUT, &format!("/admin/tenants/{tenant}/limits"))
        .json(&json!({ "records_per_second": 4321, "burst": 2000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(limits.status(), 200);
    let accepted: Value = first
        .post_scan(tenant, activities(3_000))
        .await
        .json()
        .await
        .unwrap();
    let scan_id = accepted["scan_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(first.get_scan(tenant, &scan_id).await["status"], "pending");
    assert_eq!(first.activities_of(tenant).await, 0);
    let database = first.database.clone();
    first.stop().await;

    // Limits and the pause survive a restart.
    let second = spawn_app_on(database, |_| {}).await;
    let shown: Value = second
        .get(&format!("/admin/tenants/{tenant}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["limits"]["records_per_second"], 4321);
    assert_eq!(shown["limits"]["burst"], 2000);
    assert_eq!(shown["paused"], true);
    assert_eq!(shown["backlog_records"], 3_000);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(second.get_scan(tenant, &scan_id).await["status"], "pending");
    let response = second
        .request(Method::POST, &format!("/admin/tenants/{tenant}/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let scan = second.wait_for_scan(tenant, &scan_id, COMPLETION).await;
    assert_eq!(scan["records_processed"], 3_000);
    assert_eq!(second.activities_of(tenant).await, 3_000);
    second.stop().await;
}

/// One writer, one tenant with a six-thousand-chunk backlog: another tenant's small scan,
/// submitted after, completes while the backlog is still there. Chunks of 10 records make the
/// backlog seconds of transactions even on a fast machine while its body stays small, so the
/// small scan's own submission, slow when the suite's other tests load the machine, still lands
/// in front of it.
#[tokio::test]
async fn a_small_scan_is_not_queued_behind_another_tenants_backlog() {
    let app = spawn_app_with(|settings| {
        settings.writers.count = 1;
        settings.ingest.chunk_records = 10;
        settings.ingest.large_scan_chunk_records = 10;
    })
    .await;
    let big_tenant = Uuid::new_v4();
    let small_tenant = Uuid::new_v4();
    let big_id = accepted_scan_id(app.post_scan(big_tenant, activities(60_000)).await).await;
    let small_id = accepted_scan_id(app.post_scan(small_tenant, activities(100)).await).await;
    let small_scan = app.wait_for_scan(small_tenant, &small_id, COMPLETION).await;
    let big_tenant_now: Value = app
        .get(&format!("/admin/tenants/{big_tenant}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(small_scan["status"], "completed");
    assert!(
        big_tenant_now["backlog_records"].as_u64() > Some(0),
        "the backlog was gone before the small scan finished: {big_tenant_now}, small scan {small_scan}"
    );
    let big_scan = app.wait_for_scan(big_tenant, &big_id, COMPLETION).await;
    assert_eq!(big_scan["records_processed"], 60_000);
    assert!(small_scan["completed_at"].as_str() < big_scan["completed_at"].as_str());
    app.stop().await;
}
