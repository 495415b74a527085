use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use futures_core::Stream;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::Uri;
use http::{HeaderMap, StatusCode, Version};
use http_body::Body as _;
use serde::de::DeserializeOwned;

use super::pending::Call;
use super::pipeline::{CallRecord, Guards};
use super::DEFAULT_MAX_BODY_SIZE;
use crate::body::ResponseBody;
use crate::error::{Error, ErrorKind, Stage, TimeoutPhase};
use crate::machine::decode::{ContentDecoder, DecodeLimits};
use crate::machine::redirect::Hop;
use crate::machine::retry::GiveUpReason;
use crate::redact;
use crate::transport::{ConnectionInfo, Sleep, Timer};

/// A response whose head has arrived; the body is read on demand.
///
/// Every way of reading the body applies the read-idle timeout between chunks and the call's
/// deadline. [`bytes`](Response::bytes), [`text`](Response::text) and [`json`](Response::json)
/// also refuse bodies over the client's size limit; [`chunk`](Response::chunk) and
/// [`bytes_stream`](Response::bytes_stream) hold one chunk at a time, whatever the size.
///
/// A body in a `Content-Encoding` keel knows (gzip, deflate, br, zstd) is decoded as it is
/// read, in pieces of at most [`DECODED_PIECE`](Response::DECODED_PIECE) bytes, under the
/// client's decoded-size and ratio limits (see
/// [`ClientBuilder::decompress`](crate::ClientBuilder::decompress)); the size limit of the
/// buffered readers counts decoded bytes. Such a response shows neither `Content-Encoding`
/// nor `Content-Length` in its [`headers`](Response::headers): they describe the encoded body.
///
/// Dropping a response before its body is read to the end closes its connection.
pub struct Response {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    url: Uri,
    /// What the backend said about the connection (all `None` when it said nothing).
    connection: Option<Arc<ConnectionInfo>>,
    max_body_size: u64,
    /// The response to a `HEAD`: its `Content-Length` describes a body that isn't sent.
    head_request: bool,
    /// What the call did: attempts, redirects, why retrying stopped.
    record: CallRecord,
    /// The call, for retrying it when the body fails mid-way in a buffered read.
    resume: Option<Box<Call>>,
    body: BodyReader,
}

/// The limits a response's body is read under.
pub(super) struct Limits {
    pub(super) read_idle: Duration,
    pub(super) deadline: Instant,
    pub(super) max_body_size: u64,
    pub(super) head_request: bool,
    /// Decode the body out of its `Content-Encoding`, under these limits.
    pub(super) decode: Option<DecodeLimits>,
}

impl Response {
    /// The most body bytes [`error_for_status`](Response::error_for_status) keeps on the error.
    pub const SNIPPET_LIMIT: usize = 4096;

    /// The largest chunk a decoded body is read in: 64 KiB. However small the encoded chunk
    /// that arrives, no more than this is decoded from it at a time.
    pub const DECODED_PIECE: usize = 64 * 1024;

    pub(super) fn new(
        head: http::Response<ResponseBody>,
        url: Uri,
        timer: Arc<dyn Timer>,
        limits: Limits,
        record: CallRecord,
        guards: Guards,
        resume: Option<Box<Call>>,
    ) -> Self {
        let (mut parts, body) = head.into_parts();
        // `Set-Cookie` (and any other credential a server sends back) never prints, not even
        // through `headers()` or a status error's `response_headers()`.
        crate::machine::credentials::mark_standard(&mut parts.headers);
        let decoding = match limits.decode {
            Some(decode)
                if !limits.head_request
                    && has_body(parts.status)
                    && parts.headers.contains_key(CONTENT_ENCODING) =>
            {
                Decoding::start(&mut parts.headers, decode)
            }
            _ => None,
        };
        Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            url,
            connection: body.connection_facts(),
            max_body_size: limits.max_body_size,
            head_request: limits.head_request,
            record,
            resume,
            body: BodyReader {
                guards,
                body,
                timer,
                read_idle: limits.read_idle,
                deadline: limits.deadline,
                idle_from: None,
                sleep: None,
                done: false,
                decoding,
            },
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The HTTP version the response came over.
    pub fn version(&self) -> Version {
        self.version
    }

    /// What the backend knows of the connection this response came over: the remote and local
    /// addresses, and whether the connection was reused. A fact the backend can't know is
    /// `None`; [`Capabilities::connection_addrs`](crate::Capabilities::connection_addrs) and
    /// [`Capabilities::connection_reused`](crate::Capabilities::connection_reused) say which
    /// facts a backend gives.
    ///
    /// ```
    /// # async fn run(client: keel_core::Client<impl keel_core::Backend>) -> Result<(), keel_core::Error> {
    /// let first = client.get("/health").send().await?;
    /// let conn = first.connection();
    /// if let (Some(addr), Some(reused)) = (conn.remote_addr, conn.reused) {
    ///     println!("{addr} over {:?}, reused: {reused}", first.version());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn connection(&self) -> ConnectionInfo {
        self.connection.as_deref().copied().unwrap_or_default()
    }

