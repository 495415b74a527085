//! Opening a connection the same way on every backend: resolve, race TCP connection attempts
//! (Happy Eyeballs), hand the winner to the backend's TLS, all under one connect timeout.
//!
//! A backend brings what only its runtime has: the resolver, the socket type, the TLS stream.
//! A [`Dialer`] brings the rest, runtime-agnostic: the deadline (through the backend's
//! [`Timer`]), the order and pacing of the attempts, and the mapping of every failure to keel's
//! [`Error`] with its [`Stage`]. Nothing is spawned: the attempts are polled together inside the
//! one future, and dropping it drops them all.
//!
//! # The attempts (RFC 8305)
//!
//! The resolved addresses are [sorted](sort_addresses) so the families alternate, starting with
//! the family of the first address the resolver gave. The first attempt starts at once; each
//! next one starts [`ATTEMPT_DELAY`] after the previous one, or at once when an attempt fails.
//! Attempts already running keep running: the first to connect wins, and the others are dropped
//! (closing their sockets). So a blackholed address (an IPv6 route that drops packets, a host
//! that doesn't answer) costs 250 ms, not the whole connect timeout.
//!
//! ```
//! # use std::net::SocketAddr;
//! # use std::time::Duration;
//! use keel_core::connect::Dialer;
//! # #[derive(Debug)] struct NoTimer;
//! # impl keel_core::Timer for NoTimer {
//! #     fn sleep_until(&self, _: std::time::Instant) -> keel_core::Sleep {
//! #         Box::pin(std::future::pending())
//! #     }
//! # }
//! # let timer = NoTimer;
//! # async fn tcp_connect(addr: SocketAddr) -> std::io::Result<SocketAddr> { Ok(addr) }
//! # futures_executor::block_on(async {
//! // In a backend: `timer` is its runtime's timer, `tcp_connect` its socket's connect.
//! let dialer = Dialer::new(&timer, Duration::from_secs(10));
//! let addrs = dialer
//!     .resolve("127.0.0.1", 8080, async { Ok(Vec::<SocketAddr>::new()) })
//!     .await?;
//! let stream = dialer.connect(addrs, tcp_connect).await?;
//! assert_eq!(stream, SocketAddr::from(([127, 0, 0, 1], 8080)));
//! # Ok::<(), keel_core::Error>(())
//! # }).unwrap();
//! ```

use std::cell::Cell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt as _};

use crate::dns::Dns;
use crate::error::{BoxError, Error, ErrorKind, Stage, TimeoutPhase};
use crate::machine::tunnel::{SocksTarget, Tunnel, TunnelError};
use crate::proxy::{Proxy, ProxyScheme};
use crate::transport::{Origin, Sleep, Timer};

