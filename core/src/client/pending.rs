//! The future of a call in flight: attempts, the retry machine's decisions, and the sleeps
//! between them, until a response head is handed to the caller.
//!
//! ```text
//!   send() ──► Sending(attempt n) ──head or error──► Retry::on_outcome
//!                  ▲                                   │ Finish / GiveUp ──► Ready(response or error)
//!                  │                                   │ RetryAt(at)
//!                  └──────── Backoff(sleep until at) ◄─┘
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Method, Uri};

use super::response::Limits;
use super::{merge_default_headers, Dispatch, Response, RetryEvent, Timeouts};
use crate::body::{Body, ResponseBody};
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::machine::retry::{Outcome, RequestFacts, Retry, RetryAction};
use crate::transport::{BoxFuture, CallDeadline, Sleep};

/// Rebuilds a request body for another attempt; see
/// [`RequestBuilder::body_with`](crate::RequestBuilder::body_with).
pub(crate) type BodyFn = Arc<dyn Fn() -> Body + Send + Sync>;

/// The future returned by [`RequestBuilder::send`](crate::RequestBuilder::send): resolves to the
/// [`Response`] once a head has arrived that the retry policy accepts (or gives up on), or to
/// the error that ended the call.
///
/// It is a named type so it can be stored and is `Send`. Dropping it cancels the call at once,
/// whether an attempt is in flight (its connection is released) or the driver is waiting to
/// retry (no further attempt is made).
#[must_use = "a request does nothing unless its future is awaited"]
pub struct Pending {
    state: State,
}

enum State {
    Failed(Option<Error>),
    /// Boxed once: the call is moved around with the future (and into the response, for body
    /// retries) as one pointer instead of a few hundred bytes.
    Running(Box<Call>),
}

/// A call: what it sends, its limits and retry state, and the attempt in progress.
pub(crate) struct Call {
    shared: Arc<dyn Dispatch>,
    method: Method,
    url: Uri,
    /// The request's own headers; the client's defaults are merged into each attempt's copy.
    headers: HeaderMap,
    /// The body as given; a stream is taken by the first attempt.
    body: Option<Body>,
    /// Whether a stream body was taken by an attempt, so there is none left to send.
    body_taken: bool,
    rebuild: Option<BodyFn>,
    idempotent: Option<bool>,
    timeouts: Timeouts,
    deadline: Instant,
    retry: Option<Retry>,
    phase: Phase,
}

enum Phase {
    Sending {
        fut: BoxFuture<Result<http::Response<ResponseBody>, Error>>,
        /// Armed at `head_by` once the transport has returned `Pending`.
        sleep: Option<Sleep>,
        head_by: Instant,
        timeout: TimeoutPhase,
    },
    Backoff(Sleep),
    Idle,
}

/// What the request builder hands to [`Call::start`].
pub(crate) struct Parts {
    pub(crate) method: Method,
    pub(crate) url: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Body>,
    pub(crate) rebuild: Option<BodyFn>,
    pub(crate) idempotent: Option<bool>,
    pub(crate) timeouts: Timeouts,
}

enum Step {
    Retry,
    Done(Result<http::Response<ResponseBody>, Error>),
}

impl Pending {
    pub(crate) fn start(shared: Arc<dyn Dispatch>, seed: u64, parts: Parts) -> Self {
        let timer = shared.timer();
        let start = timer.now();
        let deadline = super::add_saturating(start, parts.timeouts.deadline);
        let policy = &shared.config().retry;
        let retry = (policy.max_attempts() != Some(1))
            .then(|| Retry::new(policy, start, seed).with_deadline(deadline));
        if retry.is_some() {
            if let Some(budget) = shared.budget() {
                budget
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .deposit(start);
            }
        }
        let mut call = Box::new(Call {
            shared,
            method: parts.method,
            url: parts.url,
            headers: parts.headers,
            body: parts.body,
            body_taken: false,
            rebuild: parts.rebuild,
            idempotent: parts.idempotent,
            timeouts: parts.timeouts,
            deadline,
            retry,
            phase: Phase::Idle,
        });
        call.send_attempt(start);
        Self {
            state: State::Running(call),
        }
    }

