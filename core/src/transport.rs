//! The two traits a backend implements: [`Transport`] moves one request over a connection pool,
//! [`Timer`] tells the time and sleeps on the backend's runtime.
//!
//! A backend does nothing else. Redirects, retries, content decoding and every timeout other
//! than the connect timeout belong to the core, so that every backend behaves the same; even
//! the connect sequence is the core's [`Dialer`](crate::connect::Dialer), which a backend
//! drives with its resolver and sockets.
//!
//! [`Transport`]'s documentation gives the order of calls and the rules for dropping.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::body::{Body, ResponseBody};
use crate::dns::{DnsCacheConfig, SharedResolver};
use crate::error::{BoxError, Error, ErrorKind};
use crate::identity::{Identity, TlsVersion};
use crate::proxy::{ProxyConfig, ProxyScheme};

/// A boxed, sendable future, as returned by [`Transport::send`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A boxed future that resolves at a deadline, as returned by [`Timer::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>>;

/// The runtime's clock and sleep.
///
/// The driver reads the clock through this trait only, so tests can substitute a virtual clock.
///
/// # Example
///
/// A complete timer that needs no runtime at all, for illustration: it parks a thread per sleep.
/// The backends' timers (`keel_hyper::TokioTimer`, …) use their runtime's timer wheel instead.
///
/// ```
/// use std::future::Future;
/// use std::pin::Pin;
/// use std::sync::{Arc, Mutex};
/// use std::task::{Context, Poll, Waker};
/// use std::time::{Duration, Instant};
/// use keel_core::{Sleep, Timer};
///
/// #[derive(Debug, Default, Clone)]
/// struct ThreadTimer;
///
/// struct ThreadSleep {
///     deadline: Instant,
///     waker: Option<Arc<Mutex<Option<Waker>>>>,
/// }
///
/// impl Future for ThreadSleep {
///     type Output = ();
///     fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
///         if Instant::now() >= self.deadline {
///             return Poll::Ready(());
///         }
///         let deadline = self.deadline;
///         let slot = self.waker.get_or_insert_with(|| {
///             let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
///             let shared = slot.clone();
///             std::thread::spawn(move || {
///                 std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
///                 if let Some(w) = shared.lock().unwrap().take() { w.wake() }
///             });
///             slot
///         });
///         *slot.lock().unwrap() = Some(cx.waker().clone());
///         Poll::Pending
///     }
/// }
///
/// impl Timer for ThreadTimer {
///     fn sleep_until(&self, deadline: Instant) -> Sleep {
///         Box::pin(ThreadSleep { deadline, waker: None })
///     }
/// }
///
/// let timer = ThreadTimer;
/// let start = timer.now();
/// futures_executor::block_on(timer.sleep_until(start + Duration::from_millis(20)));
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// ```
pub trait Timer: Send + Sync + 'static {
    /// Returns a future that resolves at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> Sleep;

    /// The current monotonic time. Tests override this to simulate time.
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// The current wall-clock time, for decisions that need a date (an HTTP-date in
    /// `Retry-After`). Tests override this too.
    fn now_system(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl fmt::Debug for dyn Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn Timer")
    }
}

/// One attempt of one request, through the backend's connection pool.
///
/// The trait is object safe: [`BoxTransport`] puts any transport behind an `Arc<dyn Transport>`
/// so a backend can be chosen at run time, while `Client<T>` dispatches statically.
///
/// # The order of calls
///
/// For each attempt the [`Client`](crate::Client) driver:
///
/// 1. builds an [`http::Request<Body>`] with an absolute `http` or `https` URI, all headers
///    set, and a [`Body`]. The backend adds `Host`, and framing headers for a body with content
///    only: an empty body is already framed by the core (`Content-Length: 0` for POST, PUT,
///    PATCH and extension methods, nothing for GET, HEAD, DELETE, OPTIONS, TRACE and CONNECT),
///    and the backend sends exactly that, so every backend puts the same bytes on the wire
///    (wrap the body in a [`FramedBody`](crate::FramedBody) for libraries that would add their
///    own);
/// 2. calls [`Transport::send`] once and polls the returned future until it yields the response
///    head or an error, or until the driver's own timer fires, in which case it drops the future;
/// 3. reads the [`ResponseBody`] frame by frame, and drops it either at its end or early.
///
/// Dropping the send future or the body at any point must release the connection: a connection
/// with a request half-written or a response half-read is closed, never returned to the pool.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` and resolves to the response head and a streaming body.
    ///
    /// Errors carry the [`Stage`](crate::Stage) the attempt failed in and, when known, mark the
    /// request as [unsent](Error::is_unsent).
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>>;

    /// The timer of the runtime this transport runs on.
    ///
    /// Every transport is constructed with its timer, so a client can't be built without one.
    fn timer(&self) -> &Arc<dyn Timer>;

    /// The connections in the transport's pool, per origin, for metrics; `None` when the
    /// backend keeps no such count ([`Capabilities::pool_stats`] is then false).
    fn pool_stats(&self) -> Option<Vec<PoolStats>> {
        None
    }
}

