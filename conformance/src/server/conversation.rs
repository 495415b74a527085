//! Raw HTTP/1.1 conversations: scripted wire bytes per request, on connections the server keeps
//! alive, for faults that only show on a reused connection (stray bytes after a response, a
//! connection the server closes while it is idle, a response the client must not read past).
//!
//! Unlike [`TestServer::raw_url`], which answers each connection once and closes it, a
//! conversation reads request after request on each connection (head, then the body as its
//! `Content-Length` or chunked framing says) and answers the n-th request it receives, across
//! all its connections, with the n-th [`RawReply`] (the last one repeats). It counts the
//! connections, the requests on each and the requests that arrived complete, so a case can tell
//! whether the client reused a connection it should have dropped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{accept, bind_std, lock, wait_shutdown, TestServer, RAW_HEAD_LIMIT, RAW_LINGER};

/// How long a connection answered with [`RawReply::early`] is held (not read) before it is
/// dropped.
const EARLY_HOLD: Duration = Duration::from_secs(1);

/// Largest request body a conversation reads (and discards) per request.
const BODY_LIMIT: u64 = 256 * 1024 * 1024;

/// One scripted answer of a raw conversation: exact bytes, and what the server does after.
///
/// ```
/// use std::time::Duration;
/// use keel_conformance::server::RawReply;
///
/// // A response with two bytes too many, the connection kept open for the next request.
/// let overlong = RawReply::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcde"[..]);
/// // A response, then the connection closed 50 ms later, while idle.
/// let then_idle_close = RawReply::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..])
///     .close_after(Duration::from_millis(50));
/// # let _ = (overlong, then_idle_close);
/// ```
#[derive(Clone, Debug)]
pub struct RawReply {
    bytes: Content,
    after: After,
    early: bool,
    trickle: Option<Duration>,
}

#[derive(Clone, Debug)]
enum Content {
    Fixed(Bytes),
    /// `HTTP/1.1 200 OK`, then header lines of 1 KiB until about `total` bytes, then the end
    /// of the head and an empty body.
    HeaderFlood {
        total: u64,
    },
}

#[derive(Clone, Copy, Debug)]
enum After {
    /// Read the next request on the same connection.
    KeepAlive,
    /// Wait this long, then close (half-close, then discard what the client still sends for a
    /// while, so the close is a FIN and not a reset).
    Close(Duration),
}

impl RawReply {
    /// These bytes, written as they are once the request (head and body) has arrived; the
    /// connection then stays open for the next request.
    pub fn new(bytes: impl Into<Bytes>) -> RawReply {
        RawReply {
            bytes: Content::Fixed(bytes.into()),
            after: After::KeepAlive,
            early: false,
            trickle: None,
        }
    }

    /// `HTTP/1.1 200 OK` and about `total` bytes of header lines (1 KiB each, generated as
    /// they are written), then an empty body. The count of bytes the server managed to write
    /// before the client gave up is in [`RawConversation::bytes_written`].
    pub fn header_flood(total: u64) -> RawReply {
        RawReply {
            bytes: Content::HeaderFlood { total },
            after: After::KeepAlive,
            early: false,
            trickle: None,
        }
    }

    /// Closes the connection after writing (at once).
    pub fn close(self) -> RawReply {
        self.close_after(Duration::ZERO)
    }

    /// Closes the connection `idle` after writing: the server closing a kept-alive connection
    /// while the client holds it idle in its pool. No `Connection: close` warns the client.
    pub fn close_after(mut self, idle: Duration) -> RawReply {
        self.after = After::Close(idle);
        self
    }

    /// Answers as soon as the request head has arrived, without reading the body; then the
    /// server half-closes, reads nothing more, and drops the connection a second later (a
    /// reset, when the client was still sending): a server refusing an upload early.
    pub fn early(mut self) -> RawReply {
        self.early = true;
        self
    }

    /// Writes the bytes one at a time, `every` apart.
    pub fn trickle(mut self, every: Duration) -> RawReply {
        self.trickle = Some(every);
        self
    }
}

/// A raw conversation endpoint made by [`TestServer::raw_conversation`], and what it saw.
#[derive(Debug)]
pub struct RawConversation {
    port: u16,
    stats: Arc<Stats>,
}

#[derive(Debug)]
struct Stats {
    replies: Vec<RawReply>,
    /// Requests answered so far, across connections (picks the next reply).
    served: AtomicUsize,
    /// One request counter per accepted connection, in accept order.
    connections: Mutex<Vec<Arc<AtomicUsize>>>,
    /// Requests whose head and whole body arrived.
    complete: AtomicUsize,
    /// Reply bytes written, over all connections.
    written: AtomicU64,
    /// Every request head, in arrival order, with the index of its connection.
    heads: Mutex<Vec<(usize, Bytes)>>,
}

