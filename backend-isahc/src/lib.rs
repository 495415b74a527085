//! keel-isahc: keel's backend on [isahc] and libcurl, for any executor.
//!
//! [`IsahcTransport`] sends requests through one isahc `HttpClient`: a libcurl multi handle
//! driven by isahc's own agent thread, with libcurl's connection pool, HTTP/2 over TLS by ALPN
//! (nghttp2), HTTP/1.1, and TLS by rustls inside libcurl. Because the I/O happens on that
//! thread, its futures can be polled by any executor: tokio, smol, async-std or
//! `futures::executor::block_on`, with no tokio runtime present. [`AsyncIoTimer`] is its timer,
//! on async-io (which runs its own reactor thread when nothing else drives it), so the whole
//! backend is runtime-independent.
//!
//! It is **not** a client on its own: redirects, retries, content decoding and every time limit
//! other than the connect timeout are keel-core's, and the corresponding libcurl features are
//! off (see [below](#what-libcurl-may-do)). Use it through the `keel` facade or as
//! `keel_core::Client<IsahcTransport>`.
//!
//! # When to pick it
//!
//! - The application does not run on tokio (smol, async-std, another executor, or blocking code
//!   using `block_on`), and you want libcurl's mature HTTP stack rather than a Rust one.
//! - You want libcurl's behaviour on the wire: its HTTP/2, its connection handling.
//!
//! Prefer keel-hyper on tokio: it cancels at once (see [Cancellation](#cancellation)), reports
//! the response head as soon as it arrives, and needs no extra thread. keel-isahc's build is
//! hermetic but compiles libcurl, nghttp2 and aws-lc from C (about 1.5 minutes for a cold debug
//! build of the crate and its dependencies on two cores).
//!
//! ```no_run
//! # fn main() -> Result<(), keel_core::Error> {
//! use keel_core::Client;
//! use keel_isahc::IsahcTransport;
//!
//! let client = Client::<IsahcTransport>::builder()
//!     .base_url("https://api.example.com")
//!     .build()?;
//! // Any executor will do; this one is `futures::executor::block_on`.
//! let response = futures_executor::block_on(client.get("/health").send())?;
//! # let _ = response.status(); Ok(()) }
//! ```
//!
//! # Connection reuse
//!
//! Plain isahc has been seen opening thousands of connections for 20 concurrent workers.
//! Reading isahc 2.0 and libcurl 8.22, and measuring against the conformance server, gives two
//! causes:
//!
//! - **libcurl's pool shrinks when load drops.** isahc leaves `CURLMOPT_MAXCONNECTS` unset
//!   unless `connection_cache_size` is called, and libcurl then sizes the pool from the
//!   transfers attached to the multi handle when a connection goes idle: 4 × that number in
//!   libcurl 7.x (a system libcurl such as Debian 12's 7.88), 2 × it in 8.x, where only
//!   connections idle for a second or more are evicted. isahc attaches a transfer only while it
//!   runs. So when 20 workers pause or slow down, the pool shrinks to a few connections, and
//!   when they speed up again they open new ones: 20 workers, then one worker for 1.5 s, then
//!   20 again, open 38 connections with isahc's defaults and 20 with a fixed pool size. Under a
//!   load that keeps changing (or with libcurl 7.x, where the limit applies at once and to
//!   every connection) this repeats all the time. keel-isahc fixes the pool size
//!   ([`MAX_POOLED_CONNECTIONS`]), so a connection stays until it has been idle longer than the
//!   idle timeout.
//! - **A response body dropped before its end costs its connection.** isahc's body is a pipe
//!   fed by libcurl's write callback; once the reader is gone the next write fails, libcurl
//!   aborts the transfer and closes an HTTP/1.x connection (on HTTP/2 it resets the stream and
//!   keeps the connection). keel requires exactly that of a half-read response, but a caller
//!   that drops responses unread (a load test that checks only the status) pays one connection
//!   per request as soon as bodies are larger than what the pipe buffers (20 sequential 200 kB
//!   responses dropped unread: 20 connections). A small body that libcurl has already written
//!   to the pipe in full survives.
//!
//! A body read to its end gives its connection back before the end is seen: isahc reports the
//! end only after libcurl has finished the transfer and returned the connection to the pool,
//! so the next request finds it idle (20 workers × 100 requests through keel-isahc: 20
//! connections). Nothing else limits reuse: isahc sets no per-host or total limit, and libcurl
//! stops reusing connections idle for longer than `CURLOPT_MAXAGE_CONN` (118 s by default, or
//! [`pool_idle_timeout`](keel_core::ClientBuilder::pool_idle_timeout)).
//!
//! # Cancellation
//!
//! isahc sees that a request future or a response body was dropped only at libcurl's next
//! callback for that transfer, and isahc has no way to abort a transfer from outside. A body
//! dropped while data is still coming is aborted at once. But a request still waiting for its
//! head, or a body whose server has gone quiet, keeps its transfer and its connection in
//! isahc's agent until the server sends something or closes the connection; then the transfer
//! is aborted and the connection closed, never reused. The connection is never handed to
//! another request meanwhile.
//!
//! # The response head
//!
//! isahc resolves the response future when the first byte of the body arrives (or when the
//! transfer ends), not when the head does. So the wait for the first body byte counts against
//! keel's attempt timeout, and a body that fails before its first byte fails the request
//! instead of the body.
//!
//! # Errors
//!
//! keel's kinds and stages come from libcurl's error code, kept (inside isahc's error) as the
//! source: a refused connection is [`Connect`](keel_core::ErrorKind::Connect) in
//! [`Stage::Connect`](keel_core::Stage::Connect), a failed lookup `Connect` in
//! [`Stage::Dns`](keel_core::Stage::Dns), a certificate or handshake failure
//! [`Tls`](keel_core::ErrorKind::Tls), a reply that isn't HTTP
//! [`Protocol`](keel_core::ErrorKind::Protocol), a truncated or reset body
//! [`Body`](keel_core::ErrorKind::Body) in [`Stage::Body`](keel_core::Stage::Body), a failing
//! request body stream [`InvalidRequest`](keel_core::ErrorKind::InvalidRequest). libcurl does
//! not say whether DNS, TCP or TLS was pending when the connect timeout ran out, so that
//! timeout is always in `Stage::Connect`.
//!
//! # What libcurl may do
//!
//! Off: following redirects, automatic decompression (libcurl adds no `Accept-Encoding` of its
//! own and decodes nothing, whatever the response says: keel-core sends `Accept-Encoding` and
//! decodes the body, once, as on every backend), cookies, proxies from the environment (`http_proxy` and friends),
//! `Expect: 100-continue`. Retries are keel's, with one exception that needs no permission:
//! like hyper-util, libcurl sends a request again on a new connection when a reused connection
//! turns out to have been closed before any response byte arrived.
//!
//! libcurl adds `Host` and the framing headers of a body with content (`Content-Length`, or
//! `Transfer-Encoding: chunked` on HTTP/1.1 for a streamed body), and two more that isahc gives
//! no way to suppress short of sending them empty:
//!
//! - `Accept: */*` when the request has no `Accept`; it means the same as no `Accept`
//!   (RFC 9110, 12.5.1).
//! - For a `POST` with a body and no `Content-Type`, libcurl would add
//!   `application/x-www-form-urlencoded`. keel-isahc sends `application/octet-stream` instead,
//!   which is what a body without a `Content-Type` means (RFC 9110, 8.3).
//!
//! An empty body is framed by keel-core, in the headers it hands over (`Content-Length: 0`
//! except for GET, HEAD, DELETE, OPTIONS and TRACE, which say nothing), and libcurl sends those
//! as they are; a `HEAD` with a body is refused. keel always sets `User-Agent`, so isahc's
//! default is never sent.
//! Header values must be visible ASCII (isahc hands libcurl `&str`s); other bytes are refused
//! as [`InvalidRequest`](keel_core::ErrorKind::InvalidRequest) before anything is sent.
//!
//! # Settings
//!
//! Honoured: the connect timeout (libcurl's, covering DNS, TCP and TLS), HTTP/2 by ALPN or
//! with prior knowledge (plain text only; TLS still negotiates), extra roots, turning the
//! built-in roots off, and the pool idle timeout (`CURLOPT_MAXAGE_CONN`: a connection idle
//! longer is never reused, and is closed the next time the client runs a transfer), and the
//! connection caps (`max_connections_per_origin`, `max_connections`). A transfer beyond the
//! caps waits in keel, in the order it came, until another one's body ends, bounded by the
//! attempt's timeout and the call's deadline: libcurl would queue it too, but count the wait against its connect
//! timeout (a burst of 10,000 requests on 50 connections failed with "connect timed out"
//! once its queue took longer than that to drain). Over HTTP/2 the caps so bound transfers
//! in flight, not only connections. libcurl holds the same caps (`CURLMOPT_MAX_HOST_CONNECTIONS`;
//! `CURLMOPT_MAX_TOTAL_CONNECTIONS`, which closes the oldest idle connection to make room),
//! for a transfer whose body was dropped early: libcurl lets go of its connection only at its
//! next callback. Refused when the client is built: `pool_max_idle_per_host` (libcurl's pool
//! limit counts every connection to every host, busy or idle), `pool_acquire_timeout` (a
//! transfer can still wait inside libcurl, behind one whose body was dropped, where no timeout
//! of keel's sees it) and `tcp_nodelay(false)` (libcurl always sets `TCP_NODELAY`).
//!
//! # TLS
//!
//! rustls inside libcurl (rustls-ffi). The built-in roots are Mozilla's, the same set as
//! keel-hyper's, handed to libcurl with the extra roots as one in-memory PEM bundle
//! (`CURLOPT_CAINFO_BLOB`): no file is written. Extra roots are checked when the client is
//! built.
//!
//! The bundle is attached to `https` requests only. libcurl copies the TLS settings, bundle
//! included (about 180 KiB), into every connection it opens, plain-text ones too: set on the
//! client, it cost 180 MiB for 1000 concurrent plain-text requests (measured with massif in
//! the benchmarks' S1; 27 MiB without it). Each TLS connection still holds its copy.
//!
//! # Threads
//!
//! Each transport runs one isahc agent thread. Dropping the last clone of the transport (and
//! the last response body, which holds one) stops the thread and waits for it, aborting the
//! transfers still running.
//!
//! # Many open descriptors
//!
//! curl-sys 0.4.91 builds its bundled libcurl (8.22) without `poll()`: it defines the old
//! `HAVE_POLL_FINE`, which curl 8.22 no longer reads. libcurl then checks a connecting socket
//! with `select()`, which can't hold a descriptor numbered 1024 (`FD_SETSIZE`) or above, and
//! fails the connect with `CURLE_COULDNT_CONNECT` although the socket connected
//! (curl/curl#15080). A process with a thousand descriptors open (a busy service) would see
//! every new connection fail as [`ErrorKind::Connect`](keel_core::ErrorKind::Connect).
//!
//! keel's workspace builds libcurl with `poll()` (`.cargo/config.toml`, tested by
//! `tests/many_descriptors.rs`). A project that depends on keel-isahc needs the same lines in
//! its own `.cargo/config.toml`, since cargo reads that file only from the project being built:
//!
//! ```toml
//! [env]
//! CFLAGS_x86_64_unknown_linux_gnu = "-DHAVE_POLL"
//! CFLAGS_aarch64_unknown_linux_gnu = "-DHAVE_POLL"
//! ```
//!
//! (A `CFLAGS_<target>` variable replaces a plain `CFLAGS` for C code built for that target:
//! add any flags of your own to it.)
//!
//! [isahc]: https://docs.rs/isahc

