//! The connection pool: which connection a request may use, and which connection is kept.
//!
//! Nothing in this module knows about hyper, sockets or a runtime. Connections are opaque `C`s
//! that answer one question ([`PoolConn::is_open`]); time comes in as an argument, like in
//! keel-core's machines, so every rule here is tested without a network or a clock.
//!
//! Two kinds of connection live in a pool:
//!
//! - **exclusive** ones (HTTP/1.1) carry one exchange at a time. [`Pool::checkout`] moves one
//!   out of the idle list into a [`Pooled`] guard, so it can't be handed out twice. It comes back
//!   only through [`Pooled::release`], which the transport calls once a response body reached its
//!   end cleanly; a guard dropped any other way drops (closes) its connection.
//! - **shared** ones (HTTP/2) carry many exchanges at once. [`Pool::share`] registers a handle;
//!   [`Pool::checkout_shared`] hands out clones of it while it is open.
//!
//! Idle connections are expired lazily: on every checkout, and on every return (a pool whose
//! client sends nothing more keeps its expired sockets until the pool is dropped or used again;
//! nothing runs in the background).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// The one thing the pool asks of a connection.
pub(crate) trait PoolConn {
    /// Whether the connection can carry another request: not closed by the peer, not broken,
    /// not in the middle of an exchange. Called outside the pool's lock; it must not block.
    fn is_open(&mut self) -> bool;
}

/// How many idle connections are kept, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolConfig {
    /// Idle exclusive connections kept per key; `0` turns pooling off (shared connections are
    /// then not kept either).
    pub(crate) max_idle_per_key: usize,
    /// How long a connection may stay idle before it is dropped; `None` keeps it forever.
    pub(crate) idle_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    /// hyper-util's defaults, so keel's backends pool alike: no limit on idle connections per
    /// host, 90 seconds of idleness.
    fn default() -> Self {
        Self {
            max_idle_per_key: usize::MAX,
            idle_timeout: Some(Duration::from_secs(90)),
        }
    }
}

/// What the pool tells about connections coming back, for the connection caps.
pub(crate) trait Returns<K>: Send + Sync {
    /// Whether to keep a connection to `key` coming back idle; false closes it (a request for
    /// another key waits for its place).
    fn keep(&self, key: &K) -> bool;
    /// A connection to `key` is idle in the pool now.
    fn returned(&self, key: &K);
}

/// A connection pool keyed by `K` (the origin).
pub(crate) struct Pool<K, C> {
    inner: Arc<Mutex<Inner<K, C>>>,
}

struct Inner<K, C> {
    config: PoolConfig,
    /// Told about connections coming back.
    returns: Option<Arc<dyn Returns<K>>>,
    /// Idle exclusive connections, most recently returned last.
    idle: HashMap<K, Vec<Idle<C>>>,
    /// One shared connection per key, and when it was last handed out.
    shared: HashMap<K, Idle<C>>,
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

impl<K, C> Clone for Pool<K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Eq + Hash + Clone, C: PoolConn> Pool<K, C> {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                config,
                returns: None,
                idle: HashMap::new(),
                shared: HashMap::new(),
            })),
        }
    }

    /// Tells `returns` about every connection coming back.
    pub(crate) fn with_returns(self, returns: Arc<dyn Returns<K>>) -> Self {
        self.lock().returns = Some(returns);
        self
    }

    /// Closes the idle exclusive connection that has waited longest, of any key but `except`,
    /// to make room under a total cap; false if there was none.
    pub(crate) fn evict_idle(&self, except: &K) -> bool {
        let evicted = {
            let mut inner = self.lock();
            let oldest = inner
                .idle
                .iter()
                .filter(|(k, list)| *k != except && !list.is_empty())
                .min_by_key(|(_, list)| list[0].since)
                .map(|(k, _)| k.clone());
            let Some(key) = oldest else {
                return false;
            };
            let list = inner.idle.get_mut(&key).expect("found above");
            let conn = list.remove(0).conn;
            if list.is_empty() {
                inner.idle.remove(&key);
            }
            conn
        };
        // Closing the socket happens outside the lock.
        drop(evicted);
        true
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, C>> {
        lock(&self.inner)
    }

    /// Takes an idle, open, unexpired exclusive connection for `key`, most recently used first.
    /// Expired and closed connections met on the way are dropped.
    pub(crate) fn checkout(&self, key: &K, now: Instant) -> Option<Pooled<K, C>> {
        loop {
            let (candidate, expired) = {
                let mut inner = self.lock();
                let expired = inner.remove_expired(now);
                let candidate = inner.idle.get_mut(key).and_then(Vec::pop);
                if inner.idle.get(key).is_some_and(Vec::is_empty) {
                    inner.idle.remove(key);
                }
                (candidate, expired)
            };
            // Closing sockets happens outside the lock.
            drop(expired);
            let mut idle = candidate?;
            if idle.conn.is_open() {
                return Some(self.guard(key.clone(), idle.conn));
            }
        }
    }

    /// Wraps a fresh exclusive connection so that it can be released into this pool.
    pub(crate) fn guard(&self, key: K, conn: C) -> Pooled<K, C> {
        Pooled {
            conn: Some(conn),
            key,
            pool: Arc::downgrade(&self.inner),
        }
    }

    /// Number of idle exclusive connections kept for `key`.
    pub(crate) fn idle_count(&self, key: &K) -> usize {
        self.lock().idle.get(key).map_or(0, Vec::len)
    }
}

