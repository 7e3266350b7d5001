//! `GET /health` and `GET /health/database`.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::AppState;
use crate::store::queries;

/// Liveness: the process serves HTTP.
pub fn liveness() -> Response {
    warp::reply::json(&json!({ "status": "ok", "status_vi": "hoạt động" })).into_response()
}

/// Readiness of the database: one round trip on the request pool, and the writers' state.
pub async fn database(state: Arc<AppState>) -> Response {
    let started = std::time::Instant::now();
    let ping = queries::ping(&state.pool).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let pool_state = state.pool.state();
    let engine_state_opt = state.engine.state().await;
    let (status, status_code, status_vi) = match &ping {
        Ok(()) => (StatusCode::OK, "healthy", "hoạt động tốt"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy",
            "không hoạt động",
        ),
    };
    let body = json!({
        "status": status_code,
        "status_vi": status_vi,
        "latency_ms": (latency_ms * 100.0).round() / 100.0,
        "error": ping.as_ref().err().map(|error| error.to_string()),
        "read_pool": {
            "pool_size": state.settings.database.pool_size,
            "connections": pool_state.connections,
            "idle": pool_state.idle_connections,
        },
        "writers": {
            "count": state.settings.writers.count,
            "queued_chunks": engine_state_opt.map(|engine| engine.writer_queue),
            "restarts": engine_state_opt.map(|engine| engine.writer_restarts),
        },
    });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}
