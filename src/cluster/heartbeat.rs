//! The heartbeat: every `cluster.heartbeat_ms` this instance renews its lease until
//! `now() + cluster.lease_ttl_ms` (the database's clock) and learns how many instances are
//! alive; at shutdown it hands the lease back (its row goes), so others see it gone at once,
//! while a killed instance's lease simply runs out.

use std::time::Duration;

use crate::store::{instances, Pool};

/// This instance's id: `cluster.instance_id`, or a new UUIDv7.
pub fn instance_id(configured: &str) -> String {
    let configured = configured.trim();
    if configured.is_empty() {
        uuid::Uuid::now_v7().to_string()
    } else {
        configured.to_string()
    }
}

/// The heartbeat as a background job.
pub struct HeartbeatJob {
    pub pool: Pool,
    pub instance_id: String,
    pub http_address: String,
    pub interval: Duration,
    pub lease_ttl: Duration,
}

impl crate::jobs::Job for HeartbeatJob {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    async fn run_once(&mut self) -> Duration {
        match instances::heartbeat(
            &self.pool,
            &self.instance_id,
            &self.http_address,
            self.lease_ttl.as_millis() as i64,
        )
        .await
        {
            Ok(alive) => {
                metrics::gauge!(crate::metrics::CLUSTER_LIVE_INSTANCES).set(alive as f64);
            }
            Err(error) => {
                metrics::counter!(crate::metrics::CLUSTER_HEARTBEAT_FAILURES).increment(1);
                tracing::warn!(%error, "heartbeat failed; retrying at the next beat");
            }
        }
        self.interval
    }
}
