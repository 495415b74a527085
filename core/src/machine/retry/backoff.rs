//! Exponential backoff, jitter, and the seeded random numbers behind it.

use std::time::Duration;

/// How the exponential backoff is randomised, so that clients that failed together don't all
/// retry together.
///
/// With `backoff(n) = min(max_delay, base_delay × multiplier^n)` for the `n`-th retry
/// (`n = 0` for the first), the delay before that retry is:
///
/// | jitter | delay |
/// |---|---|
/// | `None` | `backoff(n)` |
/// | `Full` | uniform in `[0, backoff(n)]` |
/// | `Equal` | uniform in `[backoff(n) / 2, backoff(n)]` |
/// | `Decorrelated` | `min(max_delay, uniform in [base_delay, 3 × previous delay])`, the first "previous delay" being `base_delay` |
///
/// `Full` spreads retries the most and is the default; `Equal` guarantees at least half the
/// backoff; `Decorrelated` ignores the multiplier and grows from the previous delay instead of
/// the attempt number, with the factor 3 of AWS's "Exponential Backoff And Jitter" article, and
/// always stays in `[base_delay, max_delay]`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// No randomness: exactly the exponential backoff.
    None,
    /// Uniform between zero and the exponential backoff.
    #[default]
    Full,
    /// Half the exponential backoff, plus uniform up to the other half.
    Equal,
    /// Uniform between the base delay and three times the previous delay, capped.
    Decorrelated,
}

/// The backoff parameters of a policy, in nanoseconds; validated by the policy builder
/// (`base <= cap`, `multiplier` finite and at least 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Backoff {
    pub(crate) base: u64,
    pub(crate) multiplier: f64,
    pub(crate) cap: u64,
    pub(crate) jitter: Jitter,
}

impl Backoff {
    /// `min(cap, base × multiplier^retry)`, before jitter.
    pub(crate) fn exponential(&self, retry: u32) -> u64 {
        let exp = i32::try_from(retry).unwrap_or(i32::MAX);
        let nanos = self.base as f64 * self.multiplier.powi(exp);
        // `nanos` is finite or +inf (never NaN: base is finite, multiplier >= 1), and a float
        // to int cast saturates.
        if nanos >= self.cap as f64 {
            self.cap
        } else {
            (nanos as u64).min(self.cap)
        }
    }

    /// The delay before the `retry`-th retry (0-based), given the delay before the previous one
    /// (used by [`Jitter::Decorrelated`] only; pass `base` before the first retry).
    pub(crate) fn delay(&self, retry: u32, previous: u64, rng: &mut SplitMix64) -> u64 {
        match self.jitter {
            Jitter::None => self.exponential(retry),
            Jitter::Full => rng.between(0, self.exponential(retry)),
            Jitter::Equal => {
                let exp = self.exponential(retry);
                rng.between(exp - exp / 2, exp)
            }
            Jitter::Decorrelated => {
                let high = previous.saturating_mul(3).min(self.cap).max(self.base);
                rng.between(self.base, high)
            }
        }
    }
}

/// Nanoseconds in `d`, saturating at `u64::MAX` (about 584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny, fast generator that is good enough for
/// jitter and behaves well from any seed, zero included. Not for cryptography.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high]`, both included (`low` when `high < low`), by Lemire's
    /// multiply-shift: no division and a bias below 2^-64 per value, which jitter can't notice.
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        let span = u128::from(high - low) + 1;
        let offset = (u128::from(self.next_u64()) * span) >> 64;
        // offset < span <= u64::MAX + 1, so it fits in a u64 and low + offset <= high.
        low + offset as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    const MS: u64 = 1_000_000;

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff {
            base: 100 * MS,
            multiplier: 2.0,
            cap: 1_000 * MS,
            jitter,
        }
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 0 of the reference implementation (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn exponential_grows_then_caps() {
        let b = backoff(Jitter::None);
        let delays: Vec<u64> = (0..6).map(|n| b.exponential(n) / MS).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.exponential(u32::MAX), 1_000 * MS);
    }

    #[test]
    fn fractional_multiplier() {
        let b = Backoff {
            multiplier: 1.5,
            ..backoff(Jitter::None)
        };
        let delays: Vec<u64> = (0..5).map(|n| b.exponential(n) / MS).collect();
        assert_eq!(delays, [100, 150, 225, 337, 506]);
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let b = Backoff {
            base: u64::MAX / 2,
            multiplier: f64::MAX,
            cap: u64::MAX,
            jitter: Jitter::Decorrelated,
        };
        assert_eq!(b.exponential(3), u64::MAX);
        let mut rng = SplitMix64::new(1);
        let d = b.delay(3, u64::MAX, &mut rng);
        assert!(d >= b.base);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }

    #[test]
    fn between_covers_the_whole_range() {
        let mut rng = SplitMix64::new(3);
        assert_eq!(rng.between(5, 5), 5);
        assert_eq!(rng.between(9, 5), 9);
        let mut seen = [false; 4];
        for _ in 0..200 {
            seen[(rng.between(10, 13) - 10) as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
        let _ = rng.between(0, u64::MAX);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1024,
            rng_seed: RngSeed::Fixed(0xb0ff),
            ..ProptestConfig::default()
        })]

        #[test]
        fn jitter_stays_in_its_range(
            base in 0u64..10_000 * MS,
            extra in 0u64..100_000 * MS,
            multiplier in 1.0f64..8.0,
            retry in 0u32..80,
            previous in any::<u64>(),
            seed in any::<u64>(),
        ) {
            let cap = base + extra;
            let b = |jitter| Backoff { base, multiplier, cap, jitter };
            let exp = b(Jitter::None).exponential(retry);
            prop_assert!(exp <= cap);
            prop_assert!(exp >= base.min(cap));
            let mut rng = SplitMix64::new(seed);
            prop_assert_eq!(b(Jitter::None).delay(retry, previous, &mut rng), exp);
            let full = b(Jitter::Full).delay(retry, previous, &mut rng);
            prop_assert!(full <= exp);
            let equal = b(Jitter::Equal).delay(retry, previous, &mut rng);
            prop_assert!(equal >= exp / 2 && equal <= exp, "{} not in [{}/2, {}]", equal, exp, exp);
            let decorrelated = b(Jitter::Decorrelated).delay(retry, previous, &mut rng);
            prop_assert!(decorrelated >= base && decorrelated <= cap);
            prop_assert!(decorrelated <= previous.saturating_mul(3).max(base));
        }

        #[test]
        fn exponential_never_decreases(
            base in 1u64..1_000 * MS,
            multiplier in 1.0f64..4.0,
            retry in 0u32..200,
        ) {
            let b = Backoff { base, multiplier, cap: 60_000 * MS, jitter: Jitter::None };
            prop_assert!(b.exponential(retry + 1) >= b.exponential(retry));
        }
    }
}
