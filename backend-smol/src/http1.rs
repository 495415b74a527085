//! HTTP/1.1 connections: ureq-proto's sans-IO protocol over an async-io stream, driven by the
//! task that uses them.
//!
//! [ureq-proto] (the protocol core of ureq 3) turns a request into bytes, and bytes into a
//! response head and a de-chunked body; it never touches a socket. This module moves those
//! bytes: the send future writes the request and reads the head, the [`H1Body`] reads the body.
//! Nothing is spawned, so a connection only makes progress on the caller's task, on whatever
//! runtime that is; dropping the request future or a half-read body drops the connection,
//! which closes it.
//!
//! An idle connection in the pool is not polled at all; [`PoolConn::is_open`] reads once,
//! without waiting, before it is reused, which is when a close by the server (or bytes nobody
//! asked for) is noticed.
//!
//! [ureq-proto]: https://docs.rs/ureq-proto

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_io::{AsyncRead as _, AsyncWrite as _};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use keel_core::{Body, Error, ErrorKind, Origin, ResponseBody, Stage};
use ureq_proto::client::state::{RecvBody, RecvResponse, SendBody};
use ureq_proto::client::{
    Await100Result, Call, RecvBodyResult, RecvResponseResult, SendRequestResult,
};
use ureq_proto::BodyMode;

use crate::connect::Stream;
use crate::pool::{PoolConn, Pooled};

/// The read buffer a connection starts with. Reads that fill it grow it, up to [`MAX_READ`],
/// so a connection streaming a large body reads in large steps and an idle one stays small.
const READ_BUF: usize = 8 * 1024;
/// The most one read asks of the socket, and so the largest body frame. Each frame costs a
/// wake-up, a read and an allocation (and, for a chunked body, a pass that zeroes it before
/// ureq-proto copies the body into it): when every body took that pass, keel-smol streamed a
/// 1 GiB body (S3) at 70% of hyper's rate over the same TCP with 64 KiB frames, 91% with 256 KiB
/// (hyper reads up to about 400 KiB).
const MAX_READ: usize = 256 * 1024;
/// A body framed by length with at least this much still to come, on a connection without
/// TLS, is read straight into its frames (see [`Reader::Length`]).
const DIRECT_READ: usize = 16 * 1024;
/// The largest response head accepted (hyper's default limit is in the same range).
const MAX_HEAD: usize = 64 * 1024;
/// The write buffer a connection starts with; it grows to fit the request head.
const WRITE_BUF: usize = 2 * 1024;
/// Body chunks smaller than this are copied behind the head (one write for both); larger ones
/// go to the socket as they are.
const DIRECT_WRITE: usize = 8 * 1024;
/// The write buffer grows to fit small bodies and chunks up to this size.
const MAX_WRITE: usize = 16 * 1024;

/// An HTTP/1.1 connection: the stream and its two buffers, both kept across requests.
pub(crate) struct H1Conn {
    /// What only matters once per connection, boxed: the connection moves in and out of the
    /// pool for every request, and a larger one costs a larger copy each time.
    meta: Box<ConnMeta>,
    /// A request went out on it before.
    used: bool,
    io: Stream,
    /// Bytes read and not consumed yet are `read[start..end]`. Zero-filled once, when it is
    /// allocated or grown, never per read.
    read: Vec<u8>,
    /// `u32`s (the buffer never grows past the head limit) keep the connection small: it is
    /// moved in and out of the pool on every request.
    start: u32,
    end: u32,
    /// The last read filled all the room it had: the next one gets a larger buffer.
    read_filled: bool,
    /// Where ureq-proto writes the head and framed body chunks.
    write: Vec<u8>,
    /// A connection to an HTTP proxy that forwards requests: their targets are written in
    /// absolute form.
    forwarded: bool,
    /// A request went out on it only in part (the server answered before the body was all
    /// written): it never goes back to the pool.
    out_of_step: bool,
}

/// The per-connection facts of an [`H1Conn`].
struct ConnMeta {
    /// For its responses, when the client asked for them.
    facts: Option<keel_core::ConnectionFacts>,
    /// Counted as open until the connection is dropped.
    _open: keel_core::connect::OpenConnection,
}

