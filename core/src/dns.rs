//! DNS control: static overrides, a pluggable resolver, a bounded cache of answers.
//!
//! A connector turns a host into addresses in this order (see [`Dns`]):
//!
//! 1. an IP address needs no lookup;
//! 2. a static override ([`ClientBuilder::resolve`](crate::ClientBuilder::resolve)) is used
//!    before any resolver;
//! 3. a cached answer still within its TTL
//!    ([`ClientBuilder::dns_cache`](crate::ClientBuilder::dns_cache));
//! 4. the custom resolver ([`ClientBuilder::dns_resolver`](crate::ClientBuilder::dns_resolver)),
//!    or else the backend's own (the system resolver, off the executor).
//!
//! Whatever fails here fails in [`Stage::Dns`](crate::Stage::Dns) with
//! [`ErrorKind::Connect`](crate::ErrorKind::Connect), the resolver's error as its source.
//!
//! A custom resolver is any type that implements [`Resolve`]: it is runtime-agnostic, so it must
//! not block, and it returns a boxed future of IP addresses.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use keel_core::dns::{Resolve, Resolving};
//!
//! /// Sends every name to one address: a stand-in for a service-discovery lookup.
//! struct Discovery(IpAddr);
//!
//! impl Resolve for Discovery {
//!     fn resolve(&self, host: &str) -> Resolving {
//!         let (addr, known) = (self.0, host.ends_with(".svc"));
//!         Box::pin(async move {
//!             if known {
//!                 Ok(vec![addr])
//!             } else {
//!                 Err(format!("not a service name").into())
//!             }
//!         })
//!     }
//! }
//!
//! let answer = futures_executor::block_on(
//!     Discovery(Ipv4Addr::LOCALHOST.into()).resolve("billing.svc"),
//! );
//! assert_eq!(answer.unwrap(), [IpAddr::from(Ipv4Addr::LOCALHOST)]);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::BoxError;
use crate::transport::{BoxFuture, TransportConfig};

/// The future a [`Resolve`] returns: the addresses of a host, in the order to try them, or why
/// there are none.
pub type Resolving = BoxFuture<Result<Vec<IpAddr>, BoxError>>;

/// A pluggable name resolver, set with
/// [`ClientBuilder::dns_resolver`](crate::ClientBuilder::dns_resolver).
///
/// It is called only for host names (never for IP addresses, nor for hosts with a static
/// override), within the connect timeout. An error, or an empty answer, fails the connection
/// in [`Stage::Dns`](crate::Stage::Dns). See the [module documentation](self) for an example.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (lowercase, without IPv6 brackets or port).
    fn resolve(&self, host: &str) -> Resolving;
}

/// A shared [`Resolve`], as [`TransportConfig::dns_resolver`] keeps it.
#[derive(Clone)]
pub struct SharedResolver(Arc<dyn Resolve>);

impl SharedResolver {
    /// Shares `resolver`.
    pub fn new(resolver: impl Resolve) -> Self {
        Self(Arc::new(resolver))
    }

    /// Resolves `host` with the shared resolver.
    pub fn resolve(&self, host: &str) -> Resolving {
        self.0.resolve(host)
    }
}

impl fmt::Debug for SharedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedResolver(..)")
    }
}

/// How answers are cached: for how long, and how many hosts at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsCacheConfig {
    /// How long an answer is used before the host is resolved again.
    pub ttl: Duration,
    /// The most hosts kept; a new one beyond that evicts the expired answers, then the least
    /// recently used.
    pub max_entries: usize,
}

/// A bounded cache of DNS answers: each kept for a TTL, at most `max_entries` hosts, with the
/// expired answers evicted first, then the least recently used. Pure: the time is passed in.
///
/// ```
/// use std::net::IpAddr;
/// use std::time::{Duration, Instant};
/// use keel_core::dns::DnsCache;
///
/// let mut cache = DnsCache::new(Duration::from_secs(30), 2);
/// let now = Instant::now();
/// let ip: IpAddr = "192.0.2.1".parse().unwrap();
/// cache.insert("a.example", vec![ip], now);
/// assert_eq!(cache.get("a.example", now + Duration::from_secs(29)), Some(vec![ip]));
/// assert_eq!(cache.get("a.example", now + Duration::from_secs(30)), None);
/// ```
#[derive(Debug)]
pub struct DnsCache {
    ttl: Duration,
    max_entries: usize,
    entries: HashMap<String, Entry>,
    /// Counts uses, to order entries by recency.
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    addrs: Vec<IpAddr>,
    expires: Instant,
    used: u64,
}

