//! The routes served on the plain and TLS listeners, and scripted replies.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http::header::{
    HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};

use super::encoded::encoded_sample;
use super::{lock, State};

/// The error type of response bodies.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the server sends.
pub(super) type ResBody = UnsyncBoxBody<Bytes, BoxError>;

/// Largest request body `/echo` reads; beyond it the answer is 413.
const ECHO_LIMIT: usize = 64 * 1024 * 1024;

/// Size of the chunks `/bytes`, `/reset` and `/wrong-length` stream.
const CHUNK: usize = 64 * 1024;

/// The period of the `/bytes` pattern: byte `i` is `(i % 251) as u8`.
const PERIOD: usize = 251;

/// Largest `bytes` accepted by `/encoded`.
const MAX_ENCODED: usize = 16 * 1024 * 1024;

/// Largest `mib` accepted by `/bomb`: 4 GiB decoded (gzip counts the size mod 2^32).
const MAX_BOMB_MIB: u64 = 4096;

/// Declared length of a `/stall` response.
const STALL_LENGTH: u64 = 1_000_000;

/// Largest `chunk` accepted by `/drip`.
const MAX_DRIP_CHUNK: usize = 16 * 1024 * 1024;

/// How long a body that is about to fail or end early waits first, so hyper
/// flushes what was already written (it drops unflushed bytes on body errors).
const FLUSH_GRACE: Duration = Duration::from_millis(50);

/// One scripted reply, registered with [`TestServer::script`](super::TestServer::script).
///
/// Built with [`Reply::status`] and refined with the other methods:
///
/// ```
/// use std::time::Duration;
/// use keel_conformance::server::Reply;
///
/// let busy = Reply::status(503)
///     .header("Retry-After", "1")
///     .body("busy")
///     .delay(Duration::from_millis(20));
/// # let _ = busy;
/// ```
///
/// A reply that cannot be sent as written (a status outside `100..=999`, an
/// invalid header name or value) is answered with 500 and a text body that
/// says why, instead of panicking.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    delay: Duration,
    reset_after: Option<usize>,
}

impl Reply {
    /// A reply with this status code, no extra headers, an empty body and no delay.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: code,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
            reset_after: None,
        }
    }

    /// Sends only the first `n` bytes of the body, under the whole body's `Content-Length`,
    /// then aborts the connection (HTTP/1.1) or resets the stream (HTTP/2): a failure mid-body.
    pub fn reset_after(mut self, n: usize) -> Reply {
        self.reset_after = Some(n);
        self
    }

    /// Adds a header (repeat the call to send a header several times).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body (sent with an exact `Content-Length`).
    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// Waits this long before sending the response head.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Builds the response, or explains why it cannot be built.
    fn to_response(&self) -> Result<Response<ResBody>, String> {
        let status = StatusCode::from_u16(self.status)
            .map_err(|_| format!("scripted reply has invalid status {}", self.status))?;
        let mut res = match self.reset_after {
            None => Response::new(full(self.body.clone())),
            Some(n) => {
                let sent = self.body.slice(..n.min(self.body.len()));
                let fail = stream::once(async {
                    tokio::time::sleep(FLUSH_GRACE).await;
                    Err::<Frame<Bytes>, BoxError>("scripted reset by the conformance server".into())
                });
                let body = stream::once(async move { Ok(Frame::data(sent)) }).chain(fail);
                streaming(body, Some(self.body.len() as u64))
            }
        };
        *res.status_mut() = status;
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("scripted reply has invalid header name {name:?}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("scripted reply has invalid header value {value:?}"))?;
            res.headers_mut().append(name, value);
        }
        Ok(res)
    }
}

/// The scripted replies registered under one name, and how many were served.
#[derive(Debug)]
pub(super) struct Script {
    replies: Vec<Reply>,
    served: usize,
}

impl Script {
    /// A script that has not been requested yet.
    pub(super) fn new(replies: Vec<Reply>) -> Script {
        Script { replies, served: 0 }
    }

    /// The reply for the next request: the n-th reply for the n-th request,
    /// then the last one again and again.
    fn next_reply(&mut self) -> Option<Reply> {
        let last = self.replies.len().checked_sub(1)?;
        let reply = self.replies[self.served.min(last)].clone();
        self.served = self.served.saturating_add(1);
        Some(reply)
    }
}

