//! [`RedisStore`]: a keel [`StateStore`] whose rate limits, circuit breakers and server quota
//! holds are shared through Redis by every client, in every process, that names the same
//! namespace.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::future::{select, Either, FutureExt, Shared};
use keel_core::machine::breaker::{
    Admission, Breaker, BreakerPolicy, BreakerState, CallResult, Ticket, Transition,
};
use keel_core::store::{Acquire, Admit, BreakerAdmit, CellKey, LocalCell, StateCell, StateStore};
use keel_core::{BreakerControl, Timer};

use crate::conn::Redis;
use crate::lease::{Lease, LeaseSettings};
use crate::{invalid, open, Fallback, FleetError, FleetErrorKind};

/// How long a tripped breaker's key outlives its cool-down in Redis (a fleet that all went
/// away forgets it then).
const BREAKER_KEEP: Duration = Duration::from_secs(24 * 3600);

/// How early, by Redis's clock, a probe may claim a slot before the fleet's cool-down ends:
/// the trip reached Redis a moment after this process's breaker opened, so its cool-down ends
/// a moment later there.
const CLAIM_SLACK: Duration = Duration::from_millis(25);

/// How often the subscriber looks up from its connection to see whether the store is gone.
const SUBSCRIBER_TICK: Duration = Duration::from_millis(200);

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    namespace: String,
    lease: u32,
    timeout: Duration,
    max_wait: Duration,
    grace: Duration,
    backoff: (Duration, Duration),
    fallback: Fallback,
    key_prefix: String,
    probe_ttl: Duration,
}

impl RedisStoreBuilder {
    /// Slots of a rate limit booked per round trip (default 10, at least 1); see
    /// [`FleetLimitBuilder::lease`](crate::FleetLimitBuilder::lease).
    pub fn lease(mut self, lease: u32) -> Self {
        self.lease = lease;
        self
    }

    /// Connect, read and write timeout of each Redis call (default 250 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest an attempt waits for a round trip (a lease, a probe slot) before the
    /// fallback decides (default 250 ms; never past the call's deadline).
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

    /// What the rate limits do while Redis can't be used (default: [`Fallback::FailClosed`]).
    /// Breakers and holds always fall back to the process's own.
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// The prefix of every key (default `keel:`; keys are `{prefix}{{namespace}}:…`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long a half-open probe's claim on one of the fleet's probe slots lasts when its
    /// process never says how the probe went (it crashed, say); default 30 s.
    pub fn probe_ttl(mut self, ttl: Duration) -> Self {
        self.probe_ttl = ttl;
        self
    }

    /// Checks the settings and the URL; does not connect (the first use does).
    pub fn build(self) -> Result<RedisStore, FleetError> {
        let client = open(&self.url, self.lease, self.timeout)?;
        if self.namespace.is_empty() || self.namespace.contains(['{', '}']) {
            return Err(invalid(
                "the namespace must not be empty, nor hold braces (it is the keys' hash tag)",
            ));
        }
        if self.probe_ttl < Duration::from_millis(1) {
            return Err(invalid(
                "the probe claim's time to live must be at least 1 ms",
            ));
        }
        let prefix = format!("{}{{{}}}:", self.key_prefix, self.namespace);
        let redis = Arc::new(Redis::new(
            client,
            self.timeout,
            self.backoff,
            format!("store {:?}", self.namespace),
            self.fallback.to_string(),
        ));
        let id = {
            use std::hash::{BuildHasher as _, Hasher as _};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            format!("{:016x}", h.finish())
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                channel: format!("{prefix}events"),
                prefix,
                namespace: self.namespace,
                id,
                settings: LeaseSettings {
                    lease: self.lease,
                    max_wait: self.max_wait,
                    grace: self.grace,
                },
                fallback: self.fallback,
                probe_ttl: self.probe_ttl,
                redis,
                gcra: Arc::new(redis::Script::new(include_str!("gcra.lua"))),
                script: redis::Script::new(include_str!("cell.lua")),
                cells: Mutex::default(),
                subscriber: OnceLock::new(),
                members: AtomicU64::new(0),
                published: AtomicU64::new(0),
                heard: AtomicU64::new(0),
            }),
        })
    }
}

