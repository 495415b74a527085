//! keel's one error type.
//!
//! Every failure a [`Client`](crate::Client) can report is an [`Error`]: a matchable
//! [`ErrorKind`], the [`Stage`] of the attempt it happened in (when it happened on the wire), whether
//! the request is known not to have reached the server, and the underlying cause as
//! [`source()`](std::error::Error::source).
//!
//! `Display` prints only this layer of the error, never its causes: walk
//! [`source()`](std::error::Error::source) (or use an error reporter such as `anyhow`'s `{:#}`)
//! to see the whole chain. This is the convention of `hyper` and `std::io::Error`, and it keeps
//! the same text from being printed twice.
//!
//! # Finding a keel error inside another error
//!
//! A keel `Error` converted into [`std::io::Error`] keeps itself as the inner error, so code that
//! walks a source chain and downcasts (`err.downcast_ref::<keel_core::Error>()`) finds it with its
//! kind, stage and [`Error::is_unsent`] intact.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::client::pipeline::CallRecord;
use crate::machine::decode::DecodeError;
use crate::machine::outcome::{self, Failure, Outcome};
pub use crate::machine::outcome::{ErrorKind, Stage, TimeoutPhase};
use crate::machine::redirect::Hop;
use crate::machine::retry::{GiveUpReason, InvalidRetryConfig};
use crate::redact;

/// A boxed error from a backend or a decoder, used as an [`Error`]'s source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error type of every keel operation.
///
/// One pointer wide, and cheap to clone (the cause is shared). Match on [`Error::kind`]; ask [`Error::stage`] where an attempt failed and
/// [`Error::is_unsent`] whether the server can have seen the request.
///
/// `Display` prints only this level of the error; the cause is available through
/// [`source()`](std::error::Error::source).
///
/// # Example
///
/// ```
/// use keel_core::{Error, ErrorKind, TimeoutPhase};
///
/// fn describe(err: &Error) -> &'static str {
///     match err.kind() {
///         ErrorKind::Timeout(TimeoutPhase::Connect) => "could not connect in time",
///         ErrorKind::Timeout(_) => "the server was too slow",
///         ErrorKind::Status(s) if s.is_server_error() => "the server failed",
///         ErrorKind::Status(_) => "the request was refused",
///         _ if err.is_retryable() => "a transient failure",
///         _ => "a permanent failure",
///     }
/// }
///
/// let err = Error::new(ErrorKind::Timeout(TimeoutPhase::ReadIdle));
/// assert_eq!(describe(&err), "the server was too slow");
/// assert!(err.is_retryable());
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    stage: Option<Stage>,
    unsent: bool,
    url: Option<http::Uri>,
    status: Option<StatusDetails>,
    json_path: Option<String>,
    setting: Option<&'static str>,
    attempts: u32,
    gave_up: Option<GiveUpReason>,
    hops: Vec<Hop>,
    retry_in: Option<Duration>,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

#[derive(Clone)]
struct StatusDetails {
    headers: HeaderMap,
    snippet: Bytes,
}

