//! The built-in policies (each a pure machine behind the [`Policy`] trait) and the stack that
//! orders them for one call.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_lock::{Semaphore, SemaphoreGuardArc};
use futures_util::future::{select, Either};

use super::cookies::CookieLayer;
use super::hooks::{Event, WaitEvent, WaitReason};
use super::observe;
use super::pipeline::{Action, Guard, Policy, PolicyContext, Waiter};
use super::request::Request;
use super::state::OriginState;
use super::ClientConfig;
use super::{RedirectEvent, RetryEvent};
use crate::error::{Error, ErrorKind};
use crate::machine::breaker::{Admission, BreakerPolicy, Ticket, Transition};
use crate::machine::hedge::HedgePolicy;
use crate::machine::outcome::Outcome;
use crate::machine::rate::{jittered, quota_hold, RateLimit};
use crate::machine::redirect::{
    rewrite_headers, BodyState, RedirectAction, RedirectRequest, Redirects,
};
use crate::machine::retry::{RequestFacts, Retry, RetryAction};
use crate::store::{Acquire, Admit, BreakerAdmit, Pending, StateCell};

/// The policies of one call, outermost first: the user's, then redirect, then cookies (so every
/// hop and attempt gets its own URL's), then retry, then the in-flight limit, the rate limiter and the circuit breaker, so that every attempt (the
/// retried and hedged ones too) takes a permit, is paced and passes the breaker.
///
/// The driver loop walks [`Stack::layer`]; adding a policy is adding it here, never an edit
/// to the loop.
pub(crate) struct Stack {
    user: Vec<Box<dyn Policy>>,
    redirect: Option<RedirectLayer>,
    cookies: Option<CookieLayer>,
    retry: Option<RetryLayer>,
    concurrency: Option<ConcurrencyLayer>,
    limiter: Option<LimiterLayer>,
    breaker: Option<BreakerLayer>,
    /// Whether the call's attempts are hedged (by the request's policy, else the client's).
    hedge: bool,
    /// Some layer answers before attempts.
    admits: bool,
    /// The layers before this one never answer before attempts: admission starts here.
    first_admitting: usize,
    /// Some layer needs to see plain successes.
    observes_success: bool,
}

impl Stack {
    /// The stack of `request`'s call on a client with `config`, running over `time` (from its
    /// start to its deadline), whose first attempt goes to `origin`.
    pub(crate) fn new(
        config: &ClientConfig,
        request: &Request,
        time: Range<Instant>,
        seed: u64,
        origin: &OriginState,
    ) -> Self {
        let (start, deadline) = (time.start, time.end);
        let user: Vec<Box<dyn Policy>> = if config.policies.is_empty() {
            Vec::new()
        } else {
            config.policies.iter().map(|make| make()).collect()
        };
        let redirect = request.redirect.as_ref().unwrap_or(&config.redirect);
        let retry = request.retry.as_ref().unwrap_or(&config.retry);
        let breaker = config.breaker.as_ref();
        let limiter = (config.rate_limit.is_some()
            || config.rate_limit_per_origin.is_some()
            || config.server_quotas)
            .then_some(LimiterLayer {
                per_origin: config.rate_limit_per_origin,
                server_quotas: config.server_quotas,
                booked: None,
                seed,
            });
        let concurrency = (origin.in_flight.is_some() || config.max_in_flight.is_some())
            .then_some(ConcurrencyLayer);
        let hedge = hedge_policy(config, request).is_some_and(|_| {
            // Only a request that is safe to send twice, with a body that can be.
            let facts = RequestFacts::new(request.method()).with_headers(request.headers());
            let facts = match request.idempotent {
                Some(idempotent) => facts.with_idempotent(idempotent),
                None => facts,
            };
            retry.is_idempotent(&facts) && request.body_replayable()
        });
        let retries = retry.max_attempts() != Some(1);
        if retries || hedge {
            // One deposit per call, into the budget of the origin the call starts at: retries
            // and hedges draw on it.
            if let Some(budget) = &mut origin.lock().budget {
                budget.deposit(start);
            }
        }
        let retry = retries.then(|| RetryLayer {
            machine: Retry::new(retry, start, seed).with_deadline(deadline),
        });
        let cookies = config.cookies.clone().map(CookieLayer::new);
        // The built-in layers' answers are known here (the redirect layer neither admits nor
        // looks at successes; the retry layer looks at them only if its policy may retry one;
        // the breaker and the cookies do both): only the user's layers are asked.
        let admits = cookies.is_some()
            || breaker.is_some()
            || limiter.is_some()
            || concurrency.is_some()
            || user.iter().any(|p| p.admits());
        // The redirect and retry layers never answer before attempts.
        let first_admitting = match user.iter().position(|p| p.admits()) {
            Some(first) => first,
            None if cookies.is_some() => user.len() + usize::from(redirect.follows()),
            None => user.len() + usize::from(redirect.follows()) + usize::from(retry.is_some()),
        };
        let observes_success = cookies.is_some()
            || breaker.is_some()
            || limiter.as_ref().is_some_and(|l| l.server_quotas)
            || user.iter().any(|p| p.observes_success())
            || retry
                .as_ref()
                .is_some_and(|r| r.machine.policy().may_retry_success());
        Self {
            user,
            redirect: redirect
                .follows()
                .then_some(RedirectLayer { machine: None }),
            cookies,
            retry,
            concurrency,
            limiter,
            breaker: breaker.map(|policy| BreakerLayer {
                policy: policy.clone(),
            }),
            hedge,
            admits,
            first_admitting,
            observes_success,
        }
    }

