//! Opening connections: DNS, TCP, TLS with ALPN, all under one connect timeout.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use async_io::Async;
use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use futures_util::task::AtomicWaker;
use keel_core::connect::{at_proxy, Dialer};
use keel_core::dns::Dns;
use keel_core::proxy::{Proxy, ProxyConfig, ProxyScheme};
use keel_core::{AsyncIoTimer, Error, ErrorKind, Origin, StableWaker, TransportConfig};
use rustls::pki_types::ServerName;
use socket2::{Domain, Protocol, Socket, Type};

/// Opens plain or TLS connections.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: TlsConnector,
    connect_timeout: Duration,
    nodelay: bool,
    dns: Arc<Dns>,
    local_address: Option<IpAddr>,
    /// The proxies, when any is set: `None` keeps the direct path as it was.
    proxy: Option<Arc<ProxyConfig>>,
    /// TLS to `https://` proxies, when one is set: the client's roots, ALPN `http/1.1` only (a
    /// `CONNECT` is an HTTP/1.1 exchange).
    proxy_tls: Option<TlsConnector>,
    /// Speak HTTP/2 without negotiation on plain connections.
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    prior_knowledge: bool,
}

/// A connected stream, and whether it speaks HTTP/2.
pub(crate) struct Connected {
    pub(crate) io: Stream,
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    pub(crate) h2: bool,
    /// A connection to an HTTP proxy that forwards `http` requests in absolute form.
    pub(crate) forwarded: bool,
}

impl Connector {
    pub(crate) fn new(config: &TransportConfig) -> Result<Self, Error> {
        let http2 = cfg!(feature = "http2");
        let tls = keel_core::tls::rustls_client_config(config, http2)?;
        let https_proxy = config
            .proxy
            .iter()
            .flat_map(ProxyConfig::proxies)
            .any(|p| p.scheme() == ProxyScheme::Https);
        let proxy_tls = if https_proxy {
            let tls = keel_core::tls::rustls_client_config(config, false)?;
            Some(TlsConnector::from(Arc::new(tls)))
        } else {
            None
        };
        let prior_knowledge = http2 && config.http2_prior_knowledge;
        Ok(Self {
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout: config.connect_timeout,
            nodelay: config.tcp_nodelay,
            dns: Arc::new(Dns::new(config)),
            local_address: config.local_address,
            proxy: config.proxy.clone().map(Arc::new),
            proxy_tls,
            prior_knowledge,
        })
    }

    /// Resolves, connects and (for https) completes the TLS handshake, within the connect
    /// timeout: keel-core's [`Dialer`] races the connection attempts and maps the errors, with
    /// their stages.
    pub(crate) async fn connect(&self, origin: &Origin) -> Result<Connected, Error> {
        let timer = AsyncIoTimer::default();
        let dialer = Dialer::new(&timer, self.connect_timeout);
        if let Some(proxy) = self.proxy.as_deref().and_then(|p| p.for_origin(origin)) {
            return self.connect_via(&dialer, proxy, origin).await;
        }
        let (host, port) = (origin.host(), origin.port());
        let addrs = dialer
            .lookup(&self.dns, host, port, || resolve(host, port))
            .await?;
        let local = self.local_address;
        let tcp = dialer
            .connect(addrs, |addr| tcp_connect(local, addr))
            .await
            .map(Tcp::new)?;
        if self.nodelay {
            // Failing to set an option on a live socket is not a reason to give it up.
            let _ = tcp.get_ref().set_nodelay(true);
        }
        if !origin.is_https() {
            return Ok(Connected {
                io: Stream::Plain(tcp),
                h2: self.prior_knowledge,
                forwarded: false,
            });
        }
        self.tls_to(&dialer, host, tcp).await
    }

