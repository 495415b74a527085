//! Tests of the `Redirects` machine: each status and each rule, then property tests of URL
//! resolution, header rewriting, method rewriting and robustness against any `Location`.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE,
    USER_AGENT,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::*;

fn uri(s: &str) -> Uri {
    s.parse().unwrap()
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

fn location(to: &str) -> HeaderMap {
    location_bytes(to.as_bytes())
}

fn location_bytes(to: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(LOCATION, HeaderValue::from_bytes(to).unwrap());
    headers
}

/// Feeds one response to `machine` for a request `method url` with `body`.
fn respond(
    machine: &mut Redirects,
    method: &Method,
    url: &str,
    body: BodyState,
    code: u16,
    to: &str,
) -> RedirectAction {
    let url = uri(url);
    machine.on_response(
        &RedirectRequest::new(method, &url, body),
        status(code),
        &location(to),
    )
}

fn follow(action: RedirectAction) -> Follow {
    match action {
        RedirectAction::Follow(follow) => follow,
        other => panic!("expected Follow, got {other:?}"),
    }
}

fn refused(why: RedirectRefusal) -> RedirectAction {
    RedirectAction::Refuse(why)
}

/// Runs a chain: the first request is `method start`, each entry a `(status, Location)`; the
/// machine must follow each. Returns the last `Follow`.
fn chain(machine: &mut Redirects, method: Method, start: &str, steps: &[(u16, &str)]) -> Follow {
    let mut method = method;
    let mut url = uri(start);
    let mut last = None;
    for &(code, to) in steps {
        let request = RedirectRequest::new(&method, &url, BodyState::Empty);
        let f = follow(machine.on_response(&request, status(code), &location(to)));
        method = f.method.clone();
        url = f.url.clone();
        last = Some(f);
    }
    last.expect("at least one step")
}

#[test]
fn non_redirect_statuses_are_delivered() {
    let policy = RedirectPolicy::default();
    for code in [200, 201, 204, 300, 304, 305, 306, 309, 399, 400, 404, 500] {
        let mut machine = Redirects::new(&policy);
        let action = respond(
            &mut machine,
            &Method::GET,
            "http://a.example/",
            BodyState::Empty,
            code,
            "/elsewhere",
        );
        assert_eq!(action, RedirectAction::Deliver, "{code}");
        assert!(machine.hops().is_empty());
    }
}

#[test]
fn a_redirect_without_location_is_delivered() {
    let policy = RedirectPolicy::default();
    let url = uri("http://a.example/");
    for code in [301, 302, 303, 307, 308] {
        let mut machine = Redirects::new(&policy);
        let request = RedirectRequest::new(&Method::GET, &url, BodyState::Empty);
        let action = machine.on_response(&request, status(code), &HeaderMap::new());
        assert_eq!(action, RedirectAction::Deliver, "{code}");
    }
}

#[test]
fn policy_none_delivers_every_redirect() {
    let policy = RedirectPolicy::none();
    assert!(!policy.follows());
    assert_eq!(policy.max(), 0);
    assert_eq!(policy.clone().max_hops(5).max(), 0);
    for to in ["/b", "mailto:x@y", "http://[::1"] {
        let mut machine = Redirects::new(&policy);
        let action = respond(
            &mut machine,
            &Method::GET,
            "http://a.example/",
            BodyState::Empty,
            302,
            to,
        );
        assert_eq!(action, RedirectAction::Deliver, "{to}");
    }
}

#[test]
fn each_status_rewrites_the_method_as_specified() {
    let policy = RedirectPolicy::default();
    let custom = Method::from_bytes(b"PURGE").unwrap();
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        custom.clone(),
    ];
    for method in &methods {
        for code in [301, 302, 303, 307, 308] {
            let expected = match (code, method.as_str()) {
                (303, "HEAD") => Method::HEAD,
                (303, _) => Method::GET,
                (301 | 302, "POST") => Method::GET,
                _ => method.clone(),
            };
            let mut machine = Redirects::new(&policy);
            let f = follow(respond(
                &mut machine,
                method,
                "http://a.example/x",
                BodyState::Replayable,
                code,
                "/y",
            ));
            assert_eq!(f.method, expected, "{code} {method}");
            assert_eq!(f.keep_body, expected == *method, "{code} {method}");
            assert_eq!(f.status, status(code));
            assert_eq!(f.url, uri("http://a.example/y"));
            assert!(!f.cross_origin);
            assert_eq!(machine.hops()[0].method(), &expected);
        }
    }
}

