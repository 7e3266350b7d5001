//! `webhooks`: scan notifications under the scans burst. Phases alternate without and with a
//! webhook endpoint per tenant (without, with, with, without, per round), each N tenants
//! submitting one scan of R records at the same moment. A receiver in this process (an HTTP
//! server on loopback) records each delivery's arrival and checks its signature with the
//! secret from registration.
//!
//! Measured: each delivery's delay after its scan's `completed_at` (the engine's clock, on this
//! machine, as the body carries it), p50, p99 and max; ingestion records/s of the phases with
//! webhooks against those without, in the same run.
//!
//! Verification: every row written exactly once (as every scenario), and every scan of a
//! phase with webhooks announced exactly once (one `webhook-id` per scan, no second arrival),
//! each with a valid signature; scans of the other phases announce nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;
use warp::Filter;

use super::{
    expect_rows, finish_memory, finished_records_and_seconds, generate_scan_bodies,
    submit_all_and_follow, Context, FollowedScan,
};
use crate::cli::WebhooksOptions;
use crate::database;
use crate::engine_client::{CREATE_TENANT, REGISTER_WEBHOOK};
use crate::report::{
    common_summary_lines, number_en, number_vi, DataReport, ScenarioReport, Throughput,
};
use crate::statistics::{round_to_thousandths, summarize_seconds, SecondsSummary};

/// How long the receiver waits, after the last scan finished, for the last deliveries.
const DELIVERY_GRACE: Duration = Duration::from_secs(30);

/// Goals of the issue that asked for this scenario, reported (not pass/fail: timing is
/// reported, correctness decides).
const DELAY_P99_GOAL_SECONDS: f64 = 1.0;
const RATE_RATIO_GOAL: f64 = 0.97;

#[derive(Debug, Clone)]
struct Arrival {
    webhook_id: String,
    scan_id_opt: Option<Uuid>,
    completed_at_opt: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
    signature_valid: bool,
}

/// The receiver's shared state: what arrived, and the secret of each tenant's endpoint.
#[derive(Default)]
struct Inbox {
    arrivals: Mutex<Vec<Arrival>>,
    secrets: Mutex<HashMap<Uuid, String>>,
}

#[derive(Debug, Serialize)]
struct Phase {
    index: usize,
    with_webhooks: bool,
    scans_accepted: usize,
    scans_completed: usize,
    records_written: i64,
    seconds: f64,
    records_per_second: f64,
}

#[derive(Debug, Serialize)]
struct WebhookDetails {
    phases: Vec<Phase>,
    records_per_second_without: f64,
    records_per_second_with: f64,
    /// With / without: 1.0 means webhooks cost ingestion nothing.
    rate_ratio: f64,
    deliveries_expected: usize,
    deliveries_received: usize,
    /// Arrivals of a `webhook-id` already received (at-least-once retries; 0 expected here).
    duplicate_arrivals: usize,
    /// Scans of phases with webhooks that were never announced.
    scans_unannounced: usize,
    /// Arrivals for scans of phases without webhooks (0 expected).
    unexpected_arrivals: usize,
    invalid_signatures: usize,
    /// Each delivery's arrival after its scan's `completed_at`.
    #[serde(rename = "delivery_delay")]
    delivery_delay_opt: Option<SecondsSummary>,
}

