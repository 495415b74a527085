//! Retries: whether, and when, to send a request again.
//!
//! A [`RetryPolicy`] says which outcomes are worth another attempt, which requests are safe to
//! send twice, how long to back off and when to stop. Each call runs one [`Retry`] machine over
//! it; a [`RetryBudget`] shared by the whole client caps the extra load retries may add.
//! [`parse_retry_after`] reads the `Retry-After` header.
//!
//! Nothing here performs I/O, reads a clock or owns randomness: the driver passes the time in
//! and the jitter comes from a seed, so the same inputs always give the same decisions.
//!
//! # States
//!
//! ```text
//!          Retry::new(&policy, start, seed)
//!                        │
//!                        ▼
//!        ┌──► attempt n in flight ──on_outcome──┬──► Finish ─────────────► return the outcome
//!        │    (n = Retry::attempt())            │
//!        │                                      ├──► GiveUp(reason) ─────► return the outcome
//!        │                                      │
//!        │                                      └──► RetryAt { at, attempt: n + 1, .. }
//!        │                                                   │
//!        └─── driver sleeps until `at`, sends attempt n + 1 ◄┘
//! ```
//!
//! The attempt number moves only on `RetryAt`. Reporting a second outcome for the same attempt
//! is allowed: a response head that finished the call (a `200`) and a body that then failed
//! mid-stream can both go through [`Retry::on_outcome`], and the second answer decides.
//!
//! # What the driver does with each action
//!
//! For each call:
//!
//! 1. Build the machine: [`Retry::new`] with the client's policy, the call's start time (the
//!    same clock reading the deadline is computed from) and a fresh seed;
//!    [`with_deadline`](Retry::with_deadline) with the call's overall deadline.
//! 2. Deposit into the budget of the request's origin once: `budget.deposit(start)`.
//! 3. Send attempt [`Retry::attempt`]. Read `now` (and `SystemTime` for `now_system`) once the
//!    outcome is known, and call [`Retry::on_outcome`] with the request's [`RequestFacts`],
//!    the [`Outcome`] (the response head, or the error) and the budget.
//! 4. Act on the [`RetryAction`]:
//!    - [`Finish`](RetryAction::Finish): hand the outcome to the caller as it is.
//!    - [`GiveUp(reason)`](RetryAction::GiveUp): hand the outcome to the caller as it is: a
//!      response stays a response, an error stays an error (annotated, if the driver wishes,
//!      with the number of attempts and the reason). Don't send again.
//!    - [`RetryAt { at, .. }`](RetryAction::RetryAt): release the previous attempt first (drop
//!      or drain a response body so its connection is freed), sleep until `at` with the
//!      timer, rebuild the request with a fresh copy of its body, and go to step 3. `delay`,
//!      `attempt`, `reason` and `pacing` are for events and logs.
//!
//! Cancelling is dropping: the machine holds no resource, so dropping the call's future while
//! it sleeps or sends ends the retries with nothing to clean up.
//!
//! # Retry-After handling
//!
//! When a retried response (or an [`ErrorKind::Status`] error) carries a `Retry-After` the
//! policy respects, the server's wait replaces the computed backoff: it is used exactly, without
//! jitter, because the server said when it expects to recover and spreading clients is its
//! business then. It is still bounded: a wait longer than
//! [`max_retry_after`](RetryPolicyBuilder::max_retry_after) stops the call at once
//! ([`GiveUpReason::RetryAfterTooLong`]), as does one that would end at or past the deadline
//! ([`GiveUpReason::RetryAfterPastDeadline`]): sleeping for a retry that can't happen would
//! only delay the caller's error. The date form is measured against `now_system`, so a client
//! whose wall clock is off waits too long or too little; a date in the past means "retry now".
//! A malformed value is ignored, and the backoff applies.
//!
//! # Example
//!
//! A call that meets a `503`, a refused connection, a `429` with `Retry-After: 2` and one more
//! `503`, with seed 7:
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use http::{HeaderMap, Method, StatusCode};
//! use keel_core::machine::retry::{
//!     GiveUpReason, Jitter, Outcome, Pacing, RequestFacts, Retry, RetryAction, RetryBudget,
//!     RetryPolicy, RetryReason,
//! };
//! use keel_core::machine::outcome::Failure;
//! use keel_core::{ErrorKind, Stage};
//!
//! let policy = RetryPolicy::builder()
//!     .max_attempts(4)
//!     .base_delay(Duration::from_millis(100))
//!     .multiplier(2.0)
//!     .max_delay(Duration::from_secs(1))
//!     .jitter(Jitter::Full)
//!     .build()?;
//! let mut budget = RetryBudget::default();
//! let start = Instant::now(); // the driver's timer; a virtual clock would do as well
//! let wall = SystemTime::UNIX_EPOCH;
//!
//! let mut retry = Retry::new(&policy, start, 7).with_deadline(start + Duration::from_secs(30));
//! budget.deposit(start);
//! let get = RequestFacts::new(&Method::GET);
//! let no_headers = HeaderMap::new();
//! let unavailable = Outcome::Response { status: StatusCode::SERVICE_UNAVAILABLE, headers: &no_headers };
//!
//! // Attempt 1: 503. Full jitter picks a delay in [0, 100 ms].
//! let now = start + Duration::from_millis(20);
//! let action = retry.on_outcome(now, wall, &get, unavailable, Some(&mut budget));
//! assert_eq!(action, RetryAction::RetryAt {
//!     at: now + Duration::from_nanos(38_982_975),
//!     delay: Duration::from_nanos(38_982_975),
//!     attempt: 2,
//!     reason: RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE),
//!     pacing: Pacing::Backoff,
//! });
//!
//! // Attempt 2: the connection is refused. A delay in [0, 200 ms].
//! let now = start + Duration::from_millis(200);
//! let refused = Outcome::Error(Failure::new(ErrorKind::Connect).with_stage(Stage::Connect));
//! let action = retry.on_outcome(now, wall, &get, refused, Some(&mut budget));
//! assert_eq!(action, RetryAction::RetryAt {
//!     at: now + Duration::from_nanos(3_357_658),
//!     delay: Duration::from_nanos(3_357_658),
//!     attempt: 3,
//!     reason: RetryReason::Error(ErrorKind::Connect),
//!     pacing: Pacing::Backoff,
//! });
//!
//! // Attempt 3: 429 with Retry-After: 2. The server's wait is used as it is.
//! let now = start + Duration::from_millis(500);
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", "2".parse().unwrap());
//! let limited = Outcome::Response { status: StatusCode::TOO_MANY_REQUESTS, headers: &headers };
//! let action = retry.on_outcome(now, wall, &get, limited, Some(&mut budget));
//! assert_eq!(action, RetryAction::RetryAt {
//!     at: now + Duration::from_secs(2),
//!     delay: Duration::from_secs(2),
//!     attempt: 4,
//!     reason: RetryReason::Status(StatusCode::TOO_MANY_REQUESTS),
//!     pacing: Pacing::RetryAfter,
//! });
//!
//! // Attempt 4: 503 again, and that was the last attempt allowed.
//! let now = start + Duration::from_millis(2_600);
//! let action = retry.on_outcome(now, wall, &get, unavailable, Some(&mut budget));
//! assert_eq!(action, RetryAction::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 4 }));
//!
//! // A POST without an idempotency key isn't retried after the request went out; a 200 finishes.
//! let mut retry = Retry::new(&policy, start, 7);
//! let post = RequestFacts::new(&Method::POST);
//! let action = retry.on_outcome(start, wall, &post, unavailable, Some(&mut budget));
//! assert_eq!(action, RetryAction::GiveUp(GiveUpReason::NotIdempotent));
//! let ok = Outcome::Response { status: StatusCode::OK, headers: &no_headers };
//! assert_eq!(retry.on_outcome(start, wall, &post, ok, Some(&mut budget)), RetryAction::Finish);
//! # Ok::<(), keel_core::machine::retry::InvalidRetryConfig>(())
//! ```