    /// The stack of a call not started yet: no policy, nothing allocated.
    pub(crate) fn empty() -> Self {
        Self {
            user: Vec::new(),
            redirect: None,
            cookies: None,
            retry: None,
            concurrency: None,
            limiter: None,
            breaker: None,
            hedge: false,
            admits: false,
            first_admitting: 0,
            observes_success: false,
        }
    }

    /// Whether the call's attempts are hedged (see [`hedge_policy`] for how).
    pub(crate) fn hedges(&self) -> bool {
        self.hedge
    }

    /// The first layer that may answer before attempts (the ones before it never do).
    pub(crate) fn first_admitting(&self) -> usize {
        self.first_admitting
    }

    /// Whether some layer answers before attempts; when none does, the loop sends at once.
    pub(crate) fn admits(&self) -> bool {
        self.admits
    }

    /// Whether some layer needs to see a `2xx`; when none does, the loop delivers it at once.
    pub(crate) fn observes_success(&self) -> bool {
        self.observes_success
    }

    /// True when no policy is configured: nothing can re-issue the request.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of layers.
    pub(crate) fn len(&self) -> usize {
        self.user.len()
            + usize::from(self.redirect.is_some())
            + usize::from(self.cookies.is_some())
            + usize::from(self.retry.is_some())
            + usize::from(self.concurrency.is_some())
            + usize::from(self.limiter.is_some())
            + usize::from(self.breaker.is_some())
    }

    /// The layer at `index`, outermost first.
    #[inline]
    pub(crate) fn layer(&mut self, index: usize) -> &mut dyn Policy {
        let users = self.user.len();
        if index < users {
            return &mut *self.user[index];
        }
        // The built-in layers in order, skipping those the call doesn't have: a few branches,
        // asked once per layer per attempt.
        let mut rest = index - users;
        if let Some(layer) = &mut self.redirect {
            if rest == 0 {
                return layer;
            }
            rest -= 1;
        }
        if let Some(layer) = &mut self.cookies {
            if rest == 0 {
                return layer;
            }
            rest -= 1;
        }
        if let Some(layer) = &mut self.retry {
            if rest == 0 {
                return layer;
            }
            rest -= 1;
        }
        if let Some(layer) = &mut self.concurrency {
            if rest == 0 {
                return layer;
            }
            rest -= 1;
        }
        if let Some(layer) = &mut self.limiter {
            if rest == 0 {
                return layer;
            }
            rest -= 1;
        }
        match &mut self.breaker {
            Some(layer) if rest == 0 => layer,
            _ => panic!("no layer {index} in the stack"),
        }
    }

    /// The attempts the retry policy counted so far (1 without retries).
    pub(crate) fn attempts(&self) -> u32 {
        self.retry.as_ref().map_or(1, |r| r.machine.attempt())
    }
}

