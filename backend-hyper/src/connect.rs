//! Opening connections: DNS, TCP, TLS with ALPN, all under one connect timeout.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use keel_core::connect::{at_proxy, Dialer, OpenConnection, OpenConnections};
use keel_core::dns::Dns;
use keel_core::proxy::{Proxy, ProxyConfig, ProxyScheme};
use keel_core::tls::RefusalWatch;
use keel_core::{
    ConnectionFacts, ConnectionInfo, Error, ErrorKind, Origin, Timer as _, TransportConfig,
};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::TokioTimer;

/// Opens plain or TLS connections for hyper-util's pool: one pointer, as hyper-util clones
/// the connector (twice) and moves it with every request.
#[derive(Clone)]
pub(crate) struct Connector(Arc<ConnectorConfig>);

impl std::ops::Deref for Connector {
    type Target = ConnectorConfig;

    fn deref(&self) -> &ConnectorConfig {
        &self.0
    }
}

/// What a [`Connector`] opens connections with.
pub(crate) struct ConnectorConfig {
    tls: TlsConnector,
    connect_timeout: Duration,
    nodelay: bool,
    /// How hosts are reached: DNS settings and proxies.
    net: Net,
    local_address: Option<IpAddr>,
    /// Tag connections so that responses say which one they came over (off by default: the
    /// tag costs an allocation per response).
    connection_info: bool,
    /// The connections open, per origin, for `pool_stats`, and the permits the caps allow.
    pub(crate) open: OpenConnections,
    /// How long a connection waits for a permit.
    acquire_timeout: Option<Duration>,
    /// The origins whose servers refused a TLS handshake lately.
    pub(crate) refusals: Arc<Refusals>,
}

/// One [`RefusalWatch`] per `https` origin: hyper-util's pool doesn't say which connection a
/// request failed on, so a TLS refusal read on any connection to an origin explains that
/// origin's "connection closed" failures for a few seconds (TLS 1.3: a client certificate the
/// server refused, most often).
#[derive(Debug, Default)]
pub(crate) struct Refusals(std::sync::Mutex<std::collections::HashMap<Origin, RefusalWatch>>);

impl Refusals {
    /// The origin's watch, for a new connection to it.
    fn watch(&self, origin: &Origin) -> RefusalWatch {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(origin.clone()).or_default().clone()
    }

    /// `err`, explained by a refusal `origin`'s server sent lately (see
    /// [`RefusalWatch::explain`]).
    pub(crate) fn explain(&self, err: Error, origin: &Origin) -> Error {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(origin) {
            Some(watch) => watch.explain(err),
            None => err,
        }
    }
}

/// The DNS settings, and the proxies when any is set (`None` keeps the direct path as it was).
struct Net {
    dns: Dns,
    proxy: Option<ProxyConfig>,
    /// TLS to `https://` proxies, when one is set: the client's roots, ALPN `http/1.1` only (a
    /// `CONNECT` is an HTTP/1.1 exchange).
    proxy_tls: Option<TlsConnector>,
}

impl Connector {
    pub(crate) fn new(config: &TransportConfig) -> Result<Self, Error> {
        let tls = keel_core::tls::rustls_client_config(config, true)?;
        let proxy_tls = proxy_tls(config)?;
        Ok(Self(Arc::new(ConnectorConfig {
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout: config.connect_timeout,
            nodelay: config.tcp_nodelay,
            net: Net {
                dns: Dns::new(config),
                proxy: config.proxy.clone(),
                proxy_tls,
            },
            local_address: config.local_address,
            connection_info: config.connection_info,
            open: OpenConnections::with_caps(
                config.max_connections_per_origin,
                config.max_connections,
            ),
            acquire_timeout: config.pool_acquire_timeout,
            refusals: Arc::default(),
        })))
    }

    /// Resolves (static overrides, cache, custom resolver, or else tokio's), then lets keel-core's [`Dialer`] race the connection attempts
    /// and bound everything, the TLS handshake included, by the connect timeout.
    async fn connect(self, uri: Uri) -> Result<Conn, Error> {
        let origin = Origin::from_uri(&uri)?;
        // A place within the connection caps first. hyper-util races this connect against its
        // pool's checkout: a connection coming back to the pool goes to the request, and this
        // wait goes on in the background until a place frees up (or the transport is dropped,
        // which closes `open`), so the connection then opened waits idle in the pool.
        let timer = TokioTimer;
        let deadline = self.acquire_timeout.map(|d| timer.now() + d);
        let permit = self.open.permit(&origin, &timer, deadline).await?;
        let mut conn = self.dial(&origin).await?;
        conn._open = Some(permit);
        if origin.is_https() {
            conn.refusal = Some(self.refusals.watch(&origin));
        }
        if self.connection_info {
            conn.tag = Some(ConnTag::new(conn.tcp()));
        }
        Ok(conn)
    }