/// An answer that short-circuits a route: a status and a text body.
struct Reject(StatusCode, String);

impl Reject {
    fn bad(message: impl Into<String>) -> Reject {
        Reject(StatusCode::BAD_REQUEST, message.into())
    }
}

/// Answers one request. Never panics: problems become 4xx/5xx, and only a route that drops
/// the connection on purpose (`/multipart/digest`) fails.
pub(super) async fn respond(
    req: Request<Incoming>,
    state: &State,
) -> Result<Response<ResBody>, super::multipart::Aborted> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/multipart/") {
        let query = req.uri().query().map(str::to_owned);
        return super::multipart::respond(req, state, &path, query.as_deref()).await;
    }
    Ok(match route(req, state).await {
        Ok(res) => res,
        Err(Reject(status, message)) => text(status, message),
    })
}

async fn route(req: Request<Incoming>, state: &State) -> Result<Response<ResBody>, Reject> {
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());

    if let Some(name) = path.strip_prefix("/script/") {
        return script(state, &percent_decode(name, false)).await;
    }

    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(&path).split('/').collect();
    match segments.as_slice() {
        ["status", code] => status(code, &query),
        ["delay", ms] => delay(ms).await,
        ["stall"] => stall(&query),
        ["drip"] => drip(&query),
        ["bytes", n] => bytes(n),
        ["reset"] => reset(&query),
        ["wrong-length"] => wrong_length(&query),
        ["encoded", coding] => encoded(coding, &query),
        ["bomb"] => bomb(&query),
        ["echo"] => echo(req).await,
        ["redirect", code] => redirect(code, &query, req).await,
        ["chain", n] => chain(n),
        ["loop", which] => redirect_loop(which),
        ["sse", "feed"] => sse_feed(&req, &query),
        ["sse", "chat"] => sse_chat(req).await,
        ["ndjson"] => ndjson(&query),
        ["collection"] => collection(&query),
        ["file", _name] => file(&req, &query, state, &path),
        _ => Err(Reject(
            StatusCode::NOT_FOUND,
            format!("no route for {path}"),
        )),
    }
}

/// `/status/{code}?body=..&header=Name:Value`.
fn status(code: &str, query: &Query) -> Result<Response<ResBody>, Reject> {
    let code: u16 = parse_segment("status code", code)?;
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| Reject::bad(format!("unsupported status code {code}")))?;
    let body = query.get("body").unwrap_or_default().to_owned();
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    for header in query.all("header") {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| Reject::bad(format!("header parameter {header:?} is not Name:Value")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Reject::bad(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| Reject::bad(format!("invalid header value {value:?}")))?;
        res.headers_mut().append(name, value);
    }
    Ok(res)
}

/// `/delay/{ms}`.
async fn delay(ms: &str) -> Result<Response<ResBody>, Reject> {
    let ms: u64 = parse_segment("delay", ms)?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(text(StatusCode::OK, "delayed"))
}

/// `/stall?bytes=N`.
fn stall(query: &Query) -> Result<Response<ResBody>, Reject> {
    let n: u64 = query.num("bytes", 0)?;
    if n > STALL_LENGTH {
        return Err(Reject::bad(format!("bytes must be at most {STALL_LENGTH}")));
    }
    let head = pattern(n).map(Ok);
    let body = head.chain(stream::pending());
    Ok(streaming(body, Some(STALL_LENGTH)))
}

/// `/drip?chunk=N&interval_ms=T&count=K`.
fn drip(query: &Query) -> Result<Response<ResBody>, Reject> {
    let chunk: usize = query.num("chunk", 1)?;
    let interval: u64 = query.num("interval_ms", 100)?;
    let count: u64 = query.num("count", 10)?;
    if chunk > MAX_DRIP_CHUNK {
        return Err(Reject::bad(format!(
            "chunk must be at most {MAX_DRIP_CHUNK}"
        )));
    }
    let data = Bytes::from(vec![b'x'; chunk]);
    let interval = Duration::from_millis(interval);
    let body = stream::unfold(0u64, move |sent| {
        let data = data.clone();
        async move {
            if sent >= count {
                return None;
            }
            if sent > 0 {
                tokio::time::sleep(interval).await;
            }
            Some((Ok(Frame::data(data)), sent + 1))
        }
    });
    Ok(streaming(body, None))
}