/// The hedging policy of `request` on a client with `config`: its own, else the client's;
/// `None` when it never hedges.
#[inline]
pub(crate) fn hedge_policy<'a>(
    config: &'a ClientConfig,
    request: &'a Request,
) -> Option<&'a HedgePolicy> {
    match &request.hedge {
        Some(policy) => Some(&**policy).filter(|p| p.hedges()),
        None => config.hedge.as_ref(),
    }
}

/// Retries: [`crate::machine::retry`] behind the pipeline.
struct RetryLayer {
    machine: Retry,
}

impl Policy for RetryLayer {
    fn admits(&self) -> bool {
        false
    }

    fn observes_success(&self) -> bool {
        self.machine.policy().may_retry_success()
    }

    fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
        if cx.is_claimed() {
            return Action::Proceed;
        }
        // Most outcomes are not worth retrying: settle those without reading the clocks.
        if self.machine.policy().retry_reason(&outcome).is_none() {
            cx.record.set_gave_up(None);
            return Action::Proceed;
        }
        let now = cx.now();
        let request = &*cx.request;
        let facts = RequestFacts::new(request.method())
            .with_headers(request.headers())
            .with_replayable_body(cx.body_replayable());
        let facts = match request.idempotent {
            Some(idempotent) => facts.with_idempotent(idempotent),
            None => facts,
        };
        let action = {
            let mut state = cx.origin().lock();
            self.machine.on_outcome(
                now,
                cx.timer.now_system(),
                &facts,
                outcome,
                state.budget.as_mut(),
            )
        };
        cx.record.set_attempts(self.machine.attempt());
        match action {
            RetryAction::RetryAt {
                at,
                delay,
                attempt,
                reason,
                pacing,
            } => {
                let (method, url) = (cx.request.method(), cx.request.url());
                observe::event(
                    cx.config,
                    &Event::Retry(&RetryEvent {
                        attempt,
                        reason,
                        delay,
                        pacing,
                        method: method.clone(),
                        url: url.clone(),
                    }),
                );
                cx.record.set_gave_up(None);
                Action::Reissue { at: Some(at) }
            }
            RetryAction::GiveUp(reason) => {
                tracing::debug!(target: "keel::retry", %reason, "not retrying");
                cx.record.set_gave_up(Some(reason));
                Action::Proceed
            }
            _ => Action::Proceed,
        }
    }
}

/// Redirects: [`crate::machine::redirect`] behind the pipeline.
///
/// The machine is built at the call's first `3xx`: most calls never get one.
struct RedirectLayer {
    machine: Option<Box<Redirects>>,
}

impl Policy for RedirectLayer {
    fn admits(&self) -> bool {
        false
    }

    fn observes_success(&self) -> bool {
        false
    }

    fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
        let Outcome::Response { status, headers } = outcome else {
            return Action::Proceed;
        };
        if cx.is_claimed() || !status.is_redirection() {
            return Action::Proceed;
        }
        let body = if cx.body_sent_once {
            // The stream went with the attempt: there is a body, and none left to send.
            BodyState::OneShot
        } else if !cx.request.has_body() {
            BodyState::Empty
        } else if cx.body_replayable() {
            BodyState::Replayable
        } else {
            BodyState::OneShot
        };
        let action = {
            let request = &*cx.request;
            let facts = RedirectRequest {
                method: request.method(),
                url: request.url(),
                body,
            };
            let policy = request.redirect.as_ref().unwrap_or(&cx.config.redirect);
            self.machine
                .get_or_insert_with(|| Box::new(Redirects::new(policy)))
                .on_response(&facts, status, headers)
        };
        match action {
            RedirectAction::Follow(follow) => {
                let hop = self
                    .machine
                    .as_ref()
                    .and_then(|m| m.hops().last())
                    .cloned()
                    .expect("a followed redirect is recorded");
                observe::event(
                    cx.config,
                    &Event::Redirect(&RedirectEvent { hop: hop.clone() }),
                );
                cx.record.push_hop(hop);
                let sensitive = &cx.config.sensitive;
                let request = &mut *cx.request;
                rewrite_headers(&mut request.headers, &follow, sensitive);
                if follow.cross_origin {
                    // A Host the caller set names the first origin, not the next one.
                    request.headers.remove(http::header::HOST);
                }
                if !follow.keep_body {
                    request.clear_body();
                }
                request.method = follow.method;
                request.url = follow.url;
                Action::Reissue { at: None }
            }
            RedirectAction::Refuse(refusal) => {
                tracing::info!(target: "keel::redirect", %refusal, "redirect refused");
                Action::Fail(
                    Error::new(ErrorKind::Redirect(refusal)).with_url(cx.request.url().clone()),
                )
            }
            _ => Action::Proceed,
        }
    }
}

