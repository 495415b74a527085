//! What to retry, how often and how fast: [`RetryPolicy`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, StatusCode};

use super::backoff::{nanos, Backoff, Jitter};
use super::{Outcome, RequestFacts, RetryReason};
use crate::machine::outcome::{self, ErrorKind, RETRYABLE_STATUSES};

/// A user's rule for which outcomes to retry; see [`RetryPolicyBuilder::retry_predicate`].
///
/// `Some(true)`: retry this outcome; `Some(false)`: don't; `None`: let the status and
/// error-kind rules decide.
pub type RetryPredicate = Arc<dyn Fn(&Outcome<'_>) -> Option<bool> + Send + Sync>;

/// A retry policy: which outcomes are worth another attempt, which requests are safe to send
/// again, how long to wait in between, and when to stop.
///
/// Validated when built, cheap to clone (clones share one allocation), and shared by every call
/// that uses it; each call runs its own [`Retry`](super::Retry) machine over it.
///
/// | setting | default |
/// |---|---|
/// | [`max_attempts`](RetryPolicyBuilder::max_attempts) | 3 (the first attempt and two retries) |
/// | [`max_elapsed`](RetryPolicyBuilder::max_elapsed) | none (the call's own deadline still applies) |
/// | [`base_delay`](RetryPolicyBuilder::base_delay) | 100 ms |
/// | [`multiplier`](RetryPolicyBuilder::multiplier) | 2 |
/// | [`max_delay`](RetryPolicyBuilder::max_delay) | 10 s |
/// | [`jitter`](RetryPolicyBuilder::jitter) | [`Jitter::Full`] |
/// | [`retry_statuses`](RetryPolicyBuilder::retry_statuses) | 408, 429, 500, 502, 503, 504 |
/// | [`retry_error_kinds`](RetryPolicyBuilder::retry_error_kinds) | what [`Error::is_retryable`](crate::Error::is_retryable) says: connect errors, timeouts except the overall deadline, connections that failed mid-flight |
/// | [`idempotent_methods`](RetryPolicyBuilder::idempotent_methods) | GET, HEAD, OPTIONS, PUT, DELETE, TRACE |
/// | [`idempotency_key_header`](RetryPolicyBuilder::idempotency_key_header) | `Idempotency-Key` |
/// | [`respect_retry_after`](RetryPolicyBuilder::respect_retry_after) | yes |
/// | [`max_retry_after`](RetryPolicyBuilder::max_retry_after) | 60 s |
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use keel_core::machine::retry::{Jitter, RetryPolicy};
///
/// let policy = RetryPolicy::builder()
///     .max_attempts(5)
///     .max_elapsed(Duration::from_secs(30))
///     .base_delay(Duration::from_millis(200))
///     .jitter(Jitter::Equal)
///     .retry_statuses([StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE])
///     .build()?;
/// assert_eq!(policy.max_attempts(), Some(5));
///
/// let err = RetryPolicy::builder().multiplier(0.5).build().unwrap_err();
/// assert_eq!(err.setting(), "retry.multiplier");
/// assert_eq!(err.to_string(), "invalid setting `retry.multiplier`: must be a finite number of at least 1");
/// # Ok::<(), keel_core::machine::retry::InvalidRetryConfig>(())
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    inner: Arc<Inner>,
}

struct Inner {
    /// A predicate, or a `2xx` in `statuses`: worked out once, asked on every call.
    may_retry_success: bool,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    base_delay: Duration,
    multiplier: f64,
    max_delay: Duration,
    backoff: Backoff,
    statuses: StatusSet,
    error_kinds: Option<Box<[ErrorKind]>>,
    predicate: Option<RetryPredicate>,
    idempotent_methods: Box<[Method]>,
    idempotency_key: Option<HeaderName>,
    respect_retry_after: bool,
    max_retry_after: Duration,
}

