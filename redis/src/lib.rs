//! Fleet-wide rate limits for keel clients: one quota, kept in Redis, shared by every client of
//! every process that names it.
//!
//! An API quota belongs to an account, not to a process: ten replicas that each respect
//! 100 requests/s send 1,000. A [`FleetLimit`] keeps the quota's GCRA schedule under one Redis
//! key (`keel:quota:{name}`) and updates it atomically with a Lua script on Redis's own clock.
//!
//! ```no_run
//! # fn demo<T: keel_core::Backend>() -> Result<(), Box<dyn std::error::Error>> {
//! use keel_core::RateLimit;
//! use keel_redis::{Fallback, FleetLimit};
//!
//! let fleet = FleetLimit::builder("redis://127.0.0.1:6379/", "github", RateLimit::per_second(100)?)
//!     .lease(10)
//!     // Redis down or foreign data under the key: each process keeps to a tenth.
//!     .fallback(Fallback::Local(RateLimit::per_second(10)?))
//!     .build()?;
//! let client = keel_core::Client::<T>::builder().policy(fleet.policy()).build()?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! Every process must give a quota's name the same [`RateLimit`] (the script paces each round
//! trip by the caller's), and Redis must be 3.2 or later (scripts that replicate their effects).
//!
//! # Leases: most admissions are local
//!
//! A round trip books up to [`lease`](FleetLimitBuilder::lease) *slots* of the shared schedule
//! at once: instants, one [`interval`](RateLimit::interval) apart, no further ahead than
//! `(lease - 1) × interval`, and at least half a lease (when fewer are free, Redis says when
//! enough will be, and the process asks again then). The process hands the slots to its
//! attempts without any I/O: an attempt takes the next slot and goes at its instant. When the
//! slots run out, one round trip books more; attempts that need a slot meanwhile wait for that
//! same round trip, not one each.
//!
//! # The bound
//!
//! Redis books slots exactly on the GCRA schedule of the [`RateLimit`]; a process sends a
//! booked request **never before its slot** (slots are placed on the local clock from the
//! instant the reply arrived, which is after Redis read its clock) and **never more than
//! [`grace`](FleetLimitBuilder::grace) after it** (a slot not taken by then is discarded, so a
//! replica that goes quiet keeps nothing). So over any stretch of time `P`, the whole fleet
//! sends at most
//!
//! ```text
//! burst + ⌊requests × (P + grace + d) / period⌋
//! ```
//!
//! requests, where `d` is the longest time a reply of Redis took to reach a process (at most
//! the [`timeout`](FleetLimitBuilder::timeout); sub-millisecond on a LAN). With 100/s, a burst
//! of 1 and the default grace of 50 ms, that is at most 506 in any 5 s. The other way, a
//! process that books slots and then sends nothing wastes them: up to `lease` slots per
//! replica, each time it goes quiet.
//!
//! While the fleet falls back (below), each process keeps to its fallback limit alone, so the
//! bound becomes the sum of theirs.
//!
//! # When Redis is down, slow, or the key holds something else
//!
//! A round trip has connect, read and write timeouts ([`timeout`](FleetLimitBuilder::timeout)),
//! and an attempt waits for one at most [`max_wait`](FleetLimitBuilder::max_wait), and never
//! past its call's deadline. Then the [`Fallback`] decides: a per-process [`RateLimit`], or
//! failing the attempt with [`ErrorKind::RateLimited`] (whose source is the [`FleetError`]).
//! An outage logs one `tracing` warning when it starts and an info event when it ends, and
//! (feature `metrics`) counts every fallen-back admission in `keel.redis.fallbacks`. After a
//! backoff (doubling from [`backoff`](FleetLimitBuilder::backoff)'s first value up to its
//! second) the next attempt that needs a slot tries Redis again, reconnecting, so sharing
//! resumes when Redis returns. A value under the key that the script did not write is a
//! [`FleetError`] of kind [`FleetErrorKind::ForeignValue`], handled like an outage, never
//! overwritten and never a panic.
//!
//! # Runtimes
//!
//! Redis is called with its synchronous client on a small thread pool (the `blocking` crate),
//! and waits use the client's own [`Timer`], so a `FleetLimit` works on tokio, smol, async-std
//! or any executor, and never spawns on the caller's.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::{select, Either, FutureExt, Shared};
use keel_core::machine::rate::Gcra;
use keel_core::pipeline::{Action, Policy, PolicyContext, Waiter};
use keel_core::{Error, ErrorKind, RateLimit, Timer};

