//! The delivery worker: a background job (`jobs.rs`) that claims due deliveries from the
//! outbox, sends each as its own task, and records the outcome.
//!
//! - **One attempt at a time per delivery, across instances**: the claim locks rows with `FOR
//!   UPDATE SKIP LOCKED` and leases them past the attempt's time-out by the database's clock;
//!   an outcome counts only if its claim still holds the row (`store/webhooks.rs`).
//! - **Isolation**: attempts run as separate tasks, at most `webhooks.concurrency` at once and
//!   `webhooks.endpoint_concurrency` per endpoint, each bounded by `webhooks.timeout_secs`; a
//!   slow endpoint holds its own slots only, and ingestion never waits for any of this.
//! - **Promptness**: woken by the writers when a chunk finishes a scan on this instance, and
//!   otherwise every `webhooks.poll_interval_ms` (retries, other instances' scans).
//! - **At least once**: an attempt cut short (the engine killed, the outcome not recorded) is
//!   due again when its lease runs out, with the same `webhook-id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Url;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::address::{self, TargetPolicy};
use super::signing;
use crate::config::WebhookSettings;
use crate::store::webhooks::{self as outbox, AttemptOutcome, ClaimedDelivery, Recorded};
use crate::store::Pool;

/// Most bytes of a response body read (and thrown away), so a connection can be reused
/// without a receiver making the engine read an endless answer.
const RESPONSE_BODY_MAX_BYTES: usize = 4096;

/// Most characters of an error kept with a delivery.
const ERROR_MAX_CHARS: usize = 500;

/// How long a claim holds a delivery beyond twice the attempt's own time-out (the attempt,
/// then recording its outcome).
const LEASE_MARGIN: Duration = Duration::from_secs(5);

pub struct DeliveryJob {
    pool: Pool,
    settings: WebhookSettings,
    client: reqwest::Client,
    policy: TargetPolicy,
    /// Attempts in flight on this instance, per endpoint.
    in_flight: Arc<Mutex<HashMap<Uuid, i64>>>,
    attempts: JoinSet<()>,
    wake: Arc<Notify>,
}

impl DeliveryJob {
    /// `scan_finished` is the engine's signal that a chunk finished a scan (and so recorded
    /// its deliveries).
    pub fn new(
        pool: Pool,
        settings: WebhookSettings,
        scan_finished: Arc<Notify>,
    ) -> anyhow::Result<DeliveryJob> {
        let policy = TargetPolicy::from_settings(&settings);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(address::resolver(policy))
            .user_agent(concat!(
                "ingest-engine-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(DeliveryJob {
            pool,
            settings,
            client,
            policy,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            attempts: JoinSet::new(),
            wake: scan_finished,
        })
    }

    fn in_flight_total(&self) -> i64 {
        self.in_flight
            .lock()
            .expect("the in-flight map's lock is never held across a panic")
            .values()
            .sum()
    }

    fn start_attempt(&mut self, delivery: ClaimedDelivery) {
        *self
            .in_flight
            .lock()
            .expect("the in-flight map's lock is never held across a panic")
            .entry(delivery.endpoint_id)
            .or_insert(0) += 1;
        let pool = self.pool.clone();
        let client = self.client.clone();
        let policy = self.policy;
        let settings = self.settings.clone();
        let in_flight = self.in_flight.clone();
        let wake = self.wake.clone();
        self.attempts.spawn(async move {
            let started = Instant::now();
            let outcome = send(&client, policy, &delivery).await;
            metrics::histogram!(crate::metrics::WEBHOOK_ATTEMPT_DURATION)
                .record(started.elapsed().as_secs_f64());
            let delay = retry_delay(&settings, delivery.attempt);
            let max_attempts = settings.max_attempts.max(1) as i32;
            let recorded = outbox::record_outcome(
                &pool,
                &delivery,
                &outcome,
                max_attempts,
                delay.as_millis() as i64,
            )
            .await;
            report(&delivery, &outcome, &recorded);
            {
                let mut counts = in_flight
                    .lock()
                    .expect("the in-flight map's lock is never held across a panic");
                if let Some(count) = counts.get_mut(&delivery.endpoint_id) {
                    *count -= 1;
                    if *count <= 0 {
                        counts.remove(&delivery.endpoint_id);
                    }
                }
            }
            // A slot is free: look for due work now.
            wake.notify_one();
        });
    }
}

impl crate::jobs::Job for DeliveryJob {
    fn name(&self) -> &'static str {
        "webhook delivery"
    }

    async fn run_once(&mut self) -> Duration {
        while self.attempts.try_join_next().is_some() {}
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        let free = self.settings.concurrency.max(1) as i64 - self.in_flight_total();
        if free <= 0 {
            return poll;
        }
        let in_flight: Vec<(Uuid, i64)> = self
            .in_flight
            .lock()
            .expect("the in-flight map's lock is never held across a panic")
            .iter()
            .map(|(endpoint, count)| (*endpoint, *count))
            .collect();
        let lease = Duration::from_secs(self.settings.timeout_secs.max(1)) * 2 + LEASE_MARGIN;
        let claimed = match outbox::claim_due(
            &self.pool,
            free,
            self.settings.endpoint_concurrency.max(1) as i64,
            &in_flight,
            lease.as_millis() as i64,
        )
        .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "could not claim due webhook deliveries");
                return poll.max(Duration::from_secs(1));
            }
        };
        // When the slots were the limit, more may be due: each finishing attempt wakes the job.
        for delivery in claimed {
            self.start_attempt(delivery);
        }
        poll
    }

    fn wake_signal(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }

    /// Attempts in flight get their time-out to finish and record their outcome; any still
    /// running after that are dropped, and their deliveries are due again when their lease
    /// runs out.
    async fn finish(&mut self) {
        let bound = Duration::from_secs(self.settings.timeout_secs.max(1) + 2);
        let drained = tokio::time::timeout(bound, async {
            while self.attempts.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                attempts = self.attempts.len(),
                "webhook attempts still running at shutdown; they will be retried"
            );
            self.attempts.abort_all();
        }
    }
}