/// A [`StateStore`] in Redis: every client (of any process, on any machine) built with a store
/// of the same namespace shares its rate limits, its circuit breakers and the server's quota
/// holds. Cheap to clone; clones share the connection and the cells.
///
/// See the [crate documentation](crate#a-whole-client-in-redis-redisstore) for what is shared,
/// how, and what happens when Redis is down.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.inner.namespace)
            .field("lease", &self.inner.settings.lease)
            .field("fallback", &self.inner.fallback)
            .finish_non_exhaustive()
    }
}

/// What a [`RedisStore`] has done so far in this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Round trips of the rate limits' leases.
    pub round_trips: u64,
    /// Rate-limit admissions decided by the fallback.
    pub fallbacks: u64,
    /// Whether Redis is considered down now.
    pub falling_back: bool,
    /// News this process sent the fleet: trips, closes, holds.
    pub published: u64,
    /// News this process heard from the fleet and applied.
    pub heard: u64,
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://host:port/db`, `redis+unix:///path`) shared by
    /// every client whose store names the same `namespace` (the name of the account or the API
    /// whose quota and health the fleet shares).
    pub fn builder(url: impl Into<String>, namespace: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            namespace: namespace.into(),
            lease: 10,
            timeout: Duration::from_millis(250),
            max_wait: Duration::from_millis(250),
            grace: Duration::from_millis(50),
            backoff: (Duration::from_millis(500), Duration::from_secs(10)),
            fallback: Fallback::FailClosed,
            key_prefix: "keel:".to_owned(),
            probe_ttl: Duration::from_secs(30),
        }
    }

    /// The prefix of every key of the store: `keel:{namespace}:`.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The last error met talking to Redis (kept after Redis recovers).
    pub fn last_error(&self) -> Option<FleetError> {
        self.inner.redis.last_error()
    }

    /// Counts of what this process did so far.
    pub fn stats(&self) -> StoreStats {
        let (round_trips, fallbacks) = self.inner.redis.counts();
        StoreStats {
            round_trips,
            fallbacks,
            falling_back: self.inner.redis.in_outage(),
            published: self.inner.published.load(Ordering::Relaxed),
            heard: self.inner.heard.load(Ordering::Relaxed),
        }
    }
}

impl StateStore for RedisStore {
    fn cell(&self, key: CellKey<'_>) -> Arc<dyn StateCell> {
        self.inner.start_subscriber();
        let name = key.to_string();
        let mut cells = self.inner.cells();
        if let Some(cell) = cells.get(&name).and_then(Weak::upgrade) {
            return cell;
        }
        cells.retain(|_, cell| cell.strong_count() > 0);
        let p = &self.inner.prefix;
        let cell = Arc::new_cyclic(|me| RedisCell {
            me: me.clone(),
            store: self.inner.clone(),
            keys: [
                format!("{p}breaker:{name}"),
                format!("{p}probes:{name}"),
                format!("{p}hold:{name}"),
            ],
            name: name.clone(),
            local: LocalCell::default(),
            lease: OnceLock::new(),
            fleet: Mutex::default(),
            queue: Mutex::default(),
        });
        cells.insert(name, Arc::downgrade(&cell));
        drop(cells);
        // Learn where the fleet is: a breaker tripped or a hold in place before this process
        // came.
        cell.read();
        cell
    }
}

struct Inner {
    namespace: String,
    prefix: String,
    channel: String,
    /// This store's id in the news it publishes (its own news is not applied twice).
    id: String,
    settings: LeaseSettings,
    fallback: Fallback,
    probe_ttl: Duration,
    redis: Arc<Redis>,
    gcra: Arc<redis::Script>,
    script: redis::Script,
    cells: Mutex<HashMap<String, Weak<RedisCell>>>,
    subscriber: OnceLock<()>,
    members: AtomicU64,
    published: AtomicU64,
    heard: AtomicU64,
}

impl Inner {
    fn cells(&self) -> MutexGuard<'_, HashMap<String, Weak<RedisCell>>> {
        self.cells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn live_cells(&self) -> Vec<Arc<RedisCell>> {
        self.cells().values().filter_map(Weak::upgrade).collect()
    }

