//! Connections: the bb8 pool of the request path and the dedicated connections of writers.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::{Client, Config, NoTls};

/// The request-path pool: staging submissions and serving reads.
pub type Pool = bb8::Pool<PostgresConnectionManager<NoTls>>;

/// Parses a `postgres://` URL and applies the connect time-out.
pub fn parse_url(url: &str, connect_timeout: Duration) -> anyhow::Result<Config> {
    let mut config = Config::from_str(url).context("DATABASE_URL is not a valid PostgreSQL URL")?;
    config.connect_timeout(connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("ingest-engine");
    }
    Ok(config)
}

/// Opens one dedicated connection; its driver task runs on the caller's runtime and ends when
/// the returned client is dropped or the server closes the connection.
pub async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgresql connection closed");
        }
    });
    Ok(client)
}

/// Builds the request-path pool.
///
/// `test_on_check_out` is off: it costs a round trip on every `get()`, and a broken connection
/// is already discarded by bb8 when a query on it fails (`has_broken`), so the next request gets
/// a fresh one. Connections are recycled after 30 minutes so a PostgreSQL restart heals fully.
pub async fn build_pool(config: &Config, size: u32, checkout_timeout: Duration) -> Pool {
    let manager = PostgresConnectionManager::new(config.clone(), NoTls);
    bb8::Pool::builder()
        .max_size(size)
        .min_idle(Some(1.min(size)))
        .test_on_check_out(false)
        .connection_timeout(checkout_timeout)
        .max_lifetime(Some(Duration::from_secs(30 * 60)))
        .idle_timeout(Some(Duration::from_secs(10 * 60)))
        .build_unchecked(manager)
}

/// Creates the configured database if it does not exist (private clusters and tests only: an
/// operator's `DATABASE_URL` names a database that already exists).
pub async fn ensure_database(config: &Config) -> anyhow::Result<()> {
    let database = config
        .get_dbname()
        .context("the database URL names no database")?
        .to_string();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance)
        .await
        .context("connecting to the maintenance database")?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    if !exists {
        let statement = format!("CREATE DATABASE {}", quote_identifier(&database));
        if let Err(error) = client.batch_execute(&statement).await {
            // Another process may have created it between the check and the create.
            if error.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(error).context("creating the engine database");
            }
        }
    }
    Ok(())
}

pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