#![forbid(unsafe_code)]

mod body;
mod errors;
mod tls;

use std::fmt;
use std::sync::Arc;

use isahc::net::dns::ResolveMap;

use isahc::config::{Configurable as _, ExpectContinue, RedirectPolicy, VersionNegotiation};
use keel_core::connect::OpenConnections;
use keel_core::proxy::{Proxy, ProxyConfig};
use keel_core::{
    Backend, Body, BoxFuture, Capabilities, Error, ErrorKind, Origin, ResponseBody, Timer,
    Transport, TransportConfig,
};

/// keel's [`Timer`] on async-io, from keel-core (its `async-io` feature): it needs no runtime.
pub use keel_core::AsyncIoTimer;

/// The most connections, idle or in use, libcurl keeps in the pool (`CURLMOPT_MAXCONNECTS`).
///
/// Above it, the connection that has been idle longest is closed when another one becomes
/// idle. Fixed, so the pool doesn't shrink with the number of running transfers (see
/// [Connection reuse](crate#connection-reuse)).
pub const MAX_POOLED_CONNECTIONS: usize = 1024;

/// keel's transport on isahc and libcurl. Cheap to clone: clones share the agent thread and the
/// connection pool.
#[derive(Clone)]
pub struct IsahcTransport {
    client: isahc::HttpClient,
    /// The trust store, set per `https` request only: libcurl copies a CA bundle given in
    /// memory into every connection it opens (plain-text ones too), about 180 KiB each, which
    /// made 1000 concurrent plain-text requests cost 180 MiB when it was set on the client.
    tls: isahc::tls::TlsConfig,
    timer: Arc<dyn Timer>,
    /// Responses carry [`keel_core::ConnectionInfo`].
    connection_info: bool,
    /// The proxies, when any is set: keel picks the proxy of each request (so `NO_PROXY` is
    /// matched the same way on every backend) and hands it to libcurl for that request.
    proxy: Option<Arc<ProxyConfig>>,
    /// With connection caps: the transfers in flight, per origin and in all, held to the caps
    /// here, before libcurl sees them (see [`IsahcTransport::send`]).
    in_flight: Option<OpenConnections>,
}