/// A [`Transport`] that can be built from the backend-independent [`TransportConfig`].
///
/// Each backend crate implements it for its transport type; `Client::<T>::builder()` uses it.
pub trait Backend: Transport + Sized {
    /// A short name for reports, such as `"hyper"`.
    const NAME: &'static str;

    /// What the backend can do. Settings outside it are refused when the client is built.
    fn capabilities() -> Capabilities;

    /// Builds the transport. `config` has already been checked against
    /// [`Backend::capabilities`].
    fn from_config(config: &TransportConfig) -> Result<Self, Error>;
}

/// A transport behind an `Arc<dyn Transport>`, for choosing a backend at run time.
///
/// Build one with [`ClientBuilder::build_boxed`](crate::ClientBuilder::build_boxed), which
/// returns a `Client<BoxTransport>` whatever the backend, so the choice can come from
/// configuration:
///
/// ```ignore
/// let client: Client<BoxTransport> = match backend_name {
///     "hyper" => Client::<keel_hyper::HyperTransport>::builder().build_boxed()?,
///     "isahc" => Client::<keel_isahc::IsahcTransport>::builder().build_boxed()?,
///     other => return Err(format!("unknown backend {other}").into()),
/// };
/// ```
#[derive(Clone)]
pub struct BoxTransport {
    inner: Arc<dyn Transport>,
    name: &'static str,
}

impl BoxTransport {
    /// Erases the type of `transport`.
    pub fn new<T: Backend>(transport: T) -> Self {
        Self {
            inner: Arc::new(transport),
            name: T::NAME,
        }
    }

    /// The name of the backend behind it.
    pub fn backend_name(&self) -> &'static str {
        self.name
    }
}

impl fmt::Debug for BoxTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxTransport")
            .field("backend", &self.name)
            .finish()
    }
}

impl Transport for BoxTransport {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        self.inner.send(request)
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        self.inner.timer()
    }

    fn pool_stats(&self) -> Option<Vec<PoolStats>> {
        self.inner.pool_stats()
    }
}

