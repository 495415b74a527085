use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::Uri;
use http::{Extensions, HeaderMap, Method};
use serde::Serialize;

use super::{request_error, url, Call, Client, Pending};
use crate::body::Body;
use crate::error::{BoxError, Error};
use crate::machine::credentials::SensitiveHeaders;
use crate::machine::hedge::HedgePolicy;
use crate::machine::redirect::RedirectPolicy;
use crate::machine::retry::RetryPolicy;
use crate::multipart::{Form, FormBody};
use crate::redact;
use crate::transport::Transport;

/// Rebuilds a request body for another attempt; see [`RequestBuilder::body_with`].
pub(crate) type BodyFn = Arc<dyn Fn() -> Body + Send + Sync>;

/// An owned request: method, URL, headers, body (or a way to rebuild it) and per-request
/// settings. Build one with [`RequestBuilder::build`] (or [`Request::new`]), send it with
/// [`Client::execute`], and copy it with [`Request::try_clone`] to send it again later: the
/// pagination, reconnecting and resuming helpers re-issue requests this way.
///
/// Its `Debug` never shows a credential: the values of `Authorization`, `Proxy-Authorization`,
/// `Cookie` and `Set-Cookie`, and of any value marked sensitive, print as `Sensitive`.
///
/// ```
/// use http::Method;
/// use keel_core::{Body, Request};
///
/// let mut request = Request::new(Method::PUT, "https://api.example.com/v1/items/7".parse().unwrap());
/// request.headers_mut().insert("authorization", "Bearer secret".parse().unwrap());
/// request.set_body(Body::from("{\"name\":\"seven\"}"));
///
/// let copy = request.try_clone().expect("a buffered body can be copied");
/// assert_eq!(copy.url(), request.url());
/// assert!(!format!("{copy:?}").contains("secret"));
///
/// // A one-shot stream can't be copied; a body factory can.
/// let chunks = vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))];
/// request.set_body(Body::from_stream(futures_util::stream::iter(chunks)));
/// assert!(request.try_clone().is_none());
/// request.set_body_with(|| Body::from("rebuilt"));
/// assert!(request.try_clone().is_some());
/// ```
pub struct Request {
    pub(crate) method: Method,
    pub(crate) url: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Body>,
    pub(crate) rebuild: Option<BodyFn>,
    pub(crate) idempotent: Option<bool>,
    pub(crate) timeouts: TimeoutOverrides,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) redirect: Option<RedirectPolicy>,
    /// Boxed: rarely set, and the request is moved around whole.
    pub(crate) hedge: Option<Box<HedgePolicy>>,
    pub(crate) partition: Option<Arc<str>>,
    /// Whether the response is decoded out of its `Content-Encoding`; `None` takes the
    /// client's setting.
    pub(crate) decompress: Option<bool>,
    pub(crate) extensions: Extensions,
}

/// Time limits a request sets for itself; `None` takes the client's.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimeoutOverrides {
    pub(crate) attempt: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) read_idle: Option<Duration>,
}

impl TimeoutOverrides {
    pub(crate) fn any_zero(&self) -> bool {
        [self.attempt, self.deadline, self.read_idle]
            .iter()
            .any(|t| t.is_some_and(|d| d.is_zero()))
    }
}

impl Request {
    /// A request with `method` to `url`, no headers and no body, with the client's settings.
    ///
    /// `url` is absolute, or a path (with no scheme) that [`Client::execute`] joins to the
    /// client's base URL. User info in an absolute `url` (`https://user:pass@host/`) is taken
    /// out of it when the request is sent, and sent as `Authorization: Basic` unless the
    /// request has its own `Authorization` (see [`Client::request`]).
    #[inline]
    pub fn new(method: Method, url: Uri) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            rebuild: None,
            idempotent: None,
            timeouts: TimeoutOverrides::default(),
            retry: None,
            redirect: None,
            hedge: None,
            partition: None,
            decompress: None,
            extensions: Extensions::new(),
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The method, to change it.
    pub fn method_mut(&mut self) -> &mut Method {
        &mut self.method
    }

    /// The URL.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The URL, to change it.
    pub fn url_mut(&mut self) -> &mut Uri {
        &mut self.url
    }

