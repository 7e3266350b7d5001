//! `GET /health`, `GET /health/database` and `GET /health/connection-pools`.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::AppState;
use crate::store::{queries, reads};

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "ok")]
    status: &'static str,
    #[schema(example = "hoạt động")]
    status_vi: &'static str,
}

/// `GET /health/database`.
#[derive(Serialize, ToSchema)]
pub struct DatabaseHealth {
    /// `healthy` or `unhealthy`.
    #[schema(example = "healthy")]
    status: &'static str,
    #[schema(example = "hoạt động tốt")]
    status_vi: &'static str,
    /// The slower pool's round trip, in milliseconds.
    latency_ms: f64,
    /// The first pool's failure, if any.
    error: Option<String>,
    write_pool: WritePoolHealth,
    read_pool: ReadPoolHealth,
    writers: WritersHealth,
}

/// The request pool's round trip.
#[derive(Serialize, ToSchema)]
pub struct WritePoolHealth {
    ok: bool,
    latency_ms: f64,
    error: Option<String>,
    pool_size: u32,
    connections: u32,
    idle: u32,
}

/// The read pool's round trip, as the row-level-secured reader role.
#[derive(Serialize, ToSchema)]
pub struct ReadPoolHealth {
    ok: bool,
    latency_ms: f64,
    error: Option<String>,
    /// The role the read pool's connections use.
    role: Option<String>,
    pool_size: u32,
    connections: u32,
    idle: u32,
}

/// The writers' state (absent values when the engine did not answer in time).
#[derive(Serialize, ToSchema)]
pub struct WritersHealth {
    count: usize,
    queued_chunks: Option<usize>,
    restarts: Option<u64>,
}

/// `GET /health/connection-pools`.
#[derive(Serialize, ToSchema)]
pub struct ConnectionPools {
    read_pool: PoolUsageBody,
    write_pool: PoolUsageBody,
    /// What an operator should change, in English.
    recommendation: String,
    /// What an operator should change, in Vietnamese.
    recommendation_vi: String,
}

/// One pool's occupancy.
#[derive(Serialize, ToSchema)]
pub struct PoolUsageBody {
    pool_size: u32,
    checked_out: u32,
    checked_in: u32,
    utilization_percent: f64,
    /// `healthy`, `busy` or `saturated`.
    #[schema(example = "healthy")]
    status: &'static str,
    #[schema(example = "hoạt động tốt")]
    status_vi: &'static str,
    /// Check-outs waiting for a connection right now.
    waiting: u64,
    /// Check-outs that gave up since start (each answered 503).
    timed_out_total: u64,
    /// Writer connections outside the pool (write pool only).
    #[serde(skip_serializing_if = "Option::is_none")]
    dedicated_writer_connections: Option<usize>,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    summary = "Liveness / Tình trạng hoạt động",
    description = "Answers 200 while the process serves HTTP. No token. — Trả về 200 khi tiến \
                   trình còn phục vụ HTTP. Không cần mã truy cập.",
    responses((status = 200, description = "Alive / Đang hoạt động", body = Liveness))
)]
pub fn liveness() -> Response {
    warp::reply::json(&Liveness {
        status: "ok",
        status_vi: "hoạt động",
    })
    .into_response()
}

