//! The ownership pass: every `cluster.heartbeat_ms`, this instance reads the live instances,
//! claims the tenants with staged work that prefer it and that nobody live owns, hands the
//! tenants it owns but that prefer another live instance to that instance (a new instance takes
//! its share this way), and tells the supervisor what it owns now.
//!
//! Safety does not depend on this pass being timely: every chunk transaction is fenced by the
//! owner row and its epoch (`store/ownership.rs`), so a late or stale pass can only delay work,
//! never let two instances write for one tenant.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::view::ClusterView;
use crate::actors::EngineHandle;
use crate::domain::TenantId;
use crate::store::{ownership, Pool, StoreError};

pub struct OwnershipJob {
    pub pool: Pool,
    pub view: Arc<ClusterView>,
    pub engine: EngineHandle,
    pub interval: Duration,
    /// What the last pass found owned here.
    pub owned: HashMap<TenantId, i64>,
    /// Wakes the pass early: the instances changed (see `notifications`).
    pub membership_changed: Arc<tokio::sync::Notify>,
}

impl OwnershipJob {
    async fn pass(&mut self) -> Result<(), StoreError> {
        let me = self.view.instance_id.clone();
        let live = ownership::live_instances(&self.pool).await?;
        if !live.contains(&me) {
            // This instance's own lease is not live (its heartbeat is behind): it can claim
            // nothing, and its fenced writes fail until the heartbeat renews the lease.
            return Ok(());
        }
        self.view.set_live(live);
        let mut candidates: HashSet<TenantId> = ownership::tenants_with_work(&self.pool)
            .await?
            .into_iter()
            .collect();
        candidates.extend(self.owned.keys().copied());
        let preferred_here: Vec<TenantId> = candidates
            .into_iter()
            .filter(|tenant_id| self.view.prefers_this_instance(*tenant_id))
            .collect();
        let mut owned: HashMap<TenantId, i64> = ownership::claim(&self.pool, &me, &preferred_here)
            .await?
            .into_iter()
            .collect();
        let claimed = owned
            .keys()
            .filter(|tenant_id| !self.owned.contains_key(tenant_id))
            .count();
        // Tenants that prefer another live instance go to it.
        let mut moves: HashMap<String, Vec<TenantId>> = HashMap::new();
        for tenant_id in owned.keys() {
            let preferred = self.view.preferred(*tenant_id);
            if preferred != me {
                moves.entry(preferred).or_default().push(*tenant_id);
            }
        }
        for (to, tenants) in moves {
            let handed = ownership::hand_over(&self.pool, &me, &to, &tenants).await?;
            if !handed.is_empty() {
                tracing::info!(to = %to, tenants = handed.len(), "tenants handed over to the instance they prefer");
                metrics::counter!(crate::metrics::CLUSTER_OWNERSHIP_CHANGES, "kind" => "handed_over")
                    .increment(handed.len() as u64);
            }
            for tenant_id in handed {
                owned.remove(&tenant_id);
            }
        }
        if claimed > 0 {
            metrics::counter!(crate::metrics::CLUSTER_OWNERSHIP_CHANGES, "kind" => "claimed")
                .increment(claimed as u64);
        }
        self.engine.owned_tenants(owned.clone());
        self.owned = owned;
        Ok(())
    }
}

impl crate::jobs::Job for OwnershipJob {
    fn name(&self) -> &'static str {
        "ownership"
    }

    async fn run_once(&mut self) -> Duration {
        if let Err(error) = self.pass().await {
            tracing::warn!(%error, "ownership pass failed; retrying at the next");
        }
        self.interval
    }

    fn wake_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.membership_changed.clone())
    }
}
