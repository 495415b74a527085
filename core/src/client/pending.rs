//! The future of a call: the one driver loop that runs the pipeline (see
//! [`pipeline`](super::pipeline)) until a response head is handed to the caller.
//!
//! ```text
//!   first poll ──► start: clock read, deadline, the call's policy stack
//!        │
//!        ▼
//!   Admit(layer i) ── before_attempt ──► WaitUntil(t): Waiting ─► Admit(i)
//!        │  all Proceed / Hold                Fail(e): Done(Err)
//!        ▼
//!   Sending(attempt) ──head or error──► on_outcome, innermost first
//!        ▲                                    │ Deliver / all Proceed ──► Done(response or error)
//!        │                                    │ Fail(e) ──► Done(Err)
//!        └──── Admit(0) ◄── Backoff(until at) ◄┘ Reissue { at }
//! ```
//!
//! The loop only carries out actions; it never decides. It knows nothing of retries or
//! redirects, so a new policy needs no change here.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::header::{ACCEPT_ENCODING, HOST};
use http::Method;

use tracing::Span;

use super::hooks::{self, Attempt, HedgeEvent};
use super::layers::{hedge_policy, Stack};
use super::observe;
use super::pipeline::{Action, CallRecord, Guards, PolicyContext, Waiter};
use super::request::Request;
use super::response::Limits;
use super::state::OriginRef;
use super::{merge_default_headers, Dispatch, Response, Timeouts};
use crate::body::{Body, ResponseBody};
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::machine::hedge::{HedgePolicy, Latencies};
use crate::machine::outcome::Outcome;
use crate::transport::{BoxFuture, CallDeadline, Sleep};

/// The future returned by [`RequestBuilder::send`](crate::RequestBuilder::send) and
/// [`Client::execute`](crate::Client::execute): resolves to the [`Response`] once a head has
/// arrived that the policies deliver, or to the error that ended the call.
///
/// Nothing happens until it is first polled: the deadline and every time limit start then.
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

/// A call: the request as it stands, its limits, its policies, and the attempt in progress.
pub(crate) struct Call {
    shared: Arc<dyn Dispatch>,
    pub(super) request: Request,
    /// A one-shot stream body was taken by an attempt, so there is none left to send.
    body_sent_once: bool,
    timeouts: Timeouts,
    deadline: Instant,
    origin: OriginRef,
    stack: Stack,
    record: CallRecord,
    /// Guards the policies handed out for the attempt in flight.
    guards: Guards,
    phase: Phase,
    /// The call's span (disabled when no subscriber wants it).
    span: Span,
    /// How many attempts went to the transport (hedges too).
    sent: u32,
    /// When the call started (its first poll), for its duration metric.
    #[cfg(feature = "metrics")]
    started: Instant,
}

enum Phase {
    /// Not polled yet: nothing has started.
    Unstarted,
    /// Asking the policies, from layer `next` inward, whether the attempt may go.
    Admit {
        next: usize,
    },
    /// A policy asked to wait before it is asked again.
    Waiting {
        sleep: Sleep,
        layer: usize,
    },
    /// A policy asked to wait for something; its answer is acted on as the layer's.
    WaitingFor {
        waiter: Waiter,
        layer: usize,
    },
    Sending {
        fut: BoxFuture<Result<http::Response<ResponseBody>, Error>>,
        /// Armed at `head_by` once the transport has returned `Pending`.
        sleep: Option<Sleep>,
        head_by: Instant,
        timeout: TimeoutPhase,
        /// The attempt's hedge, when the call hedges (boxed: most calls don't).
        hedge: Option<Box<Hedge>>,
        /// The attempt's number in the call, and its span.
        number: u32,
        span: Span,
    },
    Backoff(Sleep),
    Done,
}

enum Step {
    Continue,
    Done(Result<http::Response<ResponseBody>, Error>),
}

type HeadFuture = BoxFuture<Result<http::Response<ResponseBody>, Error>>;

/// A second attempt raced against a slow one.
struct Hedge {
    /// When the attempt in flight went (for the latencies a percentile hedge learns from).
    sent: Instant,
    /// When to send the hedge; `None`: not for this attempt.
    at: Option<Instant>,
    /// Armed at `at` once the first attempt has returned `Pending`.
    sleep: Option<Sleep>,
    /// The hedge, once sent.
    second: Option<Second>,
}