    fn start_subscriber(self: &Arc<Self>) {
        self.subscriber.get_or_init(|| {
            let weak = Arc::downgrade(self);
            let client = self.redis.client().clone();
            let (channel, timeout) = (self.channel.clone(), self.redis.timeout);
            let spawned = std::thread::Builder::new()
                .name("keel-redis-news".to_owned())
                .spawn(move || listen(&weak, &client, &channel, timeout));
            if let Err(err) = spawned {
                tracing::warn!(error = %err, "keel-redis: no thread for the fleet's news: \
                    trips and holds of other processes won't be heard");
            }
        });
    }

    /// Applies one piece of news from the channel.
    fn hear(&self, payload: &str) {
        let mut parts = payload.splitn(5, ' ');
        let (Some("keel1"), Some(from), Some(what), Some(ms), Some(cell)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return;
        };
        if from == self.id {
            return;
        }
        let Ok(ms) = ms.parse::<u64>() else { return };
        let Some(cell) = self.cells().get(cell).and_then(Weak::upgrade) else {
            return;
        };
        self.heard.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let until = now + Duration::from_millis(ms);
        match what {
            "open" => cell.apply(Remote::Open(until)),
            "close" => cell.apply(Remote::Closed),
            "hold" => cell.local.hold(now, until),
            _ => {}
        }
    }
}

