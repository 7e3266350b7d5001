//! `GET /health` and `GET /health/database`.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::AppState;
use crate::store::{queries, reads};

/// Liveness: the process serves HTTP.
pub fn liveness() -> Response {
    warp::reply::json(&json!({ "status": "ok", "status_vi": "hoạt động" })).into_response()
}

/// Readiness of the database: one round trip on each pool (at once), and the writers' state.
/// Healthy only when both pools answer: reads and submissions each depend on their own pool.
pub async fn database(state: Arc<AppState>) -> Response {
    let (write_ping, read_ping, engine_state_opt) = tokio::join!(
        timed(queries::ping(&state.pool)),
        timed(reads::ping(&state.read_pool)),
        state.engine.state(),
    );
    let healthy = write_ping.0.is_ok() && read_ping.0.is_ok();
    let (status, status_code, status_vi) = if healthy {
        (StatusCode::OK, "healthy", "hoạt động tốt")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy",
            "không hoạt động",
        )
    };
    let write_state = state.pool.state();
    let read_state = state.read_pool.state();
    let body = json!({
        "status": status_code,
        "status_vi": status_vi,
        "latency_ms": write_ping.1.max(read_ping.1),
        "error": write_ping.0.as_ref().err().or(read_ping.0.as_ref().err()).map(|error| error.to_string()),
        "write_pool": {
            "ok": write_ping.0.is_ok(),
            "latency_ms": write_ping.1,
            "error": write_ping.0.as_ref().err().map(|error| error.to_string()),
            "pool_size": state.settings.database.pool_size,
            "connections": write_state.connections,
            "idle": write_state.idle_connections,
        },
        "read_pool": {
            "ok": read_ping.0.is_ok(),
            "latency_ms": read_ping.1,
            "error": read_ping.0.as_ref().err().map(|error| error.to_string()),
            "role": read_ping.0.as_ref().ok(),
            "pool_size": state.settings.database.read_pool_size,
            "connections": read_state.connections,
            "idle": read_state.idle_connections,
        },
        "writers": {
            "count": state.settings.writers.count,
            "queued_chunks": engine_state_opt.map(|engine| engine.writer_queue),
            "restarts": engine_state_opt.map(|engine| engine.writer_restarts),
        },
    });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Awaits `future` and how long it took, in milliseconds rounded to hundredths.
async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, f64) {
    let started = std::time::Instant::now();
    let output = future.await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    (output, (latency_ms * 100.0).round() / 100.0)
}