impl H1Conn {
    /// An HTTP/1.1 connection on a connected stream (to an HTTP proxy that forwards requests,
    /// when `forwarded`). No bytes are exchanged yet.
    pub(crate) fn new(
        io: Stream,
        forwarded: bool,
        facts: Option<keel_core::ConnectionFacts>,
        open: keel_core::connect::OpenConnection,
    ) -> Self {
        Self {
            meta: Box::new(ConnMeta { facts, _open: open }),
            used: false,
            io,
            read: vec![0; READ_BUF],
            start: 0,
            end: 0,
            read_filled: false,
            write: vec![0; WRITE_BUF],
            forwarded,
            out_of_step: false,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.read[self.start as usize..self.end as usize]
    }

    fn consume(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes from the stream behind the buffered ones, keeping at most `limit`
    /// buffered. `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<io::Result<usize>> {
        if self.read_filled && self.start == self.end && self.read.len() < MAX_READ {
            let grown = (self.read.len() * 2).min(MAX_READ);
            self.read.resize(grown, 0);
        }
        if self.end as usize == self.read.len() {
            if self.start > 0 {
                self.read
                    .copy_within(self.start as usize..self.end as usize, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.read.len() < limit.min(u32::MAX as usize) {
                let grown = (self.read.len() * 2).min(limit).min(u32::MAX as usize);
                self.read.resize(grown, 0);
            } else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than {limit} bytes without a message boundary"),
                )));
            }
        }
        let end = self.end as usize;
        let room = self.read.len() - end;
        let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut self.read[end..]))?;
        // A reader that claims more than it was given is broken; don't let it panic us.
        let n = n.min(room);
        // The buffer's length fits a `u32`, so its end does.
        self.end += n as u32;
        self.read_filled = n == room;
        Poll::Ready(Ok(n))
    }

    /// Writes all of `data`; `written` turns true once the stream accepted a byte.
    async fn write_all(&mut self, mut data: &[u8], written: &mut bool) -> Result<(), Error> {
        while !data.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut self.io).poll_write(cx, data))
                .await
                .map_err(|e| write_error(e, *written))?;
            if n == 0 {
                return Err(write_error(io::ErrorKind::WriteZero.into(), *written));
            }
            *written = true;
            data = &data[n.min(data.len())..];
        }
        Ok(())
    }

    /// Writes the first `len` bytes of the write buffer.
    async fn write_buffered(&mut self, len: usize, written: &mut bool) -> Result<(), Error> {
        let out = std::mem::take(&mut self.write);
        let result = self.write_all(&out[..len], written).await;
        self.write = out;
        result
    }

    /// Writes the first `len` bytes of the write buffer and flushes the stream: the request is
    /// all out.
    async fn write_last(&mut self, len: usize, written: &mut bool) -> Result<(), Error> {
        self.write_buffered(len, written).await?;
        poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx))
            .await
            .map_err(|e| write_error(e, true))
    }
}

impl PoolConn for H1Conn {
    fn is_open(&mut self) -> bool {
        if self.start != self.end {
            // Bytes after the end of the last response: the connection is out of step.
            return false;
        }
        // Nobody waits on this poll: a read that doesn't block means the server closed the
        // connection, broke it, or sent something unasked; all three rule it out.
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut self.read)
            .is_pending()
    }
}