mod backoff;
mod budget;
mod policy;
mod retry_after;

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Method, StatusCode};

pub use backoff::Jitter;
pub use budget::RetryBudget;
pub use policy::{InvalidRetryConfig, RetryPolicy, RetryPolicyBuilder, RetryPredicate};
pub use retry_after::{parse_retry_after, retry_after_from_headers};

use super::outcome::ErrorKind;
pub use super::outcome::Outcome;
use backoff::{nanos, SplitMix64};

/// Decides whether, and when, one call's request is sent again.
///
/// `Retry` performs no I/O and never reads a clock. Methods that depend on time take `now`;
/// jitter comes from the seed given to [`Retry::new`], so equal inputs give equal outputs.
/// See the [module documentation](self) for the states and for what the driver must do with
/// each [`RetryAction`].
///
/// The `Instant`s given to one machine must come from one monotonic clock and must not go
/// backwards; `now_system` is only used to read `Retry-After` dates.
#[derive(Clone, Debug)]
pub struct Retry {
    policy: RetryPolicy,
    deadline: Option<Instant>,
    attempt: u32,
    previous_delay: u64,
    rng: SplitMix64,
}

impl Retry {
    /// A machine for one call whose first attempt starts at `start`.
    ///
    /// The deadline is `start + policy.max_elapsed()`, if the policy has one; `rng_seed` makes
    /// the jitter (use a different seed for each call, or clients that failed together will
    /// retry together).
    pub fn new(policy: &RetryPolicy, start: Instant, rng_seed: u64) -> Self {
        let deadline = policy.max_elapsed().and_then(|d| start.checked_add(d));
        Self {
            policy: policy.clone(),
            deadline,
            attempt: 1,
            previous_delay: policy.backoff().base,
            rng: SplitMix64::new(rng_seed),
        }
    }