    /// The response headers.
    ///
    /// The values of `Set-Cookie`, `Cookie`, `Authorization` and `Proxy-Authorization` are
    /// marked [sensitive](http::HeaderValue::is_sensitive): their `Debug` prints `Sensitive`.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The URL of the request this responds to: after redirects, the last one.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The redirects followed to get here, in order (empty when there were none).
    pub fn redirects(&self) -> &[Hop] {
        self.record.hops()
    }

    /// How many attempts the call made, the first included (redirect hops are not attempts).
    pub fn attempts(&self) -> u32 {
        self.record.attempts()
    }

    /// Why the call stopped retrying although this response was worth retrying (a `503` on
    /// the last attempt allowed, a `Retry-After` too long, …); `None` when it was not worth
    /// retrying.
    pub fn gave_up(&self) -> Option<&GiveUpReason> {
        self.record.gave_up()
    }

    /// What the call did: attempts, redirects, why retrying stopped.
    pub fn record(&self) -> &CallRecord {
        &self.record
    }

    /// The `Content-Length` the server declared, if any.
    ///
    /// `None` for a body keel decodes: the server's length is the encoded body's (see
    /// [`encoded_length`](Self::encoded_length)), and the decoded length is known only at its
    /// end.
    pub fn content_length(&self) -> Option<u64> {
        parse_length(&self.headers)
    }

    /// The codings keel undoes as the body is read, in the order the server applied them
    /// (the `Content-Encoding` it removed from the headers); empty when the body is read as
    /// it came.
    pub fn decoded_from(&self) -> Vec<crate::machine::decode::Coding> {
        self.body
            .decoding
            .as_ref()
            .map(|d| d.decoder.codings().collect())
            .unwrap_or_default()
    }

    /// For a body keel decodes, the `Content-Length` the server declared for the encoded body
    /// (removed from the headers).
    pub fn encoded_length(&self) -> Option<u64> {
        self.body.decoding.as_ref().and_then(|d| d.encoded_length)
    }