impl Error {
    /// Creates an error of the given kind with no cause.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                stage: None,
                unsent: false,
                url: None,
                status: None,
                json_path: None,
                setting: None,
                attempts: 0,
                gave_up: None,
                hops: Vec::new(),
                retry_in: None,
                source: None,
            }),
        }
    }

    /// Attaches the cause, returned by [`source()`](std::error::Error::source).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(Arc::from(source.into()));
        self
    }

    /// Records the stage of the attempt the error happened in.
    ///
    /// Failures in [`Stage::Dns`], [`Stage::Connect`] and [`Stage::Tls`] also mark the request
    /// as unsent: no byte of it can have reached the server.
    #[must_use]
    pub fn with_stage(mut self, stage: Stage) -> Self {
        self.inner.stage = Some(stage);
        self.inner.unsent |= stage.is_before_request();
        self
    }

    /// Marks the request as known not to have reached the server, for example a reused
    /// keep-alive connection that the server had already closed before the request was written.
    #[must_use]
    pub fn with_unsent(mut self) -> Self {
        self.inner.unsent = true;
        self
    }

    /// Records the URL of the request that failed.
    #[must_use]
    pub fn with_url(mut self, url: http::Uri) -> Self {
        self.inner.url = Some(url);
        self
    }

    /// Names the client setting that is invalid or unsupported (for [`ErrorKind::Config`]).
    #[must_use]
    pub fn with_setting(mut self, setting: &'static str) -> Self {
        self.inner.setting = Some(setting);
        self
    }

    /// Records what the call did: how many attempts it made, why it stopped retrying while
    /// the outcome was still worth retrying, and the redirects it followed.
    pub(crate) fn with_record(mut self, record: CallRecord) -> Self {
        let (attempts, gave_up, hops) = record.into_parts();
        self.inner.attempts = attempts;
        self.inner.gave_up = gave_up;
        self.inner.hops = hops;
        self
    }

    pub(crate) fn status(status: StatusCode, headers: HeaderMap, snippet: Bytes) -> Self {
        let mut err = Self::new(ErrorKind::Status(status));
        err.inner.status = Some(StatusDetails { headers, snippet });
        err
    }

    pub(crate) fn decode(path: String, source: impl Into<BoxError>) -> Self {
        let mut err = Self::new(ErrorKind::Decode).with_source(source);
        err.inner.json_path = Some(path);
        err
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Where in the attempt the failure happened, when it happened on the wire.
    pub fn stage(&self) -> Option<Stage> {
        self.inner.stage
    }

    /// True when the request is known not to have reached the server: the connection was never
    /// established, or a reused connection was found closed before the request was written.
    ///
    /// Such a request is safe to send again whatever its method.
    pub fn is_unsent(&self) -> bool {
        self.inner.unsent
    }

    /// The URL of the request, when the error belongs to one.
    pub fn url(&self) -> Option<&http::Uri> {
        self.inner.url.as_ref()
    }

    /// The status code, for [`ErrorKind::Status`].
    pub fn status_code(&self) -> Option<StatusCode> {
        match self.inner.kind {
            ErrorKind::Status(s) => Some(s),
            _ => None,
        }
    }

    /// The response headers, for [`ErrorKind::Status`].
    pub fn response_headers(&self) -> Option<&HeaderMap> {
        self.inner.status.as_ref().map(|s| &s.headers)
    }

    /// The first bytes of the response body (at most
    /// [`Response::SNIPPET_LIMIT`](crate::Response::SNIPPET_LIMIT)), for [`ErrorKind::Status`].
    pub fn body_snippet(&self) -> Option<&Bytes> {
        self.inner.status.as_ref().map(|s| &s.snippet)
    }

    /// Where in the document decoding failed, for [`ErrorKind::Decode`], as a path such as
    /// `items[3].id` (`.` when the document itself is malformed).
    pub fn json_path(&self) -> Option<&str> {
        self.inner.json_path.as_deref()
    }

    /// How many attempts the call made before this error was returned (0 when the error did
    /// not come from sending a request, such as a build error).
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// Why the call stopped retrying although this error was worth retrying: the attempts or
    /// the deadline ran out, the method is not idempotent, the body can't be replayed, … `None`
    /// when the error is not worth retrying at all, or retrying was never considered.
    pub fn gave_up(&self) -> Option<&GiveUpReason> {
        self.inner.gave_up.as_ref()
    }

    /// How long until the request could go, for [`ErrorKind::CircuitOpen`] (until the breaker
    /// lets a probe through; `None` when it is forced open) and [`ErrorKind::RateLimited`];
    /// and for a status error of a `429`, a `503` or a `403` (GitHub's rate limits), when
    /// the server said when to come back (`Retry-After`, or quota headers that say the quota
    /// is spent: `RateLimit`, `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`).
    pub fn retry_in(&self) -> Option<Duration> {
        self.inner.retry_in
    }

    /// Records how long until the request could go.
    #[must_use]
    pub fn with_retry_in(mut self, wait: Duration) -> Self {
        self.inner.retry_in = Some(wait);
        self
    }

    /// The redirects the call followed before it failed, in order: for a
    /// [`ErrorKind::Redirect`] refusal, the chain that led to it.
    pub fn redirects(&self) -> &[Hop] {
        &self.inner.hops
    }

    /// The name of the builder setting at fault, for [`ErrorKind::Config`].
    pub fn setting(&self) -> Option<&'static str> {
        self.inner.setting
    }

    /// Whether sending the same request again may succeed.
    ///
    /// True for connect failures, timeouts other than the overall deadline, failures of the
    /// connection mid-flight, statuses 408, 429, 500, 502, 503 and 504, and any failure that
    /// provably did not reach the server. Whether a retry is *safe* also depends on the method;
    /// this only says whether it is worth trying.
    pub fn is_retryable(&self) -> bool {
        outcome::is_retryable(self.inner.kind, self.inner.unsent)
    }

    /// The error as the facts a machine decides on: its kind, stage, whether it is unsent,
    /// and the response headers of a status error.
    pub fn outcome(&self) -> Outcome<'_> {
        Outcome::from(self)
    }

    /// True for [`ErrorKind::Timeout`] of any phase.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Timeout(_))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("keel::Error");
        d.field("kind", &self.inner.kind);
        if let Some(stage) = self.inner.stage {
            d.field("stage", &stage);
        }
        if self.inner.unsent {
            d.field("unsent", &true);
        }
        if let Some(url) = &self.inner.url {
            d.field("url", &redact::url(url));
        }
        if let Some(path) = &self.inner.json_path {
            d.field("json_path", path);
        }
        if let Some(setting) = self.inner.setting {
            d.field("setting", &setting);
        }
        if self.inner.attempts > 1 {
            d.field("attempts", &self.inner.attempts);
        }
        if let Some(reason) = &self.inner.gave_up {
            d.field("gave_up", reason);
        }
        if !self.inner.hops.is_empty() {
            d.field("redirects", &self.inner.hops);
        }
        if let Some(wait) = self.inner.retry_in {
            d.field("retry_in", &wait);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.inner.kind, &self.inner.json_path, self.inner.setting) {
            (ErrorKind::Decode, Some(path), _) => {
                write!(f, "could not decode the body at `{path}`")?
            }
            (ErrorKind::Config, _, Some(setting)) => {
                write!(f, "invalid client setting `{setting}`")?
            }
            (kind, _, _) => write!(f, "{kind}")?,
        }
        if let Some(stage) = self.inner.stage {
            let at = match stage {
                Stage::Dns => "resolving the host",
                Stage::Connect => "connecting",
                Stage::Tls => "the tls handshake",
                Stage::SendRequest => "sending the request",
                Stage::AwaitHead => "waiting for the response head",
                Stage::Body => "reading the body",
                Stage::Proxy => "talking to the proxy",
                Stage::Pool => "waiting for a pooled connection",
            };
            write!(f, " (during {at})")?;
        }
        if let Some(url) = &self.inner.url {
            write!(f, " for {}", redact::url(url))?;
        }
        if self.inner.attempts > 1 {
            write!(f, " after {} attempts", self.inner.attempts)?;
        }
        if let Some(wait) = self.inner.retry_in {
            write!(f, "; could go in {wait:?}")?;
        }
        match &self.inner.gave_up {
            // "gave up after N attempts" repeats what was just said.
            Some(GiveUpReason::AttemptsExhausted { .. }) | None => {}
            Some(reason) => write!(f, "; not retried: {reason}")?,
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner.source.as_ref().map(|e| &**e as _)
    }
}