    /// The request's own headers (the client's default headers are added when it is sent).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The request's own headers, to change them.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// Values for the backend or for policies, sent with every attempt.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Values for the backend or for policies, to change them.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The body as given, when it was given as a value (not a factory).
    pub fn body(&self) -> Option<&Body> {
        self.body.as_ref()
    }

    /// Sets the body. A buffered body is sent again as it is on a retry or a 307/308 redirect;
    /// a stream can be sent once.
    pub fn set_body(&mut self, body: impl Into<Body>) {
        self.body = Some(body.into());
        self.rebuild = None;
    }

    /// Sets a body factory, called for every attempt, so a streamed body can be sent again.
    pub fn set_body_with(&mut self, make: impl Fn() -> Body + Send + Sync + 'static) {
        self.rebuild = Some(Arc::new(make));
        self.body = None;
    }

    /// Whether the request has a body (or a body factory).
    pub fn has_body(&self) -> bool {
        self.rebuild.is_some() || self.body.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// The request's own retry policy, if it overrides the client's.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// Overrides the client's retry policy for this request.
    pub fn set_retry_policy(&mut self, policy: Option<RetryPolicy>) {
        self.retry = policy;
    }

    /// The request's own redirect policy, if it overrides the client's.
    pub fn redirect_policy(&self) -> Option<&RedirectPolicy> {
        self.redirect.as_ref()
    }

    /// Overrides the client's redirect policy for this request.
    pub fn set_redirect_policy(&mut self, policy: Option<RedirectPolicy>) {
        self.redirect = policy;
    }

    /// The request's own hedging policy, if it overrides the client's.
    pub fn hedge_policy(&self) -> Option<&HedgePolicy> {
        self.hedge.as_deref()
    }

    /// Overrides the client's hedging policy for this request ([`HedgePolicy::never`] for no
    /// hedge).
    pub fn set_hedge_policy(&mut self, policy: Option<HedgePolicy>) {
        self.hedge = policy.map(Box::new);
    }

    /// The partition the request belongs to, if it names one.
    pub fn partition(&self) -> Option<&str> {
        self.partition.as_deref()
    }

    /// Names the partition the request belongs to (see [`RequestBuilder::partition`]).
    pub fn set_partition(&mut self, key: Option<&str>) {
        self.partition = key.map(Arc::from);
    }

    /// Whether the response is decoded out of its `Content-Encoding`, if the request overrides
    /// the client's [`decompress`](crate::ClientBuilder::decompress).
    pub fn decompress(&self) -> Option<bool> {
        self.decompress
    }

    /// Overrides the client's [`decompress`](crate::ClientBuilder::decompress) for this
    /// request (see [`RequestBuilder::decompress`]).
    pub fn set_decompress(&mut self, decompress: Option<bool>) {
        self.decompress = decompress;
    }

    /// Whether the request declared itself safe (or not) to send twice, overriding its method.
    pub fn idempotent(&self) -> Option<bool> {
        self.idempotent
    }

    /// Declares the request safe (`Some(true)`) or not (`Some(false)`) to send twice.
    pub fn set_idempotent(&mut self, idempotent: Option<bool>) {
        self.idempotent = idempotent;
    }

    /// The time limit for the whole call (the deadline), if it overrides the client's.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeouts.deadline
    }

    /// Sets the time limit for the whole call: every attempt, redirect and backoff, and
    /// reading the body.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeouts.deadline = timeout;
    }

    /// A copy to send again, or `None` when the body is a one-shot stream.
    ///
    /// Headers, settings and extensions are copied; a buffered body is shared, a body factory
    /// is shared and called again.
    pub fn try_clone(&self) -> Option<Self> {
        let body = match &self.body {
            None => None,
            Some(body) => Some(body.try_clone()?),
        };
        Some(Self {
            method: self.method.clone(),
            url: self.url.clone(),
            headers: self.headers.clone(),
            body,
            rebuild: self.rebuild.clone(),
            idempotent: self.idempotent,
            timeouts: self.timeouts,
            retry: self.retry.clone(),
            redirect: self.redirect.clone(),
            hedge: self.hedge.clone(),
            partition: self.partition.clone(),
            decompress: self.decompress,
            extensions: self.extensions.clone(),
        })
    }

    /// Whether the body could be sent again (none, buffered, or a factory).
    pub(crate) fn body_replayable(&self) -> bool {
        self.rebuild.is_some() || self.body.as_ref().is_none_or(Body::is_replayable)
    }

    /// Drops the body (a redirect that turns the request into a `GET`).
    pub(crate) fn clear_body(&mut self) {
        self.body = None;
        self.rebuild = None;
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &redact::url(&self.url))
            .field("headers", &redact::headers(&self.headers))
            .field("body", &self.body)
            .field("body_factory", &self.rebuild.is_some())
            .finish_non_exhaustive()
    }
}

