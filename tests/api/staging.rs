//! Staging on a pooled connection: the staging transaction's statements are prepared once per
//! connection and reused, stay usable after a transaction that rolled back, and a statement
//! that a schema change made stale is prepared afresh without failing the submission.

use std::time::Duration;

use ingest_engine::domain::audit::AuditEvent;
use ingest_engine::domain::auth::{Principal, Scope};
use ingest_engine::domain::{Priority, TenantId};
use ingest_engine::store::connections::{self, Pool};
use ingest_engine::store::staging::{self, EncodedChunk, NewScan, StagedScan, TenantDefaults};
use uuid::Uuid;

use crate::helpers::test_server;

/// The statements one staging transaction runs (tenant, lock, idempotency key, backlog, scan,
/// audit entry, chunks, notification).
const STAGING_STATEMENTS: i64 = 8;

const DEFAULTS: TenantDefaults = TenantDefaults {
    records_per_second: 1_000,
    burst: 1_000,
    max_backlog_records: 1_000_000,
};

/// A pool of one connection on a fresh database, so every staging uses the same session. No
/// engine runs on it: the staged chunks are only looked at, never written.
async fn one_connection() -> (tokio_postgres::Config, Pool) {
    let database = test_server().await.fresh_database().await;
    // The audit log's partitions for this month and the next, which a running engine creates.
    let admin = connections::connect(&database).await.expect("a connection");
    admin
        .batch_execute(
            "SELECT ingest_audit_month_partition( \
                 (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => ahead))::date, 'UTC') \
             FROM generate_series(0, 1) AS ahead",
        )
        .await
        .expect("the audit log's partitions are created");
    let pool = connections::build_pool(&database, 1, Duration::from_secs(5)).await;
    (database, pool)
}

fn new_scan(tenant: Uuid, records: i32) -> NewScan {
    let principal = Principal {
        scope: Scope::Admin,
        key_id_opt: None,
    };
    let scan_id = Uuid::now_v7();
    let tuples = vec![7_u8; 600 * records as usize];
    NewScan {
        tenant_id: TenantId(tenant),
        scan_id,
        priority: Priority::Standard,
        records_total: records,
        records_failed: 0,
        errors: serde_json::json!([]),
        idempotency_key_opt: None,
        accepted_event: AuditEvent::scan_accepted(
            &principal,
            TenantId(tenant),
            scan_id,
            records,
            0,
            Priority::Standard.as_str(),
        ),
        chunks: vec![EncodedChunk::staged(records, &tuples, &mut Vec::new())],
    }
}

/// The statements the pool's one connection holds prepared (a simple query prepares none).
async fn prepared_statements(pool: &Pool) -> i64 {
    let connection = pool.get().await.expect("the pool's connection");
    let messages = connection
        .simple_query("SELECT count(*) FROM pg_prepared_statements")
        .await
        .expect("the session's prepared statements are listed");
    messages
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .expect("one count")
        .parse()
        .expect("a number")
}

async fn staged_chunks(database: &tokio_postgres::Config, tenant: Uuid) -> i64 {
    let client = connections::connect(database).await.expect("a connection");
    client
        .query_one(
            "SELECT count(*) FROM staged_chunks WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("staged chunks are counted")
        .get(0)
}

fn assert_new(staged: StagedScan) {
    assert!(
        matches!(staged, StagedScan::New { .. }),
        "the scan is staged: {staged:?}"
    );
}

#[tokio::test]
async fn a_connection_prepares_the_staging_statements_once_and_reuses_them() {
    let (database, pool) = one_connection().await;
    let tenant = Uuid::new_v4();
    for _ in 0..3 {
        let staged = staging::stage_scan(&pool, &new_scan(tenant, 1_000), DEFAULTS)
            .await
            .expect("staging succeeds");
        assert_new(staged);
    }
    // Prepared per transaction and closed after it, the session would hold none; prepared
    // again each time and kept, it would hold three times as many.
    assert_eq!(prepared_statements(&pool).await, STAGING_STATEMENTS);
    assert_eq!(staged_chunks(&database, tenant).await, 3);
}

#[tokio::test]
async fn statements_prepared_in_a_transaction_that_rolled_back_are_reused() {
    let (database, pool) = one_connection().await;
    let tenant = Uuid::new_v4();
    let small_backlog = TenantDefaults {
        max_backlog_records: 10,
        ..DEFAULTS
    };
    // Over the backlog: the transaction that registered the tenant and prepared the
    // statements rolls back.
    let refused = staging::stage_scan(&pool, &new_scan(tenant, 1_000), small_backlog)
        .await
        .expect("the refusal is an answer, not a failure");
    assert!(
        matches!(refused, StagedScan::OverBacklog { .. }),
        "refused: {refused:?}"
    );
    assert_eq!(prepared_statements(&pool).await, 4, "the first group only");
    let staged = staging::stage_scan(&pool, &new_scan(tenant, 1_000), DEFAULTS)
        .await
        .expect("staging succeeds");
    assert_new(staged);
    assert_eq!(prepared_statements(&pool).await, STAGING_STATEMENTS);
    assert_eq!(staged_chunks(&database, tenant).await, 1);
}

#[tokio::test]
async fn a_statement_made_stale_by_a_schema_change_is_prepared_afresh_and_the_scan_staged() {
    let (database, pool) = one_connection().await;
    let tenant = Uuid::new_v4();
    assert_new(
        staging::stage_scan(&pool, &new_scan(tenant, 1_000), DEFAULTS)
            .await
            .expect("staging succeeds"),
    );
    // What a newer instance's migration could do: a column the cached statements return
    // changes type, so PostgreSQL refuses their cached plans.
    let admin = connections::connect(&database).await.expect("a connection");
    admin
        .batch_execute("ALTER TABLE scans ALTER COLUMN errors TYPE json USING errors::json")
        .await
        .expect("the column changes type");
    assert_new(
        staging::stage_scan(&pool, &new_scan(tenant, 1_000), DEFAULTS)
            .await
            .expect("the stale statements are prepared again and the scan staged"),
    );
    assert_eq!(prepared_statements(&pool).await, STAGING_STATEMENTS);
    assert_eq!(staged_chunks(&database, tenant).await, 2);
}