/// `/bytes/{n}`.
fn bytes(n: &str) -> Result<Response<ResBody>, Reject> {
    let n: u64 = parse_segment("length", n)?;
    Ok(streaming(pattern(n).map(Ok), Some(n)))
}

/// `/reset?after=N`.
fn reset(query: &Query) -> Result<Response<ResBody>, Reject> {
    let after: u64 = query.num("after", 0)?;
    let declared = after
        .checked_mul(2)
        .and_then(|d| d.checked_add(1000))
        .ok_or_else(|| Reject::bad("after is too large"))?;
    let fail = stream::once(async {
        tokio::time::sleep(FLUSH_GRACE).await;
        Err::<Frame<Bytes>, BoxError>("deliberate reset by the conformance server".into())
    });
    let body = pattern(after).map(Ok).chain(fail);
    Ok(streaming(body, Some(declared)))
}

/// `/file/{name}?bytes=N&etag=E&reset_every=K&etag_changes_after=C`: a resource of `N`
/// bytes that supports `Range: bytes=S-` (a `206` with `Content-Range`) and `If-Range`
/// (a mismatch gets the whole body, `200`), with a strong `ETag: "E-v"`. Version `v` is 1
/// until `C` requests to this path were served, then 2; byte `i` of version `v` is
/// `(i + 7 * (v - 1)) % 251`, so bytes of the two versions never agree. With `K`, every
/// response body is reset after `K` bytes (a failure mid-body).
fn file(
    req: &Request<Incoming>,
    query: &Query,
    state: &State,
    path: &str,
) -> Result<Response<ResBody>, Reject> {
    let len: u64 = query.required("bytes")?;
    let etag = query.get("etag").unwrap_or("file");
    let reset_every: u64 = query.num("reset_every", 0)?;
    let changes_after: u64 = query.num("etag_changes_after", u64::MAX)?;
    // This request is already in the log: earlier ones are the others.
    let served = lock(&state.log)
        .requests
        .iter()
        .filter(|r| r.path == path)
        .count()
        .saturating_sub(1) as u64;
    let version: u64 = if served >= changes_after { 2 } else { 1 };
    let tag = format!("\"{etag}-{version}\"");
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let if_range_ok = header(http::header::IF_RANGE).is_none_or(|v| v == tag);
    let start = header(http::header::RANGE)
        .filter(|_| if_range_ok)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<u64>().ok());
    let mut res = match start {
        Some(start) if start >= len => {
            let mut res = text(StatusCode::RANGE_NOT_SATISFIABLE, "");
            res.headers_mut().insert(
                http::header::CONTENT_RANGE,
                header_value(&format!("bytes */{len}"))?,
            );
            res
        }
        start => {
            let from = start.unwrap_or(0);
            let rest = len - from;
            let shift = 7 * (version - 1);
            let body = pattern_from(from + shift, rest).map(Ok);
            let mut res = match reset_every {
                0 => streaming(body, Some(rest)),
                k if k < rest => {
                    let fail = stream::once(async {
                        tokio::time::sleep(FLUSH_GRACE).await;
                        Err::<Frame<Bytes>, BoxError>(
                            "deliberate reset by the conformance server".into(),
                        )
                    });
                    let cut = pattern_from(from + shift, k).map(Ok).chain(fail);
                    streaming(cut, Some(rest))
                }
                _ => streaming(body, Some(rest)),
            };
            if start.is_some() {
                *res.status_mut() = StatusCode::PARTIAL_CONTENT;
                res.headers_mut().insert(
                    http::header::CONTENT_RANGE,
                    header_value(&format!("bytes {from}-{}/{len}", len - 1))?,
                );
            }
            res
        }
    };
    res.headers_mut()
        .insert(http::header::ETAG, header_value(&tag)?);
    res.headers_mut().insert(
        http::header::ACCEPT_RANGES,
        HeaderValue::from_static("bytes"),
    );
    Ok(res)
}

fn header_value(value: &str) -> Result<HeaderValue, Reject> {
    HeaderValue::from_str(value).map_err(|_| Reject::bad(format!("invalid header value {value:?}")))
}

/// `/wrong-length?declared=D&actual=A`.
fn wrong_length(query: &Query) -> Result<Response<ResBody>, Reject> {
    let declared: u64 = query.required("declared")?;
    let actual: u64 = query.required("actual")?;
    let end = stream::once(tokio::time::sleep(FLUSH_GRACE))
        .filter_map(|()| async { None::<Result<Frame<Bytes>, BoxError>> });
    let body = pattern(actual).map(Ok).chain(end);
    Ok(streaming(body, Some(declared)))
}

