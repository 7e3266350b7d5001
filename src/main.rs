//! Command line: `serve` (default) and `migrate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ingest_engine::config::Settings;
use ingest_engine::startup::{termination_signal, Application};
use ingest_engine::store::embedded::{ClusterOptions, EmbeddedCluster};
use ingest_engine::store::{connections, migrations};
use ingest_engine::telemetry;

#[derive(Parser)]
#[command(
    version,
    about = "Tenant-fair, durable ingestion engine for PDPL processing activities"
)]
struct Cli {
    /// Settings file (default: config/default.toml, optional).
    #[arg(long, global = true, env = "INGEST_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// glibc's malloc keeps freed memory in per-thread arenas, and after a large block is freed it
/// raises its mmap threshold, so the next large buffers (multi-megabyte request bodies, encoded
/// chunks) also land in arenas that rarely shrink: resident memory then grows with every burst
/// of large submissions although the admission budget bounds what is alive. A fixed threshold
/// serves blocks from 256 KiB up with `mmap`, returned to the system when freed, and two arenas
/// per core bound what the arenas can hold.
fn limit_allocator_retention() {
    const MMAP_THRESHOLD_BYTES: i32 = 256 * 1024;
    let arenas = std::thread::available_parallelism()
        .map(|cores| cores.get() * 2)
        .unwrap_or(2) as i32;
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any other
    // thread exists, and the values are within glibc's documented ranges.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, arenas);
    }
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and serve the API (the default).
    Serve,
    /// Apply migrations and exit.
    Migrate,
    /// The audit log's operator commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Run one maintenance pass (partitions, archive, retention), print what it did, and exit
    /// (1 if a step failed).
    Maintain,
    /// Read an archive file back and print its rows, first and last time, size and sha256.
    Verify {
        /// A Parquet file written by the archive.
        file: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    limit_allocator_retention();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("configuration error: {error}\nlỗi cấu hình: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    if let Some(Command::Audit {
        command: AuditCommand::Verify { file },
    }) = &cli.command
    {
        return verify_archive(file);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http")
        .build()
        .expect("a tokio runtime can always be built on Linux");
    let outcome = runtime.block_on(run(cli.command.unwrap_or(Command::Serve), settings));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, mut settings: Settings) -> anyhow::Result<()> {
    // A server handles SIGTERM and SIGINT from now on, so one that arrives while it starts
    // stops it cleanly once it is up (see `termination_signal`).
    let termination_opt = matches!(command, Command::Serve).then(termination_signal);
    // With no database URL the engine runs its own cluster, stopped when `cluster_opt` drops.
    let mut cluster_opt = None;
    let database_url = match settings.database_url_opt() {
        Some(url) => url.to_string(),
        None => {
            let embedded = settings.database.embedded.clone();
            let options = ClusterOptions {
                data_dir: embedded.data_dir.clone(),
                port: embedded.port,
                os_user: embedded.os_user.clone(),
                config_file_opt: Some(embedded.config_file.clone()),
                startup_timeout: Duration::from_secs(embedded.startup_timeout_secs),
                search_path_opt: None,
                relocation_root_opt: Some(embedded.relocation_root.clone())
                    .filter(|root| !root.as_os_str().is_empty()),
            };
            if settings.auth.bootstrap_admin_token.trim().is_empty() {
                settings.auth.bootstrap_admin_token = embedded_admin_token(&embedded.data_dir)?;
            }
            let cluster =
                tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options)).await??;
            let url = cluster.database_url();
            let config = connections::parse_url(&url, Duration::from_secs(10))?;
            cluster_opt = Some(cluster);
            connections::ensure_database(&config).await?;
            url
        }
    };
    let outcome = match command {
        Command::Migrate => {
            let config = connections::parse_url(
                &database_url,
                Duration::from_secs(settings.database.connect_timeout_secs),
            )?;
            let applied = migrations::run(&config).await?;
            tracing::info!(applied = applied.len(), "migrations up to date");
            Ok(())
        }
        Command::Serve => {
            let application = Application::build(settings, &database_url).await?;
            let termination = termination_opt.expect("installed for Serve above");
            application.run_until(termination).await
        }
        Command::Audit {
            command: AuditCommand::Maintain,
        } => maintain(&settings, &database_url).await,
        Command::Audit {
            command: AuditCommand::Verify { .. },
        } => unreachable!("verify is answered before any database is started"),
    };
    if let Some(mut cluster) = cluster_opt {
        tokio::task::spawn_blocking(move || cluster.stop()).await?;
    }
    outcome
}

/// `audit maintain`: migrations, then one maintenance pass, its summary on standard output.
async fn maintain(settings: &Settings, database_url: &str) -> anyhow::Result<()> {
    let config = connections::parse_url(
        database_url,
        Duration::from_secs(settings.database.connect_timeout_secs),
    )?;
    migrations::run(&config).await?;
    let pool = connections::build_pool(
        &config,
        2,
        Duration::from_secs(settings.database.pool_timeout_secs),
    )
    .await;
    let report = ingest_engine::audit::maintenance::run_pass(&pool, &config, settings).await;
    println!("{}", report.summary());
    if report.succeeded() {
        Ok(())
    } else {
        anyhow::bail!("a maintenance step failed / một bước bảo trì thất bại")
    }
}

/// `audit verify FILE`: reads an archive back and prints what it holds.
fn verify_archive(file: &std::path::Path) -> ExitCode {
    match ingest_engine::audit::parquet_file::verify(file) {
        Ok(summary) => {
            let time = |micros_opt: Option<i64>| {
                micros_opt
                    .and_then(chrono::DateTime::from_timestamp_micros)
                    .map_or_else(|| "-".to_string(), |time| time.to_rfc3339())
            };
            println!(
                "file / tệp: {}\nrows / số dòng: {}\nfirst / đầu tiên: {}\nlast / cuối cùng: {}\nbytes / byte: {}\nsha256: {}",
                file.display(),
                summary.rows,
                time(summary.first_occurred_at_micros_opt),
                time(summary.last_occurred_at_micros_opt),
                summary.bytes,
                summary.sha256
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "not a readable archive: {error:#}\nkhông phải tệp lưu trữ đọc được: {error:#}"
            );
            ExitCode::FAILURE
        }
    }
}

/// The bootstrap admin token of an engine on its embedded default: generated once, kept beside
/// the cluster's data directory (mode 0600), and printed at each start so the operator can use
/// the admin API.
fn embedded_admin_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::os::unix::fs::OpenOptionsExt;
    let directory = data_dir.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let path = directory.join("admin-token");
    let token = match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        _ => {
            let token = ingest_engine::domain::auth::generate_bootstrap_token();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            std::io::Write::write_all(&mut file, token.as_bytes())?;
            token
        }
    };
    tracing::info!(path = %path.display(), "bootstrap admin token kept in this file");
    eprintln!(
        "admin token / mã quản trị: {token}\n(kept in / lưu tại {})",
        path.display()
    );
    Ok(token)
}
