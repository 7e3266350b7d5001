//! The engine's HTTP API as the load test calls it.
//!
//! Every call returns an [`Exchange`] (status, latency, body) or the transport error as text,
//! and records itself in the scenario's [`EndpointsRecorder`]: a refusal or an unreadable body
//! is a finding to report, never a reason to stop the run. Latency runs from sending the request
//! to having read the whole response body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;
use uuid::Uuid;

use crate::statistics::EndpointsRecorder;

/// Endpoint names as reports and charts show them.
pub const SUBMIT_SCAN: &str = "POST /data-scans";
pub const SCAN_STATUS: &str = "GET /data-scans/{scan_id}";
pub const SUBMIT_BATCH: &str = "POST /batch/processing-activities";
pub const ACTIVITIES_PAGE: &str = "GET /analytics/processing-activities";
pub const COMPLIANCE_SUMMARY: &str = "GET /analytics/compliance-summary";
pub const AUDIT_PAGE: &str = "GET /admin/audit";
pub const CREATE_TENANT: &str = "POST /admin/tenants";
pub const REGISTER_WEBHOOK: &str = "POST /admin/tenants/{tenant_id}/webhooks";

/// A client of one engine, shared by every request task of a scenario.
#[derive(Clone)]
pub struct EngineClient {
    http: reqwest::Client,
    base_url: String,
    /// Sent as `Authorization: Bearer <token>` when present.
    token_opt: Option<String>,
    pub recorder: Arc<EndpointsRecorder>,
}

/// A response that arrived (its latency is in the recorder).
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    pub body: Bytes,
    /// The `Retry-After` header in seconds, when present.
    pub retry_after_opt: Option<Duration>,
}

/// Longest wait honoured from a `Retry-After`, so a wrong header cannot stall a run (long enough
/// for the engine's estimate of a burst's queue, see the `burst` scenario).
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Wait before retrying a 429 or 503 that names no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Sends a request up to `max_attempts` times while the engine answers 429 or 503, waiting its
/// `Retry-After` in between, as a well-behaved client does. Both statuses mean the request
/// changed nothing (SPEC section 3), so a retry cannot duplicate records. Any other answer, or
/// no answer at all, is returned at once. Returns the last outcome and the attempts made.
pub async fn with_retries<Send, Attempt>(
    max_attempts: u32,
    send: Send,
) -> (Result<Exchange, String>, u32)
where
    Send: FnMut() -> Attempt,
    Attempt: std::future::Future<Output = Result<Exchange, String>>,
{
    let (outcome, attempts, _) = with_retries_when(max_attempts, Unanswered::Return, send).await;
    (outcome, attempts)
}

/// What [`with_retries_when`] does when a request got no answer from the engine: no response
/// at all, or a load balancer's 502 or 504 (the instance it chose died or stalled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// Return it: the request may have been applied, and sending it again could apply it twice.
    Return,
    /// Send it again after a second: only for requests that are safe to repeat (a scan with an
    /// idempotency key returns the first scan when it was applied).
    Retry,
}

/// [`with_retries`], and with [`Unanswered::Retry`] also retries requests that got no answer.
/// Also returns each wait made before a retry.
pub async fn with_retries_when<Send, Attempt>(
    max_attempts: u32,
    unanswered: Unanswered,
    mut send: Send,
) -> (Result<Exchange, String>, u32, Vec<Duration>)
where
    Send: FnMut() -> Attempt,
    Attempt: std::future::Future<Output = Result<Exchange, String>>,
{
    let mut attempts = 1;
    let mut waits = Vec::new();
    loop {
        let outcome = send().await;
        let wait_opt = match &outcome {
            Ok(exchange) if exchange.status == 429 || exchange.status == 503 => Some(
                exchange
                    .retry_after_opt
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(LONGEST_RETRY_AFTER),
            ),
            Ok(exchange)
                if unanswered == Unanswered::Retry
                    && (exchange.status == 502 || exchange.status == 504) =>
            {
                Some(DEFAULT_RETRY_AFTER)
            }
            Err(_) if unanswered == Unanswered::Retry => Some(DEFAULT_RETRY_AFTER),
            _ => None,
        };
        match wait_opt {
            Some(wait) if attempts < max_attempts => {
                tokio::time::sleep(wait).await;
                waits.push(wait);
                attempts += 1;
            }
            _ => return (outcome, attempts, waits),
        }
    }
}