/// Sends `req` on an exclusive connection and returns the head with a body that keeps the
/// connection until the end of the body.
pub(crate) async fn send(
    mut pooled: Pooled<Origin, H1Conn>,
    req: Request<Body>,
) -> Result<Response<ResponseBody>, Error> {
    let (parts, mut body) = req.into_parts();
    // `Connection: close` asked by the caller: its response's connection is not kept.
    let asks_close = parts.headers.contains_key(CONNECTION)
        && has_token(parts.headers.get_all(CONNECTION), "close");
    // Kept to read a response that comes while the body is still going out (see below).
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let conn = pooled.conn_mut();
    // `scheme://authority` of the target, for a request forwarded by a proxy.
    let absolute = conn.forwarded.then(|| {
        let scheme = parts.uri.scheme_str().unwrap_or("http");
        let authority = parts.uri.authority().map_or("", |a| a.as_str());
        // Never the user info (see `strip_userinfo`).
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        format!("{scheme}://{host}")
    });
    let mut call = prepare(parts, &body)?.proceed();
    if conn.write.len() > MAX_WRITE {
        // An earlier request had an unusually large head; don't keep its buffer.
        conn.write = vec![0; WRITE_BUF];
    }

    // The head goes into the write buffer, grown until it fits.
    let mut len = 0;
    while !call.can_proceed() {
        match call.write(&mut conn.write[len..]) {
            Ok(n) if n > 0 => len += n,
            Ok(_) | Err(ureq_proto::Error::OutputOverflow) => {
                let grown = conn.write.len() * 2;
                conn.write.resize(grown, 0);
            }
            Err(e) => return Err(invalid_request(e)),
        }
    }
    if let Some(prefix) = absolute {
        len = absolute_form(&mut conn.write, len, prefix.as_bytes())?;
    }
    let mut written = false;
    let next = call.proceed().map_err(invalid_request)?;
    let sent = match next {
        Some(SendRequestResult::SendBody(call)) => {
            send_body(conn, call, len, &mut body, &mut written).await
        }
        // `Expect: 100-continue` set by the caller: the body goes out without waiting.
        Some(SendRequestResult::Await100(call)) => match call.proceed().map_err(invalid_request)? {
            Await100Result::SendBody(call) => {
                send_body(conn, call, len, &mut body, &mut written).await
            }
            Await100Result::RecvResponse(call) => {
                conn.write_last(len, &mut written).await?;
                Ok(call)
            }
        },
        Some(SendRequestResult::RecvResponse(call)) => {
            conn.write_last(len, &mut written).await?;
            Ok(call)
        }
        None => {
            return Err(invalid_request(
                "the request head was written but the protocol can't proceed",
            ))
        }
    };
    // A server may answer an upload before reading all of it (`413` to its head) and stop
    // reading: the body's write then fails, but the answer may be waiting in the socket. It is
    // read with a call of its own (ureq-proto's call can't leave the body half-sent), and the
    // caller gets it; the connection, out of step, is closed after it. Without an answer, the
    // caller gets the failed write.
    let (mut call, failed_write) = match sent {
        Ok(call) => (call, None),
        Err(err)
            if written
                && err.kind() == ErrorKind::Body
                && err.stage() == Some(Stage::SendRequest) =>
        {
            match reader_call(&method, &uri) {
                Some(call) => (call, Some(err)),
                None => return Err(err),
            }
        }
        Err(err) => return Err(err),
    };
    let head = match read_head(conn, &mut call).await {
        Ok(head) => head,
        Err(err) => return Err(failed_write.unwrap_or(err)),
    };
    if failed_write.is_some() {
        conn.out_of_step = true;
    }
    let facts = conn.meta.facts.as_ref().map(|f| f.for_response(conn.used));
    conn.used = true;
    let body = match call.proceed() {
        Some(RecvResponseResult::RecvBody(call)) => {
            let reader = match call.body_mode() {
                BodyMode::LengthDelimited(left)
                    if head.status() != StatusCode::SWITCHING_PROTOCOLS
                        && method != Method::CONNECT =>
                {
                    Reader::Length {
                        left,
                        keep_alive: !asks_close && keeps_alive(&head),
                        frame: Vec::new(),
                        frame_size: 4 * DIRECT_READ,
                    }
                }
                _ => Reader::Proto(Box::new(call)),
            };
            ResponseBody::new(H1Body {
                state: Some((pooled, reader)),
            })
        }
        Some(RecvResponseResult::Cleanup(call)) => {
            finish(pooled, !call.must_close_connection());
            ResponseBody::empty()
        }
        Some(RecvResponseResult::Redirect(call)) => {
            finish(pooled, !call.must_close_connection());
            ResponseBody::empty()
        }
        None => {
            return Err(Error::new(ErrorKind::Protocol)
                .with_stage(Stage::AwaitHead)
                .with_source("a response head without a body framing"))
        }
    };
    let body = match facts {
        Some(facts) => body.with_connection(facts),
        None => body,
    };
    Ok(head.map(|()| body))
}