/// A request being built; [`send`](RequestBuilder::send) it, or [`build`](RequestBuilder::build)
/// it into a [`Request`] to send later.
///
/// Mistakes (an invalid header, a body that fails to serialize) are kept and returned by
/// `send` or `build`, so calls chain without `?` at every step.
///
/// Credentials in the URL (`https://user:pass@host/…`) are taken out of it at once and sent
/// as `Authorization: Basic`, marked sensitive, unless the request sets its own
/// `Authorization` ([`header`](Self::header), [`bearer_auth`](Self::bearer_auth),
/// [`basic_auth`](Self::basic_auth)): see [`Client::request`]. Its `Debug` shows no
/// credential.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder<T> {
    client: Client<T>,
    /// The call this builder sends, allocated once: the request is built in place, and
    /// [`send`](Self::send) hands the call to the driver without copying it.
    call: Box<Call>,
    error: Option<Error>,
    /// `Authorization: Basic` from the URL's user info, for a request that sets no
    /// `Authorization` of its own.
    url_credentials: Option<HeaderValue>,
}

impl<T: Transport> RequestBuilder<T> {
    #[inline]
    pub(super) fn new(
        client: Client<T>,
        method: Method,
        url: Result<(Uri, Option<HeaderValue>), Error>,
    ) -> Self {
        let (url, error, url_credentials) = match url {
            Ok((url, credentials)) => (url, None, credentials),
            Err(err) => (Uri::default(), Some(err), None),
        };
        Self {
            call: client.unstarted(Request::new(method, url)),
            client,
            error,
            url_credentials,
        }
    }

    /// Puts the URL's credentials in `Authorization`, unless the request set its own.
    #[inline]
    fn take_url_credentials(&mut self) {
        if let Some(value) = self.url_credentials.take() {
            self.call
                .request
                .headers
                .entry(AUTHORIZATION)
                .or_insert(value);
        }
    }

    fn fail(mut self, err: Error) -> Self {
        self.error.get_or_insert(err);
        self
    }

    fn sensitive(&self) -> &SensitiveHeaders {
        &self.client.shared.config.sensitive
    }

    /// Adds a header. Request headers replace the client's default headers of the same name.
    ///
    /// A credential (`Authorization`, `Proxy-Authorization`, `Cookie`, or a header the client
    /// marked with [`ClientBuilder::sensitive_header`](crate::ClientBuilder::sensitive_header))
    /// is marked sensitive: it never shows in `Debug` output or logs, and a redirect to another
    /// origin drops it.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<BoxError>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<BoxError>,
    {
        let name = match HeaderName::try_from(name) {
            Ok(n) => n,
            Err(e) => return self.fail(request_error(e)),
        };
        match HeaderValue::try_from(value) {
            Ok(mut v) => {
                if self.sensitive().contains(&name) {
                    v.set_sensitive(true);
                }
                self.call.request.headers.append(name, v);
                self
            }
            Err(e) => self.fail(request_error(e)),
        }
    }