/// What a backend supports. A setting it does not support fails the client build with
/// [`ErrorKind::Config`] naming the setting, never a silent no-op.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// HTTP/2 negotiated by ALPN over TLS.
    pub http2: bool,
    /// HTTP/2 without TLS, assumed from the first byte ("prior knowledge").
    pub http2_prior_knowledge: bool,
    /// Honours [`TransportConfig::pool_max_idle_per_host`].
    pub pool_max_idle_per_host: bool,
    /// Honours [`TransportConfig::pool_idle_timeout`].
    pub pool_idle_timeout: bool,
    /// Trusts extra root certificates ([`TransportConfig::root_certificates`]).
    pub root_certificates: bool,
    /// Can turn off its built-in roots ([`TransportConfig::built_in_roots`] = false).
    pub disable_built_in_roots: bool,
    /// Can leave `TCP_NODELAY` off ([`TransportConfig::tcp_nodelay`] = false).
    pub disable_tcp_nodelay: bool,
    /// A dropped send future or response body releases its connection at once. Without it the
    /// backend frees the connection only at the server's next byte (or at the call's
    /// [`CallDeadline`]), which the conformance suite reports as "not supported".
    pub cancel_in_flight: bool,
    /// The backend reads the [`CallDeadline`] the driver can put in each request's extensions.
    pub uses_call_deadline: bool,
    /// The backend's library derives the `Host` header from the URL by itself, cheaply
    /// (libcurl). Otherwise the core sets it on every attempt, worked out once per origin, so
    /// the library doesn't format it for every request.
    pub derives_host: bool,
    /// Honours static DNS overrides ([`TransportConfig::dns_overrides`]).
    pub dns_overrides: bool,
    /// Honours an override whose port is 0 (the URL's port).
    pub dns_override_any_port: bool,
    /// Calls a custom resolver ([`TransportConfig::dns_resolver`]).
    pub dns_resolver: bool,
    /// Keeps keel's bounded DNS cache ([`TransportConfig::dns_cache`]).
    pub dns_cache: bool,
    /// Binds new connections to [`TransportConfig::local_address`].
    pub local_address: bool,
    /// Responses carry the connection's remote and local addresses
    /// ([`ConnectionInfo::remote_addr`], [`ConnectionInfo::local_addr`]).
    pub connection_addrs: bool,
    /// Responses say whether their connection was reused ([`ConnectionInfo::reused`]).
    pub connection_reused: bool,
    /// Counts its pool's connections ([`Transport::pool_stats`]).
    pub pool_stats: bool,
    /// Presents a client certificate ([`TransportConfig::identity`]).
    pub identity: bool,
    /// Honours [`TransportConfig::min_tls_version`].
    pub min_tls_version: bool,
    /// Can turn certificate verification off
    /// ([`TransportConfig::danger_accept_invalid_certs`]).
    pub danger_accept_invalid_certs: bool,
    /// Sends requests through `http://` proxies: absolute-form requests for `http` targets,
    /// `CONNECT` tunnels for `https` targets ([`TransportConfig::proxy`]).
    pub proxy_http: bool,
    /// Speaks TLS to `https://` proxies.
    pub proxy_tls: bool,
    /// Tunnels through `socks5://` and `socks5h://` proxies.
    pub proxy_socks5: bool,
    /// A connection is back in the pool by the time its response body has been read to the
    /// end, whichever thread the runtime runs tasks on, so the request that follows reuses it.
    /// Without it the connection goes back from a task of the backend's own, and on a
    /// multi-thread runtime that task can run after the next request has started, which then
    /// opens a connection of its own (keel-hyper: hyper-util's pool races a new connection
    /// against the one coming back, hyperium/hyper#4134). The conformance suite reports its
    /// exact connection counts for sequential requests as "not supported" there.
    pub pool_return_on_body_end: bool,
    /// A response head cut short by the end of its connection (a FIN before the blank line
    /// that ends the head) is an error, never an answer made of the headers received so far.
    /// libcurl (keel-isahc) takes the end of the connection for the end of the head and
    /// answers with what it got.
    pub truncated_head_detected: bool,
    /// After a time limit (the attempt or the read-idle timeout) cuts a request on an
    /// HTTP/2 connection, that connection takes no new requests: a peer that went silent does
    /// not swallow the next ones. Without it the connection stays in the pool until the
    /// server or a keep-alive check closes it, and the requests that follow time out too.
    /// A backend learns that a drop comes from a time limit from
    /// [`connect::abandoned_on_timeout`](crate::connect::abandoned_on_timeout). libcurl
    /// (keel-isahc) can't be told to stop reusing a connection once its transfer started.
    pub http2_timeout_retires_connection: bool,
    /// Holds [`TransportConfig::max_connections_per_origin`] and
    /// [`TransportConfig::max_connections`]: never more connections open than they allow.
    pub connection_caps: bool,
    /// Fails a request that waited longer than [`TransportConfig::pool_acquire_timeout`] for a
    /// connection with [`TimeoutPhase::PoolAcquire`](crate::TimeoutPhase::PoolAcquire). A
    /// backend whose library queues requests out of sight (libcurl) can't observe the wait.
    pub pool_acquire_timeout: bool,
    /// A request held back by [`TransportConfig::max_connections`] closes a connection idle in
    /// the pool for another origin to make room. Without it the idle connection keeps its place
    /// until its idle timeout (keel-hyper: hyper-util's pool can't be asked to give one up), so
    /// a request to a new origin waits up to [`TransportConfig::pool_idle_timeout`].
    pub connection_cap_evicts_idle: bool,
}

