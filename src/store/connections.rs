//! Connections: the bb8 request pool that stages submissions, the bb8 read pool that serves
//! dashboard reads as the `ingest_reader` role, and the dedicated connections of writers.

use std::collections::HashMap;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::{Client, Config, NoTls, Statement, Transaction};

use super::StoreError;

/// The request-path pool: staging submissions and registering tenants.
pub type Pool = bb8::Pool<Manager>;

/// bb8-postgres's manager, with each connection's [`StatementCache`] kept beside its client.
#[derive(Debug, Clone)]
pub struct Manager(PostgresConnectionManager<NoTls>);

/// A pooled connection: the client (which it dereferences to) and the statements prepared on
/// it that are kept for its next users.
pub struct PooledClient {
    client: Client,
    statements: StatementCache,
}

impl PooledClient {
    /// The client and the statement cache, borrowed apart: a transaction holds the client
    /// mutably while statements are looked up.
    pub fn split(&mut self) -> (&mut Client, &mut StatementCache) {
        (&mut self.client, &mut self.statements)
    }
}

impl Deref for PooledClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = PooledClient;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PooledClient, tokio_postgres::Error> {
        Ok(PooledClient {
            client: self.0.connect().await?,
            statements: StatementCache::default(),
        })
    }

    async fn is_valid(&self, connection: &mut PooledClient) -> Result<(), tokio_postgres::Error> {
        self.0.is_valid(&mut connection.client).await
    }

    fn has_broken(&self, connection: &mut PooledClient) -> bool {
        self.0.has_broken(&mut connection.client)
    }
}

/// Statements prepared on one connection, by their text, kept for as long as the connection.
///
/// Only the hot paths use it (staging a submission: `staging::stage_scan`), so it holds a
/// fixed handful of statements. A cached statement costs PostgreSQL neither a parse nor, after
/// its first executions, a plan, and costs the request no prepare round trip. PostgreSQL
/// replans a prepared statement itself when a table it reads changes; the one change it cannot
/// absorb (a statement whose result columns change under it, after a migration by an instance
/// of a newer version) fails the statement, so a caller clears the cache on any failure and
/// prepares afresh next time. Protocol-level prepared statements outlive the transaction that
/// prepared them, committed or rolled back.
#[derive(Default)]
pub struct StatementCache {
    by_text: HashMap<String, Statement>,
}

impl StatementCache {
    /// The statements for `texts`, in order, preparing together (one round trip) those this
    /// connection has not prepared yet.
    pub async fn prepare<const N: usize>(
        &mut self,
        transaction: &Transaction<'_>,
        texts: [&str; N],
    ) -> Result<[Statement; N], tokio_postgres::Error> {
        let missing: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|text| !self.by_text.contains_key(*text))
            .collect();
        if !missing.is_empty() {
            // tokio-postgres sends each prepare at its first poll, so joined they share a
            // round trip.
            let prepared = futures_util::future::try_join_all(
                missing.iter().map(|text| transaction.prepare(text)),
            )
            .await?;
            for (text, statement) in missing.into_iter().zip(prepared) {
                self.by_text.insert(text.to_string(), statement);
            }
        }
        Ok(texts.map(|text| self.by_text[text].clone()))
    }

    /// Forgets every statement (each is closed on the server as it is dropped).
    pub fn clear(&mut self) {
        self.by_text.clear();
    }

    /// No statement is kept (none prepared yet, or just cleared).
    pub fn is_empty(&self) -> bool {
        self.by_text.is_empty()
    }
}

/// The read pool: every connection has switched to the `ingest_reader` role, which row-level
/// security limits to the tenant its transaction names (`store::reads`). A type of its own so a
/// read cannot be sent to the request pool, nor a write to this one, by mistake.
#[derive(Clone)]
pub struct ReadPool {
    pool: Pool,
}

/// How the read pool is sized and checked; `database.read_*` in `config/default.toml`.
#[derive(Debug, Clone, Copy)]
pub struct ReadPoolOptions {
    pub size: u32,
    pub checkout_timeout: Duration,
    pub test_on_check_out: bool,
    /// Zero: no limit.
    pub statement_timeout: Duration,
}

/// The role the read pool's connections switch to (created by migration V3).
pub const READER_ROLE: &str = "ingest_reader";

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

