//! Bodies read as something other than bytes: lines, NDJSON values, and server-sent events
//! from a stream that reconnects.
//!
//! Each is a pure decoder from [`machine`](crate::machine) ([`lines`](crate::machine::lines),
//! [`sse`](crate::machine::sse)) fed by the response's [`BodyStream`], so the read-idle
//! timeout and the deadline apply as they do to the chunks, and memory is bounded by the
//! decoder's limit (one line, one event), never by the body.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use http::header::{HeaderName, HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::pending::Pending;
use super::request::Request;
use super::response::{BodyStream, Response};
use super::Dispatch;
use crate::error::{Error, ErrorKind, Stage};
use crate::machine::lines::{LineDecoder, LineError, NdjsonDecoder, NdjsonError};
use crate::machine::outcome::RETRYABLE_STATUSES;
use crate::machine::sse::{Event, SseError, SseParser};
use crate::redact;
use crate::transport::Sleep;

// ---------------------------------------------------------------------------------------------
// Lines

/// A pure decoder fed a body's chunks, giving items: the one loop [`Lines`] and [`Ndjson`]
/// share.
trait Feed {
    type Item;
    fn feed(&mut self, chunk: &[u8]);
    fn finish(&mut self);
    fn next_item(&mut self) -> Option<Result<Self::Item, Error>>;
}

impl Feed for LineDecoder {
    type Item = String;

    fn feed(&mut self, chunk: &[u8]) {
        LineDecoder::feed(self, chunk);
    }

    fn finish(&mut self) {
        LineDecoder::finish(self);
    }

    fn next_item(&mut self) -> Option<Result<String, Error>> {
        self.next_line().map(|line| line.map_err(line_error))
    }
}

impl<T: DeserializeOwned> Feed for NdjsonDecoder<T> {
    type Item = T;

    fn feed(&mut self, chunk: &[u8]) {
        NdjsonDecoder::feed(self, chunk);
    }

    fn finish(&mut self) {
        NdjsonDecoder::finish(self);
    }

    fn next_item(&mut self) -> Option<Result<T, Error>> {
        self.next_value().map(|value| value.map_err(ndjson_error))
    }
}

/// Gives the decoder's next item, feeding it the body's chunks until it has one; at the end
/// of the body, what `finish` leaves; after a body error, that error and then nothing.
fn poll_decoded<D: Feed>(
    body: &mut Option<BodyStream>,
    decoder: &mut D,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<D::Item, Error>>> {
    loop {
        if let Some(item) = decoder.next_item() {
            return Poll::Ready(Some(item));
        }
        let Some(stream) = body.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(stream).poll_next(cx)) {
            Some(Ok(chunk)) => decoder.feed(&chunk),
            Some(Err(err)) => {
                *body = None;
                return Poll::Ready(Some(Err(err)));
            }
            None => {
                *body = None;
                decoder.finish();
            }
        }
    }
}

/// The body of a [`Response`] as a [`Stream`] of lines, from [`Response::lines`].
///
/// Lines end with `\n` or `\r\n` (neither is part of the line); a last line without one is
/// given too. A line must be UTF-8 ([`ErrorKind::Decode`] otherwise, naming the line) and at
/// most [`max_line`](Self::max_line) bytes long ([`ErrorKind::LineTooLong`]); after either
/// error the stream goes on with the next line, so the caller may skip a bad one.
#[must_use = "streams do nothing unless polled"]
pub struct Lines {
    body: Option<BodyStream>,
    decoder: LineDecoder,
}

impl Lines {
    pub(crate) fn new(body: BodyStream) -> Self {
        Self {
            body: Some(body),
            decoder: LineDecoder::new(),
        }
    }

    /// Sets the longest line accepted, in bytes (default
    /// [`LineDecoder::DEFAULT_MAX_LINE`], 8 MiB): the most this stream holds at once.
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.decoder = self.decoder.with_max_line(bytes);
        self
    }
}

impl Stream for Lines {
    type Item = Result<String, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        poll_decoded(&mut this.body, &mut this.decoder, cx)
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lines")
            .field("line", &self.decoder.line_number())
            .field("done", &self.body.is_none())
            .finish()
    }
}

fn line_error(err: LineError) -> Error {
    match err {
        LineError::TooLong(too_long) => Error::new(ErrorKind::LineTooLong {
            limit: too_long.limit() as u64,
        })
        .with_stage(Stage::Body)
        .with_source(too_long),
        other => Error::new(ErrorKind::Decode)
            .with_stage(Stage::Body)
            .with_source(other),
    }
}

