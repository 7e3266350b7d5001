//! The tenant actor: one per active tenant; queues that tenant's work, paces it with a token
//! bucket, and forwards chunks to the writer pool.
//!
//! Inputs: [`ChunksStaged`] and [`BatchSubmitted`] (from the supervisor), [`StopTenant`] and
//! [`Drain`]. Outputs: [`WriteChunk`] to writers (through [`WriterPool`]), answers to batch
//! waiters, and [`TenantIdle`] to the supervisor.
//!
//! It holds chunk *references* for staged work (the records stay in PostgreSQL) and the
//! encoded bytes of synchronous batches, which their requests already bound. At most
//! `max_in_flight_chunks` of its chunks are with writers at once, so the writers' queues
//! interleave tenants instead of serving one tenant's backlog first.
//!
//! Failure model: a retryable write error sends the chunk back to the front of its queue after
//! an exponential backoff with jitter; staged chunks are retried until written (they are
//! durable), batch chunks at most `writers.retry_attempts` times before their request is answered
//! with an error. A permanent error has already been reduced to dead letters by the writer;
//! anything left is logged and the chunk stays staged for the next sweep.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::backoff::backoff;
use super::board::TenantBoard;
use super::messages::{
    BatchChunk, BatchChunkError, BatchSubmitted, ChunksStaged, Drain, LimitsChanged, WriteChunk,
};
use super::supervisor::TenantIdle;
use super::token_bucket::TokenBucket;
use super::writer::WriterPool;
use crate::domain::{Priority, Region, TenantId};
use crate::store::chunk_writes::{ChunkOutcome, ChunkSource, Fence};
use crate::store::staging::{self, ChunkRef, TenantDefaults, TenantLimits};
use crate::store::{Pool, StoreError};

/// Supervisor → tenant actor: the supervisor forgot this actor because it was idle. It stops
/// now, or, if work arrived meanwhile, once that work is done.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopTenant;

/// How the tenant actor is configured.
#[derive(Debug, Clone)]
pub struct TenantActorSettings {
    pub max_in_flight_chunks: usize,
    pub idle_timeout: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Tries a batch chunk gets before its request is answered with an error.
    pub batch_attempts: u32,
    /// Longest a synchronous batch may wait for the tenant's throttle before it is refused.
    pub batch_max_wait: Duration,
}

pub struct TenantActor {
    tenant_id: TenantId,
    /// This instance's ownership of the tenant: every chunk transaction checks it.
    fence: Fence,
    settings: TenantActorSettings,
    writers: WriterPool,
    control_pool: Pool,
    defaults: TenantDefaults,
    idle_recipient: Recipient<TenantIdle>,
    board: TenantBoard,
    bucket: TokenBucket,
    paused: bool,
    /// The tenant's region (the `region` label of its write metrics), read with its limits.
    region: Region,
    /// One queue per priority, most urgent first.
    queues: [VecDeque<Work>; 4],
    /// Staged chunks this actor holds (queued, in flight or waiting to retry): sweeps may
    /// announce a chunk twice.
    known_chunks: HashSet<i64>,
    in_flight: usize,
    waiting_retry: usize,
    /// When the earliest scheduled pump runs, if one is scheduled.
    pump_due_opt: Option<Instant>,
    draining: bool,
    stop_when_empty: bool,
    drain_waiters: Vec<oneshot::Sender<()>>,
    last_active: Instant,
}

enum Work {
    Staged { chunk: ChunkRef, attempts: u32 },
    Batch { chunk: BatchChunk, attempts: u32 },
}

impl Work {
    fn record_count(&self) -> i64 {
        match self {
            Work::Staged { chunk, .. } => chunk.record_count as i64,
            Work::Batch { chunk, .. } => chunk_records(&chunk.source),
        }
    }

    fn priority(&self) -> Priority {
        match self {
            Work::Staged { chunk, .. } => chunk.priority,
            Work::Batch { chunk, .. } => chunk.priority,
        }
    }

    fn attempts(&self) -> u32 {
        match self {
            Work::Staged { attempts, .. } | Work::Batch { attempts, .. } => *attempts,
        }
    }

    fn source(&self) -> ChunkSource {
        match self {
            Work::Staged { chunk, .. } => ChunkSource::Staged {
                chunk_id: chunk.chunk_id,
            },
            Work::Batch { chunk, .. } => chunk.source.clone(),
        }
    }
}

/// What every tenant actor of an engine shares: its configuration and the engine's parts it
/// talks to.
#[derive(Clone)]
pub struct TenantActorShared {
    pub defaults: TenantDefaults,
    pub settings: TenantActorSettings,
    pub writers: WriterPool,
    pub control_pool: Pool,
    pub idle_recipient: Recipient<TenantIdle>,
    pub board: TenantBoard,
}

