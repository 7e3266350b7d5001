//! Test harness: the real application on port 0 against a fresh database per test.
//!
//! With `TEST_DATABASE_URL` unset, one private PostgreSQL cluster is started per test run (the
//! engine's own embedded mechanism) in a temporary directory; it stops when the test process
//! exits. Each test gets its own database, cloned from a migrated template.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ingest_engine::config::Settings;
use ingest_engine::startup::Application;
use ingest_engine::store::connections::{self, quote_identifier};
use ingest_engine::store::embedded::{ClusterOptions, EmbeddedCluster};
use ingest_engine::store::migrations;
use serde_json::{json, Value};
use tokio::sync::{oneshot, OnceCell};
use tokio_postgres::Config;
use uuid::Uuid;

/// The migrated database each test's database is cloned from; one per test run, so runs
/// sharing a `TEST_DATABASE_URL` server do not collide.
fn template_database() -> String {
    format!("engine_test_template_{}", std::process::id())
}

/// The server every test database lives on.
pub struct TestServer {
    /// Connection settings for the server's maintenance database.
    maintenance: Config,
    /// Kept for the life of the process; the server stops when the process exits.
    _cluster_opt: Option<EmbeddedCluster>,
}

static SERVER: OnceCell<TestServer> = OnceCell::const_new();

pub fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub async fn test_server() -> &'static TestServer {
    SERVER
        .get_or_init(|| async {
            let (maintenance, cluster_opt) = match std::env::var("TEST_DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => (
                    Config::from_str(&url).expect("TEST_DATABASE_URL is a valid URL"),
                    None,
                ),
                _ => {
                    let cluster = tokio::task::spawn_blocking(start_private_cluster)
                        .await
                        .expect("the cluster start-up thread does not panic");
                    let config = Config::from_str(&cluster.url_for("postgres"))
                        .expect("the cluster URL is valid");
                    (config, Some(cluster))
                }
            };
            create_template(&maintenance).await;
            TestServer {
                maintenance,
                _cluster_opt: cluster_opt,
            }
        })
        .await
}

/// A directory for this test run's files; removed by a later run once this process is gone.
pub fn run_directory() -> PathBuf {
    let root = std::env::temp_dir().join("ingest-engine-tests");
    static CLEANED: std::sync::Once = std::sync::Once::new();
    CLEANED.call_once(|| remove_dead_runs(&root));
    root.join(std::process::id().to_string())
}

/// A new, empty directory under [`run_directory`].
pub fn scratch_directory() -> PathBuf {
    let directory = run_directory().join(Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&directory).expect("the scratch directory is created");
    directory
}

fn start_private_cluster() -> EmbeddedCluster {
    let data_dir = run_directory().join("cluster");
    let options = ClusterOptions {
        data_dir,
        port: 0,
        os_user: "postgres".into(),
        config_file_opt: Some(repository_path("config/postgresql-test.conf")),
        startup_timeout: Duration::from_secs(60),
        search_path_opt: None,
        relocation_root_opt: None,
    };
    EmbeddedCluster::start(&options).expect("the private test cluster starts")
}

/// Data directories of earlier test runs whose process is gone.
fn remove_dead_runs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let pid_opt = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok());
        if let Some(pid) = pid_opt {
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

async fn create_template(maintenance: &Config) {
    let client = connections::connect(maintenance)
        .await
        .expect("the test server accepts connections");
    let name = quote_identifier(&template_database());
    for statement in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        client
            .batch_execute(&statement)
            .await
            .expect("the template database is created");
    }
    let mut template = maintenance.clone();
    template.dbname(template_database());
    migrations::run(&template)
        .await
        .expect("migrations apply to the template");
}

