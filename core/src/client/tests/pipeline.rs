//! The pipeline: lazy calls, the call's record on responses and errors, redirects, credentials
//! scoped to their origin, owned requests, and policies added by the user.

use super::*;
use crate::client::pipeline::{Action, Guard, Policy, PolicyContext};
use crate::client::state::MAX_ORIGINS;
use crate::machine::outcome::Outcome;
use crate::machine::redirect::{RedirectPolicy, RedirectRefusal};
use crate::Pending;

fn redirecting(base: &str) -> crate::ClientBuilder<MockTransport> {
    single_attempt().base_url(base)
}

fn redirect(status: u16, location: &'static str) -> Reply {
    Reply::status(status).header("location", location)
}

fn uris(m: &MockState) -> Vec<String> {
    m.requests().iter().map(|r| r.uri.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Lazy calls

#[test]
fn a_queued_call_does_not_spend_its_deadline_before_it_is_polled() {
    let c = single_attempt()
        .base_url("http://h")
        .deadline(secs(5))
        .build()
        .unwrap();
    let m = mock(&c);
    let queued: Vec<Pending> = (0..3).map(|_| c.get("x").send()).collect();
    // Ten seconds in a queue, twice the deadline, before a concurrency limit lets them go.
    let timer = c.transport().timer().clone();
    m.run(timer.sleep_until(timer.now() + secs(10)));
    assert_eq!(
        m.request_count(),
        0,
        "nothing is sent before the first poll"
    );
    for (i, call) in queued.into_iter().enumerate() {
        // Each head takes a second from when its call starts.
        let started = m.elapsed();
        m.push(Reply::status(200).head_at(started + secs(1)));
        let resp = m.run(call).unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(m.request_count(), 3);
}

#[test]
fn the_deadline_counts_from_the_first_poll() {
    let c = single_attempt()
        .base_url("http://h")
        .deadline(secs(5))
        .build()
        .unwrap();
    let m = mock(&c);
    let call = c.get("x").send();
    let timer = c.transport().timer().clone();
    m.run(timer.sleep_until(timer.now() + secs(10)));
    m.push(Reply::never());
    let err = m.run(call).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Deadline));
    assert_eq!(m.elapsed(), secs(15), "5 s from the first poll at 10 s");
}

// ---------------------------------------------------------------------------------------------
// The call's record

#[test]
fn error_for_status_reports_the_attempts_and_why_retrying_stopped() {
    let c = retrying(policy().max_attempts(3));
    let m = mock(&c);
    for _ in 0..3 {
        m.push(Reply::status(503));
    }
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.attempts(), 3);
    assert_eq!(
        resp.gave_up(),
        Some(&GiveUpReason::AttemptsExhausted { attempts: 3 })
    );
    let err = m.run(resp.error_for_status()).unwrap_err();
    assert_eq!(err.attempts(), 3);
    assert_eq!(
        err.gave_up(),
        Some(&GiveUpReason::AttemptsExhausted { attempts: 3 })
    );
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
}

