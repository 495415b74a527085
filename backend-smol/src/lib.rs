//! keel-smol: keel's backend for any async runtime, on async-io, with no tokio in its tree.
//!
//! [`SmolTransport`] speaks HTTP/1.1 through [ureq-proto], the sans-IO protocol core of ureq 3
//! (it frames requests and parses response heads and chunked bodies, and never touches a
//! socket; a body framed by `Content-Length` is counted by keel-smol itself and, without TLS,
//! read from the socket straight into its frames), over sockets from
//! [async-io], the reactor behind smol and async-std: DNS on [blocking]'s thread pool, TCP with
//! `TCP_NODELAY`, TLS through futures-rustls (rustls with the `ring` provider; webpki roots by
//! default, extra roots configurable), the whole connect bounded by the connect timeout. It
//! keeps its own connection pool. [`AsyncIoTimer`] is its timer. With its default features,
//! `cargo tree -p keel-smol` lists no tokio crate at all.
//!
//! It is **not** a client on its own: redirects, retries, decoding and the other time limits
//! are keel-core's. Use it as `keel_core::Client<SmolTransport>`.
//!
//! # When to pick it
//!
//! When your code runs on smol or async-std, or must not assume any runtime: async-io drives
//! its own reactor thread when no async-io executor is polling it, so the transport works from
//! any executor — smol, async-std, tokio, or `futures::executor::block_on` — with no runtime
//! context to enter. On tokio, keel-hyper is the more natural choice: it uses tokio's reactor
//! and hyper-util's pool directly.
//!
//! # Who drives the connections
//!
//! HTTP/1.1 connections are driven by the task that uses them, and nothing is spawned: the send
//! future writes the request and reads the head, and the response body reads the rest. Each
//! connection therefore does its I/O on the caller's task, on the caller's runtime; cancelling
//! is dropping, and dropping the request future or a half-read body closes the connection. A
//! pooled, idle connection is read once, without waiting, when it is checked out, which is
//! when a close by the server is noticed.
//!
//! HTTP/2 (feature `http2`) can't work that way: one connection serves many tasks, and hyper
//! spawns a task per request body. Those connections run on a single `async-executor` thread
//! that keel-smol starts on first use (`keel-smol-h2`), independent of the caller's runtime.
//!
//! # The pool
//!
//! Connections are pooled per [`Origin`]. An HTTP/1.1 connection is checked
//! out exclusively and goes back to the pool only when its response body reached its end
//! cleanly and neither side asked to close it; a connection whose request or body was dropped
//! early, or failed, is closed. Concurrent requests to an origin with no idle connection each
//! open their own. HTTP/2 connections are shared by every request to their origin.
//! `pool_max_idle_per_host` (default: no limit) and `pool_idle_timeout` (default 90 s) are
//! honoured; idle connections are expired lazily, when the pool is next used.
//!
//! The connection caps (`max_connections_per_origin`, `max_connections`) are held by the pool:
//! every connection takes a permit from keel-core's
//! [`OpenConnections`] before it is opened, and gives it
//! back when it closes. A request that finds the caps full waits in line, and takes the first
//! connection that comes back to the pool for its origin or the first place that frees up;
//! under a full total cap a connection idle for another origin is closed to make room.
//! `pool_acquire_timeout` bounds the wait.
//!
//! A request that failed before the connection accepted any byte of it is marked
//! [`Error::is_unsent`], so keel's retries may send it again whatever its method.
//!
//! # HTTP/2 and tokio
//!
//! HTTP/2 is behind the `http2` feature, off by default. It uses hyper's HTTP/2 client
//! connections, and hyper depends on tokio's `sync` module whatever its features, while the
//! `h2` crate is written against tokio's I/O traits and tokio-util's codec. Enabling it puts
//! those crates (not a tokio runtime: no reactor, scheduler or timer is ever used) into the
//! dependency tree. Without the feature, [`Backend::capabilities`] reports no HTTP/2, TLS
//! offers only `http/1.1` by ALPN, and a client asking for HTTP/2 prior knowledge is refused
//! when it is built.
//!
//! ```no_run
//! # async fn run() -> Result<(), keel_core::Error> {
//! use keel_core::Client;
//! use keel_smol::SmolTransport;
//!
//! let client = Client::<SmolTransport>::builder()
//!     .base_url("https://api.example.com")
//!     .pool_max_idle_per_host(8)
//!     .build()?;
//! let status = client.get("/health").send().await?.status();
//! # let _ = status; Ok(()) }
//! ```
//!
//! [ureq-proto]: https://docs.rs/ureq-proto
//! [async-io]: https://docs.rs/async-io
//! [blocking]: https://docs.rs/blocking