    pub(crate) fn failed(err: Error) -> Self {
        Self {
            state: State::Failed(Some(err)),
        }
    }
}

impl Future for Pending {
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let call = match &mut this.state {
            State::Running(call) => call,
            State::Failed(err) => {
                return Poll::Ready(Err(err.take().unwrap_or_else(|| {
                    Error::new(ErrorKind::InvalidRequest)
                        .with_source("the request future was polled after it completed")
                })))
            }
        };
        loop {
            match call.poll_step(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Step::Retry) => continue,
                Poll::Ready(Step::Done(Err(err))) => {
                    this.state = State::Failed(None);
                    return Poll::Ready(Err(err));
                }
                Poll::Ready(Step::Done(Ok(head))) => {
                    let State::Running(call) =
                        std::mem::replace(&mut this.state, State::Failed(None))
                    else {
                        unreachable!("the state was Running a moment ago")
                    };
                    return Poll::Ready(Ok(call.into_response(head)));
                }
            }
        }
    }
}

impl Call {
    /// Builds the next attempt's request and hands it to the transport.
    fn send_attempt(&mut self, now: Instant) {
        // Without retries there is no next attempt to keep the headers for.
        let mut headers = if self.retry.is_some() {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        let config = self.shared.config();
        merge_default_headers(&mut headers, &config.headers);
        let body = match (&self.rebuild, &self.body) {
            (Some(rebuild), _) => rebuild(),
            (None, Some(body)) => match body.try_clone() {
                Some(copy) => copy,
                None => {
                    self.body_taken = true;
                    self.body.take().unwrap_or_default()
                }
            },
            (None, None) => Body::empty(),
        };
        crate::body::frame_empty_body(&self.method, &body, &mut headers);
        let mut request = http::Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.url.clone();
        *request.headers_mut() = headers;
        if config.call_deadline {
            request.extensions_mut().insert(CallDeadline(self.deadline));
        }
        let (head_by, timeout) = match now.checked_add(self.timeouts.attempt) {
            Some(t) if t < self.deadline => (t, TimeoutPhase::Attempt),
            _ => (self.deadline, TimeoutPhase::Deadline),
        };
        self.phase = Phase::Sending {
            fut: self.shared.send(request),
            sleep: None,
            head_by,
            timeout,
        };
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        let outcome = match &mut self.phase {
            Phase::Backoff(sleep) => {
                ready!(sleep.as_mut().poll(cx));
                let now = self.shared.timer().now();
                self.send_attempt(now);
                return Poll::Ready(Step::Retry);
            }
            Phase::Sending {
                fut,
                sleep,
                head_by,
                timeout,
            } => match fut.as_mut().poll(cx) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => {
                    let timer = self.shared.timer();
                    let sleep = sleep.get_or_insert_with(|| timer.sleep_until(*head_by));
                    ready!(sleep.as_mut().poll(cx));
                    Err(Error::new(ErrorKind::Timeout(*timeout)))
                }
            },
            Phase::Idle => {
                return Poll::Ready(Step::Done(Err(Error::new(ErrorKind::InvalidRequest)
                    .with_source("the call has no attempt in flight"))))
            }
        };
        self.phase = Phase::Idle;
        Poll::Ready(self.decide(outcome))
    }

