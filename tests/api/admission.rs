//! The admission budget: submissions wait for memory before their bodies are read, large ones
//! in a lane of their own, and a submission that waits, or would wait, too long is told when to
//! retry.
//!
//! A client that declares a body and then does not send it holds its share of the budget for
//! as long as it keeps the engine waiting, which is how these tests fill the budget.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::helpers::{activities, assert_error, spawn_app_with, TestApp, BOOTSTRAP_ADMIN_TOKEN};

/// Budget of these tests: 32 MiB, so a submission charged more than 8 MiB is large (the large
/// lane holds 24 MiB). A body is charged 1.15 times its size and 2.5 MiB.
const BUDGET_BYTES: u64 = 32 * 1024 * 1024;
/// Charged 9.1 MiB: large, and two fit in the large lane at once.
const LARGE_BODY_BYTES: usize = 6_000_000;
/// Charged 6.1 MiB: small, and five hold 30.6 MiB of the budget.
const HOLDING_BODY_BYTES: usize = 3_300_000;

async fn app_with_small_budget(wait_secs: u64) -> TestApp {
    spawn_app_with(|settings| {
        settings.ingest.admission_budget_bytes = BUDGET_BYTES;
        settings.ingest.admission_wait_secs = wait_secs;
    })
    .await
}

/// Starts a scan whose body declares `length` bytes but sends only its first bytes, and keeps
/// the connection open: the engine admits it and then waits for the rest.
async fn stalled_upload(app: &TestApp, length: usize) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address)
        .await
        .expect("the engine accepts connections");
    let head = format!(
        "POST /data-scans HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {BOOTSTRAP_ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\r\n{{\"tenant_id\": "
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("the head is sent");
    stream
}

