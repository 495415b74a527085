//! What a [`Rule`](super::Rule) answers: an [`Answer`] (a response, after a delay, with a body
//! delivered at once or in timed chunks, or a transport error).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode};
use http_body::{Frame, SizeHint};

use super::clock::{Clock, VirtualSleep};
use crate::body::ResponseBody;
use crate::error::{Error, ErrorKind, Stage};

/// A scripted answer to one request: a response, or an error of the transport.
///
/// Times are virtual (see [`VirtualTimer`](super::VirtualTimer)): a delay costs nothing real.
///
/// A response is built from [`status`](Answer::status) and the methods below; headers and
/// bodies are added in the order given. A header name or value that isn't valid HTTP, or a
/// status outside 100–999, makes the answer a [`ErrorKind::Protocol`] error when it is used
/// (the mock plays the server, and that server broke HTTP), never a panic.
///
/// ```
/// use std::time::Duration;
/// use keel_core::mock::Answer;
/// use keel_core::{ErrorKind, Stage};
///
/// // 200 with a JSON body (and `Content-Type: application/json`), 250 ms after the request.
/// let slow = Answer::status(200)
///     .json(&serde_json::json!({ "id": 7 }))
///     .delay(Duration::from_millis(250));
/// // 429 with Retry-After.
/// let limited = Answer::status(429).header("retry-after", "2");
/// // A body drip-fed in two chunks, 1 s apart, then cut off.
/// let cut = Answer::status(200)
///     .chunk("first ")
///     .chunk_after(Duration::from_secs(1), "second")
///     .fail_body_after(Duration::from_secs(1), ErrorKind::Body);
/// // A connection refused: the request never left.
/// let refused = Answer::error(ErrorKind::Connect, Stage::Connect);
/// # let _ = (slow, limited, cut, refused);
/// ```
#[derive(Clone)]
pub struct Answer {
    /// Before the head (or the error); `None`: never.
    delay: Option<Duration>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Response(Box<Head>),
    Fail(Error),
}

#[derive(Clone)]
struct Head {
    status: u16,
    headers: HeaderMap,
    steps: Vec<Step>,
    /// Why the answer can't be sent as HTTP, if it can't.
    invalid: Option<String>,
}

/// One step of a response body.
#[derive(Clone, Debug)]
enum Step {
    /// A chunk, `after` the reader asked for it.
    Data { after: Duration, bytes: Bytes },
    /// An error of this kind (stage [`Stage::Body`]), `after` the reader asked.
    Fail {
        after: Duration,
        kind: ErrorKind,
        why: Arc<str>,
    },
    /// Nothing, ever.
    Stall,
}

impl Answer {
    /// A response with this status, no headers and an empty body, at once.
    pub fn status(status: u16) -> Self {
        let invalid = (StatusCode::from_u16(status).is_err())
            .then(|| format!("the mock's answer has status {status}, outside 100-999"));
        Self {
            delay: Some(Duration::ZERO),
            kind: Kind::Response(Box::new(Head {
                status,
                headers: HeaderMap::new(),
                steps: Vec::new(),
                invalid,
            })),
        }
    }

    /// The transport fails with an error of `kind` in `stage` (an error in a stage before the
    /// request, [`Stage::Dns`], [`Stage::Connect`] or [`Stage::Tls`], marks it
    /// [unsent](Error::is_unsent); see [`unsent`](Answer::unsent) for the others).
    pub fn error(kind: ErrorKind, stage: Stage) -> Self {
        Self::fail(
            Error::new(kind)
                .with_stage(stage)
                .with_source("injected by a keel MockTransport rule"),
        )
    }

    /// The transport fails with `error`, as it is.
    pub fn fail(error: Error) -> Self {
        Self {
            delay: Some(Duration::ZERO),
            kind: Kind::Fail(error),
        }
    }

    /// No head ever comes (the client's attempt timeout or deadline ends the wait).
    pub fn never() -> Self {
        Self {
            delay: None,
            ..Self::status(200)
        }
    }

    /// For an error answer: marks the request as known not to have reached the server, as a
    /// stale keep-alive connection does. A response answer is left as it is.
    pub fn unsent(mut self) -> Self {
        if let Kind::Fail(err) = self.kind {
            self.kind = Kind::Fail(err.with_unsent());
        }
        self
    }

    /// Holds the head (or the error) back for `delay` of virtual time after the request.
    pub fn delay(mut self, delay: Duration) -> Self {
        if self.delay.is_some() {
            self.delay = Some(delay);
        }
        self
    }

    fn head(&mut self) -> Option<&mut Head> {
        match &mut self.kind {
            Kind::Response(head) => Some(head),
            Kind::Fail(_) => None,
        }
    }

