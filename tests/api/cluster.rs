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
    // The recorder is the test process's, shared by every engine the tests run at once, so
    // the gauge's value is whichever engine beat last: present and at least 1.
    let metrics = first.get("/metrics").await.text().await.unwrap();
    let live: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ingest_cluster_live_instances "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no live-instances gauge: {metrics}"));
    assert!(live >= 1.0, "{metrics}");
    first.stop().await;
}

/// The fence: a chunk transaction of an instance that no longer owns the tenant under its
/// epoch writes nothing and leaves the chunk staged; the owner's goes through, and leaves its
/// trace in `ownership_writes`.
#[tokio::test]
async fn a_chunk_of_an_instance_that_lost_its_tenant_writes_nothing() {
    use ingest_engine::domain::TenantId;
    use ingest_engine::store::chunk_writes::{ChunkSource, Fence, WriteConnection};

    let app = spawn_app_with(|settings| settings.cluster.instance_id = "instance-a".into()).await;
    let tenant = uuid::Uuid::new_v4();
    let client = app.db().await;
    client
        .execute(
            "INSERT INTO tenants (tenant_id, records_per_second, burst, max_backlog_records, paused) \
             VALUES ($1, 100000, 100000, 10000000, true)",
            &[&tenant],
        )
        .await
        .unwrap();
    let scan_id = crate::helpers::accepted_scan_id(
        app.post_scan(tenant, crate::helpers::activities(10)).await,
    )
    .await;
    let chunk_id: i64 = client
        .query_one(
            "SELECT chunk_id FROM staged_chunks WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    // instance-a owned the tenant under epoch 1; instance-b (alive) took it: epoch 2.
    client
        .execute(
            "INSERT INTO engine_instances (instance_id, lease_expires_at) \
             VALUES ('instance-b', now() + interval '1 hour')",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO tenant_owners (tenant_id, instance_id, epoch) VALUES ($1, 'instance-b', 2) \
             ON CONFLICT (tenant_id) DO UPDATE SET instance_id = 'instance-b', epoch = 2",
            &[&tenant],
        )
        .await
        .unwrap();
    let mut connection = WriteConnection::open(&app.database).await.unwrap();
    let source = ChunkSource::Staged { chunk_id };
    let stale = Fence {
        instance_id: "instance-a".into(),
        epoch: 1,
    };
    let refused = connection
        .apply_chunk(TenantId(tenant), &source, Some(&stale))
        .await;
    assert!(
        matches!(refused, Err(ingest_engine::store::StoreError::Fenced)),
        "{refused:?}"
    );
    let staged: i64 = client
        .query_one(
            "SELECT count(*) FROM staged_chunks WHERE chunk_id = $1",
            &[&chunk_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(staged, 1, "the fenced chunk is still staged");
    assert_eq!(app.activities_of(tenant).await, 0);
    // The right instance under the wrong epoch is refused too.
    let old_epoch = Fence {
        instance_id: "instance-b".into(),
        epoch: 1,
    };
    assert!(matches!(
        connection
            .apply_chunk(TenantId(tenant), &source, Some(&old_epoch))
            .await,
        Err(ingest_engine::store::StoreError::Fenced)
    ));
    let owner = Fence {
        instance_id: "instance-b".into(),
        epoch: 2,
    };
    let outcome = connection
        .apply_chunk(TenantId(tenant), &source, Some(&owner))
        .await
        .unwrap();
    assert_eq!(outcome.written, 10);
    let traces: Vec<(String, i64)> = client
        .query(
            "SELECT instance_id, epoch FROM ownership_writes WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(traces, [("instance-b".to_string(), 2)]);
    let status: String = client
        .query_one(
            "SELECT status FROM scans WHERE scan_id = $1::text::uuid",
            &[&scan_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "completed");
    app.stop().await;
}

/// Two instances: tenants spread over both, each written by its owner only (one instance per
/// epoch in `ownership_writes`), whichever instance took the scan; a third instance that joins
/// takes a share, and one that stops hands its tenants back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_is_written_by_its_one_owner_and_owners_change_cleanly() {
    let fast = |name: &'static str| {
        move |settings: &mut ingest_engine::config::Settings| {
            settings.cluster.instance_id = name.into();
            settings.cluster.heartbeat_ms = 200;
            settings.cluster.lease_ttl_ms = 1_000;
            settings.ingest.chunk_records = 250;
        }
    };
    let first = spawn_app_with(fast("instance-a")).await;
    let second = spawn_app_on(first.database.clone(), fast("instance-b")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tenants: Vec<uuid::Uuid> = (0..20).map(|_| uuid::Uuid::new_v4()).collect();
    let mut scans = Vec::new();
    for (index, tenant) in tenants.iter().enumerate() {
        let app = if index % 2 == 0 { &first } else { &second };
        let scan_id = crate::helpers::accepted_scan_id(
            app.post_scan(*tenant, crate::helpers::activities(1_000))
                .await,
        )
        .await;
        scans.push((*tenant, scan_id));
    }
    for (tenant, scan_id) in &scans {
        first
            .wait_for_scan(*tenant, scan_id, Duration::from_secs(60))
            .await;
    }
    let client = first.db().await;
    let owners: Vec<(String, i64)> = client
        .query(
            "SELECT instance_id, count(*) FROM tenant_owners GROUP BY instance_id ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(owners.len(), 2, "both instances own tenants: {owners:?}");
    let shared_epochs: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT tenant_id, epoch FROM ownership_writes \
             GROUP BY tenant_id, epoch HAVING count(DISTINCT instance_id) > 1) AS shared",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shared_epochs, 0, "no two instances wrote under one epoch");
    for tenant in &tenants {
        assert_eq!(first.activities_of(*tenant).await, 1_000);
    }
    let tenant = tenants[0];
    let shown: serde_json::Value = first
        .get(&format!("/admin/tenants/{tenant}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        ["instance-a", "instance-b"].contains(&shown["owner"]["instance_id"].as_str().unwrap()),
        "{shown}"
    );

    // A third instance joins: the tenants that prefer it move to it at the next passes (new
    // epochs); its new work is written by it.
    let third = spawn_app_on(first.database.clone(), fast("instance-c")).await;
    let more: Vec<(uuid::Uuid, String)> = {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut more = Vec::new();
        for tenant in &tenants {
            let scan_id = crate::helpers::accepted_scan_id(
                third
                    .post_scan(*tenant, crate::helpers::activities(500))
                    .await,
            )
            .await;
            more.push((*tenant, scan_id));
        }
        more
    };
    for (tenant, scan_id) in &more {
        third
            .wait_for_scan(*tenant, scan_id, Duration::from_secs(60))
            .await;
    }
    let third_owns: i64 = client
        .query_one(
            "SELECT count(*) FROM tenant_owners WHERE instance_id = 'instance-c'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(third_owns > 0, "the joining instance took a share");
    for tenant in &tenants {
        assert_eq!(first.activities_of(*tenant).await, 1_500);
    }
    first.assert_activity_counts_are_exact().await;

    // A stopping instance hands its tenants back (a new epoch, no owner), at once.
    third.stop().await;
    let still_owned: i64 = client
        .query_one(
            "SELECT count(*) FROM tenant_owners WHERE instance_id = 'instance-c'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still_owned, 0);
    let shared_epochs: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT tenant_id, epoch FROM ownership_writes \
             GROUP BY tenant_id, epoch HAVING count(DISTINCT instance_id) > 1) AS shared",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shared_epochs, 0);
    second.stop().await;
    first.stop().await;
}
