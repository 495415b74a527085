use std::fmt;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Method};
use serde::Serialize;
use url::Url;

use super::{request_error, Client, Response, Timeouts};
use crate::body::Body;
use crate::error::{BoxError, Error, ErrorKind};
use crate::transport::Transport;

/// A request being built; [`send`](RequestBuilder::send) it.
///
/// Mistakes (an invalid header, a body that fails to serialize) are kept and returned by
/// `send`, so calls chain without `?` at every step.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder<T> {
    client: Client<T>,
    method: Method,
    url: Result<Url, Error>,
    headers: HeaderMap,
    body: Body,
    timeouts: Timeouts,
    error: Option<Error>,
}

impl<T: Transport> RequestBuilder<T> {
    pub(super) fn new(
        client: Client<T>,
        method: Method,
        url: Result<Url, Error>,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            client,
            method,
            url,
            headers: HeaderMap::new(),
            body: Body::empty(),
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
        if let Ok(url) = &mut self.url {
            if !encoded.is_empty() {
                let merged = match url.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{encoded}"),
                    _ => encoded,
                };
                url.set_query(Some(&merged));
            }
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
                self.body = bytes.into();
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
                self.body = s.into();
                self
            }
            Err(e) => self.fail(request_error(e)),
        }
    }

    /// Sends `body` as it is: bytes, a string, or a [`Body::from_stream`].
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
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
    pub fn url(&self) -> Result<&Url, &Error> {
        self.url.as_ref()
    }

    /// Sends the request and waits for the response head.
    ///
    /// A status of 4xx or 5xx is not an error here; see [`Response::error_for_status`].
    pub async fn send(self) -> Result<Response, Error> {
        let Self {
            client,
            method,
            url,
            headers,
            body,
            timeouts,
            error,
        } = self;
        if let Some(err) = error {
            return Err(match url {
                Ok(url) => err.with_url(url),
                Err(_) => err,
            });
        }
        let url = url?;
        if timeouts.attempt.is_zero() || timeouts.deadline.is_zero() || timeouts.read_idle.is_zero()
        {
            return Err(request_error("a time limit must be greater than zero").with_url(url));
        }
        let uri = match http::Uri::try_from(url.as_str()) {
            Ok(uri) => uri,
            Err(e) => {
                return Err(Error::new(ErrorKind::InvalidUrl)
                    .with_source(e)
                    .with_url(url))
            }
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        client.execute(request, url, timeouts).await
    }
}

impl<T> fmt::Debug for RequestBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("url", &self.url.as_ref().map(Url::as_str))
            .field("headers", &self.headers)
            .field("body", &self.body)
            .finish()
    }
}