    /// Asks the retry machine about an attempt's outcome and acts on the answer.
    fn decide(&mut self, outcome: Result<http::Response<ResponseBody>, Error>) -> Step {
        match outcome {
            Ok(head) => {
                let verdict = self.consult(Outcome::Response {
                    status: head.status(),
                    headers: head.headers(),
                });
                match verdict {
                    Verdict::Retry => Step::Retry,
                    Verdict::Stop(_) => {
                        tracing::debug!(method = %self.method, url = %self.url,
                            status = head.status().as_u16(), "response head");
                        Step::Done(Ok(head))
                    }
                }
            }
            Err(err) => {
                let err = err.with_url(self.url.clone());
                match self.consult(Outcome::Error(&err)) {
                    Verdict::Retry => Step::Retry,
                    Verdict::Stop(gave_up) => {
                        tracing::debug!(method = %self.method, url = %self.url, error = %err,
                            "request failed");
                        Step::Done(Err(err.with_attempts(self.attempts(), gave_up)))
                    }
                }
            }
        }
    }

    /// Runs the retry machine on `outcome`; on `RetryAt`, reports the retry and arms the
    /// backoff.
    fn consult(&mut self, outcome: Outcome<'_>) -> Verdict {
        let Some(retry) = &mut self.retry else {
            return Verdict::Stop(None);
        };
        // Most outcomes are not worth retrying: settle those without reading the clocks.
        if retry.policy().retry_reason(&outcome).is_none() {
            return Verdict::Stop(None);
        }
        let timer = self.shared.timer();
        let facts = RequestFacts::new(&self.method)
            .with_headers(&self.headers)
            .with_replayable_body(self.rebuild.is_some() || !self.body_taken);
        let facts = match self.idempotent {
            Some(idempotent) => facts.with_idempotent(idempotent),
            None => facts,
        };
        let action = retry.on_outcome(
            timer.now(),
            timer.now_system(),
            &facts,
            outcome,
            self.shared.budget(),
        );
        match action {
            RetryAction::RetryAt {
                at,
                delay,
                attempt,
                reason,
                pacing,
            } => {
                tracing::debug!(target: "keel::retry", method = %self.method, url = %self.url,
                    attempt, %reason, ?delay, ?pacing, "retrying");
                if let Some(hook) = &self.shared.config().on_retry {
                    hook(&RetryEvent {
                        attempt,
                        reason,
                        delay,
                        pacing,
                        method: self.method.clone(),
                        url: self.url.clone(),
                    });
                }
                self.phase = Phase::Backoff(timer.sleep_until(at));
                Verdict::Retry
            }
            RetryAction::GiveUp(reason) => {
                tracing::debug!(target: "keel::retry", method = %self.method, url = %self.url,
                    %reason, "not retrying");
                Verdict::Stop(Some(reason))
            }
            _ => Verdict::Stop(None),
        }
    }

    fn attempts(&self) -> u32 {
        self.retry.as_ref().map_or(1, Retry::attempt)
    }

    /// Hands the head to the caller; the call rides along when a failure while reading the body
    /// could still be retried.
    fn into_response(self: Box<Self>, head: http::Response<ResponseBody>) -> Response {
        let limits = Limits {
            read_idle: self.timeouts.read_idle,
            deadline: self.deadline,
            max_body_size: self.shared.config().max_body_size,
            head_request: self.method == Method::HEAD,
        };
        let timer = self.shared.timer().clone();
        let url = self.url.clone();
        let resume = self.retry.is_some().then_some(self);
        Response::new(head, url, timer, limits, resume)
    }

    /// After the body of a response failed mid-way: the retry to await, or the error to
    /// return (with the attempts counted).
    pub(crate) fn retry_body_failure(mut self: Box<Self>, err: Error) -> Result<Pending, Error> {
        match self.consult(Outcome::Error(&err)) {
            Verdict::Retry => Ok(Pending {
                state: State::Running(self),
            }),
            Verdict::Stop(gave_up) => Err(err.with_attempts(self.attempts(), gave_up)),
        }
    }
}

enum Verdict {
    Retry,
    Stop(Option<crate::machine::retry::GiveUpReason>),
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Failed(err) => f.debug_tuple("Pending::Failed").field(err).finish(),
            State::Running(call) => f
                .debug_struct("Pending")
                .field("method", &call.method)
                .field("url", &call.url)
                .field("attempt", &call.attempts())
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("attempt", &self.attempts())
            .finish_non_exhaustive()
    }
}
