//! When a breaker trips, how long it stays open and how it recovers: [`BreakerPolicy`] and its
//! builder, and how one finished call counts ([`BreakerPolicy::classify`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::super::outcome::{ErrorKind, Outcome};

/// The shortest time window a failure-rate rule may use.
const MIN_TIME_WINDOW: Duration = Duration::from_secs(1);
/// The longest time window a failure-rate rule may use.
const MAX_TIME_WINDOW: Duration = Duration::from_secs(3_600);
/// The most calls a count window may hold (a bit each).
pub(super) const MAX_COUNT_WINDOW: u32 = 10_000;
/// The longest cool-down: a day.
const MAX_OPEN_FOR: Duration = Duration::from_secs(86_400);

/// A user's rule for which outcomes are failures; see
/// [`BreakerPolicyBuilder::failure_predicate`].
///
/// `Some(true)`: a failure; `Some(false)`: a success; `None`: let the default rule decide.
pub type BreakerPredicate = Arc<dyn Fn(&Outcome<'_>) -> Option<bool> + Send + Sync>;

/// The calls a failure-rate rule looks at.
///
/// New kinds of window may be added, so a `match` needs a wildcard arm.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last `n` counted calls (between 1 and 10 000); one bit per call, kept once.
    Count(u32),
    /// The calls counted in the last `d` (between 1 second and 1 hour). The window is cut into
    /// ten slots of `d / 10`, like [`RetryBudget`](crate::machine::retry::RetryBudget)'s, so a
    /// call counts for between 0.9 and 1 times `d`.
    Time(Duration),
}

/// How one finished call counts, as [`BreakerPolicy::classify`] judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// The server did its job.
    Success,
    /// The server failed, or was too slow: a mark against it.
    Failure,
    /// Says nothing about the server (the caller's fault): counts for nothing. A probe that
    /// ends so still frees its slot.
    Ignored,
}

/// The failure-rate rule, as built.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct RateRule {
    pub(super) threshold: f64,
    pub(super) window: Window,
    pub(super) min_calls: u32,
}

/// A circuit-breaker policy: when to trip, how long to stay open, how to recover, and which
/// outcomes count as failures.
///
/// Validated when built, cheap to clone (clones share one allocation), and shared by every
/// [`Breaker`](super::Breaker) that uses it (one per origin, or per user key).
///
/// | setting | default |
/// |---|---|
/// | [`consecutive_failures`](BreakerPolicyBuilder::consecutive_failures) | 5 |
/// | [`failure_rate`](BreakerPolicyBuilder::failure_rate) | off |
/// | [`slow_call`](BreakerPolicyBuilder::slow_call) | off |
/// | [`open_for`](BreakerPolicyBuilder::open_for) | 5 s, doubled after each failed probe, up to 60 s |
/// | [`half_open_probes`](BreakerPolicyBuilder::half_open_probes) | 1 |
/// | [`successes_to_close`](BreakerPolicyBuilder::successes_to_close) | 1 |
/// | [`failure_predicate`](BreakerPolicyBuilder::failure_predicate) | none: see [`classify`](BreakerPolicy::classify) |
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use keel_core::machine::breaker::{BreakerPolicy, Window};
///
/// let policy = BreakerPolicy::builder()
///     .consecutive_failures(0) // off
///     .failure_rate(0.5, Window::Count(20), 10)
///     .slow_call(Duration::from_secs(2))
///     .open_for(Duration::from_secs(1), Duration::from_secs(30))
///     .half_open_probes(3)
///     .successes_to_close(3)
///     .build()?;
/// assert_eq!(policy.consecutive_failures(), None);
/// assert_eq!(policy.failure_rate(), Some((0.5, Window::Count(20), 10)));
///
/// let err = BreakerPolicy::builder().half_open_probes(0).build().unwrap_err();
/// assert_eq!(err.setting(), "breaker.half_open_probes");
/// assert_eq!(err.to_string(), "invalid setting `breaker.half_open_probes`: must be at least 1");
/// # Ok::<(), keel_core::machine::breaker::InvalidBreakerConfig>(())
/// ```
#[derive(Clone)]
pub struct BreakerPolicy {
    inner: Arc<Inner>,
}

