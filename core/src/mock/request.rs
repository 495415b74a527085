//! What a [`MockTransport`](super::MockTransport) saw of one request.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

/// One request as the transport received it: one attempt of a call (a retried call is recorded
/// once per attempt, a redirected one once per hop).
///
/// `Debug` prints the URL through [`redact::url`](crate::redact::url()) and credential header
/// values as `Sensitive` (the client marks them).
#[derive(Clone)]
pub struct RecordedRequest {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
    pub(crate) at: Duration,
}

impl RecordedRequest {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The absolute URL, as sent.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The path of the URL, percent-encoded as sent.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query string of the URL, as sent, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// The decoded value of the first query parameter called `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Every header the transport was given (the backend would add `Host` and framing for a
    /// body with content).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of header `name` as text, if it is present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body, when it was buffered; `None` for a streaming body (which the mock does not
    /// read).
    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// The body parsed as JSON; a streaming body is an error too.
    pub fn body_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        use serde::de::Error as _;
        match &self.body {
            Some(body) => serde_json::from_slice(body),
            None => Err(serde_json::Error::custom(
                "the body was a stream, not recorded",
            )),
        }
    }

    /// When the request was sent, in virtual time since the mock was made.
    pub fn at(&self) -> Duration {
        self.at
    }
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RecordedRequest");
        d.field("method", &self.method)
            .field("url", &format_args!("{}", crate::redact::url(&self.uri)))
            .field("headers", &self.headers);
        match &self.body {
            Some(body) => d.field("body_len", &body.len()),
            None => d.field("body", &"stream"),
        };
        d.field("at", &self.at).finish()
    }
}

impl fmt::Display for RecordedRequest {
    /// `GET https://host/path?query`, the URL redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, crate::redact::url(&self.uri))
    }
}
