//! The actor system: a supervisor, one tenant actor per active tenant, a fixed pool of writers.
//!
//! The actors run on their own thread with its own actix system, so they are independent of
//! the runtime that serves HTTP (and of the runtime a test runs on). HTTP handlers talk to them
//! only through [`Engine`], whose addresses are `Send`.

pub mod backoff;
pub mod board;
pub mod hold_budget;
pub mod messages;
pub mod supervisor;
pub mod tenant;
pub mod token_bucket;
pub mod writer;

use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use tokio::sync::oneshot;

use self::board::TenantBoard;
use self::messages::{BatchSubmitted, ChunksStaged, Drain, LimitsChanged};
use self::supervisor::{EngineState, GetEngineState, Supervisor};
use self::tenant::TenantActorSettings;
use self::writer::{ReconnectPolicy, WriterPool};
use crate::config::Settings;
use crate::domain::TenantId;
use crate::store::connections::build_pool;
use crate::store::staging::TenantDefaults;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A handle on the running actor system.
pub struct Engine {
    supervisor: Addr<Supervisor>,
    board: TenantBoard,
    total_backlog: Arc<AtomicI64>,
    scan_finished: Arc<tokio::sync::Notify>,
    system: actix::System,
    /// Taken by the first `shutdown`.
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Engine {
    /// Starts the actor thread, its writers and supervisor; returns once they run.
    pub fn start(
        settings: &Settings,
        database: &tokio_postgres::Config,
        view: Arc<crate::cluster::view::ClusterView>,
        parsing: Arc<crate::submission::ParsingSlots>,
    ) -> anyhow::Result<Engine> {
        let (ready_sender, ready_receiver) = std::sync::mpsc::channel();
        let settings = settings.clone();
        let database = database.clone();
        let board = TenantBoard::default();
        let total_backlog = Arc::new(AtomicI64::new(0));
        let (actor_board, actor_total_backlog) = (board.clone(), total_backlog.clone());
        let scan_finished = Arc::new(tokio::sync::Notify::new());
        let writers_scan_finished = scan_finished.clone();
        let thread = std::thread::Builder::new()
            .name("actors".into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    // Two connections: the sweep and new tenants' limit reads.
                    let control_pool = build_pool(
                        &database,
                        2,
                        Duration::from_secs(settings.database.pool_timeout_secs),
                    )
                    .await;
                    let writers = WriterPool::start(
                        settings.writers.count,
                        &database,
                        Duration::from_secs(settings.tenants.priority_aging_secs),
                        ReconnectPolicy {
                            base: Duration::from_millis(settings.writers.retry_base_ms),
                            cap: Duration::from_millis(settings.writers.retry_cap_ms),
                        },
                        writers_scan_finished,
                        parsing,
                    );
                    let supervisor = Supervisor::new(
                        control_pool,
                        writers,
                        TenantActorSettings {
                            max_in_flight_chunks: settings.tenants.max_in_flight_chunks,
                            idle_timeout: Duration::from_secs(settings.tenants.idle_timeout_secs),
                            retry_base: Duration::from_millis(settings.writers.retry_base_ms),
                            retry_cap: Duration::from_millis(settings.writers.retry_cap_ms),
                            batch_attempts: settings.writers.retry_attempts.max(1),
                            batch_max_wait: Duration::from_secs(
                                settings.ingest.batch_max_wait_secs,
                            ),
                        },
                        tenant_defaults(&settings),
                        Duration::from_secs(settings.tenants.sweep_interval_secs.max(1)),
                        (actor_board, actor_total_backlog),
                        view,
                    )
                    .start();
                    let _ = ready_sender.send((supervisor, actix::System::current()));
                });
                if let Err(error) = system.run() {
                    tracing::error!(%error, "actor system stopped with an error");
                }
            })
            .context("starting the actor thread")?;
        let (supervisor, system) = ready_receiver
            .recv()
            .context("the actor system failed to start")?;
        Ok(Engine {
            supervisor,
            board,
            total_backlog,
            scan_finished,
            system,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Announces committed staged chunks to the tenant's actor.
    pub fn chunks_staged(&self, message: ChunksStaged) {
        self.supervisor.do_send(message);
    }

    /// Hands batch chunks to the tenant's actor; each chunk's waiter is answered.
    pub fn batch_submitted(&self, message: BatchSubmitted) {
        self.supervisor.do_send(message);
    }

    /// Tells the tenant's actor (if it has one) its new limits.
    pub fn limits_changed(&self, message: LimitsChanged) {
        self.supervisor.do_send(message);
    }

    /// A handle for the cluster's background work (the ownership pass, the listener).
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            supervisor: self.supervisor.clone(),
        }
    }

    /// Signalled whenever a chunk this instance wrote finished a scan (see
    /// [`webhooks`](crate::webhooks)).
    pub fn scan_finished(&self) -> Arc<tokio::sync::Notify> {
        self.scan_finished.clone()
    }

    /// Live state of tenants with an actor.
    pub fn board(&self) -> &TenantBoard {
        &self.board
    }

    /// Records staged over all tenants, as of the last sweep.
    pub fn total_backlog(&self) -> i64 {
        self.total_backlog.load(Ordering::Relaxed)
    }

    pub async fn state(&self) -> Option<EngineState> {
        self.supervisor.send(GetEngineState).await.ok()
    }

    /// Stops dispatching and waits, at most `grace`, for chunks in flight; then stops the
    /// actor system. Work still staged is written at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.supervisor.send(Drain))
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "chunks still in flight after the grace period; they stay staged"
            );
        }
        self.stop_system().await;
    }

    async fn stop_system(&self) {
        self.system.stop();
        let thread_opt = self
            .thread
            .lock()
            .expect("never poisoned: no code panics holding it")
            .take();
        if let Some(thread) = thread_opt {
            let (sender, receiver) = oneshot::channel();
            std::thread::spawn(move || {
                let _ = thread.join();
                let _ = sender.send(());
            });
            let _ = receiver.await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // An engine dropped without `shutdown` (a test that ends early) still stops its thread.
        self.system.stop();
    }
}

pub fn tenant_defaults(settings: &Settings) -> TenantDefaults {
    TenantDefaults {
        records_per_second: settings.tenants.default_records_per_second,
        burst: settings.tenants.default_burst,
        max_backlog_records: settings.tenants.default_max_backlog_records,
    }
}

/// What the cluster's background work tells the engine.
#[derive(Clone)]
pub struct EngineHandle {
    supervisor: Addr<Supervisor>,
}

impl EngineHandle {
    /// The tenants this instance owns now, with their epochs.
    pub fn owned_tenants(&self, owned: std::collections::HashMap<TenantId, i64>) {
        self.supervisor.do_send(messages::OwnedTenants { owned });
    }

    /// A tenant has new staged work or limits (a notification from any instance).
    pub fn tenant_notified(&self, tenant_id: TenantId) {
        self.supervisor
            .do_send(messages::TenantNotified { tenant_id });
    }

    /// Notifications may have been missed: sweep every owned tenant.
    pub fn sweep_now(&self) {
        self.supervisor.do_send(messages::SweepNow);
    }
}
