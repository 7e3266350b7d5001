//! The command line: one subcommand per scenario, and options every scenario shares.
//!
//! Defaults are named constants so `all` runs each scenario exactly as its own subcommand
//! would with no options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "Drives a running ingestion engine with realistic Vietnamese PDPL data, verifies \
             the rows in PostgreSQL, and writes a JSON report and an SVG chart"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Options every scenario shares; they may come before or after the scenario's name.
#[derive(Args, Debug, Clone, Serialize)]
pub struct GlobalOptions {
    /// The running engine.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub engine_url: String,
    /// The engine's database (default: the embedded cluster named by --postmaster-pid).
    #[arg(long = "database-url", global = true)]
    #[serde(skip)]
    pub database_url_opt: Option<String>,
    /// The embedded cluster's `postmaster.pid`; its line 4 is the port.
    #[arg(long, global = true, default_value = ".data/postgres/postmaster.pid")]
    pub postmaster_pid: PathBuf,
    /// API token, sent as `Authorization: Bearer <token>`.
    #[arg(
        long = "token",
        env = "INGEST_TOKEN",
        global = true,
        hide_env_values = true
    )]
    #[serde(skip)]
    pub token_opt: Option<String>,
    /// The engine's process, to sample its memory (default: the `ingest-engine` process
    /// listening on the engine URL's port).
    #[arg(long = "engine-pid", global = true)]
    pub engine_pid_opt: Option<u32>,
    /// Connections of the plain-COPY baseline (the engine's default writer count).
    #[arg(long, global = true, default_value_t = 4)]
    pub writers: usize,
    /// Where reports and charts are written.
    #[arg(long, global = true, default_value = "loadtest/reports")]
    pub report_dir: PathBuf,
    /// Seed of the generated data: the same seed sends the same records.
    #[arg(long, global = true, default_value_t = 2025)]
    pub seed: u64,
    /// Longest a scenario waits for its scans to finish before it reports them unfinished.
    #[arg(long, global = true, default_value_t = 900)]
    pub timeout_secs: u64,
    /// Attempts per scan or batch submission while the engine answers 429 or 503 (each then
    /// waits the answer's Retry-After); 1 reports the first refusal as final. `mixed` never
    /// retries: its refusals are part of what it measures.
    #[arg(long, global = true, default_value_t = 5)]
    pub max_attempts: u32,
    /// Longest one HTTP request may take.
    #[arg(long, global = true, default_value_t = 300)]
    pub request_timeout_secs: u64,
    /// The `psql` of the second baseline (`\copy` of the same rows in COPY's text format).
    #[arg(long, global = true, default_value = "psql")]
    pub psql: String,
    /// Run only the binary-COPY baseline, not `psql`'s `\copy`.
    #[arg(long, global = true)]
    pub no_psql_copy: bool,
    /// Do not create the cluster's WAL segment files before the scenarios (see
    /// `database::prepare_wal_segments`): measure a fresh cluster's first gigabytes of WAL,
    /// which cost whatever part of a scenario runs first.
    #[arg(long, global = true)]
    pub cold_wal: bool,
    /// Start a baseline that runs after an engine part without first settling the database
    /// (see `database::settle`): the baseline then also pays for the engine part's
    /// aftermath (the vacuum its rows set off, the checkpoint its WAL set off, the dirty
    /// pages of the verification's reads), as every baseline did before 2026-12-03.
    #[arg(long, global = true)]
    pub unsettled_baseline: bool,
}

