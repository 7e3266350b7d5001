//! `cluster`: several engine instances on one database (SPEC section 8), in one run:
//!
//! 1. the `scans` burst on the running engine alone;
//! 2. the same burst (fresh tenants) through HAProxy, with the shipped configuration, to that
//!    engine and two more instances started here on the same database, stopped afterwards
//!    with SIGTERM;
//! 3. the burst on the running engine alone again (the mean of 1 and 3 saw the table at the
//!    size 2 saw it);
//! 4. the two instances started again, and the burst through HAProxy with one of them killed
//!    (`SIGKILL`) while its tenants are writing: every accepted scan must still finish, each
//!    record once;
//! 5. the same rows by plain `COPY`.
//!
//! Every scan carries an idempotency key, so a submission whose answer was lost with the killed
//! instance (HAProxy answers 502, or the connection drops) is sent again and returns the first
//! scan if it had been accepted. On two cores no speed-up is expected from three instances on
//! one machine: the report gives their overhead against one instance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::process::{Child, Command};
use uuid::Uuid;

use super::baseline::{self, push_baseline_summary};
use super::{
    expect_rows, finish_memory, finished_records_and_seconds, generate_scan_bodies,
    submit_all_and_follow_through, Context, FollowedScan,
};
use crate::cli::ClusterOptions;
use crate::database;
use crate::engine_client::{port_of_url, EngineClient, Unanswered, SUBMIT_SCAN};
use crate::process_cpu;
use crate::report::{
    common_summary_lines, number_en, number_vi, DataReport, ScenarioReport, Throughput,
};
use crate::statistics::{round_to_thousandths, summarize_seconds, EndpointReport, SecondsSummary};

/// Ids of the two instances started beside the running engine.
const STARTED_INSTANCES: [&str; 2] = ["loadtest-cluster-b", "loadtest-cluster-c"];

/// Goal for the three instances' rate against one instance's (SPEC section 8's issue: under
/// 10 % slower on a machine where they share the same cores).
const OVERHEAD_GOAL: f64 = 0.10;

/// Longest an instance started here may take to answer `GET /health`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// HAProxy marks a server up after two passed checks a second apart, then ramps its weight up
/// over `slowstart 5s`; the phases through it start once that is over.
const HAPROXY_SETTLE: Duration = Duration::from_secs(7);

/// Idle HTTP connections kept to HAProxy: one per tenant of the default burst.
const HTTP_CONNECTIONS: usize = 128;

#[derive(Debug, Serialize)]
struct Phase {
    name: &'static str,
    through: String,
    instances: usize,
    scans_accepted: usize,
    scans_completed: usize,
    /// Scans submitted more than once (429 or 503 with Retry-After, or no answer).
    scans_retried: usize,
    records_written: i64,
    /// From the phase's first POST /data-scans to its last scan's completed_at.
    seconds: f64,
    records_per_second: f64,
    /// CPU seconds used during the phase: the engine processes, PostgreSQL, HAProxy.
    cpu_seconds: BTreeMap<&'static str, f64>,
    endpoints: BTreeMap<String, EndpointReport>,
}

#[derive(Debug, Serialize)]
struct Failover {
    killed_instance: String,
    killed_at: DateTime<Utc>,
    /// Seconds from the phase's first submission to the kill.
    killed_after_seconds: f64,
    /// Tenants of the phase that the killed instance had written for.
    tenants_written_by_killed: usize,
    /// Of those, tenants another instance wrote for afterwards, under a later epoch.
    tenants_taken_over: usize,
    /// For each tenant taken over: its first write under the new owner, after the kill.
    #[serde(rename = "resumed_after")]
    resumed_after_opt: Option<SecondsSummary>,
}

#[derive(Debug, Serialize)]
struct ClusterDetails {
    phases: Vec<Phase>,
    /// 1 − (three instances' records/s ÷ the mean of the two one-instance phases').
    overhead_of_three: Option<f64>,
    #[serde(rename = "failover")]
    failover_opt: Option<Failover>,
    /// (tenant, epoch) pairs of this run written by more than one instance (0 expected).
    epochs_with_two_writers: i64,
    instance_logs: Vec<PathBuf>,
}

