//! A forward proxy on `127.0.0.1` for the proxy cases: HTTP (absolute-form requests forwarded,
//! `CONNECT` tunnels) and SOCKS5, optionally asking for credentials, counting what it did.
//!
//! [`TestProxy::start`] binds two ephemeral ports and serves them from its own thread and
//! tokio runtime, like [`TestServer`](super::TestServer), so clients on any executor can use
//! it. It only ever connects to `127.0.0.1`: a target named `localhost`, `127.0.0.1` or any
//! loopback address goes to `127.0.0.1` at the port asked for; any other target is refused
//! (`502` to a `CONNECT` or a forwarded request, reply code 2 "not allowed" to SOCKS5).
//!
//! - **HTTP** ([`TestProxy::http_url`]): reads one request head (at most 64 KiB, within 5 s).
//!   Without the expected `Proxy-Authorization: Basic …` (when credentials are set) it answers
//!   `407 Proxy Authentication Required` and closes. `CONNECT host:port` gets `200` and the
//!   bytes are spliced both ways; an absolute-form request (`GET http://host:port/path`) goes
//!   to the target in origin form, without the `Proxy-*` headers and with `Connection: close`,
//!   and the answer is spliced back: one request per connection. Anything else gets `400`.
//! - **HTTPS** ([`TestProxy::https_url`]): the same HTTP proxy behind TLS, with a self-signed
//!   certificate for `localhost` and `127.0.0.1` ([`TestProxy::ca_cert_pem`]).
//! - **SOCKS5** ([`TestProxy::socks_url`]): RFC 1928 `CONNECT` with "no authentication", or
//!   RFC 1929 user/password when credentials are set (status 1 for wrong ones).
//!
//! Every target asked for is recorded ([`TestProxy::targets`]): `forward http://…` for a
//! forwarded request, `connect host:port` for a `CONNECT`, `socks name:port` or
//! `socks ip:port` for SOCKS5 (so a case can tell who resolved the name).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{serve_on_thread, ServerThread};

/// How long a client has to send its request head or SOCKS5 messages.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read.
const HEAD_LIMIT: usize = 64 * 1024;

