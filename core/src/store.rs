//! Where the state that policies share across calls lives: the rate limiters, the server's
//! quota holds and the circuit breakers.
//!
//! A client keeps that state in *cells*, one per [`CellKey`]: the client-wide rate limit, each
//! origin, each partition a request or a server names. A [`StateStore`] makes the cells, and
//! every read and update of a limiter, a hold or a breaker goes through the cell's
//! [`StateCell`] methods. The machines stay pure ([`Gcra`], [`Breaker`]): a cell only keeps
//! their state and hands it to them, updated atomically.
//!
//! - [`LocalStore`] (the default) keeps each cell in the process, under a lock, exactly as a
//!   client always has: every method answers at once.
//! - A store shared by several processes (`keel-redis`'s `RedisStore`) keeps a local cell as
//!   its cache and tells the other processes what matters to them: the fleet's quota, a
//!   breaker that tripped, a hold the server asked for. A method that needs a round trip
//!   answers [`Admit::Again`] or [`BreakerAdmit::Again`] with a future; the driver waits for it
//!   (never past the call's deadline) and asks again.
//!
//! ```
//! # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
//! use keel_core::store::LocalStore;
//! use keel_core::RateLimit;
//!
//! // What every client does unless told otherwise.
//! let client = keel_core::Client::<T>::builder()
//!     .state_store(LocalStore)
//!     .rate_limit(RateLimit::per_second(10)?)
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::client::BreakerControl;
use crate::error::{Error, ErrorKind};
use crate::machine::breaker::{
    Admission, Breaker, BreakerPolicy, BreakerState, CallResult, Ticket, Transition,
};
use crate::machine::rate::{Gcra, RateLimit};
use crate::transport::{Origin, Timer};

/// Which cell of a client's shared state.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellKey<'a> {
    /// The client-wide rate limit ([`ClientBuilder::rate_limit`](crate::ClientBuilder::rate_limit)).
    Client,
    /// An origin's breaker, rate limit and quota hold.
    Origin(&'a Origin),
    /// A partition's breaker and quota hold: one a request names
    /// ([`RequestBuilder::partition`](crate::RequestBuilder::partition)), or the quota partition
    /// a server names (`pk` in a `RateLimit` header).
    Partition(&'a str),
}

impl fmt::Display for CellKey<'_> {
    /// `client`, `origin:{origin}` or `partition:{key}`: a stable name, fit for a key in a
    /// shared store.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client => f.write_str("client"),
            Self::Origin(origin) => write!(f, "origin:{origin}"),
            Self::Partition(key) => write!(f, "partition:{key}"),
        }
    }
}

/// Makes the cells of a client's shared state; see the [module documentation](self).
///
/// A client asks for a cell once per key (at its first use) and keeps it; a store that shares
/// state between clients returns cells that share it for equal keys.
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// The cell for `key`.
    fn cell(&self, key: CellKey<'_>) -> Arc<dyn StateCell>;
}

/// A shared store is a store: `Arc<dyn StateStore>` can be handed to several builders.
impl<S: StateStore + ?Sized> StateStore for Arc<S> {
    fn cell(&self, key: CellKey<'_>) -> Arc<dyn StateCell> {
        (**self).cell(key)
    }
}

/// What a rate limiter is asked: a slot of `limit` for an attempt at `now`.
#[derive(Clone, Copy)]
pub struct Acquire<'a> {
    pub(crate) limit: RateLimit,
    pub(crate) now: Instant,
    pub(crate) deadline: Instant,
    pub(crate) hedge: bool,
    pub(crate) timer: &'a Arc<dyn Timer>,
    pub(crate) caller: u64,
}

impl<'a> Acquire<'a> {
    /// The limit the client was configured with for this cell.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// The attempt's instant, on the client's [`Timer`].
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The attempt must go before this: a slot at or after it is refused, not waited for.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The attempt is a hedge: it goes now or not at all (never wait for a round trip).
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }

    /// The client's timer, for a store that must wait.
    pub fn timer(&self) -> &'a Arc<dyn Timer> {
        self.timer
    }

    /// Who asks: the same number each time one call's attempt asks again after
    /// [`Admit::Again`], different for every call of the client (for a store that serves
    /// waiting attempts in the order they came).
    pub fn caller(&self) -> u64 {
        self.caller
    }
}

impl fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("limit", &self.limit)
            .field("now", &self.now)
            .field("deadline", &self.deadline)
            .field("hedge", &self.hedge)
            .finish_non_exhaustive()
    }
}

/// A wait a cell asks for before it can answer: when the future ends, the driver asks again.
/// It must end by itself, and should end by the attempt's deadline (the driver stops waiting
/// then anyway).
pub type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A rate limiter's answer.
#[non_exhaustive]
pub enum Admit {
    /// The slot at this instant is booked: go then (at once if it is not in the future).
    At(Instant),
    /// Refused: the attempt fails with this error (usually [`ErrorKind::RateLimited`]).
    Fail(Error),
    /// Wait for this, then ask again (a round trip to a shared store).
    Again(Pending),
}

impl fmt::Debug for Admit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::At(at) => f.debug_tuple("At").field(at).finish(),
            Self::Fail(err) => f.debug_tuple("Fail").field(err).finish(),
            Self::Again(_) => f.write_str("Again"),
        }
    }
}

/// A circuit breaker's answer.
#[non_exhaustive]
pub enum BreakerAdmit {
    /// The breaker decided.
    Decided(Admission),
    /// Wait for this, then ask again (a half-open probe slot asked of the fleet, say).
    Again(Pending),
}