/// Readiness of the database: one round trip on each pool (at once), and the writers' state.
/// Healthy only when both pools answer: reads and submissions each depend on their own pool.
#[utoipa::path(
    get,
    path = "/health/database",
    tag = "health",
    summary = "Database readiness / Tình trạng cơ sở dữ liệu",
    description = "One round trip on each connection pool. 200 when both answer, 503 otherwise. \
                   No token. — Một lượt truy vấn trên mỗi nhóm kết nối. 200 khi cả hai trả lời, \
                   503 nếu không. Không cần mã truy cập.",
    responses(
        (status = 200, description = "Both pools answer / Cả hai nhóm kết nối đều trả lời", body = DatabaseHealth),
        (status = 503, description = "A pool does not answer / Một nhóm kết nối không trả lời", body = DatabaseHealth),
    )
)]
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
    let body = DatabaseHealth {
        status: status_code,
        status_vi,
        latency_ms: write_ping.1.max(read_ping.1),
        error: write_ping
            .0
            .as_ref()
            .err()
            .or(read_ping.0.as_ref().err())
            .map(|error| error.to_string()),
        write_pool: WritePoolHealth {
            ok: write_ping.0.is_ok(),
            latency_ms: write_ping.1,
            error: write_ping.0.as_ref().err().map(|error| error.to_string()),
            pool_size: state.settings.database.pool_size,
            connections: write_state.connections,
            idle: write_state.idle_connections,
        },
        read_pool: ReadPoolHealth {
            ok: read_ping.0.is_ok(),
            latency_ms: read_ping.1,
            error: read_ping.0.as_ref().err().map(|error| error.to_string()),
            role: read_ping.0.as_ref().ok().cloned(),
            pool_size: state.settings.database.read_pool_size,
            connections: read_state.connections,
            idle: read_state.idle_connections,
        },
        writers: WritersHealth {
            count: state.settings.writers.count,
            queued_chunks: engine_state_opt.map(|engine| engine.writer_queue),
            restarts: engine_state_opt.map(|engine| engine.writer_restarts),
        },
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Awaits `future` and how long it took, in milliseconds rounded to hundredths.
async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, f64) {
    let started = std::time::Instant::now();
    let output = future.await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    (output, (latency_ms * 100.0).round() / 100.0)
}

/// How full each pool is, and what to change if one is short. Reads only the pools' counters:
/// no database round trip, so it answers even when the database does not.
#[utoipa::path(
    get,
    path = "/health/connection-pools",
    tag = "health",
    summary = "Connection pool usage / Mức sử dụng nhóm kết nối",
    description = "How full each pool is and what to change if one is short; no database round \
                   trip. No token. — Mức đầy của từng nhóm kết nối và cần thay đổi gì nếu thiếu; \
                   không truy vấn cơ sở dữ liệu. Không cần mã truy cập.",
    responses((status = 200, description = "Pool usage / Mức sử dụng", body = ConnectionPools))
)]
pub fn connection_pools(state: Arc<AppState>) -> Response {
    let read = PoolUsage::of(
        state.settings.database.read_pool_size,
        &state.read_pool.state(),
    );
    let write = PoolUsage::of(state.settings.database.pool_size, &state.pool.state());
    let (recommendation, recommendation_vi) = recommend(&read, &write);
    let mut write_pool = write.body();
    write_pool.dedicated_writer_connections = Some(state.settings.writers.count);
    let body = ConnectionPools {
        read_pool: read.body(),
        write_pool,
        recommendation,
        recommendation_vi,
    };
    warp::reply::json(&body).into_response()
}

/// A pool's occupancy at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PoolUsage {
    pool_size: u32,
    checked_out: u32,
    checked_in: u32,
    /// Check-outs waiting for a connection right now.
    waiting: u64,
    /// Check-outs that gave up since start (each answered 503).
    timed_out_total: u64,
}

/// From this share of a pool checked out, the pool is busy; waiting requests make it saturated.
const BUSY_PERCENT: f64 = 75.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PoolStatus {
    Healthy,
    Busy,
    Saturated,
}

impl PoolStatus {
    fn as_str(self) -> &'static str {
        match self {
            PoolStatus::Healthy => "healthy",
            PoolStatus::Busy => "busy",
            PoolStatus::Saturated => "saturated",
        }
    }

    fn as_str_vi(self) -> &'static str {
        match self {
            PoolStatus::Healthy => "hoạt động tốt",
            PoolStatus::Busy => "đang bận",
            PoolStatus::Saturated => "quá tải",
        }
    }
}

impl PoolUsage {
    fn of(pool_size: u32, state: &bb8::State) -> PoolUsage {
        PoolUsage {
            pool_size,
            checked_out: state.connections.saturating_sub(state.idle_connections),
            checked_in: state.idle_connections,
            waiting: state.statistics.pending_gets(),
            timed_out_total: state.statistics.get_timed_out,
        }
    }

    fn utilization_percent(&self) -> f64 {
        if self.pool_size == 0 {
            return 100.0;
        }
        (self.checked_out as f64 * 1000.0 / self.pool_size as f64).round() / 10.0
    }

