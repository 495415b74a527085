//! keel-hyper: keel's backend on hyper 1.x and tokio.
//!
//! [`HyperTransport`] sends requests through hyper-util's pooled client, over connections it
//! opens itself: DNS through tokio, TCP with `TCP_NODELAY`, TLS through rustls (webpki roots by
//! default, extra roots configurable) with HTTP/2 or HTTP/1.1 chosen by ALPN, the whole connect
//! bounded by the connect timeout. [`TokioTimer`] is its timer.
//!
//! It is **not** a client on its own: redirects, retries, decoding and the other time limits are
//! keel-core's. Use it through the `keel` facade (`keel::Client`) or as
//! `keel_core::Client<HyperTransport>`.
//!
//! Requests must be sent from inside a tokio runtime (either flavour); outside one, `send`
//! fails with [`ErrorKind::Config`] naming `runtime` instead of panicking.
//!
//! # Stale connections
//!
//! When a pooled keep-alive connection turns out to have been closed by the server before the
//! request was written, hyper-util sends the request again on another connection. That replay is
//! not a retry in keel's sense: the request provably never left, so it is safe for every method.
//! The same situation on a fresh connection surfaces as an error with
//! [`Error::is_unsent`] set.
//!
//! # HTTP/2 after a timeout
//!
//! When keel's attempt timeout, read-idle timeout or deadline cuts a request on an HTTP/2
//! connection, that connection takes no new requests (hyper-util's pool drops it): a peer that
//! went silent would swallow them too. The streams already on it carry on. A request dropped for
//! any other reason (the caller gave up, a hedge lost) leaves its connection in the pool. See
//! [`keel_core::connect::abandoned_on_timeout`].
//!
//! # Connection caps
//!
//! `max_connections_per_origin` and `max_connections` are held by the connector: it takes a
//! permit from keel-core's [`OpenConnections`] before it opens a connection, and the connection
//! gives it back when hyper closes it. hyper-util races every connect against its pool, so a
//! request whose connect waits for a permit takes the first connection that comes back to the
//! pool for its origin. hyper-util's pool can't be asked to give up an idle connection, so one
//! idle for another origin keeps its place under `max_connections` until its idle timeout
//! ([`Capabilities::connection_cap_evicts_idle`] is false). `pool_acquire_timeout` bounds the
//! wait for a permit.
//!
//! ```no_run
//! # async fn run() -> Result<(), keel_core::Error> {
//! use keel_core::Client;
//! use keel_hyper::HyperTransport;
//!
//! let client = Client::<HyperTransport>::builder()
//!     .base_url("https://api.example.com")
//!     .pool_max_idle_per_host(8)
//!     .build()?;
//! let status = client.get("/health").send().await?.status();
//! # let _ = status; Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod connect;
mod errors;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt as _;
use hyper_util::client::legacy::connect::{capture_connection, CaptureConnection};
use hyper_util::client::legacy::Client as PoolClient;
use hyper_util::rt::{TokioExecutor, TokioTimer as HyperUtilTimer};
use keel_core::connect::{GuardedBody, OnTimeout, OpenConnections};
use keel_core::proxy::ProxyConfig;
use keel_core::{
    Backend, Body, BoxFuture, Capabilities, Error, ErrorKind, FramedBody, Origin, PoolStats,
    ResponseBody, Sleep, Timer, Transport, TransportConfig,
};

use crate::connect::{ConnTag, Connector};

/// keel's transport on hyper-util's pooled client and tokio.
#[derive(Clone)]
pub struct HyperTransport {
    /// Bodies go to hyper as [`FramedBody`]: an empty one is framed by the core's headers
    /// alone (hyper's HTTP/2 client would add `content-length: 0` to an empty OPTIONS).
    client: PoolClient<Connector, FramedBody>,
    timer: Arc<dyn Timer>,
    /// Responses carry [`keel_core::ConnectionInfo`].
    connection_info: bool,
    /// Where HTTP/2 may be spoken: such requests note their connection, to retire it after a
    /// timeout.
    h2: H2Use,
    open: OpenConnections,
    /// Closes `open` when the last clone of the transport goes: connects still waiting for a
    /// place within the caps (in hyper-util's background tasks) fail then, instead of waiting
    /// for connections that nobody will close.
    _closer: Arc<Closer>,
    /// Origins whose servers refused a TLS handshake lately (see [`connect::Refusals`]).
    refusals: Arc<connect::Refusals>,
    /// The proxies, when any is set: requests forwarded by an HTTP proxy get its
    /// `Proxy-Authorization`, and its `407` becomes a proxy error.
    proxy: Option<Arc<ProxyConfig>>,
}