impl TenantActor {
    /// An actor with the default limits; it reads the tenant's stored limits as its first step.
    pub fn new(tenant_id: TenantId, fence: Fence, shared: TenantActorShared) -> TenantActor {
        let TenantActorShared {
            defaults,
            settings,
            writers,
            control_pool,
            idle_recipient,
            board,
        } = shared;
        TenantActor {
            tenant_id,
            fence,
            settings,
            writers,
            control_pool,
            defaults,
            idle_recipient,
            board,
            bucket: TokenBucket::new(defaults.records_per_second, defaults.burst),
            paused: false,
            region: Region::Unassigned,
            queues: Default::default(),
            known_chunks: HashSet::new(),
            in_flight: 0,
            waiting_retry: 0,
            pump_due_opt: None,
            draining: false,
            stop_when_empty: false,
            drain_waiters: Vec::new(),
            last_active: Instant::now(),
        }
    }

    fn apply_limits(&mut self, limits: TenantLimits) {
        self.bucket
            .set_limits(limits.records_per_second, limits.burst, Instant::now());
        self.paused = limits.paused;
        self.region = limits.region;
    }

    /// How long `records` more would wait for this tenant's throttle, behind its queued work.
    fn estimated_wait(&mut self, records: i64) -> Duration {
        if self.paused {
            return Duration::MAX;
        }
        let queued: i64 = self.queues.iter().flatten().map(Work::record_count).sum();
        let now = Instant::now();
        let debt = (queued + records) as f64 - self.bucket.balance(now);
        Duration::from_secs_f64(debt.max(0.0) / self.bucket.records_per_second())
    }

    fn has_work(&self) -> bool {
        self.in_flight > 0
            || self.waiting_retry > 0
            || self.queues.iter().any(|queue| !queue.is_empty())
    }

    fn enqueue(&mut self, work: Work) {
        let queue = &mut self.queues[work.priority().rank() as usize];
        // A retried chunk goes back to the front so order within a priority is kept.
        if work.attempts() > 0 {
            queue.push_front(work);
        } else {
            queue.push_back(work);
        }
    }

    /// Forwards as many chunks as the in-flight cap and the token bucket allow.
    fn pump(&mut self, context: &mut Context<Self>) {
        self.forward(context);
        self.publish();
    }

    fn forward(&mut self, context: &mut Context<Self>) {
        if self.draining || self.paused {
            return;
        }
        while self.in_flight < self.settings.max_in_flight_chunks.max(1) {
            let Some(queue) = self.queues.iter_mut().find(|queue| !queue.is_empty()) else {
                break;
            };
            let charge = queue
                .front()
                .map(|work| work.attempts() == 0)
                .unwrap_or(false);
            if charge {
                let wait = self.bucket.wait_time(Instant::now());
                if !wait.is_zero() {
                    self.schedule_pump(context, wait);
                    break;
                }
            }
            let work = queue
                .pop_front()
                .expect("the queue was just seen non-empty");
            if charge {
                self.bucket.take(work.record_count());
            }
            self.dispatch(work, context);
        }
    }

    /// Runs `pump` after `after`, unless one already runs sooner. A pump scheduled for later
    /// is not enough: a raised limit makes the next chunk due sooner than the old pace said.
    fn schedule_pump(&mut self, context: &mut Context<Self>, after: Duration) {
        let due = Instant::now() + after;
        if self.pump_due_opt.is_some_and(|scheduled| scheduled <= due) {
            return;
        }
        self.pump_due_opt = Some(due);
        context.run_later(after, move |actor, context| {
            // Only the earliest scheduled pump clears the mark; an outdated later one just
            // pumps, which is harmless.
            if actor.pump_due_opt == Some(due) {
                actor.pump_due_opt = None;
            }
            actor.pump(context);
        });
    }

    fn dispatch(&mut self, work: Work, context: &mut Context<Self>) {
        self.in_flight += 1;
        self.last_active = Instant::now();
        let writers = self.writers.clone();
        let message = WriteChunk {
            tenant_id: self.tenant_id,
            region: self.region,
            source: work.source(),
            fence: self.fence.clone(),
        };
        let priority = work.priority();
        let traced = message.fence.trace;
        let write = async move { writers.write(message, priority).await };
        context.spawn(write.into_actor(self).map(move |result, actor, context| {
            actor.in_flight -= 1;
            if traced && result.is_ok() {
                // The trace of this epoch is committed: later chunks need not write it.
                actor.fence.trace = false;
            }
            actor.finish(work, result, context);
            actor.pump(context);
            actor.after_progress(context);
        }));
    }