#[test]
fn locations_resolve_against_the_request_url() {
    let base = "http://a.example/dir/page?q=1#frag";
    let cases = [
        ("https://b.example/p?x=1", "https://b.example/p?x=1"),
        ("//b.example/p", "http://b.example/p"),
        ("/root", "http://a.example/root"),
        ("sibling", "http://a.example/dir/sibling"),
        ("../up", "http://a.example/up"),
        ("./here/../there", "http://a.example/dir/there"),
        ("?page=2", "http://a.example/dir/page?page=2"),
        ("/p#section", "http://a.example/p"),
        ("HTTP://B.EXAMPLE:80/P", "http://b.example/P"),
        ("https://b.example:8443", "https://b.example:8443/"),
        ("  /trimmed  ", "http://a.example/trimmed"),
        ("/a b", "http://a.example/a%20b"),
        ("http://[::1]:8080/v6", "http://[::1]:8080/v6"),
        ("http://user:pw@b.example/creds", "http://b.example/creds"),
        ("/caf\u{e9}", "http://a.example/caf%C3%A9"),
        ("http://EXAMPLE.com./", "http://example.com./"),
        ("http://caf\u{e9}.example/", "http://xn--caf-dma.example/"),
        ("/s?q={x}|y", "http://a.example/s?q={x}|y"),
    ];
    for (to, expected) in cases {
        let mut machine = Redirects::new(&RedirectPolicy::default());
        let f = follow(machine.on_response(
            &RedirectRequest::new(&Method::POST, &uri(base), BodyState::Empty),
            StatusCode::SEE_OTHER,
            &location_bytes(to.as_bytes()),
        ));
        assert_eq!(f.url.to_string(), expected, "{to}");
    }
}

#[test]
fn invalid_locations_are_refused() {
    let cases: [&[u8]; 11] = [
        b"\xff\xfe/x",
        b"mailto:someone@a.example",
        b"ftp://a.example/file",
        b"file:///etc/passwd",
        b"javascript:alert(1)",
        b"data:text/plain,hi",
        b"http://[::1",
        b"http://a.example:99999/",
        b"https://",
        b"http://a b/",
        b"urn:isbn:0451450523",
    ];
    for to in cases {
        let mut machine = Redirects::new(&RedirectPolicy::default());
        let action = machine.on_response(
            &RedirectRequest::new(&Method::GET, &uri("http://a.example/"), BodyState::Empty),
            StatusCode::FOUND,
            &location_bytes(to),
        );
        assert_eq!(
            action,
            refused(RedirectRefusal::InvalidLocation),
            "{}",
            String::from_utf8_lossy(to)
        );
        assert!(machine.hops().is_empty());
    }
}

#[test]
fn the_first_location_counts() {
    let mut headers = HeaderMap::new();
    headers.append(LOCATION, HeaderValue::from_static("/first"));
    headers.append(LOCATION, HeaderValue::from_static("/second"));
    let mut machine = Redirects::new(&RedirectPolicy::default());
    let url = uri("http://a.example/");
    let request = RedirectRequest::new(&Method::GET, &url, BodyState::Empty);
    let f = follow(machine.on_response(&request, StatusCode::FOUND, &headers));
    assert_eq!(f.url, uri("http://a.example/first"));
}

#[test]
fn a_relative_request_url_only_follows_absolute_locations() {
    let mut machine = Redirects::new(&RedirectPolicy::default());
    let url = uri("/relative");
    let request = RedirectRequest::new(&Method::GET, &url, BodyState::Empty);
    let action = machine.on_response(&request, StatusCode::FOUND, &location("/x"));
    assert_eq!(action, refused(RedirectRefusal::InvalidLocation));
    let f = follow(machine.on_response(&request, StatusCode::FOUND, &location("http://a/x")));
    assert!(f.cross_origin);
}