impl HyperTransport {
    /// Builds the transport from `config` (normally done by
    /// `keel_core::Client::<HyperTransport>::builder().build()`).
    pub fn new(config: &TransportConfig) -> Result<Self, Error> {
        Self::capabilities().check(config)?;
        let connector = Connector::new(config)?;
        let open = connector.open.clone();
        let refusals = connector.refusals.clone();
        let mut builder = PoolClient::builder(TokioExecutor::new());
        builder.pool_timer(HyperUtilTimer::new());
        if let Some(max) = config.pool_max_idle_per_host {
            builder.pool_max_idle_per_host(max);
        }
        if let Some(idle) = config.pool_idle_timeout {
            builder.pool_idle_timeout(idle);
        }
        if config.http2_prior_knowledge {
            builder.http2_only(true);
        }
        Ok(Self {
            client: builder.build(connector),
            timer: Arc::new(TokioTimer),
            connection_info: config.connection_info,
            h2: match (config.http2_prior_knowledge, config.http2) {
                (true, _) => H2Use::Always,
                (false, true) => H2Use::OverTls,
                (false, false) => H2Use::Never,
            },
            _closer: Arc::new(Closer(open.clone())),
            open,
            refusals,
            proxy: config.proxy.clone().map(Arc::new),
        })
    }
}

/// Closes the connection permits when dropped.
struct Closer(OpenConnections);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransport").finish_non_exhaustive()
    }
}

impl Transport for HyperTransport {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Box::pin(std::future::ready(Err(no_runtime())));
        }
        if let Some(proxy) = &self.proxy {
            // Its own path, so the direct one below does no more per request than it did
            // before proxies existed.
            return self.send_proxied(proxy, request);
        }
        if self.may_speak_h2(request.uri()) {
            return self.send_h2(request);
        }
        let refusal = self.refusal_check(request.uri());
        let fut = self.client.request(request.map(FramedBody::new));
        let connection_info = self.connection_info;
        Box::pin(async move {
            match fut.await {
                Ok(response) => Ok(to_keel(response, connection_info, plain_body)),
                Err(err) => Err(refused_or(errors::from_client_error(err), refusal)),
            }
        })
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        &self.timer
    }

    /// Open connections per origin; hyper-util's pool doesn't say which of them are idle.
    fn pool_stats(&self) -> Option<Vec<PoolStats>> {
        let counts = self.open.counts().into_iter();
        Some(counts.map(|(o, n)| PoolStats::new(o, n)).collect())
    }
}

/// What [`refused_or`] needs of an `https` request; plain `http` has no handshake to refuse.
type RefusalCheck = (Arc<connect::Refusals>, http::Uri);

/// `err`, or a TLS error when it is a request failing on a closed connection to a server that
/// has just refused a TLS handshake: hyper's connection task read the refusal, and the request
/// only saw its connection close.
fn refused_or(err: Error, refusal: Option<RefusalCheck>) -> Error {
    let Some((refusals, uri)) = refusal.filter(|_| err.kind() == ErrorKind::Body) else {
        return err;
    };
    match Origin::from_uri(&uri) {
        Ok(origin) => refusals.explain(err, &origin),
        Err(_) => err,
    }
}

/// hyper's response as keel's, with the connection's facts when the client asked for them;
/// `body` makes keel's body of hyper's.
fn to_keel(
    mut response: http::Response<hyper::body::Incoming>,
    connection_info: bool,
    body: impl FnOnce(hyper::body::Incoming) -> ResponseBody,
) -> http::Response<ResponseBody> {
    let tag = match connection_info {
        true => response.extensions_mut().remove::<ConnTag>(),
        false => None,
    };
    let response = response.map(body);
    match tag {
        Some(tag) => response.map(|b| b.with_connection(tag.info())),
        None => response,
    }
}

