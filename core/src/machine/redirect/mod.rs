//! Redirects: whether to follow a `3xx`, where to, with which method and body.
//!
//! A [`RedirectPolicy`] says how many redirects a call may follow, whether `https` may lead to
//! `http`, and, optionally, asks a user's predicate about each one. Each call runs one
//! [`Redirects`] machine over it; the machine answers each response with a [`RedirectAction`]
//! and keeps the [`Hop`]s it followed. [`rewrite_headers`] edits the headers of the next
//! request: body headers go when the body does, credentials go when the origin changes.
//!
//! Nothing here performs I/O: the driver sends the requests and hands the machine each
//! response's status and headers.
//!
//! # Rules
//!
//! [`Redirects::on_response`] takes the request that got the response (its method, URL and
//! [`BodyState`]), the status and the headers, and applies these checks in order; the first
//! that decides wins:
//!
//! | # | check | answer |
//! |---|---|---|
//! | 1 | status isn't 301, 302, 303, 307 or 308, or there is no `Location` | `Deliver` |
//! | 2 | the policy is [`none`](RedirectPolicy::none) | `Deliver` |
//! | 3 | `Location` isn't UTF-8, doesn't resolve against the request URL, or isn't `http`/`https` with a host | `Refuse(InvalidLocation)` |
//! | 4 | [`max`](RedirectPolicy::max) hops were already followed | `Refuse(TooManyHops { max })` |
//! | 5 | the next method: 303 → `GET` (`HEAD` stays `HEAD`); 301 and 302 turn `POST` into `GET`; otherwise the same | |
//! | 6 | the next method and URL were already requested in this call | `Refuse(Loop)` |
//! | 7 | `https` → `http` and the policy doesn't [allow](RedirectPolicy::allow_https_downgrade) it | `Refuse(InsecureDowngrade)` |
//! | 8 | the [custom](RedirectPolicy::custom) predicate says [`Stop`](RedirectDecision::Stop) / [`Refuse`](RedirectDecision::Refuse) | `Deliver` / `Refuse(Refused)` |
//! | 9 | the method is unchanged (the body must be sent again) and the body is [`OneShot`](BodyState::OneShot) | `Refuse(BodyNotReplayable)` |
//! | 10 | otherwise | `Follow`, and the hop is recorded |
//!
//! Methods, by status:
//!
//! | status | `GET` | `HEAD` | `POST` | `PUT`, `DELETE`, others | body sent again |
//! |---|---|---|---|---|---|
//! | 301, 302 | `GET` | `HEAD` | **`GET`** | same | when the method is unchanged |
//! | 303 | `GET` | `HEAD` | **`GET`** | **`GET`** | when the method is unchanged |
//! | 307, 308 | `GET` | `HEAD` | `POST` | same | yes |
//!
//! The `Location` is resolved as a browser would (RFC 3986 reference resolution, with the
//! WHATWG URL parser): absolute (`https://b.example/p`), scheme-relative (`//b.example/p`),
//! absolute-path (`/p`), relative (`p`, `../p`) or query-only (`?page=2`). Its fragment is
//! dropped, and so is any user info (`user:pass@`): credentials never come from a server's
//! `Location`. When a response has several `Location` headers, the first counts.
//!
//! # States
//!
//! ```text
//!            Redirects::new(&policy)
//!                     │
//!                     ▼
//!      ┌──► request n in flight ──on_response──┬──► Deliver ───────────► return the response
//!      │    (n = hops().len() + 1)             │
//!      │                                       ├──► Refuse(why) ────────► fail the call
//!      │                                       │
//!      │                                       └──► Follow(follow)
//!      │                                                 │
//!      └── driver rewrites the request, sends it ◄───────┘
//! ```
//!
//! # What the driver does with each action
//!
//! For each call, when [`RedirectPolicy::follows`] (otherwise it can skip all of this):
//!
//! 1. Build the machine: [`Redirects::new`]. It allocates nothing until the first hop.
//! 2. Send the request. With the response head, call [`Redirects::on_response`] with a
//!    [`RedirectRequest`] describing the request just sent.
//! 3. Act on the [`RedirectAction`]:
//!    - [`Deliver`](RedirectAction::Deliver): hand the response to the caller as it is (a
//!      `3xx` included).
//!    - [`Refuse(why)`](RedirectAction::Refuse): release the response (drop or drain its body)
//!      and fail the call with a redirect error carrying `why` and [`Redirects::hops`].
//!    - [`Follow(follow)`](RedirectAction::Follow): release the response, then edit the
//!      request in place: the URL becomes `follow.url`, the method `follow.method`; the body
//!      is rebuilt from its factory when `follow.keep_body`, and dropped otherwise; and
//!      [`rewrite_headers`] edits the headers. Go to step 2 with the edited request.
//!
//! The edits accumulate: each hop starts from the request as the previous hop left it, so a
//! body dropped at a `303` stays dropped at a later `307`, and credentials removed on the way
//! to another origin stay removed for the rest of the call, even if a later hop comes back.
//! ([`Follow::cross_origin`] is sticky for the same reason: once a hop has left the first
//! request's origin, every later hop is cross-origin.)
//!
//! # Example
//!
//! A `POST` to a login form answered with a `302` to a relative URL, then a `301` to another
//! origin, then a `200`:
//!
//! ```
//! use http::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LOCATION};
//! use http::{Method, StatusCode, Uri};
//! use keel_core::machine::credentials::SensitiveHeaders;
//! use keel_core::machine::redirect::{
//!     rewrite_headers, BodyState, RedirectAction, RedirectPolicy, RedirectRequest, Redirects,
//! };
//!
//! let policy = RedirectPolicy::default(); // up to 10 hops, no https -> http
//! let sensitive = SensitiveHeaders::default();
//! let mut redirects = Redirects::new(&policy);
//!
//! // The request as the caller built it.
//! let mut method = Method::POST;
//! let mut url: Uri = "https://app.example/session/new".parse().unwrap();
//! let mut body = BodyState::Replayable;
//! let mut headers = HeaderMap::new();
//! headers.insert(AUTHORIZATION, "Bearer secret".parse().unwrap());
//! headers.insert(CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
//!
//! let location = |to: &str| {
//!     let mut h = HeaderMap::new();
//!     h.insert(LOCATION, to.parse().unwrap());
//!     h
//! };
//!
//! // 1. 302 Found, Location: ../home. A POST becomes a GET, without its body.
//! let request = RedirectRequest::new(&method, &url, body);
//! let RedirectAction::Follow(follow) =
//!     redirects.on_response(&request, StatusCode::FOUND, &location("../home"))
//! else {
//!     panic!("expected a redirect to follow");
//! };
//! assert_eq!(follow.url, "https://app.example/home");
//! assert_eq!(follow.method, Method::GET);
//! assert!(!follow.keep_body && !follow.cross_origin);
//! rewrite_headers(&mut headers, &follow, &sensitive);
//! assert!(!headers.contains_key(CONTENT_TYPE)); // no body, no body headers
//! assert!(headers.contains_key(AUTHORIZATION)); // same origin: the credentials stay
//! (method, url, body) = (follow.method, follow.url, BodyState::Empty);
//!
//! // 2. 301 Moved Permanently to another origin. The GET stays a GET.
//! let request = RedirectRequest::new(&method, &url, body);
//! let RedirectAction::Follow(follow) = redirects.on_response(
//!     &request,
//!     StatusCode::MOVED_PERMANENTLY,
//!     &location("https://cdn.example/home#top"),
//! ) else {
//!     panic!("expected a redirect to follow");
//! };
//! assert_eq!(follow.url, "https://cdn.example/home"); // no fragment
//! assert_eq!(follow.method, Method::GET);
//! assert!(follow.cross_origin);
//! rewrite_headers(&mut headers, &follow, &sensitive);
//! assert!(headers.is_empty()); // the token doesn't go to cdn.example
//! (method, url) = (follow.method, follow.url);
//!
//! // 3. 200 OK: delivered.
//! let request = RedirectRequest::new(&method, &url, body);
//! let action = redirects.on_response(&request, StatusCode::OK, &HeaderMap::new());
//! assert_eq!(action, RedirectAction::Deliver);
//!
//! let hops: Vec<String> = redirects.hops().iter().map(ToString::to_string).collect();
//! assert_eq!(hops, [
//!     "302 https://app.example/session/new -> https://app.example/home",
//!     "301 https://app.example/home -> https://cdn.example/home",
//! ]);
//! ```
//!
//! Refusals, with a policy of at most one hop:
//!
//! ```
//! use http::header::{HeaderMap, LOCATION};
//! use http::{Method, StatusCode, Uri};
//! use keel_core::machine::redirect::{
//!     BodyState, RedirectAction, RedirectPolicy, RedirectRefusal, RedirectRequest, Redirects,
//! };
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(LOCATION, "http://api.example/v2".parse().unwrap());
//! let url: Uri = "https://api.example/v1".parse().unwrap();
//! let put = RedirectRequest::new(&Method::PUT, &url, BodyState::Replayable);
//!
//! let policy = RedirectPolicy::limited(1);
//! let mut redirects = Redirects::new(&policy);
//! let action = redirects.on_response(&put, StatusCode::PERMANENT_REDIRECT, &headers);
//! assert_eq!(action, RedirectAction::Refuse(RedirectRefusal::InsecureDowngrade));
//! assert_eq!(RedirectRefusal::InsecureDowngrade.to_string(), "redirect from https to http refused");
//!
//! // Allowed, it is followed; the body is sent again. A second hop is one too many.
//! let policy = RedirectPolicy::limited(1).allow_https_downgrade(true);
//! let mut redirects = Redirects::new(&policy);
//! let RedirectAction::Follow(follow) =
//!     redirects.on_response(&put, StatusCode::PERMANENT_REDIRECT, &headers)
//! else {
//!     panic!("expected a redirect to follow");
//! };
//! assert!(follow.keep_body);
//! let next = RedirectRequest::new(&follow.method, &follow.url, BodyState::Replayable);
//! headers.insert(LOCATION, "/v3".parse().unwrap());
//! let action = redirects.on_response(&next, StatusCode::PERMANENT_REDIRECT, &headers);
//! assert_eq!(action, RedirectAction::Refuse(RedirectRefusal::TooManyHops { max: 1 }));
//! assert_eq!(redirects.hops().len(), 1);
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use http::header::{
    HeaderMap, HeaderName, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_LOCATION,
    CONTENT_TYPE, LOCATION, TRANSFER_ENCODING,
};
use http::{Method, StatusCode, Uri};

