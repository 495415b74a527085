//! The blocking [`Client`], its builder and its requests: thin wrappers of the async ones.

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::listing::{Download, Paginate};
use super::response::Response;
use super::{Handle, Runtime};
use crate::body::Body;
use crate::client::pipeline::Policy;
use crate::client::{BreakerEvent, RedirectEvent, RetryEvent};
use crate::dns::Resolve;
use crate::error::{BoxError, Error};
use crate::identity::{Identity, TlsVersion};
use crate::machine::breaker::{BreakerPolicy, BreakerState};
use crate::machine::hedge::HedgePolicy;
use crate::machine::paginate::{Checkpoint, Strategy};
use crate::machine::rate::RateLimit;
use crate::machine::redirect::RedirectPolicy;
use crate::machine::retry::{RetryBudget, RetryPolicy};
use crate::proxy::Proxy;
use crate::transport::Certificate;
use crate::{BreakerControl, Request, Timeouts};

/// A blocking HTTP client: the async [`crate::Client`] run on a thread of its own.
///
/// Cheap to clone: clones share the pool, the settings and the driver thread. Create one per
/// API and keep it. Every method returns when its work is over; see the
/// [module documentation](super) for how, and for what happens inside an async runtime.
///
/// `T` is the backend's transport; the `keel` facade names the default one
/// `keel::blocking::Client`.
///
/// ```
/// # fn demo<T: keel_core::blocking::Runtime>() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::Read as _;
///
/// let client = keel_core::blocking::Client::<T>::builder()
///     .base_url("https://api.example.com/v1")
///     .bearer_auth("t-123")
///     .build()?;
/// let mut body = String::new();
/// client
///     .get("/reports/latest")
///     .send()?
///     .error_for_status()?
///     .read_to_string(&mut body)?;
/// # Ok(()) }
/// ```
pub struct Client<T: Runtime> {
    inner: Arc<Inner<T>>,
}

struct Inner<T: Runtime> {
    /// `None` only while dropped.
    client: Option<crate::Client<T>>,
    handle: Arc<Handle>,
}

impl<T: Runtime> Drop for Inner<T> {
    fn drop(&mut self) {
        // The transport goes with the driver's runtime (keel-isahc joins its agent thread):
        // never on a caller that may be an async task.
        if let Some(client) = self.client.take() {
            self.handle.drop_there(client);
        }
    }
}

impl<T: Runtime> Client<T> {
    /// A client with the default settings.
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// Starts configuring a client on backend `T`.
    pub fn builder() -> ClientBuilder<T> {
        ClientBuilder {
            inner: crate::Client::<T>::builder(),
        }
    }

    fn client(&self) -> &crate::Client<T> {
        self.inner
            .client
            .as_ref()
            .expect("the async client is taken out only when dropped")
    }

    fn handle(&self) -> &Arc<Handle> {
        &self.inner.handle
    }