/// The 202 answer to a scan.
#[derive(Debug, Deserialize)]
pub struct ScanAccepted {
    pub scan_id: Uuid,
    pub records_total: i64,
}

/// The fields of a scan's status the load test follows.
#[derive(Debug, Deserialize)]
pub struct ScanState {
    pub status: String,
    pub records_total: i64,
    pub records_processed: i64,
    pub records_failed: i64,
    #[serde(rename = "completed_at")]
    pub completed_at_opt: Option<DateTime<Utc>>,
}

/// The 201 answer to a batch.
#[derive(Debug, Deserialize)]
pub struct BatchCreated {
    pub records_created: i64,
    pub records_failed: i64,
}

impl ScanState {
    /// True once the scan will not change any more.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status.as_str(),
            "completed" | "completed_with_errors" | "failed"
        )
    }
}

impl EngineClient {
    /// `connections` sizes the idle pool so a burst of that many requests reuses connections.
    pub fn new(
        base_url: &str,
        token_opt: Option<String>,
        request_timeout: Duration,
        connections: usize,
    ) -> Result<EngineClient, String> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(EngineClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            token_opt,
            recorder: Arc::new(EndpointsRecorder::default()),
        })
    }

    /// A client with the same connection pool and token but fresh statistics, for the next
    /// scenario of `all`.
    pub fn with_fresh_statistics(&self) -> EngineClient {
        EngineClient {
            recorder: Arc::new(EndpointsRecorder::default()),
            ..self.clone()
        }
    }

    pub async fn submit_scan(&self, body: Bytes) -> Result<Exchange, String> {
        self.send(
            SUBMIT_SCAN,
            self.http
                .post(self.url("/data-scans"))
                .body(body)
                .header(CONTENT_TYPE, "application/json"),
        )
        .await
    }

    pub async fn scan_status(&self, tenant_id: Uuid, scan_id: Uuid) -> Result<Exchange, String> {
        let url = self.url(&format!("/data-scans/{scan_id}?tenant_id={tenant_id}"));
        self.send(SCAN_STATUS, self.http.get(url)).await
    }

    pub async fn submit_batch(&self, tenant_id: Uuid, body: Bytes) -> Result<Exchange, String> {
        let url = self.url(&format!(
            "/batch/processing-activities?tenant_id={tenant_id}"
        ));
        self.send(
            SUBMIT_BATCH,
            self.http
                .post(url)
                .body(body)
                .header(CONTENT_TYPE, "application/json"),
        )
        .await
    }

    pub async fn activities_page(&self, tenant_id: Uuid) -> Result<Exchange, String> {
        let url = self.url(&format!(
            "/analytics/processing-activities?tenant_id={tenant_id}&limit=100"
        ));
        self.send(ACTIVITIES_PAGE, self.http.get(url)).await
    }

    pub async fn compliance_summary(&self, tenant_id: Uuid) -> Result<Exchange, String> {
        let url = self.url(&format!(
            "/analytics/compliance-summary?tenant_id={tenant_id}"
        ));
        self.send(COMPLIANCE_SUMMARY, self.http.get(url)).await
    }

    /// A page of one tenant's audit entries since `from` (RFC 3339), 100 at most.
    pub async fn audit_page(
        &self,
        tenant_id: Uuid,
        from: &str,
        cursor_opt: Option<&str>,
    ) -> Result<Exchange, String> {
        let mut path = format!(
            "/admin/audit?tenant_id={tenant_id}&limit=100&from={}",
            from.replace('+', "%2B")
        );
        if let Some(cursor) = cursor_opt {
            path.push_str(&format!("&cursor={cursor}"));
        }
        self.send(AUDIT_PAGE, self.http.get(self.url(&path))).await
    }

    /// A JSON `POST` to an admin route (`endpoint` names it in the report).
    pub async fn post_json(
        &self,
        endpoint: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Exchange, String> {
        self.send(
            endpoint,
            self.http
                .post(self.url(path))
                .body(body.to_string())
                .header(CONTENT_TYPE, "application/json"),
        )
        .await
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base_url)
    }

    async fn send(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Exchange, String> {
        let request = match &self.token_opt {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        };
        let started = Instant::now();
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after_opt = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                response
                    .bytes()
                    .await
                    .map(|body| (status, body, retry_after_opt))
            }
            Err(error) => Err(error),
        };
        let latency = started.elapsed();
        match outcome {
            Ok((status, body, retry_after_opt)) => {
                let refusal_body_opt = (!(200..300).contains(&status)).then_some(&body[..]);
                self.recorder
                    .record_response(endpoint, status, latency, refusal_body_opt);
                Ok(Exchange {
                    status,
                    body,
                    retry_after_opt,
                })
            }
            Err(error) => {
                let description = describe_transport_error(&error);
                self.recorder.record_transport_error(endpoint, &description);
                Err(description)
            }
        }
    }
}