/// How long an attempt runs alone before the next address is tried as well: RFC 8305's
/// recommended "Connection Attempt Delay".
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Orders addresses for connection attempts (RFC 8305, section 4): duplicates removed, then the
/// two families interleaved, one address at a time, starting with the family of the first
/// address. Within a family the resolver's order is kept.
///
/// ```
/// use std::net::SocketAddr;
/// use keel_core::connect::sort_addresses;
///
/// let a = |s: &str| s.parse::<SocketAddr>().unwrap();
/// let sorted = sort_addresses([a("[::1]:80"), a("[::2]:80"), a("10.0.0.1:80"), a("10.0.0.2:80")]);
/// assert_eq!(sorted, [a("[::1]:80"), a("10.0.0.1:80"), a("[::2]:80"), a("10.0.0.2:80")]);
/// ```
pub fn sort_addresses(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut unique: Vec<SocketAddr> = Vec::new();
    for addr in addrs {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    let Some(first) = unique.first() else {
        return unique;
    };
    let first_is_v6 = first.is_ipv6();
    let (preferred, other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        unique.iter().partition(|a| a.is_ipv6() == first_is_v6);
    let mut sorted = Vec::with_capacity(unique.len());
    let (mut preferred, mut other) = (preferred.into_iter(), other.into_iter());
    loop {
        match (preferred.next(), other.next()) {
            (None, None) => return sorted,
            (p, o) => sorted.extend(p.into_iter().chain(o)),
        }
    }
}

/// Opens connections within one connect deadline: resolution ([`Stage::Dns`]), the TCP
/// attempts ([`Stage::Connect`]) and the TLS handshake ([`Stage::Tls`]) each map their failures
/// to keel's errors, and a deadline that passes in any of them is
/// [`ErrorKind::Timeout`]`(`[`TimeoutPhase::Connect`]`)` with that stage.
///
/// Every error it returns is in one of those stages, so [`Error::is_unsent`] holds for all of
/// them. See the [module documentation](self) for the order of the attempts.
#[derive(Clone, Copy)]
pub struct Dialer<'t> {
    timer: &'t dyn Timer,
    deadline: Instant,
}

impl<'t> Dialer<'t> {
    /// A dialer whose deadline is `connect_timeout` from now (by `timer`).
    pub fn new(timer: &'t dyn Timer, connect_timeout: Duration) -> Self {
        let now = timer.now();
        let deadline = now
            .checked_add(connect_timeout)
            // Far enough to never matter, near enough to be representable.
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        Self::until(timer, deadline)
    }

    /// A dialer that gives up at `deadline`.
    pub fn until(timer: &'t dyn Timer, deadline: Instant) -> Self {
        Self { timer, deadline }
    }

    /// When the connect timeout runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The addresses of `host`, from `lookup` (the backend's resolver, for example
    /// `tokio::net::lookup_host((host, port))`), within the deadline.
    ///
    /// An IP address needs no lookup: `lookup` is then dropped without being polled. A failed
    /// lookup, or one that found no address, is [`ErrorKind::Connect`] in [`Stage::Dns`].
    pub async fn resolve<A, L>(
        &self,
        host: &str,
        port: u16,
        lookup: L,
    ) -> Result<Vec<SocketAddr>, Error>
    where
        L: Future<Output = io::Result<A>>,
        A: IntoIterator<Item = SocketAddr>,
    {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let dns = |e: BoxError| {
            Error::new(ErrorKind::Connect)
                .with_stage(Stage::Dns)
                .with_source(e)
        };
        match self.within(lookup).await {
            None => Err(self.timed_out(Stage::Dns)),
            Some(Err(e)) => Err(dns(e.into())),
            Some(Ok(addrs)) => {
                let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
                if addrs.is_empty() {
                    return Err(dns(format!("`{host}` resolved to no address").into()));
                }
                Ok(addrs)
            }
        }
    }

    /// The addresses of `host` as `dns` says: an IP address as it is, then a static override,
    /// then a cached answer, then the custom resolver, or else `system` (the backend's
    /// resolver, called only when needed), all within the deadline. See the [`dns`](crate::dns)
    /// module for the order.
    ///
    /// A failed lookup, or one that found no address, is [`ErrorKind::Connect`] in
    /// [`Stage::Dns`].
    pub async fn lookup<A, L>(
        &self,
        dns: &Dns,
        host: &str,
        port: u16,
        system: impl FnOnce() -> L,
    ) -> Result<Vec<SocketAddr>, Error>
    where
        L: Future<Output = io::Result<A>>,
        A: IntoIterator<Item = SocketAddr>,
    {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(addrs) = dns.overridden(host, port) {
            tracing::debug!(target: "keel::connect", host, "static DNS override");
            return Ok(addrs);
        }
        let now = self.timer.now();
        if let Some(ips) = dns.cached(host, now) {
            return Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
        let addrs = match dns.resolver() {
            Some(resolver) => {
                let answer = async {
                    resolver
                        .resolve(host)
                        .await
                        .map(|ips| ips.into_iter().map(|ip| SocketAddr::new(ip, port)))
                        .map_err(io::Error::other)
                };
                self.resolve(host, port, answer).await?
            }
            None => self.resolve(host, port, system()).await?,
        };
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        dns.remember(host, &ips, self.timer.now());
        Ok(addrs)
    }

    /// Connects to one of `addrs` with `connect` (the backend's socket connect), racing
    /// attempts as RFC 8305 describes: see the [module documentation](self).
    ///
    /// When every attempt failed the error is [`ErrorKind::Connect`] in [`Stage::Connect`],
    /// with the last attempt's I/O error as its source.
    pub async fn connect<S, C, F>(&self, addrs: Vec<SocketAddr>, mut connect: C) -> Result<S, Error>
    where
        C: FnMut(SocketAddr) -> F,
        F: Future<Output = io::Result<S>>,
    {
        let mut queue = sort_addresses(addrs).into_iter();
        let mut attempts = FuturesUnordered::new();
        let mut start = |addr: SocketAddr, attempts: &mut FuturesUnordered<_>| {
            let attempt = connect(addr);
            attempts.push(async move { (addr, attempt.await) });
        };
        match queue.next() {
            Some(addr) => start(addr, &mut attempts),
            None => {
                return Err(Error::new(ErrorKind::Connect)
                    .with_stage(Stage::Connect)
                    .with_source("no address to connect to"))
            }
        }
        let timer = self.timer;
        let mut last_err: Option<io::Error> = None;
        let mut next_attempt: Option<Sleep> = None;
        let mut deadline: Option<Sleep> = None;
        poll_fn(|cx| loop {
            match attempts.poll_next_unpin(cx) {
                Poll::Ready(Some((addr, Ok(stream)))) => {
                    tracing::debug!(target: "keel::connect", %addr, "connected");
                    #[cfg(feature = "metrics")]
                    metrics::counter!("keel.client.connections.opened").increment(1);
                    return Poll::Ready(Ok(stream));
                }
                Poll::Ready(Some((addr, Err(e)))) => {
                    tracing::debug!(%addr, error = %e, "connection attempt failed");
                    last_err = Some(e);
                    if let Some(addr) = queue.next() {
                        start(addr, &mut attempts);
                        next_attempt = None;
                    }
                    continue;
                }
                Poll::Ready(None) => {
                    // Nothing running: a failure starts the next address at once, so the
                    // queue is empty too.
                    let err = Error::new(ErrorKind::Connect).with_stage(Stage::Connect);
                    return Poll::Ready(Err(match last_err.take() {
                        Some(e) => err.with_source(e),
                        None => err.with_source("no connection attempt was made"),
                    }));
                }
                Poll::Pending => {}
            }
            let deadline = deadline.get_or_insert_with(|| timer.sleep_until(self.deadline));
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(self.timed_out(Stage::Connect)));
            }
            if !queue.as_slice().is_empty() {
                let delay = next_attempt
                    .get_or_insert_with(|| timer.sleep_until(timer.now() + ATTEMPT_DELAY));
                if delay.as_mut().poll(cx).is_ready() {
                    next_attempt = None;
                    if let Some(addr) = queue.next() {
                        start(addr, &mut attempts);
                    }
                    continue;
                }
            }
            return Poll::Pending;
        })
        .await
    }

    /// Runs the backend's TLS handshake within the deadline: its failure is
    /// [`ErrorKind::Tls`] in [`Stage::Tls`].
    pub async fn handshake<T, E, H>(&self, handshake: H) -> Result<T, Error>
    where
        H: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        match self.within(handshake).await {
            None => Err(self.timed_out(Stage::Tls)),
            Some(Err(e)) => Err(Error::new(ErrorKind::Tls)
                .with_stage(Stage::Tls)
                .with_source(e)),
            Some(Ok(tls)) => Ok(tls),
        }
    }

    /// Opens a tunnel to `target` through `proxy` on `io`, a connection to the proxy (TCP, or
    /// TLS for an `https://` proxy): an HTTP `CONNECT` (with the proxy's credentials as
    /// `Proxy-Authorization`) or a SOCKS5 handshake (user/password when it has credentials),
    /// within the deadline. Afterwards `io` leads to the target; the caller speaks TLS to it
    /// for an `https` target.
    ///
    /// Through a `socks5://` proxy the target's host is resolved here, as
    /// [`lookup`](Self::lookup) does (`dns`, then `system`); a `socks5h://` proxy is given the
    /// name.
    ///
    /// Every failure is in [`Stage::Proxy`]: the proxy's refusal as
    /// [`ErrorKind::Status`] (its status), any other [`TunnelError`] or I/O error as
    /// [`ErrorKind::Connect`], with it as the source (see
    /// [`proxy::tunnel_error`](crate::proxy::tunnel_error)), or
    /// [`ErrorKind::Timeout`]`(`[`TimeoutPhase::Connect`]`)` when the deadline passes. The
    /// target's DNS failure through `socks5://` is in [`Stage::Dns`].
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use std::pin::Pin;
    /// # use std::task::{Context, Poll};
    /// # use std::time::Duration;
    /// use keel_core::connect::Dialer;
    /// use keel_core::dns::Dns;
    /// use keel_core::proxy::Proxy;
    /// use keel_core::{Origin, Stage};
    /// # #[derive(Debug)] struct NoTimer;
    /// # impl keel_core::Timer for NoTimer {
    /// #     fn sleep_until(&self, _: std::time::Instant) -> keel_core::Sleep {
    /// #         Box::pin(std::future::pending())
    /// #     }
    /// # }
    /// /// A proxy connection that answers `answer` to whatever is written.
    /// struct Scripted { answer: &'static [u8], written: Vec<u8> }
    /// # impl futures_io::AsyncRead for Scripted {
    /// #     fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
    /// #         let n = buf.len().min(self.answer.len());
    /// #         buf[..n].copy_from_slice(&self.answer[..n]);
    /// #         self.answer = &self.answer[n..];
    /// #         Poll::Ready(Ok(n))
    /// #     }
    /// # }
    /// # impl futures_io::AsyncWrite for Scripted {
    /// #     fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
    /// #         self.written.extend_from_slice(buf);
    /// #         Poll::Ready(Ok(buf.len()))
    /// #     }
    /// #     fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> { Poll::Ready(Ok(())) }
    /// #     fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> { Poll::Ready(Ok(())) }
    /// # }
    /// # futures_executor::block_on(async {
    /// let dialer = Dialer::new(&NoTimer, Duration::from_secs(10));
    /// let proxy = Proxy::all("http://u:p@proxy:3128")?;
    /// let target = Origin::from_uri(&"https://api.example.com/".parse().unwrap())?;
    /// // A proxy that refuses: it answers 407 to the CONNECT.
    /// let mut io = Scripted {
    ///     answer: b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
    ///     written: Vec::new(),
    /// };
    /// let no_lookup = || async { Ok::<Vec<SocketAddr>, std::io::Error>(Vec::new()) };
    /// let err = dialer
    ///     .tunnel(&mut io, &proxy, &target, &Dns::default(), no_lookup)
    ///     .await
    ///     .unwrap_err();
    /// assert!(io.written.starts_with(b"CONNECT api.example.com:443 HTTP/1.1\r\n"));
    /// assert_eq!(err.stage(), Some(Stage::Proxy));
    /// assert!(std::error::Error::source(&err).unwrap().to_string().contains("407"));
    /// # Ok::<(), keel_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn tunnel<S, A, L>(
        &self,
        io: &mut S,
        proxy: &Proxy,
        target: &Origin,
        dns: &Dns,
        system: impl FnOnce() -> L,
    ) -> Result<(), Error>
    where
        S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
        L: Future<Output = io::Result<A>>,
        A: IntoIterator<Item = SocketAddr>,
    {
        let (host, port) = (target.host(), target.port());
        // `Proxy`'s `Display` never shows its credentials.
        tracing::debug!(target: "keel::connect", %proxy, %target, "opening a tunnel");
        let tunnel = match proxy.scheme() {
            ProxyScheme::Http | ProxyScheme::Https => {
                Ok(Tunnel::http_connect(host, port, proxy.basic_header()))
            }
            ProxyScheme::Socks5h => match host.parse::<IpAddr>() {
                Ok(ip) => Tunnel::socks5(SocksTarget::Ip(ip), port, proxy.credentials()),
                Err(_) => Tunnel::socks5(SocksTarget::Name(host.into()), port, proxy.credentials()),
            },
            ProxyScheme::Socks5 => {
                let addrs = self.lookup(dns, host, port, system).await?;
                let ip = addrs[0].ip();
                Tunnel::socks5(SocksTarget::Ip(ip), port, proxy.credentials())
            }
        };
        let tunnel = tunnel.map_err(crate::proxy::tunnel_error)?;
        match self.within(handshake(io, tunnel)).await {
            None => Err(self.timed_out(Stage::Proxy)),
            Some(Ok(())) => Ok(()),
            Some(Err(Failed::Tunnel(e))) => Err(crate::proxy::tunnel_error(e)),
            Some(Err(Failed::Io(e))) => Err(Error::new(ErrorKind::Connect)
                .with_stage(Stage::Proxy)
                .with_source(e)),
        }
    }

    /// Runs `fut` until the deadline; `None` if the deadline came first. The timer is armed
    /// only if `fut` doesn't finish on its first poll.
    async fn within<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        let mut sleep: Option<Sleep> = None;
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            let sleep = sleep.get_or_insert_with(|| self.timer.sleep_until(self.deadline));
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await
    }

    fn timed_out(&self, stage: Stage) -> Error {
        Error::new(ErrorKind::Timeout(TimeoutPhase::Connect)).with_stage(stage)
    }
}