    /// Starts a request with `method` to `url`: absolute, or a path joined to the base URL as
    /// [`crate::Client::request`] says.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder<T> {
        RequestBuilder {
            inner: self.client().request(method, url),
            client: self.clone(),
        }
    }

    /// Starts a `GET` request.
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

    /// Sends `request` (built with [`RequestBuilder::build`]) and returns the response once
    /// its head has arrived; see [`crate::Client::execute`].
    pub fn execute(&self, request: Request) -> Result<Response, Error> {
        self.handle().check_context();
        let pending = self.client().execute(request);
        let response = self.handle().call(pending)??;
        Ok(Response::new(response, self.handle().clone()))
    }

    /// Downloads the body of `request`, resuming after a mid-body failure; see
    /// [`Download`] and [`crate::Client::download`].
    pub fn download(&self, request: Request) -> Download {
        Download::new(self.client().download(request), self.handle().clone())
    }

    /// The items of a paginated listing, fetched page by page as the iterator is read; see
    /// [`Paginate`] and [`crate::Client::paginate`].
    pub fn paginate<I>(&self, request: Request, strategy: Strategy) -> Paginate<I>
    where
        I: DeserializeOwned + Send + 'static,
    {
        Paginate::new(
            self.client().paginate(request, strategy),
            self.handle().clone(),
        )
    }

    /// Resumes a listing where a [`Checkpoint`] says it stopped; see
    /// [`crate::Client::resume_paginate`].
    pub fn resume_paginate<I>(
        &self,
        request: Request,
        strategy: Strategy,
        checkpoint: &Checkpoint,
    ) -> Paginate<I>
    where
        I: DeserializeOwned + Send + 'static,
    {
        Paginate::new(
            self.client().resume_paginate(request, strategy, checkpoint),
            self.handle().clone(),
        )
    }

    /// The base URL relative paths are joined to.
    pub fn base_url(&self) -> Option<&Uri> {
        self.client().base_url()
    }

    /// The time limits requests start with.
    pub fn timeouts(&self) -> Timeouts {
        self.client().timeouts()
    }

    /// The state of the circuit breaker of `url`'s origin; see
    /// [`crate::Client::breaker_state`].
    pub fn breaker_state(&self, url: &str) -> Option<BreakerState> {
        self.client().breaker_state(url)
    }

    /// Forces open, disables or resets the circuit breaker of `url`'s origin; see
    /// [`crate::Client::control_breaker`].
    pub fn control_breaker(&self, url: &str, control: BreakerControl) -> bool {
        self.client().control_breaker(url, control)
    }

    /// The state of the circuit breaker of the partition named `key`; see
    /// [`crate::Client::partition_breaker_state`].
    pub fn partition_breaker_state(&self, key: &str) -> Option<BreakerState> {
        self.client().partition_breaker_state(key)
    }

    /// Forces open, disables or resets the circuit breaker of the partition named `key`; see
    /// [`crate::Client::control_partition_breaker`].
    pub fn control_partition_breaker(&self, key: &str, control: BreakerControl) -> bool {
        self.client().control_partition_breaker(key, control)
    }

    /// The transport, for backend-specific inspection.
    pub fn transport(&self) -> &T {
        self.client().transport()
    }

    /// The connections in the backend's pool, per origin; see [`crate::Client::pool_stats`].
    pub fn pool_stats(&self) -> Option<Vec<crate::PoolStats>> {
        self.client().pool_stats()
    }
}

impl<T: Runtime> Clone for Client<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Runtime + fmt::Debug> fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::Client")
            .field("client", &self.inner.client)
            .field("driver", &self.inner.handle)
            .finish()
    }
}

/// Configures and builds a blocking [`Client`] on backend `T`: the settings of the async
/// [`crate::ClientBuilder`], each documented there.
///
/// Settings are checked by [`build`](Self::build), as the async builder does. A setting added
/// to the async builder later than this one can be reached through
/// [`from_async`](Self::from_async).
#[must_use]
pub struct ClientBuilder<T> {
    inner: crate::ClientBuilder<T>,
}

/// Forwards builder settings that take plain values to the async builder.
macro_rules! forward_settings {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, $($arg: $ty),*) -> Self {
                Self { inner: self.inner.$name($($arg),*) }
            }
        )*
    };
}