/// What a process does while the shared quota can't be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Keep to this limit in this process alone (shared by the clients of the [`FleetLimit`]).
    Local(RateLimit),
    /// Fail every attempt with [`ErrorKind::RateLimited`] until Redis answers again.
    FailClosed,
}

/// Why the shared quota could not be used.
#[derive(Clone, Debug)]
pub struct FleetError {
    kind: FleetErrorKind,
    detail: Arc<str>,
}

/// The kinds of [`FleetError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FleetErrorKind {
    /// The Redis URL could not be parsed.
    InvalidUrl,
    /// A setting is out of range (see [`FleetError`]'s message).
    InvalidSetting,
    /// Redis could not be reached, or the connection broke.
    Unavailable,
    /// Redis did not answer within the timeout, or the attempt's wait ended first.
    Timeout,
    /// The key holds a value the script did not write (another program's data, another type).
    ForeignValue,
    /// Redis answered something the script never returns, or an error of its own.
    Protocol,
}

impl FleetError {
    fn new(kind: FleetErrorKind, detail: impl Into<Arc<str>>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    fn from_redis(err: &redis::RedisError, key: &str) -> Self {
        if err.code() == Some("KEEL_FOREIGN") {
            return Self::new(
                FleetErrorKind::ForeignValue,
                format!(
                    "key {key:?}: {}",
                    err.detail().unwrap_or("not a keel quota")
                ),
            );
        }
        let kind = if err.is_timeout() {
            FleetErrorKind::Timeout
        } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
            FleetErrorKind::Unavailable
        } else {
            FleetErrorKind::Protocol
        };
        Self::new(kind, err.to_string())
    }

    /// What went wrong.
    pub fn kind(&self) -> FleetErrorKind {
        self.kind
    }
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FleetErrorKind::InvalidUrl => "invalid Redis URL",
            FleetErrorKind::InvalidSetting => "invalid setting",
            FleetErrorKind::Unavailable => "Redis unavailable",
            FleetErrorKind::Timeout => "Redis timed out",
            FleetErrorKind::ForeignValue => "foreign value under the quota's key",
            FleetErrorKind::Protocol => "unexpected answer from Redis",
        };
        write!(f, "{what}: {}", self.detail)
    }
}

impl std::error::Error for FleetError {}

/// Builds a [`FleetLimit`]; see [`FleetLimit::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct FleetLimitBuilder {
    url: String,
    name: String,
    limit: RateLimit,
    lease: u32,
    timeout: Duration,
    max_wait: Duration,
    grace: Duration,
    backoff: (Duration, Duration),
    fallback: Fallback,
    key_prefix: String,
}

impl FleetLimitBuilder {
    /// Slots booked per round trip (default 10, at least 1). More means fewer round trips, and
    /// more slots a replica may waste when it goes quiet.
    pub fn lease(mut self, lease: u32) -> Self {
        self.lease = lease;
        self
    }

    /// Connect, read and write timeout of each Redis call (default 250 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest an attempt waits for a round trip before the fallback decides (default
    /// 250 ms; never past the call's deadline).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How long after its instant a booked slot may still be taken (default 50 ms); see the
    /// bound in the [crate documentation](crate#the-bound).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The wait before asking Redis again after a failure: `first`, doubling on each failure
    /// up to `max` (default 500 ms up to 10 s).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max.max(first));
        self
    }

    /// What to do while Redis can't be used (default: [`Fallback::FailClosed`]).
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// The prefix of the quota's key (default `keel:quota:`; the key is `{prefix}{name}`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Checks the settings and the URL; does not connect (the first attempt does).
    pub fn build(self) -> Result<FleetLimit, FleetError> {
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| FleetError::new(FleetErrorKind::InvalidUrl, e.to_string()))?;
        let invalid = |what: &str| FleetError::new(FleetErrorKind::InvalidSetting, what);
        if self.lease == 0 {
            return Err(invalid("lease must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout must be greater than zero"));
        }
        if self.name.is_empty() {
            return Err(invalid("the quota's name must not be empty"));
        }
        // Whole microseconds, rounded up: never faster than the limit.
        let interval = u64::try_from(self.limit.interval().as_nanos().div_ceil(1000))
            .map_err(|_| invalid("the rate's interval is too long"))?
            .max(1);
        let tolerance = interval.saturating_mul(u64::from(self.limit.burst_size() - 1));
        let horizon = interval.saturating_mul(u64::from(self.lease - 1));
        if tolerance.max(horizon) > 1 << 50 {
            return Err(invalid("the rate's burst or lease spans too long"));
        }
        let local = match self.fallback {
            Fallback::Local(limit) => Some(Gcra::new(limit)),
            Fallback::FailClosed => None,
        };
        Ok(FleetLimit {
            inner: Arc::new(Inner {
                key: format!("{}{}", self.key_prefix, self.name),
                name: self.name,
                interval,
                tolerance,
                horizon,
                lease: self.lease,
                timeout: self.timeout,
                max_wait: self.max_wait,
                grace: self.grace,
                backoff: self.backoff,
                fallback: self.fallback,
                client,
                script: redis::Script::new(include_str!("gcra.lua")),
                conn: Mutex::new(None),
                state: Mutex::new(State {
                    slots: VecDeque::new(),
                    refill: None,
                    ask_at: None,
                    outage: None,
                    last_error: None,
                    local,
                    round_trips: 0,
                    fallbacks: 0,
                }),
            }),
        })
    }
}