/// Circuit breaking: [`crate::machine::breaker`] behind the pipeline, one breaker per origin
/// (or per partition the request names).
///
/// Innermost, so every attempt (the retried ones too) asks it, and it counts every attempt's
/// outcome before the retry policy decides on it. What it must know about an attempt (its
/// ticket, when it went) lives in the attempt's [`TicketGuard`].
struct BreakerLayer {
    policy: BreakerPolicy,
}

/// An attempt's breaker ticket. Counted when the attempt's outcome is; given back when the
/// attempt is dropped before (a half-open probe slot, most importantly: a cancelled call or a
/// hedge that lost must not hold it).
struct TicketGuard {
    /// Where the breaker is, when it is not the attempt's origin's (a partition's), or when the
    /// ticket is a probe that must be given back on drop; `None` otherwise (no reference count
    /// is taken for the common case).
    home: Option<Arc<dyn StateCell>>,
    ticket: Ticket,
    sent: Instant,
    counted: bool,
}

impl Drop for TicketGuard {
    fn drop(&mut self) {
        // Only a probe's slot needs giving back.
        if !self.counted && self.ticket.is_probe() {
            if let Some(home) = &self.home {
                home.release(self.ticket);
            }
        }
    }
}

impl BreakerLayer {
    fn report(cx: &PolicyContext<'_>, transition: Option<Transition>) {
        if let Some(transition) = transition {
            let partition = cx.request.partition.as_ref();
            super::announce_breaker(cx.config, cx.request.url(), partition, transition);
        }
    }
}

impl Policy for BreakerLayer {
    fn before_attempt(&mut self, cx: &mut PolicyContext<'_>) -> Action {
        let now = cx.now();
        let partition = cx
            .request
            .partition
            .as_ref()
            .map(|key| cx.store.partition(key));
        let (admission, transition) = match &partition {
            Some(cell) => cell.admit(&self.policy, now, cx.timer()),
            None => cx.origin().cell.admit(&self.policy, now, cx.timer()),
        };
        Self::report(cx, transition);
        let admission = match admission {
            BreakerAdmit::Decided(admission) => admission,
            BreakerAdmit::Again(pending) => return again(cx, pending),
        };
        match admission {
            Admission::Allowed(ticket) => {
                let home = match partition {
                    Some(cell) => Some(cell),
                    None if ticket.is_probe() => Some(cx.origin().cell.clone()),
                    None => None,
                };
                Action::Hold(Guard::new(TicketGuard {
                    home,
                    ticket,
                    sent: now,
                    counted: false,
                }))
            }
            Admission::Rejected { until } => {
                let err = Error::new(ErrorKind::CircuitOpen);
                Action::Fail(match until {
                    Some(until) => err.with_retry_in(until.saturating_duration_since(now)),
                    None => err,
                })
            }
        }
    }

    fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
        let now = cx.now();
        // A body that fails after its head was counted is not counted again.
        let Some(guard) = cx.attempt_guard::<TicketGuard>().filter(|g| !g.counted) else {
            return Action::Proceed;
        };
        guard.counted = true;
        let (ticket, sent) = (guard.ticket, guard.sent);
        let home = guard.home.clone();
        // Only a slow-call rule needs the attempt's duration.
        let elapsed = match self.policy.slow_call() {
            Some(_) => now.saturating_duration_since(sent),
            None => Duration::ZERO,
        };
        let result = self.policy.classify(&outcome, elapsed);
        let transition = match &home {
            Some(cell) => cell.on_result(ticket, result, now),
            None => cx.origin().cell.on_result(ticket, result, now),
        };
        Self::report(cx, transition);
        Action::Proceed
    }
}

/// The in-flight limits: a permit of the client's and of the origin's semaphore for every
/// attempt, held until the attempt is over (for a delivered response, until its body ends).
struct ConcurrencyLayer;