    /// Adds a header (repeat it for several values). An error answer is left as it is.
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        if let Some(head) = self.head() {
            let (name, value) = (name.as_ref(), value.as_ref());
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => {
                    head.headers.append(n, v);
                }
                _ => {
                    let why = format!("the mock's answer has an invalid header {name}: {value:?}");
                    head.invalid.get_or_insert(why);
                }
            }
        }
        self
    }

    /// The whole body, at once (replacing any body given before).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        if let Some(head) = self.head() {
            head.steps = vec![Step::Data {
                after: Duration::ZERO,
                bytes: body.into(),
            }];
        }
        self
    }

    /// A text body, with `Content-Type: text/plain; charset=utf-8` unless one is set.
    pub fn text(self, text: impl Into<String>) -> Self {
        self.body(text.into())
            .default_content_type("text/plain; charset=utf-8")
    }

    /// `value` as a JSON body, with `Content-Type: application/json` unless one is set.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(json) => self.body(json).default_content_type("application/json"),
            Err(e) => {
                if let Some(head) = self.head() {
                    let why = format!("the mock's JSON answer does not serialize: {e}");
                    head.invalid.get_or_insert(why);
                }
                self
            }
        }
    }

    fn default_content_type(mut self, value: &'static str) -> Self {
        if let Some(head) = self.head() {
            if !head.headers.contains_key(CONTENT_TYPE) {
                head.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static(value));
            }
        }
        self
    }

    /// Appends a body chunk, delivered as soon as it is read.
    pub fn chunk(self, bytes: impl Into<Bytes>) -> Self {
        self.chunk_after(Duration::ZERO, bytes)
    }

    /// Appends a body chunk, delivered `after` the reader asks for it (after the previous
    /// chunk, for a reader that reads on).
    pub fn chunk_after(mut self, after: Duration, bytes: impl Into<Bytes>) -> Self {
        if let Some(head) = self.head() {
            head.steps.push(Step::Data {
                after,
                bytes: bytes.into(),
            });
        }
        self
    }

    /// Ends the body with an error of `kind` ([`Stage::Body`]) `after` the reader asks for
    /// more, as a connection reset mid-body does.
    pub fn fail_body_after(mut self, after: Duration, kind: ErrorKind) -> Self {
        if let Some(head) = self.head() {
            head.steps.push(Step::Fail {
                after,
                kind,
                why: "injected by a keel MockTransport rule".into(),
            });
        }
        self
    }

    /// After the chunks given so far, the body sends nothing more, ever (the client's
    /// read-idle timeout or deadline ends the wait).
    pub fn stall_body(mut self) -> Self {
        if let Some(head) = self.head() {
            head.steps.push(Step::Stall);
        }
        self
    }

    /// A body that ends with an error carrying `why` (for replayed recordings).
    pub(crate) fn fail_body_because(mut self, kind: ErrorKind, why: String) -> Self {
        if let Some(head) = self.head() {
            head.steps.push(Step::Fail {
                after: Duration::ZERO,
                kind,
                why: why.into(),
            });
        }
        self
    }

    /// The head delay: `None` when the head never comes.
    pub(crate) fn head_delay(&self) -> Option<Duration> {
        self.delay
    }

    /// The response (or error) this answer gives, its body timed on `clock`.
    pub(crate) fn into_response(
        self,
        clock: Arc<Clock>,
    ) -> Result<http::Response<ResponseBody>, Error> {
        let head = match self.kind {
            Kind::Fail(err) => return Err(err),
            Kind::Response(head) => *head,
        };
        let protocol = |why: String| {
            Err(Error::new(ErrorKind::Protocol)
                .with_stage(Stage::AwaitHead)
                .with_source(why))
        };
        if let Some(why) = head.invalid {
            return protocol(why);
        }
        let Ok(status) = StatusCode::from_u16(head.status) else {
            return protocol(format!("status {} is outside 100-999", head.status));
        };
        let mut headers = head.headers;
        let whole = head.steps.iter().try_fold(0u64, |len, step| match step {
            Step::Data { bytes, .. } => Some(len + bytes.len() as u64),
            Step::Fail { .. } | Step::Stall => None,
        });
        if let Some(len) = whole {
            if !headers.contains_key(CONTENT_LENGTH) && !headers.contains_key(TRANSFER_ENCODING) {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            }
        }
        let body = MockBody {
            steps: head.steps.into(),
            gate: None,
            clock,
            exact: whole,
        };
        let mut response = http::Response::new(ResponseBody::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Answer");
        match &self.kind {
            Kind::Response(head) => {
                d.field("status", &head.status)
                    .field("headers", &head.headers)
                    .field("body_steps", &head.steps.len());
                if let Some(why) = &head.invalid {
                    d.field("invalid", why);
                }
            }
            Kind::Fail(err) => {
                d.field("error", err);
            }
        }
        match self.delay {
            Some(delay) => d.field("delay", &delay),
            None => d.field("delay", &"never"),
        };
        d.finish()
    }
}

/// A response body played from an answer's steps, in virtual time.
struct MockBody {
    steps: VecDeque<Step>,
    /// The sleep until the front step is due, once it has been asked for.
    gate: Option<VirtualSleep>,
    clock: Arc<Clock>,
    /// The whole length, for a body of data only.
    exact: Option<u64>,
}

impl http_body::Body for MockBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let after = match this.steps.front() {
            None => return Poll::Ready(None),
            Some(Step::Stall) => return Poll::Pending,
            Some(Step::Data { after, .. } | Step::Fail { after, .. }) => *after,
        };
        if !after.is_zero() {
            let clock = &this.clock;
            let gate = this
                .gate
                .get_or_insert_with(|| clock.sleep_at(clock.elapsed() + after));
            if Pin::new(gate).poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.gate = None;
        }
        match this.steps.pop_front() {
            Some(Step::Data { bytes, .. }) => {
                if let Some(left) = &mut this.exact {
                    *left -= bytes.len() as u64;
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Some(Step::Fail { kind, why, .. }) => Poll::Ready(Some(Err(Error::new(kind)
                .with_stage(Stage::Body)
                .with_source(why.to_string())))),
            Some(Step::Stall) | None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}