#[test]
fn too_many_hops_after_max() {
    let policy = RedirectPolicy::limited(2);
    let mut machine = Redirects::new(&policy);
    let f = chain(
        &mut machine,
        Method::GET,
        "http://a.example/0",
        &[(302, "/1"), (301, "/2")],
    );
    let request = RedirectRequest::new(&f.method, &f.url, BodyState::Empty);
    let action = machine.on_response(&request, StatusCode::FOUND, &location("/3"));
    assert_eq!(action, refused(RedirectRefusal::TooManyHops { max: 2 }));
    // The hops before the refusal stay.
    let hops: Vec<_> = machine.hops().iter().map(ToString::to_string).collect();
    assert_eq!(
        hops,
        [
            "302 http://a.example/0 -> http://a.example/1",
            "301 http://a.example/1 -> http://a.example/2"
        ]
    );
    // A non-redirect still delivers.
    let action = machine.on_response(&request, StatusCode::OK, &HeaderMap::new());
    assert_eq!(action, RedirectAction::Deliver);
}

#[test]
fn limited_zero_refuses_every_redirect() {
    let policy = RedirectPolicy::limited(0);
    assert!(policy.follows());
    let mut machine = Redirects::new(&policy);
    let action = respond(
        &mut machine,
        &Method::GET,
        "http://a.example/",
        BodyState::Empty,
        307,
        "/b",
    );
    assert_eq!(action, refused(RedirectRefusal::TooManyHops { max: 0 }));
}

#[test]
fn default_policy_follows_ten() {
    let policy = RedirectPolicy::default();
    assert_eq!(policy.max(), DEFAULT_MAX_HOPS);
    let mut machine = Redirects::new(&policy);
    let steps: Vec<(u16, String)> = (1..=10).map(|i| (302, format!("/{i}"))).collect();
    let steps: Vec<(u16, &str)> = steps.iter().map(|(c, s)| (*c, s.as_str())).collect();
    let f = chain(&mut machine, Method::GET, "http://a.example/0", &steps);
    assert_eq!(machine.hops().len(), 10);
    let request = RedirectRequest::new(&f.method, &f.url, BodyState::Empty);
    let action = machine.on_response(&request, StatusCode::FOUND, &location("/11"));
    assert_eq!(action, refused(RedirectRefusal::TooManyHops { max: 10 }));
}

#[test]
fn an_invalid_location_beats_too_many_hops() {
    let mut machine = Redirects::new(&RedirectPolicy::limited(0));
    let action = respond(
        &mut machine,
        &Method::GET,
        "http://a.example/",
        BodyState::Empty,
        302,
        "ftp://x/",
    );
    assert_eq!(action, refused(RedirectRefusal::InvalidLocation));
}

#[test]
fn loops_are_refused() {
    let policy = RedirectPolicy::default();

    // To itself.
    let mut machine = Redirects::new(&policy);
    let action = respond(
        &mut machine,
        &Method::GET,
        "http://a.example/x",
        BodyState::Empty,
        302,
        "/x",
    );
    assert_eq!(action, refused(RedirectRefusal::Loop));
    // An explicit default port and a fragment don't hide it.
    let action = respond(
        &mut machine,
        &Method::GET,
        "http://a.example:80/x",
        BodyState::Empty,
        302,
        "http://A.EXAMPLE/x#f",
    );
    assert_eq!(action, refused(RedirectRefusal::Loop));

    // A -> B -> A.
    let mut machine = Redirects::new(&policy);
    let f = chain(
        &mut machine,
        Method::GET,
        "http://a.example/x",
        &[(302, "http://b.example/y")],
    );
    let request = RedirectRequest::new(&f.method, &f.url, BodyState::Empty);
    let action = machine.on_response(&request, StatusCode::FOUND, &location("http://a.example/x"));
    assert_eq!(action, refused(RedirectRefusal::Loop));
    assert_eq!(machine.hops().len(), 1);

    // A -> B -> C -> B.
    let mut machine = Redirects::new(&policy);
    let f = chain(
        &mut machine,
        Method::GET,
        "http://a.example/a",
        &[(301, "/b"), (301, "/c")],
    );
    let request = RedirectRequest::new(&f.method, &f.url, BodyState::Empty);
    let action = machine.on_response(&request, StatusCode::FOUND, &location("/b"));
    assert_eq!(action, refused(RedirectRefusal::Loop));

    // The query is part of the URL.
    let mut machine = Redirects::new(&policy);
    chain(
        &mut machine,
        Method::GET,
        "http://a.example/a?page=1",
        &[(302, "?page=2"), (302, "?page=3")],
    );
}

