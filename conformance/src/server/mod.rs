//! A fault-injecting HTTP/1.1 + HTTP/2 loopback server for the conformance suite.
//!
//! [`TestServer::start`] binds fresh ephemeral ports on `127.0.0.1` and serves
//! them from its own thread and its own tokio runtime, so clients running on
//! any executor can use it. Every server is independent: own listeners, own
//! state, own counters. Dropping the [`TestServer`] shuts it down.
//!
//! # Listeners
//!
//! - **plain** ([`TestServer::url`]): HTTP/1.1 and HTTP/2 with prior
//!   knowledge, detected per connection.
//! - **TLS** ([`TestServer::tls_url`]): the same service behind TLS 1.2/1.3
//!   with ALPN `h2` and `http/1.1`, presenting a self-signed certificate for
//!   `localhost` and `127.0.0.1` generated at start
//!   ([`TestServer::ca_cert_pem`], [`TestServer::ca_cert_der`]).
//! - **mTLS** ([`TestServer::mtls_url`]): TLS that requires a client certificate issued by
//!   the server's client CA ([`TestServer::client_cert_pem`], [`TestServer::client_key_pem`],
//!   [`TestServer::client_pkcs12`]); every request gets 200 with the body `CN=<the client
//!   certificate's common name>`. A handshake without one (or with another) fails.
//! - **TLS 1.2** ([`TestServer::tls12_url`]): the main service behind TLS 1.2 only.
//! - **blackhole** ([`TestServer::blackhole_url`]): accepts TCP connections
//!   and never reads or writes; they stay open until shutdown.
//! - **refused** ([`TestServer::refused_url`]): a port where nothing listens.
//! - **unanswered** ([`TestServer::unanswered_url`]): a port whose connects are never
//!   answered (a full accept queue: the kernel drops the SYNs), for connect timeouts on plain
//!   TCP.
//! - **TLS faults** ([`TestServer::tls_fault_url`]): a new TLS listener per call presenting a
//!   chosen certificate ([`FaultCert`]: valid, another host's name, expired) from a test CA
//!   made for the case ([`FaultPki`]), serving the routes below.
//! - **HTTP/2 faults** ([`TestServer::h2_fault_url`]): a new hand-written HTTP/2 server per
//!   call, behind TLS with ALPN `h2`, that misbehaves as told ([`H2Fault`]: GOAWAY below a
//!   stream in flight, RST_STREAM `REFUSED_STREAM`, no flow-control window).
//! - **raw** ([`TestServer::raw_url`]): a new listener per call that answers
//!   every connection with fixed bytes, for wire-level faults. What each raw
//!   connection sent before it was answered is kept
//!   ([`TestServer::raw_requests`]), for checks of the bytes on the wire.
//! - **raw conversation** ([`TestServer::raw_conversation`]): a new listener per call that
//!   reads request after request on kept-alive connections and answers each with scripted
//!   bytes ([`RawReply`]), counting connections, requests per connection and complete
//!   requests ([`RawConversation`]), for faults that matter on a reused connection.
//!
//! # Routes (plain and TLS)
//!
//! Every route accepts any method. Unknown paths get 404; malformed
//! parameters get 400 with a text body saying why.
//!
//! - `/status/{code}?body=<text>&header=Name:Value&header=...` — that status
//!   (`200..=999`; informational codes are rejected with 400), the given body
//!   (default empty) and headers (repeatable, e.g. `header=Retry-After:1`).
//! - `/delay/{ms}` — sleeps `ms` milliseconds before the head, then 200 with
//!   the body `delayed`.
//! - `/stall?bytes=N` — 200 with `Content-Length: 1000000`, the first `N`
//!   bytes (default 0, at most 1000000) of the `/bytes` pattern, then nothing
//!   more until the client goes away or the server shuts down.
//! - `/drip?chunk=N&interval_ms=T&count=K` — 200, chunked (no
//!   `Content-Length`), `K` chunks of `N` bytes `x`, one every `T` ms, the first
//!   immediately. Defaults: `chunk=1`, `interval_ms=100`, `count=10`; `chunk`
//!   is at most 16 MiB.
//! - `/bytes/{n}` — 200 with `Content-Length: n` and `n` bytes where byte `i`
//!   is `(i % 251) as u8`, streamed lazily in 64 KiB chunks (any `u64`).
//! - `/reset?after=N` — 200 with `Content-Length: 2*N+1000`, `N` pattern bytes
//!   (default 0), then (after a 50 ms pause so the bytes are flushed) the body
//!   fails: on HTTP/1.1 hyper closes the connection, on HTTP/2 it resets the
//!   stream with `INTERNAL_ERROR`.
//! - `/wrong-length?declared=D&actual=A` — 200 with `Content-Length: D` and a
//!   streamed body of `A` pattern bytes (both parameters required). What the
//!   client sees, given hyper's behaviour:
//!   - HTTP/1.1, `A < D`: the head and `A` bytes, then the connection is
//!     closed (hyper refuses to end a short body and aborts the connection):
//!     a truncated body.
//!   - HTTP/1.1, `A > D`: hyper silently truncates the body to `D` bytes and
//!     keeps the connection alive, so the client sees a *correct* response of
//!     `D` bytes. An overlong HTTP/1.1 body is only possible with
//!     [`TestServer::raw_url`], which covers every precise wire-level case.
//!   - HTTP/2: hyper sends the header and the `A` bytes as they are, and
//!     the `h2` client (as used by hyper) rejects the mismatch as a stream
//!     protocol error: with `A < D` the body fails after `A` bytes; with
//!     `A > D` the body fails before any bytes are delivered (the
//!     overflowing DATA frame is refused).
//! - `/encoded/{coding}?bytes=N&truncate=K` — 200 with `Content-Encoding` and the first `N`
//!   bytes (default 1000, at most 16 MiB) of [`encoded_sample`] compressed in `coding`:
//!   `gzip`, `deflate` (zlib), `deflate-raw` (raw deflate, sent as `deflate`), `br` or
//!   `zstd` (others get 404). `truncate=K` drops the last `K` bytes of the compressed body
//!   (the `Content-Length` says what is sent: the HTTP framing is right, the compressed
//!   stream is cut short). Streamed in 64 KiB chunks with `Content-Length`.
//! - `/bomb?mib=N` — 200 with `Content-Encoding: gzip` and a gzip body that decodes to `N`
//!   MiB of zeros (default 1024, at most 4096) in about `N` KiB, with `Content-Length`;
//!   made in microseconds whatever `N` (see the `encoded` module).
//! - `/echo` — 200, `Content-Type: application/json`, a JSON object
//!   `{"method","path","query" (string or null),"headers" (lowercase name →
//!   array of all values, in order),"body" (UTF-8, lossy),"body_len","version"
//!   ("HTTP/1.1" or "HTTP/2.0")}`. The request body is read fully, up to
//!   64 MiB; larger bodies get 413.
//! - `/script/{name}` — the replies registered with [`TestServer::script`];
//!   unknown names get 404.
//! - `/redirect/{status}?to=<target>` — that 3xx status (others get 400),
//!   `Location: <target>` exactly as given after percent-decoding (relative or
//!   absolute, any string a header value can hold), and an empty body. The
//!   request body is read and discarded first (up to 64 MiB).
//! - `/chain/{n}` — 302 with `Location: /chain/{n-1}`; `/chain/0` is 200 with
//!   the body `end`. `/chain/{n}` takes `n` hops to reach the end.
//! - `/loop/a` and `/loop/b` — 302 to each other, forever.
//! - `/multipart/echo` — a `multipart/form-data` request parsed with `multer`, answered
//!   as JSON: `{"framing": {"content_type","content_length","transfer_encoding"} (the
//!   request's headers, or null), "fields": [{"name","file_name","content_type",
//!   "headers" (name → value),"size","sha256" (hex),"text" (the content, when it is UTF-8
//!   and at most 64 KiB, else null)}]}`. A form `multer` refuses gets 400 saying why.
//! - `/multipart/digest/{key}?abort_first_after=N` — the same parse with no content kept:
//!   `{"attempt" (requests to this path so far, this one included),"framing","fields":
//!   [{"name","file_name","size","sha256"}]}`, for uploads of any size. With
//!   `abort_first_after`, the first request to the path is read for `N` bytes, and then the
//!   connection is dropped without an answer (HTTP/1.1; on HTTP/2 the stream is reset).
//!
//! Every request is counted (see [`TestServer::requests`] and friends) before
//! it is answered.
//!
//! # Gauges
//!
//! Besides the counts, the server keeps, for the plain and TLS listeners:
//!
//! - when each request arrived ([`TestServer::arrivals`]): the instant its
//!   head had been read, on the monotonic clock every thread shares, so a case
//!   can compare it with its own `Instant`s, and [`most_within`] finds the
//!   most requests in any stretch of time;
//! - how many requests were in flight at once ([`TestServer::in_flight`],
//!   [`TestServer::peak_in_flight`]). A request is in flight from when its
//!   head has been read until hyper has taken the last byte of its response
//!   body (a `/delay/{ms}` request is in flight during its delay), or until
//!   hyper drops the request unanswered: when the connection fails or the
//!   stream is reset, or at shutdown. Bytes hyper has taken may still sit in
//!   its write buffer, about to be flushed; a body that never ends (`/stall`)
//!   keeps its request in flight until the client goes away;
//! - the most connections open at once ([`TestServer::peak_open_connections`]), counted from
//!   accept until the server has seen the close.
//!
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use keel_conformance::server::{Reply, TestServer};
//!
//! let server = TestServer::start()?;
//! let path = server.script("flaky", vec![Reply::status(503), Reply::status(200)]);
//! assert_eq!(path, "/script/flaky");
//! assert!(server.url(&path).starts_with("http://127.0.0.1:"));
//!
//! // Any HTTP client works; here, raw HTTP/1.1 over a std socket.
//! let addr = server.url("").trim_start_matches("http://").to_owned();
//! let mut socket = std::net::TcpStream::connect(addr)?;
//! socket.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
//! socket.write_all(b"GET /script/flaky HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
//! let mut answer = String::new();
//! socket.read_to_string(&mut answer)?;
//! assert!(answer.starts_with("HTTP/1.1 503"));
//! assert_eq!(server.requests_to("/script/flaky"), 1);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Version;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