#[test]
fn a_retry_after_too_long_is_seen_by_the_caller() {
    let c = retrying(policy().max_retry_after(secs(30)));
    let m = mock(&c);
    m.push(Reply::status(429).header("retry-after", "120"));
    let resp = m.run(c.get("x").send()).unwrap();
    let err = m.run(resp.error_for_status()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(err.attempts(), 1);
    assert_eq!(
        err.gave_up(),
        Some(&GiveUpReason::RetryAfterTooLong {
            retry_after: secs(120),
            max: secs(30)
        })
    );
    assert_eq!(m.request_count(), 1);
}

#[test]
fn a_success_has_one_attempt_and_no_reason() {
    let c = retrying(policy());
    let m = mock(&c);
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!((resp.attempts(), resp.gave_up()), (1, None));
    assert!(resp.redirects().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Redirects

#[test]
fn each_redirect_status_is_followed_with_the_right_method_and_body() {
    for (status, method, body) in [
        (301, "GET", None),
        (302, "GET", None),
        (303, "GET", None),
        (307, "POST", Some("{\"a\":1}")),
        (308, "POST", Some("{\"a\":1}")),
    ] {
        let c = redirecting("http://h/v1").build().unwrap();
        let m = mock(&c);
        m.push(redirect(status, "/v1/next"));
        let resp = m
            .run(c.post("first").json(&serde_json::json!({"a": 1})).send())
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{status}");
        assert_eq!(resp.url().to_string(), "http://h/v1/next", "{status}");
        assert_eq!(resp.redirects().len(), 1, "{status}");
        assert_eq!(resp.redirects()[0].status().as_u16(), status);
        let log = m.requests();
        assert_eq!(log.len(), 2, "{status}");
        let next = &log[1];
        assert_eq!(next.method.as_str(), method, "{status}");
        assert_eq!(
            next.body.as_deref(),
            Some(body.unwrap_or("").as_bytes()),
            "{status}"
        );
        assert_eq!(
            next.headers.contains_key(CONTENT_TYPE),
            body.is_some(),
            "{status}: content-type"
        );
    }
}

#[test]
fn a_relative_location_is_resolved_against_the_current_url() {
    let c = redirecting("http://h/v1/").build().unwrap();
    let m = mock(&c);
    m.push(redirect(302, "b/c?x=1"));
    m.push(redirect(302, "../d"));
    m.run(c.get("a/z").send()).unwrap();
    assert_eq!(
        uris(m),
        [
            "http://h/v1/a/z",
            "http://h/v1/a/b/c?x=1",
            "http://h/v1/a/d"
        ]
    );
}

#[test]
fn ten_hops_are_followed_and_the_eleventh_refused_with_the_hops() {
    let c = redirecting("http://h").build().unwrap();
    let m = mock(&c);
    for path in ["/1", "/2", "/3", "/4", "/5", "/6", "/7", "/8", "/9", "/10"] {
        m.push(redirect(302, path));
    }
    let resp = m.run(c.get("0").send()).unwrap();
    assert_eq!(resp.redirects().len(), 10);
    assert_eq!(resp.url().to_string(), "http://h/10");

    let c = redirecting("http://h").build().unwrap();
    let m = mock(&c);
    for path in [
        "/1", "/2", "/3", "/4", "/5", "/6", "/7", "/8", "/9", "/10", "/11",
    ] {
        m.push(redirect(302, path));
    }
    let err = m.run(c.get("0").send()).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Redirect(RedirectRefusal::TooManyHops { max: 10 })
    );
    assert_eq!(err.redirects().len(), 10);
    assert_eq!(err.redirects()[9].to().to_string(), "http://h/10");
    assert_eq!(
        err.url().map(ToString::to_string).as_deref(),
        Some("http://h/10")
    );
    assert_eq!(
        m.request_count(),
        11,
        "the eleventh redirect is not followed"
    );
}

#[test]
fn a_loop_is_refused() {
    let c = redirecting("http://h").build().unwrap();
    let m = mock(&c);
    m.push(redirect(302, "/b"));
    m.push(redirect(302, "/a"));
    let err = m.run(c.get("a").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Redirect(RedirectRefusal::Loop));
    assert_eq!(m.request_count(), 2);
}

#[test]
fn https_to_http_is_refused_unless_allowed() {
    let c = redirecting("https://h").build().unwrap();
    let m = mock(&c);
    m.push(redirect(302, "http://h/plain"));
    let err = m.run(c.get("a").send()).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Redirect(RedirectRefusal::InsecureDowngrade)
    );
    assert_eq!(m.request_count(), 1);

    let c = redirecting("https://h")
        .redirect_policy(RedirectPolicy::default().allow_https_downgrade(true))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(redirect(302, "http://h/plain"));
    let resp = m.run(c.get("a").send()).unwrap();
    assert_eq!(resp.url().to_string(), "http://h/plain");
}

#[test]
fn a_one_shot_body_is_not_resent_by_a_307() {
    let c = redirecting("http://h").build().unwrap();
    let m = mock(&c);
    m.push(redirect(307, "/next"));
    let chunks = vec![Ok::<_, std::io::Error>(Bytes::from_static(b"once"))];
    let err = m
        .run(
            c.post("upload")
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .send(),
        )
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Redirect(RedirectRefusal::BodyNotReplayable)
    );
    assert_eq!(m.request_count(), 1);

    // Given as a factory, it is rebuilt for the next hop.
    let c = redirecting("http://h").build().unwrap();
    let m = mock(&c);
    m.push(redirect(307, "/next"));
    let resp = m
        .run(c.post("upload").body_with(|| Body::from("again")).send())
        .unwrap();
    assert_eq!(resp.url().to_string(), "http://h/next");
    assert_eq!(m.requests()[1].method, Method::POST);
    assert_eq!(m.requests()[1].body.as_deref(), Some(&b"again"[..]));
}