impl RetryPolicy {
    /// Starts from the defaults (see the table above).
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::new()
    }

    /// A policy that never retries: one attempt per call.
    pub fn disabled() -> Self {
        Self::builder()
            .max_attempts(1)
            .build()
            .expect("a single attempt is a valid policy")
    }

    /// The most attempts per call, the first included; `None` when only time limits apply.
    pub fn max_attempts(&self) -> Option<u32> {
        self.inner.max_attempts
    }

    /// The longest a call may keep retrying, from its start.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.inner.max_elapsed
    }

    /// The backoff before the first retry, before jitter.
    pub fn base_delay(&self) -> Duration {
        self.inner.base_delay
    }

    /// How much the backoff grows with each retry.
    pub fn multiplier(&self) -> f64 {
        self.inner.multiplier
    }

    /// The longest computed backoff (a `Retry-After` is capped by
    /// [`max_retry_after`](Self::max_retry_after) instead).
    pub fn max_delay(&self) -> Duration {
        self.inner.max_delay
    }

    /// How the backoff is randomised.
    pub fn jitter(&self) -> Jitter {
        self.inner.backoff.jitter
    }

    /// The longest `Retry-After` honoured; a longer one stops the retries.
    pub fn max_retry_after(&self) -> Duration {
        self.inner.max_retry_after
    }

    /// Whether a `Retry-After` header replaces the computed backoff.
    pub fn respects_retry_after(&self) -> bool {
        self.inner.respect_retry_after
    }

    /// Whether any `2xx` response could be worth retrying under this policy: a `2xx` in the
    /// retried statuses, or a predicate, which may say yes to anything. When false, a driver
    /// may hand a success over without asking.
    pub fn may_retry_success(&self) -> bool {
        self.inner.may_retry_success
    }

    /// Why `outcome` is worth retrying under this policy, or `None` when it is final (a success
    /// or a permanent failure).
    ///
    /// This is only about the outcome: whether the request is safe to send again is
    /// [`is_idempotent`](Self::is_idempotent)'s question.
    pub fn retry_reason(&self, outcome: &Outcome<'_>) -> Option<RetryReason> {
        let reason = match *outcome {
            Outcome::Response { status, .. } => RetryReason::Status(status),
            Outcome::Error(failure) => match failure.kind {
                ErrorKind::Status(status) => RetryReason::Status(status),
                kind => RetryReason::Error(kind),
            },
        };
        if let Some(predicate) = &self.inner.predicate {
            match predicate(outcome) {
                Some(true) => return Some(reason),
                Some(false) => return None,
                None => {}
            }
        }
        let retry = match (reason, outcome) {
            (RetryReason::Status(status), _) => self.inner.statuses.contains(status),
            (RetryReason::Error(kind), Outcome::Error(failure)) => match &self.inner.error_kinds {
                None => outcome::is_retryable(kind, failure.unsent),
                Some(kinds) => kinds.contains(&kind),
            },
            (RetryReason::Error(_), Outcome::Response { .. }) => false,
        };
        retry.then_some(reason)
    }

    /// Whether `request` is safe to send more than once.
    ///
    /// In order: the request's own declaration ([`RequestFacts::with_idempotent`]) if it made
    /// one; otherwise yes if it carries the idempotency-key header; otherwise whether its method
    /// is one of the idempotent methods.
    pub fn is_idempotent(&self, request: &RequestFacts<'_>) -> bool {
        if let Some(declared) = request.idempotent {
            return declared;
        }
        if let (Some(name), Some(headers)) = (&self.inner.idempotency_key, request.headers) {
            if headers.contains_key(name) {
                return true;
            }
        }
        self.inner.idempotent_methods.contains(request.method)
    }

    pub(crate) fn backoff(&self) -> &Backoff {
        &self.inner.backoff
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::builder()
            .build()
            .expect("the default policy is valid")
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &i.max_attempts)
            .field("max_elapsed", &i.max_elapsed)
            .field("base_delay", &i.base_delay)
            .field("multiplier", &i.multiplier)
            .field("max_delay", &i.max_delay)
            .field("jitter", &i.backoff.jitter)
            .field("statuses", &i.statuses)
            .field("error_kinds", &i.error_kinds)
            .field("predicate", &i.predicate.as_ref().map(|_| "Fn"))
            .field("idempotent_methods", &i.idempotent_methods)
            .field("idempotency_key", &i.idempotency_key)
            .field("respect_retry_after", &i.respect_retry_after)
            .field("max_retry_after", &i.max_retry_after)
            .finish()
    }
}

