use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn health_answers_ok() {
    let app = spawn_app().await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn database_health_reports_a_healthy_database() {
    let app = spawn_app().await;
    let response = app.get("/health/database").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["status_vi"], "hoạt động tốt");
    // Both pools answered; the read pool's connections act as the row-level-secured role.
    assert_eq!(body["write_pool"]["ok"], true, "{body}");
    assert_eq!(body["read_pool"]["ok"], true, "{body}");
    assert_eq!(body["read_pool"]["role"], "ingest_reader", "{body}");
    assert_eq!(body["writers"]["count"], 2);
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_bilingual_errors() {
    let app = spawn_app().await;
    assert_error(app.get("/no-such-route").await, 404, "not_found").await;
    let response = app
        .request(reqwest::Method::DELETE, "/health")
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "method_not_allowed").await;
    app.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let generated = app.get("/health").await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 36, "{id}");
    let echoed = app
        .request(reqwest::Method::GET, "/no-such-route")
        .header("x-request-id", "scanner-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), 404);
    assert_eq!(echoed.headers()["x-request-id"], "scanner-42");
    app.stop().await;
}