use super::credentials::{same_origin, SensitiveHeaders};
use crate::redact;

/// The most redirects a call follows by default, and under [`RedirectPolicy::custom`] unless
/// [`max_hops`](RedirectPolicy::max_hops) says otherwise.
pub const DEFAULT_MAX_HOPS: usize = 10;

/// The headers that describe a request body, removed when the body is not sent again.
const BODY_HEADERS: [HeaderName; 6] = [
    CONTENT_TYPE,
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    CONTENT_LANGUAGE,
    CONTENT_LOCATION,
    TRANSFER_ENCODING,
];

type Predicate = Arc<dyn Fn(&RedirectAttempt<'_>) -> RedirectDecision + Send + Sync>;

/// Which redirects a call follows.
///
/// Cheap to clone (clones share one allocation) and shared by every call that uses it; each
/// call runs its own [`Redirects`] machine over it.
///
/// | constructor | follows | at most |
/// |---|---|---|
/// | [`none`](Self::none) | nothing: a `3xx` is delivered as it is | 0 |
/// | [`limited(n)`](Self::limited) | every redirect the rules allow | `n` hops; one more fails the call |
/// | [`custom(f)`](Self::custom) | what the rules allow and `f` agrees to | [`DEFAULT_MAX_HOPS`] |
/// | [`default`](Self::default) | `limited(10)` | 10 |
///
/// An `https` → `http` redirect is refused unless
/// [`allow_https_downgrade(true)`](Self::allow_https_downgrade).
///
/// # Example
///
/// ```
/// use http::Method;
/// use keel_core::machine::redirect::{RedirectDecision, RedirectPolicy};
///
/// // Follow redirects within the API's host, at most 3; stop (and deliver the 3xx) elsewhere.
/// let policy = RedirectPolicy::custom(|attempt| {
///     if attempt.to().host() == Some("api.example.com") {
///         RedirectDecision::Follow
///     } else {
///         RedirectDecision::Stop
///     }
/// })
/// .max_hops(3);
/// assert_eq!(policy.max(), 3);
/// assert!(policy.follows());
///
/// assert!(!RedirectPolicy::none().follows());
/// assert_eq!(RedirectPolicy::default().max(), 10);
/// ```
#[derive(Clone)]
pub struct RedirectPolicy {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    follows: bool,
    max: usize,
    allow_https_downgrade: bool,
    predicate: Option<Predicate>,
}

impl RedirectPolicy {
    /// Never follows: a `3xx` is delivered to the caller as it is.
    pub fn none() -> Self {
        Self::new(false, 0, None)
    }

    /// Follows up to `max_hops` redirects per call; the one after them fails the call with
    /// [`RedirectRefusal::TooManyHops`]. With `0`, every redirect fails the call (where
    /// [`none`](Self::none) delivers it).
    pub fn limited(max_hops: usize) -> Self {
        Self::new(true, max_hops, None)
    }

    /// Asks `f` about each redirect that passes the built-in checks (valid `Location`, hop
    /// count, loops, `https` → `http`); see [`RedirectDecision`] for its answers. At most
    /// [`DEFAULT_MAX_HOPS`] are followed, unless [`max_hops`](Self::max_hops) says otherwise.
    ///
    /// `f` runs inside [`Redirects::on_response`], on the driver's task: it should be quick and
    /// must not block.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&RedirectAttempt<'_>) -> RedirectDecision + Send + Sync + 'static,
    {
        Self::new(true, DEFAULT_MAX_HOPS, Some(Arc::new(f)))
    }

    fn new(follows: bool, max: usize, predicate: Option<Predicate>) -> Self {
        Self {
            inner: Arc::new(Inner {
                follows,
                max,
                allow_https_downgrade: false,
                predicate,
            }),
        }
    }

    /// Follows at most `max` redirects per call. No effect on [`none`](Self::none), which
    /// follows none.
    #[must_use]
    pub fn max_hops(mut self, max: usize) -> Self {
        if self.inner.follows {
            Arc::make_mut(&mut self.inner).max = max;
        }
        self
    }

    /// Whether a redirect from `https` to `http` is followed (`false` by default: it fails the
    /// call with [`RedirectRefusal::InsecureDowngrade`], because the rest of the call, and the
    /// credentials that were meant for TLS, would travel in clear text).
    #[must_use]
    pub fn allow_https_downgrade(mut self, allow: bool) -> Self {
        Arc::make_mut(&mut self.inner).allow_https_downgrade = allow;
        self
    }

    /// The most redirects a call follows: 0 for [`none`](Self::none).
    pub fn max(&self) -> usize {
        if self.inner.follows {
            self.inner.max
        } else {
            0
        }
    }

    /// Whether the policy follows redirects at all: `false` only for [`none`](Self::none), in
    /// which case the driver may skip the [`Redirects`] machine, which would deliver every
    /// response anyway.
    pub fn follows(&self) -> bool {
        self.inner.follows
    }

    /// Whether `https` → `http` redirects are followed.
    pub fn allows_https_downgrade(&self) -> bool {
        self.inner.allow_https_downgrade
    }
}

impl Default for RedirectPolicy {
    /// [`limited`](Self::limited)`(`[`DEFAULT_MAX_HOPS`]`)`.
    fn default() -> Self {
        Self::limited(DEFAULT_MAX_HOPS)
    }
}

impl fmt::Debug for RedirectPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("RedirectPolicy")
            .field("follows", &i.follows)
            .field("max_hops", &self.max())
            .field("allow_https_downgrade", &i.allow_https_downgrade)
            .field("predicate", &i.predicate.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// A redirect about to be followed, as a [`RedirectPolicy::custom`] predicate sees it.
///
/// Its `Debug` shows URLs through [`redact::url`].
#[derive(Clone, Copy)]
pub struct RedirectAttempt<'a> {
    status: StatusCode,
    from: &'a Uri,
    to: &'a Uri,
    method: &'a Method,
    previous: &'a [Hop],
}

impl<'a> RedirectAttempt<'a> {
    /// The redirect's status: 301, 302, 303, 307 or 308.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The URL of the request that got the redirect.
    pub fn from(&self) -> &'a Uri {
        self.from
    }

    /// Where the redirect leads: the resolved `Location`, without a fragment.
    pub fn to(&self) -> &'a Uri {
        self.to
    }

    /// The method the request to [`to`](Self::to) would use.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The hops this call followed before, oldest first.
    pub fn previous(&self) -> &'a [Hop] {
        self.previous
    }
}