    /// The TLS handshake with `host` on `tcp` (a direct connection or a tunnel).
    async fn tls_to(&self, dialer: &Dialer<'_>, host: &str, tcp: Tcp) -> Result<Connected, Error> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::new(ErrorKind::InvalidUrl).with_source(e))?;
        let tls = dialer.handshake(self.tls.connect(name, tcp)).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Connected {
            io: Stream::Tls(Box::new(tls)),
            h2,
            forwarded: false,
        })
    }

    /// Connects to `origin` through `proxy`: a plain `http` target is forwarded by an HTTP
    /// proxy (requests then go in absolute form), anything else goes through a `CONNECT` or
    /// SOCKS5 tunnel opened by keel-core, then TLS for an `https` target. An `https://` proxy
    /// is spoken to over TLS first (so an `https` target gets TLS inside TLS). Reaching the
    /// proxy fails in [`Stage::Proxy`](keel_core::Stage::Proxy).
    async fn connect_via(
        &self,
        dialer: &Dialer<'_>,
        proxy: &Proxy,
        origin: &Origin,
    ) -> Result<Connected, Error> {
        let (proxy_host, proxy_port) = (proxy.host(), proxy.port());
        let addrs = dialer
            .lookup(&self.dns, proxy_host, proxy_port, || {
                resolve(proxy_host, proxy_port)
            })
            .await
            .map_err(at_proxy)?;
        let local = self.local_address;
        let mut tcp = dialer
            .connect(addrs, |addr| tcp_connect(local, addr))
            .await
            .map(Tcp::new)
            .map_err(at_proxy)?;
        if self.nodelay {
            let _ = tcp.get_ref().set_nodelay(true);
        }
        if proxy.scheme() == ProxyScheme::Https {
            return self.connect_via_tls(dialer, proxy, origin, tcp).await;
        }
        if !origin.is_https() && proxy.scheme() == ProxyScheme::Http {
            return Ok(Connected {
                io: Stream::Plain(tcp),
                h2: false,
                forwarded: true,
            });
        }
        let (host, port) = (origin.host(), origin.port());
        dialer
            .tunnel(&mut tcp, proxy, origin, &self.dns, || resolve(host, port))
            .await?;
        if !origin.is_https() {
            return Ok(Connected {
                io: Stream::Plain(tcp),
                h2: self.prior_knowledge,
                forwarded: false,
            });
        }
        self.tls_to(dialer, host, tcp).await
    }

    /// [`connect_via`](Self::connect_via) for an `https://` proxy, given the TCP connection
    /// to it: TLS to the proxy, then a forwarded `http` target, or a `CONNECT` tunnel and TLS
    /// to an `https` target inside it.
    async fn connect_via_tls(
        &self,
        dialer: &Dialer<'_>,
        proxy: &Proxy,
        origin: &Origin,
        tcp: Tcp,
    ) -> Result<Connected, Error> {
        let name = ServerName::try_from(proxy.host().to_owned())
            .map_err(|e| Error::new(ErrorKind::InvalidUrl).with_source(e))
            .map_err(at_proxy)?;
        let Some(proxy_tls) = &self.proxy_tls else {
            // Built whenever an `https://` proxy is set.
            return Err(at_proxy(
                Error::new(ErrorKind::Config).with_setting("proxy_tls"),
            ));
        };
        let mut to_proxy = dialer
            .handshake(proxy_tls.connect(name, tcp))
            .await
            .map_err(at_proxy)?;
        if !origin.is_https() {
            return Ok(Connected {
                io: Stream::Tls(Box::new(to_proxy)),
                h2: false,
                forwarded: true,
            });
        }
        let (host, port) = (origin.host(), origin.port());
        dialer
            .tunnel(&mut to_proxy, proxy, origin, &self.dns, || {
                resolve(host, port)
            })
            .await?;
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::new(ErrorKind::InvalidUrl).with_source(e))?;
        let tls = dialer.handshake(self.tls.connect(name, to_proxy)).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Connected {
            io: Stream::TlsInTls(Box::new(tls)),
            h2,
            forwarded: false,
        })
    }
}