#[derive(Subcommand, Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Many tenants submit one data scan each at the same moment; then the same rows by plain COPY.
    Scans(ScansOptions),
    /// Concurrent clients post synchronous batches.
    Batch(BatchOptions),
    /// Dashboard reads and writes together for a fixed time.
    Mixed(MixedOptions),
    /// One tenant's huge backlog against other tenants' small scans.
    Fairness(FairnessOptions),
    /// Plain COPY into processing_activities, no engine involved.
    Baseline(BaselineOptions),
    /// The mixed traffic for a long time, with the engine's resources sampled throughout.
    Soak(SoakOptions),
    /// Row-level security's cost on each dashboard read, for tenants of 1,000 to 1,000,000 rows.
    Rls(RlsOptions),
    /// The audit log at size: millions of entries loaded by COPY, one tenant's month read
    /// through GET /admin/audit, old months archived by `ingest-engine audit maintain`.
    Audit(AuditOptions),
    /// Scan notifications: the scans burst without and with a webhook endpoint per tenant
    /// (phases alternating), delivery delay after each scan's completion, and the cost to
    /// ingestion. Run the engine with INGEST__WEBHOOKS__ALLOW_PRIVATE_TARGETS=true (the
    /// receiver listens on loopback).
    Webhooks(WebhooksOptions),
    /// Several instances on one database: the scans burst on the running engine alone, then
    /// through HAProxy to it and two more instances started here, then again with one of those
    /// killed mid-run; then the same rows by plain COPY. Needs --token (the instances started
    /// here take it as their bootstrap admin token) and HAProxy.
    Cluster(ClusterOptions),
    /// The largest scans at once: every tenant submits one scan of 100,000 records at the same
    /// moment, retrying 503 and 429 after their Retry-After; then the same rows by plain COPY.
    Burst(BurstOptions),
    /// scans, batch, mixed, fairness and baseline in sequence, each with its defaults.
    All,
}

pub const DEFAULT_SCAN_TENANTS: usize = 100;
pub const DEFAULT_SCAN_RECORDS: usize = 10_000;
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 500;

#[derive(Args, Debug, Clone, Serialize)]
pub struct ScansOptions {
    /// Tenants, each submitting one scan at the same moment.
    #[arg(long, default_value_t = DEFAULT_SCAN_TENANTS)]
    pub tenants: usize,
    /// Records in each scan.
    #[arg(long, default_value_t = DEFAULT_SCAN_RECORDS)]
    pub records: usize,
    /// Interval between two status reads of one scan.
    #[arg(long, default_value_t = DEFAULT_POLL_INTERVAL_MS)]
    pub poll_interval_ms: u64,
    /// Do not run the plain-COPY baseline after the engine part.
    #[arg(long)]
    pub skip_baseline: bool,
}

pub const DEFAULT_BATCH_CLIENTS: usize = 50;
pub const DEFAULT_BATCH_RECORDS: usize = 5_000;
pub const DEFAULT_BATCHES_PER_CLIENT: usize = 4;

#[derive(Args, Debug, Clone, Serialize)]
pub struct BatchOptions {
    /// Concurrent clients, each posting its batches one after another.
    #[arg(long, default_value_t = DEFAULT_BATCH_CLIENTS)]
    pub clients: usize,
    /// Records in each batch (the engine accepts at most 10,000).
    #[arg(long = "batch-size", visible_alias = "records", default_value_t = DEFAULT_BATCH_RECORDS)]
    pub batch_size: usize,
    /// Batches each client posts.
    #[arg(long, default_value_t = DEFAULT_BATCHES_PER_CLIENT)]
    pub batches_per_client: usize,
}

/// What the writes of `mixed` are.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    Batches,
    Scans,
    Both,
}

pub const DEFAULT_MIXED_SECONDS: u64 = 30;
pub const DEFAULT_MIXED_CLIENTS: usize = 16;
pub const DEFAULT_MIXED_TENANTS: usize = 20;
pub const DEFAULT_MIXED_RATE: u64 = 150;
pub const DEFAULT_READ_PERCENT: u32 = 70;
pub const DEFAULT_MIXED_BATCH_RECORDS: usize = 1_000;
pub const DEFAULT_MIXED_SCAN_RECORDS: usize = 1_000;
pub const DEFAULT_MIXED_MAX_REQUESTS: u64 = 200_000;