/// `/encoded/{coding}?bytes=N&truncate=K`.
fn encoded(coding: &str, query: &Query) -> Result<Response<ResBody>, Reject> {
    let n: usize = query.num("bytes", 1000)?;
    let truncate: usize = query.num("truncate", 0)?;
    if n > MAX_ENCODED {
        return Err(Reject::bad(format!("bytes must be at most {MAX_ENCODED}")));
    }
    let (mut body, content_encoding) = super::encoded::encode(coding, &encoded_sample(n))
        .ok_or_else(|| Reject(StatusCode::NOT_FOUND, format!("no coding {coding:?}")))?;
    body.truncate(body.len().saturating_sub(truncate));
    let body = Bytes::from(body);
    let len = body.len() as u64;
    let frames = (0..body.len())
        .step_by(CHUNK)
        .map(move |at| Ok(Frame::data(body.slice(at..(at + CHUNK).min(body.len())))))
        .collect::<Vec<_>>();
    let mut res = streaming(stream::iter(frames), Some(len));
    let headers = res.headers_mut();
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(content_encoding));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(res)
}

/// `/bomb?mib=N`.
fn bomb(query: &Query) -> Result<Response<ResBody>, Reject> {
    let mib: u64 = query.num("mib", 1024)?;
    if mib > MAX_BOMB_MIB {
        return Err(Reject::bad(format!("mib must be at most {MAX_BOMB_MIB}")));
    }
    let (parts, len) = super::encoded::gzip_bomb(mib);
    let frames = stream::iter(parts.into_iter().map(|part| Ok(Frame::data(part))));
    let mut res = streaming(frames, Some(len));
    res.headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    Ok(res)
}

/// `/echo`.
async fn echo(req: Request<Incoming>) -> Result<Response<ResBody>, Reject> {
    let (parts, body) = req.into_parts();
    let too_large = || {
        Reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {ECHO_LIMIT} bytes"),
        )
    };
    if body.size_hint().lower() > ECHO_LIMIT as u64 {
        return Err(too_large());
    }
    let body = match Limited::new(body, ECHO_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => return Err(Reject::bad(format!("failed to read the request body: {e}"))),
    };

    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        headers.insert(name.as_str().to_owned(), serde_json::Value::Array(values));
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_len": body.len(),
        "version": format!("{:?}", parts.version),
    });
    let mut res = Response::new(full(json.to_string()));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(res)
}