pub async fn run(context: &Context, options: &WebhooksOptions) -> ScenarioReport {
    let started_at = Utc::now();
    let mut notes = vec![
        "Delivery delay: the receiver's clock at arrival minus the scan's completed_at in the delivery's body (the engine's database clock; same machine).".to_string(),
        "Records/s of a phase: records in its finished scans over the time from its first POST to its last completed_at; phases alternate without, with, with, without webhooks so both kinds see the same table sizes on average.".to_string(),
    ];
    let inbox = Arc::new(Inbox::default());
    let (receiver_address, stop_receiver) = start_receiver(
        inbox.clone(),
        Duration::from_millis(options.receiver_delay_ms),
    );
    let memory_sampler_opt = context.start_memory_sampler();

    let kinds: Vec<bool> = (0..options.rounds.max(1))
        .flat_map(|_| [false, true, true, false])
        .collect();
    let mut phases = Vec::new();
    let mut expected_rows: BTreeMap<Uuid, i64> = BTreeMap::new();
    let mut announced_scans: HashMap<Uuid, bool> = HashMap::new();
    let mut data = DataReport::default();
    let mut setup_errors = Vec::new();
    for (index, with_webhooks) in kinds.into_iter().enumerate() {
        let outcome = run_phase(
            context,
            options,
            index,
            with_webhooks,
            receiver_address,
            &inbox,
            &mut data,
        )
        .await;
        match outcome {
            Ok((phase, followed)) => {
                expect_rows(&mut expected_rows, &followed);
                for scan in &followed {
                    if let Some(scan_id) = scan.scan_id_opt.filter(|_| scan.is_finished()) {
                        announced_scans.insert(scan_id, with_webhooks);
                    }
                }
                phases.push(phase);
            }
            Err(error) => setup_errors.push(format!("phase {index}: {error}")),
        }
    }

    // The last deliveries.
    let expected_deliveries = announced_scans.values().filter(|with| **with).count();
    let deadline = Instant::now() + DELIVERY_GRACE;
    while inbox.arrivals.lock().expect("not poisoned").len() < expected_deliveries
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything late (a duplicate) would arrive now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_receiver.send(());
    let (memory_opt, memory_error_opt) = finish_memory(context, memory_sampler_opt).await;

    let arrivals = inbox.arrivals.lock().expect("not poisoned").clone();
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    let mut seen_scans: HashMap<Uuid, usize> = HashMap::new();
    let mut delays = Vec::new();
    let mut unexpected_arrivals = 0;
    for arrival in &arrivals {
        *seen_ids.entry(arrival.webhook_id.clone()).or_insert(0) += 1;
        let Some(scan_id) = arrival.scan_id_opt else {
            unexpected_arrivals += 1;
            continue;
        };
        match announced_scans.get(&scan_id) {
            Some(true) => *seen_scans.entry(scan_id).or_insert(0) += 1,
            _ => unexpected_arrivals += 1,
        }
        if let Some(completed_at) = arrival.completed_at_opt {
            if let Some(micros) = (arrival.received_at - completed_at).num_microseconds() {
                delays.push(micros as f64 / 1e6);
            }
        }
    }
    let duplicate_arrivals: usize = seen_ids.values().map(|count| count - 1).sum();
    let scans_unannounced = announced_scans
        .iter()
        .filter(|(scan_id, with)| **with && !seen_scans.contains_key(*scan_id))
        .count();
    let invalid_signatures = arrivals
        .iter()
        .filter(|arrival| !arrival.signature_valid)
        .count();

    let rate_of = |with: bool| {
        let (records, seconds) = phases
            .iter()
            .filter(|phase| phase.with_webhooks == with)
            .fold((0i64, 0.0f64), |(records, seconds), phase| {
                (records + phase.records_written, seconds + phase.seconds)
            });
        (records, seconds, records as f64 / seconds.max(1e-9))
    };
    let (records_with, seconds_with, rate_with) = rate_of(true);
    let (_, _, rate_without) = rate_of(false);
    let rate_ratio = round_to_thousandths(rate_with / rate_without.max(1e-9));
    let details = WebhookDetails {
        phases,
        records_per_second_without: round_to_thousandths(rate_without),
        records_per_second_with: round_to_thousandths(rate_with),
        rate_ratio,
        deliveries_expected: expected_deliveries,
        deliveries_received: arrivals.len(),
        duplicate_arrivals,
        scans_unannounced,
        unexpected_arrivals,
        invalid_signatures,
        delivery_delay_opt: summarize_seconds(&delays),
    };

    let mut verification = database::verify(&context.database_url, &expected_rows).await;
    if let Some(error) = setup_errors.first() {
        verification.passed = false;
        verification.error_opt.get_or_insert_with(|| error.clone());
    }
    let deliveries_exact = duplicate_arrivals == 0
        && scans_unannounced == 0
        && unexpected_arrivals == 0
        && invalid_signatures == 0;
    let all_completed = details
        .phases
        .iter()
        .all(|phase| phase.scans_completed == options.tenants);
    notes.extend(setup_errors.iter().cloned());

    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    summary_en.push(format!(
        "{} phases of {} tenants × {} records: without webhooks {} records/s, with webhooks {} records/s (with / without = {}; goal ≥ {}: {}).",
        details.phases.len(),
        options.tenants,
        number_en(options.records as f64, 0),
        number_en(rate_without, 0),
        number_en(rate_with, 0),
        number_en(rate_ratio, 3),
        RATE_RATIO_GOAL,
        if rate_ratio >= RATE_RATIO_GOAL { "met" } else { "not met" },
    ));
    summary_vi.push(format!(
        "{} giai đoạn, mỗi giai đoạn {} tổ chức × {} bản ghi: không có webhook {} bản ghi/giây, có webhook {} bản ghi/giây (tỉ lệ có/không = {}; mục tiêu ≥ {}: {}).",
        details.phases.len(),
        options.tenants,
        number_vi(options.records as f64, 0),
        number_vi(rate_without, 0),
        number_vi(rate_with, 0),
        number_vi(rate_ratio, 3),
        RATE_RATIO_GOAL,
        if rate_ratio >= RATE_RATIO_GOAL { "đạt" } else { "chưa đạt" },
    ));
    summary_en.push(format!(
        "Deliveries: {} of {} received, {} duplicate arrivals, {} scans unannounced, {} unexpected, {} invalid signatures.",
        details.deliveries_received,
        expected_deliveries,
        duplicate_arrivals,
        scans_unannounced,
        unexpected_arrivals,
        invalid_signatures,
    ));
    summary_vi.push(format!(
        "Thông báo: đã nhận {}/{}, {} lần đến trùng, {} lượt quét không được báo, {} ngoài dự kiến, {} chữ ký sai.",
        details.deliveries_received,
        expected_deliveries,
        duplicate_arrivals,
        scans_unannounced,
        unexpected_arrivals,
        invalid_signatures,
    ));
    if let Some(delay) = &details.delivery_delay_opt {
        let met = delay.p99_seconds < DELAY_P99_GOAL_SECONDS;
        summary_en.push(format!(
            "Delivery after the scan's completion: p50 {} ms, p95 {} ms, p99 {} ms, max {} ms (goal p99 < {} s: {}).",
            number_en(delay.p50_seconds * 1e3, 0),
            number_en(delay.p95_seconds * 1e3, 0),
            number_en(delay.p99_seconds * 1e3, 0),
            number_en(delay.max_seconds * 1e3, 0),
            DELAY_P99_GOAL_SECONDS,
            if met { "met" } else { "not met" },
        ));
        summary_vi.push(format!(
            "Thời gian từ khi lượt quét hoàn thành đến khi nhận thông báo: p50 {} ms, p95 {} ms, p99 {} ms, tối đa {} ms (mục tiêu p99 < {} giây: {}).",
            number_vi(delay.p50_seconds * 1e3, 0),
            number_vi(delay.p95_seconds * 1e3, 0),
            number_vi(delay.p99_seconds * 1e3, 0),
            number_vi(delay.max_seconds * 1e3, 0),
            DELAY_P99_GOAL_SECONDS,
            if met { "đạt" } else { "chưa đạt" },
        ));
    }
    let (english, vietnamese) = common_summary_lines(&verification, memory_opt.as_ref());
    summary_en.extend(english);
    summary_vi.extend(vietnamese);

    ScenarioReport {
        passed: verification.passed && all_completed && deliveries_exact,
        data,
        engine_throughput_opt: Some(Throughput {
            records: records_with as u64,
            seconds: round_to_thousandths(seconds_with),
            records_per_second: round_to_thousandths(rate_with),
            measured: "the phases with webhooks: from each phase's first POST /data-scans to its last scan's completed_at, summed".to_string(),
        }),
        details: serde_json::to_value(&details).unwrap_or_default(),
        memory_opt,
        memory_error_opt,
        verification,
        notes,
        summary_en,
        summary_vi,
        ..context.report("webhooks", options, started_at)
    }
}

