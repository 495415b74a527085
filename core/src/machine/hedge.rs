//! Hedged requests: when to send a second attempt of a request that is slow to answer.
//!
//! A hedge is a bet against the tail: most answers come quickly, a few are slow for reasons
//! that have nothing to do with the request (a busy replica, a lost packet, a GC pause). After
//! a delay with no answer, the driver sends the same request again and takes whichever answer
//! comes first, dropping the other. Only requests that are safe to send twice are hedged, and
//! every hedge draws on the same retry budget as retries, so a slow server is never sent
//! double its load.
//!
//! The delay is either fixed, or a percentile of the latencies the client has observed for
//! the origin ([`Latencies`]): hedging at the 95th percentile sends about one request in
//! twenty twice, and only those in the slowest twentieth.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::machine::hedge::{HedgePolicy, Latencies};
//!
//! // A fixed delay:
//! let fixed = HedgePolicy::after(Duration::from_millis(50));
//! assert_eq!(fixed.delay(None), Some(Duration::from_millis(50)));
//!
//! // The 90th percentile of what was seen, within bounds:
//! let adaptive = HedgePolicy::at_percentile(0.9)?
//!     .min_delay(Duration::from_millis(5))
//!     .max_delay(Duration::from_secs(1));
//! let mut seen = Latencies::new();
//! assert_eq!(adaptive.delay(Some(&seen)), None); // too few samples to know the tail
//! for ms in 1..=100 {
//!     seen.record(Duration::from_millis(ms));
//! }
//! let delay = adaptive.delay(Some(&seen)).unwrap();
//! assert!(delay >= Duration::from_millis(90) && delay <= Duration::from_millis(102));
//! # Ok::<(), keel_core::machine::InvalidSetting>(())
//! ```

use std::fmt;
use std::time::Duration;

use super::InvalidSetting;

/// When to hedge a request: after a fixed delay, at a percentile of observed latencies, or
/// never.
#[derive(Clone, PartialEq)]
pub struct HedgePolicy {
    delay: Delay,
    min: Duration,
    max: Duration,
}

#[derive(Clone, Copy, PartialEq)]
enum Delay {
    Never,
    Fixed(Duration),
    /// A fraction in (0, 1].
    Percentile(f64),
}

impl HedgePolicy {
    /// Hedges after `delay` with no answer.
    pub fn after(delay: Duration) -> Self {
        Self {
            delay: Delay::Fixed(delay),
            min: Duration::ZERO,
            max: Duration::MAX,
        }
    }

    /// Hedges after the `p` quantile (`0.95` is the 95th percentile) of the latencies the
    /// client observed for the request's origin. Until it has seen [`Latencies::MIN_SAMPLES`]
    /// answers from an origin it doesn't hedge there: it doesn't know the tail yet.
    ///
    /// `p` must be greater than 0 and at most 1.
    pub fn at_percentile(p: f64) -> Result<Self, InvalidSetting> {
        if !(p > 0.0 && p <= 1.0) {
            return Err(InvalidSetting::new(
                "hedge.percentile",
                "must be a number greater than 0 and at most 1",
            ));
        }
        Ok(Self {
            delay: Delay::Percentile(p),
            min: Duration::ZERO,
            max: Duration::MAX,
        })
    }

    /// Never hedges: a request's way to opt out of the client's hedging.
    pub fn never() -> Self {
        Self {
            delay: Delay::Never,
            min: Duration::ZERO,
            max: Duration::MAX,
        }
    }

    /// Never hedges sooner than `min` (for a percentile delay: a very fast origin is not
    /// worth a second request a millisecond later).
    pub fn min_delay(mut self, min: Duration) -> Self {
        self.min = min;
        self
    }

    /// Never waits longer than `max` before hedging.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Whether the delay is taken from observed latencies, which must then be recorded.
    pub fn observes_latency(&self) -> bool {
        matches!(self.delay, Delay::Percentile(_))
    }

    /// Whether this policy can ever hedge.
    pub fn hedges(&self) -> bool {
        !matches!(self.delay, Delay::Never)
    }

    /// How long after an attempt is sent its hedge should go, given the latencies observed
    /// for its origin, or `None` for no hedge.
    pub fn delay(&self, observed: Option<&Latencies>) -> Option<Duration> {
        let delay = match self.delay {
            Delay::Never => return None,
            Delay::Fixed(delay) => delay,
            Delay::Percentile(p) => observed?.quantile(p)?,
        };
        // `max` wins over `min` when they cross.
        Some(delay.max(self.min).min(self.max))
    }
}

impl Default for HedgePolicy {
    /// [`HedgePolicy::never`].
    fn default() -> Self {
        Self::never()
    }
}

impl fmt::Debug for HedgePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HedgePolicy");
        match self.delay {
            Delay::Never => d.field("delay", &"never"),
            Delay::Fixed(delay) => d.field("delay", &delay),
            Delay::Percentile(p) => d.field("percentile", &p),
        };
        if !self.min.is_zero() {
            d.field("min", &self.min);
        }
        if self.max != Duration::MAX {
            d.field("max", &self.max);
        }
        d.finish()
    }
}

/// Sub-buckets per power of two: 8, so a quantile is within 12.5 % of the true value.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Latencies up to 2^39 µs (about six days) are told apart; longer ones share the last bucket.
const BUCKETS: usize = 37 * SUB;

/// A compact record of the latencies seen from one origin: a log-linear histogram of
/// microseconds (each bucket at most 1/8 of its value wide) that forgets old samples, halving
/// every count each time [`HALF_LIFE`](Self::HALF_LIFE) samples have been added since the
/// last halving, so the quantiles follow an origin whose latency changes.
///
/// Recording is a few instructions; a quantile walks at most a few hundred counters.
#[derive(Clone)]
pub struct Latencies {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
    since_halving: u32,
}