// Shared connections are HTTP/2's; without that feature only the unit tests use them.
#[cfg_attr(not(feature = "http2"), allow(dead_code))]
impl<K: Eq + Hash + Clone, C: PoolConn + Clone> Pool<K, C> {
    /// Registers a shared connection for `key`, replacing any previous one (whose existing
    /// clones keep working). Not kept when pooling is off.
    pub(crate) fn share(&self, key: K, conn: C, now: Instant) {
        let replaced = {
            let mut inner = self.lock();
            if inner.config.max_idle_per_key == 0 {
                return;
            }
            inner.shared.insert(key, Idle { conn, since: now })
        };
        drop(replaced);
    }

    /// A clone of the open shared connection for `key`, if there is one. A closed or expired
    /// one is dropped from the pool.
    pub(crate) fn checkout_shared(&self, key: &K, now: Instant) -> Option<C> {
        let (mut candidate, expired) = {
            let mut inner = self.lock();
            let expired = inner.remove_expired(now);
            let candidate = inner.shared.get(key).map(|s| s.conn.clone());
            (candidate?, expired)
        };
        drop(expired);
        if candidate.is_open() {
            if let Some(entry) = self.lock().shared.get_mut(key) {
                entry.since = now;
            }
            return Some(candidate);
        }
        let removed = self.lock().shared.remove(key);
        drop(removed);
        None
    }
}

impl<K: Eq + Hash + Clone, C> Inner<K, C> {
    /// Takes every expired connection out of the pool, for the caller to drop outside the lock.
    fn remove_expired(&mut self, now: Instant) -> Vec<C> {
        let mut expired = Vec::new();
        let Some(timeout) = self.config.idle_timeout else {
            return expired;
        };
        let is_expired = |since: Instant| now.saturating_duration_since(since) >= timeout;
        self.idle.retain(|_, list| {
            // Oldest first: everything before the first fresh entry has expired.
            let fresh_from = list
                .iter()
                .position(|i| !is_expired(i.since))
                .unwrap_or(list.len());
            expired.extend(list.drain(..fresh_from).map(|i| i.conn));
            !list.is_empty()
        });
        let stale: Vec<K> = self
            .shared
            .iter()
            .filter(|(_, s)| is_expired(s.since))
            .map(|(k, _)| k)
            .cloned()
            .collect();
        expired.extend(
            stale
                .iter()
                .filter_map(|k| self.shared.remove(k))
                .map(|s| s.conn),
        );
        expired
    }

    /// Keeps a returned exclusive connection, or gives it back to be dropped.
    fn put(&mut self, key: K, conn: C, now: Instant) -> Option<C> {
        let max = self.config.max_idle_per_key;
        if self.idle.get(&key).map_or(0, Vec::len) >= max {
            return Some(conn);
        }
        self.idle
            .entry(key)
            .or_default()
            .push(Idle { conn, since: now });
        None
    }
}

