//! The writer actor: owns one dedicated PostgreSQL connection and applies chunks on it, one at
//! a time.
//!
//! Input: [`WriteChunk`] from tenant actors. Output: the chunk's [`ChunkOutcome`] once its
//! transaction committed, or the [`StoreError`] that stopped it.
//!
//! Failure model: a writer never retries a chunk by itself; it reports the error to the tenant
//! actor, which owns the retry policy. When its connection is broken, the writer drops it and
//! reconnects for its next chunk: at once the first time, then, while connecting keeps
//! failing, only after an exponential backoff (`writers.retry_base_ms` doubling up to
//! `writers.retry_cap_ms`, jittered), during which a chunk handed to it waits. So an outage of
//! T seconds costs each writer about log2(T / base) connection attempts, however many chunks
//! are retried meanwhile. Each reconnect attempt is counted in [`WriterPool::restarts`] and
//! `ingest_writer_restarts_total`, and logged at most once every
//! [`RECONNECT_LOG_INTERVAL`] per writer. A panic while writing becomes a retryable error and
//! drops the connection; the writer's `actix::Supervisor` restarts it should it ever stop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::sync::oneshot;
use tokio_postgres::Config;

use super::backoff::backoff;
use super::hold_budget::HoldBudget;
use super::messages::WriteChunk;
use crate::domain::{Priority, Region};
use crate::store::chunk_writes::{ChunkOutcome, ChunkSource, WriteConnection};
use crate::store::StoreError;

/// A writer's mailbox holds at most one chunk: chunks wait at the pool's gate, which hands a
/// writer one chunk at a time. The capacity only leaves room for supervision messages.
pub const WRITER_MAILBOX_CAPACITY: usize = 4;

/// A writer that keeps failing to reconnect logs it at most this often.
pub const RECONNECT_LOG_INTERVAL: Duration = Duration::from_secs(5);

pub struct Writer {
    index: usize,
    database: Config,
    /// `None` until the first chunk, and after the connection broke.
    connection_opt: Option<WriteConnection>,
    counters: Arc<WriterCounters>,
    reconnect: ReconnectPolicy,
    /// Whether this writer ever had a connection: every later connect is a reconnect.
    has_connected: bool,
    /// Connection attempts that failed in a row.
    failed_connects: u32,
    /// No connection attempt before this instant (set after a failed attempt).
    next_connect_opt: Option<Instant>,
    last_reconnect_log_opt: Option<Instant>,
    /// Signalled after a chunk's transaction finished a scan (and so recorded its webhook
    /// deliveries): the delivery worker sends them at once instead of at its next poll.
    scan_finished: Arc<tokio::sync::Notify>,
}

/// How a writer backs off while its database is unreachable.
#[derive(Debug, Clone, Copy)]
pub struct ReconnectPolicy {
    pub base: Duration,
    pub cap: Duration,
}

/// Whether handling a chunk had to open a connection, and how that went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectAttempt {
    None,
    Opened,
    Failed,
}

/// Shared with the pool, which reads them to pick a writer and to report health.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Chunks sent to this writer and not yet answered.
    pub queued: AtomicUsize,
    /// Times this writer tried to replace a lost connection (or was restarted by its
    /// supervisor).
    pub restarts: AtomicU64,
}

impl Writer {
    fn new(
        index: usize,
        database: Config,
        counters: Arc<WriterCounters>,
        reconnect: ReconnectPolicy,
        scan_finished: Arc<tokio::sync::Notify>,
    ) -> Writer {
        Writer {
            scan_finished,
            index,
            database,
            connection_opt: None,
            counters,
            reconnect,
            has_connected: false,
            failed_connects: 0,
            next_connect_opt: None,
            last_reconnect_log_opt: None,
        }
    }

    /// Updates the reconnect state after a chunk that had to connect first.
    fn after_connect_attempt(&mut self, attempt: ConnectAttempt, error_opt: Option<&StoreError>) {
        if attempt == ConnectAttempt::None {
            return;
        }
        let is_reconnect = self.has_connected || self.failed_connects > 0;
        if is_reconnect {
            self.counters.restarts.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::WRITER_RESTARTS).increment(1);
        }
        let now = Instant::now();
        match attempt {
            ConnectAttempt::Opened => {
                if self.failed_connects > 0 {
                    tracing::info!(
                        writer = self.index,
                        failed_attempts = self.failed_connects,
                        "writer reconnected"
                    );
                }
                self.has_connected = true;
                self.failed_connects = 0;
                self.next_connect_opt = None;
            }
            ConnectAttempt::Failed => {
                let delay = backoff(
                    self.reconnect.base,
                    self.reconnect.cap,
                    self.failed_connects,
                );
                self.failed_connects += 1;
                self.next_connect_opt = Some(now + delay);
                let quiet = self
                    .last_reconnect_log_opt
                    .is_some_and(|logged| now.duration_since(logged) < RECONNECT_LOG_INTERVAL);
                if !quiet {
                    self.last_reconnect_log_opt = Some(now);
                    let error = error_opt.map(ToString::to_string).unwrap_or_default();
                    tracing::warn!(
                        writer = self.index,
                        failed_attempts = self.failed_connects,
                        next_attempt_in = ?delay,
                        %error,
                        "writer cannot reach the database; reconnecting with backoff"
                    );
                }
            }
            ConnectAttempt::None => {}
        }
    }
}

