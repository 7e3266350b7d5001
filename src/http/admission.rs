//! Admission of submissions: the memory that bodies being read, parsed and staged may hold at
//! once (`ingest.admission_budget_bytes`), and the answer a client gets when its turn is too far
//! away.
//!
//! **Charge.** A submission is charged, before its body is read, what it holds at its peak:
//! the body, and while it is parsed the encoded chunks and the encoder's scratch buffers,
//! measured by `examples/prepare_scan.rs` on the load test's records at 0.13 × the body plus
//! about 2.2 MB (0.17 × a 100,000-record body of 51 MB, 0.55 × a 10,000-record one of 5.1 MB).
//! Once parsed, the body is gone and the charge shrinks to what staging holds: the chunks'
//! payloads and the staging statement's copy of them ([`Admission::shrink_to`]).
//!
//! **Two lanes.** A submission charged more than a quarter of the budget is *large*. Large
//! submissions queue among themselves (first come, first served) and may hold up to three
//! quarters of the budget together, so several are parsed at once when they fit; small ones
//! queue among themselves and may use the whole budget, except that while a large one waits
//! they keep to their quarter (so large ones are not starved). A small scan therefore never
//! waits behind a large one, and the memory of submissions in progress never exceeds the
//! budget.
//!
//! **Refusing early.** Each lane measures the rate at which its charges are released. A
//! submission whose estimated wait (the charges ahead of it in its lane, and those of clients
//! already told to come back, at that rate) exceeds `ingest.admission_wait_secs` is answered
//! 503 at once, its body unread, with a `Retry-After` at which it should find a short queue;
//! the estimate then counts it as coming back, so the next refusal names a later time. With no
//! rate measured yet, a submission waits the whole bound, as one that finds its estimate wrong
//! does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Kibibytes of encoder scratch (output buffers, lz4's worst case for one chunk) a parse holds
/// besides the chunks it has encoded; measured about 2.2 MB, rounded up.
const PARSE_SCRATCH_KIB: u64 = 2_560;

/// The chunks held during a parse, as a fraction of the body: measured 0.13, rounded up.
const CHUNKS_PER_BODY: (u64, u64) = (3, 20);

/// A submission that waited this long for admission left its body unread long enough for the
/// client's kernel to probe a zero window (the first probe follows one retransmission time-out,
/// at least 200 ms); see [`super::close_connection_if`].
const WAIT_THAT_STALLS: Duration = Duration::from_millis(100);

/// Releases older than this do not count in a lane's rate.
const RATE_WINDOW: Duration = Duration::from_secs(30);

/// Releases a lane's rate needs before it is trusted to refuse anyone early.
const RATE_MIN_RELEASES: usize = 4;

/// Longest `Retry-After` given, in seconds.
const RETRY_AFTER_MAX_SECS: u64 = 600;

/// `Retry-After` of a refusal with no rate to estimate from, in seconds.
const RETRY_AFTER_UNKNOWN_SECS: u64 = 2;

/// Kibibytes a body of `bytes` is charged until it is parsed: the largest buffer it may be read
/// into, and the parse's chunks and scratch.
pub fn charge_kib(bytes: u64) -> u64 {
    let body_kib = bytes.div_ceil(1024);
    let buffer_kib = usize::try_from(bytes)
        .map_or(bytes, |length| {
            crate::memory::body_buffer_bound(length) as u64
        })
        .div_ceil(1024);
    buffer_kib + body_kib * CHUNKS_PER_BODY.0 / CHUNKS_PER_BODY.1 + PARSE_SCRATCH_KIB
}

/// Kibibytes a parsed submission whose chunks' payloads take `payload_bytes` is charged while
/// it is staged: the payloads, and the staging statement's copy of them.
pub fn staging_charge_kib(payload_bytes: u64) -> u64 {
    (payload_bytes * 2).div_ceil(1024) + 64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Small,
    Large,
}

/// The admission budget of one engine instance.
pub struct AdmissionControl {
    budget_kib: u64,
    /// The small lane's own share while a large submission waits: a quarter of the budget.
    small_share_kib: u64,
    /// What large submissions may hold together: the rest.
    large_share_kib: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    in_use_kib: u64,
    large_in_use_kib: u64,
    small: LaneQueue,
    large: LaneQueue,
    next_waiter_id: u64,
}

