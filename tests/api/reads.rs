//! The read side: row-level security in PostgreSQL.

use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp};

const BASIC: &str = "Category 2: Basic Personal Data";

/// Inserts `count` activities of `tenant_id` directly, as the tables' owner (what writers are).
async fn insert_activities(app: &TestApp, tenant_id: Uuid, count: i32) {
    app.db()
        .await
        .execute(
            "INSERT INTO processing_activities \
                 (id, tenant_id, record_index, activity_name, pdpl_category, data_fields, created_at) \
             SELECT gen_random_uuid(), $1, index, 'Hồ sơ ' || index, $2, ARRAY['họ và tên'], now() \
             FROM generate_series(0, $3 - 1) AS index",
            &[&tenant_id, &BASIC, &count],
        )
        .await
        .expect("activities are inserted");
}

async fn insert_scan(app: &TestApp, tenant_id: Uuid) {
    app.db()
        .await
        .batch_execute(&format!(
            "INSERT INTO tenants (tenant_id, records_per_second, burst, max_backlog_records) \
                 VALUES ('{tenant_id}', 1, 1, 1) ON CONFLICT DO NOTHING; \
             INSERT INTO scans (tenant_id, scan_id, status, priority, records_total) \
                 VALUES ('{tenant_id}', gen_random_uuid(), 'pending', 2, 1)"
        ))
        .await
        .expect("a scan is inserted");
}

/// The tenants whose rows `sql` returns when run as the reader role, in a transaction that sets
/// `app.tenant_id` to `tenant_setting_opt` (or sets nothing).
async fn tenants_seen_by_reader(
    app: &TestApp,
    tenant_setting_opt: Option<&str>,
    sql: &str,
) -> Vec<Uuid> {
    let mut client = app.db().await;
    client
        .batch_execute("SET ROLE ingest_reader")
        .await
        .expect("the engine's user may act as the reader role");
    let transaction = client.transaction().await.unwrap();
    if let Some(setting) = tenant_setting_opt {
        transaction
            .execute("SELECT set_config('app.tenant_id', $1, true)", &[&setting])
            .await
            .unwrap();
    }
    let rows = transaction.query(sql, &[]).await.unwrap();
    transaction.commit().await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test]
async fn postgresql_limits_the_reader_role_to_the_tenant_of_the_transaction() {
    let app = spawn_app().await;
    let (tenant_a, tenant_b) = (Uuid::new_v4(), Uuid::new_v4());
    insert_activities(&app, tenant_a, 3).await;
    insert_activities(&app, tenant_b, 5).await;
    insert_scan(&app, tenant_a).await;
    insert_scan(&app, tenant_b).await;

    // No WHERE clause at all: the policy alone decides.
    for table in ["processing_activities", "scans"] {
        let sql = format!("SELECT tenant_id FROM {table}");
        let seen = tenants_seen_by_reader(&app, Some(&tenant_a.to_string()), &sql).await;
        let expected = if table == "scans" { 1 } else { 3 };
        assert_eq!(seen.len(), expected, "{table}");
        assert!(seen.iter().all(|tenant| *tenant == tenant_a), "{table}");

        assert!(tenants_seen_by_reader(&app, None, &sql).await.is_empty());
        for malformed in ["", "not-a-uuid", "' OR true --"] {
            assert!(
                tenants_seen_by_reader(&app, Some(malformed), &sql)
                    .await
                    .is_empty(),
                "{table} with {malformed:?}"
            );
        }
    }
    // Asking for the other tenant explicitly finds nothing either.
    let seen = tenants_seen_by_reader(
        &app,
        Some(&tenant_a.to_string()),
        &format!("SELECT tenant_id FROM processing_activities WHERE tenant_id = '{tenant_b}'"),
    )
    .await;
    assert!(seen.is_empty());
    // The setting is transaction-local: the next transaction on the connection sees nothing.
    let mut client = app.db().await;
    client
        .batch_execute("SET ROLE ingest_reader")
        .await
        .unwrap();
    let transaction = client.transaction().await.unwrap();
    transaction
        .execute(
            "SELECT set_config('app.tenant_id', $1, true)",
            &[&tenant_a.to_string()],
        )
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    let after: i64 = client
        .query_one("SELECT count(*) FROM processing_activities", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, 0);
    // The reader reads; it cannot write, nor read other tables.
    for statement in [
        "DELETE FROM processing_activities",
        "INSERT INTO scans (tenant_id, scan_id, status, priority, records_total) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'pending', 2, 1)",
        "SELECT count(*) FROM staged_chunks",
        "SELECT count(*) FROM api_keys",
    ] {
        let error = client.batch_execute(statement).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}"
        );
    }
    // The owner (the writers' role) is not subject to the policies.
    assert_eq!(
        app.count("SELECT count(*) FROM processing_activities", &[])
            .await,
        8
    );
    app.stop().await;
}