#[test]
fn no_redirect_policy_delivers_the_3xx() {
    let c = redirecting("http://h")
        .redirect_policy(RedirectPolicy::none())
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(redirect(302, "/elsewhere"));
    let resp = m.run(c.get("a").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], "/elsewhere");
    assert_eq!(m.request_count(), 1);

    // And a request can choose for itself.
    let c = redirecting("http://h").build().unwrap();
    let m = mock(&c);
    m.push(redirect(302, "/elsewhere"));
    let resp = m
        .run(c.get("a").redirect_policy(RedirectPolicy::none()).send())
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
}

#[test]
fn a_predicate_can_stop_or_refuse_a_hop() {
    let policy = RedirectPolicy::custom(|attempt| {
        if attempt.to().host() == Some("evil.example") {
            crate::RedirectDecision::Refuse
        } else if attempt.to().path() == "/stop" {
            crate::RedirectDecision::Stop
        } else {
            crate::RedirectDecision::Follow
        }
    });
    let c = redirecting("http://h")
        .redirect_policy(policy)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(redirect(302, "/stop"));
    assert_eq!(
        m.run(c.get("a").send()).unwrap().status(),
        StatusCode::FOUND
    );
    m.push(redirect(302, "http://evil.example/"));
    let err = m.run(c.get("a").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Redirect(RedirectRefusal::Refused));
}

