//! The schema's shape that distribution by tenant relies on (SPEC section 8, docs/SCALE_OUT.md).

use crate::helpers::spawn_app;

/// Every primary key and unique index of a tenant table (one with a `NOT NULL` `tenant_id`)
/// starts with `tenant_id`, so each table can be distributed by tenant, co-located.
#[tokio::test]
async fn every_key_of_a_tenant_table_starts_with_tenant_id() {
    let app = spawn_app().await;
    let rows = app
        .db()
        .await
        .query(
            "SELECT c.relname::text AS table_name, i.relname::text AS index_name, \
                    (SELECT a.attname::text FROM pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum = ix.indkey[0]) AS first_column \
             FROM pg_index ix \
             JOIN pg_class c ON c.oid = ix.indrelid \
             JOIN pg_class i ON i.oid = ix.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' \
             WHERE (ix.indisprimary OR ix.indisunique) AND c.relkind IN ('r', 'p') \
               AND EXISTS (SELECT FROM pg_attribute t WHERE t.attrelid = c.oid \
                           AND t.attname = 'tenant_id' AND t.attnotnull AND NOT t.attisdropped)",
            &[],
        )
        .await
        .unwrap();
    let tables: std::collections::BTreeSet<String> =
        rows.iter().map(|row| row.get("table_name")).collect();
    for expected in [
        "tenants",
        "scans",
        "staged_chunks",
        "processing_activities",
        "activity_counts",
        "dead_letters",
        "audit_log",
    ] {
        assert!(
            tables.contains(expected),
            "{expected} is not checked: {tables:?}"
        );
    }
    let offending: Vec<String> = rows
        .iter()
        .filter(|row| row.get::<_, Option<String>>("first_column").as_deref() != Some("tenant_id"))
        .map(|row| {
            format!(
                "{}.{} starts with {:?}",
                row.get::<_, String>("table_name"),
                row.get::<_, String>("index_name"),
                row.get::<_, Option<String>>("first_column")
            )
        })
        .collect();
    assert!(offending.is_empty(), "{offending:?}");
    app.stop().await;
}