/// The request as ureq-proto wants it: origin-form target from an absolute URI without
/// userinfo, HTTP/1.1, and a `Content-Length` when the body's size is known.
///
/// An empty body gets no framing here: keel-core has already put its framing in the headers
/// (`Content-Length: 0` or nothing, by method), and it goes out as it is. (Given an empty POST,
/// PUT or PATCH with no framing header, which keel-core never hands over, ureq-proto would
/// send it chunked.)
fn prepare(
    mut parts: http::request::Parts,
    body: &Body,
) -> Result<Call<ureq_proto::client::state::Prepare>, Error> {
    parts.version = Version::HTTP_11;
    strip_userinfo(&mut parts.uri);
    let framed =
        parts.headers.contains_key(CONTENT_LENGTH) || parts.headers.contains_key(TRANSFER_ENCODING);
    let exact = body.size_hint().exact();
    let sends_body = exact != Some(0);
    if let (false, Some(n @ 1..)) = (framed, exact) {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    let mut call = Call::new(Request::from_parts(parts, ())).map_err(invalid_request)?;
    call.allow_non_standard_methods(true);
    if sends_body {
        call.force_send_body();
    }
    Ok(call)
}

/// Turns the origin-form request line ureq-proto wrote (`GET /path HTTP/1.1`, in
/// `buf[..len]`) into absolute form (`GET http://host:port/path HTTP/1.1`) by inserting
/// `prefix` (`scheme://authority`) before the path, as a proxy expects; the new length.
fn absolute_form(buf: &mut Vec<u8>, len: usize, prefix: &[u8]) -> Result<usize, Error> {
    let at = buf[..len]
        .iter()
        .position(|&b| b == b' ')
        .map(|i| i + 1)
        .filter(|&i| buf.get(i) == Some(&b'/'))
        .ok_or_else(|| invalid_request("a request line without an origin-form target"))?;
    let new_len = len + prefix.len();
    if buf.len() < new_len {
        buf.resize(new_len, 0);
    }
    buf.copy_within(at..len, at + prefix.len());
    buf[at..at + prefix.len()].copy_from_slice(prefix);
    Ok(new_len)
}

/// keel hands transports absolute URIs; credentials in them never go on the wire from here
/// (ureq-proto would turn them into an `Authorization` header).
fn strip_userinfo(uri: &mut Uri) {
    let Some(authority) = uri.authority() else {
        return;
    };
    let Some((_, host)) = authority.as_str().rsplit_once('@') else {
        return;
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = host.parse().ok();
    if let Ok(stripped) = Uri::from_parts(parts) {
        *uri = stripped;
    }
}

/// Writes the head (`len` bytes in the write buffer) and the body behind it.
async fn send_body(
    conn: &mut H1Conn,
    mut call: Call<SendBody>,
    mut len: usize,
    body: &mut Body,
    written: &mut bool,
) -> Result<Call<RecvResponse>, Error> {
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                return Err(Error::new(ErrorKind::InvalidRequest)
                    .with_stage(Stage::SendRequest)
                    .with_source(e))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: HTTP/1.1 clients don't send them.
                Err(_) => continue,
            },
        };
        if !call.is_chunked() && data.len() >= DIRECT_WRITE {
            call.consume_direct_write(data.len())
                .map_err(invalid_request)?;
            conn.write_buffered(len, written).await?;
            len = 0;
            conn.write_all(&data, written).await?;
            continue;
        }
        // Room for the chunk behind what is buffered (a small body leaves with its head), up to
        // a bound: larger chunked bodies go out in pieces of that size.
        let wanted = (len + data.len() + 32).next_power_of_two().min(MAX_WRITE);
        if wanted > conn.write.len() {
            conn.write.resize(wanted, 0);
        }
        let mut input = &data[..];
        while !input.is_empty() {
            let (used, n) = call
                .write(input, &mut conn.write[len..])
                .map_err(invalid_request)?;
            len += n;
            input = &input[used..];
            if used == 0 && len == 0 {
                // Not even one framed chunk fits in the empty buffer.
                let grown = conn.write.len() * 2;
                conn.write.resize(grown, 0);
            } else if used == 0 || conn.write.len() - len < 64 {
                // The buffer is full: send it and start over.
                conn.write_buffered(len, written).await?;
                len = 0;
            }
        }
    }
    if call.is_chunked() {
        if conn.write.len() - len < 8 {
            conn.write_buffered(len, written).await?;
            len = 0;
        }
        let (_, n) = call
            .write(&[], &mut conn.write[len..])
            .map_err(invalid_request)?;
        len += n;
    }
    conn.write_last(len, written).await?;
    call.proceed().ok_or_else(|| {
        Error::new(ErrorKind::InvalidRequest)
            .with_stage(Stage::SendRequest)
            .with_source("the request body ended before its Content-Length")
    })
}

