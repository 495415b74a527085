//! The circuit breaker: stop calling a server that keeps failing, and probe it before trusting
//! it again.
//!
//! A [`BreakerPolicy`] says when to trip (failures in a row, or a failure rate over a window),
//! how long to stay open and how to recover. Each key (an origin, or a user key) has one
//! [`Breaker`] over it, shared by every call to that key. [`BreakerPolicy::classify`] turns a
//! call's [`Outcome`](super::outcome::Outcome) and duration into the [`CallResult`] a breaker
//! counts.
//!
//! Nothing here performs I/O, reads a clock or owns a lock: the driver passes `now` in, keeps
//! each breaker behind its own lock (or in its store) and holds it only for one method call.
//!
//! # States
//!
//! ```text
//!                    a rule trips (on_result)
//!      ┌────────┐ ───────────────────────────────► ┌──────────────────┐
//!      │ Closed │                                  │ Open { until }   │ ◄──┐
//!      └────────┘ ◄───────────┐                    └──────────────────┘    │ a probe fails:
//!          ▲                  │ successes_to_close        │                │ open again, for
//!          │                  │ probes succeed            │ first admit    │ twice as long
//!          │                  │ (cool-down back to base)  │ at/after until │ (up to max)
//!          │             ┌──────────┐                     │                │
//!          │             │ HalfOpen │ ◄───────────────────┘                │
//!          │             └──────────┘ ─────────────────────────────────────┘
//!          │
//!          │ reset()        force_open() ─► ForcedOpen     disable() ─► Disabled
//!          └─────────────── (from any state)               (from any state)
//! ```
//!
//! - **Closed** admits every call. Each counted result feeds the rules: a failure adds to the
//!   consecutive count, a success sets it back to zero, and both go into the failure-rate
//!   window. When a rule trips, the breaker opens for the base cool-down.
//! - **Open** rejects every call until `until`. Time alone changes nothing: the first
//!   [`admit`](Breaker::admit) at or after `until` moves to half-open and returns that call's
//!   ticket as the first probe.
//! - **HalfOpen** admits up to [`half_open_probes`](BreakerPolicyBuilder::half_open_probes)
//!   probes at once and rejects the rest. [`successes_to_close`](BreakerPolicyBuilder::successes_to_close)
//!   successful probes close it (counters cleared, cool-down back to base); one failed probe
//!   opens it again with the cool-down doubled (up to its max).
//! - **ForcedOpen** rejects every call until [`reset`](Breaker::reset) (or
//!   [`disable`](Breaker::disable)); **Disabled** admits every call and never trips. Both are
//!   for operators.
//!
//! A closed breaker never goes straight to half-open.
//!
//! # Tickets
//!
//! Each admitted call gets a [`Ticket`], which the driver gives back exactly once: with
//! [`on_result`](Breaker::on_result) when the call finished, or with
//! [`release`](Breaker::release) when it was dropped before it said anything about the server
//! (a released probe frees its slot and counts nothing). A ticket carries the generation of
//! the state it was handed out in; every change of state starts a new generation, and the
//! results of older tickets are ignored. So a slow call admitted while closed can't trip a
//! breaker that has meanwhile opened and half-opened, or close it.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use keel_core::machine::breaker::{
//!     Admission, Breaker, BreakerPolicy, BreakerState, CallResult, Transition,
//! };
//!
//! let policy = BreakerPolicy::builder()
//!     .consecutive_failures(2)
//!     .open_for(Duration::from_secs(1), Duration::from_secs(10))
//!     .build()?;
//! let mut breaker = Breaker::new(&policy);
//! let t0 = Instant::now();
//!
//! // Closed: two failures in a row trip it.
//! for _ in 0..2 {
//!     let (Admission::Allowed(ticket), None) = breaker.admit(t0) else { unreachable!() };
//!     breaker.on_result(ticket, CallResult::Failure, t0);
//! }
//! let until = t0 + Duration::from_secs(1);
//! assert_eq!(breaker.state(), BreakerState::Open { until });
//!
//! // Open: calls are rejected until the cool-down is over.
//! let (admission, _) = breaker.admit(t0 + Duration::from_millis(500));
//! assert_eq!(admission, Admission::Rejected { until: Some(until) });
//!
//! // The first call after it is a probe, and the breaker is half-open.
//! let (admission, transition) = breaker.admit(until);
//! let Admission::Allowed(probe) = admission else { unreachable!() };
//! assert!(probe.is_probe());
//! assert_eq!(transition, Some(Transition { from: BreakerState::Open { until }, to: BreakerState::HalfOpen }));
//! // One probe at a time, by default.
//! assert_eq!(breaker.admit(until).0, Admission::Rejected { until: None });
//!
//! // The probe succeeds: closed again.
//! let transition = breaker.on_result(probe, CallResult::Success, until);
//! assert_eq!(transition, Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Closed }));
//! assert!(matches!(breaker.admit(until).0, Admission::Allowed(_)));
//! # Ok::<(), keel_core::machine::breaker::InvalidBreakerConfig>(())
//! ```