#[test]
fn the_same_url_with_another_method_is_not_a_loop() {
    let policy = RedirectPolicy::default();
    let mut machine = Redirects::new(&policy);
    // POST /form -> 303 -> GET /form: post/redirect/get to the same URL.
    let f = chain(
        &mut machine,
        Method::POST,
        "http://a.example/form",
        &[(303, "/form")],
    );
    assert_eq!(f.method, Method::GET);
    // But then GET /form -> GET /form is.
    let request = RedirectRequest::new(&f.method, &f.url, BodyState::Empty);
    let action = machine.on_response(&request, StatusCode::FOUND, &location("/form"));
    assert_eq!(action, refused(RedirectRefusal::Loop));

    // And GET /x -> 303 -> back to where the POST went, as a GET, is not a loop either...
    let mut machine = Redirects::new(&policy);
    let f = chain(
        &mut machine,
        Method::POST,
        "http://a.example/form",
        &[(303, "/done")],
    );
    let request = RedirectRequest::new(&f.method, &f.url, BodyState::Empty);
    let f = follow(machine.on_response(&request, StatusCode::FOUND, &location("/form")));
    // ...while a 307 from there back to a URL requested with GET is.
    let request = RedirectRequest::new(&f.method, &f.url, BodyState::Empty);
    let action = machine.on_response(&request, StatusCode::TEMPORARY_REDIRECT, &location("/done"));
    assert_eq!(action, refused(RedirectRefusal::Loop));
}

#[test]
fn too_many_hops_beats_a_loop() {
    let mut machine = Redirects::new(&RedirectPolicy::limited(1));
    let f = chain(
        &mut machine,
        Method::GET,
        "http://a.example/a",
        &[(302, "/b")],
    );
    let request = RedirectRequest::new(&f.method, &f.url, BodyState::Empty);
    let action = machine.on_response(&request, StatusCode::FOUND, &location("/a"));
    assert_eq!(action, refused(RedirectRefusal::TooManyHops { max: 1 }));
}

#[test]
fn https_to_http_is_refused_unless_allowed() {
    let deny = RedirectPolicy::default();
    assert!(!deny.allows_https_downgrade());
    let mut machine = Redirects::new(&deny);
    let action = respond(
        &mut machine,
        &Method::GET,
        "https://a.example/",
        BodyState::Empty,
        301,
        "http://a.example/",
    );
    assert_eq!(action, refused(RedirectRefusal::InsecureDowngrade));
    // Scheme case doesn't matter.
    let action = respond(
        &mut machine,
        &Method::GET,
        "HTTPS://a.example/",
        BodyState::Empty,
        301,
        "HTTP://b.example/",
    );
    assert_eq!(action, refused(RedirectRefusal::InsecureDowngrade));

    let allow = RedirectPolicy::default().allow_https_downgrade(true);
    assert!(allow.allows_https_downgrade());
    let mut machine = Redirects::new(&allow);
    let f = follow(respond(
        &mut machine,
        &Method::GET,
        "https://a.example/",
        BodyState::Empty,
        301,
        "http://a.example/",
    ));
    assert!(f.cross_origin, "another scheme is another origin");

    // Upgrades are fine.
    let mut machine = Redirects::new(&deny);
    follow(respond(
        &mut machine,
        &Method::GET,
        "http://a.example/",
        BodyState::Empty,
        301,
        "https://a.example/",
    ));
}