/// Connects to `addr`, from `local` if given: the socket is bound, then connected without
/// blocking, and async-io reports when the connection is made (as `Async::connect` does).
async fn tcp_connect(local: Option<IpAddr>, addr: SocketAddr) -> io::Result<Async<TcpStream>> {
    let Some(local) = local else {
        return Async::<TcpStream>::connect(addr).await;
    };
    if local.is_ipv4() != addr.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr} can't be reached from the local address {local}"),
        ));
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(local, 0).into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let stream = Async::new(TcpStream::from(socket))?;
    stream.writable().await?;
    match stream.get_ref().take_error()? {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}

/// Resolves `host` on `blocking`'s thread pool: the system resolver blocks, the executor must
/// not.
async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let host = host.to_owned();
    blocking::unblock(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
    })
    .await
}

/// A plain or TLS connection.
pub(crate) enum Stream {
    Plain(Tcp),
    Tls(Box<TlsStream<Tcp>>),
    /// TLS to the target inside a tunnel through an `https://` proxy.
    TlsInTls(Box<TlsStream<TlsStream<Tcp>>>),
}

/// A TCP stream whose reads cost no syscall while the socket is known to be empty.
///
/// keel-smol drives an HTTP/1.1 connection from the request's own future, so the connection
/// is polled every time that future is, spurious polls included (`join!`, `select!`,
/// `join_all` poll futures nobody woke). `Async::poll_read` tries `read(2)` first on every
/// poll; here, once a read would block, the next read waits until async-io wakes the socket's
/// reader or reports it readable (a check of an atomic and of the reactor's state, no
/// syscall). Measured on the benchmark's S2 shape: from ten `recvfrom` calls per request to
/// about two.
///
/// A wake is what counts, not `poll_readable` alone: async-io's reactor thread bumps its tick
/// before it blocks, so a socket registered while it blocks gets its event in the tick it was
/// registered in, and `poll_readable` answers `Pending` to the poll that wake brings (async-io
/// expects the caller to try the read, as `Async::poll_read` does). Waiting on
/// `poll_readable` alone re-registered the socket, the reactor woke it again at once, and so
/// on: keel-smol polled a request that had its response hundreds of times until the reactor's
/// tick moved for another reason.
///
/// Reads register a waker of the stream's own with async-io ([`ReadWake`]: one identity for
/// the stream's life, so an executor whose wakers change between polls, as tokio's
/// current-thread `block_on` does, costs no re-registration); writes go through a
/// [`StableWaker`] for the same reason.
pub(crate) struct Tcp {
    io: Async<TcpStream>,
    read_blocked: bool,
    read_wake: Arc<ReadWake>,
    /// `read_wake` as a [`Waker`], made once.
    read_waker: Waker,
    waker: StableWaker,
}