use std::time::{Duration, Instant};

mod policy;
#[cfg(test)]
mod tests;
mod window;

pub use policy::{
    BreakerPolicy, BreakerPolicyBuilder, BreakerPredicate, CallResult, InvalidBreakerConfig, Window,
};

use window::Counts;

/// Where a breaker is.
///
/// New states may be added, so a `match` needs a wildcard arm.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; results are counted.
    Closed,
    /// Calls are rejected; the first call at or after `until` is a probe.
    Open {
        /// When the cool-down ends.
        until: Instant,
    },
    /// A few probes go through; their results decide between closed and open.
    HalfOpen,
    /// An operator opened it: calls are rejected until it is reset.
    ForcedOpen,
    /// An operator disabled it: calls go through and nothing is counted.
    Disabled,
}

/// The right to make one call, handed out by [`Breaker::admit`]; give it back exactly once,
/// with [`Breaker::on_result`] or [`Breaker::release`].
///
/// A ticket from before a change of state is ignored when it comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    probe: bool,
    generation: u64,
}

impl Ticket {
    /// True for a probe of a half-open breaker: its result decides whether the breaker closes.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Whether a call may go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Make the call, then give the ticket back.
    Allowed(Ticket),
    /// Don't make the call.
    Rejected {
        /// When the breaker may let a probe through: the end of the cool-down for an open
        /// breaker. `None` when no time is known: a forced-open breaker, or a half-open one
        /// whose probe slots are all taken (a slot frees when a probe finishes).
        until: Option<Instant>,
    },
}

/// A change of state, for events and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
}

/// One key's circuit breaker (an origin's, or a user key's): its state and counters.
///
/// Plain data: cloning copies the state, and a clone fed the same events makes the same
/// decisions. It allocates once, in [`new`](Self::new), when the policy has a
/// [count window](Window::Count) (a bit per call of the window), and never per call.
#[derive(Clone, Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: BreakerState,
    generation: u64,
    consecutive: u32,
    counts: Counts,
    probes_in_flight: u32,
    probe_successes: u32,
    /// The cool-down of the last trip: base after a close, doubled by each failed probe.
    cool_down: Duration,
}

impl Breaker {
    /// A closed breaker over `policy`.
    pub fn new(policy: &BreakerPolicy) -> Self {
        Self {
            policy: policy.clone(),
            state: BreakerState::Closed,
            generation: 0,
            consecutive: 0,
            counts: Counts::new(policy.rate_rule().map(|r| r.window)),
            probes_in_flight: 0,
            probe_successes: 0,
            cool_down: policy.open_for().0,
        }
    }