/// An engine instance or HAProxy started by this scenario; killed if dropped.
struct Started {
    name: String,
    child: Child,
    log: PathBuf,
}

pub async fn run(context: &Context, options: &ClusterOptions) -> ScenarioReport {
    let started_at = Utc::now();
    let mut notes = vec![
        "Records/s of a phase: records in its finished scans over the time from its first POST to its last completed_at (the engine's clock, same machine).".to_string(),
        "Each phase sends fresh tenants; every scan carries an idempotency key, and a submission that got no answer (HAProxy's 502/504, a dropped connection) is sent again after 1 s.".to_string(),
        "Memory is sampled for the running engine only (the instances started here are not).".to_string(),
    ];
    let mut data = DataReport::default();
    let memory_sampler_opt = context.start_memory_sampler();
    let mut phases = Vec::new();
    let mut expected_rows: BTreeMap<Uuid, i64> = BTreeMap::new();
    let mut setup_errors = Vec::new();
    let mut failover_opt = None;
    let mut instance_logs = Vec::new();

    let running_engine: Vec<u32> = context.engine_pid_opt.into_iter().collect();
    // One, three, one again, three with a kill: the one-instance phases run on a table
    // smaller and larger than the three-instance phase's, so their mean sees the same size.
    let alone = context.client.with_fresh_statistics();
    let (phase, followed, _) = run_phase(
        context,
        options,
        PhasePlan {
            name: ONE,
            client: &alone,
            through: context.global.engine_url.clone(),
            instances: 1,
            index: 0,
            processes: vec![("engines", running_engine.clone())],
        },
        &mut data,
        None,
    )
    .await;
    expect_rows(&mut expected_rows, &followed);
    phases.push(phase);

    match start_cluster(context, options).await {
        Ok(cluster) => {
            instance_logs = cluster.logs();
            let (phase, followed, _) = run_phase(
                context,
                options,
                PhasePlan {
                    name: THREE,
                    client: &cluster.client,
                    through: cluster.url.clone(),
                    instances: 3,
                    index: 1,
                    processes: cluster.processes(&running_engine),
                },
                &mut data,
                None,
            )
            .await;
            expect_rows(&mut expected_rows, &followed);
            phases.push(phase);
            cluster.stop().await;
        }
        Err(error) => setup_errors.push(error),
    }

    let alone_again = context.client.with_fresh_statistics();
    let (phase, followed, _) = run_phase(
        context,
        options,
        PhasePlan {
            name: ONE_AGAIN,
            client: &alone_again,
            through: context.global.engine_url.clone(),
            instances: 1,
            index: 2,
            processes: vec![("engines", running_engine.clone())],
        },
        &mut data,
        None,
    )
    .await;
    expect_rows(&mut expected_rows, &followed);
    phases.push(phase);

    if !options.skip_kill && setup_errors.is_empty() {
        match start_cluster(context, options).await {
            Ok(mut cluster) => {
                let plan = PhasePlan {
                    name: KILLED,
                    client: &cluster.client,
                    through: cluster.url.clone(),
                    instances: 3,
                    index: 3,
                    processes: cluster.processes(&running_engine),
                };
                let victim = cluster.instances.last_mut().expect("two instances started");
                let victim_name = victim.name.clone();
                let (phase, followed, killed_at_opt) =
                    run_phase(context, options, plan, &mut data, Some(victim)).await;
                expect_rows(&mut expected_rows, &followed);
                let phase_tenants: Vec<Uuid> = followed.iter().map(|scan| scan.tenant_id).collect();
                let phase_started_at = followed
                    .iter()
                    .map(|scan| scan.submitted_at)
                    .min()
                    .unwrap_or(started_at);
                match killed_at_opt {
                    Some(killed_at) => match failover(
                        &context.database_url,
                        &phase_tenants,
                        &victim_name,
                        killed_at,
                        phase_started_at,
                    )
                    .await
                    {
                        Ok(failover) => failover_opt = Some(failover),
                        Err(error) => setup_errors.push(format!("failover figures: {error}")),
                    },
                    None => setup_errors.push(format!(
                        "{victim_name} could not be killed {} s into the phase",
                        options.kill_after_secs
                    )),
                }
                phases.push(phase);
                cluster.stop().await;
            }
            Err(error) => setup_errors.push(error),
        }
    }
    let (memory_opt, memory_error_opt) = finish_memory(context, memory_sampler_opt).await;

    let tenant_ids: Vec<Uuid> = expected_rows.keys().copied().collect();
    let epochs_with_two_writers =
        match epochs_with_two_writers(&context.database_url, &tenant_ids).await {
            Ok(count) => count,
            Err(error) => {
                setup_errors.push(format!("ownership check: {error}"));
                -1
            }
        };
    let mut verification = database::verify(&context.database_url, &expected_rows).await;
    if let Some(error) = setup_errors.first() {
        verification.passed = false;
        verification.error_opt.get_or_insert_with(|| error.clone());
    }
    notes.extend(setup_errors.iter().cloned());

    let baseline_opt = baseline::after_engine_part(
        context,
        options.tenants,
        options.records,
        options.skip_baseline,
    )
    .await;
    let rate_of = |name: &str| {
        phases
            .iter()
            .find(|phase| phase.name == name)
            .map(|phase| phase.records_per_second)
    };
    let one_instance_rate_opt = match (rate_of(ONE), rate_of(ONE_AGAIN)) {
        (Some(first), Some(again)) => Some((first + again) / 2.0),
        (first_opt, again_opt) => first_opt.or(again_opt),
    };
    let overhead_of_three = match (one_instance_rate_opt, rate_of(THREE)) {
        (Some(one), Some(three)) if one > 0.0 => Some(round_to_thousandths(1.0 - three / one)),
        _ => None,
    };
    let all_completed = phases
        .iter()
        .all(|phase| phase.scans_completed == options.tenants);
    let details = ClusterDetails {
        phases,
        overhead_of_three,
        failover_opt,
        epochs_with_two_writers,
        instance_logs,
    };

    let (mut summary_en, mut summary_vi) = (Vec::new(), Vec::new());
    for phase in &details.phases {
        let p99_ms = phase
            .endpoints
            .get(SUBMIT_SCAN)
            .map_or(0.0, |submit| submit.latency_success.p99_ms);
        let cpu = |group: &str| phase.cpu_seconds.get(group).copied().unwrap_or(0.0);
        summary_en.push(format!(
            "{} ({}): {} of {} scans completed, {} retried; {} records in {} s = {} records/s; POST /data-scans p99 {} ms; CPU: engines {} s, PostgreSQL {} s, HAProxy {} s.",
            phase.name,
            phase.through,
            phase.scans_completed,
            options.tenants,
            phase.scans_retried,
            number_en(phase.records_written as f64, 0),
            number_en(phase.seconds, 2),
            number_en(phase.records_per_second, 0),
            number_en(p99_ms, 0),
            number_en(cpu("engines"), 2),
            number_en(cpu("postgres"), 2),
            number_en(cpu("haproxy"), 2),
        ));
        summary_vi.push(format!(
            "{} ({}): {}/{} lượt quét hoàn thành, {} lượt gửi lại; {} bản ghi trong {} giây = {} bản ghi/giây; POST /data-scans p99 {} ms; CPU: các engine {} giây, PostgreSQL {} giây, HAProxy {} giây.",
            phase_name_vi(phase.name),
            phase.through,
            phase.scans_completed,
            options.tenants,
            phase.scans_retried,
            number_vi(phase.records_written as f64, 0),
            number_vi(phase.seconds, 2),
            number_vi(phase.records_per_second, 0),
            number_vi(p99_ms, 0),
            number_vi(cpu("engines"), 2),
            number_vi(cpu("postgres"), 2),
            number_vi(cpu("haproxy"), 2),
        ));
    }
    if let Some(overhead) = details.overhead_of_three {
        let met = overhead < OVERHEAD_GOAL;
        summary_en.push(format!(
            "Three instances against one (the mean of its two phases): {} % slower (goal under {} %: {}).",
            number_en(overhead * 100.0, 1),
            OVERHEAD_GOAL * 100.0,
            if met { "met" } else { "not met" },
        ));
        summary_vi.push(format!(
            "Ba phiên bản so với một (trung bình hai giai đoạn): chậm hơn {} % (mục tiêu dưới {} %: {}).",
            number_vi(overhead * 100.0, 1),
            OVERHEAD_GOAL * 100.0,
            if met { "đạt" } else { "chưa đạt" },
        ));
    }
    if let Some(failover) = &details.failover_opt {
        let (first, last) = failover
            .resumed_after_opt
            .as_ref()
            .map_or((0.0, 0.0), |resumed| {
                (resumed.min_seconds, resumed.max_seconds)
            });
        summary_en.push(format!(
            "{} killed {} s into its phase: {} of the {} tenants it had written for were taken over, writing again {} to {} s after the kill.",
            failover.killed_instance,
            number_en(failover.killed_after_seconds, 2),
            failover.tenants_taken_over,
            failover.tenants_written_by_killed,
            number_en(first, 2),
            number_en(last, 2),
        ));
        summary_vi.push(format!(
            "{} bị dừng đột ngột sau {} giây: {}/{} tổ chức mà nó đã ghi được phiên bản khác tiếp nhận, ghi lại sau {} đến {} giây.",
            failover.killed_instance,
            number_vi(failover.killed_after_seconds, 2),
            failover.tenants_taken_over,
            failover.tenants_written_by_killed,
            number_vi(first, 2),
            number_vi(last, 2),
        ));
    }
    summary_en.push(format!(
        "Epochs written by two instances: {} (0 expected).",
        details.epochs_with_two_writers
    ));
    summary_vi.push(format!(
        "Số epoch do hai phiên bản cùng ghi: {} (kỳ vọng 0).",
        details.epochs_with_two_writers
    ));
    let three_instances = details.phases.iter().find(|phase| phase.name == THREE);
    let engine_throughput_opt = three_instances.map(|phase| Throughput {
        records: phase.records_written as u64,
        seconds: phase.seconds,
        records_per_second: phase.records_per_second,
        measured: "three instances through HAProxy: from the phase's first POST /data-scans to its last scan's completed_at".to_string(),
    });
    let ratio_opt = engine_throughput_opt
        .as_ref()
        .and_then(|engine| baseline::ratio(engine.records_per_second, baseline_opt.as_ref()));
    if let Some(baseline) = &baseline_opt {
        push_baseline_summary(baseline, &mut summary_en, &mut summary_vi);
        for phase in &details.phases {
            let ratio = phase.records_per_second / baseline.throughput.records_per_second.max(1e-9);
            summary_en.push(format!(
                "{} / plain COPY = {}.",
                phase.name,
                number_en(ratio, 3)
            ));
            summary_vi.push(format!(
                "{} / COPY trực tiếp = {}.",
                phase_name_vi(phase.name),
                number_vi(ratio, 3)
            ));
        }
    }
    let (english, vietnamese) = common_summary_lines(&verification, memory_opt.as_ref());
    summary_en.extend(english);
    summary_vi.extend(vietnamese);

    let endpoints = three_instances
        .map(|phase| phase.endpoints.clone())
        .unwrap_or_default();
    ScenarioReport {
        passed: verification.passed
            && all_completed
            && details.epochs_with_two_writers == 0
            && baseline::passed(baseline_opt.as_ref()),
        data,
        engine_throughput_opt,
        baseline_opt,
        engine_to_baseline_ratio_opt: ratio_opt,
        endpoints,
        details: serde_json::to_value(&details).unwrap_or_default(),
        memory_opt,
        memory_error_opt,
        verification,
        notes,
        summary_en,
        summary_vi,
        ..context.report("cluster", options, started_at)
    }
}

