//! The request pipeline: one driver loop over an ordered stack of policies.
//!
//! Every call runs one loop. Before each attempt the loop asks each policy, outermost first,
//! whether the attempt may go; after each attempt it shows the outcome (a response head, an
//! error, or a body that failed mid-way in a buffered read) to each policy, innermost first.
//! A policy answers with one [`Action`] from a small shared set, and the loop carries it out.
//! The loop knows nothing about retries or redirects: each is a pure machine from
//! [`machine`](crate::machine) wrapped in a [`Policy`], so a new capability is one machine plus
//! one place in the stack.
//!
//! ```text
//!   Request (owned, re-issuable)
//!     │
//!     ▼  before_attempt, outermost first: Proceed · WaitUntil(t) · Hold(guard) · Fail(err)
//!   ┌──────────────────────────────────────────────────────────────┐
//!   │ your policies (ClientBuilder::policy), in the order added     │
//!   │ redirect   machine::redirect  301/302/303/307/308, hop limit, │
//!   │            credentials dropped across origins                 │
//!   │ cookies    machine::cookies   each attempt's and hop's own    │
//!   │            (opt-in)           cookies; every Set-Cookie kept  │
//!   │ retry      machine::retry     backoff, Retry-After, budget    │
//!   │ in flight  async semaphore    a permit per attempt, held      │
//!   │                               until the body ends             │
//!   │ rate limit machine::rate      GCRA pacing, server quota holds │
//!   │ breaker    machine::breaker   per origin or partition,        │
//!   │                               probes, cool-down               │
//!   └──────────────────────────────────────────────────────────────┘
//!     │                                        ▲
//!     ▼  attempt: Transport::send              │ on_outcome, innermost first:
//!        under the attempt timeout             │ Proceed · Reissue{at} · Deliver · Fail(err)
//!        and the call's deadline ──────────────┘
//!        (+ a hedge, machine::hedge: the same
//!        request again after a delay, admitted
//!        by every layer; the first head wins)
//!     │
//!     ▼
//!   Response (+ guards held until its body ends; + the CallRecord: attempts, hops, why
//!   retrying stopped)
//! ```
//!
//! # Why this order
//!
//! - **Retry is innermost**: it repeats the request exactly as the layers above made it, to
//!   the URL it was last sent to, so a redirect followed and then a `503` retries the new URL,
//!   not the first one, and retries never re-run another layer's side effects.
//! - **Redirect sits above retry**: a hop is a new request, not another attempt of the same
//!   one, so it never spends the retry policy's attempts, and a retried `503` is never taken
//!   for a hop.
//! - **Cookies sit inside redirect**: every hop asks the cookie store for the cookies of its
//!   own URL (so none follow a redirect to a host they don't match), and each response's
//!   `Set-Cookie`s, a `3xx`'s too, are stored under the URL that answered, before the redirect
//!   layer moves the request on. Above retry, so a retried attempt carries the cookies a
//!   `503` may just have set.
//! - **In flight, rate limit and breaker sit inside retry**: every attempt, the retried and
//!   hedged ones too, takes a permit, is paced and passes the breaker, and the breaker counts
//!   each attempt's outcome before the retry policy decides on it (a retry meets an open
//!   breaker and stops). A call backing off before a retry holds no permit.
//! - **The in-flight permit comes before the rate limit's slot**: an attempt books its slot
//!   only once it can go, so attempts queued behind a busy semaphore can't bunch up and
//!   exceed the rate when permits free up together.
//! - **Hedges are the loop's own**: while an attempt is in flight the loop may send a second
//!   one (after [`machine::hedge`](crate::machine::hedge)'s delay, for a request safe to send
//!   twice, with the retry budget's consent). The hedge asks every layer's `before_attempt`
//!   with [`PolicyContext::is_hedge`] set, and goes only if none would make it wait; the first
//!   head to arrive is the attempt's outcome, and the other attempt is dropped with its
//!   guards.
//! - **Your policies are outermost**: they see the call as the caller does (one request in,
//!   one response out) and every attempt and hop below them, so a policy that limits or
//!   counts work sees all of it.
//!
//! After an attempt the outcome goes to the innermost policy first. The first policy that
//! answers anything but [`Action::Proceed`] decides; the policies after it are still shown the
//! outcome, with [`PolicyContext::is_claimed`] true, so that a policy that counts outcomes
//! misses none, and their answers are ignored.
//!
//! # Guards
//!
//! A policy that hands out something that must be given back (a permit of a concurrency limit,
//! a half-open probe slot) answers [`Action::Hold`] with a [`Guard`]: the loop keeps it while
//! the attempt is in flight and, when the attempt is delivered, with the [`Response`](crate::Response)
//! until its body ends or the response is dropped. A guard of an attempt that is re-issued or
//! fails is dropped then.
//!
//! # Example
//!
//! A policy that counts the attempts of every call on the client and refuses a call after a
//! `401` from the server, with no edit to the loop:
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use keel_core::machine::outcome::Outcome;
//! use keel_core::pipeline::{Action, Policy, PolicyContext};
//!
//! struct Count(Arc<AtomicUsize>);
//!
//! impl Policy for Count {
//!     fn before_attempt(&mut self, _cx: &mut PolicyContext<'_>) -> Action {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         Action::Proceed
//!     }
//!
//!     fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
//!         if outcome.status().is_some_and(|s| s == 401) && !cx.is_claimed() {
//!             return Action::Fail(keel_core::Error::new(keel_core::ErrorKind::Status(
//!                 http::StatusCode::UNAUTHORIZED,
//!             )));
//!         }
//!         Action::Proceed
//!     }
//! }
//!
//! # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
//! let attempts = Arc::new(AtomicUsize::new(0));
//! let counter = attempts.clone();
//! let client = keel_core::Client::<T>::builder()
//!     .policy(move || Count(counter.clone()))
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::Uri;

