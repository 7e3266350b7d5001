//! Everything that talks to PostgreSQL.
//!
//! **Invariant:** only `store/` runs SQL. Fixed roles: [`connections`] opens pools and
//! dedicated connections, [`migrations`] owns the schema, [`copy_encoder`] encodes records for
//! binary `COPY`, [`staging`] makes submissions durable, [`chunk_writes`] applies staged chunks
//! exactly once, [`reads`] answers the dashboard's reads on the read pool, [`queries`] reads
//! scans, [`embedded`] runs the private cluster.
//!
//! **Invariant:** every read of tenant data runs on the [`ReadPool`], as the `ingest_reader`
//! role, inside a transaction that names its tenant ([`reads`]); row-level security then hides
//! every other tenant's rows even from a query that forgot to filter.

/// Awaits statements pipelined on one connection, like `tokio::try_join!`, but reports the
/// failure's cause: once a statement fails, PostgreSQL answers every statement behind it in the
/// transaction "current transaction is aborted" (SQLSTATE 25P02), and which answer a
/// short-circuiting join sees first depends on the order it polls. This one waits for every
/// answer (they come at once after a failure) and returns the first error that is not 25P02.
/// Each future is named: `try_join_pipelined!(a = first, b = second)`.
macro_rules! try_join_pipelined {
    ($($name:ident = $future:expr),+ $(,)?) => {{
        let ($($name,)+) = tokio::join!($($future),+);
        match ($($name,)+) {
            ($(Ok($name),)+) => Ok::<_, $crate::store::StoreError>(($($name,)+)),
            ($($name,)+) => Err($crate::store::pipeline_cause([
                $($name.err().map($crate::store::StoreError::from)),+
            ])),
        }
    }};
}

pub mod audit_log;
pub mod chunk_writes;
pub mod connections;
pub mod copy_encoder;
pub mod dead_letters;
pub mod embedded;
pub mod governance;
pub mod instances;
pub mod migrations;
pub mod ownership;
pub mod queries;
pub mod reads;
pub mod retention;
pub mod staging;
pub mod webhooks;

pub use connections::{connect, Pool, ReadPool};

/// A database failure, split into what may succeed if retried and what never will.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("no database connection became available in time")]
    PoolTimeout,
    #[error("no database connection could be opened")]
    Unreachable,
    #[error("the writer stopped before answering; nothing was committed")]
    WriterUnavailable,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("this instance no longer owns the tenant; nothing was written")]
    Fenced,
}

impl StoreError {
    /// PostgreSQL's own message when there is one (what a dead letter records).
    pub fn database_message(&self) -> String {
        match self {
            StoreError::Database(error) => error
                .as_db_error()
                .map(|db_error| db_error.message().to_string())
                .unwrap_or_else(|| error.to_string()),
            other => other.to_string(),
        }
    }

    /// The connection itself is gone or being shut down: it must not be used again.
    pub fn is_connection_failure(&self) -> bool {
        match self {
            StoreError::Database(error) => match error.code() {
                None => true,
                Some(state) => state.code().starts_with("08") || state.code().starts_with("57P"),
            },
            _ => false,
        }
    }

    /// How a request path should answer this failure (see [`FailureClass`]).
    pub fn class(&self) -> FailureClass {
        // The tenant moved to another instance: the same request, sent again, goes to it.
        if self.is_retryable() || matches!(self, StoreError::Fenced) {
            return FailureClass::Retryable;
        }
        match self {
            StoreError::Database(error) => match error.code().map(|state| state.code()) {
                Some(code) if code.starts_with("22") => FailureClass::Data,
                Some(code) if code.starts_with("23") => FailureClass::Integrity,
                _ => FailureClass::Other,
            },
            _ => FailureClass::Other,
        }
    }

    /// The SQLSTATE, when PostgreSQL gave one.
    pub fn sqlstate_opt(&self) -> Option<&str> {
        match self {
            StoreError::Database(error) => error.code().map(|state| state.code()),
            _ => None,
        }
    }

    /// A prepared statement that no longer fits: PostgreSQL refuses to run a cached plan whose
    /// result columns a schema change altered (0A000, "cached plan must not change result
    /// type"), or the statement is gone from the session (26000). Preparing it again fixes
    /// either.
    pub fn is_stale_statement(&self) -> bool {
        matches!(self.sqlstate_opt(), Some("0A000" | "26000"))
    }

    /// Retryable: lost connections, deadlocks, serialization failures, too many connections,
    /// a server shutting down or starting up, pool time-outs. Everything else is permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::PoolTimeout | StoreError::Unreachable | StoreError::WriterUnavailable => {
                true
            }
            StoreError::Corrupt(_) => false,
            // Another instance owns the tenant now: retrying here would be fenced again.
            StoreError::Fenced => false,
            StoreError::Database(error) => match error.code() {
                None => true, // no SQLSTATE: the connection itself failed (I/O, closed)
                Some(state) => {
                    let code = state.code();
                    code.starts_with("08") // connection exception
                        || code.starts_with("40") // transaction rollback: deadlock, serialization
                        || code.starts_with("53") // insufficient resources: too many connections
                        || code.starts_with("57P") // operator intervention: shutdown, crash, cannot connect now
                        || code == "55P03" // lock not available
                }
            },
        }
    }
}

/// The error [`try_join_pipelined!`] reports: the first that is not "current transaction is
/// aborted", or the first of all when every one is.
pub(crate) fn pipeline_cause(errors: impl IntoIterator<Item = Option<StoreError>>) -> StoreError {
    let mut errors = errors.into_iter().flatten();
    let first = errors
        .next()
        .expect("pipeline_cause is called with at least one error");
    if first.sqlstate_opt() != Some(IN_FAILED_TRANSACTION) {
        return first;
    }
    errors
        .find(|error| error.sqlstate_opt() != Some(IN_FAILED_TRANSACTION))
        .unwrap_or(first)
}

/// SQLSTATE of a statement sent into a transaction an earlier statement already failed.
const IN_FAILED_TRANSACTION: &str = "25P02";

/// What a failure means to whoever asked: try again, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The same request may succeed later: the database was unreachable, busy or restarting.
    Retryable,
    /// A data exception (SQLSTATE class 22): the request's data cannot be stored as sent.
    Data,
    /// An integrity violation (class 23): the request conflicts with what is stored.
    Integrity,
    /// Any other permanent failure (a fault of the engine or its schema): retrying the same
    /// request will not help.
    Other,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Retryable => "retryable",
            FailureClass::Data => "data",
            FailureClass::Integrity => "integrity",
            FailureClass::Other => "other",
        }
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for StoreError {
    fn from(error: bb8::RunError<tokio_postgres::Error>) -> StoreError {
        match error {
            bb8::RunError::User(error) => StoreError::Database(error),
            bb8::RunError::TimedOut => StoreError::PoolTimeout,
        }
    }
}