/// A [`RedirectPolicy::custom`] predicate's answer.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectDecision {
    /// Follow the redirect (if the body allows it).
    Follow,
    /// Don't follow: deliver the `3xx` response to the caller as it is.
    Stop,
    /// Fail the call with [`RedirectRefusal::Refused`].
    Refuse,
}

/// One redirect a call followed.
///
/// Its `Display` is `302 http://a.example/x -> http://b.example/y`, its URLs shown through
/// [`redact::url`] (as are those of its `Debug`): a signature in a
/// pre-signed URL a server redirects to prints as `REDACTED`. [`from`](Hop::from) and
/// [`to`](Hop::to) give the URLs themselves.
#[derive(Clone, PartialEq, Eq)]
pub struct Hop {
    status: StatusCode,
    from: Uri,
    to: Uri,
    method: Method,
}

impl Hop {
    /// A hop from `from` to `to` after a `status`, sending `method` to `to`. The machine
    /// records its own; this is for tests and for the driver's records.
    pub fn new(status: StatusCode, from: Uri, to: Uri, method: Method) -> Self {
        Self {
            status,
            from,
            to,
            method,
        }
    }

    /// The redirect's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The URL that answered with the redirect.
    pub fn from(&self) -> &Uri {
        &self.from
    }

    /// The URL the redirect led to.
    pub fn to(&self) -> &Uri {
        &self.to
    }

