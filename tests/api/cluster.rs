//! Several instances on one database: liveness by heartbeat leases judged by the database's
//! clock.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{spawn_app_on, spawn_app_with, TestApp};

async fn cluster(app: &TestApp) -> Value {
    let response = app.get("/admin/cluster").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Two instances see each other alive; one that stops hands its lease back and is gone at
/// once; one that stops beating (its lease set to expire, as a killed instance's would) is
/// listed as lost once its lease ran out.
#[tokio::test]
async fn instances_see_each_other_by_their_leases() {
    let first = spawn_app_with(|settings| settings.cluster.heartbeat_ms = 200).await;
    let second = spawn_app_on(first.database.clone(), |settings| {
        settings.cluster.heartbeat_ms = 200;
        settings.cluster.instance_id = "instance-b".into();
    })
    .await;
    let listed = cluster(&first).await;
    assert_eq!(listed["live_instances"], 2, "{listed}");
    let instances = listed["instances"].as_array().unwrap();
    assert!(instances
        .iter()
        .any(|instance| instance["instance_id"] == "instance-b"
            && instance["alive"] == true
            && instance["this_instance"] == false));
    assert!(instances
        .iter()
        .any(|instance| instance["this_instance"] == true));

    second.stop().await;
    let listed = cluster(&first).await;
    assert_eq!(listed["live_instances"], 1, "{listed}");
    assert_eq!(listed["instances"].as_array().unwrap().len(), 1, "{listed}");

    // A lost instance: a lease that ran out and is not renewed.
    first
        .db()
        .await
        .execute(
            "INSERT INTO engine_instances (instance_id, lease_expires_at, heartbeat_at) \
             VALUES ('killed', now() - interval '1 second', now() - interval '6 seconds')",
            &[],
        )
        .await
        .unwrap();
    let listed = cluster(&first).await;
    let lost = listed["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|instance| instance["instance_id"] == "killed")
        .cloned()
        .unwrap();
    assert_eq!(lost["alive"], false);
    assert_eq!(lost["status_vi"], "mất kết nối");
    assert!(
        lost["since_heartbeat_ms"].as_i64().unwrap() >= 6_000,
        "{lost}"
    );
    assert_eq!(listed["live_instances"], 1);
    // The heartbeat renews the live lease: it never runs out while the instance runs.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let listed = cluster(&first).await;
    let this = listed["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|instance| instance["this_instance"] == true)
        .cloned()
        .unwrap();
    assert!(
        this["since_heartbeat_ms"].as_i64().unwrap() < 3_000,
        "{this}"
    );
    let metrics = first.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ingest_cluster_live_instances 1"),
        "{metrics}"
    );
    first.stop().await;
}