/// A pool connection whose socket is still open. Idle connections closed by the server (a
/// PostgreSQL restart) are skipped, so the first request after a restart does not fail; bb8
/// discards them when they return. No round trip: `is_closed` reads local state.
pub async fn checkout(pool: &Pool) -> Result<bb8::PooledConnection<'_, Manager>, StoreError> {
    let attempts = pool.state().connections + 1;
    for _ in 0..attempts {
        let connection = get_or_explain(pool).await?;
        if !connection.is_closed() {
            return Ok(connection);
        }
    }
    get_or_explain(pool).await
}

/// A time-out from a pool that was not full means no connection could be opened: the database
/// is unreachable, not the pool saturated.
async fn get_or_explain(pool: &Pool) -> Result<bb8::PooledConnection<'_, Manager>, StoreError> {
    match pool.get().await {
        Ok(connection) => Ok(connection),
        Err(bb8::RunError::TimedOut) if pool.state().connections < pool.config().max_size => {
            Err(StoreError::Unreachable)
        }
        Err(error) => Err(error.into()),
    }
}

/// Builds the request-path pool.
///
/// `test_on_check_out` is off: it costs a round trip on every `get()`, and a broken connection
/// is already discarded by bb8 when a query on it fails (`has_broken`), so the next request gets
/// a fresh one. Connections are recycled after 30 minutes so a PostgreSQL restart heals fully.
pub async fn build_pool(config: &Config, size: u32, checkout_timeout: Duration) -> Pool {
    let manager = Manager(PostgresConnectionManager::new(config.clone(), NoTls));
    bb8::Pool::builder()
        .max_size(size)
        .min_idle(Some(1.min(size)))
        .test_on_check_out(false)
        .connection_timeout(checkout_timeout)
        .max_lifetime(Some(Duration::from_secs(30 * 60)))
        .idle_timeout(Some(Duration::from_secs(10 * 60)))
        .build_unchecked(manager)
}

/// Builds the read pool; the reader role must exist (migrations run first).
///
/// Each new connection logs in as the engine's user and, once, in the connection customizer,
/// runs `SET ROLE ingest_reader`, the statement time-out and `jit = off`: session settings, so
/// they hold for the connection's life and cost nothing per read. JIT is off because at ten
/// million rows the summary's estimated cost crossed `jit_above_cost` and compiling its plan
/// cost more than it saved: a summary for a transaction with no tenant, which reads nothing,
/// took 430 ms with JIT and 15 ms without (`docs/READ_PATH.md`). `ALTER ROLE ingest_reader SET
/// jit = off` would not do: role settings apply at login, not at `SET ROLE`.
///
/// `test_on_check_out` is configurable and off by default, for the reason given at
/// [`build_pool`]. At least one connection is kept idle so the first dashboard read after a quiet
/// period does not pay for a connection and its `SET ROLE`. Like the request pool, connections
/// are recycled after 30 minutes.
pub async fn build_read_pool(config: &Config, options: ReadPoolOptions) -> ReadPool {
    let manager = Manager(PostgresConnectionManager::new(config.clone(), NoTls));
    let pool = bb8::Pool::builder()
        .max_size(options.size)
        .min_idle(Some(1.min(options.size)))
        .test_on_check_out(options.test_on_check_out)
        .connection_timeout(options.checkout_timeout)
        .max_lifetime(Some(Duration::from_secs(30 * 60)))
        .idle_timeout(Some(Duration::from_secs(10 * 60)))
        .connection_customizer(Box::new(ReaderSession {
            statement_timeout_ms: options.statement_timeout.as_millis(),
        }))
        .build_unchecked(manager);
    ReadPool { pool }
}

impl ReadPool {
    /// A connection acting as the reader role.
    pub async fn get(&self) -> Result<bb8::PooledConnection<'_, Manager>, StoreError> {
        checkout(&self.pool).await
    }

    /// Connections open and idle, and check-out statistics.
    pub fn state(&self) -> bb8::State {
        self.pool.state()
    }
}

/// Switches each new read-pool connection to the reader role.
#[derive(Debug)]
struct ReaderSession {
    statement_timeout_ms: u128,
}

impl bb8::CustomizeConnection<PooledClient, tokio_postgres::Error> for ReaderSession {
    fn on_acquire<'a>(
        &'a self,
        connection: &'a mut PooledClient,
    ) -> Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>> {
        // Both values are constants of the engine, not input: formatting them is safe.
        let statements = format!(
            "SET ROLE {READER_ROLE}; SET statement_timeout = {}; SET jit = off",
            self.statement_timeout_ms
        );
        Box::pin(async move { connection.batch_execute(&statements).await })
    }
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