impl Actor for Writer {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Context<Self>) {
        context.set_mailbox_capacity(WRITER_MAILBOX_CAPACITY);
    }
}

/// One observation per chunk: duration, rows per second, records written and dead-lettered,
/// and the scan it finished.
fn record_chunk_metrics(
    elapsed: Duration,
    region: Region,
    outcome: &Result<ChunkOutcome, StoreError>,
) {
    let Ok(outcome) = outcome else {
        return;
    };
    if outcome.already_applied {
        return;
    }
    metrics::histogram!(crate::metrics::CHUNK_WRITE_DURATION).record(elapsed.as_secs_f64());
    if elapsed > Duration::ZERO && outcome.written > 0 {
        metrics::gauge!(crate::metrics::COPY_ROWS_PER_SECOND)
            .set(outcome.written as f64 / elapsed.as_secs_f64());
    }
    let region = region.as_str();
    metrics::counter!(crate::metrics::RECORDS_WRITTEN, "region" => region)
        .increment(outcome.written);
    if outcome.dead_lettered > 0 {
        metrics::counter!(crate::metrics::DEAD_LETTERS, "region" => region)
            .increment(outcome.dead_lettered);
        metrics::counter!(crate::metrics::RECORDS_FAILED, "reason" => "dead_letter")
            .increment(outcome.dead_lettered);
    }
    if let Some(status) = outcome.finished_scan_opt {
        metrics::counter!(crate::metrics::SCANS_FINISHED, "status" => status.as_str(), "region" => region)
            .increment(1);
    }
}

impl Supervised for Writer {
    fn restarting(&mut self, _context: &mut Context<Self>) {
        self.connection_opt = None;
        self.counters.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::WRITER_RESTARTS).increment(1);
        tracing::warn!(writer = self.index, "writer restarted");
    }
}

impl Handler<WriteChunk> for Writer {
    type Result = AtomicResponse<Self, Result<ChunkOutcome, StoreError>>;

    /// Atomic: the mailbox waits while a chunk is written, so the connection serves one
    /// transaction at a time.
    fn handle(&mut self, message: WriteChunk, _context: &mut Context<Self>) -> Self::Result {
        let connection_opt = self.connection_opt.take();
        let database = self.database.clone();
        let scan_finished = self.scan_finished.clone();
        // While reconnecting keeps failing, the chunk waits out the backoff here.
        let connect_delay = self.next_connect_opt.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        });
        let work = async move {
            let (mut connection, attempt) = match connection_opt {
                Some(connection) if !connection.is_closed() => (connection, ConnectAttempt::None),
                _ => {
                    tokio::time::sleep(connect_delay).await;
                    match WriteConnection::open(&database).await {
                        Ok(connection) => (connection, ConnectAttempt::Opened),
                        Err(error) => return (Err(error), None, ConnectAttempt::Failed),
                    }
                }
            };
            let started = Instant::now();
            let outcome = connection
                .apply_chunk(message.tenant_id, &message.source, Some(&message.fence))
                .await;
            record_chunk_metrics(started.elapsed(), message.region, &outcome);
            if matches!(&outcome, Ok(chunk) if chunk.finished_scan_opt.is_some()) {
                scan_finished.notify_one();
            }
            (outcome, Some(connection), attempt)
        };
        // A panic while writing must not take the actor system down: it becomes a retryable
        // failure, the connection (in an unknown state) is dropped, and the writer restarts.
        let work = AssertUnwindSafe(work).catch_unwind().map(|result| {
            result.unwrap_or_else(|_| {
                tracing::error!("writer panicked while writing a chunk; dropping its connection");
                (
                    Err(StoreError::WriterUnavailable),
                    None,
                    ConnectAttempt::None,
                )
            })
        });
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            |(outcome, connection_opt, attempt), writer, _context| {
                writer.counters.queued.fetch_sub(1, Ordering::Relaxed);
                writer.after_connect_attempt(attempt, outcome.as_ref().err());
                let connection_failed = outcome
                    .as_ref()
                    .err()
                    .is_some_and(StoreError::is_connection_failure);
                match connection_opt {
                    Some(connection) if !connection.is_closed() && !connection_failed => {
                        writer.connection_opt = Some(connection)
                    }
                    // Broken, shutting down or never opened: the next chunk connects afresh
                    // (after the backoff, if connecting is what failed).
                    _ => writer.connection_opt = None,
                }
                outcome
            },
        )))
    }
}