/// Reads until a final (non-1xx) response head has arrived.
async fn read_head(
    conn: &mut H1Conn,
    call: &mut Call<RecvResponse>,
) -> Result<Response<()>, Error> {
    loop {
        let (used, head) = call
            .try_response(conn.buffered(), false)
            .map_err(|e| protocol(e, Stage::AwaitHead))?;
        conn.consume(used);
        if let Some(head) = head {
            return Ok(head);
        }
        if used > 0 {
            // An informational (1xx) response went by; the real one follows.
            continue;
        }
        if conn.buffered().len() >= MAX_HEAD {
            return Err(protocol(
                format!("the response head is larger than {MAX_HEAD} bytes"),
                Stage::AwaitHead,
            ));
        }
        let n = poll_fn(|cx| conn.poll_fill(cx, MAX_HEAD))
            .await
            .map_err(|e| read_error(e, Stage::AwaitHead))?;
        if n == 0 {
            return Err(Error::new(ErrorKind::Body)
                .with_stage(Stage::AwaitHead)
                .with_source("the connection closed before a response head arrived"));
        }
    }
}

/// A call in the state of receiving the response to a bodiless `method` request for `uri`:
/// what reads a response that came before the request's body was all sent. `None` if
/// ureq-proto can't make one.
fn reader_call(method: &http::Method, uri: &Uri) -> Option<Call<RecvResponse>> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(uri.clone())
        .body(())
        .ok()?;
    strip_userinfo(req.uri_mut());
    req.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    let mut call = Call::new(req).ok()?;
    call.allow_non_standard_methods(true);
    let mut call = call.proceed();
    // The head goes nowhere: the state machine only has to pass it.
    let mut scratch = vec![0; 1024 + uri.to_string().len()];
    while !call.can_proceed() {
        match call.write(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
    match call.proceed().ok()? {
        Some(SendRequestResult::RecvResponse(call)) => Some(call),
        Some(SendRequestResult::SendBody(call)) => call.proceed(),
        _ => None,
    }
}

/// The exchange on `pooled` is over: back to the pool if it may carry another one.
fn finish(mut pooled: Pooled<Origin, H1Conn>, keep_alive: bool) {
    let conn = pooled.conn_mut();
    if keep_alive && !conn.out_of_step && conn.buffered().is_empty() {
        pooled.release(Instant::now());
    }
}

/// A response body that holds its connection: back to the pool at a clean end of the body,
/// closed when dropped before it.
struct H1Body {
    /// `None` once the body ended or failed (the connection was released or closed).
    state: Option<(Pooled<Origin, H1Conn>, Reader)>,
}

/// How a response body is taken off its connection.
enum Reader {
    /// Through ureq-proto: chunked and close-delimited bodies (boxed: the call is ten times
    /// the size of the other variant).
    Proto(Box<Call<RecvBody>>),
    /// A body framed by `Content-Length`, counted here: each frame is the bytes as they came,
    /// copied once out of the connection's read buffer, or, on a connection without TLS with
    /// at least [`DIRECT_READ`] bytes to come and none buffered, read from the socket straight
    /// into the frame. ureq-proto's reader would zero a buffer for every frame, copy into it,
    /// and hand every 16 bytes to `log::trace!` (whose level check alone took 20% of the
    /// client's CPU streaming 1 GiB, `perf record`).
    Length {
        /// Bytes still to come.
        left: u64,
        /// Whether the connection may carry another exchange once the body is all read (what
        /// ureq-proto's close reasons would say, worked out from the heads).
        keep_alive: bool,
        /// The next frame read straight from the socket (its capacity is kept across polls
        /// that find the socket empty). A read that fills at least half of it goes to the
        /// caller as it is; a shorter one is copied out and the buffer read into again, so a
        /// slow stream's frames don't each hold a large allocation.
        frame: Vec<u8>,
        /// How much the next read asks for: doubled (up to [`MAX_READ`]) after a read that
        /// filled it, halved (down to [`DIRECT_READ`]) after a short one.
        frame_size: usize,
    },
}

impl Reader {
    /// Every byte of a body framed by length or chunks has arrived. (ureq-proto lets a
    /// close-delimited body proceed at any time: only the close ends it.)
    fn complete(&self) -> bool {
        match self {
            Reader::Proto(call) => !close_delimited(call) && call.can_proceed(),
            Reader::Length { left, .. } => *left == 0,
        }
    }
}

/// Whether any of the comma-separated elements of `values` is `token` (ASCII, any case, as
/// RFC 9110 has it for `Connection`); `token` is lowercase.
fn has_token<'a>(values: impl IntoIterator<Item = &'a HeaderValue>, token: &str) -> bool {
    values
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|element| element.trim().eq_ignore_ascii_case(token))
}

