//! Credentials: which headers carry them, and which URLs may receive them.
//!
//! A credential sent to one origin must never reach another: not through a redirect, a
//! pagination link, or an absolute URL given to a client with a base URL. Two pieces make that
//! checkable:
//!
//! - [`SensitiveHeaders`]: the set of header names that are credentials. `Authorization`,
//!   `Proxy-Authorization`, `Cookie` and `Set-Cookie` always are; a client adds its own (an
//!   `X-Api-Key`, say). The set can strip them from a request
//!   ([`remove_from`](SensitiveHeaders::remove_from)) or mark their values so that `Debug` and
//!   logs print `Sensitive` instead of the secret ([`mark`](SensitiveHeaders::mark)).
//! - [`same_origin`]: whether two URLs have the same scheme, host and port, the boundary
//!   credentials may not cross.
//!
//! Nothing here allocates except [`SensitiveHeaders::insert`] of a name that is not in the set
//! yet.
//!
//! # Example
//!
//! ```
//! use http::header::{HeaderMap, HeaderName, AUTHORIZATION, CONTENT_TYPE};
//! use http::Uri;
//! use keel_core::machine::credentials::{same_origin, SensitiveHeaders};
//!
//! let mut sensitive = SensitiveHeaders::default();
//! sensitive.insert(HeaderName::from_static("x-api-key"));
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(AUTHORIZATION, "Bearer secret".parse().unwrap());
//! headers.insert("x-api-key", "k-123".parse().unwrap());
//! headers.insert(CONTENT_TYPE, "application/json".parse().unwrap());
//!
//! // Logged requests don't show the secrets.
//! sensitive.mark(&mut headers);
//! assert_eq!(format!("{:?}", headers[AUTHORIZATION]), "Sensitive");
//!
//! let from: Uri = "https://api.example.com/v1/items".parse().unwrap();
//! let to: Uri = "https://cdn.example.com/items/1".parse().unwrap();
//! if !same_origin(&from, &to) {
//!     sensitive.remove_from(&mut headers);
//! }
//! assert_eq!(headers.len(), 1);
//! assert!(headers.contains_key(CONTENT_TYPE));
//! ```

use std::fmt;

use http::header::{HeaderMap, HeaderName, AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use http::Uri;

/// The header names that are always sensitive.
static STANDARD: [HeaderName; 4] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE];

/// A set of header names whose values are credentials.
///
/// The [default](SensitiveHeaders::default) set holds `Authorization`, `Proxy-Authorization`,
/// `Cookie` and `Set-Cookie`; those can't be taken out. [`insert`](Self::insert) adds more.
/// A credential header is removed before a request goes to another origin (see
/// [`same_origin`]) and marked sensitive so that it is never printed.
///
/// Lookups are cheap: the four standard names are compared first (a comparison of two known
/// names is a comparison of two small integers), then the added names, kept in a short list.
///
/// # Example
///
/// ```
/// use http::header::{HeaderName, COOKIE, CONTENT_TYPE};
/// use keel_core::machine::credentials::SensitiveHeaders;
///
/// let mut sensitive = SensitiveHeaders::default();
/// assert!(sensitive.contains(&COOKIE));
/// assert!(!sensitive.contains(&CONTENT_TYPE));
///
/// let key = HeaderName::from_static("x-api-key");
/// sensitive.insert(key.clone());
/// assert!(sensitive.contains(&key));
/// assert_eq!(sensitive.iter().count(), 5);
/// ```
#[derive(Clone, Default)]
pub struct SensitiveHeaders {
    /// Names added with `insert`, none of them a standard one, without duplicates.
    extra: Vec<HeaderName>,
}

impl SensitiveHeaders {
    /// The default set: `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` to the set; a name already in it is left as it is.
    pub fn insert(&mut self, name: HeaderName) {
        if !self.contains(&name) {
            self.extra.push(name);
        }
    }

    /// Whether `name` is a credential header.
    pub fn contains(&self, name: &HeaderName) -> bool {
        STANDARD.iter().any(|standard| standard == name) || self.extra.iter().any(|n| n == name)
    }

    /// Whether names were added to the four standard ones.
    pub(crate) fn has_extra(&self) -> bool {
        !self.extra.is_empty()
    }

