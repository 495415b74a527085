//! Joining request targets to the base URL, producing the `http::Uri` a transport sends.
//!
//! Most targets are plain paths and queries made of characters a URI allows as they are; those
//! are joined by concatenation and checked by `http::Uri`'s parser, which is cheap. Anything
//! else (spaces or non-ASCII to percent-encode, dot segments to remove, an international host
//! name, a fragment to drop) goes through the `url` crate's WHATWG parser first, so the result
//! is the same either way and only its cost differs.
//!
//! Credentials in a URL (`https://user:pass@host/`) never stay in it: [`take_credentials`]
//! turns them into an `Authorization: Basic` value, as reqwest and httpx do, and the URL goes
//! on without them, so they are never in what a transport sends, a `Host` header, a log line
//! or an error.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

use crate::error::{BoxError, Error, ErrorKind};

/// A parsed base URL: what relative targets are appended to.
#[derive(Clone, Debug)]
pub(crate) struct BaseUrl {
    /// Without user info: that is in `credentials`.
    uri: Uri,
    scheme: Scheme,
    authority: Authority,
    /// The base path without its trailing slashes (empty for the root).
    path: Box<str>,
    /// The same URL for the slow path.
    url: url::Url,
    /// `Authorization: Basic` from the URL's user info, marked sensitive.
    credentials: Option<HeaderValue>,
}

impl BaseUrl {
    /// Parses an absolute `http` or `https` URL with a host, taking its user info out into
    /// [`credentials`](Self::credentials).
    pub(crate) fn parse(input: &str) -> Result<Self, BoxError> {
        let mut url = url::Url::parse(input)?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err("the base url must be an absolute http or https url".into());
        }
        let credentials = basic_from_userinfo(url.username(), url.password());
        // Both only fail for URLs without a host, checked above.
        let _ = url.set_username("");
        let _ = url.set_password(None);
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
            credentials,
        })
    }

    /// The base URL as given (normalized), without user info.
    pub(crate) fn as_uri(&self) -> &Uri {
        &self.uri
    }

    /// `Authorization: Basic` made of the base URL's user info, marked sensitive.
    pub(crate) fn credentials(&self) -> Option<&HeaderValue> {
        self.credentials.as_ref()
    }
}

/// Takes the user info (`user:pass@`) out of `uri`: the URL without it, and the
/// `Authorization: Basic` value made of it (percent-decoded, as reqwest and httpx do), marked
/// sensitive. `None` for a URL without user info, or with an empty one (`http://@host/`).
pub(crate) fn take_credentials(uri: Uri) -> Result<(Uri, Option<HeaderValue>), Error> {
    let Some((userinfo, host)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) else {
        return Ok((uri, None));
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let credentials = basic_from_userinfo(user, password);
    let authority = Authority::try_from(host).map_err(|_| invalid("the url has no valid host"))?;
    let mut parts = uri.into_parts();
    parts.authority = Some(authority);
    let uri = Uri::from_parts(parts).map_err(invalid)?;
    Ok((uri, credentials))
}

/// Whether `uri` has user info (`…@` in its authority).
pub(crate) fn has_userinfo(uri: &Uri) -> bool {
    uri.authority()
        .is_some_and(|a| a.as_str().as_bytes().contains(&b'@'))
}

/// `Basic <base64(user:password)>` of a URL's percent-encoded user and password; `None` when
/// both are empty (no user, no password).
fn basic_from_userinfo(user: &str, password: Option<&str>) -> Option<HeaderValue> {
    if user.is_empty() && password.is_none_or(str::is_empty) {
        return None;
    }
    let user = percent_decode(user);
    let password = password.map(percent_decode);
    Some(super::basic_bytes(&user, password.as_deref()))
}

/// `%XX` escapes decoded; a `%` that starts no escape is kept as it is.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16);
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                // Two hex digits: below 256.
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Joins `target` to `base`, as [`Client::request`](crate::Client::request) documents.
///
/// `target` is absolute only when it starts with `scheme://`; anything else, `users:search`
/// included, is a path under the base URL.
/// [`join`], with the credentials of an absolute `target`'s user info taken out of the URL
/// (see [`take_credentials`]).
pub(crate) fn join_taking_credentials(
    base: Option<&BaseUrl>,
    target: &str,
) -> Result<(Uri, Option<HeaderValue>), Error> {
    let uri = join(base, target)?;
    // A plain target has no `@`, and a joined one the base URL's path, which has no user info.
    if has_scheme(target) && !is_plain(target) && has_userinfo(&uri) {
        return take_credentials(uri);
    }
    Ok((uri, None))
}

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
            // No `@`: a URL with user info (or an `@` anywhere) takes the WHATWG parser, and
            // a plain one is known to carry no credentials without another scan.
            | b'=' | b':' | b'/' | b'?' => {}
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
            "a:b!$&()*+,;=",
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
        // An `@` takes the WHATWG path (it may be user info), and joins the same.
        assert!(!is_plain("a:b@c"));
        assert_eq!(
            join(Some(&base), "a:b@c").unwrap(),
            "http://h:8080/api/v1/a:b@c"
        );
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
    fn credentials_are_taken_out_of_the_url() {
        let take = |s: &str| {
            let (uri, credentials) = take_credentials(s.parse().unwrap()).unwrap();
            let credentials = credentials.map(|v| {
                assert!(v.is_sensitive());
                v.to_str().unwrap().to_owned()
            });
            (uri.to_string(), credentials)
        };
        let basic = |s: &str| Some(format!("Basic {s}"));
        assert_eq!(
            take("http://u:p@h:8080/a?b=1"),
            ("http://h:8080/a?b=1".to_owned(), basic("dTpw"))
        );
        assert_eq!(
            take("https://u:p@[::1]/"),
            ("https://[::1]/".to_owned(), basic("dTpw"))
        );
        // user `a@b`, password ``: the host starts after the last `@`.
        assert_eq!(
            take("http://a%40b:@h/"),
            ("http://h/".to_owned(), basic("YUBiOg=="))
        );
        assert_eq!(take("http://@h/"), ("http://h/".to_owned(), None));
        assert_eq!(take("http://h/x"), ("http://h/x".to_owned(), None));
        assert!(!has_userinfo(&"http://h/x@y".parse().unwrap()));
        assert!(has_userinfo(&"http://u@h/".parse().unwrap()));
    }

    #[test]
    fn percent_decoding_keeps_what_is_no_escape() {
        assert_eq!(percent_decode("a%20b%2Fc"), b"a b/c");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
        assert_eq!(percent_decode("%ff"), [0xff]);
    }

    #[test]
    fn a_base_url_keeps_its_credentials_apart() {
        let base = BaseUrl::parse("https://user:pa%20ss@api.example.com/v1").unwrap();
        assert_eq!(base.as_uri(), "https://api.example.com/v1");
        // base64("user:pa ss")
        assert_eq!(base.credentials().unwrap(), "Basic dXNlcjpwYSBzcw==");
        assert!(base.credentials().unwrap().is_sensitive());
        let shown = format!("{base:?}");
        assert!(
            !shown.contains("pa%20ss") && !shown.contains("user:"),
            "{shown}"
        );
        assert!(BaseUrl::parse("https://api.example.com/")
            .unwrap()
            .credentials()
            .is_none());
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
