//! A chaos proxy: a loopback TCP byte pipe placed in front of one of the
//! [`TestServer`]'s listeners that delays, throttles, cuts into 1-byte segments, stalls,
//! resets or closes the bytes going one way or the other.
//!
//! The proxy never looks into the bytes: in front of the plain listener it carries HTTP/1.1
//! (or HTTP/2 with prior knowledge), in front of the TLS listener it carries the TLS records
//! as they are (the client still talks TLS to the server, and ALPN picks HTTP/1.1 or HTTP/2).
//! So one fault applies alike to plain HTTP/1.1, TLS and HTTP/2.
//!
//! [`ChaosProxy::start`] binds an ephemeral port of `127.0.0.1` and serves it from its own
//! thread and tokio runtime, like the test server, so clients on any executor can use it.
//! Every accepted connection is piped to a new connection to the target. A [`Chaos`] says
//! which [`Fault`] applies in each [`Direction`], and, optionally, to how many connections
//! (the first `k` accepted; later ones are clean pipes, so a retry on a fresh connection can
//! succeed).
//!
//! Faults that end a connection ([`Fault::Reset`], [`Fault::Close`]) end both sides of it
//! whichever direction they count: the client sees its connection reset or closed, and the
//! proxy drops its connection to the server. A [`Fault::Stall`] keeps both sockets open and
//! stops forwarding in its direction (the other direction goes on) until the client goes away
//! or the proxy shuts down. When a side of the pipe fails on its own (the server resets its
//! connection, say), the proxy resets the other side; a clean end of stream (FIN) is passed on
//! as one.
//!
//! ```
//! use std::io::{Read, Write};
//! use keel_conformance::chaos::{Chaos, ChaosProxy, Fault};
//! use keel_conformance::server::TestServer;
//!
//! let server = TestServer::start()?;
//! // The first 12 bytes of the answer pass ("HTTP/1.1 200"), then the connection closes.
//! let proxy = ChaosProxy::in_front_of_plain(&server, Chaos::to_client(Fault::Close { after: 12 }))?;
//! let addr = proxy.url("").trim_start_matches("http://").to_owned();
//! let mut socket = std::net::TcpStream::connect(addr)?;
//! socket.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
//! socket.write_all(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")?;
//! let mut answer = Vec::new();
//! socket.read_to_end(&mut answer)?;
//! assert_eq!(answer, b"HTTP/1.1 200");
//! assert_eq!((proxy.connections_accepted(), proxy.faults_fired()), (1, 1));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::server::{serve_on_thread, ServerThread, TestServer};

/// After a [`Fault::Close`], the proxy reads and drops what the client still sends for this
/// long at most, so the close stays a clean FIN (closing a socket with unread bytes would
/// send a reset instead).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Which way the bytes a fault applies to travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the server: the request (and the client's half of the TLS
    /// handshake, HTTP/2 settings and window updates).
    ToServer,
    /// From the server to the client: the response (and the server's half of the TLS
    /// handshake, HTTP/2 settings).
    ToClient,
}

/// What the proxy does to the bytes going one way.
///
/// Byte counts (`after`) are of the bytes on the wire in that direction, TLS records and
/// HTTP/2 frames included: the first `after` bytes pass, and the fault strikes when byte
/// `after + 1` arrives at the proxy (a stream of exactly `after` bytes is never struck).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Forward the bytes as they come.
    #[default]
    None,
    /// Latency: wait `first_byte` before forwarding the first bytes, and `per_chunk` before
    /// forwarding every chunk read (the first one included).
    Delay {
        /// The wait before the first bytes go on.
        first_byte: Duration,
        /// The wait before each chunk goes on.
        per_chunk: Duration,
    },
    /// Bandwidth: at most `bytes_per_second` on average from the first byte on, written in
    /// pieces of a twentieth of a second's worth (at least one byte).
    Throttle {
        /// The bandwidth; 0 counts as 1.
        bytes_per_second: u64,
    },
    /// Every byte in a write of its own (`TCP_NODELAY` is on, so each is its own segment as
    /// far as the proxy can make it).
    OneByteSegments,
    /// After `after` bytes, forward nothing more this way, and keep both sockets open (the
    /// bytes that still come are read and dropped) until the client goes away or the proxy
    /// shuts down.
    Stall {
        /// The bytes forwarded before the stall.
        after: u64,
    },
    /// After `after` bytes, reset the client's connection (`SO_LINGER` 0, then close: a TCP
    /// RST) and drop the one to the server.
    Reset {
        /// The bytes forwarded before the reset.
        after: u64,
    },
    /// After `after` bytes, close the client's connection cleanly (a FIN; what the client
    /// still sends is read and dropped for a while, so no reset follows) and drop the one to
    /// the server.
    Close {
        /// The bytes forwarded before the close.
        after: u64,
    },
}