struct Second {
    fut: HeadFuture,
    /// What the policies handed out for it.
    guards: Guards,
    sent: Instant,
    number: u32,
    span: Span,
}

/// What happened while an attempt (and maybe its hedge) was in flight.
enum Event {
    First(Result<http::Response<ResponseBody>, Error>),
    Second(Result<http::Response<ResponseBody>, Error>),
    HedgeDue,
}

impl Call {
    /// A call of `request`, allocated once: a [`RequestBuilder`](crate::RequestBuilder) writes
    /// its request in place, and [`Pending::from_call`] starts it where it is.
    #[inline]
    pub(crate) fn unstarted(
        shared: Arc<dyn Dispatch>,
        request: Request,
        epoch: Instant,
    ) -> Box<Self> {
        let timeouts = shared.config().timeouts;
        Box::new(Call {
            shared,
            request,
            body_sent_once: false,
            // The client's; `Pending::from_call` applies the request's own.
            timeouts,
            // Replaced by the real deadline at the first poll; no clock is read before.
            deadline: epoch,
            origin: OriginRef::Base,
            stack: Stack::empty(),
            record: CallRecord::default(),
            guards: Guards::new(),
            phase: Phase::Unstarted,
            span: Span::none(),
            sent: 0,
            #[cfg(feature = "metrics")]
            started: epoch,
        })
    }

    /// The request, out of a call that never started.
    pub(crate) fn into_request(self: Box<Self>) -> Request {
        self.request
    }
}

impl Pending {
    /// A call of `request` that starts when first polled.
    #[inline]
    pub(crate) fn new(shared: Arc<dyn Dispatch>, request: Request, epoch: Instant) -> Self {
        Self::from_call(Call::unstarted(shared, request, epoch))
    }

    /// `call` (from [`Call::unstarted`]), to start when first polled.
    #[inline]
    pub(crate) fn from_call(mut call: Box<Call>) -> Self {
        let config = call.shared.config();
        let t = &call.request.timeouts;
        call.timeouts = Timeouts {
            connect: config.timeouts.connect,
            attempt: t.attempt.unwrap_or(config.timeouts.attempt),
            deadline: t.deadline.unwrap_or(config.timeouts.deadline),
            read_idle: t.read_idle.unwrap_or(config.timeouts.read_idle),
        };
        call.origin = call.shared.store().find(&call.request.url);
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
        if matches!(call.phase, Phase::Unstarted) {
            call.span = observe::call_span(&call.request.method, &call.request.url);
        }
        if call.span.is_disabled() {
            return this.drive(cx);
        }
        // Entered for the policies' events.
        let _entered = call.span.clone().entered();
        this.drive(cx)
    }
}