    /// Also stops retrying at `deadline` (the call's overall deadline): the earlier of it and
    /// the policy's `max_elapsed` applies.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// Records the outcome of the current attempt and says what the driver must do next.
    ///
    /// `now` is when the outcome became known, `now_system` the wall-clock time then (only used
    /// for a `Retry-After` date). `budget`, the shared [`RetryBudget`] of the request's origin,
    /// is withdrawn from only when a retry is about to be scheduled. The machine owns no lock:
    /// the caller holds whatever guards the budget for the duration of the call.
    ///
    /// The checks run in this order, and the first that stops wins:
    ///
    /// 1. the outcome is not worth retrying ([`RetryPolicy::retry_reason`]): `Finish`;
    /// 2. the request is not idempotent and the failure may have reached the server
    ///    ([`RetryPolicy::is_idempotent`], [`Outcome::is_unsent`]): `GiveUp(NotIdempotent)`;
    /// 3. its body can't be sent again: `GiveUp(BodyNotReplayable)`;
    /// 4. this was the last attempt allowed: `GiveUp(AttemptsExhausted)`;
    /// 5. the delay: a respected `Retry-After` longer than the policy allows gives
    ///    `GiveUp(RetryAfterTooLong)`, otherwise it or the jittered backoff is the delay;
    /// 6. the retry would start at or after the deadline: `GiveUp(RetryAfterPastDeadline)` or
    ///    `GiveUp(DeadlineExceeded)`;
    /// 7. the budget has no retry left: `GiveUp(BudgetExhausted)`;
    /// 8. otherwise `RetryAt`, and the machine moves to the next attempt.
    ///
    /// It never allocates.
    pub fn on_outcome(
        &mut self,
        now: Instant,
        now_system: SystemTime,
        request: &RequestFacts<'_>,
        outcome: Outcome<'_>,
        budget: Option<&mut RetryBudget>,
    ) -> RetryAction {
        let Some(reason) = self.policy.retry_reason(&outcome) else {
            return RetryAction::Finish;
        };
        if !outcome.is_unsent() && !self.policy.is_idempotent(request) {
            return RetryAction::GiveUp(GiveUpReason::NotIdempotent);
        }
        if !request.replayable_body {
            return RetryAction::GiveUp(GiveUpReason::BodyNotReplayable);
        }
        if self
            .policy
            .max_attempts()
            .is_some_and(|max| self.attempt >= max)
        {
            return RetryAction::GiveUp(GiveUpReason::AttemptsExhausted {
                attempts: self.attempt,
            });
        }

        let retry_after = if self.policy.respects_retry_after() {
            outcome
                .headers()
                .and_then(|h| retry_after_from_headers(h, now_system))
        } else {
            None
        };
        let mut rng = self.rng;
        let (delay, pacing) = match retry_after {
            Some(wait) if wait > self.policy.max_retry_after() => {
                return RetryAction::GiveUp(GiveUpReason::RetryAfterTooLong {
                    retry_after: wait,
                    max: self.policy.max_retry_after(),
                });
            }
            Some(wait) => (wait, Pacing::RetryAfter),
            None => {
                let retry = self.attempt - 1;
                let nanos = self
                    .policy
                    .backoff()
                    .delay(retry, self.previous_delay, &mut rng);
                (Duration::from_nanos(nanos), Pacing::Backoff)
            }
        };
        let past_deadline = || match pacing {
            Pacing::RetryAfter => GiveUpReason::RetryAfterPastDeadline { retry_after: delay },
            Pacing::Backoff => GiveUpReason::DeadlineExceeded { delay },
        };
        let Some(at) = now.checked_add(delay) else {
            return RetryAction::GiveUp(past_deadline());
        };
        if self.deadline.is_some_and(|deadline| at >= deadline) {
            return RetryAction::GiveUp(past_deadline());
        }
        if let Some(budget) = budget {
            if !budget.try_withdraw(now) {
                return RetryAction::GiveUp(GiveUpReason::BudgetExhausted);
            }
        }

        self.rng = rng;
        if pacing == Pacing::Backoff {
            self.previous_delay = nanos(delay);
        }
        self.attempt += 1;
        RetryAction::RetryAt {
            at,
            delay,
            attempt: self.attempt,
            reason,
            pacing,
        }
    }

