//! Request and response bodies as they cross the [`Transport`](crate::Transport) boundary.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;

use crate::error::{BoxError, Error};
use crate::transport::ConnectionInfo;

/// A request body: empty, a buffer, or a stream of chunks.
///
/// A buffered body is cheap to clone and can be sent again; a stream can be sent once.
/// It implements [`http_body::Body`], so backends built on `hyper` send it as it is.
///
/// ```
/// use keel_core::Body;
///
/// let body = Body::from("{\"a\":1}");
/// assert_eq!(body.as_bytes().map(|b| b.len()), Some(7));
/// assert!(Body::empty().as_bytes().unwrap().is_empty());
/// ```
pub struct Body {
    kind: Kind,
}

/// 32 bytes, the size of a `Bytes`: an `http::Request` of it is 256 bytes, which HTTP libraries
/// move several times per request (through their channels), and copies of up to 256 bytes take
/// glibc's short `memcpy` path. A stream is boxed behind one pointer for that.
enum Kind {
    /// The bytes (empty: no body).
    Full(Bytes),
    Stream(Box<StreamBody>),
}

// The size the comment above counts on.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<http::Request<Body>>() <= 256);

struct StreamBody {
    stream: Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send + 'static>>,
    /// The exact length promised by [`Body::from_sized_stream`]: what is still to come.
    remaining: Option<u64>,
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(Bytes::new()),
        }
    }

    /// A body read from a stream of chunks. It can't be replayed.
    pub fn from_stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        use futures_util::TryStreamExt;
        Self {
            kind: Kind::Stream(Box::new(StreamBody {
                stream: Box::pin(stream.map_err(Into::into)),
                remaining: None,
            })),
        }
    }

    /// A body read from a stream of chunks that adds up to exactly `length` bytes. It can't be
    /// replayed.
    ///
    /// The length is the body's exact [`size_hint`](http_body::Body::size_hint), so backends
    /// send it with `Content-Length` instead of chunked. A stream that ends short of `length`
    /// or goes past it fails the body with an error instead of breaking the framing. A
    /// `length` of 0 is the empty body (the stream is not read).
    ///
    /// ```
    /// use http_body::Body as _;
    /// use keel_core::Body;
    ///
    /// let chunks = vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc"))];
    /// let body = Body::from_sized_stream(futures_util::stream::iter(chunks), 3);
    /// assert_eq!(body.size_hint().exact(), Some(3));
    /// assert_eq!(body.content_length(), Some(3));
    /// ```
    pub fn from_sized_stream<S, E>(stream: S, length: u64) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        if length == 0 {
            return Self::empty();
        }
        let mut body = Self::from_stream(stream);
        if let Kind::Stream(stream) = &mut body.kind {
            stream.remaining = Some(length);
        }
        body
    }

    /// The body's length in bytes when it is known: a buffer's, or what a sized stream has
    /// still to send.
    pub fn content_length(&self) -> Option<u64> {
        match &self.kind {
            Kind::Full(b) => Some(b.len() as u64),
            Kind::Stream(stream) => stream.remaining,
        }
    }

    /// The whole body, if it is buffered (not a stream).
    pub fn as_bytes(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full(b) => Some(b.clone()),
            Kind::Stream(_) => None,
        }
    }

    /// True for an empty buffered body.
    pub fn is_empty(&self) -> bool {
        matches!(&self.kind, Kind::Full(b) if b.is_empty())
    }

    /// True when the body can be sent again as it is: a buffer (not a stream).
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Full(_))
    }

    /// A copy of the body for another attempt, if it is buffered.
    pub fn try_clone(&self) -> Option<Self> {
        self.as_bytes().map(Self::from)
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(b) => f.debug_struct("Body").field("len", &b.len()).finish(),
            Kind::Stream(stream) => f
                .debug_struct("Body")
                .field("stream", &true)
                .field("len", &stream.remaining)
                .finish(),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self {
            kind: Kind::Full(b),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Self {
        Bytes::from_static(s).into()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Full(b) if b.is_empty() => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(b))))),
            Kind::Stream(body) => {
                let StreamBody { stream, remaining } = &mut **body;
                let next = std::task::ready!(stream.as_mut().poll_next(cx));
                Poll::Ready(match (next, remaining) {
                    (None, Some(left)) if *left > 0 => {
                        let missing = *left;
                        *left = 0;
                        Some(Err(format!(
                            "the body stream ended {missing} bytes short of its length"
                        )
                        .into()))
                    }
                    (Some(Ok(chunk)), Some(left)) => match left.checked_sub(chunk.len() as u64) {
                        Some(rest) => {
                            *left = rest;
                            Some(Ok(Frame::data(chunk)))
                        }
                        None => Some(Err("the body stream went past its length".into())),
                    },
                    (next, _) => next.map(|r| r.map(Frame::data)),
                })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.len() as u64),
            Kind::Stream(stream) => match stream.remaining {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

/// Frames an empty request body the same way on every backend, by editing `headers`.
///
/// The rule (RFC 9110, 8.6: a user agent sends `Content-Length` when the method defines a
/// meaning for content, even when it is 0, and not when the method anticipates no content):
///
/// - GET, HEAD, DELETE, OPTIONS, TRACE and CONNECT give request content no defined meaning
///   (RFC 9110, 9.3): their empty requests carry no framing header at all;
/// - every other method (POST, PUT, PATCH, and extension methods such as QUERY, PROPFIND or
///   REPORT, whose content usually means something) says `Content-Length: 0`, so a server that
///   insists on a length gets one.
///
/// Any `Content-Length` or `Transfer-Encoding` already there is replaced: for an empty buffered
/// body the truth is known. A non-empty or streamed body is left alone; the backend frames it
/// (`Content-Length` from its size, or chunked). Backends send these headers as they are and add
/// no framing of their own for an empty body (see [`FramedBody`] for HTTP libraries that would).
///
/// `may_be_framed` false says the caller knows no framing header is in `headers` (the request
/// set none, nor did the client's defaults), so none is looked for.
pub(crate) fn frame_empty_body(
    method: &Method,
    body: &Body,
    headers: &mut HeaderMap,
    may_be_framed: bool,
) {
    if !body.is_empty() {
        return;
    }
    let framed = may_be_framed
        && headers
            .keys()
            .any(|name| name == CONTENT_LENGTH || name == TRANSFER_ENCODING);
    if framed {
        headers.remove(TRANSFER_ENCODING);
    }
    let no_meaning = matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT
    );
    if no_meaning {
        if framed {
            headers.remove(CONTENT_LENGTH);
        }
    } else {
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
}

/// Refuses an HTTP/1.x response head that carries both `Transfer-Encoding` and
/// `Content-Length`: [`ErrorKind::Protocol`](crate::ErrorKind::Protocol) in
/// [`Stage::AwaitHead`](crate::Stage::AwaitHead), the same on every backend.
///
/// RFC 9112, 6.3 says the transfer coding wins and that such a message "ought to be handled as
/// an error": it is how responses are split and requests smuggled, and no correct server sends
/// it (6.2: a sender MUST NOT). The HTTP libraries under the backends read the chunked body and
/// keep the connection for the next request, which trusts a peer that just framed a message two
/// ways. Refusing the head drops its body unread, so every backend closes the connection
/// instead of pooling it.
pub(crate) fn refuse_ambiguous_framing<B>(head: &http::Response<B>) -> Result<(), Error> {
    let headers = head.headers();
    if head.version() < http::Version::HTTP_2
        && headers.contains_key(TRANSFER_ENCODING)
        && headers.contains_key(CONTENT_LENGTH)
    {
        return Err(Error::new(crate::ErrorKind::Protocol)
            .with_stage(crate::Stage::AwaitHead)
            .with_source(
                "the response has both Transfer-Encoding and Content-Length (RFC 9112, 6.3)",
            ));
    }
    Ok(())
}

/// A request [`Body`] for HTTP libraries that add framing headers from a body's size hint, such
/// as hyper's HTTP/2 client (which adds `content-length: 0` to an empty OPTIONS or TRACE).
///
/// The core frames empty bodies itself, in the request headers (`Content-Length: 0` or nothing,
/// by method), so every backend puts the same bytes on the wire. This wrapper is the body
/// unchanged, except that an empty one reports no exact size: the library then sees that the
/// body is over ([`is_end_stream`](http_body::Body::is_end_stream)) but has no length to add a
/// header for, and sends the headers the core chose. A non-empty body keeps its exact size.
///
/// ```
/// use http_body::Body as _;
/// use keel_core::{Body, FramedBody};
///
/// let empty = FramedBody::new(Body::empty());
/// assert!(empty.is_end_stream());
/// assert_eq!(empty.size_hint().exact(), None);
/// assert_eq!(FramedBody::new(Body::from("abc")).size_hint().exact(), Some(3));
/// ```
#[derive(Debug)]
pub struct FramedBody(Body);

impl FramedBody {
    /// Wraps `body`.
    pub fn new(body: Body) -> Self {
        Self(body)
    }

    /// The body inside.
    pub fn into_inner(self) -> Body {
        self.0
    }
}

impl From<Body> for FramedBody {
    fn from(body: Body) -> Self {
        Self(body)
    }
}

impl http_body::Body for FramedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.0.is_end_stream() {
            SizeHint::default()
        } else {
            self.0.size_hint()
        }
    }
}