/// An error of the proxy handshake, before it becomes keel's.
enum Failed {
    Io(io::Error),
    Tunnel(TunnelError),
}

/// Writes and reads what `tunnel` says until it is established.
async fn handshake<S>(io: &mut S, mut tunnel: Tunnel) -> Result<(), Failed>
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    use std::pin::Pin;

    let mut buf = [0u8; 1024];
    loop {
        if let Some(out) = tunnel.poll_transmit() {
            let mut sent = 0;
            while sent < out.len() {
                let n = poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, &out[sent..]))
                    .await
                    .map_err(Failed::Io)?;
                if n == 0 {
                    return Err(Failed::Io(io::ErrorKind::WriteZero.into()));
                }
                sent += n;
            }
            poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx))
                .await
                .map_err(Failed::Io)?;
        }
        if tunnel.is_established() {
            return Ok(());
        }
        let limit = tunnel.read_limit().min(buf.len());
        let n = poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, &mut buf[..limit]))
            .await
            .map_err(Failed::Io)?;
        if n == 0 {
            return tunnel.handle_eof().map_err(Failed::Tunnel);
        }
        tunnel.handle_read(&buf[..n]).map_err(Failed::Tunnel)?;
    }
}

/// `err` (connecting to a proxy, or resolving its name) moved to [`Stage::Proxy`]: the proxy,
/// not the target, could not be reached. Timeouts keep their kind.
pub fn at_proxy(err: Error) -> Error {
    err.with_stage(Stage::Proxy)
}