impl IsahcTransport {
    /// Builds the transport from `config` (normally done by
    /// `keel_core::Client::<IsahcTransport>::builder().build()`).
    pub fn new(config: &TransportConfig) -> Result<Self, Error> {
        Self::capabilities().check(config)?;
        let version = if config.http2_prior_knowledge {
            // Plain text: HTTP/2 from the first byte. TLS: still negotiated by ALPN.
            VersionNegotiation::http2()
        } else if config.http2 {
            // HTTP/2 offered by ALPN on TLS, HTTP/1.1 on plain text.
            VersionNegotiation::latest_compatible()
        } else {
            VersionNegotiation::http11()
        };
        let mut builder = isahc::HttpClient::builder()
            .redirect_policy(RedirectPolicy::None)
            // keel-core decodes bodies; libcurl must hand them over as they came.
            .automatic_decompression(false)
            .expect_continue(ExpectContinue::disabled())
            .proxy(None)
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay()
            .version_negotiation(version)
            .connection_cache_size(MAX_POOLED_CONNECTIONS);
        if let Some(idle) = config.pool_idle_timeout {
            builder = builder.connection_cache_ttl(idle);
        }
        // libcurl holds the caps too (`CURLMOPT_MAX_HOST_CONNECTIONS`, per host and port;
        // `CURLMOPT_MAX_TOTAL_CONNECTIONS`, closing the oldest idle connection to make room),
        // but a transfer pending there has its connect timeout running: keel queues transfers
        // first (`in_flight`), and libcurl's caps only catch a transfer whose connection
        // libcurl has not let go of yet.
        if let Some(max) = config.max_connections_per_origin {
            builder = builder.max_connections_per_host(max);
        }
        if let Some(max) = config.max_connections {
            builder = builder.max_connections(max);
        }
        if !config.dns_overrides.is_empty() {
            builder = builder.dns_resolve(resolve_map(config)?);
        }
        if let Some(local) = config.local_address {
            // `CURLOPT_INTERFACE`: libcurl binds every new socket to this address.
            builder = builder.interface(local);
        }
        let tls = tls::config(config)?;
        let client = builder.build().map_err(|e| {
            Error::new(ErrorKind::Config)
                .with_setting("backend")
                .with_source(e)
        })?;
        let proxy = match &config.proxy {
            Some(proxies) => {
                for p in proxies.proxies() {
                    proxy_uri(p)?;
                }
                Some(Arc::new(proxies.clone()))
            }
            None => None,
        };
        Ok(Self {
            client,
            tls,
            timer: Arc::new(AsyncIoTimer::default()),
            connection_info: config.connection_info,
            proxy,
            in_flight: (config.max_connections_per_origin.is_some()
                || config.max_connections.is_some())
            .then(|| {
                OpenConnections::with_caps(
                    config.max_connections_per_origin,
                    config.max_connections,
                )
            }),
        })
    }
}

