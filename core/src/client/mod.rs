//! The async driver: [`Client`], its builder, requests and responses.
//!
//! Runtime-agnostic code over [`Transport`] and [`Timer`]. It never spawns a task and reads the
//! clock only through the transport's timer.
//!
//! # Cancel safety
//!
//! Cancelling is dropping. Dropping the future returned by
//! [`RequestBuilder::send`] at any `await` point drops the transport's attempt, which closes the
//! connection if the request was half-written or the response half-read; dropping a
//! [`Response`] or a [`BodyStream`] before the end of the body does the same. A connection goes
//! back to the pool only after a complete exchange, so the next request never reads the tail of
//! someone else's response.

mod cookies;
mod download;
pub mod hooks;
mod layers;
mod observe;
mod paginate;
mod pending;
pub mod pipeline;
mod request;
mod response;
mod state;
mod streams;
pub(crate) mod url;

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, USER_AGENT};
use http::Uri;
use http::{HeaderMap, Method};

pub use download::{Checksum, Download, DownloadReport, Progress};
pub use paginate::{ListingPage, Pages, Paginate};
use pending::Call;
pub use pending::Pending;
pub use request::{Request, RequestBuilder};
#[cfg(feature = "blocking")]
pub(crate) use response::{decode_json, text_encoding};
pub use response::{BodyStream, Response};
pub use streams::{EndReason, EventSource, Lines, Ndjson};

use self::pipeline::{Policy, PolicyFactory};
use self::state::{Store, StoreConfig};
use crate::body::{Body, ResponseBody};
use crate::cookie::{CookieStore, Jar};
use crate::dns::{DnsCacheConfig, Resolve, SharedResolver};
use crate::error::{BoxError, Error, ErrorKind};
use crate::identity::{Identity, TlsVersion};
use crate::machine::breaker::{BreakerPolicy, BreakerState, Transition};
use crate::machine::credentials::{same_origin, SensitiveHeaders};
use crate::machine::decode::{Coding, DecodeLimits};
use crate::machine::hedge::HedgePolicy;
use crate::machine::paginate::{Checkpoint, Paginator, Strategy};
use crate::machine::rate::RateLimit;
use crate::machine::redirect::{Hop, RedirectPolicy};
use crate::machine::retry::{Pacing, RetryBudget, RetryPolicy, RetryReason};
use crate::proxy::{NoProxy, Proxy, ProxyConfig};
use crate::redact;
use crate::store::{LocalStore, StateCell, StateStore};
use crate::transport::{
    Backend, BoxFuture, BoxTransport, Certificate, Origin, Timer, Transport, TransportConfig,
};

/// The default for [`ClientBuilder::max_body_size`]: 16 MiB.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 16 * 1024 * 1024;

/// The time limits applied to every request; all are finite by default.
///
/// | limit | default | covers |
/// |---|---|---|
/// | `connect` | 10 s | DNS, TCP and TLS for a new connection (enforced by the backend) |
/// | `attempt` | 30 s | from sending until the response head arrives |
/// | `deadline` | 5 min | the whole call: every attempt and reading the body |
/// | `read_idle` | 30 s | the longest gap between two body chunks |
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Time to establish a connection.
    pub connect: Duration,
    /// Time from sending a request until its response head.
    pub attempt: Duration,
    /// Time for the whole call, body included.
    pub deadline: Duration,
    /// Longest silence between body chunks.
    pub read_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            attempt: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
            read_idle: Duration::from_secs(30),
        }
    }
}

/// An HTTP client: a connection pool on one backend, with its settings.
///
/// Cheap to clone: clones share the pool and the settings. Create one per API and keep it.
///
/// `T` is the backend's [`Transport`]; the `keel` facade names the default one `keel::Client`.
/// For a backend chosen at run time use `Client<BoxTransport>` (see
/// [`ClientBuilder::build_boxed`]).
pub struct Client<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    transport: T,
    config: ClientConfig,
    /// What the policies share across calls (retry budgets), per origin.
    store: Store,
    /// When the client was built: a placeholder instant for calls not started yet.
    epoch: Instant,
    /// Seeds for the calls' jitter: `seed_base` mixed with a call counter.
    seed_base: u64,
    calls: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct ClientConfig {
    base_url: Option<url::BaseUrl>,
    /// Default headers sent to every origin.
    headers: HeaderMap,
    /// Default credentials (sensitive headers), sent only to the base URL's origin.
    scoped_headers: Option<(Uri, HeaderMap)>,
    pub(crate) sensitive: SensitiveHeaders,
    timeouts: Timeouts,
    max_body_size: u64,
    /// Responses are decoded out of their `Content-Encoding` (unless a request says not).
    pub(crate) decompress: bool,
    pub(crate) decode_limits: DecodeLimits,
    /// `Accept-Encoding` listing the codings compiled in; `None` when there are none.
    pub(crate) accept_encoding: Option<HeaderValue>,
    /// The default headers hold the `Accept-Encoding` keel added (not one the caller set).
    pub(crate) default_accept_encoding: bool,
    retry: RetryPolicy,
    redirect: RedirectPolicy,
    budget: Option<RetryBudget>,
    seed: Option<u64>,
    /// Attempts carry W3C trace context from their span (feature `opentelemetry`).
    #[cfg(feature = "opentelemetry")]
    pub(crate) propagate: bool,
    pub(crate) hooks: hooks::Hooks,
    pub(crate) breaker: Option<BreakerPolicy>,
    /// Where breakers, limiters and holds keep their state (`None`: in the process).
    state_store: Option<Arc<dyn StateStore>>,
    rate_limit: Option<RateLimit>,
    pub(crate) rate_limit_per_origin: Option<RateLimit>,
    pub(crate) server_quotas: bool,
    max_in_flight: Option<usize>,
    max_in_flight_per_origin: Option<usize>,
    pub(crate) hedge: Option<HedgePolicy>,
    policies: Vec<PolicyFactory>,
    /// Where cookies are kept (`None`: cookies are off).
    pub(crate) cookies: Option<Arc<dyn CookieStore>>,
    /// The backend reads [`CallDeadline`](crate::CallDeadline) (inserting it costs an
    /// allocation per request, so only then).
    call_deadline: bool,
    /// The default headers hold a framing header (`Content-Length`, `Transfer-Encoding`).
    defaults_frame: bool,
    /// The core sets `Host` (the backend's library doesn't derive it by itself).
    set_host: bool,
}

/// What [`ClientBuilder::on_retry`] hooks receive before the driver sleeps for a retry.
///
/// Its `Debug` shows the URL through [`redact::url`].
#[non_exhaustive]
#[derive(Clone)]
pub struct RetryEvent {
    /// The number of the attempt about to be made (2 for the first retry).
    pub attempt: u32,
    /// Why the previous attempt is retried.
    pub reason: RetryReason,
    /// How long the driver waits before sending again.
    pub delay: Duration,
    /// Where the delay comes from: the backoff or the server's `Retry-After`.
    pub pacing: Pacing,
    /// The request's method.
    pub method: Method,
    /// The request's URL.
    pub url: Uri,
}

/// What [`ClientBuilder::on_breaker`] hooks receive when a breaker changes state.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct BreakerEvent {
    /// The origin of the request that changed it (for a partition's breaker, the one that
    /// changed it last).
    pub origin: Origin,
    /// The partition whose breaker changed, or `None` for the origin's own breaker (see
    /// [`RequestBuilder::partition`]).
    pub partition: Option<Arc<str>>,
    /// From which state to which.
    pub transition: Transition,
}

/// What an operator can do to an origin's breaker; see [`Client::control_breaker`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerControl {
    /// Refuse every call until reset.
    ForceOpen,
    /// Let every call through and never trip, until reset.
    Disable,
    /// Back to closed, counters cleared.
    Reset,
}

/// What [`ClientBuilder::on_redirect`] hooks receive before a redirect is followed.
///
/// Its `Debug` shows the hop's URLs through [`redact::url`].
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct RedirectEvent {
    /// The hop: the status, where from, where to, and the method of the next request.
    pub hop: Hop,
}

impl fmt::Debug for RetryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryEvent")
            .field("attempt", &self.attempt)
            .field("reason", &self.reason)
            .field("delay", &self.delay)
            .field("pacing", &self.pacing)
            .field("method", &self.method)
            .field("url", &redact::url(&self.url))
            .finish()
    }
}