impl std::fmt::Debug for Dialer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// The connections a backend has open, per origin, and the permits to open more within the
/// connection caps ([`TransportConfig::max_connections_per_origin`](crate::TransportConfig::max_connections_per_origin),
/// [`TransportConfig::max_connections`](crate::TransportConfig::max_connections)).
///
/// A connector takes an [`OpenConnection`] for each connection it opens, before it starts to
/// open it ([`acquire`](Self::acquire), which waits while the caps are full, in the order the
/// requests came) and keeps it with the connection, which gives it back when it is dropped
/// (closed). [`counts`](Self::counts) gives the figures for
/// [`Transport::pool_stats`](crate::Transport::pool_stats).
///
/// A pool that keeps idle connections asks it whether to keep one coming back
/// ([`keeps_idle`](Self::keeps_idle): not when only requests for other origins wait, held back
/// by the total cap, so an idle connection never blocks a waiting request) and tells it when it
/// did ([`returned`](Self::returned)): a request waiting for that origin is then woken with
/// [`Acquired::Retry`] to take it from the pool.
///
/// ```
/// use std::time::Duration;
/// use keel_core::connect::{Acquired, OpenConnections};
/// use keel_core::{ErrorKind, Origin, Stage, TimeoutPhase, Timer as _};
/// # #[derive(Debug)] struct ThreadTimer;
/// # impl keel_core::Timer for ThreadTimer {
/// #     fn sleep_until(&self, at: std::time::Instant) -> keel_core::Sleep {
/// #         std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
/// #         Box::pin(std::future::ready(()))
/// #     }
/// # }
///
/// let origin = Origin::from_uri(&"http://127.0.0.1:8080".parse().unwrap()).unwrap();
/// let open = OpenConnections::with_caps(Some(1), None);
/// # futures_executor::block_on(async {
/// let timer = ThreadTimer;
/// let Acquired::Permit(first) = open.acquire(&origin, &timer, None).await? else {
///     unreachable!("nothing was open")
/// };
/// assert_eq!(open.counts(), [(origin.clone(), 1)]);
/// // The cap is reached: a second connection waits, here at most 10 ms.
/// let deadline = timer.now() + Duration::from_millis(10);
/// let err = open.acquire(&origin, &timer, Some(deadline)).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::PoolAcquire));
/// assert_eq!(err.stage(), Some(Stage::Pool));
/// drop(first); // closed: its place is free
/// assert!(open.counts().is_empty());
/// assert!(matches!(open.acquire(&origin, &timer, None).await?, Acquired::Permit(_)));
/// # Ok::<(), keel_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct OpenConnections {
    shared: Arc<Mutex<Permits>>,
}