/// A response body as keel's.
fn plain_body(body: hyper::body::Incoming) -> ResponseBody {
    ResponseBody::new(body.map_err(errors::from_body_error))
}

/// A response body as keel's, keeping `retire` when the response came over HTTP/2, so a
/// timeout in the body retires the connection.
fn h2_body<G: Send + Sync + Unpin + 'static>(
    body: hyper::body::Incoming,
    version: http::Version,
    retire: G,
) -> ResponseBody {
    if version != http::Version::HTTP_2 {
        return plain_body(body);
    }
    ResponseBody::new(GuardedBody::new(body, retire).map_err(errors::from_body_error))
}

/// Where HTTP/2 may be spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H2Use {
    Never,
    /// Negotiated by ALPN, so on `https://` only.
    OverTls,
    /// `http2_prior_knowledge`: on every connection.
    Always,
}

/// Notes the connection `request` goes on, to retire it (hyper-util's pool takes no new
/// request on it) when keel's driver drops the request or its body on a timeout. Only HTTP/2
/// needs it: an HTTP/1.1 connection cut mid-exchange is closed anyway.
fn retire_on_timeout(
    request: &mut http::Request<FramedBody>,
) -> OnTimeout<impl FnOnce() + Send + Sync + Unpin + 'static> {
    let captured: CaptureConnection = capture_connection(request);
    OnTimeout::new(move || {
        if let Some(connected) = &*captured.connection_metadata() {
            tracing::debug!("a time limit cut a request: its connection takes no new ones");
            connected.poison();
        }
    })
}

impl HyperTransport {
    /// Whether a request to `uri` may go over HTTP/2.
    fn may_speak_h2(&self, uri: &http::Uri) -> bool {
        match self.h2 {
            H2Use::Never => false,
            H2Use::OverTls => uri.scheme() == Some(&http::uri::Scheme::HTTPS),
            H2Use::Always => true,
        }
    }

    /// What a failure of a request to `uri` needs to tell a refused TLS handshake: `None` for
    /// `http`, so a plain request neither copies its URI nor counts a reference.
    fn refusal_check(&self, uri: &http::Uri) -> Option<RefusalCheck> {
        (uri.scheme() == Some(&http::uri::Scheme::HTTPS))
            .then(|| (self.refusals.clone(), uri.clone()))
    }

    /// [`Transport::send`] for a request that may go over HTTP/2: it notes the connection it
    /// goes on, to retire it after a timeout. Apart, so the HTTP/1.1 path stays as it was.
    #[inline(never)]
    fn send_h2(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        let refusal = self.refusal_check(request.uri());
        let mut request = request.map(FramedBody::new);
        let retire = retire_on_timeout(&mut request);
        let fut = self.client.request(request);
        let connection_info = self.connection_info;
        Box::pin(async move {
            match fut.await {
                Ok(response) => {
                    let version = response.version();
                    Ok(to_keel(response, connection_info, |body| {
                        h2_body(body, version, retire)
                    }))
                }
                Err(err) => Err(refused_or(errors::from_client_error(err), refusal)),
            }
        })
    }

    /// [`Transport::send`] on a client with proxies: a request forwarded by an HTTP proxy
    /// carries its credentials, and the proxy's `407` is a [`Stage::Proxy`](keel_core::Stage)
    /// error.
    fn send_proxied(
        &self,
        proxy: &ProxyConfig,
        mut request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        let forwarded = forward(proxy, &mut request);
        let refusal = self.refusal_check(request.uri());
        let mut request = request.map(FramedBody::new);
        let retire = self
            .may_speak_h2(request.uri())
            .then(|| retire_on_timeout(&mut request));
        let fut = self.client.request(request);
        let connection_info = self.connection_info;
        Box::pin(async move {
            match fut.await {
                Ok(response) => {
                    if forwarded {
                        keel_core::proxy::check_forwarded(response.status())?;
                    }
                    let version = response.version();
                    Ok(to_keel(response, connection_info, |body| match retire {
                        Some(retire) => h2_body(body, version, retire),
                        None => plain_body(body),
                    }))
                }
                Err(err) => Err(refused_or(errors::from_client_error(err), refusal)),
            }
        })
    }
}

