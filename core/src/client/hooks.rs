//! Hooks: see every decision a call makes, and change the requests and responses of its
//! attempts.
//!
//! A [`Hook`] is registered on the client ([`ClientBuilder::hook`](crate::ClientBuilder::hook),
//! or one of the closure shortcuts beside it) and sees every call made through it. It has
//! three doors, each with a default that does nothing:
//!
//! - [`Hook::before_attempt`]: the request of one attempt, just before it goes to the
//!   transport, to read or change (sign it, add a fresh token, stamp a header). An async
//!   version, for a hook that must wait (refresh an OAuth token, fetch a signing key), is
//!   [`ClientBuilder::before_attempt_async`](crate::ClientBuilder::before_attempt_async).
//! - [`Hook::after_response`]: the head of every response, before any policy sees it, to read
//!   or change (or turn into an error).
//! - [`Hook::on_event`]: every decision of a policy, as an [`Event`]: a retry and why, a
//!   redirect followed, a hedge sent, a circuit breaker's change of state, a wait for a rate
//!   limit, a server's quota or a free slot.
//!
//! # Where hooks run
//!
//! ```text
//!   call ─► policies admit the attempt, outermost first (yours, redirect, retry,
//!   │       in flight, rate limit, breaker)           ── Event::Wait, Event::Breaker
//!   ▼
//!   before_attempt hooks, in the order added (sync and async alike)
//!   ▼
//!   Transport::send  (one attempt: a retry, a redirect's next hop and a hedge are each one)
//!   ▼
//!   after_response hooks, in the reverse order (the first added sees the head last)
//!   ▼
//!   policies see the outcome, innermost first         ── Event::Retry, Event::Redirect,
//!   │                                                    Event::Breaker
//!   └─► deliver, or another attempt (from the top)    ── Event::Hedge when a hedge goes
//! ```
//!
//! So a hook runs once per attempt, after every wait (a token added there is fresh when the
//! request leaves, however long the rate limiter or a backoff held it), and sees each
//! attempt's request as the policies left it: a redirect to another origin has already lost
//! the credentials the hook must not add there (check [`http::Request::uri`] before adding
//! them). Its changes apply to that attempt only: the next attempt starts again from the
//! call's request, and the hooks run again. A hook's time counts toward the attempt's time
//! limit.
//!
//! An error returned by a hook fails the attempt as if the transport had (before anything was
//! sent, for `before_attempt`): the policies see it, and a retry policy that retries its kind
//! retries it.
//!
//! Hooks run on the hot path: keep them cheap, and never block in them.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use keel_core::hooks::{Attempt, Event, Hook};
//! use keel_core::{Body, Error};
//!
//! /// Stamps every attempt with its number, and logs every retry.
//! struct Stamp(Arc<Mutex<Vec<String>>>);
//!
//! impl Hook for Stamp {
//!     fn before_attempt(&self, attempt: &Attempt, request: &mut http::Request<Body>) -> Result<(), Error> {
//!         request.headers_mut().insert("x-attempt", attempt.number().into());
//!         Ok(())
//!     }
//!
//!     fn on_event(&self, event: &Event<'_>) {
//!         if let Event::Retry(retry) = event {
//!             self.0.lock().unwrap().push(format!("retry #{} after {:?}", retry.attempt, retry.delay));
//!         }
//!     }
//! }
//!
//! # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let client = keel_core::Client::<T>::builder()
//!     .hook(Stamp(log.clone()))
//!     .before_attempt_async(|mut request, _attempt| async move {
//!         // e.g. a token from a cache that refreshes itself when it expires
//!         let token = "t0k3n";
//!         let value = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
//!         request.headers_mut().insert(http::header::AUTHORIZATION, value);
//!         Ok(request)
//!     })
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};

use super::{BreakerEvent, RedirectEvent, RetryEvent};
use crate::body::{Body, ResponseBody};
use crate::error::Error;
use crate::transport::BoxFuture;