    /// The method of the request sent to [`to`](Self::to).
    pub fn method(&self) -> &Method {
        &self.method
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.status.as_u16(),
            redact::url(&self.from),
            redact::url(&self.to)
        )
    }
}

impl fmt::Debug for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hop")
            .field("status", &self.status)
            .field("from", &redact::url(&self.from))
            .field("to", &redact::url(&self.to))
            .field("method", &self.method)
            .finish()
    }
}

impl fmt::Debug for RedirectAttempt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedirectAttempt")
            .field("status", &self.status)
            .field("from", &redact::url(self.from))
            .field("to", &redact::url(self.to))
            .field("method", self.method)
            .field("previous", &self.previous)
            .finish()
    }
}

/// Why a redirect fails the call.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedirectRefusal {
    /// The call already followed the most redirects the policy allows.
    TooManyHops {
        /// The policy's maximum.
        max: usize,
    },
    /// The next URL, with the same method, was already requested in this call.
    Loop,
    /// The redirect leads from `https` to `http`, and the policy doesn't allow it.
    InsecureDowngrade,
    /// A 307 or 308 (or a 301, 302 or 303 that keeps the method) must send the body again, and
    /// it is a stream that can't be replayed.
    BodyNotReplayable,
    /// The `Location` isn't UTF-8, doesn't parse, or isn't an `http` or `https` URL with a
    /// host.
    InvalidLocation,
    /// The policy's [predicate](RedirectPolicy::custom) answered [`RedirectDecision::Refuse`].
    Refused,
}

