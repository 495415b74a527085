//! An HTTP/2 server that misbehaves on purpose, frame by frame: GOAWAY below a stream in
//! flight, RST_STREAM `REFUSED_STREAM`, a peer that never grants flow-control window.
//!
//! hyper's server decides those things itself, so this one writes the frames by hand (RFC
//! 9113), over TLS with ALPN `h2` only. It never decodes the client's header blocks: every
//! stream gets the same answer (`200`, `content-length: 2`, body `ok`) unless the fault says
//! otherwise, so it needs no HPACK decoder. What it does understand: SETTINGS (acknowledged),
//! PING (answered), HEADERS and CONTINUATION (a stream's head, by its flags), DATA (counted,
//! and the window given back unless the fault withholds it), GOAWAY (the client leaves).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::netfaults::{FaultCert, FaultPki};
use super::{accept, bind_std, lock, wait_shutdown, TestServer};

/// The client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const REFUSED_STREAM: u32 = 0x7;
const NO_ERROR: u32 = 0x0;

/// The largest frame payload accepted from a client (it may not send more than 16 KiB unless
/// the server's SETTINGS allow it; these never do).
const MAX_FRAME: usize = 16_384;

/// The window a [`H2Fault::NoWindow`] server grants each stream, and never more.
pub const NO_WINDOW_GRANT: u32 = 16_384;

/// How long a [`H2Fault::GoAwayMidStream`] connection waits for the second stream before it
/// sends its GOAWAY anyway.
const GOAWAY_WAIT: Duration = Duration::from_secs(3);

/// What a [`TestServer::h2_fault_url`] server does wrong.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Fault {
    /// On the first connection, the first stream is answered with its head (`content-length:
    /// 1000`) and 100 bytes of body, no more. When the client opens a second stream there (or
    /// after 3 s), the server sends GOAWAY with `NO_ERROR` and the first stream as the last it
    /// processed, then closes the connection: the second stream was never processed (the
    /// client may retry it anywhere), the first was processed and is cut. Later connections
    /// are answered normally.
    GoAwayMidStream,
    /// The first stream the server sees (on any connection) is reset with `REFUSED_STREAM`
    /// as soon as its head arrives; every later stream is answered normally.
    RefusedStream,
    /// Every stream may send [`NO_WINDOW_GRANT`] bytes of body (`SETTINGS_INITIAL_WINDOW_SIZE`)
    /// and the server never sends WINDOW_UPDATE: an upload larger than that stalls, and its
    /// stream is never answered. Streams without a body are answered normally.
    NoWindow,
}

/// What an [`H2Fault`] server saw, shared with the [`H2FaultServer`] handle.
#[derive(Debug, Default)]
struct Seen {
    connections: AtomicUsize,
    /// For each connection in accept order, the heads of the streams it received.
    heads: Mutex<Vec<usize>>,
    /// Streams answered with a complete `200`.
    answered: AtomicUsize,
    /// Bytes of DATA payload received, on every connection.
    data: AtomicUsize,
}

/// A running [`H2Fault`] server: its URL and what it has seen.
#[derive(Clone, Debug)]
pub struct H2FaultServer {
    url: String,
    seen: Arc<Seen>,
}

impl H2FaultServer {
    /// `https://localhost:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// TLS connections accepted (handshake or not).
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// For each connection that completed the HTTP/2 preface, how many stream heads it
    /// received, in accept order.
    pub fn heads_per_connection(&self) -> Vec<usize> {
        lock(&self.seen.heads).clone()
    }

    /// Streams answered with a complete `200` (`ok`).
    pub fn answered(&self) -> usize {
        self.seen.answered.load(Ordering::SeqCst)
    }

    /// Bytes of request body (DATA frame payload, padding included) received so far, on
    /// every connection.
    pub fn data_received(&self) -> usize {
        self.seen.data.load(Ordering::SeqCst)
    }
}

impl TestServer {
    /// Starts an HTTP/2 server with `fault` on a new port, behind TLS with ALPN `h2` only and
    /// a certificate for `localhost` from `pki` (trust [`FaultPki::ca_pem`]). Served until
    /// this server shuts down.
    ///
    /// # Errors
    ///
    /// If the certificate can't be made or no port can be bound.
    pub fn h2_fault_url(&self, pki: &FaultPki, fault: H2Fault) -> io::Result<H2FaultServer> {
        let config = pki.server_config(FaultCert::Valid, &[b"h2"])?;
        let listener = bind_std(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Seen::default());
        let handle = H2FaultServer {
            url: format!("https://localhost:{port}"),
            seen: Arc::clone(&seen),
        };
        let mut shutdown = self.shutdown.subscribe();
        let acceptor = TlsAcceptor::from(config);
        let refused_once = Arc::new(AtomicUsize::new(0));
        self.runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            while let Some(stream) = accept(&listener, &mut shutdown).await {
                let _ = stream.set_nodelay(true);
                let index = seen.connections.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let seen = Arc::clone(&seen);
                let refused_once = Arc::clone(&refused_once);
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let conn = async {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let behaviour = Behaviour {
                            fault,
                            first_connection: index == 0,
                            refused_once,
                            seen,
                        };
                        let _ = serve(tls, behaviour).await;
                    };
                    tokio::select! {
                        () = conn => {}
                        () = wait_shutdown(&mut shutdown) => {}
                    }
                });
            }
        });
        Ok(handle)
    }
}

/// One connection's part of the fault.
struct Behaviour {
    fault: H2Fault,
    first_connection: bool,
    /// How many streams were refused so far, server-wide ([`H2Fault::RefusedStream`]).
    refused_once: Arc<AtomicUsize>,
    seen: Arc<Seen>,
}

