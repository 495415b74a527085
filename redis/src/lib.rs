//! Fleet-wide limits, breakers and quota holds for keel clients, kept in Redis and shared by
//! every client of every process that names them.
//!
//! An API quota belongs to an account, not to a process: ten replicas that each respect
//! 100 requests/s send 1,000, and each replica's breaker has to learn on its own that the
//! dependency is down. Two ways to share:
//!
//! - [`RedisStore`]: a keel [`StateStore`](keel_core::store::StateStore) in Redis. Everything a
//!   client keeps across calls (its rate limits, its circuit breakers, the server's quota holds)
//!   is shared by every client whose store names the same namespace.
//! - [`FleetLimit`]: one quota by name, as a pipeline policy, for a limit on some calls rather
//!   than a whole client's.
//!
//! ```no_run
//! # fn demo<T: keel_core::Backend>() -> Result<(), Box<dyn std::error::Error>> {
//! use keel_core::{BreakerPolicy, RateLimit};
//! use keel_redis::{Fallback, RedisStore};
//!
//! let store = RedisStore::builder("redis://127.0.0.1:6379/", "github")
//!     .lease(10)
//!     // Redis down or foreign data under a key: each of 10 replicas keeps to a tenth.
//!     .fallback(Fallback::Divide(10))
//!     .build()?;
//! let client = keel_core::Client::<T>::builder()
//!     .state_store(store)
//!     .rate_limit(RateLimit::per_second(100)?)
//!     .circuit_breaker(BreakerPolicy::builder().consecutive_failures(5).build()?)
//!     .server_quotas(true)
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! # A whole client in Redis: `RedisStore`
//!
//! Each of a client's cells (its client-wide limit, each origin, each partition) has its keys
//! under `{prefix}{{namespace}}:` (default `keel:{namespace}:`: the braces make the
//! namespace a Redis Cluster hash tag, so one slot holds them all):
//!
//! - **Rate limits**: a GCRA schedule per limit (`…:rate:{cell}`), leased as below.
//! - **Breakers**: each process counts its own calls with its own breaker. When one trips it
//!   writes the trip (`…:breaker:{cell}`, with the end of its cool-down on Redis's clock) and
//!   publishes it on `…:events`; every other process's listener (one thread per store) opens
//!   its breaker until then: within a round trip. When the cool-down ends, a probe first claims
//!   one of the fleet's [`half_open_probes`](keel_core::BreakerPolicyBuilder::half_open_probes)
//!   slots (`…:probes:{cell}`, each claim lapsing after
//!   [`probe_ttl`](RedisStoreBuilder::probe_ttl) should its process die), so probes are bounded
//!   fleet-wide; the others are refused as an open breaker refuses. A probe's success counts
//!   toward [`successes_to_close`](keel_core::BreakerPolicyBuilder::successes_to_close)
//!   fleet-wide, and the close is published too. Operators' orders
//!   ([`Client::control_breaker`](keel_core::Client::control_breaker)) stay in their process.
//! - **Quota holds**: a hold the server asked for (`429`/`503` with `Retry-After`, or
//!   `RateLimit: r=0`) is written (`…:hold:{cell}`, expiring with it) and published: every
//!   replica with [`server_quotas`](keel_core::ClientBuilder::server_quotas) waits it out.
//! - A process that starts, or whose listener reconnects, reads every cell it uses afresh, so
//!   a trip or a hold published while it wasn't listening is not missed.
//!
//! While Redis is down, rate limits follow the [`Fallback`]; breakers and holds are the
//! process's own (what it sees meanwhile is not shared, and a trip is not replayed later).
//!
//! # `FleetLimit`
//!
//! A [`FleetLimit`] keeps one quota's GCRA schedule under one Redis key (`keel:quota:{name}`),
//! leased the same way:
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
//! `(4 × lease - 1) × interval` (room for several replicas' leases at once), and at least half
//! a lease (when fewer are free, Redis says when enough will be, and the process asks again
//! then). The process hands the slots to its attempts without any I/O: an attempt takes the
//! next slot and goes at its instant. When the slots run out, one round trip books more;
//! attempts that need a slot meanwhile wait for that same round trip, not one each.
//!
//! Measured (`cargo test -p keel-redis --test store -- three_clients --nocapture`): three
//! replicas saturating a shared 100/s quota with leases of 10 made one round trip per 9.7
//! admissions each, and split the quota evenly (178, 178 and 168 calls in 5 s). With a
//! horizon of one lease, they had competed for the same few slots: one round trip per 1.5
//! admissions, and a 148/228/148 split.
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
//! failing the attempt with [`ErrorKind::RateLimited`](keel_core::ErrorKind::RateLimited) (whose source is the [`FleetError`]).
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
//! and waits use the client's own [`Timer`](keel_core::Timer), so a `RedisStore` or a
//! `FleetLimit` works on tokio, smol, async-std or any executor, and never spawns on the
//! caller's. A `RedisStore` also runs one thread of its own that listens for the fleet's news
//! (it ends within 200 ms of the store's last clone and client going away).

