//! The retry budget: a ledger that keeps retries a bounded fraction of the traffic.

use std::time::{Duration, Instant};

use super::policy::InvalidRetryConfig;

/// Number of slots the sliding window is cut into.
const SLOTS: usize = 10;
/// What one retry costs, in the ledger's fixed-point units.
const RETRY_COST: i64 = 1_000;

/// Limits retries to a fraction of first attempts, shared by every call a client makes to one
/// origin.
///
/// Each call deposits once, when its first attempt is sent ([`RetryBudget::deposit`]), and each
/// retry withdraws once ([`RetryBudget::try_withdraw`]). Over any window of `window`, retries
/// may add at most `retry_ratio` × the first attempts of that window, plus a reserve of
/// `min_per_sec` retries per second of the window so that a client with little traffic can
/// still retry. This is the design of tower's `TpsBudget` and of Finagle before it.
///
/// # Why budgets, and not only a maximum number of attempts?
///
/// "At most 3 attempts" still triples the load on a dependency that fails every request, right
/// when it can least afford it: a retry storm. A budget adds at most, say, 20 % on top of
/// normal traffic however many requests fail, while isolated failures on a healthy dependency
/// are retried as before.
///
/// # Time and sharing
///
/// The ledger is plain data and never reads a clock: every method takes `now`. Deposits and
/// withdrawals land in one of ten slots of `window / 10` each and expire when their slot leaves
/// the window, so a deposit counts for between 0.9 and 1 times `window`. A `now` earlier than one
/// seen before (two tasks that read the clock in one order and lock in the other) counts in the
/// current slot; time never runs backwards inside the ledger.
///
/// The ledger owns no lock. To share it between tasks, keep it behind one (the client keeps one
/// per origin, with the other policies' state) and hold it only for the call:
/// [`Retry::on_outcome`](super::Retry::on_outcome) takes it as `&mut` and withdraws only when it
/// is about to schedule a retry.
///
/// # Example
///
/// ```
/// use std::time::{Duration, Instant};
/// use keel_core::machine::retry::RetryBudget;
///
/// // Over 10 s: 1 retry per second in reserve, plus 10 % of first attempts.
/// let mut budget = RetryBudget::new(Duration::from_secs(10), 1, 0.1)?;
/// let t0 = Instant::now();
/// for _ in 0..100 {
///     budget.deposit(t0);
/// }
/// assert_eq!(budget.available(t0), 20); // 10 in reserve + 10 % of 100
/// for _ in 0..20 {
///     assert!(budget.try_withdraw(t0));
/// }
/// assert!(!budget.try_withdraw(t0));
/// // Once the window has slid past them, the withdrawals (and deposits) are forgotten.
/// assert_eq!(budget.available(t0 + Duration::from_secs(10)), 10);
/// # Ok::<(), keel_core::machine::retry::InvalidRetryConfig>(())
/// ```
#[derive(Clone, Debug)]
pub struct RetryBudget {
    window: Duration,
    min_per_sec: u32,
    retry_ratio: f64,
    /// A window is at most 60 s, so a slot's length fits a `u64` of nanoseconds.
    slot_nanos: u64,
    deposit: i64,
    reserve: i64,
    slots: [i64; SLOTS],
    origin: Option<Instant>,
    epoch: u64,
}

impl RetryBudget {
    /// A budget over a sliding `window` (between 1 and 60 seconds) that always allows
    /// `min_per_sec` retries per second and, on top, `retry_ratio` retries per first attempt
    /// (`0.2` is 20 %; between 0 and 1000).
    pub fn new(
        window: Duration,
        min_per_sec: u32,
        retry_ratio: f64,
    ) -> Result<Self, InvalidRetryConfig> {
        if window < Duration::from_secs(1) || window > Duration::from_secs(60) {
            return Err(InvalidRetryConfig::new(
                "retry_budget.window",
                "must be between 1 and 60 seconds",
            ));
        }
        if !retry_ratio.is_finite() || !(0.0..=1000.0).contains(&retry_ratio) {
            return Err(InvalidRetryConfig::new(
                "retry_budget.retry_ratio",
                "must be a number between 0 and 1000",
            ));
        }
        // Rounded to a thousandth of a retry; at most 1000 × 1000, so the cast is exact.
        let deposit = (retry_ratio * RETRY_COST as f64).round() as i64;
        let reserve_millis = i64::from(min_per_sec) * window.as_millis() as i64;
        let reserve = reserve_millis.saturating_mul(RETRY_COST) / 1_000;
        Ok(Self {
            window,
            min_per_sec,
            retry_ratio,
            slot_nanos: u64::try_from(window.as_nanos() / SLOTS as u128).unwrap_or(u64::MAX),
            deposit,
            reserve,
            slots: [0; SLOTS],
            origin: None,
            epoch: 0,
        })
    }