/// The permits an attempt holds.
struct Permits {
    _origin: Option<SemaphoreGuardArc>,
    _client: Option<SemaphoreGuardArc>,
}

impl ConcurrencyLayer {
    /// Waits for the permits that weren't free, the origin's first (so that a call waiting
    /// for a busy origin holds none of the client's), until `deadline`.
    fn wait(
        origin: Option<(Arc<Semaphore>, Option<SemaphoreGuardArc>)>,
        client: Option<(Arc<Semaphore>, Option<SemaphoreGuardArc>)>,
        sleep: crate::transport::Sleep,
    ) -> Waiter {
        Waiter::new(async move {
            let acquire = async move {
                let origin = match origin {
                    Some((_, Some(permit))) => Some(permit),
                    Some((semaphore, None)) => Some(semaphore.acquire_arc().await),
                    None => None,
                };
                let client = match client {
                    Some((_, Some(permit))) => Some(permit),
                    Some((semaphore, None)) => Some(semaphore.acquire_arc().await),
                    None => None,
                };
                Permits {
                    _origin: origin,
                    _client: client,
                }
            };
            match select(Box::pin(acquire), sleep).await {
                Either::Left((permits, _)) => Action::Hold(Guard::new(permits)),
                Either::Right(_) => Action::Fail(
                    Error::new(ErrorKind::RateLimited)
                        .with_source("no request in flight ended before the call's deadline"),
                ),
            }
        })
    }
}

impl Policy for ConcurrencyLayer {
    fn observes_success(&self) -> bool {
        false
    }

    fn before_attempt(&mut self, cx: &mut PolicyContext<'_>) -> Action {
        let origin = cx.origin().in_flight.clone();
        let client = cx.store.in_flight().cloned();
        let origin_permit = origin.as_ref().and_then(Semaphore::try_acquire_arc);
        let client_permit = match (&origin, &origin_permit) {
            // Not while waiting for the origin's.
            (Some(_), None) => None,
            _ => client.as_ref().and_then(Semaphore::try_acquire_arc),
        };
        let free = origin.is_none() == origin_permit.is_none()
            && client.is_none() == client_permit.is_none();
        if free {
            return Action::Hold(Guard::new(Permits {
                _origin: origin_permit,
                _client: client_permit,
            }));
        }
        if cx.is_hedge() {
            return Action::Fail(Error::new(ErrorKind::RateLimited));
        }
        wait_event(cx, WaitReason::InFlight, None);
        let sleep = cx.timer().sleep_until(cx.deadline());
        Action::WaitFor(Self::wait(
            origin.map(|s| (s, origin_permit)),
            client.map(|s| (s, client_permit)),
            sleep,
        ))
    }
}

/// Rate limits: [`crate::machine::rate`] behind the pipeline. Paces every attempt to the
/// client-wide and per-origin limits, and holds attempts while the server says its quota is
/// spent.
struct LimiterLayer {
    per_origin: Option<RateLimit>,
    server_quotas: bool,
    /// The slot booked for the attempt about to go.
    booked: Option<Instant>,
    /// For the jitter of server holds.
    seed: u64,
}

impl LimiterLayer {
    fn limited(now: Instant, at: Instant) -> Action {
        Action::Fail(crate::store::limited(now, at))
    }
}

/// A store's cell must wait (a round trip) before it can answer: the layer waits for it, never
/// past the call's deadline, and is asked again. A hedge goes now or not at all.
#[cold]
fn again(cx: &PolicyContext<'_>, pending: Pending) -> Action {
    if cx.is_hedge() {
        return Action::Fail(Error::new(ErrorKind::RateLimited));
    }
    let timer = cx.timer().clone();
    let deadline = timer.sleep_until(cx.deadline());
    Action::WaitFor(Waiter::new(async move {
        match select(pending, deadline).await {
            Either::Left(_) => Action::WaitUntil(timer.now()),
            Either::Right(_) => Action::Fail(
                Error::new(ErrorKind::RateLimited)
                    .with_source("the state store did not answer before the call's deadline"),
            ),
        }
    }))
}

impl Policy for LimiterLayer {
    fn observes_success(&self) -> bool {
        self.server_quotas
    }

