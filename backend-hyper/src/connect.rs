//! Opening connections: DNS, TCP, TLS with ALPN, all under one connect timeout.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use keel_core::connect::{Dialer, OpenConnection, OpenConnections};
use keel_core::dns::Dns;
use keel_core::{ConnectionFacts, ConnectionInfo, Error, ErrorKind, Origin, TransportConfig};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::TokioTimer;

/// Opens plain or TLS connections for hyper-util's pool.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: TlsConnector,
    connect_timeout: Duration,
    nodelay: bool,
    dns: Arc<Dns>,
    local_address: Option<IpAddr>,
    /// Tag connections so that responses say which one they came over (off by default: the
    /// tag costs an allocation per response).
    connection_info: bool,
    /// The connections open, per origin, for `pool_stats`.
    pub(crate) open: OpenConnections,
}

impl Connector {
    pub(crate) fn new(config: &TransportConfig) -> Result<Self, Error> {
        let tls = keel_core::tls::rustls_client_config(config, true)?;
        Ok(Self {
            tls: TlsConnector::from(Arc::new(tls)),
            connect_timeout: config.connect_timeout,
            nodelay: config.tcp_nodelay,
            dns: Arc::new(Dns::new(config)),
            local_address: config.local_address,
            connection_info: config.connection_info,
            open: OpenConnections::default(),
        })
    }

    /// Resolves (static overrides, cache, custom resolver, or else tokio's), then lets keel-core's [`Dialer`] race the connection attempts
    /// and bound everything, the TLS handshake included, by the connect timeout.
    async fn connect(self, uri: Uri) -> Result<Conn, Error> {
        let dialer = Dialer::new(&TokioTimer, self.connect_timeout);
        let origin = Origin::from_uri(&uri)?;
        let (https, host, port) = (origin.is_https(), origin.host(), origin.port());

        let addrs = dialer
            .lookup(&self.dns, host, port, || {
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
        let tag = self.connection_info.then(|| ConnTag::new(&tcp));
        let open = self.open.opened(&origin);
        if !https {
            return Ok(Conn {
                io: TokioIo::new(Stream::Plain(tcp)),
                h2: false,
                tag,
                _open: open,
            });
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| Error::new(ErrorKind::InvalidUrl).with_source(e))?;
        let tls = dialer.handshake(self.tls.connect(name, tcp)).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Conn {
            io: TokioIo::new(Stream::Tls(Box::new(tls))),
            h2,
            tag,
            _open: open,
        })
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
    tag: Option<ConnTag>,
    /// Counted as open until hyper drops (closes) the connection.
    _open: OpenConnection,
}

/// Marks every response with the connection it came over: hyper-util copies it (an `Arc`
/// clone) into each response's extensions, and [`ConnTag::info`] turns it into the
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
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let mut connected = Connected::new();
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
        Pin::new(&mut self.io).poll_read(cx, buf)
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
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
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
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
