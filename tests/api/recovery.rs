use std::time::Duration;

use ingest_engine::domain::TenantId;
use ingest_engine::store::chunk_writes::{
    ChunkOutcome, ChunkSource, ChunkToApply, WriteConnection,
};
use ingest_engine::store::StoreError;
use ingest_engine::submission;
use uuid::Uuid;

use crate::helpers::{
    accepted_scan_id, activities, activities_in, assert_activity_counts_are_exact, spawn_app,
    spawn_app_on, TestApp,
};

/// Work staged by one instance that stops before writing it is completed by the next one, with
/// exact counts and no duplicates.
#[tokio::test]
async fn staged_work_left_by_a_stopped_instance_is_completed_by_the_next() {
    let first = spawn_app().await;
    let tenant = first.paused_tenant().await;
    let mut scan_ids = Vec::new();
    for _ in 0..3 {
        let response = first.post_scan(tenant, activities(2_345)).await;
        scan_ids.push(accepted_scan_id(response).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(first.activities_of(tenant).await, 0);
    assert_eq!(
        first.count("SELECT count(*) FROM staged_chunks", &[]).await,
        9
    );
    let database = first.database.clone();
    first.stop().await;

    let admin = ingest_engine::store::connect(&database).await.unwrap();
    admin
        .execute(
            "UPDATE tenants SET paused = false WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap();
    let second = spawn_app_on(database, |_| {}).await;
    for scan_id in &scan_ids {
        let scan = second
            .wait_for_scan(tenant, scan_id, Duration::from_secs(60))
            .await;
        assert_eq!(scan["status"], "completed");
        assert_eq!(scan["records_processed"], 2_345);
    }
    assert_eq!(second.activities_of(tenant).await, 3 * 2_345);
    assert_eq!(
        second
            .count("SELECT count(*) FROM staged_chunks", &[])
            .await,
        0
    );
    let duplicates = second
        .count(
            "SELECT count(*) FROM (SELECT scan_id, record_index FROM processing_activities \
             GROUP BY 1, 2 HAVING count(*) > 1) AS duplicated",
            &[],
        )
        .await;
    assert_eq!(duplicates, 0);
    second.assert_activity_counts_are_exact().await;
    second.stop().await;
}

/// Two instances on one database racing for the same staged chunks write each exactly once.
#[tokio::test]
async fn two_instances_on_one_database_apply_each_chunk_once() {
    let first = spawn_app().await;
    let second = spawn_app_on(first.database.clone(), |_| {}).await;
    let tenant = Uuid::new_v4();
    let mut scan_ids = Vec::new();
    for app in [&first, &second, &first, &second] {
        let response = app.post_scan(tenant, activities(3_000)).await;
        scan_ids.push(accepted_scan_id(response).await);
    }
    for scan_id in &scan_ids {
        let scan = first
            .wait_for_scan(tenant, scan_id, Duration::from_secs(60))
            .await;
        assert_eq!(scan["records_processed"], 3_000);
    }
    // Sweeps of both instances have seen every chunk by now; nothing may be written twice.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(first.activities_of(tenant).await, 12_000);
    first.assert_activity_counts_are_exact().await;
    first.stop().await;
    second.stop().await;
}

/// A staged chunk's transaction commits without waiting for its WAL flush (its records stay
/// staged, durably, until that commit is flushed), except the one that finishes its scan, so a
/// scan reported complete survives a PostgreSQL crash. A batch's transaction leaves the
/// server's setting alone.
#[tokio::test]
async fn only_the_chunk_that_finishes_a_scan_waits_for_its_commit_to_be_flushed() {
    let app = spawn_app().await;
    let tenant = app.paused_tenant().await;
    let response = app.post_scan(tenant, activities(2_345)).await;
    let scan_id: Uuid = accepted_scan_id(response).await.parse().unwrap();
    let database = app.database.clone();
    app.stop().await;

    let mut connection = WriteConnection::open(&database).await.unwrap();
    let admin = ingest_engine::store::connect(&database).await.unwrap();
    let chunk_ids: Vec<i64> = admin
        .query(
            "SELECT chunk_id FROM staged_chunks WHERE scan_id = $1 ORDER BY chunk_id",
            &[&scan_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(chunk_ids.len(), 3);
    let mut flushed = Vec::new();
    for chunk_id in chunk_ids {
        let outcome = connection
            .apply_chunk(TenantId(tenant), &ChunkSource::Staged { chunk_id }, None)
            .await
            .unwrap();
        flushed.push(outcome.commit_flushed);
    }
    assert_eq!(flushed, [false, false, true]);
    let status: String = admin
        .query_one("SELECT status FROM scans WHERE scan_id = $1", &[&scan_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "completed");

    let batch = submission::prepare_batch(
        serde_json::to_vec(&serde_json::json!({ "activities": activities(10) }))
            .unwrap()
            .as_slice(),
        TenantId(tenant),
        10_000,
        1_000,
    )
    .unwrap();
    let chunk = batch.chunks.into_iter().next().unwrap();
    let outcome = connection
        .apply_chunk(
            TenantId(tenant),
            &ChunkSource::Inline {
                payload: chunk.payload.into(),
                record_count: chunk.record_count,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(outcome.written, 10);
    assert_eq!(activities_in(&admin, tenant).await, 2_345 + 10);
}

/// A tenant's staged chunks, oldest first, as a writer takes them.
async fn staged_chunks(admin: &tokio_postgres::Client, tenant: Uuid) -> Vec<ChunkSource> {
    admin
        .query(
            "SELECT chunk_id FROM staged_chunks WHERE tenant_id = $1 ORDER BY chunk_id",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| ChunkSource::Staged {
            chunk_id: row.get(0),
        })
        .collect()
}

/// Staged chunks of two tenants in one shared transaction: the transaction waits for its
/// commit's flush if any of its chunks finishes a scan (the last `ADVANCE_SCAN` alone would
/// decide otherwise), every chunk reports its own outcome, and a chunk already applied is
/// reported as such, not written again.
#[tokio::test]
async fn a_shared_transaction_waits_for_its_flush_when_any_of_its_chunks_finishes_a_scan() {
    let app = spawn_app().await;
    let (first, second) = (app.paused_tenant().await, app.paused_tenant().await);
    // Two chunks for the first tenant's scan, three for the second's.
    let first_scan = accepted_scan_id(app.post_scan(first, activities(1_500)).await).await;
    let second_scan = accepted_scan_id(app.post_scan(second, activities(2_345)).await).await;
    let database = app.database.clone();
    app.stop().await;

    let mut connection = WriteConnection::open(&database).await.unwrap();
    let admin = ingest_engine::store::connect(&database).await.unwrap();
    let staged = [
        staged_chunks(&admin, first).await,
        staged_chunks(&admin, second).await,
    ];
    let together = |first_chunk: usize, second_chunk: usize| {
        vec![
            ChunkToApply {
                tenant_id: TenantId(first),
                source: &staged[0][first_chunk],
                fence_opt: None,
            },
            ChunkToApply {
                tenant_id: TenantId(second),
                source: &staged[1][second_chunk],
                fence_opt: None,
            },
        ]
    };
    let outcomes = |results: Vec<Result<ChunkOutcome, StoreError>>| -> Vec<ChunkOutcome> {
        results.into_iter().map(Result::unwrap).collect()
    };

    let neither_finishes = outcomes(connection.apply_chunks(&together(0, 0)).await);
    assert_eq!(
        neither_finishes
            .iter()
            .map(|outcome| (outcome.written, outcome.commit_flushed))
            .collect::<Vec<_>>(),
        [(1_000, false), (1_000, false)]
    );
    // The first tenant's scan finishes, the second's does not: the commit is flushed.
    let one_finishes = outcomes(connection.apply_chunks(&together(1, 1)).await);
    assert_eq!(
        one_finishes
            .iter()
            .map(|outcome| (outcome.written, outcome.commit_flushed))
            .collect::<Vec<_>>(),
        [(500, true), (1_000, true)]
    );
    assert!(one_finishes[0].finished_scan_opt.is_some());
    assert!(one_finishes[1].finished_scan_opt.is_none());
    // Applied already: nothing is written twice.
    let again = outcomes(connection.apply_chunks(&together(0, 1)).await);
    assert!(again
        .iter()
        .all(|outcome| outcome.already_applied && outcome.written == 0));

    let status = |scan_id: String| {
        let admin = &admin;
        async move {
            let row = admin
                .query_one(
                    "SELECT status, records_processed FROM scans WHERE scan_id = $1",
                    &[&scan_id.parse::<Uuid>().unwrap()],
                )
                .await
                .unwrap();
            (row.get::<_, String>(0), row.get::<_, i32>(1))
        }
    };
    assert_eq!(status(first_scan).await, ("completed".to_string(), 1_500));
    assert_eq!(status(second_scan).await, ("processing".to_string(), 2_000));
    assert_eq!(activities_in(&admin, first).await, 1_500);
    assert_eq!(activities_in(&admin, second).await, 2_000);
    assert_activity_counts_are_exact(&admin).await;
}

/// Two writers' shared transactions holding chunks of the same two tenants, given in opposite
/// orders, do not deadlock: each locks the scans' rows in tenant order. Here the second
/// writer queues first for the second tenant's scan row (held by another transaction), then the
/// first writer locks the first tenant's row and queues behind it; in the order given, the
/// second writer would then wait for the first tenant's row while the first waits for the
/// second's, until PostgreSQL's deadlock check aborted one and its chunks were applied one at a
/// time. Both must commit as one transaction each.
#[tokio::test]
async fn shared_transactions_with_the_same_tenants_in_opposite_orders_do_not_deadlock() {
    let app = spawn_app().await;
    let (first, second) = (app.paused_tenant().await, app.paused_tenant().await);
    let mut scan_ids = Vec::new();
    for tenant in [first, second] {
        scan_ids.push(accepted_scan_id(app.post_scan(tenant, activities(1_500)).await).await);
    }
    let database = app.database.clone();
    app.stop().await;
    let admin = ingest_engine::store::connect(&database).await.unwrap();
    let staged = [
        staged_chunks(&admin, first).await,
        staged_chunks(&admin, second).await,
    ];
    assert!(staged.iter().all(|chunks| chunks.len() == 2));
    let chunk = |tenant: usize, index: usize| ChunkToApply {
        tenant_id: TenantId([first, second][tenant]),
        source: &staged[tenant][index],
        fence_opt: None,
    };
    let first_batch = [chunk(0, 0), chunk(1, 0)];
    let second_batch = [chunk(1, 1), chunk(0, 1)];
    let mut first_writer = WriteConnection::open(&database).await.unwrap();
    let mut second_writer = WriteConnection::open(&database).await.unwrap();

    let mut holder = ingest_engine::store::connect(&database).await.unwrap();
    let holding = holder.transaction().await.unwrap();
    let second_scan: Uuid = scan_ids[1].parse().unwrap();
    holding
        .execute(
            "SELECT 1 FROM scans WHERE scan_id = $1 FOR UPDATE",
            &[&second_scan],
        )
        .await
        .unwrap();
    let waiting_for_locks = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let wait_for_waiters = |count: i64| async move {
        for _ in 0..500 {
            if waiting_for_locks().await >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {count} transactions ever waited for a lock");
    };
    let (first_results, second_results) = tokio::join!(
        async {
            wait_for_waiters(1).await;
            first_writer.apply_chunks(&first_batch).await
        },
        async {
            let results = second_writer.apply_chunks(&second_batch);
            tokio::pin!(results);
            tokio::select! {
                results = &mut results => results,
                () = async {
                    wait_for_waiters(2).await;
                    holding.commit().await.unwrap();
                    std::future::pending::<()>().await
                } => unreachable!(),
            }
        },
    );
    for (results, chunk_records) in [(first_results, 1_000), (second_results, 500)] {
        let written: Vec<u64> = results
            .into_iter()
            .map(|result| result.unwrap().written)
            .collect();
        assert_eq!(written, [chunk_records, chunk_records]);
    }
    let transactions = admin
        .query_one(
            "SELECT count(DISTINCT xmin::text) FROM processing_activities \
             WHERE tenant_id = ANY ($1)",
            &[&vec![first, second]],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(
        transactions, 2,
        "each writer's chunks were committed in one transaction"
    );
    assert_eq!(activities_in(&admin, first).await, 1_500);
    assert_eq!(activities_in(&admin, second).await, 1_500);
    assert_activity_counts_are_exact(&admin).await;
}

/// When a statement pipelined before a chunk's `COMMIT` fails (the scan update, or the category
/// counts), PostgreSQL answers that `COMMIT` with a rollback: none of the chunk's rows, counts
/// or progress are kept, the chunk stays staged, and it applies exactly once later.
#[tokio::test]
async fn a_failing_statement_before_commit_rolls_the_whole_chunk_back() {
    for table in ["scans", "activity_counts"] {
        let app = spawn_app().await;
        let tenant = app.paused_tenant().await;
        let admin = app.db().await;
        let response = app.post_scan(tenant, activities(500)).await;
        assert_eq!(response.status(), 202);
        let database = app.database.clone();
        app.stop().await;
        let chunk_id: i64 = admin
            .query_one(
                "SELECT chunk_id FROM staged_chunks WHERE tenant_id = $1",
                &[&tenant],
            )
            .await
            .unwrap()
            .get(0);
        admin
            .batch_execute(&format!(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
                 CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION refuse()"
            ))
            .await
            .unwrap();

        let mut connection = WriteConnection::open(&database).await.unwrap();
        let source = ChunkSource::Staged { chunk_id };
        let error = connection
            .apply_chunk(TenantId(tenant), &source, None)
            .await
            .unwrap_err();
        assert!(
            error.database_message().contains("refused by the test"),
            "{table}: {}",
            error.database_message()
        );
        let kept = admin
            .query_one(
                "SELECT (SELECT count(*) FROM processing_activities WHERE tenant_id = $1), \
                        (SELECT count(*) FROM staged_chunks WHERE tenant_id = $1), \
                        (SELECT count(*) FROM activity_counts WHERE tenant_id = $1), \
                        (SELECT records_processed::bigint FROM scans WHERE tenant_id = $1)",
                &[&tenant],
            )
            .await
            .unwrap();
        let kept: [i64; 4] = [kept.get(0), kept.get(1), kept.get(2), kept.get(3)];
        assert_eq!(
            kept,
            [0, 1, 0, 0],
            "{table}: rows, staged, counts, progress"
        );

        admin
            .batch_execute(&format!(
                "DROP TRIGGER refuse ON {table}; DROP FUNCTION refuse()"
            ))
            .await
            .unwrap();
        let outcome = connection
            .apply_chunk(TenantId(tenant), &source, None)
            .await
            .unwrap();
        assert_eq!(outcome.written, 500, "{table}");
        let again = connection
            .apply_chunk(TenantId(tenant), &source, None)
            .await
            .unwrap();
        assert!(again.already_applied, "{table}");
        assert_eq!(activities_in(&admin, tenant).await, 500, "{table}");
        assert_activity_counts_are_exact(&admin).await;
    }
}

/// A permanent error that no record causes (here a trigger refusing the tenant's scan update)
/// leaves the whole chunk staged; each attempt is counted in `ingest_chunks_refused_total`, the
/// sweep offers the chunk again, and once the cause is gone it is written exactly once.
#[tokio::test]
async fn a_chunk_refused_by_its_scan_update_stays_staged_and_is_counted_until_it_can_be_written() {
    let app = spawn_app().await;
    let admin = app.db().await;
    let tenant = Uuid::new_v4();
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse BEFORE UPDATE ON scans FOR EACH ROW \
                 WHEN (NEW.tenant_id = '{tenant}') EXECUTE FUNCTION refuse()"
        ))
        .await
        .unwrap();
    // The recorder is shared by every test in this process: count from here.
    let refused_before = chunks_refused(&app).await;
    let response = app.post_scan(tenant, activities(300)).await;
    let scan_id = accepted_scan_id(response).await;

    // Two refusals: the first attempt and at least one offer by the sweep (every second here).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let refusals = chunks_refused(&app).await - refused_before;
        if refusals >= 2.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{refusals} refusals after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let staged: i64 = admin
        .query_one(
            "SELECT count(*) FROM staged_chunks WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(staged, 1, "the chunk stays staged");
    assert_eq!(activities_in(&admin, tenant).await, 0);

    admin
        .batch_execute("DROP TRIGGER refuse ON scans; DROP FUNCTION refuse()")
        .await
        .unwrap();
    let scan = app
        .wait_for_scan(tenant, &scan_id, Duration::from_secs(60))
        .await;
    assert_eq!(scan["status"], "completed", "{scan}");
    assert_eq!(scan["records_processed"], 300, "{scan}");
    assert_eq!(activities_in(&admin, tenant).await, 300);
    assert_activity_counts_are_exact(&admin).await;
}

/// `ingest_chunks_refused_total` as the engine exports it.
async fn chunks_refused(app: &TestApp) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("ingest_chunks_refused_total "))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}