    /// Opens a connection to `origin`, directly or through its proxy.
    async fn dial(&self, origin: &Origin) -> Result<Conn, Error> {
        let dialer = Dialer::new(&TokioTimer, self.connect_timeout);
        if let Some(proxy) = self.net.proxy.as_ref().and_then(|p| p.for_origin(origin)) {
            // Boxed, like the TLS handshake below: their states are kilobytes, and inline they
            // would make every connect future (one per connection being opened, held by
            // hyper-util) that large, used or not.
            return Box::pin(self.connect_via(&dialer, proxy, origin)).await;
        }
        let (https, host, port) = (origin.is_https(), origin.host(), origin.port());

        let addrs = dialer
            .lookup(&self.net.dns, host, port, || {
                tokio::net::lookup_host((host, port))
            })
            .await?;
        let local = self.local_address;
        let tcp = dialer
            .connect(addrs, |addr| tcp_connect(local, addr))
            .await?;
        if self.nodelay {
            // Failing to set an option on a live socket is not a reason to give it up.
            let _ = tcp.set_nodelay(true);
        }
        if !https {
            return Ok(Conn::new(TokioIo::new(Stream::Plain(tcp)), false, false));
        }
        Box::pin(self.tls_to(&dialer, host, tcp)).await
    }

    /// The TLS handshake with `host` on `tcp` (a direct connection or a tunnel).
    async fn tls_to(&self, dialer: &Dialer<'_>, host: &str, tcp: TcpStream) -> Result<Conn, Error> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::new(ErrorKind::InvalidUrl).with_source(e))?;
        let tls = dialer.handshake(self.tls.connect(name, tcp)).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Conn::new(
            TokioIo::new(Stream::Tls(Box::new(tls))),
            h2,
            false,
        ))
    }

    /// Connects to `origin` through `proxy`: a plain `http` target is forwarded by an HTTP
    /// proxy (hyper then writes requests in absolute form), anything else goes through a
    /// `CONNECT` or SOCKS5 tunnel opened by keel-core, then TLS for an `https` target. An
    /// `https://` proxy is spoken to over TLS first (so an `https` target gets TLS inside
    /// TLS). Reaching the proxy fails in [`Stage::Proxy`](keel_core::Stage::Proxy).
    async fn connect_via(
        &self,
        dialer: &Dialer<'_>,
        proxy: &Proxy,
        origin: &Origin,
    ) -> Result<Conn, Error> {
        let (proxy_host, proxy_port) = (proxy.host(), proxy.port());
        let addrs = dialer
            .lookup(&self.net.dns, proxy_host, proxy_port, || {
                tokio::net::lookup_host((proxy_host, proxy_port))
            })
            .await
            .map_err(at_proxy)?;
        let local = self.local_address;
        let mut tcp = dialer
            .connect(addrs, |addr| tcp_connect(local, addr))
            .await
            .map_err(at_proxy)?;
        if self.nodelay {
            let _ = tcp.set_nodelay(true);
        }
        if proxy.scheme() == ProxyScheme::Https {
            return self.connect_via_tls(dialer, proxy, origin, tcp).await;
        }
        if !origin.is_https() && proxy.scheme() == ProxyScheme::Http {
            return Ok(Conn::new(TokioIo::new(Stream::Plain(tcp)), false, true));
        }
        let (host, port) = (origin.host(), origin.port());
        dialer
            .tunnel(
                &mut FuturesIo(&mut tcp),
                proxy,
                origin,
                &self.net.dns,
                || tokio::net::lookup_host((host, port)),
            )
            .await?;
        if !origin.is_https() {
            return Ok(Conn::new(TokioIo::new(Stream::Plain(tcp)), false, false));
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
        tcp: TcpStream,
    ) -> Result<Conn, Error> {
        let name = ServerName::try_from(proxy.host().to_owned())
            .map_err(|e| Error::new(ErrorKind::InvalidUrl).with_source(e))
            .map_err(at_proxy)?;
        let Some(proxy_tls) = &self.net.proxy_tls else {
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
            return Ok(Conn::new(
                TokioIo::new(Stream::Tls(Box::new(to_proxy))),
                false,
                true,
            ));
        }
        let (host, port) = (origin.host(), origin.port());
        dialer
            .tunnel(
                &mut FuturesIo(&mut to_proxy),
                proxy,
                origin,
                &self.net.dns,
                || tokio::net::lookup_host((host, port)),
            )
            .await?;
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::new(ErrorKind::InvalidUrl).with_source(e))?;
        let tls = dialer.handshake(self.tls.connect(name, to_proxy)).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Conn::new(
            TokioIo::new(Stream::TlsInTls(Box::new(tls))),
            h2,
            false,
        ))
    }
}

