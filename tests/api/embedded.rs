//! The private cluster: start, reuse, refusal without binaries; migrations.

use std::path::PathBuf;
use std::time::Duration;

use ingest_engine::store::embedded::{ClusterOptions, EmbeddedCluster, EmbeddedError};
use ingest_engine::store::{connect, connections, migrations};

use crate::helpers::{repository_path, scratch_directory, test_server};

fn options(data_dir: PathBuf) -> ClusterOptions {
    ClusterOptions {
        data_dir,
        port: 0,
        os_user: "postgres".into(),
        config_file_opt: Some(repository_path("config/postgresql.conf")),
        startup_timeout: Duration::from_secs(60),
        search_path_opt: None,
        relocation_root_opt: None,
    }
}

#[tokio::test]
async fn a_cluster_is_initialised_once_and_reused_with_its_data() {
    let data_dir = scratch_directory().join("postgres");
    let first_options = options(data_dir.clone());
    let mut first = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&first_options))
        .await
        .unwrap()
        .expect("the cluster starts");
    let config = connections::parse_url(&first.database_url(), Duration::from_secs(5)).unwrap();
    connections::ensure_database(&config).await.unwrap();
    let client = connect(&config).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE survives (value text); INSERT INTO survives VALUES ('còn đây')",
        )
        .await
        .unwrap();
    // The write-oriented settings of config/postgresql.conf are in force.
    let max_wal_size: String = client
        .query_one("SHOW max_wal_size", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(max_wal_size, "4GB");
    let listen: String = client
        .query_one("SHOW listen_addresses", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listen, "127.0.0.1");
    // Its processes keep their heaps between statements (glibc thresholds in its environment).
    let postmaster_pid = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    let postmaster_pid = postmaster_pid.lines().next().unwrap();
    let environment = std::fs::read(format!("/proc/{postmaster_pid}/environ")).unwrap();
    let variables: Vec<&[u8]> = environment.split(|byte| *byte == 0).collect();
    for expected in [
        &b"MALLOC_MMAP_THRESHOLD_=4194304"[..],
        b"MALLOC_TRIM_THRESHOLD_=33554432",
    ] {
        assert!(
            variables.contains(&expected),
            "the server's environment lacks {}",
            String::from_utf8_lossy(expected)
        );
    }
    drop(client);
    tokio::task::spawn_blocking(move || first.stop())
        .await
        .unwrap();
    assert!(
        !data_dir.join("postmaster.pid").exists(),
        "a clean stop removes the pid file"
    );

    let second_options = options(data_dir.clone());
    let second = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&second_options))
        .await
        .unwrap()
        .expect("the cluster starts again on the same data");
    let config = connections::parse_url(&second.database_url(), Duration::from_secs(5)).unwrap();
    let client = connect(&config).await.unwrap();
    let value: String = client
        .query_one("SELECT value FROM survives", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(value, "còn đây");
    drop(client);
    tokio::task::spawn_blocking(move || drop(second))
        .await
        .unwrap();
}

#[tokio::test]
async fn without_postgresql_binaries_the_error_says_what_to_do_in_both_languages() {
    let empty = scratch_directory();
    let mut without_binaries = options(empty.join("data"));
    without_binaries.search_path_opt = Some(vec![empty.clone()]);
    let error = EmbeddedCluster::start(&without_binaries).unwrap_err();
    assert!(matches!(error, EmbeddedError::NoBinaries));
    let message = error.to_string();
    assert!(
        message.contains("apt-get install -y postgresql"),
        "{message}"
    );
    assert!(message.contains("DATABASE_URL"), "{message}");
    assert!(
        message.contains("Không tìm thấy chương trình PostgreSQL"),
        "{message}"
    );
    assert!(
        !empty.join("data").exists(),
        "nothing is created when nothing can run"
    );
}

#[tokio::test]
async fn migrations_apply_once_and_are_idempotent() {
    let server = test_server().await;
    let mut config = server.maintenance().clone();
    let name = format!("engine_migrations_{}", uuid::Uuid::new_v4().simple());
    config.dbname(&name);
    connections::ensure_database(&config).await.unwrap();
    let first = migrations::run(&config).await.unwrap();
    assert!(!first.is_empty());
    let second = migrations::run(&config).await.unwrap();
    assert!(second.is_empty(), "nothing is applied twice: {second:?}");
    // Concurrent runs (several instances starting together) serialise on the advisory lock.
    let runs = (0..3).map(|_| migrations::run(&config));
    for outcome in futures_util::future::join_all(runs).await {
        assert!(outcome.unwrap().is_empty());
    }
    let client = connect(&config).await.unwrap();
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN \
             ('tenants', 'api_keys', 'scans', 'staged_chunks', 'processing_activities', 'dead_letters')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 6);
}
