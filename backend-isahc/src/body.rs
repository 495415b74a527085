//! Requests and responses across the isahc boundary: keel's [`Body`] as an isahc `AsyncBody`,
//! isahc's response body (a futures `AsyncRead`) as an [`http_body::Body`] of `Bytes` frames.

use std::io;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_io::AsyncRead;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderValue, Method, StatusCode};
use http_body::{Frame, SizeHint};
use isahc::config::Configurable as _;
use isahc::AsyncBody;
use keel_core::connect::OpenConnection;
use keel_core::{Body, CallDeadline, ConnectionInfo, Error, ErrorKind, ResponseBody, Stage};

use crate::errors;

/// The largest frame a response body yields.
pub(crate) const MAX_FRAME: usize = 64 * 1024;

/// Below this much free room the read buffer is renewed (its memory is reused once the frames
/// cut from it have been dropped).
const MIN_READ: usize = 16 * 1024;

/// Turns keel's request into isahc's, refusing what libcurl can't send.
pub(crate) fn to_isahc_request(
    request: http::Request<Body>,
    tls: &isahc::tls::TlsConfig,
    proxy: Option<&keel_core::proxy::Proxy>,
) -> Result<http::Request<AsyncBody>, Error> {
    let (mut parts, body) = request.into_parts();
    for (name, value) in &parts.headers {
        if value.to_str().is_err() {
            // isahc hands libcurl each header as a `&str` (and panics if it isn't one).
            return Err(Error::new(ErrorKind::InvalidRequest).with_source(format!(
                "the value of header `{name}` has bytes outside visible ASCII, \
                 which keel-isahc can't send"
            )));
        }
    }
    let body = match body.as_bytes() {
        // No body for libcurl to frame: keel-core's headers already say how an empty body is
        // framed (`Content-Length: 0`, or nothing), and libcurl sends them as they are.
        Some(bytes) if bytes.is_empty() => AsyncBody::empty(),
        Some(bytes) => AsyncBody::from(Vec::from(bytes)),
        None => match body.content_length() {
            // libcurl frames it with `Content-Length` (and checks it), not chunked.
            Some(length) => AsyncBody::from_reader_sized(BodyReader::new(body), length),
            None => AsyncBody::from_reader(BodyReader::new(body)),
        },
    };
    if !body.is_empty() && parts.method == Method::HEAD {
        // libcurl would wait for a body the server never sends after a HEAD.
        return Err(Error::new(ErrorKind::InvalidRequest)
            .with_source("keel-isahc can't send a HEAD request with a body"));
    }
    if !body.is_empty() && parts.method == Method::POST && !parts.headers.contains_key(CONTENT_TYPE)
    {
        // libcurl would add `application/x-www-form-urlencoded`; this is what no header means.
        parts.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    // isahc notices a dropped future only at libcurl's next callback: bound every transfer by
    // the call's deadline (plus a little slack, so keel's own timeout always fires first) so an
    // abandoned one can't hold its connection past it.
    let timeout = parts
        .extensions
        .get::<CallDeadline>()
        .map(|CallDeadline(at)| at.saturating_duration_since(Instant::now()) + DEADLINE_SLACK);
    let https = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let mut builder = http::Request::builder()
        .method(parts.method)
        .uri(parts.uri)
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers;
    }
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    if https {
        builder = builder.tls_config(tls.clone());
    }
    if let Some(proxy) = proxy {
        // `CURLOPT_PROXY`; the credentials as `CURLOPT_PROXYUSERNAME`/`PASSWORD`, sent as
        // `Basic` (to a SOCKS5 proxy: RFC 1929 user/password).
        // An empty `CURLOPT_NOPROXY` too: unset, libcurl would read `NO_PROXY` from the
        // environment and bypass the proxy keel chose.
        builder = builder
            .proxy(Some(crate::proxy_uri(proxy)?))
            .proxy_blacklist(std::iter::empty::<String>());
        if let Some((user, password)) = proxy.credentials() {
            builder = builder
                .proxy_authentication(isahc::auth::Authentication::basic())
                .proxy_credentials(isahc::auth::Credentials::new(user, password));
        }
    }
    builder
        .body(body)
        .map_err(|e| Error::new(ErrorKind::InvalidRequest).with_source(e))
}

