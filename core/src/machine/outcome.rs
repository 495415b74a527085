//! What the machines are told about an attempt: its outcome as plain facts.
//!
//! A machine never sees the driver's [`Error`](crate::Error): it sees an [`Outcome`], either a
//! response head (status and headers) or a [`Failure`] (the [`ErrorKind`], the [`Stage`] it
//! happened in, whether the request provably never reached the server, and the headers of a
//! status error). The driver turns its errors into these facts
//! (`Outcome::from(&error)`), so the machines can be used, and tested, without it.
//!
//! The kinds themselves live here, and [`Error`](crate::Error) re-uses them, so that what a
//! machine decides on and what a caller matches on are the same values. Which failures are
//! worth another attempt by default is decided once, by [`is_retryable`] and
//! [`RETRYABLE_STATUSES`].

use std::fmt;

use http::{HeaderMap, StatusCode};

use super::redirect::RedirectRefusal;

/// The statuses worth another attempt by default: 408, 429, 500, 502, 503 and 504.
///
/// [`RetryPolicy`](super::retry::RetryPolicy)'s default status set and
/// [`Error::is_retryable`](crate::Error::is_retryable) both come from this list.
pub const RETRYABLE_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Whether a failure of `kind` is worth another attempt: connect failures, timeouts other than
/// the overall deadline and the pool-acquire timeout, connections that failed mid-flight, the [`RETRYABLE_STATUSES`], and a
/// protocol failure on a request that provably never reached the server (`unsent`).
///
/// ```
/// use keel_core::machine::outcome::is_retryable;
/// use keel_core::{ErrorKind, TimeoutPhase};
///
/// assert!(is_retryable(ErrorKind::Timeout(TimeoutPhase::Attempt), false));
/// assert!(!is_retryable(ErrorKind::Timeout(TimeoutPhase::Deadline), false));
/// assert!(!is_retryable(ErrorKind::Timeout(TimeoutPhase::PoolAcquire), true));
/// assert!(!is_retryable(ErrorKind::Protocol, false));
/// assert!(is_retryable(ErrorKind::Protocol, true));
/// ```
pub fn is_retryable(kind: ErrorKind, unsent: bool) -> bool {
    match kind {
        // The caps are full: another attempt would queue behind the same requests.
        ErrorKind::Timeout(TimeoutPhase::Deadline | TimeoutPhase::PoolAcquire) => false,
        ErrorKind::Timeout(_) | ErrorKind::Connect | ErrorKind::Body => true,
        ErrorKind::Status(s) => RETRYABLE_STATUSES.contains(&s.as_u16()),
        // A protocol failure on a connection the request never reached (a stale keep-alive
        // connection answering garbage) says nothing about the next attempt.
        ErrorKind::Protocol => unsent,
        ErrorKind::Tls
        | ErrorKind::Decode
        | ErrorKind::BodyTooLarge { .. }
        | ErrorKind::DecodedTooLarge { .. }
        | ErrorKind::DecompressionRatio { .. }
        | ErrorKind::InvalidUrl
        | ErrorKind::InvalidRequest
        | ErrorKind::Config
        | ErrorKind::Redirect(_)
        | ErrorKind::CircuitOpen
        | ErrorKind::RateLimited
        | ErrorKind::LineTooLong { .. }
        | ErrorKind::EventTooLarge { .. } => false,
    }
}

/// The outcome of one attempt, as the machines see it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// A response head arrived, whatever its status.
    Response {
        /// The response status.
        status: StatusCode,
        /// The response headers (`Retry-After` is read from them).
        headers: &'a HeaderMap,
    },
    /// The attempt failed, or the driver turned the response into an error.
    ///
    /// An [`ErrorKind::Status`] failure is judged like the response it came from, its headers
    /// included.
    Error(Failure<'a>),
}

/// A failed attempt, as facts.
///
/// ```
/// use keel_core::machine::outcome::{Failure, Outcome};
/// use keel_core::{ErrorKind, Stage};
///
/// let refused = Failure::new(ErrorKind::Connect).with_stage(Stage::Connect);
/// assert!(refused.unsent, "nothing reached the server before the connection was made");
/// let outcome = Outcome::Error(refused);
/// assert_eq!(outcome.error_kind(), Some(ErrorKind::Connect));
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Where in the attempt, when it happened on the wire.
    pub stage: Option<Stage>,
    /// The request provably never reached the server.
    pub unsent: bool,
    /// The response headers, for an [`ErrorKind::Status`] failure.
    pub headers: Option<&'a HeaderMap>,
}