/// Sees and changes what the calls of a client do; see the [module documentation](self).
pub trait Hook: Send + Sync + 'static {
    /// Called with the request of every attempt, just before it is sent. May change it.
    ///
    /// An error fails the attempt (as unsent): the policies see it like a transport's.
    fn before_attempt(
        &self,
        attempt: &Attempt,
        request: &mut http::Request<Body>,
    ) -> Result<(), Error> {
        let _ = (attempt, request);
        Ok(())
    }

    /// Called with the head of every response, before the policies see it. May change it.
    ///
    /// An error takes the response's place: the policies see it like a transport's.
    fn after_response(
        &self,
        attempt: &Attempt,
        response: &mut http::Response<ResponseBody>,
    ) -> Result<(), Error> {
        let _ = (attempt, response);
        Ok(())
    }

    /// Called on every decision of a policy.
    fn on_event(&self, event: &Event<'_>) {
        let _ = event;
    }
}

/// Which attempt of a call a hook sees.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Attempt {
    number: u32,
    hedge: bool,
}

impl Attempt {
    pub(crate) fn new(number: u32, hedge: bool) -> Self {
        Self { number, hedge }
    }

    /// The attempt's number within its call, from 1: every request the call sends counts
    /// (retries, the hops of redirects, hedges).
    pub fn number(&self) -> u32 {
        self.number
    }

    /// How many requests the call sent before this one (OpenTelemetry's
    /// `http.request.resend_count`).
    pub fn resend_count(&self) -> u32 {
        self.number.saturating_sub(1)
    }

    /// Whether this attempt is a hedge: a second copy of a slow attempt still in flight.
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }
}

/// A decision of a policy, as [`Hook::on_event`] sees it (and `tracing`, as an event on the
/// call's span).
#[non_exhaustive]
#[derive(Debug)]
pub enum Event<'a> {
    /// The retry policy will send the request again after a delay.
    Retry(&'a RetryEvent),
    /// A redirect is followed.
    Redirect(&'a RedirectEvent),
    /// A hedge was sent: a second copy of a slow attempt.
    Hedge(&'a HedgeEvent),
    /// A circuit breaker changed state.
    Breaker(&'a BreakerEvent),
    /// An attempt waits before it may go.
    Wait(&'a WaitEvent),
}

/// What [`Event::Hedge`] tells.
#[non_exhaustive]
#[derive(Clone)]
pub struct HedgeEvent {
    /// The request's method.
    pub method: Method,
    /// The request's URL.
    pub url: Uri,
    /// How long the first attempt had been in flight when the hedge went.
    pub after: Duration,
}

/// What [`Event::Wait`] tells: an attempt was held before it could go.
#[non_exhaustive]
#[derive(Clone)]
pub struct WaitEvent {
    /// Who holds it.
    pub reason: WaitReason,
    /// How long it waits, when known (a wait for a free slot lasts until one ends).
    pub delay: Option<Duration>,
    /// The request's method.
    pub method: Method,
    /// The request's URL.
    pub url: Uri,
}

impl fmt::Debug for HedgeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeEvent")
            .field("method", &self.method)
            .field("url", &crate::redact::url(&self.url))
            .field("after", &self.after)
            .finish()
    }
}

impl fmt::Debug for WaitEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitEvent")
            .field("reason", &self.reason)
            .field("delay", &self.delay)
            .field("method", &self.method)
            .field("url", &crate::redact::url(&self.url))
            .finish()
    }
}

/// Why an attempt waits; see [`WaitEvent`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// The client's or the origin's [`RateLimit`](crate::RateLimit) paces it.
    RateLimit,
    /// The server said its quota is spent (`429`, `Retry-After`, `RateLimit` headers), and
    /// requests to it are held until it resets.
    ServerQuota,
    /// The client's [`max_in_flight`](crate::ClientBuilder::max_in_flight) (or the origin's)
    /// is reached: it waits until a request in flight ends.
    InFlight,
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitReason::RateLimit => "rate limit",
            WaitReason::ServerQuota => "server quota",
            WaitReason::InFlight => "max in flight",
        })
    }
}

/// An async `before_attempt`: takes the attempt's request and gives it back, changed.
pub(crate) type AsyncBefore = Arc<
    dyn Fn(http::Request<Body>, Attempt) -> BoxFuture<Result<http::Request<Body>, Error>>
        + Send
        + Sync,
