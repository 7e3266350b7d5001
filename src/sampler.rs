//! The metrics sampler: every `metrics.sample_interval_secs` it reads pool state, the backlog
//! and PostgreSQL's statistics, and sets the gauges that no event updates. Sampling here, not per
//! scrape, keeps a busy Prometheus from adding queries to a busy database.

use std::sync::Arc;
use std::time::Duration;

use crate::http::AppState;
use crate::metrics::{self as names, TOP_TENANTS};
use crate::store::queries;

/// Runs until the task is aborted at shutdown.
pub async fn run(state: Arc<AppState>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        sample(&state).await;
        state.metrics.run_upkeep();
    }
}

async fn sample(state: &AppState) {
    if let Ok(ready) =
        crate::store::audit_log::months_ahead(&state.pool, &state.settings.audit.timezone).await
    {
        metrics::gauge!(names::AUDIT_PARTITIONS_AHEAD).set(ready as f64);
    }
    let pool_state = state.pool.state();
    let pool_size = state.settings.database.pool_size.max(1) as f64;
    let active = pool_state
        .connections
        .saturating_sub(pool_state.idle_connections) as f64;
    metrics::gauge!(names::POOL_CONNECTIONS, "pool" => "request", "state" => "active").set(active);
    metrics::gauge!(names::POOL_CONNECTIONS, "pool" => "request", "state" => "idle")
        .set(pool_state.idle_connections as f64);
    metrics::gauge!(names::POOL_UTILIZATION, "pool" => "request").set(active / pool_size);

    if let Some(engine) = state.engine.state().await {
        let writers = state.settings.writers.count.max(1) as f64;
        let busy = (engine.writer_queue as f64).min(writers);
        metrics::gauge!(names::POOL_CONNECTIONS, "pool" => "writers", "state" => "active")
            .set(busy);
        metrics::gauge!(names::POOL_CONNECTIONS, "pool" => "writers", "state" => "idle")
            .set(writers - busy);
        metrics::gauge!(names::POOL_UTILIZATION, "pool" => "writers").set(busy / writers);
        metrics::gauge!(names::TENANT_ACTORS).set(engine.tenant_actors as f64);
    }
    metrics::gauge!(names::BACKLOG_RECORDS).set(state.engine.total_backlog() as f64);

    match queries::largest_backlogs(&state.pool, TOP_TENANTS as i64).await {
        Ok(backlogs) => {
            for (tenant_id, records) in backlogs {
                metrics::gauge!(names::TENANT_BACKLOG_RECORDS, "tenant_id" => tenant_id.to_string()).set(records as f64);
            }
        }
        Err(error) => tracing::debug!(%error, "backlog sample failed"),
    }
    match crate::store::webhooks::backlog(&state.pool).await {
        Ok(backlog) => {
            metrics::gauge!(names::WEBHOOK_DUE_DELIVERIES).set(backlog.due as f64);
            metrics::gauge!(names::WEBHOOK_OLDEST_DUE).set(backlog.oldest_due_secs);
        }
        Err(error) => tracing::debug!(%error, "webhook backlog sample failed"),
    }
    if let Ok(failed) = crate::store::webhooks::failed_count(&state.pool).await {
        metrics::gauge!(names::WEBHOOK_FAILED_DELIVERIES).set(failed as f64);
    }
    match queries::database_statistics(&state.pool).await {
        Ok(statistics) => {
            metrics::gauge!(names::POSTGRES_CACHE_HIT_RATIO).set(statistics.cache_hit_ratio);
            metrics::counter!(names::POSTGRES_CHECKPOINTS, "kind" => "timed")
                .absolute(statistics.checkpoints_timed.max(0) as u64);
            metrics::counter!(names::POSTGRES_CHECKPOINTS, "kind" => "requested")
                .absolute(statistics.checkpoints_requested.max(0) as u64);
        }
        Err(error) => tracing::debug!(%error, "database statistics sample failed"),
    }
}
