//! The generic cell rate algorithm (GCRA): pacing requests to a [`RateLimit`].

use std::time::{Duration, Instant};

/// A rate: `requests` per `period`, of which up to `burst` may go back to back.
///
/// The requests are spread evenly: one every `period / requests` (the
/// [`interval`](RateLimit::interval), rounded up to a whole nanosecond). The burst is how many
/// may go at once after a quiet spell; it is 1 unless set, which paces every request. Over any
/// stretch of time `P`, both ends included, a [`Gcra`] with this limit lets through at most
/// `burst + ⌊requests × P / period⌋` requests.
///
/// ```
/// use std::time::Duration;
/// use keel_core::machine::rate::RateLimit;
///
/// let limit = RateLimit::new(600, Duration::from_secs(60))?.burst(20)?;
/// assert_eq!(limit.requests(), 600);
/// assert_eq!(limit.period(), Duration::from_secs(60));
/// assert_eq!(limit.burst_size(), 20);
/// assert_eq!(limit.interval(), Duration::from_millis(100));
///
/// assert_eq!(RateLimit::per_second(0).unwrap_err().setting(), "rate_limit.requests");
/// assert_eq!(limit.burst(0).unwrap_err().setting(), "rate_limit.burst");
/// # Ok::<(), keel_core::machine::rate::InvalidRateConfig>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    requests: u32,
    period: Duration,
    burst: u32,
    /// `period / requests`, rounded up to a whole nanosecond.
    interval: Duration,
}

impl RateLimit {
    /// `requests` per `period`, with a burst of 1.
    ///
    /// `requests` must be at least 1 (`rate_limit.requests`) and `period` longer than zero
    /// (`rate_limit.period`).
    pub fn new(requests: u32, period: Duration) -> Result<Self, InvalidRateConfig> {
        if requests == 0 {
            return Err(InvalidRateConfig::new(
                "rate_limit.requests",
                "must be at least 1",
            ));
        }
        if period.is_zero() {
            return Err(InvalidRateConfig::new(
                "rate_limit.period",
                "must be greater than zero",
            ));
        }
        let nanos = period.as_nanos().div_ceil(u128::from(requests));
        // At most `period` in nanoseconds, so the seconds fit a u64 as they did in `period`.
        let interval = Duration::new(
            u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
            (nanos % 1_000_000_000) as u32,
        );
        Ok(Self {
            requests,
            period,
            burst: 1,
            interval,
        })
    }

    /// `requests` per second, with a burst of 1.
    pub fn per_second(requests: u32) -> Result<Self, InvalidRateConfig> {
        Self::new(requests, Duration::from_secs(1))
    }

    /// `requests` per minute, with a burst of 1.
    pub fn per_minute(requests: u32) -> Result<Self, InvalidRateConfig> {
        Self::new(requests, Duration::from_secs(60))
    }

    /// The same rate, of which up to `burst` requests (at least 1: `rate_limit.burst`) may go
    /// back to back.
    ///
    /// The burst may exceed `requests`: `RateLimit::per_second(1)?.burst(10)?` allows 10
    /// requests at once after 10 quiet seconds.
    pub fn burst(self, burst: u32) -> Result<Self, InvalidRateConfig> {
        if burst == 0 {
            return Err(InvalidRateConfig::new(
                "rate_limit.burst",
                "must be at least 1",
            ));
        }
        Ok(Self { burst, ..self })
    }

    /// Requests allowed per [`period`](RateLimit::period).
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// The period the [`requests`](RateLimit::requests) are counted over.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// How many requests may go back to back.
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// The time between two paced requests: `period / requests`, rounded up to a whole
    /// nanosecond.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How far ahead of its even pace a request may go: `(burst - 1) × interval`.
    fn tolerance(&self) -> Duration {
        // Saturates only for periods of billions of years: a tolerance that long is "any".
        self.interval
            .checked_mul(self.burst - 1)
            .unwrap_or(Duration::MAX)
    }
}