struct Inner {
    consecutive: Option<u32>,
    rate: Option<RateRule>,
    slow_call: Option<Duration>,
    open_base: Duration,
    open_max: Duration,
    probes: u32,
    successes_to_close: u32,
    predicate: Option<BreakerPredicate>,
}

impl BreakerPolicy {
    /// Starts from the defaults (see the table above).
    pub fn builder() -> BreakerPolicyBuilder {
        BreakerPolicyBuilder::new()
    }

    /// Consecutive failures that trip a closed breaker; `None` when the rule is off.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.inner.consecutive
    }

    /// The failure-rate rule, as `(threshold, window, min_calls)`; `None` when it is off.
    pub fn failure_rate(&self) -> Option<(f64, Window, u32)> {
        self.inner
            .rate
            .map(|r| (r.threshold, r.window, r.min_calls))
    }

    /// The duration over which a success counts as a failure; `None` when the rule is off.
    pub fn slow_call(&self) -> Option<Duration> {
        self.inner.slow_call
    }

    /// The cool-down, as `(base, max)`.
    pub fn open_for(&self) -> (Duration, Duration) {
        (self.inner.open_base, self.inner.open_max)
    }

    /// How many probes may be in flight at once while half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.inner.probes
    }

    /// How many successful probes close the breaker.
    pub fn successes_to_close(&self) -> u32 {
        self.inner.successes_to_close
    }

    pub(super) fn rate_rule(&self) -> Option<RateRule> {
        self.inner.rate
    }

    /// How one finished call counts.
    ///
    /// The [predicate](BreakerPolicyBuilder::failure_predicate), when there is one, decides
    /// first. Otherwise (or when it answers `None`):
    ///
    /// - failures: connect and TLS errors, every timeout, connections that failed mid-flight
    ///   or broke the protocol, and `5xx` statuses (a response, or an [`ErrorKind::Status`]
    ///   error);
    /// - ignored (the caller's fault, or refused before the server was asked): redirect
    ///   refusals, an open breaker, a rate limit, invalid URLs and requests, configuration
    ///   errors, decode errors and bodies over the limit;
    /// - successes: everything else (`2xx`, `3xx`, `4xx`).
    ///
    /// Then a success that took longer than [`slow_call`](BreakerPolicyBuilder::slow_call)
    /// (`elapsed` is the call's duration, as the driver measured it) becomes a failure.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::{HeaderMap, StatusCode};
    /// use keel_core::machine::breaker::{BreakerPolicy, CallResult};
    /// use keel_core::machine::outcome::{Failure, Outcome};
    /// use keel_core::ErrorKind;
    ///
    /// let policy = BreakerPolicy::builder().slow_call(Duration::from_secs(1)).build()?;
    /// let headers = HeaderMap::new();
    /// let ok = Outcome::Response { status: StatusCode::OK, headers: &headers };
    /// let bad = Outcome::Response { status: StatusCode::BAD_GATEWAY, headers: &headers };
    /// let fast = Duration::from_millis(10);
    /// assert_eq!(policy.classify(&ok, fast), CallResult::Success);
    /// assert_eq!(policy.classify(&ok, Duration::from_secs(2)), CallResult::Failure);
    /// assert_eq!(policy.classify(&bad, fast), CallResult::Failure);
    /// let invalid = Outcome::Error(Failure::new(ErrorKind::InvalidUrl));
    /// assert_eq!(policy.classify(&invalid, fast), CallResult::Ignored);
    /// # Ok::<(), keel_core::machine::breaker::InvalidBreakerConfig>(())
    /// ```
    pub fn classify(&self, outcome: &Outcome<'_>, elapsed: Duration) -> CallResult {
        let decided = match &self.inner.predicate {
            Some(predicate) => predicate(outcome),
            None => None,
        };
        let result = match decided {
            Some(true) => CallResult::Failure,
            Some(false) => CallResult::Success,
            None => default_rule(outcome),
        };
        match (result, self.inner.slow_call) {
            (CallResult::Success, Some(limit)) if elapsed > limit => CallResult::Failure,
            _ => result,
        }
    }
}

