//! Joining request targets to the base URL, producing the `http::Uri` a transport sends.
//!
//! Most targets are plain paths and queries made of characters a URI allows as they are; those
//! are joined by concatenation and checked by `http::Uri`'s parser, which is cheap. Anything
//! else (spaces or non-ASCII to percent-encode, dot segments to remove, an international host
//! name, a fragment to drop) goes through the `url` crate's WHATWG parser first, so the result
//! is the same either way and only its cost differs.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use crate::error::{BoxError, Error, ErrorKind};

/// A parsed base URL: what relative targets are appended to.
#[derive(Clone, Debug)]
pub(crate) struct BaseUrl {
    uri: Uri,
    scheme: Scheme,
    authority: Authority,
    /// The base path without its trailing slashes (empty for the root).
    path: Box<str>,
    /// The same URL for the slow path.
    url: url::Url,
}

impl BaseUrl {
    /// Parses an absolute `http` or `https` URL with a host.
    pub(crate) fn parse(input: &str) -> Result<Self, BoxError> {
        let url = url::Url::parse(input)?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err("the base url must be an absolute http or https url".into());
        }
        let uri = to_uri(&url)?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err("the base url has no scheme or host".into());
        };
        let path = url.path().trim_end_matches('/').into();
        Ok(Self {
            uri,
            scheme,
            authority,
            path,
            url,
        })
    }

    /// The base URL as given (normalized).
    pub(crate) fn as_uri(&self) -> &Uri {
        &self.uri
    }
}

/// Joins `target` to `base`, as [`Client::request`](crate::Client::request) documents.
///
/// `target` is absolute only when it starts with `scheme://`; anything else, `users:search`
/// included, is a path under the base URL.
pub(crate) fn join(base: Option<&BaseUrl>, target: &str) -> Result<Uri, Error> {
    if has_scheme(target) {
        let uri = if is_plain(target) {
            target.parse::<Uri>().map_err(invalid)?
        } else {
            to_uri(&url::Url::parse(target).map_err(invalid)?).map_err(invalid)?
        };
        check(&uri)?;
        return Ok(uri);
    }
    let Some(base) = base else {
        // The target is echoed as keel prints URLs (its secrets hidden), or not at all.
        return Err(invalid(match target.parse::<Uri>() {
            Ok(relative) => format!(
                "`{}` is a relative url and the client has no base url",
                crate::redact::url(&relative)
            ),
            Err(_) => "a relative url, and the client has no base url".to_owned(),
        }));
    };
    let rel = target.trim_start_matches('/');
    if is_plain(rel) {
        let slash = !rel.is_empty() || base.path.is_empty();
        let len = base.path.len() + if slash { 1 + rel.len() } else { 0 };
        let mut joined = String::with_capacity(len);
        joined.push_str(&base.path);
        if slash {
            joined.push('/');
            joined.push_str(rel);
        }
        let path_and_query =
            PathAndQuery::from_maybe_shared(Bytes::from(joined)).map_err(invalid)?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(base.scheme.clone());
        parts.authority = Some(base.authority.clone());
        parts.path_and_query = Some(path_and_query);
        return Uri::from_parts(parts).map_err(invalid);
    }
    let mut joined = String::with_capacity(base.url.as_str().len() + rel.len() + 1);
    joined.push_str(&base.url[..url::Position::BeforePath]);
    joined.push_str(&base.path);
    if !rel.is_empty() || base.path.is_empty() {
        joined.push('/');
        joined.push_str(rel);
    }
    let url = url::Url::parse(&joined).map_err(invalid)?;
    let uri = to_uri(&url).map_err(invalid)?;
    check(&uri)?;
    Ok(uri)
}

/// Appends an encoded query to `uri`'s query string.
pub(crate) fn append_query(uri: &Uri, encoded: &str) -> Result<Uri, Error> {
    if encoded.is_empty() {
        return Ok(uri.clone());
    }
    let joined = match uri.query() {
        Some(q) if !q.is_empty() => format!("{}?{q}&{encoded}", uri.path()),
        _ => format!("{}?{encoded}", uri.path()),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::from_maybe_shared(Bytes::from(joined)).map_err(invalid)?);
    Uri::from_parts(parts).map_err(invalid)
}

