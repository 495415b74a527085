use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::Uri;
use http::{HeaderMap, Method};
use serde::Serialize;

use super::pending::{BodyFn, Parts};
use super::{request_error, url, Client, Dispatch, Pending, Timeouts};
use crate::body::Body;
use crate::error::{BoxError, Error};
use crate::transport::Transport;

/// A request being built; [`send`](RequestBuilder::send) it.
///
/// Mistakes (an invalid header, a body that fails to serialize) are kept and returned by
/// `send`, so calls chain without `?` at every step.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder<T> {
    client: Client<T>,
    method: Method,
    url: Result<Uri, Error>,
    headers: HeaderMap,
    body: Option<Body>,
    rebuild: Option<BodyFn>,
    idempotent: Option<bool>,
    timeouts: Timeouts,
    error: Option<Error>,
}

impl<T: Transport> RequestBuilder<T> {
    pub(super) fn new(
        client: Client<T>,
        method: Method,
        url: Result<Uri, Error>,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            client,
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            rebuild: None,
            idempotent: None,
            timeouts,
            error: None,
        }
    }

    fn fail(mut self, err: Error) -> Self {
        self.error.get_or_insert(err);
        self
    }

    /// Adds a header. Request headers replace the client's default headers of the same name.
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
            Ok(v) => {
                self.headers.append(name, v);
                self
            }
            Err(e) => self.fail(request_error(e)),
        }
    }

    /// Adds every header in `headers`.
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        let mut last = None;
        for (name, value) in headers {
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
            self.headers.append(name, value);
        }
        self
    }

    /// Sets `Authorization: Bearer <token>`, marked sensitive so it is never logged.
    pub fn bearer_auth(self, token: &str) -> Self {
        match HeaderValue::try_from(format!("Bearer {token}")) {
            Ok(mut v) => {
                v.set_sensitive(true);
                let mut s = self;
                s.headers.insert(AUTHORIZATION, v);
                s
            }
            Err(e) => self.fail(request_error(e)),
        }
    }

    /// Appends `query` (anything `serde_urlencoded` can serialize: a struct, a map, a slice of
    /// pairs) to the URL's query string.
    pub fn query<Q: Serialize + ?Sized>(mut self, query: &Q) -> Self {
        let encoded = match serde_urlencoded::to_string(query) {
            Ok(s) => s,
            Err(e) => return self.fail(request_error(e)),
        };
        if let Ok(uri) = &self.url {
            self.url = url::append_query(uri, &encoded);
        }
        self
    }

    /// Sends `value` as JSON, with `Content-Type: application/json`.
    pub fn json<B: Serialize + ?Sized>(mut self, value: &B) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.headers
                    .entry(CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static("application/json"));
                self.body = Some(bytes.into());
                self
            }
            Err(e) => self.fail(request_error(e)),
        }
    }

    /// Sends `value` URL-encoded, with `Content-Type: application/x-www-form-urlencoded`.
    pub fn form<B: Serialize + ?Sized>(mut self, value: &B) -> Self {
        match serde_urlencoded::to_string(value) {
            Ok(s) => {
                self.headers
                    .entry(CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static(
                        "application/x-www-form-urlencoded",
                    ));
                self.body = Some(s.into());
                self
            }
            Err(e) => self.fail(request_error(e)),
        }
    }

    /// Sends `body` as it is: bytes, a string, or a [`Body::from_stream`].
    ///
    /// A buffered body is sent again as it is when the request is retried. A stream can be sent
    /// once: a failure after it was sent is returned without a retry (the error's
    /// [`gave_up`](Error::gave_up) says so), unless the body is given with
    /// [`body_with`](Self::body_with) instead.
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = Some(body.into());
        self.rebuild = None;
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
        self.rebuild = Some(Arc::new(make));
        self.body = None;
        self
    }

    /// Declares whether the request may be sent more than once, overriding the method and the
    /// idempotency-key header. `true` lets a `POST` be retried; `false` stops a `GET` from
    /// being retried once it may have reached the server. A failure that provably never
    /// reached the server is retried either way.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Time from sending until the response head arrives, for this request only.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.attempt = timeout;
        self
    }

    /// Time for the whole call, body included, for this request only.
    pub fn deadline(mut self, timeout: Duration) -> Self {
        self.timeouts.deadline = timeout;
        self
    }

    /// Longest silence between two body chunks, for this request only.
    pub fn read_idle_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.read_idle = timeout;
        self
    }

    /// The URL the request will go to, or why it can't go anywhere.
    pub fn url(&self) -> Result<&Uri, &Error> {
        self.url.as_ref()
    }

    /// Sends the request; the returned future resolves to the response once its head arrives.
    ///
    /// A status of 4xx or 5xx is not an error here; see [`Response::error_for_status`](crate::Response::error_for_status).
    pub fn send(self) -> Pending {
        let Self {
            client,
            method,
            url,
            headers,
            body,
            rebuild,
            idempotent,
            timeouts,
            error,
        } = self;
        if let Some(err) = error {
            return Pending::failed(match url {
                Ok(url) => err.with_url(url),
                Err(_) => err,
            });
        }
        let url = match url {
            Ok(url) => url,
            Err(err) => return Pending::failed(err),
        };
        if timeouts.attempt.is_zero() || timeouts.deadline.is_zero() || timeouts.read_idle.is_zero()
        {
            return Pending::failed(
                request_error("a time limit must be greater than zero").with_url(url),
            );
        }
        let seed = client.shared.next_seed();
        let shared: Arc<dyn Dispatch> = client.shared;
        Pending::start(
            shared,
            seed,
            Parts {
                method,
                url,
                headers,
                body,
                rebuild,
                idempotent,
                timeouts,
            },
        )
    }
}

impl<T> fmt::Debug for RequestBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("url", &self.url.as_ref().ok())
            .field("headers", &self.headers)
            .field("body", &self.body)
            .finish()
    }
}