/// A rate limit shared through Redis by every client, in every process, that names the same
/// quota. Cheap to clone; the clones share the process's lease and fallback limiter.
///
/// See the [crate documentation](crate) for how it works, its bound and its failure modes.
#[derive(Clone)]
pub struct FleetLimit {
    inner: Arc<Inner>,
}

impl fmt::Debug for FleetLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetLimit")
            .field("key", &self.inner.key)
            .field("lease", &self.inner.lease)
            .field("fallback", &self.inner.fallback)
            .finish_non_exhaustive()
    }
}

/// What a [`FleetLimit`] has done so far in this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Round trips to Redis that booked slots or said when to ask again.
    pub round_trips: u64,
    /// Attempts admitted, or failed, by the fallback.
    pub fallbacks: u64,
    /// Whether Redis is considered down now (the fallback decides).
    pub falling_back: bool,
}

impl FleetLimit {
    /// A limit of `limit` shared by everyone naming the quota `name` on the Redis at `url`
    /// (`redis://host:port/db`, `redis+unix:///path`).
    pub fn builder(
        url: impl Into<String>,
        name: impl Into<String>,
        limit: RateLimit,
    ) -> FleetLimitBuilder {
        FleetLimitBuilder {
            url: url.into(),
            name: name.into(),
            limit,
            lease: 10,
            timeout: Duration::from_millis(250),
            max_wait: Duration::from_millis(250),
            grace: Duration::from_millis(50),
            backoff: (Duration::from_millis(500), Duration::from_secs(10)),
            fallback: Fallback::FailClosed,
            key_prefix: "keel:quota:".to_owned(),
        }
    }

    /// The policy factory for [`ClientBuilder::policy`](keel_core::ClientBuilder::policy):
    /// `builder.policy(fleet.policy())`.
    pub fn policy(&self) -> impl Fn() -> FleetPolicy + Send + Sync + 'static {
        let inner = self.inner.clone();
        move || FleetPolicy {
            inner: inner.clone(),
        }
    }

    /// The Redis key of the quota.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The last error met talking to Redis (kept after Redis recovers).
    pub fn last_error(&self) -> Option<FleetError> {
        self.inner.lock().last_error.clone()
    }

    /// Counts of what this process did so far.
    pub fn stats(&self) -> FleetStats {
        let state = self.inner.lock();
        FleetStats {
            round_trips: state.round_trips,
            fallbacks: state.fallbacks,
            falling_back: state.outage.is_some(),
        }
    }
}

/// The per-call policy of a [`FleetLimit`]; see [`FleetLimit::policy`].
pub struct FleetPolicy {
    inner: Arc<Inner>,
}

impl fmt::Debug for FleetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FleetPolicy")
    }
}

impl Policy for FleetPolicy {
    fn observes_success(&self) -> bool {
        false
    }

    fn before_attempt(&mut self, cx: &mut PolicyContext<'_>) -> Action {
        let now = cx.now();
        let deadline = cx.deadline();
        match self.inner.step(now, deadline, cx.is_hedge()) {
            Step::Go => Action::Proceed,
            Step::Fail(err) => Action::Fail(err),
            step => Action::WaitFor(Waiter::new(self.inner.clone().wait(
                step,
                cx.timer().clone(),
                deadline,
            ))),
        }
    }
}