impl<'a> Failure<'a> {
    /// A failure of `kind`, at no known stage, that may have reached the server.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            stage: None,
            unsent: false,
            headers: None,
        }
    }

    /// Records the stage; [`Stage::Dns`], [`Stage::Connect`] and [`Stage::Tls`] also mark the
    /// request unsent, as [`Error::with_stage`](crate::Error::with_stage) does.
    #[must_use]
    pub fn with_stage(mut self, stage: Stage) -> Self {
        self.stage = Some(stage);
        self.unsent |= stage.is_before_request();
        self
    }

    /// Marks the request as known not to have reached the server.
    #[must_use]
    pub fn with_unsent(mut self) -> Self {
        self.unsent = true;
        self
    }

    /// The headers of the response behind an [`ErrorKind::Status`] failure.
    #[must_use]
    pub fn with_headers(mut self, headers: &'a HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }
}

impl<'a> Outcome<'a> {
    /// The response status, or the status of an [`ErrorKind::Status`] failure.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Outcome::Response { status, .. } => Some(*status),
            Outcome::Error(f) => match f.kind {
                ErrorKind::Status(s) => Some(s),
                _ => None,
            },
        }
    }

    /// The response headers, or those kept on an [`ErrorKind::Status`] failure.
    pub fn headers(&self) -> Option<&'a HeaderMap> {
        match self {
            Outcome::Response { headers, .. } => Some(headers),
            Outcome::Error(f) => f.headers,
        }
    }

    /// The failure, for a failed attempt.
    pub fn failure(&self) -> Option<&Failure<'a>> {
        match self {
            Outcome::Response { .. } => None,
            Outcome::Error(f) => Some(f),
        }
    }

    /// The kind of the failure, for a failed attempt.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.failure().map(|f| f.kind)
    }

    /// True when the attempt provably never reached the server: such an attempt is safe to
    /// repeat whatever the method.
    pub fn is_unsent(&self) -> bool {
        self.failure().is_some_and(|f| f.unsent)
    }
}

impl<'a, B> From<&'a http::Response<B>> for Outcome<'a> {
    fn from(response: &'a http::Response<B>) -> Self {
        Outcome::Response {
            status: response.status(),
            headers: response.headers(),
        }
    }
}

/// What went wrong, as a value to match on.
///
/// New kinds will be added (circuit open, rate limited, too many redirects…), so a `match`
/// needs a wildcard arm.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A time limit ran out; the phase says which one.
    Timeout(TimeoutPhase),
    /// No connection could be made: DNS failed, the port refused or the network is unreachable.
    Connect,
    /// The TLS handshake failed, for example on an untrusted certificate.
    Tls,
    /// The server answered with an error status (returned by
    /// [`Response::error_for_status`](crate::Response::error_for_status)); the headers and the
    /// start of the body are kept on the error.
    Status(StatusCode),
    /// The connection failed while the request or the response was in flight (closed early,
    /// reset, truncated body).
    Body,
    /// The server broke the HTTP protocol (a malformed head, a body that contradicts its
    /// framing).
    Protocol,
    /// The body could not be decoded: as the requested type (see
    /// [`Error::json_path`](crate::Error::json_path)), or out of its `Content-Encoding` (a
    /// corrupt or truncated compressed stream; the source is a
    /// [`DecodeError`](crate::machine::decode::DecodeError) saying which).
    Decode,
    /// The response body is larger than the configured limit, in bytes.
    BodyTooLarge {
        /// The limit that was exceeded.
        limit: u64,
    },
    /// The response body decodes (out of its `Content-Encoding`) to more than the client's
    /// [`max_decoded_size`](crate::ClientBuilder::max_decoded_size), in bytes.
    DecodedTooLarge {
        /// The limit that was exceeded.
        limit: u64,
    },
    /// The response body decodes to more bytes per encoded byte than the client's
    /// [`max_decompression_ratio`](crate::ClientBuilder::max_decompression_ratio) allows: a
    /// decompression bomb, most likely.
    DecompressionRatio {
        /// The ratio that was exceeded (decoded bytes per encoded byte).
        limit: u32,
    },
    /// The URL could not be parsed, joined to the base URL, or has a scheme keel can't use.
    InvalidUrl,
    /// The request could not be built: an invalid header name or value, a body that failed to
    /// serialize.
    InvalidRequest,
    /// The client could not be built: a setting is invalid or the backend can't honour it;
    /// see [`Error::setting`](crate::Error::setting).
    Config,
    /// A redirect was refused (too many hops, a loop, https → http, a body that can't be sent
    /// again, …); [`Error::redirects`](crate::Error::redirects) lists the hops followed before.
    Redirect(RedirectRefusal),
    /// The origin's circuit breaker is open: the request was not sent.
    /// [`Error::retry_in`](crate::Error::retry_in) says when it may let a probe through.
    CircuitOpen,
    /// A rate limit would make the request wait past the call's deadline: it was not sent.
    /// [`Error::retry_in`](crate::Error::retry_in) says when it could have gone.
    RateLimited,
    /// A line of a body read as lines or NDJSON was longer than the limit (the line is
    /// skipped; the stream goes on).
    LineTooLong {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A server-sent event was larger than the limit (the event is skipped; the stream goes
    /// on).
    EventTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

/// Which time limit ran out.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutPhase {
    /// Establishing the connection (DNS, TCP and TLS) took longer than the connect timeout.
    Connect,
    /// No response head arrived within the per-attempt timeout.
    Attempt,
    /// The overall deadline for the whole call, body included, passed.
    Deadline,
    /// No body bytes arrived for longer than the read-idle timeout.
    ReadIdle,
    /// No connection could be had within the pool-acquire timeout: every connection the
    /// connection caps allow was busy. Nothing was sent, in [`Stage::Pool`]. Not retried by
    /// default: the caps are full because the client is already at the load it was allowed, and
    /// a retry would only queue again behind the same requests (the acquire timeout is the
    /// caller's way to shed that load, not a fault of the server).
    PoolAcquire,
}

/// Where in an attempt a failure happened.
///
/// Retry decisions depend on it: a failure before the request was written cannot have had an
/// effect on the server.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Resolving the host name.
    Dns,
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake.
    Tls,
    /// Writing the request, before it was fully written.
    SendRequest,
    /// Waiting for the response head, after the request was written.
    AwaitHead,
    /// Reading the response body.
    Body,
    /// Talking to a proxy: connecting to it, its TLS, the `CONNECT` or SOCKS5 handshake, or
    /// its refusal of a forwarded request (`407 Proxy Authentication Required`). Nothing of the
    /// request reached the target server.
    Proxy,
    /// Waiting for a connection the connection caps allow (`max_connections_per_origin`,
    /// `max_connections`). Nothing of the request was written.
    Pool,
}