#[test]
fn the_predicate_sees_the_attempt_and_decides() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let policy = RedirectPolicy::custom(move |attempt| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        // One hop is followed, on the first call.
        assert_eq!(attempt.previous().len(), n.min(1));
        assert_eq!(attempt.from().host(), Some("a.example"));
        match attempt.to().path() {
            "/stop" => RedirectDecision::Stop,
            "/refuse" => RedirectDecision::Refuse,
            _ => {
                assert_eq!(attempt.status(), StatusCode::SEE_OTHER);
                assert_eq!(attempt.method(), Method::GET);
                RedirectDecision::Follow
            }
        }
    });
    assert_eq!(policy.max(), DEFAULT_MAX_HOPS);
    let printed = format!("{policy:?}");
    assert_eq!(
        printed,
        r#"RedirectPolicy { follows: true, max_hops: 10, allow_https_downgrade: false, predicate: Some("Fn") }"#
    );

    let mut machine = Redirects::new(&policy);
    let f = chain(
        &mut machine,
        Method::POST,
        "http://a.example/0",
        &[(303, "/1")],
    );
    assert_eq!(f.url, uri("http://a.example/1"));
    let request = RedirectRequest::new(&f.method, &f.url, BodyState::Empty);
    let action = machine.on_response(&request, StatusCode::FOUND, &location("/stop"));
    assert_eq!(action, RedirectAction::Deliver);
    let action = machine.on_response(&request, StatusCode::FOUND, &location("/refuse"));
    assert_eq!(action, refused(RedirectRefusal::Refused));
    assert_eq!(machine.hops().len(), 1);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[test]
fn the_predicate_is_not_asked_after_a_built_in_refusal() {
    let policy = RedirectPolicy::custom(|_| panic!("must not be asked")).max_hops(1);
    assert_eq!(policy.max(), 1);
    let mut machine = Redirects::new(&policy);
    for (from, to, why) in [
        (
            "http://a.example/",
            "ftp://x/",
            RedirectRefusal::InvalidLocation,
        ),
        ("http://a.example/", "/", RedirectRefusal::Loop),
        (
            "https://a.example/",
            "http://a.example/",
            RedirectRefusal::InsecureDowngrade,
        ),
    ] {
        let action = respond(&mut machine, &Method::GET, from, BodyState::Empty, 302, to);
        assert_eq!(action, refused(why));
    }
}

#[test]
fn the_predicate_runs_before_the_body_check() {
    let policy = RedirectPolicy::custom(|_| RedirectDecision::Stop);
    let mut machine = Redirects::new(&policy);
    let action = respond(
        &mut machine,
        &Method::POST,
        "http://a.example/",
        BodyState::OneShot,
        307,
        "/b",
    );
    assert_eq!(action, RedirectAction::Deliver);
}

#[test]
fn a_one_shot_body_can_follow_only_when_it_is_dropped() {
    let policy = RedirectPolicy::default();
    for (code, method, ok) in [
        (307, Method::POST, false),
        (308, Method::PUT, false),
        (301, Method::PUT, false),
        (302, Method::POST, true),
        (303, Method::PUT, true),
        (303, Method::GET, false),
    ] {
        let mut machine = Redirects::new(&policy);
        let action = respond(
            &mut machine,
            &method,
            "http://a.example/",
            BodyState::OneShot,
            code,
            "/b",
        );
        if ok {
            assert!(!follow(action).keep_body, "{code} {method}");
        } else {
            assert_eq!(
                action,
                refused(RedirectRefusal::BodyNotReplayable),
                "{code} {method}"
            );
            assert!(machine.hops().is_empty());
        }
        // A replayable or empty body always follows.
        for body in [BodyState::Replayable, BodyState::Empty] {
            let mut machine = Redirects::new(&policy);
            follow(respond(
                &mut machine,
                &method,
                "http://a.example/",
                body,
                code,
                "/b",
            ));
        }
    }
}

#[test]
fn cross_origin_is_sticky() {
    let mut machine = Redirects::new(&RedirectPolicy::default());
    let mut url = uri("https://a.example/0");
    let mut crossings = Vec::new();
    for to in [
        "/1",
        "https://a.example:443/2",
        "https://b.example/3",
        "/4",
        "https://a.example/5",
    ] {
        let request = RedirectRequest::new(&Method::GET, &url, BodyState::Empty);
        let f = follow(machine.on_response(&request, StatusCode::FOUND, &location(to)));
        crossings.push(f.cross_origin);
        url = f.url;
    }
    assert_eq!(crossings, [false, false, true, true, true]);
}