impl Capabilities {
    /// Nothing optional supported; backends switch on what they have.
    pub const fn none() -> Self {
        Self {
            http2: false,
            http2_prior_knowledge: false,
            pool_max_idle_per_host: false,
            pool_idle_timeout: false,
            root_certificates: false,
            disable_built_in_roots: false,
            disable_tcp_nodelay: false,
            cancel_in_flight: false,
            uses_call_deadline: false,
            derives_host: false,
            dns_overrides: false,
            dns_override_any_port: false,
            dns_resolver: false,
            dns_cache: false,
            local_address: false,
            connection_addrs: false,
            connection_reused: false,
            pool_stats: false,
            identity: false,
            min_tls_version: false,
            danger_accept_invalid_certs: false,
            proxy_http: false,
            proxy_tls: false,
            proxy_socks5: false,
            pool_return_on_body_end: false,
            truncated_head_detected: false,
            http2_timeout_retires_connection: false,
            connection_caps: false,
            pool_acquire_timeout: false,
            connection_cap_evicts_idle: false,
        }
    }

    /// Refuses the first setting in `config` this backend can't honour.
    pub fn check(&self, config: &TransportConfig) -> Result<(), Error> {
        let unsupported = |setting| Err(Error::new(ErrorKind::Config).with_setting(setting));
        if config.http2_prior_knowledge && !self.http2_prior_knowledge {
            return unsupported("http2_prior_knowledge");
        }
        if config.pool_max_idle_per_host.is_some() && !self.pool_max_idle_per_host {
            return unsupported("pool_max_idle_per_host");
        }
        if config.pool_idle_timeout.is_some() && !self.pool_idle_timeout {
            return unsupported("pool_idle_timeout");
        }
        if !config.root_certificates.is_empty() && !self.root_certificates {
            return unsupported("root_certificates");
        }
        if !config.built_in_roots && !self.disable_built_in_roots {
            return unsupported("built_in_roots");
        }
        if !config.tcp_nodelay && !self.disable_tcp_nodelay {
            return unsupported("tcp_nodelay");
        }
        if !config.dns_overrides.is_empty() && !self.dns_overrides {
            return unsupported("resolve");
        }
        let any_port = |(_, addrs): &(String, Vec<SocketAddr>)| addrs.iter().any(|a| a.port() == 0);
        if config.dns_overrides.iter().any(any_port) && !self.dns_override_any_port {
            return Err(Error::new(ErrorKind::Config)
                .with_setting("resolve")
                .with_source(
                    "this backend needs the port in a DNS override: port 0 is not supported",
                ));
        }
        if config.dns_resolver.is_some() && !self.dns_resolver {
            return unsupported("dns_resolver");
        }
        if config.dns_cache.is_some() && !self.dns_cache {
            return unsupported("dns_cache");
        }
        if config.local_address.is_some() && !self.local_address {
            return unsupported("local_address");
        }
        if config.identity.is_some() && !self.identity {
            return unsupported("identity");
        }
        if config.min_tls_version.is_some() && !self.min_tls_version {
            return unsupported("min_tls_version");
        }
        if config.danger_accept_invalid_certs && !self.danger_accept_invalid_certs {
            return unsupported("danger_accept_invalid_certs");
        }
        if let Some(proxies) = &config.proxy {
            for proxy in proxies.proxies() {
                let (supported, setting) = match proxy.scheme() {
                    ProxyScheme::Http => (self.proxy_http, "proxy"),
                    ProxyScheme::Https => (self.proxy_tls, "proxy_tls"),
                    ProxyScheme::Socks5 | ProxyScheme::Socks5h => {
                        (self.proxy_socks5, "proxy_socks5")
                    }
                };
                if !supported {
                    return Err(Error::new(ErrorKind::Config)
                        .with_setting(setting)
                        .with_source(format!(
                            "this backend can't send requests through a {}:// proxy",
                            proxy.scheme().as_str()
                        )));
                }
            }
        }
        for (cap, setting) in [
            (
                config.max_connections_per_origin,
                "max_connections_per_origin",
            ),
            (config.max_connections, "max_connections"),
        ] {
            match cap {
                Some(_) if !self.connection_caps => return unsupported(setting),
                Some(0) => {
                    return Err(Error::new(ErrorKind::Config)
                        .with_setting(setting)
                        .with_source("a connection cap must allow at least one connection"))
                }
                _ => {}
            }
        }
        if config.pool_acquire_timeout.is_some() && !self.pool_acquire_timeout {
            return unsupported("pool_acquire_timeout");
        }
        if config.connect_timeout.is_zero() {
            return Err(Error::new(ErrorKind::Config)
                .with_setting("connect_timeout")
                .with_source("the connect timeout must be greater than zero"));
        }
        Ok(())
    }
}