/// The rule [`BreakerPolicy::classify`] applies when no predicate decides.
fn default_rule(outcome: &Outcome<'_>) -> CallResult {
    let kind = match outcome {
        Outcome::Response { status, .. } => return by_status(status.as_u16()),
        Outcome::Error(failure) => failure.kind,
    };
    match kind {
        // A connection cut mid-flight or broken HTTP says as much about the server's health
        // as a refused connection.
        ErrorKind::Timeout(_)
        | ErrorKind::Connect
        | ErrorKind::Tls
        | ErrorKind::Body
        | ErrorKind::Protocol => CallResult::Failure,
        ErrorKind::Status(status) => by_status(status.as_u16()),
        // Refused by keel before the server was asked: nothing to learn from.
        ErrorKind::CircuitOpen | ErrorKind::RateLimited => CallResult::Ignored,
        ErrorKind::Redirect(_)
        | ErrorKind::InvalidUrl
        | ErrorKind::InvalidRequest
        | ErrorKind::Config
        | ErrorKind::Decode
        | ErrorKind::BodyTooLarge { .. }
        | ErrorKind::LineTooLong { .. }
        | ErrorKind::EventTooLarge { .. }
        | ErrorKind::DecodedTooLarge { .. }
        | ErrorKind::DecompressionRatio { .. } => CallResult::Ignored,
    }
}

fn by_status(code: u16) -> CallResult {
    if (500..600).contains(&code) {
        CallResult::Failure
    } else {
        CallResult::Success
    }
}

impl Default for BreakerPolicy {
    /// Trips after 5 consecutive failures, stays open 5 s (doubled after each failed probe, up
    /// to 60 s), sends 1 probe and closes on its success.
    fn default() -> Self {
        Self::builder()
            .build()
            .expect("the default policy is valid")
    }
}