type Refill = Shared<blocking::Task<()>>;

struct Inner {
    name: String,
    key: String,
    /// µs between two slots, tolerance and horizon, in µs.
    interval: u64,
    tolerance: u64,
    horizon: u64,
    lease: u32,
    timeout: Duration,
    max_wait: Duration,
    grace: Duration,
    backoff: (Duration, Duration),
    fallback: Fallback,
    client: redis::Client,
    script: redis::Script,
    /// The connection, used by one round trip at a time; `None` until (re)connected.
    conn: Mutex<Option<redis::Connection>>,
    state: Mutex<State>,
}

struct State {
    /// The booked slots not taken yet, in order.
    slots: VecDeque<Instant>,
    /// The round trip in flight, and when it started.
    refill: Option<(Refill, Instant)>,
    /// Redis booked nothing: no slot is free before this instant.
    ask_at: Option<Instant>,
    outage: Option<Outage>,
    last_error: Option<FleetError>,
    local: Option<Gcra>,
    round_trips: u64,
    fallbacks: u64,
}

struct Outage {
    retry_at: Instant,
    backoff: Duration,
}

/// What an attempt does next.
enum Step {
    Go,
    At(Instant),
    Fail(Error),
    /// Wait for the round trip in flight (started at the instant).
    Refill(Refill, Instant),
    /// Redis has no slot before this instant: ask again then.
    AskAt(Instant),
}