/// What [`OpenConnections::acquire`] got.
#[derive(Debug)]
#[must_use]
pub enum Acquired {
    /// A place within the caps for a new connection: keep it with the connection.
    Permit(OpenConnection),
    /// A connection to the origin came back to the pool
    /// ([`returned`](OpenConnections::returned)) or can be shared
    /// ([`shared`](OpenConnections::shared)): look in the pool again before acquiring anew.
    Retry,
}

#[derive(Debug, Default)]
struct Permits {
    counts: HashMap<Origin, usize>,
    total: usize,
    per_origin: Option<usize>,
    max_total: Option<usize>,
    /// The requests waiting, oldest (lowest ticket) first.
    waiters: std::collections::BTreeMap<u64, Waiter>,
    /// How many of `waiters` are still [`Grant::Waiting`], per origin.
    queued: HashMap<Origin, usize>,
    next_ticket: u64,
    closed: bool,
}

#[derive(Debug)]
struct Waiter {
    origin: Origin,
    waker: Option<Waker>,
    grant: Grant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    Waiting,
    Permit,
    Retry,
}

impl Permits {
    fn fits(&self, origin: &Origin) -> bool {
        self.max_total.is_none_or(|max| self.total < max)
            && self
                .per_origin
                .is_none_or(|max| self.counts.get(origin).copied().unwrap_or(0) < max)
    }

    fn count(&mut self, origin: &Origin) {
        *self.counts.entry(origin.clone()).or_default() += 1;
        self.total += 1;
    }

