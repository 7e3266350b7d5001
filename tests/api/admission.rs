//! The admission budget: submissions wait for memory before their bodies are read, large ones
//! in a queue of their own, and a submission that waits too long is told to retry.
//!
//! A client that declares a body and then does not send it holds its share of the budget for
//! as long as it keeps the engine waiting, which is how these tests fill the budget.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::helpers::{activities, assert_error, spawn_app_with, TestApp, BOOTSTRAP_ADMIN_TOKEN};

/// Budget of these tests: 1 MiB, so a body of 300 kB (charged three times) is large.
const BUDGET_BYTES: u64 = 1024 * 1024;
const LARGE_BODY_BYTES: usize = 300_000;

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

/// Four uploads of 80 kB (charged 234 KiB each, not large) that hold 937 KiB of the budget and
/// never finish, until the returned connections are dropped.
async fn hold_most_of_the_budget(app: &TestApp) -> Vec<TcpStream> {
    let mut holders = Vec::new();
    for _ in 0..4 {
        holders.push(stalled_upload(app, 80_000).await);
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

    // About 60 kB: its charge does not fit in the 87 KiB left.
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
    // 900 kB is charged 2.6 MiB, more than the whole 1 MiB budget: it is admitted alone, but
    // charged only three quarters of the budget.
    let app = app_with_small_budget(30).await;
    let _huge = stalled_upload(&app, 900_000).await;
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