impl fmt::Display for RedirectRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyHops { max: 1 } => f.write_str("more than 1 redirect"),
            Self::TooManyHops { max } => write!(f, "more than {max} redirects"),
            Self::Loop => f.write_str("redirect loop"),
            Self::InsecureDowngrade => f.write_str("redirect from https to http refused"),
            Self::BodyNotReplayable => {
                f.write_str("redirect needs the request body again, which can't be replayed")
            }
            Self::InvalidLocation => f.write_str("invalid redirect location"),
            Self::Refused => f.write_str("redirect refused by the policy"),
        }
    }
}

impl StdError for RedirectRefusal {}

/// What can be done with a request's body: whether a redirect that keeps the method can send
/// it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyState {
    /// No body.
    Empty,
    /// A body that can be sent again: bytes in memory, or a stream with a factory.
    Replayable,
    /// A stream that can be read only once.
    OneShot,
}

/// What [`Redirects::on_response`] needs to know about the request that got the response.
///
/// Its `Debug` shows the URL through [`redact::url`].
#[derive(Clone, Copy)]
pub struct RedirectRequest<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its absolute URL.
    pub url: &'a Uri,
    /// Its body.
    pub body: BodyState,
}

impl<'a> RedirectRequest<'a> {
    /// The facts of a request to `url` with `method` and a `body`.
    pub fn new(method: &'a Method, url: &'a Uri, body: BodyState) -> Self {
        Self { method, url, body }
    }
}