/// The waker a [`Tcp`]'s reads register with async-io: notes the wake, then wakes the task
/// that read last.
struct ReadWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Tcp {
    pub(crate) fn new(io: Async<TcpStream>) -> Self {
        let read_wake = Arc::new(ReadWake {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        Self {
            io,
            read_blocked: false,
            read_waker: Waker::from(read_wake.clone()),
            read_wake,
            waker: StableWaker::new(),
        }
    }

    pub(crate) fn get_ref(&self) -> &TcpStream {
        self.io.get_ref()
    }

    /// Ready once a read may find bytes: at once unless the last read would have blocked,
    /// else after async-io woke the reader or reports the socket readable.
    fn poll_unblocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.read_blocked {
            // The task first, then the check: a wake in between finds it registered.
            self.read_wake.task.register(cx.waker());
            if !self.read_wake.woken.swap(false, Ordering::AcqRel) {
                let mut read_cx = Context::from_waker(&self.read_waker);
                ready!(self.io.poll_readable(&mut read_cx))?;
            }
            self.read_blocked = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads up to `want` bytes behind what `buf` holds, into its spare capacity (reserved
    /// here, once the socket may be readable): no pass zeroes the memory first, as a read into
    /// a `&mut [u8]` needs (std's `read_to_end` reads into uninitialised capacity, and this
    /// crate has no `unsafe`). `Ok(0)` is the end of the stream.
    pub(crate) fn poll_read_vec(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        use std::io::Read as _;
        loop {
            ready!(self.poll_unblocked(cx))?;
            let before = buf.len();
            buf.reserve_exact(want);
            // Bounded to `want`: `read_to_end` reads until the limit, the end of the stream or
            // an error, and keeps what it read before an error in `buf`.
            let result = self.io.get_ref().take(want as u64).read_to_end(buf);
            let n = buf.len() - before;
            match result {
                Ok(_) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_blocked = true;
                    if n > 0 {
                        return Poll::Ready(Ok(n));
                    }
                }
                // Reported by the next read, if it still stands.
                Err(_) if n > 0 => return Poll::Ready(Ok(n)),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        use std::io::Read as _;
        let this = self.get_mut();
        loop {
            ready!(this.poll_unblocked(cx))?;
            match this.io.get_ref().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.read_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return Poll::Ready(other),
            }
        }
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Tcp { io, waker, .. } = self.get_mut();
        waker.poll(cx, |cx| Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Tcp { io, waker, .. } = self.get_mut();
        waker.poll(cx, |cx| Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Tcp { io, waker, .. } = self.get_mut();
        waker.poll(cx, |cx| Pin::new(io).poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Tcp { io, waker, .. } = self.get_mut();
        waker.poll(cx, |cx| Pin::new(io).poll_close(cx))
    }
}

impl Stream {
    /// The TCP stream, when no TLS runs on it.
    pub(crate) fn plain_mut(&mut self) -> Option<&mut Tcp> {
        match self {
            Stream::Plain(tcp) => Some(tcp),
            Stream::Tls(_) | Stream::TlsInTls(_) => None,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsInTls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsInTls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::TlsInTls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsInTls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s).poll_close(cx),
            Stream::TlsInTls(s) => Pin::new(s).poll_close(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Wakes by sending on a channel, so the test can wait for a wake with a bound.
    struct Notify(std::sync::Mutex<mpsc::Sender<()>>);

    impl Wake for Notify {
        fn wake(self: Arc<Self>) {
            let _ = self.0.lock().unwrap().send(());
        }
    }

    /// A read that blocks, polled outside async-io's `block_on` (so async-io's own thread runs
    /// the reactor), by a task that is slow to come back after each wake: the reactor is
    /// blocked again, in a new tick, by the time the task polls. The response must be read at
    /// the first poll after the wake that it arrived with.
    #[test]
    fn a_read_woken_by_the_reactor_thread_reads_at_the_next_poll() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            peer.write_all(b"hello").unwrap();
            // Open until the client has read.
            let _ = std::io::Read::read(&mut peer, &mut [0; 1]);
        });
        let mut tcp = Tcp::new(Async::new(TcpStream::connect(addr).unwrap()).unwrap());
        // Lets async-io's thread block in the reactor before the socket registers.
        std::thread::sleep(Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        let waker = Waker::from(Arc::new(Notify(std::sync::Mutex::new(tx))));
        let mut buf = [0; 16];
        let mut polls = 0;
        let n = loop {
            polls += 1;
            assert!(polls <= 5, "polled {polls} times for one response");
            match Pin::new(&mut tcp).poll_read(&mut Context::from_waker(&waker), &mut buf) {
                Poll::Ready(read) => break read.unwrap(),
                Poll::Pending => {
                    rx.recv_timeout(Duration::from_secs(5))
                        .expect("the read is woken");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        assert_eq!(&buf[..n], b"hello");
        drop(tcp);
        server.join().unwrap();
    }
}