impl RawConversation {
    /// `http://127.0.0.1:{port}{path}`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.stats.connections).len()
    }

    /// How many request heads each connection carried, one entry per connection in accept
    /// order.
    pub fn requests_per_connection(&self) -> Vec<usize> {
        lock(&self.stats.connections)
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect()
    }

    /// Requests whose head and whole body (by `Content-Length`, or chunked up to its last
    /// chunk and trailers) arrived. A request cut off mid-body is not counted; nor is one
    /// answered [`early`](RawReply::early).
    pub fn complete_requests(&self) -> usize {
        self.stats.complete.load(Ordering::SeqCst)
    }

    /// Reply bytes the server has written, over all connections.
    pub fn bytes_written(&self) -> u64 {
        self.stats.written.load(Ordering::SeqCst)
    }

    /// Every request head received (up to and including its blank line), in arrival order.
    pub fn heads(&self) -> Vec<Bytes> {
        lock(&self.stats.heads)
            .iter()
            .map(|(_, head)| head.clone())
            .collect()
    }

    /// For every request received, in arrival order, the connection it came on (its index in
    /// accept order, as in [`requests_per_connection`](Self::requests_per_connection)).
    pub fn request_connections(&self) -> Vec<usize> {
        lock(&self.stats.heads)
            .iter()
            .map(|(conn, _)| *conn)
            .collect()
    }
}

impl TestServer {
    /// A raw HTTP/1.1 conversation on a new listener: the n-th request received (on any of
    /// its connections) gets the n-th of `replies`, the last one repeating; connections are
    /// kept alive unless a reply says otherwise. See [`RawReply`] and [`RawConversation`].
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use keel_conformance::server::{RawReply, TestServer};
    ///
    /// let server = TestServer::start()?;
    /// let raw = server.raw_conversation(vec![
    ///     RawReply::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"[..]),
    /// ]);
    /// let addr = raw.url("").trim_start_matches("http://").to_owned();
    /// let mut socket = std::net::TcpStream::connect(addr)?;
    /// socket.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    /// socket.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    /// let one = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";
    /// let mut answers = vec![0u8; 2 * one.len()];
    /// socket.read_exact(&mut answers)?;
    /// assert_eq!(answers, format!("{one}{one}").as_bytes());
    /// assert_eq!(raw.requests_per_connection(), [2]);
    /// assert_eq!(raw.complete_requests(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If `replies` is empty, or no port can be bound on `127.0.0.1`.
    pub fn raw_conversation(&self, replies: Vec<RawReply>) -> RawConversation {
        assert!(!replies.is_empty(), "a raw conversation needs a reply");
        let listener = bind_std((std::net::Ipv4Addr::LOCALHOST, 0).into())
            .expect("keel test server: cannot bind a raw listener on 127.0.0.1");
        let port = listener
            .local_addr()
            .expect("keel test server: raw listener has no local address")
            .port();
        let stats = Arc::new(Stats {
            replies,
            served: AtomicUsize::new(0),
            connections: Mutex::new(Vec::new()),
            complete: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            heads: Mutex::new(Vec::new()),
        });
        let shutdown = self.shutdown.subscribe();
        let task_stats = Arc::clone(&stats);
        self.runtime.spawn(async move {
            if let Ok(listener) = TcpListener::from_std(listener) {
                converse(listener, task_stats, shutdown).await;
            }
        });
        RawConversation { port, stats }
    }
}

async fn converse(listener: TcpListener, stats: Arc<Stats>, mut shutdown: watch::Receiver<bool>) {
    while let Some(stream) = accept(&listener, &mut shutdown).await {
        let requests = Arc::new(AtomicUsize::new(0));
        let index = {
            let mut connections = lock(&stats.connections);
            connections.push(Arc::clone(&requests));
            connections.len() - 1
        };
        let stats = Arc::clone(&stats);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = connection(stream, index, &stats, &requests) => {}
                () = wait_shutdown(&mut shutdown) => {}
            }
        });
    }
}

/// What a request head says about its body.
enum Framing {
    Length(u64),
    Chunked,
}

/// Serves one connection until a reply closes it, the client goes away, or a request is
/// malformed.
async fn connection(mut stream: TcpStream, index: usize, stats: &Stats, requests: &AtomicUsize) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        let Some(head) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        requests.fetch_add(1, Ordering::SeqCst);
        let framing = framing(&head);
        lock(&stats.heads).push((index, head));
        let served = stats.served.fetch_add(1, Ordering::SeqCst);
        let reply = &stats.replies[served.min(stats.replies.len() - 1)];
        if !reply.early {
            let complete = match framing {
                Some(Framing::Length(n)) => read_exact_body(&mut stream, &mut buf, n).await,
                Some(Framing::Chunked) => read_chunked_body(&mut stream, &mut buf).await,
                None => false,
            };
            if !complete {
                return;
            }
            stats.complete.fetch_add(1, Ordering::SeqCst);
        }
        if !write_reply(&mut stream, reply, stats).await {
            return;
        }
        if reply.early {
            let _ = stream.shutdown().await;
            tokio::time::sleep(EARLY_HOLD).await;
            return;
        }
        if let After::Close(idle) = reply.after {
            tokio::time::sleep(idle).await;
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let drain = async { while let Ok(1..) = stream.read(&mut sink).await {} };
            let _ = tokio::time::timeout(RAW_LINGER, drain).await;
            return;
        }
    }
}