impl<T: Runtime> ClientBuilder<T> {
    /// Takes over an async builder's settings, for a setting this builder doesn't forward.
    ///
    /// ```
    /// # fn demo<T: keel_core::blocking::Runtime>() -> Result<(), keel_core::Error> {
    /// use keel_core::blocking::ClientBuilder;
    ///
    /// let async_settings = keel_core::Client::<T>::builder().base_url("https://api.example.com");
    /// let client = ClientBuilder::from_async(async_settings).max_in_flight(4).build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn from_async(builder: crate::ClientBuilder<T>) -> Self {
        Self { inner: builder }
    }

    /// Checks the settings, starts the client's driver thread and builds the client.
    ///
    /// Fails with [`ErrorKind::Config`](crate::ErrorKind::Config) naming the setting, as the
    /// async builder does, or naming `runtime` if the thread or the backend's runtime could not
    /// be started.
    pub fn build(self) -> Result<Client<T>, Error> {
        let client = self.inner.build()?;
        let handle = Arc::new(Handle::start::<T>()?);
        Ok(Client {
            inner: Arc::new(Inner {
                client: Some(client),
                handle,
            }),
        })
    }

    /// A header sent with every request unless the request sets the same name; see
    /// [`crate::ClientBuilder::default_header`] (credentials go to the base URL's origin only).
    pub fn default_header<K, V>(self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<BoxError>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<BoxError>,
    {
        Self {
            inner: self.inner.default_header(name, value),
        }
    }

    /// Marks `name` as a credential, like `Authorization`; see
    /// [`crate::ClientBuilder::sensitive_header`].
    pub fn sensitive_header<K>(self, name: K) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<BoxError>,
    {
        Self {
            inner: self.inner.sensitive_header(name),
        }
    }

    /// The `User-Agent` header. Default `keel/<version>`.
    pub fn user_agent<V>(self, value: V) -> Self
    where
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<BoxError>,
    {
        Self {
            inner: self.inner.user_agent(value),
        }
    }

    /// Calls `hook` before every retry; see [`crate::ClientBuilder::on_retry`]. It runs on
    /// the client's driver thread.
    pub fn on_retry(self, hook: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        Self {
            inner: self.inner.on_retry(hook),
        }
    }

    /// Calls `hook` before every redirect is followed; see
    /// [`crate::ClientBuilder::on_redirect`]. It runs on the client's driver thread.
    pub fn on_redirect(self, hook: impl Fn(&RedirectEvent) + Send + Sync + 'static) -> Self {
        Self {
            inner: self.inner.on_redirect(hook),
        }
    }

    /// Calls `hook` on every circuit breaker state change; see
    /// [`crate::ClientBuilder::on_breaker`].
    pub fn on_breaker(self, hook: impl Fn(&BreakerEvent) + Send + Sync + 'static) -> Self {
        Self {
            inner: self.inner.on_breaker(hook),
        }
    }

    /// Adds a [`Hook`](crate::hooks::Hook); see [`crate::ClientBuilder::hook`]. It runs on the
    /// client's driver thread.
    pub fn hook(self, hook: impl crate::hooks::Hook) -> Self {
        Self {
            inner: self.inner.hook(hook),
        }
    }

    /// Sees and may change the request of every attempt; see
    /// [`crate::ClientBuilder::before_attempt`]. It runs on the client's driver thread.
    pub fn before_attempt(
        self,
        hook: impl Fn(&crate::hooks::Attempt, &mut http::Request<crate::Body>) -> Result<(), Error>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self {
            inner: self.inner.before_attempt(hook),
        }
    }

    /// An async hook on the request of every attempt; see
    /// [`crate::ClientBuilder::before_attempt_async`]. It runs on the client's driver thread,
    /// on the backend's runtime.
    pub fn before_attempt_async<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(http::Request<crate::Body>, crate::hooks::Attempt) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<http::Request<crate::Body>, Error>>
            + Send
            + 'static,
    {
        Self {
            inner: self.inner.before_attempt_async(hook),
        }
    }

    /// Sees and may change the head of every response; see
    /// [`crate::ClientBuilder::after_response`]. It runs on the client's driver thread.
    pub fn after_response(
        self,
        hook: impl Fn(
                &crate::hooks::Attempt,
                &mut http::Response<crate::ResponseBody>,
            ) -> Result<(), Error>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self {
            inner: self.inner.after_response(hook),
        }
    }

    /// Sees every decision of a policy; see [`crate::ClientBuilder::on_event`]. It runs on
    /// the client's driver thread.
    pub fn on_event(self, hook: impl Fn(&crate::hooks::Event<'_>) + Send + Sync + 'static) -> Self {
        Self {
            inner: self.inner.on_event(hook),
        }
    }

    /// Where breakers, limiters and quota holds keep their state; see
    /// [`crate::ClientBuilder::state_store`].
    pub fn state_store(self, store: impl crate::store::StateStore) -> Self {
        Self {
            inner: self.inner.state_store(store),
        }
    }

    /// Keeps cookies in `store`; see [`crate::ClientBuilder::cookie_store`].
    pub fn cookie_store(self, store: impl crate::cookie::CookieStore) -> Self {
        Self {
            inner: self.inner.cookie_store(store),
        }
    }

    /// Adds a policy to every call's pipeline; see [`crate::ClientBuilder::policy`].
    pub fn policy<P: Policy>(self, make: impl Fn() -> P + Send + Sync + 'static) -> Self {
        Self {
            inner: self.inner.policy(make),
        }
    }

    forward_settings! {
        /// The URL that relative request paths are joined to; see
        /// [`crate::ClientBuilder::base_url`].
        fn base_url(url: &str);
        /// Sends `Authorization: Bearer <token>` to the base URL's origin (and only there).
        fn bearer_auth(token: &str);
        /// Sends `Authorization: Basic <base64(user:password)>` to the base URL's origin (and
        /// only there).
        fn basic_auth(user: &str, password: Option<&str>);
        /// All the time limits at once.
        fn timeouts(timeouts: Timeouts);
        /// Time to establish a connection (DNS, TCP and TLS). Default 10 s.
        fn connect_timeout(timeout: Duration);
        /// Time from sending a request until its response head arrives. Default 30 s.
        fn attempt_timeout(timeout: Duration);
        /// Time for a whole call, reading the body included. Default 5 minutes.
        fn deadline(timeout: Duration);
        /// Time for a whole call, as reqwest's `timeout` means: the same as
        /// [`deadline`](Self::deadline).
        fn timeout(timeout: Duration);
        /// Longest silence allowed between two body chunks. Default 30 s.
        fn read_idle_timeout(timeout: Duration);
        /// The largest body [`Response::bytes`], [`Response::text`] and [`Response::json`]
        /// will buffer; reading through [`Read`] is not limited. Default 16 MiB.
        fn max_body_size(bytes: u64);
        /// Whether responses are decoded out of their `Content-Encoding`; see
        /// [`crate::ClientBuilder::decompress`]. Default true.
        fn decompress(enabled: bool);
        /// The most bytes a response body may decode to; see
        /// [`crate::ClientBuilder::max_decoded_size`].
        fn max_decoded_size(max: Option<u64>);
        /// The most decoded bytes per encoded byte; see
        /// [`crate::ClientBuilder::max_decompression_ratio`].
        fn max_decompression_ratio(max: Option<u32>);
        /// The retry policy for every request; see [`crate::ClientBuilder::retry_policy`].
        fn retry_policy(policy: RetryPolicy);
        /// The budget that caps the load retries add; see
        /// [`crate::ClientBuilder::retry_budget`].
        fn retry_budget(budget: Option<RetryBudget>);
        /// How redirects are followed; see [`crate::ClientBuilder::redirect_policy`].
        fn redirect_policy(policy: RedirectPolicy);
        /// A circuit breaker per origin; see [`crate::ClientBuilder::circuit_breaker`].
        fn circuit_breaker(policy: BreakerPolicy);
        /// Paces every attempt on the client; see [`crate::ClientBuilder::rate_limit`].
        fn rate_limit(limit: RateLimit);
        /// Paces the attempts to each origin; see
        /// [`crate::ClientBuilder::rate_limit_per_origin`].
        fn rate_limit_per_origin(limit: RateLimit);
        /// Listens to the quota a server announces; see
        /// [`crate::ClientBuilder::server_quotas`].
        fn server_quotas(listen: bool);
        /// Limits the requests in flight on the client; see
        /// [`crate::ClientBuilder::max_in_flight`].
        fn max_in_flight(max: usize);
        /// Limits the requests in flight to each origin; see
        /// [`crate::ClientBuilder::max_in_flight_per_origin`].
        fn max_in_flight_per_origin(max: usize);
        /// Hedges slow requests; see [`crate::ClientBuilder::hedge`].
        fn hedge(policy: HedgePolicy);
        /// Keeps cookies in a fresh in-memory jar; see [`crate::ClientBuilder::cookies`].
        fn cookies(enabled: bool);
        /// Seeds the retry jitter, for reproducible schedules in tests.
        fn retry_seed(seed: u64);
        /// The most idle connections kept per host.
        fn pool_max_idle_per_host(max: usize);
        /// How long an idle connection is kept before it is closed.
        fn pool_idle_timeout(timeout: Duration);
        /// Caps the connections open to each origin; see
        /// [`crate::ClientBuilder::max_connections_per_origin`].
        fn max_connections_per_origin(max: usize);
        /// Caps the connections open to all origins together; see
        /// [`crate::ClientBuilder::max_connections`].
        fn max_connections(max: usize);
        /// How long a request may wait for a connection the caps allow; see
        /// [`crate::ClientBuilder::pool_acquire_timeout`].
        fn pool_acquire_timeout(timeout: Duration);
        /// Offer HTTP/2 by ALPN on TLS connections. Default true.
        fn http2(enabled: bool);
        /// Speak HTTP/2 on plain-text connections without negotiating it.
        fn http2_prior_knowledge();
        /// Trusts `cert` as a root, in addition to the built-in roots.
        fn add_root_certificate(cert: Certificate);
        /// Whether to trust the backend's built-in roots. Default true.
        fn built_in_roots(enabled: bool);
        /// Set `TCP_NODELAY` on new connections. Default true.
        fn tcp_nodelay(enabled: bool);
        /// Sends connections for `host` to `addr` instead of resolving it; see
        /// [`crate::ClientBuilder::resolve`].
        fn resolve(host: &str, addr: SocketAddr);
        /// Sends connections for `host` to `addrs` instead of resolving it; see
        /// [`crate::ClientBuilder::resolve_to_addrs`].
        fn resolve_to_addrs(host: &str, addrs: &[SocketAddr]);
        /// Resolves host names with `resolver`; see [`crate::ClientBuilder::dns_resolver`].
        fn dns_resolver(resolver: impl Resolve);
        /// Caches DNS answers, bounded; see [`crate::ClientBuilder::dns_cache`].
        fn dns_cache(ttl: Duration, max_entries: usize);
        /// Binds new connections to `addr`; see [`crate::ClientBuilder::local_address`].
        fn local_address(addr: IpAddr);
        /// Puts connection facts on responses; see [`crate::ClientBuilder::connection_info`].
        fn connection_info(on: bool);
        /// Presents a client certificate (mutual TLS); see [`crate::ClientBuilder::identity`].
        fn identity(identity: Identity);
        /// Refuses TLS versions older than `version`; see
        /// [`crate::ClientBuilder::min_tls_version`].
        fn min_tls_version(version: TlsVersion);
        /// **Turns server certificate verification off**; see
        /// [`crate::ClientBuilder::danger_accept_invalid_certs`].
        fn danger_accept_invalid_certs(accept: bool);
        /// Sends requests through `proxy`; see [`crate::ClientBuilder::proxy`].
        fn proxy(proxy: Proxy);
        /// Reaches the hosts in `list` directly; see [`crate::ClientBuilder::no_proxy`].
        fn no_proxy(list: &str);
        /// Uses the proxies the environment names (not the default); see
        /// [`crate::ClientBuilder::proxy_from_env`].
        fn proxy_from_env();
    }

    /// Sends W3C trace context with every attempt; see
    /// [`crate::ClientBuilder::propagate_trace_context`].
    #[cfg(feature = "opentelemetry")]
    pub fn propagate_trace_context(self, enabled: bool) -> Self {
        Self {
            inner: self.inner.propagate_trace_context(enabled),
        }
    }
}

impl<T: Runtime> From<crate::ClientBuilder<T>> for ClientBuilder<T> {
    fn from(builder: crate::ClientBuilder<T>) -> Self {
        Self::from_async(builder)
    }
}

impl<T> fmt::Debug for ClientBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::ClientBuilder")
            .field(&self.inner)
            .finish()
    }
}

