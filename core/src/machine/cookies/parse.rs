//! `Set-Cookie` parsing, as RFC 6265 section 5.2 says: lenient about what it can make sense
//! of, and a `None` (never a panic) for what it can't.

use std::time::{Duration, SystemTime};

use super::SameSite;

/// The longest attribute value kept (RFC 6265bis section 5.6): a longer one is ignored.
const MAX_ATTRIBUTE: usize = 1024;

/// The furthest in the future an expiry may be: 400 days (RFC 6265bis section 5.6.1). A later
/// `Expires` or a larger `Max-Age` is cut to it.
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// A `Set-Cookie` value as parsed, before the storage model decides on it (its domain and path
/// still as the server wrote them).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parsed<'a> {
    pub(super) name: &'a str,
    pub(super) value: &'a str,
    /// The last `Domain` attribute, without a leading dot, lowercased later.
    pub(super) domain: Option<&'a str>,
    /// The last `Path` attribute that starts with `/`; `None` for the default path.
    pub(super) path: Option<&'a str>,
    pub(super) expiry: Expiry,
    pub(super) secure: bool,
    pub(super) http_only: bool,
    pub(super) same_site: Option<SameSite>,
}

/// When a cookie expires, as its attributes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No `Max-Age` nor (valid) `Expires`: a session cookie, kept as long as the jar.
    Session,
    /// At this time (in the past: the cookie is deleted).
    At(SystemTime),
}

/// Parses one `Set-Cookie` header value received at `now`. `None` when it must be ignored: no
/// `=` in its name-value pair, an empty name, bytes that aren't UTF-8, or control characters.
pub(super) fn parse(bytes: &[u8], now: SystemTime) -> Option<Parsed<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    // Control characters (but tab) anywhere: the whole cookie is ignored (RFC 6265bis 5.6).
    if text.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return None;
    }
    let (pair, attributes) = match text.split_once(';') {
        Some((pair, rest)) => (pair, Some(rest)),
        None => (text, None),
    };
    let (name, value) = pair.split_once('=')?;
    let (name, value) = (trim(name), trim(value));
    if name.is_empty() {
        return None;
    }
    let mut parsed = Parsed {
        name,
        value,
        domain: None,
        path: None,
        expiry: Expiry::Session,
        secure: false,
        http_only: false,
        same_site: None,
    };
    let mut expires = None;
    let mut max_age = None;
    for attribute in attributes.into_iter().flat_map(|a| a.split(';')) {
        let (key, value) = match attribute.split_once('=') {
            Some((key, value)) => (trim(key), trim(value)),
            None => (trim(attribute), ""),
        };
        if value.len() > MAX_ATTRIBUTE {
            continue;
        }
        if key.eq_ignore_ascii_case("expires") {
            if let Some(at) = parse_date(value) {
                expires = Some(at);
            }
        } else if key.eq_ignore_ascii_case("max-age") {
            if let Some(seconds) = parse_max_age(value) {
                max_age = Some(seconds);
            }
        } else if key.eq_ignore_ascii_case("domain") {
            // An empty Domain is ignored; the last one given wins.
            let domain = value.strip_prefix('.').unwrap_or(value);
            if !domain.is_empty() {
                parsed.domain = Some(domain);
            }
        } else if key.eq_ignore_ascii_case("path") {
            // A Path that doesn't start with `/` means the default path.
            parsed.path = value.starts_with('/').then_some(value);
        } else if key.eq_ignore_ascii_case("secure") {
            parsed.secure = true;
        } else if key.eq_ignore_ascii_case("httponly") {
            parsed.http_only = true;
        } else if key.eq_ignore_ascii_case("samesite") {
            parsed.same_site = SameSite::parse(value).or(parsed.same_site);
        }
    }
    // Max-Age wins over Expires, wherever each stands.
    let latest = now.checked_add(MAX_LIFETIME).unwrap_or(now);
    parsed.expiry = match (max_age, expires) {
        (Some(seconds), _) if seconds <= 0 => Expiry::At(SystemTime::UNIX_EPOCH),
        (Some(seconds), _) => {
            let lifetime = Duration::from_secs(seconds.unsigned_abs()).min(MAX_LIFETIME);
            Expiry::At(now.checked_add(lifetime).unwrap_or(latest))
        }
        (None, Some(at)) => Expiry::At(at.min(latest)),
        (None, None) => Expiry::Session,
    };
    Some(parsed)
}

/// Trims the whitespace RFC 6265 trims (spaces and tabs).
fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// `Max-Age`: an optional `-`, then digits; anything else is ignored. Saturates rather than
/// overflow.
fn parse_max_age(value: &str) -> Option<i64> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, value),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.bytes().fold(0i64, |n, b| {
        n.saturating_mul(10).saturating_add(i64::from(b - b'0'))
    });
    Some(if negative { -magnitude } else { magnitude })
}