impl From<Error> for io::Error {
    /// Keeps the keel error as the inner error, so it can be downcast back.
    fn from(err: Error) -> Self {
        let kind = match err.kind() {
            ErrorKind::Timeout(_) => io::ErrorKind::TimedOut,
            ErrorKind::Connect => io::ErrorKind::ConnectionRefused,
            ErrorKind::Body => io::ErrorKind::ConnectionAborted,
            ErrorKind::Protocol | ErrorKind::Decode | ErrorKind::Tls => io::ErrorKind::InvalidData,
            ErrorKind::InvalidUrl | ErrorKind::InvalidRequest | ErrorKind::Config => {
                io::ErrorKind::InvalidInput
            }
            ErrorKind::BodyTooLarge { .. }
            | ErrorKind::DecodedTooLarge { .. }
            | ErrorKind::LineTooLong { .. }
            | ErrorKind::EventTooLarge { .. } => io::ErrorKind::FileTooLarge,
            ErrorKind::DecompressionRatio { .. } => io::ErrorKind::InvalidData,
            ErrorKind::Redirect(_) => io::ErrorKind::Other,
            ErrorKind::CircuitOpen | ErrorKind::RateLimited => io::ErrorKind::WouldBlock,
            ErrorKind::Status(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

impl<'a> From<&'a Error> for Outcome<'a> {
    fn from(err: &'a Error) -> Self {
        Outcome::Error(Failure {
            kind: err.inner.kind,
            stage: err.inner.stage,
            unsent: err.inner.unsent,
            headers: err.response_headers(),
        })
    }
}

impl From<DecodeError> for Error {
    /// A body that could not be decoded out of its `Content-Encoding`, in [`Stage::Body`]:
    /// [`ErrorKind::DecodedTooLarge`], [`ErrorKind::DecompressionRatio`], or
    /// [`ErrorKind::Decode`] for a corrupt or truncated stream; the [`DecodeError`] is the
    /// source.
    fn from(err: DecodeError) -> Self {
        let kind = match err {
            DecodeError::TooLarge { limit } => ErrorKind::DecodedTooLarge { limit },
            DecodeError::RatioExceeded { limit } => ErrorKind::DecompressionRatio { limit },
            _ => ErrorKind::Decode,
        };
        Error::new(kind).with_stage(Stage::Body).with_source(err)
    }
}

impl From<InvalidRetryConfig> for Error {
    fn from(err: InvalidRetryConfig) -> Self {
        Error::new(ErrorKind::Config)
            .with_setting(err.setting())
            .with_source(err)
    }
}

/// Looks for an error of type `E` in `err` or its source chain.
///
/// It also looks inside [`io::Error`]s, whose `source()` skips the error they wrap. Backends
/// use it to find their library's error (an `h2::Error`, a `curl::Error`) under wrappers;
/// callers to find a keel [`Error`] inside errors of other libraries.
///
/// ```
/// use keel_core::{find_source, Error, ErrorKind};
///
/// let wrapped = std::io::Error::other(Error::new(ErrorKind::Connect));
/// let found = find_source::<Error>(&wrapped).expect("the keel error is inside");
/// assert_eq!(found.kind(), ErrorKind::Connect);
/// ```
pub fn find_source<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(found) = find_source::<E>(inner) {
                return Some(found);
            }
        }
        cur = e.source();
    }
    None
}