/// A response body as a backend delivers it: a boxed [`http_body::Body`] whose errors are
/// already keel [`Error`]s (with [`Stage::Body`](crate::Stage::Body)).
///
/// Dropping it before its end must close the connection it came from.
pub struct ResponseBody {
    inner: Pin<Box<dyn http_body::Body<Data = Bytes, Error = Error> + Send + 'static>>,
    /// What the backend said about the connection: carried here rather than in the response's
    /// extensions, which would cost an allocation per response, and shared, so a connection's
    /// responses point at the facts it made once.
    connection: Option<Arc<ConnectionInfo>>,
}

impl ResponseBody {
    /// Wraps a backend's body.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes, Error = Error> + Send + 'static,
    {
        Self {
            inner: Box::pin(body),
            connection: None,
        }
    }

    /// Says which connection the body comes over, for
    /// [`Response::connection`](crate::Response::connection). A backend sets it when the client
    /// asked for connection facts ([`TransportConfig::connection_info`](crate::TransportConfig::connection_info)).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keel_core::{ConnectionInfo, ResponseBody};
    ///
    /// let info = ConnectionInfo::new().with_reused(Some(true));
    /// let body = ResponseBody::empty().with_connection(Arc::new(info));
    /// assert_eq!(body.connection(), info);
    /// ```
    pub fn with_connection(mut self, info: Arc<ConnectionInfo>) -> Self {
        self.connection = Some(info);
        self
    }