pub(crate) fn check(uri: &Uri) -> Result<(), Error> {
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(invalid(format!("unsupported url scheme `{other}`"))),
        None => return Err(invalid("the url has no scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("the url has no host"));
    }
    Ok(())
}

fn to_uri(url: &url::Url) -> Result<Uri, BoxError> {
    // `Url` keeps the fragment; a request never sends one.
    let end = url::Position::AfterQuery;
    Ok(url[..end].parse::<Uri>()?)
}

fn invalid(source: impl Into<BoxError>) -> Error {
    Error::new(ErrorKind::InvalidUrl).with_source(source)
}

/// Whether `target` starts with `scheme://` (RFC 3986 scheme characters).
fn has_scheme(target: &str) -> bool {
    let b = target.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return false;
    }
    let end = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
        .unwrap_or(b.len());
    b[end..].starts_with(b"://")
}

/// Whether `s` is already in the form the WHATWG parser would produce: only characters a URI
/// allows unencoded, percent signs that start an escape, no dot segments, no fragment.
fn is_plain(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => {}
            b'-' | b'_' | b'~' | b'!' | b'$' | b'&' | b'(' | b')' | b'*' | b'+' | b',' | b';'
            | b'=' | b':' | b'@' | b'/' | b'?' => {}
            b'.' => {
                // A "." or ".." segment would be removed by normalization.
                let seg_start = i == 0 || b[i - 1] == b'/';
                let rest = &b[i + 1..];
                let seg_end = |r: &[u8]| r.is_empty() || matches!(r[0], b'/' | b'?');
                if seg_start
                    && (seg_end(rest) || (rest.first() == Some(&b'.') && seg_end(&rest[1..])))
                {
                    return false;
                }
            }
            b'%' => {
                if !(i + 2 < b.len()
                    && b[i + 1].is_ascii_hexdigit()
                    && b[i + 2].is_ascii_hexdigit())
                {
                    return false;
                }
                i += 2;
            }
            _ => return false,
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path and the WHATWG path must agree wherever the fast path is taken.
    #[test]
    fn the_fast_path_agrees_with_the_whatwg_parser() {
        let base = BaseUrl::parse("http://h:8080/api/v1/").unwrap();
        for rel in [
            "users",
            "users/42/posts?page=2&per_page=10",
            "a:b@c!$&()*+,;=",
            "x%20y",
            "v1.2/file.tar.gz",
            "search?q=a.b",
            "?only=query",
        ] {
            assert!(is_plain(rel), "{rel}");
            let fast = join(Some(&base), rel).unwrap();
            let slow =
                to_uri(&url::Url::parse(&format!("http://h:8080/api/v1/{rel}")).unwrap()).unwrap();
            assert_eq!(fast, slow, "{rel}");
        }
    }

    #[test]
    fn what_needs_normalizing_takes_the_slow_path() {
        let base = BaseUrl::parse("http://h/api").unwrap();
        let cases = [
            ("a b", "http://h/api/a%20b"),
            ("x/../y", "http://h/api/y"),
            ("./z", "http://h/api/z"),
            ("caf\u{e9}", "http://h/api/caf%C3%A9"),
            ("p#frag", "http://h/api/p"),
            ("100%", "http://h/api/100%"),
        ];
        for (rel, want) in cases {
            assert!(!is_plain(rel), "{rel}");
            assert_eq!(join(Some(&base), rel).unwrap().to_string(), want, "{rel}");
        }
    }

    #[test]
    fn absolute_targets_are_checked() {
        assert_eq!(
            join(None, "https://example.com/x?y=1").unwrap().to_string(),
            "https://example.com/x?y=1"
        );
        assert_eq!(
            join(None, "http://b\u{fc}cher.example/")
                .unwrap()
                .to_string(),
            "http://xn--bcher-kva.example/"
        );
        for bad in ["ftp://h/", "http:///nohost", "http://exa mple.com/"] {
            assert_eq!(
                join(None, bad).unwrap_err().kind(),
                ErrorKind::InvalidUrl,
                "{bad}"
            );
        }
    }

    #[test]
    fn only_scheme_colon_slash_slash_is_absolute() {
        for abs in ["http://h", "HTTPS://h/x", "svn+ssh://h", "a.b-c://h"] {
            assert!(has_scheme(abs), "{abs}");
        }
        for rel in [
            "users:search",
            "/http://h",
            "1http://h",
            "://h",
            "",
            "x:/y",
            "a b://h",
        ] {
            assert!(!has_scheme(rel), "{rel}");
        }
    }

    #[test]
    fn queries_append() {
        let uri: Uri = "http://h/p?a=1".parse().unwrap();
        assert_eq!(
            append_query(&uri, "b=2").unwrap().to_string(),
            "http://h/p?a=1&b=2"
        );
        let uri: Uri = "http://h/p".parse().unwrap();
        assert_eq!(
            append_query(&uri, "b=2").unwrap().to_string(),
            "http://h/p?b=2"
        );
        assert_eq!(append_query(&uri, "").unwrap(), uri);
    }
}