    fn before_attempt(&mut self, cx: &mut PolicyContext<'_>) -> Action {
        let now = cx.now();
        let hedge = cx.is_hedge();
        if let Some(at) = self.booked.filter(|_| !hedge) {
            // Asked again after waiting for the booked slot.
            if now >= at {
                self.booked = None;
                return Action::Proceed;
            }
            return Action::WaitUntil(at);
        }
        // A hedge goes now or not at all: its slot must be free now.
        let deadline = if hedge {
            now + Duration::from_nanos(1)
        } else {
            cx.deadline()
        };
        if self.server_quotas {
            let origin_hold = cx.origin().cell.held_until();
            let partition_hold = match &cx.request.partition {
                Some(key) => cx
                    .store
                    .find_partition(key)
                    .and_then(|cell| cell.held_until()),
                None => None,
            };
            let hold = origin_hold.max(partition_hold).filter(|&until| until > now);
            if let Some(until) = hold {
                if until >= deadline {
                    return Self::limited(now, until);
                }
                // Asked again at `until`, when the hold is over (unless the server extended it).
                wait_event(cx, WaitReason::ServerQuota, Some(until - now));
                return Action::WaitUntil(until);
            }
        }
        let mut at = now;
        let mut client_slot = None;
        let client = cx.store.client_limiter();
        if let Some((limit, cell)) = client {
            let request = Acquire {
                limit: *limit,
                now,
                deadline,
                hedge,
                timer: cx.timer(),
                caller: self.seed,
            };
            match cell.acquire(&request) {
                Admit::At(slot) => {
                    at = slot;
                    client_slot = Some(slot);
                }
                Admit::Fail(err) => return Action::Fail(err),
                Admit::Again(pending) => return again(cx, pending),
            }
        }
        if let Some(limit) = self.per_origin {
            let request = Acquire {
                limit,
                now,
                deadline,
                hedge,
                timer: cx.timer(),
                caller: self.seed,
            };
            let refused = match cx.origin().cell.acquire(&request) {
                Admit::At(slot) => {
                    at = at.max(slot);
                    None
                }
                Admit::Fail(err) => Some(Action::Fail(err)),
                Admit::Again(pending) => Some(again(cx, pending)),
            };
            if let Some(refused) = refused {
                // The client-wide slot goes back: this attempt won't use it (it asks again
                // after a wait).
                if let (Some(taken), Some((_, cell))) = (client_slot, client) {
                    cell.cancel(taken);
                }
                return refused;
            }
        }
        if at > now {
            self.booked = Some(at);
            wait_event(cx, WaitReason::RateLimit, Some(at - now));
            return Action::WaitUntil(at);
        }
        Action::Proceed
    }

    fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
        if !self.server_quotas {
            return Action::Proceed;
        }
        let Outcome::Response { status, headers } = outcome else {
            return Action::Proceed;
        };
        let Some(hold) = quota_hold(status, headers, cx.now_system()) else {
            return Action::Proceed;
        };
        // Callers that were all told the same reset shouldn't all come back at that instant.
        let spread = (hold.delay / 10).min(Duration::from_secs(1));
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let delay = jittered(hold.delay, spread, self.seed);
        let now = cx.now();
        let until = now.checked_add(delay).unwrap_or(now);
        // A request that names its partition is held with the partition (the one the server
        // named, if it did); one that names none can't be told apart from the origin's other
        // requests, so the whole origin waits.
        let partition = cx
            .request
            .partition
            .as_deref()
            .map(|own| hold.partition.as_deref().unwrap_or(own));
        tracing::info!(target: "keel::wait", partition, delay_ms = delay.as_millis() as u64,
            "the server's quota is spent: holding requests");
        match partition {
            Some(key) => cx.store.partition(key).hold(now, until),
            None => cx.origin().cell.hold(now, until),
        }
        Action::Proceed
    }
}

/// Reports that an attempt waits before it may go.
#[cold]
fn wait_event(cx: &PolicyContext<'_>, reason: WaitReason, delay: Option<Duration>) {
    observe::event(
        cx.config,
        &Event::Wait(&WaitEvent {
            reason,
            delay,
            method: cx.request.method().clone(),
            url: cx.request.url().clone(),
        }),
    );
}