/// The pacing state of one key (an origin, or a whole client) under a [`RateLimit`].
///
/// Plain data of a few words: it never allocates, reads no clock and holds no lock. The driver
/// keeps one per key, behind whatever lock guards its per-origin state, and holds that lock only
/// for a call.
///
/// The state is the *theoretical arrival time* of the generic cell rate algorithm: the instant
/// at which the next request would go if requests went exactly one
/// [`interval`](RateLimit::interval) apart. A request conforms when it goes no earlier than
/// that instant minus `(burst - 1) × interval`, and each booked request moves it one interval
/// later. Unlike a token bucket it needs no refill, and unlike a sliding log it remembers no
/// list of requests.
///
/// The `Instant`s given to one limiter must come from one monotonic clock. A `now` earlier than
/// one already seen counts as that later one: time never runs backwards inside the limiter.
///
/// ```
/// use std::time::{Duration, Instant};
/// use keel_core::machine::rate::{Gcra, RateLimit};
///
/// let mut limiter = Gcra::new(RateLimit::per_second(4)?);
/// let t0 = Instant::now();
/// let ms = Duration::from_millis;
/// assert_eq!(limiter.acquire(t0, None), Ok(t0));
/// assert_eq!(limiter.acquire(t0, None), Ok(t0 + ms(250)));
/// assert_eq!(limiter.acquire(t0 + ms(100), None), Ok(t0 + ms(500)));
/// // After a quiet spell, a request goes at once (with a burst of 1, only one).
/// assert_eq!(limiter.acquire(t0 + ms(2_000), None), Ok(t0 + ms(2_000)));
/// # Ok::<(), keel_core::machine::rate::InvalidRateConfig>(())
/// ```
#[derive(Clone, Debug)]
pub struct Gcra {
    limit: RateLimit,
    tolerance: Duration,
    /// The theoretical arrival time; `None` until the first booking.
    tat: Option<Instant>,
    /// The latest `now` seen.
    seen: Option<Instant>,
    /// The last booking, while it can still be cancelled: its instant and the `tat` before it.
    last: Option<(Instant, Option<Instant>)>,
}

impl Gcra {
    /// A limiter under `limit` that has let nothing through yet: its first
    /// [`burst_size`](RateLimit::burst_size) requests go at once.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tolerance: limit.tolerance(),
            tat: None,
            seen: None,
            last: None,
        }
    }

    /// The limit the limiter applies.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Books the earliest instant, `now` or later, at which one more request conforms to the
    /// limit, if it is before `deadline`.
    ///
    /// - `Ok(at)`: the slot at `at` is booked; send the request then (at once when `at` is
    ///   `now`). The next caller is booked after it, so callers arriving together queue up one
    ///   behind the other instead of all going at once. A caller that gives up while waiting
    ///   hands its slot back with [`cancel`](Gcra::cancel).
    /// - `Err(at)`: the request could only go at `at`, which is at or after `deadline`;
    ///   nothing is booked. Also returned, with nothing booked, in the unreachable case where
    ///   the limiter's schedule would run past what an `Instant` can represent.
    ///
    /// `at` is never earlier than `now`. It never allocates.
    pub fn acquire(&mut self, now: Instant, deadline: Option<Instant>) -> Result<Instant, Instant> {
        let now = match self.seen {
            Some(seen) if seen > now => seen,
            _ => now,
        };
        self.seen = Some(now);
        let at = match self.tat.and_then(|tat| tat.checked_sub(self.tolerance)) {
            Some(earliest) if earliest > now => earliest,
            _ => now,
        };
        if deadline.is_some_and(|deadline| at >= deadline) {
            return Err(at);
        }
        let base = match self.tat {
            Some(tat) if tat > at => tat,
            _ => at,
        };
        let Some(tat) = base.checked_add(self.limit.interval) else {
            return Err(at);
        };
        self.last = Some((at, self.tat));
        self.tat = Some(tat);
        Ok(at)
    }

    /// Gives back the slot booked at `at` by [`acquire`](Gcra::acquire), whose request was never
    /// sent (its caller went away while waiting).
    ///
    /// Best effort: the slot is given back only when it is the last one booked, so that no
    /// booking behind it moves. Otherwise (or for an `at` that was never booked) nothing
    /// changes, and the slot stays spent: the limiter only ever errs on the slow side.
    pub fn cancel(&mut self, at: Instant) {
        if let Some((booked, previous)) = self.last {
            if booked == at {
                self.tat = previous;
                self.last = None;
            }
        }
    }
}