const ONE: &str = "one instance";
const THREE: &str = "three instances";
const ONE_AGAIN: &str = "one instance again";
const KILLED: &str = "three instances, one killed";

fn phase_name_vi(name: &str) -> &'static str {
    match name {
        ONE => "một phiên bản",
        THREE => "ba phiên bản",
        ONE_AGAIN => "lại một phiên bản",
        _ => "ba phiên bản, một bị dừng đột ngột",
    }
}

/// What one phase sends, and through what.
struct PhasePlan<'a> {
    name: &'static str,
    client: &'a EngineClient,
    through: String,
    instances: usize,
    /// Stream of the generated records: each phase sends its own.
    index: usize,
    /// Processes whose CPU time the phase reports: engines, HAProxy.
    processes: Vec<(&'static str, Vec<u32>)>,
}

/// One phase: fresh tenants, every scan submitted at once through the plan's client and
/// followed to its end; with a `victim`, it is killed `kill_after_secs` into the phase.
async fn run_phase(
    context: &Context,
    options: &ClusterOptions,
    plan: PhasePlan<'_>,
    data: &mut DataReport,
    victim_opt: Option<&mut Started>,
) -> (Phase, Vec<FollowedScan>, Option<DateTime<Utc>>) {
    let PhasePlan {
        name,
        client,
        through,
        instances,
        index,
        processes,
    } = plan;
    let records_per_scan = options.records;
    let (bodies, phase_data) = generate_scan_bodies(
        context,
        options.tenants,
        records_per_scan,
        index * options.tenants,
        Some("loadtest-cluster"),
    )
    .await;
    data.add(&phase_data);

    let postmaster_opt = process_cpu::postmaster_pid(&context.global.postmaster_pid);
    let cpu_before = process_cpu::snapshot(&processes, postmaster_opt);
    let burst = submit_all_and_follow_through(
        context,
        client,
        context.global.max_attempts,
        Unanswered::Retry,
        bodies,
        records_per_scan,
        Duration::from_millis(options.poll_interval_ms),
        name,
    );
    let (phase_started_at, followed, killed_at_opt) = match victim_opt {
        None => {
            let (phase_started_at, followed) = burst.await;
            (phase_started_at, followed, None)
        }
        Some(victim) => {
            let kill = async {
                tokio::time::sleep(Duration::from_secs_f64(options.kill_after_secs)).await;
                match victim.child.start_kill() {
                    Ok(()) => {
                        let killed_at = Utc::now();
                        let _ = victim.child.wait().await;
                        Some(killed_at)
                    }
                    Err(_) => None,
                }
            };
            let ((phase_started_at, followed), killed_at_opt) = tokio::join!(burst, kill);
            (phase_started_at, followed, killed_at_opt)
        }
    };
    let cpu_seconds = process_cpu::seconds_between(
        &cpu_before,
        &process_cpu::snapshot(&processes, postmaster_opt),
    );
    let (records_written, seconds) = finished_records_and_seconds(&followed, phase_started_at);
    let phase = Phase {
        name,
        through,
        instances,
        scans_accepted: followed.iter().filter(|scan| scan.was_accepted()).count(),
        scans_completed: followed
            .iter()
            .filter(|scan| scan.final_status == "completed")
            .count(),
        scans_retried: followed
            .iter()
            .filter(|scan| scan.submit_attempts > 1)
            .count(),
        records_written,
        seconds: round_to_thousandths(seconds),
        records_per_second: round_to_thousandths(records_written as f64 / seconds.max(1e-9)),
        cpu_seconds,
        endpoints: client.recorder.reports(),
    };
    (phase, followed, killed_at_opt)
}

