//! The supervisor: owns the registry of tenant actors and the writer pool.
//!
//! Inputs: [`ChunksStaged`] and [`BatchSubmitted`] from the HTTP layer, [`TenantIdle`] from tenant
//! actors, [`Drain`] at shutdown, and its own sweep timer. Outputs: the same work forwarded to
//! the tenant's actor, spawned on first use.
//!
//! The sweep reads `staged_chunks` at start-up and then every `tenants.sweep_interval_secs`, and
//! announces what it finds to the tenants' actors. That is how staged work survives a crash, a
//! lost message, or an actor that stopped: correctness never depends on an in-memory message,
//! only latency does.
//!
//! Failure model: a tenant actor that stops is simply forgotten; its staged chunks come back
//! with the next sweep. Writers are restarted by their own `actix::Supervisor` (see `writer`).

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;

use super::board::TenantBoard;
use super::messages::{BatchSubmitted, ChunksStaged, Drain, LimitsChanged};
use super::tenant::{StopTenant, TenantActor, TenantActorSettings};
use super::writer::WriterPool;
use crate::domain::TenantId;
use crate::store::staging::{self, ChunkRef, TenantDefaults};
use crate::store::{governance, Pool};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Tenant actor → supervisor: nothing to do for a while; forget me if I am still registered.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TenantIdle {
    pub tenant_id: TenantId,
    pub address: Addr<TenantActor>,
}

/// Asks how many tenant actors are registered and how many chunks the writers hold.
#[derive(Debug, Message)]
#[rtype(result = "EngineState")]
pub struct GetEngineState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineState {
    pub tenant_actors: usize,
    pub writer_queue: usize,
    pub writer_restarts: u64,
}

pub struct Supervisor {
    /// Used by the sweep and to read a new tenant's limits; separate from the HTTP pool so a
    /// burst of requests cannot starve the engine's own bookkeeping.
    control_pool: Pool,
    writers: WriterPool,
    tenant_settings: TenantActorSettings,
    tenant_defaults: TenantDefaults,
    sweep_interval: Duration,
    /// Tenant actors by tenant. Only this actor reads or changes it.
    tenants: HashMap<TenantId, Addr<TenantActor>>,
    sweeping: bool,
    draining: bool,
    board: TenantBoard,
    /// Records staged over all tenants, as of the last sweep (read by HTTP for the global bound).
    total_backlog: Arc<AtomicI64>,
}

impl Supervisor {
    pub fn new(
        control_pool: Pool,
        writers: WriterPool,
        tenant_settings: TenantActorSettings,
        tenant_defaults: TenantDefaults,
        sweep_interval: Duration,
        board: TenantBoard,
        total_backlog: Arc<AtomicI64>,
    ) -> Supervisor {
        Supervisor {
            control_pool,
            writers,
            tenant_settings,
            tenant_defaults,
            sweep_interval,
            tenants: HashMap::new(),
            sweeping: false,
            draining: false,
            board,
            total_backlog,
        }
    }

    /// The tenant's actor, spawned when it has none (or a stopped one).
    fn tenant_actor(
        &mut self,
        tenant_id: TenantId,
        context: &mut Context<Self>,
    ) -> Addr<TenantActor> {
        if let Some(address) = self.tenants.get(&tenant_id) {
            if address.connected() {
                return address.clone();
            }
        }
        let address = TenantActor::new(
            tenant_id,
            self.tenant_defaults,
            self.tenant_settings.clone(),
            self.writers.clone(),
            self.control_pool.clone(),
            context.address().recipient(),
            self.board.clone(),
        )
        .start();
        self.tenants.insert(tenant_id, address.clone());
        address
    }

    fn sweep(&mut self, context: &mut Context<Self>) {
        if self.sweeping || self.draining {
            return;
        }
        self.sweeping = true;
        let pool = self.control_pool.clone();
        let active_tenants: Vec<TenantId> = self.tenants.keys().copied().collect();
        let read = async move {
            let chunks = staging::staged_chunk_refs(&pool, None).await?;
            // Limits changed through another engine instance reach this one's actors here.
            let limits = governance::limits_of(&pool, &active_tenants).await?;
            Ok::<_, crate::store::StoreError>((chunks, limits))
        };
        context.spawn(read.into_actor(self).map(|result, supervisor, context| {
            supervisor.sweeping = false;
            let chunks = match result {
                Ok((chunks, limits)) => {
                    for (tenant_id, limits) in limits {
                        if let Some(address) = supervisor.tenants.get(&tenant_id) {
                            address.do_send(LimitsChanged { tenant_id, limits });
                        }
                    }
                    let total: i64 = chunks.iter().map(|chunk| chunk.record_count as i64).sum();
                    supervisor.total_backlog.store(total, Ordering::Relaxed);
                    chunks
                }
                Err(error) => {
                    tracing::warn!(%error, "staging sweep failed; retrying at the next interval");
                    return;
                }
            };
            if supervisor.draining {
                return;
            }
            let mut by_tenant: HashMap<TenantId, Vec<ChunkRef>> = HashMap::new();
            for chunk in chunks {
                by_tenant.entry(chunk.tenant_id).or_default().push(chunk);
            }
            for (tenant_id, chunks) in by_tenant {
                supervisor
                    .tenant_actor(tenant_id, context)
                    .do_send(ChunksStaged { tenant_id, chunks });
            }
        }));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Context<Self>) {
        self.sweep(context);
        context.run_interval(self.sweep_interval, |supervisor, context| {
            supervisor.sweep(context)
        });
    }
}

/// Tenant mailboxes are written with `do_send`, which ignores their capacity: the messages are
/// small (chunk references; batch chunks are bounded by their waiting requests), and the
/// supervisor must never block on one slow tenant.
impl Handler<ChunksStaged> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ChunksStaged, context: &mut Context<Self>) {
        self.tenant_actor(message.tenant_id, context)
            .do_send(message);
    }
}

impl Handler<BatchSubmitted> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: BatchSubmitted, context: &mut Context<Self>) {
        self.tenant_actor(message.tenant_id, context)
            .do_send(message);
    }
}

impl Handler<LimitsChanged> for Supervisor {
    type Result = ();

    /// Only a tenant with an actor needs telling: a new actor reads the stored limits.
    fn handle(&mut self, message: LimitsChanged, _context: &mut Context<Self>) {
        if let Some(address) = self.tenants.get(&message.tenant_id) {
            address.do_send(message);
        }
    }
}

impl Handler<TenantIdle> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: TenantIdle, _context: &mut Context<Self>) {
        if self.tenants.get(&message.tenant_id) == Some(&message.address) {
            self.tenants.remove(&message.tenant_id);
            message.address.do_send(StopTenant);
        }
    }
}

impl Handler<GetEngineState> for Supervisor {
    type Result = MessageResult<GetEngineState>;

    fn handle(&mut self, _message: GetEngineState, _context: &mut Context<Self>) -> Self::Result {
        MessageResult(EngineState {
            tenant_actors: self.tenants.len(),
            writer_queue: self.writers.queued(),
            writer_restarts: self.writers.restarts(),
        })
    }
}

impl Handler<Drain> for Supervisor {
    type Result = ResponseFuture<()>;

    /// Stops the sweep, drains every tenant actor, and resolves once no chunk is in flight.
    fn handle(&mut self, _message: Drain, _context: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        let drains: Vec<_> = self
            .tenants
            .values()
            .map(|address| address.send(Drain))
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(drains).await;
        })
    }
}