#[derive(Default)]
struct LaneQueue {
    waiting: VecDeque<Waiter>,
    /// Recent releases: when, and how many KiB.
    releases: VecDeque<(Instant, u64)>,
    /// When the submissions told to come back will have been admitted, at the lane's rate.
    promised_until_opt: Option<Instant>,
}

struct Waiter {
    id: u64,
    charge_kib: u64,
    /// When it stops waiting.
    deadline: Instant,
    /// Its turn, or its refusal once the lane's pace says its turn is past its deadline.
    answer: oneshot::Sender<Result<(), Refusal>>,
}

/// A submission's hold on the budget, released when dropped.
pub struct Admission {
    control: Arc<AdmissionControl>,
    lane: Lane,
    charge_kib: u64,
    /// The submission waited long enough for its body to stall the client's connection.
    pub waited: bool,
}

/// Why a submission was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// When to send it again.
    pub retry_after_secs: u64,
    /// Refused after waiting the whole bound, rather than at once.
    pub after_waiting: bool,
}

impl AdmissionControl {
    pub fn new(budget_bytes: u64) -> Arc<AdmissionControl> {
        let budget_kib = (budget_bytes / 1024).max(4);
        let small_share_kib = budget_kib / 4;
        Arc::new(AdmissionControl {
            budget_kib,
            small_share_kib,
            large_share_kib: budget_kib - small_share_kib,
            state: Mutex::new(State::default()),
        })
    }

    /// The lane of a submission charged `charge_kib`, and its charge within that lane (a large
    /// one is charged at most the large share, so even the largest body can be admitted).
    fn lane_of(&self, charge_kib: u64) -> (Lane, u64) {
        if charge_kib > self.small_share_kib {
            (Lane::Large, charge_kib.min(self.large_share_kib))
        } else {
            (Lane::Small, charge_kib.max(1))
        }
    }

    /// Admits a submission of `declared_bytes` (its body's declared length, or the route's
    /// limit), waiting at most `wait` for its turn.
    pub async fn admit(
        self: &Arc<Self>,
        declared_bytes: u64,
        wait: Duration,
    ) -> Result<Admission, Refusal> {
        let (lane, charge_kib) = self.lane_of(charge_kib(declared_bytes));
        let asked = Instant::now();
        let mut turn = {
            let mut state = self.lock();
            let queue = state.queue(lane);
            if queue.waiting.is_empty() && self.fits(&state, lane, charge_kib) {
                state.take(lane, charge_kib);
                state.publish();
                return Ok(self.admission(lane, charge_kib, false));
            }
            if let Some(estimate) = self.estimate_wait(&mut state, lane, charge_kib, asked) {
                if estimate > wait {
                    return Err(Refusal {
                        retry_after_secs: promise(&mut state, lane, asked, estimate, wait),
                        after_waiting: false,
                    });
                }
            }
            let (answer, receiver) = oneshot::channel();
            let id = state.next_waiter_id;
            state.next_waiter_id += 1;
            state.queue_mut(lane).waiting.push_back(Waiter {
                id,
                charge_kib,
                deadline: asked + wait,
                answer,
            });
            state.publish();
            WaitingTurn {
                control: self.clone(),
                lane,
                id,
                charge_kib,
                receiver,
                settled: false,
            }
        };
        match tokio::time::timeout(wait, &mut turn.receiver).await {
            Ok(Ok(Ok(()))) => {
                turn.settled = true;
                Ok(self.admission(lane, charge_kib, asked.elapsed() >= WAIT_THAT_STALLS))
            }
            Ok(Ok(Err(refusal))) => {
                turn.settled = true;
                Err(refusal)
            }
            _ => {
                // Given up; granted at this very moment, the turn's drop gives it back.
                drop(turn);
                let mut state = self.lock();
                let now = Instant::now();
                let retry_after_secs = match self.estimate_wait(&mut state, lane, charge_kib, now) {
                    Some(estimate) => promise(&mut state, lane, now, estimate, wait),
                    None => RETRY_AFTER_UNKNOWN_SECS,
                };
                Err(Refusal {
                    retry_after_secs,
                    after_waiting: true,
                })
            }
        }
    }