/// Whether a response with this head leaves its connection open for another exchange: not
/// with `Connection: close`, and an HTTP/1.0 one only with `Connection: keep-alive`.
fn keeps_alive(head: &Response<()>) -> bool {
    let connection = head.headers().get_all(CONNECTION);
    if has_token(&connection, "close") {
        return false;
    }
    head.version() != Version::HTTP_10 || has_token(&connection, "keep-alive")
}

/// The body ends when the server closes the connection.
fn close_delimited(call: &Call<RecvBody>) -> bool {
    call.body_mode() == BodyMode::CloseDelimited
}

impl H1Body {
    /// The body reached its end: pool the connection if nothing says to close it.
    fn end(&mut self) {
        let Some((pooled, reader)) = self.state.take() else {
            return;
        };
        let keep_alive = match reader {
            // A close-delimited body is among the reasons ureq-proto gives to close.
            Reader::Proto(call) => match (*call).proceed() {
                Some(RecvBodyResult::Cleanup(call)) => !call.must_close_connection(),
                Some(RecvBodyResult::Redirect(call)) => !call.must_close_connection(),
                None => false,
            },
            Reader::Length {
                left, keep_alive, ..
            } => left == 0 && keep_alive,
        };
        finish(pooled, keep_alive);
    }

    fn fail(&mut self, err: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = None;
        Poll::Ready(Some(Err(err)))
    }
}