impl Pending {
    /// Runs the call's loop until it waits or ends.
    #[inline(always)]
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response, Error>> {
        let this = self;
        let State::Running(call) = &mut this.state else {
            unreachable!("drive runs a running call")
        };
        loop {
            match call.poll_step(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Step::Continue) => continue,
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
    /// The first poll: the clock is read, the deadline set and the policies built.
    fn start(&mut self) -> Option<Step> {
        let start = self.shared.timer().now();
        #[cfg(feature = "metrics")]
        {
            self.started = start;
        }
        self.deadline = super::add_saturating(start, self.timeouts.deadline);
        self.stack = Stack::new(
            self.shared.config(),
            &self.request,
            start..self.deadline,
            self.shared.next_seed(),
            self.shared.store().resolve(&self.origin),
        );
        self.admit(0, Some(start))
    }

    /// Asks the policies from layer `next` inward whether the attempt may go, and sends it
    /// when they all agree.
    fn admit(&mut self, next: usize, now: Option<Instant>) -> Option<Step> {
        if !self.stack.admits() {
            let now = now.unwrap_or_else(|| self.shared.timer().now());
            self.send_attempt(now);
            return None;
        }
        let (stack, mut cx) = self.split(now, None);
        for layer in next.max(stack.first_admitting())..stack.len() {
            match stack.layer(layer).before_attempt(&mut cx) {
                Action::Proceed => {}
                Action::Hold(guard) => cx.guards.push(guard),
                Action::WaitUntil(at) => {
                    self.phase = Phase::Waiting {
                        sleep: cx.timer.sleep_until(at),
                        layer,
                    };
                    return None;
                }
                Action::WaitFor(waiter) => {
                    self.phase = Phase::WaitingFor { waiter, layer };
                    return None;
                }
                Action::Fail(err) => {
                    self.phase = Phase::Done;
                    return Some(Step::Done(Err(self.finish_error(err))));
                }
                // Re-issuing or delivering means nothing before an attempt: go on.
                Action::Reissue { .. } | Action::Deliver => {}
            }
        }
        let now = cx.now();
        self.send_attempt(now);
        None
    }

    /// Acts on the answer a [`Waiter`] of layer `layer` resolved to.
    fn waited(&mut self, layer: usize, action: Action) -> Option<Step> {
        match action {
            Action::Hold(guard) => {
                self.guards.push(guard);
                self.admit(layer + 1, None)
            }
            // "Ask me again now": at once, not on the timer (whose next tick may be a
            // millisecond away).
            Action::WaitUntil(at) if at <= self.shared.timer().now() => self.admit(layer, None),
            Action::WaitUntil(at) => {
                self.phase = Phase::Waiting {
                    sleep: self.shared.timer().sleep_until(at),
                    layer,
                };
                None
            }
            Action::WaitFor(waiter) => {
                self.phase = Phase::WaitingFor { waiter, layer };
                None
            }
            Action::Fail(err) => {
                self.phase = Phase::Done;
                Some(Step::Done(Err(self.finish_error(err))))
            }
            Action::Proceed | Action::Reissue { .. } | Action::Deliver => {
                self.admit(layer + 1, None)
            }
        }
    }

    /// The stack, and what a policy sees of the call: the guards are the attempt's in flight,
    /// or `guards` (a hedge's) when given.
    fn split<'a>(
        &'a mut self,
        now: Option<Instant>,
        guards: Option<&'a mut Guards>,
    ) -> (&'a mut Stack, PolicyContext<'a>) {
        let hedge = guards.is_some();
        let cx = PolicyContext {
            request: &mut self.request,
            body_sent_once: self.body_sent_once,
            record: &mut self.record,
            timer: self.shared.timer(),
            config: self.shared.config(),
            origin_ref: &self.origin,
            store: self.shared.store(),
            now,
            deadline: self.deadline,
            claimed: false,
            guards: guards.unwrap_or(&mut self.guards),
            hedge,
        };
        (&mut self.stack, cx)
    }

    /// Hands the next attempt to the transport, and plans its hedge.
    #[inline]
    fn send_attempt(&mut self, now: Instant) {
        let (attempt, head_by, timeout) = self.build_attempt(now);
        self.sent += 1;
        let number = self.sent;
        let span = observe::attempt_span(
            &self.span,
            &self.request.method,
            &self.request.url,
            number,
            false,
        );
        let fut = self.launch(attempt, Attempt::new(number, false), &span);
        let hedge = self.stack.hedges().then(|| {
            let policy = hedge_policy(self.shared.config(), &self.request);
            let delay = if policy.is_some_and(HedgePolicy::observes_latency) {
                let state = self.shared.store().resolve(&self.origin).lock();
                policy.and_then(|p| p.delay(state.latencies.as_ref()))
            } else {
                policy.and_then(|p| p.delay(None))
            };
            Box::new(Hedge {
                sent: now,
                at: delay
                    .and_then(|delay| now.checked_add(delay))
                    .filter(|&at| at < head_by),
                sleep: None,
                second: None,
            })
        });
        self.phase = Phase::Sending {
            fut,
            sleep: None,
            head_by,
            timeout,
            hedge,
            number,
            span,
        };
    }

    /// Hands an attempt to the transport, through the client's `before_attempt` hooks.
    #[inline]
    fn launch(&self, mut attempt: http::Request<Body>, info: Attempt, span: &Span) -> HeadFuture {
        #[cfg(feature = "metrics")]
        observe::metrics::attempt(attempt.uri(), info.is_hedge());
        #[cfg(feature = "opentelemetry")]
        if self.shared.config().propagate {
            observe::inject_trace_context(span, attempt.headers_mut());
        }
        let hooks = &self.shared.config().hooks;
        if hooks.is_empty() {
            return self.shared.send(attempt);
        }
        if !hooks.has_async() {
            let _entered = span.enter();
            if let Err(err) = hooks.before_sync(&info, &mut attempt) {
                return Box::pin(std::future::ready(Err(err)));
            }
            return self.shared.send(attempt);
        }
        let shared = self.shared.clone();
        let before = hooks.before_all(info, attempt);
        Box::pin(async move { shared.send(before.await?).await })
    }

    /// Builds the next attempt's request, and when its head is due.
    #[inline(always)]
    fn build_attempt(&mut self, now: Instant) -> (http::Request<Body>, Instant, TimeoutPhase) {
        let config = self.shared.config();
        let request = &mut self.request;
        let own_headers = !request.headers.is_empty();
        // A request that asks for the body as sent keeps an Accept-Encoding it set itself.
        let own_accept_encoding =
            request.decompress == Some(false) && request.headers.contains_key(ACCEPT_ENCODING);
        let origin = self.shared.store().resolve(&self.origin);
        let mut headers = if own_headers {
            // With no policy and no hedge there is no next attempt to keep the headers for.
            let mut headers = if self.stack.is_empty() && !self.stack.hedges() {
                std::mem::take(&mut request.headers)
            } else {
                request.headers.clone()
            };
            merge_default_headers(&mut headers, &config.headers);
            if let (true, Some(host)) = (config.set_host, &origin.host) {
                // Unless the caller set one, the origin's Host, worked out once for it.
                if !headers.contains_key(HOST) {
                    headers.append(HOST, host.clone());
                }
            }
            headers
        } else {
            // The defaults and Host, put together once for the origin.
            origin.headers.clone()
        };
        match request.decompress {
            Some(false) if config.default_accept_encoding && !own_accept_encoding => {
                headers.remove(ACCEPT_ENCODING);
            }
            Some(true) if !config.decompress && !headers.contains_key(ACCEPT_ENCODING) => {
                if let Some(value) = &config.accept_encoding {
                    headers.insert(ACCEPT_ENCODING, value.clone());
                }
            }
            _ => {}
        }
        if let Some(scoped) = config.scoped_headers_for(&request.url, self.record.hops()) {
            merge_default_headers(&mut headers, scoped);
        }
        let body = match (&request.rebuild, &request.body) {
            (Some(rebuild), _) => rebuild(),
            (None, Some(body)) => match body.try_clone() {
                Some(copy) => copy,
                None => {
                    self.body_sent_once = true;
                    request.body.take().unwrap_or_default()
                }
            },
            (None, None) => Body::empty(),
        };
        let may_be_framed = config.defaults_frame || own_headers;
        crate::body::frame_empty_body(&request.method, &body, &mut headers, may_be_framed);
        let mut attempt = http::Request::new(body);
        *attempt.method_mut() = request.method.clone();
        *attempt.uri_mut() = request.url.clone();
        *attempt.headers_mut() = headers;
        if !request.extensions.is_empty() {
            *attempt.extensions_mut() = request.extensions.clone();
        }
        if config.call_deadline {
            attempt.extensions_mut().insert(CallDeadline(self.deadline));
        }
        let (head_by, timeout) = match now.checked_add(self.timeouts.attempt) {
            Some(t) if t < self.deadline => (t, TimeoutPhase::Attempt),
            _ => (self.deadline, TimeoutPhase::Deadline),
        };
        (attempt, head_by, timeout)
    }

    /// Sends the hedge of the attempt in flight, if the budget and the policies let it go
    /// now. Returns whether it went.
    fn send_hedge(&mut self) -> bool {
        let now = self.shared.timer().now();
        if let Some(budget) = &mut self.shared.store().resolve(&self.origin).lock().budget {
            if budget.available(now) == 0 {
                tracing::debug!(target: "keel::hedge", "not hedging: the retry budget is spent");
                return false;
            }
        }
        let mut guards = Guards::new();
        if self.stack.admits() {
            let (stack, mut cx) = self.split(Some(now), Some(&mut guards));
            for layer in stack.first_admitting()..stack.len() {
                match stack.layer(layer).before_attempt(&mut cx) {
                    Action::Proceed | Action::Reissue { .. } | Action::Deliver => {}
                    Action::Hold(guard) => cx.guards.push(guard),
                    // A hedge goes now or not at all; what it was given goes back with
                    // `guards`.
                    Action::WaitUntil(_) | Action::WaitFor(_) | Action::Fail(_) => {
                        tracing::debug!(target: "keel::hedge", layer,
                            "not hedging: a policy would hold it");
                        return false;
                    }
                }
            }
        }
        if !self
            .shared
            .store()
            .resolve(&self.origin)
            .try_withdraw_retry(now)
        {
            return false;
        }
        let (attempt, due, _) = self.build_attempt(now);
        if let Phase::Sending {
            hedge: Some(hedge), ..
        } = &self.phase
        {
            observe::event(
                self.shared.config(),
                &hooks::Event::Hedge(&HedgeEvent {
                    method: self.request.method.clone(),
                    url: self.request.url.clone(),
                    after: now.saturating_duration_since(hedge.sent),
                }),
            );
        }
        self.record.push_hedge();
        self.sent += 1;
        let number = self.sent;
        let span = observe::attempt_span(
            &self.span,
            &self.request.method,
            &self.request.url,
            number,
            true,
        );
        let fut = self.launch(attempt, Attempt::new(number, true), &span);
        if let Phase::Sending {
            head_by,
            sleep,
            hedge: Some(hedge),
            ..
        } = &mut self.phase
        {
            hedge.second = Some(Second {
                fut,
                guards,
                sent: now,
                number,
                span,
            });
            if due > *head_by {
                // The pair waits for the later of the two attempts' time limits.
                *head_by = due;
                *sleep = None;
            }
        }
        true
    }

    /// Polls the attempt in flight and its hedge.
    #[inline]
    fn poll_sending(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        let Phase::Sending {
            fut,
            sleep,
            head_by,
            timeout,
            hedge,
            number,
            span,
        } = &mut self.phase
        else {
            unreachable!("poll_sending is called while sending")
        };
        let timer = self.shared.timer();
        let first = {
            let _entered = span.enter();
            fut.as_mut().poll(cx)
        };
        let event = match first {
            Poll::Ready(outcome) => Some(Event::First(outcome)),
            Poll::Pending => match hedge.as_deref_mut() {
                None => None,
                Some(Hedge {
                    second: Some(second),
                    ..
                }) => {
                    let _entered = second.span.enter();
                    match second.fut.as_mut().poll(cx) {
                        Poll::Ready(outcome) => Some(Event::Second(outcome)),
                        Poll::Pending => None,
                    }
                }
                Some(Hedge { at: None, .. }) => None,
                Some(Hedge {
                    at: Some(at),
                    sleep,
                    ..
                }) => {
                    let due = sleep.get_or_insert_with(|| timer.sleep_until(*at));
                    due.as_mut().poll(cx).is_ready().then_some(Event::HedgeDue)
                }
            },
        };
        let mut winner_is_hedge = false;
        let mut timed_out = false;
        let outcome = match event {
            None => {
                let sleep = sleep.get_or_insert_with(|| timer.sleep_until(*head_by));
                ready!(sleep.as_mut().poll(cx));
                timed_out = true;
                Err(Error::new(ErrorKind::Timeout(*timeout)))
            }
            Some(Event::HedgeDue) => {
                let sent = self.send_hedge();
                if let Phase::Sending {
                    hedge: Some(hedge), ..
                } = &mut self.phase
                {
                    if !sent {
                        // Not this time: the attempt carries on alone.
                        hedge.at = None;
                        hedge.sleep = None;
                    }
                }
                return Poll::Ready(Step::Continue);
            }
            Some(Event::First(Err(err))) if hedge.as_ref().is_some_and(|h| h.second.is_some()) => {
                // The first attempt failed with its hedge still in flight: the hedge carries
                // on alone (the failure is not shown to the policies, and the first
                // attempt's guards go back).
                observe::record_error(span, &err);
                let hedge = hedge.as_mut().expect("a hedge in flight");
                let second = hedge.second.take().expect("a hedge in flight");
                *fut = second.fut;
                *number = second.number;
                *span = second.span;
                hedge.sent = second.sent;
                hedge.at = None;
                self.guards = second.guards;
                return Poll::Ready(Step::Continue);
            }
            Some(Event::First(outcome)) => outcome,
            Some(Event::Second(Err(err))) => {
                // The hedge failed: the first attempt carries on alone.
                if let Some(hedge) = hedge {
                    if let Some(second) = hedge.second.take() {
                        observe::record_error(&second.span, &err);
                    }
                    hedge.at = None;
                }
                return Poll::Ready(Step::Continue);
            }
            Some(Event::Second(Ok(head))) => {
                // The hedge won: its guards are the attempt's now; the first attempt is
                // dropped below, with the phase, and its guards go back.
                let hedge = hedge.as_mut().expect("a hedge in flight");
                let second = hedge.second.take().expect("a hedge in flight");
                hedge.sent = second.sent;
                self.guards = second.guards;
                *number = second.number;
                *span = second.span;
                winner_is_hedge = true;
                Ok(head)
            }
        };
        let (number, span) = (*number, std::mem::replace(span, Span::none()));
        let outcome = {
            let _entered = span.enter();
            // A head framed two ways is refused here, for every backend, before any hook or
            // policy sees it; its body is dropped unread, which closes the connection.
            let mut outcome = outcome;
            if let Ok(head) = &outcome {
                if let Err(refused) = crate::body::refuse_ambiguous_framing(head) {
                    outcome = Err(refused);
                }
            }
            let hooks = &self.shared.config().hooks;
            let outcome = if hooks.is_empty() {
                outcome
            } else {
                hooks.after(&Attempt::new(number, winner_is_hedge), outcome)
            };
            match &outcome {
                Ok(head) => observe::record_head(&span, head.status(), head.version()),
                Err(err) => observe::record_error(&span, err),
            }
            outcome
        };
        if let Phase::Sending {
            hedge: Some(hedge), ..
        } = &self.phase
        {
            self.learn_latency(hedge.sent, outcome.is_ok());
        }
        if timed_out {
            // The attempt (and a hedge) go with the backend told why: the connection under
            // them may have gone silent (see `connect::abandoned_on_timeout`).
            crate::connect::on_timeout(|| self.phase = Phase::Done);
        } else {
            self.phase = Phase::Done;
        }
        drop(span);
        Poll::Ready(self.decide(outcome))
    }

    /// Records how long an answered attempt took, when the call hedges at a percentile of
    /// the origin's latencies.
    #[cold]
    fn learn_latency(&self, sent: Instant, answered: bool) {
        let policy = hedge_policy(self.shared.config(), &self.request);
        if !answered || !policy.is_some_and(HedgePolicy::observes_latency) {
            return;
        }
        let latency = self.shared.timer().now().saturating_duration_since(sent);
        let origin = self.shared.store().resolve(&self.origin);
        origin
            .lock()
            .latencies
            .get_or_insert_with(Latencies::new)
            .record(latency);
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        match &mut self.phase {
            Phase::Unstarted => Poll::Ready(self.start().unwrap_or(Step::Continue)),
            Phase::Admit { next } => {
                let next = *next;
                Poll::Ready(self.admit(next, None).unwrap_or(Step::Continue))
            }
            Phase::Waiting { sleep, layer } => {
                ready!(sleep.as_mut().poll(cx));
                self.phase = Phase::Admit { next: *layer };
                Poll::Ready(Step::Continue)
            }
            Phase::WaitingFor { waiter, layer } => {
                let action = ready!(waiter.0.as_mut().poll(cx));
                let layer = *layer;
                Poll::Ready(self.waited(layer, action).unwrap_or(Step::Continue))
            }
            Phase::Backoff(sleep) => {
                ready!(sleep.as_mut().poll(cx));
                self.phase = Phase::Admit { next: 0 };
                Poll::Ready(Step::Continue)
            }
            Phase::Sending { .. } => self.poll_sending(cx),
            Phase::Done => Poll::Ready(Step::Done(Err(Error::new(ErrorKind::InvalidRequest)
                .with_source("the call has no attempt in flight")))),
        }
    }

    /// Shows an attempt's outcome to the policies and acts on the answer.
    fn decide(&mut self, outcome: Result<http::Response<ResponseBody>, Error>) -> Step {
        let outcome = outcome.map_err(|err| err.with_url(self.request.url.clone()));
        if let Ok(head) = &outcome {
            if head.status().is_success() && !self.stack.observes_success() {
                // No policy of this call looks at a success: hand it over without asking.
                return Step::Done(outcome);
            }
        }
        let facts = match &outcome {
            Ok(head) => Outcome::from(head),
            Err(err) => Outcome::from(err),
        };
        match self.consult(facts) {
            Some(Action::Reissue { at }) => {
                self.reissue(at);
                Step::Continue
            }
            Some(Action::Fail(err)) => Step::Done(Err(self.finish_error(err))),
            _ => match outcome {
                Ok(head) => Step::Done(Ok(head)),
                Err(err) => Step::Done(Err(self.finish_error(err))),
            },
        }
    }

    /// Shows `outcome` to every policy, innermost first; the first answer other than
    /// `Proceed` decides.
    fn consult(&mut self, outcome: Outcome<'_>) -> Option<Action> {
        // A layer that doesn't look at successes isn't shown one.
        let success = matches!(outcome, Outcome::Response { status, .. } if status.is_success());
        let (stack, mut cx) = self.split(None, None);
        let mut decided = None;
        for layer in (0..stack.len()).rev() {
            let policy = stack.layer(layer);
            if success && !policy.observes_success() {
                continue;
            }
            match policy.on_outcome(&mut cx, outcome) {
                Action::Proceed => {}
                action if decided.is_none() => {
                    decided = Some(action);
                    cx.claimed = true;
                }
                _ => {}
            }
        }
        decided
    }

    /// Moves on to another attempt of the (possibly edited) request.
    fn reissue(&mut self, at: Option<Instant>) {
        // The attempt is over: what the policies held for it is given back.
        self.guards.clear();
        self.origin = self.shared.store().find(&self.request.url);
        self.phase = match at {
            Some(at) => Phase::Backoff(self.shared.timer().sleep_until(at)),
            None => Phase::Admit { next: 0 },
        };
    }

    /// The error that ends the call, with the URL and what the call did.
    fn finish_error(&mut self, err: Error) -> Error {
        self.guards.clear();
        self.finished(None, Some(&err));
        let err = if err.url().is_none() {
            err.with_url(self.request.url.clone())
        } else {
            err
        };
        err.with_record(std::mem::take(&mut self.record))
    }

    /// Hands the head to the caller; the call rides along so that a failure while reading the
    /// body can still be shown to the policies.
    fn into_response(mut self: Box<Self>, mut head: http::Response<ResponseBody>) -> Response {
        self.finished(Some(&head), None);
        let config = self.shared.config();
        if config.sensitive.has_extra() {
            // The names the client marked never print from the response's headers either.
            config.sensitive.mark(head.headers_mut());
        }
        let limits = Limits {
            read_idle: self.timeouts.read_idle,
            deadline: self.deadline,
            max_body_size: config.max_body_size,
            head_request: self.request.method == Method::HEAD,
            decode: self
                .request
                .decompress
                .unwrap_or(config.decompress)
                .then_some(config.decode_limits),
        };
        let timer = self.shared.timer().clone();
        let url = self.request.url.clone();
        let record = std::mem::take(&mut self.record);
        let mut guards = std::mem::take(&mut self.guards);
        if !self.span.is_disabled() {
            // The call's span lasts until the body ends (or the response is dropped).
            guards.push(super::pipeline::Guard::new(self.span.clone()));
        }
        let resume = (!self.stack.is_empty()).then_some(self);
        Response::new(head, url, timer, limits, record, guards, resume)
    }

    /// The call ended with a head or an error: its span and metrics say so.
    #[inline]
    fn finished(&self, head: Option<&http::Response<ResponseBody>>, err: Option<&Error>) {
        if let Some(head) = head {
            observe::record_head(&self.span, head.status(), head.version());
        }
        if let Some(err) = err {
            observe::record_error(&self.span, err);
            tracing::debug!(target: "keel", error = %err, "call failed");
        }
        #[cfg(feature = "metrics")]
        observe::metrics::call(
            &self.request.method,
            &self.request.url,
            self.shared
                .timer()
                .now()
                .saturating_duration_since(self.started),
            head.map(http::Response::status),
            err.map(Error::kind),
        );
    }

    /// After the body of a response failed mid-way in a buffered read: the re-issued call to
    /// await, or the error to return.
    pub(crate) fn on_body_failure(
        mut self: Box<Self>,
        record: CallRecord,
        err: Error,
    ) -> Result<Pending, Error> {
        self.record = record;
        match self.consult(Outcome::from(&err)) {
            Some(Action::Reissue { at }) => {
                self.reissue(at);
                Ok(Pending {
                    state: State::Running(self),
                })
            }
            Some(Action::Fail(other)) => Err(self.finish_error(other)),
            _ => Err(self.finish_error(err)),
        }
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Failed(err) => f.debug_tuple("Pending::Failed").field(err).finish(),
            State::Running(call) => fmt::Debug::fmt(call, f),
        }
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("method", &self.request.method)
            .field("url", &crate::redact::url(&self.request.url))
            .field("attempt", &self.stack.attempts())
            .field("started", &!matches!(self.phase, Phase::Unstarted))
            .finish_non_exhaustive()
    }
}
