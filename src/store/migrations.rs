//! Schema migrations from `migrations/`, embedded at compile time and applied with refinery.

use anyhow::Context;
use tokio_postgres::Config;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key that serialises migration runs of engine instances sharing one database
/// (refinery itself does not lock). The bytes spell "ingestmg".
const MIGRATION_LOCK_KEY: i64 = 0x696e_6765_7374_6d67;

/// Applies every migration not yet applied; returns the names of those it applied.
pub async fn run(config: &Config) -> anyhow::Result<Vec<String>> {
    let mut client = super::connect(config)
        .await
        .context("connecting to apply migrations")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .context("taking the migration lock")?;
    let outcome = embedded::migrations::runner()
        .set_abort_divergent(true)
        // A migration numbered below one already applied would otherwise be skipped silently.
        .set_abort_missing(true)
        .run_async(&mut client)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .context("releasing the migration lock")?;
    let report = outcome.context("applying migrations")?;
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(|migration| migration.to_string())
        .collect();
    for name in &applied {
        tracing::info!(migration = %name, "migration applied");
    }
    Ok(applied)
}