/// The fixed pool of writers, and the gate that orders chunks waiting for one. Cloned into
/// every tenant actor.
///
/// A chunk waits at the gate, not in a writer's mailbox: when a writer frees up it takes the
/// waiting chunk with the earliest *due time*, `queued at + priority rank × aging step`. So a
/// `critical` chunk overtakes `standard` ones queued up to two aging steps before it, and a
/// `low` chunk that has waited three steps is served before a fresh `critical` one: priorities
/// order work across tenants, and `low` is never starved. Within one priority the order is
/// arrival order; since each tenant actor keeps at most `max_in_flight_chunks` chunks at the
/// gate, tenants take turns.
#[derive(Clone)]
pub struct WriterPool {
    writers: Arc<Vec<(Addr<Writer>, Arc<WriterCounters>)>>,
    gate: Arc<Mutex<Gate>>,
    aging_step: Duration,
    /// Submissions waiting to be parsed: staged chunks are held back for them, within the
    /// hold budget.
    parsing: Arc<crate::submission::ParsingSlots>,
    hold_budget: Arc<Mutex<HoldBudget>>,
}

/// How often a held staged chunk looks again whether it may be written.
const HOLD_LOOK_STEP: Duration = Duration::from_millis(10);

/// Guarded by a std mutex held only for a few instructions, never across an await.
struct Gate {
    idle_writers: Vec<usize>,
    waiting: BinaryHeap<Reverse<Waiter>>,
    sequence: u64,
}

struct Waiter {
    due: Instant,
    sequence: u64,
    wake: oneshot::Sender<usize>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Waiter) -> bool {
        (self.due, self.sequence) == (other.due, other.sequence)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Waiter) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Waiter) -> std::cmp::Ordering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

/// When a chunk arriving `now` is served, relative to others: one aging step later per rank.
fn due_time(now: Instant, priority: Priority, aging_step: Duration) -> Instant {
    now + aging_step * priority.rank() as u32
}

/// A writer reserved for one chunk; returned to the gate when dropped, even if the chunk's
/// future is cancelled.
struct Reservation<'p> {
    pool: &'p WriterPool,
    index: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.pool.release(self.index);
    }
}

/// A waiting chunk's ticket. If the waiting future is dropped after a writer was handed to it,
/// the writer goes back to the gate instead of being lost.
struct Ticket<'p> {
    pool: &'p WriterPool,
    receiver: oneshot::Receiver<usize>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Ok(index) = self.receiver.try_recv() {
            self.pool.release(index);
        }
    }
}

impl WriterPool {
    /// Starts `count` supervised writers on the current actor system.
    pub fn start(
        count: usize,
        database: &Config,
        aging_step: Duration,
        reconnect: ReconnectPolicy,
        scan_finished: Arc<tokio::sync::Notify>,
        parsing: Arc<crate::submission::ParsingSlots>,
    ) -> WriterPool {
        let writers: Vec<_> = (0..count.max(1))
            .map(|index| {
                let counters = Arc::new(WriterCounters::default());
                let database = database.clone();
                let actor_counters = counters.clone();
                let scan_finished = scan_finished.clone();
                let address = Supervisor::start(move |_| {
                    Writer::new(
                        index,
                        database,
                        actor_counters,
                        reconnect,
                        scan_finished.clone(),
                    )
                });
                (address, counters)
            })
            .collect();
        let gate = Gate {
            idle_writers: (0..writers.len()).rev().collect(),
            waiting: BinaryHeap::new(),
            sequence: 0,
        };
        WriterPool {
            writers: Arc::new(writers),
            gate: Arc::new(Mutex::new(gate)),
            aging_step,
            parsing,
            hold_budget: Arc::new(Mutex::new(HoldBudget::new(Instant::now()))),
        }
    }