fn rate_limited(why: &'static str) -> Error {
    Error::new(ErrorKind::RateLimited).with_source(why)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides what an attempt at `now` does; never blocks and never does I/O (a round trip it
    /// starts runs on the thread pool).
    fn step(self: &Arc<Self>, now: Instant, deadline: Instant, hedge: bool) -> Step {
        let mut state = self.lock();
        while state
            .slots
            .front()
            .is_some_and(|&slot| slot + self.grace < now)
        {
            state.slots.pop_front();
        }
        if let Some(&slot) = state.slots.front() {
            if slot <= now {
                state.slots.pop_front();
                return Step::Go;
            }
            if hedge || slot >= deadline {
                return Step::Fail(rate_limited(
                    "no slot of the fleet quota is free before the call's deadline",
                ));
            }
            state.slots.pop_front();
            return Step::At(slot);
        }
        if state.outage.as_ref().is_some_and(|o| now < o.retry_at) {
            return self.fall_back(&mut state, now, deadline, hedge);
        }
        if hedge {
            return Step::Fail(rate_limited("no slot of the fleet quota is free"));
        }
        if let Some((refill, started)) = &state.refill {
            return Step::Refill(refill.clone(), *started);
        }
        if let Some(at) = state.ask_at.filter(|&at| at > now) {
            if at >= deadline {
                return Step::Fail(rate_limited(
                    "no slot of the fleet quota is free before the call's deadline",
                ));
            }
            return Step::AskAt(at);
        }
        let inner = self.clone();
        let refill = blocking::unblock(move || inner.refill()).shared();
        state.refill = Some((refill.clone(), now));
        Step::Refill(refill, now)
    }

    fn fall_back(&self, state: &mut State, now: Instant, deadline: Instant, hedge: bool) -> Step {
        state.fallbacks += 1;
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "keel.redis.fallbacks",
            "quota" => self.name.clone(),
            "fallback" => match self.fallback {
                Fallback::Local(_) => "local",
                Fallback::FailClosed => "fail_closed",
            },
        )
        .increment(1);
        let Some(local) = &mut state.local else {
            let mut err = Error::new(ErrorKind::RateLimited);
            err = match &state.last_error {
                Some(cause) => err.with_source(cause.clone()),
                None => err.with_source("the fleet quota's Redis is unavailable"),
            };
            return Step::Fail(err);
        };
        let deadline = if hedge {
            now + Duration::from_nanos(1)
        } else {
            deadline
        };
        match local.acquire(now, Some(deadline)) {
            Ok(at) if at <= now => Step::Go,
            Ok(at) => Step::At(at),
            Err(_) => Step::Fail(rate_limited(
                "the fallback limit has no slot before the call's deadline",
            )),
        }
    }

    /// Waits as `step` says, then for as many more steps as it takes, racing it all against
    /// the call's deadline.
    async fn wait(self: Arc<Self>, step: Step, timer: Arc<dyn Timer>, deadline: Instant) -> Action {
        let give_up = timer.sleep_until(deadline);
        let steps = async {
            let mut step = step;
            loop {
                match step {
                    Step::Go => return Action::Proceed,
                    Step::Fail(err) => return Action::Fail(err),
                    Step::At(at) => {
                        timer.sleep_until(at).await;
                        return Action::Proceed;
                    }
                    Step::AskAt(at) => timer.sleep_until(at).await,
                    Step::Refill(refill, started) => {
                        let bound = timer.sleep_until(started + self.max_wait);
                        if let Either::Right(_) = select(refill, bound).await {
                            self.mark_down(
                                FleetError::new(
                                    FleetErrorKind::Timeout,
                                    format!("no answer within {:?}", self.max_wait),
                                ),
                                timer.now(),
                            );
                        }
                    }
                }
                step = self.step(timer.now(), deadline, false);
            }
        };
        match select(Box::pin(steps), give_up).await {
            Either::Left((action, _)) => action,
            Either::Right(_) => Action::Fail(rate_limited(
                "no slot of the fleet quota before the call's deadline",
            )),
        }
    }

    /// One round trip, on the thread pool: books slots, or records the failure.
    fn refill(&self) {
        let result = self.round_trip();
        let now = Instant::now();
        let mut state = self.lock();
        state.refill = None;
        match result {
            Ok((granted, offset)) => {
                state.round_trips += 1;
                if state.outage.take().is_some() {
                    tracing::info!(quota = %self.name, "Redis answers again: the fleet quota is shared again");
                }
                if granted <= 0 {
                    let wait = Duration::from_micros(offset.max(1).unsigned_abs());
                    state.ask_at = Some(now + wait);
                    return;
                }
                let interval = i64::try_from(self.interval).unwrap_or(i64::MAX);
                let granted = granted.min(i64::from(self.lease));
                for i in 0..granted {
                    let at = offset.saturating_add(i.saturating_mul(interval)).max(0);
                    state
                        .slots
                        .push_back(now + Duration::from_micros(at.unsigned_abs()));
                }
                // This process's own bookings fill the horizon until then: asking sooner would
                // only hear "nothing yet".
                let least = i64::from(self.lease.div_ceil(2));
                let next = offset
                    .saturating_add((granted + least - 1).saturating_mul(interval))
                    .saturating_sub(i64::try_from(self.horizon).unwrap_or(i64::MAX));
                state.ask_at = Some(now + Duration::from_micros(next.max(0).unsigned_abs()));
            }
            Err(err) => self.mark_down_locked(&mut state, err, now),
        }
    }

    fn round_trip(&self) -> Result<(i64, i64), FleetError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let c = match &mut *conn {
            Some(c) => c,
            slot @ None => {
                let fresh = self
                    .client
                    .get_connection_with_timeout(self.timeout)
                    .and_then(|c| {
                        c.set_read_timeout(Some(self.timeout))?;
                        c.set_write_timeout(Some(self.timeout))?;
                        Ok(c)
                    })
                    .map_err(|e| FleetError::from_redis(&e, &self.key))?;
                slot.insert(fresh)
            }
        };
        let reply = self
            .script
            .key(&self.key)
            .arg(self.interval)
            .arg(self.tolerance)
            .arg(self.lease)
            .arg(self.horizon)
            .arg(self.lease.div_ceil(2))
            .invoke::<(i64, i64)>(c);
        match reply {
            Ok(reply) => Ok(reply),
            Err(e) => {
                let err = FleetError::from_redis(&e, &self.key);
                if !matches!(err.kind, FleetErrorKind::ForeignValue) {
                    // A timed-out or broken connection may hold half a reply: start afresh.
                    *conn = None;
                }
                Err(err)
            }
        }
    }

    fn mark_down(&self, err: FleetError, now: Instant) {
        let mut state = self.lock();
        self.mark_down_locked(&mut state, err, now);
    }

    fn mark_down_locked(&self, state: &mut State, err: FleetError, now: Instant) {
        let backoff = match &state.outage {
            Some(o) if o.retry_at > now => return, // already down; the backoff stands
            Some(o) => (o.backoff * 2).min(self.backoff.1),
            None => {
                tracing::warn!(
                    quota = %self.name,
                    error = %err,
                    fallback = ?self.fallback,
                    "the fleet quota's Redis can't be used: falling back until it answers"
                );
                self.backoff.0
            }
        };
        state.outage = Some(Outage {
            retry_at: now + backoff,
            backoff,
        });
        state.last_error = Some(err);
    }
}