#[derive(Args, Debug, Clone, Serialize)]
pub struct MixedOptions {
    /// How long reads and writes run.
    #[arg(long, default_value_t = DEFAULT_MIXED_SECONDS)]
    pub duration_secs: u64,
    /// Concurrent clients, each choosing a read or a write per request.
    #[arg(long, default_value_t = DEFAULT_MIXED_CLIENTS)]
    pub clients: usize,
    /// Tenants whose dashboards are read (and which receive the scans).
    #[arg(long, default_value_t = DEFAULT_MIXED_TENANTS)]
    pub tenants: usize,
    /// Requests per second of all clients together (0: each client as fast as it can).
    #[arg(long, default_value_t = DEFAULT_MIXED_RATE)]
    pub rate: u64,
    /// Share of requests that are dashboard reads, in percent.
    #[arg(long, default_value_t = DEFAULT_READ_PERCENT)]
    pub read_percent: u32,
    /// What the writes are.
    #[arg(long, value_enum, default_value_t = WriteKind::Both)]
    pub write_kind: WriteKind,
    /// Records in each written batch.
    #[arg(long, default_value_t = DEFAULT_MIXED_BATCH_RECORDS)]
    pub batch_size: usize,
    /// Records in each written scan (and in each tenant's first scan, before timing).
    #[arg(long, default_value_t = DEFAULT_MIXED_SCAN_RECORDS)]
    pub scan_records: usize,
    /// Upper bound of requests, whatever the duration.
    #[arg(long, default_value_t = DEFAULT_MIXED_MAX_REQUESTS)]
    pub max_requests: u64,
}

pub const DEFAULT_BACKLOG_SCANS: usize = 10;
pub const DEFAULT_BACKLOG_SCAN_RECORDS: usize = 100_000;
pub const DEFAULT_SMALL_TENANTS: usize = 20;
pub const DEFAULT_SMALL_SCAN_RECORDS: usize = 1_000;
pub const DEFAULT_SMALL_INTERVAL_MS: u64 = 250;
pub const DEFAULT_FAIRNESS_POLL_INTERVAL_MS: u64 = 100;

