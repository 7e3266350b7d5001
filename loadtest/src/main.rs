//! `loadtest`: drives a running ingestion engine through one scenario (or all of them),
//! verifies the rows in PostgreSQL, and writes a JSON report and an SVG chart per scenario.
//!
//! The engine is not started here: the load test measures the engine an operator runs
//! (`cargo run --release` at the repository root), so its settings are the real ones. Exit
//! status 0 means every scenario run passed its verification; 1 that one did not; 2 that the
//! load test could not start (bad options, no database).

mod chart;
mod cli;
mod copy_encoding;
mod data;
mod database;
mod engine_client;
mod memory;
mod process_cpu;
mod psql_copy;
mod report;
mod scenarios;
mod statistics;
mod written_records;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::{
    BaselineOptions, BatchOptions, Cli, FairnessOptions, MixedOptions, ScansOptions, Scenario,
};
use crate::engine_client::{port_of_url, EngineClient};
use crate::report::{MachineReport, ScenarioReport};
use crate::scenarios::Context;

/// Idle HTTP connections kept per engine: enough for the largest default burst (100 tenants).
const HTTP_CONNECTIONS: usize = 128;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let context = match build_context(&cli) {
        Ok(context) => context,
        Err(error) => {
            eprintln!("error: {error}\nlỗi: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(reason) = &context.engine_pid_error_opt {
        eprintln!("note: engine memory will not be sampled: {reason}");
    }
    let scenarios = match &cli.scenario {
        Scenario::All => vec![
            Scenario::Scans(ScansOptions::default()),
            Scenario::Batch(BatchOptions::default()),
            Scenario::Mixed(MixedOptions::default()),
            Scenario::Fairness(FairnessOptions::default()),
            Scenario::Baseline(BaselineOptions::default()),
        ],
        single => vec![single.clone()],
    };
    let wal_segments = prepare_wal(&context).await;
    let mut all_passed = true;
    for scenario in &scenarios {
        let scenario_context = Context {
            client: context.client.with_fresh_statistics(),
            global: context.global.clone(),
            database_url: context.database_url.clone(),
            engine_pid_opt: context.engine_pid_opt,
            engine_pid_error_opt: context.engine_pid_error_opt.clone(),
            command_line: context.command_line.clone(),
        };
        let load_average_before = report::load_average();
        let mut report = run_scenario(&scenario_context, scenario).await;
        report.machine_opt = Some(MachineReport {
            cores: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            load_average_before,
            load_average_after: report::load_average(),
            wal_segments: wal_segments.clone(),
        });
        report.print_summary();
        match report.write(&context.global.report_dir) {
            Ok(written) => {
                println!("  report / báo cáo: {}", written.json_path.display());
                if let Some(chart_path) = &written.chart_path_opt {
                    println!("  chart / biểu đồ: {}", chart_path.display());
                }
                if let Some(error) = &written.chart_error_opt {
                    eprintln!("  {error}");
                }
            }
            Err(error) => {
                eprintln!("  the report could not be written: {error}");
                all_passed = false;
            }
        }
        all_passed &= report.passed;
    }
    if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Creates the cluster's WAL segment files unless `--cold-wal` (see
/// [`database::prepare_wal_segments`]); prints and returns what was done, for the reports.
async fn prepare_wal(context: &Context) -> String {
    if context.global.cold_wal {
        println!(
            "WAL segment files: left as found (--cold-wal) / Tệp WAL: giữ nguyên (--cold-wal)"
        );
        return "left as found (--cold-wal)".to_string();
    }
    let started = std::time::Instant::now();
    match database::prepare_wal_segments(&context.database_url).await {
        Ok(switches) => {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "WAL segment files: {switches} created before the scenarios in {seconds:.1} s / \
                 Tệp WAL: đã tạo {switches} tệp trước các kịch bản trong {seconds:.1} giây"
            );
            format!("{switches} created before the scenarios")
        }
        Err(error) => {
            eprintln!("note: WAL segment files not prepared: {error}");
            format!("not prepared: {error}")
        }
    }
}

async fn run_scenario(context: &Context, scenario: &Scenario) -> ScenarioReport {
    match scenario {
        Scenario::Scans(options) => scenarios::scans::run(context, options).await,
        Scenario::Batch(options) => scenarios::batch::run(context, options).await,
        Scenario::Mixed(options) => scenarios::mixed::run(context, options).await,
        Scenario::Fairness(options) => scenarios::fairness::run(context, options).await,
        Scenario::Baseline(options) => scenarios::baseline::run(context, options).await,
        Scenario::Audit(options) => scenarios::audit::run(context, options).await,
        Scenario::Webhooks(options) => scenarios::webhooks::run(context, options).await,
        Scenario::Cluster(options) => scenarios::cluster::run(context, options).await,
        Scenario::Burst(options) => scenarios::burst::run(context, options).await,
        Scenario::Rls(options) => scenarios::rls::run(context, options).await,
        Scenario::Soak(options) => scenarios::soak::run(context, options).await,
        Scenario::All => unreachable!("`all` is expanded into its scenarios before running"),
    }
}

/// Resolves the database URL, the engine's process and the HTTP client.
fn build_context(cli: &Cli) -> Result<Context, String> {
    let global = cli.global.clone();
    let database_url = match &global.database_url_opt {
        Some(url) => url.clone(),
        None => database::database_url_from_postmaster_pid(&global.postmaster_pid)?,
    };
    let (engine_pid_opt, engine_pid_error_opt) = match global.engine_pid_opt {
        Some(pid) => (Some(pid), None),
        None => match port_of_url(&global.engine_url) {
            Some(port) => match memory::find_engine_pid(port) {
                Ok(pid) => (Some(pid), None),
                Err(reason) => (None, Some(reason)),
            },
            None => (None, Some(format!("no port in {}", global.engine_url))),
        },
    };
    let client = EngineClient::new(
        &global.engine_url,
        global.token_opt.clone(),
        Duration::from_secs(global.request_timeout_secs),
        HTTP_CONNECTIONS,
    )?;
    Ok(Context {
        global,
        client,
        database_url,
        engine_pid_opt,
        engine_pid_error_opt,
        command_line: cli::redacted_command_line(std::env::args()),
    })
}