/// A request being built on a blocking [`Client`]: the async [`crate::RequestBuilder`]'s
/// methods, with a [`send`](Self::send) that returns the response.
///
/// Mistakes (an invalid header, a body that fails to serialize) are kept and returned by
/// `send` or `build`, so calls chain without `?` at every step.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder<T: Runtime> {
    inner: crate::RequestBuilder<T>,
    client: Client<T>,
}

/// Forwards request settings that take plain values to the async request builder.
macro_rules! forward_request {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, $($arg: $ty),*) -> Self {
                Self { inner: self.inner.$name($($arg),*), client: self.client }
            }
        )*
    };
}

impl<T: Runtime> RequestBuilder<T> {
    /// Adds a header; see [`crate::RequestBuilder::header`] (credentials are marked
    /// sensitive).
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<BoxError>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<BoxError>,
    {
        Self {
            inner: self.inner.header(name, value),
            client: self.client,
        }
    }

    /// Appends `query` (a struct, a map, a slice of pairs) to the URL's query string.
    pub fn query<Q: Serialize + ?Sized>(self, query: &Q) -> Self {
        Self {
            inner: self.inner.query(query),
            client: self.client,
        }
    }

    /// Sends `value` as JSON, with `Content-Type: application/json`.
    pub fn json<B: Serialize + ?Sized>(self, value: &B) -> Self {
        Self {
            inner: self.inner.json(value),
            client: self.client,
        }
    }