    fn admission(self: &Arc<Self>, lane: Lane, charge_kib: u64, waited: bool) -> Admission {
        Admission {
            control: self.clone(),
            lane,
            charge_kib,
            waited,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent counts.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fits(&self, state: &State, lane: Lane, charge_kib: u64) -> bool {
        if state.in_use_kib + charge_kib > self.budget_kib {
            return false;
        }
        match lane {
            Lane::Large => state.large_in_use_kib + charge_kib <= self.large_share_kib,
            Lane::Small => {
                let small_in_use = state.in_use_kib - state.large_in_use_kib;
                state.large.waiting.is_empty() || small_in_use + charge_kib <= self.small_share_kib
            }
        }
    }

    /// How long a submission of `lane` charged `charge_kib` would wait from `now`: the charges
    /// ahead of it beyond what its lane can hold, then those of clients told to come back,
    /// then its own, at the lane's recent release rate. None without a rate.
    fn estimate_wait(
        &self,
        state: &mut State,
        lane: Lane,
        charge_kib: u64,
        now: Instant,
    ) -> Option<Duration> {
        let (in_use_kib, capacity_kib) = self.lane_load(state, lane);
        let queue = state.queue_mut(lane);
        let kib_per_second = queue.rate_kib_per_second(now)?;
        let queued_kib: u64 = queue.waiting.iter().map(|waiter| waiter.charge_kib).sum();
        let ahead_kib = (in_use_kib + queued_kib + charge_kib).saturating_sub(capacity_kib);
        let queue_done = now + Duration::from_secs_f64(ahead_kib as f64 / kib_per_second);
        // Clients told to come back are ahead of this one.
        let done = match queue.promised_until_opt.filter(|until| *until > now) {
            Some(promised_until) => queue_done
                .max(promised_until + Duration::from_secs_f64(charge_kib as f64 / kib_per_second)),
            None => queue_done,
        };
        Some(done.saturating_duration_since(now))
    }

    /// Gives `kib` back to the budget and admits whoever now fits.
    fn release(&self, lane: Lane, kib: u64) {
        if kib == 0 {
            return;
        }
        let mut state = self.lock();
        state.in_use_kib -= kib;
        if lane == Lane::Large {
            state.large_in_use_kib -= kib;
        }
        let now = Instant::now();
        state.queue_mut(lane).record_release(now, kib);
        self.admit_waiting(&mut state);
        self.refuse_hopeless(&mut state, lane, now);
    }

    /// Answers at once the waiters of `lane` whose turn, at the lane's pace, comes after their
    /// deadline: they would only hold their connection to be refused then. Each is told when
    /// to come back, after the queue left and those told before it.
    fn refuse_hopeless(&self, state: &mut State, lane: Lane, now: Instant) {
        let (in_use_kib, capacity_kib) = self.lane_load(state, lane);
        let queue = state.queue_mut(lane);
        let Some(kib_per_second) = queue.rate_kib_per_second(now) else {
            return;
        };
        let mut ahead_kib = in_use_kib;
        let mut hopeless = Vec::new();
        let mut index = 0;
        while index < queue.waiting.len() {
            let waiter = &queue.waiting[index];
            let over_kib = (ahead_kib + waiter.charge_kib).saturating_sub(capacity_kib);
            let turn = now + Duration::from_secs_f64(over_kib as f64 / kib_per_second);
            if turn > waiter.deadline {
                hopeless.push(queue.waiting.remove(index).expect("the index is in range"));
            } else {
                ahead_kib += waiter.charge_kib;
                index += 1;
            }
        }
        for waiter in hopeless {
            let wait = waiter.deadline.saturating_duration_since(now);
            let estimate = self
                .estimate_wait(state, lane, waiter.charge_kib, now)
                .unwrap_or(wait);
            let retry_after_secs = promise(state, lane, now, estimate, wait);
            let _ = waiter.answer.send(Err(Refusal {
                retry_after_secs,
                after_waiting: false,
            }));
        }
        state.publish();
    }

    /// What `lane` holds now, and what it may hold.
    fn lane_load(&self, state: &State, lane: Lane) -> (u64, u64) {
        match lane {
            Lane::Large => (state.large_in_use_kib, self.large_share_kib),
            Lane::Small => (
                state.in_use_kib - state.large_in_use_kib,
                if state.large.waiting.is_empty() {
                    self.budget_kib - state.large_in_use_kib
                } else {
                    self.small_share_kib
                },
            ),
        }
    }

    /// Admits the waiters at the head of each lane while they fit.
    fn admit_waiting(&self, state: &mut State) {
        self.admit_fitting(state);
        state.publish();
    }

    fn admit_fitting(&self, state: &mut State) {
        loop {
            let mut admitted = false;
            for lane in [Lane::Small, Lane::Large] {
                let Some(charge_kib) = state.queue(lane).waiting.front().map(|w| w.charge_kib)
                else {
                    continue;
                };
                if !self.fits(state, lane, charge_kib) {
                    continue;
                }
                let waiter = state
                    .queue_mut(lane)
                    .waiting
                    .pop_front()
                    .expect("the head was just read");
                state.take(lane, charge_kib);
                // A receiver already dropped belongs to a turn about to see it was granted and
                // give the charge back (see `WaitingTurn`'s drop).
                let _ = waiter.answer.send(Ok(()));
                admitted = true;
            }
            if !admitted {
                return;
            }
        }
    }
}

impl State {
    /// Publishes each lane's charges in use and waiting submissions (`GET /metrics`).
    fn publish(&self) {
        let small_in_use_kib = self.in_use_kib - self.large_in_use_kib;
        for (lane, in_use_kib, waiting) in [
            ("small", small_in_use_kib, self.small.waiting.len()),
            ("large", self.large_in_use_kib, self.large.waiting.len()),
        ] {
            metrics::gauge!(crate::metrics::ADMISSION_IN_USE_BYTES, "lane" => lane)
                .set((in_use_kib * 1024) as f64);
            metrics::gauge!(crate::metrics::ADMISSION_WAITING, "lane" => lane).set(waiting as f64);
        }
    }

    fn queue(&self, lane: Lane) -> &LaneQueue {
        match lane {
            Lane::Small => &self.small,
            Lane::Large => &self.large,
        }
    }

    fn queue_mut(&mut self, lane: Lane) -> &mut LaneQueue {
        match lane {
            Lane::Small => &mut self.small,
            Lane::Large => &mut self.large,
        }
    }

    fn take(&mut self, lane: Lane, charge_kib: u64) {
        self.in_use_kib += charge_kib;
        if lane == Lane::Large {
            self.large_in_use_kib += charge_kib;
        }
    }
}

impl LaneQueue {
    fn record_release(&mut self, now: Instant, kib: u64) {
        self.releases.push_back((now, kib));
        while self
            .releases
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.releases.pop_front();
        }
    }

    /// KiB released per second over the window, once enough releases were seen.
    fn rate_kib_per_second(&self, now: Instant) -> Option<f64> {
        let recent: Vec<&(Instant, u64)> = self
            .releases
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= RATE_WINDOW)
            .collect();
        if recent.len() < RATE_MIN_RELEASES {
            return None;
        }
        let first = recent.first()?.0;
        let span = now.duration_since(first).as_secs_f64().max(0.5);
        let kib: u64 = recent.iter().map(|(_, kib)| kib).sum();
        Some(kib as f64 / span).filter(|rate| *rate > 0.0)
    }
}