#[test]
fn new_allocates_nothing_and_take_hops_empties() {
    let policy = RedirectPolicy::default();
    let mut machine = Redirects::new(&policy);
    assert_eq!(machine.hops.capacity(), 0);
    let action = respond(
        &mut machine,
        &Method::GET,
        "http://a.example/",
        BodyState::Empty,
        200,
        "/b",
    );
    assert_eq!(action, RedirectAction::Deliver);
    assert_eq!(machine.hops.capacity(), 0);

    chain(
        &mut machine,
        Method::GET,
        "https://a.example/a",
        &[(302, "https://b.example/b"), (307, "https://b.example/c")],
    );
    let hops = machine.take_hops();
    assert_eq!(
        hops,
        [
            Hop::new(
                StatusCode::FOUND,
                uri("https://a.example/a"),
                uri("https://b.example/b"),
                Method::GET
            ),
            Hop::new(
                StatusCode::TEMPORARY_REDIRECT,
                uri("https://b.example/b"),
                uri("https://b.example/c"),
                Method::GET
            ),
        ]
    );
    assert_eq!(hops[1].status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(hops[1].from(), &uri("https://b.example/b"));
    assert_eq!(hops[1].to(), &uri("https://b.example/c"));
    assert_eq!(hops[1].method(), Method::GET);
    assert!(machine.hops().is_empty());
    assert!(std::ptr::eq(
        machine.policy().inner.as_ref(),
        policy.inner.as_ref()
    ));
}

#[test]
fn policy_builders() {
    let policy = RedirectPolicy::limited(3)
        .max_hops(4)
        .allow_https_downgrade(true);
    assert_eq!(policy.max(), 4);
    assert!(policy.follows() && policy.allows_https_downgrade());
    // Clones share; changing one doesn't change the other.
    let shared = policy.clone();
    let changed = policy.max_hops(1);
    assert_eq!((shared.max(), changed.max()), (4, 1));
    assert_eq!(
        format!("{:?}", RedirectPolicy::none()),
        "RedirectPolicy { follows: false, max_hops: 0, allow_https_downgrade: false, predicate: None }"
    );
}

#[test]
fn displays() {
    let cases = [
        (
            RedirectRefusal::TooManyHops { max: 10 },
            "more than 10 redirects",
        ),
        (
            RedirectRefusal::TooManyHops { max: 1 },
            "more than 1 redirect",
        ),
        (
            RedirectRefusal::TooManyHops { max: 0 },
            "more than 0 redirects",
        ),
        (RedirectRefusal::Loop, "redirect loop"),
        (
            RedirectRefusal::InsecureDowngrade,
            "redirect from https to http refused",
        ),
        (
            RedirectRefusal::BodyNotReplayable,
            "redirect needs the request body again, which can't be replayed",
        ),
        (
            RedirectRefusal::InvalidLocation,
            "invalid redirect location",
        ),
        (RedirectRefusal::Refused, "redirect refused by the policy"),
    ];
    for (why, text) in cases {
        assert_eq!(why.to_string(), text);
    }
    let hop = Hop::new(
        StatusCode::FOUND,
        uri("http://a/x"),
        uri("http://b/y"),
        Method::GET,
    );
    assert_eq!(hop.to_string(), "302 http://a/x -> http://b/y");
}

#[test]
fn rewrite_headers_cases() {
    let mut sensitive = SensitiveHeaders::default();
    sensitive.insert(HeaderName::from_static("x-api-key"));
    let full = || {
        let mut h = HeaderMap::new();
        for name in BODY_HEADERS.iter().chain(sensitive.iter()) {
            h.append(name, HeaderValue::from_static("v"));
        }
        h.append(ACCEPT, HeaderValue::from_static("*/*"));
        h.append(USER_AGENT, HeaderValue::from_static("keel"));
        h
    };
    let follow = |keep_body, cross_origin| Follow {
        url: uri("http://b.example/"),
        method: Method::GET,
        keep_body,
        cross_origin,
        status: StatusCode::FOUND,
    };

    let mut h = full();
    rewrite_headers(&mut h, &follow(true, false), &sensitive);
    assert_eq!(h, full());

    let mut h = full();
    rewrite_headers(&mut h, &follow(false, false), &sensitive);
    assert_eq!(h.len(), 2 + 5);
    assert!(h.contains_key(AUTHORIZATION) && !h.contains_key(CONTENT_TYPE));

    let mut h = full();
    rewrite_headers(&mut h, &follow(true, true), &sensitive);
    assert_eq!(h.len(), 2 + 6);
    for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE] {
        assert!(!h.contains_key(name));
    }
    assert!(!h.contains_key("x-api-key") && h.contains_key(CONTENT_TYPE));

    let mut h = full();
    rewrite_headers(&mut h, &follow(false, true), &sensitive);
    assert_eq!(h.keys_len(), 2);
    assert!(h.contains_key(ACCEPT) && h.contains_key(USER_AGENT));
}