#![forbid(unsafe_code)]

mod connect;
#[cfg(feature = "http2")]
mod errors;
mod http1;
#[cfg(feature = "http2")]
mod http2;
#[cfg(feature = "http2")]
mod io;
mod pool;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::proxy::ProxyConfig;
use keel_core::{
    Backend, Body, BoxFuture, Capabilities, ConnectionFacts, Error, Origin, PoolStats,
    ResponseBody, Timer, Transport, TransportConfig,
};

use keel_core::connect::{Acquired, OpenConnection, OpenConnections};

use crate::connect::{Connector, Stream};
use crate::http1::H1Conn;
use crate::pool::{Pool, PoolConfig};

/// How often a request whose pooled connection turned out closed before it was written goes
/// out again, on another connection.
const STALE_RETRIES: usize = 3;

/// keel's transport over async-io: HTTP/1.1 through ureq-proto (and HTTP/2 through hyper with
/// the `http2` feature), with its own pool.
///
/// Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct SmolTransport {
    inner: Arc<Inner>,
    timer: Arc<dyn Timer>,
}

struct Inner {
    connector: Connector,
    /// Responses carry [`keel_core::ConnectionInfo`].
    connection_info: bool,
    /// The connections open, per origin, and the permits to open more within the caps.
    open: OpenConnections,
    /// How long a request waits for a permit.
    acquire_timeout: Option<Duration>,
    timer: Arc<dyn Timer>,
    /// The proxies, when any is set: requests forwarded by an HTTP proxy get its
    /// `Proxy-Authorization`, and its `407` becomes a proxy error.
    proxy: Option<ProxyConfig>,
    h1: Pool<Origin, H1Conn>,
    #[cfg(feature = "http2")]
    h2: Pool<Origin, http2::H2Conn>,
}

/// Why one try on one connection failed.
pub(crate) enum SendError {
    /// Nothing of the request was written; it is given back to be sent elsewhere. Only hyper's
    /// HTTP/2 connections give a request back.
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    Unsent(Box<http::Request<Body>>, Error),
    /// The request may have reached the server.
    Failed(Error),
}

impl SmolTransport {
    /// Builds the transport from `config` (normally done by
    /// `keel_core::Client::<SmolTransport>::builder().build()`).
    pub fn new(config: &TransportConfig) -> Result<Self, Error> {
        Self::capabilities().check(config)?;
        let defaults = PoolConfig::default();
        let pool = PoolConfig {
            max_idle_per_key: config
                .pool_max_idle_per_host
                .unwrap_or(defaults.max_idle_per_key),
            idle_timeout: config.pool_idle_timeout.or(defaults.idle_timeout),
        };
        let open =
            OpenConnections::with_caps(config.max_connections_per_origin, config.max_connections);
        let returns: Arc<dyn pool::Returns<Origin>> = Arc::new(CapReturns(open.clone()));
        let timer: Arc<dyn Timer> = Arc::new(AsyncIoTimer::default());
        Ok(Self {
            inner: Arc::new(Inner {
                connector: Connector::new(config)?,
                connection_info: config.connection_info,
                open,
                acquire_timeout: config.pool_acquire_timeout,
                timer: timer.clone(),
                proxy: config.proxy.clone(),
                h1: Pool::new(pool).with_returns(returns),
                #[cfg(feature = "http2")]
                h2: Pool::new(pool),
            }),
            timer,
        })
    }
}