    fn uncount(&mut self, origin: &Origin) {
        if let Some(n) = self.counts.get_mut(origin) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(origin);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    /// A request for `origin` starts waiting.
    fn enqueue(&mut self, origin: &Origin) {
        *self.queued.entry(origin.clone()).or_default() += 1;
    }

    /// A request for `origin` stops waiting (granted, told to retry, or gone).
    fn dequeue(queued: &mut HashMap<Origin, usize>, origin: &Origin) {
        if let Some(n) = queued.get_mut(origin) {
            *n -= 1;
            if *n == 0 {
                queued.remove(origin);
            }
        }
    }

    /// How many waiting requests a place could go to now.
    fn grantable(&self) -> usize {
        let fits = self
            .queued
            .iter()
            .map(|(origin, &n)| match self.per_origin {
                Some(max) => {
                    n.min(max.saturating_sub(self.counts.get(origin).copied().unwrap_or(0)))
                }
                None => n,
            })
            .sum::<usize>();
        match self.max_total {
            Some(max) => fits.min(max.saturating_sub(self.total)),
            None => fits,
        }
    }

    /// Hands the free places to the waiting requests that fit, oldest first; returns the
    /// wakers to wake once the lock is released.
    ///
    /// The walk stops once no waiting request can have a place: it would otherwise pass over
    /// every request of an origin at its cap (10,000 requests waiting for one origin made
    /// each freed place cost a walk over all of them).
    fn grant(&mut self) -> Vec<Waker> {
        let mut wake = Vec::new();
        let mut grantable = self.grantable();
        if grantable == 0 {
            return wake;
        }
        let Permits {
            counts,
            total,
            per_origin,
            max_total,
            waiters,
            queued,
            ..
        } = self;
        for waiter in waiters.values_mut() {
            if grantable == 0 {
                break;
            }
            if max_total.is_some_and(|max| *total >= max) {
                break;
            }
            if waiter.grant != Grant::Waiting {
                continue;
            }
            let n = counts.get(&waiter.origin).copied().unwrap_or(0);
            if per_origin.is_some_and(|max| n >= max) {
                continue;
            }
            *counts.entry(waiter.origin.clone()).or_default() += 1;
            *total += 1;
            waiter.grant = Grant::Permit;
            Self::dequeue(queued, &waiter.origin);
            grantable -= 1;
            wake.extend(waiter.waker.take());
        }
        wake
    }

    /// Wakes the oldest request waiting for `origin` with [`Grant::Retry`]; false if none.
    fn retry_one(&mut self, origin: &Origin) -> Option<Waker> {
        let waiter = self
            .waiters
            .values_mut()
            .find(|w| w.grant == Grant::Waiting && w.origin == *origin)?;
        waiter.grant = Grant::Retry;
        Self::dequeue(&mut self.queued, origin);
        Some(
            waiter
                .waker
                .take()
                .unwrap_or_else(futures_util::task::noop_waker),
        )
    }
}

impl OpenConnections {
    /// Counts connections and hands out permits within `per_origin` connections to each
    /// origin and `total` to all together (`None`: no cap).
    pub fn with_caps(per_origin: Option<usize>, total: Option<usize>) -> Self {
        let permits = Permits {
            per_origin,
            max_total: total,
            ..Permits::default()
        };
        Self {
            shared: Arc::new(Mutex::new(permits)),
        }
    }

    /// Counts a connection to `origin` until the returned guard is dropped, whatever the caps
    /// say (for a connection a backend can't hold back).
    pub fn opened(&self, origin: &Origin) -> OpenConnection {
        lock(&self.shared).count(origin);
        OpenConnection {
            shared: self.shared.clone(),
            origin: origin.clone(),
        }
    }

    /// A place for a new connection to `origin` within the caps, waiting (behind the requests
    /// that came first) while they are full, or [`Acquired::Retry`] when a pooled connection to
    /// `origin` became free meanwhile.
    ///
    /// A wait that reaches `deadline` fails with
    /// [`ErrorKind::Timeout`]`(`[`TimeoutPhase::PoolAcquire`]`)` in [`Stage::Pool`] (nothing
    /// was sent); after [`close`](Self::close) it fails with [`ErrorKind::Connect`] in
    /// [`Stage::Pool`]. Dropping the future gives up the place in the queue, and a place or a
    /// pooled connection it had been handed passes on to the next request waiting.
    pub async fn acquire(
        &self,
        origin: &Origin,
        timer: &dyn Timer,
        deadline: Option<Instant>,
    ) -> Result<Acquired, Error> {
        let mut wait = pin!(Wait {
            open: self,
            origin,
            ticket: None,
        });
        let mut sleep: Option<Sleep> = None;
        poll_fn(|cx| {
            if let Poll::Ready(out) = wait.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            let Some(deadline) = deadline else {
                return Poll::Pending;
            };
            let sleep = sleep.get_or_insert_with(|| timer.sleep_until(deadline));
            sleep.as_mut().poll(cx).map(|()| {
                Err(Error::new(ErrorKind::Timeout(TimeoutPhase::PoolAcquire))
                    .with_stage(Stage::Pool))
            })
        })
        .await
    }

    /// A permit for a new connection to `origin`, as [`acquire`](Self::acquire), for a
    /// connector whose pool takes idle connections by itself (it never calls
    /// [`returned`](Self::returned)): an [`Acquired::Retry`] is waited past.
    pub async fn permit(
        &self,
        origin: &Origin,
        timer: &dyn Timer,
        deadline: Option<Instant>,
    ) -> Result<OpenConnection, Error> {
        loop {
            if let Acquired::Permit(permit) = self.acquire(origin, timer, deadline).await? {
                return Ok(permit);
            }
        }
    }

