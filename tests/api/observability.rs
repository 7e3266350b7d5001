//! Prometheus is one of the engine's users: the metrics it scrapes, the rules and the dashboard
//! that read them, checked against the real `promtool` and a real Prometheus server.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{
    activities, http_client, repository_path, scratch_directory, spawn_app, TestApp,
};

fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    if std::path::Path::new(&path).exists() {
        return path;
    }
    match Command::new("which").arg(name).output() {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        _ => panic!("{name} is missing: install Debian's prometheus package (apt-get install -y prometheus), as .ci/run does"),
    }
}

#[test]
fn promtool_accepts_the_alert_rules_and_the_scrape_configuration() {
    let promtool = tool("promtool");
    let rules = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(repository_path("config/prometheus/alerts.yml"))
        .output()
        .unwrap();
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stderr)
    );
    let config = Command::new(&promtool)
        .args(["check", "config"])
        .arg(repository_path("config/prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "{}",
        String::from_utf8_lossy(&config.stderr)
    );
}

#[test]
fn every_alert_has_english_and_vietnamese_descriptions() {
    let rules = std::fs::read_to_string(repository_path("config/prometheus/alerts.yml")).unwrap();
    let alerts = rules.matches("- alert:").count();
    assert!(alerts >= 7, "{alerts} alerts");
    for key in ["summary:", "description:", "summary_vi:", "description_vi:"] {
        assert_eq!(rules.matches(key).count(), alerts, "{key}");
    }
}

/// The engine's metric names a text refers to (histogram series reduced to their metric).
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut position = 0;
    while let Some(offset) = text[position..].find("ingest_") {
        let start = position + offset;
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
            .map_or(text.len(), |length| start + length);
        if !preceded_by_word {
            let name = &text[start..end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(name.to_string());
        }
        position = end;
    }
    names
}

async fn ingest_something(app: &TestApp) {
    let tenant = Uuid::new_v4();
    let accepted: Value = app
        .post_scan(tenant, activities(2_500))
        .await
        .json()
        .await
        .unwrap();
    app.wait_for_scan(
        tenant,
        accepted["scan_id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let app =
        crate::helpers::spawn_app_with(|settings| settings.metrics.sample_interval_secs = 1).await;
    ingest_something(&app).await;
    // A paused tenant keeps a backlog, so the top-tenant gauge has a series.
    let paused = Uuid::new_v4();
    let created = app
        .post_json(
            "/admin/tenants",
            &serde_json::json!({ "tenant_id": paused, "name": "Tạm dừng" }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let pause = app
        .request(
            reqwest::Method::POST,
            &format!("/admin/tenants/{paused}/pause"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pause.status(), 200);
    assert_eq!(app.post_scan(paused, activities(10)).await.status(), 202);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let exported = app.exported_metrics().await;
    let exported_names: BTreeSet<String> = exported
        .lines()
        .filter(|line| line.starts_with("ingest_"))
        .map(|line| {
            let name = line.split(['{', ' ']).next().unwrap();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_string()
        })
        .collect();
    let dashboard =
        std::fs::read_to_string(repository_path("config/grafana/ingest-engine.json")).unwrap();
    serde_json::from_str::<Value>(&dashboard).expect("the dashboard is valid JSON");
    let rules = std::fs::read_to_string(repository_path("config/prometheus/alerts.yml")).unwrap();
    let referenced: BTreeSet<String> = referenced_metrics(&dashboard)
        .into_iter()
        .chain(referenced_metrics(&rules))
        .collect();
    assert!(referenced.len() >= 12, "{referenced:?}");
    let missing: Vec<&String> = referenced.difference(&exported_names).collect();
    assert!(
        missing.is_empty(),
        "referenced but not exported: {missing:?}\nexported: {exported_names:?}"
    );
    // No personal data and no unbounded labels: no record text, no raw paths.
    assert!(!exported.contains("Quản lý"));
    assert!(!exported.contains("route=\"/data-scans/0"));
    app.stop().await;
}

struct PrometheusServer {
    child: Child,
    address: String,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(target: &str) -> PrometheusServer {
    let directory = scratch_directory();
    let config = directory.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ingest-engine\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let child = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            directory.join("data").display()
        ))
        .arg(format!("--web.listen-address={address}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    PrometheusServer {
        child,
        address: format!("http://{address}"),
    }
}

async fn query_value(http: &reqwest::Client, prometheus: &str, query: &str) -> Option<f64> {
    let body: Value = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_records_written_and_chunk_write_times() {
    let app = spawn_app().await;
    let target = app.address.trim_start_matches("http://").to_string();
    let prometheus = start_prometheus(&target);
    ingest_something(&app).await;
    let http = http_client();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let written = query_value(
            &http,
            &prometheus.address,
            "sum(ingest_records_written_total)",
        )
        .await;
        let chunk_writes = query_value(
            &http,
            &prometheus.address,
            "ingest_chunk_write_duration_seconds_count",
        )
        .await;
        if written.is_some_and(|value| value > 0.0) && chunk_writes.is_some_and(|value| value > 0.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never saw the ingestion: written {written:?}, chunk writes {chunk_writes:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let up = query_value(&http, &prometheus.address, "up{job=\"ingest-engine\"}").await;
    assert_eq!(up, Some(1.0));
    drop(prometheus);
    app.stop().await;
}
