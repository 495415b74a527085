//! Cookies through the driver, over the public `MockTransport` on virtual time: a login flow,
//! redirects within and across origins, retries, expiry.

use std::sync::Arc;
use std::time::Duration;

use keel_core::cookie::{CookieStore as _, Jar};
use keel_core::mock::{Answer, Matcher, MockTransport, Rule};
use keel_core::{Client, ClientBuilder, Jitter, RetryPolicy, Timer as _};

fn builder() -> ClientBuilder<MockTransport> {
    Client::<MockTransport>::builder()
        .base_url("https://api.example.com/v1/")
        .retry_policy(RetryPolicy::disabled())
}

/// The `Cookie` header of each request the mock received, in order, by URL.
fn cookies_sent(mock: &MockTransport) -> Vec<(String, Option<String>)> {
    mock.requests()
        .iter()
        .map(|r| (r.uri().to_string(), r.header("cookie").map(str::to_owned)))
        .collect()
}

fn pair(url: &str, cookie: Option<&str>) -> (String, Option<String>) {
    (url.to_owned(), cookie.map(str::to_owned))
}

#[test]
fn a_login_cookie_is_sent_back_on_later_calls() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/login")).respond(
            Answer::status(200)
                .header("set-cookie", "sid=s3cret; Path=/; Secure; HttpOnly")
                .header("set-cookie", "theme=dark; Domain=example.com; Path=/"),
        ),
    );
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200)));
    let jar = Arc::new(Jar::new());
    let client = builder()
        .cookie_store(jar.clone())
        .build_with(mock.clone())
        .unwrap();
    mock.run(async {
        let login = client.post("login").send().await?;
        // The response still shows its Set-Cookie, never its value in Debug.
        assert!(!format!("{login:?}").contains("s3cret"));
        client.get("me").send().await?;
        client.get("https://cdn.example.com/x").send().await?;
        client.get("http://api.example.com/plain").send().await?;
        client.get("https://example.org/").send().await?;
        Ok::<_, keel_core::Error>(())
    })
    .unwrap();
    assert_eq!(
        cookies_sent(&mock),
        [
            pair("https://api.example.com/v1/login", None),
            pair(
                "https://api.example.com/v1/me",
                Some("sid=s3cret; theme=dark")
            ),
            pair("https://cdn.example.com/x", Some("theme=dark")),
            pair("http://api.example.com/plain", Some("theme=dark")),
            pair("https://example.org/", None),
        ]
    );
    assert_eq!(jar.snapshot().len(), 2);
}

#[test]
fn cookies_are_off_by_default() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/login"))
            .respond(Answer::status(200).header("set-cookie", "sid=1; Path=/")),
    );
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200)));
    let client = builder().build_with(mock.clone()).unwrap();
    mock.run(async {
        client.post("login").send().await?;
        client.get("me").send().await
    })
    .unwrap();
    assert!(mock.requests().iter().all(|r| r.header("cookie").is_none()));
}

#[test]
fn every_hop_gets_its_own_cookies_and_none_cross_to_another_site() {
    let mock = MockTransport::new();
    // api sets a cookie on its 302 to another site; that site sets its own and sends the
    // call back to api.
    mock.mount(
        Rule::when(Matcher::path("/v1/start")).respond(
            Answer::status(302)
                .header("set-cookie", "hop=1; Path=/")
                .header("location", "https://other.example.net/land"),
        ),
    );
    mock.mount(
        Rule::when(Matcher::host("other.example.net")).respond(
            Answer::status(302)
                .header("set-cookie", "theirs=2; Path=/")
                .header("location", "https://api.example.com/v1/back"),
        ),
    );
    mock.mount(Rule::when(Matcher::path("/v1/back")).respond(Answer::status(200)));
    let client = builder().cookies(true).build_with(mock.clone()).unwrap();
    mock.run(async {
        client
            .get("start")
            .header("cookie", "pref=caller")
            .send()
            .await
    })
    .unwrap();
    assert_eq!(
        cookies_sent(&mock),
        [
            // The caller's own Cookie goes to its origin only.
            pair("https://api.example.com/v1/start", Some("pref=caller")),
            // Neither the caller's nor api's cookie crosses to the other site.
            pair("https://other.example.net/land", None),
            // Back on api: api's cookie (set on the 302), not the other site's; the caller's
            // left the call when it left the origin.
            pair("https://api.example.com/v1/back", Some("hop=1")),
        ]
    );
}