impl TestServer {
    /// A new, migrated, empty database.
    pub async fn fresh_database(&self) -> Config {
        let name = format!("engine_test_{}", Uuid::new_v4().simple());
        let client = connections::connect(&self.maintenance)
            .await
            .expect("the test server accepts connections");
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_identifier(&name),
                quote_identifier(&template_database())
            ))
            .await
            .expect("a test database is created from the template");
        let mut config = self.maintenance.clone();
        config.dbname(&name);
        config
    }

    pub fn maintenance(&self) -> &Config {
        &self.maintenance
    }
}

/// A URL for `config` (host, port, user and database only: all the test servers need).
pub fn url_of(config: &Config) -> String {
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|password| format!(":{}", String::from_utf8_lossy(password)))
        .unwrap_or_default();
    format!(
        "postgres://{user}{password}@{host}:{port}/{}",
        config.get_dbname().unwrap_or("postgres")
    )
}

/// Settings for a test application: the repository's defaults, port 0, quick sweeps.
pub fn test_settings() -> Settings {
    let mut settings = Settings::load_from(Some(&repository_path("config/default.toml")), &[])
        .expect("the repository's settings load");
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.writers.count = 2;
    settings.tenants.sweep_interval_secs = 1;
    settings.shutdown.grace_period_secs = 10;
    settings.auth.bootstrap_admin_token = BOOTSTRAP_ADMIN_TOKEN.into();
    settings
}

/// The admin token every test application is configured with.
pub const BOOTSTRAP_ADMIN_TOKEN: &str = "test-bootstrap-admin-token";

pub struct TestApp {
    pub address: String,
    /// Sent as `Authorization: Bearer` by the request helpers; the bootstrap admin token.
    pub token: String,
    pub database: Config,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// An HTTP client whose requests give up after two minutes, so a stuck engine fails its test
/// instead of hanging the suite.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let database = test_server().await.fresh_database().await;
    spawn_app_on(database, customize).await
}

/// An application on an existing database (a second instance, or a restart).
pub async fn spawn_app_on(database: Config, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    customize(&mut settings);
    let application = Application::build(settings, &url_of(&database))
        .await
        .expect("the application starts");
    let address = format!("http://{}", application.address());
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        token: BOOTSTRAP_ADMIN_TOKEN.into(),
        database,
        http: http_client(),
        stop: Some(stop),
        running: Some(running),
    }
}