    /// The connection facts the backend gave ([`ConnectionInfo::new`], nothing known, unless
    /// it set them).
    pub fn connection(&self) -> ConnectionInfo {
        self.connection.as_deref().copied().unwrap_or_default()
    }

    /// The shared facts, for the response to keep.
    pub(crate) fn connection_facts(&self) -> Option<Arc<ConnectionInfo>> {
        self.connection.clone()
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::new(http_body_util::Empty::new().map_err(|never| match never {}))
    }

    /// A body holding `bytes`, for mock transports and tests.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::new(http_body_util::Full::new(bytes.into()).map_err(|never| match never {}))
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("size_hint", &self.inner.size_hint())
            .finish()
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.inner.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(method: &str, body: Body, preset: &[(&str, &str)]) -> Vec<(String, String)> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut headers = HeaderMap::new();
        for (name, value) in preset {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        frame_empty_body(&method, &body, &mut headers, true);
        headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    fn length_zero() -> Vec<(String, String)> {
        vec![("content-length".into(), "0".into())]
    }

    #[test]
    fn empty_bodies_say_content_length_0_where_content_means_something() {
        for method in ["POST", "PUT", "PATCH", "QUERY", "PROPFIND"] {
            assert_eq!(
                framed(method, Body::empty(), &[]),
                length_zero(),
                "{method}"
            );
        }
        for method in ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"] {
            assert_eq!(framed(method, Body::empty(), &[]), [], "{method}");
        }
        // `Body::from` an empty buffer is the empty body.
        assert_eq!(framed("POST", Body::from(""), &[]), length_zero());
    }