    /// Records a first attempt: call it once per call, when its first attempt is sent.
    pub fn deposit(&mut self, now: Instant) {
        let slot = self.advance(now);
        self.slots[slot] = self.slots[slot].saturating_add(self.deposit);
    }

    /// Takes one retry from the budget, if it has one.
    ///
    /// `false` means the retry must not be sent; nothing was taken.
    #[must_use = "a refused withdrawal means the retry must not be sent"]
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let slot = self.advance(now);
        if self.balance() >= RETRY_COST {
            self.slots[slot] -= RETRY_COST;
            true
        } else {
            false
        }
    }

    /// How many retries could be withdrawn at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.advance(now);
        u64::try_from(self.balance() / RETRY_COST).unwrap_or(0)
    }

    /// The length of the sliding window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Retries always allowed per second of the window.
    pub fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }

    /// Retries allowed per first attempt, on top of the reserve.
    pub fn retry_ratio(&self) -> f64 {
        self.retry_ratio
    }

    fn balance(&self) -> i64 {
        self.slots
            .iter()
            .fold(self.reserve, |sum, &slot| sum.saturating_add(slot))
    }

    /// Moves the window to `now` and returns the index of the current slot.
    fn advance(&mut self, now: Instant) -> usize {
        let origin = *self.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        // 64-bit division: a u128 one costs a library call on every deposit and withdrawal.
        let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
        let epoch = elapsed / self.slot_nanos;
        if epoch > self.epoch {
            if epoch - self.epoch >= SLOTS as u64 {
                self.slots = [0; SLOTS];
            } else {
                for e in self.epoch + 1..=epoch {
                    self.slots[(e % SLOTS as u64) as usize] = 0;
                }
            }
            self.epoch = epoch;
        }
        (self.epoch % SLOTS as u64) as usize
    }
}