    /// Whether a call may go ahead at `now`, and the change of state this caused, if any.
    ///
    /// The only change `admit` makes is from open to half-open, on the first call at or after
    /// the end of the cool-down; that call gets the first probe ticket.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match self.state {
            BreakerState::Closed | BreakerState::Disabled => {
                (Admission::Allowed(self.ticket(false)), None)
            }
            BreakerState::Open { until } if now >= until => {
                let transition = self.enter(BreakerState::HalfOpen);
                self.probes_in_flight = 1;
                (Admission::Allowed(self.ticket(true)), transition)
            }
            BreakerState::Open { until } => (Admission::Rejected { until: Some(until) }, None),
            BreakerState::HalfOpen if self.probes_in_flight < self.policy.half_open_probes() => {
                self.probes_in_flight += 1;
                (Admission::Allowed(self.ticket(true)), None)
            }
            BreakerState::HalfOpen | BreakerState::ForcedOpen => {
                (Admission::Rejected { until: None }, None)
            }
        }
    }

    /// Counts the result of the call `ticket` was handed out for, which finished at `now`, and
    /// returns the change of state it caused, if any.
    ///
    /// Results of tickets from an earlier state, and [`CallResult::Ignored`], count nothing
    /// (an ignored probe still frees its slot).
    pub fn on_result(
        &mut self,
        ticket: Ticket,
        result: CallResult,
        now: Instant,
    ) -> Option<Transition> {
        if ticket.generation != self.generation {
            return None;
        }
        match (self.state, ticket.probe) {
            (BreakerState::Closed, false) => self.on_closed_result(result, now),
            (BreakerState::HalfOpen, true) => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                match result {
                    CallResult::Success => {
                        self.probe_successes = self.probe_successes.saturating_add(1);
                        if self.probe_successes >= self.policy.successes_to_close() {
                            self.enter(BreakerState::Closed)
                        } else {
                            None
                        }
                    }
                    CallResult::Failure => {
                        let max = self.policy.open_for().1;
                        self.cool_down = self.cool_down.saturating_mul(2).min(max);
                        self.trip(now)
                    }
                    CallResult::Ignored => None,
                }
            }
            _ => None,
        }
    }

    /// Gives back the ticket of a call that was dropped before it finished: a probe frees its
    /// slot; nothing is counted.
    pub fn release(&mut self, ticket: Ticket) {
        if ticket.probe
            && ticket.generation == self.generation
            && self.state == BreakerState::HalfOpen
        {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    /// The current state. An open breaker stays [`Open`](BreakerState::Open) past `until`
    /// until a call is [admitted](Self::admit).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// How many probe tickets of the current half-open state are out.
    pub fn probes_in_flight(&self) -> u32 {
        self.probes_in_flight
    }

    /// The policy this breaker follows.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// Opens the breaker until [`reset`](Self::reset) (or [`disable`](Self::disable)).
    pub fn force_open(&mut self) -> Option<Transition> {
        self.enter(BreakerState::ForcedOpen)
    }

    /// Lets every call through and never trips, until [`reset`](Self::reset) (or
    /// [`force_open`](Self::force_open)).
    pub fn disable(&mut self) -> Option<Transition> {
        self.enter(BreakerState::Disabled)
    }

    /// Closes the breaker, with its counters cleared and the cool-down back to base. Calls
    /// admitted before count nothing when they finish.
    pub fn reset(&mut self) -> Option<Transition> {
        self.enter(BreakerState::Closed)
    }

    /// Another process sharing this breaker's key saw it trip: open until `until` (on this
    /// process's clock), unless an operator forced it open or disabled it. An open breaker
    /// whose cool-down ends earlier is kept open until `until`, without a transition (the same
    /// trip, heard twice).
    pub fn opened_elsewhere(&mut self, until: Instant) -> Option<Transition> {
        match self.state {
            BreakerState::Open { until: own } => {
                if until > own {
                    self.state = BreakerState::Open { until };
                }
                None
            }
            BreakerState::Closed | BreakerState::HalfOpen => {
                self.enter(BreakerState::Open { until })
            }
            BreakerState::ForcedOpen | BreakerState::Disabled => None,
        }
    }

    /// Another process sharing this breaker's key closed it (its probes succeeded): a tripped
    /// breaker (open or half-open) closes, counters cleared; one an operator forced open or
    /// disabled stays as it is.
    pub fn closed_elsewhere(&mut self) -> Option<Transition> {
        match self.state {
            BreakerState::Open { .. } | BreakerState::HalfOpen => self.enter(BreakerState::Closed),
            _ => None,
        }
    }

    fn ticket(&self, probe: bool) -> Ticket {
        Ticket {
            probe,
            generation: self.generation,
        }
    }

    fn on_closed_result(&mut self, result: CallResult, now: Instant) -> Option<Transition> {
        let failure = match result {
            CallResult::Ignored => return None,
            CallResult::Success => {
                self.consecutive = 0;
                false
            }
            CallResult::Failure => {
                self.consecutive = self.consecutive.saturating_add(1);
                true
            }
        };
        let tally = self.counts.record(failure, now);
        let by_count = self
            .policy
            .consecutive_failures()
            .is_some_and(|n| self.consecutive >= n);
        let by_rate = self.policy.rate_rule().is_some_and(|rule| {
            tally.calls >= rule.min_calls
                && f64::from(tally.failures) / f64::from(tally.calls) >= rule.threshold
        });
        if by_count || by_rate {
            self.trip(now)
        } else {
            None
        }
    }

    /// Opens for the current cool-down.
    fn trip(&mut self, now: Instant) -> Option<Transition> {
        // The cool-down is at most a day; an `Instant` that close to its end can't come from a
        // real clock, and then the breaker half-opens at once rather than panic.
        let until = now.checked_add(self.cool_down).unwrap_or(now);
        self.enter(BreakerState::Open { until })
    }

    /// Moves to `to`, starting a new generation of tickets.
    fn enter(&mut self, to: BreakerState) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        self.generation = self.generation.wrapping_add(1);
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        if to == BreakerState::Closed {
            self.consecutive = 0;
            self.counts.clear();
            self.cool_down = self.policy.open_for().0;
        }
        (from != to).then_some(Transition { from, to })
    }
}
