use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, SET_COOKIE};
use http::Uri;
use proptest::prelude::*;

use super::*;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn url(s: &str) -> Uri {
    s.parse().unwrap()
}

fn header(jar: &mut CookieJar, u: &str) -> Option<String> {
    jar.header(&url(u), now())
        .map(|v| v.to_str().unwrap().to_owned())
}

fn set(jar: &mut CookieJar, u: &str, cookie: &str) -> Result<Stored, Rejection> {
    jar.store(&url(u), cookie.as_bytes(), now())
}

// 5.3 step 6: host-only cookies.

#[test]
fn a_cookie_without_domain_goes_to_its_exact_host_only() {
    let mut jar = CookieJar::new();
    assert_eq!(
        set(&mut jar, "http://example.com/", "a=1"),
        Ok(Stored::Added)
    );
    assert_eq!(
        header(&mut jar, "http://example.com/x").as_deref(),
        Some("a=1")
    );
    assert_eq!(header(&mut jar, "http://www.example.com/"), None);
    assert_eq!(header(&mut jar, "http://com/"), None);
    assert_eq!(header(&mut jar, "http://other.com/"), None);
    assert!(jar.iter().next().unwrap().is_host_only());
}

#[test]
fn hosts_compare_without_case_and_ports_dont_matter() {
    let mut jar = CookieJar::new();
    set(&mut jar, "http://Example.COM:8080/", "a=1").unwrap();
    assert_eq!(
        header(&mut jar, "http://example.com:9090/").as_deref(),
        Some("a=1")
    );
}

// 5.3 step 6: Domain cookies.

#[test]
fn a_domain_cookie_goes_to_the_domain_and_its_subdomains() {
    let mut jar = CookieJar::new();
    set(
        &mut jar,
        "http://www.example.com/",
        "a=1; Domain=.Example.com",
    )
    .unwrap();
    for host in ["example.com", "www.example.com", "a.b.example.com"] {
        assert_eq!(
            header(&mut jar, &format!("http://{host}/")).as_deref(),
            Some("a=1"),
            "{host}"
        );
    }
    assert_eq!(header(&mut jar, "http://badexample.com/"), None);
    assert_eq!(header(&mut jar, "http://example.org/"), None);
}

#[test]
fn a_domain_that_isnt_the_host_nor_a_parent_is_rejected() {
    let mut jar = CookieJar::new();
    let u = "http://www.example.com/";
    assert_eq!(
        set(&mut jar, u, "a=1; Domain=other.com"),
        Err(Rejection::DomainMismatch)
    );
    assert_eq!(
        set(&mut jar, u, "a=1; Domain=sub.www.example.com"),
        Err(Rejection::DomainMismatch)
    );
    assert_eq!(
        set(&mut jar, u, "a=1; Domain=ample.com"),
        Err(Rejection::DomainMismatch)
    );
    assert_eq!(
        set(&mut jar, u, "a=1; Domain=exämple.com"),
        Err(Rejection::DomainMismatch)
    );
    assert!(jar.is_empty());
}

#[test]
fn single_label_domains_are_public_suffixes() {
    let mut jar = CookieJar::new();
    assert_eq!(
        set(&mut jar, "http://example.com/", "a=1; Domain=com"),
        Err(Rejection::PublicSuffix)
    );
    assert_eq!(
        set(&mut jar, "http://example.com/", "a=1; Domain=.com"),
        Err(Rejection::PublicSuffix)
    );
    // When it is the host itself, the cookie is host-only.
    assert_eq!(
        set(&mut jar, "http://localhost/", "a=1; Domain=localhost"),
        Ok(Stored::Added)
    );
    assert!(jar.iter().next().unwrap().is_host_only());
    assert_eq!(
        header(&mut jar, "http://localhost/").as_deref(),
        Some("a=1")
    );
    assert_eq!(header(&mut jar, "http://x.localhost/"), None);
}

#[test]
fn a_public_suffix_list_refuses_more() {
    let mut jar = CookieJar::new().public_suffixes(|d| d == "co.uk");
    assert_eq!(
        set(&mut jar, "http://shop.co.uk/", "a=1; Domain=co.uk"),
        Err(Rejection::PublicSuffix)
    );
    assert_eq!(
        set(&mut jar, "http://co.uk/", "a=1; Domain=co.uk"),
        Ok(Stored::Added)
    );
    assert_eq!(header(&mut jar, "http://shop.co.uk/"), None);
}