/// Five small uploads that hold 30.6 MiB of the budget (less than a 10-record scan's 2.5 MiB
/// is left) and never finish, until the returned connections are dropped.
async fn hold_most_of_the_budget(app: &TestApp) -> Vec<TcpStream> {
    let mut holders = Vec::new();
    for _ in 0..5 {
        holders.push(stalled_upload(app, HOLDING_BODY_BYTES).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    holders
}

/// A 10-record scan is answered 202 within 10 s while `blockers` hold or wait for the budget.
async fn assert_a_small_scan_is_accepted_within_10_s(app: &TestApp, blockers: &str) {
    let started = Instant::now();
    let response = app.post_scan(Uuid::new_v4(), activities(10)).await;
    let waited = started.elapsed();
    assert_eq!(
        response.status(),
        202,
        "answered {} after {waited:?}",
        response.status()
    );
    assert!(
        waited < Duration::from_secs(10),
        "the small scan waited {waited:?} behind {blockers}"
    );
    let body: serde_json::Value = response.json().await.expect("a scan is JSON");
    assert_eq!(body["records_total"], json!(10));
}

#[tokio::test]
async fn a_submission_that_cannot_be_admitted_in_time_gets_503_engine_saturated() {
    let app = app_with_small_budget(1).await;
    let _holders = hold_most_of_the_budget(&app).await;

    // Its charge (2.6 MiB) does not fit in the 1.4 MiB left. No release has been seen, so
    // the engine has no rate to estimate from and waits the whole bound.
    let started = Instant::now();
    let response = app.post_scan(Uuid::new_v4(), activities(150)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["connection"],
        "close",
        "a connection whose body sat unread is not reused"
    );
    assert_error(response, 503, "engine_saturated").await;
    assert_eq!(
        app.count("SELECT count(*) FROM scans", &[]).await,
        0,
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_small_scan_is_not_queued_behind_large_uploads() {
    // Without the lane, the small scan would wait behind the second upload until that one gave
    // up after 30 s.
    let app = app_with_small_budget(30).await;
    // The first large upload holds most of the budget; the second waits for it, in the queue
    // of large submissions, not in front of small ones.
    let _first = stalled_upload(&app, LARGE_BODY_BYTES).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _second = stalled_upload(&app, LARGE_BODY_BYTES).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_a_small_scan_is_accepted_within_10_s(&app, "the large uploads").await;
}

#[tokio::test]
async fn an_upload_larger_than_the_budget_leaves_a_quarter_of_it_to_small_scans() {
    // 40 MB is charged 46 MiB, more than the whole 32 MiB budget: it is admitted alone, but
    // charged only the large lane's three quarters of the budget.
    let app = app_with_small_budget(30).await;
    let _huge = stalled_upload(&app, 40_000_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_a_small_scan_is_accepted_within_10_s(&app, "the huge upload").await;
}

/// A submission whose body sat unread while it waited for admission is answered with
/// `connection: close`, so the client does not reuse a connection its kernel saw stalled
/// (docs/PERFORMANCE.md, "Connections aborted by the client's kernel"); one that was admitted
/// at once keeps its connection.
#[tokio::test]
async fn a_connection_that_waited_for_admission_is_not_kept_alive() {
    let app = app_with_small_budget(30).await;
    let response = app.post_scan(Uuid::new_v4(), activities(10)).await;
    assert_eq!(response.status(), 202);
    assert!(
        !response.headers().contains_key("connection"),
        "{:?}",
        response.headers()
    );

    // Dropped 600 ms later, which frees the budget.
    let holders = hold_most_of_the_budget(&app).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        drop(holders);
    });
    let started = Instant::now();
    let response = app.post_scan(Uuid::new_v4(), activities(150)).await;
    let waited = started.elapsed();
    release.await.unwrap();
    assert_eq!(response.status(), 202, "answered after {waited:?}");
    assert!(
        waited >= Duration::from_millis(500),
        "answered after {waited:?}"
    );
    assert_eq!(response.headers()["connection"], "close");
}

#[tokio::test]
async fn a_second_large_upload_is_read_and_staged_while_the_first_still_holds_its_share() {
    // The first large upload holds 9.1 MiB and never finishes; a second (charged 9.3 MiB) fits
    // beside it in the large lane's 24 MiB, so it is read, parsed and staged at once rather
    // than waiting for the first (which would take the whole 30 s bound, then 503).
    let app = app_with_small_budget(30).await;
    let _first = stalled_upload(&app, LARGE_BODY_BYTES).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let response = post_large_scan(&app).await;
    let answered_after = started.elapsed();
    assert_eq!(response.status(), 202, "after {answered_after:?}");
    assert!(
        answered_after < Duration::from_secs(15),
        "answered after {answered_after:?}"
    );
}

/// Posts a scan of [`large_scan_body`] for a new tenant.
async fn post_large_scan(app: &TestApp) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/data-scans", app.address))
        .bearer_auth(BOOTSTRAP_ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(large_scan_body(Uuid::new_v4()))
        .send()
        .await
        .expect("the engine answers")
}

/// A scan whose body is large in these tests (about 6.2 MB: charged more than 8 MiB, and two
/// fit in the large lane).
fn large_scan_body(tenant_id: Uuid) -> String {
    let body = json!({ "tenant_id": tenant_id, "activities": activities(17_000) }).to_string();
    assert!(
        (5_500_000..6_500_000).contains(&body.len()),
        "{} bytes",
        body.len()
    );
    body
}

#[tokio::test]
async fn a_large_submission_whose_turn_is_far_is_refused_at_once_with_its_retry_after() {
    let wait_secs = 20;
    let app = app_with_small_budget(wait_secs).await;
    // The engine learns the large lane's pace from large scans staged one after another.
    for _ in 0..3 {
        let response = post_large_scan(&app).await;
        assert_eq!(response.status(), 202);
    }
    // Then uploads that never finish fill the large lane and queue behind it: at that pace
    // (tens of MiB a second at most), 40 of them are a wait far over 20 s.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        stalled.push(stalled_upload(&app, LARGE_BODY_BYTES).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let response = post_large_scan(&app).await;
    let answered_after = started.elapsed();
    assert!(
        answered_after < Duration::from_secs(5),
        "answered after {answered_after:?}, the wait bound being {wait_secs} s"
    );
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(response.headers()["connection"], "close");
    assert_error(response, 503, "engine_saturated").await;
    // Nothing of it was stored: only the three first scans are.
    assert_eq!(app.count("SELECT count(*) FROM scans", &[]).await, 3);
}