impl Latencies {
    /// Quantiles are not given before this many samples.
    pub const MIN_SAMPLES: u64 = 20;
    /// Samples between two halvings of every count.
    pub const HALF_LIFE: u32 = 1_000;

    /// An empty record.
    pub fn new() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            since_halving: 0,
        }
    }

    /// Adds one observed latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = bucket(micros);
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        self.total += 1;
        self.since_halving += 1;
        if self.since_halving >= Self::HALF_LIFE {
            self.since_halving = 0;
            self.total = 0;
            for count in self.counts.iter_mut() {
                *count /= 2;
                self.total += u64::from(*count);
            }
        }
    }

    /// The number of samples that count (after halvings).
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True when no sample counts.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q` quantile (`0.99` is the 99th percentile) of the samples, as the upper bound of
    /// the bucket it falls in: never below the true value, at most 12.5 % above it. `None`
    /// with fewer than [`MIN_SAMPLES`](Self::MIN_SAMPLES) samples, or for a `q` outside (0, 1].
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total < Self::MIN_SAMPLES || !(q > 0.0 && q <= 1.0) {
            return None;
        }
        // The rank of the sample wanted, 1-based: ceil(q · n), at least 1.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return Some(Duration::from_micros(upper_bound(index)));
            }
        }
        Some(Duration::from_micros(upper_bound(BUCKETS - 1)))
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Latencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latencies")
            .field("samples", &self.total)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

/// The bucket of a latency in microseconds: values below `SUB` each have their own; above,
/// each power of two is split into `SUB` equal parts.
fn bucket(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros(); // >= SUB_BITS
    let sub = (micros >> (exp - SUB_BITS)) as usize & (SUB - 1);
    let index = (exp - SUB_BITS + 1) as usize * SUB + sub;
    index.min(BUCKETS - 1)
}

/// The largest latency (in microseconds) that falls in `index`.
fn upper_bound(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let exp = (index / SUB) as u32 - 1 + SUB_BITS;
    let sub = (index % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    ((SUB as u64 + sub) << (exp - SUB_BITS)) + width - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_cover_their_values() {
        for micros in (0..5_000u64).chain([1 << 20, (1 << 20) + 12_345, 1 << 35]) {
            let index = bucket(micros);
            assert!(upper_bound(index) >= micros, "{micros} in {index}");
            if index > 0 {
                assert!(upper_bound(index - 1) < micros, "{micros} in {index}");
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn no_quantile_before_enough_samples() {
        let mut seen = Latencies::new();
        for _ in 0..Latencies::MIN_SAMPLES - 1 {
            seen.record(Duration::from_millis(10));
        }
        assert_eq!(seen.quantile(0.5), None);
        seen.record(Duration::from_millis(10));
        let q = seen.quantile(0.5).unwrap();
        assert!(q >= Duration::from_millis(10) && q <= Duration::from_micros(11_250));
    }

    #[test]
    fn percentile_delay_is_clamped() {
        let mut seen = Latencies::new();
        for _ in 0..100 {
            seen.record(Duration::from_micros(300));
        }
        let policy = HedgePolicy::at_percentile(0.95)
            .unwrap()
            .min_delay(Duration::from_millis(2));
        assert_eq!(policy.delay(Some(&seen)), Some(Duration::from_millis(2)));
        let policy = HedgePolicy::at_percentile(0.95)
            .unwrap()
            .max_delay(Duration::from_micros(100));
        assert_eq!(policy.delay(Some(&seen)), Some(Duration::from_micros(100)));
        assert_eq!(policy.delay(None), None);
        assert_eq!(HedgePolicy::never().delay(Some(&seen)), None);
    }

    #[test]
    fn bad_percentiles_are_refused() {
        for p in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            let err = HedgePolicy::at_percentile(p).unwrap_err();
            assert_eq!(err.setting(), "hedge.percentile");
        }
        assert!(HedgePolicy::at_percentile(1.0).is_ok());
    }

    #[test]
    fn old_samples_fade() {
        let mut seen = Latencies::new();
        for _ in 0..Latencies::HALF_LIFE {
            seen.record(Duration::from_millis(500));
        }
        // The origin got fast: after a few half-lives the median follows it.
        for _ in 0..3 * Latencies::HALF_LIFE {
            seen.record(Duration::from_millis(5));
        }
        let median = seen.quantile(0.5).unwrap();
        assert!(median < Duration::from_millis(6), "{median:?}");
        assert!(seen.len() < u64::from(2 * Latencies::HALF_LIFE));
    }

    proptest! {
        /// A quantile is never below the true one and at most 12.5 % (or 1 µs) above it.
        #[test]
        fn quantiles_are_close(
            mut samples in prop::collection::vec(0u64..10_000_000, 20..400),
            q in 0.01f64..=1.0,
        ) {
            let mut seen = Latencies::new();
            for &s in &samples {
                seen.record(Duration::from_micros(s));
            }
            samples.sort_unstable();
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            let truth = samples[rank - 1];
            let got = seen.quantile(q).unwrap().as_micros() as u64;
            prop_assert!(got >= truth, "q{q}: {got} < {truth}");
            prop_assert!(got <= truth + truth / 8 + 1, "q{q}: {got} > {truth}");
        }

        #[test]
        fn recording_never_panics(latency in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let mut seen = Latencies::new();
            seen.record(Duration::new(latency, nanos));
            prop_assert_eq!(seen.len(), 1);
        }
    }
}