impl fmt::Debug for RedirectRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedirectRequest")
            .field("method", self.method)
            .field("url", &redact::url(self.url))
            .field("body", &self.body)
            .finish()
    }
}

/// What the driver must do with a response; see the [module documentation](self).
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedirectAction {
    /// Not a redirect to follow: hand the response to the caller.
    Deliver,
    /// Send the next request, as [`Follow`] says; the machine recorded the hop.
    Follow(Follow),
    /// Fail the call; [`Redirects::hops`] lists the hops followed before.
    Refuse(RedirectRefusal),
}

/// The next request of a followed redirect.
///
/// Its `Debug` shows the URL through [`redact::url`].
#[derive(Clone, PartialEq, Eq)]
pub struct Follow {
    /// Where to send it: absolute, `http` or `https`, without a fragment.
    pub url: Uri,
    /// Its method.
    pub method: Method,
    /// Whether to send the same body again: `true` exactly when the method is unchanged.
    /// Otherwise the request has no body, and [`rewrite_headers`] removes the body's headers.
    pub keep_body: bool,
    /// Whether this hop, or an earlier one of the call, left the origin of the call's first
    /// request: [`rewrite_headers`] removes the credentials then.
    pub cross_origin: bool,
    /// The redirect's status.
    pub status: StatusCode,
}

impl fmt::Debug for Follow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follow")
            .field("url", &redact::url(&self.url))
            .field("method", &self.method)
            .field("keep_body", &self.keep_body)
            .field("cross_origin", &self.cross_origin)
            .field("status", &self.status)
            .finish()
    }
}

