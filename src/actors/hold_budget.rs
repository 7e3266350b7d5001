//! How long the writers may hold staged chunks back while submissions wait to be parsed.
//!
//! A staged chunk's records are durable already; a waiting submission's are not acknowledged
//! yet. So while submissions wait for a parsing slot, the writers hold staged chunks back and
//! the cores go to acknowledging first. The hold is bounded by a budget of time that fills while
//! the writers run and drains while they are held: a burst of submissions (up to
//! [`HoldBudget::MAX`] of holding) is acknowledged without the writers competing for the cores,
//! and a stream of submissions that never ends still leaves the writers running at least
//! `1 / (1 + REFILL)` of the time, so staged work keeps moving and the backlog stays bounded.

use std::time::{Duration, Instant};

pub struct HoldBudget {
    /// Seconds of holding left; below zero after the last hold overdrew it (the writers then
    /// run until it is repaid).
    available_secs: f64,
    /// When the budget was last brought up to date, and whether the writers were held since.
    last_update: Instant,
    holding: bool,
}

impl HoldBudget {
    /// The longest the writers are held at a stretch, and the budget's size.
    pub const MAX: Duration = Duration::from_secs(3);

    /// Seconds of holding earned per second of running: at most a third of the time is held
    /// under a steady stream of submissions.
    const REFILL: f64 = 0.5;

    /// A gap between two looks longer than this is not counted as holding: nobody was held
    /// then (held chunks look again every few milliseconds).
    const LONGEST_LOOK_GAP: Duration = Duration::from_millis(100);

    pub fn new(now: Instant) -> HoldBudget {
        HoldBudget {
            available_secs: HoldBudget::MAX.as_secs_f64(),
            last_update: now,
            holding: false,
        }
    }

    /// Whether a staged chunk should wait now, given whether submissions are waiting to be
    /// parsed. Each look accounts for the time since the previous one.
    pub fn hold(&mut self, now: Instant, submissions_waiting: bool) -> bool {
        let elapsed = now.saturating_duration_since(self.last_update);
        self.last_update = now;
        if self.holding && elapsed <= HoldBudget::LONGEST_LOOK_GAP {
            self.available_secs -= elapsed.as_secs_f64();
        } else {
            self.available_secs = (self.available_secs
                + elapsed.as_secs_f64() * HoldBudget::REFILL)
                .min(HoldBudget::MAX.as_secs_f64());
        }
        self.holding = submissions_waiting && self.available_secs > 0.0;
        self.holding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(10);

    /// Looks every `STEP` for `length`, with submissions waiting or not; returns the time held.
    fn run(
        budget: &mut HoldBudget,
        now: &mut Instant,
        length: Duration,
        waiting: bool,
    ) -> Duration {
        let mut held = Duration::ZERO;
        let end = *now + length;
        while *now < end {
            if budget.hold(*now, waiting) {
                held += STEP;
            }
            *now += STEP;
        }
        held
    }

    #[test]
    fn a_burst_shorter_than_the_budget_is_held_throughout() {
        let mut now = Instant::now();
        let mut budget = HoldBudget::new(now);
        let held = run(&mut budget, &mut now, Duration::from_secs(2), true);
        assert_eq!(held, Duration::from_secs(2));
        assert!(!budget.hold(now, false), "nothing waits: the writers run");
    }

    #[test]
    fn a_stream_that_never_ends_leaves_the_writers_two_thirds_of_the_time() {
        let mut now = Instant::now();
        let mut budget = HoldBudget::new(now);
        let first = run(&mut budget, &mut now, HoldBudget::MAX, true);
        assert_eq!(first, HoldBudget::MAX, "held for the whole budget");
        let steady = run(&mut budget, &mut now, Duration::from_secs(60), true);
        let share = steady.as_secs_f64() / 60.0;
        assert!(
            (0.30..=0.36).contains(&share),
            "held {share:.3} of a steady stream"
        );
    }

    #[test]
    fn the_budget_fills_again_while_nothing_waits() {
        let mut now = Instant::now();
        let mut budget = HoldBudget::new(now);
        run(&mut budget, &mut now, HoldBudget::MAX + STEP, true);
        assert!(!budget.hold(now, true), "spent");
        // Six seconds of running earn the whole budget back (at half a second per second).
        run(&mut budget, &mut now, Duration::from_secs(6), false);
        let held = run(&mut budget, &mut now, HoldBudget::MAX, true);
        assert!(held >= HoldBudget::MAX - 2 * STEP, "held {held:?}");
    }

    #[test]
    fn time_between_looks_is_not_counted_as_holding() {
        let mut now = Instant::now();
        let mut budget = HoldBudget::new(now);
        assert!(budget.hold(now, true));
        // No chunk looked for a minute (no staged work): that minute held nobody.
        now += Duration::from_secs(60);
        let held = run(&mut budget, &mut now, Duration::from_secs(2), true);
        assert_eq!(held, Duration::from_secs(2));
    }
}