/// Builds a [`RetryPolicy`]; every setting starts at its default.
#[must_use = "a builder does nothing until built"]
pub struct RetryPolicyBuilder {
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    base_delay: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: Jitter,
    statuses: StatusSet,
    error_kinds: Option<Vec<ErrorKind>>,
    predicate: Option<RetryPredicate>,
    idempotent_methods: Vec<Method>,
    idempotency_key: Option<HeaderName>,
    respect_retry_after: bool,
    max_retry_after: Duration,
}

impl RetryPolicyBuilder {
    fn new() -> Self {
        Self {
            max_attempts: Some(3),
            max_elapsed: None,
            base_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(10),
            jitter: Jitter::Full,
            statuses: StatusSet::from_codes(&RETRYABLE_STATUSES),
            error_kinds: None,
            predicate: None,
            idempotent_methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
                Method::TRACE,
            ],
            idempotency_key: Some(HeaderName::from_static("idempotency-key")),
            respect_retry_after: true,
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// The most attempts per call, the first included: `1` disables retries. At least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// No limit on the number of attempts: only [`max_elapsed`](Self::max_elapsed), the call's
    /// deadline and the retry budget stop the retries. Requires `max_elapsed`.
    pub fn unlimited_attempts(mut self) -> Self {
        self.max_attempts = None;
        self
    }

    /// The longest a call may keep retrying, from the start of its first attempt: a retry that
    /// would start at or after `start + max_elapsed` is not started. Greater than zero.
    pub fn max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = Some(max_elapsed);
        self
    }

