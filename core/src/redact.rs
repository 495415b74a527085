//! What keel prints of a URL or a header map: never a password, a token or a signature.
//!
//! Every place keel shows a URL (`Debug` and `Display` of requests, responses, errors and
//! events, trace fields, recorded exchanges) shows it through [`url()`], which follows
//! OpenTelemetry's rule for `url.full`: credentials in the URL's authority print as
//! `REDACTED:REDACTED@`, and the values of the query parameters that carry signatures
//! (`AWSAccessKeyId`, `Signature`, `sig`, `X-Goog-Signature`, `X-Amz-Signature`,
//! `X-Amz-Credential`, `X-Amz-Security-Token`, `token`, `access_token`, `api_key`, `apikey`,
//! `key`) print as `REDACTED`.
//!
//! Every header map keel shows goes through [`headers`] (or [`headers_with`], given the
//! client's [`SensitiveHeaders`]): the values of `Authorization`, `Proxy-Authorization`,
//! `Cookie` and `Set-Cookie`, of the names a client marked with
//! [`ClientBuilder::sensitive_header`](crate::ClientBuilder::sensitive_header), and of any
//! value marked [sensitive](http::HeaderValue::is_sensitive) print as `Sensitive`.
//!
//! ```
//! let uri: http::Uri = "https://user:hunter2@api.example.com/v1/files?sig=abc&page=2".parse().unwrap();
//! assert_eq!(
//!     keel_core::redact::url(&uri).to_string(),
//!     "https://REDACTED:REDACTED@api.example.com/v1/files?sig=REDACTED&page=2",
//! );
//! ```

use std::fmt;

use http::{HeaderMap, Uri};

use crate::machine::credentials::SensitiveHeaders;

/// The query parameters whose values are secrets (compared ignoring ASCII case).
const SECRET_PARAMS: &[&str] = &[
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
];

/// `uri` as keel prints it: see the [module documentation](self).
pub fn url(uri: &Uri) -> RedactedUrl<'_> {
    RedactedUrl(uri)
}

/// A URL that prints without its secrets; made by [`url()`].
#[derive(Clone, Copy)]
pub struct RedactedUrl<'a>(&'a Uri);

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.0;
        if let Some(scheme) = uri.scheme_str() {
            write!(f, "{scheme}://")?;
        }
        if let Some(authority) = uri.authority() {
            let authority = authority.as_str();
            match authority.rsplit_once('@') {
                Some((_, host)) => write!(f, "REDACTED:REDACTED@{host}")?,
                None => f.write_str(authority)?,
            }
        }
        f.write_str(uri.path())?;
        if let Some(query) = uri.query() {
            f.write_str("?")?;
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    f.write_str("&")?;
                }
                match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => write!(f, "{name}=REDACTED")?,
                    _ => f.write_str(pair)?,
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// `map` as keel prints it: the values of credential headers print as `Sensitive` (see the
/// [module documentation](self)).
///
/// ```
/// use http::HeaderMap;
///
/// let mut map = HeaderMap::new();
/// map.insert("set-cookie", "session=s3cret".parse().unwrap());
/// map.insert("content-type", "text/plain".parse().unwrap());
/// assert_eq!(
///     format!("{:?}", keel_core::redact::headers(&map)),
///     r#"{"set-cookie": Sensitive, "content-type": "text/plain"}"#,
/// );
/// ```
pub fn headers(map: &HeaderMap) -> RedactedHeaders<'_> {
    RedactedHeaders {
        map,
        sensitive: None,
    }
}

/// [`headers`], hiding also the values of the names in `sensitive` (a client's
/// [`sensitive_header`](crate::ClientBuilder::sensitive_header)s).
///
/// ```
/// use http::HeaderMap;
/// use keel_core::SensitiveHeaders;
///
/// let mut sensitive = SensitiveHeaders::new();
/// sensitive.insert("x-api-key".parse().unwrap());
/// let mut map = HeaderMap::new();
/// map.insert("x-api-key", "k-123".parse().unwrap());
/// let shown = format!("{:?}", keel_core::redact::headers_with(&map, &sensitive));
/// assert_eq!(shown, r#"{"x-api-key": Sensitive}"#);
/// ```
pub fn headers_with<'a>(
    map: &'a HeaderMap,
    sensitive: &'a SensitiveHeaders,
) -> RedactedHeaders<'a> {
    RedactedHeaders {
        map,
        sensitive: Some(sensitive),
    }
}