/// A running forward proxy; see the [module docs](self). Shut down when dropped.
pub struct TestProxy {
    http_port: u16,
    https_port: u16,
    socks_port: u16,
    cert_pem: String,
    log: Arc<Mutex<Log>>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Log {
    forwarded: usize,
    tunnels: usize,
    socks_tunnels: usize,
    refused: usize,
    tls_clients: usize,
    targets: Vec<String>,
}

/// The credentials the proxy asks for: user and password.
type Credentials = Option<(String, String)>;

impl TestProxy {
    /// Starts a proxy asking for `credentials` (user, password), or for none.
    pub fn start(credentials: Option<(&str, &str)>) -> io::Result<TestProxy> {
        let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let http = std::net::TcpListener::bind(localhost)?;
        let https = std::net::TcpListener::bind(localhost)?;
        let socks = std::net::TcpListener::bind(localhost)?;
        for listener in [&http, &https, &socks] {
            listener.set_nonblocking(true)?;
        }
        let http_port = http.local_addr()?.port();
        let https_port = https.local_addr()?.port();
        let socks_port = socks.local_addr()?.port();
        let tls = super::tls::generate()?;
        let acceptor = TlsAcceptor::from(tls.config);
        let credentials: Credentials = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let log = Arc::new(Mutex::new(Log::default()));
        let (shutdown, mut shutdown_rx) = watch::channel(false);
        let shared = Arc::clone(&log);
        let ServerThread { thread, .. } =
            serve_on_thread(format!("keel-test-proxy-{http_port}"), move || {
                let http = TcpListener::from_std(http)?;
                let https = TcpListener::from_std(https)?;
                let socks = TcpListener::from_std(socks)?;
                tokio::spawn(accept(
                    http,
                    credentials.clone(),
                    shared.clone(),
                    serve_http,
                ));
                let (tls_credentials, tls_log) = (credentials.clone(), shared.clone());
                tokio::spawn(accept(
                    https,
                    tls_credentials,
                    tls_log,
                    move |tcp, c, log| {
                        let acceptor = acceptor.clone();
                        async move {
                            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                                .await
                                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                            record(&log, |l| l.tls_clients += 1);
                            serve_http(tls, c, log).await
                        }
                    },
                ));
                tokio::spawn(accept(socks, credentials, shared, serve_socks));
                Ok(async move {
                    while !*shutdown_rx.borrow() {
                        if shutdown_rx.changed().await.is_err() {
                            break;
                        }
                    }
                })
            })?;
        Ok(TestProxy {
            http_port,
            https_port,
            socks_port,
            cert_pem: tls.cert_pem,
            log,
            shutdown,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:{port}`, with `user:password@` when given.
    pub fn http_url(&self, credentials: Option<(&str, &str)>) -> String {
        url("http", self.http_port, credentials)
    }

    /// `https://localhost:{port}` for the HTTPS listener, with `user:password@` when given.
    pub fn https_url(&self, credentials: Option<(&str, &str)>) -> String {
        url("https", self.https_port, credentials).replace("127.0.0.1", "localhost")
    }

    /// The HTTPS listener's self-signed certificate, PEM-encoded: trust it to reach the proxy.
    pub fn ca_cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// TLS handshakes completed on the HTTPS listener so far.
    pub fn tls_clients(&self) -> usize {
        self.lock().tls_clients
    }

    /// `{scheme}://127.0.0.1:{port}` for the SOCKS5 listener (`socks5` or `socks5h`), with
    /// `user:password@` when given.
    pub fn socks_url(&self, scheme: &str, credentials: Option<(&str, &str)>) -> String {
        url(scheme, self.socks_port, credentials)
    }

    /// Absolute-form requests forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.lock().forwarded
    }

    /// `CONNECT` tunnels opened so far.
    pub fn tunnels(&self) -> usize {
        self.lock().tunnels
    }

    /// SOCKS5 tunnels opened so far.
    pub fn socks_tunnels(&self) -> usize {
        self.lock().socks_tunnels
    }

    /// Clients refused for their credentials so far (`407`, or a SOCKS5 authentication
    /// failure).
    pub fn refused(&self) -> usize {
        self.lock().refused
    }

    /// Every target asked for, in order (see the [module docs](self)).
    pub fn targets(&self) -> Vec<String> {
        self.lock().targets.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            // The runtime winds down within its shutdown timeout; never wait much longer.
            let (tx, rx) = mpsc::channel();
            let _ = std::thread::Builder::new().spawn(move || {
                let _ = thread.join();
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
    }
}

impl std::fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProxy")
            .field("http_port", &self.http_port)
            .field("socks_port", &self.socks_port)
            .finish_non_exhaustive()
    }
}

fn url(scheme: &str, port: u16, credentials: Option<(&str, &str)>) -> String {
    match credentials {
        Some((user, password)) => format!("{scheme}://{user}:{password}@127.0.0.1:{port}"),
        None => format!("{scheme}://127.0.0.1:{port}"),
    }
}

fn record(log: &Mutex<Log>, f: impl FnOnce(&mut Log)) {
    f(&mut log.lock().unwrap_or_else(|p| p.into_inner()));
}

async fn accept<F, Fut>(
    listener: TcpListener,
    credentials: Credentials,
    log: Arc<Mutex<Log>>,
    serve: F,
) where
    F: Fn(TcpStream, Credentials, Arc<Mutex<Log>>) -> Fut,
    Fut: std::future::Future<Output = io::Result<()>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, credentials.clone(), log.clone()));
    }
}

/// Where a target goes: loopback names and addresses to 127.0.0.1, nothing else.
fn loopback(host: &str, port: u16) -> Option<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    local.then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// `host:port` (IPv6 in brackets) split; `None` without a numeric port.
fn host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// Reads a request head: the head's bytes, and whatever followed it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read(&mut chunk))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > HEAD_LIMIT {
            return Err(io::Error::other("request head too large"));
        }
    }
}

