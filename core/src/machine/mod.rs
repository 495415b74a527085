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
//! - [`cookies`]: an RFC 6265 cookie jar: which `Set-Cookie`s to keep, and which cookies go
//!   with a request (domain, path, Secure, expiry, limits).
//! - [`hedge`]: when to send a second attempt of a request that is slow to answer, from a
//!   fixed delay or a percentile of the latencies observed.
//! - [`rate`]: pacing requests to a rate limit (GCRA), and the holds a server's quota headers
//!   ask for.
//! - [`decode`]: undoing a response's `Content-Encoding` (gzip, deflate, br, zstd) piece by
//!   piece, with limits on the decoded size and the decompression ratio.
//! - [`download`]: resumable downloads: whether a response continues the bytes kept
//!   (`Range` + `If-Range`), replaces them, or can't be used; `Content-Range` parsing.
//! - [`lines`]: splitting a body that arrives in chunks into lines, and NDJSON (JSON Lines)
//!   values.
//! - [`paginate`]: following a paged listing (`Link` header, cursors, next URLs, page
//!   numbers, offsets) with a page limit, cycle detection and resumable checkpoints.
//! - [`tunnel`]: opening a tunnel through a proxy: the HTTP `CONNECT` and SOCKS5 handshakes.
//! - [`sse`]: server-sent events, parsed from a body that arrives in chunks, as the HTML
//!   standard's event stream interpretation says.
//!
//! # Time
//!
//! The `Instant`s given to one machine must come from one monotonic clock. A machine treats an
//! `Instant` earlier than one it has already seen as "no time has passed"; it never panics on
//! one.

pub mod breaker;
pub mod cookies;
pub mod credentials;
pub mod decode;
pub mod download;
pub mod hedge;
pub mod lines;
pub mod outcome;
pub mod paginate;
pub mod rate;
pub mod redirect;
pub mod retry;
pub mod sse;
pub mod tunnel;

use std::error::Error as StdError;
use std::fmt;

/// A machine setting that can't be used: which one (`retry.multiplier`, `breaker.open_for`,
/// `rate_limit.burst`, …), and what it must be. Shared by every machine's builder
/// ([`retry::InvalidRetryConfig`], [`breaker::InvalidBreakerConfig`],
/// [`rate::InvalidRateConfig`] name it).
///
/// Converts into an [`Error`](crate::Error) of kind [`ErrorKind::Config`](crate::ErrorKind::Config)
/// whose [`setting`](crate::Error::setting) is the same name.
///
/// ```
/// use keel_core::machine::retry::RetryPolicy;
///
/// let err = RetryPolicy::builder().multiplier(0.5).build().unwrap_err();
/// assert_eq!(err.setting(), "retry.multiplier");
/// assert_eq!(err.to_string(), "invalid setting `retry.multiplier`: must be a finite number of at least 1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSetting {
    setting: &'static str,
    reason: &'static str,
}

impl InvalidSetting {
    pub(crate) fn new(setting: &'static str, reason: &'static str) -> Self {
        Self { setting, reason }
    }

    /// The setting at fault, such as `retry.multiplier` or `breaker.open_for`.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// What the setting must be.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting `{}`: {}", self.setting, self.reason)
    }
}

impl StdError for InvalidSetting {}