#[test]
fn a_redirect_then_a_503_retries_the_new_url() {
    let c = retrying(policy());
    let m = mock(&c);
    m.push(redirect(302, "/moved"));
    m.push(Reply::status(503));
    m.push(Reply::status(200));
    let resp = m.run(c.get("a").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(uris(m), ["http://h/a", "http://h/moved", "http://h/moved"]);
    assert_eq!((resp.attempts(), resp.redirects().len()), (2, 1));
}

#[test]
fn every_hop_reaches_the_hook() {
    let hops = Arc::new(Mutex::new(Vec::new()));
    let seen = hops.clone();
    let c = redirecting("http://h")
        .on_redirect(move |e| seen.lock().unwrap().push(e.hop.to_string()))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(redirect(301, "/b"));
    m.push(redirect(303, "/c"));
    m.run(c.post("a").body("x").send()).unwrap();
    assert_eq!(
        *hops.lock().unwrap(),
        [
            "301 http://h/a -> http://h/b",
            "303 http://h/b -> http://h/c"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials

#[test]
fn a_cross_origin_hop_drops_credentials_and_a_same_origin_hop_keeps_them() {
    for (location, kept) in [("http://h/same", true), ("http://other:8080/x", false)] {
        let c = redirecting("http://h")
            .sensitive_header("x-api-key")
            .build()
            .unwrap();
        let m = mock(&c);
        m.push(redirect(302, location));
        m.run(
            c.get("a")
                .bearer_auth("s3cret")
                .header("x-api-key", "k")
                .header("cookie", "session=1")
                .header("x-trace", "t")
                .send(),
        )
        .unwrap();
        let log = m.requests();
        let next = &log[1].headers;
        for name in ["authorization", "x-api-key", "cookie"] {
            assert_eq!(next.contains_key(name), kept, "{location}: {name}");
        }
        assert_eq!(values(next, "x-trace"), ["t"], "{location}");
    }
}

#[test]
fn client_credentials_go_to_the_base_origin_only() {
    let c = redirecting("https://api.example.com/v1")
        .bearer_auth("s3cret")
        .default_header("x-api-key", "k")
        .sensitive_header("x-api-key")
        .default_header("x-client", "sdk")
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(c.get("users").send()).unwrap();
    m.run(c.get("https://cdn.example.net/file").send()).unwrap();
    m.push(redirect(302, "https://cdn.example.net/moved"));
    m.run(c.get("moving").send()).unwrap();
    let log = m.requests();
    let has = |i: usize, name: &str| log[i].headers.contains_key(name);
    assert!(has(0, "authorization") && has(0, "x-api-key") && has(0, "x-client"));
    assert!(!has(1, "authorization") && !has(1, "x-api-key") && has(1, "x-client"));
    assert!(has(2, "authorization"), "the base origin gets them");
    assert!(!has(3, "authorization") && !has(3, "x-api-key") && has(3, "x-client"));
    assert_eq!(log[0].headers["authorization"], "Bearer s3cret");
}

#[test]
fn client_credentials_stay_off_once_a_redirect_left_their_origin() {
    let c = redirecting("https://api.example.com")
        .bearer_auth("s3cret")
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(redirect(302, "https://elsewhere.example/bounce"));
    m.push(redirect(302, "https://api.example.com/admin"));
    m.run(c.get("start").send()).unwrap();
    let log = m.requests();
    assert_eq!(log.len(), 3);
    assert!(log[0].headers.contains_key("authorization"));
    assert!(!log[1].headers.contains_key("authorization"));
    assert!(
        !log[2].headers.contains_key("authorization"),
        "back on the base origin, but chosen by another origin"
    );
}

#[test]
fn a_client_credential_needs_a_base_url() {
    let built = Client::<MockTransport>::builder()
        .bearer_auth("s3cret")
        .build();
    assert_eq!(config_setting(built), Some("default_header"));
}

#[test]
fn basic_auth_is_base64_of_user_and_password() {
    let c = client();
    let m = mock(&c);
    m.run(c.get("x").basic_auth("Aladdin", Some("open sesame")).send())
        .unwrap();
    m.run(c.get("x").basic_auth("user", None).send()).unwrap();
    let log = m.requests();
    assert_eq!(
        log[0].headers["authorization"],
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    assert_eq!(log[1].headers["authorization"], "Basic dXNlcjo=");
    assert!(log[0].headers["authorization"].is_sensitive());
}

#[test]
fn credentials_never_show_in_debug_output() {
    let builder = Client::<MockTransport>::builder()
        .base_url("http://h")
        .default_header("authorization", "Bearer s3cret-default")
        .default_header("cookie", "session=s3cret-cookie")
        .default_header("x-api-key", "s3cret-key")
        .sensitive_header("x-api-key");
    let text = format!("{builder:?}");
    assert!(!text.contains("s3cret"), "{text}");
    let c = builder.build().unwrap();
    let request = c
        .get("x")
        .header("authorization", "Bearer s3cret-request")
        .header("proxy-authorization", "Basic s3cret-proxy")
        .header("x-api-key", "s3cret-header");
    let text = format!("{request:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("Sensitive"), "{text}");
    let built = request.build().unwrap();
    let text = format!("{built:?}");
    assert!(!text.contains("s3cret"), "{text}");
    let mut bare = crate::Request::new(Method::GET, "http://h/".parse().unwrap());
    bare.headers_mut()
        .insert("cookie", HeaderValue::from_static("s3cret"));
    assert!(!format!("{bare:?}").contains("s3cret"));
}

// ---------------------------------------------------------------------------------------------
// Owned requests and per-request settings

#[test]
fn a_built_request_can_be_copied_and_executed_again() {
    let c = client();
    let m = mock(&c);
    let request = c
        .put("items/7")
        .header("x-a", "1")
        .json(&serde_json::json!({"n": 7}))
        .build()
        .unwrap();
    let copy = request.try_clone().unwrap();
    m.run(c.execute(request)).unwrap();
    m.run(c.execute(copy)).unwrap();
    let log = m.requests();
    assert_eq!(log.len(), 2);
    for r in log.iter() {
        assert_eq!(r.uri, "http://h/v1/items/7");
        assert_eq!(r.method, Method::PUT);
        assert_eq!(r.body.as_deref(), Some(&b"{\"n\":7}"[..]));
        assert_eq!(values(&r.headers, "x-a"), ["1"]);
    }
}

#[test]
fn execute_joins_a_relative_url_and_refuses_a_bad_one() {
    let c = client();
    let m = mock(&c);
    let request = crate::Request::new(Method::GET, "/users?page=2".parse().unwrap());
    m.run(c.execute(request)).unwrap();
    assert_eq!(m.requests()[0].uri, "http://h/v1/users?page=2");
    let ftp = crate::Request::new(Method::GET, "ftp://h/file".parse().unwrap());
    assert_eq!(
        m.run(c.execute(ftp)).unwrap_err().kind(),
        ErrorKind::InvalidUrl
    );
    assert_eq!(m.request_count(), 1);
}

#[test]
fn build_returns_the_first_mistake() {
    let c = client();
    let err = c.get("x").header("bad name", "v").build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(
        err.url().map(ToString::to_string).as_deref(),
        Some("http://h/v1/x")
    );
}

#[test]
fn a_request_can_bring_its_own_retry_policy() {
    let c = retrying(policy().max_attempts(3));
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(503));
    let resp = m
        .run(
            c.get("x")
                .retry_policy(crate::RetryPolicy::disabled())
                .send(),
        )
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(m.request_count(), 1);
}

#[test]
fn timeout_bounds_the_whole_call_like_reqwest() {
    // Attempts of 1 s with retries: without `timeout` this call would take about 3 s.
    let c = retrying_builder(policy().max_attempts(3).base_delay(millis(10)))
        .attempt_timeout(secs(1))
        .build()
        .unwrap();
    let m = mock(&c);
    for _ in 0..3 {
        m.push(Reply::never());
    }
    let err = m.run(c.get("x").timeout(millis(1500)).send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Deadline));
    assert_eq!(m.elapsed(), millis(1500));
    assert_eq!(m.request_count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Policies added by the user

/// A permit: counted while it is held.
struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Hands out a permit for every attempt.
struct Holds(Arc<AtomicUsize>);

impl Policy for Holds {
    fn before_attempt(&mut self, _: &mut PolicyContext<'_>) -> Action {
        self.0.fetch_add(1, Ordering::SeqCst);
        Action::Hold(Guard::new(Permit(self.0.clone())))
    }
}

#[test]
fn a_guard_is_held_until_the_body_ends() {
    let held = Arc::new(AtomicUsize::new(0));
    let count = held.clone();
    let c = single_attempt()
        .base_url("http://h")
        .policy(move || Holds(count.clone()))
        .build()
        .unwrap();
    let m = mock(&c);
    let held = || held.load(Ordering::SeqCst);
    m.push(Reply::status(200).chunk("a").chunk_at(secs(1), "b"));
    let mut resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(held(), 1, "held while the body is unread");
    assert_eq!(m.run(resp.chunk()).unwrap().unwrap(), "a");
    assert_eq!(held(), 1, "held mid-body");
    assert_eq!(m.run(resp.chunk()).unwrap().unwrap(), "b");
    assert!(m.run(resp.chunk()).unwrap().is_none());
    assert_eq!(held(), 0, "given back at the end of the body");

    // A response dropped early gives it back too.
    m.push(Reply::status(200).chunk("a").stall());
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(held(), 1);
    drop(resp);
    assert_eq!(held(), 0);
}

#[test]
fn a_guard_of_a_retried_attempt_is_given_back_before_the_next() {
    let held = Arc::new(AtomicUsize::new(0));
    let count = held.clone();
    let c = retrying_builder(policy().max_attempts(2))
        .policy(move || Holds(count.clone()))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::fail(connect_refused()));
    m.push(Reply::status(200).chunk("ok").stall());
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(m.request_count(), 2);
    // The first attempt's permit was given back; the second's is held by the response.
    assert_eq!(held.load(Ordering::SeqCst), 1);
    drop(resp);
    assert_eq!(held.load(Ordering::SeqCst), 0);
}

/// Waits until an instant before letting the first attempt go, then refuses 401s.
struct Gate {
    until: Duration,
    waited: bool,
}

impl Policy for Gate {
    fn before_attempt(&mut self, cx: &mut PolicyContext<'_>) -> Action {
        if self.waited {
            return Action::Proceed;
        }
        self.waited = true;
        let at = cx.now() + self.until;
        Action::WaitUntil(at)
    }

    fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
        if !cx.is_claimed() && outcome.status() == Some(StatusCode::UNAUTHORIZED) {
            return Action::Fail(Error::new(ErrorKind::Status(StatusCode::UNAUTHORIZED)));
        }
        Action::Proceed
    }
}

#[test]
fn a_policy_can_wait_and_fail_without_an_edit_to_the_loop() {
    let c = single_attempt()
        .base_url("http://h")
        .policy(|| Gate {
            until: secs(2),
            waited: false,
        })
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(m.elapsed(), secs(2), "the first attempt waited");
    m.push(Reply::status(401));
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status(StatusCode::UNAUTHORIZED));
    assert_eq!(
        err.url().map(ToString::to_string).as_deref(),
        Some("http://h/x")
    );
}

/// Refuses every attempt before it is sent.
struct Refuse;

impl Policy for Refuse {
    fn before_attempt(&mut self, _: &mut PolicyContext<'_>) -> Action {
        Action::Fail(Error::new(ErrorKind::InvalidRequest).with_source("refused by policy"))
    }
}

#[test]
fn a_policy_that_fails_before_the_attempt_sends_nothing() {
    let c = single_attempt()
        .base_url("http://h")
        .policy(|| Refuse)
        .build()
        .unwrap();
    let m = mock(&c);
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(m.request_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Shared state

#[test]
fn the_base_origin_written_another_way_shares_its_state() {
    let c = client_with("https://api.example.com/v1");
    let a = c
        .shared
        .store
        .origin(&"https://api.example.com/v1/x".parse().unwrap());
    let b = c
        .shared
        .store
        .origin(&"https://API.example.com:443/y".parse().unwrap());
    let other = c
        .shared
        .store
        .origin(&"https://api.example.com:8443/".parse().unwrap());
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &other));
    assert_eq!(c.shared.store.origins_kept(), 1);
}

#[test]
fn the_store_forgets_unused_origins_past_its_cap() {
    let c = client();
    let m = mock(&c);
    for i in 0..MAX_ORIGINS + 50 {
        let url = format!("http://host{i}.example/x");
        m.run(async { c.get(&url).send().await?.bytes().await })
            .unwrap();
    }
    assert!(c.shared.store.origins_kept() <= MAX_ORIGINS);
    assert_eq!(m.request_count(), MAX_ORIGINS + 50);
}

#[test]
fn framing_headers_from_defaults_or_the_request_are_replaced_for_an_empty_body() {
    let c = single_attempt()
        .base_url("http://h")
        .default_header("content-length", "5")
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(c.get("a").send()).unwrap();
    m.run(c.post("b").send()).unwrap();
    let c2 = client_with("http://h");
    let m2 = mock(&c2);
    m2.run(c2.delete("c").header("transfer-encoding", "chunked").send())
        .unwrap();
    m2.run(c2.put("d").send()).unwrap();
    let log = m.requests();
    assert!(
        !log[0].headers.contains_key("content-length"),
        "GET: no framing"
    );
    assert_eq!(
        values(&log[1].headers, "content-length"),
        ["0"],
        "POST: length 0"
    );
    let log = m2.requests();
    assert!(!log[0].headers.contains_key("transfer-encoding"));
    assert!(!log[0].headers.contains_key("content-length"));
    assert_eq!(
        values(&log[1].headers, "content-length"),
        ["0"],
        "PUT: length 0"
    );
}

#[test]
fn each_origin_gets_its_host_header_unless_the_request_sets_one() {
    let c = client_with("https://api.example.com:443/v1");
    let m = mock(&c);
    m.run(c.get("a").send()).unwrap();
    m.run(c.get("http://other.example:8080/b").send()).unwrap();
    m.run(c.get("http://[::1]:9000/c").send()).unwrap();
    m.run(c.get("http://plain.example/d").send()).unwrap();
    m.run(c.get("e").header("host", "virtual.example").send())
        .unwrap();
    let log = m.requests();
    let host = |i: usize| values(&log[i].headers, "host");
    assert_eq!(host(0), ["api.example.com"], "the default port is left out");
    assert_eq!(host(1), ["other.example:8080"]);
    assert_eq!(host(2), ["[::1]:9000"]);
    assert_eq!(host(3), ["plain.example"]);
    assert_eq!(
        host(4),
        ["virtual.example"],
        "the caller's own Host is kept, once"
    );
}

#[test]
fn default_headers_and_host_are_sent_once_and_a_requests_own_header_replaces_a_default() {
    let c = single_attempt()
        .base_url("http://h:8080")
        .default_header("host", "gateway.example")
        .default_header("x-team", "a")
        .build()
        .unwrap();
    let other = single_attempt()
        .base_url("http://h:8080")
        .default_header("x-team", "a")
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(c.get("a").send()).unwrap();
    m.run(c.get("b").header("x-team", "b").send()).unwrap();
    m.run(c.get("http://elsewhere/c").send()).unwrap();
    let o = mock(&other);
    o.run(other.get("a").send()).unwrap();
    o.run(other.get("b").header("x-team", "b").send()).unwrap();
    o.run(other.get("http://elsewhere/c").send()).unwrap();
    let (log, other_log) = (m.requests(), o.requests());
    for (i, team) in [(0, "a"), (1, "b"), (2, "a")] {
        assert_eq!(values(&log[i].headers, "host"), ["gateway.example"], "{i}");
        assert_eq!(values(&log[i].headers, "x-team"), [team], "{i}");
        assert_eq!(values(&other_log[i].headers, "x-team"), [team], "{i}");
        assert_eq!(values(&log[i].headers, "user-agent").len(), 1, "{i}");
    }
    let host = |i: usize| values(&other_log[i].headers, "host");
    assert_eq!(host(0), ["h:8080"]);
    assert_eq!(host(1), ["h:8080"]);
    assert_eq!(host(2), ["elsewhere"], "another origin's own Host");
}

#[test]
fn a_cross_origin_redirect_sends_the_new_origins_host() {
    let c = redirecting("http://h").build().unwrap();
    let m = mock(&c);
    m.push(redirect(302, "http://elsewhere:81/x"));
    m.run(c.get("a").header("host", "h").send()).unwrap();
    let log = m.requests();
    assert_eq!(values(&log[0].headers, "host"), ["h"]);
    assert_eq!(values(&log[1].headers, "host"), ["elsewhere:81"]);
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker

fn breaking(failures: u32) -> crate::ClientBuilder<MockTransport> {
    single_attempt().base_url("http://h").circuit_breaker(
        crate::BreakerPolicy::builder()
            .consecutive_failures(failures)
            .open_for(secs(5), secs(60))
            .build()
            .unwrap(),
    )
}

#[test]
fn five_failures_open_the_breaker_and_the_sixth_call_is_never_sent() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let c = breaking(5)
        .on_breaker(move |e| {
            seen.lock()
                .unwrap()
                .push((e.transition.from, e.transition.to))
        })
        .build()
        .unwrap();
    let m = mock(&c);
    for _ in 0..5 {
        m.push(Reply::status(503));
        assert_eq!(m.run(c.get("x").send()).unwrap().status(), 503);
    }
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(err.retry_in(), Some(secs(5)));
    assert_eq!(
        m.request_count(),
        5,
        "the sixth call never reached the transport"
    );
    assert!(matches!(
        c.breaker_state("x"),
        Some(crate::BreakerState::Open { .. })
    ));
    // A 4xx is the caller's problem, not the server's: it never opens the breaker.
    let c4 = breaking(2).build().unwrap();
    let m4 = mock(&c4);
    for _ in 0..4 {
        m4.push(Reply::status(404));
        m4.run(c4.get("x").send()).unwrap();
    }
    assert_eq!(c4.breaker_state("x"), Some(crate::BreakerState::Closed));

    // After the cool-down one probe goes through, and its success closes the breaker.
    let timer = c.transport().timer().clone();
    m.run(timer.sleep_until(timer.now() + secs(5)));
    m.push(Reply::status(200));
    assert_eq!(m.run(c.get("x").send()).unwrap().status(), 200);
    assert_eq!(c.breaker_state("x"), Some(crate::BreakerState::Closed));
    use crate::BreakerState::{Closed, HalfOpen};
    let log = events.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0].0, Closed);
    assert!(matches!(log[0].1, crate::BreakerState::Open { .. }));
    assert_eq!(log[1].1, HalfOpen);
    assert_eq!(log[2], (HalfOpen, Closed));
}

#[test]
fn retries_stop_at_an_open_breaker() {
    let c = retrying_builder(policy().max_attempts(5).base_delay(millis(10)))
        .circuit_breaker(
            crate::BreakerPolicy::builder()
                .consecutive_failures(2)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let m = mock(&c);
    for _ in 0..5 {
        m.push(Reply::status(503));
    }
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(
        m.request_count(),
        2,
        "the third attempt met the open breaker"
    );
    assert_eq!(err.attempts(), 3);
}

#[test]
fn a_dropped_probe_frees_its_slot() {
    let c = breaking(1).build().unwrap();
    let m = mock(&c);
    m.push(Reply::status(500));
    m.run(c.get("x").send()).unwrap();
    let timer = c.transport().timer().clone();
    m.run(timer.sleep_until(timer.now() + secs(5)));
    // The probe hangs, and its caller gives up on it.
    m.push(Reply::never());
    let probe = c.get("x").send();
    let outcome = m.run(async {
        let mut probe = std::pin::pin!(probe);
        std::future::poll_fn(|cx| {
            assert!(probe.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        "dropped"
    });
    assert_eq!(outcome, "dropped");
    assert_eq!(c.breaker_state("x"), Some(crate::BreakerState::HalfOpen));
    // Its slot is free again: the next call is the probe.
    m.push(Reply::status(200));
    assert_eq!(m.run(c.get("x").send()).unwrap().status(), 200);
    assert_eq!(c.breaker_state("x"), Some(crate::BreakerState::Closed));
}

#[test]
fn operators_can_force_open_and_reset_a_breaker() {
    let c = breaking(5).build().unwrap();
    let m = mock(&c);
    assert!(c.control_breaker("x", crate::BreakerControl::ForceOpen));
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(err.retry_in(), None);
    assert!(c.control_breaker("x", crate::BreakerControl::Reset));
    assert_eq!(m.run(c.get("x").send()).unwrap().status(), 200);
    assert!(
        !client().control_breaker("x", crate::BreakerControl::Reset),
        "no breaker"
    );
}

// ---------------------------------------------------------------------------------------------
// Rate limits

fn limited(limit: crate::RateLimit) -> crate::ClientBuilder<MockTransport> {
    single_attempt().base_url("http://h").rate_limit(limit)
}

#[test]
fn a_rate_limit_paces_sequential_and_concurrent_calls() {
    let c = limited(crate::RateLimit::per_second(10).unwrap())
        .build()
        .unwrap();
    let m = mock(&c);
    for _ in 0..11 {
        m.run(c.get("x").send()).unwrap();
    }
    assert_eq!(m.elapsed(), secs(1), "10 intervals of 100 ms");

    let c = limited(crate::RateLimit::per_second(10).unwrap().burst(3).unwrap())
        .build()
        .unwrap();
    let m = mock(&c);
    let calls: Vec<_> = (0..6).map(|_| c.get("x").send()).collect();
    let results = m.run(futures_util::future::join_all(calls));
    assert!(results.iter().all(Result::is_ok));
    // A burst of 3 at once, then one every 100 ms.
    assert_eq!(m.elapsed(), millis(300));
    assert_eq!(m.request_count(), 6);
}

#[test]
fn a_wait_past_the_deadline_fails_at_once_instead_of_sleeping() {
    let c = limited(crate::RateLimit::per_second(1).unwrap())
        .deadline(millis(500))
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(c.get("x").send()).unwrap();
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_in(), Some(secs(1)));
    assert_eq!(m.elapsed(), Duration::ZERO, "it did not sleep");
    assert_eq!(m.request_count(), 1);
    // The refused call booked nothing: the next one after a second goes.
    let timer = c.transport().timer().clone();
    m.run(timer.sleep_until(timer.now() + secs(1)));
    m.run(c.get("x").send()).unwrap();
    assert_eq!(m.request_count(), 2);
}

#[test]
fn a_per_origin_limit_keeps_origins_apart() {
    let c = single_attempt()
        .base_url("http://h")
        .rate_limit_per_origin(crate::RateLimit::per_second(1).unwrap())
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(c.get("http://a/x").send()).unwrap();
    m.run(c.get("http://b/x").send()).unwrap();
    assert_eq!(
        m.elapsed(),
        Duration::ZERO,
        "different origins don't wait for each other"
    );
    m.run(c.get("http://a/y").send()).unwrap();
    assert_eq!(m.elapsed(), secs(1));
}

#[test]
fn a_spent_server_quota_holds_the_next_calls_to_its_origin() {
    let c = single_attempt()
        .base_url("http://h")
        .server_quotas(true)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).header("ratelimit", "\"default\";r=0;t=2"));
    m.run(c.get("x").send()).unwrap();
    assert_eq!(m.elapsed(), Duration::ZERO);
    m.run(c.get("x").send()).unwrap();
    let waited = m.elapsed();
    assert!(
        waited >= secs(2) && waited <= millis(2_200),
        "held {waited:?}, the reset plus at most 10% jitter"
    );
    // Another origin is not held.
    m.run(c.get("http://other/x").send()).unwrap();
    assert_eq!(m.elapsed(), waited);
    assert_eq!(m.request_count(), 3);

    // A 429 with Retry-After holds too; a hold past the deadline fails at once.
    let c = single_attempt()
        .base_url("http://h")
        .server_quotas(true)
        .deadline(secs(2))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(429).header("retry-after", "30"));
    m.run(c.get("x").send()).unwrap();
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(err.retry_in().is_some_and(|d| d >= secs(30)));
    assert_eq!(m.request_count(), 1);

    // Without server_quotas, the headers change nothing.
    let c = client_with("http://h");
    let m = mock(&c);
    m.push(Reply::status(200).header("ratelimit", "\"default\";r=0;t=2"));
    m.run(c.get("x").send()).unwrap();
    m.run(c.get("x").send()).unwrap();
    assert_eq!(m.elapsed(), Duration::ZERO);
}