const REFUSED_407: &[u8] = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"keel\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    credentials: Credentials,
    log: Arc<Mutex<Log>>,
) -> io::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m, t, v),
        _ => return client.write_all(BAD_REQUEST).await,
    };
    let headers: Vec<(&str, &str)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    if let Some((user, password)) = &credentials {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let given = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("proxy-authorization"))
            .map(|(_, v)| *v);
        if given != Some(expected.as_str()) {
            record(&log, |l| l.refused += 1);
            return client.write_all(REFUSED_407).await;
        }
    }
    if method == "CONNECT" {
        record(&log, |l| l.targets.push(format!("connect {target}")));
        let Some(addr) = host_port(target).and_then(|(h, p)| loopback(h, p)) else {
            return client.write_all(BAD_GATEWAY).await;
        };
        let Ok(mut upstream) = TcpStream::connect(addr).await else {
            return client.write_all(BAD_GATEWAY).await;
        };
        record(&log, |l| l.tunnels += 1);
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        upstream.write_all(&rest).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    let Some(after_scheme) = target.strip_prefix("http://") else {
        return client.write_all(BAD_REQUEST).await;
    };
    record(&log, |l| l.targets.push(format!("forward {target}")));
    let (authority, path) = match after_scheme.find('/') {
        Some(i) => after_scheme.split_at(i),
        None => (after_scheme, "/"),
    };
    let Some(addr) = host_port(authority).and_then(|(h, p)| loopback(h, p)) else {
        return client.write_all(BAD_GATEWAY).await;
    };
    let Ok(mut upstream) = TcpStream::connect(addr).await else {
        return client.write_all(BAD_GATEWAY).await;
    };
    record(&log, |l| l.forwarded += 1);
    let mut forwarded = format!("{method} {path} {version}\r\n");
    for (name, value) in &headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("proxy-") || lower == "connection" {
            continue;
        }
        forwarded.push_str(&format!("{name}: {value}\r\n"));
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes()).await?;
    upstream.write_all(&rest).await?;
    // The answer goes back until the target closes (it was asked to); the client's further
    // bytes (a body) go on meanwhile.
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut up_read, mut up_write) = upstream.split();
    tokio::select! {
        answered = tokio::io::copy(&mut up_read, &mut client_write) => { answered?; }
        _ = tokio::io::copy(&mut client_read, &mut up_write) => {
            // The client stopped sending (its body is written): wait for the answer.
            tokio::io::copy(&mut up_read, &mut client_write).await?;
        }
    }
    client_write.shutdown().await
}

async fn serve_socks(
    mut client: TcpStream,
    credentials: Credentials,
    log: Arc<Mutex<Log>>,
) -> io::Result<()> {
    let upstream = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        socks_handshake(&mut client, credentials, &log),
    )
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    if let Some(mut upstream) = upstream {
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    }
    Ok(())
}

/// The SOCKS5 exchange: the connection to the target when it was made (the client has been
/// told), `None` when the client was refused (and told).
async fn socks_handshake(
    client: &mut TcpStream,
    credentials: Credentials,
    log: &Mutex<Log>,
) -> io::Result<Option<TcpStream>> {
    const NOT_ALLOWED: [u8; 10] = [5, 2, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Ok(None);
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    let wanted = if credentials.is_some() { 2 } else { 0 };
    if !methods.contains(&wanted) {
        return refuse(client, &[5, 0xff]).await;
    }
    client.write_all(&[5, wanted]).await?;
    if let Some((user, password)) = credentials {
        let mut ver_len = [0u8; 2];
        client.read_exact(&mut ver_len).await?;
        let mut u = vec![0u8; usize::from(ver_len[1])];
        client.read_exact(&mut u).await?;
        let mut plen = [0u8; 1];
        client.read_exact(&mut plen).await?;
        let mut p = vec![0u8; usize::from(plen[0])];
        client.read_exact(&mut p).await?;
        if u != user.as_bytes() || p != password.as_bytes() {
            record(log, |l| l.refused += 1);
            return refuse(client, &[1, 1]).await;
        }
        client.write_all(&[1, 0]).await?;
    }
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            format!("ip {}", Ipv4Addr::from(ip))
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip).await?;
            format!("ip {}", std::net::Ipv6Addr::from(ip))
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            format!("name {}", String::from_utf8_lossy(&name))
        }
        _ => return refuse(client, &[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).await,
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    record(log, |l| l.targets.push(format!("socks {host}:{port}")));
    let name = host.split_once(' ').map_or("", |(_, h)| h);
    if request[1] != 1 {
        return refuse(client, &[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).await;
    }
    let Some(addr) = loopback(name, port) else {
        return refuse(client, &NOT_ALLOWED).await;
    };
    let Ok(upstream) = TcpStream::connect(addr).await else {
        return refuse(client, &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await;
    };
    record(log, |l| l.socks_tunnels += 1);
    let [a, b] = port.to_be_bytes();
    client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, a, b]).await?;
    Ok(Some(upstream))
}

/// Tells the SOCKS5 client no, and gives up on it.
async fn refuse(client: &mut TcpStream, reply: &[u8]) -> io::Result<Option<TcpStream>> {
    client.write_all(reply).await.map(|()| None)
}