/// One phase: fresh tenants (registered before the clock starts, with an endpoint each when
/// `with_webhooks`), then every scan submitted at once and followed to its end.
async fn run_phase(
    context: &Context,
    options: &WebhooksOptions,
    index: usize,
    with_webhooks: bool,
    receiver_address: SocketAddr,
    inbox: &Inbox,
    data: &mut DataReport,
) -> Result<(Phase, Vec<FollowedScan>), String> {
    let records_per_scan = options.records;
    let (bodies, phase_data) = generate_scan_bodies(
        context,
        options.tenants,
        records_per_scan,
        index * options.tenants,
        None,
    )
    .await;
    data.add(&phase_data);

    for (tenant_id, _) in &bodies {
        let created = context
            .client
            .post_json(
                CREATE_TENANT,
                "/admin/tenants",
                &serde_json::json!({ "tenant_id": tenant_id, "name": format!("webhooks {index}") }),
            )
            .await?;
        if created.status != 201 {
            return Err(format!(
                "POST /admin/tenants answered {}: {}",
                created.status,
                String::from_utf8_lossy(&created.body)
            ));
        }
        if with_webhooks {
            let registered = context
                .client
                .post_json(
                    REGISTER_WEBHOOK,
                    &format!("/admin/tenants/{tenant_id}/webhooks"),
                    &serde_json::json!({
                        "url": format!("http://{receiver_address}/hooks/{tenant_id}"),
                        "events": ["scan.completed", "scan.completed_with_errors", "scan.failed"],
                    }),
                )
                .await?;
            if registered.status != 201 {
                return Err(format!(
                    "registering a webhook answered {} (run the engine with INGEST__WEBHOOKS__ALLOW_PRIVATE_TARGETS=true): {}",
                    registered.status,
                    String::from_utf8_lossy(&registered.body)
                ));
            }
            let body: serde_json::Value = serde_json::from_slice(&registered.body)
                .map_err(|error| format!("unreadable registration: {error}"))?;
            let secret = body["signing_secret"]
                .as_str()
                .ok_or("the registration shows no signing_secret")?
                .to_string();
            inbox
                .secrets
                .lock()
                .expect("not poisoned")
                .insert(*tenant_id, secret);
        }
    }

    let label = if with_webhooks {
        "with webhooks"
    } else {
        "no webhooks"
    };
    let (phase_started_at, followed) = submit_all_and_follow(
        context,
        bodies,
        records_per_scan,
        Duration::from_millis(options.poll_interval_ms),
        label,
    )
    .await;
    let (records_written, seconds) = finished_records_and_seconds(&followed, phase_started_at);
    let phase = Phase {
        index,
        with_webhooks,
        scans_accepted: followed.iter().filter(|scan| scan.was_accepted()).count(),
        scans_completed: followed
            .iter()
            .filter(|scan| scan.final_status == "completed")
            .count(),
        records_written,
        seconds: round_to_thousandths(seconds),
        records_per_second: round_to_thousandths(records_written as f64 / seconds.max(1e-9)),
    };
    Ok((phase, followed))
}