/// The TLS connector for `https://` proxies, if `config` sets one.
fn proxy_tls(config: &TransportConfig) -> Result<Option<TlsConnector>, Error> {
    let https_proxy = config
        .proxy
        .iter()
        .flat_map(ProxyConfig::proxies)
        .any(|p| p.scheme() == ProxyScheme::Https);
    if !https_proxy {
        return Ok(None);
    }
    let tls = keel_core::tls::rustls_client_config(config, false)?;
    Ok(Some(TlsConnector::from(Arc::new(tls))))
}

/// A tokio stream seen through futures-io's traits, for keel-core's proxy handshake.
struct FuturesIo<'a, T>(&'a mut T);

impl<T: tokio::io::AsyncRead + Unpin> futures_io::AsyncRead for FuturesIo<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = tokio::io::ReadBuf::new(buf);
        ready!(Pin::new(&mut *self.get_mut().0).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> futures_io::AsyncWrite for FuturesIo<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}

/// Connects to `addr`, from `local` if given.
async fn tcp_connect(local: Option<IpAddr>, addr: SocketAddr) -> io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect(addr).await;
    };
    if local.is_ipv4() != addr.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr} can't be reached from the local address {local}"),
        ));
    }
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A connection as hyper sees it.
pub(crate) struct Conn {
    io: TokioIo<Stream>,
    h2: bool,
    /// A connection to an HTTP proxy that forwards `http` requests: hyper writes them in
    /// absolute form.
    forwarded: bool,
    /// Set when the client asked for connection facts.
    tag: Option<ConnTag>,
    /// Counted as open until hyper drops (closes) the connection.
    _open: Option<OpenConnection>,
    /// Where a TLS refusal read on an `https` connection is written down.
    refusal: Option<RefusalWatch>,
}

impl Conn {
    /// A connection as opened; [`Connector::connect`] adds what it counts and tags.
    fn new(io: TokioIo<Stream>, h2: bool, forwarded: bool) -> Self {
        Self {
            io,
            h2,
            forwarded,
            tag: None,
            _open: None,
            refusal: None,
        }
    }

    /// The TCP connection under any TLS (to a proxy, when going through one).
    fn tcp(&self) -> &TcpStream {
        match self.io.inner() {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
            Stream::TlsInTls(tls) => tls.get_ref().0.get_ref().0,
        }
    }
}

/// Marks every response with the connection it came over: hyper-util copies it (an `Arc`
/// clone) into each response's extensions, and [`ConnTag::info`] gives the shared
/// [`ConnectionInfo`] keel reports.
#[derive(Clone)]
pub(crate) struct ConnTag(Arc<ConnState>);

struct ConnState {
    facts: ConnectionFacts,
    /// Responses seen on this connection so far.
    responses: AtomicU64,
}

impl ConnTag {
    fn new(tcp: &TcpStream) -> Self {
        Self(Arc::new(ConnState {
            facts: ConnectionFacts::new(tcp.peer_addr().ok(), tcp.local_addr().ok()),
            responses: AtomicU64::new(0),
        }))
    }

    /// The facts for the response this tag came with. The connection's first response is the
    /// one that opened it; every later one reused it (on HTTP/2, the first to arrive counts as
    /// the opener).
    pub(crate) fn info(&self) -> Arc<ConnectionInfo> {
        let before = self.0.responses.fetch_add(1, Ordering::Relaxed);
        self.0.facts.for_response(before > 0)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// TLS to the target inside a tunnel through an `https://` proxy.
    TlsInTls(Box<TlsStream<TlsStream<TcpStream>>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let mut connected = Connected::new().proxy(self.forwarded);
        if let Some(tag) = &self.tag {
            connected = connected.extra(tag.clone());
        }
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let result = ready!(Pin::new(&mut self.io).poll_read(cx, buf));
        if let (Err(e), Some(watch)) = (&result, &self.refusal) {
            watch.record(e);
        }
        Poll::Ready(result)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsInTls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsInTls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsInTls(s) => Pin::new(s).poll_shutdown(cx),
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

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::TlsInTls(s) => s.is_write_vectored(),
        }
    }
}