use super::request::Request;
use super::ClientConfig;
use crate::error::Error;
use crate::machine::outcome::Outcome;
use crate::machine::redirect::Hop;
use crate::machine::retry::GiveUpReason;
use crate::transport::Timer;

/// One layer of the pipeline: a pure machine's adapter, built afresh for every call.
///
/// Both methods have defaults that answer [`Action::Proceed`], so a policy implements only the
/// side it cares about. They run on the hot path, once per attempt: keep them cheap, and never
/// block in them (answer [`Action::WaitUntil`] to wait).
pub trait Policy: Send + 'static {
    /// Before every attempt (the first, and every one re-issued), outermost policy first.
    ///
    /// May edit the request about to be sent ([`PolicyContext::request_mut`]).
    fn before_attempt(&mut self, cx: &mut PolicyContext<'_>) -> Action {
        let _ = cx;
        Action::Proceed
    }

    /// Whether [`before_attempt`](Self::before_attempt) can answer anything but
    /// [`Action::Proceed`]. A policy that says no is not asked (the loop skips the call).
    /// Default true.
    fn admits(&self) -> bool {
        true
    }

    /// Whether [`on_outcome`](Self::on_outcome) needs to see plain successes (a `2xx` head).
    /// A policy that says no is not shown them, and when no policy of a call does, a `2xx` is
    /// handed over without asking any. Default true.
    fn observes_success(&self) -> bool {
        true
    }

    /// After every attempt, innermost policy first: a response head arrived, the attempt
    /// failed, or (in a buffered read) the body failed mid-way.
    ///
    /// To send the request again, edit it ([`PolicyContext::request_mut`]) and answer
    /// [`Action::Reissue`].
    fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
        let _ = (cx, outcome);
        Action::Proceed
    }
}

/// What a policy tells the loop to do; the one action set every policy shares.
#[must_use = "the loop must act on every action"]
#[non_exhaustive]
#[derive(Debug)]
pub enum Action {
    /// No opinion: ask the next policy (and, when none is left, send, or deliver the outcome).
    Proceed,
    /// Before an attempt: wait until this instant, then ask the same policy again.
    WaitUntil(Instant),
    /// Before an attempt: go ahead, and keep this guard until the attempt is over (for a
    /// delivered response, until its body ends).
    Hold(Guard),
    /// Before an attempt: wait for this future (a permit of a concurrency limit, say), then
    /// act on the action it resolves to, as if the same policy had answered it.
    WaitFor(Waiter),
    /// After an attempt: send the request (as the policy left it) again, no earlier than
    /// `at` (`None`: at once).
    Reissue {
        /// When to send it.
        at: Option<Instant>,
    },
    /// After an attempt: hand the outcome to the caller as it is.
    Deliver,
    /// Fail the call with this error.
    Fail(Error),
}

