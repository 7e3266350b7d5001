//! The instance table's SQL: heartbeats that renew a lease, and the list of instances with
//! their liveness judged by the database's clock. (The lease is handed back at shutdown with
//! the instance's tenants, in `ownership::leave`.)

use chrono::{DateTime, Utc};

use super::{Pool, StoreError};

/// Records a heartbeat of `instance_id`: its row is created or its lease renewed until
/// `now() + lease_ttl_ms`. Returns how many instances are alive (lease not expired).
pub async fn heartbeat(
    pool: &Pool,
    instance_id: &str,
    http_address: &str,
    lease_ttl_ms: i64,
) -> Result<i64, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    connection
        .execute(
            "INSERT INTO engine_instances (instance_id, http_address, lease_expires_at) \
             VALUES ($1, $2, now() + make_interval(secs => $3::double precision / 1000)) \
             ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now(), \
                 lease_expires_at = excluded.lease_expires_at, http_address = excluded.http_address",
            &[&instance_id, &http_address, &(lease_ttl_ms as f64)],
        )
        .await?;
    let row = connection
        .query_one(
            "SELECT count(*) FROM engine_instances WHERE lease_expires_at > now()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// An instance as recorded.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub instance_id: String,
    pub http_address: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    /// Its lease had not expired when read (by the database's clock).
    pub alive: bool,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub since_heartbeat_ms: i64,
}

/// Every recorded instance, alive first, then by start.
pub async fn instances(pool: &Pool) -> Result<Vec<InstanceRow>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let rows = connection
        .query(
            "SELECT instance_id, http_address, started_at, heartbeat_at, lease_expires_at, \
                    lease_expires_at > now() AS alive, \
                    (extract(epoch FROM now() - heartbeat_at) * 1000)::bigint AS since_heartbeat_ms \
             FROM engine_instances ORDER BY alive DESC, started_at",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(InstanceRow {
                instance_id: row.try_get("instance_id")?,
                http_address: row.try_get("http_address")?,
                started_at: row.try_get("started_at")?,
                heartbeat_at: row.try_get("heartbeat_at")?,
                lease_expires_at: row.try_get("lease_expires_at")?,
                alive: row.try_get("alive")?,
                since_heartbeat_ms: row.try_get("since_heartbeat_ms")?,
            })
        })
        .collect()
}