>;

/// One entry of the client's hooks, in the order added.
#[derive(Clone)]
pub(crate) enum Entry {
    Sync(Arc<dyn Hook>),
    Async(AsyncBefore),
}

/// The client's hooks: shared, so an attempt with async hooks takes them along with one
/// reference count.
#[derive(Clone)]
pub(crate) struct Hooks {
    entries: Arc<[Entry]>,
    /// Some entry is async: the attempt's hooks run inside its future.
    has_async: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            entries: Arc::new([]),
            has_async: false,
        }
    }
}

impl Hooks {
    /// Adds a hook (while the client is built).
    pub(crate) fn push(&mut self, entry: Entry) {
        self.has_async |= matches!(entry, Entry::Async(_));
        let mut entries = self.entries.to_vec();
        entries.push(entry);
        self.entries = entries.into();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn has_async(&self) -> bool {
        self.has_async
    }

    pub(crate) fn sync_hooks(&self) -> impl DoubleEndedIterator<Item = &Arc<dyn Hook>> {
        self.entries.iter().filter_map(|entry| match entry {
            Entry::Sync(hook) => Some(hook),
            Entry::Async(_) => None,
        })
    }

    /// Runs the `before_attempt` hooks that can run at once (all of them, when none is
    /// async).
    pub(crate) fn before_sync(
        &self,
        attempt: &Attempt,
        request: &mut http::Request<Body>,
    ) -> Result<(), Error> {
        for hook in self.sync_hooks() {
            hook.before_attempt(attempt, request)
                .map_err(Error::with_unsent)?;
        }
        Ok(())
    }

    /// Runs every `before_attempt` hook, in the order added, the async ones awaited.
    pub(crate) fn before_all(
        &self,
        attempt: Attempt,
        request: http::Request<Body>,
    ) -> impl Future<Output = Result<http::Request<Body>, Error>> + Send + 'static {
        let entries = self.entries.clone();
        async move {
            let mut request = request;
            for entry in entries.iter() {
                match entry {
                    Entry::Sync(hook) => hook
                        .before_attempt(&attempt, &mut request)
                        .map_err(Error::with_unsent)?,
                    Entry::Async(hook) => {
                        request = hook(request, attempt.clone())
                            .await
                            .map_err(Error::with_unsent)?;
                    }
                }
            }
            Ok(request)
        }
    }

    /// Runs the `after_response` hooks, last added first.
    pub(crate) fn after(
        &self,
        attempt: &Attempt,
        outcome: Result<http::Response<ResponseBody>, Error>,
    ) -> Result<http::Response<ResponseBody>, Error> {
        let mut head = outcome?;
        for hook in self.sync_hooks().rev() {
            hook.after_response(attempt, &mut head)?;
        }
        Ok(head)
    }

    pub(crate) fn event(&self, event: &Event<'_>) {
        for hook in self.sync_hooks() {
            hook.on_event(event);
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("count", &self.entries.len())
            .field("async", &self.has_async)
            .finish()
    }
}

/// A hook made of closures: what the [`ClientBuilder`](crate::ClientBuilder) shortcuts
/// register.
pub(crate) struct FnHook<B, A, E> {
    pub(crate) before: B,
    pub(crate) after: A,
    pub(crate) event: E,
}

impl<B, A, E> Hook for FnHook<B, A, E>
where
    B: Fn(&Attempt, &mut http::Request<Body>) -> Result<(), Error> + Send + Sync + 'static,
    A: Fn(&Attempt, &mut http::Response<ResponseBody>) -> Result<(), Error> + Send + Sync + 'static,
    E: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn before_attempt(
        &self,
        attempt: &Attempt,
        request: &mut http::Request<Body>,
    ) -> Result<(), Error> {
        (self.before)(attempt, request)
    }

    fn after_response(
        &self,
        attempt: &Attempt,
        response: &mut http::Response<ResponseBody>,
    ) -> Result<(), Error> {
        (self.after)(attempt, response)
    }

    fn on_event(&self, event: &Event<'_>) {
        (self.event)(event)
    }
}