/// Looks for a keel [`Error`] in `err` or its source chain: [`find_source`] for [`Error`].
pub fn find_in_chain<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a Error> {
    find_source::<Error>(err)
}

/// Looks for an [`io::Error`] in `err` or its source chain: [`find_source`] for
/// [`io::Error`].
pub fn find_io_in_chain<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a io::Error> {
    find_source::<io::Error>(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn connect_stages_mark_unsent() {
        for stage in [Stage::Dns, Stage::Connect, Stage::Tls, Stage::Proxy] {
            assert!(Error::new(ErrorKind::Connect).with_stage(stage).is_unsent());
        }
        for stage in [Stage::SendRequest, Stage::AwaitHead, Stage::Body] {
            assert!(!Error::new(ErrorKind::Body).with_stage(stage).is_unsent());
        }
    }

    #[test]
    fn retryable_statuses() {
        let retryable: Vec<u16> = (100..600)
            .filter(|&c| {
                let s = StatusCode::from_u16(c).unwrap();
                Error::status(s, HeaderMap::new(), Bytes::new()).is_retryable()
            })
            .collect();
        assert_eq!(retryable, [408, 429, 500, 502, 503, 504]);
    }

    #[test]
    fn deadline_is_final_other_timeouts_are_not() {
        assert!(!Error::new(ErrorKind::Timeout(TimeoutPhase::Deadline)).is_retryable());
        for phase in [
            TimeoutPhase::Connect,
            TimeoutPhase::Attempt,
            TimeoutPhase::ReadIdle,
        ] {
            assert!(Error::new(ErrorKind::Timeout(phase)).is_retryable());
        }
    }

    #[test]
    fn display_prints_one_layer_and_source_chains() {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::new(ErrorKind::Connect)
            .with_stage(Stage::Connect)
            .with_source(io);
        assert_eq!(err.to_string(), "connection failed (during connecting)");
        assert_eq!(err.source().unwrap().to_string(), "refused");
        assert!(find_io_in_chain(&err).is_some());
    }

    #[test]
    fn survives_a_trip_through_io_error() {
        let err = Error::new(ErrorKind::Body)
            .with_stage(Stage::SendRequest)
            .with_unsent();
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionAborted);
        let wrapped: BoxError = Box::new(io);
        let found = find_in_chain(&*wrapped).expect("keel error in chain");
        assert_eq!(found.stage(), Some(Stage::SendRequest));
        assert!(found.is_unsent());
        assert!(found.is_retryable());
    }

    #[test]
    fn config_error_names_the_setting() {
        let err = Error::new(ErrorKind::Config).with_setting("http2_prior_knowledge");
        assert_eq!(
            err.to_string(),
            "invalid client setting `http2_prior_knowledge`"
        );
        assert_eq!(err.setting(), Some("http2_prior_knowledge"));
    }
}