    /// Sends `value` URL-encoded, with `Content-Type: application/x-www-form-urlencoded`.
    pub fn form<B: Serialize + ?Sized>(self, value: &B) -> Self {
        Self {
            inner: self.inner.form(value),
            client: self.client,
        }
    }

    /// Sends `body` as it is: bytes or a string (sent again as it is on a retry or a
    /// 307/308 redirect); see [`crate::RequestBuilder::body`].
    pub fn body(self, body: impl Into<Body>) -> Self {
        Self {
            inner: self.inner.body(body),
            client: self.client,
        }
    }

    /// Sends what `reader` reads as the body, streamed in chunks of up to 64 KiB (with
    /// `Transfer-Encoding: chunked` on HTTP/1.1).
    ///
    /// The reader is read on a thread of its own, as the request is sent; a body read this
    /// way can be sent once only, so the request is not retried once it may have reached the
    /// server, and a 307/308 redirect is refused (see [`crate::RequestBuilder::body`]).
    /// An error from the reader fails the call with
    /// [`ErrorKind::Body`](crate::ErrorKind::Body).
    pub fn body_reader(self, reader: impl Read + Send + 'static) -> Self {
        self.body(super::response::reader_body(reader))
    }

    /// Sends the body `make` returns, calling it again for every attempt; see
    /// [`crate::RequestBuilder::body_with`].
    pub fn body_with(self, make: impl Fn() -> Body + Send + Sync + 'static) -> Self {
        Self {
            inner: self.inner.body_with(make),
            client: self.client,
        }
    }

