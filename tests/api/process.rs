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

use crate::helpers::BOOTSTRAP_ADMIN_TOKEN;
use crate::helpers::{
    activities, repository_path, scratch_directory, spawn_app_on, test_server, url_of,
};

struct EngineProcess {
    child: Child,
    address: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl EngineProcess {
    /// Starts the binary from the repository root, as the README's run command does.
    fn start(environment: &[(&str, String)]) -> EngineProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ingest-engine"));
        command
            .current_dir(repository_path(""))
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

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("the engine process exists");
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
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
    let http = reqwest::Client::new();

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
    let http = reqwest::Client::new();
    let tenant = Uuid::new_v4();
    let response = http
        .post(format!("{}/data-scans", engine.address))
        .bearer_auth(BOOTSTRAP_ADMIN_TOKEN)
        .json(&serde_json::json!({ "tenant_id": tenant, "activities": activities(20_000) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let scan_id = response.json::<Value>().await.unwrap()["scan_id"]
        .as_str()
        .unwrap()
        .to_string();
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
    app.stop().await;
}
