//! Exponential backoff with jitter, shared by the tenant actors' retries and the writers'
//! reconnects.

use std::time::Duration;

use rand::Rng;

/// `base * 2^attempt`, capped at `cap`, then jittered down to between half and all of it, so
/// retries of many actors after one outage do not land together.
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    let jitter = rand::thread_rng().gen_range(0.5..=1.0);
    exponential.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for attempt in 0..20 {
            let delay = backoff(base, cap, attempt);
            let ceiling = base.saturating_mul(1 << attempt.min(16)).min(cap);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{attempt}: {delay:?}"
            );
        }
    }
}