    /// The backoff before the first retry, before jitter. At most `max_delay`.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// How much the backoff grows with each retry: a finite number of at least 1 (1 gives a
    /// constant backoff).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The longest computed backoff. At least `base_delay`.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How the backoff is randomised.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The response statuses worth retrying, replacing the default set (408, 429, 500, 502,
    /// 503, 504). An empty list retries no status. Also applies to errors of kind
    /// [`ErrorKind::Status`].
    pub fn retry_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = StatusSet::default();
        for status in statuses {
            self.statuses.insert(status);
        }
        self
    }

    /// The error kinds worth retrying, replacing the default (which is
    /// [`Error::is_retryable`](crate::Error::is_retryable)). Kinds are compared exactly: list
    /// `ErrorKind::Timeout(TimeoutPhase::Attempt)` and the other phases one by one. Errors of
    /// kind [`ErrorKind::Status`] follow [`retry_statuses`](Self::retry_statuses) instead.
    pub fn retry_error_kinds(mut self, kinds: impl IntoIterator<Item = ErrorKind>) -> Self {
        self.error_kinds = Some(kinds.into_iter().collect());
        self
    }

    /// A rule that decides first: `Some(true)` retries the outcome, `Some(false)` finishes with
    /// it, `None` leaves it to the status and error-kind rules.
    ///
    /// It only says whether an outcome is worth retrying: a non-idempotent request or a body
    /// that can't be replayed still stops the retries. It runs on the hot path, once per
    /// attempt; keep it cheap and don't block in it.
    ///
    /// ```
    /// use keel_core::machine::retry::{Outcome, RetryPolicy};
    ///
    /// // Also retry 409 Conflict, and never retry a 503 that says it's final.
    /// let policy = RetryPolicy::builder()
    ///     .retry_predicate(|outcome: &Outcome<'_>| match outcome.status()?.as_u16() {
    ///         409 => Some(true),
    ///         503 => outcome.headers()?.get("x-final").map(|_| false),
    ///         _ => None,
    ///     })
    ///     .build()?;
    /// # Ok::<(), keel_core::machine::retry::InvalidRetryConfig>(())
    /// ```
    pub fn retry_predicate<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&Outcome<'_>) -> Option<bool> + Send + Sync + 'static,
    {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// The methods safe to send more than once, replacing the default set (GET, HEAD, OPTIONS,
    /// PUT, DELETE, TRACE, the idempotent methods of RFC 9110 §9.2.2).
    pub fn idempotent_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.idempotent_methods = methods.into_iter().collect();
        self
    }

    /// The header whose presence makes any request idempotent (`Idempotency-Key` by default, as
    /// in the IETF httpapi draft and Stripe's API); `None` turns the rule off.
    pub fn idempotency_key_header(mut self, name: Option<HeaderName>) -> Self {
        self.idempotency_key = name;
        self
    }

    /// Whether a `Retry-After` header on a retried response replaces the computed backoff
    /// (yes by default). When it doesn't, the header is ignored.
    pub fn respect_retry_after(mut self, respect: bool) -> Self {
        self.respect_retry_after = respect;
        self
    }

    /// The longest `Retry-After` honoured. A server asking for a longer wait gets no retry:
    /// the call stops at once with [`GiveUpReason::RetryAfterTooLong`](super::GiveUpReason::RetryAfterTooLong).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Checks the settings and builds the policy.
    pub fn build(self) -> Result<RetryPolicy, InvalidRetryConfig> {
        if self.max_attempts == Some(0) {
            return Err(InvalidRetryConfig::new(
                "retry.max_attempts",
                "must be at least 1",
            ));
        }
        if self.max_elapsed == Some(Duration::ZERO) {
            return Err(InvalidRetryConfig::new(
                "retry.max_elapsed",
                "must be greater than zero",
            ));
        }
        if self.max_attempts.is_none() && self.max_elapsed.is_none() {
            return Err(InvalidRetryConfig::new(
                "retry.max_attempts",
                "unlimited attempts need a max_elapsed, or retries might never stop",
            ));
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(InvalidRetryConfig::new(
                "retry.multiplier",
                "must be a finite number of at least 1",
            ));
        }
        if self.base_delay > self.max_delay {
            return Err(InvalidRetryConfig::new(
                "retry.base_delay",
                "must not be greater than max_delay",
            ));
        }
        let backoff = Backoff {
            base: nanos(self.base_delay),
            multiplier: self.multiplier,
            cap: nanos(self.max_delay),
            jitter: self.jitter,
        };
        Ok(RetryPolicy {
            inner: Arc::new(Inner {
                may_retry_success: self.predicate.is_some()
                    || (200..300).any(|code| self.statuses.contains_code(code)),
                max_attempts: self.max_attempts,
                max_elapsed: self.max_elapsed,
                base_delay: self.base_delay,
                multiplier: self.multiplier,
                max_delay: self.max_delay,
                backoff,
                statuses: self.statuses,
                error_kinds: self.error_kinds.map(Vec::into_boxed_slice),
                predicate: self.predicate,
                idempotent_methods: self.idempotent_methods.into_boxed_slice(),
                idempotency_key: self.idempotency_key,
                respect_retry_after: self.respect_retry_after,
                max_retry_after: self.max_retry_after,
            }),
        })
    }
}

impl fmt::Debug for RetryPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicyBuilder").finish_non_exhaustive()
    }
}

/// A set of status codes, one bit per code from 0 to 1023: copying and lookups never allocate.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct StatusSet([u64; 16]);

impl StatusSet {
    fn from_codes(codes: &[u16]) -> Self {
        let mut set = Self::default();
        for &code in codes {
            set.insert(StatusCode::from_u16(code).expect("a valid status code"));
        }
        set
    }

    fn insert(&mut self, status: StatusCode) {
        let code = usize::from(status.as_u16());
        self.0[code / 64] |= 1 << (code % 64);
    }

    fn contains(&self, status: StatusCode) -> bool {
        self.contains_code(status.as_u16())
    }

    fn contains_code(&self, code: u16) -> bool {
        let code = usize::from(code);
        code < 1024 && self.0[code / 64] & (1 << (code % 64)) != 0
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((0u16..1024).filter(|&c| self.0[usize::from(c) / 64] & (1 << (c % 64)) != 0))
            .finish()
    }
}