impl fmt::Debug for BreakerAdmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decided(admission) => f.debug_tuple("Decided").field(admission).finish(),
            Self::Again(_) => f.write_str("Again"),
        }
    }
}

/// One cell of shared state: a rate limiter, a quota hold and a circuit breaker, each made at
/// first use. See the [module documentation](self).
///
/// The methods run on the request path, once per attempt: they must not block (a store that
/// needs I/O answers `Again` and does it in the returned future, or in the background).
pub trait StateCell: Send + Sync + fmt::Debug + 'static {
    /// Books a slot of the cell's rate limiter for an attempt.
    fn acquire(&self, request: &Acquire<'_>) -> Admit;

    /// Gives back a slot [`acquire`](Self::acquire) booked whose attempt won't go.
    fn cancel(&self, slot: Instant);

    /// The server said no request under this cell goes before `until` (`now` is when it said
    /// so). A hold never shortens one already in place.
    fn hold(&self, now: Instant, until: Instant);

    /// The end of the hold in place, if any (it may be past).
    fn held_until(&self) -> Option<Instant>;

    /// Whether an attempt may pass the breaker (made with `policy` at first use) at `now`,
    /// and the change of state this, or anything since the last call, caused.
    fn admit(
        &self,
        policy: &BreakerPolicy,
        now: Instant,
        timer: &Arc<dyn Timer>,
    ) -> (BreakerAdmit, Option<Transition>);

    /// Counts the result of the attempt `ticket` was handed out for.
    fn on_result(&self, ticket: Ticket, result: CallResult, now: Instant) -> Option<Transition>;

    /// Gives back the ticket of an attempt dropped before its result.
    fn release(&self, ticket: Ticket);

    /// The breaker's state, if one was made.
    fn breaker_state(&self) -> Option<BreakerState>;

    /// An operator's order to the breaker (made with `policy` if none was).
    fn control(&self, policy: &BreakerPolicy, control: BreakerControl) -> Option<Transition>;
}

/// The default store: each client keeps its own cells in the process. See [`LocalCell`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalStore;

impl StateStore for LocalStore {
    fn cell(&self, _key: CellKey<'_>) -> Arc<dyn StateCell> {
        Arc::new(LocalCell::default())
    }
}

/// A cell kept in the process under one short lock: every method answers at once and never
/// allocates. Stores shared by several processes keep one as their local copy.
#[derive(Debug, Default)]
pub struct LocalCell {
    state: Mutex<LocalState>,
}

/// What a [`LocalCell`] keeps.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct LocalState {
    /// The rate limiter, made at the first slot asked for.
    pub limiter: Option<Gcra>,
    /// The end of the server's hold, if one was asked for.
    pub hold_until: Option<Instant>,
    /// The circuit breaker, made at the first admission.
    pub breaker: Option<Breaker>,
}

impl LocalCell {
    /// The cell's state, locked (for a store that builds on a local cell); a lock poisoned by
    /// a panic elsewhere still works (the state is plain data, valid between any two calls).
    pub fn lock(&self) -> MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The error of an attempt whose slot would come at `at`, past its deadline.
pub(crate) fn limited(now: Instant, at: Instant) -> Error {
    Error::new(ErrorKind::RateLimited).with_retry_in(at.saturating_duration_since(now))
}

impl StateCell for LocalCell {
    fn acquire(&self, request: &Acquire<'_>) -> Admit {
        let now = request.now;
        let booked = self
            .lock()
            .limiter
            .get_or_insert_with(|| Gcra::new(request.limit))
            .acquire(now, Some(request.deadline));
        match booked {
            Ok(at) => Admit::At(at),
            Err(at) => Admit::Fail(limited(now, at)),
        }
    }

    fn cancel(&self, slot: Instant) {
        if let Some(gcra) = &mut self.lock().limiter {
            gcra.cancel(slot);
        }
    }

    fn hold(&self, _now: Instant, until: Instant) {
        let mut state = self.lock();
        state.hold_until = Some(state.hold_until.map_or(until, |held| held.max(until)));
    }

    fn held_until(&self) -> Option<Instant> {
        self.lock().hold_until
    }

    fn admit(
        &self,
        policy: &BreakerPolicy,
        now: Instant,
        _timer: &Arc<dyn Timer>,
    ) -> (BreakerAdmit, Option<Transition>) {
        let (admission, transition) = self
            .lock()
            .breaker
            .get_or_insert_with(|| Breaker::new(policy))
            .admit(now);
        (BreakerAdmit::Decided(admission), transition)
    }

    fn on_result(&self, ticket: Ticket, result: CallResult, now: Instant) -> Option<Transition> {
        self.lock()
            .breaker
            .as_mut()
            .and_then(|breaker| breaker.on_result(ticket, result, now))
    }

    fn release(&self, ticket: Ticket) {
        if let Some(breaker) = &mut self.lock().breaker {
            breaker.release(ticket);
        }
    }

    fn breaker_state(&self) -> Option<BreakerState> {
        self.lock().breaker.as_ref().map(Breaker::state)
    }

    fn control(&self, policy: &BreakerPolicy, control: BreakerControl) -> Option<Transition> {
        let mut state = self.lock();
        let breaker = state.breaker.get_or_insert_with(|| Breaker::new(policy));
        match control {
            BreakerControl::ForceOpen => breaker.force_open(),
            BreakerControl::Disable => breaker.disable(),
            BreakerControl::Reset => breaker.reset(),
        }
    }
}
