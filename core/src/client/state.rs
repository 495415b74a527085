//! The state policies share across the calls of one client, kept in one place and keyed by
//! [`Origin`].
//!
//! Each origin has one [`OriginState`]: its retry budget, the latencies hedging learns from,
//! its in-flight permits (all kept in the process), and its [`StateCell`]: the circuit
//! breaker, rate limiter and server quota hold, kept where the client's [`StateStore`] keeps
//! them (in the process by default, or shared by a fleet). A partition a request names has a
//! cell too (its own breaker and quota hold), and so does the client-wide rate limit. The
//! machines stay pure: the store only keeps their state and hands it to them under one short
//! lock, so two calls never interleave inside a machine.
//!
//! The base URL's origin is looked up without hashing or allocating (most calls go there);
//! other origins are found in a map that keeps at most [`MAX_ORIGINS`] entries, forgetting
//! origins no call is using when it is full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use http::header::{HeaderMap, HeaderValue, HOST};
use http::Uri;

use async_lock::Semaphore;

use crate::machine::hedge::Latencies;
use crate::machine::rate::RateLimit;
use crate::machine::retry::RetryBudget;
use crate::store::{CellKey, LocalCell, StateCell, StateStore};
use crate::transport::Origin;

/// The most origins the store keeps state for besides the base URL's.
pub(crate) const MAX_ORIGINS: usize = 256;

/// The most partitions (keys requests name, or servers' quota partitions) the store keeps.
pub(crate) const MAX_PARTITIONS: usize = 1024;

/// The state of one origin that stays in the process.
#[derive(Debug)]
pub(crate) struct PolicyState {
    /// The retry budget, when the client has one.
    pub(crate) budget: Option<RetryBudget>,
    /// The latencies of the origin's answers, when a hedging policy needs them.
    pub(crate) latencies: Option<Latencies>,
}

/// One origin's state: the policies' (behind their lock), and what the driver works out once
/// per origin instead of once per request.
#[derive(Debug)]
pub(crate) struct OriginState {
    state: Mutex<PolicyState>,
    /// The `Host` header for this origin (`host`, or `host:port` for a port that isn't the
    /// scheme's default), worked out once: backends that would otherwise format it for every
    /// request find it set.
    pub(crate) host: Option<HeaderValue>,
    /// What a request that sets no header of its own starts from: the client's default headers
    /// and, where the core sets it, `Host`. Cloned whole, which costs less than adding each one
    /// again to every request.
    pub(crate) headers: HeaderMap,
    /// The permits for requests in flight to the origin, when the client limits them.
    pub(crate) in_flight: Option<Arc<Semaphore>>,
    /// The origin's breaker, rate limiter and quota hold.
    pub(crate) cell: Arc<dyn StateCell>,
}

impl OriginState {
    fn new(
        template: &PolicyState,
        defaults: &DefaultHeaders,
        url: &Uri,
        in_flight: Option<usize>,
        cell: Arc<dyn StateCell>,
    ) -> Self {
        let host = host_header(url);
        let mut headers = defaults.headers.clone();
        if let (true, Some(host)) = (defaults.set_host, &host) {
            if !headers.contains_key(HOST) {
                headers.append(HOST, host.clone());
            }
        }
        Self {
            state: Mutex::new(PolicyState {
                budget: template.budget.clone(),
                latencies: None,
            }),
            host,
            headers,
            in_flight: in_flight.map(|n| Arc::new(Semaphore::new(n))),
            cell,
        }
    }

    /// Takes one retry from the origin's retry budget (retries, hedges, reconnections and
    /// resumed downloads all draw on it): false when the budget is spent, true when it had
    /// one or the client has no budget.
    pub(crate) fn try_withdraw_retry(&self, now: Instant) -> bool {
        match &mut self.lock().budget {
            Some(budget) => budget.try_withdraw(now),
            None => true,
        }
    }