mod conversation;
mod encoded;
mod h2faults;
mod multipart;
mod netfaults;
pub mod proxy;
mod routes;
mod tls;

#[cfg(test)]
mod tests;

pub use conversation::{RawConversation, RawReply};
pub use encoded::encoded_sample;
pub use h2faults::{H2Fault, H2FaultServer, NO_WINDOW_GRANT};
pub use netfaults::{FaultCert, FaultPki};
pub use routes::Reply;

/// How long `Drop` waits for the server thread before detaching it.
const DROP_WAIT: Duration = Duration::from_secs(2);

/// How long a server thread lets its runtime wind down after shutdown.
pub(crate) const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

/// Raw listeners stop reading a request head after this many bytes…
const RAW_HEAD_LIMIT: usize = 64 * 1024;

/// …or after this long.
const RAW_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// After answering and half-closing, raw listeners drain the client's bytes
/// this long at most (closing with unread bytes would send a reset, which can
/// destroy the answer before the client reads it).
const RAW_LINGER: Duration = Duration::from_secs(2);

/// A running fault-injecting loopback server; see the [module docs](self).
///
/// Shut down (all listeners closed, all connections dropped, the server
/// thread joined) when dropped. Dropping never hangs: if the thread does not
/// finish within about 2 s it is detached.
pub struct TestServer {
    plain_port: u16,
    tls_port: u16,
    mtls_port: u16,
    tls12_port: u16,
    blackhole_port: u16,
    refused_port: u16,
    /// Bound but never listening: keeps `refused_port` taken (so nothing else
    /// starts listening there, and no client socket gets it as its own
    /// ephemeral port) while connecting to it is refused.
    _refused: TcpSocket,
    cert_pem: String,
    cert_der: Vec<u8>,
    client: tls::ClientPki,
    state: Arc<State>,
    runtime: tokio::runtime::Handle,
    shutdown: watch::Sender<bool>,
    /// Disconnected when the server thread has finished.
    finished: Mutex<mpsc::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the listeners share with the [`TestServer`].
#[derive(Debug, Default)]
struct State {
    /// Plain + TLS connections still being served.
    open: AtomicUsize,
    /// The most plain + TLS connections served at once, so far.
    peak_open: AtomicUsize,
    /// One request counter per accepted plain/TLS connection, in accept order.
    connections: Mutex<Vec<Arc<AtomicUsize>>>,
    /// Every request, and when each was in flight.
    log: Mutex<Log>,
    /// Scripts by name.
    scripts: Mutex<HashMap<String, routes::Script>>,
    /// What each raw connection received before it was answered, in answer order.
    raw_requests: Mutex<Vec<Bytes>>,
}

/// The requests the plain and TLS listeners received, and when each was in
/// flight.
#[derive(Debug, Default)]
struct Log {
    /// Every request, in arrival order.
    requests: Vec<Record>,
    /// Each request going into flight (`true`) and out of it (`false`), by
    /// its index in `requests`, in the order that happened.
    flights: Vec<(usize, bool)>,
}

/// One request, as it arrived.
#[derive(Debug)]
struct Record {
    /// The path, without the query.
    path: String,
    version: Version,
    /// When its head had been read.
    arrived: Instant,
}

impl Log {
    /// Records a request that has just arrived, and puts it in flight.
    fn arrive(&mut self, path: String, version: Version) -> usize {
        let index = self.requests.len();
        self.requests.push(Record {
            path,
            version,
            arrived: Instant::now(),
        });
        self.flights.push((index, true));
        index
    }