#[test]
fn ip_addresses_match_only_themselves() {
    let mut jar = CookieJar::new();
    set(&mut jar, "http://127.0.0.1/", "a=1").unwrap();
    set(&mut jar, "http://127.0.0.1/", "b=2; Domain=127.0.0.1").unwrap();
    assert_eq!(
        set(&mut jar, "http://10.0.0.1/", "c=3; Domain=0.0.1"),
        Err(Rejection::DomainMismatch)
    );
    assert_eq!(
        header(&mut jar, "http://127.0.0.1/").as_deref(),
        Some("a=1; b=2")
    );
    assert_eq!(header(&mut jar, "http://localhost/"), None);
    set(&mut jar, "http://[::1]/", "v6=1").unwrap();
    assert_eq!(
        header(&mut jar, "http://[::1]:8080/").as_deref(),
        Some("v6=1")
    );
}

// 5.1.4: paths.

#[test]
fn the_default_path_is_the_directory_of_the_request() {
    let mut jar = CookieJar::new();
    set(&mut jar, "http://h.com/v1/login?x=1", "a=1").unwrap();
    assert_eq!(jar.iter().next().unwrap().path(), "/v1");
    assert_eq!(header(&mut jar, "http://h.com/v1").as_deref(), Some("a=1"));
    assert_eq!(
        header(&mut jar, "http://h.com/v1/items").as_deref(),
        Some("a=1")
    );
    assert_eq!(header(&mut jar, "http://h.com/v2"), None);
    assert_eq!(header(&mut jar, "http://h.com/v10"), None);
    assert_eq!(header(&mut jar, "http://h.com/"), None);
}

#[test]
fn a_path_attribute_scopes_the_cookie() {
    let mut jar = CookieJar::new();
    set(&mut jar, "http://h.com/", "a=1; Path=/docs").unwrap();
    set(&mut jar, "http://h.com/", "b=2; Path=/docs/").unwrap();
    set(&mut jar, "http://h.com/x/y", "c=3; Path=relative").unwrap();
    assert_eq!(
        header(&mut jar, "http://h.com/docs").as_deref(),
        Some("a=1")
    );
    assert_eq!(
        header(&mut jar, "http://h.com/docs/web").as_deref(),
        Some("b=2; a=1")
    );
    assert_eq!(header(&mut jar, "http://h.com/docsweb"), None);
    assert_eq!(header(&mut jar, "http://h.com/x/z").as_deref(), Some("c=3"));
}

// 5.4 step 2: the order of the Cookie header.

#[test]
fn longer_paths_come_first_then_older_cookies() {
    let mut jar = CookieJar::new();
    let t0 = now();
    jar.store(
        &url("http://h.com/"),
        b"late=1; Path=/",
        t0 + Duration::from_secs(2),
    )
    .unwrap();
    jar.store(&url("http://h.com/"), b"early=1; Path=/", t0)
        .unwrap();
    jar.store(
        &url("http://h.com/"),
        b"deep=1; Path=/a/b",
        t0 + Duration::from_secs(5),
    )
    .unwrap();
    jar.store(
        &url("http://h.com/"),
        b"mid=1; Path=/a",
        t0 + Duration::from_secs(1),
    )
    .unwrap();
    let got = jar.header(&url("http://h.com/a/b/c"), t0 + Duration::from_secs(9));
    assert_eq!(got.unwrap(), "deep=1; mid=1; early=1; late=1");
}

// 5.3 step 11: replacement.

#[test]
fn same_name_domain_and_path_replace_keeping_the_creation_time() {
    let mut jar = CookieJar::new();
    let u = url("http://h.com/");
    jar.store(&u, b"a=1", now()).unwrap();
    jar.store(&u, b"b=1", now() + Duration::from_secs(1))
        .unwrap();
    let later = now() + Duration::from_secs(5);
    assert_eq!(jar.store(&u, b"a=2", later), Ok(Stored::Replaced));
    assert_eq!(jar.len(), 2);
    let a = jar.iter().find(|c| c.name() == "a").unwrap();
    assert_eq!((a.value(), a.created()), ("2", now()));
    // Still first: it was created first.
    assert_eq!(jar.header(&u, later).unwrap(), "a=2; b=1");
    // Another path or domain is another cookie.
    jar.store(&u, b"a=3; Path=/p", later).unwrap();
    jar.store(&u, b"a=4; Domain=h.com", later).unwrap();
    assert_eq!(
        jar.len(),
        3,
        "a host-only and a domain cookie of one domain replace each other"
    );
}

// Expiry.