/// The two started instances and HAProxy in front of all three.
struct Cluster {
    instances: Vec<Started>,
    haproxy: Started,
    url: String,
    client: EngineClient,
}

impl Cluster {
    /// The engine processes (the running one and those started here) and HAProxy, for
    /// [`process_cpu`].
    fn processes(&self, running_engine: &[u32]) -> Vec<(&'static str, Vec<u32>)> {
        let engines = running_engine
            .iter()
            .copied()
            .chain(
                self.instances
                    .iter()
                    .filter_map(|started| started.child.id()),
            )
            .collect();
        let haproxy = self.haproxy.child.id().into_iter().collect();
        vec![("engines", engines), ("haproxy", haproxy)]
    }

    fn logs(&self) -> Vec<PathBuf> {
        self.instances
            .iter()
            .chain([&self.haproxy])
            .map(|started| started.log.clone())
            .collect()
    }

    /// Stops the instances still running with SIGTERM (they hand their tenants back), then
    /// HAProxy.
    async fn stop(mut self) {
        for instance in &mut self.instances {
            stop_gracefully(&mut instance.child).await;
        }
        let _ = self.haproxy.child.start_kill();
        let _ = self.haproxy.child.wait().await;
    }
}

async fn stop_gracefully(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Starts two instances on the running engine's database and HAProxy in front of the three,
/// and waits until HAProxy sends to all three.
async fn start_cluster(context: &Context, options: &ClusterOptions) -> Result<Cluster, String> {
    let token = context
        .global
        .token_opt
        .clone()
        .ok_or("the cluster scenario needs --token: the instances it starts take it as their bootstrap admin token")?;
    let running_port = port_of_url(&context.global.engine_url)
        .ok_or_else(|| format!("no port in {}", context.global.engine_url))?;
    std::fs::create_dir_all(&options.work_dir)
        .map_err(|error| format!("cannot create {}: {error}", options.work_dir.display()))?;

    let mut instances = Vec::new();
    let mut ports = vec![running_port];
    for name in STARTED_INSTANCES {
        let port = free_port()?;
        let log = options.work_dir.join(format!("{name}.log"));
        let mut command = Command::new(&options.engine_binary);
        command
            .env("DATABASE_URL", &context.database_url)
            .env("INGEST__HTTP__PORT", port.to_string())
            .env("INGEST__CLUSTER__INSTANCE_ID", name)
            .env("INGEST__AUTH__BOOTSTRAP_ADMIN_TOKEN", &token);
        let child = spawn_logged(command, &log, &options.engine_binary)?;
        instances.push(Started {
            name: name.to_string(),
            child,
            log,
        });
        ports.push(port);
    }
    for (instance, port) in instances.iter_mut().zip(&ports[1..]) {
        wait_until_healthy(instance, &format!("http://127.0.0.1:{port}")).await?;
    }

    let shipped = std::fs::read_to_string(&options.haproxy_config)
        .map_err(|error| format!("cannot read {}: {error}", options.haproxy_config.display()))?;
    let frontend_port = free_port()?;
    let configuration = haproxy_configuration(&shipped, frontend_port, &ports)?;
    let configuration_path = options.work_dir.join("haproxy.cfg");
    std::fs::write(&configuration_path, configuration)
        .map_err(|error| format!("cannot write {}: {error}", configuration_path.display()))?;
    let mut command = Command::new(&options.haproxy);
    command.arg("-f").arg(&configuration_path);
    let haproxy_log = options.work_dir.join("haproxy.log");
    let mut haproxy = Started {
        name: "haproxy".to_string(),
        child: spawn_logged(command, &haproxy_log, &options.haproxy)?,
        log: haproxy_log,
    };
    let url = format!("http://127.0.0.1:{frontend_port}");
    wait_until_healthy(&mut haproxy, &url).await?;
    tokio::time::sleep(HAPROXY_SETTLE).await;
    let live = live_instances(&url, &token).await;
    let client = EngineClient::new(
        &url,
        Some(token),
        Duration::from_secs(context.global.request_timeout_secs),
        HTTP_CONNECTIONS,
    )?;
    if live != Some(3) {
        return Err(format!(
            "GET /admin/cluster through HAProxy shows {live:?} live instances, not 3 (another engine on this database?)"
        ));
    }
    Ok(Cluster {
        instances,
        haproxy,
        url,
        client,
    })
}

/// `live_instances` of `GET /admin/cluster` at `url`, if it answers.
async fn live_instances(url: &str, token: &str) -> Option<u64> {
    let response = reqwest::Client::new()
        .get(format!("{url}/admin/cluster"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["live_instances"].as_u64()
}

fn spawn_logged(mut command: Command, log: &Path, program: &Path) -> Result<Child, String> {
    let file = std::fs::File::create(log)
        .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
    let second = file
        .try_clone()
        .map_err(|error| format!("cannot open {} twice: {error}", log.display()))?;
    command
        .stdout(file)
        .stderr(second)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", program.display()))
}

async fn wait_until_healthy(started: &mut Started, url: &str) -> Result<(), String> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = started.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before answering; see {}",
                started.name,
                started.log.display()
            ));
        }
        let healthy = http
            .get(format!("{url}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if healthy {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not answer GET /health within {} s; see {}",
                started.name,
                STARTUP_TIMEOUT.as_secs(),
                started.log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A port nobody listens on now (the instance binds it a moment later).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free port: {error}"))
}

/// The shipped HAProxy configuration with its front end on `frontend_port` and its three
/// servers on `server_ports`, so the run checks the configuration operators are given.
fn haproxy_configuration(
    shipped: &str,
    frontend_port: u16,
    server_ports: &[u16],
) -> Result<String, String> {
    let mut configuration = shipped.to_string();
    let replacements = [(
        "bind 127.0.0.1:8080".to_string(),
        format!("bind 127.0.0.1:{frontend_port}"),
    )]
    .into_iter()
    .chain(
        [
            "instance-a 127.0.0.1:8081",
            "instance-b 127.0.0.1:8082",
            "instance-c 127.0.0.1:8083",
        ]
        .iter()
        .zip(server_ports)
        .map(|(server, port)| {
            let name = server.split(' ').next().expect("a name before the address");
            (server.to_string(), format!("{name} 127.0.0.1:{port}"))
        }),
    );
    for (from, to) in replacements {
        if configuration.matches(from.as_str()).count() != 1 {
            return Err(format!(
                "the HAProxy configuration does not say `{from}` exactly once; the scenario cannot point it at this run's instances"
            ));
        }
        configuration = configuration.replace(&from, &to);
    }
    Ok(configuration)
}

/// How the killed instance's tenants resumed, from `ownership_writes` (database clock).
async fn failover(
    database_url: &str,
    tenants: &[Uuid],
    killed_instance: &str,
    killed_at: DateTime<Utc>,
    phase_started_at: DateTime<Utc>,
) -> Result<Failover, String> {
    let client = database::connect(database_url).await?;
    let rows = client
        .query(
            "WITH killed AS (SELECT tenant_id, max(epoch) AS epoch FROM ownership_writes \
                 WHERE instance_id = $2 AND tenant_id = ANY($1) GROUP BY tenant_id) \
             SELECT killed.tenant_id, min(later.first_write_at) \
             FROM killed LEFT JOIN ownership_writes AS later \
                 ON later.tenant_id = killed.tenant_id AND later.epoch > killed.epoch \
                 AND later.first_write_at >= $3 \
             GROUP BY killed.tenant_id",
            &[&tenants, &killed_instance, &killed_at],
        )
        .await
        .map_err(|error| format!("reading ownership_writes failed: {error}"))?;
    let resumed: Vec<f64> = rows
        .iter()
        .filter_map(|row| row.get::<_, Option<DateTime<Utc>>>(1))
        .filter_map(|resumed_at| (resumed_at - killed_at).num_microseconds())
        .map(|micros| round_to_thousandths(micros as f64 / 1e6))
        .collect();
    Ok(Failover {
        killed_instance: killed_instance.to_string(),
        killed_at,
        killed_after_seconds: round_to_thousandths(
            (killed_at - phase_started_at).num_milliseconds() as f64 / 1e3,
        ),
        tenants_written_by_killed: rows.len(),
        tenants_taken_over: resumed.len(),
        resumed_after_opt: summarize_seconds(&resumed),
    })
}

/// (tenant, epoch) pairs among `tenants` written by more than one instance.
async fn epochs_with_two_writers(database_url: &str, tenants: &[Uuid]) -> Result<i64, String> {
    let client = database::connect(database_url).await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM (SELECT tenant_id, epoch FROM ownership_writes \
                 WHERE tenant_id = ANY($1) GROUP BY tenant_id, epoch \
                 HAVING count(*) > 1) AS shared",
            &[&tenants],
        )
        .await
        .map_err(|error| format!("reading ownership_writes failed: {error}"))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_haproxy_configuration_is_pointed_at_this_runs_ports() {
        let shipped = include_str!("../../../config/haproxy/haproxy.cfg");
        let configuration = haproxy_configuration(shipped, 40000, &[40001, 40002, 40003]).unwrap();
        assert!(configuration.contains("bind 127.0.0.1:40000"));
        assert!(configuration.contains("server instance-a 127.0.0.1:40001 check"));
        assert!(configuration.contains("server instance-b 127.0.0.1:40002 check"));
        assert!(configuration.contains("server instance-c 127.0.0.1:40003 check"));
        assert!(!configuration.contains(":8080") && !configuration.contains(":8083"));

        let error = haproxy_configuration("global\n", 1, &[2, 3, 4]).unwrap_err();
        assert!(error.contains("bind 127.0.0.1:8080"), "{error}");
    }
}