/// Something a policy hands out and wants back: dropped when the attempt it was taken for is
/// over (see the [module documentation](self)).
///
/// A guard is also where a policy keeps what it needs to know about one attempt when its
/// outcome comes back ([`PolicyContext::attempt_guard`]): with a hedge in flight, a call has
/// two attempts at once, and only the guards tell them apart.
pub struct Guard(Box<dyn Any + Send + Sync>);

impl Guard {
    /// Wraps `value`, whose `Drop` gives the resource back.
    pub fn new(value: impl Any + Send + Sync) -> Self {
        Self(Box::new(value))
    }
}

/// The guards of one attempt: most attempts hold one or two (a breaker ticket, a permit),
/// kept inline.
pub(crate) type Guards = smallvec::SmallVec<[Guard; 2]>;

/// A wait a policy asks for before an attempt: a future that resolves to the policy's answer.
/// See [`Action::WaitFor`].
///
/// The future must end by itself: a policy that waits for something which may never come
/// races it against the call's [`deadline`](PolicyContext::deadline) on its
/// [`timer`](PolicyContext::timer).
pub struct Waiter(pub(crate) Pin<Box<dyn Future<Output = Action> + Send>>);

impl Waiter {
    /// Waits for `fut`, then acts on its answer.
    pub fn new(fut: impl Future<Output = Action> + Send + 'static) -> Self {
        Self(Box::pin(fut))
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waiter")
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Guard")
    }
}

/// What a call did: how many attempts it made, the redirects it followed, and why retrying
/// stopped. Carried by the [`Response`](crate::Response) and by the call's [`Error`].
///
/// Two words: a call that made one attempt and followed no redirect (most calls) allocates
/// nothing for it.
#[derive(Clone, Debug)]
pub struct CallRecord {
    attempts: u32,
    more: Option<Box<More>>,
}

#[derive(Clone, Debug, Default)]
struct More {
    gave_up: Option<GiveUpReason>,
    hops: Vec<Hop>,
    hedges: u32,
}

impl Default for CallRecord {
    fn default() -> Self {
        Self {
            attempts: 1,
            more: None,
        }
    }
}

impl CallRecord {
    /// The attempts the retry policy counted, the first included (redirect hops are not
    /// attempts: see [`hops`](Self::hops)).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why the call stopped retrying although its last outcome was worth retrying.
    pub fn gave_up(&self) -> Option<&GiveUpReason> {
        self.more.as_ref().and_then(|m| m.gave_up.as_ref())
    }

    /// The redirects followed, in order.
    pub fn hops(&self) -> &[Hop] {
        self.more.as_ref().map_or(&[], |m| &m.hops)
    }

    /// The hedges sent: second attempts of a slow attempt, raced against it (see
    /// [`ClientBuilder::hedge`](crate::ClientBuilder::hedge)).
    pub fn hedges(&self) -> u32 {
        self.more.as_ref().map_or(0, |m| m.hedges)
    }

    /// Records a hedge sent.
    pub fn push_hedge(&mut self) {
        self.more.get_or_insert_with(Box::default).hedges += 1;
    }

    /// Records that the retry machine counted `attempts` attempts.
    pub fn set_attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
    }

    /// Records why retrying stopped.
    pub fn set_gave_up(&mut self, reason: Option<GiveUpReason>) {
        match (&mut self.more, reason) {
            (None, None) => {}
            (Some(more), reason) => more.gave_up = reason,
            (more @ None, reason) => {
                *more = Some(Box::new(More {
                    gave_up: reason,
                    ..More::default()
                }))
            }
        }
    }

    /// Records a redirect followed.
    pub fn push_hop(&mut self, hop: Hop) {
        self.more.get_or_insert_with(Box::default).hops.push(hop);
    }

    /// The parts, for an error: attempts, why retrying stopped, the hops.
    pub(crate) fn into_parts(self) -> (u32, Option<GiveUpReason>, Vec<Hop>) {
        match self.more {
            None => (self.attempts, None, Vec::new()),
            Some(more) => (self.attempts, more.gave_up, more.hops),
        }
    }
}