#[test]
fn max_age_zero_deletes_and_expired_cookies_are_not_sent() {
    let mut jar = CookieJar::new();
    let u = url("http://h.com/");
    jar.store(&u, b"a=1; Max-Age=10", now()).unwrap();
    jar.store(&u, b"b=1", now()).unwrap();
    assert_eq!(
        jar.header(&u, now() + Duration::from_secs(9)).unwrap(),
        "a=1; b=1"
    );
    assert_eq!(
        jar.header(&u, now() + Duration::from_secs(10)).unwrap(),
        "b=1"
    );
    assert_eq!(jar.len(), 1, "dropped when seen expired");
    assert_eq!(
        jar.store(&u, b"b=gone; Max-Age=0", now()),
        Ok(Stored::Removed)
    );
    assert!(jar.is_empty());
    assert_eq!(
        jar.store(&u, b"c=never; Expires=Thu, 01 Jan 1970 00:00:01 GMT", now()),
        Ok(Stored::Removed)
    );
    assert!(jar.is_empty());
}

#[test]
fn expires_is_honoured_and_remove_expired_drops() {
    let mut jar = CookieJar::new();
    let u = url("http://h.com/");
    let at = now() + Duration::from_secs(100);
    let line = format!("a=1; Expires={}", httpdate::fmt_http_date(at));
    jar.store(&u, line.as_bytes(), now()).unwrap();
    assert_eq!(jar.iter().next().unwrap().expires(), Some(at));
    jar.remove_expired(at - Duration::from_secs(1));
    assert_eq!(jar.len(), 1);
    jar.remove_expired(at);
    assert!(jar.is_empty());
}

// Secure (RFC 6265bis).

#[test]
fn secure_cookies_go_over_https_only_and_are_never_set_from_http() {
    let mut jar = CookieJar::new();
    assert_eq!(
        set(&mut jar, "http://h.com/", "s=1; Secure"),
        Err(Rejection::Insecure)
    );
    set(&mut jar, "https://h.com/", "s=1; Secure").unwrap();
    set(&mut jar, "https://h.com/", "p=1").unwrap();
    assert_eq!(
        header(&mut jar, "https://h.com/").as_deref(),
        Some("s=1; p=1")
    );
    assert_eq!(header(&mut jar, "http://h.com/").as_deref(), Some("p=1"));
}

#[test]
fn http_cant_overwrite_a_secure_cookie() {
    let mut jar = CookieJar::new();
    set(&mut jar, "https://www.h.com/", "s=1; Secure; Domain=h.com").unwrap();
    assert_eq!(
        set(&mut jar, "http://www.h.com/", "s=evil"),
        Err(Rejection::Insecure)
    );
    assert_eq!(
        set(&mut jar, "http://h.com/", "s=evil; Domain=h.com"),
        Err(Rejection::Insecure)
    );
    // Another name is fine.
    assert_eq!(set(&mut jar, "http://www.h.com/", "t=1"), Ok(Stored::Added));
}

#[test]
fn prefixes_need_their_attributes() {
    let mut jar = CookieJar::new();
    assert_eq!(
        set(&mut jar, "https://h.com/", "__Secure-a=1"),
        Err(Rejection::Prefix)
    );
    assert_eq!(
        set(&mut jar, "https://h.com/", "__Secure-a=1; Secure"),
        Ok(Stored::Added)
    );
    assert_eq!(
        set(&mut jar, "https://h.com/dir/page", "__Host-a=1; Secure"),
        Err(Rejection::Prefix),
        "default path /dir"
    );
    assert_eq!(
        set(&mut jar, "https://h.com/", "__Host-a=1; Secure; Path=/"),
        Ok(Stored::Added)
    );
    assert_eq!(
        set(
            &mut jar,
            "https://h.com/",
            "__Host-b=1; Secure; Path=/; Domain=h.com"
        ),
        Err(Rejection::Prefix)
    );
    assert_eq!(
        set(&mut jar, "https://h.com/", "__host-c=1; Path=/"),
        Err(Rejection::Prefix)
    );
}

// Malformed input.

#[test]
fn malformed_and_odd_urls_are_ignored() {
    let mut jar = CookieJar::new();
    assert_eq!(
        set(&mut jar, "http://h.com/", "no-equals"),
        Err(Rejection::Malformed)
    );
    assert_eq!(
        jar.store(&url("/relative"), b"a=1", now()),
        Err(Rejection::NotHttp)
    );
    assert_eq!(
        set(&mut jar, "ftp://h.com/", "a=1"),
        Err(Rejection::NotHttp)
    );
    assert!(jar.header(&url("/relative"), now()).is_none());
    assert!(jar.is_empty());
}

