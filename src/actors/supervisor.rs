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
//!
//! Ownership (SPEC section 8): a tenant's actor runs here only while this instance owns the
//! tenant ([`OwnedTenants`] from the ownership pass, or a claim made here on first use), and it
//! carries the epoch its chunk transactions are fenced with. Work for a tenant another instance
//! owns is left to that instance (told by a notification at the staging commit); a batch for
//! such a tenant is answered as fenced (503, retry).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;

use super::board::TenantBoard;
use super::messages::{
    BatchChunkError, BatchSubmitted, ChunksStaged, Drain, LimitsChanged, OwnedTenants, SweepNow,
    TenantNotified,
};
use super::tenant::{StopTenant, TenantActor, TenantActorSettings, TenantActorShared};
use super::writer::WriterPool;
use crate::cluster::view::ClusterView;
use crate::domain::TenantId;
use crate::store::chunk_writes::Fence;
use crate::store::staging::{self, ChunkRef, TenantDefaults};
use crate::store::{governance, ownership, Pool, StoreError};
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
    view: Arc<ClusterView>,
    instance_id: Arc<str>,
    /// Tenants this instance owns, with their epochs.
    owned: HashMap<TenantId, i64>,
    /// Tenants with a claim under way from here.
    claiming: HashSet<TenantId>,
}

impl Supervisor {
    pub fn new(
        control_pool: Pool,
        writers: WriterPool,
        tenant_settings: TenantActorSettings,
        tenant_defaults: TenantDefaults,
        sweep_interval: Duration,
        (board, total_backlog): (TenantBoard, Arc<AtomicI64>),
        view: Arc<ClusterView>,
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
            instance_id: Arc::from(view.instance_id.as_str()),
            view,
            owned: HashMap::new(),
            claiming: HashSet::new(),
        }
    }

    /// The tenant's actor, spawned when it has none (or a stopped one); `None` unless this
    /// instance owns the tenant.
    fn tenant_actor(
        &mut self,
        tenant_id: TenantId,
        context: &mut Context<Self>,
    ) -> Option<Addr<TenantActor>> {
        let epoch = *self.owned.get(&tenant_id)?;
        if let Some(address) = self.tenants.get(&tenant_id) {
            if address.connected() {
                return Some(address.clone());
            }
        }
        let address = TenantActor::new(
            tenant_id,
            Fence {
                instance_id: self.instance_id.clone(),
                epoch,
                trace: true,
            },
            TenantActorShared {
                defaults: self.tenant_defaults,
                settings: self.tenant_settings.clone(),
                writers: self.writers.clone(),
                control_pool: self.control_pool.clone(),
                idle_recipient: context.address().recipient(),
                board: self.board.clone(),
            },
        )
        .start();
        self.tenants.insert(tenant_id, address.clone());
        Some(address)
    }

    /// Takes in the owned set from the database: actors of tenants lost (or owned under a new
    /// epoch) are drained and stopped, their staged chunks left for their owner.
    fn apply_owned(&mut self, owned: HashMap<TenantId, i64>, context: &mut Context<Self>) {
        let lost: Vec<TenantId> = self
            .owned
            .iter()
            .filter(|(tenant_id, epoch)| owned.get(tenant_id) != Some(epoch))
            .map(|(tenant_id, _)| *tenant_id)
            .collect();
        let gained = owned
            .keys()
            .filter(|tenant_id| !self.owned.contains_key(tenant_id))
            .count();
        for tenant_id in &lost {
            if let Some(address) = self.tenants.remove(tenant_id) {
                address.do_send(Drain);
                address.do_send(StopTenant);
            }
        }
        if !lost.is_empty() {
            tracing::info!(
                lost = lost.len(),
                "tenants no longer owned here; their actors stop"
            );
        }
        self.owned = owned;
        metrics::gauge!(crate::metrics::CLUSTER_TENANTS_OWNED).set(self.owned.len() as f64);
        if gained > 0 {
            self.sweep(context);
        }
    }

    /// Claims one tenant for this instance (first use of a tenant nobody live owns), then runs
    /// `then` with whether it is owned here now.
    fn claim_then(
        &mut self,
        tenant_id: TenantId,
        context: &mut Context<Self>,
        then: impl FnOnce(&mut Supervisor, bool, &mut Context<Self>) + 'static,
    ) {
        self.claiming.insert(tenant_id);
        let pool = self.control_pool.clone();
        let instance_id = self.instance_id.to_string();
        let claim = async move { ownership::claim(&pool, &instance_id, &[tenant_id]).await };
        context.spawn(
            claim
                .into_actor(self)
                .map(move |result, supervisor, context| {
                    supervisor.claiming.remove(&tenant_id);
                    match result {
                        Ok(owned) => {
                            let owned: HashMap<TenantId, i64> = owned.into_iter().collect();
                            let is_owned = owned.contains_key(&tenant_id);
                            supervisor.apply_owned(owned, context);
                            then(supervisor, is_owned, context);
                        }
                        Err(error) => {
                            tracing::warn!(%tenant_id, %error, "claiming a tenant failed");
                            then(supervisor, false, context);
                        }
                    }
                }),
        );
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
            // Only owned tenants: the others' owners sweep them (and the ownership pass hands
            // this instance the tenants it should own).
            for (tenant_id, chunks) in by_tenant {
                if let Some(address) = supervisor.tenant_actor(tenant_id, context) {
                    address.do_send(ChunksStaged { tenant_id, chunks });
                }
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

    /// Staged work of a tenant owned elsewhere is its owner's (told by the staging commit's
    /// notification); of a tenant nobody owns yet, this instance claims it if it is the
    /// tenant's preferred owner.
    fn handle(&mut self, message: ChunksStaged, context: &mut Context<Self>) {
        let tenant_id = message.tenant_id;
        if let Some(address) = self.tenant_actor(tenant_id, context) {
            address.do_send(message);
            return;
        }
        if self.draining
            || self.claiming.contains(&tenant_id)
            || !self.view.prefers_this_instance(tenant_id)
        {
            return;
        }
        self.claim_then(tenant_id, context, move |supervisor, owned, context| {
            if owned {
                if let Some(address) = supervisor.tenant_actor(tenant_id, context) {
                    address.do_send(message);
                }
            }
        });
    }
}

impl Handler<BatchSubmitted> for Supervisor {
    type Result = ();

    /// A batch waits for its answer, so its tenant is claimed here unless another live
    /// instance owns it; then the batch is refused as fenced (503: sent again, the load
    /// balancer may reach the owner).
    fn handle(&mut self, message: BatchSubmitted, context: &mut Context<Self>) {
        let tenant_id = message.tenant_id;
        if let Some(address) = self.tenant_actor(tenant_id, context) {
            address.do_send(message);
            return;
        }
        self.claim_then(
            tenant_id,
            context,
            move |supervisor, owned, context| match owned
                .then(|| supervisor.tenant_actor(tenant_id, context))
                .flatten()
            {
                Some(address) => address.do_send(message),
                None => {
                    for chunk in message.chunks {
                        let _ = chunk
                            .done
                            .send(Err(BatchChunkError::Database(StoreError::Fenced)));
                    }
                }
            },
        );
    }
}

impl Handler<OwnedTenants> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: OwnedTenants, context: &mut Context<Self>) {
        if self.draining {
            return;
        }
        self.apply_owned(message.owned, context);
    }
}