impl ClientConfig {
    /// The client's default credentials for a request to `url`, in a call that followed
    /// `hops`: they go to the base URL's origin only, and not at all once a redirect has left
    /// it (another origin doesn't get to pick which URL of ours receives them).
    pub(crate) fn scoped_headers_for(&self, url: &Uri, hops: &[Hop]) -> Option<&HeaderMap> {
        let (base, scoped) = self.scoped_headers.as_ref()?;
        let left = hops.iter().any(|hop| !same_origin(base, hop.to()));
        (!left && same_origin(base, url)).then_some(scoped)
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field(
                "base_url",
                &self.base_url.as_ref().map(|b| redact::url(b.as_uri())),
            )
            .field(
                "headers",
                &redact::headers_with(&self.headers, &self.sensitive),
            )
            .field(
                "scoped_headers",
                &self
                    .scoped_headers
                    .as_ref()
                    .map(|(_, h)| redact::headers_with(h, &self.sensitive)),
            )
            .field("sensitive", &self.sensitive)
            .field("timeouts", &self.timeouts)
            .field("max_body_size", &self.max_body_size)
            .field("decompress", &self.decompress)
            .field("decode_limits", &self.decode_limits)
            .field("retry", &self.retry)
            .field("redirect", &self.redirect)
            .field("budget", &self.budget)
            .field("hooks", &self.hooks)
            .field("breaker", &self.breaker)
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_per_origin", &self.rate_limit_per_origin)
            .field("server_quotas", &self.server_quotas)
            .field("cookies", &self.cookies.is_some())
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_per_origin", &self.max_in_flight_per_origin)
            .field("hedge", &self.hedge)
            .field("policies", &self.policies.len())
            .finish()
    }
}

/// What a call in flight needs from its client, with the backend type erased, so that
/// [`Pending`] and [`Response`] are not generic.
pub(crate) trait Dispatch: Send + Sync + 'static {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>>;
    fn timer(&self) -> &Arc<dyn Timer>;
    fn config(&self) -> &ClientConfig;
    /// The shared state of every origin.
    fn store(&self) -> &Store;
    /// A different jitter seed for every call.
    fn next_seed(&self) -> u64;
}

impl<T: Transport> Dispatch for Shared<T> {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        self.transport.send(request)
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        self.transport.timer()
    }

    fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn next_seed(&self) -> u64 {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        self.seed_base ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl<T> Shared<T> {
    fn new(transport: T, config: ClientConfig) -> Self {
        let seed_base = config.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher as _, Hasher as _};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        });
        let store = Store::new(
            config.base_url.as_ref().map(url::BaseUrl::as_uri),
            StoreConfig {
                cells: config
                    .state_store
                    .clone()
                    .unwrap_or_else(|| Arc::new(LocalStore)),
                budget: config.budget.clone(),
                rate_limit: config.rate_limit,
                max_in_flight: config.max_in_flight,
                max_in_flight_per_origin: config.max_in_flight_per_origin,
                defaults: state::DefaultHeaders {
                    headers: config.headers.clone(),
                    set_host: config.set_host,
                },
            },
        );
        Self {
            transport,
            store,
            epoch: Instant::now(),
            config,
            seed_base,
            calls: AtomicU64::new(0),
        }
    }
}

impl<T: Backend> Client<T> {
    /// A client with the default settings.
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// Starts configuring a client on backend `T`.
    pub fn builder() -> ClientBuilder<T> {
        ClientBuilder::new()
    }
}

impl<T: Transport> Client<T> {
    /// Starts a request with `method` to `url`.
    ///
    /// `url` is either absolute (`https://…`) or a path joined to the base URL. A path is always
    /// appended to the base URL's path, whether or not either has a slash at the join:
    /// with base `https://api.example.com/v1`, both `users` and `/users` give
    /// `https://api.example.com/v1/users`.
    ///
    /// # Credentials in the URL
    ///
    /// User info in an absolute URL (`https://user:pass@api.example.com/…`, percent-encoded
    /// as URLs have it) is taken out of the URL and sent as `Authorization: Basic` (as reqwest
    /// and httpx do), marked sensitive, unless the request sets its own `Authorization`. The
    /// URL the backend sees, the `Host` header, [`RequestBuilder::url`], the response's URL,
    /// logs and errors never hold it, and like any credential it is not sent across a redirect
    /// to another origin.
    ///
    /// ```
    /// # fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) {
    /// let request = client.get("https://alice:s3cret@api.example.com/v1/me").build().unwrap();
    /// assert_eq!(request.url(), "https://api.example.com/v1/me");
    /// // "Basic " + base64("alice:s3cret")
    /// assert_eq!(request.headers()["authorization"], "Basic YWxpY2U6czNjcmV0");
    /// assert!(!format!("{request:?}").contains("s3cret"));
    /// # }
    /// ```
    #[inline]
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder<T> {
        let url = url::join_taking_credentials(self.shared.config.base_url.as_ref(), url);
        RequestBuilder::new(self.clone(), method, url)
    }

    /// Sends `request`; the returned future resolves to the response once its head arrives.
    ///
    /// A URL without a scheme is a path joined to the base URL, as for
    /// [`request`](Self::request). Nothing starts until the future is first polled.
    ///
    /// ```
    /// # async fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) -> Result<(), keel_core::Error> {
    /// let request = client.get("/reports/latest").header("accept", "text/csv").build()?;
    /// // Keep a copy to send again later (a buffered body is shared, not copied).
    /// let again = request.try_clone().expect("no one-shot body");
    /// let first = client.execute(request).await?;
    /// let second = client.execute(again).await?;
    /// # let _ = (first, second); Ok(()) }
    /// ```
    pub fn execute(&self, request: Request) -> Pending {
        self.execute_checked(request, false)
    }

    /// [`execute`](Self::execute), skipping the URL checks for a URL this client joined (and
    /// so checked) itself.
    #[inline]
    pub(crate) fn execute_checked(&self, request: Request, url_checked: bool) -> Pending {
        self.send_call(self.unstarted(request), url_checked)
    }

    /// A call of `request` on this client, not started.
    #[inline]
    pub(crate) fn unstarted(&self, request: Request) -> Box<Call> {
        let shared: Arc<dyn Dispatch> = self.shared.clone();
        Call::unstarted(shared, request, self.shared.epoch)
    }

    /// Sends `call`, built by [`unstarted`](Self::unstarted): the request is checked where it
    /// is, and the call handed to the driver without being copied.
    #[inline]
    pub(crate) fn send_call(&self, mut call: Box<Call>, url_checked: bool) -> Pending {
        match self.prepare_in_place(&mut call.request, url_checked) {
            Ok(()) => Pending::from_call(call),
            Err(err) => Pending::failed(err),
        }
    }