/// What a policy sees of the call: the request, the clocks, the record, and whether an
/// earlier policy already decided what to do with this outcome.
pub struct PolicyContext<'a> {
    pub(crate) request: &'a mut Request,
    pub(crate) body_sent_once: bool,
    pub(crate) record: &'a mut CallRecord,
    pub(crate) timer: &'a Arc<dyn Timer>,
    pub(crate) config: &'a ClientConfig,
    pub(crate) origin_ref: &'a super::state::OriginRef,
    pub(crate) store: &'a super::state::Store,
    pub(crate) now: Option<Instant>,
    pub(crate) deadline: Instant,
    pub(crate) claimed: bool,
    /// The guards of the attempt being admitted, or whose outcome is shown.
    pub(crate) guards: &'a mut Guards,
    /// The attempt being admitted is a hedge: it goes now or not at all.
    pub(crate) hedge: bool,
}

impl PolicyContext<'_> {
    /// The shared state of the origin the request goes to.
    pub(crate) fn origin(&self) -> &super::state::OriginState {
        self.store.resolve(self.origin_ref)
    }

    /// The current time on the client's timer (read once per step, then remembered).
    pub fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(|| self.timer.now())
    }

    /// The client's timer, to race a [`Waiter`] against the deadline.
    pub fn timer(&self) -> &Arc<dyn Timer> {
        self.timer
    }

    /// True when the attempt being admitted is a hedge (a second attempt raced against a slow
    /// one): it goes now or not at all, so an answer that would wait
    /// ([`Action::WaitUntil`], [`Action::WaitFor`]) or fail only means "no hedge". A policy
    /// that would make an attempt wait should answer [`Action::Fail`] for a hedge, giving back
    /// anything it booked.
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }

    /// The guard of type `G` this policy (or another) handed out for the attempt being
    /// admitted, or whose outcome is shown: where a policy keeps what it must know about one
    /// attempt when two are in flight.
    pub fn attempt_guard<G: Any>(&mut self) -> Option<&mut G> {
        self.guards.iter_mut().find_map(|g| g.0.downcast_mut::<G>())
    }

    /// The wall-clock time, for decisions that need a date.
    pub fn now_system(&self) -> SystemTime {
        self.timer.now_system()
    }

    /// The instant by which the whole call must be over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The request as it will be (or was last) sent.
    pub fn request(&self) -> &Request {
        self.request
    }

    /// The request, to edit before it is sent or re-issued.
    pub fn request_mut(&mut self) -> &mut Request {
        self.request
    }

    /// The URL the request goes (or went) to.
    pub fn url(&self) -> &Uri {
        self.request.url()
    }

    /// Whether the request's body can be sent again: false once a one-shot stream was sent.
    pub fn body_replayable(&self) -> bool {
        self.request.body_replayable() && !self.body_sent_once
    }

    /// What the call did so far.
    pub fn record(&self) -> &CallRecord {
        self.record
    }

    /// What the call did so far, to add to.
    pub fn record_mut(&mut self) -> &mut CallRecord {
        self.record
    }

    /// True when an earlier policy already decided what to do with this outcome: this policy
    /// may take note of it, and its answer is ignored.
    pub fn is_claimed(&self) -> bool {
        self.claimed
    }
}

impl fmt::Debug for PolicyContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyContext")
            .field("url", &crate::redact::url(self.request.url()))
            .field("record", &self.record)
            .field("claimed", &self.claimed)
            .finish_non_exhaustive()
    }
}

/// Builds a fresh policy for every call; see [`ClientBuilder::policy`](crate::ClientBuilder::policy).
pub(crate) type PolicyFactory = Arc<dyn Fn() -> Box<dyn Policy> + Send + Sync>;