#[test]
fn a_same_origin_hop_gets_the_cookies_of_its_own_path() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/a/start")).respond(
            Answer::status(307)
                .header("set-cookie", "deep=1")
                .header("location", "/v1/b/end"),
        ),
    );
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200)));
    let jar = Arc::new(Jar::new());
    let now = mock.clock().now_system();
    jar.add(
        &"https://api.example.com/".parse().unwrap(),
        "root=1; Path=/",
        now,
    );
    let client = builder()
        .cookie_store(jar.clone())
        .build_with(mock.clone())
        .unwrap();
    mock.run(async {
        client
            .get("a/start")
            .header("cookie", "mine=1")
            .send()
            .await
    })
    .unwrap();
    assert_eq!(
        cookies_sent(&mock),
        [
            pair("https://api.example.com/v1/a/start", Some("mine=1; root=1")),
            // `deep` has the default path /v1/a: not for /v1/b.
            pair("https://api.example.com/v1/b/end", Some("mine=1; root=1")),
        ]
    );
    assert_eq!(jar.snapshot().len(), 2);
}

#[test]
fn a_retried_attempt_carries_a_cookie_the_failed_one_set() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/items").and(Matcher::header_absent("cookie")))
            .respond(Answer::status(503).header("set-cookie", "affinity=node2; Path=/")),
    );
    mock.mount(
        Rule::when(Matcher::path("/v1/items").and(Matcher::header("cookie", "affinity=node2")))
            .respond(Answer::status(200))
            .expect(1),
    );
    let client = builder()
        .retry_policy(
            RetryPolicy::builder()
                .max_attempts(3)
                .base_delay(Duration::from_millis(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .cookies(true)
        .build_with(mock.clone())
        .unwrap();
    let status = mock
        .run(async { client.get("items").send().await.map(|r| r.status()) })
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(mock.requests().len(), 2);
}

#[test]
fn an_expired_cookie_is_not_sent() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/login")).respond(
            Answer::status(200)
                .header("set-cookie", "short=1; Max-Age=10; Path=/")
                .header("set-cookie", "long=1; Max-Age=100; Path=/"),
        ),
    );
    mock.mount(
        Rule::when(Matcher::path("/v1/logout"))
            .respond(Answer::status(200).header("set-cookie", "long=; Max-Age=0; Path=/")),
    );
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200)));
    let client = builder().cookies(true).build_with(mock.clone()).unwrap();
    mock.run(async {
        client.post("login").send().await?;
        client.get("one").send().await?;
        mock.advance(Duration::from_secs(11));
        client.get("two").send().await?;
        client.post("logout").send().await?;
        client.get("three").send().await
    })
    .unwrap();
    let sent: Vec<Option<String>> = cookies_sent(&mock).into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        sent,
        [
            None,
            Some("short=1; long=1".to_owned()),
            Some("long=1".to_owned()),
            Some("long=1".to_owned()),
            None,
        ]
    );
}

#[test]
fn a_default_cookie_credential_and_the_jar_go_together_on_its_origin() {
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200)));
    let jar = Arc::new(Jar::new());
    let now = mock.clock().now_system();
    jar.add(
        &"https://api.example.com/".parse().unwrap(),
        "a=1; Domain=example.com; Path=/",
        now,
    );
    let client = builder()
        .default_header("cookie", "tenant=7")
        .cookie_store(jar.clone())
        .build_with(mock.clone())
        .unwrap();
    mock.run(async {
        client.get("x").send().await?;
        client.get("https://cdn.example.com/y").send().await
    })
    .unwrap();
    assert_eq!(
        cookies_sent(&mock),
        [
            pair("https://api.example.com/v1/x", Some("tenant=7; a=1")),
            pair("https://cdn.example.com/y", Some("a=1")),
        ]
    );
    // The store's own view agrees.
    assert!(jar
        .cookies(&"https://cdn.example.com/".parse().unwrap(), now)
        .is_some());
}