#[test]
fn store_response_takes_every_set_cookie() {
    let mut jar = CookieJar::new();
    let mut headers = HeaderMap::new();
    headers.append(SET_COOKIE, "a=1".parse().unwrap());
    headers.append(SET_COOKIE, "garbage".parse().unwrap());
    headers.append(SET_COOKIE, "b=2; Path=/".parse().unwrap());
    assert_eq!(
        jar.store_response(&url("http://h.com/"), &headers, now()),
        2
    );
    let value = jar.header(&url("http://h.com/"), now()).unwrap();
    assert!(value.is_sensitive());
    assert_eq!(format!("{value:?}"), "Sensitive");
}

#[test]
fn debug_never_shows_a_value() {
    let mut jar = CookieJar::new();
    set(&mut jar, "http://h.com/", "session=s3cret").unwrap();
    let text = format!("{jar:?} {:?}", jar.iter().collect::<Vec<_>>());
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("session"));
}

// Limits.

#[test]
fn a_cookie_over_the_size_limit_is_ignored() {
    let mut jar = CookieJar::with_limits(CookieLimits::default().max_cookie_size(10));
    assert_eq!(
        set(&mut jar, "http://h.com/", "name=1234567"),
        Err(Rejection::TooLarge)
    );
    assert_eq!(
        set(&mut jar, "http://h.com/", "name=123456"),
        Ok(Stored::Added)
    );
}

#[test]
fn per_domain_limit_evicts_expired_then_oldest() {
    let mut jar = CookieJar::with_limits(CookieLimits::default().max_per_domain(3));
    let u = url("http://h.com/");
    jar.store(&u, b"old=1", now()).unwrap();
    jar.store(&u, b"short=1; Max-Age=1", now()).unwrap();
    jar.store(&u, b"b=1", now()).unwrap();
    let later = now() + Duration::from_secs(5);
    jar.store(&u, b"c=1", later).unwrap();
    // The expired one went, not the oldest.
    assert_eq!(jar.header(&u, later).unwrap(), "old=1; b=1; c=1");
    jar.store(&u, b"d=1", later).unwrap();
    assert_eq!(jar.header(&u, later).unwrap(), "b=1; c=1; d=1");
    assert_eq!(jar.len(), 3);
}

#[test]
fn total_limit_evicts_the_oldest_anywhere() {
    let mut jar = CookieJar::with_limits(CookieLimits::default().max_total(2));
    jar.store(&url("http://a.com/"), b"a=1", now()).unwrap();
    jar.store(&url("http://b.com/"), b"b=1", now()).unwrap();
    jar.store(&url("http://c.com/"), b"c=1", now()).unwrap();
    assert_eq!(jar.len(), 2);
    assert!(jar.header(&url("http://a.com/"), now()).is_none());
    assert!(jar.header(&url("http://c.com/"), now()).is_some());
}

#[test]
fn insert_restores_a_saved_cookie_and_checks_it() {
    let mut jar = CookieJar::new();
    let saved = Cookie::new("sid", "abc", ".Example.com", "/", now()).with_host_only(false);
    assert_eq!(jar.insert(saved, now()), Ok(Stored::Added));
    assert_eq!(
        header(&mut jar, "http://www.example.com/").as_deref(),
        Some("sid=abc")
    );
    let bad = Cookie::new("a;b", "x", "h.com", "/", now());
    assert_eq!(jar.insert(bad, now()), Err(Rejection::Malformed));
    let suffix = Cookie::new("a", "x", "com", "/", now()).with_host_only(false);
    assert_eq!(jar.insert(suffix, now()), Err(Rejection::PublicSuffix));
}

// Properties.

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("example".to_owned()),
        Just("com".to_owned()),
        "[a-z0-9-]{1,5}",
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(label(), 1..4).prop_map(|l| l.join(".")),
        1 => (0u8..3, 0u8..3).prop_map(|(a, b)| format!("10.0.{a}.{b}")),
    ]
}

/// A Set-Cookie line with any mix of attributes.
fn set_cookie() -> impl Strategy<Value = String> {
    (
        "[a-c]{1,2}",
        "[a-z0-9]{0,8}",
        prop::option::of(prop_oneof![
            label(),
            host(),
            Just(".example.com".to_owned())
        ]),
        prop::option::of(prop_oneof![Just("/"), Just("/a"), Just("/a/"), Just("/b")]),
        any::<bool>(),
        prop::option::of(-2i64..5),
    )
        .prop_map(|(name, value, domain, path, secure, max_age)| {
            let mut line = format!("{name}={value}");
            if let Some(d) = domain {
                line.push_str(&format!("; Domain={d}"));
            }
            if let Some(p) = path {
                line.push_str(&format!("; Path={p}"));
            }
            if secure {
                line.push_str("; Secure");
            }
            if let Some(m) = max_age {
                line.push_str(&format!("; Max-Age={m}"));
            }
            line
        })
}