// ---- property tests ----

fn host() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("a.example"),
        Just("b.example"),
        Just("A.Example"),
        Just("127.0.0.1"),
        Just("[::1]"),
    ]
}

fn base() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("http"), Just("https")],
        host(),
        proptest::option::of(prop_oneof![Just(80u16), Just(443), Just(8080)]),
        "(/[a-z0-9._-]{0,4}){0,3}/?",
        proptest::option::of("[a-z0-9=&]{0,6}"),
    )
        .prop_map(|(scheme, host, port, path, query)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let path = if path.is_empty() { "/".into() } else { path };
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{path}{query}")
        })
}

/// Locations of every form: absolute, scheme-relative, absolute path, relative path,
/// query-only, each with an optional fragment, with some characters to encode.
fn location_string() -> impl Strategy<Value = String> {
    let segment = "[a-zA-Z0-9._~%-]{0,5}|\\.\\.|\\.|caf\u{e9}|a b";
    let path = proptest::collection::vec(segment, 0..4).prop_map(|s| s.join("/"));
    let query = proptest::option::of("[a-z0-9=&/?]{0,6}").prop_map(|q| match q {
        Some(q) => format!("?{q}"),
        None => String::new(),
    });
    let fragment = proptest::option::of("[a-z0-9]{0,4}").prop_map(|f| match f {
        Some(f) => format!("#{f}"),
        None => String::new(),
    });
    let body = prop_oneof![
        (
            prop_oneof![Just("http"), Just("https"), Just("HTTPS")],
            host(),
            path.clone()
        )
            .prop_map(|(s, h, p)| format!("{s}://{h}/{p}")),
        (host(), path.clone()).prop_map(|(h, p)| format!("//{h}/{p}")),
        path.clone().prop_map(|p| format!("/{p}")),
        path,
        Just(String::new()),
    ];
    (body, query, fragment).prop_map(|(b, q, f)| format!("{b}{q}{f}"))
}

fn any_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::OPTIONS),
        "[A-Z]{1,8}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

fn any_body() -> impl Strategy<Value = BodyState> {
    prop_oneof![
        Just(BodyState::Empty),
        Just(BodyState::Replayable),
        Just(BodyState::OneShot)
    ]
}