    /// Turns a 4xx or 5xx response into an [`ErrorKind::Status`] error that keeps the headers
    /// and up to [`SNIPPET_LIMIT`](Response::SNIPPET_LIMIT) bytes of the body; passes other
    /// responses through untouched.
    pub async fn error_for_status(mut self) -> Result<Self, Error> {
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return Ok(self);
        }
        let mut snippet = BytesMut::new();
        // A failure while reading the snippet must not hide the status: keep what arrived.
        while snippet.len() < Self::SNIPPET_LIMIT {
            match self.chunk().await {
                Ok(Some(chunk)) => {
                    let room = Self::SNIPPET_LIMIT - snippet.len();
                    snippet.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let headers = std::mem::take(&mut self.headers);
        let record = std::mem::take(&mut self.record);
        // When the server said when to come back (a spent quota, `Retry-After`), the error
        // says it too: an SDK can report it without parsing the headers again.
        let retry_in = match self.status.as_u16() {
            403 | 429 | 503 => {
                let now = self.body.timer.now_system();
                crate::machine::rate::quota_hold(self.status, &headers, now)
                    .map(|hold| hold.delay)
                    .or_else(|| crate::machine::retry::retry_after_from_headers(&headers, now))
            }
            _ => None,
        };
        let err = Error::status(self.status, headers, snippet.freeze())
            .with_url(self.url.clone())
            .with_record(record);
        Err(match retry_in {
            Some(wait) => err.with_retry_in(wait),
            None => err,
        })
    }

    /// The next chunk of the body, or `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        poll_fn(|cx| self.body.poll_chunk(cx, &self.url)).await
    }

    /// The whole body, refused with [`ErrorKind::BodyTooLarge`] if it is larger than the
    /// client's `max_body_size` (checked against `Content-Length` before reading, and while
    /// reading).
    ///
    /// If the connection fails mid-body and the call's retry policy allows it (an idempotent
    /// request, attempts and deadline left), the request is sent again and the new body read
    /// from the start, so a buffered read never returns half a body. The streaming readers
    /// ([`chunk`](Response::chunk), [`bytes_stream`](Response::bytes_stream)) never retry:
    /// the caller has already seen the first part.
    pub async fn bytes(mut self) -> Result<Bytes, Error> {
        loop {
            let err = match self.read_to_end().await {
                Ok(bytes) => return Ok(bytes),
                Err(err) => err,
            };
            let Some(call) = self.resume.take() else {
                return Err(err.with_record(std::mem::take(&mut self.record)));
            };
            let status = self.status;
            let record = std::mem::take(&mut self.record);
            // The connection and the policies' guards go back before the next attempt.
            self.body.finish();
            self = call.on_body_failure(record, err)?.await?;
            if self.status != status {
                // The retry was answered differently (say a 503 after a 200): that answer is
                // the outcome, not a body to hand back as if it were the first one's.
                let headers = std::mem::take(&mut self.headers);
                let record = std::mem::take(&mut self.record);
                return Err(Error::status(self.status, headers, Bytes::new())
                    .with_url(self.url.clone())
                    .with_record(record));
            }
        }
    }

    async fn read_to_end(&mut self) -> Result<Bytes, Error> {
        let limit = self.max_body_size;
        let too_large = |url: &Uri| {
            Error::new(ErrorKind::BodyTooLarge { limit })
                .with_stage(Stage::Body)
                .with_url(url.clone())
        };
        // The backend's size hint is exact when the length is declared (and zero after a HEAD);
        // the header is the fallback for backends that give no hint.
        let declared = if self.head_request || self.body.decoding.is_some() {
            // A decoded body's length is known only at its end.
            None
        } else {
            self.body
                .body
                .size_hint()
                .exact()
                .or_else(|| self.content_length())
        };
        if declared.is_some_and(|len| len > limit) {
            return Err(too_large(&self.url));
        }
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        if first.len() as u64 > limit {
            return Err(too_large(&self.url));
        }
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let capacity = declared
            .unwrap_or(0)
            .max((first.len() + second.len()) as u64);
        // `Content-Length` is only the server's word: never reserve more than the default limit
        // up front (a huge declared length under a raised limit must not abort the process).
        let capacity = capacity.min(limit).min(DEFAULT_MAX_BODY_SIZE);
        let mut buf = BytesMut::with_capacity(capacity as usize);
        buf.extend_from_slice(&first);
        let mut next = Some(second);
        while let Some(chunk) = next {
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(too_large(&self.url));
            }
            buf.extend_from_slice(&chunk);
            next = self.chunk().await?;
        }
        Ok(buf.freeze())
    }

    /// The body as text, decoded with the charset named in `Content-Type` (UTF-8 when none is
    /// named or the name is unknown; a byte-order mark wins over both). Malformed sequences
    /// become U+FFFD, as a browser shows them.
    pub async fn text(self) -> Result<String, Error> {
        let encoding = text_encoding(&self.headers);
        let bytes = self.bytes().await?;
        let (text, _, _) = encoding.decode(&bytes);
        Ok(text.into_owned())
    }

    /// The body decoded from JSON. On failure the error's [`Error::json_path`] says where in the
    /// document decoding stopped.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let url = self.url.clone();
        let bytes = self.bytes().await?;
        decode_json(&url, &bytes)
    }

    /// The body as a stream of chunks, holding one at a time.
    pub fn bytes_stream(self) -> BodyStream {
        BodyStream {
            url: self.url,
            body: self.body,
        }
    }
}