    /// Every name in the set: the four standard ones first, then the added ones in the order
    /// they were added.
    pub fn iter(&self) -> impl Iterator<Item = &HeaderName> + '_ {
        STANDARD.iter().chain(self.extra.iter())
    }

    /// Removes every value of every sensitive header from `headers`.
    ///
    /// ```
    /// use http::header::{HeaderMap, ACCEPT, COOKIE};
    /// use keel_core::machine::credentials::SensitiveHeaders;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.append(COOKIE, "a=1".parse().unwrap());
    /// headers.append(COOKIE, "b=2".parse().unwrap());
    /// headers.insert(ACCEPT, "*/*".parse().unwrap());
    /// SensitiveHeaders::default().remove_from(&mut headers);
    /// assert!(!headers.contains_key(COOKIE));
    /// assert_eq!(headers.len(), 1);
    /// ```
    pub fn remove_from(&self, headers: &mut HeaderMap) {
        if headers.is_empty() {
            return;
        }
        for name in self.iter() {
            headers.remove(name);
        }
    }

    /// Marks every value of every sensitive header in `headers` as sensitive
    /// ([`HeaderValue::set_sensitive`](http::HeaderValue::set_sensitive)): its `Debug` prints
    /// `Sensitive`, and HTTP/2 encoders keep it out of their compression tables.
    ///
    /// ```
    /// use http::header::{HeaderMap, AUTHORIZATION};
    /// use keel_core::machine::credentials::SensitiveHeaders;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(AUTHORIZATION, "Basic dXNlcjpwYXNz".parse().unwrap());
    /// SensitiveHeaders::default().mark(&mut headers);
    /// assert!(headers[AUTHORIZATION].is_sensitive());
    /// assert_eq!(format!("{headers:?}"), r#"{"authorization": Sensitive}"#);
    /// ```
    pub fn mark(&self, headers: &mut HeaderMap) {
        for (name, value) in headers.iter_mut() {
            if self.contains(name) {
                value.set_sensitive(true);
            }
        }
    }
}

/// Marks the values of the four standard credential headers sensitive: what a response does
/// to its headers, once per response, so the loop is as cheap as it can be (a few comparisons
/// of standard names per header).
#[inline]
pub(crate) fn mark_standard(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if name == SET_COOKIE
            || name == COOKIE
            || name == AUTHORIZATION
            || name == PROXY_AUTHORIZATION
        {
            value.set_sensitive(true);
        }
    }
}

impl fmt::Debug for SensitiveHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Extend<HeaderName> for SensitiveHeaders {
    fn extend<I: IntoIterator<Item = HeaderName>>(&mut self, names: I) {
        for name in names {
            self.insert(name);
        }
    }
}

/// Whether `a` and `b` have the same origin: the same scheme, host and port.
///
/// Schemes and hosts compare ASCII case-insensitively, the brackets around an IPv6 address
/// don't count, and a missing port is the scheme's default (80 for `http` and `ws`, 443 for
/// `https` and `wss`), so `http://Example.com/a` and `HTTP://example.com:80/b` have the same
/// origin. User info (`user:pass@`) is not part of the origin. A URI without a scheme or a
/// host (a bare path such as `/a`) has no origin: it is never the same origin as anything, not
/// even itself; nor is a URI whose port isn't a number below 65536.
///
/// It never allocates.
///
/// ```
/// use http::Uri;
/// use keel_core::machine::credentials::same_origin;
///
/// let uri = |s: &str| s.parse::<Uri>().unwrap();
/// assert!(same_origin(&uri("https://api.example.com/a"), &uri("https://API.example.com:443/b?c")));
/// assert!(same_origin(&uri("http://[::1]:8080/"), &uri("http://[::1]:8080/x")));
/// assert!(!same_origin(&uri("https://api.example.com/"), &uri("http://api.example.com/")));
/// assert!(!same_origin(&uri("https://api.example.com/"), &uri("https://api.example.com:8443/")));
/// assert!(!same_origin(&uri("https://example.com/"), &uri("https://www.example.com/")));
/// assert!(!same_origin(&uri("/a"), &uri("/a")));
/// ```
pub fn same_origin(a: &Uri, b: &Uri) -> bool {
    // The common case, on every request: both name the origin with the same bytes.
    if let (Some(sa), Some(sb), Some(aa), Some(ab)) =
        (a.scheme_str(), b.scheme_str(), a.authority(), b.authority())
    {
        if sa == sb
            && matches!(sa, "http" | "https")
            && aa.as_str() == ab.as_str()
            && !aa.as_str().is_empty()
            && (!aa.as_str().contains(':') || aa.port_u16().is_some())
        {
            return true;
        }
    }
    match (Origin::of(a), Origin::of(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The parts of a URI that make its origin, borrowed from it.
#[derive(Clone, Copy, Debug)]
struct Origin<'a> {
    scheme: &'a str,
    /// Without the brackets of an IPv6 address.
    host: &'a str,
    port: u16,
}

impl<'a> Origin<'a> {
    fn of(uri: &'a Uri) -> Option<Self> {
        let scheme = uri.scheme_str()?;
        let authority = uri.authority()?.as_str();
        // User info can hold ':' and '@' (percent-encoded or not); the host starts after the
        // last '@'.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = match host_port.strip_prefix('[') {
            Some(rest) => {
                let (host, after) = rest.split_once(']')?;
                let port = match after {
                    "" => None,
                    after => Some(after.strip_prefix(':')?),
                };
                (host, port)
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            // `http://host:/` has an empty port, which means the default.
            Some(port) if !port.is_empty() => {
                if !port.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                port.parse().ok()?
            }
            _ => default_port(scheme)?,
        };
        Some(Self { scheme, host, port })
    }
}

impl PartialEq for Origin<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.port == other.port
            && self.scheme.eq_ignore_ascii_case(other.scheme)
            && self.host.eq_ignore_ascii_case(other.host)
    }
}