/// `/script/{name}`.
async fn script(state: &State, name: &str) -> Result<Response<ResBody>, Reject> {
    let reply = {
        let mut scripts = lock(&state.scripts);
        let script = scripts
            .get_mut(name)
            .ok_or_else(|| Reject(StatusCode::NOT_FOUND, format!("no script named {name:?}")))?;
        script.next_reply().ok_or_else(|| {
            Reject(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("script {name:?} has no replies"),
            )
        })?
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    reply
        .to_response()
        .map_err(|message| Reject(StatusCode::INTERNAL_SERVER_ERROR, message))
}

// Redirect routes.

/// `/redirect/{status}?to=<percent-encoded target>`: that 3xx status with `Location: <target>`,
/// the target sent as given (relative or absolute). The request body is read (and discarded)
/// first, so a client still uploading sees the redirect, not a connection closed under it.
async fn redirect(
    code: &str,
    query: &Query,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Reject> {
    let code: u16 = parse_segment("status code", code)?;
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(StatusCode::is_redirection)
        .ok_or_else(|| Reject::bad(format!("{code} is not a 3xx status")))?;
    let target = query
        .get("to")
        .ok_or_else(|| Reject::bad("missing query parameter \"to\""))?;
    let res = moved(status, target)?;
    Limited::new(req.into_body(), ECHO_LIMIT)
        .collect()
        .await
        .map_err(|e| Reject::bad(format!("failed to read the request body: {e}")))?;
    Ok(res)
}

/// `/chain/{n}`: 302 to `/chain/{n-1}`; `/chain/0` is 200 with the body `end`.
fn chain(n: &str) -> Result<Response<ResBody>, Reject> {
    let n: u64 = parse_segment("chain length", n)?;
    match n.checked_sub(1) {
        None => Ok(text(StatusCode::OK, "end")),
        Some(next) => moved(StatusCode::FOUND, &format!("/chain/{next}")),
    }
}

/// `/loop/a` → 302 `/loop/b`, `/loop/b` → 302 `/loop/a`.
fn redirect_loop(which: &str) -> Result<Response<ResBody>, Reject> {
    match which {
        "a" => moved(StatusCode::FOUND, "/loop/b"),
        "b" => moved(StatusCode::FOUND, "/loop/a"),
        _ => Err(Reject(
            StatusCode::NOT_FOUND,
            format!("no route for /loop/{which}"),
        )),
    }
}

/// A redirect to `location` with an empty body, or 400 if `location` can't be a header value.
fn moved(status: StatusCode, location: &str) -> Result<Response<ResBody>, Reject> {
    let location = HeaderValue::from_bytes(location.as_bytes())
        .map_err(|_| Reject::bad(format!("invalid Location {location:?}")))?;
    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = status;
    res.headers_mut().insert(LOCATION, location);
    Ok(res)
}

/// A complete body with an exact length.
pub(super) fn full(data: impl Into<Bytes>) -> ResBody {
    Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A text/plain response.
pub(super) fn text(status: StatusCode, message: impl Into<Bytes>) -> Response<ResBody> {
    let mut res = Response::new(full(message));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A 200 response with a streamed body (no size hint, so hyper uses chunked
/// encoding on HTTP/1.1 unless `content_length` is given, which is then written
/// as the `Content-Length` header verbatim, whatever the body really holds).
fn streaming<S>(body: S, content_length: Option<u64>) -> Response<ResBody>
where
    S: Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static,
{
    let mut res = Response::new(StreamBody::new(body).boxed_unsync());
    if let Some(len) = content_length {
        res.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    res
}

/// The first `len` bytes of the infinite pattern `i % 251`, as data frames
/// of at most 64 KiB, generated lazily without copying.
fn pattern(len: u64) -> impl Stream<Item = Frame<Bytes>> + Send + 'static {
    pattern_from(0, len)
}

/// `len` bytes of the pattern `i % 251` from byte `from` on, as [`pattern`] gives them.
fn pattern_from(from: u64, len: u64) -> impl Stream<Item = Frame<Bytes>> + Send + 'static {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    let source = PATTERN
        .get_or_init(|| {
            (0..CHUNK + PERIOD)
                .map(|i| (i % PERIOD) as u8)
                .collect::<Vec<u8>>()
                .into()
        })
        .clone();
    stream::iter((0..len).step_by(CHUNK)).map(move |at| {
        let size = usize::try_from(len - at).map_or(CHUNK, |rest| rest.min(CHUNK));
        let start = ((from.wrapping_add(at)) % PERIOD as u64) as usize;
        Frame::data(source.slice(start..start + size))
    })
}

/// Parses a path segment, or rejects the request with 400.
fn parse_segment<T: FromStr>(what: &str, raw: &str) -> Result<T, Reject> {
    raw.parse()
        .map_err(|_| Reject::bad(format!("invalid {what} {raw:?}")))
}

/// Decoded query parameters, in order.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key, true), percent_decode(value, true))
            })
            .collect();
        Query(pairs)
    }

    /// The last value of `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The number under `key`, `default` when absent, 400 when malformed.
    fn num<T: FromStr>(&self, key: &str, default: T) -> Result<T, Reject> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => parse_segment(key, raw),
        }
    }

    /// The number under `key`, 400 when absent or malformed.
    fn required<T: FromStr>(&self, key: &str) -> Result<T, Reject> {
        let raw = self
            .get(key)
            .ok_or_else(|| Reject::bad(format!("missing query parameter {key:?}")))?;
        parse_segment(key, raw)
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); malformed
/// escapes are kept literally and invalid UTF-8 is replaced.
fn percent_decode(raw: &str, plus_is_space: bool) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let raw = raw.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let decoded = raw
                    .get(i + 1)
                    .and_then(|&h| hex(h))
                    .zip(raw.get(i + 2).and_then(|&l| hex(l)));
                if let Some((h, l)) = decoded {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Streams: server-sent events and NDJSON.

fn event_stream<S>(body: S) -> Response<ResBody>
where
    S: Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static,
{
    let mut res = streaming(body, None);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    res
}

/// `/sse/feed?events=N&per=K`: events `1..=N` (`id: k`, `data: event k`), `K` per
/// connection. A connection that isn't the last is cut in the middle of an event; the last
/// ends cleanly; a request whose `Last-Event-ID` is `N` gets `204`. A `Last-Event-ID` that is
/// not where a connection ended is refused with `400`, so a client that loses or repeats an
/// event fails. Every connection starts with `retry: 50`.
fn sse_feed(req: &Request<Incoming>, query: &Query) -> Result<Response<ResBody>, Reject> {
    let total: u64 = query.num("events", 10)?;
    let per: u64 = query.num("per", 4)?.max(1);
    let last: u64 = match req.headers().get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Reject::bad("Last-Event-ID is not a number"))?,
    };
    if last >= total {
        let mut res = Response::new(full(Bytes::new()));
        *res.status_mut() = StatusCode::NO_CONTENT;
        return Ok(res);
    }
    if last % per != 0 {
        return Err(Reject::bad(format!(
            "Last-Event-ID {last} is not where a connection ended"
        )));
    }
    let end = (last + per).min(total);
    let mut text = String::from(": a comment, then the reconnection time\nretry: 50\n\n");
    for k in last + 1..=end {
        text.push_str(&format!("id: {k}\ndata: event {k}\n\n"));
    }
    let first = stream::once(async move { Ok(Frame::data(Bytes::from(text))) });
    if end < total {
        let half = stream::once(async {
            Ok(Frame::data(Bytes::from_static(
                b"id: never\ndata: cut in the middle of an ev",
            )))
        });
        let fail = stream::once(async {
            tokio::time::sleep(FLUSH_GRACE).await;
            Err::<Frame<Bytes>, BoxError>("deliberate cut by the conformance server".into())
        });
        Ok(event_stream(first.chain(half).chain(fail)))
    } else {
        Ok(event_stream(first))
    }
}