/// How long after the call's deadline libcurl gives up on a transfer keel has abandoned.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// Turns isahc's response into keel's.
pub(crate) fn to_keel_response(
    response: http::Response<AsyncBody>,
    connection_info: bool,
    permit: Option<OpenConnection>,
) -> http::Response<ResponseBody> {
    // libcurl's primary and local addresses; whether the connection was reused isn't exposed
    // by isahc (no `CURLINFO_NUM_CONNECTS`), so it stays unknown.
    let info = connection_info.then(|| {
        std::sync::Arc::new(
            ConnectionInfo::new()
                .with_remote_addr(isahc::ResponseExt::remote_addr(&response))
                .with_local_addr(isahc::ResponseExt::local_addr(&response)),
        )
    });
    let (mut parts, body) = response.into_parts();
    let length = declared_length(&parts);
    // isahc's extensions (addresses, metrics, the request body it kept) mean nothing more to
    // keel, and one of them panics when cloned.
    parts.extensions = http::Extensions::new();
    let body = ResponseBody::new(IsahcBody::new(body, length).with_permit(permit));
    let body = match info {
        Some(info) => body.with_connection(info),
        None => body,
    };
    http::Response::from_parts(parts, body)
}

/// The body length the head promises, when it is unambiguous.
fn declared_length(parts: &http::response::Parts) -> Option<u64> {
    if parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED
        || parts.headers.contains_key(TRANSFER_ENCODING)
    {
        return None;
    }
    let mut values = parts.headers.get_all(CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()?.trim().parse().ok()
}

/// keel's request body as the `AsyncRead` isahc pulls from libcurl's read callback.
///
/// A stream error is returned as an [`io::Error`] carrying a keel [`Error`] of kind
/// [`ErrorKind::InvalidRequest`], which [`errors::from_send_error`] finds again.
pub(crate) struct BodyReader {
    /// isahc wants a `Sync` reader; the mutex is never locked, only borrowed through `&mut`.
    body: Mutex<Body>,
    chunk: Bytes,
    done: bool,
}

impl BodyReader {
    pub(crate) fn new(body: Body) -> Self {
        Self {
            body: Mutex::new(body),
            chunk: Bytes::new(),
            done: false,
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        while this.chunk.is_empty() {
            if this.done || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let body = this.body.get_mut().unwrap_or_else(PoisonError::into_inner);
            match http_body::Body::poll_frame(Pin::new(body), cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.chunk = data;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    let err = Error::new(ErrorKind::InvalidRequest)
                        .with_stage(Stage::SendRequest)
                        .with_source(e);
                    return Poll::Ready(Err(io::Error::other(err)));
                }
            }
        }
        let n = buf.len().min(this.chunk.len());
        buf[..n].copy_from_slice(&this.chunk.split_to(n));
        Poll::Ready(Ok(n))
    }
}

/// isahc's response body as an [`http_body::Body`] of `Bytes` frames, errors as keel [`Error`]s
/// with [`Stage::Body`].
///
/// Reads into one buffer and cuts frames from it, so a frame holds whatever arrived by the time
/// it is polled, up to [`MAX_FRAME`]. Dropping it drops isahc's body, which makes libcurl abort
/// the transfer (see the crate docs on connection reuse).
pub(crate) struct IsahcBody<R = AsyncBody> {
    reader: R,
    /// `buf[..filled]` is data not yet handed out; `buf[filled..]` is zeroed room to read into,
    /// kept across frames so each byte of the buffer is zeroed once, not once per poll.
    buf: BytesMut,
    filled: usize,
    /// Bytes still expected, when the head declared a length.
    remaining: Option<u64>,
    /// An error met after some data, reported on the next poll.
    error: Option<Error>,
    done: bool,
    /// The transfer's place within the connection caps, given back at the end of the body.
    permit: Option<OpenConnection>,
}

impl<R> IsahcBody<R> {
    pub(crate) fn new(reader: R, length: Option<u64>) -> Self {
        Self {
            reader,
            buf: BytesMut::new(),
            filled: 0,
            remaining: length,
            error: None,
            done: false,
            permit: None,
        }
    }

    /// Holds `permit` until the body ends (or fails, or is dropped).
    pub(crate) fn with_permit(mut self, permit: Option<OpenConnection>) -> Self {
        self.permit = permit;
        self
    }

    fn cut_frame(&mut self) -> Bytes {
        let frame = self.buf.split_to(self.filled).freeze();
        self.filled = 0;
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(frame.len() as u64);
        }
        frame
    }

    /// Makes sure there is zeroed room to read into: as much as the declared length still
    /// needs (at least one byte, to see the end), else `MIN_READ`, growing towards `MAX_FRAME`
    /// while reads keep filling it.
    fn make_room(&mut self) {
        if self.buf.len() > self.filled {
            return;
        }
        let want = match self.remaining {
            Some(left) => (left.saturating_sub(self.filled as u64) as usize).clamp(1, MAX_FRAME),
            None => MIN_READ.max(self.filled.min(MAX_FRAME)),
        };
        let want = want.min(MAX_FRAME - self.filled).max(1);
        self.buf.resize(self.filled + want, 0);
    }
}