/// The instant by which the whole call must be over, put in every request's extensions by the
/// driver.
///
/// The driver enforces it itself; a backend may use it to bound work it can't cancel promptly
/// (a transfer that outlives its dropped future), so nothing outlives the call by much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);

/// Facts about the connection a response came over, as far as the backend knows them.
///
/// When the client asked for them ([`TransportConfig::connection_info`]), a backend puts one
/// on the [`ResponseBody`] it returns from [`Transport::send`]
/// ([`ResponseBody::with_connection`]); [`Response::connection`](crate::Response::connection)
/// reads it. A fact
/// the backend can't know is `None` (and its [`Capabilities`] say so), never a guess. The
/// negotiated HTTP version is not here: it is [`Response::version`](crate::Response::version).
///
/// It is `Copy` and holds no heap data, so carrying it costs a few bytes per response.
///
/// ```
/// use std::net::SocketAddr;
/// use keel_core::ConnectionInfo;
///
/// let remote: SocketAddr = "127.0.0.1:8080".parse().unwrap();
/// let info = ConnectionInfo::new()
///     .with_remote_addr(Some(remote))
///     .with_reused(Some(true));
/// assert_eq!(info.remote_addr, Some(remote));
/// assert_eq!(info.local_addr, None); // this backend didn't say
/// assert_eq!(info.reused, Some(true));
///
/// // What a backend does with it:
/// let body = keel_core::ResponseBody::empty().with_connection(std::sync::Arc::new(info));
/// assert_eq!(body.connection(), info);
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnectionInfo {
    /// The peer's address: the server's, or the proxy's when going through one.
    pub remote_addr: Option<SocketAddr>,
    /// The address of this end of the connection.
    pub local_addr: Option<SocketAddr>,
    /// Whether the request went over a connection that was open before it (taken from the
    /// pool, or an HTTP/2 connection shared with other requests), rather than one opened for
    /// it. keel-hyper counts responses per connection: its first response is the one that
    /// opened it, so of concurrent HTTP/2 requests that waited for one new connection, the
    /// first to be answered reports `false`.
    pub reused: Option<bool>,
}

impl ConnectionInfo {
    /// Nothing known; set what the backend knows with the `with_` methods.
    pub const fn new() -> Self {
        Self {
            remote_addr: None,
            local_addr: None,
            reused: None,
        }
    }

    /// Sets [`remote_addr`](Self::remote_addr).
    pub const fn with_remote_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.remote_addr = addr;
        self
    }

    /// Sets [`local_addr`](Self::local_addr).
    pub const fn with_local_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.local_addr = addr;
        self
    }

    /// Sets [`reused`](Self::reused).
    pub const fn with_reused(mut self, reused: Option<bool>) -> Self {
        self.reused = reused;
        self
    }
}

/// The connections a transport's pool holds for one origin, from
/// [`Client::pool_stats`](crate::Client::pool_stats).
///
/// `open` is every connection open to the origin; of them, `idle` wait in the pool for a
/// request and `in_use` carry one (an HTTP/2 connection counts as in use while it is shared).
/// A count the backend can't know is `None`, never a guess.
///
/// ```
/// use keel_core::{Origin, PoolStats};
///
/// let origin = Origin::from_uri(&"https://api.example.com".parse().unwrap()).unwrap();
/// let stats = PoolStats::new(origin, 3).with_idle(Some(1));
/// assert_eq!((stats.open, stats.idle, stats.in_use), (3, Some(1), Some(2)));
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Where the connections go (the target's origin, also when they go through a proxy).
    pub origin: Origin,
    /// Connections open.
    pub open: usize,
    /// Connections idle in the pool, if the backend knows.
    pub idle: Option<usize>,
    /// Connections carrying a request, if the backend knows.
    pub in_use: Option<usize>,
}

