//! The private PostgreSQL cluster the engine starts when no database URL is configured.
//!
//! It finds the machine's PostgreSQL binaries (`pg_config --bindir`, `/usr/lib/postgresql/*/bin`,
//! `PATH`), runs `initdb` once on the data directory, and runs `postgres` as a child process
//! listening on loopback only. When the engine runs as root, PostgreSQL runs as an unprivileged
//! OS user, because `initdb` and `postgres` refuse root.
//!
//! The server is tied to the thread that started it with `PR_SET_PDEATHSIG`, so it stops even if
//! the engine is killed with SIGKILL; [`EmbeddedCluster::stop`] stops it cleanly (fast shutdown:
//! a checkpoint, then exit) when the engine stops normally. A second start reuses the data.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::unistd::{Gid, Uid, User};

/// The role and database the private cluster is created with.
pub const SUPERUSER: &str = "ingest";
pub const DATABASE: &str = "ingest";

/// Why the private cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL binaries were found (looked in `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH). \
         Install PostgreSQL (Debian/Ubuntu: apt-get install -y postgresql) or set DATABASE_URL to an existing server. \
         / Không tìm thấy chương trình PostgreSQL (đã tìm trong `pg_config --bindir`, /usr/lib/postgresql/*/bin và PATH). \
         Hãy cài đặt PostgreSQL (Debian/Ubuntu: apt-get install -y postgresql) hoặc đặt DATABASE_URL trỏ tới một máy chủ có sẵn."
    )]
    NoBinaries,
    #[error(
        "the data directory {0} cannot be reached by the OS user {1} that runs PostgreSQL; \
         choose another with INGEST__DATABASE__EMBEDDED__DATA_DIR (e.g. under /var/tmp) \
         / người dùng hệ thống {1} chạy PostgreSQL không truy cập được thư mục dữ liệu {0}; \
         hãy chọn thư mục khác bằng INGEST__DATABASE__EMBEDDED__DATA_DIR (ví dụ trong /var/tmp)"
    )]
    UnreachableDataDir(PathBuf, String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Where and how to run the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub data_dir: PathBuf,
    /// 0 picks a free loopback port.
    pub port: u16,
    /// The OS user PostgreSQL runs as when the engine runs as root.
    pub os_user: String,
    /// Extra server settings copied into the cluster at each start, if the file exists.
    pub config_file_opt: Option<PathBuf>,
    pub startup_timeout: Duration,
    /// Directories searched before the standard places (tests use this to simulate a machine
    /// without PostgreSQL).
    pub search_path_opt: Option<Vec<PathBuf>>,
    /// When the engine runs as root and `os_user` cannot reach `data_dir` (a checkout under
    /// `/root`, say) and no cluster lives there yet, the cluster goes under this directory
    /// instead, in a subdirectory keyed by `data_dir`'s absolute path (two checkouts never
    /// share one), created for `os_user` and reused at the next start. `None`: fail instead.
    pub relocation_root_opt: Option<PathBuf>,
}

/// glibc malloc settings for the server's processes. With glibc's defaults a backend gives
/// the top of its heap back to the system whenever more than about twice its largest recent
/// block is free, which a backend applying 1,000-record chunks does at the end of nearly every
/// `COPY` statement (its multi-insert buffer is freed), only to fault the same pages in again,
/// zeroed, for the next one: about 5 % of PostgreSQL's CPU samples while the writers alone wrote a
/// burst (`brk`, page faults, page clearing; docs/PERFORMANCE.md). Fixed thresholds keep blocks
/// under 4 MiB in the heap and up to 32 MiB of free heap per process, within the range glibc's
/// own adaptive thresholds reach (32 MiB and 64 MiB). Setting them turns that adaptation off.
const SERVER_ALLOCATOR_ENVIRONMENT: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "4194304"),
    ("MALLOC_TRIM_THRESHOLD_", "33554432"),
];

/// A running private cluster. Dropping it stops the server.
#[derive(Debug)]
pub struct EmbeddedCluster {
    child: Child,
    port: u16,
    data_dir: PathBuf,
}

impl EmbeddedCluster {
    /// Initialises the data directory if needed and starts the server; returns once it accepts
    /// connections.
    pub fn start(options: &ClusterOptions) -> Result<EmbeddedCluster, EmbeddedError> {
        let bin_dir =
            find_bin_dir(options.search_path_opt.as_deref()).ok_or(EmbeddedError::NoBinaries)?;
        let run_as_opt = unprivileged_user(&options.os_user)?;
        let data_dir = match (&run_as_opt, &options.relocation_root_opt) {
            (Some(user), Some(root)) => {
                reachable_data_dir(&absolute(&options.data_dir)?, user, root)?
            }
            _ => absolute(&options.data_dir)?,
        };

        if !data_dir.join("PG_VERSION").exists() {
            init_data_dir(&bin_dir, &data_dir, run_as_opt.as_ref())?;
        } else {
            check_version(&bin_dir, &data_dir)?;
            if let Some(user) = &run_as_opt {
                ensure_reachable(&data_dir, user)?;
            }
        }
        write_engine_settings(
            &data_dir,
            options.config_file_opt.as_deref(),
            run_as_opt.as_ref(),
        )?;
        remove_stale_pid_file(&data_dir);

        let port = match options.port {
            0 => free_loopback_port().context("picking a free port for PostgreSQL")?,
            port => port,
        };
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("postgres.log"))
            .context("opening the PostgreSQL log file")?;
        let mut command = Command::new(bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&data_dir)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .envs(SERVER_ALLOCATOR_ENVIRONMENT)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("duplicating the log handle")?)
            .stderr(log_file);
        if let Some(user) = &run_as_opt {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGINT)
                    .map_err(std::io::Error::from)
            });
        }
        let child = spawn_on_long_lived_thread(command)?;
        let mut cluster = EmbeddedCluster {
            child,
            port,
            data_dir,
        };
        cluster.wait_until_ready(options.startup_timeout)?;
        tracing::info!(port, data_dir = %cluster.data_dir.display(), "embedded postgresql started");
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the cluster's engine database, as its superuser.
    pub fn database_url(&self) -> String {
        self.url_for(DATABASE)
    }

    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server with a fast shutdown (clients are disconnected, a checkpoint is
    /// written) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                tracing::info!(data_dir = %self.data_dir.display(), "embedded postgresql stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!("embedded postgresql did not stop in 60 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + timeout;
        let log = self.data_dir.join("postgres.log");
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for postgres")? {
                return Err(anyhow!(
                    "postgres exited with {status} during start-up; see {}",
                    log.display()
                )
                .into());
            }
            // A successful TCP connect is not enough: the server answers "starting up" first.
            if accepts_queries(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(anyhow!(
                    "postgres did not accept connections within {timeout:?}; see {}",
                    log.display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory holding `initdb` and `postgres`, searched in the documented order.
pub fn find_bin_dir(search_path_opt: Option<&[PathBuf]>) -> Option<PathBuf> {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(search_path) = search_path_opt {
        return search_path.iter().find(|dir| has_binaries(dir)).cloned();
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        if output.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if has_binaries(&dir) {
                return Some(dir);
            }
        }
    }
    let mut versioned: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|dir| has_binaries(dir))
        .collect();
    // Newest major version first.
    versioned.sort_by_key(|dir| {
        let major = dir
            .parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok());
        std::cmp::Reverse(major)
    });
    if let Some(dir) = versioned.into_iter().next() {
        return Some(dir);
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_binaries(dir))
}

/// The user PostgreSQL must run as: `None` when the engine is not root.
fn unprivileged_user(preferred: &str) -> Result<Option<User>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in [preferred, "nobody"] {
        if let Ok(Some(user)) = User::from_name(name) {
            if !user.uid.is_root() {
                return Ok(Some(user));
            }
        }
    }
    Err(anyhow!(
        "the engine runs as root and neither the OS user {preferred:?} nor \"nobody\" exists to run PostgreSQL"
    )
    .into())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the working directory")?
            .join(path))
    }
}

fn init_data_dir(
    bin_dir: &Path,
    data_dir: &Path,
    run_as_opt: Option<&User>,
) -> Result<(), EmbeddedError> {
    fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
        .context("restricting the data directory")?;
    if let Some(user) = run_as_opt {
        nix::unistd::chown(data_dir, Some(user.uid), Some(user.gid))
            .context("giving the data directory to the PostgreSQL user")?;
        ensure_reachable(data_dir, user)?;
    }
    tracing::info!(data_dir = %data_dir.display(), "initialising embedded postgresql");
    let mut command = Command::new(bin_dir.join("initdb"));
    command
        .arg("-D")
        .arg(data_dir)
        .args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ])
        .stdin(Stdio::null());
    if let Some(user) = run_as_opt {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let output = command.output().context("running initdb")?;
    if !output.status.success() {
        return Err(anyhow!(
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(data_dir.join("postgresql.conf"))
        .context("opening postgresql.conf")?;
    writeln!(conf, "\n# Engine settings, rewritten from the engine's config at each start.\ninclude_if_exists = 'engine.conf'")
        .context("writing postgresql.conf")?;
    // The engine's database is created on first connection (`store::ensure_database`).
    Ok(())
}

/// `data_dir`, or, when `user` cannot reach it and no cluster lives there yet, the directory
/// under `root` this data directory is relocated to (created for `user` along the way).
fn reachable_data_dir(data_dir: &Path, user: &User, root: &Path) -> Result<PathBuf, EmbeddedError> {
    if data_dir.join("PG_VERSION").exists() || can_reach(&nearest_existing(data_dir), user) {
        return Ok(data_dir.to_path_buf());
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let key: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let relocated = root.join(key).join("postgres");
    let parent = relocated.parent().unwrap_or(root);
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    // The path down to the cluster must be traversable by the PostgreSQL user.
    for directory in [root, parent] {
        let mode = fs::metadata(directory)
            .with_context(|| format!("reading {}", directory.display()))?
            .permissions()
            .mode();
        if mode & 0o005 != 0o005 {
            fs::set_permissions(directory, fs::Permissions::from_mode(mode | 0o755)).with_context(
                || format!("opening {} to the PostgreSQL user", directory.display()),
            )?;
        }
    }
    fs::write(parent.join("source"), format!("{}\n", data_dir.display()))
        .context("noting which data directory was relocated")?;
    tracing::warn!(
        configured = %data_dir.display(),
        data_dir = %relocated.display(),
        user = %user.name,
        "the PostgreSQL user cannot reach the configured data directory; using this one (reused at every start)"
    );
    eprintln!(
        "PostgreSQL data directory / thư mục dữ liệu PostgreSQL: {}\n({} cannot reach {} / người dùng {} không truy cập được {})",
        relocated.display(),
        user.name,
        data_dir.display(),
        user.name,
        data_dir.display()
    );
    Ok(relocated)
}

/// The deepest existing directory on the way to `path`.
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|ancestor| ancestor.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Whether `user` can enter `directory` (and so everything above it).
fn can_reach(directory: &Path, user: &User) -> bool {
    Command::new("test")
        .arg("-x")
        .arg(directory)
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .status()
        .is_ok_and(|status| status.success())
}

/// Fails with a clear message when `user` cannot traverse to `data_dir`.
fn ensure_reachable(data_dir: &Path, user: &User) -> Result<(), EmbeddedError> {
    let status = Command::new("test")
        .arg("-w")
        .arg(data_dir)
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        _ => Err(EmbeddedError::UnreachableDataDir(
            data_dir.to_path_buf(),
            user.name.clone(),
        )),
    }
}

fn write_engine_settings(
    data_dir: &Path,
    config_file_opt: Option<&Path>,
    run_as_opt: Option<&User>,
) -> anyhow::Result<()> {
    let settings = match config_file_opt {
        Some(path) if path.is_file() => {
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        Some(path) => {
            tracing::warn!(path = %path.display(), "postgresql settings file not found; using postgresql defaults");
            String::new()
        }
        None => String::new(),
    };
    let major_opt = fs::read_to_string(data_dir.join("PG_VERSION"))
        .ok()
        .and_then(|version| version.trim().parse::<u32>().ok());
    let settings = match major_opt {
        Some(major) => for_server(&settings, major),
        None => settings,
    };
    let target = data_dir.join("engine.conf");
    fs::write(&target, settings).context("writing engine.conf")?;
    if let Some(user) = run_as_opt {
        nix::unistd::chown(
            &target,
            Some(user.uid),
            Some(Gid::from_raw(user.gid.as_raw())),
        )
        .context("giving engine.conf to the PostgreSQL user")?;
    }
    Ok(())
}

/// The settings as a server of version `major` accepts them: before PostgreSQL 15,
/// `wal_compression` knows only `on` and `off` (pglz), and a value it does not know would stop
/// the server from starting.
fn for_server(settings: &str, major: u32) -> String {
    if major >= 15 {
        return settings.to_string();
    }
    settings
        .lines()
        .map(|line| {
            let mut parts = line.splitn(2, '=');
            let name = parts.next().unwrap_or("").trim();
            let value = parts.next().unwrap_or("").trim().trim_matches('\'');
            if name == "wal_compression" && matches!(value, "lz4" | "zstd") {
                "wal_compression = on"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `postmaster.pid` left by a server that no longer runs would stop a new one from starting.
fn remove_stale_pid_file(data_dir: &Path) {
    let pid_file = data_dir.join("postmaster.pid");
    let Ok(contents) = fs::read_to_string(&pid_file) else {
        return;
    };
    let pid_opt = contents
        .lines()
        .next()
        .and_then(|line| line.trim().parse::<i32>().ok());
    let alive = pid_opt
        .map(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
        .unwrap_or(false);
    if alive {
        // A previous engine's server is still shutting down: ask it to finish, then wait.
        if let Some(pid) = pid_opt {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && nix::sys::signal::kill(pid, None).is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    } else {
        let _ = fs::remove_file(pid_file);
    }
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn accepts_queries(port: u16) -> bool {
    // A blocking probe keeps this module free of any async runtime: a startup packet for the
    // superuser, answered with AuthenticationOk ('R' with code 0) once the server is ready.
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for (key, value) in [("user", SUPERUSER), ("database", "postgres")] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    if stream.write_all(&packet).is_err() {
        return false;
    }
    let mut reply = [0u8; 9];
    if stream.read_exact(&mut reply).is_err() {
        return false;
    }
    reply[0] == b'R' && reply[5..9] == [0, 0, 0, 0]
}

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so the server is
/// forked from a thread that lives as long as the process.
fn spawn_on_long_lived_thread(mut command: Command) -> anyhow::Result<Child> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || {
            let _ = sender.send(command.spawn());
            // Parked for the life of the process; see above.
            loop {
                std::thread::park();
            }
        })
        .context("starting the postgres launcher thread")?;
    let child = receiver
        .recv()
        .context("the postgres launcher thread stopped")?
        .context("starting postgres")?;
    Ok(child)
}

/// Refuses a start when the data directory was initialised by an incompatible server.
pub fn check_version(bin_dir: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let data_version = fs::read_to_string(data_dir.join("PG_VERSION"))?;
    let output = Command::new(bin_dir.join("postgres"))
        .arg("--version")
        .output()?;
    let binary_version = String::from_utf8_lossy(&output.stdout);
    if !binary_version.contains(&format!(" {}.", data_version.trim())) {
        bail!(
            "the data directory {} was created by PostgreSQL {}, but the binaries are {}",
            data_dir.display(),
            data_version.trim(),
            binary_version.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::for_server;

    #[test]
    fn wal_compression_by_lz4_falls_back_to_on_before_postgresql_15() {
        let settings = "wal_buffers = 64MB\nwal_compression = lz4\nmax_connections = 200";
        assert_eq!(for_server(settings, 17), settings);
        assert_eq!(for_server(settings, 15), settings);
        assert_eq!(
            for_server(settings, 14),
            "wal_buffers = 64MB\nwal_compression = on\nmax_connections = 200"
        );
        assert_eq!(
            for_server("wal_compression='zstd'", 13),
            "wal_compression = on"
        );
    }
}
