//! Messages that travel between actors (messages only one actor handles live in its module).

use actix::Message;
use tokio::sync::oneshot;

use crate::domain::{Priority, Region, TenantId};
use crate::store::chunk_writes::{ChunkOutcome, ChunkSource, Fence};
use crate::store::staging::{ChunkRef, TenantLimits};
use crate::store::StoreError;

/// Tenant actor → writer: apply one chunk. The reply comes once its transaction committed
/// (or failed); the tenant actor decides what a failure means.
#[derive(Debug, Message)]
#[rtype(result = "Result<ChunkOutcome, StoreError>")]
pub struct WriteChunk {
    pub tenant_id: TenantId,
    /// The tenant's region, for the `region` label of the write metrics.
    pub region: Region,
    pub source: ChunkSource,
    /// This instance's ownership of the tenant, which the chunk's transaction checks.
    pub fence: Fence,
}

/// HTTP → supervisor → tenant actor: these staged chunks are committed and wait to be written.
/// Losing this message loses no data: the supervisor's sweep finds staged chunks on its own.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChunksStaged {
    pub tenant_id: TenantId,
    pub chunks: Vec<ChunkRef>,
}

/// One chunk of a synchronous batch, with the request that waits for its commit.
#[derive(Debug)]
pub struct BatchChunk {
    pub source: ChunkSource,
    pub priority: Priority,
    /// Answered exactly once: with the outcome, or an error if the chunk cannot be written.
    pub done: oneshot::Sender<Result<ChunkOutcome, BatchChunkError>>,
}

/// Why a batch chunk was not written. Nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum BatchChunkError {
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("the tenant's throttle would hold the batch longer than allowed")]
    Throttled { retry_after_secs: u64 },
    #[error("the database kept failing: {0}")]
    Database(StoreError),
}

/// HTTP → supervisor → tenant actor: write these batch chunks and answer each waiter.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BatchSubmitted {
    pub tenant_id: TenantId,
    pub chunks: Vec<BatchChunk>,
}

/// Supervisor → tenant actors, at shutdown: dispatch nothing more, answer queued batch chunks
/// with [`BatchChunkError::ShuttingDown`], and reply once no chunk of this tenant is in flight.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Admin API → supervisor → tenant actor (and the sweep, for changes made by other instances):
/// the tenant's stored limits are now these.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LimitsChanged {
    pub tenant_id: TenantId,
    pub limits: TenantLimits,
}

/// Ownership pass → supervisor: the tenants this instance owns now, with their epochs. Actors
/// of tenants no longer owned (or owned under another epoch) are drained and stopped; owned
/// tenants' staged work is swept at once.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct OwnedTenants {
    pub owned: std::collections::HashMap<TenantId, i64>,
}

/// Notification listener → supervisor: this tenant has new staged work or new limits,
/// recorded by any instance. Acted on only if this instance owns the tenant.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TenantNotified {
    pub tenant_id: TenantId,
}

/// Notification listener → supervisor: notifications may have been missed (the listening
/// connection was replaced); sweep everything owned.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SweepNow;