    /// Requests whose path starts with `prefix` in flight now, and at most
    /// at once so far.
    fn in_flight(&self, prefix: &str) -> (usize, usize) {
        let (mut now, mut peak) = (0usize, 0);
        for &(index, start) in &self.flights {
            if !self.requests[index].path.starts_with(prefix) {
                continue;
            }
            if start {
                now += 1;
                peak = peak.max(now);
            } else {
                now -= 1;
            }
        }
        (now, peak)
    }
}

/// A request in flight: taken out of flight when dropped, which happens when
/// its response body has ended or when hyper drops the request or its body
/// unfinished.
struct InFlight {
    state: Arc<State>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.state.log).flights.push((self.index, false));
    }
}

/// A response body that keeps its request in flight until it has handed
/// hyper its last frame (or is dropped). Otherwise the inner body, as is:
/// same frames, same size hint, same end.
struct Tracked {
    body: routes::ResBody,
    in_flight: Option<InFlight>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = routes::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, routes::BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            this.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Locks a mutex, ignoring poisoning (the data stays consistent: every
/// critical section is a single push, lookup or update).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Decrements the open-connection count when a connection task ends.
struct OpenGuard(Arc<State>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything an accept loop for the plain or TLS listener needs.
#[derive(Clone)]
struct Serve {
    state: Arc<State>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
}

impl TestServer {
    /// Starts the server: a plain listener (HTTP/1.1 and HTTP/2 with prior
    /// knowledge, detected automatically), a TLS listener (ALPN `h2` and
    /// `http/1.1`, with a self-signed certificate generated now for
    /// `localhost` and `127.0.0.1`), and a blackhole listener that accepts
    /// TCP connections and never reads or writes (holding them open until
    /// shutdown). All on fresh ephemeral ports of `127.0.0.1`, served from a
    /// new thread with its own tokio runtime.
    ///
    /// Can be called from inside any async runtime.
    ///
    /// # Errors
    ///
    /// If binding a port, generating the certificate, building the TLS
    /// configuration or starting the thread or its runtime fails.
    pub fn start() -> io::Result<TestServer> {
        let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let plain = bind_std(localhost)?;
        let secure = bind_std(localhost)?;
        let blackhole = bind_std(localhost)?;
        let mtls = bind_std(localhost)?;
        let tls12 = bind_std(localhost)?;
        let refused = TcpSocket::new_v4()?;
        refused.bind(localhost)?;

        let plain_port = plain.local_addr()?.port();
        let tls_port = secure.local_addr()?.port();
        let blackhole_port = blackhole.local_addr()?.port();
        let mtls_port = mtls.local_addr()?.port();
        let tls12_port = tls12.local_addr()?.port();
        let refused_port = refused.local_addr()?.port();

        let tls = tls::generate()?;
        let acceptor = TlsAcceptor::from(tls.config);
        let mtls_acceptor = TlsAcceptor::from(tls.extra.mtls);
        let tls12_acceptor = TlsAcceptor::from(tls.extra.tls12);
        let client_der = tls.extra.client.cert_der.clone();
        let state = Arc::new(State::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let serve = Serve {
            state: Arc::clone(&state),
            builder: Arc::new(auto::Builder::new(TokioExecutor::new())),
            shutdown: shutdown_rx,
        };

        let ServerThread {
            thread,
            handle: runtime,
            finished: finished_rx,
        } = serve_on_thread(format!("keel-test-server-{plain_port}"), move || {
            let plain = TcpListener::from_std(plain)?;
            let secure = TcpListener::from_std(secure)?;
            let blackhole = TcpListener::from_std(blackhole)?;
            let mtls = TcpListener::from_std(mtls)?;
            let tls12 = TcpListener::from_std(tls12)?;
            let mut shutdown = serve.shutdown.clone();
            tokio::spawn(accept_http(plain, None, serve.clone()));
            tokio::spawn(accept_http(secure, Some(acceptor), serve.clone()));
            tokio::spawn(accept_blackhole(blackhole, serve.shutdown.clone()));
            tokio::spawn(accept_mtls(mtls, mtls_acceptor, client_der, serve.clone()));
            tokio::spawn(accept_http(tls12, Some(tls12_acceptor), serve));
            // Then the runtime drops every task still running: stalled streams, held
            // connections, accept loops.
            Ok(async move { wait_shutdown(&mut shutdown).await })
        })?;

        Ok(TestServer {
            plain_port,
            tls_port,
            mtls_port,
            tls12_port,
            blackhole_port,
            refused_port,
            _refused: refused,
            cert_pem: tls.cert_pem,
            cert_der: tls.cert_der,
            client: tls.extra.client,
            state,
            runtime,
            shutdown,
            finished: Mutex::new(finished_rx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:{plain_port}{path}`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.plain_port)
    }

    /// `https://localhost:{tls_port}{path}`; `path` should start with `/`.
    ///
    /// Trust [`ca_cert_pem`](Self::ca_cert_pem) (or the DER form) to connect.
    pub fn tls_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls_port)
    }

    /// `https://localhost:{mtls_port}{path}`: TLS that requires a client certificate issued by
    /// the server's client CA ([`client_cert_pem`](Self::client_cert_pem) and
    /// [`client_key_pem`](Self::client_key_pem), or [`client_pkcs12`](Self::client_pkcs12)).
    /// Every request gets 200 with the body `CN=<the client certificate's common name>`. The
    /// server certificate is the one of [`tls_url`](Self::tls_url).
    pub fn mtls_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.mtls_port)
    }

    /// `https://localhost:{tls12_port}{path}`: the routes of [`tls_url`](Self::tls_url) (same
    /// certificate, counted alike) over TLS 1.2 only.
    pub fn tls12_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls12_port)
    }

    /// The client certificate the [`mtls_url`](Self::mtls_url) listener accepts, PEM. Its
    /// common name is in [`client_cn`](Self::client_cn).
    pub fn client_cert_pem(&self) -> String {
        self.client.cert_pem.clone()
    }

    /// The private key of [`client_cert_pem`](Self::client_cert_pem), PKCS#8 PEM.
    pub fn client_key_pem(&self) -> String {
        self.client.key_pem.clone()
    }

    /// The client certificate and its key as a PKCS#12 archive, and its password.
    pub fn client_pkcs12(&self) -> (Vec<u8>, &'static str) {
        (self.client.pkcs12.clone(), tls::PKCS12_PASSWORD)
    }

    /// A self-signed client certificate with the same common name and its key (PEM): not
    /// issued by the client CA, so the mTLS listener refuses it.
    pub fn stranger_cert_and_key_pem(&self) -> (String, String) {
        (
            self.client.stranger_cert_pem.clone(),
            self.client.stranger_key_pem.clone(),
        )
    }

    /// The common name of [`client_cert_pem`](Self::client_cert_pem).
    pub fn client_cn(&self) -> &'static str {
        tls::CLIENT_CN
    }

    /// `https://127.0.0.1:{blackhole_port}{path}`: connections are accepted,
    /// then nothing is ever read or written (connect succeeds, the TLS
    /// handshake or the request never completes).
    pub fn blackhole_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.blackhole_port)
    }

    /// `http://127.0.0.1:{port}{path}` for a port where nothing listens, so
    /// connecting is refused. The port stays reserved (bound, never
    /// listening) for the life of the server, so it cannot be reused meanwhile.
    pub fn refused_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.refused_port)
    }

    /// The server's self-signed certificate, PEM-encoded. It is its own
    /// root: add it as the only trust anchor.
    pub fn ca_cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The server's self-signed certificate, DER-encoded.
    pub fn ca_cert_der(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    /// Registers a scripted sequence at path `/script/{name}`: the n-th
    /// request to it gets the n-th reply; after the last one the last reply
    /// repeats. Registering a name again replaces its script and restarts
    /// the sequence. An empty script answers 500.
    ///
    /// Returns the path, `/script/{name}` (pass it to [`url`](Self::url) or
    /// [`tls_url`](Self::tls_url)). `name` should be URL-path-safe; the
    /// request path is percent-decoded before it is matched.
    pub fn script(&self, name: &str, replies: Vec<Reply>) -> String {
        lock(&self.state.scripts).insert(name.to_owned(), routes::Script::new(replies));
        format!("/script/{name}")
    }

    /// A raw TCP endpoint on a new listener: on each connection the server
    /// reads until the end of the request head (`\r\n\r\n`, at most 64 KiB
    /// or 5 s), writes `bytes` verbatim, then closes the connection (it
    /// half-closes, then discards whatever the client still sends for up to
    /// 2 s so the close does not turn into a reset). With `hold_open`, it
    /// instead keeps the connection open without writing more until shutdown.
    ///
    /// The bytes each connection sent before it was answered are kept: see
    /// [`raw_requests`](Self::raw_requests).
    ///
    /// Returns `http://127.0.0.1:{port}/`.
    ///
    /// # Panics
    ///
    /// If no port can be bound on `127.0.0.1`.
    pub fn raw_url(&self, bytes: impl Into<Vec<u8>>, hold_open: bool) -> String {
        let listener = bind_std(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("keel test server: cannot bind a raw listener on 127.0.0.1");
        let port = listener
            .local_addr()
            .expect("keel test server: raw listener has no local address")
            .port();
        let bytes = Bytes::from(bytes.into());
        let shutdown = self.shutdown.subscribe();
        let state = Arc::clone(&self.state);
        // If the server is already shutting down the task never runs and the
        // listener is dropped: connections are then refused.
        self.runtime.spawn(async move {
            if let Ok(listener) = TcpListener::from_std(listener) {
                accept_raw(listener, bytes, hold_open, state, shutdown).await;
            }
        });
        format!("http://127.0.0.1:{port}/")
    }

    /// What each connection to a raw listener ([`raw_url`](Self::raw_url),
    /// any of them) sent before it was answered: the request head as it
    /// arrived on the wire, up to and including its blank line (plus any
    /// bytes that came in the same read), in the order the connections were
    /// answered.
    pub fn raw_requests(&self) -> Vec<Bytes> {
        lock(&self.state.raw_requests).clone()
    }

    /// TCP connections accepted on the plain and TLS listeners (not the
    /// blackhole or raw ones), whether or not the TLS handshake succeeded.
    pub fn connections_accepted(&self) -> usize {
        lock(&self.state.connections).len()
    }

    /// Of [`connections_accepted`](Self::connections_accepted), how many are
    /// still open (a connection counts until its serving task ends).
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// The most of [`open_connections`](Self::open_connections) at once, so far: counted
    /// when a connection is accepted, so a client that closes one connection and opens the
    /// next counts both until the server has seen the close.
    pub fn peak_open_connections(&self) -> usize {
        self.state.peak_open.load(Ordering::SeqCst)
    }

    /// How many requests each accepted plain/TLS connection carried, one
    /// entry per connection in accept order.
    pub fn requests_per_connection(&self) -> Vec<usize> {
        lock(&self.state.connections)
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect()
    }

    /// Total HTTP requests received on the plain and TLS listeners (each is
    /// counted before it is answered).
    pub fn requests(&self) -> usize {
        lock(&self.state.log).requests.len()
    }

    /// Requests whose path (without the query) equals `path`.
    pub fn requests_to(&self, path: &str) -> usize {
        lock(&self.state.log)
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// The HTTP version of each request, in the order they arrived.
    pub fn versions(&self) -> Vec<Version> {
        lock(&self.state.log)
            .requests
            .iter()
            .map(|r| r.version)
            .collect()
    }

    /// When each request whose path (without the query) equals `path`
    /// arrived: the instant its head had been read, in arrival order.
    ///
    /// [`most_within`] gives the most that arrived in any stretch of time.
    pub fn arrivals(&self, path: &str) -> Vec<Instant> {
        lock(&self.state.log)
            .requests
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.arrived)
            .collect()
    }

    /// Requests whose path (without the query) starts with `prefix` that are
    /// in flight now (`""` counts every path); see the
    /// [module docs](self#gauges) for what counts as in flight.
    pub fn in_flight(&self, prefix: &str) -> usize {
        lock(&self.state.log).in_flight(prefix).0
    }

    /// The most requests whose path (without the query) starts with `prefix`
    /// that were in flight at once, so far (`""` counts every path). For
    /// example, `peak_in_flight("/delay/")` is the most `/delay/{ms}`
    /// requests the server was delaying at once.
    pub fn peak_in_flight(&self, prefix: &str) -> usize {
        lock(&self.state.log).in_flight(prefix).1
    }

    /// Polls every 10 ms (blocking the calling thread) until
    /// [`open_connections`](Self::open_connections) equals `n` or `timeout`
    /// passes; returns whether it got there.
    pub fn wait_for_open_connections(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.open_connections() == n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("plain_port", &self.plain_port)
            .field("tls_port", &self.tls_port)
            .field("blackhole_port", &self.blackhole_port)
            .field("refused_port", &self.refused_port)
            .field("connections_accepted", &self.connections_accepted())
            .field("open_connections", &self.open_connections())
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // `send_replace` stores the value even when no receiver is left.
        self.shutdown.send_replace(true);
        let finished = self
            .finished
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        match finished.recv_timeout(DROP_WAIT) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            // Still busy: detach rather than hang.
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// The most of `instants` that fall in any stretch of time `span` long, both
/// ends included: the largest count of instants `t` with `from <= t <= from +
/// span`, over every `from`. The instants may come in any order.
///
/// ```
/// use std::time::{Duration, Instant};
/// use keel_conformance::server::most_within;
///
/// let t0 = Instant::now();
/// let ms = Duration::from_millis;
/// let times = [t0, t0 + ms(10), t0 + ms(100), t0 + ms(30)];
/// assert_eq!(most_within(&times, ms(20)), 2);
/// assert_eq!(most_within(&times, ms(30)), 3);
/// assert_eq!(most_within(&times, ms(100)), 4);
/// assert_eq!(most_within(&[], ms(100)), 0);
/// ```
pub fn most_within(instants: &[Instant], span: Duration) -> usize {
    let mut sorted = instants.to_vec();
    sorted.sort_unstable();
    // Two pointers: for each last instant, the first one within `span` before it.
    let mut first = 0;
    let mut most = 0;
    for (last, &t) in sorted.iter().enumerate() {
        // `checked_add` fails only for a span past the end of time: then all fit.
        while sorted[first].checked_add(span).is_some_and(|end| end < t) {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

/// How many connections a listener queues before it accepts them. std's 128 overflows under a
/// storm of connects (the cancellation storm keeps hundreds opening at once); the kernel caps
/// it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// Binds a non-blocking std listener (tokio adopts it on the server thread).
fn bind_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let listener: std::net::TcpListener = socket.into();
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Resolves once shutdown is signalled (or the [`TestServer`] is gone).
/// A loopback server's thread: a current-thread tokio runtime of its own.
pub(crate) struct ServerThread {
    pub(crate) thread: JoinHandle<()>,
    /// The runtime's handle, for spawning on it from outside.
    pub(crate) handle: tokio::runtime::Handle,
    /// Disconnected once the thread has finished (its runtime shut down).
    pub(crate) finished: mpsc::Receiver<()>,
}

/// Starts the thread `name` with a current-thread tokio runtime. `start` runs inside the
/// runtime (it turns std listeners into tokio ones and spawns the accept loops) and returns
/// the future that lasts until the server stops; then the runtime drops the tasks still
/// running, within [`RUNTIME_SHUTDOWN`]. Returns once `start` has succeeded, or with its
/// error (or the runtime's).
pub(crate) fn serve_on_thread<F, Fut>(name: String, start: F) -> io::Result<ServerThread>
where
    F: FnOnce() -> io::Result<Fut> + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<tokio::runtime::Handle>>();
    let (finished_tx, finished) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            // Dropped when this thread's work is done: the owner sees the channel disconnect.
            let _finished = finished_tx;
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let until = {
                let _context = runtime.enter();
                match start() {
                    Ok(until) => until,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
            };
            let _ = ready_tx.send(Ok(runtime.handle().clone()));
            runtime.block_on(until);
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
        })?;
    match ready_rx.recv() {
        Ok(Ok(handle)) => Ok(ServerThread {
            thread,
            handle,
            finished,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::other(format!("{name} failed to start"))),
    }
}

async fn wait_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts the next connection, or `None` on shutdown. Transient accept
/// errors (e.g. too many open files) are retried after a short pause.
async fn accept(listener: &TcpListener, shutdown: &mut watch::Receiver<bool>) -> Option<TcpStream> {
    loop {
        tokio::select! {
            () = wait_shutdown(shutdown) => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => return Some(stream),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// The accept loop of the plain (`tls: None`) or TLS listener.
async fn accept_http(listener: TcpListener, tls: Option<TlsAcceptor>, serve: Serve) {
    let mut shutdown = serve.shutdown.clone();
    while let Some(stream) = accept(&listener, &mut shutdown).await {
        let _ = stream.set_nodelay(true);
        let requests = Arc::new(AtomicUsize::new(0));
        lock(&serve.state.connections).push(Arc::clone(&requests));
        let now_open = serve.state.open.fetch_add(1, Ordering::SeqCst) + 1;
        serve.state.peak_open.fetch_max(now_open, Ordering::SeqCst);
        let guard = OpenGuard(Arc::clone(&serve.state));
        let serve = serve.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _guard = guard;
            match tls {
                None => serve_connection(stream, requests, serve).await,
                Some(acceptor) => {
                    let mut shutdown = serve.shutdown.clone();
                    let handshake = tokio::select! {
                        () = wait_shutdown(&mut shutdown) => return,
                        handshake = acceptor.accept(stream) => handshake,
                    };
                    // A failed handshake just drops the connection.
                    if let Ok(stream) = handshake {
                        serve_connection(stream, requests, serve).await;
                    }
                }
            }
        });
    }
}

/// The accept loop of the mTLS listener: after the handshake (which rustls fails without a
/// certificate from the client CA), every request gets 200 and `CN=<name>` for the client
/// certificate the server issued, or `CN=?` for any other (none can pass the handshake).
///
/// A failed handshake is closed politely: write side first, then what the client still sends
/// is read and dropped for a while, so the alert reaches the client rather than a reset (with
/// TLS 1.3 the client may have sent its request already).
async fn accept_mtls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    client_der: Vec<u8>,
    serve: Serve,
) {
    let mut shutdown = serve.shutdown.clone();
    let client_der = Arc::new(client_der);
    while let Some(stream) = accept(&listener, &mut shutdown).await {
        let _ = stream.set_nodelay(true);
        let serve = serve.clone();
        let acceptor = acceptor.clone();
        let client_der = Arc::clone(&client_der);
        tokio::spawn(async move {
            let mut shutdown = serve.shutdown.clone();
            let handshake = tokio::select! {
                () = wait_shutdown(&mut shutdown) => return,
                handshake = acceptor.accept(stream).into_fallible() => handshake,
            };
            let stream = match handshake {
                Ok(stream) => stream,
                Err((_, mut tcp)) => {
                    let _ = tcp.shutdown().await;
                    let mut sink = [0u8; 4096];
                    let _ = tokio::time::timeout(RAW_LINGER, async {
                        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
                    })
                    .await;
                    return;
                }
            };
            let seen = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .is_some_and(|cert| cert.as_ref() == client_der.as_slice());
            let body = if seen {
                format!("CN={}", tls::CLIENT_CN)
            } else {
                "CN=?".to_owned()
            };
            let service = service_fn(move |_req: http::Request<Incoming>| {
                let body = body.clone();
                async move {
                    Ok::<_, io::Error>(http::Response::new(http_body_util::Full::new(Bytes::from(
                        body,
                    ))))
                }
            });
            let connection = serve
                .builder
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = wait_shutdown(&mut shutdown) => {}
                _ = connection => {}
            }
        });
    }
}

/// Serves HTTP/1.1 (keep-alive) or HTTP/2 (multiplexed) on one connection
/// until the client closes it, it fails, or shutdown.
async fn serve_connection<I>(io: I, requests: Arc<AtomicUsize>, serve: Serve)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Serve {
        state,
        builder,
        mut shutdown,
    } = serve;
    let service = service_fn(move |req: http::Request<Incoming>| {
        let state = Arc::clone(&state);
        let requests = Arc::clone(&requests);
        async move {
            requests.fetch_add(1, Ordering::SeqCst);
            let index = lock(&state.log).arrive(req.uri().path().to_owned(), req.version());
            // Dropped with this future if hyper drops it before the response is ready.
            let in_flight = InFlight {
                state: Arc::clone(&state),
                index,
            };
            // An `Err` makes hyper drop the connection (HTTP/1.1) or reset the stream (HTTP/2).
            let response = routes::respond(req, &state).await?;
            Ok::<_, multipart::Aborted>(response.map(|body| Tracked {
                body,
                in_flight: Some(in_flight),
            }))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = connection => {}
        () = wait_shutdown(&mut shutdown) => {}
    }
}

/// The blackhole: accepts and holds connections, never reading or writing.
async fn accept_blackhole(listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    while let Some(stream) = accept(&listener, &mut shutdown).await {
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _held = stream;
            wait_shutdown(&mut shutdown).await;
        });
    }
}

/// A raw listener: every connection gets `bytes` after its request head.
async fn accept_raw(
    listener: TcpListener,
    bytes: Bytes,
    hold_open: bool,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some(stream) = accept(&listener, &mut shutdown).await {
        let mut shutdown = shutdown.clone();
        let bytes = bytes.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            tokio::select! {
                () = raw_exchange(stream, bytes, hold_open, &state) => {}
                () = wait_shutdown(&mut shutdown) => {}
            }
        });
    }
}

/// One raw connection: read the head (and keep it), write `bytes`, then close
/// or hold.
async fn raw_exchange(mut stream: TcpStream, bytes: Bytes, hold_open: bool, state: &State) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut head = Vec::new();
    let read_head = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let from = head.len().saturating_sub(3);
                    head.extend_from_slice(&buf[..n]);
                    let complete = head[from..].windows(4).any(|w| w == b"\r\n\r\n");
                    if complete || head.len() >= RAW_HEAD_LIMIT {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(RAW_HEAD_TIMEOUT, read_head).await;
    if !head.is_empty() {
        lock(&state.raw_requests).push(Bytes::from(head));
    }

    if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    if hold_open {
        std::future::pending::<()>().await;
    }
    let _ = stream.shutdown().await;
    let drain = async { while let Ok(1..) = stream.read(&mut buf).await {} };
    let _ = tokio::time::timeout(RAW_LINGER, drain).await;
}