/// One frame from the client.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<Frame> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame over 16 KiB",
        ));
    }
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// One frame: the 9-byte header, then `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(9 + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A response head block: `:status: 200` (static table index 8) and `content-length` (static
/// name index 28, literal value, not indexed, no Huffman).
fn head_block(content_length: usize) -> Vec<u8> {
    let value = content_length.to_string();
    let mut block = vec![0x88, 0x0f, 28 - 15, value.len() as u8];
    block.extend_from_slice(value.as_bytes());
    block
}

/// Serves one connection with `b`'s fault until the client leaves, the fault ends it, or it
/// fails.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, b: Behaviour) -> io::Result<()> {
    let mut preface = [0u8; 24];
    io.read_exact(&mut preface).await?;
    if preface != PREFACE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no HTTP/2 preface",
        ));
    }
    let conn = {
        let mut heads = lock(&b.seen.heads);
        heads.push(0);
        heads.len() - 1
    };
    // SETTINGS_MAX_CONCURRENT_STREAMS = 100, and for NoWindow SETTINGS_INITIAL_WINDOW_SIZE.
    let mut settings = vec![0, 3];
    settings.extend_from_slice(&100u32.to_be_bytes());
    if b.fault == H2Fault::NoWindow {
        settings.extend_from_slice(&[0, 4]);
        settings.extend_from_slice(&NO_WINDOW_GRANT.to_be_bytes());
    }
    io.write_all(&frame(SETTINGS, 0, 0, &settings)).await?;
    io.flush().await?;

    let goaway = b.fault == H2Fault::GoAwayMidStream && b.first_connection;
    // A head split over CONTINUATION frames: its stream and whether it ended the stream.
    let mut pending: Option<(u32, bool)> = None;
    // GoAwayMidStream: the stream answered in part.
    let mut first: Option<u32> = None;
    // RefusedStream: the stream reset (its DATA is ignored).
    let mut refused: Option<u32> = None;
    loop {
        let next = if goaway && first.is_some() {
            match tokio::time::timeout(GOAWAY_WAIT, read_frame(&mut io)).await {
                Ok(next) => next?,
                Err(_) => return go_away(io, first.unwrap_or(0)).await,
            }
        } else {
            read_frame(&mut io).await?
        };
        let mut head = None;
        match next.kind {
            SETTINGS if next.flags & ACK == 0 => {
                io.write_all(&frame(SETTINGS, ACK, 0, &[])).await?;
            }
            PING if next.flags & ACK == 0 => {
                io.write_all(&frame(PING, ACK, 0, &next.payload)).await?;
            }
            GOAWAY => return Ok(()),
            HEADERS if next.flags & END_HEADERS != 0 => {
                head = Some((next.stream, next.flags & END_STREAM != 0));
            }
            HEADERS => pending = Some((next.stream, next.flags & END_STREAM != 0)),
            CONTINUATION if next.flags & END_HEADERS != 0 => head = pending.take(),
            DATA => {
                b.seen.data.fetch_add(next.payload.len(), Ordering::SeqCst);
                let len = next.payload.len() as u32;
                let end = next.flags & END_STREAM != 0;
                if len > 0 && b.fault != H2Fault::NoWindow {
                    io.write_all(&frame(WINDOW_UPDATE, 0, 0, &len.to_be_bytes()))
                        .await?;
                    if !end && refused != Some(next.stream) {
                        io.write_all(&frame(WINDOW_UPDATE, 0, next.stream, &len.to_be_bytes()))
                            .await?;
                    }
                }
                if end && refused != Some(next.stream) && first != Some(next.stream) {
                    answer(&mut io, next.stream, &b).await?;
                }
            }
            _ => {}
        }
        if let Some((stream, end)) = head {
            lock(&b.seen.heads)[conn] += 1;
            if b.fault == H2Fault::RefusedStream
                && b.refused_once.fetch_add(1, Ordering::SeqCst) == 0
            {
                refused = Some(stream);
                io.write_all(&frame(RST_STREAM, 0, stream, &REFUSED_STREAM.to_be_bytes()))
                    .await?;
            } else if goaway && first.is_none() {
                first = Some(stream);
                io.write_all(&frame(HEADERS, END_HEADERS, stream, &head_block(1000)))
                    .await?;
                io.write_all(&frame(DATA, 0, stream, &[b'x'; 100])).await?;
            } else if goaway {
                return go_away(io, first.unwrap_or(0)).await;
            } else if end {
                answer(&mut io, stream, &b).await?;
            }
        }
        io.flush().await?;
    }
}

/// Answers `stream` with `200` and the body `ok`.
async fn answer<S: AsyncWrite + Unpin>(io: &mut S, stream: u32, b: &Behaviour) -> io::Result<()> {
    // Counted before the answer goes out: a client that has read it may look at the count at
    // once (on another thread, on tokio's multi-thread runtime).
    b.seen.answered.fetch_add(1, Ordering::SeqCst);
    io.write_all(&frame(HEADERS, END_HEADERS, stream, &head_block(2)))
        .await?;
    io.write_all(&frame(DATA, END_STREAM, stream, b"ok"))
        .await?;
    Ok(())
}

/// Sends GOAWAY (`NO_ERROR`, `last` the last stream processed), closes the write side (TLS
/// close_notify, then FIN), drains what the client still sends for up to a second so the
/// close is not a reset, and ends the connection.
async fn go_away<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, last: u32) -> io::Result<()> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&NO_ERROR.to_be_bytes());
    io.write_all(&frame(GOAWAY, 0, 0, &payload)).await?;
    io.flush().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    io.shutdown().await?;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}