impl Backend for HyperTransport {
    const NAME: &'static str = "hyper";

    fn capabilities() -> Capabilities {
        let mut caps = Capabilities::none();
        caps.http2 = true;
        caps.http2_prior_knowledge = true;
        caps.pool_max_idle_per_host = true;
        caps.pool_idle_timeout = true;
        caps.root_certificates = true;
        caps.disable_built_in_roots = true;
        caps.disable_tcp_nodelay = true;
        caps.cancel_in_flight = true;
        caps.dns_overrides = true;
        caps.dns_override_any_port = true;
        caps.dns_resolver = true;
        caps.dns_cache = true;
        caps.local_address = true;
        caps.connection_addrs = true;
        caps.connection_reused = true;
        caps.pool_stats = true;
        caps.identity = true;
        caps.min_tls_version = true;
        caps.danger_accept_invalid_certs = true;
        // `http://` and `https://` proxies (absolute form, `CONNECT`; TLS to the proxy) and
        // SOCKS5, through keel-core's handshakes.
        caps.proxy_http = true;
        caps.proxy_socks5 = true;
        caps.proxy_tls = true;
        // hyper-util puts a connection back from a task it spawns once the connection is idle:
        // on a multi-thread runtime the next request may start before that task runs.
        caps.pool_return_on_body_end = false;
        caps.truncated_head_detected = true;
        // A timeout poisons the request's HTTP/2 connection in hyper-util's pool.
        caps.http2_timeout_retires_connection = true;
        // The connector takes a permit per connection before it opens one, and sees the wait.
        caps.connection_caps = true;
        caps.pool_acquire_timeout = true;
        // hyper-util's pool can't be asked to close an idle connection: one idle for another
        // origin keeps its place under `max_connections` until its idle timeout.
        caps.connection_cap_evicts_idle = false;
        caps
    }

    fn from_config(config: &TransportConfig) -> Result<Self, Error> {
        Self::new(config)
    }
}

/// keel's [`Timer`] on tokio's timer wheel.
///
/// Like every tokio timer it must be used from inside a tokio runtime.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioTimer;

impl Timer for TokioTimer {
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// The blocking client's driver runs on a tokio current-thread runtime of its own (I/O and time
/// enabled), on the client's thread: hyper's connection tasks are spawned there too.
#[cfg(feature = "blocking")]
impl keel_core::blocking::Runtime for HyperTransport {
    fn run(driver: keel_core::blocking::Driver) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("keel-blocking-hyper")
            .build()?;
        runtime.block_on(driver);
        Ok(())
    }

    /// Inside a tokio runtime (either flavour).
    fn in_async_context() -> bool {
        tokio::runtime::Handle::try_current().is_ok()
    }
}

/// Whether `request` is forwarded by an HTTP proxy (a plain `http` target): it then carries
/// the proxy's credentials, unless the caller set `Proxy-Authorization` itself.
fn forward(proxy: &ProxyConfig, request: &mut http::Request<Body>) -> bool {
    let Ok(origin) = Origin::from_uri(request.uri()) else {
        return false;
    };
    let Some(forwarder) = proxy.forwarder(&origin) else {
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

fn no_runtime() -> Error {
    Error::new(ErrorKind::Config)
        .with_setting("runtime")
        .with_source("keel-hyper sends requests on tokio: call it from inside a tokio runtime")
}

#[cfg(all(test, feature = "blocking"))]
mod tests {
    use keel_core::blocking::Runtime as _;

    use super::HyperTransport;

    /// What the blocking client's "called from inside an async runtime" warning relies on.
    #[test]
    fn a_tokio_runtime_is_recognised_as_an_async_context() {
        assert!(!HyperTransport::in_async_context());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(runtime.block_on(async { HyperTransport::in_async_context() }));
        let _inside = runtime.enter();
        assert!(HyperTransport::in_async_context());
    }
}