mod conn;
mod lease;
mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use keel_core::pipeline::{Action, Policy, PolicyContext, Waiter};
use keel_core::RateLimit;

use conn::Redis;
use lease::{Lease, LeaseSettings, Step};

pub use store::{RedisStore, RedisStoreBuilder, StoreStats};

/// What a process does while the shared quota can't be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Keep to this limit in this process alone (shared by the clients of the [`FleetLimit`];
    /// for a [`RedisStore`], every shared limit becomes this one).
    Local(RateLimit),
    /// Keep to `1/n` of the shared limit in this process alone (its requests and its burst
    /// divided by `n`, at least 1 each): with `n` the number of replicas, the fleet keeps to
    /// about the shared limit.
    Divide(u32),
    /// Fail every attempt with [`ErrorKind::RateLimited`](keel_core::ErrorKind::RateLimited) until Redis answers again.
    FailClosed,
}

impl Fallback {
    /// The limit a process keeps to alone instead of `shared`; `None` for fail closed.
    fn local(self, shared: RateLimit) -> Option<RateLimit> {
        match self {
            Self::Local(limit) => Some(limit),
            Self::Divide(n) => {
                let n = n.max(1);
                RateLimit::new((shared.requests() / n).max(1), shared.period())
                    .and_then(|l| l.burst((shared.burst_size() / n).max(1)))
                    .ok()
            }
            Self::FailClosed => None,
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(limit) => write!(
                f,
                "a per-process limit of {} per {:?}",
                limit.requests(),
                limit.period()
            ),
            Self::Divide(n) => write!(f, "1/{n} of each limit per process"),
            Self::FailClosed => f.write_str("failing closed"),
        }
    }
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
        let client = open(&self.url, self.lease, self.timeout)?;
        if self.name.is_empty() {
            return Err(invalid("the quota's name must not be empty"));
        }
        let redis = Arc::new(Redis::new(
            client,
            self.timeout,
            self.backoff,
            format!("quota {:?}", self.name),
            self.fallback.to_string(),
        ));
        let lease = Lease::new(
            self.name.clone(),
            format!("{}{}", self.key_prefix, self.name),
            self.limit,
            LeaseSettings {
                lease: self.lease,
                max_wait: self.max_wait,
                grace: self.grace,
            },
            self.fallback.local(self.limit),
            redis,
            Arc::new(redis::Script::new(include_str!("gcra.lua"))),
        )
        .map_err(invalid)?;
        Ok(FleetLimit {
            lease: Arc::new(lease),
            fallback: self.fallback,
        })
    }
}

/// A rate limit shared through Redis by every client, in every process, that names the same
/// quota. Cheap to clone; the clones share the process's lease and fallback limiter.
///
/// See the [crate documentation](crate) for how it works, its bound and its failure modes.
#[derive(Clone)]
pub struct FleetLimit {
    lease: Arc<Lease>,
    fallback: Fallback,
}

impl fmt::Debug for FleetLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetLimit")
            .field("key", &self.lease.key())
            .field("fallback", &self.fallback)
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
        let lease = self.lease.clone();
        move || FleetPolicy {
            lease: lease.clone(),
        }
    }

    /// The Redis key of the quota.
    pub fn key(&self) -> &str {
        self.lease.key()
    }

    /// The last error met talking to Redis (kept after Redis recovers).
    pub fn last_error(&self) -> Option<FleetError> {
        self.lease.redis().last_error()
    }

    /// Counts of what this process did so far.
    pub fn stats(&self) -> FleetStats {
        let (round_trips, fallbacks) = self.lease.redis().counts();
        FleetStats {
            round_trips,
            fallbacks,
            falling_back: self.lease.redis().in_outage(),
        }
    }
}

/// The per-call policy of a [`FleetLimit`]; see [`FleetLimit::policy`].
pub struct FleetPolicy {
    lease: Arc<Lease>,
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
        let caller = self.lease.waiter_id();
        match self.lease.step(now, deadline, cx.is_hedge(), caller) {
            Step::Go(_) => Action::Proceed,
            Step::Fail(err) => Action::Fail(err),
            step => Action::WaitFor(Waiter::new(self.lease.clone().wait(
                step,
                cx.timer().clone(),
                deadline,
                caller,
            ))),
        }
    }
}

fn invalid(what: &str) -> FleetError {
    FleetError::new(FleetErrorKind::InvalidSetting, what)
}

/// The Redis client of `url`, with the common settings checked.
fn open(url: &str, lease: u32, timeout: Duration) -> Result<redis::Client, FleetError> {
    let client = redis::Client::open(url)
        .map_err(|e| FleetError::new(FleetErrorKind::InvalidUrl, e.to_string()))?;
    if lease == 0 {
        return Err(invalid("lease must be at least 1"));
    }
    if timeout.is_zero() {
        return Err(invalid("timeout must be greater than zero"));
    }
    Ok(client)
}