impl Inner {
    async fn send(
        &self,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, Error> {
        let origin = Origin::from_uri(req.uri())?;
        let forwarded = match &self.proxy {
            None => false,
            Some(proxy) => forward(proxy, &origin, &mut req),
        };
        let mut stale = 0;
        let mut acquire_deadline = None;
        loop {
            let result = match self.checkout(&origin) {
                Some(conn) => conn.send(req).await,
                None => {
                    let deadline = *acquire_deadline
                        .get_or_insert_with(|| self.acquire_timeout.map(|d| self.timer.now() + d));
                    let Some(permit) = self.permit(&origin, deadline).await? else {
                        // A connection came back to the pool meanwhile: take it.
                        continue;
                    };
                    // Boxed: opening a connection (DNS, TCP, a proxy's handshake, TLS,
                    // possibly TLS inside TLS) is a large future, and inline it made every
                    // request's future as large, copied when the request is boxed (+10,000
                    // instructions a request).
                    Box::pin(self.connect(&origin, permit))
                        .await?
                        .send(req)
                        .await
                }
            };
            match result {
                Ok(response) if forwarded => {
                    keel_core::proxy::check_forwarded(response.status())?;
                    return Ok(response);
                }
                Ok(response) => return Ok(response),
                Err(SendError::Unsent(back, err)) => {
                    // Only a reused connection can have been closed under us; a fresh one
                    // failing says something about the server.
                    if stale >= STALE_RETRIES {
                        return Err(err);
                    }
                    tracing::debug!(%origin, error = %err, "pooled connection was closed; sending again");
                    stale += 1;
                    req = *back;
                }
                Err(SendError::Failed(err)) => return Err(err),
            }
        }
    }

    /// A pooled connection to `origin`: a shared HTTP/2 one first, then an idle HTTP/1.1 one.
    fn checkout(&self, origin: &Origin) -> Option<Conn> {
        let now = Instant::now();
        #[cfg(feature = "http2")]
        if let Some(conn) = self.h2.checkout_shared(origin, now) {
            return Some(Conn::H2(conn));
        }
        self.h1.checkout(origin, now).map(Conn::H1)
    }

    /// A place for a new connection to `origin` within the caps, or `None` when a pooled
    /// connection became free while waiting. Under a full total cap, a connection idle for
    /// another origin is closed to make room.
    async fn permit(
        &self,
        origin: &Origin,
        deadline: Option<Instant>,
    ) -> Result<Option<OpenConnection>, Error> {
        if self.open.is_full() {
            self.h1.evict_idle(origin);
        }
        match self.open.acquire(origin, &*self.timer, deadline).await? {
            Acquired::Permit(permit) => Ok(Some(permit)),
            Acquired::Retry => Ok(None),
        }
    }

    async fn connect(&self, origin: &Origin, open: OpenConnection) -> Result<FreshConn, Error> {
        let connected = self.connector.connect(origin).await?;
        let facts = self.connection_info.then(|| facts_of(&connected.io));
        #[cfg(feature = "http2")]
        if connected.h2 {
            let io = io::HyperIo::new(connected.io);
            let conn = http2::H2Conn::handshake(io, facts, open).await?;
            self.h2.share(origin.clone(), conn.shared(), Instant::now());
            // Requests waiting for a place can all share it.
            self.open.shared(origin);
            return Ok(FreshConn(Conn::H2(conn)));
        }
        let conn = H1Conn::new(connected.io, connected.forwarded, facts, open);
        Ok(FreshConn(Conn::H1(self.h1.guard(origin.clone(), conn))))
    }
}

/// The caps hear of HTTP/1.1 connections coming back to the pool.
struct CapReturns(OpenConnections);

impl pool::Returns<Origin> for CapReturns {
    fn keep(&self, origin: &Origin) -> bool {
        self.0.keeps_idle(origin)
    }