    #[test]
    fn a_head_framed_two_ways_is_a_protocol_error_on_http1_only() {
        let head = |version, headers: &[(&'static str, &'static str)]| {
            let mut res = http::Response::new(());
            *res.version_mut() = version;
            for (name, value) in headers {
                res.headers_mut()
                    .append(*name, HeaderValue::from_static(value));
            }
            res
        };
        let both = [("transfer-encoding", "chunked"), ("content-length", "3")];
        for version in [http::Version::HTTP_10, http::Version::HTTP_11] {
            let err = refuse_ambiguous_framing(&head(version, &both)).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Protocol);
            assert_eq!(err.stage(), Some(crate::Stage::AwaitHead));
        }
        // HTTP/2 has no Transfer-Encoding framing; its library checks its own headers.
        assert!(refuse_ambiguous_framing(&head(http::Version::HTTP_2, &both)).is_ok());
        for one in [&both[..1], &both[1..], &[]] {
            assert!(refuse_ambiguous_framing(&head(http::Version::HTTP_11, one)).is_ok());
        }
    }

    #[test]
    fn the_rule_replaces_framing_headers_set_by_hand() {
        let preset = [("content-length", "5"), ("transfer-encoding", "chunked")];
        assert_eq!(framed("PUT", Body::empty(), &preset), length_zero());
        assert_eq!(framed("GET", Body::empty(), &preset), []);
        let other = [("x-other", "1")];
        assert_eq!(
            framed("GET", Body::empty(), &other),
            [("x-other".to_owned(), "1".to_owned())]
        );
    }

    #[test]
    fn bodies_with_content_are_left_to_the_backend() {
        assert_eq!(framed("POST", Body::from("abc"), &[]), []);
        let stream = Body::from_stream(futures_util::stream::empty::<Result<Bytes, BoxError>>());
        assert_eq!(framed("POST", stream, &[]), []);
        let preset = [("content-length", "3")];
        assert_eq!(
            framed("GET", Body::from("abc"), &preset),
            [("content-length".to_owned(), "3".to_owned())]
        );
    }

    #[test]
    fn a_sized_stream_must_keep_to_its_length() {
        use http_body::Body as _;
        let sized = |chunks: &[&'static str], length| {
            let chunks: Vec<Result<Bytes, BoxError>> = chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c.as_bytes())))
                .collect();
            Body::from_sized_stream(futures_util::stream::iter(chunks), length)
        };
        let exact = sized(&["ab", "cd"], 4);
        assert_eq!(exact.size_hint().exact(), Some(4));
        assert_eq!(
            futures_executor::block_on(exact.collect())
                .unwrap()
                .to_bytes(),
            "abcd"
        );
        let short = futures_executor::block_on(sized(&["ab"], 4).collect()).unwrap_err();
        assert!(short.to_string().contains("2 bytes short"), "{short}");
        let long = futures_executor::block_on(sized(&["ab", "cde"], 4).collect()).unwrap_err();
        assert!(long.to_string().contains("past its length"), "{long}");
        assert!(sized(&[], 0).is_empty());
        assert_eq!(Body::from("xyz").content_length(), Some(3));
    }

    #[test]
    fn a_framed_body_hides_only_the_empty_length() {
        use http_body::Body as _;
        let empty = FramedBody::new(Body::empty());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), None);
        let full = FramedBody::from(Body::from("abcd"));
        assert!(!full.is_end_stream());
        assert_eq!(full.size_hint().exact(), Some(4));
        let data = futures_executor::block_on(full.collect())
            .unwrap()
            .to_bytes();
        assert_eq!(data, "abcd");
    }
}