/// The body of a [`Response`] as a [`Stream`] of values, one JSON document per line
/// (NDJSON, JSON Lines), from [`Response::ndjson`].
///
/// Blank lines are skipped. A line that doesn't parse as `T` is an [`ErrorKind::Decode`]
/// error whose [`Error::json_path`] says where, and whose message names the line; the stream
/// goes on with the next line.
#[must_use = "streams do nothing unless polled"]
pub struct Ndjson<T> {
    body: Option<BodyStream>,
    decoder: NdjsonDecoder<T>,
    _values: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Ndjson<T> {
    pub(crate) fn new(body: BodyStream) -> Self {
        Self {
            body: Some(body),
            decoder: NdjsonDecoder::new(),
            _values: PhantomData,
        }
    }

    /// Sets the longest line accepted, in bytes (default 8 MiB).
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.decoder = self.decoder.with_max_line(bytes);
        self
    }
}

impl<T: DeserializeOwned> Stream for Ndjson<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        poll_decoded(&mut this.body, &mut this.decoder, cx)
    }
}

impl<T> fmt::Debug for Ndjson<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ndjson")
            .field("done", &self.body.is_none())
            .finish_non_exhaustive()
    }
}

fn ndjson_error(err: NdjsonError) -> Error {
    match err {
        NdjsonError::TooLong(too_long) => Error::new(ErrorKind::LineTooLong {
            limit: too_long.limit() as u64,
        })
        .with_stage(Stage::Body)
        .with_source(too_long),
        other => {
            let path = other.json_path().unwrap_or("").to_owned();
            Error::decode(path, other).with_stage(Stage::Body)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server-sent events

impl Event {
    /// The event's data decoded from JSON. On failure the error's [`Error::json_path`] says
    /// where in the data decoding stopped.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let de = &mut serde_json::Deserializer::from_str(&self.data);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            Error::decode(path, e.into_inner())
        })
    }
}

/// Why an [`EventSource`] ended without an error.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The server answered `204 No Content`: it has nothing more to send (the standard's
    /// way to tell a client to stop reconnecting).
    NoContent,
    /// The stream ended cleanly and the source doesn't reconnect after a clean end (see
    /// [`EventSource::reconnect_on_end`]).
    Ended,
}

/// `text/event-stream`: server-sent events from a request that is sent again when the
/// connection drops, from [`Client::event_source`](crate::Client::event_source) or
/// [`RequestBuilder::event_source`](crate::RequestBuilder::event_source).
///
/// A [`Stream`] of [`Event`]s, parsed by [`SseParser`] as a browser's `EventSource` would.
///
/// - **Reconnecting.** When the connection drops, or the server answers with a retryable
///   status (`408`, `429`, `500`, `502`, `503`, `504`) or a retryable error, the request is
///   sent again with `Last-Event-ID` set to the last event ID seen, after the reconnection
///   time the server set with `retry:` or, if it set none, the source's backoff (1 s,
///   doubling up to 30 s). Each reconnection is a new call through the client's pipeline,
///   so the breakers, rate limits and in-flight limits apply, and it draws on the retry
///   budget of the origin: when that is spent, or after
///   [`max_reconnects`](Self::max_reconnects) attempts in a row without a good connection,
///   the stream ends with the last error.
/// - **Ending.** A `204` ends the stream ([`end_reason`](Self::end_reason) says
///   [`EndReason::NoContent`]). An answer that is not `text/event-stream`, or a status that
///   is not retryable, ends it with an error saying so. A clean end of the body reconnects
///   a `GET` (as a browser does) and ends any other request (a `POST` that streams a
///   chat completion must not be sent twice); [`reconnect_on_end`](Self::reconnect_on_end)
///   changes that.
/// - **Time limits.** A stream is long-lived: unless the request set its own
///   [deadline](crate::RequestBuilder::deadline), the client's deadline does not apply to it.
///   The read-idle timeout does: a server that goes quiet for longer than it (keep-alive
///   comments count) is taken as gone, and reconnected to.
/// - **Memory.** At most one event being read, of at most
///   [`max_event_size`](Self::max_event_size) bytes; a larger one is an error
///   ([`ErrorKind::EventTooLarge`]) and is skipped, and the stream goes on.
///
/// A request whose body is a one-shot stream can't be sent again: its source doesn't
/// reconnect.
#[must_use = "streams do nothing unless polled"]
pub struct EventSource {
    shared: Arc<dyn Dispatch>,
    epoch: Instant,
    /// The request to send (again); `None` once it could not be copied.
    request: Option<Request>,
    parser: SseParser,
    state: State,
    /// Events parsed and not yet given.
    ready: VecDeque<Result<Event, SseError>>,
    /// Connections in a row that failed.
    failures: u32,
    max_reconnects: u32,
    reconnect_on_end: bool,
    ended: Option<EndReason>,
}