    fn returned(&self, origin: &Origin) {
        self.0.returned(origin);
    }
}

/// Whether `request` (to `origin`) is forwarded by an HTTP proxy (a plain `http` target): it
/// then carries the proxy's credentials, unless the caller set `Proxy-Authorization` itself.
fn forward(proxy: &ProxyConfig, origin: &Origin, request: &mut http::Request<Body>) -> bool {
    let Some(forwarder) = proxy.forwarder(origin) else {
        return false;
    };
    if let Some(auth) = forwarder.basic_header() {
        request
            .headers_mut()
            .entry(http::header::PROXY_AUTHORIZATION)
            .or_insert_with(|| auth.clone());
    }
    true
}

/// A connection to send one request on.
enum Conn {
    H1(pool::Pooled<Origin, H1Conn>),
    #[cfg(feature = "http2")]
    H2(http2::H2Conn),
}

impl Conn {
    async fn send(
        self,
        req: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, SendError> {
        match self {
            Conn::H1(conn) => http1::send(conn, req).await.map_err(SendError::Failed),
            #[cfg(feature = "http2")]
            Conn::H2(conn) => http2::send(conn, req).await,
        }
    }
}

/// A connected stream's remote and local addresses, read once per connection.
fn facts_of(io: &Stream) -> ConnectionFacts {
    let tcp = match io {
        Stream::Plain(tcp) => tcp.get_ref(),
        Stream::Tls(tls) => tls.get_ref().0.get_ref(),
        Stream::TlsInTls(tls) => tls.get_ref().0.get_ref().0.get_ref(),
    };
    ConnectionFacts::new(tcp.peer_addr().ok(), tcp.local_addr().ok())
}

/// A connection just opened: an unsent failure on it is not a stale connection.
struct FreshConn(Conn);

impl FreshConn {
    async fn send(
        self,
        req: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, SendError> {
        match self.0.send(req).await {
            // Keep the request unsent-marked for the caller, but stop the stale-connection
            // loop: it only retries errors from reused connections.
            Err(SendError::Unsent(_, err)) => Err(SendError::Failed(err)),
            other => other,
        }
    }
}

impl fmt::Debug for SmolTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolTransport").finish_non_exhaustive()
    }
}

impl Transport for SmolTransport {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(request).await })
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        &self.timer
    }

    /// Open connections per origin, and of them the HTTP/1.1 ones idle in the pool (a shared
    /// HTTP/2 connection counts as in use).
    fn pool_stats(&self) -> Option<Vec<PoolStats>> {
        let inner = &self.inner;
        let stats = inner.open.counts().into_iter().map(|(origin, open)| {
            let idle = inner.h1.idle_count(&origin);
            PoolStats::new(origin, open).with_idle(Some(idle))
        });
        Some(stats.collect())
    }
}

impl Backend for SmolTransport {
    const NAME: &'static str = "smol";

    fn capabilities() -> Capabilities {
        let mut caps = Capabilities::none();
        caps.http2 = cfg!(feature = "http2");
        caps.http2_prior_knowledge = cfg!(feature = "http2");
        caps.pool_max_idle_per_host = true;
        caps.pool_idle_timeout = true;
        // Its own pool takes a permit for every connection it opens, sees every request wait
        // for one, and can close an idle connection to make room.
        caps.connection_caps = true;
        caps.pool_acquire_timeout = true;
        caps.connection_cap_evicts_idle = true;
        // Its own pool knows which connection each request takes.
        caps.connection_addrs = true;
        caps.connection_reused = true;
        // Its pool knows which connections are idle.
        caps.pool_stats = true;
        caps.root_certificates = true;
        caps.disable_built_in_roots = true;
        caps.disable_tcp_nodelay = true;
        // An HTTP/1.1 connection is driven by whoever holds it, so dropping the send future or
        // the body drops (and closes) the connection; an HTTP/2 stream is reset.
        caps.cancel_in_flight = true;
        caps.dns_overrides = true;
        caps.dns_override_any_port = true;
        caps.dns_resolver = true;
        caps.dns_cache = true;
        caps.local_address = true;
        caps.identity = true;
        caps.min_tls_version = true;
        caps.danger_accept_invalid_certs = true;
        // `http://` and `https://` proxies (absolute form, `CONNECT`; TLS to the proxy) and
        // SOCKS5, through keel-core's handshakes.
        caps.proxy_http = true;
        caps.proxy_socks5 = true;
        caps.proxy_tls = true;
        // The body that reads a response's last byte puts its connection back in the pool.
        caps.pool_return_on_body_end = true;
        caps.truncated_head_detected = true;
        // HTTP/2 (feature `http2`): a timeout retires the connection from the pool.
        caps.http2_timeout_retires_connection = true;
        caps
    }

    fn from_config(config: &TransportConfig) -> Result<Self, Error> {
        Self::new(config)
    }
}

/// The blocking client's driver runs in async-io's `block_on`, which drives async-io's reactor
/// on the client's thread while it waits.
#[cfg(feature = "blocking")]
impl keel_core::blocking::Runtime for SmolTransport {
    fn run(driver: keel_core::blocking::Driver) -> std::io::Result<()> {
        async_io::block_on(driver);
        Ok(())
    }
}

/// keel's [`Timer`] on async-io's timers, from keel-core (its `async-io` feature).
///
/// Works from any executor: async-io runs its reactor on a thread of its own when no
/// async-io-aware executor is driving it.
pub use keel_core::AsyncIoTimer;