    /// Adds a value to the request's extensions, for the backend or for policies.
    pub fn extension<V: Clone + Send + Sync + 'static>(self, value: V) -> Self {
        Self {
            inner: self.inner.extension(value),
            client: self.client,
        }
    }

    forward_request! {
        /// Adds every header in `headers` (credentials marked sensitive).
        fn headers(headers: HeaderMap);
        /// Sets `Authorization: Bearer <token>`, marked sensitive so it is never logged.
        fn bearer_auth(token: &str);
        /// Sets `Authorization: Basic <base64(user:password)>`, marked sensitive.
        fn basic_auth(user: &str, password: Option<&str>);
        /// Declares whether the request may be sent more than once; see
        /// [`crate::RequestBuilder::idempotent`].
        fn idempotent(idempotent: bool);
        /// The retry policy for this request only.
        fn retry_policy(policy: RetryPolicy);
        /// The redirect policy for this request only.
        fn redirect_policy(policy: RedirectPolicy);
        /// The hedging policy for this request only; see [`crate::RequestBuilder::hedge`].
        fn hedge(policy: HedgePolicy);
        /// Names the partition this request belongs to; see
        /// [`crate::RequestBuilder::partition`].
        fn partition(key: &str);
        /// Time for the whole call, for this request only (the same as
        /// [`deadline`](Self::deadline)).
        fn timeout(timeout: Duration);
        /// Time from sending until the response head arrives, for each attempt.
        fn attempt_timeout(timeout: Duration);
        /// Time for the whole call, body included, for this request only.
        fn deadline(timeout: Duration);
        /// Longest silence between two body chunks, for this request only.
        fn read_idle_timeout(timeout: Duration);
        /// Whether this response is decoded out of its `Content-Encoding`; see
        /// [`crate::RequestBuilder::decompress`].
        fn decompress(decompress: bool);
        /// Sends `form` as `multipart/form-data`; see [`crate::RequestBuilder::multipart`].
        /// Make file parts with
        /// [`Part::blocking_file`](crate::multipart::Part::blocking_file).
        fn multipart(form: crate::multipart::Form);
    }

    /// The URL the request will go to, or why it can't go anywhere.
    pub fn url(&self) -> Result<&Uri, &Error> {
        self.inner.url()
    }

    /// The request, to send later with [`Client::execute`], or the first mistake made
    /// building it.
    pub fn build(self) -> Result<Request, Error> {
        self.inner.build()
    }

    /// Sends the request and returns the response once its head has arrived, within the
    /// call's time limits.
    ///
    /// A status of 4xx or 5xx is not an error here; see [`Response::error_for_status`].
    pub fn send(self) -> Result<Response, Error> {
        let handle = self.client.handle();
        handle.check_context();
        let response = handle.call(self.inner.send())??;
        Ok(Response::new(response, handle.clone()))
    }

    /// The items of the paginated listing this request starts; see [`Paginate`].
    pub fn paginate<I>(self, strategy: Strategy) -> Paginate<I>
    where
        I: DeserializeOwned + Send + 'static,
    {
        Paginate::new(self.inner.paginate(strategy), self.client.handle().clone())
    }

    /// Downloads the body, resuming after a mid-body failure; see [`Download`].
    pub fn download(self) -> Download {
        Download::new(self.inner.download(), self.client.handle().clone())
    }
}

impl<T: Runtime> fmt::Debug for RequestBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}
