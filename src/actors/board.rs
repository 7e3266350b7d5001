//! The tenant board: each tenant actor's live state, readable without a message round trip.
//!
//! Written only by the tenant actor it describes (and removed when that actor stops); read by
//! the admin API. A `DashMap` because hundreds of tenant actors update it while HTTP threads
//! read it, and its sharded locks keep those from contending.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::domain::TenantId;

/// Writes over this window make up a tenant's current rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

pub type TenantBoard = Arc<DashMap<TenantId, TenantLiveState>>;

#[derive(Debug, Clone, Default)]
pub struct TenantLiveState {
    pub queued_chunks: usize,
    pub in_flight_chunks: usize,
    pub paused: bool,
    recent_writes: VecDeque<(Instant, u64)>,
}

impl TenantLiveState {
    /// Records written.
    pub fn record_write(&mut self, now: Instant, records: u64) {
        self.recent_writes.push_back((now, records));
        self.forget_before(now);
    }

    /// Records per second written over the last [`RATE_WINDOW`].
    pub fn current_rate(&self, now: Instant) -> f64 {
        let written: u64 = self
            .recent_writes
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= RATE_WINDOW)
            .map(|(_, records)| records)
            .sum();
        written as f64 / RATE_WINDOW.as_secs_f64()
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some((at, _)) = self.recent_writes.front() {
            if now.saturating_duration_since(*at) > RATE_WINDOW {
                self.recent_writes.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_only_the_window() {
        let mut state = TenantLiveState::default();
        let start = Instant::now();
        state.record_write(start, 5_000);
        state.record_write(start + Duration::from_secs(3), 5_000);
        assert_eq!(state.current_rate(start + Duration::from_secs(4)), 2_000.0);
        assert_eq!(state.current_rate(start + Duration::from_secs(7)), 1_000.0);
        assert_eq!(state.current_rate(start + Duration::from_secs(20)), 0.0);
    }
}