enum State {
    /// Send the request (again) when next polled.
    Connect,
    Connecting(Pending),
    /// Boxed: the body reader is large, and a source spends most of its life here anyway.
    Streaming(Box<BodyStream>),
    Waiting(Sleep),
    /// Building the request failed: the error, once.
    Failed(Option<Error>),
    Done,
}

impl EventSource {
    /// The default [`max_reconnects`](Self::max_reconnects).
    pub const DEFAULT_MAX_RECONNECTS: u32 = 10;
    const FIRST_DELAY: Duration = Duration::from_secs(1);
    const MAX_DELAY: Duration = Duration::from_secs(30);

    pub(crate) fn new(shared: Arc<dyn Dispatch>, epoch: Instant, mut request: Request) -> Self {
        let headers = &mut request.headers;
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        if !headers.contains_key(CACHE_CONTROL) {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        if request.timeouts.deadline.is_none() {
            // The stream lives as long as the server keeps it up.
            request.timeouts.deadline = Some(super::NEVER);
        }
        let reconnect_on_end = request.method == Method::GET;
        Self {
            shared,
            epoch,
            request: Some(request),
            parser: SseParser::new(),
            state: State::Connect,
            ready: VecDeque::new(),
            failures: 0,
            max_reconnects: Self::DEFAULT_MAX_RECONNECTS,
            reconnect_on_end,
            ended: None,
        }
    }

    /// A source whose only item is `err`.
    pub(crate) fn failed(shared: Arc<dyn Dispatch>, epoch: Instant, err: Error) -> Self {
        let mut source = Self::new(
            shared,
            epoch,
            Request::new(Method::GET, http::Uri::default()),
        );
        source.request = None;
        source.ready.clear();
        source.state = State::Failed(Some(err));
        source
    }

    /// Sets how many times in a row a connection may fail before the stream ends with the
    /// error (default [`DEFAULT_MAX_RECONNECTS`](Self::DEFAULT_MAX_RECONNECTS)); a
    /// connection that is answered with an event stream resets the count.
    pub fn max_reconnects(mut self, n: u32) -> Self {
        self.max_reconnects = n;
        self
    }

    /// Sets whether a body that ends cleanly is reconnected to (default: for a `GET` only).
    pub fn reconnect_on_end(mut self, reconnect: bool) -> Self {
        self.reconnect_on_end = reconnect;
        self
    }

    /// Sets the largest event accepted, in bytes (default
    /// [`SseParser::DEFAULT_MAX_EVENT_SIZE`]).
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.parser = std::mem::take(&mut self.parser).with_max_event_size(bytes);
        self
    }

    /// Starts from `id`, as if an earlier stream had ended there: the first request sends it
    /// as `Last-Event-ID`.
    pub fn last_event_id(mut self, id: &str) -> Self {
        self.parser = std::mem::take(&mut self.parser).with_last_event_id(id);
        self
    }

    /// The ID of the last event received (what a reconnection sends as `Last-Event-ID`);
    /// empty when there is none.
    pub fn current_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// Why the stream ended, when it ended without an error.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.ended
    }

    /// The next request to send: a copy of the template with `Last-Event-ID`.
    fn next_request(&mut self) -> Option<Request> {
        let template = self.request.as_ref()?;
        let mut request = match template.try_clone() {
            Some(copy) => copy,
            // A one-shot body: sent once, never again.
            None => self.request.take()?,
        };
        let id = self.parser.last_event_id();
        if !id.is_empty() {
            if let Ok(value) = HeaderValue::from_str(id) {
                request
                    .headers
                    .insert(HeaderName::from_static("last-event-id"), value);
            }
        }
        Some(request)
    }

    /// After a failed or ended connection: waits and reconnects, or ends with `err`.
    fn reconnect(&mut self, err: Option<Error>) -> Option<Result<Event, Error>> {
        self.failures += 1;
        let give_up = |this: &mut Self, err: Option<Error>| {
            this.state = State::Done;
            match err {
                Some(err) => Some(Err(err)),
                None => {
                    this.ended = Some(EndReason::Ended);
                    None
                }
            }
        };
        if self.failures > self.max_reconnects || self.request.is_none() {
            return give_up(self, err);
        }
        let timer = self.shared.timer().clone();
        let now = timer.now();
        let refused = self.request.as_ref().is_some_and(|request| {
            let store = self.shared.store();
            let refused = !store
                .resolve(&store.find(&request.url))
                .try_withdraw_retry(now);
            if refused {
                tracing::debug!(target: "keel::sse", url = %redact::url(&request.url),
                    "not reconnecting: the retry budget is spent");
            }
            refused
        });
        if refused {
            return give_up(self, err);
        }
        let delay = self.parser.retry().unwrap_or_else(|| {
            let doublings = self.failures.saturating_sub(1).min(16);
            Self::FIRST_DELAY
                .saturating_mul(1 << doublings)
                .min(Self::MAX_DELAY)
        });
        if let Some(request) = &self.request {
            tracing::debug!(target: "keel::sse", url = %redact::url(&request.url), ?delay,
                last_event_id = self.parser.last_event_id(), error = err.as_ref().map(tracing::field::display),
                "reconnecting");
        }
        self.state = State::Waiting(timer.sleep_until(now.checked_add(delay).unwrap_or(now)));
        None
    }

    /// Checks the answer to a connection: an event stream to read, or why not.
    fn on_response(&mut self, resp: Response) -> Option<Result<Event, Error>> {
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            self.state = State::Done;
            self.ended = Some(EndReason::NoContent);
            return None;
        }
        if !status.is_success() {
            let err = Error::status(status, resp.headers().clone(), bytes::Bytes::new())
                .with_url(resp.url().clone());
            if RETRYABLE_STATUSES.contains(&status.as_u16()) {
                return self.reconnect(Some(err));
            }
            self.state = State::Done;
            return Some(Err(err));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("text/event-stream") {
            self.state = State::Done;
            let message = if content_type.is_empty() {
                "expected a text/event-stream answer, got one with no Content-Type".to_owned()
            } else {
                format!("expected a text/event-stream answer, got {content_type}")
            };
            return Some(Err(Error::new(ErrorKind::Decode)
                .with_stage(Stage::AwaitHead)
                .with_url(resp.url().clone())
                .with_source(message)));
        }
        self.failures = 0;
        self.state = State::Streaming(Box::new(resp.bytes_stream()));
        None
    }
}