impl fmt::Debug for BreakerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("BreakerPolicy")
            .field("consecutive_failures", &i.consecutive)
            .field("failure_rate", &i.rate)
            .field("slow_call", &i.slow_call)
            .field("open_base", &i.open_base)
            .field("open_max", &i.open_max)
            .field("half_open_probes", &i.probes)
            .field("successes_to_close", &i.successes_to_close)
            .field("predicate", &i.predicate.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// Builds a [`BreakerPolicy`]; every setting starts at its default.
#[must_use = "a builder does nothing until built"]
pub struct BreakerPolicyBuilder {
    consecutive: u32,
    rate: Option<RateRule>,
    slow_call: Option<Duration>,
    open_base: Duration,
    open_max: Duration,
    probes: u32,
    successes_to_close: u32,
    predicate: Option<BreakerPredicate>,
}

impl BreakerPolicyBuilder {
    fn new() -> Self {
        Self {
            consecutive: 5,
            rate: None,
            slow_call: None,
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(60),
            probes: 1,
            successes_to_close: 1,
            predicate: None,
        }
    }

    /// Trips a closed breaker after `n` failures in a row (a success starts the count again);
    /// `0` turns the rule off.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive = n;
        self
    }

    /// Trips a closed breaker when failures make up at least `threshold` (above 0, at most 1)
    /// of the calls in `window`, once the window holds at least `min_calls` (at least 1, and
    /// for a [`Window::Count`] at most its count).
    ///
    /// The rule is checked after every counted call, a success included: with a threshold of
    /// 0.5 and 10 calls needed, 5 failures and then a success trip it.
    pub fn failure_rate(mut self, threshold: f64, window: Window, min_calls: u32) -> Self {
        self.rate = Some(RateRule {
            threshold,
            window,
            min_calls,
        });
        self
    }

    /// A success that took longer than `threshold` counts as a failure (not zero).
    pub fn slow_call(mut self, threshold: Duration) -> Self {
        self.slow_call = Some(threshold);
        self
    }

    /// The cool-down: a tripped breaker stays open for `base`; each failed probe opens it
    /// again for twice as long as the time before, up to `max`. Closing goes back to `base`.
    /// `base` must be above zero and at most `max`, and `max` at most a day.
    pub fn open_for(mut self, base: Duration, max: Duration) -> Self {
        self.open_base = base;
        self.open_max = max;
        self
    }

    /// How many probes may be in flight at once while half-open (at least 1).
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.probes = n;
        self
    }

    /// How many successful probes close a half-open breaker (at least 1). It may be more than
    /// [`half_open_probes`](Self::half_open_probes): probes then go out in turns.
    pub fn successes_to_close(mut self, n: u32) -> Self {
        self.successes_to_close = n;
        self
    }

    /// Decides which outcomes are failures before the default rule does: `Some(true)` is a
    /// failure, `Some(false)` a success, `None` leaves it to the default rule. The
    /// [`slow_call`](Self::slow_call) rule still applies to a success.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keel_core::machine::breaker::{BreakerPolicy, CallResult};
    /// use keel_core::machine::outcome::Outcome;
    ///
    /// // A 429 means the server is overloaded: count it against it.
    /// let policy = BreakerPolicy::builder()
    ///     .failure_predicate(|outcome: &Outcome<'_>| match outcome.status()?.as_u16() {
    ///         429 => Some(true),
    ///         _ => None,
    ///     })
    ///     .build()?;
    /// # Ok::<(), keel_core::machine::breaker::InvalidBreakerConfig>(())
    /// ```
    pub fn failure_predicate<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&Outcome<'_>) -> Option<bool> + Send + Sync + 'static,
    {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Checks the settings and builds the policy.
    pub fn build(self) -> Result<BreakerPolicy, InvalidBreakerConfig> {
        if let Some(rate) = self.rate {
            if !rate.threshold.is_finite() || rate.threshold <= 0.0 || rate.threshold > 1.0 {
                return Err(InvalidBreakerConfig::new(
                    "breaker.failure_rate.threshold",
                    "must be a number above 0 and at most 1",
                ));
            }
            match rate.window {
                Window::Count(n) if n == 0 || n > MAX_COUNT_WINDOW => {
                    return Err(InvalidBreakerConfig::new(
                        "breaker.failure_rate.window",
                        "a count window must hold between 1 and 10000 calls",
                    ));
                }
                Window::Count(n) if rate.min_calls > n => {
                    return Err(InvalidBreakerConfig::new(
                        "breaker.failure_rate.min_calls",
                        "must not be greater than the window's count, or the rule never trips",
                    ));
                }
                Window::Time(d) if !(MIN_TIME_WINDOW..=MAX_TIME_WINDOW).contains(&d) => {
                    return Err(InvalidBreakerConfig::new(
                        "breaker.failure_rate.window",
                        "a time window must be between 1 second and 1 hour",
                    ));
                }
                _ => {}
            }
            if rate.min_calls == 0 {
                return Err(InvalidBreakerConfig::new(
                    "breaker.failure_rate.min_calls",
                    "must be at least 1",
                ));
            }
        }
        if self.slow_call == Some(Duration::ZERO) {
            return Err(InvalidBreakerConfig::new(
                "breaker.slow_call",
                "must be greater than zero",
            ));
        }
        if self.open_base.is_zero() || self.open_base > self.open_max {
            return Err(InvalidBreakerConfig::new(
                "breaker.open_for",
                "base must be greater than zero and not greater than max",
            ));
        }
        if self.open_max > MAX_OPEN_FOR {
            return Err(InvalidBreakerConfig::new(
                "breaker.open_for",
                "max must be at most a day",
            ));
        }
        if self.probes == 0 {
            return Err(InvalidBreakerConfig::new(
                "breaker.half_open_probes",
                "must be at least 1",
            ));
        }
        if self.successes_to_close == 0 {
            return Err(InvalidBreakerConfig::new(
                "breaker.successes_to_close",
                "must be at least 1",
            ));
        }
        Ok(BreakerPolicy {
            inner: Arc::new(Inner {
                consecutive: (self.consecutive > 0).then_some(self.consecutive),
                rate: self.rate,
                slow_call: self.slow_call,
                open_base: self.open_base,
                open_max: self.open_max,
                probes: self.probes,
                successes_to_close: self.successes_to_close,
                predicate: self.predicate,
            }),
        })
    }
}

impl fmt::Debug for BreakerPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPolicyBuilder")
            .finish_non_exhaustive()
    }
}

/// A breaker setting that can't be used: which one, and why. See [`InvalidSetting`](crate::machine::InvalidSetting).
pub type InvalidBreakerConfig = crate::machine::InvalidSetting;