    /// Adds every header in `headers` (credentials marked sensitive, as [`header`](Self::header) does).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        let mut last = None;
        for (name, mut value) in headers {
            let name = match name {
                Some(n) => {
                    last = Some(n.clone());
                    n
                }
                None => match &last {
                    Some(n) => n.clone(),
                    None => continue,
                },
            };
            if self.sensitive().contains(&name) {
                value.set_sensitive(true);
            }
            self.call.request.headers.append(name, value);
        }
        self
    }

    /// Sets `Authorization: Bearer <token>`, marked sensitive so it is never logged.
    pub fn bearer_auth(self, token: &str) -> Self {
        match super::bearer(token) {
            Ok(v) => {
                let mut s = self;
                s.call.request.headers.insert(AUTHORIZATION, v);
                s
            }
            Err(e) => self.fail(request_error(e)),
        }
    }

    /// Sets `Authorization: Basic <base64(user:password)>`, marked sensitive so it is never
    /// logged.
    pub fn basic_auth(mut self, user: &str, password: Option<&str>) -> Self {
        self.call
            .request
            .headers
            .insert(AUTHORIZATION, super::basic(user, password));
        self
    }

    /// Appends `query` (anything `serde_urlencoded` can serialize: a struct, a map, a slice of
    /// pairs) to the URL's query string.
    pub fn query<Q: Serialize + ?Sized>(mut self, query: &Q) -> Self {
        let encoded = match serde_urlencoded::to_string(query) {
            Ok(s) => s,
            Err(e) => return self.fail(request_error(e)),
        };
        if self.error.is_none() {
            match url::append_query(&self.call.request.url, &encoded) {
                Ok(url) => self.call.request.url = url,
                Err(e) => return self.fail(e),
            }
        }
        self
    }

    /// Sends `value` as JSON, with `Content-Type: application/json`.
    pub fn json<B: Serialize + ?Sized>(mut self, value: &B) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.call
                    .request
                    .headers
                    .entry(CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static("application/json"));
                self.call.request.set_body(bytes);
                self
            }
            Err(e) => self.fail(request_error(e)),
        }
    }

    /// Sends `value` URL-encoded, with `Content-Type: application/x-www-form-urlencoded`.
    pub fn form<B: Serialize + ?Sized>(mut self, value: &B) -> Self {
        match serde_urlencoded::to_string(value) {
            Ok(s) => {
                self.call
                    .request
                    .headers
                    .entry(CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static(
                        "application/x-www-form-urlencoded",
                    ));
                self.call.request.set_body(s);
                self
            }
            Err(e) => self.fail(request_error(e)),
        }
    }

    /// Sends `form` as `multipart/form-data`, with its `Content-Type` (and boundary) and,
    /// when every part's length is known, `Content-Length` (otherwise it is sent chunked).
    ///
    /// A form of text, bytes and file parts is encoded again for every attempt (files are
    /// reopened), so the request can be retried and redirected with 307/308 like one with a
    /// buffered body; one with a [`Part::reader`](crate::multipart::Part::reader) can be sent
    /// once, as [`body`](Self::body) says of streams. Files and readers are streamed in
    /// chunks, never read whole. A mistake in a part fails the request with
    /// [`ErrorKind::InvalidRequest`](crate::ErrorKind::InvalidRequest).
    ///
    /// ```
    /// # async fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) -> Result<(), keel_core::Error> {
    /// use keel_core::multipart::{Form, Part};
    ///
    /// let form = Form::new()
    ///     .text("album", "holidays")
    ///     .part("photo", Part::file("beach.jpg").await?);
    /// // A POST is retried only when it says it may be sent twice.
    /// let response = client.post("/photos").idempotent(true).multipart(form).send().await?;
    /// # let _ = response; Ok(()) }
    /// ```
    pub fn multipart(mut self, form: Form) -> Self {
        let encoded = match form.into_request_body() {
            Ok(encoded) => encoded,
            Err(e) => return self.fail(e),
        };
        let headers = &mut self.call.request.headers;
        headers.insert(CONTENT_TYPE, encoded.content_type);
        match encoded.length {
            Some(length) => headers.insert(CONTENT_LENGTH, HeaderValue::from(length)),
            None => headers.remove(CONTENT_LENGTH),
        };
        match encoded.body {
            FormBody::Rebuild(make) => self.call.request.set_body_with(move || make()),
            FormBody::Once(body) => self.call.request.set_body(body),
        }
        self
    }

    /// Sends `body` as it is: bytes, a string, or a [`Body::from_stream`].
    ///
    /// A buffered body is sent again as it is when the request is retried or redirected with
    /// 307/308. A stream can be sent once: a failure after it was sent is returned without a
    /// retry (the error's [`gave_up`](Error::gave_up) says so), and a 307/308 redirect fails
    /// with [`RedirectRefusal::BodyNotReplayable`](crate::RedirectRefusal::BodyNotReplayable),
    /// unless the body is given with [`body_with`](Self::body_with) instead.
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.call.request.set_body(body);
        self
    }

    /// Sends the body `make` returns, calling it again for every attempt, so a streaming body
    /// can be retried.
    ///
    /// ```
    /// # fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) {
    /// use keel_core::Body;
    /// let upload = client.put("/objects/1").body_with(|| {
    ///     let chunks = vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"part"))];
    ///     Body::from_stream(futures_util::stream::iter(chunks))
    /// });
    /// # let _ = upload; }
    /// ```
    pub fn body_with(mut self, make: impl Fn() -> Body + Send + Sync + 'static) -> Self {
        self.call.request.set_body_with(make);
        self
    }

    /// Declares whether the request may be sent more than once, overriding the method and the
    /// idempotency-key header. `true` lets a `POST` be retried; `false` stops a `GET` from
    /// being retried once it may have reached the server. A failure that provably never
    /// reached the server is retried either way.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.call.request.idempotent = Some(idempotent);
        self
    }

    /// The retry policy for this request only, replacing the client's
    /// ([`RetryPolicy::disabled`] for none).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.call.request.retry = Some(policy);
        self
    }

    /// The redirect policy for this request only, replacing the client's
    /// ([`RedirectPolicy::none`] to get the 3xx itself).
    pub fn redirect_policy(mut self, policy: RedirectPolicy) -> Self {
        self.call.request.redirect = Some(policy);
        self
    }

    /// The hedging policy for this request only, replacing the client's
    /// ([`HedgePolicy::never`] for none). Only a request that is safe to send twice (by its
    /// method, its idempotency key, or [`idempotent`](Self::idempotent)) with a body that can
    /// be sent again is ever hedged. See [`ClientBuilder::hedge`](crate::ClientBuilder::hedge).
    pub fn hedge(mut self, policy: HedgePolicy) -> Self {
        self.call.request.hedge = Some(Box::new(policy));
        self
    }

    /// Names the partition this request belongs to: its circuit breaker and the server's
    /// quota holds are then the partition's, shared by every request naming it on this
    /// client, instead of its origin's.
    ///
    /// Use it when one origin serves independent things that fail or run out of quota on
    /// their own: one breaker per downstream service behind a gateway, one quota per account
    /// or API key. A server whose `RateLimit` fields name a partition (`pk`) holds requests
    /// naming the same key. The client keeps at most 1,024 partitions, forgetting unused ones
    /// when it has more.
    ///
    /// ```
    /// # async fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) -> Result<(), keel_core::Error> {
    /// // Billing and search sit behind one gateway; a failing billing service must not open
    /// // the breaker for search.
    /// let invoices = client.get("/billing/invoices").partition("billing").send().await?;
    /// let hits = client.get("/search?q=keel").partition("search").send().await?;
    /// # let _ = (invoices, hits); Ok(()) }
    /// ```
    pub fn partition(mut self, key: &str) -> Self {
        self.call.request.partition = Some(Arc::from(key));
        self
    }

    /// Time for the whole call, for this request only: every attempt, redirect and backoff,
    /// and reading the body, as reqwest's `timeout` means. The same as
    /// [`deadline`](Self::deadline).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.deadline(timeout)
    }

    /// Time from sending until the response head arrives, for each attempt of this request.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.call.request.timeouts.attempt = Some(timeout);
        self
    }

    /// Time for the whole call, body included, for this request only.
    pub fn deadline(mut self, timeout: Duration) -> Self {
        self.call.request.timeouts.deadline = Some(timeout);
        self
    }

    /// Longest silence between two body chunks, for this request only.
    pub fn read_idle_timeout(mut self, timeout: Duration) -> Self {
        self.call.request.timeouts.read_idle = Some(timeout);
        self
    }

    /// Whether this response is decoded out of its `Content-Encoding`, overriding the
    /// client's [`decompress`](crate::ClientBuilder::decompress).
    ///
    /// `false` gets the body's bytes as the server sent them: keel sends no
    /// `Accept-Encoding` of its own (one the request sets, or a client default header, is sent
    /// as set) and decodes nothing, so `Content-Encoding` and `Content-Length` stay in the
    /// headers. `true` on a client that doesn't decompress asks for and decodes the codings
    /// compiled in, for this request.
    ///
    /// ```
    /// # async fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) -> Result<(), keel_core::Error> {
    /// // A gzip file to store as it is, not to read.
    /// let archive = client.get("/exports/2026-12.json.gz").decompress(false).send().await?;
    /// let raw = archive.bytes().await?;
    /// # let _ = raw; Ok(()) }
    /// ```
    pub fn decompress(mut self, decompress: bool) -> Self {
        self.call.request.decompress = Some(decompress);
        self
    }

    /// Adds a value to the request's extensions, for the backend or for policies.
    pub fn extension<V: Clone + Send + Sync + 'static>(mut self, value: V) -> Self {
        self.call.request.extensions.insert(value);
        self
    }

    /// The URL the request will go to, or why it can't go anywhere.
    pub fn url(&self) -> Result<&Uri, &Error> {
        match &self.error {
            Some(err) if self.call.request.url == Uri::default() => Err(err),
            _ => Ok(&self.call.request.url),
        }
    }

    /// The request, to send later with [`Client::execute`] (or to copy and send several
    /// times), or the first mistake made building it.
    pub fn build(mut self) -> Result<Request, Error> {
        self.take_url_credentials();
        match self.error {
            Some(err) if self.call.request.url == Uri::default() => Err(err),
            Some(err) => Err(err.with_url(self.call.into_request().url)),
            None => Ok(self.call.into_request()),
        }
    }

    /// The items of the paginated listing this request starts, as a stream; see
    /// [`Client::paginate`](crate::Client::paginate).
    pub fn paginate<I: serde::de::DeserializeOwned>(
        mut self,
        strategy: crate::machine::paginate::Strategy,
    ) -> crate::Paginate<I> {
        self.take_url_credentials();
        match self.error {
            None => self.client.paginate(self.call.into_request(), strategy),
            Some(err) => {
                let mut stream = self
                    .client
                    .paginate(Request::new(Method::GET, Uri::default()), strategy);
                stream.fail_with(err);
                stream
            }
        }
    }

    /// Reads server-sent events from this request, sending it again when the connection
    /// drops; see [`Client::event_source`](crate::Client::event_source).
    pub fn event_source(mut self) -> crate::EventSource {
        self.take_url_credentials();
        match self.error {
            None => self.client.event_source(self.call.into_request()),
            Some(err) => self.client.event_source_failed(err),
        }
    }

    /// Downloads the body, resuming with `Range` + `If-Range` after a mid-body failure; see
    /// [`Client::download`](crate::Client::download) and [`Download`](crate::Download).
    pub fn download(mut self) -> crate::Download {
        self.take_url_credentials();
        match self.error {
            None => self.client.download(self.call.into_request()),
            Some(err) if self.call.request.url == Uri::default() => {
                self.client.download_failed(err)
            }
            Some(err) => self
                .client
                .download_failed(err.with_url(self.call.into_request().url)),
        }
    }

    /// Sends the request; the returned future resolves to the response once its head arrives.
    ///
    /// Nothing starts until the future is first polled: the deadline, the attempt and every
    /// time limit count from then, so futures built ahead and polled later (by a concurrency
    /// limit, say) don't spend their time waiting in a queue.
    ///
    /// A status of 4xx or 5xx is not an error here; see [`Response::error_for_status`](crate::Response::error_for_status).
    #[inline]
    pub fn send(mut self) -> Pending {
        self.take_url_credentials();
        match self.error {
            None => self.client.send_call(self.call, true),
            Some(err) if self.call.request.url == Uri::default() => Pending::failed(err),
            Some(err) => Pending::failed(err.with_url(self.call.into_request().url)),
        }
    }
}

impl<T> fmt::Debug for RequestBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.call.request.method)
            .field("url", &redact::url(&self.call.request.url))
            .field(
                "headers",
                &redact::headers_with(
                    &self.call.request.headers,
                    &self.client.shared.config.sensitive,
                ),
            )
            .field("body", &self.call.request.body)
            .field("url_credentials", &self.url_credentials.is_some())
            .finish()
    }
}