impl Stream for EventSource {
    type Item = Result<Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(event.map_err(|SseError::EventTooLarge { limit }| {
                    Error::new(ErrorKind::EventTooLarge {
                        limit: limit as u64,
                    })
                    .with_stage(Stage::Body)
                })));
            }
            let step = match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Failed(err) => {
                    let err = err.take();
                    this.state = State::Done;
                    return Poll::Ready(err.map(Err));
                }
                State::Connect => {
                    match this.next_request() {
                        Some(request) => {
                            this.state = State::Connecting(Pending::new(
                                this.shared.clone(),
                                request,
                                this.epoch,
                            ))
                        }
                        None => this.state = State::Done,
                    }
                    continue;
                }
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state = State::Connect;
                    continue;
                }
                State::Connecting(pending) => match ready!(Pin::new(pending).poll(cx)) {
                    Ok(resp) => this.on_response(resp),
                    Err(err) if err.is_retryable() => this.reconnect(Some(err)),
                    Err(err) => {
                        this.state = State::Done;
                        Some(Err(err))
                    }
                },
                State::Streaming(body) => match ready!(Pin::new(&mut **body).poll_next(cx)) {
                    Some(Ok(chunk)) => {
                        this.parser.feed(&chunk);
                        while let Some(event) = this.parser.next_event() {
                            this.ready.push_back(event);
                        }
                        continue;
                    }
                    Some(Err(err)) => {
                        // The event being read is incomplete: dropped, as at any end.
                        this.parser.finish();
                        if err.is_retryable()
                            || matches!(err.kind(), ErrorKind::Timeout(_) | ErrorKind::Body)
                        {
                            this.reconnect(Some(err))
                        } else {
                            this.state = State::Done;
                            Some(Err(err))
                        }
                    }
                    None => {
                        this.parser.finish();
                        while let Some(event) = this.parser.next_event() {
                            this.ready.push_back(event);
                        }
                        if this.reconnect_on_end {
                            // A clean end is not a failure: the count isn't raised for it.
                            let step = this.reconnect(None);
                            this.failures = this.failures.saturating_sub(1);
                            step
                        } else {
                            this.state = State::Done;
                            this.ended = Some(EndReason::Ended);
                            None
                        }
                    }
                },
            };
            if let Some(item) = step {
                return Poll::Ready(Some(item));
            }
        }
    }
}

impl fmt::Debug for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Connect => "connect",
            State::Connecting(_) => "connecting",
            State::Streaming(_) => "streaming",
            State::Waiting(_) => "waiting to reconnect",
            State::Failed(_) | State::Done => "done",
        };
        f.debug_struct("EventSource")
            .field("state", &state)
            .field("last_event_id", &self.parser.last_event_id())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The body as a [`Stream`] of lines (`\n` or `\r\n` ends one), holding at most one
    /// line (8 MiB by default: [`Lines::max_line`]).
    pub fn lines(self) -> Lines {
        Lines::new(self.bytes_stream())
    }

    /// The body as a [`Stream`] of values of type `T`, one JSON document per line (NDJSON /
    /// JSON Lines), holding at most one line.
    pub fn ndjson<T: DeserializeOwned>(self) -> Ndjson<T> {
        Ndjson::new(self.bytes_stream())
    }
}
