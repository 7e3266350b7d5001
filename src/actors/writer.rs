//! The writer actor: owns one dedicated PostgreSQL connection and applies chunks on it, one at
//! a time.
//!
//! Input: [`WriteChunk`] from tenant actors. Output: the chunk's [`ChunkOutcome`] once its
//! transaction committed, or the [`StoreError`] that stopped it.
//!
//! Failure model: a writer never retries by itself; it reports the error to the tenant actor,
//! which owns the retry policy. When its connection is broken, the writer stops, and its
//! `actix::Supervisor` restarts it at once with the same mailbox; the restarted writer connects
//! lazily on its next chunk, so a database outage costs no busy reconnect loop. Restarts are
//! counted in [`WriterPool::restarts`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio_postgres::{Client, Config};

use super::messages::WriteChunk;
use crate::store::chunk_writes::{self, ChunkOutcome};
use crate::store::{connect, StoreError};

/// Chunks waiting in one writer's mailbox. Tenant actors keep at most
/// `tenants.max_in_flight_chunks` chunks each in flight, so the real depth is bounded by the
/// number of active tenants times that cap; this capacity only bounds bursts beyond it.
pub const WRITER_MAILBOX_CAPACITY: usize = 1024;

pub struct Writer {
    index: usize,
    database: Config,
    /// `None` until the first chunk, and after a restart.
    client_opt: Option<Client>,
    counters: Arc<WriterCounters>,
}

/// Shared with the pool, which reads them to pick a writer and to report health.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Chunks sent to this writer and not yet answered.
    pub queued: AtomicUsize,
    /// Times this writer was restarted by its supervisor.
    pub restarts: AtomicU64,
}

impl Writer {
    fn new(index: usize, database: Config, counters: Arc<WriterCounters>) -> Writer {
        Writer {
            index,
            database,
            client_opt: None,
            counters,
        }
    }
}

impl Actor for Writer {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Context<Self>) {
        context.set_mailbox_capacity(WRITER_MAILBOX_CAPACITY);
    }
}

impl Supervised for Writer {
    fn restarting(&mut self, _context: &mut Context<Self>) {
        self.client_opt = None;
        self.counters.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(writer = self.index, "writer restarted");
    }
}

impl Handler<WriteChunk> for Writer {
    type Result = AtomicResponse<Self, Result<ChunkOutcome, StoreError>>;

    /// Atomic: the mailbox waits while a chunk is written, so the connection serves one
    /// transaction at a time.
    fn handle(&mut self, message: WriteChunk, _context: &mut Context<Self>) -> Self::Result {
        let client_opt = self.client_opt.take();
        let database = self.database.clone();
        let work = async move {
            let mut client = match client_opt {
                Some(client) if !client.is_closed() => client,
                _ => match connect(&database).await {
                    Ok(client) => client,
                    Err(error) => return (Err(StoreError::Database(error)), None),
                },
            };
            let outcome =
                chunk_writes::apply_chunk(&mut client, message.tenant_id, &message.source).await;
            (outcome, Some(client))
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            |(outcome, client_opt), writer, context| {
                writer.counters.queued.fetch_sub(1, Ordering::Relaxed);
                match client_opt {
                    Some(client) if !client.is_closed() => writer.client_opt = Some(client),
                    _ => {
                        // Broken or never opened: let the supervisor restart this writer.
                        context.stop();
                    }
                }
                outcome
            },
        )))
    }
}

/// The fixed pool of writers. Cloned into every tenant actor.
#[derive(Clone)]
pub struct WriterPool {
    writers: Arc<Vec<(Addr<Writer>, Arc<WriterCounters>)>>,
}

impl WriterPool {
    /// Starts `count` supervised writers on the current actor system.
    pub fn start(count: usize, database: &Config) -> WriterPool {
        let writers = (0..count.max(1))
            .map(|index| {
                let counters = Arc::new(WriterCounters::default());
                let database = database.clone();
                let actor_counters = counters.clone();
                let address =
                    Supervisor::start(move |_| Writer::new(index, database, actor_counters));
                (address, counters)
            })
            .collect();
        WriterPool {
            writers: Arc::new(writers),
        }
    }

    /// Sends a chunk to the writer with the shortest queue; resolves with its outcome.
    pub async fn write(&self, message: WriteChunk) -> Result<ChunkOutcome, StoreError> {
        let (address, counters) = self
            .writers
            .iter()
            .min_by_key(|(_, counters)| counters.queued.load(Ordering::Relaxed))
            .expect("the pool always has at least one writer");
        counters.queued.fetch_add(1, Ordering::Relaxed);
        match address.send(message).await {
            Ok(outcome) => outcome,
            Err(mailbox_error) => {
                // The writer was stopping: nothing was written. Retryable by the caller.
                counters.queued.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(%mailbox_error, "writer mailbox unavailable");
                Err(StoreError::WriterUnavailable)
            }
        }
    }

    pub fn size(&self) -> usize {
        self.writers.len()
    }

    /// Chunks queued or being written, over all writers.
    pub fn queued(&self) -> usize {
        self.writers
            .iter()
            .map(|(_, counters)| counters.queued.load(Ordering::Relaxed))
            .sum()
    }

    /// Writer restarts since the engine started.
    pub fn restarts(&self) -> u64 {
        self.writers
            .iter()
            .map(|(_, counters)| counters.restarts.load(Ordering::Relaxed))
            .sum()
    }
}