impl Default for RetryBudget {
    /// 10 retries per second in reserve plus 20 % of first attempts, over 10 seconds (tower's
    /// defaults).
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2).expect("the default budget is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use crate::tests::epoch;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn reserve_alone_allows_min_per_sec_times_window() {
        let t0 = epoch();
        let mut budget = RetryBudget::new(secs(10), 2, 0.0).unwrap();
        assert_eq!(budget.available(t0), 20);
        for i in 0..20 {
            assert!(budget.try_withdraw(t0), "withdrawal {i}");
        }
        assert!(!budget.try_withdraw(t0));
        assert!(!budget.try_withdraw(t0 + secs(5)));
        assert_eq!(budget.available(t0), 0);
    }

    #[test]
    fn deposits_add_the_ratio() {
        let t0 = epoch();
        let mut budget = RetryBudget::new(secs(10), 0, 0.25).unwrap();
        assert!(!budget.try_withdraw(t0));
        for _ in 0..3 {
            budget.deposit(t0);
        }
        assert_eq!(budget.available(t0), 0); // 0.75 of a retry
        budget.deposit(t0);
        assert_eq!(budget.available(t0), 1);
        assert!(budget.try_withdraw(t0));
        assert!(!budget.try_withdraw(t0));
    }

    #[test]
    fn exhaustion_then_refill_as_the_window_slides() {
        let t0 = epoch();
        let mut budget = RetryBudget::new(secs(10), 1, 0.5).unwrap();
        // At t = 0 s: 10 first attempts earn 5 retries, on top of the 10 in reserve.
        for _ in 0..10 {
            budget.deposit(t0);
        }
        for _ in 0..15 {
            assert!(budget.try_withdraw(t0));
        }
        assert!(!budget.try_withdraw(t0));
        // Still inside the window at 9.999 s: nothing has expired.
        assert!(!budget.try_withdraw(t0 + Duration::from_millis(9_999)));
        // At 10 s the slot of t = 0 leaves the window: deposits and withdrawals both expire.
        assert_eq!(budget.available(t0 + secs(10)), 10);
    }

    #[test]
    fn withdrawals_expire_slot_by_slot() {
        let t0 = epoch();
        let mut budget = RetryBudget::new(secs(10), 1, 0.0).unwrap();
        // One retry per second for 10 s uses the whole reserve.
        for s in 0..10 {
            assert!(budget.try_withdraw(t0 + secs(s)), "at {s} s");
        }
        assert!(!budget.try_withdraw(t0 + Duration::from_millis(9_500)));
        // Each new second frees the retry taken ten seconds earlier, and only that one.
        assert!(budget.try_withdraw(t0 + secs(10)));
        assert!(!budget.try_withdraw(t0 + secs(10)));
        assert_eq!(budget.available(t0 + secs(11)), 1);
        // A long silence clears everything.
        assert_eq!(budget.available(t0 + secs(3_600)), 10);
    }

    #[test]
    fn a_late_now_counts_in_the_current_slot() {
        let t0 = epoch();
        let mut budget = RetryBudget::new(secs(10), 0, 1.0).unwrap();
        budget.deposit(t0 + secs(5));
        // A task that read the clock before the one above, and locked after it.
        assert!(budget.try_withdraw(t0 + secs(4)));
        assert!(!budget.try_withdraw(t0 + secs(4)));
        // Both sit in the slot of 5 s, which expires at 15 s.
        assert_eq!(budget.available(t0 + secs(14)), 0);
    }

    #[test]
    fn rejects_bad_settings() {
        let err = RetryBudget::new(Duration::from_millis(999), 1, 0.1).unwrap_err();
        assert_eq!(err.setting(), "retry_budget.window");
        let err = RetryBudget::new(secs(61), 1, 0.1).unwrap_err();
        assert_eq!(err.setting(), "retry_budget.window");
        for ratio in [-0.1, 1000.5, f64::NAN, f64::INFINITY] {
            let err = RetryBudget::new(secs(10), 1, ratio).unwrap_err();
            assert_eq!(err.setting(), "retry_budget.retry_ratio");
        }
        let max = RetryBudget::new(secs(60), u32::MAX, 1000.0).unwrap();
        assert_eq!(max.min_per_sec(), u32::MAX);
    }

    #[test]
    fn default_is_tower_like() {
        let mut budget = RetryBudget::default();
        assert_eq!(budget.window(), secs(10));
        assert_eq!(budget.min_per_sec(), 10);
        assert_eq!(budget.retry_ratio(), 0.2);
        assert_eq!(budget.available(epoch()), 100);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            rng_seed: RngSeed::Fixed(0xb0d6e7),
            ..ProptestConfig::default()
        })]

        /// Within any one window, retries never exceed the reserve plus the ratio of deposits.
        #[test]
        fn retries_within_a_window_are_bounded(
            min_per_sec in 0u32..5,
            ratio_pct in 0u32..200,
            ops in proptest::collection::vec((0u64..1_000, any::<bool>()), 0..300),
        ) {
            let t0 = epoch();
            let ratio = f64::from(ratio_pct) / 100.0;
            let mut budget = RetryBudget::new(secs(10), min_per_sec, ratio).unwrap();
            let mut deposits = 0u64;
            let mut retries = 0u64;
            // All ops fall in the first second: nothing expires.
            for (millis, is_deposit) in ops {
                let now = t0 + Duration::from_millis(millis.min(999));
                if is_deposit {
                    budget.deposit(now);
                    deposits += 1;
                } else if budget.try_withdraw(now) {
                    retries += 1;
                }
            }
            let allowed = u64::from(min_per_sec) * 10 + deposits * u64::from(ratio_pct) / 100;
            prop_assert!(retries <= allowed, "{} retries, {} allowed", retries, allowed);
        }
    }
}