/// `POST /sse/chat` with `{"prompt": "..."}`: one event per word of the prompt
/// (`data: {"token":"word "}`), then `data: [DONE]`, as the streaming APIs of language models
/// answer.
async fn sse_chat(req: Request<Incoming>) -> Result<Response<ResBody>, Reject> {
    if req.method() != http::Method::POST {
        return Err(Reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST a JSON body".to_owned(),
        ));
    }
    let body = Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| Reject::bad(format!("reading the body: {e}")))?
        .to_bytes();
    let prompt: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| Reject::bad(format!("not JSON: {e}")))?;
    let prompt = prompt["prompt"]
        .as_str()
        .ok_or_else(|| Reject::bad("no \"prompt\" string"))?
        .to_owned();
    let events: Vec<Result<Frame<Bytes>, BoxError>> = prompt
        .split_whitespace()
        .map(|word| {
            let token = serde_json::json!({ "token": format!("{word} ") });
            Ok(Frame::data(Bytes::from(format!("data: {token}\n\n"))))
        })
        .chain(std::iter::once(Ok(Frame::data(Bytes::from_static(
            b"data: [DONE]\n\n",
        )))))
        .collect();
    Ok(event_stream(stream::iter(events)))
}

/// `/ndjson?lines=N`: `{"n":k}` for `k` in `0..N`, one per line, generated lazily in chunks
/// of 1,000 lines.
fn ndjson(query: &Query) -> Result<Response<ResBody>, Reject> {
    let lines: u64 = query.num("lines", 1000)?;
    let chunks = stream::iter((0..lines).step_by(1000)).map(move |start| {
        let mut text = String::new();
        for n in start..(start + 1000).min(lines) {
            text.push_str(&format!("{{\"n\":{n}}}\n"));
        }
        Ok::<_, BoxError>(Frame::data(Bytes::from(text)))
    });
    let mut res = streaming(chunks, None);
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(res)
}