/// An exclusive connection checked out of a [`Pool`].
///
/// Dropping it drops the connection (for HTTP/1.1: closes the socket); only
/// [`Pooled::release`] puts it back.
pub(crate) struct Pooled<K, C> {
    conn: Option<C>,
    key: K,
    pool: Weak<Mutex<Inner<K, C>>>,
}

impl<K, C> Pooled<K, C> {
    /// The connection.
    pub(crate) fn conn_mut(&mut self) -> &mut C {
        self.conn
            .as_mut()
            .expect("a Pooled guard holds its connection until it is consumed")
    }

    /// Returns the connection to its pool, idle since `now`. It is dropped instead when the
    /// pool is gone, full for its key, or pooling is off.
    pub(crate) fn release(mut self, now: Instant)
    where
        K: Eq + Hash + Clone,
    {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let returns = lock(&pool).returns.clone();
        if returns.as_ref().is_some_and(|r| !r.keep(&self.key)) {
            drop(conn);
            return;
        }
        let (refused, expired) = {
            let mut inner = lock(&pool);
            let expired = inner.remove_expired(now);
            (inner.put(self.key.clone(), conn, now), expired)
        };
        let kept = refused.is_none();
        drop(refused);
        drop(expired);
        if let Some(returns) = returns.filter(|_| kept) {
            returns.returned(&self.key);
        }
    }
}

impl<K, C> fmt::Debug for Pooled<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled").finish_non_exhaustive()
    }
}