impl PoolStats {
    /// `open` connections to `origin`, with nothing known of their use.
    pub fn new(origin: Origin, open: usize) -> Self {
        Self {
            origin,
            open,
            idle: None,
            in_use: None,
        }
    }

    /// Sets [`idle`](Self::idle), and [`in_use`](Self::in_use) to the open connections that
    /// are not idle.
    pub fn with_idle(mut self, idle: Option<usize>) -> Self {
        self.idle = idle.map(|i| i.min(self.open));
        self.in_use = self.idle.map(|i| self.open - i);
        self
    }
}

/// A connection's [`ConnectionInfo`], made once when it opens: its responses share it (an
/// `Arc` each), so reporting the facts costs no allocation per response.
///
/// ```
/// use keel_core::ConnectionFacts;
///
/// let facts = ConnectionFacts::new("127.0.0.1:443".parse().ok(), None);
/// assert_eq!(facts.for_response(false).reused, Some(false)); // the request that opened it
/// assert_eq!(facts.for_response(true).reused, Some(true));
/// assert_eq!(facts.for_response(true).remote_addr, "127.0.0.1:443".parse().ok());
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionFacts {
    opened: Arc<ConnectionInfo>,
    reused: Arc<ConnectionInfo>,
}

impl ConnectionFacts {
    /// The facts of a connection between `local` and `remote`.
    pub fn new(remote: Option<SocketAddr>, local: Option<SocketAddr>) -> Self {
        let info = ConnectionInfo::new()
            .with_remote_addr(remote)
            .with_local_addr(local);
        Self {
            opened: Arc::new(info.with_reused(Some(false))),
            reused: Arc::new(info.with_reused(Some(true))),
        }
    }

    /// The facts for one response: `reused` when an earlier request had the connection.
    pub fn for_response(&self, reused: bool) -> Arc<ConnectionInfo> {
        match reused {
            true => self.reused.clone(),
            false => self.opened.clone(),
        }
    }
}

/// The backend-independent settings a transport is built from.
///
/// Set through [`ClientBuilder`](crate::ClientBuilder); `None` means "the backend's default".
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Time allowed to resolve, connect and finish the TLS handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// Set `TCP_NODELAY` on new connections. Default true.
    pub tcp_nodelay: bool,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: Option<usize>,
    /// How long an idle connection is kept.
    pub pool_idle_timeout: Option<Duration>,
    /// Offer HTTP/2 by ALPN on TLS connections. Default true.
    pub http2: bool,
    /// Speak HTTP/2 on plain-text connections without negotiation. Default false.
    pub http2_prior_knowledge: bool,
    /// Extra trusted root certificates.
    pub root_certificates: Vec<Certificate>,
    /// Trust the backend's built-in roots (webpki roots or the system's). Default true.
    pub built_in_roots: bool,
    /// Static DNS overrides: a host (lowercase) and the addresses to use instead of resolving
    /// it. Port 0 means the URL's port.
    pub dns_overrides: Vec<(String, Vec<SocketAddr>)>,
    /// A custom resolver, used instead of the backend's.
    pub dns_resolver: Option<SharedResolver>,
    /// Cache DNS answers, for a TTL and a bounded number of hosts.
    pub dns_cache: Option<DnsCacheConfig>,
    /// The local address new connections are bound to.
    pub local_address: Option<IpAddr>,
    /// Put [`ConnectionInfo`] on every response ([`ResponseBody::with_connection`]). Default
    /// false.
    pub connection_info: bool,
    /// The client certificate presented to servers that ask for one (mutual TLS).
    pub identity: Option<Identity>,
    /// The oldest TLS version accepted; `None` is the backend's floor (TLS 1.2).
    pub min_tls_version: Option<TlsVersion>,
    /// Accept any server certificate: no chain, name or expiry checks. Default false; set only
    /// through [`ClientBuilder::danger_accept_invalid_certs`](crate::ClientBuilder::danger_accept_invalid_certs).
    pub danger_accept_invalid_certs: bool,
    /// The proxies, and the hosts reached directly. `None` (the default): every request goes
    /// directly, whatever the environment says.
    pub proxy: Option<ProxyConfig>,
    /// The most connections open to one origin at once, idle ones included. `None`: no cap.
    pub max_connections_per_origin: Option<usize>,
    /// The most connections open at once, to all origins together. `None`: no cap.
    pub max_connections: Option<usize>,
    /// How long a request waits for a connection the caps allow before it fails with
    /// [`TimeoutPhase::PoolAcquire`](crate::TimeoutPhase::PoolAcquire). `None`: it waits
    /// (within the call's other timeouts).
    pub pool_acquire_timeout: Option<Duration>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            tcp_nodelay: true,
            pool_max_idle_per_host: None,
            pool_idle_timeout: None,
            http2: true,
            http2_prior_knowledge: false,
            root_certificates: Vec::new(),
            built_in_roots: true,
            dns_overrides: Vec::new(),
            dns_resolver: None,
            dns_cache: None,
            local_address: None,
            connection_info: false,
            identity: None,
            min_tls_version: None,
            danger_accept_invalid_certs: false,
            proxy: None,
            max_connections_per_origin: None,
            max_connections: None,
            pool_acquire_timeout: None,
        }
    }
}