impl Handler<TenantNotified> for Supervisor {
    type Result = ();

    /// New staged work or limits of a tenant, recorded by any instance: the owner reads both.
    fn handle(&mut self, message: TenantNotified, context: &mut Context<Self>) {
        let tenant_id = message.tenant_id;
        if self.draining || !self.owned.contains_key(&tenant_id) {
            return;
        }
        let pool = self.control_pool.clone();
        let read = async move {
            let chunks = staging::staged_chunk_refs(&pool, Some(tenant_id)).await?;
            let limits = governance::limits_of(&pool, &[tenant_id]).await?;
            Ok::<_, StoreError>((chunks, limits))
        };
        context.spawn(read.into_actor(self).map(move |result, supervisor, context| {
            let (chunks, limits) = match result {
                Ok(read) => read,
                Err(error) => {
                    tracing::debug!(%tenant_id, %error, "reading a notified tenant failed; the sweep will");
                    return;
                }
            };
            let Some(address) = supervisor.tenant_actor(tenant_id, context) else {
                return;
            };
            for (tenant_id, limits) in limits {
                address.do_send(LimitsChanged { tenant_id, limits });
            }
            if !chunks.is_empty() {
                address.do_send(ChunksStaged { tenant_id, chunks });
            }
        }));
    }
}

impl Handler<SweepNow> for Supervisor {
    type Result = ();

    fn handle(&mut self, _message: SweepNow, context: &mut Context<Self>) {
        self.sweep(context);
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
