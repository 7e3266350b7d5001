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
    let tenant = app.paused_tenant().await;
    let client = app.db().await;
    let scan_id = crate::helpers::accepted_scan_id(
        app.post_scan(tenant, crate::helpers::activities(10)).await,
    )
    .await;
    // A second scan of the paused tenant: a second staged chunk.
    let second_scan_id = crate::helpers::accepted_scan_id(
        app.post_scan(tenant, crate::helpers::activities(10)).await,
    )
    .await;
    let chunk_ids: Vec<i64> = client
        .query(
            "SELECT chunk_id FROM staged_chunks WHERE tenant_id = $1 ORDER BY chunk_id",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let [chunk_id, second_chunk_id] = chunk_ids[..] else {
        panic!("two staged chunks expected: {chunk_ids:?}");
    };
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
        trace: true,
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
        trace: true,
    };
    assert!(matches!(
        connection
            .apply_chunk(TenantId(tenant), &source, Some(&old_epoch))
            .await,
        Err(ingest_engine::store::StoreError::Fenced)
    ));
    let traces = || async {
        client
            .query(
                "SELECT instance_id, epoch FROM ownership_writes WHERE tenant_id = $1",
                &[&tenant],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect::<Vec<(String, i64)>>()
    };
    // The owner: its first chunk under the epoch leaves the trace, a later one does not
    // need to.
    let owner = Fence {
        instance_id: "instance-b".into(),
        epoch: 2,
        trace: true,
    };
    let outcome = connection
        .apply_chunk(TenantId(tenant), &source, Some(&owner))
        .await
        .unwrap();
    assert_eq!(outcome.written, 10);
    assert_eq!(traces().await, [("instance-b".to_string(), 2)]);
    client
        .execute(
            "DELETE FROM ownership_writes WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();
    let untraced = Fence {
        trace: false,
        ..owner
    };
    let outcome = connection
        .apply_chunk(
            TenantId(tenant),
            &ChunkSource::Staged {
                chunk_id: second_chunk_id,
            },
            Some(&untraced),
        )
        .await
        .unwrap();
    assert_eq!(outcome.written, 10);
    assert_eq!(
        traces().await,
        [],
        "a chunk without the trace flag leaves none"
    );
    assert_eq!(app.activities_of(tenant).await, 20);
    for scan_id in [&scan_id, &second_scan_id] {
        let status: String = client
            .query_one(
                "SELECT status FROM scans WHERE scan_id = $1::text::uuid",
                &[scan_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, "completed", "scan {scan_id}");
    }
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

/// Three engine processes on one database, each started with `extra` settings.
fn start_three(
    database: &tokio_postgres::Config,
    extra: &[(&str, &str)],
) -> Vec<crate::process::EngineProcess> {
    ["instance-a", "instance-b", "instance-c"]
        .iter()
        .map(|name| {
            let mut environment = vec![
                ("DATABASE_URL", crate::helpers::url_of(database)),
                (
                    "INGEST__AUTH__BOOTSTRAP_ADMIN_TOKEN",
                    crate::helpers::BOOTSTRAP_ADMIN_TOKEN.to_string(),
                ),
                ("INGEST__CLUSTER__INSTANCE_ID", name.to_string()),
                ("INGEST__INGEST__CHUNK_RECORDS", "100".to_string()),
            ];
            environment.extend(extra.iter().map(|(key, value)| (*key, value.to_string())));
            crate::process::EngineProcess::start(&environment)
        })
        .collect()
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body_opt: Option<serde_json::Value>,
) -> reqwest::Response {
    let request = http
        .request(method, url)
        .bearer_auth(crate::helpers::BOOTSTRAP_ADMIN_TOKEN);
    match body_opt {
        Some(body) => request.json(&body),
        None => request,
    }
    .send()
    .await
    .expect("the request is sent")
}

async fn database_client(database: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = database.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn shared_epochs(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM (SELECT tenant_id, epoch FROM ownership_writes \
             GROUP BY tenant_id, epoch HAVING count(DISTINCT instance_id) > 1) AS shared",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Three processes: a tenant limited to 1,000 records a second, sent 30,000 records through all
/// three at once, takes 27 to 33 s (one limit for the cluster, not one per instance); a limit
/// raised through an instance that does not own the tenant is in force on its owner within a
/// second; no two instances wrote under one epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_hold_one_tenant_limit_and_apply_a_change_within_a_second() {
    let database = crate::helpers::test_server().await.fresh_database().await;
    let engines = tokio::task::block_in_place(|| start_three(&database, &[]));
    let http = crate::helpers::http_client();
    let client = database_client(&database).await;
    let limited = uuid::Uuid::new_v4();
    let response = call(
        &http,
        reqwest::Method::POST,
        format!("{}/admin/tenants", engines[0].address),
        Some(
            serde_json::json!({ "tenant_id": limited, "name": "Giới hạn",
            "records_per_second": 1_000, "burst": 1_000 }),
        ),
    )
    .await;
    assert_eq!(response.status(), 201);
    let submissions = (0..30).map(|index| {
        let url = format!("{}/data-scans", engines[index % 3].address);
        let http = http.clone();
        async move {
            let response = call(
                &http,
                reqwest::Method::POST,
                url,
                Some(serde_json::json!({ "tenant_id": limited,
                    "activities": crate::helpers::activities(1_000) })),
            )
            .await;
            assert_eq!(response.status(), 202);
        }
    });
    futures_util::future::join_all(submissions).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let seconds: f64 = loop {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'completed'), \
                     extract(epoch FROM max(completed_at) - min(created_at))::float8 \
                 FROM scans WHERE tenant_id = $1",
                &[&limited],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == 30 {
            break row.get(1);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scans did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("30,000 records at 1,000 records/s through three instances: {seconds:.2} s");
    assert!((27.0..=33.0).contains(&seconds), "took {seconds:.2} s");
    let written: i64 = client
        .query_one(
            "SELECT count(*) FROM processing_activities WHERE tenant_id = $1",
            &[&limited],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 30_000);

    // A slow tenant with a backlog; its limit is raised through an instance that does not own it.
    let slow = uuid::Uuid::new_v4();
    let response = call(
        &http,
        reqwest::Method::POST,
        format!("{}/admin/tenants", engines[0].address),
        Some(serde_json::json!({ "tenant_id": slow, "name": "Chậm",
            "records_per_second": 100, "burst": 100 })),
    )
    .await;
    assert_eq!(response.status(), 201);
    let response = call(
        &http,
        reqwest::Method::POST,
        format!("{}/data-scans", engines[0].address),
        Some(serde_json::json!({ "tenant_id": slow,
            "activities": crate::helpers::activities(20_000) })),
    )
    .await;
    assert_eq!(response.status(), 202);
    let processed = || async {
        client
            .query_one(
                "SELECT records_processed FROM scans WHERE tenant_id = $1",
                &[&slow],
            )
            .await
            .unwrap()
            .get::<_, i32>(0)
    };
    while processed().await == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shown: serde_json::Value = call(
        &http,
        reqwest::Method::GET,
        format!("{}/admin/tenants/{slow}", engines[0].address),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let owner = shown["owner"]["instance_id"].as_str().unwrap().to_string();
    let other = ["instance-a", "instance-b", "instance-c"]
        .iter()
        .position(|name| *name != owner)
        .unwrap();
    let before = processed().await;
    let changed_at = std::time::Instant::now();
    let response = call(
        &http,
        reqwest::Method::PUT,
        format!("{}/admin/tenants/{slow}/limits", engines[other].address),
        Some(serde_json::json!({ "records_per_second": 1_000_000, "burst": 1_000_000 })),
    )
    .await;
    assert_eq!(response.status(), 200);
    // At the old limit (100 a second, burst 100) 300 more records take at least 2 s; past that
    // mark, the new limit is in force.
    while processed().await < before + 300 {
        assert!(
            changed_at.elapsed() < Duration::from_secs(10),
            "the new limit is not in force"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let in_force = changed_at.elapsed();
    eprintln!(
        "limit raised through {} for a tenant owned by {owner}: 300 more records written {:.0} ms later",
        ["instance-a", "instance-b", "instance-c"][other],
        in_force.as_secs_f64() * 1e3
    );
    assert!(in_force < Duration::from_secs(1), "{in_force:?}");
    assert_eq!(shared_epochs(&client).await, 0);
    drop(engines);
}

/// Each of `tenants` has exactly `expected` activities.
async fn assert_each_tenant_has(
    client: &tokio_postgres::Client,
    tenants: &[uuid::Uuid],
    expected: i64,
) {
    for tenant in tenants {
        let written: i64 = client
            .query_one(
                "SELECT count(*) FROM processing_activities WHERE tenant_id = $1",
                &[tenant],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(written, expected, "tenant {tenant}");
    }
}

/// No record of any scan written twice, and no two instances wrote under one epoch.
async fn assert_no_record_twice_and_one_writer_per_epoch(client: &tokio_postgres::Client) {
    let duplicates: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT scan_id, record_index FROM processing_activities \
             GROUP BY 1, 2 HAVING count(*) > 1) AS duplicated",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(duplicates, 0);
    assert_eq!(shared_epochs(client).await, 0);
}

/// The instance among `engines` (by name) that owns the most tenants with staged work, with
/// those tenants and their epochs.
async fn busiest_owner(
    client: &tokio_postgres::Client,
    names: &[&str],
) -> (usize, Vec<(uuid::Uuid, i64)>) {
    let mut best = (0, Vec::new());
    for (index, name) in names.iter().enumerate() {
        let owned: Vec<(uuid::Uuid, i64)> = client
            .query(
                "SELECT tenant_id, epoch FROM tenant_owners AS owner WHERE instance_id = $1 \
                 AND EXISTS (SELECT 1 FROM staged_chunks AS staged \
                     WHERE staged.tenant_id = owner.tenant_id)",
                &[name],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        if owned.len() > best.1.len() {
            best = (index, owned);
        }
    }
    best
}

/// Seconds from `since` to each tenant's first write under a later epoch than the one it had.
async fn resumed_after(
    client: &tokio_postgres::Client,
    tenants: &[(uuid::Uuid, i64)],
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<f64> {
    let mut delays = Vec::new();
    for (tenant, epoch) in tenants {
        let first: chrono::DateTime<chrono::Utc> = client
            .query_one(
                "SELECT min(first_write_at) FROM ownership_writes WHERE tenant_id = $1 AND epoch > $2",
                &[tenant, epoch],
            )
            .await
            .unwrap()
            .get(0);
        delays.push((first - since).num_milliseconds() as f64 / 1e3);
    }
    delays
}

async fn wait_for_all_scans(client: &tokio_postgres::Client, expected: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let completed: i64 = client
            .query_one("SELECT count(*) FROM scans WHERE status = 'completed'", &[])
            .await
            .unwrap()
            .get(0);
        if completed == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{completed} of {expected} scans completed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// kill -9 of one of three instances during a 20-tenant ingestion: every acknowledged record is
/// written exactly once, and each of its tenants writes again within 10 s of the kill (from the
/// database's timestamps). SIGTERM of another during the next ingestion: its tenants write again
/// within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_or_stopped_instances_tenants_resume_elsewhere() {
    let names = ["instance-a", "instance-b", "instance-c"];
    let database = crate::helpers::test_server().await.fresh_database().await;
    let mut engines = tokio::task::block_in_place(|| start_three(&database, &[]));
    let http = crate::helpers::http_client();
    let client = database_client(&database).await;
    let tenants: Vec<uuid::Uuid> = (0..20).map(|_| uuid::Uuid::new_v4()).collect();
    for tenant in &tenants {
        let response = call(
            &http,
            reqwest::Method::POST,
            format!("{}/admin/tenants", engines[0].address),
            Some(serde_json::json!({ "tenant_id": tenant, "name": "Công ty",
                "records_per_second": 1_000, "burst": 1_000 })),
        )
        .await;
        assert_eq!(response.status(), 201);
    }
    let submit_round = |addresses: Vec<String>| {
        let http = http.clone();
        let tenants = tenants.clone();
        async move {
            let submissions = tenants.iter().enumerate().map(|(index, tenant)| {
                let url = format!("{}/data-scans", addresses[index % addresses.len()]);
                let http = http.clone();
                let tenant = *tenant;
                async move {
                    let response = call(
                        &http,
                        reqwest::Method::POST,
                        url,
                        Some(serde_json::json!({ "tenant_id": tenant,
                            "activities": crate::helpers::activities(20_000) })),
                    )
                    .await;
                    assert_eq!(response.status(), 202);
                }
            });
            futures_util::future::join_all(submissions).await;
        }
    };
    // Each tenant's 20,000 records take 20 s at its limit.
    submit_round(
        engines
            .iter()
            .map(|engine| engine.address.clone())
            .collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (victim, victim_tenants) = busiest_owner(&client, &names).await;
    assert!(!victim_tenants.is_empty());
    let killed_at: chrono::DateTime<chrono::Utc> =
        client.query_one("SELECT now()", &[]).await.unwrap().get(0);
    engines[victim].signal(nix::sys::signal::Signal::SIGKILL);
    tokio::task::block_in_place(|| engines[victim].wait(Duration::from_secs(30)));
    wait_for_all_scans(&client, 20).await;
    let delays = resumed_after(&client, &victim_tenants, killed_at).await;
    eprintln!(
        "kill -9 of {}: its {} tenants wrote again after {:?} s",
        names[victim],
        delays.len(),
        delays
    );
    assert!(delays.iter().all(|delay| *delay <= 10.0), "{delays:?}");
    assert_each_tenant_has(&client, &tenants, 20_000).await;

    // SIGTERM of the busier survivor during the next round.
    let survivors: Vec<usize> = (0..3).filter(|index| *index != victim).collect();
    submit_round(
        survivors
            .iter()
            .map(|index| engines[*index].address.clone())
            .collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let survivor_names: Vec<&str> = survivors.iter().map(|index| names[*index]).collect();
    let (position, stopped_tenants) = busiest_owner(&client, &survivor_names).await;
    let stopped = survivors[position];
    assert!(!stopped_tenants.is_empty());
    let stopped_at: chrono::DateTime<chrono::Utc> =
        client.query_one("SELECT now()", &[]).await.unwrap().get(0);
    engines[stopped].signal(nix::sys::signal::Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| engines[stopped].wait(Duration::from_secs(60)));
    assert!(status.success(), "{status:?}");
    wait_for_all_scans(&client, 40).await;
    let delays = resumed_after(&client, &stopped_tenants, stopped_at).await;
    eprintln!(
        "SIGTERM of {}: its {} tenants wrote again after {:?} s",
        names[stopped],
        delays.len(),
        delays
    );
    assert!(delays.iter().all(|delay| *delay <= 1.0), "{delays:?}");
    assert_each_tenant_has(&client, &tenants, 40_000).await;
    assert_no_record_twice_and_one_writer_per_epoch(&client).await;
}

/// `config/haproxy/haproxy.cfg` (three instances behind HAProxy, health-checked on
/// `/health/database`) is a configuration HAProxy accepts.
#[test]
fn haproxy_accepts_the_three_instance_configuration() {
    let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("haproxy is missing: install Debian's haproxy package, as .ci/run does");
    let config = crate::helpers::repository_path("config/haproxy/haproxy.cfg");
    let checked = std::process::Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&config)
        .output()
        .expect("haproxy runs");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(text.matches("\n    server instance-").count(), 3);
    assert!(text.contains("uri /health/database"));
}

/// Pause and the backlog limit hold exactly for the cluster: concurrent scans of one paused
/// tenant through three instances fill its backlog to the record and no further (429 for the
/// rest), nothing is written while it is paused, and a resume through any instance writes it
/// all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_the_backlog_limit_hold_across_instances() {
    let named = |name: &'static str| {
        move |settings: &mut ingest_engine::config::Settings| {
            settings.cluster.instance_id = name.into();
            settings.cluster.heartbeat_ms = 200;
        }
    };
    let first = spawn_app_with(named("instance-a")).await;
    let second = spawn_app_on(first.database.clone(), named("instance-b")).await;
    let third = spawn_app_on(first.database.clone(), named("instance-c")).await;
    let apps = [&first, &second, &third];
    let tenant = uuid::Uuid::new_v4();
    let created = first
        .post_json(
            "/admin/tenants",
            &serde_json::json!({ "tenant_id": tenant, "name": "Tạm dừng",
                "max_backlog_records": 5_000 }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let paused = second
        .request(
            reqwest::Method::POST,
            &format!("/admin/tenants/{tenant}/pause"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    let submissions = (0..20).map(|index| {
        let app = apps[index % 3];
        async move {
            app.post_scan(tenant, crate::helpers::activities(500))
                .await
                .status()
                .as_u16()
        }
    });
    let mut statuses = futures_util::future::join_all(submissions).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [[202; 10], [429; 10]].concat(), "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        first.activities_of(tenant).await,
        0,
        "nothing written while paused"
    );
    let resumed = third
        .request(
            reqwest::Method::POST,
            &format!("/admin/tenants/{tenant}/resume"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first.activities_of(tenant).await < 5_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "not all written after resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(first.activities_of(tenant).await, 5_000);
    third.stop().await;
    second.stop().await;
    first.stop().await;
}

/// A synchronous batch sent to an instance that does not own its tenant is forwarded to the
/// owner, which paces and writes it, and answered 201 once committed there; a batch that was
/// already forwarded is not forwarded again (503 `tenant_owned_elsewhere`, Retry-After).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_to_another_instance_is_written_by_the_tenants_owner() {
    let named = |name: &'static str| {
        move |settings: &mut ingest_engine::config::Settings| {
            settings.cluster.instance_id = name.into();
            settings.cluster.heartbeat_ms = 200;
        }
    };
    let first = spawn_app_with(named("instance-a")).await;
    let second = spawn_app_on(first.database.clone(), named("instance-b")).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let tenant = uuid::Uuid::new_v4();
    let scan_id = crate::helpers::accepted_scan_id(
        first
            .post_scan(tenant, crate::helpers::activities(10))
            .await,
    )
    .await;
    // The scan's 10 records are written before the batch is sent, so the count below is the
    // scan's and the batch's, not a race between the two.
    let scan = first
        .wait_for_scan(tenant, &scan_id, Duration::from_secs(30))
        .await;
    assert_eq!(scan["status"], "completed", "{scan}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let owner = loop {
        let shown: serde_json::Value = first
            .get(&format!("/admin/tenants/{tenant}"))
            .await
            .json()
            .await
            .unwrap();
        if let Some(owner) = shown["owner"]["instance_id"].as_str() {
            break owner.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no owner: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (owning, other) = if owner == "instance-a" {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let batch = serde_json::json!({ "activities": crate::helpers::activities(5) });
    let path = format!("/batch/processing-activities?tenant_id={tenant}");
    let forwarded = other.post_json(&path, &batch).await;
    assert_eq!(forwarded.status(), 201);
    let body: serde_json::Value = forwarded.json().await.unwrap();
    assert_eq!(body["records_created"], 5, "{body}");
    assert_eq!(first.activities_of(tenant).await, 15);
    let writers: Vec<String> = first
        .db()
        .await
        .query(
            "SELECT DISTINCT instance_id FROM ownership_writes WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        writers,
        std::slice::from_ref(&owner),
        "only the owner wrote"
    );
    // Already forwarded once: handled where it arrives, where the tenant is not owned.
    let again = other
        .request(reqwest::Method::POST, &path)
        .header("x-ingest-forwarded-by", "instance-z")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert!(again.headers().contains_key("retry-after"));
    crate::helpers::assert_error(again, 503, "tenant_owned_elsewhere").await;
    let written = owning.post_json(&path, &batch).await;
    assert_eq!(written.status(), 201);
    assert_eq!(first.activities_of(tenant).await, 20);
    second.stop().await;
    first.stop().await;
}

/// A fourth instance started in the middle of a 20-tenant ingestion on three takes a share of
/// the tenants (their next chunks are written by it, under new epochs), and every record is
/// written exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_instance_started_mid_ingestion_takes_a_share() {
    let database = crate::helpers::test_server().await.fresh_database().await;
    let engines = tokio::task::block_in_place(|| start_three(&database, &[]));
    let http = crate::helpers::http_client();
    let client = database_client(&database).await;
    // Tenants of which at least four prefer the fourth instance once it is live (the same
    // rendezvous hashing the engine uses), so it has a share to take.
    let four: Vec<String> = ["instance-a", "instance-b", "instance-c", "instance-d"]
        .map(String::from)
        .to_vec();
    let tenants: Vec<uuid::Uuid> = loop {
        let candidates: Vec<uuid::Uuid> = (0..20).map(|_| uuid::Uuid::new_v4()).collect();
        let preferring_fourth = candidates
            .iter()
            .filter(|tenant| {
                ingest_engine::cluster::view::preferred_among(
                    ingest_engine::domain::TenantId(**tenant),
                    &four,
                )
                .as_deref()
                    == Some("instance-d")
            })
            .count();
        if preferring_fourth >= 4 {
            break candidates;
        }
    };
    for tenant in &tenants {
        let response = call(
            &http,
            reqwest::Method::POST,
            format!("{}/admin/tenants", engines[0].address),
            Some(serde_json::json!({ "tenant_id": tenant, "name": "Công ty",
                "records_per_second": 1_000, "burst": 1_000 })),
        )
        .await;
        assert_eq!(response.status(), 201);
    }
    // 10,000 records each: 10 s at each tenant's limit.
    let submissions = tenants.iter().enumerate().map(|(index, tenant)| {
        let url = format!("{}/data-scans", engines[index % 3].address);
        let http = http.clone();
        let tenant = *tenant;
        async move {
            let response = call(
                &http,
                reqwest::Method::POST,
                url,
                Some(serde_json::json!({ "tenant_id": tenant,
                    "activities": crate::helpers::activities(10_000) })),
            )
            .await;
            assert_eq!(response.status(), 202);
        }
    });
    futures_util::future::join_all(submissions).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let staged: i64 = client
        .query_one("SELECT count(DISTINCT tenant_id) FROM staged_chunks", &[])
        .await
        .unwrap()
        .get(0);
    assert!(staged > 0, "the ingestion is under way");
    let fourth = tokio::task::block_in_place(|| {
        crate::process::EngineProcess::start(&[
            ("DATABASE_URL", crate::helpers::url_of(&database)),
            (
                "INGEST__AUTH__BOOTSTRAP_ADMIN_TOKEN",
                crate::helpers::BOOTSTRAP_ADMIN_TOKEN.to_string(),
            ),
            ("INGEST__CLUSTER__INSTANCE_ID", "instance-d".to_string()),
            ("INGEST__INGEST__CHUNK_RECORDS", "100".to_string()),
        ])
    });
    wait_for_all_scans(&client, 20).await;
    let written_by_fourth: i64 = client
        .query_one(
            "SELECT count(*) FROM ownership_writes WHERE instance_id = 'instance-d'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("the fourth instance wrote for {written_by_fourth} of 20 tenants");
    assert!(written_by_fourth > 0, "the fourth instance took no share");
    assert_each_tenant_has(&client, &tenants, 10_000).await;
    assert_no_record_twice_and_one_writer_per_epoch(&client).await;
    drop(fourth);
    drop(engines);
}