    /// Whether the total cap is reached: a request for a new origin would wait. A pool can
    /// close a connection idle for another origin to make room.
    pub fn is_full(&self) -> bool {
        let permits = lock(&self.shared);
        permits.max_total.is_some_and(|max| permits.total >= max)
    }

    /// Whether a pool should keep a connection to `origin` that comes back idle: false when
    /// nobody waits for `origin` but requests for other origins wait behind the total cap (it
    /// should close it: its place goes to them).
    pub fn keeps_idle(&self, origin: &Origin) -> bool {
        let permits = lock(&self.shared);
        let per_origin = permits.per_origin;
        let mut held_by_total = false;
        for w in permits
            .waiters
            .values()
            .filter(|w| w.grant == Grant::Waiting)
        {
            if w.origin == *origin {
                return true;
            }
            // Anyone waiting doesn't fit; those whose origin has room wait for the total.
            held_by_total |= per_origin
                .is_none_or(|max| permits.counts.get(&w.origin).copied().unwrap_or(0) < max);
        }
        !held_by_total
    }

    /// An idle connection to `origin` is back in the pool: the oldest request waiting for
    /// `origin` is woken to take it ([`Acquired::Retry`]). Returns whether one was.
    pub fn returned(&self, origin: &Origin) -> bool {
        let mut permits = lock(&self.shared);
        match permits.retry_one(origin) {
            Some(waker) => {
                drop(permits);
                waker.wake();
                true
            }
            None => false,
        }
    }

    /// A connection to `origin` that any number of requests can share (HTTP/2) is open: every
    /// request waiting for `origin` is woken to take it ([`Acquired::Retry`]).
    pub fn shared(&self, origin: &Origin) {
        let mut wake = Vec::new();
        let mut permits = lock(&self.shared);
        while let Some(waker) = permits.retry_one(origin) {
            wake.push(waker);
        }
        drop(permits);
        wake.into_iter().for_each(Waker::wake);
    }

    /// The transport is going away: every request waiting fails (see
    /// [`acquire`](Self::acquire)), and so does every later one.
    pub fn close(&self) {
        let mut permits = lock(&self.shared);
        permits.closed = true;
        let wake: Vec<Waker> = permits
            .waiters
            .values_mut()
            .filter_map(|w| w.waker.take())
            .collect();
        drop(permits);
        wake.into_iter().for_each(Waker::wake);
    }

    /// The open connections per origin, origins with none left out, in no particular order.
    pub fn counts(&self) -> Vec<(Origin, usize)> {
        lock(&self.shared)
            .counts
            .iter()
            .map(|(origin, n)| (origin.clone(), *n))
            .collect()
    }

    /// The requests waiting for a place, for tests and metrics.
    pub fn waiting(&self) -> usize {
        lock(&self.shared).waiters.len()
    }
}

/// One request's place in the queue of [`OpenConnections::acquire`].
struct Wait<'a> {
    open: &'a OpenConnections,
    origin: &'a Origin,
    ticket: Option<u64>,
}

impl Future for Wait<'_> {
    type Output = Result<Acquired, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        let shared = &self.open.shared;
        let mut permits = lock(shared);
        if permits.closed {
            drop(permits);
            // Drop removes the ticket, if any.
            return Poll::Ready(Err(Error::new(ErrorKind::Connect)
                .with_stage(Stage::Pool)
                .with_source("the client's connection pool is closed")));
        }
        let origin = self.origin;
        let granted = match self.ticket {
            None if permits.fits(origin) => {
                // Nobody waiting fits (every change hands the free places out at once), so
                // taking this one skips no one.
                permits.count(origin);
                Some(Grant::Permit)
            }
            None => {
                let ticket = permits.next_ticket;
                permits.next_ticket += 1;
                permits.enqueue(origin);
                permits.waiters.insert(
                    ticket,
                    Waiter {
                        origin: origin.clone(),
                        waker: Some(cx.waker().clone()),
                        grant: Grant::Waiting,
                    },
                );
                drop(permits);
                self.ticket = Some(ticket);
                return Poll::Pending;
            }
            Some(ticket) => match permits.waiters.get_mut(&ticket) {
                Some(w) if w.grant == Grant::Waiting => {
                    w.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Some(w) => {
                    let grant = w.grant;
                    permits.waiters.remove(&ticket);
                    Some(grant)
                }
                None => None,
            },
        };
        drop(permits);
        self.ticket = None;
        match granted {
            Some(Grant::Permit) => Poll::Ready(Ok(Acquired::Permit(OpenConnection {
                shared: shared.clone(),
                origin: origin.clone(),
            }))),
            _ => Poll::Ready(Ok(Acquired::Retry)),
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let mut permits = lock(&self.open.shared);
        let Some(waiter) = permits.waiters.remove(&ticket) else {
            return;
        };
        let wake = match waiter.grant {
            Grant::Waiting => {
                Permits::dequeue(&mut permits.queued, &waiter.origin);
                Vec::new()
            }
            // A place handed over but not taken goes to the next in line.
            Grant::Permit => {
                permits.uncount(&waiter.origin);
                permits.grant()
            }
            // So does a pooled connection it was told about.
            Grant::Retry => permits.retry_one(&waiter.origin).into_iter().collect(),
        };
        drop(permits);
        wake.into_iter().for_each(Waker::wake);
    }
}