impl DnsCache {
    /// An empty cache. A `max_entries` of 0 caches nothing.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries,
            entries: HashMap::new(),
            clock: 0,
        }
    }

    /// The answer for `host` if it hasn't expired at `now`; an expired one is removed.
    pub fn get(&mut self, host: &str, now: Instant) -> Option<Vec<IpAddr>> {
        let entry = self.entries.get_mut(host)?;
        if now >= entry.expires {
            self.entries.remove(host);
            return None;
        }
        self.clock += 1;
        entry.used = self.clock;
        Some(entry.addrs.clone())
    }

    /// Keeps `addrs` for `host` until `now + ttl`, evicting to stay within the bound: every
    /// expired answer first, then the least recently used one.
    pub fn insert(&mut self, host: &str, addrs: Vec<IpAddr>, now: Instant) {
        if self.max_entries == 0 || addrs.is_empty() {
            return;
        }
        if !self.entries.contains_key(host) && self.entries.len() >= self.max_entries {
            self.entries.retain(|_, e| now < e.expires);
            if self.entries.len() >= self.max_entries {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(h, _)| h.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.clock += 1;
        let expires = now.checked_add(self.ttl).unwrap_or(now);
        self.entries.insert(
            host.to_owned(),
            Entry {
                addrs,
                expires,
                used: self.clock,
            },
        );
    }

    /// How many hosts are kept, expired ones included until they are evicted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A connector's DNS settings, built once from a [`TransportConfig`]: the overrides, the custom
/// resolver, the cache. [`Dialer::lookup`](crate::connect::Dialer::lookup) uses it.
#[derive(Debug, Default)]
pub struct Dns {
    overrides: HashMap<String, Vec<SocketAddr>>,
    resolver: Option<SharedResolver>,
    cache: Option<Mutex<DnsCache>>,
}

impl Dns {
    /// The DNS settings in `config`.
    pub fn new(config: &TransportConfig) -> Self {
        Self {
            overrides: config
                .dns_overrides
                .iter()
                .map(|(host, addrs)| (host.to_ascii_lowercase(), addrs.clone()))
                .collect(),
            resolver: config.dns_resolver.clone(),
            cache: config
                .dns_cache
                .map(|c| Mutex::new(DnsCache::new(c.ttl, c.max_entries))),
        }
    }

    /// The static override for `host` with port 0 replaced by `port`, if there is one.
    pub fn overridden(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        let addrs = self.overrides.get(host)?;
        Some(
            addrs
                .iter()
                .map(|a| match a.port() {
                    0 => SocketAddr::new(a.ip(), port),
                    _ => *a,
                })
                .collect(),
        )
    }

    /// The custom resolver, if one was set.
    pub fn resolver(&self) -> Option<&SharedResolver> {
        self.resolver.as_ref()
    }

    /// The cached answer for `host` at `now`.
    pub fn cached(&self, host: &str, now: Instant) -> Option<Vec<IpAddr>> {
        let cache = self.cache.as_ref()?;
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(host, now)
    }

    /// Caches `addrs` for `host`, if caching is on.
    pub fn remember(&self, host: &str, addrs: &[IpAddr], now: Instant) {
        if let Some(cache) = &self.cache {
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.insert(host, addrs.to_vec(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn an_answer_lasts_its_ttl() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(Duration::from_secs(10), 4);
        cache.insert("a", vec![ip(1)], t0);
        assert_eq!(cache.get("a", t0), Some(vec![ip(1)]));
        assert_eq!(
            cache.get("a", t0 + Duration::from_millis(9_999)),
            Some(vec![ip(1)])
        );
        assert_eq!(cache.get("a", t0 + Duration::from_secs(10)), None);
        assert!(cache.is_empty(), "an expired answer is removed when read");
        assert_eq!(cache.get("b", t0), None);
    }

    #[test]
    fn a_new_answer_replaces_the_old_one() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(Duration::from_secs(10), 1);
        cache.insert("a", vec![ip(1)], t0);
        cache.insert("a", vec![ip(2)], t0 + Duration::from_secs(8));
        assert_eq!(
            cache.get("a", t0 + Duration::from_secs(15)),
            Some(vec![ip(2)])
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cache_never_grows_past_its_bound() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(Duration::from_secs(60), 3);
        for i in 0..100u8 {
            cache.insert(&format!("h{i}"), vec![ip(i)], t0);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("h99", t0), Some(vec![ip(99)]));
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(Duration::from_secs(60), 2);
        cache.insert("a", vec![ip(1)], t0);
        cache.insert("b", vec![ip(2)], t0);
        // Reading `a` makes `b` the least recently used.
        assert!(cache.get("a", t0).is_some());
        cache.insert("c", vec![ip(3)], t0);
        assert_eq!(cache.get("b", t0), None);
        assert!(cache.get("a", t0).is_some());
        assert!(cache.get("c", t0).is_some());
    }

    #[test]
    fn expired_answers_go_before_recent_ones() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(Duration::from_secs(10), 2);
        cache.insert("old", vec![ip(1)], t0);
        let t1 = t0 + Duration::from_secs(5);
        cache.insert("a", vec![ip(2)], t1);
        // `old` was used most recently, but it has expired by t2: it is evicted, not `a`.
        assert!(cache.get("old", t0 + Duration::from_secs(1)).is_some());
        let t2 = t0 + Duration::from_secs(11);
        cache.insert("b", vec![ip(3)], t2);
        assert_eq!(cache.get("a", t2), Some(vec![ip(2)]));
        assert_eq!(cache.get("b", t2), Some(vec![ip(3)]));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_zero_bound_caches_nothing() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(Duration::from_secs(10), 0);
        cache.insert("a", vec![ip(1)], t0);
        assert!(cache.is_empty());
    }

    #[test]
    fn an_override_with_port_zero_takes_the_url_port() {
        let mut config = TransportConfig::default();
        config.dns_overrides.push((
            "API.example".into(),
            vec![
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.2:9000".parse().unwrap(),
            ],
        ));
        let dns = Dns::new(&config);
        assert_eq!(
            dns.overridden("api.example", 8080).unwrap(),
            [
                "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:9000".parse().unwrap()
            ]
        );
        assert_eq!(dns.overridden("other.example", 8080), None);
    }
}