    /// The number of the attempt whose outcome the machine expects next: 1 until the first
    /// `RetryAt`, then one more after each. After the call, the number of attempts made.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The instant at or after which no retry starts, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The policy the machine applies.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

/// What the retry machine needs to know about the request itself.
///
/// ```
/// use http::{HeaderMap, Method};
/// use keel_core::machine::retry::RequestFacts;
///
/// let method = Method::POST;
/// let headers = HeaderMap::new();
/// // A POST with a streaming body that can't be rebuilt.
/// let facts = RequestFacts::new(&method)
///     .with_headers(&headers)
///     .with_replayable_body(false);
/// assert_eq!(facts.method(), &Method::POST);
/// assert!(!facts.is_replayable_body());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    method: &'a Method,
    headers: Option<&'a HeaderMap>,
    idempotent: Option<bool>,
    replayable_body: bool,
}

impl<'a> RequestFacts<'a> {
    /// A request with `method`, a body that can be sent again (none, or bytes), no headers to
    /// consult and no declaration about its idempotency.
    pub fn new(method: &'a Method) -> Self {
        Self {
            method,
            headers: None,
            idempotent: None,
            replayable_body: true,
        }
    }

    /// The request's headers, where the policy looks for its idempotency-key header.
    #[must_use]
    pub fn with_headers(mut self, headers: &'a HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// Declares the request idempotent (opt in: safe to send twice, whatever its method) or
    /// not (opt out: don't resend once it may have reached the server, even a `GET`). The
    /// declaration overrides the method and the idempotency-key header. An attempt that
    /// provably never reached the server is retried either way.
    #[must_use]
    pub fn with_idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Whether the body can be sent again: true for no body or a bytes body, false for a
    /// stream the caller gave no way to rebuild. A request whose body can't be replayed is
    /// never retried.
    #[must_use]
    pub fn with_replayable_body(mut self, replayable: bool) -> Self {
        self.replayable_body = replayable;
        self
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// Whether the body can be sent again.
    pub fn is_replayable_body(&self) -> bool {
        self.replayable_body
    }
}

/// What the driver does after an attempt; see the [module documentation](self).
#[must_use = "the driver must act on every retry action"]
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAction {
    /// The outcome is final (a success, or a failure not worth retrying): return it to the
    /// caller.
    Finish,
    /// The outcome was worth retrying but the retry can't happen, for this reason: return the
    /// outcome to the caller and don't send again.
    GiveUp(GiveUpReason),
    /// Send the request again, as attempt number `attempt`, no earlier than `at`.
    RetryAt {
        /// When to send the next attempt: `now + delay`.
        at: Instant,
        /// The wait before it.
        delay: Duration,
        /// The number of the next attempt (2 for the first retry).
        attempt: u32,
        /// Why the last attempt is retried.
        reason: RetryReason,
        /// Where the delay comes from.
        pacing: Pacing,
    },
}

/// Why a retryable outcome was not retried.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The last attempt allowed by [`RetryPolicy::max_attempts`] was made.
    AttemptsExhausted {
        /// Attempts made, the first included.
        attempts: u32,
    },
    /// The next attempt would start, after the backoff, at or after the deadline.
    DeadlineExceeded {
        /// The backoff that would have been waited.
        delay: Duration,
    },
    /// The server's `Retry-After` asks for a longer wait than
    /// [`RetryPolicy::max_retry_after`].
    RetryAfterTooLong {
        /// The wait the server asked for.
        retry_after: Duration,
        /// The longest wait the policy honours.
        max: Duration,
    },
    /// The server's `Retry-After` would end at or after the deadline.
    RetryAfterPastDeadline {
        /// The wait the server asked for.
        retry_after: Duration,
    },
    /// The client's [`RetryBudget`] has no retry left: too many recent requests were retried.
    BudgetExhausted,
    /// The request is not idempotent and may have reached the server.
    NotIdempotent,
    /// The request body is a stream that can't be sent again.
    BodyNotReplayable,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AttemptsExhausted { attempts: 1 } => f.write_str("retries are disabled"),
            Self::AttemptsExhausted { attempts } => {
                write!(f, "gave up after {attempts} attempts")
            }
            Self::DeadlineExceeded { delay } => {
                write!(f, "a retry in {delay:?} would start after the deadline")
            }
            Self::RetryAfterTooLong { retry_after, max } => write!(
                f,
                "the server asked to wait {retry_after:?}, longer than the {max:?} allowed"
            ),
            Self::RetryAfterPastDeadline { retry_after } => write!(
                f,
                "the server asked to wait {retry_after:?}, past the deadline"
            ),
            Self::BudgetExhausted => f.write_str("the client's retry budget is exhausted"),
            Self::NotIdempotent => f.write_str("the request is not idempotent"),
            Self::BodyNotReplayable => f.write_str("the request body can't be sent again"),
        }
    }
}

/// Why an attempt is retried: what its outcome was.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// The response (or an [`ErrorKind::Status`] error) had this status.
    Status(StatusCode),
    /// The attempt failed with this kind of error.
    Error(ErrorKind),
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "server returned {status}"),
            Self::Error(kind) => write!(f, "{kind}"),
        }
    }
}

/// Where a retry's delay comes from.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pacing {
    /// The policy's exponential backoff, with its jitter.
    Backoff,
    /// The server's `Retry-After`, exactly.
    RetryAfter,
}

#[cfg(test)]
mod tests;