/// The static overrides as libcurl's resolve list (`CURLOPT_RESOLVE`, `host:port:address`):
/// libcurl keeps one entry per host and port, so a host with several addresses on one port is
/// refused rather than cut down to its last address.
fn resolve_map(config: &TransportConfig) -> Result<ResolveMap, Error> {
    let mut map = ResolveMap::new();
    for (host, addrs) in &config.dns_overrides {
        let mut ports: Vec<u16> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if ports.contains(&addr.port()) {
                return Err(Error::new(ErrorKind::Config)
                    .with_setting("resolve_to_addrs")
                    .with_source("libcurl's resolve list takes one address per host and port"));
            }
            ports.push(addr.port());
            map = map.add(host, addr.port(), addr.ip());
        }
    }
    Ok(map)
}

/// The proxy's URL as libcurl takes it (`CURLOPT_PROXY`: its scheme says HTTP, HTTPS, SOCKS5
/// with local resolution, or SOCKS5 with the proxy resolving), without credentials: those go
/// through `CURLOPT_PROXYUSERNAME`/`PASSWORD`, so they never sit in a URL.
pub(crate) fn proxy_uri(proxy: &Proxy) -> Result<http::Uri, Error> {
    let host = if proxy.host().contains(':') {
        format!("[{}]", proxy.host())
    } else {
        proxy.host().to_owned()
    };
    format!("{}://{host}:{}", proxy.scheme().as_str(), proxy.port())
        .parse()
        .map_err(|e| {
            Error::new(ErrorKind::Config)
                .with_setting("proxy")
                .with_source(e)
        })
}