/// A retry setting that can't be used: which one, and why. See [`InvalidSetting`](crate::machine::InvalidSetting).
pub type InvalidRetryConfig = crate::machine::InvalidSetting;

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::{Error, Stage, TimeoutPhase};

    fn reason(policy: &RetryPolicy, outcome: Outcome<'_>) -> Option<RetryReason> {
        policy.retry_reason(&outcome)
    }

    fn status(code: u16, headers: &HeaderMap) -> Outcome<'_> {
        Outcome::Response {
            status: StatusCode::from_u16(code).unwrap(),
            headers,
        }
    }

    #[test]
    fn default_statuses() {
        let policy = RetryPolicy::default();
        let headers = HeaderMap::new();
        let retried: Vec<u16> = (100..1000)
            .filter(|&c| reason(&policy, status(c, &headers)).is_some())
            .collect();
        assert_eq!(retried, [408, 429, 500, 502, 503, 504]);
    }

    #[test]
    fn default_error_kinds_follow_is_retryable() {
        let policy = RetryPolicy::default();
        let retried = |err: Error| reason(&policy, Outcome::from(&err));
        assert_eq!(
            retried(Error::new(ErrorKind::Connect)),
            Some(RetryReason::Error(ErrorKind::Connect))
        );
        for phase in [
            TimeoutPhase::Connect,
            TimeoutPhase::Attempt,
            TimeoutPhase::ReadIdle,
        ] {
            let kind = ErrorKind::Timeout(phase);
            assert_eq!(retried(Error::new(kind)), Some(RetryReason::Error(kind)));
        }
        assert_eq!(
            retried(Error::new(ErrorKind::Timeout(TimeoutPhase::Deadline))),
            None
        );
        // Unsent, yet not retried: the caps are full, another attempt would queue again.
        let acquire = Error::new(ErrorKind::Timeout(TimeoutPhase::PoolAcquire))
            .with_stage(crate::Stage::Pool);
        assert!(acquire.is_unsent());
        assert_eq!(retried(acquire), None);
        assert!(retried(Error::new(ErrorKind::Body)).is_some());
        assert_eq!(retried(Error::new(ErrorKind::Protocol)), None);
        assert!(retried(Error::new(ErrorKind::Protocol).with_unsent()).is_some());
        for kind in [
            ErrorKind::Tls,
            ErrorKind::Decode,
            ErrorKind::InvalidUrl,
            ErrorKind::InvalidRequest,
            ErrorKind::Config,
            ErrorKind::BodyTooLarge { limit: 1 },
        ] {
            assert_eq!(
                retried(Error::new(kind).with_stage(Stage::Tls)),
                None,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn status_errors_follow_the_status_set() {
        let policy = RetryPolicy::builder()
            .retry_statuses([StatusCode::CONFLICT])
            .build()
            .unwrap();
        let conflict = Error::new(ErrorKind::Status(StatusCode::CONFLICT));
        let unavailable = Error::new(ErrorKind::Status(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(
            reason(&policy, Outcome::from(&conflict)),
            Some(RetryReason::Status(StatusCode::CONFLICT))
        );
        assert_eq!(reason(&policy, Outcome::from(&unavailable)), None);
    }

    #[test]
    fn configured_error_kinds_replace_the_default() {
        let policy = RetryPolicy::builder()
            .retry_error_kinds([ErrorKind::Tls])
            .build()
            .unwrap();
        assert!(reason(&policy, Outcome::from(&Error::new(ErrorKind::Tls))).is_some());
        assert!(reason(&policy, Outcome::from(&Error::new(ErrorKind::Connect))).is_none());
    }

    #[test]
    fn predicate_decides_first_and_can_defer() {
        let policy = RetryPolicy::builder()
            .retry_predicate(|o: &Outcome<'_>| match o.status().map(|s| s.as_u16()) {
                Some(409) => Some(true),
                Some(503) => Some(false),
                _ => None,
            })
            .build()
            .unwrap();
        let headers = HeaderMap::new();
        assert!(reason(&policy, status(409, &headers)).is_some());
        assert!(reason(&policy, status(503, &headers)).is_none());
        assert!(reason(&policy, status(502, &headers)).is_some());
        assert!(reason(&policy, status(200, &headers)).is_none());
    }

    #[test]
    fn idempotency_rules() {
        let policy = RetryPolicy::default();
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", "abc".parse().unwrap());
        let empty = HeaderMap::new();
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert!(policy.is_idempotent(&RequestFacts::new(&m)), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!policy.is_idempotent(&RequestFacts::new(&m)), "{m}");
            let with_key = RequestFacts::new(&m).with_headers(&keyed);
            assert!(policy.is_idempotent(&with_key), "{m} with a key");
            let without_key = RequestFacts::new(&m).with_headers(&empty);
            assert!(!policy.is_idempotent(&without_key), "{m} without a key");
        }
        // A declaration beats both the method and the header.
        let opted_out = RequestFacts::new(&Method::GET)
            .with_headers(&keyed)
            .with_idempotent(false);
        assert!(!policy.is_idempotent(&opted_out));
        assert!(policy.is_idempotent(&RequestFacts::new(&Method::POST).with_idempotent(true)));
    }

    #[test]
    fn idempotency_key_header_is_configurable() {
        let policy = RetryPolicy::builder()
            .idempotency_key_header(Some(HeaderName::from_static("x-request-id")))
            .idempotent_methods([Method::GET])
            .build()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "abc".parse().unwrap());
        let post = RequestFacts::new(&Method::POST).with_headers(&headers);
        assert!(!policy.is_idempotent(&post));
        headers.insert("x-request-id", "abc".parse().unwrap());
        let post = RequestFacts::new(&Method::POST).with_headers(&headers);
        assert!(policy.is_idempotent(&post));
        assert!(!policy.is_idempotent(&RequestFacts::new(&Method::PUT)));

        let off = RetryPolicy::builder()
            .idempotency_key_header(None)
            .build()
            .unwrap();
        assert!(!off.is_idempotent(&post));
    }

    #[test]
    fn each_invalid_setting_is_named() {
        let cases: [(RetryPolicyBuilder, &str); 6] = [
            (RetryPolicy::builder().max_attempts(0), "retry.max_attempts"),
            (
                RetryPolicy::builder().unlimited_attempts(),
                "retry.max_attempts",
            ),
            (
                RetryPolicy::builder().max_elapsed(Duration::ZERO),
                "retry.max_elapsed",
            ),
            (RetryPolicy::builder().multiplier(0.99), "retry.multiplier"),
            (
                RetryPolicy::builder().multiplier(f64::NAN),
                "retry.multiplier",
            ),
            (
                RetryPolicy::builder()
                    .base_delay(Duration::from_secs(2))
                    .max_delay(Duration::from_secs(1)),
                "retry.base_delay",
            ),
        ];
        for (builder, setting) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.setting(), setting, "{err}");
            let keel: Error = err.into();
            assert_eq!(keel.kind(), ErrorKind::Config);
            assert_eq!(keel.setting(), Some(setting));
            assert!(std::error::Error::source(&keel).is_some());
        }
        assert!(RetryPolicy::builder()
            .multiplier(f64::INFINITY)
            .build()
            .is_err());
        let unlimited = RetryPolicy::builder()
            .unlimited_attempts()
            .max_elapsed(Duration::from_secs(5))
            .build()
            .unwrap();
        assert_eq!(unlimited.max_attempts(), None);
    }

    #[test]
    fn a_success_may_be_retried_only_with_a_predicate_or_a_2xx_status() {
        assert!(!RetryPolicy::default().may_retry_success());
        let with_202 = RetryPolicy::builder()
            .retry_statuses([StatusCode::ACCEPTED])
            .build()
            .unwrap();
        assert!(with_202.may_retry_success());
        let predicate = RetryPolicy::builder()
            .retry_predicate(|_: &Outcome<'_>| None)
            .build()
            .unwrap();
        assert!(predicate.may_retry_success());
    }

    #[test]
    fn disabled_allows_one_attempt() {
        assert_eq!(RetryPolicy::disabled().max_attempts(), Some(1));
    }

    #[test]
    fn debug_lists_the_settings() {
        let text = format!("{:?}", RetryPolicy::default());
        assert!(
            text.contains("statuses: {408, 429, 500, 502, 503, 504}"),
            "{text}"
        );
        assert!(text.contains("jitter: Full"), "{text}");
    }
}
