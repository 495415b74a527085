//! Pure state machines: the decisions keel makes, without the I/O.
//!
//! Every machine here is plain data. It performs no I/O, starts no task, never reads a clock and
//! has no randomness of its own: time (a monotonic [`Instant`](std::time::Instant), and a
//! [`SystemTime`](std::time::SystemTime) where a decision needs the wall clock) and random seeds
//! come in as arguments, and decisions come out as values the caller must act on. The async
//! driver behind [`Client`](crate::Client) reads the clock, feeds the machines and carries out
//! what they decide, so every backend behaves the same, and each machine is tested (and
//! property-tested) without a runtime or a network.
//!
//! - [`retry`]: whether and when to send a request again, `Retry-After`, the retry budget.
//!
//! # Time
//!
//! The `Instant`s given to one machine must come from one monotonic clock. A machine treats an
//! `Instant` earlier than one it has already seen as "no time has passed"; it never panics on
//! one.

pub mod retry;
