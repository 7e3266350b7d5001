//! The audit log: one entry per change, in the change's transaction; monthly partitions ready
//! ahead, created once however many instances do upkeep; reading it by scope.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    accepted_scan_id, activities, assert_error, spawn_app, test_settings, TestApp,
};
use ingest_engine::store::connections;

/// Entries of `tenant` with `action`.
async fn entries(app: &TestApp, tenant: Uuid, action: &str) -> i64 {
    app.count(
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = $2",
        &[&tenant, &action],
    )
    .await
}

#[tokio::test]
async fn each_change_writes_exactly_one_entry() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let response = app
        .post_json(
            "/admin/tenants",
            &json!({ "tenant_id": tenant, "name": "Công ty Huế" }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let scan_id = accepted_scan_id(app.post_scan(tenant, activities(2_500)).await).await;
    let scan = app
        .wait_for_scan(tenant, &scan_id, Duration::from_secs(60))
        .await;
    assert_eq!(scan["status"], "completed");
    let response = app
        .post_json(
            &format!("/batch/processing-activities?tenant_id={tenant}"),
            &json!({ "activities": activities(1_500) }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let limits = app
        .request(Method::PUT, &format!("/admin/tenants/{tenant}/limits"))
        .json(&json!({ "records_per_second": 5_000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(limits.status(), 200);
    for switch in ["pause", "resume"] {
        let response = app
            .request(Method::POST, &format!("/admin/tenants/{tenant}/{switch}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let minted: Value = app
        .post_json(
            "/admin/keys",
            &json!({ "scope": "tenant", "tenant_id": tenant }),
        )
        .await
        .json()
        .await
        .unwrap();
    let key_id = minted["key_id"].as_str().unwrap();
    let revoked = app
        .request(Method::DELETE, &format!("/admin/keys/{key_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);

    for action in [
        "tenant_created",
        "scan_accepted",
        "scan_completed",
        "batch_committed",
        "limits_changed",
        "tenant_paused",
        "tenant_resumed",
        "key_minted",
        "key_revoked",
    ] {
        assert_eq!(entries(&app, tenant, action).await, 1, "{action}");
    }
    // One entry per scan and batch, never per chunk (the scan had three chunks, the batch two).
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1",
            &[&tenant]
        )
        .await,
        9
    );
    let finished = app
        .db()
        .await
        .query_one(
            "SELECT actor, subject, details, summary, summary_vi FROM audit_log \
             WHERE tenant_id = $1 AND action = 'scan_completed'",
            &[&tenant],
        )
        .await
        .unwrap();
    assert_eq!(finished.get::<_, &str>("actor"), "engine");
    assert_eq!(finished.get::<_, &str>("subject"), scan_id);
    assert_eq!(
        finished.get::<_, Value>("details")["records_processed"],
        2_500
    );
    assert!(finished.get::<_, &str>("summary_vi").contains("hoàn thành"));
    // The start-up upkeep is an entry of the cluster.
    assert!(
        entries(&app, Uuid::nil(), "audit_maintenance").await >= 1,
        "no maintenance entry"
    );
    app.stop().await;
}

/// A scan whose staging fails after its audit entry was inserted leaves neither the scan nor
/// the entry.
#[tokio::test]
async fn a_change_that_rolls_back_leaves_no_entry() {
    let app = spawn_app().await;
    let tenant = Uuid::new_v4();
    // Refuse this tenant's staged chunks, which the staging transaction inserts after the
    // scan's audit entry.
    app.db()
        .await
        .batch_execute(&format!(
            "CREATE FUNCTION refuse_chunks() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'refused for the test'; END $$; \
             CREATE TRIGGER refuse_chunks BEFORE INSERT ON staged_chunks FOR EACH ROW \
             WHEN (NEW.tenant_id = '{tenant}') EXECUTE FUNCTION refuse_chunks();"
        ))
        .await
        .unwrap();
    let response = app.post_scan(tenant, activities(10)).await;
    assert!(response.status().is_server_error(), "{}", response.status());
    assert!(!response.headers().contains_key("retry-after"));
    assert_eq!(
        app.count(
            "SELECT count(*) FROM scans WHERE tenant_id = $1",
            &[&tenant]
        )
        .await,
        0
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1",
            &[&tenant]
        )
        .await,
        0
    );
    app.stop().await;
}

/// The partitions of this month and `audit.premake_months` ahead exist once the engine runs;
/// two upkeeps at once create each missing partition once, without an error.
#[tokio::test]
async fn partitions_are_ready_ahead_and_created_once_by_concurrent_upkeep() {
    let app = spawn_app().await;
    let partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_log'::regclass";
    assert_eq!(app.count(partitions, &[]).await, 4);
    // Drop the three months ahead (empty), then run two upkeeps at once.
    app.db()
        .await
        .batch_execute(
            "DO $$ DECLARE month_start date; BEGIN \
               FOR ahead IN 1..3 LOOP \
                 month_start := (date_trunc('month', now() AT TIME ZONE 'Asia/Ho_Chi_Minh') + make_interval(months => ahead))::date; \
                 EXECUTE format('DROP TABLE audit_log_y%sm%s', to_char(month_start, 'YYYY'), to_char(month_start, 'MM')); \
               END LOOP; END $$;",
        )
        .await
        .unwrap();
    assert_eq!(app.count(partitions, &[]).await, 1);
    let settings = test_settings();
    let first = connections::build_pool(&app.database, 2, Duration::from_secs(5)).await;
    let second = connections::build_pool(&app.database, 2, Duration::from_secs(5)).await;
    let (one, other) = tokio::join!(
        ingest_engine::audit::upkeep::run(&first, &settings.audit),
        ingest_engine::audit::upkeep::run(&second, &settings.audit),
    );
    let (one, other) = (one.unwrap(), other.unwrap());
    assert_eq!(
        one.created.len() + other.created.len(),
        3,
        "{one:?} {other:?}"
    );
    assert_eq!(one.months_ahead, 3);
    assert_eq!(other.months_ahead, 3);
    assert_eq!(app.count(partitions, &[]).await, 4);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ingest_audit_partitions_ahead"),
        "{metrics}"
    );
    app.stop().await;
}

/// Months are Vietnamese months: 18:00 UTC on 30 November is 01:00 on 1 December in Hanoi.
#[tokio::test]
async fn an_event_lands_in_the_month_of_the_log_time_zone() {
    let app = spawn_app().await;
    let client = app.db().await;
    client
        .batch_execute(
            "SELECT ingest_audit_month_partition('2026-11-01', 'Asia/Ho_Chi_Minh'); \
             SELECT ingest_audit_month_partition('2026-12-01', 'Asia/Ho_Chi_Minh');",
        )
        .await
        .unwrap();
    let row = client
        .query_one(
            "INSERT INTO audit_log (tenant_id, occurred_at, event_id, actor, action, subject, summary, summary_vi) \
             VALUES ($1, '2026-11-30T18:00:00Z', $2, 'test', 'tenant_created', 'x', 'x', 'x') \
             RETURNING tableoid::regclass::text AS partition",
            &[&Uuid::new_v4(), &Uuid::now_v7()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>("partition"), "audit_log_y2026m12");
    app.stop().await;
}

/// An admin reads every tenant's entries, newest first, page by page; a tenant key only its
/// own (naming another tenant is 403); a service key none.
#[tokio::test]
async fn the_log_is_read_by_scope_newest_first_by_keyset() {
    let app = spawn_app().await;
    let (own, other) = (Uuid::new_v4(), Uuid::new_v4());
    for tenant in [own, other] {
        for index in 0..3 {
            let body = json!({ "tenant_id": tenant, "name": format!("Công ty {index}") });
            if index == 0 {
                assert_eq!(app.post_json("/admin/tenants", &body).await.status(), 201);
            } else {
                let response = app
                    .request(Method::PUT, &format!("/admin/tenants/{tenant}/limits"))
                    .json(&json!({ "burst": 1_000 + index }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }
    }
    let mint =
        |scope: &str, tenant_opt: Option<Uuid>| json!({ "scope": scope, "tenant_id": tenant_opt });
    let tenant_key: Value = app
        .post_json("/admin/keys", &mint("tenant", Some(own)))
        .await
        .json()
        .await
        .unwrap();
    let service_key: Value = app
        .post_json("/admin/keys", &mint("service", None))
        .await
        .json()
        .await
        .unwrap();
    let read = |path: String, token: Option<String>| {
        let request = app.request_as(Method::GET, &path, token.as_deref());
        async move { request.send().await.unwrap() }
    };
    let tenant_token = tenant_key["token"].as_str().map(str::to_string);

    // A tenant key: its own entries only (created, two limit changes, its key minted).
    let answer: Value = read("/admin/audit".into(), tenant_token.clone())
        .await
        .json()
        .await
        .unwrap();
    let own_text = own.to_string();
    assert!(answer["count"].as_u64().unwrap() >= 3, "{answer}");
    assert!(answer["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|entry| entry["tenant_id"] == own_text.as_str()));
    let denied = read(format!("/admin/audit?tenant_id={other}"), tenant_token).await;
    assert_eq!(denied.status(), 403);
    let service = read(
        "/admin/audit".into(),
        service_key["token"].as_str().map(str::to_string),
    )
    .await;
    assert_eq!(service.status(), 403);

    // An admin pages through one tenant's entries: newest first, no repeat, no gap.
    let mut seen: Vec<String> = Vec::new();
    let mut path = format!("/admin/audit?tenant_id={other}&limit=2");
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        for entry in page["entries"].as_array().unwrap() {
            assert!(
                entry["occurred_at"].as_str().unwrap().ends_with("+07:00"),
                "{entry}"
            );
            seen.push(entry["event_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/admin/audit?tenant_id={other}&limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    let mut newest_first = seen.clone();
    newest_first.sort();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let filtered: Value = app
        .get(&format!(
            "/admin/audit?tenant_id={other}&action=limits_changed"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["count"], 2);
    let bad = app.get("/admin/audit?action=dropped_tables").await;
    assert_eq!(bad.status(), 400);
    let archives = app.get("/admin/audit/archives").await;
    assert_eq!(archives.status(), 200);
    app.stop().await;
}

/// Found by schemathesis: a cursor whose time PostgreSQL cannot hold (before 4713 BC) reached
/// the database and came back as a 422 `refused_by_database`; it is a malformed cursor.
#[tokio::test]
async fn a_cursor_out_of_the_databases_time_range_is_a_malformed_cursor() {
    let app = spawn_app().await;
    for cursor in [
        "-1142380670341364866_4a4cd004584d900ab8ad8fd8f01e4bdf",
        "9223372036854775807_4a4cd004584d900ab8ad8fd8f01e4bdf",
    ] {
        let response = app.get(&format!("/admin/audit?cursor={cursor}")).await;
        assert_error(response, 400, "invalid_cursor").await;
    }
    app.stop().await;
}