impl fmt::Debug for IsahcTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsahcTransport").finish_non_exhaustive()
    }
}

impl Transport for IsahcTransport {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        let client = self.client.clone();
        // keel picks each request's proxy, so `NO_PROXY` matches alike on every backend; a
        // request sent directly has no proxy set, whatever libcurl's environment says.
        let (proxy, forwarded) = match &self.proxy {
            None => (None, false),
            Some(proxies) => match Origin::from_uri(request.uri()) {
                Ok(origin) => (
                    proxies.for_origin(&origin).cloned(),
                    proxies.forwarder(&origin).is_some(),
                ),
                Err(_) => (None, false),
            },
        };
        let in_flight = self
            .in_flight
            .clone()
            .map(|open| (open, request.uri().clone()));
        let request = body::to_isahc_request(request, &self.tls, proxy.as_ref());
        let connection_info = self.connection_info;
        let timer = self.timer.clone();
        Box::pin(async move {
            let request = request?;
            // Within the caps, the transfer waits here, where the attempt's timeout and the
            // call's deadline bound the wait, not in libcurl's queue, where its connect timeout would run down: a burst
            // of 10,000 requests on 50 connections failed with "connect timed out" once the
            // queue took longer than the connect timeout to drain.
            let permit = match in_flight {
                Some((open, uri)) => {
                    Some(open.permit(&Origin::from_uri(&uri)?, &*timer, None).await?)
                }
                None => None,
            };
            let response = match client.send_async(request).await {
                Ok(response) => response,
                Err(e) if proxy.is_some() => return Err(errors::from_proxied_send_error(&e)),
                Err(e) => return Err(errors::from_send_error(&e)),
            };
            if forwarded {
                // libcurl hands over a forwarding proxy's `407` as the response.
                keel_core::proxy::check_forwarded(response.status())?;
            }
            Ok(body::to_keel_response(response, connection_info, permit))
        })
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        &self.timer
    }
}

impl Backend for IsahcTransport {
    const NAME: &'static str = "isahc";

