//! Request and response bodies as they cross the [`Transport`](crate::Transport) boundary.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;

use crate::error::{BoxError, Error};

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

enum Kind {
    Full(Option<Bytes>),
    Stream(Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send + 'static>>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
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
            kind: Kind::Stream(Box::pin(stream.map_err(Into::into))),
        }
    }

    /// The whole body, if it is buffered (not a stream).
    pub fn as_bytes(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full(b) => Some(b.clone().unwrap_or_default()),
            Kind::Stream(_) => None,
        }
    }

    /// True for an empty buffered body.
    pub fn is_empty(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
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
            Kind::Full(b) => f
                .debug_struct("Body")
                .field("len", &b.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Stream(_) => f.debug_struct("Body").field("stream", &true).finish(),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self {
            kind: Kind::Full((!b.is_empty()).then_some(b)),
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
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(s) => s
                .as_mut()
                .poll_next(cx)
                .map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}

/// A response body as a backend delivers it: a boxed [`http_body::Body`] whose errors are
/// already keel [`Error`]s (with [`Stage::Body`](crate::Stage::Body)).
///
/// Dropping it before its end must close the connection it came from.
pub struct ResponseBody {
    inner: Pin<Box<dyn http_body::Body<Data = Bytes, Error = Error> + Send + 'static>>,
}

impl ResponseBody {
    /// Wraps a backend's body.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes, Error = Error> + Send + 'static,
    {
        Self {
            inner: Box::pin(body),
        }
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