/// A header map that prints without its credentials; made by [`headers`] or
/// [`headers_with`]. Its `Debug` is the map's, with `Sensitive` for every hidden value.
#[derive(Clone, Copy)]
pub struct RedactedHeaders<'a> {
    map: &'a HeaderMap,
    sensitive: Option<&'a SensitiveHeaders>,
}

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = SensitiveHeaders::default();
        let sensitive = self.sensitive.unwrap_or(&default);
        let mut map = f.debug_map();
        for (name, value) in self.map {
            if value.is_sensitive() || sensitive.contains(name) {
                map.entry(name, &format_args!("Sensitive"));
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        url(&s.parse().unwrap()).to_string()
    }

    #[test]
    fn plain_urls_print_as_they_are() {
        assert_eq!(
            show("http://127.0.0.1:8080/a/b?x=1&y"),
            "http://127.0.0.1:8080/a/b?x=1&y"
        );
        assert_eq!(show("/relative?q=1"), "/relative?q=1");
    }

    #[test]
    fn credentials_and_signatures_never_print() {
        let shown =
            show("https://alice:hunter2@h.example/p?Signature=s3cr3t&X-Amz-Credential=AKIA&ok=1");
        assert!(
            !shown.contains("hunter2") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("AKIA"),
            "{shown}"
        );
        assert!(shown.ends_with("&ok=1"), "{shown}");
        assert_eq!(
            show("https://token@h.example/"),
            "https://REDACTED:REDACTED@h.example/"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5ec2e7),
            ..proptest::test_runner::Config::default()
        })]

        /// Whatever the URL, its credentials and the values of its signature parameters (in
        /// any case, anywhere in the query) never print; everything else prints as it is.
        #[test]
        fn no_credential_or_signature_ever_prints(
            host in "[a-m]{1,8}(\\.[a-m]{2,3})?",
            port in proptest::option::of(1u16..),
            user in "[n-z]{6,12}",
            password in proptest::option::of("[n-z]{6,12}"),
            path in "(/[a-m0-9]{0,6}){0,3}",
            params in proptest::collection::vec(
                (proptest::bool::ANY, 0..SECRET_PARAMS.len(), proptest::bool::ANY, "[n-z]{6,12}"),
                0..5,
            ),
            plain in proptest::collection::vec(("[a-h]{1,4}", "[a-m0-9]{0,6}"), 0..3),
        ) {
            let userinfo = match &password {
                Some(password) => format!("{user}:{password}@"),
                None => format!("{user}@"),
            };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let mut query = Vec::new();
            let mut secrets = vec![user.clone()];
            secrets.extend(password.clone());
            for (i, (upper, which, secret, value)) in params.iter().enumerate() {
                // A secret parameter (its name in either case) or a plain one, mixed in.
                if *secret {
                    let name = SECRET_PARAMS[*which];
                    let name = if *upper { name.to_ascii_uppercase() } else { name.to_ascii_lowercase() };
                    query.push(format!("{name}={value}"));
                    secrets.push(value.clone());
                } else if let Some((name, v)) = plain.get(i % plain.len().max(1)) {
                    query.push(format!("{name}={v}"));
                }
            }
            for (name, v) in &plain {
                query.push(format!("{name}={v}"));
            }
            let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            let text = format!("https://{userinfo}{host}{port}{path}{query}");
            let Ok(uri) = text.parse::<Uri>() else { return Ok(()) };
            let shown = url(&uri).to_string();
            for secret in &secrets {
                proptest::prop_assert!(!shown.contains(secret.as_str()), "{} in {}", secret, shown);
            }
            proptest::prop_assert!(shown.starts_with("https://REDACTED:REDACTED@"), "{}", shown);
            for (name, v) in &plain {
                let pair = format!("{name}={v}");
                proptest::prop_assert!(shown.contains(&pair), "{} lost from {}", pair, shown);
            }
        }
    }

    #[test]
    fn header_maps_hide_credentials_and_marked_values() {
        use http::HeaderValue;

        let mut sensitive = SensitiveHeaders::new();
        sensitive.insert(http::header::HeaderName::from_static("x-api-key"));
        let mut map = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer s3cret-a"),
            ("proxy-authorization", "Basic s3cret-b"),
            ("cookie", "s3cret-c"),
            ("set-cookie", "id=s3cret-d"),
            ("set-cookie", "other=s3cret-e"),
            ("x-api-key", "s3cret-f"),
        ] {
            map.append(name, HeaderValue::from_static(value));
        }
        let mut marked = HeaderValue::from_static("s3cret-g");
        marked.set_sensitive(true);
        map.insert("x-other", marked);
        map.insert("accept", HeaderValue::from_static("text/plain"));

        let shown = format!("{:?}", headers_with(&map, &sensitive));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(shown.matches("Sensitive").count(), 7, "{shown}");
        assert!(shown.contains(r#""accept": "text/plain""#), "{shown}");
        // Without the client's set, only its own additions show.
        let shown = format!("{:?}", headers(&map));
        assert!(
            shown.contains("s3cret-f") && !shown.contains("s3cret-g"),
            "{shown}"
        );
        assert_eq!(shown.matches("s3cret").count(), 1, "{shown}");
    }
}