/// Reads more bytes into `buf`; false at the end of the stream or on an error.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    buf.reserve(8192);
    matches!(stream.read_buf(buf).await, Ok(1..))
}

/// The next request head (up to and including its blank line), or `None` when the client
/// closes, fails, or sends more than [`RAW_HEAD_LIMIT`] without ending a head.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Bytes> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buf.split_to(end + 4).freeze());
        }
        if buf.len() >= RAW_HEAD_LIMIT || !fill(stream, buf).await {
            return None;
        }
    }
}

/// The body framing of a request head: chunked, a length (0 when neither is given), or `None`
/// for framing this server refuses (an unparsable or repeated length).
fn framing(head: &[u8]) -> Option<Framing> {
    let text = String::from_utf8_lossy(head);
    let mut length = None;
    let mut chunked = false;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return None;
            }
            length = Some(value.parse::<u64>().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        }
    }
    if chunked {
        Some(Framing::Chunked)
    } else {
        Some(Framing::Length(length.unwrap_or(0)))
    }
}

/// Reads and discards `n` body bytes; false if the connection ends first or `n` is too large.
async fn read_exact_body(stream: &mut TcpStream, buf: &mut BytesMut, mut n: u64) -> bool {
    if n > BODY_LIMIT {
        return false;
    }
    loop {
        let take = n.min(buf.len() as u64) as usize;
        buf.advance(take);
        n -= take as u64;
        if n == 0 {
            return true;
        }
        if !fill(stream, buf).await {
            return false;
        }
    }
}

/// Reads a line ending in CRLF (without it); `None` if the connection ends first or the line
/// is too long.
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Bytes> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(end).freeze();
            buf.advance(2);
            return Some(line);
        }
        if buf.len() >= RAW_HEAD_LIMIT || !fill(stream, buf).await {
            return None;
        }
    }
}

/// Reads and discards a chunked body, through its last chunk and trailers; false if the
/// connection ends first or the framing is malformed.
async fn read_chunked_body(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    let mut total = 0u64;
    loop {
        let Some(line) = read_line(stream, buf).await else {
            return false;
        };
        let text = String::from_utf8_lossy(&line);
        let hex = text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = u64::from_str_radix(hex, 16) else {
            return false;
        };
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                match read_line(stream, buf).await {
                    None => return false,
                    Some(line) if line.is_empty() => return true,
                    Some(_) => {}
                }
            }
        }
        total = total.saturating_add(size);
        if total > BODY_LIMIT || !read_exact_body(stream, buf, size).await {
            return false;
        }
        match read_line(stream, buf).await {
            Some(line) if line.is_empty() => {}
            _ => return false,
        }
    }
}

/// Writes one reply, counting what was written; false if the client went away.
async fn write_reply(stream: &mut TcpStream, reply: &RawReply, stats: &Stats) -> bool {
    match &reply.bytes {
        Content::Fixed(bytes) => match reply.trickle {
            None => write_counted(stream, bytes, stats).await,
            Some(every) => {
                for (i, byte) in bytes.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    if !write_counted(stream, std::slice::from_ref(byte), stats).await {
                        return false;
                    }
                }
                true
            }
        },
        Content::HeaderFlood { total } => {
            if !write_counted(stream, b"HTTP/1.1 200 OK\r\n", stats).await {
                return false;
            }
            let mut sent = 0u64;
            let mut n = 0u64;
            // 64 lines of 1 KiB per write.
            while sent < *total {
                let mut block = Vec::with_capacity(64 * 1024);
                for _ in 0..64 {
                    let name = format!("x-flood-{n:08}: ");
                    block.extend_from_slice(name.as_bytes());
                    block.resize(block.len() + 1024 - name.len() - 2, b'a');
                    block.extend_from_slice(b"\r\n");
                    n += 1;
                }
                sent += block.len() as u64;
                if !write_counted(stream, &block, stats).await {
                    return false;
                }
            }
            write_counted(stream, b"content-length: 0\r\n\r\n", stats).await
        }
    }
}

async fn write_counted(stream: &mut TcpStream, bytes: &[u8], stats: &Stats) -> bool {
    if stream.write_all(bytes).await.is_err() || stream.flush().await.is_err() {
        return false;
    }
    stats
        .written
        .fetch_add(bytes.len() as u64, Ordering::SeqCst);
    true
}