impl http_body::Body for H1Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some((pooled, reader)) = this.state.as_mut() else {
                return Poll::Ready(None);
            };
            if reader.complete() {
                this.end();
                return Poll::Ready(None);
            }
            let conn = pooled.conn_mut();
            let input = conn.buffered();
            match reader {
                Reader::Length { left, .. } if !input.is_empty() => {
                    let n = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let data = Bytes::copy_from_slice(&input[..n]);
                    conn.consume(n);
                    *left -= n as u64;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Reader::Proto(call) if !input.is_empty() => {
                    // Decoded output is never longer than its input.
                    let mut data = BytesMut::zeroed(input.len());
                    match call.read(input, &mut data) {
                        Ok((used, produced)) => {
                            conn.consume(used);
                            if produced > 0 {
                                data.truncate(produced);
                                return Poll::Ready(Some(Ok(Frame::data(data.freeze()))));
                            }
                            if used > 0 {
                                continue;
                            }
                        }
                        Err(e) => return this.fail(protocol(e, Stage::Body)),
                    }
                }
                Reader::Length {
                    left,
                    frame,
                    frame_size,
                    ..
                } if *left >= DIRECT_READ as u64 => {
                    if let Some(tcp) = conn.io.plain_mut() {
                        let want = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(*frame_size);
                        match ready!(tcp.poll_read_vec(cx, frame, want)) {
                            Ok(0) => return this.fail(closed_before_the_end()),
                            Ok(n) => {
                                *left -= n as u64;
                                let data = if n >= want / 2 {
                                    if n == want {
                                        *frame_size = (*frame_size * 2).min(MAX_READ);
                                    }
                                    Bytes::from(std::mem::take(frame))
                                } else {
                                    // A short read: its bytes are copied out, and the buffer
                                    // serves the next read (shrinking it in place instead
                                    // fragmented the heap: S3's peak RSS went from 11 to 23
                                    // MiB).
                                    *frame_size = (*frame_size / 2).max(DIRECT_READ);
                                    let data = Bytes::copy_from_slice(frame);
                                    frame.clear();
                                    data
                                };
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                            Err(e) => return this.fail(read_error(e, Stage::Body)),
                        }
                    }
                }
                _ => {}
            }
            let close_delimited = matches!(reader, Reader::Proto(call) if close_delimited(call));
            match ready!(conn.poll_fill(cx, MAX_HEAD)) {
                Ok(0) if close_delimited => {
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(closed_before_the_end()),
                Ok(_) => {}
                Err(e) => return this.fail(read_error(e, Stage::Body)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            None => true,
            Some((_, reader)) => reader.complete(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            None => SizeHint::with_exact(0),
            Some((_, Reader::Length { left, .. })) => SizeHint::with_exact(*left),
            Some((_, Reader::Proto(_))) => SizeHint::default(),
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body that delivered all its bytes but was not polled to its end still completed
        // its exchange; any other body dropped early closes its connection.
        if self.is_end_stream() {
            self.end();
        }
    }
}

fn closed_before_the_end() -> Error {
    Error::new(ErrorKind::Body)
        .with_stage(Stage::Body)
        .with_source("the connection closed before the end of the body")
}

fn invalid_request(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::new(ErrorKind::InvalidRequest)
        .with_stage(Stage::SendRequest)
        .with_source(e)
}

fn protocol(e: impl Into<Box<dyn std::error::Error + Send + Sync>>, stage: Stage) -> Error {
    Error::new(ErrorKind::Protocol)
        .with_stage(stage)
        .with_source(e)
}

/// A failed write: unsent when the stream accepted none of the request.
fn write_error(e: io::Error, written: bool) -> Error {
    let err = Error::new(ErrorKind::Body)
        .with_stage(Stage::SendRequest)
        .with_source(e);
    if written {
        err
    } else {
        err.with_unsent()
    }
}

fn read_error(e: io::Error, stage: Stage) -> Error {
    if stage == Stage::AwaitHead && keel_core::tls::is_handshake_alert(&e) {
        // TLS 1.3: the server refused the handshake (a client certificate, most often) after
        // the client had finished its side; it never read the request.
        return keel_core::tls::handshake_refused(e);
    }
    let kind = if e.kind() == io::ErrorKind::InvalidData {
        ErrorKind::Protocol
    } else {
        ErrorKind::Body
    };
    Error::new(kind).with_stage(stage).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_request_line_is_in_absolute_form() {
        let head = b"GET /a?b HTTP/1.1\r\nhost: h:8080\r\n\r\n";
        let mut buf = head.to_vec();
        let len = absolute_form(&mut buf, head.len(), b"http://h:8080").unwrap();
        assert_eq!(
            &buf[..len],
            b"GET http://h:8080/a?b HTTP/1.1\r\nhost: h:8080\r\n\r\n"
        );
        // Room to spare in the buffer: only `len` bytes count.
        let mut buf = head.to_vec();
        buf.resize(200, 0);
        let len = absolute_form(&mut buf, head.len(), b"http://h").unwrap();
        assert!(buf[..len].starts_with(b"GET http://h/a?b HTTP/1.1\r\n"));
        assert!(absolute_form(&mut b"GET * HTTP/1.1\r\n".to_vec(), 16, b"http://h").is_err());
    }

    #[test]
    fn userinfo_never_reaches_the_uri_sent() {
        let mut uri: Uri = "http://user:pw@example.test:8080/a?b=c".parse().unwrap();
        strip_userinfo(&mut uri);
        assert_eq!(uri, "http://example.test:8080/a?b=c");
        let mut plain: Uri = "http://example.test/a".parse().unwrap();
        strip_userinfo(&mut plain);
        assert_eq!(plain, "http://example.test/a");
    }
}