    fn finish(
        &mut self,
        work: Work,
        result: Result<ChunkOutcome, StoreError>,
        context: &mut Context<Self>,
    ) {
        if matches!(result, Err(StoreError::Fenced)) {
            self.lose_ownership(work, context);
            return;
        }
        match (work, result) {
            (Work::Staged { chunk, .. }, Ok(outcome)) => {
                self.known_chunks.remove(&chunk.chunk_id);
                self.record_write(outcome.written);
                tracing::debug!(tenant_id = %self.tenant_id, chunk_id = chunk.chunk_id, written = outcome.written, "chunk written");
            }
            (Work::Batch { chunk, .. }, Ok(outcome)) => {
                self.record_write(outcome.written);
                let _ = chunk.done.send(Ok(outcome));
            }
            (Work::Batch { chunk, attempts }, Err(error))
                if error.is_retryable()
                    && attempts + 1 < self.settings.batch_attempts
                    && !self.draining =>
            {
                self.retry_later(
                    Work::Batch {
                        chunk,
                        attempts: attempts + 1,
                    },
                    &error,
                    context,
                );
            }
            (Work::Batch { chunk, .. }, Err(error)) => {
                let _ = chunk.done.send(Err(BatchChunkError::Database(error)));
            }
            (Work::Staged { chunk, attempts }, Err(error)) if error.is_retryable() => {
                if self.draining {
                    // Still staged: the next start writes it.
                    self.known_chunks.remove(&chunk.chunk_id);
                } else {
                    self.retry_later(
                        Work::Staged {
                            chunk,
                            attempts: attempts + 1,
                        },
                        &error,
                        context,
                    );
                }
            }
            (Work::Staged { chunk, .. }, Err(error)) => {
                self.known_chunks.remove(&chunk.chunk_id);
                metrics::counter!(crate::metrics::CHUNKS_REFUSED).increment(1);
                tracing::error!(tenant_id = %self.tenant_id, chunk_id = chunk.chunk_id, %error, "chunk could not be written; it stays staged");
            }
        }
    }

    /// Another instance owns the tenant now (its chunk transaction was fenced): nothing more is
    /// dispatched, staged chunks stay staged for the new owner, waiting batch chunks are
    /// answered as fenced (their requests get a 503 to send again), and the actor stops.
    fn lose_ownership(&mut self, fenced: Work, context: &mut Context<Self>) {
        if !self.draining {
            tracing::info!(tenant_id = %self.tenant_id, epoch = self.fence.epoch, "tenant not owned here under this epoch any more (or this instance's lease lapsed); its actor stops");
            metrics::counter!(crate::metrics::CLUSTER_FENCED_WRITES).increment(1);
            // The supervisor forgets this actor at once, so the tenant's work (if this instance
            // still or again owns it) goes to a new actor with the current epoch.
            self.idle_recipient.do_send(TenantIdle {
                tenant_id: self.tenant_id,
                address: context.address(),
            });
        }
        self.draining = true;
        self.stop_when_empty = true;
        let queued: Vec<Work> = self
            .queues
            .iter_mut()
            .flat_map(|queue| queue.drain(..))
            .collect();
        for work in std::iter::once(fenced).chain(queued) {
            match work {
                Work::Batch { chunk, .. } => {
                    let _ = chunk
                        .done
                        .send(Err(BatchChunkError::Database(StoreError::Fenced)));
                }
                Work::Staged { chunk, .. } => {
                    self.known_chunks.remove(&chunk.chunk_id);
                }
            }
        }
        self.after_progress(context);
    }

    fn retry_later(&mut self, work: Work, error: &StoreError, context: &mut Context<Self>) {
        let delay = backoff(
            self.settings.retry_base,
            self.settings.retry_cap,
            work.attempts(),
        );
        tracing::warn!(tenant_id = %self.tenant_id, attempts = work.attempts(), ?delay, %error, "chunk write failed; retrying");
        self.waiting_retry += 1;
        metrics::counter!(crate::metrics::WRITE_RETRIES).increment(1);
        context.run_later(delay, move |actor, context| {
            actor.waiting_retry -= 1;
            if actor.draining {
                // Dropping a batch chunk answers its request with an error; a staged chunk
                // stays staged.
                if let Work::Staged { chunk, .. } = &work {
                    actor.known_chunks.remove(&chunk.chunk_id);
                }
                actor.after_progress(context);
                return;
            }
            actor.enqueue(work);
            actor.pump(context);
        });
    }

    fn record_write(&mut self, records: u64) {
        if records > 0 {
            self.board
                .entry(self.tenant_id)
                .or_default()
                .record_write(Instant::now(), records);
        }
    }