    /// Locks the state; a lock poisoned by a panicking hook still works (the state is plain
    /// data, valid between any two calls).
    pub(crate) fn lock(&self) -> MutexGuard<'_, PolicyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which origin's state a call uses: the base URL's (the store keeps it), or another.
#[derive(Debug)]
pub(crate) enum OriginRef {
    Base,
    Other(Arc<OriginState>),
}

/// The per-client store.
#[derive(Debug)]
pub(crate) struct Store {
    template: PolicyState,
    defaults: DefaultHeaders,
    base: Option<(Uri, Origin)>,
    /// Where the cells are kept.
    cells: Arc<dyn StateStore>,
    /// The client-wide rate limit and its cell, shared by every origin.
    client_limiter: Option<(RateLimit, Arc<dyn StateCell>)>,
    /// The client-wide permits for requests in flight.
    in_flight: Option<Arc<Semaphore>>,
    /// Each origin's permits for requests in flight.
    in_flight_per_origin: Option<usize>,
    /// The base URL's origin's state (unused by a client without a base URL).
    base_state: Arc<OriginState>,
    others: Mutex<HashMap<Origin, Arc<OriginState>>>,
    /// The partitions requests name ([`RequestBuilder::partition`](crate::RequestBuilder::partition))
    /// and servers' quotas name (`pk`): each has its own breaker and quota hold.
    partitions: Mutex<HashMap<Arc<str>, Arc<dyn StateCell>>>,
}

/// What the store is built from.
#[derive(Debug)]
pub(crate) struct StoreConfig {
    pub(crate) cells: Arc<dyn StateStore>,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) max_in_flight_per_origin: Option<usize>,
    pub(crate) defaults: DefaultHeaders,
}

/// The headers every request gets unless it sets them itself.
#[derive(Debug, Default)]
pub(crate) struct DefaultHeaders {
    /// The client's default headers.
    pub(crate) headers: HeaderMap,
    /// Whether the core sets `Host` (the backend doesn't derive it).
    pub(crate) set_host: bool,
}

impl Store {
    pub(crate) fn new(base: Option<&Uri>, config: StoreConfig) -> Self {
        let template = PolicyState {
            budget: config.budget,
            latencies: None,
        };
        let per_origin = config.max_in_flight_per_origin;
        let cells = config.cells;
        let base = base.and_then(|uri| Some((uri.clone(), Origin::from_uri(uri).ok()?)));
        let base_state = match &base {
            Some((uri, origin)) => OriginState::new(
                &template,
                &config.defaults,
                uri,
                per_origin,
                cells.cell(CellKey::Origin(origin)),
            ),
            None => OriginState::new(
                &template,
                &config.defaults,
                &Uri::default(),
                per_origin,
                Arc::new(LocalCell::default()),
            ),
        };
        Self {
            client_limiter: config
                .rate_limit
                .map(|limit| (limit, cells.cell(CellKey::Client))),
            cells,
            in_flight: config.max_in_flight.map(|n| Arc::new(Semaphore::new(n))),
            in_flight_per_origin: per_origin,
            base_state: Arc::new(base_state),
            template,
            defaults: config.defaults,
            base,
            others: Mutex::default(),
            partitions: Mutex::default(),
        }
    }

    /// The state of `url`'s origin.
    #[cfg(test)]
    pub(crate) fn origin(&self, url: &Uri) -> Arc<OriginState> {
        match self.find(url) {
            OriginRef::Base => self.base_state.clone(),
            OriginRef::Other(state) => state,
        }
    }