impl TestApp {
    /// Stops the application the way SIGTERM does and waits for it.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    async fn stop_in_place(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("the application task does not panic")
                .expect("the application stops cleanly");
        }
    }

    /// A small pool on the test database, for calling the engine's own jobs directly.
    pub async fn pool_for_tests(&self) -> ingest_engine::store::Pool {
        connections::build_pool(&self.database, 2, Duration::from_secs(5)).await
    }

    /// A new tenant, paused: its scans are accepted and staged but not written.
    pub async fn paused_tenant(&self) -> Uuid {
        let tenant = Uuid::new_v4();
        self.db()
            .await
            .execute(
                "INSERT INTO tenants (tenant_id, records_per_second, burst, max_backlog_records, paused) \
                 VALUES ($1, 100000, 100000, 10000000, true)",
                &[&tenant],
            )
            .await
            .expect("a new tenant can be inserted");
        tenant
    }

    /// `GET /metrics`, which needs no token.
    pub async fn exported_metrics(&self) -> String {
        let response = self
            .http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "metrics need no token");
        response.text().await.unwrap()
    }

    /// The value of an unlabelled counter or gauge in `GET /metrics`, 0 while it has none
    /// (a counter appears once first incremented). Metrics are process-wide: other tests running
    /// at the same time add to them too.
    pub async fn metric(&self, name: &str) -> f64 {
        self.exported_metrics()
            .await
            .lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(|value| value.trim().parse::<f64>().unwrap())
            .next()
            .unwrap_or(0.0)
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        connections::connect(&self.database)
            .await
            .expect("the test database accepts connections")
    }

    pub async fn count(
        &self,
        sql: &str,
        parameters: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> i64 {
        self.db()
            .await
            .query_one(sql, parameters)
            .await
            .expect("the count query runs")
            .get(0)
    }

    pub async fn activities_of(&self, tenant_id: Uuid) -> i64 {
        self.count(
            "SELECT count(*) FROM processing_activities WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await
    }

    /// See [`assert_activity_counts_are_exact`].
    pub async fn assert_activity_counts_are_exact(&self) {
        assert_activity_counts_are_exact(&self.db().await).await;
    }

    /// A request to `path` with the app's token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(&self.token)
    }

    /// A request to `path` with `token_opt` instead of the app's token.
    pub fn request_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token_opt: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.address));
        match token_opt {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn post_scan(&self, tenant_id: Uuid, activities: Vec<Value>) -> reqwest::Response {
        self.post_json(
            "/data-scans",
            &json!({ "tenant_id": tenant_id, "activities": activities }),
        )
        .await
    }

    pub async fn get_scan(&self, tenant_id: Uuid, scan_id: &str) -> Value {
        let response = self
            .get(&format!("/data-scans/{scan_id}?tenant_id={tenant_id}"))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("a scan is JSON")
    }

    /// Polls a scan until it is finished; panics after `timeout`.
    pub async fn wait_for_scan(&self, tenant_id: Uuid, scan_id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let scan = self.get_scan(tenant_id, scan_id).await;
            let status = scan["status"].as_str().unwrap_or_default().to_string();
            if status.starts_with("completed") || status == "failed" {
                return scan;
            }
            assert!(
                Instant::now() < deadline,
                "scan {scan_id} still {status} after {timeout:?}: {scan}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that ends without `stop` still stops its application.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `scan_id` of a scan submission's answer, which must be a 202.
pub async fn accepted_scan_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.expect("a 202 is JSON")["scan_id"]
        .as_str()
        .expect("a 202 names its scan")
        .to_string()
}

/// A valid record with Vietnamese text.
pub fn activity(index: usize) -> Value {
    json!({
        "activity_name": format!("Quản lý hồ sơ nhân sự {index}"),
        "pdpl_category": "Category 2: Basic Personal Data",
        "data_fields": ["họ và tên", "số CCCD", "địa chỉ email"],
        "purpose": "Tính lương và bảo hiểm xã hội",
        "legal_basis": "Hợp đồng lao động",
        "retention_period": "10 năm",
        "data_recipients": ["Cơ quan Bảo hiểm xã hội Việt Nam"]
    })
}

pub fn activities(count: usize) -> Vec<Value> {
    (0..count).map(activity).collect()
}

/// Asserts an error body: its code and both languages.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "unexpected status for {code}");
    let body: Value = response.json().await.expect("an error body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|text| !text.is_empty()),
        "{body}"
    );
    assert!(
        body["error_vi"]
            .as_str()
            .is_some_and(|text| !text.is_empty()),
        "{body}"
    );
    body
}

/// Asserts that the per-category counts the writers keep (what the compliance summary reads)
/// equal the activities actually in the table, for every tenant.
pub async fn assert_activity_counts_are_exact(client: &tokio_postgres::Client) {
    let differing: i64 = client
        .query_one(
            "SELECT count(*) FROM (\
                 SELECT tenant_id, pdpl_category, count(*) AS activities \
                 FROM processing_activities GROUP BY 1, 2) AS counted \
             FULL JOIN activity_counts AS kept USING (tenant_id, pdpl_category) \
             WHERE counted.activities IS DISTINCT FROM kept.activities",
            &[],
        )
        .await
        .expect("the count query runs")
        .get(0);
    assert_eq!(
        differing, 0,
        "activity_counts differ from the activities table"
    );
}

/// How many activities `tenant_id` has in the table.
pub async fn activities_in(client: &tokio_postgres::Client, tenant_id: Uuid) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM processing_activities WHERE tenant_id = $1",
            &[&tenant_id],
        )
        .await
        .expect("the count query runs")
        .get(0)
}