    /// Reads server-sent events from `request`, sending it again when the connection drops
    /// (with `Last-Event-ID`); see [`EventSource`]. `GET` or `POST` (the streaming APIs of
    /// language models take a JSON body): anything [`execute`](Self::execute) takes.
    ///
    /// ```
    /// # async fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) -> Result<(), keel_core::Error> {
    /// use futures_util::StreamExt as _;
    ///
    /// let mut events = client.get("/v1/updates").event_source();
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{} {}: {}", event.event, event.id.as_deref().unwrap_or("-"), event.data);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn event_source(&self, request: Request) -> EventSource {
        let shared: Arc<dyn Dispatch> = self.shared.clone();
        match self.prepare(request, false) {
            Ok(request) => EventSource::new(shared, self.shared.epoch, request),
            Err(err) => EventSource::failed(shared, self.shared.epoch, err),
        }
    }

    /// Downloads the body of `request`, resuming with `Range` + `If-Range` after a mid-body
    /// failure; see [`Download`]. Nothing is sent until a terminal method
    /// ([`to_file`](Download::to_file), [`to_vec`](Download::to_vec),
    /// [`to_writer`](Download::to_writer)) is awaited.
    ///
    /// ```
    /// # async fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) -> Result<(), keel_core::Error> {
    /// let request = client.get("/exports/2024.csv").build()?;
    /// let body: Vec<u8> = client.download(request).max_resumes(20).to_vec().await?;
    /// # let _ = body; Ok(()) }
    /// ```
    pub fn download(&self, request: Request) -> Download {
        let shared: Arc<dyn Dispatch> = self.shared.clone();
        Download::new(shared, self.shared.epoch, self.prepare(request, false))
    }

    /// A download that only reports `err`.
    pub(crate) fn download_failed(&self, err: Error) -> Download {
        Download::new(self.shared.clone(), self.shared.epoch, Err(err))
    }

    /// The items of a paginated listing, fetched page by page as the stream is read; see
    /// [`Paginate`] and [`machine::paginate`](crate::machine::paginate) for the strategies.
    ///
    /// ```
    /// # async fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) -> Result<(), keel_core::Error> {
    /// use futures_util::StreamExt as _;
    /// use keel_core::machine::paginate::Strategy;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Issue { number: u64 }
    ///
    /// // GitHub style: the next page is the `Link: <...>; rel="next"` of each page.
    /// let request = client.get("/repos/o/r/issues?per_page=100").build()?;
    /// let mut issues = client.paginate::<Issue>(request, Strategy::link_header());
    /// while let Some(issue) = issues.next().await {
    ///     println!("#{}", issue?.number);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn paginate<I: serde::de::DeserializeOwned>(
        &self,
        request: Request,
        strategy: Strategy,
    ) -> Paginate<I> {
        let shared: Arc<dyn Dispatch> = self.shared.clone();
        match self.prepare(request, false) {
            Ok(request) => {
                let first = strategy.first_url(&request.url);
                let pager = Ok(Paginator::new(strategy, first));
                Paginate::new(shared, self.shared.epoch, request, pager)
            }
            Err(err) => Paginate::failed(shared, self.shared.epoch, err),
        }
    }

    /// Resumes a listing where a [`Checkpoint`] (from [`Paginate::checkpoint`], stored by an
    /// earlier stream, maybe in another process) says it stopped: the page it was in, less
    /// the items already taken. `request` gives the method, headers and settings (its URL is
    /// replaced by the checkpoint's); `strategy` must be the one the listing started with.
    pub fn resume_paginate<I: serde::de::DeserializeOwned>(
        &self,
        request: Request,
        strategy: Strategy,
        checkpoint: &Checkpoint,
    ) -> Paginate<I> {
        let shared: Arc<dyn Dispatch> = self.shared.clone();
        match self.prepare(request, false) {
            Ok(request) => {
                let pager = Paginator::resume(strategy, checkpoint).map_err(|err| {
                    Error::new(ErrorKind::InvalidRequest)
                        .with_url(request.url.clone())
                        .with_source(err)
                });
                Paginate::new(shared, self.shared.epoch, request, pager)
            }
            Err(err) => Paginate::failed(shared, self.shared.epoch, err),
        }
    }

    /// An event source that only reports `err`.
    pub(crate) fn event_source_failed(&self, err: Error) -> EventSource {
        EventSource::failed(self.shared.clone(), self.shared.epoch, err)
    }

    /// Joins a relative URL to the base URL (or takes the credentials out of an absolute one:
    /// see [`request`](Self::request)) and checks the request's settings.
    #[inline]
    fn prepare(&self, mut request: Request, url_checked: bool) -> Result<Request, Error> {
        self.prepare_in_place(&mut request, url_checked)?;
        Ok(request)
    }

    /// [`prepare`](Self::prepare) on a request where it is.
    #[inline]
    fn prepare_in_place(&self, request: &mut Request, url_checked: bool) -> Result<(), Error> {
        if url_checked {
            // Joined by `request()`: absolute, http or https, with a host.
        } else if request.url.scheme().is_none() {
            let target = request
                .url
                .path_and_query()
                .map_or("", |p| p.as_str())
                .to_owned();
            request.url = url::join(self.shared.config.base_url.as_ref(), &target)?;
        } else {
            url::check(&request.url)?;
            if url::has_userinfo(&request.url) {
                let (stripped, credentials) =
                    url::take_credentials(std::mem::take(&mut request.url))?;
                request.url = stripped;
                if let Some(value) = credentials {
                    request.headers.entry(AUTHORIZATION).or_insert(value);
                }
            }
        }
        if request.timeouts.any_zero() {
            return Err(request_error("a time limit must be greater than zero")
                .with_url(std::mem::take(&mut request.url)));
        }
        Ok(())
    }

    /// Starts a `GET` request; `url` as [`request`](Self::request) takes it (credentials in
    /// it become `Authorization: Basic`, never part of the URL sent).
    #[inline]
    pub fn get(&self, url: &str) -> RequestBuilder<T> {
        self.request(Method::GET, url)
    }

    /// Starts a `POST` request.
    pub fn post(&self, url: &str) -> RequestBuilder<T> {
        self.request(Method::POST, url)
    }

    /// Starts a `PUT` request.
    pub fn put(&self, url: &str) -> RequestBuilder<T> {
        self.request(Method::PUT, url)
    }

    /// Starts a `PATCH` request.
    pub fn patch(&self, url: &str) -> RequestBuilder<T> {
        self.request(Method::PATCH, url)
    }

    /// Starts a `DELETE` request.
    pub fn delete(&self, url: &str) -> RequestBuilder<T> {
        self.request(Method::DELETE, url)
    }

    /// Starts a `HEAD` request.
    pub fn head(&self, url: &str) -> RequestBuilder<T> {
        self.request(Method::HEAD, url)
    }

    /// The base URL relative paths are joined to.
    pub fn base_url(&self) -> Option<&Uri> {
        self.shared
            .config
            .base_url
            .as_ref()
            .map(url::BaseUrl::as_uri)
    }

    /// The state of the circuit breaker of `url`'s origin (`url` as [`request`](Self::request)
    /// takes it), or `None` when the client has no breaker or no call went there yet.
    pub fn breaker_state(&self, url: &str) -> Option<BreakerState> {
        let url = url::join(self.shared.config.base_url.as_ref(), url).ok()?;
        let origin = self.shared.store.find(&url);
        self.shared.store.resolve(&origin).cell.breaker_state()
    }

    /// Forces open, disables or resets the circuit breaker of `url`'s origin; the state change
    /// reaches the hooks. Returns false when the client has no breaker or `url` is invalid.
    pub fn control_breaker(&self, url: &str, control: BreakerControl) -> bool {
        let Ok(url) = url::join(self.shared.config.base_url.as_ref(), url) else {
            return false;
        };
        let origin = self.shared.store.find(&url);
        let cell = &self.shared.store.resolve(&origin).cell;
        self.control(&**cell, &url, None, control)
    }

    /// The state of the circuit breaker of the partition named `key` (see
    /// [`RequestBuilder::partition`]), or `None` when the client has no breaker or no call
    /// named the partition yet.
    pub fn partition_breaker_state(&self, key: &str) -> Option<BreakerState> {
        self.shared.store.find_partition(key)?.breaker_state()
    }

    /// Forces open, disables or resets the circuit breaker of the partition named `key`; the
    /// state change reaches the hooks. Returns false when the client has no breaker.
    pub fn control_partition_breaker(&self, key: &str, control: BreakerControl) -> bool {
        let url = self.base_url().cloned().unwrap_or_default();
        let partition = Arc::from(key);
        let cell = self.shared.store.partition(key);
        self.control(&*cell, &url, Some(&partition), control)
    }

    fn control(
        &self,
        cell: &dyn StateCell,
        url: &Uri,
        partition: Option<&Arc<str>>,
        control: BreakerControl,
    ) -> bool {
        let Some(policy) = &self.shared.config.breaker else {
            return false;
        };
        let transition = cell.control(policy, control);
        if let Some(transition) = transition {
            announce_breaker(&self.shared.config, url, partition, transition);
        }
        true
    }

    /// The time limits requests start with.
    pub fn timeouts(&self) -> Timeouts {
        self.shared.config.timeouts
    }

    /// The transport, for backend-specific inspection.
    pub fn transport(&self) -> &T {
        &self.shared.transport
    }

    /// The connections in the backend's pool, per origin (open, idle, in use), for metrics;
    /// `None` when the backend keeps no count
    /// ([`Capabilities::pool_stats`](crate::Capabilities::pool_stats)).
    ///
    /// ```
    /// # async fn run<T: keel_core::Backend>(client: keel_core::Client<T>) {
    /// for pool in client.pool_stats().unwrap_or_default() {
    ///     println!("{}: {} open, {:?} idle", pool.origin, pool.open, pool.idle);
    /// }
    /// # }
    /// ```
    pub fn pool_stats(&self) -> Option<Vec<crate::PoolStats>> {
        self.shared.transport.pool_stats()
    }
}

impl<T> Clone for Client<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.shared.transport)
            .field(
                "base_url",
                &self
                    .shared
                    .config
                    .base_url
                    .as_ref()
                    .map(|b| redact::url(b.as_uri())),
            )
            .field("timeouts", &self.shared.config.timeouts)
            .field("max_body_size", &self.shared.config.max_body_size)
            .finish()
    }
}

/// Configures and builds a [`Client`] on backend `T`.
///
/// Settings are checked when [`build`](ClientBuilder::build) is called: an invalid value, or one
/// the backend can't honour, fails the build with [`ErrorKind::Config`] naming the setting.
#[must_use]
pub struct ClientBuilder<T> {
    config: ClientConfig,
    transport: TransportConfig,
    error: Option<Error>,
    _backend: PhantomData<fn() -> T>,
}