impl<R: AsyncRead + Unpin> http_body::Body for IsahcBody<R> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if let Some(err) = this.error.take() {
            return Poll::Ready(Some(Err(err)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        while this.filled < MAX_FRAME {
            this.make_room();
            let start = this.filled;
            let read = Pin::new(&mut this.reader).poll_read(cx, &mut this.buf[start..]);
            match read {
                Poll::Ready(Ok(0)) => {
                    this.done = true;
                    // isahc's end of body: libcurl is done with the connection.
                    this.permit = None;
                    break;
                }
                Poll::Ready(Ok(n)) => this.filled += n,
                Poll::Pending => break,
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    this.permit = None;
                    let err = errors::from_body_error(e);
                    if this.filled == 0 {
                        return Poll::Ready(Some(Err(err)));
                    }
                    this.error = Some(err);
                    break;
                }
            }
        }
        if this.filled > 0 {
            return Poll::Ready(Some(Ok(Frame::data(this.cut_frame()))));
        }
        if this.done {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    fn is_end_stream(&self) -> bool {
        // Only isahc's end of body says libcurl is done with the connection; ending earlier (at
        // the declared length) could let the next request find the connection still busy.
        self.done && self.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            _ if self.is_end_stream() => SizeHint::with_exact(0),
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The request conversion with a default TLS configuration (these requests are plain).
    fn to_isahc_request_for_test(
        request: http::Request<Body>,
    ) -> Result<http::Request<AsyncBody>, Error> {
        super::to_isahc_request(request, &isahc::tls::TlsConfig::default(), None)
    }

    use std::collections::VecDeque;

    use futures_executor::block_on;
    use futures_util::{stream, AsyncReadExt as _};
    use http_body::Body as _;

    use super::*;

    /// A reader that returns scripted results, `Pending` (after waking) for `None`.
    struct Script(VecDeque<Option<io::Result<Vec<u8>>>>);

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            match self.0.pop_front() {
                None => Poll::Ready(Ok(0)),
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Some(Err(e))) => Poll::Ready(Err(e)),
                Some(Some(Ok(mut bytes))) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.0.push_front(Some(Ok(bytes.split_off(n))));
                    }
                    Poll::Ready(Ok(n))
                }
            }
        }
    }

    fn frames<R: AsyncRead + Unpin>(mut body: IsahcBody<R>) -> Vec<Result<Bytes, Error>> {
        let mut out = Vec::new();
        block_on(std::future::poll_fn(|cx| loop {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Ready(Some(f)) => out.push(f.map(|f| f.into_data().unwrap())),
                Poll::Pending => return Poll::Pending,
            }
        }));
        out
    }

    #[test]
    fn coalesces_what_is_ready_into_one_frame_up_to_the_limit() {
        let script = Script(VecDeque::from([
            Some(Ok(vec![1; 10])),
            Some(Ok(vec![2; 20])),
            None,
            Some(Ok(vec![3; MAX_FRAME + 5])),
        ]));
        let got: Vec<usize> = frames(IsahcBody::new(script, None))
            .into_iter()
            .map(|f| f.unwrap().len())
            .collect();
        assert_eq!(got, [30, MAX_FRAME, 5]);
    }

    #[test]
    fn delivers_data_before_the_error_that_follows_it() {
        let script = || {
            let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
            Script(VecDeque::from([Some(Ok(vec![7; 100])), Some(Err(reset))]))
        };
        let got = frames(IsahcBody::new(script(), Some(1000)));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().len(), 100);
        let err = got[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Body);
        assert_eq!(err.stage(), Some(Stage::Body));
        // The hint counts down; a pending error is not the end.
        let mut body = IsahcBody::new(script(), Some(1000));
        assert_eq!(body.size_hint().exact(), Some(1000));
        let first = block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut body).poll_frame(cx)
        }));
        assert_eq!(first.unwrap().unwrap().into_data().unwrap().len(), 100);
        assert_eq!(body.size_hint().exact(), Some(900));
        assert!(!body.is_end_stream());
    }

    #[test]
    fn ends_at_the_readers_end_only() {
        let mut body = IsahcBody::new(Script(VecDeque::from([Some(Ok(vec![1; 4]))])), Some(4));
        let first = block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut body).poll_frame(cx)
        }));
        assert_eq!(first.unwrap().unwrap().into_data().unwrap().len(), 4);
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        let end = block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut body).poll_frame(cx)
        }));
        assert!(end.is_none());
    }

    #[test]
    fn a_small_declared_body_gets_a_small_buffer() {
        // 1000 responses in flight must not hold 64 KiB each (S1 in the benches).
        let mut body = IsahcBody::new(
            Script(VecDeque::from([Some(Ok(vec![9; 1000]))])),
            Some(1000),
        );
        let frame = block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut body).poll_frame(cx)
        }));
        assert_eq!(frame.unwrap().unwrap().into_data().unwrap().len(), 1000);
        assert!(
            body.buf.capacity() < 1024,
            "kept {} bytes",
            body.buf.capacity()
        );
    }

    #[test]
    fn reuses_its_buffer_once_frames_are_dropped() {
        let chunks = (0..64).map(|_| Some(Ok(vec![5; 4096]))).collect();
        let mut body = IsahcBody::new(Script(chunks), None);
        let mut total = 0;
        while let Some(frame) = block_on(std::future::poll_fn(|cx| {
            Pin::new(&mut body).poll_frame(cx)
        })) {
            total += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(total, 64 * 4096);
        assert!(body.buf.capacity() <= 2 * MAX_FRAME);
    }

    #[test]
    fn request_streams_are_read_through() {
        let body = Body::from_stream(stream::iter([
            Ok::<_, io::Error>(Bytes::from_static(b"hello ")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"world")),
        ]));
        let mut out = String::new();
        block_on(BodyReader::new(body).read_to_string(&mut out)).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn a_request_stream_error_is_an_invalid_request() {
        let body = Body::from_stream(stream::iter([
            Ok(Bytes::from_static(b"part")),
            Err(io::Error::other("disk on fire")),
        ]));
        let mut out = Vec::new();
        let err = block_on(BodyReader::new(body).read_to_end(&mut out)).unwrap_err();
        assert_eq!(out, b"part");
        let keel = keel_core::find_in_chain(&err).expect("a keel error inside");
        assert_eq!(keel.kind(), ErrorKind::InvalidRequest);
        assert_eq!(keel.stage(), Some(Stage::SendRequest));
    }

    #[test]
    fn requests_are_framed_as_libcurl_needs() {
        let req = |method: Method, body: Body| {
            http::Request::builder()
                .method(method)
                .uri("http://127.0.0.1/")
                .body(body)
                .unwrap()
        };
        // An empty body is no body for libcurl, whatever the method: keel-core's headers say
        // how it is framed, and they go through untouched.
        let mut framed = req(Method::POST, Body::empty());
        framed
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let post = to_isahc_request_for_test(framed).unwrap();
        assert!(post.body().is_empty());
        assert_eq!(post.headers()[CONTENT_LENGTH], "0");
        assert!(!post.headers().contains_key(CONTENT_TYPE));
        let get = to_isahc_request_for_test(req(Method::GET, Body::empty())).unwrap();
        assert!(get.body().is_empty());
        assert!(!get.headers().contains_key(CONTENT_LENGTH));
        let post = to_isahc_request_for_test(req(Method::POST, Body::from("x"))).unwrap();
        assert_eq!(post.headers()[CONTENT_TYPE], "application/octet-stream");
        let mut typed = req(Method::POST, Body::from("{}"));
        typed
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let typed = to_isahc_request_for_test(typed).unwrap();
        assert_eq!(typed.headers()[CONTENT_TYPE], "application/json");
        let streamed = Body::from_stream(stream::iter([Ok::<_, io::Error>(Bytes::new())]));
        assert_eq!(
            to_isahc_request_for_test(req(Method::PUT, streamed))
                .unwrap()
                .body()
                .len(),
            None
        );
        let err = to_isahc_request_for_test(req(Method::HEAD, Body::from("x"))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    }

    #[test]
    fn header_values_libcurl_cannot_take_are_refused_not_a_panic() {
        let mut req = http::Request::new(Body::empty());
        req.headers_mut()
            .insert("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let err = to_isahc_request_for_test(req).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    }

    #[test]
    fn declared_lengths_are_trusted_only_when_unambiguous() {
        let parts = |status: u16, headers: &[(&str, &str)]| {
            let mut b = http::Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(
            declared_length(&parts(200, &[("content-length", "12")])),
            Some(12)
        );
        assert_eq!(
            declared_length(&parts(304, &[("content-length", "12")])),
            None
        );
        assert_eq!(declared_length(&parts(204, &[])), None);
        let both = [("content-length", "12"), ("transfer-encoding", "chunked")];
        assert_eq!(declared_length(&parts(200, &both)), None);
        let twice = [("content-length", "12"), ("content-length", "12")];
        assert_eq!(declared_length(&parts(200, &twice)), None);
        assert_eq!(
            declared_length(&parts(200, &[("content-length", "x")])),
            None
        );
    }
}