/// `Expires`: an HTTP date (IMF-fixdate, RFC 850 or asctime), or the Netscape form with dashes
/// (`Wed, 21-Oct-2015 07:28:00 GMT`) that many servers still send.
fn parse_date(value: &str) -> Option<SystemTime> {
    if let Ok(at) = httpdate::parse_http_date(value) {
        return Some(at);
    }
    if value.contains('-') && value.len() <= 64 {
        return httpdate::parse_http_date(&value.replace('-', " ")).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_name_value_pair_alone() {
        let p = parse(b"sid=abc", now()).unwrap();
        assert_eq!((p.name, p.value), ("sid", "abc"));
        assert_eq!(p.expiry, Expiry::Session);
        assert_eq!(
            (p.domain, p.path, p.secure, p.http_only),
            (None, None, false, false)
        );
    }

    #[test]
    fn whitespace_is_trimmed_and_the_value_may_hold_equals_signs() {
        let p = parse(b" sid \t= a=b=c ; Path=/x", now()).unwrap();
        assert_eq!((p.name, p.value, p.path), ("sid", "a=b=c", Some("/x")));
    }

    #[test]
    fn pairs_without_equals_or_name_are_ignored() {
        assert_eq!(parse(b"justaname", now()), None);
        assert_eq!(parse(b"=value", now()), None);
        assert_eq!(parse(b" =value; Path=/", now()), None);
        assert_eq!(parse(b"", now()), None);
        assert_eq!(parse(b";", now()), None);
    }

    #[test]
    fn an_empty_value_is_a_cookie() {
        let p = parse(b"sid=", now()).unwrap();
        assert_eq!((p.name, p.value), ("sid", ""));
    }

    #[test]
    fn control_characters_and_invalid_utf8_are_ignored() {
        assert_eq!(parse(b"a=b\x01c", now()), None);
        assert_eq!(parse(b"a=b\x7f", now()), None);
        assert_eq!(parse(b"a=\xff\xfe", now()), None);
        assert!(parse(b"a=b\tc", now()).is_some());
    }

    #[test]
    fn attributes_are_case_insensitive_and_flags_take_no_value() {
        let p = parse(
            b"a=b; SECURE; httponly; DoMaIn=.Example.COM; pAtH=/p; SameSite=lax",
            now(),
        )
        .unwrap();
        assert!(p.secure && p.http_only);
        assert_eq!(p.domain, Some("Example.COM"));
        assert_eq!(p.path, Some("/p"));
        assert_eq!(p.same_site, Some(SameSite::Lax));
    }

    #[test]
    fn the_last_domain_and_path_win_and_empty_or_relative_ones_are_ignored() {
        let p = parse(b"a=b; Domain=x.com; Domain=y.com; Path=/a; Path=/b", now()).unwrap();
        assert_eq!((p.domain, p.path), (Some("y.com"), Some("/b")));
        let p = parse(b"a=b; Domain=x.com; Domain=; Path=/a; Path=rel", now()).unwrap();
        assert_eq!((p.domain, p.path), (Some("x.com"), None));
        let p = parse(b"a=b; Domain=.", now()).unwrap();
        assert_eq!(p.domain, None);
    }

    #[test]
    fn max_age_sets_the_expiry_and_wins_over_expires() {
        let p = parse(b"a=b; Max-Age=60", now()).unwrap();
        assert_eq!(p.expiry, Expiry::At(now() + Duration::from_secs(60)));
        let p = parse(
            b"a=b; Max-Age=60; Expires=Wed, 21 Oct 2015 07:28:00 GMT",
            now(),
        )
        .unwrap();
        assert_eq!(p.expiry, Expiry::At(now() + Duration::from_secs(60)));
        let p = parse(
            b"a=b; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Max-Age=60",
            now(),
        )
        .unwrap();
        assert_eq!(p.expiry, Expiry::At(now() + Duration::from_secs(60)));
    }

    #[test]
    fn zero_or_negative_max_age_expires_at_once() {
        for v in ["0", "-1", "-99999999999999999999999"] {
            let header = format!("a=b; Max-Age={v}");
            let p = parse(header.as_bytes(), now()).unwrap();
            assert_eq!(p.expiry, Expiry::At(SystemTime::UNIX_EPOCH), "{v}");
        }
    }

    #[test]
    fn malformed_max_age_is_ignored() {
        for v in ["", "abc", "1.5", "+5", "5s", "- 5"] {
            let header = format!("a=b; Max-Age={v}");
            let p = parse(header.as_bytes(), now()).unwrap();
            assert_eq!(p.expiry, Expiry::Session, "{v:?}");
        }
    }

    #[test]
    fn huge_max_age_is_capped_at_400_days() {
        let p = parse(b"a=b; Max-Age=99999999999999999999999999", now()).unwrap();
        assert_eq!(p.expiry, Expiry::At(now() + MAX_LIFETIME));
    }

    #[test]
    fn expires_in_every_date_form() {
        let at = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06-Nov-1994 08:49:37 GMT",
        ] {
            let header = format!("a=b; Expires={v}");
            let p = parse(header.as_bytes(), now()).unwrap();
            assert_eq!(p.expiry, Expiry::At(at), "{v}");
        }
    }

    #[test]
    fn a_bad_date_is_ignored_not_the_cookie() {
        let p = parse(b"a=b; Expires=tomorrow", now()).unwrap();
        assert_eq!(p.expiry, Expiry::Session);
        let p = parse(b"a=b; Expires=Mon, 06 Nov 1994 08:49:37 GMT", now()).unwrap();
        assert_eq!(p.expiry, Expiry::Session, "wrong weekday");
    }

    #[test]
    fn too_long_attribute_values_are_ignored() {
        let header = format!("a=b; Path=/{}", "x".repeat(MAX_ATTRIBUTE));
        let p = parse(header.as_bytes(), now()).unwrap();
        assert_eq!(p.path, None);
    }

    #[test]
    fn unknown_samesite_values_and_attributes_are_ignored() {
        let p = parse(
            b"a=b; SameSite=sometimes; Priority=High; Partitioned",
            now(),
        )
        .unwrap();
        assert_eq!(p.same_site, None);
        let p = parse(b"a=b; SameSite=None", now()).unwrap();
        assert_eq!(p.same_site, Some(SameSite::None));
        let p = parse(b"a=b; SameSite=STRICT", now()).unwrap();
        assert_eq!(p.same_site, Some(SameSite::Strict));
    }
}
