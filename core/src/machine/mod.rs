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
//! - [`outcome`]: what the machines are told about an attempt (its outcome as facts), and
//!   which failures are worth another attempt.
//! - [`retry`]: whether and when to send a request again, `Retry-After`, the retry budget.
//! - [`redirect`]: whether to follow a `3xx`, where to, with which method, body and headers.
//! - [`credentials`]: which headers are credentials, and which URLs share an origin.
//! - [`breaker`]: the circuit breaker: when to stop calling a failing server, and how to probe
//!   it before trusting it again.
//! - [`rate`]: pacing requests to a rate limit (GCRA), and the holds a server's quota headers
//!   ask for.
//!
//! # Time
//!
//! The `Instant`s given to one machine must come from one monotonic clock. A machine treats an
//! `Instant` earlier than one it has already seen as "no time has passed"; it never panics on
//! one.

pub mod breaker;
pub mod credentials;
pub mod outcome;
pub mod rate;
pub mod redirect;
pub mod retry;
