//! What a [`Rule`](super::Rule) matches: [`Matcher`]s on the method, the URL, the headers and
//! the body, composed with [`Matcher::and`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::RecordedRequest;

/// A test on a request, with a description for failure messages.
///
/// Build one from the constructors below and compose them with [`and`](Matcher::and) (both
/// must hold) or [`or`](Matcher::or). Paths and query strings are compared as the client sends
/// them: the path percent-encoded, query values decoded.
///
/// ```
/// use keel_core::mock::Matcher;
///
/// let m = Matcher::method("POST")
///     .and(Matcher::path("/v1/orders"))
///     .and(Matcher::header("content-type", "application/json"))
///     .and(Matcher::body_json(&serde_json::json!({ "sku": "A1", "qty": 2 })));
/// assert_eq!(
///     m.to_string(),
///     "method POST and path /v1/orders and header content-type: application/json \
///      and JSON body {\"qty\":2,\"sku\":\"A1\"}",
/// );
/// ```
#[derive(Clone)]
pub struct Matcher {
    test: Arc<dyn Fn(&RecordedRequest) -> bool + Send + Sync>,
    description: String,
}

impl Matcher {
    /// A matcher from any test; `description` names it in failure messages.
    pub fn custom(
        description: impl Into<String>,
        test: impl Fn(&RecordedRequest) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            test: Arc::new(test),
            description: description.into(),
        }
    }

    /// Every request.
    pub fn any() -> Self {
        Self::custom("any request", |_| true)
    }

    /// The method, exactly (`"GET"`, or `http::Method::GET`).
    pub fn method(method: impl AsRef<str>) -> Self {
        let method = method.as_ref().to_owned();
        Self::custom(format!("method {method}"), move |r| {
            r.method().as_str() == method
        })
    }

    /// The URL's path, exactly.
    pub fn path(path: impl Into<String>) -> Self {
        let path = path.into();
        Self::custom(format!("path {path}"), move |r| r.path() == path)
    }

    /// The URL's path starts with `prefix`.
    pub fn path_prefix(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self::custom(format!("path starting with {prefix}"), move |r| {
            r.path().starts_with(prefix.as_str())
        })
    }

    /// The URL's host (lowercase), exactly.
    pub fn host(host: impl Into<String>) -> Self {
        let host = host.into().to_ascii_lowercase();
        Self::custom(format!("host {host}"), move |r| {
            r.uri()
                .host()
                .is_some_and(|h| h.eq_ignore_ascii_case(&host))
        })
    }

    /// A query parameter `name` whose decoded value is `value` (any of its values, if repeated).
    pub fn query(name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        Self::custom(format!("query {name}={value}"), move |r| {
            query_pairs(r).any(|(n, v)| n == name && v == value)
        })
    }

    /// A query parameter `name`, with any value.
    pub fn query_present(name: impl Into<String>) -> Self {
        let name = name.into();
        Self::custom(format!("query parameter {name}"), move |r| {
            query_pairs(r).any(|(n, _)| n == name)
        })
    }

    /// A header `name` (case-insensitive) with the value `value` (any of its values).
    pub fn header(name: impl AsRef<str>, value: impl Into<String>) -> Self {
        let (name, value) = (name.as_ref().to_ascii_lowercase(), value.into());
        Self::custom(format!("header {name}: {value}"), move |r| {
            r.headers()
                .get_all(name.as_str())
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes())
        })
    }

    /// A header `name` (case-insensitive), with any value.
    pub fn header_present(name: impl AsRef<str>) -> Self {
        let name = name.as_ref().to_ascii_lowercase();
        Self::custom(format!("header {name}"), move |r| {
            r.headers().contains_key(name.as_str())
        })
    }

    /// No header `name` (case-insensitive).
    pub fn header_absent(name: impl AsRef<str>) -> Self {
        let name = name.as_ref().to_ascii_lowercase();
        Self::custom(format!("no header {name}"), move |r| {
            !r.headers().contains_key(name.as_str())
        })
    }

    /// A buffered body of exactly these bytes. A streaming body never matches a body matcher.
    pub fn body(body: impl Into<Bytes>) -> Self {
        let body = body.into();
        let shown = String::from_utf8_lossy(&body).into_owned();
        Self::custom(format!("body {shown:?}"), move |r| r.body() == Some(&body))
    }

    /// A buffered body holding `needle` somewhere.
    pub fn body_contains(needle: impl Into<Bytes>) -> Self {
        let needle = needle.into();
        let shown = String::from_utf8_lossy(&needle).into_owned();
        Self::custom(format!("body containing {shown:?}"), move |r| {
            r.body()
                .is_some_and(|b| needle.is_empty() || b.windows(needle.len()).any(|w| w == needle))
        })
    }

    /// A buffered JSON body equal to `value` as JSON (key order and spacing don't matter).
    /// A value that can't be serialized matches nothing, and says so in its description.
    pub fn body_json<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_value(value) {
            Ok(expected) => Self::custom(format!("JSON body {expected}"), move |r| {
                r.body_json::<serde_json::Value>()
                    .is_ok_and(|actual| actual == expected)
            }),
            Err(e) => Self::custom(format!("JSON body (unserializable: {e})"), |_| false),
        }
    }

    /// Both this and `other`.
    pub fn and(self, other: Matcher) -> Self {
        let description = format!("{} and {}", self.description, other.description);
        Self::custom(description, move |r| self.matches(r) && other.matches(r))
    }

    /// This or `other`.
    pub fn or(self, other: Matcher) -> Self {
        let description = format!("({} or {})", self.description, other.description);
        Self::custom(description, move |r| self.matches(r) || other.matches(r))
    }

    /// Whether `request` passes.
    pub fn matches(&self, request: &RecordedRequest) -> bool {
        (self.test)(request)
    }
}

fn query_pairs(r: &RecordedRequest) -> impl Iterator<Item = (String, String)> + '_ {
    let query = r.query().unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes()).map(|(n, v)| (n.into_owned(), v.into_owned()))
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Matcher").field(&self.description).finish()
    }
}