/// reqwest's error with its causes, which hold the useful part ("connection refused").
fn describe_transport_error(error: &reqwest::Error) -> String {
    let mut description = error.to_string();
    let mut source_opt = std::error::Error::source(error);
    while let Some(source) = source_opt {
        description.push_str(": ");
        description.push_str(&source.to_string());
        source_opt = source.source();
    }
    description
}

/// The port of an engine URL such as `http://127.0.0.1:18181`, to find the engine's process.
pub fn port_of_url(url: &str) -> Option<u16> {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = without_scheme.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None if url.starts_with("https://") => Some(443),
        None => Some(80),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Result<Exchange, String> {
        Ok(Exchange {
            status,
            body: Bytes::new(),
            retry_after_opt: Some(Duration::from_millis(1)),
        })
    }

    #[tokio::test]
    async fn only_429_and_503_are_retried_and_attempts_are_bounded() {
        let statuses = std::sync::Mutex::new(vec![201, 503, 429]);
        let (outcome, attempts) = with_retries(5, || async {
            answer(statuses.lock().unwrap().pop().unwrap())
        })
        .await;
        assert_eq!((outcome.unwrap().status, attempts), (201, 3));

        let (outcome, attempts) = with_retries(2, || async { answer(503) }).await;
        assert_eq!((outcome.unwrap().status, attempts), (503, 2));

        let (outcome, attempts) = with_retries(5, || async { answer(404) }).await;
        assert_eq!((outcome.unwrap().status, attempts), (404, 1));

        let (outcome, attempts) = with_retries(5, || async { answer(502) }).await;
        assert_eq!((outcome.unwrap().status, attempts), (502, 1));
        let (outcome, attempts) = with_retries(5, || async { Err("reset".to_string()) }).await;
        assert_eq!((outcome.unwrap_err(), attempts), ("reset".to_string(), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_requests_are_retried_only_when_asked() {
        let outcomes = std::sync::Mutex::new(vec![answer(202), answer(504), answer(502)]);
        let (outcome, attempts, waits) = with_retries_when(5, Unanswered::Retry, || async {
            outcomes
                .lock()
                .unwrap()
                .pop()
                .unwrap_or_else(|| Err("no answer".to_string()))
        })
        .await;
        assert_eq!((outcome.unwrap().status, attempts), (202, 3));
        assert_eq!(waits, [Duration::from_secs(1); 2]);

        let (outcome, attempts, _) =
            with_retries_when(3, Unanswered::Retry, || async { Err("reset".to_string()) }).await;
        assert_eq!((outcome.unwrap_err(), attempts), ("reset".to_string(), 3));
    }

    #[test]
    fn ports_are_read_from_engine_urls() {
        assert_eq!(port_of_url("http://127.0.0.1:18181"), Some(18181));
        assert_eq!(port_of_url("http://127.0.0.1:8080/"), Some(8080));
        assert_eq!(port_of_url("http://localhost"), Some(80));
    }

    #[test]
    fn scan_states_parse_from_the_engine_shape() {
        let body = r#"{"scan_id":"0b5f3c1e-6a0e-4c52-9a43-2f2d1c9b7e11","status":"completed",
            "status_vi":"hoàn thành","records_total":10,"records_processed":10,"records_failed":0,
            "completed_at":"2025-11-23T17:20:00.123456Z","errors":[]}"#;
        let state: ScanState = serde_json::from_str(body).unwrap();
        assert!(state.is_finished());
        assert!(state.completed_at_opt.is_some());
    }
}