/// Counts a refused submission as coming back when its turn is estimated (`now` +
/// `estimate`), and returns its `Retry-After`: half the wait bound before that turn, so it
/// waits in the queue rather than arrives late.
fn promise(state: &mut State, lane: Lane, now: Instant, estimate: Duration, wait: Duration) -> u64 {
    state.queue_mut(lane).promised_until_opt = Some(now + estimate);
    let retry_after = estimate.saturating_sub(wait / 2);
    retry_after
        .as_secs_f64()
        .ceil()
        .clamp(1.0, RETRY_AFTER_MAX_SECS as f64) as u64
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Admission")
            .field("lane", &self.lane)
            .field("charge_kib", &self.charge_kib)
            .field("waited", &self.waited)
            .finish()
    }
}

impl Admission {
    /// Gives back the part of the charge above `kib` (a parsed submission no longer holds its
    /// body), so the next submissions can be admitted while this one is staged.
    pub fn shrink_to(&mut self, kib: u64) {
        if kib < self.charge_kib {
            let released = self.charge_kib - kib;
            self.charge_kib = kib;
            self.control.release(self.lane, released);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.control.release(self.lane, self.charge_kib);
    }
}

/// A submission waiting in its lane. Dropped before it took its answer (it gave up, or its
/// client went away), it leaves the queue; if it was granted its turn meanwhile, it gives the
/// charge back.
struct WaitingTurn {
    control: Arc<AdmissionControl>,
    lane: Lane,
    id: u64,
    charge_kib: u64,
    receiver: oneshot::Receiver<Result<(), Refusal>>,
    /// Its answer was taken (an admission, or a refusal).
    settled: bool,
}

impl Drop for WaitingTurn {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut state = self.control.lock();
        let queue = state.queue_mut(self.lane);
        if let Some(position) = queue.waiting.iter().position(|waiter| waiter.id == self.id) {
            queue.waiting.remove(position);
            // A large waiter leaving may let small ones past their quarter again.
            self.control.admit_waiting(&mut state);
        } else {
            drop(state);
            // Out of the queue, so answered: a turn nobody will use is given back.
            if let Ok(Ok(())) = self.receiver.try_recv() {
                self.control.release(self.lane, self.charge_kib);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// Eight releases of 58 MiB in the large lane over the last 2 s: a pace of about
    /// 232 MiB/s, a 100,000-record scan's turn every quarter second.
    fn seed_large_lane_pace(control: &AdmissionControl) {
        let mut state = control.lock();
        let now = Instant::now();
        for index in 0..8u64 {
            state
                .large
                .record_release(now - Duration::from_millis(250 * (8 - index)), 58 * 1024);
        }
    }

    #[test]
    fn a_body_is_charged_what_it_holds_while_parsed() {
        // A 100,000-record scan of the load test: 51 MB, measured peak 1.17 x the body.
        let charge = charge_kib(51_000_000);
        assert!((58_000..61_000).contains(&charge), "{charge}");
        // The largest buffer the body may be read into (51,796,875 bytes: a sixty-fourth more),
        // 0.15 x the body and the scratch.
        assert_eq!(charge, 50_583 + 7_470 + PARSE_SCRATCH_KIB);
        assert_eq!(charge_kib(0), PARSE_SCRATCH_KIB);
        assert_eq!(staging_charge_kib(1024 * 1024), 2048 + 64);
    }

    #[tokio::test]
    async fn two_large_submissions_are_admitted_at_once_when_the_budget_holds_both() {
        let control = AdmissionControl::new(160 * MIB);
        let first = control.admit(51_000_000, Duration::ZERO).await.unwrap();
        let second = control.admit(51_000_000, Duration::ZERO).await.unwrap();
        assert_eq!((first.lane, second.lane), (Lane::Large, Lane::Large));
        // A third does not fit in the large lane's three quarters.
        let refused = control
            .admit(51_000_000, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(refused.after_waiting);
        // Parsed, the two shrink to their staging charge, and a third fits.
        let (mut first, mut second) = (first, second);
        first.shrink_to(staging_charge_kib(6_700_000));
        second.shrink_to(staging_charge_kib(6_700_000));
        let third = control.admit(51_000_000, Duration::ZERO).await.unwrap();
        drop((first, second, third));
        assert_eq!(control.lock().in_use_kib, 0);
    }

    #[tokio::test]
    async fn a_small_submission_passes_waiting_large_ones_within_its_quarter() {
        let control = AdmissionControl::new(160 * MIB);
        let _first = control.admit(51_000_000, Duration::ZERO).await.unwrap();
        let _second = control.admit(51_000_000, Duration::ZERO).await.unwrap();
        let waiting = {
            let control = control.clone();
            tokio::spawn(async move { control.admit(51_000_000, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(control.lock().large.waiting.len(), 1);
        let small = control.admit(3_600_000, Duration::ZERO).await.unwrap();
        assert_eq!(small.lane, Lane::Small);
        waiting.abort();
        let _ = waiting.await;
        assert!(
            control.lock().large.waiting.is_empty(),
            "a waiter whose client went away leaves the queue"
        );
    }

    #[tokio::test]
    async fn small_submissions_keep_to_their_quarter_while_a_large_one_waits() {
        let control = AdmissionControl::new(64 * MIB);
        // Eight small ones (4.9 MiB each) hold 39 MiB: more than their quarter (16 MiB).
        let mut small = Vec::new();
        for _ in 0..8 {
            let admission = control.admit(2 * MIB, Duration::ZERO).await.unwrap();
            assert_eq!(admission.lane, Lane::Small);
            small.push(admission);
        }
        // A large one (37 MiB) does not fit beside them.
        let large = {
            let control = control.clone();
            tokio::spawn(async move { control.admit(30 * MIB, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A large one waits: another small one is not admitted past the small quarter.
        let refused = control
            .admit(2 * MIB, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(refused.after_waiting);
        small.truncate(1);
        let large = large.await.unwrap().unwrap();
        assert_eq!(large.lane, Lane::Large);
    }

    #[tokio::test]
    async fn with_a_measured_rate_a_long_queue_is_refused_at_once_with_a_later_retry_after() {
        let control = AdmissionControl::new(160 * MIB);
        seed_large_lane_pace(&control);
        let _held = [
            control.admit(51_000_000, Duration::ZERO).await.unwrap(),
            control.admit(51_000_000, Duration::ZERO).await.unwrap(),
        ];
        // About 232 MiB/s: a queue of 40 waiting 58 MiB submissions is about 10 s long.
        let mut waiting = Vec::new();
        for _ in 0..40 {
            let control = control.clone();
            waiting.push(tokio::spawn(async move {
                control.admit(51_000_000, Duration::from_secs(30)).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let refused = control
            .admit(51_000_000, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "refused at once"
        );
        assert!(!refused.after_waiting);
        assert!((5..=15).contains(&refused.retry_after_secs), "{refused:?}");
        // Each refused client counts as coming back: eight more (0.25 s of the lane each at
        // this rate) are told 2 s later at least.
        let mut later = refused;
        for _ in 0..8 {
            later = control
                .admit(51_000_000, Duration::from_secs(5))
                .await
                .unwrap_err();
        }
        assert!(
            later.retry_after_secs >= refused.retry_after_secs + 2,
            "{later:?} after {refused:?}"
        );
        for task in waiting {
            task.abort();
        }
    }

    #[tokio::test]
    async fn waiters_whose_turn_is_past_their_deadline_are_answered_at_the_next_release() {
        let control = AdmissionControl::new(160 * MIB);
        let first = control.admit(51_000_000, Duration::ZERO).await.unwrap();
        let _second = control.admit(51_000_000, Duration::ZERO).await.unwrap();
        // A burst arrives before the lane has a pace: all of it queues, with a 5 s bound.
        let mut waiting = Vec::new();
        for _ in 0..40 {
            let control = control.clone();
            waiting.push(tokio::spawn(async move {
                let outcome = control.admit(51_000_000, Duration::from_secs(5)).await;
                (Instant::now(), outcome)
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(control.lock().large.waiting.len(), 40);
        // The pace becomes known.
        seed_large_lane_pace(&control);
        let released_at = Instant::now();
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The head was admitted; the back of the queue, whose turn is over 5 s away, was told
        // at once when to come back, each later than the one before.
        let mut retry_afters = Vec::new();
        for task in waiting {
            if !task.is_finished() {
                task.abort();
                continue;
            }
            let (answered_at, outcome) = task.await.unwrap();
            if let Err(refusal) = outcome {
                assert!(!refusal.after_waiting);
                assert!(answered_at.duration_since(released_at) < Duration::from_secs(1));
                retry_afters.push(refusal.retry_after_secs);
            }
        }
        assert!(retry_afters.len() >= 10, "{retry_afters:?}");
        assert!(
            retry_afters.windows(2).all(|pair| pair[0] <= pair[1]),
            "{retry_afters:?}"
        );
        assert!(
            retry_afters.last() > retry_afters.first(),
            "{retry_afters:?}"
        );
    }
}
