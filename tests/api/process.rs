//! The engine binary as a user runs it: start, serve, stop on a signal, start again.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{accepted_scan_id, BOOTSTRAP_ADMIN_TOKEN};
use crate::helpers::{
    activities, assert_activity_counts_are_exact, http_client, repository_path, scratch_directory,
    spawn_app_on, test_server, url_of,
};

pub struct EngineProcess {
    child: Child,
    pub address: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl EngineProcess {
    /// Starts the binary from the repository root, as the README's run command does.
    pub fn start(environment: &[(&str, String)]) -> EngineProcess {
        EngineProcess::start_in(&repository_path(""), environment)
    }

    /// Starts the binary from `directory`.
    fn start_in(directory: &Path, environment: &[(&str, String)]) -> EngineProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ingest-engine"));
        command
            .current_dir(directory)
            .env_remove("DATABASE_URL")
            .env("INGEST__HTTP__PORT", "0")
            .env("INGEST__LOG__FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in environment {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the engine binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_sender, address_receiver) = std::sync::mpsc::channel();
        let reader_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if event["message"] == "http listening" {
                        let _ = address_sender
                            .send(event["address"].as_str().unwrap_or_default().to_string());
                    }
                }
                reader_log.lock().unwrap().push(line);
            }
        });
        let address = match address_receiver.recv_timeout(Duration::from_secs(90)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!("the engine did not start: {:?}", log.lock().unwrap());
            }
        };
        EngineProcess {
            child,
            address: format!("http://{address}"),
            log,
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("the engine process exists");
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the engine did not exit within {timeout:?}: {:?}",
                    self.log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the engine to exit and fails, showing its log, unless it exited with 0.
    pub fn assert_stops_cleanly(&mut self, timeout: Duration) {
        let status = self.wait(timeout);
        assert!(
            status.success(),
            "the engine exited with {status:?}: {:?}",
            self.log.lock().unwrap()
        );
    }

    fn logged(&self, message: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(message))
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// As root, from a directory only root can enter (a checkout under `/root`, the usual case on
/// a fresh server), the first run works: the cluster goes to a directory the PostgreSQL user
/// can reach, keyed by the checkout, said at start-up, and reused by the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_root_from_a_private_directory_the_engine_starts_and_reuses_its_cluster() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("this behaviour exists only for root; the test runs as root in CI");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let checkout = std::env::temp_dir().join(format!("ingest-private-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&checkout).unwrap();
    std::fs::set_permissions(&checkout, std::fs::Permissions::from_mode(0o700)).unwrap();
    let relocation_root = scratch_directory().join("relocated");
    let environment = [
        (
            "INGEST__DATABASE__EMBEDDED__RELOCATION_ROOT",
            relocation_root.display().to_string(),
        ),
        (
            "INGEST__DATABASE__EMBEDDED__STARTUP_TIMEOUT_SECS",
            "60".to_string(),
        ),
    ];
    let mut engine = EngineProcess::start_in(&checkout, &environment);
    let http = http_client();
    let health = http
        .get(format!("{}/health/database", engine.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        engine.logged("cannot reach the configured data directory"),
        "{:?}",
        engine.log.lock().unwrap()
    );
    let keys: Vec<_> = std::fs::read_dir(&relocation_root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].join("postgres").join("PG_VERSION").exists());
    let source = std::fs::read_to_string(keys[0].join("source")).unwrap();
    assert_eq!(
        source.trim(),
        checkout.join(".data/postgres").display().to_string()
    );
    engine.signal(Signal::SIGTERM);
    engine.assert_stops_cleanly(Duration::from_secs(60));

    // The next start reuses the same cluster.
    let mut engine = EngineProcess::start_in(&checkout, &environment);
    let health = http
        .get(format!("{}/health/database", engine.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(std::fs::read_dir(&relocation_root).unwrap().count(), 1);
    assert!(!engine.logged("initialising embedded postgresql"));
    engine.signal(Signal::SIGTERM);
    engine.assert_stops_cleanly(Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&checkout);
}

fn postmaster_running(data_dir: &Path) -> bool {
    data_dir.join("postmaster.pid").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_configuration_the_engine_runs_its_own_postgresql_and_reuses_it() {
    let data_dir = scratch_directory().join("postgres");
    let environment = [(
        "INGEST__DATABASE__EMBEDDED__DATA_DIR",
        data_dir.display().to_string(),
    )];
    let http = http_client();

    let mut first = tokio::task::block_in_place(|| EngineProcess::start(&environment));
    assert!(first.logged("initialising embedded postgresql"));
    // With no token configured, the engine generated one beside its data and printed it.
    let token = std::fs::read_to_string(data_dir.parent().unwrap().join("admin-token")).unwrap();
    assert!(token.starts_with("pdpl_admin_"), "{token}");
    assert_eq!(
        http.get(format!("{}/health", first.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/health/database", first.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let tenant = Uuid::new_v4();
    let response = http
        .post(format!(
            "{}/batch/processing-activities?tenant_id={tenant}",
            first.address
        ))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "activities": activities(10) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    assert!(postmaster_running(&data_dir));
    first.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| first.wait(Duration::from_secs(60)));
    assert!(status.success(), "{status}");
    assert!(
        !postmaster_running(&data_dir),
        "stopping the engine stops its postgresql"
    );

    let mut second = tokio::task::block_in_place(|| EngineProcess::start(&environment));
    assert!(
        !second.logged("initialising embedded postgresql"),
        "the data directory is reused"
    );
    // The tenant the first run registered is still there.
    let response = http
        .get(format!("{}/admin/tenants/{tenant}", second.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        http.get(format!("{}/health/database", second.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    second.signal(Signal::SIGINT);
    let status = tokio::task::block_in_place(|| second.wait(Duration::from_secs(60)));
    assert!(status.success(), "{status}");
    assert!(!postmaster_running(&data_dir));
}

/// SIGTERM right after a 202: the engine exits 0, and every accepted record is either written or
/// still staged; the next start writes the rest exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_staged_work_resumes() {
    let database = test_server().await.fresh_database().await;
    let environment = [
        ("DATABASE_URL", url_of(&database)),
        (
            "INGEST__AUTH__BOOTSTRAP_ADMIN_TOKEN",
            BOOTSTRAP_ADMIN_TOKEN.to_string(),
        ),
    ];
    let mut engine = tokio::task::block_in_place(|| EngineProcess::start(&environment));
    let http = http_client();
    let tenant = Uuid::new_v4();
    let response = http
        .post(format!("{}/data-scans", engine.address))
        .bearer_auth(BOOTSTRAP_ADMIN_TOKEN)
        .json(&serde_json::json!({ "tenant_id": tenant, "activities": activities(20_000) }))
        .send()
        .await
        .unwrap();
    let scan_id = accepted_scan_id(response).await;
    engine.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| engine.wait(Duration::from_secs(60)));
    assert!(status.success(), "{status}");
    assert!(engine.logged("stopped"));

    let client = ingest_engine::store::connect(&database).await.unwrap();
    let written: i64 = client
        .query_one("SELECT count(*) FROM processing_activities", &[])
        .await
        .unwrap()
        .get(0);
    let staged: i64 = client
        .query_one(
            "SELECT coalesce(sum(record_count), 0) FROM staged_chunks",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        written + staged,
        20_000,
        "written {written}, staged {staged}"
    );

    let app = spawn_app_on(database, |_| {}).await;
    let scan = app
        .wait_for_scan(tenant, &scan_id, Duration::from_secs(60))
        .await;
    assert_eq!(scan["records_processed"], 20_000);
    assert_eq!(app.activities_of(tenant).await, 20_000);
    app.assert_activity_counts_are_exact().await;
    app.stop().await;
}

/// The engine is killed with SIGKILL before, during and after chunk writes; after a restart,
/// every acknowledged record is in the table exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill_at_any_point_exactly_once() {
    let database = test_server().await.fresh_database().await;
    let environment = [
        ("DATABASE_URL", url_of(&database)),
        (
            "INGEST__AUTH__BOOTSTRAP_ADMIN_TOKEN",
            BOOTSTRAP_ADMIN_TOKEN.to_string(),
        ),
        ("INGEST__TENANTS__SWEEP_INTERVAL_SECS", "1".to_string()),
    ];
    let http = http_client();
    let submit = |address: String, tenant: Uuid, records: usize| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("{address}/data-scans"))
                .bearer_auth(BOOTSTRAP_ADMIN_TOKEN)
                .json(
                    &serde_json::json!({ "tenant_id": tenant, "activities": activities(records) }),
                )
                .send()
                .await
                .ok()?;
            (response.status() == 202).then_some(())?;
            let body: Value = response.json().await.ok()?;
            Some((
                tenant,
                body["scan_id"].as_str()?.to_string(),
                records as i64,
            ))
        }
    };
    let client = ingest_engine::store::connect(&database).await.unwrap();
    let processed = || async {
        client
            .query_one("SELECT coalesce(sum(records_processed), 0)::bigint, coalesce(sum(records_total), 0)::bigint FROM scans", &[])
            .await
            .map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1)))
            .unwrap()
    };
    let mut acknowledged = Vec::new();

    // Before writes: the tenant is paused, so its chunks are staged and not yet written.
    let mut engine = tokio::task::block_in_place(|| EngineProcess::start(&environment));
    let paused_tenant = Uuid::new_v4();
    let response = http
        .post(format!("{}/admin/tenants", engine.address))
        .bearer_auth(BOOTSTRAP_ADMIN_TOKEN)
        .json(&serde_json::json!({ "tenant_id": paused_tenant, "name": "Tạm dừng" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    http.post(format!(
        "{}/admin/tenants/{paused_tenant}/pause",
        engine.address
    ))
    .bearer_auth(BOOTSTRAP_ADMIN_TOKEN)
    .send()
    .await
    .unwrap();
    acknowledged.push(
        submit(engine.address.clone(), paused_tenant, 12_000)
            .await
            .expect("the scan is acknowledged"),
    );
    engine.signal(Signal::SIGKILL);
    tokio::task::block_in_place(|| engine.wait(Duration::from_secs(30)));

    // During writes, twice: at the first progress, and about half way through what this run can
    // write. The paused tenant's 12,000 records are never written before the last start, so they
    // are left out of what the kill waits for; and if this run writes everything before the
    // wait starts, it waits for nothing more than that.
    let paused_records = 12_000;
    for fraction in [0.0, 0.5] {
        let mut engine = tokio::task::block_in_place(|| EngineProcess::start(&environment));
        let submissions = (0..4).map(|_| submit(engine.address.clone(), Uuid::new_v4(), 15_000));
        acknowledged.extend(
            futures_util::future::join_all(submissions)
                .await
                .into_iter()
                .flatten(),
        );
        let (already, total) = processed().await;
        let writable = total - paused_records;
        let target = (already + ((writable - already) as f64 * fraction) as i64)
            .max(already + 1)
            .min(writable);
        let deadline = Instant::now() + Duration::from_secs(120);
        while processed().await.0 < target {
            assert!(
                Instant::now() < deadline,
                "no progress to {target} of {writable} records: {:?}",
                processed().await
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        engine.signal(Signal::SIGKILL);
        tokio::task::block_in_place(|| engine.wait(Duration::from_secs(30)));
    }

    // After writes: everything this run accepted is written, then the engine dies.
    let mut engine = tokio::task::block_in_place(|| EngineProcess::start(&environment));
    let scan = submit(engine.address.clone(), Uuid::new_v4(), 5_000)
        .await
        .expect("the scan is acknowledged");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (done, total) = processed().await;
        let staged: i64 = client
            .query_one(
                "SELECT count(*) FROM staged_chunks WHERE tenant_id <> $1",
                &[&paused_tenant],
            )
            .await
            .unwrap()
            .get(0);
        if staged == 0 && done > 0 && done + paused_records >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{staged} chunks still staged, {done} of {total} records written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acknowledged.push(scan);
    engine.signal(Signal::SIGKILL);
    tokio::task::block_in_place(|| engine.wait(Duration::from_secs(30)));

    // A last start finishes everything.
    let mut engine = tokio::task::block_in_place(|| EngineProcess::start(&environment));
    http.post(format!(
        "{}/admin/tenants/{paused_tenant}/resume",
        engine.address
    ))
    .bearer_auth(BOOTSTRAP_ADMIN_TOKEN)
    .send()
    .await
    .unwrap();
    assert!(
        acknowledged.len() >= 10,
        "{} scans acknowledged",
        acknowledged.len()
    );
    for (tenant, scan_id, records) in &acknowledged {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let scan: Value = http
                .get(format!(
                    "{}/data-scans/{scan_id}?tenant_id={tenant}",
                    engine.address
                ))
                .bearer_auth(BOOTSTRAP_ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if scan["status"] == "completed" {
                assert_eq!(scan["records_processed"], *records);
                break;
            }
            assert!(Instant::now() < deadline, "{scan}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rows: i64 = client
            .query_one(
                "SELECT count(*) FROM processing_activities WHERE tenant_id = $1 AND scan_id = $2",
                &[tenant, &Uuid::parse_str(scan_id).unwrap()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, *records, "scan {scan_id}");
    }
    let duplicates: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT scan_id, record_index FROM processing_activities GROUP BY 1, 2 HAVING count(*) > 1) AS duplicated",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(duplicates, 0);
    // Every stored scan, acknowledged or not, was written exactly once.
    let (done, total) = processed().await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM processing_activities", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((done, rows), (total, total));
    assert_activity_counts_are_exact(&client).await;
    engine.signal(Signal::SIGTERM);
    tokio::task::block_in_place(|| engine.wait(Duration::from_secs(60)));
}
