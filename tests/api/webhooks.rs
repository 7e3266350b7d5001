//! Scan notifications: signed webhooks from the outbox, against a real receiver (a small HTTP
//! server on port 0 in the test), retried, failed and redelivered, isolated from each other,
//! safe across a kill and with two instances.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::helpers::{
    accepted_scan_id, activities, activity, assert_error, http_client, spawn_app_on,
    spawn_app_with, test_server, url_of, TestApp, BOOTSTRAP_ADMIN_TOKEN,
};
use crate::process::EngineProcess;

/// What the receiver does with a request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Answers 200 after this long.
    SlowOk(Duration),
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
    at: Instant,
    wall_clock: SystemTime,
}

/// A webhook receiver: records every request, answers from a script, then with its default.
struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// Requests being answered right now, per `webhook-id`, and the most ever seen at once.
    overlapping: Arc<Mutex<(HashMap<String, usize>, usize)>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    async fn start(script: Vec<Answer>, default: Answer) -> Receiver {
        Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), script, default).await
    }

    async fn start_on(address: SocketAddr, script: Vec<Answer>, default: Answer) -> Receiver {
        use warp::Filter;
        let received = Arc::new(Mutex::new(Vec::new()));
        let overlapping = Arc::new(Mutex::new((HashMap::new(), 0usize)));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (filter_received, filter_overlapping) = (received.clone(), overlapping.clone());
        let filter = warp::post()
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(move |headers: warp::http::HeaderMap, body: bytes::Bytes| {
                let received = filter_received.clone();
                let overlapping = filter_overlapping.clone();
                let script = script.clone();
                async move {
                    let headers: HashMap<String, String> = headers
                        .iter()
                        .map(|(name, value)| {
                            (name.to_string(), value.to_str().unwrap_or("").to_string())
                        })
                        .collect();
                    let webhook_id = headers.get("webhook-id").cloned().unwrap_or_default();
                    received.lock().unwrap().push(Received {
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                        at: Instant::now(),
                        wall_clock: SystemTime::now(),
                    });
                    {
                        let mut guard = overlapping.lock().unwrap();
                        let now = {
                            let count = guard.0.entry(webhook_id.clone()).or_insert(0);
                            *count += 1;
                            *count
                        };
                        guard.1 = guard.1.max(now);
                    }
                    let answer = script.lock().unwrap().pop_front().unwrap_or(default);
                    let status = match answer {
                        Answer::Status(status) => status,
                        Answer::SlowOk(delay) => {
                            tokio::time::sleep(delay).await;
                            200
                        }
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            200
                        }
                    };
                    *overlapping.lock().unwrap().0.get_mut(&webhook_id).unwrap() -= 1;
                    warp::reply::with_status(
                        "ok",
                        warp::http::StatusCode::from_u16(status).unwrap(),
                    )
                }
            });
        let (stop, stopped) = oneshot::channel::<()>();
        let (address, server) =
            warp::serve(filter).bind_with_graceful_shutdown(address, async move {
                let _ = stopped.await;
            });
        tokio::spawn(server);
        Receiver {
            address,
            received,
            overlapping,
            stop: Some(stop),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/scans", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn most_at_once(&self) -> usize {
        self.overlapping.lock().unwrap().1
    }

    async fn wait_for_requests(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} requests after {timeout:?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Settings every test here uses: receivers on loopback, quick retries.
fn webhook_settings(settings: &mut ingest_engine::config::Settings) {
    settings.webhooks.allow_private_targets = true;
    settings.webhooks.retry_base_secs = 1;
    settings.webhooks.retry_cap_secs = 2;
    settings.webhooks.poll_interval_ms = 100;
}

async fn create_tenant(app: &TestApp) -> Uuid {
    let tenant_id = Uuid::new_v4();
    let response = app
        .post_json(
            "/admin/tenants",
            &json!({ "tenant_id": tenant_id, "name": "Công ty Thông báo" }),
        )
        .await;
    assert_eq!(response.status(), 201);
    tenant_id
}

/// Registers an endpoint; returns its id and signing secret.
async fn register(app: &TestApp, tenant_id: Uuid, url: &str, events: &[&str]) -> (Uuid, String) {
    let response = app
        .post_json(
            &format!("/admin/tenants/{tenant_id}/webhooks"),
            &json!({ "url": url, "events": events, "description": "Máy quét chính" }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["endpoint_id"].as_str().unwrap().parse().unwrap(),
        body["signing_secret"].as_str().unwrap().to_string(),
    )
}

async fn deliveries(app: &TestApp, tenant_id: Uuid, status: &str) -> Vec<Value> {
    let filter = if status.is_empty() {
        String::new()
    } else {
        format!("?status={status}")
    };
    let response = app
        .get(&format!(
            "/admin/tenants/{tenant_id}/webhook-deliveries{filter}"
        ))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["deliveries"].as_array().unwrap().clone()
}

async fn wait_for_delivery(
    app: &TestApp,
    tenant_id: Uuid,
    status: &str,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(delivery) = deliveries(app, tenant_id, status).await.first() {
            return delivery.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {status} delivery after {timeout:?}: {:?}",
            deliveries(app, tenant_id, "").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Verifies a request's Standard Webhooks signature with the secret from registration,
/// independently of the engine's code.
fn assert_signed(request: &Received, secret: &str) {
    let id = &request.headers["webhook-id"];
    let timestamp = &request.headers["webhook-timestamp"];
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{}", request.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let presented = &request.headers["webhook-signature"];
    assert!(
        presented.split(' ').any(|signature| signature == expected),
        "signature {presented} does not verify (expected {expected})"
    );
    let sent_at: i64 = timestamp.parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((now - sent_at).abs() < 60, "timestamp {sent_at} is not now");
}

/// A receiver that answers 500 twice, then 200, gets three attempts with one `webhook-id`,
/// each signed with the secret shown at registration; the delivery ends `succeeded`, with its
/// audit entry. An endpoint subscribed to another event gets nothing.
#[tokio::test]
async fn a_receiver_failing_twice_gets_three_signed_attempts_with_one_id() {
    let app = spawn_app_with(webhook_settings).await;
    let receiver = Receiver::start(
        vec![Answer::Status(500), Answer::Status(500)],
        Answer::Status(200),
    )
    .await;
    let other = Receiver::start(Vec::new(), Answer::Status(200)).await;
    let tenant_id = create_tenant(&app).await;
    let (_, secret) = register(&app, tenant_id, &receiver.url(), &["scan.completed"]).await;
    register(&app, tenant_id, &other.url(), &["scan.failed"]).await;

    let scan_id = accepted_scan_id(app.post_scan(tenant_id, activities(25)).await).await;
    app.wait_for_scan(tenant_id, &scan_id, Duration::from_secs(30))
        .await;
    let delivery = wait_for_delivery(&app, tenant_id, "succeeded", Duration::from_secs(30)).await;

    let requests = receiver.received();
    assert_eq!(requests.len(), 3, "{requests:?}");
    let webhook_id = &requests[0].headers["webhook-id"];
    assert_eq!(webhook_id, delivery["webhook_id"].as_str().unwrap());
    for request in &requests {
        assert_eq!(&request.headers["webhook-id"], webhook_id);
        assert_eq!(request.headers["content-type"], "application/json");
        assert_signed(request, &secret);
        assert_eq!(
            request.body, requests[0].body,
            "every attempt sends the same body"
        );
    }
    // Backoff: about 1 s, then about 2 s (retry_base_secs = 1, jitter adds up to a quarter).
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    assert!(first_gap >= Duration::from_millis(900), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(1900), "{second_gap:?}");

    let body: Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(body["type"], "scan.completed");
    assert_eq!(body["data"]["scan_id"], scan_id.as_str());
    assert_eq!(body["data"]["tenant_id"], tenant_id.to_string());
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(body["data"]["status_vi"], "hoàn thành");
    assert_eq!(body["data"]["records_total"], 25);
    assert_eq!(body["data"]["records_processed"], 25);
    assert_eq!(body["data"]["records_failed"], 0);
    assert!(body["data"]["completed_at"].is_string(), "{body}");

    assert_eq!(delivery["attempts"], 3);
    assert_eq!(delivery["last_status_code"], 200);
    assert_eq!(delivery["event"], "scan.completed");
    assert!(other.received().is_empty());
    let client = app.db().await;
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "one delivery per matching endpoint");
    let audited: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'webhook_delivered' \
             AND subject = $2",
            &[&tenant_id, &webhook_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
    app.stop().await;
}

/// A receiver down past `max_attempts` leaves the delivery `failed` and listed with its last
/// error; once it is back, a redelivery arrives once, with the same `webhook-id`.
#[tokio::test]
async fn a_delivery_failed_for_good_is_listed_and_redelivered_once() {
    let app = spawn_app_with(|settings| {
        webhook_settings(settings);
        settings.webhooks.max_attempts = 2;
    })
    .await;
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hooks/scans");
    let tenant_id = create_tenant(&app).await;
    let (_, secret) = register(
        &app,
        tenant_id,
        &url,
        &["scan.completed", "scan.completed_with_errors"],
    )
    .await;
    let mut records = activities(3);
    records.push(json!({ "activity_name": "" }));
    let scan_id = accepted_scan_id(app.post_scan(tenant_id, records).await).await;

    let failed = wait_for_delivery(&app, tenant_id, "failed", Duration::from_secs(30)).await;
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert_eq!(failed["status_vi"], "gửi thất bại");
    assert_eq!(failed["event"], "scan.completed_with_errors");
    assert_eq!(failed["scan_id"], scan_id.as_str());
    assert!(failed["last_status_code"].is_null(), "{failed}");
    assert!(
        !failed["last_error"].as_str().unwrap().is_empty(),
        "{failed}"
    );
    let delivery_id = failed["delivery_id"].as_str().unwrap().to_string();

    let receiver = Receiver::start_on(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Vec::new(),
        Answer::Status(204),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        receiver.received().is_empty(),
        "a failed delivery is not retried on its own"
    );
    let redeliver =
        format!("/admin/tenants/{tenant_id}/webhook-deliveries/{delivery_id}/redeliver");
    let response = app.post_json(&redeliver, &json!({})).await;
    assert_eq!(response.status(), 202);
    let delivered = wait_for_delivery(&app, tenant_id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(delivered["delivery_id"], delivery_id.as_str());
    assert_eq!(delivered["redeliveries"], 1);
    assert_eq!(delivered["total_attempts"], 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].headers["webhook-id"], delivery_id);
    assert_signed(&requests[0], &secret);
    let body: Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(body["data"]["records_failed"], 1);
    assert_eq!(body["data"]["status_vi"], "hoàn thành có lỗi");

    // Unknown, malformed, and (for another tenant's key) out of scope.
    let unknown = format!(
        "/admin/tenants/{tenant_id}/webhook-deliveries/{}/redeliver",
        Uuid::new_v4()
    );
    assert_error(
        app.post_json(&unknown, &json!({})).await,
        404,
        "delivery_not_found",
    )
    .await;
    let malformed = format!("/admin/tenants/{tenant_id}/webhook-deliveries/nope/redeliver");
    assert_error(
        app.post_json(&malformed, &json!({})).await,
        400,
        "invalid_delivery_id",
    )
    .await;
    let response = app
        .get(&format!(
            "/admin/tenants/{tenant_id}/webhook-deliveries?status=lost"
        ))
        .await;
    assert_error(response, 400, "invalid_status").await;
    // Found by schemathesis: an empty status was taken as no filter, which the document does
    // not allow.
    let response = app
        .get(&format!(
            "/admin/tenants/{tenant_id}/webhook-deliveries?status="
        ))
        .await;
    assert_error(response, 400, "invalid_status").await;
    app.stop().await;
}

/// A receiver that never answers costs its own delivery a time-out; another tenant's delivery
/// meanwhile arrives within a second of its scan finishing.
#[tokio::test]
async fn a_receiver_that_never_answers_delays_no_other_tenant() {
    let app = spawn_app_with(|settings| {
        webhook_settings(settings);
        settings.webhooks.timeout_secs = 3;
    })
    .await;
    let stuck = Receiver::start(Vec::new(), Answer::Hang).await;
    let prompt = Receiver::start(Vec::new(), Answer::Status(200)).await;
    let stuck_tenant = create_tenant(&app).await;
    let prompt_tenant = create_tenant(&app).await;
    register(&app, stuck_tenant, &stuck.url(), &["scan.completed"]).await;
    register(&app, prompt_tenant, &prompt.url(), &["scan.completed"]).await;

    accepted_scan_id(app.post_scan(stuck_tenant, activities(5)).await).await;
    stuck.wait_for_requests(1, Duration::from_secs(30)).await;
    let scan_id = accepted_scan_id(app.post_scan(prompt_tenant, activities(5)).await).await;
    let requests = prompt.wait_for_requests(1, Duration::from_secs(30)).await;
    let completed_at: chrono::DateTime<chrono::Utc> = app
        .db()
        .await
        .query_one(
            "SELECT completed_at FROM scans WHERE tenant_id = $1 AND scan_id = $2::text::uuid",
            &[&prompt_tenant, &scan_id],
        )
        .await
        .unwrap()
        .get(0);
    let received_at: chrono::DateTime<chrono::Utc> = requests[0].wall_clock.into();
    let lag = received_at - completed_at;
    assert!(
        lag < chrono::Duration::milliseconds(1000),
        "delivered {lag} after the scan finished"
    );

    // The stuck attempt times out and is scheduled again, with the reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = deliveries(&app, stuck_tenant, "pending").await;
        if let Some(error) = pending[0]["last_error"].as_str() {
            assert!(error.contains("did not answer"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "{pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// Loopback, metadata and names resolving to loopback are refused at registration without
/// `webhooks.allow_private_targets`, and `http://` without `allow_http`; with the flag they
/// are accepted. Bad bodies get their bilingual 400s.
#[tokio::test]
async fn registration_refuses_private_targets_unless_allowed() {
    let strict = spawn_app_with(|settings| settings.webhooks.allow_http = true).await;
    let tenant_id = create_tenant(&strict).await;
    let path = format!("/admin/tenants/{tenant_id}/webhooks");
    for url in [
        "http://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:9000/hooks",
        "https://[::1]/",
        "http://10.0.0.8/",
    ] {
        let response = strict
            .post_json(&path, &json!({ "url": url, "events": ["scan.completed"] }))
            .await;
        let body = assert_error(response, 422, "webhook_target_refused").await;
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("allow_private_targets"),
            "{body}"
        );
    }
    for (body, code) in [
        (
            json!({ "url": "ftp://example.com/", "events": ["scan.completed"] }),
            "invalid_webhook_url",
        ),
        (
            json!({ "url": "https://user:pw@example.com/", "events": ["scan.completed"] }),
            "invalid_webhook_url",
        ),
        (
            json!({ "url": "https://example.com/", "events": [] }),
            "invalid_field",
        ),
        (
            json!({ "url": "https://example.com/", "events": ["scan.started"] }),
            "invalid_field",
        ),
        (
            json!({ "url": "https://example.com/", "events": ["scan.completed"], "description": "a\u{0}b" }),
            "invalid_field",
        ),
        (
            json!({ "url": "https://example.com/", "events": ["scan.completed"], "secret": "mine" }),
            "malformed_request",
        ),
    ] {
        assert_error(strict.post_json(&path, &body).await, 400, code).await;
    }
    strict.stop().await;

    let no_http = spawn_app_with(|_| {}).await;
    let tenant_id = create_tenant(&no_http).await;
    let response = no_http
        .post_json(
            &format!("/admin/tenants/{tenant_id}/webhooks"),
            &json!({ "url": "http://127.0.0.1/", "events": ["scan.completed"] }),
        )
        .await;
    assert_error(response, 400, "invalid_webhook_url").await;
    no_http.stop().await;

    let open = spawn_app_with(|settings| settings.webhooks.allow_private_targets = true).await;
    let tenant_id = create_tenant(&open).await;
    for url in [
        "http://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:9000/hooks",
    ] {
        register(&open, tenant_id, url, &["scan.completed"]).await;
    }
    let listed: Value = open
        .get(&format!("/admin/tenants/{tenant_id}/webhooks"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 3);
    let text = listed.to_string();
    assert!(!text.contains("whsec_"), "a secret is never listed: {text}");
    let endpoint_id = listed["webhooks"][0]["endpoint_id"].as_str().unwrap();
    let response = open
        .request(
            reqwest::Method::DELETE,
            &format!("/admin/tenants/{tenant_id}/webhooks/{endpoint_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let listed: Value = open
        .get(&format!("/admin/tenants/{tenant_id}/webhooks"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 2);
    open.stop().await;
}

/// A tenant key manages its own tenant's endpoints and no other's; a service key none.
#[tokio::test]
async fn a_tenant_key_manages_its_own_endpoints_only() {
    let app = spawn_app_with(webhook_settings).await;
    let own = create_tenant(&app).await;
    let other = create_tenant(&app).await;
    let minted: Value = app
        .post_json(
            "/admin/keys",
            &json!({ "scope": "tenant", "tenant_id": own, "name": "quét" }),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().expect("a minted key").to_string();
    let body = json!({ "url": "http://127.0.0.1:9/", "events": ["scan.completed"] });
    let response = app
        .request_as(
            reqwest::Method::POST,
            &format!("/admin/tenants/{own}/webhooks"),
            Some(&token),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = app
        .request_as(
            reqwest::Method::POST,
            &format!("/admin/tenants/{other}/webhooks"),
            Some(&token),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = app
        .request_as(
            reqwest::Method::GET,
            &format!("/admin/tenants/{other}/webhook-deliveries"),
            Some(&token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let missing = Uuid::new_v4();
    let response = app
        .post_json(&format!("/admin/tenants/{missing}/webhooks"), &body)
        .await;
    assert_error(response, 404, "tenant_not_found").await;
    app.stop().await;
}

/// Two instances on one database: every delivery is attempted by one of them at a time and
/// arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_attempt_each_delivery_one_at_a_time() {
    let first = spawn_app_with(webhook_settings).await;
    let second = spawn_app_on(first.database.clone(), webhook_settings).await;
    let receiver = Receiver::start(Vec::new(), Answer::SlowOk(Duration::from_millis(300))).await;
    let mut scans = Vec::new();
    for _ in 0..4 {
        let tenant_id = create_tenant(&first).await;
        register(&first, tenant_id, &receiver.url(), &["scan.completed"]).await;
        for index in 0..5 {
            let app = if index % 2 == 0 { &first } else { &second };
            let scan_id =
                accepted_scan_id(app.post_scan(tenant_id, vec![activity(index)]).await).await;
            scans.push((tenant_id, scan_id));
        }
    }
    let requests = receiver
        .wait_for_requests(scans.len(), Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests_after = receiver.received();
    assert_eq!(
        requests_after.len(),
        scans.len(),
        "no delivery arrives twice"
    );
    let mut ids: Vec<&String> = requests
        .iter()
        .map(|request| &request.headers["webhook-id"])
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), scans.len());
    assert_eq!(
        receiver.most_at_once(),
        1,
        "one attempt at a time per delivery"
    );
    let client = first.db().await;
    let succeeded: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded' AND total_attempts = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(succeeded, scans.len() as i64);
    second.stop().await;
    first.stop().await;
}

/// SIGKILL while a finished scan's delivery is being attempted: after a restart it is
/// delivered (its lease ran out). A scan still processing at the kill (its tenant throttled,
/// some of its chunks written) has no delivery and announces nothing until it finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_a_finished_scan_is_announced_and_an_unfinished_one_is_not() {
    let database = test_server().await.fresh_database().await;
    let environment = [
        ("DATABASE_URL", url_of(&database)),
        (
            "INGEST__AUTH__BOOTSTRAP_ADMIN_TOKEN",
            BOOTSTRAP_ADMIN_TOKEN.to_string(),
        ),
        (
            "INGEST__WEBHOOKS__ALLOW_PRIVATE_TARGETS",
            "true".to_string(),
        ),
        ("INGEST__WEBHOOKS__TIMEOUT_SECS", "1".to_string()),
        ("INGEST__WEBHOOKS__POLL_INTERVAL_MS", "100".to_string()),
        ("INGEST__INGEST__CHUNK_RECORDS", "100".to_string()),
    ];
    let mut engine = tokio::task::block_in_place(|| EngineProcess::start(&environment));
    let http = http_client();
    let call = |method: reqwest::Method, path: String| {
        http.request(method, format!("{}{path}", engine.address))
            .bearer_auth(BOOTSTRAP_ADMIN_TOKEN)
    };
    // The receiver hangs on the first attempt, then answers.
    let receiver = Receiver::start(vec![Answer::Hang], Answer::Status(200)).await;
    let finished_tenant = Uuid::new_v4();
    let throttled_tenant = Uuid::new_v4();
    let mut secrets = Vec::new();
    for tenant_id in [finished_tenant, throttled_tenant] {
        // 200 records a second: the throttled tenant's 3,000 records take 15 s.
        let response = call(reqwest::Method::POST, "/admin/tenants".into())
            .json(&json!({ "tenant_id": tenant_id, "name": "Công ty",
                "records_per_second": if tenant_id == throttled_tenant { 200 } else { 1_000_000 },
                "burst": 200 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let response = call(
            reqwest::Method::POST,
            format!("/admin/tenants/{tenant_id}/webhooks"),
        )
        .json(&json!({ "url": receiver.url(), "events": ["scan.completed"] }))
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        secrets.push(body["signing_secret"].as_str().unwrap().to_string());
    }
    for (tenant_id, records) in [(throttled_tenant, 3_000), (finished_tenant, 10)] {
        let response = call(reqwest::Method::POST, "/data-scans".into())
            .json(&json!({ "tenant_id": tenant_id, "activities": activities(records) }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let client = {
        let (client, connection) = database.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    // The finished scan's first attempt is in flight (the receiver hangs) and the throttled
    // scan is part written: kill the engine.
    receiver.wait_for_requests(1, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query_one(
            "SELECT records_processed FROM scans WHERE tenant_id = $1",
            &[&throttled_tenant],
        )
        .await
        .unwrap()
        .get::<_, i32>(0)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the throttled scan never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.signal(Signal::SIGKILL);
    tokio::task::block_in_place(|| engine.wait(Duration::from_secs(30)));

    let row = client
        .query_one(
            "SELECT status, records_processed, \
                 (SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1) AS deliveries \
             FROM scans WHERE tenant_id = $1",
            &[&throttled_tenant],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>("status"), "processing");
    assert!(row.get::<_, i32>("records_processed") > 0);
    assert_eq!(
        row.get::<_, i64>("deliveries"),
        0,
        "a processing scan has no delivery"
    );

    let app = spawn_app_on(database.clone(), webhook_settings).await;
    let delivered =
        wait_for_delivery(&app, finished_tenant, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(delivered["total_attempts"], 2, "{delivered}");
    let requests = receiver.received();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[0].headers["webhook-id"],
        requests[1].headers["webhook-id"]
    );
    assert_signed(&requests[1], &secrets[0]);
    assert!(deliveries(&app, throttled_tenant, "").await.is_empty());

    // The throttled tenant's scan finishes and is announced once.
    wait_for_delivery(&app, throttled_tenant, "succeeded", Duration::from_secs(60)).await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 3);
    assert_signed(&requests[2], &secrets[1]);
    app.stop().await;
}