/// A trusted root certificate, in DER or PEM form. Backends parse it when the client is built;
/// one that doesn't parse fails the build with [`ErrorKind::Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    encoding: CertificateEncoding,
    bytes: Bytes,
}

/// How a [`Certificate`]'s bytes are encoded.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateEncoding {
    /// Binary DER, one certificate.
    Der,
    /// PEM text, one or more `CERTIFICATE` blocks.
    Pem,
}

impl Certificate {
    /// A certificate in binary DER form.
    pub fn from_der(der: impl Into<Bytes>) -> Self {
        Self {
            encoding: CertificateEncoding::Der,
            bytes: der.into(),
        }
    }

    /// One or more certificates in PEM form.
    pub fn from_pem(pem: impl Into<Bytes>) -> Self {
        Self {
            encoding: CertificateEncoding::Pem,
            bytes: pem.into(),
        }
    }

    /// How the bytes are encoded.
    pub fn encoding(&self) -> CertificateEncoding {
        self.encoding
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The certificates in binary DER form: one for DER, every `CERTIFICATE` block for PEM.
    ///
    /// Text that holds no certificate, or a block that doesn't decode, is
    /// [`ErrorKind::Config`] naming `root_certificates`.
    pub fn to_der(&self) -> Result<Vec<Vec<u8>>, Error> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::CertificateDer;

        let invalid = |why: BoxError| {
            Error::new(ErrorKind::Config)
                .with_setting("root_certificates")
                .with_source(why)
        };
        match self.encoding {
            CertificateEncoding::Der if self.bytes.is_empty() => {
                Err(invalid("an empty DER certificate".into()))
            }
            CertificateEncoding::Der => Ok(vec![self.bytes.to_vec()]),
            CertificateEncoding::Pem => {
                let certs = CertificateDer::pem_slice_iter(&self.bytes)
                    .map(|c| c.map(|c| c.to_vec()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid(e.into()))?;
                if certs.is_empty() {
                    return Err(invalid("no CERTIFICATE block in the PEM text".into()));
                }
                Ok(certs)
            }
        }
    }
}

/// The scheme, host and port a request goes to: the key of a connection pool and what a
/// connector needs to open a connection. Default ports are filled in; IPv6 brackets are removed.
///
/// ```
/// use keel_core::Origin;
///
/// let uri: http::Uri = "https://[::1]/x".parse().unwrap();
/// let origin = Origin::from_uri(&uri).unwrap();
/// assert_eq!((origin.host(), origin.port(), origin.is_https()), ("::1", 443, true));
/// assert_eq!(origin.to_string(), "https://[::1]:443");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    https: bool,
    host: Box<str>,
    port: u16,
}