impl Stage {
    /// True for the stages before any byte of the request was written (DNS, TCP, TLS, the
    /// proxy, the wait for a pooled connection): a failure there can't have had an effect on the server.
    pub fn is_before_request(self) -> bool {
        matches!(
            self,
            Stage::Dns | Stage::Connect | Stage::Tls | Stage::Proxy | Stage::Pool
        )
    }
}

impl fmt::Display for ErrorKind {
    /// What went wrong, in a few words (`Error`'s `Display` adds the stage, URL and attempts).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Timeout(TimeoutPhase::Connect) => f.write_str("connect timed out"),
            ErrorKind::Timeout(TimeoutPhase::Attempt) => {
                f.write_str("timed out waiting for the response head")
            }
            ErrorKind::Timeout(TimeoutPhase::Deadline) => f.write_str("request deadline passed"),
            ErrorKind::Timeout(TimeoutPhase::ReadIdle) => {
                f.write_str("timed out waiting for body data")
            }
            ErrorKind::Timeout(TimeoutPhase::PoolAcquire) => {
                f.write_str("timed out waiting for a pooled connection")
            }
            ErrorKind::Connect => f.write_str("connection failed"),
            ErrorKind::Tls => f.write_str("tls handshake failed"),
            ErrorKind::Status(s) => write!(f, "server returned {s}"),
            ErrorKind::Body => f.write_str("connection failed mid-request"),
            ErrorKind::Protocol => f.write_str("invalid http from the server"),
            ErrorKind::Decode => f.write_str("could not decode the body"),
            ErrorKind::BodyTooLarge { limit } => {
                write!(f, "response body is larger than the limit of {limit} bytes")
            }
            ErrorKind::DecodedTooLarge { limit } => {
                write!(f, "response body decodes to more than {limit} bytes")
            }
            ErrorKind::DecompressionRatio { limit } => write!(
                f,
                "response body decodes to more than {limit} bytes per encoded byte"
            ),
            ErrorKind::InvalidUrl => f.write_str("invalid url"),
            ErrorKind::InvalidRequest => f.write_str("invalid request"),
            ErrorKind::Config => f.write_str("invalid client configuration"),
            ErrorKind::Redirect(refusal) => write!(f, "redirect refused: {refusal}"),
            ErrorKind::CircuitOpen => f.write_str("circuit breaker open"),
            ErrorKind::RateLimited => f.write_str("rate limited"),
            ErrorKind::LineTooLong { limit } => {
                write!(f, "a line is longer than the limit of {limit} bytes")
            }
            ErrorKind::EventTooLarge { limit } => {
                write!(
                    f,
                    "a server-sent event is larger than the limit of {limit} bytes"
                )
            }
        }
    }
}