/// The charset `Content-Type` names for a text body: UTF-8 when none is named or the name is
/// unknown (a byte-order mark, when there is one, wins over it in `decode`).
pub(crate) fn text_encoding(headers: &HeaderMap) -> &'static encoding_rs::Encoding {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .and_then(|m| {
            m.get_param(mime::CHARSET)
                .and_then(|c| encoding_rs::Encoding::for_label(c.as_str().as_bytes()))
        })
        .unwrap_or(encoding_rs::UTF_8)
}

/// `bytes` decoded from JSON, with the path where decoding stopped on failure.
pub(crate) fn decode_json<T: DeserializeOwned>(url: &Uri, bytes: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        Error::decode(path, e.into_inner()).with_url(url.clone())
    })
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("url", &redact::url(&self.url))
            .field("status", &self.status)
            .field("version", &self.version)
            .field("connection", &self.connection)
            .field("headers", &redact::headers(&self.headers))
            .finish()
    }
}

/// The body of a [`Response`] as a [`Stream`] of chunks, with the read-idle timeout and the
/// deadline applied. Dropping it before its end closes the connection.
pub struct BodyStream {
    url: Uri,
    body: BodyReader,
}

impl Stream for BodyStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.body.poll_chunk(cx, &this.url).map(Result::transpose)
    }
}

impl fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyStream")
            .field("url", &redact::url(&self.url))
            .field("done", &self.body.done)
            .field("decoding", &self.body.decoding.is_some())
            .finish()
    }
}

/// Reads a body chunk by chunk under the read-idle timeout and the deadline.
///
/// Silence is measured from the moment the reader asked for the next chunk and found none (the
/// first read, or the caller coming back after a chunk), so a slow consumer is never mistaken
/// for a slow server.
///
/// One sleep is armed at a time. A chunk only moves the start of the silence; when the sleep
/// fires early because chunks kept arriving, it is re-armed for the new idle limit. The clock
/// is read only when the body has nothing ready: a body that is already there costs no clock
/// read and no timer.
struct BodyReader {
    body: ResponseBody,
    /// What the policies hold for this response (permits, probe slots): given back when the
    /// body ends or the response is dropped.
    guards: Guards,
    timer: Arc<dyn Timer>,
    read_idle: Duration,
    deadline: Instant,
    /// When the reader started waiting for the next chunk; `None` until it finds none ready.
    idle_from: Option<Instant>,
    sleep: Option<Sleep>,
    done: bool,
    /// The decoder, for a body in a `Content-Encoding` keel undoes (boxed: most bodies are
    /// read as they came).
    decoding: Option<Box<Decoding>>,
}

/// A body being decoded: the machine, the encoded chunk it is working through, and the
/// buffer it decodes into.
struct Decoding {
    decoder: ContentDecoder,
    /// What is left of the last encoded chunk.
    input: Bytes,
    /// The decoder may have more to give without more input.
    more: bool,
    /// The encoded body has ended: what is left comes from `finish`.
    ended: bool,
    /// Everything was handed out, or decoding failed.
    over: bool,
    /// Decoded bytes are written here, then copied out in a chunk of their exact size.
    piece: Box<[u8]>,
    encoded_length: Option<u64>,
}

impl Decoding {
    /// A decoder for a response with these headers, which lose their `Content-Encoding` and
    /// `Content-Length`; `None` (headers untouched) when the body is to be read as it came.
    fn start(headers: &mut http::HeaderMap, limits: DecodeLimits) -> Option<Box<Self>> {
        let decoder = ContentDecoder::from_headers(headers, limits)?;
        let encoded_length = parse_length(headers);
        headers.remove(CONTENT_ENCODING);
        headers.remove(CONTENT_LENGTH);
        Some(Box::new(Self {
            decoder,
            input: Bytes::new(),
            more: false,
            ended: false,
            over: false,
            piece: vec![0; Response::DECODED_PIECE].into_boxed_slice(),
            encoded_length,
        }))
    }
}

/// Whether a response with this status has a body at all (RFC 9110, 6.4.1).
fn has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

fn parse_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