/// One open connection, counted by [`OpenConnections`] until it is dropped.
#[derive(Debug)]
pub struct OpenConnection {
    shared: Arc<Mutex<Permits>>,
    origin: Origin,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut permits = lock(&self.shared);
        permits.uncount(&self.origin);
        let wake = permits.grant();
        drop(permits);
        wake.into_iter().for_each(Waker::wake);
    }
}

thread_local! {
    /// Set while the driver drops an attempt that a time limit cut ([`abandoned_on_timeout`]).
    static TIMED_OUT_DROP: Cell<bool> = const { Cell::new(false) };
}

/// Whether the send future or response body being dropped right now is dropped because a time
/// limit expired while it waited on the network: the attempt timeout or the call's deadline
/// before the head, the read-idle timeout or the deadline in the body.
///
/// A backend asks from the `Drop` of its send future or body. Answered `true`, the connection
/// under it may have a silent peer: an HTTP/1.1 connection closes anyway (its exchange is cut
/// short), but an HTTP/2 one is shared, and a backend that takes no new requests on it
/// afterwards ([`Capabilities::http2_timeout_retires_connection`](crate::Capabilities::http2_timeout_retires_connection))
/// keeps the next requests from going to the silence too. The streams already on it carry on.
/// Any other drop (the caller gave up, a hedge lost the race, the body was read to its end)
/// answers `false`: a cancelled stream says nothing about its connection.
///
/// It costs nothing until a time limit fires: the driver sets a thread-local flag around that
/// one drop, which runs the backend's `Drop` on the same thread.
///
/// ```
/// use keel_core::connect::abandoned_on_timeout;
///
/// struct Stream;
/// impl Drop for Stream {
///     fn drop(&mut self) {
///         if abandoned_on_timeout() {
///             // Retire the connection this stream ran on.
///         }
///     }
/// }
/// drop(Stream); // a plain drop: `abandoned_on_timeout()` is false in there
/// assert!(!abandoned_on_timeout());
/// ```
pub fn abandoned_on_timeout() -> bool {
    TIMED_OUT_DROP.with(Cell::get)
}

/// Runs an action (retiring a connection, say) when it is dropped on a timeout: while
/// [`abandoned_on_timeout`] answers `true`. Dropped any other way, it does nothing.
///
/// A backend keeps one in its send future and hands it on to the body
/// ([`GuardedBody`]), so a timeout before the head and one in the body both reach it.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use keel_core::connect::OnTimeout;
///
/// let retired = Arc::new(AtomicBool::new(false));
/// let flag = retired.clone();
/// drop(OnTimeout::new(move || flag.store(true, Ordering::Relaxed)));
/// assert!(!retired.load(Ordering::Relaxed), "a plain drop is not a timeout");
/// ```
pub struct OnTimeout<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnTimeout<F> {
    /// Runs `action` if dropped on a timeout.
    pub fn new(action: F) -> Self {
        Self(Some(action))
    }
}

impl<F: FnOnce()> Drop for OnTimeout<F> {
    fn drop(&mut self) {
        if abandoned_on_timeout() {
            if let Some(action) = self.0.take() {
                action();
            }
        }
    }
}

impl<F: FnOnce()> std::fmt::Debug for OnTimeout<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnTimeout").finish_non_exhaustive()
    }
}

/// A response body that keeps `guard` (an [`OnTimeout`], say) for as long as it lives; it
/// reads as the body it wraps.
#[derive(Debug)]
pub struct GuardedBody<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> GuardedBody<B, G> {
    /// `body`, holding `guard` until it is dropped.
    pub fn new(body: B, guard: G) -> Self {
        Self {
            body,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body + Unpin, G: Unpin> http_body::Body for GuardedBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Runs `drops` (which drops an attempt or a body) with [`abandoned_on_timeout`] answering
/// `true` meanwhile.
pub(crate) fn on_timeout(drops: impl FnOnce()) {
    /// Puts the flag back as it was, even if a `Drop` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TIMED_OUT_DROP.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(TIMED_OUT_DROP.with(|flag| flag.replace(true)));
    drops();
}

/// A poisoned count is still a count.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