impl Origin {
    /// The origin of an absolute `http` or `https` URI; anything else is
    /// [`ErrorKind::InvalidUrl`].
    pub fn from_uri(uri: &http::Uri) -> Result<Self, Error> {
        let invalid = |why: String| Error::new(ErrorKind::InvalidUrl).with_source(why);
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(invalid(format!(
                    "`{}` is not an http or https url",
                    crate::redact::url(uri)
                )))
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid(format!("`{}` has no host", crate::redact::url(uri))))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self {
            https,
            host: host.to_ascii_lowercase().into_boxed_str(),
            port,
        })
    }

    /// True for `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host name or IP address, without brackets, lowercased.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, with the scheme's default filled in.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_decode_or_name_the_setting() {
        assert_eq!(
            Certificate::from_der(vec![1, 2, 3]).to_der().unwrap(),
            [vec![1, 2, 3]]
        );
        let pem = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            Certificate::from_pem(pem).to_der().unwrap(),
            [vec![1, 2, 3], vec![4, 5]]
        );
        for bad in [
            Certificate::from_pem("no pem here"),
            Certificate::from_pem("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
            Certificate::from_der(Vec::new()),
        ] {
            let err = bad.to_der().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert_eq!(err.setting(), Some("root_certificates"));
        }
    }

    #[test]
    fn origins_fill_default_ports_and_refuse_other_schemes() {
        let o = |s: &str| Origin::from_uri(&s.parse().unwrap());
        assert_eq!(
            o("http://Example.COM/a").unwrap().to_string(),
            "http://example.com:80"
        );
        assert_eq!(o("https://h:8443").unwrap().port(), 8443);
        assert_eq!(o("ftp://h/").unwrap_err().kind(), ErrorKind::InvalidUrl);
        assert_eq!(o("/relative").unwrap_err().kind(), ErrorKind::InvalidUrl);
    }

    #[test]
    fn capabilities_refuse_what_the_backend_lacks() {
        let mut config = TransportConfig::default();
        assert!(Capabilities::none().check(&config).is_ok());
        config.pool_idle_timeout = Some(Duration::from_secs(1));
        let err = Capabilities::none().check(&config).unwrap_err();
        assert_eq!(err.setting(), Some("pool_idle_timeout"));
        config.pool_idle_timeout = None;
        config.built_in_roots = false;
        let err = Capabilities::none().check(&config).unwrap_err();
        assert_eq!(err.setting(), Some("built_in_roots"));
    }

    #[test]
    fn connection_caps_are_refused_by_name_and_must_allow_one() {
        let caps = Capabilities {
            connection_caps: true,
            ..Capabilities::none()
        };
        type Set = fn(&mut TransportConfig, usize);
        let settings: [(&str, Set); 2] = [
            ("max_connections_per_origin", |c, n| {
                c.max_connections_per_origin = Some(n)
            }),
            ("max_connections", |c, n| c.max_connections = Some(n)),
        ];
        for (name, set) in settings {
            let mut config = TransportConfig::default();
            set(&mut config, 4);
            let err = Capabilities::none().check(&config).unwrap_err();
            assert_eq!(err.setting(), Some(name));
            assert!(caps.check(&config).is_ok());
            set(&mut config, 0);
            let err = caps.check(&config).unwrap_err();
            assert_eq!((err.kind(), err.setting()), (ErrorKind::Config, Some(name)));
        }
        let config = TransportConfig {
            pool_acquire_timeout: Some(Duration::from_millis(100)),
            ..TransportConfig::default()
        };
        let err = caps.check(&config).unwrap_err();
        assert_eq!(err.setting(), Some("pool_acquire_timeout"));
    }

    #[test]
    fn tls_settings_are_refused_by_name() {
        let cert = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nBAUG\n-----END PRIVATE KEY-----\n";
        let identity = Identity::from_pem(cert, key).unwrap();
        type Set = fn(&mut TransportConfig, &Identity);
        let settings: [(&str, Set); 3] = [
            ("identity", |c, id| c.identity = Some(id.clone())),
            ("min_tls_version", |c, _| {
                c.min_tls_version = Some(TlsVersion::Tls1_3)
            }),
            ("danger_accept_invalid_certs", |c, _| {
                c.danger_accept_invalid_certs = true
            }),
        ];
        for (name, set) in settings {
            let mut config = TransportConfig::default();
            set(&mut config, &identity);
            let err = Capabilities::none().check(&config).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert_eq!(err.setting(), Some(name));
            let caps = Capabilities {
                identity: true,
                min_tls_version: true,
                danger_accept_invalid_certs: true,
                ..Capabilities::none()
            };
            assert!(caps.check(&config).is_ok(), "{name}");
        }
        // The key stays out of the config's Debug output.
        let config = TransportConfig {
            identity: Some(identity),
            ..TransportConfig::default()
        };
        assert!(!format!("{config:?}").contains("4, 5, 6"));
    }
}