impl<T: Backend> ClientBuilder<T> {
    fn new() -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("keel/", env!("CARGO_PKG_VERSION"))),
        );
        Self {
            config: ClientConfig {
                base_url: None,
                headers,
                scoped_headers: None,
                sensitive: SensitiveHeaders::default(),
                timeouts: Timeouts::default(),
                max_body_size: DEFAULT_MAX_BODY_SIZE,
                decompress: true,
                decode_limits: DecodeLimits::new(),
                accept_encoding: accept_encoding(),
                default_accept_encoding: false,
                retry: RetryPolicy::default(),
                redirect: RedirectPolicy::default(),
                budget: Some(RetryBudget::default()),
                seed: None,
                hooks: hooks::Hooks::default(),
                #[cfg(feature = "opentelemetry")]
                propagate: false,
                breaker: None,
                state_store: None,
                rate_limit: None,
                rate_limit_per_origin: None,
                server_quotas: false,
                max_in_flight: None,
                max_in_flight_per_origin: None,
                hedge: None,
                policies: Vec::new(),
                cookies: None,
                call_deadline: T::capabilities().uses_call_deadline,
                set_host: !T::capabilities().derives_host,
                defaults_frame: false,
            },
            transport: TransportConfig::default(),
            error: None,
            _backend: PhantomData,
        }
    }

    fn fail(mut self, err: Error) -> Self {
        self.error.get_or_insert(err);
        self
    }

    /// The URL that relative request paths are joined to. Must be `http` or `https`.
    ///
    /// User info in it (`https://user:pass@api.example.com`) is taken out of the URL and sent as
    /// `Authorization: Basic` to the base URL's origin only, as a credential set with
    /// [`basic_auth`](Self::basic_auth) is, unless the client sets its own `Authorization`
    /// default; it never shows in the URLs sent, logged or reported.
    pub fn base_url(mut self, url: &str) -> Self {
        match url::BaseUrl::parse(url) {
            Ok(base) => {
                self.config.base_url = Some(base);
                self
            }
            Err(e) => self.fail(config_error("base_url", e)),
        }
    }

    /// A header sent with every request unless the request sets the same name.
    ///
    /// A credential (`Authorization`, `Proxy-Authorization`, `Cookie`, or a name marked with
    /// [`sensitive_header`](Self::sensitive_header)) is sent only to the base URL's origin,
    /// never to an absolute URL elsewhere nor across a redirect, and never shows in `Debug`
    /// output; a client with such a default needs a [`base_url`](Self::base_url).
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// let builder = keel_core::Client::<T>::builder()
    ///     .base_url("https://api.example.com/v1")
    ///     .default_header("x-api-key", "k-123")
    ///     .sensitive_header("x-api-key")
    ///     .bearer_auth("t-456");
    /// // Neither value shows in Debug output:
    /// let text = format!("{builder:?}");
    /// assert!(!text.contains("k-123") && !text.contains("t-456"));
    /// // Both go to https://api.example.com only; a request to https://cdn.example.net does
    /// // not carry them.
    /// let client = builder.build()?;
    /// # Ok(()) }
    /// ```
    pub fn default_header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<BoxError>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<BoxError>,
    {
        let name = match HeaderName::try_from(name) {
            Ok(n) => n,
            Err(e) => return self.fail(config_error("default_header", e)),
        };
        match HeaderValue::try_from(value) {
            Ok(mut v) => {
                if self.config.sensitive.contains(&name) {
                    v.set_sensitive(true);
                }
                self.config.headers.append(name, v);
                self
            }
            Err(e) => self.fail(config_error("default_header", e)),
        }
    }

    /// Marks `name` as a credential, like `Authorization`: its values never show in `Debug`
    /// output, a redirect to another origin drops it, and as a default header it is sent to
    /// the base URL's origin only.
    pub fn sensitive_header<K>(mut self, name: K) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<BoxError>,
    {
        match HeaderName::try_from(name) {
            Ok(name) => {
                self.config.sensitive.insert(name);
                self.config.sensitive.mark(&mut self.config.headers);
                self
            }
            Err(e) => self.fail(config_error("sensitive_header", e)),
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request to the base URL's origin (and
    /// only there).
    pub fn bearer_auth(mut self, token: &str) -> Self {
        match bearer(token) {
            Ok(value) => {
                self.config.headers.insert(AUTHORIZATION, value);
                self
            }
            Err(e) => self.fail(config_error("bearer_auth", e)),
        }
    }

    /// Sends `Authorization: Basic <base64(user:password)>` with every request to the base
    /// URL's origin (and only there).
    pub fn basic_auth(mut self, user: &str, password: Option<&str>) -> Self {
        self.config
            .headers
            .insert(AUTHORIZATION, basic(user, password));
        self
    }

    /// The `User-Agent` header. Default `keel/<version>`.
    pub fn user_agent<V>(mut self, value: V) -> Self
    where
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<BoxError>,
    {
        match HeaderValue::try_from(value) {
            Ok(v) => {
                self.config.headers.insert(USER_AGENT, v);
                self
            }
            Err(e) => self.fail(config_error("user_agent", e)),
        }
    }

    /// All the time limits at once.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.config.timeouts = timeouts;
        self
    }

    /// Time to establish a connection (DNS, TCP and TLS). Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeouts.connect = timeout;
        self
    }

    /// Time from sending a request until its response head arrives. Default 30 s.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeouts.attempt = timeout;
        self
    }

    /// Time for a whole call, reading the body included. Default 5 minutes.
    pub fn deadline(mut self, timeout: Duration) -> Self {
        self.config.timeouts.deadline = timeout;
        self
    }

    /// Time for a whole call (every attempt, redirect and backoff, and reading the body), as
    /// reqwest's `timeout` means: the same as [`deadline`](Self::deadline). Default 5 minutes.
    ///
    /// To bound each attempt instead, see [`attempt_timeout`](Self::attempt_timeout): with
    /// the default retries, `attempt_timeout(1s)` alone can take about 3 s before it fails.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.deadline(timeout)
    }

    /// Longest silence allowed between two body chunks. Default 30 s.
    pub fn read_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeouts.read_idle = timeout;
        self
    }

    /// The largest body [`Response::bytes`], [`Response::text`] and [`Response::json`] will
    /// buffer, counted in decoded bytes for a body keel decodes. Default
    /// [`DEFAULT_MAX_BODY_SIZE`] (16 MiB). Streams are not limited (a decoded one is held to
    /// [`max_decoded_size`](Self::max_decoded_size)).
    pub fn max_body_size(mut self, bytes: u64) -> Self {
        self.config.max_body_size = bytes;
        self
    }

    /// Whether responses are decoded out of their `Content-Encoding`. Default true.
    ///
    /// When on, every request says `Accept-Encoding: gzip, deflate, br, zstd` (the codings
    /// compiled in: keel-core's cargo features `gzip`, `deflate`, `brotli` and `zstd`, on by
    /// default), unless it sets its own `Accept-Encoding` (or the client has it as a default
    /// header), and a response in codings keel knows is decoded as it is read, in bounded
    /// pieces: its `Content-Encoding` and `Content-Length` are removed from
    /// [`Response::headers`] (the length is the encoded body's, see
    /// [`Response::encoded_length`]). A response in a coding keel doesn't know (or in more
    /// than three stacked codings) is handed over as it came, headers and all. The body of a
    /// `HEAD`, `204` or `304` is not decoded (there is none), and its headers are left alone.
    /// A corrupt or truncated compressed body is an [`ErrorKind::Decode`] error.
    ///
    /// When off, no `Accept-Encoding` is sent and bodies are handed over as they came. A
    /// request can choose for itself with [`RequestBuilder::decompress`].
    ///
    /// Backends never decode: keel-core does it once, the same way on every backend.
    pub fn decompress(mut self, enabled: bool) -> Self {
        self.config.decompress = enabled;
        self
    }

    /// The most bytes a response body may decode to, in any way of reading it, or `None` for
    /// no limit. A stream hands out the body up to the limit, exactly, then fails with
    /// [`ErrorKind::DecodedTooLarge`]. Default
    /// [`DEFAULT_MAX_DECODED_SIZE`](crate::machine::decode::DEFAULT_MAX_DECODED_SIZE), 1 GiB.
    ///
    /// It is what bounds a streamed decoded body ([`Response::chunk`],
    /// [`Response::bytes_stream`]); [`Response::bytes`], [`Response::text`] and
    /// [`Response::json`] also hold the decoded body to [`max_body_size`](Self::max_body_size),
    /// with [`ErrorKind::BodyTooLarge`], like any other body.
    pub fn max_decoded_size(mut self, max: Option<u64>) -> Self {
        self.config.decode_limits = self.config.decode_limits.max_decoded_size(max);
        self
    }

    /// The most decoded bytes per encoded byte a response body may reach, or `None` for no
    /// limit; past it, reading fails with [`ErrorKind::DecompressionRatio`]. Default
    /// [`DEFAULT_MAX_RATIO`](crate::machine::decode::DEFAULT_MAX_RATIO), 100:1, checked once
    /// the body has decoded to more than
    /// [`RATIO_GRACE`](crate::machine::decode::RATIO_GRACE) (1 MiB).
    ///
    /// # Why a ratio
    ///
    /// A decompression bomb is a small body that decodes to a huge one: 1 MiB of gzip can
    /// hold 1 GiB of zeros, and brotli or zstd far more. A size limit alone stops it only
    /// once the damage is done (1 GiB decoded, or held in memory); the ratio stops it after
    /// a little over 1 MiB. Real answers stay well under 100:1 (JSON and text compress about
    /// 3 to 20 times); the bound is the one Apache POI puts on zip entries (a minimum inflate
    /// ratio of 1 %), and small answers, which can be more compressible still, are under the
    /// grace. Most HTTP clients (curl, Go's `net/http`, .NET's `HttpClient`, reqwest) have no
    /// such limit. A ratio of 0 is taken as 1.
    pub fn max_decompression_ratio(mut self, max: Option<u32>) -> Self {
        self.config.decode_limits = self.config.decode_limits.max_ratio(max);
        self
    }

    /// The retry policy for every request: which outcomes are retried, how often, with which
    /// backoff. Default [`RetryPolicy::default`]: up to 3 attempts of idempotent requests on
    /// connect failures, timeouts, 408, 429, 500, 502, 503 and 504, with full-jitter backoff
    /// from 100 ms and `Retry-After` honoured up to 60 s. [`RetryPolicy::disabled`] turns
    /// retries off.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// The budget that caps how much load retries may add, one per origin, shared by every
    /// call on the client to that origin
    /// (default [`RetryBudget::default`]: 20% on top of first attempts, at least 10 retries a
    /// second), or `None` for no cap beyond the policy's attempt limit.
    pub fn retry_budget(mut self, budget: Option<RetryBudget>) -> Self {
        self.config.budget = budget;
        self
    }

    /// Calls `hook` before every retry, with the attempt number, the reason and the delay.
    /// Each retry is also a `tracing` event at debug level.
    pub fn on_retry(self, hook: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_event(move |event| {
            if let hooks::Event::Retry(retry) = event {
                hook(retry)
            }
        })
    }

    /// How redirects are followed. Default [`RedirectPolicy::default`]: up to 10 hops of 301,
    /// 302, 303, 307 and 308, https → http refused, credentials dropped across origins;
    /// [`RedirectPolicy::none`] hands every 3xx to the caller.
    pub fn redirect_policy(mut self, policy: RedirectPolicy) -> Self {
        self.config.redirect = policy;
        self
    }

    /// Calls `hook` before every redirect is followed, with the hop. Each hop is also a
    /// `tracing` event at debug level (target `keel::redirect`).
    pub fn on_redirect(self, hook: impl Fn(&RedirectEvent) + Send + Sync + 'static) -> Self {
        self.on_event(move |event| {
            if let hooks::Event::Redirect(redirect) = event {
                hook(redirect)
            }
        })
    }

    /// A circuit breaker per origin, asked before every attempt (retries included): after the
    /// failures its policy counts, calls to that origin fail at once with
    /// [`ErrorKind::CircuitOpen`] (and are not retried) until the cool-down lets a probe
    /// through. Off by default.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use std::time::Duration;
    /// use keel_core::machine::breaker::BreakerPolicy;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .base_url("https://api.example.com")
    ///     .circuit_breaker(
    ///         BreakerPolicy::builder()
    ///             .consecutive_failures(5)
    ///             .open_for(Duration::from_secs(5), Duration::from_secs(60))
    ///             .build()?,
    ///     )
    ///     .on_breaker(|e| eprintln!("{}: {:?} -> {:?}", e.origin, e.transition.from, e.transition.to))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn circuit_breaker(mut self, policy: BreakerPolicy) -> Self {
        self.config.breaker = Some(policy);
        self
    }

    /// Where the circuit breakers, the rate limiters and the server's quota holds keep their
    /// state: in the process ([`LocalStore`], the default), or in a store a fleet of processes
    /// shares (`keel-redis`'s `RedisStore`: a quota, a trip or a hold one replica sees is seen
    /// by all). See [`store`](crate::store).
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use keel_core::store::LocalStore;
    ///
    /// let client = keel_core::Client::<T>::builder().state_store(LocalStore).build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn state_store(mut self, store: impl StateStore) -> Self {
        self.config.state_store = Some(Arc::new(store));
        self
    }

    /// Paces every attempt of every call on the client (retries included) to `limit`: an
    /// attempt that would go too early waits for its slot, and one whose slot would come after
    /// the call's deadline fails at once with [`ErrorKind::RateLimited`] instead of sleeping.
    /// Off by default.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use keel_core::machine::rate::RateLimit;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .base_url("https://api.example.com")
    ///     .rate_limit(RateLimit::per_second(50)?.burst(10)?) // the API's documented quota
    ///     .server_quotas(true) // and whatever its RateLimit headers say
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.config.rate_limit = Some(limit);
        self
    }

    /// Paces the attempts to each origin to `limit`, each origin on its own (and within the
    /// client-wide [`rate_limit`](Self::rate_limit), when there is one too).
    pub fn rate_limit_per_origin(mut self, limit: RateLimit) -> Self {
        self.config.rate_limit_per_origin = Some(limit);
        self
    }

    /// Listens to the quota a server announces: after a `429`/`503` with `Retry-After`, or a
    /// response whose `RateLimit` (IETF httpapi draft), `RateLimit-Remaining`/`-Reset` or
    /// `X-RateLimit-Remaining`/`-Reset` headers say the quota is spent, further attempts to that
    /// origin wait until the reset (with a little jitter) instead of meeting a `429`. A wait past
    /// the call's deadline fails at once with [`ErrorKind::RateLimited`]. Malformed headers are
    /// ignored. Off by default.
    pub fn server_quotas(mut self, listen: bool) -> Self {
        self.config.server_quotas = listen;
        self
    }

    /// Limits the requests in flight on the client to `max`: an attempt waits for one of the
    /// others to end before it goes, and a request counts until its response's body has been
    /// read to the end or dropped (not just until its head arrives). A wait that reaches the
    /// call's deadline fails with [`ErrorKind::RateLimited`]. Retries and hedges take a permit
    /// each; a call waiting to retry holds none. Off by default.
    ///
    /// This is the semaphore every async SDK hand-rolls, shared by every call on the client
    /// and on every runtime (it is [`async_lock`]'s, which needs no executor).
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// let client = keel_core::Client::<T>::builder()
    ///     .base_url("https://api.example.com")
    ///     .max_in_flight(100)           // what this process may have open at once
    ///     .max_in_flight_per_origin(10) // and what one server is asked to bear
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn max_in_flight(mut self, max: usize) -> Self {
        if max == 0 {
            return self.fail(config_error(
                "max_in_flight",
                "at least one request must be allowed in flight",
            ));
        }
        self.config.max_in_flight = Some(max);
        self
    }

    /// Limits the requests in flight to each origin to `max`, each origin on its own (and
    /// within [`max_in_flight`](Self::max_in_flight), when there is one too).
    pub fn max_in_flight_per_origin(mut self, max: usize) -> Self {
        if max == 0 {
            return self.fail(config_error(
                "max_in_flight_per_origin",
                "at least one request must be allowed in flight",
            ));
        }
        self.config.max_in_flight_per_origin = Some(max);
        self
    }

    /// Hedges slow requests: when an attempt has not answered after the policy's delay, the
    /// same request is sent again and the first answer wins; the other attempt is dropped and
    /// its connection freed. Off by default.
    ///
    /// Only requests that are safe to send twice are hedged (the retry policy's idempotency
    /// rule: the method, an idempotency key, or [`RequestBuilder::idempotent`]), and only
    /// when their body can be sent again. A hedge is one more attempt: it passes the rate
    /// limits, the in-flight limit and the breaker like any other, but it never waits for
    /// them (if it can't go at once, there is no hedge), and it draws on the retry budget, so
    /// a slow server is never sent twice its load. [`CallRecord::hedges`](crate::pipeline::CallRecord::hedges)
    /// counts them.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use std::time::Duration;
    /// use keel_core::HedgePolicy;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .base_url("https://api.example.com")
    ///     // Send a second GET when the first is slower than 95 % of recent answers, but
    ///     // never sooner than 10 ms.
    ///     .hedge(HedgePolicy::at_percentile(0.95)?.min_delay(Duration::from_millis(10)))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn hedge(mut self, policy: HedgePolicy) -> Self {
        self.config.hedge = policy.hedges().then_some(policy);
        self
    }

    /// Calls `hook` on every circuit breaker state change. Each change is also a `tracing`
    /// event at info level (target `keel::breaker`).
    pub fn on_breaker(self, hook: impl Fn(&BreakerEvent) + Send + Sync + 'static) -> Self {
        self.on_event(move |event| {
            if let hooks::Event::Breaker(breaker) = event {
                hook(breaker)
            }
        })
    }

    /// Sends W3C trace context (`traceparent`, and `tracestate` when there is one) with every
    /// attempt, from the attempt's span, so the server's spans join the caller's trace. Needs
    /// `tracing-opentelemetry`'s layer on the subscriber (without it spans have no trace id,
    /// and nothing is sent). Off by default. A `traceparent` the request sets itself is kept.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// let client = keel_core::Client::<T>::builder()
    ///     .propagate_trace_context(true)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    #[cfg(feature = "opentelemetry")]
    pub fn propagate_trace_context(mut self, enabled: bool) -> Self {
        self.config.propagate = enabled;
        self
    }

    /// Adds a [`Hook`](hooks::Hook): it sees the request of every attempt before it is sent,
    /// the head of every response before the policies do, and every decision of a policy (see
    /// [`hooks`] for where each runs). Hooks run in the order added (`after_response` in the
    /// reverse order).
    pub fn hook(mut self, hook: impl hooks::Hook) -> Self {
        self.config.hooks.push(hooks::Entry::Sync(Arc::new(hook)));
        self
    }

    /// Adds a hook that sees (and may change) the request of every attempt just before it is
    /// sent, after every policy admitted it. See [`hooks`].
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// let client = keel_core::Client::<T>::builder()
    ///     .before_attempt(|attempt, request| {
    ///         request.headers_mut().insert("x-attempt", attempt.number().into());
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn before_attempt(
        self,
        hook: impl Fn(&hooks::Attempt, &mut http::Request<Body>) -> Result<(), Error>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.hook(hooks::FnHook {
            before: hook,
            after: |_: &hooks::Attempt, _: &mut http::Response<ResponseBody>| Ok(()),
            event: |_: &hooks::Event<'_>| {},
        })
    }

    /// Adds an async hook that takes the request of every attempt just before it is sent and
    /// gives it back, changed: for what needs an `await` (a token refreshed when it has
    /// expired, a request signed with a key fetched from a vault). It runs inside the attempt:
    /// its time counts toward the attempt's time limit, and an error fails the attempt (as
    /// unsent). See [`hooks`].
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// let client = keel_core::Client::<T>::builder()
    ///     .before_attempt_async(|mut request, _attempt| async move {
    ///         let token = "fresh-token"; // e.g. `tokens.current().await?`
    ///         let value = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    ///         request.headers_mut().insert(http::header::AUTHORIZATION, value);
    ///         Ok(request)
    ///     })
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn before_attempt_async<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(http::Request<Body>, hooks::Attempt) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<http::Request<Body>, Error>> + Send + 'static,
    {
        let hook: hooks::AsyncBefore =
            Arc::new(move |request, attempt| Box::pin(hook(request, attempt)) as BoxFuture<_>);
        self.config.hooks.push(hooks::Entry::Async(hook));
        self
    }

    /// Adds a hook that sees (and may change, or turn into an error) the head of every
    /// response before the policies see it. See [`hooks`].
    pub fn after_response(
        self,
        hook: impl Fn(&hooks::Attempt, &mut http::Response<ResponseBody>) -> Result<(), Error>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.hook(hooks::FnHook {
            before: |_: &hooks::Attempt, _: &mut http::Request<Body>| Ok(()),
            after: hook,
            event: |_: &hooks::Event<'_>| {},
        })
    }

    /// Adds a hook that sees every decision of a policy: retries, redirects, hedges, breaker
    /// changes, waits. See [`hooks::Event`].
    pub fn on_event(self, hook: impl Fn(&hooks::Event<'_>) + Send + Sync + 'static) -> Self {
        self.hook(hooks::FnHook {
            before: |_: &hooks::Attempt, _: &mut http::Request<Body>| Ok(()),
            after: |_: &hooks::Attempt, _: &mut http::Response<ResponseBody>| Ok(()),
            event: hook,
        })
    }

    /// Adds a policy to every call's pipeline, outside the built-in ones (see
    /// [`pipeline`](crate::pipeline)): `make` builds a fresh one for each call. Policies added
    /// first are outermost.
    pub fn policy<P: Policy>(mut self, make: impl Fn() -> P + Send + Sync + 'static) -> Self {
        self.config
            .policies
            .push(Arc::new(move || Box::new(make()) as Box<dyn Policy>));
        self
    }

    /// Keeps cookies in `store`: every attempt and redirect hop carries the cookies of its
    /// URL, and every response's `Set-Cookie`s are stored (see [`cookie`](crate::cookie) for
    /// the rules). Off by default; pass an `Arc<Jar>` to look at the cookies from outside.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use std::sync::Arc;
    /// use keel_core::cookie::Jar;
    ///
    /// let jar = Arc::new(Jar::new());
    /// let client = keel_core::Client::<T>::builder().cookie_store(jar.clone()).build()?;
    /// assert!(jar.snapshot().is_empty());
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn cookie_store(mut self, store: impl CookieStore) -> Self {
        self.config.cookies = Some(Arc::new(store));
        self
    }

    /// Keeps cookies in a fresh in-memory [`Jar`] of the client's own (`true`), or not at all
    /// (`false`, the default). See [`cookie_store`](Self::cookie_store).
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// let client = keel_core::Client::<T>::builder()
    ///     .base_url("https://api.example.com")
    ///     .cookies(true)
    ///     .build()?;
    /// // client.post("login").json(&credentials).send().await? stores the session cookie;
    /// // the calls after it send it back.
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn cookies(mut self, enabled: bool) -> Self {
        self.config.cookies = enabled.then(|| Arc::new(Jar::new()) as Arc<dyn CookieStore>);
        self
    }

    /// Seeds the retry jitter, for reproducible schedules in tests. By default each client
    /// draws a random seed.
    pub fn retry_seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// The most idle connections kept per host.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.transport.pool_max_idle_per_host = Some(max);
        self
    }

    /// How long an idle connection is kept before it is closed.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.transport.pool_idle_timeout = Some(timeout);
        self
    }

    /// Caps the connections open to each origin at `max`, idle ones included: a request that
    /// finds every allowed connection busy waits for one to come back to the pool (or to
    /// close), in the order the requests came. Unlike
    /// [`max_in_flight_per_origin`](Self::max_in_flight_per_origin), which counts requests,
    /// this counts sockets: the bound holds however the backend multiplexes (HTTP/2) or
    /// connects in the background. Bound the wait with
    /// [`pool_acquire_timeout`](Self::pool_acquire_timeout). Off by default; a backend that
    /// can't hold it ([`Capabilities::connection_caps`](crate::Capabilities::connection_caps)) refuses it at build.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use std::time::Duration;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .base_url("https://api.example.com")
    ///     .max_connections_per_origin(50) // what one server sees from this process
    ///     .max_connections(200)           // the sockets this process spends on all of them
    ///     .pool_acquire_timeout(Duration::from_secs(2))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn max_connections_per_origin(mut self, max: usize) -> Self {
        if max == 0 {
            return self.fail(config_error(
                "max_connections_per_origin",
                "a connection cap must allow at least one connection",
            ));
        }
        self.transport.max_connections_per_origin = Some(max);
        self
    }

    /// Caps the connections open at once to all origins together at `max`, idle ones
    /// included. A request held back by it waits as for
    /// [`max_connections_per_origin`](Self::max_connections_per_origin); where the backend can
    /// ([`Capabilities::connection_cap_evicts_idle`](crate::Capabilities::connection_cap_evicts_idle)) it closes a connection idle for another
    /// origin to make room. Off by default.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// let client = keel_core::Client::<T>::builder().max_connections(64).build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn max_connections(mut self, max: usize) -> Self {
        if max == 0 {
            return self.fail(config_error(
                "max_connections",
                "a connection cap must allow at least one connection",
            ));
        }
        self.transport.max_connections = Some(max);
        self
    }

    /// How long a request may wait for a connection the caps
    /// ([`max_connections_per_origin`](Self::max_connections_per_origin),
    /// [`max_connections`](Self::max_connections)) allow. Past it the attempt fails with
    /// [`ErrorKind::Timeout`]`(`[`TimeoutPhase::PoolAcquire`](crate::TimeoutPhase::PoolAcquire)`)`
    /// in [`Stage::Pool`](crate::Stage::Pool): nothing was sent.
    ///
    /// The retry machine does not retry it (it is not in
    /// [`Error::is_retryable`](crate::Error::is_retryable)): the caps are full because the
    /// client already carries all the load it was allowed, and another attempt would queue
    /// again behind the same requests, turning a full pool into a retry storm. The timeout is
    /// how the caller sheds that load. A backend that can't observe the wait (libcurl queues
    /// transfers out of sight) refuses it at build
    /// ([`Capabilities::pool_acquire_timeout`](crate::Capabilities::pool_acquire_timeout)). Default: no limit of its own.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use std::time::Duration;
    /// use keel_core::{ErrorKind, TimeoutPhase};
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .max_connections_per_origin(8)
    ///     .pool_acquire_timeout(Duration::from_millis(250))
    ///     .build()?;
    /// # let _ = client;
    /// let shed = |err: &keel_core::Error| {
    ///     err.kind() == ErrorKind::Timeout(TimeoutPhase::PoolAcquire)
    /// };
    /// # let _ = shed; Ok(()) }
    /// ```
    pub fn pool_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.transport.pool_acquire_timeout = Some(timeout);
        self
    }

    /// Offer HTTP/2 by ALPN on TLS connections. Default true.
    pub fn http2(mut self, enabled: bool) -> Self {
        self.transport.http2 = enabled;
        self
    }

    /// Speak HTTP/2 on plain-text connections without negotiating it.
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.transport.http2_prior_knowledge = true;
        self
    }

    /// Trusts `cert` as a root, in addition to the built-in roots.
    pub fn add_root_certificate(mut self, cert: Certificate) -> Self {
        self.transport.root_certificates.push(cert);
        self
    }

    /// Whether to trust the backend's built-in roots. Default true.
    pub fn built_in_roots(mut self, enabled: bool) -> Self {
        self.transport.built_in_roots = enabled;
        self
    }

    /// Set `TCP_NODELAY` on new connections. Default true.
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.transport.tcp_nodelay = enabled;
        self
    }

    /// Sends connections for `host` to `addr` instead of resolving it: used before any
    /// resolver or cache. Port 0 in `addr` means the URL's port. The request itself is
    /// unchanged: its `Host` header and TLS server name are still `host`.
    ///
    /// On keel-isahc (libcurl's resolve list) the port must be given, and the override applies
    /// to URLs with that port.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use std::net::SocketAddr;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .resolve("api.example.com", SocketAddr::from(([127, 0, 0, 1], 0)))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn resolve(self, host: &str, addr: SocketAddr) -> Self {
        self.resolve_to_addrs(host, &[addr])
    }

    /// Sends connections for `host` to `addrs` (tried as for a resolver's answer, Happy
    /// Eyeballs included) instead of resolving it; see [`resolve`](Self::resolve). Replaces an
    /// earlier override of the same host.
    pub fn resolve_to_addrs(mut self, host: &str, addrs: &[SocketAddr]) -> Self {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.transport.dns_overrides.retain(|(h, _)| *h != host);
        self.transport.dns_overrides.push((host, addrs.to_vec()));
        self
    }

    /// Resolves host names with `resolver` instead of the backend's resolver (the system's).
    /// Static overrides still come first; answers are cached if [`dns_cache`](Self::dns_cache)
    /// is set. A backend that can't call it (keel-isahc: libcurl resolves by itself) fails
    /// [`build`](Self::build) with [`ErrorKind::Config`](crate::ErrorKind::Config) naming
    /// `dns_resolver`.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use std::net::{IpAddr, Ipv4Addr};
    /// use keel_core::dns::{Resolve, Resolving};
    ///
    /// struct Fixed;
    /// impl Resolve for Fixed {
    ///     fn resolve(&self, _host: &str) -> Resolving {
    ///         Box::pin(async { Ok(vec![IpAddr::from(Ipv4Addr::LOCALHOST)]) })
    ///     }
    /// }
    ///
    /// let client = keel_core::Client::<T>::builder().dns_resolver(Fixed).build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn dns_resolver(mut self, resolver: impl Resolve) -> Self {
        self.transport.dns_resolver = Some(SharedResolver::new(resolver));
        self
    }

    /// Caches DNS answers for `ttl`, for at most `max_entries` hosts: when full, expired
    /// answers are evicted first, then the least recently used. Off by default (each new
    /// connection resolves again, and the system resolver may cache by itself). keel-isahc
    /// fails [`build`](Self::build) naming `dns_cache`: libcurl's cache is its own.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use std::time::Duration;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .dns_cache(Duration::from_secs(30), 1024)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn dns_cache(mut self, ttl: Duration, max_entries: usize) -> Self {
        self.transport.dns_cache = Some(DnsCacheConfig { ttl, max_entries });
        self
    }

    /// Presents `identity`, a client certificate and its key, to servers that ask for one
    /// (mutual TLS). A backend that can't (keel-isahc: libcurl's rustls backend reads client
    /// keys from files only, and keel never writes a key to disk) fails
    /// [`build`](Self::build) with [`ErrorKind::Config`](crate::ErrorKind::Config) naming
    /// `identity`.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), keel_core::Error> {
    /// use keel_core::Identity;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .identity(Identity::from_pem(cert_pem, key_pem)?)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn identity(mut self, identity: Identity) -> Self {
        self.transport.identity = Some(identity);
        self
    }

    /// Refuses servers that can't speak `version` or newer: the handshake fails with
    /// [`ErrorKind::Tls`](crate::ErrorKind::Tls). Default: TLS 1.2, the oldest version any
    /// keel backend speaks.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use keel_core::TlsVersion;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .min_tls_version(TlsVersion::Tls1_3)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn min_tls_version(mut self, version: TlsVersion) -> Self {
        self.transport.min_tls_version = Some(version);
        self
    }

    /// **Turns server certificate verification off**: any certificate is accepted, expired,
    /// self-signed, or for another host, so anyone on the path can read and change the
    /// traffic. This is the only way to turn verification off in keel; prefer trusting the
    /// server's root with [`add_root_certificate`](Self::add_root_certificate). The TLS
    /// handshake itself is still checked (the server must hold the key of the certificate it
    /// shows). A client built with it logs a `tracing` warning. Default false.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// // A test server with a throwaway certificate, never a production one.
    /// let client = keel_core::Client::<T>::builder()
    ///     .danger_accept_invalid_certs(true)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.transport.danger_accept_invalid_certs = accept;
        self
    }

    /// Binds new connections to `addr` (any port). Addresses of the other IP family can't be
    /// reached from it, and fail to connect.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use std::net::Ipv4Addr;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .local_address(Ipv4Addr::LOCALHOST.into())
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn local_address(mut self, addr: IpAddr) -> Self {
        self.transport.local_address = Some(addr);
        self
    }

    /// Puts the facts the backend knows about each response's connection (remote and local
    /// address, whether the connection was reused) on the response, for
    /// [`Response::connection`](crate::Response::connection). Off by default: on keel-hyper it
    /// costs an allocation per response (hyper-util hands them over in the response's
    /// extensions); keel-smol and keel-isahc give them for free.
    /// [`Capabilities::connection_addrs`](crate::Capabilities::connection_addrs) and
    /// [`Capabilities::connection_reused`](crate::Capabilities::connection_reused) say which
    /// facts a backend knows.
    ///
    /// ```
    /// # async fn run<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// let client = keel_core::Client::<T>::builder()
    ///     .base_url("http://127.0.0.1:8080")
    ///     .connection_info(true)
    ///     .build()?;
    /// let response = client.get("/health").send().await?;
    /// if let Some(addr) = response.connection().remote_addr {
    ///     println!("answered by {addr}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn connection_info(mut self, on: bool) -> Self {
        self.transport.connection_info = on;
        self
    }

    /// Sends requests through `proxy`, for the targets it is for ([`Proxy::http`],
    /// [`Proxy::https`], [`Proxy::all`]), replacing a proxy set for them before. Hosts that
    /// [`no_proxy`](Self::no_proxy) lists are still reached directly. See
    /// [`keel_core::proxy`](crate::proxy) for how each kind of proxy is used, and for the
    /// [`Stage::Proxy`](crate::Stage::Proxy) errors.
    ///
    /// A backend that can't speak the proxy's scheme fails [`build`](Self::build) with
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) naming `proxy`, `proxy_tls`
    /// (`https://` proxies) or `proxy_socks5`.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// use keel_core::proxy::Proxy;
    ///
    /// let client = keel_core::Client::<T>::builder()
    ///     .proxy(Proxy::all("http://user:secret@proxy.internal:3128")?)
    ///     .no_proxy("localhost, .internal")
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        let config = self.transport.proxy.take().unwrap_or_default();
        self.transport.proxy = Some(config.proxy(proxy));
        self
    }

    /// The hosts reached directly even when a proxy is set, in `NO_PROXY` syntax (`*`, domain
    /// suffixes, IP addresses, CIDR blocks, optional ports: see [`NoProxy`]). Replaces a list
    /// set before (by this method or from the environment).
    pub fn no_proxy(mut self, list: &str) -> Self {
        let config = self.transport.proxy.take().unwrap_or_default();
        self.transport.proxy = Some(config.no_proxy(NoProxy::parse(list)));
        self
    }

    /// Uses the proxies the environment names: `http_proxy`, `https_proxy`, `all_proxy` and
    /// `no_proxy` (and their uppercase forms, except `HTTP_PROXY`: see
    /// [`ProxyConfig::from_env`]), read now. Replaces every proxy setting made before; later
    /// calls to [`proxy`](Self::proxy) and [`no_proxy`](Self::no_proxy) refine it.
    ///
    /// **Not the default**: without this call a client ignores the environment, so a proxy
    /// is only ever used when the code building the client asks for it. A variable that holds
    /// no proxy URL fails [`build`](Self::build) with
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) naming `proxy_from_env`.
    ///
    /// ```
    /// # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
    /// let client = keel_core::Client::<T>::builder().proxy_from_env().build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn proxy_from_env(mut self) -> Self {
        match ProxyConfig::from_env() {
            Ok(config) => {
                self.transport.proxy = Some(config);
                self
            }
            Err(e) => self.fail(e),
        }
    }

    /// Checks the settings and builds the client.
    pub fn build(self) -> Result<Client<T>, Error> {
        let (config, transport) = self.finish()?;
        let transport = T::from_config(&transport)?;
        Ok(Client {
            shared: Arc::new(Shared::new(transport, config)),
        })
    }

    /// Checks the settings and builds a client whose backend type is erased, so clients on
    /// different backends have the same type.
    pub fn build_boxed(self) -> Result<Client<BoxTransport>, Error> {
        let (config, transport) = self.finish()?;
        let transport = BoxTransport::new(T::from_config(&transport)?);
        Ok(Client {
            shared: Arc::new(Shared::new(transport, config)),
        })
    }

    /// Checks the settings and builds the client over `transport`, a transport made by the
    /// caller instead of one built from the builder's transport settings: a
    /// `keel_core::mock::MockTransport` (feature `mock`) the test keeps a clone of, or a
    /// backend configured by hand.
    ///
    /// The settings are checked as [`build`](ClientBuilder::build) checks them, including
    /// against `T`'s capabilities; the transport settings themselves (connect timeout, pool,
    /// TLS roots, HTTP/2) are not applied to `transport`, which was built already.
    pub fn build_with(self, transport: T) -> Result<Client<T>, Error> {
        let (config, _) = self.finish()?;
        Ok(Client {
            shared: Arc::new(Shared::new(transport, config)),
        })
    }

    /// [`build_with`](ClientBuilder::build_with), the transport's type erased: for code that
    /// takes a `Client<BoxTransport>`, given a transport the caller keeps a handle to (a clone
    /// of a `keel_core::mock::MockTransport`, say).
    pub fn build_boxed_with(self, transport: T) -> Result<Client<BoxTransport>, Error> {
        let (config, _) = self.finish()?;
        Ok(Client {
            shared: Arc::new(Shared::new(BoxTransport::new(transport), config)),
        })
    }

    fn finish(mut self) -> Result<(ClientConfig, TransportConfig), Error> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let t = &self.config.timeouts;
        for (setting, d) in [
            ("connect_timeout", t.connect),
            ("attempt_timeout", t.attempt),
            ("deadline", t.deadline),
            ("read_idle_timeout", t.read_idle),
        ] {
            if d.is_zero() {
                return Err(config_error(
                    setting,
                    "a time limit must be greater than zero",
                ));
            }
        }
        self.transport.connect_timeout = t.connect;
        if self
            .transport
            .proxy
            .as_ref()
            .is_some_and(ProxyConfig::is_empty)
        {
            // No proxy (an environment without one, say): backends see `None`, the direct path.
            self.transport.proxy = None;
        }
        T::capabilities().check(&self.transport)?;
        if self.transport.danger_accept_invalid_certs {
            tracing::warn!(
                "TLS certificate verification is OFF for this client \
                 (danger_accept_invalid_certs): any server certificate is accepted"
            );
        }
        if let Some(credentials) = self.config.base_url.as_ref().and_then(|b| b.credentials()) {
            if !self.config.headers.contains_key(AUTHORIZATION) {
                self.config
                    .headers
                    .insert(AUTHORIZATION, credentials.clone());
            }
        }
        self.scope_credentials()?;
        let framing = |h: &HeaderMap| {
            h.contains_key(http::header::CONTENT_LENGTH)
                || h.contains_key(http::header::TRANSFER_ENCODING)
        };
        self.config.defaults_frame = framing(&self.config.headers)
            || self
                .config
                .scoped_headers
                .as_ref()
                .is_some_and(|(_, h)| framing(h));
        if self.config.decompress && !self.config.headers.contains_key(ACCEPT_ENCODING) {
            // A default header like any other: one more entry in the merge, no work per call.
            if let Some(value) = &self.config.accept_encoding {
                self.config.headers.insert(ACCEPT_ENCODING, value.clone());
                self.config.default_accept_encoding = true;
            }
        }
        Ok((self.config, self.transport))
    }

    /// Moves the default headers that are credentials to the base URL's origin.
    fn scope_credentials(&mut self) -> Result<(), Error> {
        let config = &mut self.config;
        let names: Vec<HeaderName> = config
            .headers
            .keys()
            .filter(|name| config.sensitive.contains(name))
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let Some(base) = &config.base_url else {
            return Err(config_error(
                "default_header",
                "a credential header (Authorization, Cookie, bearer_auth, …) is scoped to the \
                 base URL's origin, and the client has no base_url",
            ));
        };
        let mut scoped = HeaderMap::new();
        for name in names {
            for mut value in config.headers.get_all(&name).iter().cloned() {
                value.set_sensitive(true);
                scoped.append(name.clone(), value);
            }
            config.headers.remove(&name);
        }
        config.scoped_headers = Some((base.as_uri().clone(), scoped));
        Ok(())
    }
}