    /// Finds `url`'s origin: the base URL's without touching a counter, another one by its
    /// shared state.
    pub(crate) fn find(&self, url: &Uri) -> OriginRef {
        if let Some((base, _)) = &self.base {
            // Most calls go to the base URL, whose scheme and authority they were joined from:
            // compare those as they are (the slow path below normalizes the rest).
            if same_bytes(base, url)
                || (base.scheme() == url.scheme() && base.authority() == url.authority())
            {
                return OriginRef::Base;
            }
        }
        let Ok(origin) = Origin::from_uri(url) else {
            // The transport will refuse the URL; its calls share one throwaway state.
            return OriginRef::Other(Arc::new(OriginState::new(
                &self.template,
                &self.defaults,
                url,
                self.in_flight_per_origin,
                Arc::new(LocalCell::default()),
            )));
        };
        if let Some((_, base)) = &self.base {
            // The base origin written another way (`HOST:443`, capitals).
            if *base == origin {
                return OriginRef::Base;
            }
        }
        let mut others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = others.get(&origin) {
            return OriginRef::Other(state.clone());
        }
        if others.len() >= MAX_ORIGINS {
            others.retain(|_, state| Arc::strong_count(state) > 1);
        }
        let state = Arc::new(OriginState::new(
            &self.template,
            &self.defaults,
            url,
            self.in_flight_per_origin,
            self.cells.cell(CellKey::Origin(&origin)),
        ));
        if others.len() < MAX_ORIGINS {
            others.insert(origin, state.clone());
        }
        OriginRef::Other(state)
    }

    /// The cell of the partition named `key`, made at first use. At most
    /// [`MAX_PARTITIONS`] are kept: when full, partitions no call is using are forgotten.
    pub(crate) fn partition(&self, key: &str) -> Arc<dyn StateCell> {
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = partitions.get(key) {
            return state.clone();
        }
        if partitions.len() >= MAX_PARTITIONS {
            partitions.retain(|_, state| Arc::strong_count(state) > 1);
        }
        let state = self.cells.cell(CellKey::Partition(key));
        if partitions.len() < MAX_PARTITIONS {
            partitions.insert(Arc::from(key), state.clone());
        }
        state
    }

    /// The cell of the partition named `key`, if one was made.
    pub(crate) fn find_partition(&self, key: &str) -> Option<Arc<dyn StateCell>> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The client-wide permits for requests in flight, if the client limits them.
    pub(crate) fn in_flight(&self) -> Option<&Arc<Semaphore>> {
        self.in_flight.as_ref()
    }

    /// The client-wide rate limit and its cell, if the client has one.
    pub(crate) fn client_limiter(&self) -> Option<&(RateLimit, Arc<dyn StateCell>)> {
        self.client_limiter.as_ref()
    }

    /// The state an [`OriginRef`] names.
    pub(crate) fn resolve<'a>(&'a self, origin: &'a OriginRef) -> &'a OriginState {
        match origin {
            OriginRef::Base => &self.base_state,
            OriginRef::Other(state) => state,
        }
    }

    #[cfg(test)]
    pub(crate) fn origins_kept(&self) -> usize {
        self.others
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Whether `url`'s scheme and authority are the very bytes of `base`'s: true for every URL the
/// client joined to its base URL (they share the base's buffers), in a few instructions.
fn same_bytes(base: &Uri, url: &Uri) -> bool {
    let (Some(a), Some(b)) = (base.authority(), url.authority()) else {
        return false;
    };
    let (a, b) = (a.as_str(), b.as_str());
    a.as_ptr() == b.as_ptr() && a.len() == b.len() && base.scheme_str() == url.scheme_str()
}

/// The `Host` header for `url`'s origin, as RFC 9110 §7.2 has it: the host (IPv6 literals in
/// brackets) and the port when it isn't the scheme's default. `None` for a URL without a host.
pub(crate) fn host_header(url: &Uri) -> Option<HeaderValue> {
    let host = url.host().filter(|h| !h.is_empty())?;
    let default = match url.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    match url.port_u16().filter(|&p| p != default) {
        Some(port) => HeaderValue::try_from(format!("{host}:{port}")).ok(),
        None => HeaderValue::from_str(host).ok(),
    }
}