/// One call's redirect machine: feed it each response, act on what it answers.
///
/// See the [module documentation](self) for the rules, and for what the driver does with
/// each [`RedirectAction`].
#[derive(Clone, Debug)]
pub struct Redirects {
    policy: RedirectPolicy,
    hops: Vec<Hop>,
    /// The method of the call's first request, once a hop has been followed (its URL is the
    /// first hop's `from`).
    first_method: Option<Method>,
    /// Whether a followed hop left the first request's origin.
    crossed: bool,
}

impl Redirects {
    /// A machine for one call under `policy`. Allocates nothing until the first hop.
    pub fn new(policy: &RedirectPolicy) -> Self {
        Self {
            policy: policy.clone(),
            hops: Vec::new(),
            first_method: None,
            crossed: false,
        }
    }

    /// Decides what to do with the response to `request`, from its `status` and `headers`.
    ///
    /// The checks run in the order of the table in the [module documentation](self). On
    /// `Follow`, the hop is recorded and the next call must describe the request sent to
    /// [`Follow::url`]. Never panics, whatever the server sent.
    pub fn on_response(
        &mut self,
        request: &RedirectRequest<'_>,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> RedirectAction {
        // 1, 2: not a redirect, or not one to follow.
        if !is_redirect(status) {
            return RedirectAction::Deliver;
        }
        let Some(location) = headers.get(LOCATION) else {
            return RedirectAction::Deliver;
        };
        if !self.policy.follows() {
            return RedirectAction::Deliver;
        }

        // 3: where to.
        let Some(to) = resolve(request.url, location.as_bytes()) else {
            return RedirectAction::Refuse(RedirectRefusal::InvalidLocation);
        };

        // 4: how many hops.
        let max = self.policy.max();
        if self.hops.len() >= max {
            return RedirectAction::Refuse(RedirectRefusal::TooManyHops { max });
        }

        // 5: the next method.
        let method = next_method(status, request.method);
        let keep_body = method == *request.method;

        // 6: loops.
        if self.visited(request, &method, &to) {
            return RedirectAction::Refuse(RedirectRefusal::Loop);
        }

        // 7: https -> http.
        if is_scheme(request.url, "https")
            && is_scheme(&to, "http")
            && !self.policy.allows_https_downgrade()
        {
            return RedirectAction::Refuse(RedirectRefusal::InsecureDowngrade);
        }

        // 8: the user's predicate.
        if let Some(predicate) = &self.policy.inner.predicate {
            let attempt = RedirectAttempt {
                status,
                from: request.url,
                to: &to,
                method: &method,
                previous: &self.hops,
            };
            match predicate(&attempt) {
                RedirectDecision::Follow => {}
                RedirectDecision::Stop => return RedirectAction::Deliver,
                RedirectDecision::Refuse => {
                    return RedirectAction::Refuse(RedirectRefusal::Refused)
                }
            }
        }

        // 9: the body.
        if keep_body && request.body == BodyState::OneShot {
            return RedirectAction::Refuse(RedirectRefusal::BodyNotReplayable);
        }

        // 10: follow.
        if self.hops.is_empty() {
            self.first_method = Some(request.method.clone());
        }
        self.crossed = self.crossed || !same_origin(request.url, &to);
        self.hops.push(Hop {
            status,
            from: request.url.clone(),
            to: to.clone(),
            method: method.clone(),
        });
        RedirectAction::Follow(Follow {
            url: to,
            method,
            keep_body,
            cross_origin: self.crossed,
            status,
        })
    }

    /// The hops followed so far, oldest first. After a `Refuse`, the hops followed before it.
    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    /// Takes the hops followed so far, oldest first, for the call's record.
    ///
    /// The machine forgets them, and with them what it knew of loops and origins: take them
    /// once the call is over.
    pub fn take_hops(&mut self) -> Vec<Hop> {
        self.first_method = None;
        self.crossed = false;
        std::mem::take(&mut self.hops)
    }

    /// The policy the machine applies.
    pub fn policy(&self) -> &RedirectPolicy {
        &self.policy
    }