    fn capabilities() -> Capabilities {
        let mut caps = Capabilities::none();
        caps.http2 = isahc::is_http_version_supported(http::Version::HTTP_2);
        caps.http2_prior_knowledge = caps.http2;
        // libcurl's pool limit counts every connection to every host, in use or idle: there is
        // no per-host idle limit to map `pool_max_idle_per_host` onto.
        caps.pool_max_idle_per_host = false;
        // `CURLOPT_MAXAGE_CONN`: a connection idle longer is never reused, and is closed the
        // next time the client runs a transfer.
        caps.pool_idle_timeout = true;
        caps.root_certificates = true;
        caps.disable_built_in_roots = true;
        // libcurl sets TCP_NODELAY on every socket and isahc can only ask for it again.
        caps.disable_tcp_nodelay = false;
        // isahc notices a dropped future or body only at libcurl's next callback, which comes
        // with the server's next byte; each transfer is bounded by the call's deadline instead.
        caps.cancel_in_flight = false;
        caps.uses_call_deadline = true;
        // libcurl writes Host from the URL itself; taken as a custom header it would cost
        // more than it saves.
        caps.derives_host = true;
        // `CURLOPT_RESOLVE` maps a host and a port: an override must name its port, and applies
        // to URLs with that port.
        caps.dns_overrides = true;
        caps.dns_override_any_port = false;
        // libcurl resolves by itself (its threaded resolver) and keeps its own DNS cache: it has
        // no hook for a resolver of keel's, nor for a bounded cache.
        caps.dns_resolver = false;
        caps.dns_cache = false;
        caps.local_address = true;
        // libcurl's primary and local addresses, through isahc's `ResponseExt`.
        caps.connection_addrs = true;
        // isahc exposes neither `CURLINFO_NUM_CONNECTS` nor the easy handle to ask for it:
        // reuse stays unknown rather than guessed from timings.
        caps.connection_reused = false;
        // libcurl's rustls backend reads a client certificate and key from files only
        // (`CURLOPT_SSLCERT`/`CURLOPT_SSLKEY`; the `_BLOB` forms are not honoured), and keel
        // never writes a private key to disk.
        caps.identity = false;
        // `CURLOPT_SSLVERSION`; `CURLOPT_SSL_VERIFYPEER`/`VERIFYHOST` off.
        caps.min_tls_version = true;
        caps.danger_accept_invalid_certs = true;
        // libcurl speaks to HTTP proxies (forwarding, `CONNECT`) and SOCKS5 ones natively.
        // Not to HTTPS ones, through isahc 2.0.2: its proxy TLS configuration sets
        // `CURLOPT_PROXY_SSL_VERIFYPEER` to `danger_accept_invalid_certs` (not its negation),
        // so the proxy's certificate would go unverified (the conformance case caught it: an
        // untrusted proxy was used). Refused by name until isahc verifies it.
        caps.proxy_http = true;
        caps.proxy_socks5 = true;
        caps.proxy_tls = false;
        // libcurl puts a finished transfer's connection back in its cache before isahc ends the
        // body, on isahc's agent thread, whatever runtime the caller is on.
        caps.pool_return_on_body_end = true;
        // libcurl answers with the headers it got when the connection ends mid-head, and
        // keeps an HTTP/2 connection whose transfer timed out (found by the chaos cases).
        caps.truncated_head_detected = false;
        caps.http2_timeout_retires_connection = false;
        // Held in keel and by libcurl; a transfer can still wait inside libcurl (behind one
        // whose body was dropped), where no timeout of keel's can see it, so
        // `pool_acquire_timeout` is refused.
        caps.connection_caps = true;
        caps.connection_cap_evicts_idle = true;
        caps.pool_acquire_timeout = false;
        caps
    }

    fn from_config(config: &TransportConfig) -> Result<Self, Error> {
        Self::new(config)
    }
}

/// The blocking client's driver runs in async-io's `block_on` (which drives the reactor of
/// [`AsyncIoTimer`] while it waits); libcurl's transfers stay on isahc's agent thread.
#[cfg(feature = "blocking")]
impl keel_core::blocking::Runtime for IsahcTransport {
    fn run(driver: keel_core::blocking::Driver) -> std::io::Result<()> {
        async_io::block_on(driver);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_what_libcurl_was_built_with() {
        let caps = IsahcTransport::capabilities();
        assert!(caps.http2, "libcurl was built without nghttp2");
        assert!(caps.http2_prior_knowledge && caps.root_certificates);
        assert!(caps.pool_idle_timeout && !caps.pool_max_idle_per_host);
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let mut config = TransportConfig::default();
        config.tcp_nodelay = false;
        let err = IsahcTransport::new(&config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.setting(), Some("tcp_nodelay"));

        let mut config = TransportConfig::default();
        config.pool_max_idle_per_host = Some(4);
        let err = IsahcTransport::new(&config).unwrap_err();
        assert_eq!(err.setting(), Some("pool_max_idle_per_host"));

        let mut config = TransportConfig::default();
        config.max_connections_per_origin = Some(4);
        config.pool_acquire_timeout = Some(std::time::Duration::from_millis(100));
        let err = IsahcTransport::new(&config).unwrap_err();
        assert_eq!(err.setting(), Some("pool_acquire_timeout"));
    }

    #[test]
    fn builds_with_every_supported_setting() {
        let mut config = TransportConfig::default();
        config.pool_idle_timeout = Some(std::time::Duration::from_secs(5));
        config.http2_prior_knowledge = true;
        config.built_in_roots = false;
        config.max_connections_per_origin = Some(4);
        config.max_connections = Some(16);
        assert!(IsahcTransport::new(&config).is_ok());
    }
}