    /// Waits for a writer (in priority order), has it write the chunk, and resolves with the
    /// outcome once the chunk's transaction ended. A staged chunk first waits while
    /// submissions wait to be parsed and the [`HoldBudget`] allows: its records are durable
    /// already, theirs are not acknowledged yet. (A batch's chunk does not: its client is
    /// waiting for it.)
    pub async fn write(
        &self,
        message: WriteChunk,
        priority: Priority,
    ) -> Result<ChunkOutcome, StoreError> {
        if matches!(message.source, ChunkSource::Staged { .. }) {
            while self.hold_staged_chunk() {
                tokio::time::sleep(HOLD_LOOK_STEP).await;
            }
        }
        let reservation = self.reserve(priority).await;
        let (address, counters) = &self.writers[reservation.index];
        counters.queued.fetch_add(1, Ordering::Relaxed);
        let outcome = match address.send(message).await {
            Ok(outcome) => outcome,
            Err(mailbox_error) => {
                // The writer was stopping: nothing was written. Retryable by the caller.
                counters.queued.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(%mailbox_error, "writer mailbox unavailable");
                Err(StoreError::WriterUnavailable)
            }
        };
        drop(reservation);
        outcome
    }

    fn hold_staged_chunk(&self) -> bool {
        let submissions_waiting = self.parsing.submissions_waiting() > 0;
        self.hold_budget
            .lock()
            .expect("never poisoned: nothing panics while holding the budget")
            .hold(Instant::now(), submissions_waiting)
    }

    async fn reserve(&self, priority: Priority) -> Reservation<'_> {
        let receiver = {
            let mut gate = self.lock_gate();
            if gate.waiting.is_empty() {
                if let Some(index) = gate.idle_writers.pop() {
                    return Reservation { pool: self, index };
                }
            }
            let (wake, receiver) = oneshot::channel();
            gate.sequence += 1;
            let sequence = gate.sequence;
            let due = due_time(Instant::now(), priority, self.aging_step);
            gate.waiting.push(Reverse(Waiter {
                due,
                sequence,
                wake,
            }));
            receiver
        };
        let mut ticket = Ticket {
            pool: self,
            receiver,
        };
        let index = (&mut ticket.receiver)
            .await
            .expect("the gate outlives every ticket: both belong to this pool");
        // The ticket's receiver is now empty: dropping it returns nothing to the gate.
        drop(ticket);
        Reservation { pool: self, index }
    }

    fn release(&self, index: usize) {
        let mut gate = self.lock_gate();
        while let Some(Reverse(waiter)) = gate.waiting.pop() {
            if waiter.wake.send(index).is_ok() {
                return;
            }
        }
        gate.idle_writers.push(index);
    }

    fn lock_gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate
            .lock()
            .expect("never poisoned: nothing panics while holding the gate")
    }

    pub fn size(&self) -> usize {
        self.writers.len()
    }

    /// Chunks being written or waiting for a writer.
    pub fn queued(&self) -> usize {
        let gate = self.lock_gate();
        gate.waiting.len() + (self.writers.len() - gate.idle_writers.len())
    }

    /// Writer reconnect attempts (and supervisor restarts) since the engine started.
    pub fn restarts(&self) -> u64 {
        self.writers
            .iter()
            .map(|(_, counters)| counters.restarts.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(due: Instant, sequence: u64) -> Reverse<Waiter> {
        let (wake, _receiver) = oneshot::channel();
        Reverse(Waiter {
            due,
            sequence,
            wake,
        })
    }

    fn order(waiting: Vec<Reverse<Waiter>>) -> Vec<u64> {
        let mut heap: BinaryHeap<Reverse<Waiter>> = waiting.into_iter().collect();
        std::iter::from_fn(|| heap.pop().map(|Reverse(waiter)| waiter.sequence)).collect()
    }

    #[test]
    fn urgent_chunks_go_first_and_waiting_ones_age() {
        let start = Instant::now();
        let step = Duration::from_secs(5);
        // Arriving together: by priority, then by arrival.
        let together = vec![
            waiter(due_time(start, Priority::Low, step), 1),
            waiter(due_time(start, Priority::Standard, step), 2),
            waiter(due_time(start, Priority::Critical, step), 3),
            waiter(due_time(start, Priority::Standard, step), 4),
            waiter(due_time(start, Priority::High, step), 5),
        ];
        assert_eq!(order(together), vec![3, 5, 2, 4, 1]);
        // A low chunk that has waited three steps goes before a fresh critical one.
        let aged = vec![
            waiter(
                due_time(start + Duration::from_secs(16), Priority::Critical, step),
                2,
            ),
            waiter(due_time(start, Priority::Low, step), 1),
        ];
        assert_eq!(order(aged), vec![1, 2]);
    }
}