/// Starts the receiver on a free loopback port; it answers 200 after `delay`.
fn start_receiver(
    inbox: Arc<Inbox>,
    delay: Duration,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let route = warp::post()
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(move |headers: warp::http::HeaderMap, body: Bytes| {
            let inbox = inbox.clone();
            async move {
                let received_at = Utc::now();
                inbox
                    .arrivals
                    .lock()
                    .expect("not poisoned")
                    .push(read_arrival(&inbox, &headers, &body, received_at));
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                warp::reply()
            }
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (address, server) = warp::serve(route).bind_with_graceful_shutdown(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        async move {
            let _ = stopped.await;
        },
    );
    tokio::spawn(server);
    (address, stop)
}

fn read_arrival(
    inbox: &Inbox,
    headers: &warp::http::HeaderMap,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Arrival {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let data = &parsed["data"];
    let tenant_id_opt = data["tenant_id"]
        .as_str()
        .and_then(|text| text.parse().ok());
    let webhook_id = header("webhook-id");
    let secret_opt = tenant_id_opt.and_then(|tenant_id: Uuid| {
        inbox
            .secrets
            .lock()
            .expect("not poisoned")
            .get(&tenant_id)
            .cloned()
    });
    let signature_valid = secret_opt.is_some_and(|secret| {
        signature_matches(
            &secret,
            &webhook_id,
            &header("webhook-timestamp"),
            body,
            &header("webhook-signature"),
        )
    });
    Arrival {
        webhook_id,
        scan_id_opt: data["scan_id"].as_str().and_then(|text| text.parse().ok()),
        completed_at_opt: data["completed_at"]
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.with_timezone(&Utc)),
        received_at,
        signature_valid,
    }
}

/// The Standard Webhooks check a receiver makes: HMAC-SHA256 of `id.timestamp.body`, keyed
/// by the secret's bytes, among the space-separated `v1,` signatures.
fn signature_matches(
    secret: &str,
    webhook_id: &str,
    timestamp: &str,
    body: &[u8],
    presented: &str,
) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|encoded| STANDARD.decode(encoded).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return false;
    };
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    presented.split(' ').any(|signature| signature == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_example_verifies() {
        assert!(signature_matches(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
            "v1,bm9ldHRoZXNpZ25hdHVyZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ));
        assert!(!signature_matches(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265331",
            br#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ));
    }
}