/// The faults of one [`ChaosProxy`]: one per [`Direction`], on every connection or on the
/// first few only.
///
/// ```
/// use std::time::Duration;
/// use keel_conformance::chaos::{Chaos, Direction, Fault};
///
/// let chaos = Chaos::to_client(Fault::Reset { after: 1000 })
///     .with(Direction::ToServer, Fault::OneByteSegments)
///     .first_connections(1);
/// assert_eq!(chaos.fault(Direction::ToClient), Fault::Reset { after: 1000 });
/// assert_eq!(chaos.fault(Direction::ToServer), Fault::OneByteSegments);
/// assert!(chaos.strikes(0) && !chaos.strikes(1));
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Chaos {
    /// What happens to the bytes from the client to the server.
    pub to_server: Fault,
    /// What happens to the bytes from the server to the client.
    pub to_client: Fault,
    /// Only the first this many connections get the faults (`None`: all of them).
    pub first_connections: Option<usize>,
}

impl Chaos {
    /// No fault either way: a clean pipe.
    pub fn none() -> Self {
        Self::default()
    }

    /// `fault` on the bytes from the server to the client.
    pub fn to_client(fault: Fault) -> Self {
        Self::none().with(Direction::ToClient, fault)
    }

    /// `fault` on the bytes from the client to the server.
    pub fn to_server(fault: Fault) -> Self {
        Self::none().with(Direction::ToServer, fault)
    }

    /// Sets the fault of one direction.
    pub fn with(mut self, direction: Direction, fault: Fault) -> Self {
        match direction {
            Direction::ToServer => self.to_server = fault,
            Direction::ToClient => self.to_client = fault,
        }
        self
    }

    /// Strikes only the first `k` connections accepted; the ones after are clean pipes.
    pub fn first_connections(mut self, k: usize) -> Self {
        self.first_connections = Some(k);
        self
    }

    /// The fault of one direction.
    pub fn fault(&self, direction: Direction) -> Fault {
        match direction {
            Direction::ToServer => self.to_server,
            Direction::ToClient => self.to_client,
        }
    }

    /// Whether the connection accepted `index`-th (from 0) gets the faults.
    pub fn strikes(&self, index: usize) -> bool {
        self.first_connections.is_none_or(|k| index < k)
    }
}

/// What the proxy counts.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicUsize,
    open: AtomicUsize,
    fired: AtomicUsize,
}

/// A running chaos proxy; see the [module docs](self). Shut down (listener closed, every
/// connection dropped) when dropped; dropping never hangs for more than about 2 s.
pub struct ChaosProxy {
    port: u16,
    target: SocketAddr,
    chaos: Chaos,
    counters: Arc<Counters>,
    shutdown: watch::Sender<bool>,
    /// Disconnected when the proxy thread has finished.
    finished: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl ChaosProxy {
    /// Starts a proxy on an ephemeral port of `127.0.0.1` that pipes every connection to
    /// `target` with the faults of `chaos`.
    ///
    /// # Errors
    ///
    /// If the port can't be bound or the proxy's thread or runtime can't start.
    pub fn start(target: SocketAddr, chaos: Chaos) -> io::Result<ChaosProxy> {
        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::clone(&counters);
        let ServerThread {
            thread, finished, ..
        } = serve_on_thread(format!("keel-chaos-proxy-{port}"), move || {
            let listener = TcpListener::from_std(listener)?;
            let mut stop = shutdown_rx.clone();
            tokio::spawn(accept(listener, target, chaos, shared, shutdown_rx));
            Ok(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
        })?;
        Ok(ChaosProxy {
            port,
            target,
            chaos,
            counters,
            shutdown,
            finished,
            thread: Some(thread),
        })
    }

    /// A proxy in front of the server's plain listener ([`TestServer::url`]): use
    /// [`url`](Self::url).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn in_front_of_plain(server: &TestServer, chaos: Chaos) -> io::Result<ChaosProxy> {
        Self::start(loopback_port(&server.url(""))?, chaos)
    }

    /// A proxy in front of the server's TLS listener ([`TestServer::tls_url`]): use
    /// [`tls_url`](Self::tls_url) and trust the server's certificate.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn in_front_of_tls(server: &TestServer, chaos: Chaos) -> io::Result<ChaosProxy> {
        Self::start(loopback_port(&server.tls_url(""))?, chaos)
    }

