//! The application: binds its listener, starts the actor system, serves until told to stop.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;

use crate::actors::Engine;
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::store::connections::{self, ReadPoolOptions};
use crate::store::migrations;

/// Connections of the background jobs' pool.
const BACKGROUND_POOL_SIZE: u32 = 2;

/// A bound, ready application. Nothing is served until [`Application::run_until`].
pub struct Application {
    address: SocketAddr,
    /// For the connections of background jobs that need their own (the archive's).
    database: tokio_postgres::Config,
    state: Arc<AppState>,
    view: Arc<crate::cluster::view::ClusterView>,
    /// The background jobs' own connections (webhook delivery, the ownership pass), so their
    /// frequent small queries never queue requests behind them nor show in the request pool.
    background_pool: crate::store::Pool,
    /// Where the other instances reach this one's HTTP API.
    advertised_http_address: String,
    server: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    stop_server: oneshot::Sender<()>,
}

impl Application {
    /// Applies migrations, opens the request pool and the read pool, starts the actors (which
    /// resume staged work) and binds the HTTP listener (port 0 picks a free one).
    pub async fn build(settings: Settings, database_url: &str) -> anyhow::Result<Application> {
        let database = connections::parse_url(
            database_url,
            Duration::from_secs(settings.database.connect_timeout_secs),
        )?;
        migrations::run(&database).await?;
        let pool = connections::build_pool(
            &database,
            settings.database.pool_size,
            Duration::from_secs(settings.database.pool_timeout_secs),
        )
        .await;
        // After the migrations: its connections switch to the role migration V3 creates.
        let read_pool = connections::build_read_pool(
            &database,
            ReadPoolOptions {
                size: settings.database.read_pool_size,
                checkout_timeout: Duration::from_secs(settings.database.read_pool_timeout_secs),
                test_on_check_out: settings.database.read_pool_test_on_check_out,
                statement_timeout: Duration::from_millis(
                    settings.database.read_statement_timeout_ms,
                ),
            },
        )
        .await;
        // This month's audit partition (and the next ones) exist before anything is served.
        crate::audit::upkeep::run_at_startup(&pool, &settings.audit)
            .await
            .context("creating the audit log's monthly partitions")?;
        let background_pool = connections::build_pool(
            &database,
            BACKGROUND_POOL_SIZE,
            Duration::from_secs(settings.database.pool_timeout_secs),
        )
        .await;
        let instance_id = crate::cluster::heartbeat::instance_id(&settings.cluster.instance_id);
        let view = Arc::new(crate::cluster::view::ClusterView::new(instance_id.clone()));
        let parsing = crate::submission::ParsingSlots::per_core();
        let engine = Engine::start(&settings, &database, view.clone(), parsing.clone())?;
        let host: IpAddr =
            settings.http.host.parse().with_context(|| {
                format!("http.host {:?} is not an IP address", settings.http.host)
            })?;
        let state = Arc::new(AppState {
            settings: settings.clone(),
            pool,
            read_pool,
            engine,
            accepting: AtomicBool::new(true),
            metrics: crate::metrics::install(),
            admission: crate::http::admission::AdmissionControl::new(
                settings.ingest.admission_budget_bytes,
            ),
            bodies: Arc::new(crate::memory::BodyBuffers::new(parsing.slot_count())),
            parsing,
            instance_id: instance_id.clone(),
            forwarding: reqwest::Client::builder()
                .timeout(Duration::from_secs(
                    settings.ingest.batch_max_wait_secs + 60,
                ))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .context("building the HTTP client that forwards batches")?,
            bootstrap_token_hash_opt: Some(settings.auth.bootstrap_admin_token.trim())
                .filter(|token| !token.is_empty())
                .map(crate::domain::auth::hash_secret),
        });
        let (stop_server, stopped) = oneshot::channel::<()>();
        let listener = http::listener::bind(SocketAddr::new(host, settings.http.port))
            .await
            .with_context(|| format!("binding {host}:{}", settings.http.port))?;
        let address = listener.local_addr()?;
        let advertised_http_address = match settings.cluster.advertised_http_address.trim() {
            "" => address.to_string(),
            configured => configured.to_string(),
        };
        // Alive among the instances before anything is served.
        crate::store::instances::heartbeat(
            &state.pool,
            &state.instance_id,
            &advertised_http_address,
            settings.cluster.lease_ttl_ms as i64,
        )
        .await
        .context("recording this instance's lease")?;
        tracing::info!(instance_id = %state.instance_id, "instance lease taken");
        let server = warp::serve(http::routes(state.clone()))
            .serve_incoming_with_graceful_shutdown(
                http::listener::accepted(listener),
                async move {
                    let _ = stopped.await;
                },
            );
        tracing::info!(%address, "http listening");
        Ok(Application {
            address,
            database,
            state,
            view,
            background_pool,
            advertised_http_address,
            server: Box::pin(server),
            stop_server,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` completes, then stops in order: refuse new submissions (503),
    /// let chunks in flight finish within the grace period, stop the actors, stop HTTP.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let server = tokio::spawn(self.server);
        let sampler = tokio::spawn(crate::sampler::run(
            self.state.clone(),
            Duration::from_secs(self.state.settings.metrics.sample_interval_secs.max(1)),
        ));
        // Two groups: maintenance stops before the engine drains; the heartbeat keeps this
        // instance's lease alive until its writes are done.
        let jobs = crate::jobs::Shutdown::new();
        let liveness = crate::jobs::Shutdown::new();
        let maintenance_interval =
            Duration::from_secs(self.state.settings.audit.maintenance_interval_secs.max(1));
        let heartbeat_interval =
            Duration::from_millis(self.state.settings.cluster.heartbeat_ms.max(100));
        let heartbeat = liveness.spawn(
            crate::cluster::heartbeat::HeartbeatJob {
                pool: self.state.pool.clone(),
                instance_id: self.state.instance_id.clone(),
                http_address: self.advertised_http_address.clone(),
                interval: heartbeat_interval,
                lease_ttl: Duration::from_millis(self.state.settings.cluster.lease_ttl_ms),
            },
            heartbeat_interval,
        );
        let deliveries = crate::webhooks::delivery::DeliveryJob::new(
            self.background_pool.clone(),
            self.state.settings.webhooks.clone(),
            self.state.engine.scan_finished(),
        )?;
        let (stop_listening, listening) = tokio::sync::watch::channel(false);
        let membership_changed = Arc::new(tokio::sync::Notify::new());
        let listener = tokio::spawn(crate::cluster::notifications::listen(
            self.database.clone(),
            self.state.engine.handle(),
            membership_changed.clone(),
            listening,
        ));
        // The others rebalance now, not at their next pass.
        if let Err(error) = crate::store::ownership::announce_membership(&self.state.pool).await {
            tracing::debug!(%error, "could not announce this instance; the others see it at their next pass");
        }
        let background = [
            jobs.spawn(
                crate::cluster::ownership::OwnershipJob {
                    pool: self.background_pool.clone(),
                    view: self.view.clone(),
                    engine: self.state.engine.handle(),
                    interval: heartbeat_interval,
                    owned: Default::default(),
                    membership_changed,
                },
                Duration::ZERO,
            ),
            jobs.spawn(
                crate::audit::maintenance::MaintenanceJob {
                    pool: self.state.pool.clone(),
                    database: self.database.clone(),
                    settings: self.state.settings.clone(),
                },
                // Soon after start (a restarted engine does not postpone archive and
                // retention), then at the interval.
                maintenance_interval.min(Duration::from_secs(60)),
            ),
            // At once: deliveries left due by a previous run go out first.
            jobs.spawn(deliveries, Duration::ZERO),
        ];
        let body_buffers = tokio::spawn({
            let bodies = self.state.bodies.clone();
            async move {
                let mut ticker = tokio::time::interval(Duration::from_secs(1));
                loop {
                    ticker.tick().await;
                    bodies.drop_idle();
                }
            }
        });
        shutdown.await;
        sampler.abort();
        body_buffers.abort();
        // Maintenance finishes its current pass, webhook attempts in flight finish, the
        // ownership pass and the listener stop, all before the engine drains.
        jobs.stop();
        let _ = stop_listening.send(true);
        for job in background {
            let _ = job.await;
        }
        let _ = listener.await;
        tracing::info!("shutting down");
        self.state.accepting.store(false, Ordering::Release);
        let grace = Duration::from_secs(self.state.settings.shutdown.grace_period_secs);
        self.state.engine.shutdown(grace).await;
        // Writes are done: stop the heartbeat, then in one transaction hand the tenants and the
        // lease back and tell the others, which take the tenants at once.
        liveness.stop();
        let _ = heartbeat.await;
        match crate::store::ownership::leave(&self.state.pool, &self.state.instance_id).await {
            Ok(released) => {
                metrics::counter!(crate::metrics::CLUSTER_OWNERSHIP_CHANGES, "kind" => "released")
                    .increment(released);
                tracing::info!(tenants = released, "tenants and lease handed back");
            }
            Err(error) => tracing::warn!(
                %error,
                "could not hand the tenants and the lease back; they are taken when the lease expires"
            ),
        }
        let _ = self.stop_server.send(());
        if tokio::time::timeout(grace, server).await.is_err() {
            tracing::warn!("http requests still open after the grace period");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on SIGTERM or SIGINT.
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that arrives while the engine is still starting (its HTTP server may already answer)
/// then waits for the future instead of killing the process with its default action, which
/// would skip the hand-over and leave the embedded PostgreSQL running.
pub fn termination_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail on Unix");
    let mut interrupt =
        signal(SignalKind::interrupt()).expect("installing a SIGINT handler cannot fail on Unix");
    async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("sigterm received"),
            _ = interrupt.recv() => tracing::info!("sigint received"),
        }
    }
}