impl<T> fmt::Debug for ClientBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("transport", &self.transport)
            .field("error", &self.error)
            .finish()
    }
}

fn config_error(setting: &'static str, source: impl Into<BoxError>) -> Error {
    Error::new(ErrorKind::Config)
        .with_setting(setting)
        .with_source(source)
}

/// Tells the hooks and `tracing` that the breaker of `url`'s origin (or of `partition`)
/// changed state.
pub(crate) fn announce_breaker(
    config: &ClientConfig,
    url: &Uri,
    partition: Option<&Arc<str>>,
    transition: Transition,
) {
    if let Ok(origin) = Origin::from_uri(url) {
        observe::event(
            config,
            &hooks::Event::Breaker(&BreakerEvent {
                origin,
                partition: partition.cloned(),
                transition,
            }),
        );
    }
}

/// `Accept-Encoding` listing the codings compiled in, or `None` when there are none.
fn accept_encoding() -> Option<HeaderValue> {
    let tokens: Vec<&str> = Coding::compiled().iter().map(|c| c.token()).collect();
    if tokens.is_empty() {
        return None;
    }
    HeaderValue::from_str(&tokens.join(", ")).ok()
}

/// `Bearer <token>`, marked sensitive.
fn bearer(token: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `Basic <base64(user:password)>`, marked sensitive.
fn basic(user: &str, password: Option<&str>) -> HeaderValue {
    basic_bytes(user.as_bytes(), password.map(str::as_bytes))
}

/// [`basic`] of raw bytes (a URL's percent-decoded user info need not be UTF-8).
pub(crate) fn basic_bytes(user: &[u8], password: Option<&[u8]>) -> HeaderValue {
    use base64::Engine as _;
    let mut credentials = Vec::with_capacity(user.len() + 1 + password.map_or(0, <[u8]>::len));
    credentials.extend_from_slice(user);
    credentials.push(b':');
    credentials.extend_from_slice(password.unwrap_or_default());
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .expect("base64 is always a valid header value");
    value.set_sensitive(true);
    value
}

/// A century: "never" for a request (a deadline lifted for a long-lived stream or
/// download); it keeps the arithmetic in range on every platform.
pub(crate) const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn add_saturating(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or_else(|| t + NEVER)
}

fn merge_default_headers(headers: &mut HeaderMap, defaults: &HeaderMap) {
    if headers.is_empty() {
        // The common case: nothing to compare against.
        for (name, value) in defaults {
            headers.append(name.clone(), value.clone());
        }
        return;
    }
    for name in defaults.keys() {
        if !headers.contains_key(name) {
            for value in defaults.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

/// Marks an error from before the request reached the wire.
pub(crate) fn request_error(source: impl Into<BoxError>) -> Error {
    Error::new(ErrorKind::InvalidRequest).with_source(source)
}

#[cfg(test)]
mod tests;