    /// Whether `method` `to` was already requested in this call: the first request, or the
    /// target of a hop (the current request is one of those).
    fn visited(&self, request: &RedirectRequest<'_>, method: &Method, to: &Uri) -> bool {
        let Some(first) = self.hops.first() else {
            return method == request.method && same_resource(request.url, to);
        };
        let first_method = self.first_method.as_ref().unwrap_or(request.method);
        (method == first_method && same_resource(&first.from, to))
            || self
                .hops
                .iter()
                .any(|hop| hop.method == *method && same_resource(&hop.to, to))
    }
}

/// Edits the headers of the request to send to `follow.url`.
///
/// When the body isn't sent again (`!follow.keep_body`), removes the headers that describe it:
/// `Content-Type`, `Content-Length`, `Content-Encoding`, `Content-Language`,
/// `Content-Location` and `Transfer-Encoding`. When the hop is
/// [cross-origin](Follow::cross_origin), removes every header in `sensitive`. Everything else
/// is kept.
///
/// ```
/// use http::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH};
/// use http::{Method, StatusCode};
/// use keel_core::machine::credentials::SensitiveHeaders;
/// use keel_core::machine::redirect::{rewrite_headers, Follow};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(ACCEPT, "application/json".parse().unwrap());
/// headers.insert(AUTHORIZATION, "Bearer t".parse().unwrap());
/// headers.insert(CONTENT_LENGTH, "12".parse().unwrap());
/// let follow = Follow {
///     url: "https://other.example/".parse().unwrap(),
///     method: Method::GET,
///     keep_body: false,
///     cross_origin: true,
///     status: StatusCode::SEE_OTHER,
/// };
/// rewrite_headers(&mut headers, &follow, &SensitiveHeaders::default());
/// assert_eq!(headers.len(), 1);
/// assert!(headers.contains_key(ACCEPT));
/// ```
pub fn rewrite_headers(headers: &mut HeaderMap, follow: &Follow, sensitive: &SensitiveHeaders) {
    if !follow.keep_body {
        for name in &BODY_HEADERS {
            headers.remove(name);
        }
    }
    if follow.cross_origin {
        sensitive.remove_from(headers);
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The method of the request that follows a `status` redirect of a `method` request.
fn next_method(status: StatusCode, method: &Method) -> Method {
    match status.as_u16() {
        303 if *method != Method::HEAD => Method::GET,
        301 | 302 if *method == Method::POST => Method::GET,
        _ => method.clone(),
    }
}

/// Resolves a `Location` against the URL of the request that got it; `None` unless the result
/// is an `http` or `https` URL with a host that `http::Uri` accepts.
fn resolve(base: &Uri, location: &[u8]) -> Option<Uri> {
    resolve_reference(base, std::str::from_utf8(location).ok()?)
}

/// Resolves a URI reference (a `Location`, a `Link` target, a next URL in a page) against
/// `base`; `None` unless the result is an `http` or `https` URL with a host that `http::Uri`
/// accepts. The fragment and any user info go.
pub(crate) fn resolve_reference(base: &Uri, reference: &str) -> Option<Uri> {
    let mut url = match url::Url::parse(&base.to_string()) {
        Ok(base) => base.join(reference),
        Err(_) => url::Url::parse(reference),
    }
    .ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return None;
    }
    url.set_fragment(None);
    // Both only fail for URLs without a host, checked above.
    url.set_username("").ok()?;
    url.set_password(None).ok()?;
    url.as_str().parse::<Uri>().ok()
}

fn is_scheme(uri: &Uri, scheme: &str) -> bool {
    uri.scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
}

/// Whether `a` and `b` name the same resource: the same origin, path and query.
fn same_resource(a: &Uri, b: &Uri) -> bool {
    a.path() == b.path() && a.query() == b.query() && same_origin(a, b)
}

#[cfg(test)]
mod tests;