    /// `http://127.0.0.1:{port}{path}`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `https://localhost:{port}{path}`, for a proxy in front of a TLS listener (the test
    /// server's certificate names `localhost` and `127.0.0.1`).
    pub fn tls_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Where the proxy pipes its connections to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The faults it applies.
    pub fn chaos(&self) -> Chaos {
        self.chaos
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections still being piped.
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// How many times a stall, reset or close has struck so far (at most once per direction
    /// of a connection).
    pub fn faults_fired(&self) -> usize {
        self.counters.fired.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for ChaosProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosProxy")
            .field("port", &self.port)
            .field("target", &self.target)
            .field("chaos", &self.chaos)
            .field("connections_accepted", &self.connections_accepted())
            .field("faults_fired", &self.faults_fired())
            .finish_non_exhaustive()
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        match self.finished.recv_timeout(Duration::from_secs(2)) {
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

/// `127.0.0.1` and the port of a test server URL (`scheme://host:port/…`).
fn loopback_port(url: &str) -> io::Result<SocketAddr> {
    let port = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| authority.rsplit(':').next())
        .and_then(|port| port.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no port in {url}")))?;
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Resolves once shutdown is signalled (or the proxy is gone).
async fn shut(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Decrements the open-connection count when a connection's task ends.
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    chaos: Chaos,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let client = tokio::select! {
            () = shut(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let index = counters.accepted.fetch_add(1, Ordering::SeqCst);
        counters.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(Arc::clone(&counters));
        let chaos = if chaos.strikes(index) {
            chaos
        } else {
            Chaos::none()
        };
        let counters = Arc::clone(&counters);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                () = shut(&mut shutdown) => {}
                () = pipe(client, target, chaos, &counters) => {}
            }
        });
    }
}

/// How a pump ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Its source ended cleanly; the end was passed on.
    Eof,
    /// Its source (`true`) or its destination (`false`) failed: a reset, most likely.
    Failed { source: bool },
    /// Its fault struck: the connection ends, this way.
    Cut(Cut),
    /// The other pump asked it to stop.
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    Close,
    Reset,
}

/// What the two pumps of a connection tell each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Running,
    /// The client has ended its side (a stalled pump towards it can stop).
    ClientEof,
    /// The connection is over: stop.
    Teardown,
}

/// Pipes one accepted connection to a new connection to `target`, both ways, with `chaos`.
async fn pipe(client: TcpStream, target: SocketAddr, chaos: Chaos, counters: &Counters) {
    let Ok(server) = TcpStream::connect(target).await else {
        // Nothing to pipe to: the client sees its connection reset.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (signal, _) = watch::channel(Signal::Running);
    let (up, down) = tokio::join!(
        pump(
            &mut client_read,
            &mut server_write,
            chaos.to_server,
            Direction::ToServer,
            &signal,
            counters,
        ),
        pump(
            &mut server_read,
            &mut client_write,
            chaos.to_client,
            Direction::ToClient,
            &signal,
            counters,
        ),
    );
    // A side that failed on its own is passed on to the other side as a reset.
    let server_failed = down == End::Failed { source: true } || up == End::Failed { source: false };
    let client_failed = up == End::Failed { source: true } || down == End::Failed { source: false };
    let reset_client = up == End::Cut(Cut::Reset) || down == End::Cut(Cut::Reset) || server_failed;
    let close_client = up == End::Cut(Cut::Close) || down == End::Cut(Cut::Close);
    let reset_server = client_failed;
    if let Ok(server) = server_read.reunite(server_write) {
        if reset_server {
            let _ = server.set_zero_linger();
        }
        drop(server);
    }
    let Ok(mut client) = client_read.reunite(client_write) else {
        return;
    };
    if reset_client {
        let _ = client.set_zero_linger();
    } else if close_client {
        let _ = client.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// Resolves when `signal` says this pump should stop: at teardown, or, for a stalled pump
/// towards the client, once the client has ended its side.
async fn stop(signal: &mut watch::Receiver<Signal>, stalled_towards_client: bool) {
    let _ = signal
        .wait_for(|s| match s {
            Signal::Running => false,
            Signal::ClientEof => stalled_towards_client,
            Signal::Teardown => true,
        })
        .await;
}

/// Forwards `direction`'s bytes from `from` to `to` with `fault` until the source ends, the
/// fault cuts the connection, or the other pump says stop.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    fault: Fault,
    direction: Direction,
    signal: &watch::Sender<Signal>,
    counters: &Counters,
) -> End {
    let mut rx = signal.subscribe();
    let towards_client = direction == Direction::ToClient;
    let mut buf = vec![0u8; 16 * 1024];
    let mut forwarded = 0u64;
    let mut first: Option<Instant> = None;
    let mut stalled = false;
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            () = stop(&mut rx, stalled && towards_client) => return End::Stopped,
        };
        let n = match read {
            Ok(n) => n,
            Err(_) => {
                signal.send_replace(Signal::Teardown);
                return End::Failed { source: true };
            }
        };
        if n == 0 {
            if !towards_client {
                signal.send_if_modified(|s| {
                    let running = *s == Signal::Running;
                    if running {
                        *s = Signal::ClientEof;
                    }
                    running
                });
            }
            if stalled {
                if towards_client {
                    stop(&mut rx, true).await;
                } else {
                    signal.send_replace(Signal::Teardown);
                }
                return End::Stopped;
            }
            let _ = to.shutdown().await;
            return End::Eof;
        }
        if stalled {
            continue;
        }
        let chunk = &buf[..n];
        let forward = async {
            match fault {
                Fault::None => to.write_all(chunk).await.map(|()| None),
                Fault::Delay {
                    first_byte,
                    per_chunk,
                } => {
                    if first.is_none() {
                        first = Some(Instant::now());
                        tokio::time::sleep(first_byte).await;
                    }
                    tokio::time::sleep(per_chunk).await;
                    to.write_all(chunk).await.map(|()| None)
                }
                Fault::Throttle { bytes_per_second } => {
                    let rate = bytes_per_second.max(1);
                    let piece = usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1);
                    let start = *first.get_or_insert_with(Instant::now);
                    for part in chunk.chunks(piece) {
                        to.write_all(part).await?;
                        forwarded += part.len() as u64;
                        let due = Duration::from_secs_f64(forwarded as f64 / rate as f64);
                        tokio::time::sleep_until(start + due).await;
                    }
                    Ok(None)
                }
                Fault::OneByteSegments => {
                    for byte in chunk {
                        to.write_all(std::slice::from_ref(byte)).await?;
                        to.flush().await?;
                    }
                    Ok(None)
                }
                Fault::Stall { after } | Fault::Reset { after } | Fault::Close { after } => {
                    let room =
                        usize::try_from(after.saturating_sub(forwarded)).unwrap_or(usize::MAX);
                    let pass = room.min(n);
                    to.write_all(&chunk[..pass]).await?;
                    forwarded += pass as u64;
                    Ok((pass < n).then_some(fault))
                }
            }
        };
        let struck = tokio::select! {
            forwarded = forward => match forwarded {
                Ok(struck) => struck,
                Err(_) => {
                    signal.send_replace(Signal::Teardown);
                    return End::Failed { source: false };
                }
            },
            () = stop(&mut rx, false) => return End::Stopped,
        };
        match struck {
            None => {}
            Some(Fault::Stall { .. }) => {
                counters.fired.fetch_add(1, Ordering::SeqCst);
                stalled = true;
            }
            Some(cut) => {
                counters.fired.fetch_add(1, Ordering::SeqCst);
                signal.send_replace(Signal::Teardown);
                return End::Cut(if matches!(cut, Fault::Reset { .. }) {
                    Cut::Reset
                } else {
                    Cut::Close
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