    fn status(&self) -> PoolStatus {
        if self.waiting > 0 || self.checked_out >= self.pool_size {
            PoolStatus::Saturated
        } else if self.utilization_percent() >= BUSY_PERCENT {
            PoolStatus::Busy
        } else {
            PoolStatus::Healthy
        }
    }

    fn body(&self) -> PoolUsageBody {
        let status = self.status();
        PoolUsageBody {
            pool_size: self.pool_size,
            checked_out: self.checked_out,
            checked_in: self.checked_in,
            utilization_percent: self.utilization_percent(),
            status: status.as_str(),
            status_vi: status.as_str_vi(),
            waiting: self.waiting,
            timed_out_total: self.timed_out_total,
            dedicated_writer_connections: None,
        }
    }
}

/// What an operator should change, in English and Vietnamese.
fn recommend(read: &PoolUsage, write: &PoolUsage) -> (String, String) {
    let read_short = read.status() >= PoolStatus::Busy;
    let write_short = write.status() >= PoolStatus::Busy;
    match (read_short, write_short) {
        (false, false) => (
            "both pools have headroom; no change needed".into(),
            "cả hai nhóm kết nối còn dư; không cần thay đổi".into(),
        ),
        (true, false) => (
            format!(
                "dashboard reads use {}% of the read pool; raise database.read_pool_size \
                 (PostgreSQL's max_connections must allow the extra connections)",
                read.utilization_percent()
            ),
            format!(
                "truy vấn đọc của bảng điều khiển đang dùng {}% nhóm kết nối đọc; hãy tăng \
                 database.read_pool_size (max_connections của PostgreSQL phải đủ cho các kết nối thêm)",
                read.utilization_percent()
            ),
        ),
        (false, true) => (
            format!(
                "submissions use {}% of the write pool; raise database.pool_size \
                 (PostgreSQL's max_connections must allow the extra connections)",
                write.utilization_percent()
            ),
            format!(
                "các yêu cầu gửi dữ liệu đang dùng {}% nhóm kết nối ghi; hãy tăng \
                 database.pool_size (max_connections của PostgreSQL phải đủ cho các kết nối thêm)",
                write.utilization_percent()
            ),
        ),
        (true, true) => (
            "both pools are nearly full: raise database.read_pool_size and database.pool_size \
             if PostgreSQL has the capacity, otherwise add engine instances or reduce load"
                .into(),
            "cả hai nhóm kết nối gần đầy: hãy tăng database.read_pool_size và database.pool_size \
             nếu PostgreSQL còn đủ năng lực, nếu không hãy thêm phiên bản máy chủ hoặc giảm tải"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(pool_size: u32, checked_out: u32, waiting: u64) -> PoolUsage {
        PoolUsage {
            pool_size,
            checked_out,
            checked_in: 1,
            waiting,
            timed_out_total: 0,
        }
    }

    #[test]
    fn a_pool_is_busy_from_three_quarters_and_saturated_when_full_or_queued() {
        assert_eq!(usage(8, 0, 0).status(), PoolStatus::Healthy);
        assert_eq!(usage(8, 5, 0).status(), PoolStatus::Healthy);
        assert_eq!(usage(8, 6, 0).status(), PoolStatus::Busy);
        assert_eq!(usage(8, 8, 0).status(), PoolStatus::Saturated);
        assert_eq!(usage(8, 1, 3).status(), PoolStatus::Saturated);
        assert_eq!(usage(8, 6, 0).utilization_percent(), 75.0);
        assert_eq!(usage(3, 1, 0).utilization_percent(), 33.3);
    }

    #[test]
    fn the_recommendation_names_the_pool_that_is_short() {
        let idle = usage(8, 0, 0);
        let full = usage(8, 8, 0);
        assert!(recommend(&idle, &idle).0.contains("no change"));
        let (english, vietnamese) = recommend(&full, &idle);
        assert!(english.contains("database.read_pool_size"), "{english}");
        assert!(vietnamese.contains("nhóm kết nối đọc"), "{vietnamese}");
        let (english, _) = recommend(&idle, &full);
        assert!(english.contains("database.pool_size"), "{english}");
        assert!(!english.contains("read_pool_size"), "{english}");
        assert!(recommend(&full, &full).0.contains("both pools"));
    }
}