impl BodyReader {
    /// The next chunk of the body, decoded when it has a `Content-Encoding` keel undoes.
    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        url: &Uri,
    ) -> Poll<Result<Option<Bytes>, Error>> {
        let Some(mut decoding) = self.decoding.take() else {
            return self.poll_wire(cx, url);
        };
        let polled = self.poll_decoded(&mut decoding, cx, url);
        self.decoding = Some(decoding);
        polled
    }

    /// The next decoded piece: from what the decoder holds, or from the next encoded chunk.
    /// The read-idle timeout and the deadline apply to the encoded chunks, as they arrive.
    fn poll_decoded(
        &mut self,
        d: &mut Decoding,
        cx: &mut Context<'_>,
        url: &Uri,
    ) -> Poll<Result<Option<Bytes>, Error>> {
        loop {
            if d.over {
                return Poll::Ready(Ok(None));
            }
            let decoded = if d.ended {
                d.decoder.finish(&mut d.piece)
            } else if d.more {
                d.decoder
                    .decode(&d.input, &mut d.piece)
                    .map(|(used, written)| {
                        d.input.advance(used);
                        written
                    })
            } else {
                match ready!(self.poll_wire(cx, url)) {
                    Ok(Some(chunk)) => {
                        d.input = chunk;
                        d.more = true;
                    }
                    Ok(None) => d.ended = true,
                    Err(err) => {
                        d.over = true;
                        return Poll::Ready(Err(err));
                    }
                }
                continue;
            };
            match decoded {
                Ok(0) if d.ended => {
                    d.over = true;
                    return Poll::Ready(Ok(None));
                }
                Ok(0) => {
                    // All of the chunk is in: the next one is needed.
                    d.more = false;
                    d.input = Bytes::new();
                }
                Ok(written) => {
                    return Poll::Ready(Ok(Some(Bytes::copy_from_slice(&d.piece[..written]))));
                }
                Err(err) => {
                    d.over = true;
                    self.finish();
                    return Poll::Ready(Err(Error::from(err).with_url(url.clone())));
                }
            }
        }
    }

    /// The next chunk as the backend delivers it, under the read-idle timeout and the
    /// deadline.
    fn poll_wire(&mut self, cx: &mut Context<'_>, url: &Uri) -> Poll<Result<Option<Bytes>, Error>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            // The idle clock restarts when the caller comes back for more, so
                            // time the caller spends on a chunk never counts as silence.
                            self.idle_from = None;
                            return Poll::Ready(Ok(Some(data)));
                        }
                    }
                    continue;
                }
                Poll::Ready(Some(Err(err))) => {
                    self.finish();
                    let err = if err.stage().is_some() {
                        err
                    } else {
                        err.with_stage(Stage::Body)
                    };
                    return Poll::Ready(Err(err.with_url(url.clone())));
                }
                Poll::Ready(None) => {
                    self.finish();
                    return Poll::Ready(Ok(None));
                }
                Poll::Pending => {}
            }
            // The body is waiting on the network: make sure a sleep will wake us at the limit.
            let timer = &self.timer;
            let idle_from = *self.idle_from.get_or_insert_with(|| timer.now());
            let idle_limit = idle_from
                .checked_add(self.read_idle)
                .unwrap_or(self.deadline);
            let due = idle_limit.min(self.deadline);
            let sleep = self
                .sleep
                .get_or_insert_with(|| self.timer.sleep_until(due));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = self.timer.now();
            if now >= due {
                let phase = if now >= self.deadline {
                    TimeoutPhase::Deadline
                } else {
                    TimeoutPhase::ReadIdle
                };
                // The body goes with the backend told why (its connection may have gone
                // silent: see `connect::abandoned_on_timeout`).
                crate::connect::on_timeout(|| self.finish());
                return Poll::Ready(Err(Error::new(ErrorKind::Timeout(phase))
                    .with_stage(Stage::Body)
                    .with_url(url.clone())));
            }
            // Data arrived since the sleep was armed: arm it for the new limit and poll again.
            self.sleep = Some(self.timer.sleep_until(due));
        }
    }

    /// Drops the body (closing its connection if it wasn't read to the end) and the sleep.
    fn finish(&mut self) {
        self.done = true;
        self.sleep = None;
        self.body = ResponseBody::empty();
        self.guards.clear();
    }
}