/// `/collection?style=S&per=N&total=T` (T = 10,000 by default): the items `{"id": k}` for
/// `k` in `0..T`, paginated in style S:
/// - `link`: `?page=P` (from 1), the items as the body, `Link: <...>; rel="next"` (relative,
///   quoted rel, with a `last` link in the same header) until the last page;
/// - `cursor`: `?cursor=C`, `{"data": [...], "next_cursor": "..."|null}`;
/// - `stripe`: `?starting_after=ID`, `{"data": [...], "has_more": bool}`;
/// - `next`: `?page=P`, `{"data": [...], "links": {"next": "/collection?..."|null}}`;
/// - `offset`: `?offset=O&limit=L`, `{"results": [...], "total": T}`;
/// - `page`: `?page=P`, `{"items": [...], "total_pages": ...}`;
/// - `cycle`: like `link`, but page 3's next link points back to page 2.
fn collection(query: &Query) -> Result<Response<ResBody>, Reject> {
    let style = query.get("style").unwrap_or("link").to_owned();
    let total: u64 = query.num("total", 10_000)?;
    let per: u64 = query.num("per", 100)?.max(1);
    let (start, count) = match style.as_str() {
        "cursor" => {
            let cursor: u64 = query.num("cursor", 0)?;
            (cursor, per)
        }
        "stripe" => match query.get("starting_after") {
            None => (0, per),
            Some(id) => (parse_segment::<u64>("starting_after", id)? + 1, per),
        },
        "offset" => (query.num("offset", 0)?, query.num("limit", per)?),
        _ => {
            let page: u64 = query.num("page", 1)?.max(1);
            ((page - 1) * per, per)
        }
    };
    let end = start.saturating_add(count).min(total);
    let items: Vec<serde_json::Value> = (start.min(end)..end)
        .map(|k| serde_json::json!({ "id": k }))
        .collect();
    let more = end < total;
    let page = start / per + 1;
    let mut headers = Vec::new();
    let body = match style.as_str() {
        "link" | "cycle" => {
            let next = if style == "cycle" && page == 3 {
                2
            } else {
                page + 1
            };
            let last = total.div_ceil(per).max(1);
            if more {
                headers.push(format!(
                    "</collection?style={style}&per={per}&total={total}&page={next}>; rel=\"next\", \
                     </collection?style={style}&per={per}&total={total}&page={last}>; rel=last"
                ));
            }
            serde_json::Value::Array(items)
        }
        "cursor" => serde_json::json!({
            "data": items,
            "next_cursor": if more { serde_json::Value::String(end.to_string()) } else { serde_json::Value::Null },
        }),
        "next" => serde_json::json!({
            "data": items,
            "links": { "next": if more {
                serde_json::Value::String(format!("/collection?style=next&per={per}&total={total}&page={}", page + 1))
            } else { serde_json::Value::Null } },
        }),
        "offset" => serde_json::json!({ "results": items, "total": total }),
        "stripe" => serde_json::json!({ "object": "list", "data": items, "has_more": more }),
        "page" => serde_json::json!({ "items": items, "total_pages": total.div_ceil(per) }),
        other => return Err(Reject::bad(format!("no pagination style {other:?}"))),
    };
    let mut res = Response::new(full(Bytes::from(body.to_string())));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for link in headers {
        let value = HeaderValue::from_str(&link).map_err(|_| Reject::bad("bad link"))?;
        res.headers_mut().append(http::header::LINK, value);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("a=1&b=x%20y+z&header=A:1&header=B:2&bad=%zz&a=3"));
        assert_eq!(q.get("a"), Some("3"));
        assert_eq!(q.get("b"), Some("x y z"));
        assert_eq!(q.all("header").collect::<Vec<_>>(), ["A:1", "B:2"]);
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(q.get("missing"), None);
        assert!(q.num::<u64>("b", 0).is_err());
        assert_eq!(q.num::<u64>("missing", 7).ok(), Some(7));
    }

    #[test]
    fn script_repeats_the_last_reply() {
        let mut s = Script::new(vec![Reply::status(503), Reply::status(200)]);
        let codes: Vec<u16> = (0..4)
            .filter_map(|_| s.next_reply())
            .map(|r| r.status)
            .collect();
        assert_eq!(codes, [503, 200, 200, 200]);
        assert!(Script::new(Vec::new()).next_reply().is_none());
    }

    #[tokio::test]
    async fn pattern_is_exact_and_chunked() {
        let frames: Vec<Bytes> = pattern(200_000)
            .filter_map(|f| async move { f.into_data().ok() })
            .collect()
            .await;
        assert!(frames.iter().all(|f| f.len() <= CHUNK));
        let all: Vec<u8> = frames.concat();
        assert_eq!(all.len(), 200_000);
        assert!(all.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        assert_eq!(pattern(0).count().await, 0);
        assert_eq!(pattern(CHUNK as u64).count().await, 1);
    }
}