/// The port a scheme uses when a URI names none; `None` for a scheme without a known default,
/// whose URIs then have an origin only with an explicit port.
fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
    use http::HeaderValue;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn same(a: &str, b: &str) -> bool {
        same_origin(&uri(a), &uri(b))
    }

    #[test]
    fn default_set_holds_the_four_standard_names() {
        let sensitive = SensitiveHeaders::default();
        for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE] {
            assert!(sensitive.contains(&name), "{name}");
        }
        for name in [CONTENT_TYPE, HOST, HeaderName::from_static("x-api-key")] {
            assert!(!sensitive.contains(&name), "{name}");
        }
        assert_eq!(sensitive.iter().count(), 4);
        assert_eq!(
            format!("{sensitive:?}"),
            r#"{"authorization", "proxy-authorization", "cookie", "set-cookie"}"#
        );
    }

    #[test]
    fn insert_adds_once_and_keeps_order() {
        let mut sensitive = SensitiveHeaders::new();
        let key = HeaderName::from_static("x-api-key");
        let token = HeaderName::from_static("x-token");
        sensitive.insert(key.clone());
        sensitive.insert(AUTHORIZATION);
        sensitive.insert(key.clone());
        sensitive.extend([token.clone(), HeaderName::from_bytes(b"X-Api-Key").unwrap()]);
        let names: Vec<_> = sensitive.iter().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "authorization",
                "proxy-authorization",
                "cookie",
                "set-cookie",
                "x-api-key",
                "x-token"
            ]
        );
        assert!(sensitive.contains(&key) && sensitive.contains(&token));
        // A name parsed at run time is the same name.
        assert!(sensitive.contains(&HeaderName::from_bytes(b"X-Token").unwrap()));
    }

    #[test]
    fn remove_from_removes_every_value_and_nothing_else() {
        let mut sensitive = SensitiveHeaders::default();
        sensitive.insert(HeaderName::from_static("x-api-key"));
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, HeaderValue::from_static("a"));
        headers.append(AUTHORIZATION, HeaderValue::from_static("b"));
        headers.append(SET_COOKIE, HeaderValue::from_static("c=1"));
        headers.append("x-api-key", HeaderValue::from_static("k"));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers.append("x-other", HeaderValue::from_static("1"));
        headers.append("x-other", HeaderValue::from_static("2"));
        sensitive.remove_from(&mut headers);
        assert_eq!(headers.len(), 3);
        assert_eq!(headers.keys_len(), 2);
        assert_eq!(headers.get_all("x-other").iter().count(), 2);

        let mut empty = HeaderMap::new();
        sensitive.remove_from(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn mark_marks_every_value_of_sensitive_headers_only() {
        let mut sensitive = SensitiveHeaders::default();
        sensitive.insert(HeaderName::from_static("x-api-key"));
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        headers.append("x-api-key", HeaderValue::from_static("k"));
        headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        sensitive.mark(&mut headers);
        for (name, value) in &headers {
            assert_eq!(value.is_sensitive(), name != CONTENT_TYPE, "{name}");
        }
        let printed = format!("{headers:?}");
        assert!(
            !printed.contains("a=1") && !printed.contains("k\""),
            "{printed}"
        );
        assert!(printed.contains("text/plain"));
    }

    #[test]
    fn same_origin_cases() {
        assert!(same("http://a.example/x", "http://a.example/y?z"));
        assert!(same("http://a.example/", "http://a.example:80/"));
        assert!(same("https://a.example/", "https://a.example:443/"));
        assert!(same("HTTPS://A.Example/", "https://a.example/"));
        assert!(same("http://a.example:/", "http://a.example/"));
        assert!(same("http://user:pw@a.example/", "http://a.example/"));
        assert!(same("http://[::1]/", "http://[::1]:80/"));
        assert!(same("http://[::1]:8080/", "http://[::1]:8080/"));
        assert!(same("http://[FE80::1]/", "http://[fe80::1]/"));
        assert!(same("http://127.0.0.1:8080/", "http://127.0.0.1:8080/p"));
        assert!(same("ws://a.example/", "ws://a.example:80/"));
        assert!(same("foo://a.example:1/", "foo://a.example:1/"));

        assert!(!same("http://a.example/", "https://a.example/"));
        assert!(!same("http://a.example:80/", "https://a.example:80/"));
        assert!(!same("http://a.example/", "http://a.example:8080/"));
        assert!(!same("https://a.example/", "https://a.example:80/"));
        assert!(!same("http://a.example/", "http://b.example/"));
        assert!(!same("http://a.example/", "http://a.example.evil/"));
        assert!(!same("http://[::1]/", "http://[::2]/"));
        assert!(!same("http://[::1]/", "http://127.0.0.1/"));
        // No origin: no scheme or no host, or a scheme without a default port and no port.
        assert!(!same("/a", "/a"));
        assert!(!same("a.example", "a.example"));
        assert!(!same("*", "*"));
        assert!(!same("foo://a.example/", "foo://a.example/"));
    }

    #[test]
    fn strange_ports_have_no_origin() {
        for s in ["http://a.example:99999/", "http://a.example:8o/"] {
            if let Ok(u) = s.parse::<Uri>() {
                assert!(!same_origin(&u, &u), "{s}");
            }
        }
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z][a-zA-Z0-9-]{0,8}(\\.[a-zA-Z]{1,4}){0,2}",
            (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
            prop_oneof![Just("[::1]"), Just("[fe80::1]"), Just("[FE80::A:1]")]
                .prop_map(String::from),
        ]
    }

    fn origin() -> impl Strategy<Value = (String, String, Option<u16>)> {
        (
            prop_oneof![Just("http"), Just("https"), Just("HTTP"), Just("Https")],
            host(),
            proptest::option::of(prop_oneof![Just(80u16), Just(443), 1u16..=u16::MAX]),
        )
            .prop_map(|(s, h, p)| (s.to_string(), h, p))
    }

    fn render((scheme, host, port): &(String, String, Option<u16>), path: &str) -> Uri {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        uri(&format!("{scheme}://{host}{port}{path}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            rng_seed: RngSeed::Fixed(0x0c_4ed5),
            ..ProptestConfig::default()
        })]

        /// Reflexive, symmetric, blind to paths, case and explicit default ports.
        #[test]
        fn same_origin_is_an_equivalence_on_origins(
            a in origin(),
            b in origin(),
            path_a in "(/[a-z0-9]{0,5}){0,3}(\\?[a-z=&]{0,6})?",
            path_b in "(/[a-z0-9]{0,5}){0,3}(\\?[a-z=&]{0,6})?",
        ) {
            let ua = render(&a, &path_a);
            let ub = render(&b, &path_b);
            prop_assert!(same_origin(&ua, &ua));
            prop_assert!(same_origin(&ua, &render(&a, "/elsewhere")));
            prop_assert_eq!(same_origin(&ua, &ub), same_origin(&ub, &ua));

            let default = if a.0.eq_ignore_ascii_case("https") { 443 } else { 80 };
            let explicit = (a.0.clone(), a.1.clone(), Some(a.2.unwrap_or(default)));
            let implicit = (a.0.to_uppercase(), a.1.to_uppercase(), (a.2 != Some(default)).then_some(a.2).flatten());
            prop_assert!(same_origin(&render(&explicit, &path_a), &render(&implicit, &path_b)));

            let expected = a.0.eq_ignore_ascii_case(&b.0)
                && a.1.eq_ignore_ascii_case(&b.1)
                && a.2.unwrap_or(default)
                    == b.2.unwrap_or(if b.0.eq_ignore_ascii_case("https") { 443 } else { 80 });
            prop_assert_eq!(same_origin(&ua, &ub), expected);
        }

        /// Never panics, whatever the URI.
        #[test]
        fn same_origin_never_panics(a in "\\PC{0,40}", b in "\\PC{0,40}") {
            if let (Ok(a), Ok(b)) = (a.parse::<Uri>(), b.parse::<Uri>()) {
                let ab = same_origin(&a, &b);
                prop_assert_eq!(ab, same_origin(&b, &a));
            }
        }
    }
}