/// The subscriber's loop, on its own thread: hears the fleet's news until the store is gone,
/// reconnecting (and reading every cell afresh) after a failure.
fn listen(store: &Weak<Inner>, client: &redis::Client, channel: &str, timeout: Duration) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if store.strong_count() == 0 {
            return;
        }
        let subscribed = client
            .get_connection_with_timeout(timeout)
            .and_then(|mut conn| {
                conn.set_write_timeout(Some(timeout))?;
                let mut pubsub = conn.as_pubsub();
                pubsub.subscribe(channel)?;
                pubsub.set_read_timeout(Some(SUBSCRIBER_TICK))?;
                // What was published while this process wasn't listening: read every cell again.
                if let Some(store) = store.upgrade() {
                    for cell in store.live_cells() {
                        cell.read();
                    }
                }
                loop {
                    match pubsub.get_message() {
                        Ok(msg) => {
                            let Some(store) = store.upgrade() else {
                                return Ok(());
                            };
                            if let Ok(payload) = msg.get_payload::<String>() {
                                store.hear(&payload);
                            }
                        }
                        Err(e) if e.is_timeout() => {
                            if store.strong_count() == 0 {
                                return Ok(());
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            });
        match subscribed {
            Ok(()) => return,
            Err(_) => {
                // Redis is down or went away: wait, a little longer each time, and reconnect.
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if store.strong_count() == 0 {
                        return;
                    }
                    std::thread::sleep(SUBSCRIBER_TICK.min(backoff));
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Where Redis says the fleet's breaker is: `breaker` and `left` as `cell.lua` answers them.
fn remote(breaker: i64, left: i64, now: Instant) -> Remote {
    match breaker {
        // Half-open: this process may probe too, when the fleet grants it a slot.
        2 => Remote::Open(now),
        1 => Remote::Open(now + Duration::from_millis(left.unsigned_abs())),
        _ => Remote::Closed,
    }
}

/// News about a breaker from another process.
#[derive(Clone, Copy, Debug)]
enum Remote {
    Open(Instant),
    Closed,
}

/// What a cell tells Redis, in the background.
enum Op {
    /// Read where the fleet is; the answer is dropped if this process changed its breaker
    /// since (the epoch when it was sent): it would be older news than the process's own.
    Read(u64),
    /// The breaker tripped, open until this instant (sent as the time left when the op runs,
    /// so that a wait on the thread pool doesn't lengthen the fleet's cool-down).
    Trip(Instant),
    Close,
    ProbeOk {
        member: String,
        needed: u32,
    },
    Release(String),
    Hold(Duration),
}

type Claim = Shared<blocking::Task<()>>;

/// The fleet side of a cell's breaker.
#[derive(Default)]
struct Fleet {
    /// A change news from elsewhere made, not reported yet.
    pending: Option<Transition>,
    /// News that came before this process made the breaker.
    early: Option<Remote>,
    /// Fleet probe slots claimed and not handed to a probe yet.
    granted: Vec<String>,
    /// Fleet probe slots of the probes in flight.
    in_use: Vec<String>,
    /// The claim in flight, and when it started.
    claim: Option<(Claim, Instant)>,
    /// Every fleet probe slot is taken: don't ask before this.
    busy_until: Option<Instant>,
    /// Counts the changes this process made to its breaker.
    epoch: u64,
}

struct RedisCell {
    /// The cell itself, for the work it sends to the thread pool.
    me: Weak<RedisCell>,
    store: Arc<Inner>,
    name: String,
    /// The breaker, its probes and the hold.
    keys: [String; 3],
    local: LocalCell,
    /// The rate limit's lease, made at the first slot asked for (`None`: the limit can't be
    /// kept in Redis, so this process keeps it alone).
    lease: OnceLock<Option<Arc<Lease>>>,
    fleet: Mutex<Fleet>,
    /// The ops sent and not run yet, and whether a drain is running them.
    queue: Mutex<(VecDeque<Op>, bool)>,
}

impl fmt::Debug for RedisCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCell")
            .field("name", &self.name)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl RedisCell {
    fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn arc(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

    /// Applies news about the breaker (a breaker not made yet takes it when it is).
    fn apply(&self, remote: Remote) {
        let mut fleet = self.fleet();
        self.apply_locked(&mut fleet, remote);
    }

    fn apply_locked(&self, fleet: &mut Fleet, remote: Remote) {
        let mut local = self.local.lock();
        let Some(breaker) = &mut local.breaker else {
            fleet.early = Some(remote);
            return;
        };
        let transition = match remote {
            // The same trip heard back from Redis ends a moment later there: not news.
            Remote::Open(until)
                if matches!(breaker.state(), BreakerState::Open { until: own }
                    if until <= own + CLAIM_SLACK) =>
            {
                None
            }
            Remote::Open(until) => breaker.opened_elsewhere(until),
            Remote::Closed => {
                fleet.busy_until = None;
                breaker.closed_elsewhere()
            }
        };
        if transition.is_some() {
            fleet.pending = transition;
        }
    }

    /// Reads where the fleet is, in the background.
    fn read(&self) {
        let epoch = self.fleet().epoch;
        self.send(Op::Read(epoch));
    }

    /// Runs `op` on the thread pool, without waiting for it (nothing is sent while Redis is
    /// down: the process keeps its breakers and holds alone until it answers).
    ///
    /// A cell's ops reach Redis in the order they were sent (one drains the queue at a time):
    /// a read sent after a trip never overtakes it.
    fn send(&self, op: Op) {
        if self.store.redis.is_down(Instant::now()) {
            return;
        }
        let Some(cell) = self.arc() else { return };
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.0.push_back(op);
        if queue.1 {
            return; // the drain in flight takes it
        }
        queue.1 = true;
        drop(queue);
        blocking::unblock(move || loop {
            let op = {
                let mut queue = cell.queue.lock().unwrap_or_else(PoisonError::into_inner);
                match queue.0.pop_front() {
                    Some(op) => op,
                    None => {
                        queue.1 = false;
                        return;
                    }
                }
            };
            cell.run(op);
        })
        .detach();
    }

    fn invoke(&self, op: &str, args: &[String]) -> Result<(i64, i64, i64), FleetError> {
        let store = &self.store;
        store.redis.run(&self.keys[0], |c| {
            let mut call = store.script.prepare_invoke();
            call.key(&self.keys[0])
                .key(&self.keys[1])
                .key(&self.keys[2])
                .arg(op)
                .arg(&store.channel)
                .arg(&store.id)
                .arg(&self.name);
            for arg in args {
                call.arg(arg);
            }
            call.invoke::<(i64, i64, i64)>(c)
        })
    }

    fn run(&self, op: Op) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let keep = ms(BREAKER_KEEP);
        let result = match &op {
            Op::Read(_) => self.invoke("read", &[]),
            Op::Trip(until) => {
                let left = until.saturating_duration_since(Instant::now());
                self.invoke("trip", &[ms(left).to_string(), keep.to_string()])
            }
            Op::Close => self.invoke("close", &[]),
            Op::ProbeOk { member, needed } => {
                self.invoke("probe_ok", &[needed.to_string(), member.clone()])
            }
            Op::Release(member) => self.invoke("release", std::slice::from_ref(member)),
            Op::Hold(d) => self.invoke("hold", &[ms(*d).to_string()]),
        };
        let now = Instant::now();
        match result {
            Ok((breaker, left, hold)) => {
                self.store.redis.mark_up();
                match op {
                    Op::Read(epoch) => {
                        let mut fleet = self.fleet();
                        if fleet.epoch == epoch {
                            self.apply_locked(&mut fleet, remote(breaker, left, now));
                        }
                        drop(fleet);
                        if hold > 0 {
                            let hold = Duration::from_millis(hold.unsigned_abs());
                            self.local.hold(now, now + hold);
                        }
                    }
                    Op::Trip(_) | Op::Close | Op::Hold(_) => {
                        self.store.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Op::ProbeOk { .. } => self.apply(remote(breaker, left, now)),
                    Op::Release(_) => {}
                }
            }
            Err(err) => {
                tracing::debug!(cell = %self.name, error = %err, "keel-redis: a cell's update failed");
                self.store.redis.mark_down(err, now);
            }
        }
    }

    /// Claims a fleet probe slot, on the thread pool.
    fn claim(&self, max: u32, member: String) {
        let ttl = u64::try_from(self.store.probe_ttl.as_millis()).unwrap_or(u64::MAX);
        let slack = CLAIM_SLACK.as_millis().to_string();
        let result = self.invoke(
            "claim",
            &[max.to_string(), ttl.to_string(), member.clone(), slack],
        );
        let now = Instant::now();
        let mut fleet = self.fleet();
        fleet.claim = None;
        match result {
            Ok((breaker, left, granted)) => {
                self.store.redis.mark_up();
                match (breaker, granted) {
                    (2, 1) => fleet.granted.push(member),
                    (2, _) => {
                        // Every slot is taken: the probes' results will be heard; until then,
                        // ask again now and then.
                        let wait =
                            Duration::from_millis(left.unsigned_abs()).min(Duration::from_secs(1));
                        fleet.busy_until = Some(now + wait);
                    }
                    (1, _) => self.apply_locked(
                        &mut fleet,
                        Remote::Open(now + Duration::from_millis(left.unsigned_abs())),
                    ),
                    _ => self.apply_locked(&mut fleet, Remote::Closed),
                }
            }
            Err(err) => {
                drop(fleet);
                self.store.redis.mark_down(err, now);
            }
        }
    }

    fn lease(&self, limit: keel_core::RateLimit) -> Option<&Arc<Lease>> {
        self.lease
            .get_or_init(|| {
                let store = &self.store;
                let lease = Lease::new(
                    format!("{}/{}", store.namespace, self.name),
                    format!("{}rate:{}", store.prefix, self.name),
                    limit,
                    store.settings,
                    store.fallback.local(limit),
                    store.redis.clone(),
                    store.gcra.clone(),
                );
                match lease {
                    Ok(lease) => Some(Arc::new(lease)),
                    Err(why) => {
                        tracing::warn!(cell = %self.name, why, "keel-redis: this rate limit can't be \
                            kept in Redis; this process keeps it alone");
                        None
                    }
                }
            })
            .as_ref()
    }
}

impl StateCell for RedisCell {
    fn acquire(&self, request: &Acquire<'_>) -> Admit {
        match self.lease(request.limit()) {
            Some(lease) => lease.acquire(request),
            None => self.local.acquire(request),
        }
    }

    fn cancel(&self, slot: Instant) {
        match self.lease.get() {
            Some(Some(lease)) => lease.cancel(slot),
            _ => self.local.cancel(slot),
        }
    }

    fn hold(&self, now: Instant, until: Instant) {
        self.local.hold(now, until);
        if let Some(cell) = self.arc() {
            cell.send(Op::Hold(until.saturating_duration_since(now)));
        }
    }

    fn held_until(&self) -> Option<Instant> {
        self.local.held_until()
    }

    fn admit(
        &self,
        policy: &BreakerPolicy,
        now: Instant,
        timer: &Arc<dyn Timer>,
    ) -> (BreakerAdmit, Option<Transition>) {
        let mut fleet = self.fleet();
        if let Some(early) = fleet.early.take() {
            self.local
                .lock()
                .breaker
                .get_or_insert_with(|| Breaker::new(policy));
            self.apply_locked(&mut fleet, early);
        }
        let (admission, transition) = self.local.admit(policy, now, timer);
        let transition = transition.or_else(|| fleet.pending.take());
        let BreakerAdmit::Decided(Admission::Allowed(ticket)) = admission else {
            return (admission, transition);
        };
        if !ticket.is_probe() || self.store.redis.is_down(now) {
            // Not a probe, or Redis is down: the process's own bound on probes holds.
            return (admission, transition);
        }
        if let Some(member) = fleet.granted.pop() {
            fleet.in_use.push(member);
            return (admission, transition);
        }
        // The probe needs one of the fleet's slots first.
        self.local.release(ticket);
        if fleet.busy_until.is_some_and(|until| until > now) {
            return (
                BreakerAdmit::Decided(Admission::Rejected { until: None }),
                transition,
            );
        }
        let (claim, started) = match &fleet.claim {
            Some((claim, started)) => (claim.clone(), *started),
            None => {
                let Some(cell) = self.arc() else {
                    return (admission, transition);
                };
                let n = self.store.members.fetch_add(1, Ordering::Relaxed);
                let member = format!("{}:{n}", self.store.id);
                let max = policy.half_open_probes();
                let claim = blocking::unblock(move || cell.claim(max, member)).shared();
                fleet.claim = Some((claim.clone(), now));
                (claim, now)
            }
        };
        let store = self.store.clone();
        let timer = timer.clone();
        let wait = Box::pin(async move {
            let bound = timer.sleep_until(started + store.settings.max_wait);
            if let Either::Right(_) = select(claim, bound).await {
                store.redis.mark_down(
                    FleetError::new(
                        FleetErrorKind::Timeout,
                        format!("no answer within {:?}", store.settings.max_wait),
                    ),
                    timer.now(),
                );
            }
        });
        (BreakerAdmit::Again(wait), transition)
    }

    fn on_result(&self, ticket: Ticket, result: CallResult, now: Instant) -> Option<Transition> {
        let (transition, member) = {
            let mut fleet = self.fleet();
            let transition = self.local.on_result(ticket, result, now);
            if transition.is_some() {
                fleet.epoch += 1;
            }
            let member = if ticket.is_probe() {
                fleet.in_use.pop()
            } else {
                None
            };
            (transition, member)
        };
        let op = match transition.map(|t| t.to) {
            Some(BreakerState::Open { until }) => Some(Op::Trip(until)),
            Some(BreakerState::Closed) => Some(Op::Close),
            _ => member.map(|member| match result {
                CallResult::Success => Op::ProbeOk {
                    member,
                    needed: self
                        .local
                        .lock()
                        .breaker
                        .as_ref()
                        .map_or(1, |b| b.policy().successes_to_close()),
                },
                _ => Op::Release(member),
            }),
        };
        if let Some(op) = op {
            if let Some(cell) = self.arc() {
                cell.send(op);
            }
        }
        transition
    }

    fn release(&self, ticket: Ticket) {
        self.local.release(ticket);
        if ticket.is_probe() {
            let member = self.fleet().in_use.pop();
            if let (Some(member), Some(cell)) = (member, self.arc()) {
                cell.send(Op::Release(member));
            }
        }
    }

    fn breaker_state(&self) -> Option<BreakerState> {
        self.local.breaker_state()
    }

    fn control(&self, policy: &BreakerPolicy, control: BreakerControl) -> Option<Transition> {
        let mut fleet = self.fleet();
        fleet.epoch += 1;
        self.local.control(policy, control)
    }
}