    /// Publishes queue depth, chunks in flight and the pause switch on the board.
    fn publish(&self) {
        let mut entry = self.board.entry(self.tenant_id).or_default();
        entry.queued_chunks = self.queues.iter().map(VecDeque::len).sum();
        entry.in_flight_chunks = self.in_flight;
        entry.paused = self.paused;
    }

    /// Answers drain waiters and finishes a pending stop once nothing is in flight.
    fn after_progress(&mut self, context: &mut Context<Self>) {
        self.publish();
        if self.in_flight == 0 && self.waiting_retry == 0 {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        if self.stop_when_empty && !self.has_work() {
            context.stop();
        }
    }
}

fn chunk_records(source: &ChunkSource) -> i64 {
    match source {
        ChunkSource::Inline { record_count, .. } => *record_count as i64,
        ChunkSource::Staged { .. } => 0,
    }
}

impl Actor for TenantActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _context: &mut Context<Self>) {
        self.leave_board();
    }

    fn started(&mut self, context: &mut Context<Self>) {
        // `wait`: no message is handled before the tenant's own limits are known.
        let pool = self.control_pool.clone();
        let (tenant_id, defaults) = (self.tenant_id, self.defaults);
        let read = async move { staging::tenant_limits(&pool, tenant_id, defaults).await };
        context.wait(read.into_actor(self).map(|result, actor, _context| match result {
            Ok(limits) => actor.apply_limits(limits),
            Err(error) => {
                tracing::warn!(tenant_id = %actor.tenant_id, %error, "tenant limits unreadable; using defaults");
            }
        }));
        self.publish();
        let period = (self.settings.idle_timeout / 2).max(Duration::from_millis(100));
        context.run_interval(period, |actor, context| {
            if !actor.has_work() && actor.last_active.elapsed() >= actor.settings.idle_timeout {
                actor.idle_recipient.do_send(TenantIdle {
                    tenant_id: actor.tenant_id,
                    address: context.address(),
                });
            }
        });
    }
}

impl TenantActor {
    fn leave_board(&self) {
        self.board.remove(&self.tenant_id);
    }
}

impl Handler<LimitsChanged> for TenantActor {
    type Result = ();

    fn handle(&mut self, message: LimitsChanged, context: &mut Context<Self>) {
        self.apply_limits(message.limits);
        self.pump(context);
    }
}

impl Handler<ChunksStaged> for TenantActor {
    type Result = ();

    fn handle(&mut self, message: ChunksStaged, context: &mut Context<Self>) {
        self.last_active = Instant::now();
        for chunk in message.chunks {
            if self.known_chunks.insert(chunk.chunk_id) {
                self.enqueue(Work::Staged { chunk, attempts: 0 });
            }
        }
        self.pump(context);
    }
}

impl Handler<BatchSubmitted> for TenantActor {
    type Result = ();

    fn handle(&mut self, message: BatchSubmitted, context: &mut Context<Self>) {
        self.last_active = Instant::now();
        let batch_records: i64 = message
            .chunks
            .iter()
            .map(|chunk| chunk_records(&chunk.source))
            .sum();
        let wait = self.estimated_wait(batch_records);
        let draining = self.draining;
        let throttled = wait > self.settings.batch_max_wait;
        let refusal = || {
            if draining {
                BatchChunkError::ShuttingDown
            } else {
                BatchChunkError::Throttled {
                    retry_after_secs: wait.as_secs().max(1),
                }
            }
        };
        for chunk in message.chunks {
            if draining || throttled {
                let _ = chunk.done.send(Err(refusal()));
            } else {
                self.enqueue(Work::Batch { chunk, attempts: 0 });
            }
        }
        self.pump(context);
    }
}

impl Handler<StopTenant> for TenantActor {
    type Result = ();

    fn handle(&mut self, _message: StopTenant, context: &mut Context<Self>) {
        self.stop_when_empty = true;
        self.after_progress(context);
    }
}

impl Handler<Drain> for TenantActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _message: Drain, context: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        for queue in &mut self.queues {
            for work in queue.drain(..) {
                match work {
                    Work::Batch { chunk, .. } => {
                        let _ = chunk.done.send(Err(BatchChunkError::ShuttingDown));
                    }
                    Work::Staged { chunk, .. } => {
                        self.known_chunks.remove(&chunk.chunk_id);
                    }
                }
            }
        }
        let (sender, receiver) = oneshot::channel();
        self.drain_waiters.push(sender);
        self.after_progress(context);
        Box::pin(async move {
            let _ = receiver.await;
        })
    }
}
