//! A token bucket in records per second that charges whole chunks.
//!
//! A chunk may be larger than the burst (a 1,000-record chunk for a tenant with a burst of 100),
//! so the bucket lets the balance go negative: a chunk leaves when the balance is positive and
//! the debt delays the next one. Over time the tenant gets exactly its rate. Hand-written rather
//! than `governor` because `governor` refuses a cell count above the burst outright.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    records_per_second: f64,
    burst: f64,
    balance: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(records_per_second: i64, burst: i64) -> TokenBucket {
        let burst = burst.max(1) as f64;
        TokenBucket {
            records_per_second: records_per_second.max(1) as f64,
            burst,
            balance: burst,
            refilled_at: Instant::now(),
        }
    }

    /// Applies new limits, keeping the current balance (capped by the new burst).
    pub fn set_limits(&mut self, records_per_second: i64, burst: i64, now: Instant) {
        self.refill(now);
        self.records_per_second = records_per_second.max(1) as f64;
        self.burst = burst.max(1) as f64;
        self.balance = self.balance.min(self.burst);
    }

    /// How long until a chunk may leave: zero when the balance is positive.
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.balance > 0.0 {
            Duration::ZERO
        } else {
            // A millisecond of slack so the wake-up finds the balance positive.
            Duration::from_secs_f64((-self.balance + 1.0) / self.records_per_second)
                + Duration::from_millis(1)
        }
    }

    /// Charges `records` to the balance.
    pub fn take(&mut self, records: i64) {
        self.balance -= records as f64;
    }

    /// Tokens available now (negative while a large chunk's debt is being paid).
    pub fn balance(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.balance
    }

    /// Current rate limit in records per second.
    pub fn records_per_second(&self) -> f64 {
        self.records_per_second
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.balance = (self.balance + elapsed * self.records_per_second).min(self.burst);
        self.refilled_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_larger_than_the_burst_are_paced_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, 100);
        bucket.refilled_at = start;
        let mut now = start;
        // Ten chunks of 1,000 records at 1,000 records/s with a burst of 100: the last chunk
        // leaves once the first nine chunks' debt beyond the burst (8,900 records) is paid.
        for _ in 0..10 {
            let wait = bucket.wait_time(now);
            now += wait;
            assert!(bucket.wait_time(now).is_zero());
            bucket.take(1000);
        }
        let elapsed = now - start;
        assert!(elapsed >= Duration::from_millis(8900), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(9000), "{elapsed:?}");
    }

    #[test]
    fn a_full_bucket_lets_the_burst_through_at_once() {
        let mut bucket = TokenBucket::new(10, 5000);
        let now = Instant::now();
        assert!(bucket.wait_time(now).is_zero());
        bucket.take(1000);
        assert!(bucket.wait_time(now).is_zero());
    }
}