fn scheme() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("http"), Just("https")]
}

proptest! {
    /// A cookie is never sent to a host that doesn't domain-match its domain, a host-only
    /// cookie only to its exact host, a Secure one only over https, and only where its path
    /// matches.
    #[test]
    fn cookies_go_only_where_they_match(
        sets in prop::collection::vec((scheme(), host(), set_cookie()), 1..20),
        asks in prop::collection::vec((scheme(), host(), prop_oneof![Just("/"), Just("/a/x"), Just("/b")]), 1..10),
        elapsed in 0u64..4,
    ) {
        let mut jar = CookieJar::new();
        for (scheme, host, line) in &sets {
            let u: Uri = format!("{scheme}://{host}/a/x").parse().unwrap();
            let _ = jar.store(&u, line.as_bytes(), now());
        }
        let at = now() + Duration::from_secs(elapsed);
        for (scheme, host, path) in &asks {
            let u: Uri = format!("{scheme}://{host}{path}").parse().unwrap();
            for c in jar.cookies_for(&u, at) {
                prop_assert!(domain_match(host, c.domain()), "{host} got a cookie of {}", c.domain());
                if c.is_host_only() {
                    prop_assert_eq!(host.as_str(), c.domain());
                }
                prop_assert!(!c.is_secure() || *scheme == "https");
                prop_assert!(path_match(path, c.path()));
                prop_assert!(!c.is_expired(at));
                // Never stored for a domain the setting host doesn't domain-match.
                prop_assert!(sets.iter().any(|(_, h, _)| domain_match(h, c.domain())));
            }
        }
    }

    /// Domain matching: a host matches itself and its parents at label boundaries, and
    /// nothing else.
    #[test]
    fn domain_match_is_label_suffix(host in host(), domain in host()) {
        let expected = host == domain
            || (host.ends_with(&format!(".{domain}")) && !is_ip(&host));
        prop_assert_eq!(domain_match(&host, &domain), expected);
    }

    /// However many cookies servers send, the jar stays within its limits, and so does each
    /// Cookie header.
    #[test]
    fn the_jar_and_its_headers_stay_within_the_limits(
        sets in prop::collection::vec((host(), "[a-z]{1,3}", 0usize..40, prop::option::of(0i64..3)), 1..120),
        per_domain in 1usize..6,
        total in 1usize..12,
        size in 2usize..20,
    ) {
        let limits = CookieLimits::default().max_per_domain(per_domain).max_total(total).max_cookie_size(size);
        let mut jar = CookieJar::with_limits(limits);
        for (i, (host, name, len, max_age)) in sets.iter().enumerate() {
            let u: Uri = format!("http://{host}/").parse().unwrap();
            let mut line = format!("{name}={}", "v".repeat(*len));
            if let Some(m) = max_age {
                line.push_str(&format!("; Max-Age={m}"));
            }
            if i % 3 == 0 {
                if let Some((_, parent)) = host.split_once('.') {
                    line.push_str(&format!("; Domain={parent}"));
                }
            }
            let at = now() + Duration::from_secs(i as u64 / 10);
            let _ = jar.store(&u, line.as_bytes(), at);
            prop_assert!(jar.len() <= total);
            prop_assert_eq!(jar.len(), jar.iter().count());
            let mut domains = std::collections::HashMap::new();
            for c in jar.iter() {
                prop_assert!(c.name().len() + c.value().len() <= size);
                *domains.entry(c.domain().to_owned()).or_insert(0usize) += 1;
            }
            prop_assert!(domains.values().all(|&n| n <= per_domain));
            let header = jar.header(&u, at);
            if let Some(h) = header {
                // At most `total` cookies of at most `size` bytes, with "; " between them.
                prop_assert!(h.len() <= total * (size + 1) + (total - 1) * 2);
            }
        }
    }

    /// Nothing a server sends makes the jar panic.
    #[test]
    fn any_bytes_are_safe(bytes in prop::collection::vec(any::<u8>(), 0..200), host in host()) {
        let mut jar = CookieJar::new();
        let u: Uri = format!("https://{host}/a/b").parse().unwrap();
        let _ = jar.store(&u, &bytes, now());
        let _ = jar.header(&u, now());
    }
}
