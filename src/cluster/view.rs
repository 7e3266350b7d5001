//! What this instance knows of the cluster: its own id, the instances alive at the last
//! ownership pass, and which of them each tenant prefers.
//!
//! Preference is rendezvous hashing: each tenant ranks the live instances by a hash of
//! (tenant, instance) and prefers the highest. Every instance computes the same ranking from
//! the same list, tenants spread evenly, and when an instance joins or leaves only the tenants
//! it wins or held move. The preference only says who *should* own a tenant; the ownership row
//! (`store/ownership.rs`) says who does.

use std::sync::RwLock;

use sha2::{Digest, Sha256};

use crate::domain::TenantId;

pub struct ClusterView {
    pub instance_id: String,
    live: RwLock<Vec<String>>,
}

impl ClusterView {
    pub fn new(instance_id: String) -> ClusterView {
        ClusterView {
            instance_id,
            live: RwLock::new(Vec::new()),
        }
    }

    /// Records the live instances seen by the last ownership pass.
    pub fn set_live(&self, mut instances: Vec<String>) {
        instances.sort();
        *self
            .live
            .write()
            .expect("the view's lock is never held across a panic") = instances;
    }

    pub fn live(&self) -> Vec<String> {
        self.live
            .read()
            .expect("the view's lock is never held across a panic")
            .clone()
    }

    /// The live instance the tenant prefers; this instance when none is known yet (before the
    /// first pass, or while the database cannot say).
    pub fn preferred(&self, tenant_id: TenantId) -> String {
        let live = self
            .live
            .read()
            .expect("the view's lock is never held across a panic");
        preferred_among(tenant_id, &live).unwrap_or_else(|| self.instance_id.clone())
    }

    pub fn prefers_this_instance(&self, tenant_id: TenantId) -> bool {
        self.preferred(tenant_id) == self.instance_id
    }
}

/// The instance of `instances` with the highest rendezvous score for the tenant.
pub fn preferred_among(tenant_id: TenantId, instances: &[String]) -> Option<String> {
    instances
        .iter()
        .max_by_key(|instance| (score(tenant_id, instance), instance.as_str()))
        .cloned()
}

/// A stable hash of (tenant, instance): the first 8 bytes of SHA-256, the same on every
/// instance, build and platform.
fn score(tenant_id: TenantId, instance_id: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(tenant_id.0.as_bytes());
    hasher.update(instance_id.as_bytes());
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn tenants(count: usize) -> Vec<TenantId> {
        (0..count as u128)
            .map(|index| TenantId(Uuid::from_u128(index * 7_919 + 1)))
            .collect()
    }

    #[test]
    fn tenants_spread_evenly_and_only_the_joining_instances_share_moves() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let four: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let tenants = tenants(3_000);
        let mut counts = std::collections::HashMap::new();
        for tenant in &tenants {
            *counts
                .entry(preferred_among(*tenant, &three).unwrap())
                .or_insert(0) += 1;
        }
        for instance in &three {
            let count = counts[instance];
            assert!(
                (850..=1_150).contains(&count),
                "{instance}: {count} of 3,000"
            );
        }
        let mut moved = 0;
        for tenant in &tenants {
            let before = preferred_among(*tenant, &three).unwrap();
            let after = preferred_among(*tenant, &four).unwrap();
            if before != after {
                assert_eq!(after, "d", "a tenant only ever moves to the new instance");
                moved += 1;
            }
        }
        assert!(
            (600..=900).contains(&moved),
            "{moved} of 3,000 moved to the fourth"
        );
    }

    #[test]
    fn every_instance_computes_the_same_preference() {
        let view = ClusterView::new("b".into());
        assert!(
            view.prefers_this_instance(TenantId(Uuid::nil())),
            "alone before the first pass"
        );
        view.set_live(vec!["c".into(), "a".into(), "b".into()]);
        for tenant in tenants(100) {
            let expected = preferred_among(tenant, &["a".into(), "b".into(), "c".into()]);
            assert_eq!(Some(view.preferred(tenant)), expected);
        }
    }
}