/// A rate limit setting that can't be used: which one, and why. See [`InvalidSetting`](crate::machine::InvalidSetting).
pub type InvalidRateConfig = crate::machine::InvalidSetting;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use crate::tests::epoch;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(
            RateLimit::new(0, ms(1)).unwrap_err().setting(),
            "rate_limit.requests"
        );
        assert_eq!(
            RateLimit::new(1, Duration::ZERO).unwrap_err().setting(),
            "rate_limit.period"
        );
        let limit = RateLimit::per_minute(30).unwrap();
        assert_eq!(limit.burst(0).unwrap_err().setting(), "rate_limit.burst");
        assert_eq!(limit.burst_size(), 1);
        assert_eq!(limit.interval(), Duration::from_secs(2));
        assert_eq!(limit.burst(7).unwrap().burst_size(), 7);
    }

    #[test]
    fn interval_rounds_up() {
        let limit = RateLimit::new(3, Duration::from_secs(1)).unwrap();
        assert_eq!(limit.interval(), Duration::from_nanos(333_333_334));
        let limit = RateLimit::new(u32::MAX, Duration::from_nanos(1)).unwrap();
        assert_eq!(limit.interval(), Duration::from_nanos(1));
        let limit = RateLimit::new(1, Duration::MAX).unwrap();
        assert_eq!(limit.interval(), Duration::MAX);
    }

    #[test]
    fn smooth_by_default() {
        let t0 = epoch();
        let mut gcra = Gcra::new(RateLimit::per_second(10).unwrap());
        for i in 0..5 {
            assert_eq!(gcra.acquire(t0, None), Ok(t0 + ms(100 * i)));
        }
    }

    #[test]
    fn burst_then_pace_then_recover() {
        let t0 = epoch();
        let mut gcra = Gcra::new(RateLimit::per_second(10).unwrap().burst(3).unwrap());
        for _ in 0..3 {
            assert_eq!(gcra.acquire(t0, None), Ok(t0));
        }
        assert_eq!(gcra.acquire(t0, None), Ok(t0 + ms(100)));
        assert_eq!(gcra.acquire(t0 + ms(150), None), Ok(t0 + ms(200)));
        // A second later the whole burst is back.
        let t1 = t0 + ms(1_300);
        for _ in 0..3 {
            assert_eq!(gcra.acquire(t1, None), Ok(t1));
        }
        assert_eq!(gcra.acquire(t1, None), Ok(t1 + ms(100)));
    }

    #[test]
    fn deadline_refuses_without_booking() {
        let t0 = epoch();
        let mut gcra = Gcra::new(RateLimit::per_second(1).unwrap());
        assert_eq!(gcra.acquire(t0, Some(t0 + ms(1))), Ok(t0));
        // The next slot is at 1 s: a deadline at 1 s is too early, and so is one before now.
        assert_eq!(gcra.acquire(t0, Some(t0 + ms(1_000))), Err(t0 + ms(1_000)));
        assert_eq!(gcra.acquire(t0, Some(t0)), Err(t0 + ms(1_000)));
        assert_eq!(gcra.acquire(t0, Some(t0 + ms(1_001))), Ok(t0 + ms(1_000)));
        // A deadline at `now` itself refuses even a free slot.
        let t5 = t0 + ms(5_000);
        assert_eq!(gcra.acquire(t5, Some(t5)), Err(t5));
        assert_eq!(gcra.acquire(t5, None), Ok(t5));
    }

    #[test]
    fn cancel_gives_back_only_the_last_booking() {
        let t0 = epoch();
        let mut gcra = Gcra::new(RateLimit::per_second(1).unwrap());
        assert_eq!(gcra.acquire(t0, None), Ok(t0));
        let second = gcra.acquire(t0, None).unwrap();
        let third = gcra.acquire(t0, None).unwrap();
        // Not the last: nothing changes.
        gcra.cancel(second);
        gcra.cancel(t0 + ms(123));
        gcra.cancel(third);
        // Cancelled once; a second cancel of the same slot does nothing.
        gcra.cancel(third);
        gcra.cancel(second);
        assert_eq!(gcra.acquire(t0, None), Ok(third));
        assert_eq!(gcra.acquire(t0, None), Ok(t0 + ms(3_000)));
    }

    #[test]
    fn cancel_of_the_first_booking_restores_a_fresh_limiter() {
        let t0 = epoch();
        let mut gcra = Gcra::new(RateLimit::per_second(1).unwrap());
        let at = gcra.acquire(t0, None).unwrap();
        gcra.cancel(at);
        assert_eq!(gcra.acquire(t0 + ms(10), None), Ok(t0 + ms(10)));
    }

    #[test]
    fn an_earlier_now_counts_as_the_latest_seen() {
        let t0 = epoch();
        let mut gcra = Gcra::new(RateLimit::per_second(1).unwrap().burst(5).unwrap());
        assert_eq!(gcra.acquire(t0 + ms(10_000), None), Ok(t0 + ms(10_000)));
        assert_eq!(gcra.acquire(t0, None), Ok(t0 + ms(10_000)));
    }

    #[test]
    fn huge_periods_never_panic() {
        let t0 = epoch();
        let mut gcra = Gcra::new(
            RateLimit::new(1, Duration::MAX)
                .unwrap()
                .burst(u32::MAX)
                .unwrap(),
        );
        // The first slot is free; the schedule after it can't be represented.
        assert_eq!(gcra.acquire(t0, None), Err(t0));
        let mut gcra = Gcra::new(RateLimit::new(1, Duration::from_secs(u64::MAX / 4)).unwrap());
        assert_eq!(gcra.acquire(t0, None), Ok(t0));
        // Whether the next slots can be represented depends on the platform's `Instant`.
        for _ in 0..3 {
            let (Ok(at) | Err(at)) = gcra.acquire(t0, None);
            assert!(at >= t0);
        }
        let _ = gcra.acquire(t0, Some(t0 + ms(1)));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire { advance: u64, deadline: Option<u64> },
        CancelLast,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u64..300, proptest::option::of(0u64..2_000))
                .prop_map(|(advance, deadline)| Op::Acquire { advance, deadline }),
            1 => Just(Op::CancelLast),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            rng_seed: RngSeed::Fixed(0x6c7a),
            ..ProptestConfig::default()
        })]

        /// Any two booked slots `a <= b` bound the slots between them, both included:
        /// `burst + ⌊requests × (b - a) / period⌋`. That covers every window of any length.
        /// No slot is before its `now`, nor at or after its deadline.
        #[test]
        fn bookings_respect_the_rate(
            requests in 1u32..20,
            period_ms in 1u64..3_000,
            burst in 1u32..8,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let t0 = epoch();
            let period = ms(period_ms);
            let limit = RateLimit::new(requests, period).unwrap().burst(burst).unwrap();
            let mut gcra = Gcra::new(limit);
            let mut now = t0;
            let mut booked: Vec<Instant> = Vec::new();
            let mut last: Option<Instant> = None;
            for op in ops {
                match op {
                    Op::Acquire { advance, deadline } => {
                        now += ms(advance);
                        let deadline = deadline.map(|d| now + ms(d));
                        match gcra.acquire(now, deadline) {
                            Ok(at) => {
                                prop_assert!(at >= now);
                                prop_assert!(deadline.is_none_or(|d| at < d));
                                booked.push(at);
                                last = Some(at);
                            }
                            Err(at) => {
                                prop_assert!(at >= now);
                                prop_assert!(deadline.is_some_and(|d| at >= d));
                            }
                        }
                    }
                    Op::CancelLast => {
                        if let Some(at) = last.take() {
                            gcra.cancel(at);
                            let i = booked.iter().rposition(|&b| b == at).unwrap();
                            booked.remove(i);
                        }
                    }
                }
            }
            booked.sort();
            let nanos = period.as_nanos();
            for i in 0..booked.len() {
                for j in i..booked.len() {
                    let span = (booked[j] - booked[i]).as_nanos();
                    let allowed = u128::from(burst) + u128::from(requests) * span / nanos;
                    let count = (j - i + 1) as u128;
                    prop_assert!(
                        count <= allowed,
                        "{} slots within {:?}, {} allowed", count, booked[j] - booked[i], allowed
                    );
                }
            }
        }

        /// A limiter driven one request at a time at its own pace never delays anyone.
        #[test]
        fn conforming_traffic_goes_at_once(
            requests in 1u32..50,
            burst in 1u32..5,
            gaps in proptest::collection::vec(0u64..3, 1..50),
        ) {
            let limit = RateLimit::per_second(requests).unwrap().burst(burst).unwrap();
            let mut gcra = Gcra::new(limit);
            let mut now = epoch();
            for gap in gaps {
                // `gap` intervals later (at least one, so the pace is kept).
                now += limit.interval() * (gap as u32 + 1);
                prop_assert_eq!(gcra.acquire(now, None), Ok(now));
            }
        }
    }
}