fn header_name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        Just(AUTHORIZATION),
        Just(PROXY_AUTHORIZATION),
        Just(COOKIE),
        Just(SET_COOKIE),
        Just(HeaderName::from_static("x-api-key")),
        Just(HeaderName::from_static("x-other")),
        Just(ACCEPT),
        Just(USER_AGENT),
        (0..BODY_HEADERS.len()).prop_map(|i| BODY_HEADERS[i].clone()),
        "x-[a-z]{1,6}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x3e_d1_7e),
        ..ProptestConfig::default()
    })]

    /// A followed Location is absolute http(s) with a host, has no fragment, and is what
    /// `url::Url::join` makes of it.
    #[test]
    fn locations_resolve_like_url_join(base in base(), to in location_string()) {
        // 303 after a POST: the next request is a GET, so no Location is a loop.
        let policy = RedirectPolicy::default().allow_https_downgrade(true);
        let mut machine = Redirects::new(&policy);
        let base_uri = uri(&base);
        let request = RedirectRequest::new(&Method::POST, &base_uri, BodyState::OneShot);
        let action = machine.on_response(&request, StatusCode::SEE_OTHER, &location(&to));

        let mut expected = url::Url::parse(&base).unwrap().join(&to).unwrap();
        expected.set_fragment(None);
        let f = match action {
            RedirectAction::Follow(f) => f,
            other => return Err(TestCaseError::fail(format!("{to}: {other:?}"))),
        };
        prop_assert!(matches!(f.url.scheme_str(), Some("http" | "https")));
        prop_assert!(f.url.host().is_some_and(|h| !h.is_empty()));
        prop_assert!(!f.url.to_string().contains('#'));
        prop_assert_eq!(f.url.to_string(), expected.as_str());
        prop_assert_eq!(f.cross_origin, !same_origin(&base_uri, &f.url));
        prop_assert_eq!(&machine.hops()[0].to, &f.url);
    }

    /// Body headers go iff the body does; credentials go iff the hop is cross-origin; nothing
    /// else is touched.
    #[test]
    fn rewrite_headers_strips_exactly(
        entries in proptest::collection::vec((header_name(), "[a-z0-9]{0,4}"), 0..16),
        keep_body in any::<bool>(),
        cross_origin in any::<bool>(),
    ) {
        let mut sensitive = SensitiveHeaders::default();
        sensitive.insert(HeaderName::from_static("x-api-key"));
        let mut before = HeaderMap::new();
        for (name, value) in &entries {
            before.append(name, HeaderValue::from_str(value).unwrap());
        }
        let follow = Follow {
            url: uri("http://b.example/"),
            method: Method::GET,
            keep_body,
            cross_origin,
            status: StatusCode::FOUND,
        };
        let mut after = before.clone();
        rewrite_headers(&mut after, &follow, &sensitive);

        for name in before.keys() {
            let is_body = BODY_HEADERS.contains(name);
            let is_secret = sensitive.contains(name);
            let removed = (is_body && !keep_body) || (is_secret && cross_origin);
            if removed {
                prop_assert!(!after.contains_key(name), "{} kept", name);
            } else {
                let kept: Vec<_> = after.get_all(name).iter().collect();
                let was: Vec<_> = before.get_all(name).iter().collect();
                prop_assert_eq!(kept, was, "{} changed", name);
            }
        }
        prop_assert!(after.keys().all(|name| before.contains_key(name)));
        if cross_origin {
            prop_assert!(after.keys().all(|name| !sensitive.contains(name)));
        }
    }

    /// The next method and `keep_body` follow the table, for any method and redirect status.
    #[test]
    fn methods_are_rewritten_by_the_table(
        method in any_method(),
        code in prop_oneof![Just(301u16), Just(302), Just(303), Just(307), Just(308)],
        body in any_body(),
    ) {
        let mut machine = Redirects::new(&RedirectPolicy::default());
        let url = uri("http://a.example/from");
        let request = RedirectRequest::new(&method, &url, body);
        let action = machine.on_response(&request, status(code), &location("/to"));
        let expected = match code {
            303 if method != Method::HEAD => Method::GET,
            301 | 302 if method == Method::POST => Method::GET,
            _ => method.clone(),
        };
        let keep_body = expected == method;
        if keep_body && body == BodyState::OneShot {
            prop_assert_eq!(action, refused(RedirectRefusal::BodyNotReplayable));
        } else {
            let f = follow(action);
            prop_assert_eq!(&f.method, &expected);
            prop_assert_eq!(f.keep_body, keep_body);
            prop_assert_eq!(machine.hops()[0].method(), &expected);
        }
    }

    /// Whatever the server sends, the machine answers without panicking, a followed URL is
    /// absolute http(s), and the hops never exceed the maximum.
    #[test]
    fn any_response_is_handled(
        base in base(),
        max in 0usize..4,
        responses in proptest::collection::vec(
            (300u16..310, proptest::collection::vec(any::<u8>(), 0..24), any_method(), any_body()),
            1..8,
        ),
    ) {
        let policy = RedirectPolicy::limited(max);
        let mut machine = Redirects::new(&policy);
        let mut url = uri(&base);
        for (code, bytes, method, body) in responses {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                headers.insert(LOCATION, value);
            }
            let request = RedirectRequest::new(&method, &url, body);
            match machine.on_response(&request, status(code), &headers) {
                RedirectAction::Follow(f) => {
                    prop_assert!(matches!(f.url.scheme_str(), Some("http" | "https")));
                    prop_assert!(f.url.host().is_some_and(|h| !h.is_empty()));
                    prop_assert!(f.url.fragment_free());
                    url = f.url;
                }
                RedirectAction::Deliver | RedirectAction::Refuse(_) => {}
            }
            prop_assert!(machine.hops().len() <= max);
        }
    }
}

/// `Uri` has no fragment accessor: a parsed `Uri` never holds one, but check the text.
trait FragmentFree {
    fn fragment_free(&self) -> bool;
}

impl FragmentFree for Uri {
    fn fragment_free(&self) -> bool {
        !self.to_string().contains('#')
    }
}