impl<K, C> fmt::Debug for Pool<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The pool's invariants hold between statements, so a panic elsewhere never leaves it
    // inconsistent: keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// An exclusive test connection that records when it is dropped (closed).
    struct Conn {
        id: u32,
        open: bool,
        closed: Arc<Mutex<Vec<u32>>>,
    }

    impl PoolConn for Conn {
        fn is_open(&mut self) -> bool {
            self.open
        }
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            self.closed.lock().unwrap().push(self.id);
        }
    }

    struct Fixture {
        pool: Pool<&'static str, Conn>,
        closed: Arc<Mutex<Vec<u32>>>,
        t0: Instant,
    }

    impl Fixture {
        fn new(max_idle_per_key: usize, idle_timeout: Option<Duration>) -> Self {
            Self {
                pool: Pool::new(PoolConfig {
                    max_idle_per_key,
                    idle_timeout,
                }),
                closed: Arc::default(),
                t0: Instant::now(),
            }
        }

        fn conn(&self, id: u32) -> Conn {
            Conn {
                id,
                open: true,
                closed: self.closed.clone(),
            }
        }

        /// A fresh connection `id` for `key`, used once and released at `t0 + at`.
        fn release_new(&self, key: &'static str, id: u32, at: Duration) {
            self.pool.guard(key, self.conn(id)).release(self.t0 + at);
        }

        fn at(&self, secs: u64) -> Instant {
            self.t0 + Duration::from_secs(secs)
        }

        fn closed(&self) -> Vec<u32> {
            self.closed.lock().unwrap().clone()
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn an_empty_pool_has_nothing_to_hand_out() {
        let f = Fixture::new(usize::MAX, None);
        assert!(f.pool.checkout(&"a", f.t0).is_none());
    }

    #[test]
    fn a_released_connection_is_handed_out_again() {
        let f = Fixture::new(usize::MAX, Some(90 * SEC));
        f.release_new("a", 1, SEC);
        let mut again = f
            .pool
            .checkout(&"a", f.at(2))
            .expect("the released connection");
        assert_eq!(again.conn_mut().id, 1);
        assert!(f.closed().is_empty());
    }

    #[test]
    fn one_idle_connection_is_never_handed_out_twice() {
        let f = Fixture::new(usize::MAX, None);
        f.release_new("a", 1, SEC);
        let first = f.pool.checkout(&"a", f.at(2));
        let second = f.pool.checkout(&"a", f.at(2));
        assert!(first.is_some());
        assert!(second.is_none(), "the same connection was handed out twice");
        assert_eq!(f.pool.idle_count(&"a"), 0);
    }

    #[test]
    fn keys_do_not_share_connections() {
        let f = Fixture::new(usize::MAX, None);
        f.release_new("a", 1, SEC);
        assert!(f.pool.checkout(&"b", f.at(2)).is_none());
        assert!(f.pool.checkout(&"a", f.at(2)).is_some());
    }

    #[test]
    fn the_most_recently_used_connection_goes_first() {
        let f = Fixture::new(usize::MAX, None);
        f.release_new("a", 1, SEC);
        f.release_new("a", 2, 2 * SEC);
        assert_eq!(f.pool.checkout(&"a", f.at(3)).unwrap().conn_mut().id, 2);
        assert_eq!(f.pool.checkout(&"a", f.at(3)).unwrap().conn_mut().id, 1);
    }

    #[test]
    fn a_guard_dropped_without_release_closes_its_connection() {
        // What the transport does with a body dropped before its end, or a dropped request.
        let f = Fixture::new(usize::MAX, None);
        f.release_new("a", 1, SEC);
        let guard = f.pool.checkout(&"a", f.at(2)).unwrap();
        drop(guard);
        assert_eq!(f.closed(), [1]);
        assert!(
            f.pool.checkout(&"a", f.at(3)).is_none(),
            "a dropped connection came back"
        );
    }

    #[test]
    fn idle_connections_expire() {
        let f = Fixture::new(usize::MAX, Some(10 * SEC));
        f.release_new("a", 1, SEC);
        f.release_new("a", 2, 5 * SEC);
        // At 11 s connection 1 has idled 10 s (expired), connection 2 only 6 s.
        let mut kept = f
            .pool
            .checkout(&"a", f.at(11))
            .expect("connection 2 is fresh");
        assert_eq!(kept.conn_mut().id, 2);
        assert_eq!(f.closed(), [1]);
        drop(kept);
        f.release_new("a", 3, 11 * SEC);
        assert!(f.pool.checkout(&"a", f.at(21)).is_none());
        assert_eq!(f.closed(), [1, 2, 3]);
    }

    #[test]
    fn expiry_sweeps_every_key() {
        let f = Fixture::new(usize::MAX, Some(10 * SEC));
        f.release_new("a", 1, SEC);
        f.release_new("b", 2, SEC);
        assert!(f.pool.checkout(&"b", f.at(30)).is_none());
        let mut closed = f.closed();
        closed.sort_unstable();
        assert_eq!(
            closed,
            [1, 2],
            "the expired connection of another key stayed open"
        );
    }

    #[test]
    fn no_more_than_max_idle_per_key_are_kept() {
        let f = Fixture::new(2, None);
        for id in 1..=3 {
            f.release_new("a", id, SEC);
        }
        f.release_new("b", 4, SEC);
        assert_eq!(f.pool.idle_count(&"a"), 2);
        assert_eq!(f.pool.idle_count(&"b"), 1);
        assert_eq!(f.closed(), [3]);
    }

    #[test]
    fn the_oldest_idle_connection_of_another_key_is_evicted() {
        let f = Fixture::new(usize::MAX, None);
        f.release_new("a", 1, SEC);
        f.release_new("b", 2, 2 * SEC);
        f.release_new("a", 3, 3 * SEC);
        assert!(f.pool.evict_idle(&"b"));
        assert_eq!(f.closed(), [1]);
        assert!(f.pool.evict_idle(&"b"));
        assert!(!f.pool.evict_idle(&"b"), "only b's own is left");
        assert_eq!(f.closed(), [1, 3]);
        assert_eq!(f.pool.idle_count(&"b"), 1);
    }

    #[test]
    fn returns_decide_what_is_kept_and_hear_what_was() {
        #[derive(Default)]
        struct Log(Mutex<Vec<&'static str>>);
        impl Returns<&'static str> for Log {
            fn keep(&self, key: &&'static str) -> bool {
                *key != "refused"
            }
            fn returned(&self, key: &&'static str) {
                self.0.lock().unwrap().push(key);
            }
        }
        let f = Fixture::new(1, None);
        let log = Arc::new(Log::default());
        let pool = f.pool.clone().with_returns(log.clone());
        pool.guard("a", f.conn(1)).release(f.t0);
        pool.guard("refused", f.conn(2)).release(f.t0);
        // Full for "a": closed, and not reported as idle.
        pool.guard("a", f.conn(3)).release(f.t0);
        assert_eq!(f.closed(), [2, 3]);
        assert_eq!(*log.0.lock().unwrap(), ["a"]);
    }

    #[test]
    fn max_idle_zero_turns_pooling_off() {
        let f = Fixture::new(0, None);
        f.release_new("a", 1, SEC);
        assert_eq!(f.closed(), [1]);
        assert!(f.pool.checkout(&"a", f.at(2)).is_none());
    }

    #[test]
    fn closed_connections_are_discarded_at_checkout() {
        let f = Fixture::new(usize::MAX, None);
        f.release_new("a", 1, SEC);
        let mut dead = f.conn(2);
        dead.open = false;
        f.pool.guard("a", dead).release(f.at(2));
        // Connection 2 is tried first (most recent), found closed, dropped; 1 is handed out.
        let mut live = f.pool.checkout(&"a", f.at(3)).unwrap();
        assert_eq!(live.conn_mut().id, 1);
        assert_eq!(f.closed(), [2]);
    }

    #[test]
    fn a_release_after_the_pool_is_gone_closes_the_connection() {
        let f = Fixture::new(usize::MAX, None);
        let guard = f.pool.guard("a", f.conn(1));
        let closed = f.closed.clone();
        drop(f.pool);
        guard.release(f.t0);
        assert_eq!(*closed.lock().unwrap(), [1]);
    }

    /// A shared (multiplexed) test connection.
    #[derive(Clone)]
    struct Shared {
        id: u32,
        open: Arc<AtomicBool>,
    }

    impl PoolConn for Shared {
        fn is_open(&mut self) -> bool {
            self.open.load(Ordering::SeqCst)
        }
    }

    fn shared(id: u32) -> Shared {
        Shared {
            id,
            open: Arc::new(AtomicBool::new(true)),
        }
    }

    #[test]
    fn shared_connections_are_handed_out_to_many() {
        let pool: Pool<&str, Shared> = Pool::new(PoolConfig::default());
        let t0 = Instant::now();
        pool.share("a", shared(1), t0);
        let one = pool.checkout_shared(&"a", t0).unwrap();
        let two = pool.checkout_shared(&"a", t0).unwrap();
        assert_eq!((one.id, two.id), (1, 1));
        assert!(pool.checkout_shared(&"b", t0).is_none());
    }

    #[test]
    fn closed_shared_connections_are_dropped() {
        let pool: Pool<&str, Shared> = Pool::new(PoolConfig::default());
        let t0 = Instant::now();
        let conn = shared(1);
        pool.share("a", conn.clone(), t0);
        conn.open.store(false, Ordering::SeqCst);
        assert!(pool.checkout_shared(&"a", t0).is_none());
        conn.open.store(true, Ordering::SeqCst);
        assert!(
            pool.checkout_shared(&"a", t0).is_none(),
            "it was removed, not skipped"
        );
    }

    #[test]
    fn shared_connections_expire_when_unused() {
        let pool: Pool<&str, Shared> = Pool::new(PoolConfig {
            max_idle_per_key: usize::MAX,
            idle_timeout: Some(10 * SEC),
        });
        let t0 = Instant::now();
        pool.share("a", shared(1), t0);
        // Each use restarts the idle clock.
        assert!(pool.checkout_shared(&"a", t0 + 9 * SEC).is_some());
        assert!(pool.checkout_shared(&"a", t0 + 18 * SEC).is_some());
        assert!(pool.checkout_shared(&"a", t0 + 28 * SEC).is_none());
    }

    #[test]
    fn shared_connections_are_not_kept_with_pooling_off() {
        let pool: Pool<&str, Shared> = Pool::new(PoolConfig {
            max_idle_per_key: 0,
            idle_timeout: None,
        });
        let t0 = Instant::now();
        pool.share("a", shared(1), t0);
        assert!(pool.checkout_shared(&"a", t0).is_none());
    }
}