#[derive(Args, Debug, Clone, Serialize)]
pub struct FairnessOptions {
    /// Scans of the one large tenant's backlog.
    #[arg(long, default_value_t = DEFAULT_BACKLOG_SCANS)]
    pub backlog_scans: usize,
    /// Records in each backlog scan (the engine accepts at most 100,000).
    #[arg(long, default_value_t = DEFAULT_BACKLOG_SCAN_RECORDS)]
    pub backlog_scan_records: usize,
    /// Other tenants, each submitting one small scan, from the first backlog scan's acceptance on.
    #[arg(long, default_value_t = DEFAULT_SMALL_TENANTS)]
    pub small_tenants: usize,
    /// Records in each small scan.
    #[arg(long, default_value_t = DEFAULT_SMALL_SCAN_RECORDS)]
    pub small_scan_records: usize,
    /// Pause between two small tenants' submissions.
    #[arg(long, default_value_t = DEFAULT_SMALL_INTERVAL_MS)]
    pub small_interval_ms: u64,
    /// Interval between two status reads of one scan (small scans' completion is read from
    /// the engine's `completed_at`, so this only bounds how soon it is seen).
    #[arg(long, default_value_t = DEFAULT_FAIRNESS_POLL_INTERVAL_MS)]
    pub poll_interval_ms: u64,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct BaselineOptions {
    /// Tenants, each with one scan's worth of rows.
    #[arg(long, default_value_t = DEFAULT_SCAN_TENANTS)]
    pub tenants: usize,
    /// Rows per tenant.
    #[arg(long, default_value_t = DEFAULT_SCAN_RECORDS)]
    pub records: usize,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct SoakOptions {
    /// How long the traffic runs.
    #[arg(long, default_value_t = 1_800)]
    pub duration_secs: u64,
    /// Requests per second of all clients together (70 % dashboard reads).
    #[arg(long, default_value_t = 20)]
    pub rate: u64,
    /// Records in each written batch.
    #[arg(long, default_value_t = 200)]
    pub batch_size: usize,
    /// Records in each written scan.
    #[arg(long, default_value_t = 1_000)]
    pub scan_records: usize,
    /// Seconds before the resources are taken as settled (growth is measured from then).
    #[arg(long, default_value_t = 120)]
    pub warm_up_secs: u64,
    /// Seconds between two samples of the engine's resources.
    #[arg(long, default_value_t = 5)]
    pub sample_secs: u64,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct RlsOptions {
    /// Sizes (rows) of the tenants whose reads are timed.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1_000_000, 100_000, 1_000])]
    pub measured_sizes: Vec<usize>,
    /// Other tenants loaded around them.
    #[arg(long, default_value_t = 8_899)]
    pub filler_tenants: usize,
    /// Rows of each other tenant.
    #[arg(long, default_value_t = 1_000)]
    pub filler_rows: usize,
    /// Timed runs of each read, with and without row-level security, alternating.
    #[arg(long, default_value_t = 200)]
    pub rounds: usize,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct WebhooksOptions {
    /// Tenants per phase, each submitting one scan at the same moment (with an endpoint each in
    /// the phases with webhooks).
    #[arg(long, default_value_t = DEFAULT_SCAN_TENANTS)]
    pub tenants: usize,
    /// Records in each scan.
    #[arg(long, default_value_t = DEFAULT_SCAN_RECORDS)]
    pub records: usize,
    /// Rounds of four phases: without, with, with, without webhooks, so both kinds see the
    /// table at the same sizes on average.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Interval between two status reads of one scan.
    #[arg(long, default_value_t = DEFAULT_POLL_INTERVAL_MS)]
    pub poll_interval_ms: u64,
    /// Milliseconds the receiver takes to answer each delivery.
    #[arg(long, default_value_t = 0)]
    pub receiver_delay_ms: u64,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct BurstOptions {
    /// Tenants, each submitting one scan at the same moment.
    #[arg(long, default_value_t = DEFAULT_SCAN_TENANTS)]
    pub tenants: usize,
    /// Records in each scan (the engine's largest by default).
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Submissions of one scan at most: the first, then retries after 503 or 429.
    #[arg(long, default_value_t = 20)]
    pub max_attempts: u32,
    /// Interval between two status reads of one scan.
    #[arg(long, default_value_t = 1_000)]
    pub poll_interval_ms: u64,
    /// Do not run the plain-COPY baseline after the engine part.
    #[arg(long)]
    pub skip_baseline: bool,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct ClusterOptions {
    /// Tenants per phase, each submitting one scan at the same moment.
    #[arg(long, default_value_t = DEFAULT_SCAN_TENANTS)]
    pub tenants: usize,
    /// Records in each scan.
    #[arg(long, default_value_t = DEFAULT_SCAN_RECORDS)]
    pub records: usize,
    /// Interval between two status reads of one scan.
    #[arg(long, default_value_t = DEFAULT_POLL_INTERVAL_MS)]
    pub poll_interval_ms: u64,
    /// The engine binary of the two instances started beside the running one.
    #[arg(long, default_value = "target/release/ingest-engine")]
    pub engine_binary: std::path::PathBuf,
    /// The HAProxy binary.
    #[arg(long, default_value = "haproxy")]
    pub haproxy: std::path::PathBuf,
    /// The configuration HAProxy runs with, its ports rewritten to this run's instances.
    #[arg(long, default_value = "config/haproxy/haproxy.cfg")]
    pub haproxy_config: std::path::PathBuf,
    /// Where the started instances and HAProxy keep their logs.
    #[arg(long, default_value = "/var/tmp/loadtest-cluster")]
    pub work_dir: std::path::PathBuf,
    /// Seconds after the kill phase's first submission at which one started instance is
    /// killed with SIGKILL.
    #[arg(long, default_value_t = 3.0)]
    pub kill_after_secs: f64,
    /// Do not run the phase with a killed instance.
    #[arg(long)]
    pub skip_kill: bool,
    /// Do not run the plain-COPY baseline after the engine phases.
    #[arg(long)]
    pub skip_baseline: bool,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct AuditOptions {
    /// Audit entries loaded.
    #[arg(long, default_value_t = 12_000_000)]
    pub rows: usize,
    /// Months the entries are spread over, ending now.
    #[arg(long, default_value_t = 24)]
    pub months: u32,
    /// Tenants the entries are spread over (round robin).
    #[arg(long, default_value_t = 1_000)]
    pub tenants: usize,
    /// Reads of the first page of one tenant's last 30 days.
    #[arg(long, default_value_t = 200)]
    pub reads: usize,
    /// Months kept by the archive run (`audit.retain_months`); older ones are archived.
    #[arg(long, default_value_t = 12)]
    pub retain_months: u32,
    /// The engine's `audit.timezone`.
    #[arg(long, default_value = "Asia/Ho_Chi_Minh")]
    pub time_zone: String,
    /// The engine binary whose `audit maintain` archives.
    #[arg(long, default_value = "target/release/ingest-engine")]
    pub engine_binary: std::path::PathBuf,
    /// Where the archive writes its Parquet files.
    #[arg(long, default_value = "/var/tmp/loadtest-audit-archive")]
    pub archive_dir: std::path::PathBuf,
    /// Load and read only.
    #[arg(long)]
    pub skip_archive: bool,
}

impl Default for ScansOptions {
    fn default() -> Self {
        ScansOptions {
            tenants: DEFAULT_SCAN_TENANTS,
            records: DEFAULT_SCAN_RECORDS,
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
            skip_baseline: false,
        }
    }
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            clients: DEFAULT_BATCH_CLIENTS,
            batch_size: DEFAULT_BATCH_RECORDS,
            batches_per_client: DEFAULT_BATCHES_PER_CLIENT,
        }
    }
}

impl Default for MixedOptions {
    fn default() -> Self {
        MixedOptions {
            duration_secs: DEFAULT_MIXED_SECONDS,
            clients: DEFAULT_MIXED_CLIENTS,
            tenants: DEFAULT_MIXED_TENANTS,
            rate: DEFAULT_MIXED_RATE,
            read_percent: DEFAULT_READ_PERCENT,
            write_kind: WriteKind::Both,
            batch_size: DEFAULT_MIXED_BATCH_RECORDS,
            scan_records: DEFAULT_MIXED_SCAN_RECORDS,
            max_requests: DEFAULT_MIXED_MAX_REQUESTS,
        }
    }
}

impl Default for FairnessOptions {
    fn default() -> Self {
        FairnessOptions {
            backlog_scans: DEFAULT_BACKLOG_SCANS,
            backlog_scan_records: DEFAULT_BACKLOG_SCAN_RECORDS,
            small_tenants: DEFAULT_SMALL_TENANTS,
            small_scan_records: DEFAULT_SMALL_SCAN_RECORDS,
            small_interval_ms: DEFAULT_SMALL_INTERVAL_MS,
            poll_interval_ms: DEFAULT_FAIRNESS_POLL_INTERVAL_MS,
        }
    }
}

impl Default for BaselineOptions {
    fn default() -> Self {
        BaselineOptions {
            tenants: DEFAULT_SCAN_TENANTS,
            records: DEFAULT_SCAN_RECORDS,
        }
    }
}

/// The process's command line with the token's value hidden, for the report.
pub fn redacted_command_line(arguments: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut redacted = Vec::new();
    let mut hide_next = false;
    for argument in arguments {
        if hide_next {
            redacted.push("***".to_string());
            hide_next = false;
        } else if argument == "--token" {
            redacted.push(argument);
            hide_next = true;
        } else if argument.starts_with("--token=") {
            redacted.push("--token=***".to_string());
        } else if let Some(url) = argument.strip_prefix("--database-url=") {
            redacted.push(format!(
                "--database-url={}",
                crate::database::redact_password(url)
            ));
        } else {
            redacted.push(crate::database::redact_password(&argument));
        }
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_reach_the_report() {
        let arguments = [
            "loadtest",
            "--token",
            "s3cret",
            "scans",
            "--token=other",
            "--tenants",
            "5",
        ]
        .map(String::from);
        let redacted = redacted_command_line(arguments);
        assert_eq!(
            redacted,
            [
                "loadtest",
                "--token",
                "***",
                "scans",
                "--token=***",
                "--tenants",
                "5"
            ]
        );
    }

    #[test]
    fn options_parse_before_or_after_the_scenario() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "--engine-url",
            "http://127.0.0.1:18181",
            "batch",
            "--records",
            "100",
            "--writers",
            "2",
        ])
        .unwrap();
        assert_eq!(cli.global.engine_url, "http://127.0.0.1:18181");
        assert_eq!(cli.global.writers, 2);
        match cli.scenario {
            Scenario::Batch(options) => assert_eq!(options.batch_size, 100),
            other => panic!("parsed as {other:?}"),
        }
    }
}