/// The delay before the next attempt after failed attempt number `attempt` (1 for the
/// first): `retry_base_secs · 2^(attempt − 1)`, at most `retry_cap_secs`, plus up to a
/// quarter more at random, so receivers that failed together are not retried together.
pub fn retry_delay(settings: &WebhookSettings, attempt: i32) -> Duration {
    let exponent = (attempt.max(1) - 1).min(30) as u32;
    let base = Duration::from_secs(settings.retry_base_secs);
    let delay = base
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(Duration::from_secs(
            settings.retry_cap_secs.max(settings.retry_base_secs),
        ));
    let jitter = delay.mul_f64(rand::thread_rng().gen_range(0.0..0.25));
    delay + jitter
}

/// One attempt: the signed POST, its status, at most a few KiB of its body.
async fn send(
    client: &reqwest::Client,
    policy: TargetPolicy,
    delivery: &ClaimedDelivery,
) -> AttemptOutcome {
    let url = match Url::parse(&delivery.url) {
        Ok(url) => url,
        Err(error) => return refused(None, format!("the stored url is not valid: {error}")),
    };
    if let Err(refusal) = address::check_literal(&url, policy) {
        return refused(None, refusal.message);
    }
    let webhook_id = delivery.delivery_id.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signing::signature(
        &delivery.signing_secret,
        &webhook_id,
        timestamp,
        delivery.body.as_bytes(),
    );
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.body.clone())
        .send()
        .await;
    let mut response = match response {
        Ok(response) => response,
        Err(error) => return refused(None, describe(&error)),
    };
    let status = response.status();
    let mut read = 0usize;
    while read < RESPONSE_BODY_MAX_BYTES {
        match response.chunk().await {
            Ok(Some(piece)) => read += piece.len(),
            Ok(None) | Err(_) => break,
        }
    }
    if status.is_success() {
        AttemptOutcome::Delivered {
            status_code: status.as_u16() as i32,
        }
    } else {
        refused(
            Some(status.as_u16() as i32),
            format!("the endpoint answered {status}"),
        )
    }
}

fn refused(status_code_opt: Option<i32>, error: String) -> AttemptOutcome {
    AttemptOutcome::Refused {
        status_code_opt,
        error: error.chars().take(ERROR_MAX_CHARS).collect(),
    }
}

/// The error and its causes on one line ("error sending request: connection refused").
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "the endpoint did not answer within webhooks.timeout_secs".to_string();
    }
    let mut text = error.to_string();
    let mut source_opt = std::error::Error::source(error);
    while let Some(source) = source_opt {
        text.push_str(": ");
        text.push_str(&source.to_string());
        source_opt = source.source();
    }
    text
}

fn report(
    delivery: &ClaimedDelivery,
    outcome: &AttemptOutcome,
    recorded: &Result<Recorded, crate::store::StoreError>,
) {
    let label = match recorded {
        Ok(Recorded::Succeeded) => "succeeded",
        Ok(Recorded::RetryScheduled) => "retried",
        Ok(Recorded::Failed) => "failed",
        Ok(Recorded::Superseded) => "superseded",
        Err(error) => {
            // The claim's lease runs out and the delivery is attempted again.
            tracing::warn!(delivery_id = %delivery.delivery_id, %error, "could not record a webhook attempt");
            return;
        }
    };
    metrics::counter!(crate::metrics::WEBHOOK_DELIVERIES, "outcome" => label).increment(1);
    match outcome {
        AttemptOutcome::Delivered { status_code } => tracing::debug!(
            delivery_id = %delivery.delivery_id, attempt = delivery.attempt, status_code,
            waited_secs = delivery.due_for_secs, "webhook delivered"
        ),
        AttemptOutcome::Refused {
            status_code_opt,
            error,
        } => tracing::info!(
            delivery_id = %delivery.delivery_id, tenant_id = %delivery.tenant_id,
            attempt = delivery.attempt, status_code = ?status_code_opt, %error, outcome = label,
            "webhook attempt failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            timeout_secs: 10,
            retry_base_secs: 10,
            retry_cap_secs: 21_600,
            max_attempts: 15,
            poll_interval_ms: 250,
            concurrency: 64,
            endpoint_concurrency: 2,
            max_endpoints_per_tenant: 20,
            allow_private_targets: false,
            allow_http: false,
        }
    }

    #[test]
    fn retries_double_up_to_the_cap_and_the_defaults_reach_about_a_day() {
        let settings = settings();
        for attempt in 1..=12 {
            let delay = retry_delay(&settings, attempt).as_secs_f64();
            let expected = (10u64 << (attempt - 1)).min(21_600) as f64;
            assert!(
                delay >= expected && delay <= expected * 1.25,
                "attempt {attempt}: {delay}"
            );
        }
        assert!(retry_delay(&settings, 40).as_secs() <= 21_600 * 5 / 4);
        let total: u64 = (1..settings.max_attempts as i32)
            .map(|attempt| (10u64 << (attempt - 1).min(30)).min(21_600))
            .sum();
        assert!((20 * 3600..=30 * 3600).contains(&total), "{total} s");
    }
}
