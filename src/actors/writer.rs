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
use crate::store::chunk_writes::{
    ChunkOutcome, ChunkSource, ChunkToApply, WriteConnection, SHARED_TRANSACTION_CHUNKS,
};
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

/// One observation per chunk: its transaction's duration, records written and dead-lettered,
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

/// Writer pool → writer: apply these chunks; one outcome per chunk, in order. Several chunks
/// are staged chunks of different tenants, which share one transaction (see
/// [`WriteConnection::apply_chunks`]).
#[derive(Debug, Message)]
#[rtype(result = "Vec<Result<ChunkOutcome, StoreError>>")]
struct WriteChunks(Vec<WriteChunk>);

/// `count` failures that say nothing was written and the chunks may be sent again.
fn unavailable(count: usize) -> Vec<Result<ChunkOutcome, StoreError>> {
    (0..count)
        .map(|_| Err(StoreError::WriterUnavailable))
        .collect()
}

impl Handler<WriteChunks> for Writer {
    type Result = AtomicResponse<Self, Vec<Result<ChunkOutcome, StoreError>>>;

    /// Atomic: the mailbox waits while chunks are written, so the connection serves one
    /// transaction at a time.
    fn handle(&mut self, message: WriteChunks, _context: &mut Context<Self>) -> Self::Result {
        let WriteChunks(chunks) = message;
        let count = chunks.len();
        let connection_opt = self.connection_opt.take();
        let database = self.database.clone();
        let scan_finished = self.scan_finished.clone();
        // While reconnecting keeps failing, the chunks wait out the backoff here.
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
                        Err(error) => {
                            // The first chunk carries the cause; the others are simply sent
                            // again.
                            let mut outcomes = vec![Err(error)];
                            outcomes.extend(unavailable(count - 1));
                            return (outcomes, None, ConnectAttempt::Failed);
                        }
                    }
                }
            };
            let started = Instant::now();
            let to_apply: Vec<ChunkToApply<'_>> = chunks
                .iter()
                .map(|chunk| ChunkToApply {
                    tenant_id: chunk.tenant_id,
                    source: &chunk.source,
                    fence_opt: Some(&chunk.fence),
                })
                .collect();
            let outcomes = connection.apply_chunks(&to_apply).await;
            let elapsed = started.elapsed();
            metrics::histogram!(crate::metrics::CHUNKS_PER_TRANSACTION).record(count as f64);
            let written: u64 = outcomes
                .iter()
                .filter_map(|outcome| outcome.as_ref().ok())
                .map(|outcome| outcome.written)
                .sum();
            if elapsed > Duration::ZERO && written > 0 {
                metrics::gauge!(crate::metrics::COPY_ROWS_PER_SECOND)
                    .set(written as f64 / elapsed.as_secs_f64());
            }
            for (chunk, outcome) in chunks.iter().zip(&outcomes) {
                record_chunk_metrics(elapsed, chunk.region, outcome);
            }
            if outcomes
                .iter()
                .any(|outcome| matches!(outcome, Ok(chunk) if chunk.finished_scan_opt.is_some()))
            {
                scan_finished.notify_one();
            }
            (outcomes, Some(connection), attempt)
        };
        // A panic while writing must not take the actor system down: it becomes a retryable
        // failure, the connection (in an unknown state) is dropped, and the writer restarts.
        let work = AssertUnwindSafe(work).catch_unwind().map(move |result| {
            result.unwrap_or_else(|_| {
                tracing::error!("writer panicked while writing chunks; dropping its connection");
                (unavailable(count), None, ConnectAttempt::None)
            })
        });
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            |(outcomes, connection_opt, attempt), writer, _context| {
                let first_error_opt = outcomes.iter().find_map(|outcome| outcome.as_ref().err());
                writer.after_connect_attempt(attempt, first_error_opt);
                let connection_failed = outcomes.iter().any(|outcome| {
                    outcome
                        .as_ref()
                        .err()
                        .is_some_and(StoreError::is_connection_failure)
                });
                match connection_opt {
                    Some(connection) if !connection.is_closed() && !connection_failed => {
                        writer.connection_opt = Some(connection)
                    }
                    // Broken, shutting down or never opened: the next chunk connects afresh
                    // (after the backoff, if connecting is what failed).
                    _ => writer.connection_opt = None,
                }
                outcomes
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

/// A chunk waiting at the gate, with where its outcome goes.
struct Waiter {
    due: Instant,
    sequence: u64,
    chunk: WriteChunk,
    reply: oneshot::Sender<Result<ChunkOutcome, StoreError>>,
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

impl Gate {
    /// The chunks a free writer takes next: the waiting chunk due first and, if it is a staged
    /// chunk, up to [`SHARED_TRANSACTION_CHUNKS`] − 1 more staged chunks of other tenants, the
    /// next due, to share its transaction. Chunks whose caller stopped waiting are dropped
    /// unwritten (their caller finds them again if it still needs them). Empty when nothing
    /// waits.
    fn next_batch(&mut self) -> Vec<Waiter> {
        let mut batch: Vec<Waiter> = Vec::new();
        let mut passed_over = Vec::new();
        while let Some(Reverse(waiter)) = self.waiting.pop() {
            if waiter.reply.is_closed() {
                continue;
            }
            let Some(leader) = batch.first() else {
                batch.push(waiter);
                continue;
            };
            let staged =
                |waiter: &Waiter| matches!(waiter.chunk.source, ChunkSource::Staged { .. });
            if !staged(leader) {
                passed_over.push(waiter);
                break;
            }
            let joins = staged(&waiter)
                && batch
                    .iter()
                    .all(|member| member.chunk.tenant_id != waiter.chunk.tenant_id);
            if joins {
                batch.push(waiter);
                if batch.len() == SHARED_TRANSACTION_CHUNKS {
                    break;
                }
            } else {
                passed_over.push(waiter);
            }
        }
        self.waiting.extend(passed_over.into_iter().map(Reverse));
        batch
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

    /// Queues the chunk at the gate (in priority order) and resolves with its outcome once a
    /// writer's transaction with it ended. A staged chunk first waits while submissions wait
    /// to be parsed and the [`HoldBudget`] allows: its records are durable already, theirs are
    /// not acknowledged yet. (A batch's chunk does not: its client is waiting for it.) If the
    /// returned future is dropped before a writer took the chunk, the chunk is not written.
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
        let (reply, outcome) = oneshot::channel();
        let idle_opt = {
            let mut gate = self.lock_gate();
            gate.sequence += 1;
            let sequence = gate.sequence;
            let due = due_time(Instant::now(), priority, self.aging_step);
            gate.waiting.push(Reverse(Waiter {
                due,
                sequence,
                chunk: message,
                reply,
            }));
            gate.idle_writers.pop()
        };
        if let Some(index) = idle_opt {
            self.dispatch(index);
        }
        // A writer that stopped before answering dropped the reply: nothing was committed.
        outcome.await.unwrap_or(Err(StoreError::WriterUnavailable))
    }

    fn hold_staged_chunk(&self) -> bool {
        let submissions_waiting = self.parsing.submissions_waiting() > 0;
        self.hold_budget
            .lock()
            .expect("never poisoned: nothing panics while holding the budget")
            .hold(Instant::now(), submissions_waiting)
    }

    /// Gives writer `index` the next chunks waiting, or marks it idle if none wait. The
    /// writer's answer is relayed to each chunk's caller, then the writer takes the next.
    fn dispatch(&self, index: usize) {
        let batch = {
            let mut gate = self.lock_gate();
            let batch = gate.next_batch();
            if batch.is_empty() {
                gate.idle_writers.push(index);
                return;
            }
            batch
        };
        let pool = self.clone();
        actix::spawn(async move {
            let (address, counters) = &pool.writers[index];
            let count = batch.len();
            counters.queued.fetch_add(count, Ordering::Relaxed);
            let (chunks, replies): (Vec<WriteChunk>, Vec<_>) = batch
                .into_iter()
                .map(|waiter| (waiter.chunk, waiter.reply))
                .unzip();
            let outcomes = match address.send(WriteChunks(chunks)).await {
                Ok(outcomes) => outcomes,
                Err(mailbox_error) => {
                    // The writer was stopping: nothing was written. Retryable by the callers.
                    tracing::warn!(%mailbox_error, "writer mailbox unavailable");
                    unavailable(count)
                }
            };
            counters.queued.fetch_sub(count, Ordering::Relaxed);
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
            pool.dispatch(index);
        });
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

    use crate::domain::TenantId;
    use crate::store::chunk_writes::Fence;
    use uuid::Uuid;

    type Outcome = oneshot::Receiver<Result<ChunkOutcome, StoreError>>;

    fn chunk(tenant: u128, source: ChunkSource) -> WriteChunk {
        WriteChunk {
            tenant_id: TenantId(Uuid::from_u128(tenant)),
            region: Region::Unassigned,
            source,
            fence: Fence {
                instance_id: "test".into(),
                epoch: 1,
                trace: false,
            },
        }
    }

    fn staged(chunk_id: i64) -> ChunkSource {
        ChunkSource::Staged { chunk_id }
    }

    fn inline() -> ChunkSource {
        ChunkSource::Inline {
            payload: bytes::Bytes::new(),
            record_count: 0,
        }
    }

    /// A waiter and the receiver of its outcome (dropping it means its caller stopped waiting).
    fn waiting(sequence: u64, chunk: WriteChunk) -> (Reverse<Waiter>, Outcome) {
        let (reply, outcome) = oneshot::channel();
        let due = Instant::now() + Duration::from_secs(sequence);
        let waiter = Waiter {
            due,
            sequence,
            chunk,
            reply,
        };
        (Reverse(waiter), outcome)
    }

    fn waiter(due: Instant, sequence: u64) -> Reverse<Waiter> {
        let (Reverse(waiter), _outcome) = waiting(sequence, chunk(1, staged(1)));
        Reverse(Waiter { due, ..waiter })
    }

    fn gate(waiters: Vec<Reverse<Waiter>>) -> Gate {
        Gate {
            idle_writers: Vec::new(),
            waiting: waiters.into_iter().collect(),
            sequence: 0,
        }
    }

    fn sequences(batch: &[Waiter]) -> Vec<u64> {
        batch.iter().map(|waiter| waiter.sequence).collect()
    }

    #[test]
    fn staged_chunks_of_different_tenants_share_a_transaction_in_due_order() {
        // Tenants 1, 1, 2, 3, 2, 4, 5 waiting in that order: the first chunk leads, a second
        // chunk of a tenant already in the batch waits for the next one, at most four go.
        let tenants = [1, 1, 2, 3, 2, 4, 5];
        let (waiters, _outcomes): (Vec<_>, Vec<_>) = tenants
            .iter()
            .enumerate()
            .map(|(position, tenant)| {
                waiting(position as u64, chunk(*tenant, staged(position as i64)))
            })
            .unzip();
        let mut gate = gate(waiters);
        assert_eq!(sequences(&gate.next_batch()), vec![0, 2, 3, 5]);
        assert_eq!(sequences(&gate.next_batch()), vec![1, 4, 6]);
        assert!(gate.next_batch().is_empty());
    }

    #[test]
    fn a_batch_chunk_goes_alone_and_does_not_join_staged_ones() {
        let (first, _a) = waiting(0, chunk(1, inline()));
        let (second, _b) = waiting(1, chunk(2, staged(1)));
        let (third, _c) = waiting(2, chunk(3, inline()));
        let (fourth, _d) = waiting(3, chunk(4, staged(2)));
        let mut gate = gate(vec![first, second, third, fourth]);
        assert_eq!(sequences(&gate.next_batch()), vec![0]);
        assert_eq!(sequences(&gate.next_batch()), vec![1, 3]);
        assert_eq!(sequences(&gate.next_batch()), vec![2]);
        assert!(gate.next_batch().is_empty());
    }

    #[test]
    fn chunks_whose_caller_stopped_waiting_are_not_written() {
        let (first, first_outcome) = waiting(0, chunk(1, staged(1)));
        let (second, _second_outcome) = waiting(1, chunk(2, staged(2)));
        let (third, third_outcome) = waiting(2, chunk(3, staged(3)));
        drop((first_outcome, third_outcome));
        let mut gate = gate(vec![first, second, third]);
        assert_eq!(sequences(&gate.next_batch()), vec![1]);
        assert!(gate.next_batch().is_empty());
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
