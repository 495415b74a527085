//! Secrets are never printed, and credentials in a URL never stay in it.
//!
//! A request carries a bearer token, a cookie, a header the client marked sensitive,
//! `user:pass@` in its URL and signature query parameters; the server answers with a
//! `Set-Cookie`. `Debug` and `Display` of everything a caller can print (the builder, the
//! request, the client, the pending call, the response, the events, the errors and their
//! sources) and every trace field must show none of them.

use std::error::Error as _;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use super::*;
use crate::machine::paginate::{Checkpoint, PaginateError};
use crate::RetryPolicy;

const USER: &str = "USER-0005";
const PASS: &str = "PASS-0004";
const BEARER: &str = "tok-BEARER-0001";
const COOKIE: &str = "sid=COOKIE-0002";
const API_KEY: &str = "KEY-0003";
const SIG_AMZ: &str = "SIG-0006";
const SIG: &str = "SIG-0007";
const SET_COOKIE: &str = "session=SETCOOKIE-0008";
/// `base64("USER-0005:PASS-0004")`: the `Authorization: Basic` the URL's user info becomes.
const BASIC: &str = "VVNFUi0wMDA1OlBBU1MtMDAwNA==";

/// Every credential of the request and the response.
const CREDENTIALS: [&str; 7] = [
    USER,
    PASS,
    BEARER,
    "COOKIE-0002",
    API_KEY,
    "SETCOOKIE-0008",
    BASIC,
];
/// The signature query parameters' values.
const SIGNATURES: [&str; 2] = [SIG_AMZ, SIG];

const URL: &str =
    "http://USER-0005:PASS-0004@h/v1/files?X-Amz-Signature=SIG-0006&sig=SIG-0007&page=2";

fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} shows `{secret}`: {text}");
    }
}

fn assert_no_secret(what: &str, text: &str) {
    assert_clean(what, text, &CREDENTIALS);
    assert_clean(what, text, &SIGNATURES);
}

/// `Display` of `err` and of every error in its source chain, and its `Debug`.
fn error_texts(err: &Error) -> Vec<(String, String)> {
    let mut texts = vec![("Debug".to_owned(), format!("{err:?}"))];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut depth = 0;
    while let Some(e) = cur {
        texts.push((format!("Display of source {depth}"), e.to_string()));
        depth += 1;
        cur = e.source();
    }
    texts
}

// ---------------------------------------------------------------------------------------------
// Trace capture: a subscriber that writes every field of every span and event to a string.

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut out = self.0.lock().unwrap();
        let _ = write!(out, "span {}: ", span.metadata().name());
        span.record(&mut Fields(&mut out));
        out.push('\n');
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, values: &Record<'_>) {
        values.record(&mut Fields(&mut self.0.lock().unwrap()));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut out = self.0.lock().unwrap();
        let _ = write!(out, "event {}: ", event.metadata().target());
        event.record(&mut Fields(&mut out));
        out.push('\n');
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

impl Capture {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario

/// A client that marks `x-api-key` sensitive and sends it by default, records the `Debug` of
/// its retry and redirect events and the `Display` of the hops, and retries once.
fn secretive(events: &Arc<Mutex<Vec<String>>>) -> Client<MockTransport> {
    let (retries, redirects) = (events.clone(), events.clone());
    Client::<MockTransport>::builder()
        .base_url("http://h/v1")
        .sensitive_header("x-api-key")
        .default_header("x-api-key", API_KEY)
        .retry_policy(RetryPolicy::builder().max_attempts(2).build().unwrap())
        .on_retry(move |e| retries.lock().unwrap().push(format!("{e:?}")))
        .on_redirect(move |e| redirects.lock().unwrap().push(format!("{e:?} {}", e.hop)))
        .build()
        .unwrap()
}

/// The request: a bearer token, a cookie, the marked header, `user:pass@` and signatures.
fn request(c: &Client<MockTransport>) -> crate::RequestBuilder<MockTransport> {
    c.get(URL)
        .bearer_auth(BEARER)
        .header("cookie", COOKIE)
        .header("x-api-key", API_KEY)
}

#[test]
fn debug_display_and_traces_never_show_a_secret() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let c = secretive(&events);
    let m = mock(&c);
    let capture = Capture::default();
    let _trace = tracing::subscriber::set_default(capture.clone());

    // What a caller can print before sending.
    assert_no_secret("the client", &format!("{c:?}"));
    assert_no_secret("the builder", &format!("{:?}", request(&c)));
    let plain = c.get(URL);
    assert_no_secret("a builder with only url credentials", &format!("{plain:?}"));
    let built = plain.build().unwrap();
    assert_no_secret("a request with url credentials", &format!("{built:?}"));
    assert_eq!(built.headers()["authorization"], format!("Basic {BASIC}"));
    assert_no_secret(
        "the request",
        &format!("{:?}", request(&c).build().unwrap()),
    );
    assert_no_secret("a download", &format!("{:?}", request(&c).download()));
    assert_no_secret(
        "an event source",
        &format!("{:?}", request(&c).event_source()),
    );
    assert_no_secret("a pending call", &format!("{:?}", request(&c).send()));

    // A call that is retried, redirected, and answered with a cookie.
    m.push(Reply::status(503));
    m.push(redirect_to(
        "/v1/next?sig=SIG-0007&X-Amz-Signature=SIG-0006",
    ));
    m.push(
        Reply::status(200)
            .header("set-cookie", SET_COOKIE)
            .chunk("{}"),
    );
    let response = m.run(request(&c).send()).unwrap();
    assert_eq!(response.redirects().len(), 1);
    assert_no_secret("the response", &format!("{response:?}"));
    assert_no_secret("the response headers", &format!("{:?}", response.headers()));
    assert_no_secret("the hops", &format!("{:?}", response.redirects()));
    assert_no_secret("a hop", &response.redirects()[0].to_string());
    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "one retry, one redirect: {events:?}");
    for event in &events {
        assert_no_secret("a retry or redirect event", event);
    }
    let stream = response.bytes_stream();
    assert_no_secret("a body stream", &format!("{stream:?}"));

    // A status error, with the cookie in its response headers.
    m.push(
        Reply::status(401)
            .header("set-cookie", SET_COOKIE)
            .chunk("no"),
    );
    let err = m
        .run(async {
            let response = request(&c)
                .retry_policy(RetryPolicy::disabled())
                .send()
                .await?;
            response.error_for_status().await
        })
        .unwrap_err();
    assert_eq!(err.status_code(), Some(StatusCode::UNAUTHORIZED));
    for (what, text) in error_texts(&err) {
        assert_no_secret(&format!("the status error's {what}"), &text);
    }
    assert_no_secret(
        "the status error's headers",
        &format!("{:?}", err.response_headers().unwrap()),
    );

    // A connect error.
    m.push(Reply::fail(
        Error::new(ErrorKind::Connect)
            .with_stage(Stage::Connect)
            .with_source(std::io::Error::other("connection refused")),
    ));
    let err = m
        .run(request(&c).retry_policy(RetryPolicy::disabled()).send())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.url().is_some(), "the error names its url: {err:?}");
    for (what, text) in error_texts(&err) {
        assert_no_secret(&format!("the connect error's {what}"), &text);
    }
    // The URL is there, as keel prints it.
    assert!(
        err.to_string()
            .contains("http://h/v1/files?X-Amz-Signature=REDACTED&sig=REDACTED&page=2"),
        "{err}"
    );

    // Every trace field, of every call above.
    let traces = capture.text();
    assert!(traces.contains("event "), "the calls were traced: {traces}");
    assert_no_secret("the traces", &traces);
}

/// A call that retries, is redirected and fails: no signature in its spans, events or `Debug`.
#[test]
fn traces_never_show_a_signature() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let c = secretive(&events);
    let m = mock(&c);
    let capture = Capture::default();
    let _trace = tracing::subscriber::set_default(capture.clone());
    m.push(Reply::status(503));
    m.push(redirect_to("/v1/next?sig=SIG-0007"));
    m.push(Reply::status(200));
    m.run(request(&c).send()).unwrap();
    m.push(Reply::fail(
        Error::new(ErrorKind::Connect).with_stage(Stage::Connect),
    ));
    m.run(request(&c).retry_policy(RetryPolicy::disabled()).send())
        .unwrap_err();
    assert_no_secret("a pending call", &format!("{:?}", request(&c).send()));
    let traces = capture.text();
    assert!(traces.contains("event "), "the calls were traced: {traces}");
    assert_no_secret("the traces", &traces);
}

fn redirect_to(location: &'static str) -> Reply {
    Reply::status(302).header("location", location)
}

#[test]
fn checkpoints_hops_and_pagination_errors_show_no_signature() {
    let next = "https://h/v1/items?X-Amz-Signature=SIG-0006&page=3";
    let json = format!(r#"{{"next":"{next}","pages_done":2,"items_done":20,"skip_in_page":1}}"#);
    let checkpoint: Checkpoint = serde_json::from_str(&json).unwrap();
    assert_no_secret("a checkpoint", &format!("{checkpoint:?}"));
    // What is stored is the URL itself: it is what the listing resumes from.
    assert_eq!(checkpoint.next.as_deref(), Some(next));

    let url: http::Uri = next.parse().unwrap();
    let cycle = PaginateError::Cycle { page: 2, url };
    assert_no_secret("a cycle error", &cycle.to_string());
    assert_no_secret("a cycle error", &format!("{cycle:?}"));

    let from: http::Uri = "https://h/a?sig=SIG-0007".parse().unwrap();
    let to: http::Uri = "https://cdn.example/b?X-Amz-Signature=SIG-0006"
        .parse()
        .unwrap();
    let hop = crate::Hop::new(StatusCode::FOUND, from, to, Method::GET);
    assert_no_secret("a hop", &hop.to_string());
    assert_no_secret("a hop", &format!("{hop:?}"));
    assert_eq!(
        hop.to_string(),
        "302 https://h/a?sig=REDACTED -> https://cdn.example/b?X-Amz-Signature=REDACTED"
    );

    let bad: http::Uri = "ftp://USER-0005:PASS-0004@h/?sig=SIG-0007".parse().unwrap();
    let err = crate::Origin::from_uri(&bad).unwrap_err();
    for (what, text) in error_texts(&err) {
        assert_no_secret(&format!("an origin error's {what}"), &text);
    }
}

#[test]
fn a_relative_url_error_shows_no_signature() {
    let c = Client::<MockTransport>::builder().build().unwrap();
    let err = c.get("/files?sig=SIG-0007").build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidUrl);
    for (what, text) in error_texts(&err) {
        assert_no_secret(&format!("the error's {what}"), &text);
    }
    assert!(
        err.source()
            .unwrap()
            .to_string()
            .contains("/files?sig=REDACTED"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials in a URL become `Authorization: Basic`

#[test]
fn url_credentials_become_basic_auth_and_leave_the_url() {
    let c = client();
    let m = mock(&c);
    let builder = c.get("http://USER-0005:PASS-0004@h/v1/x?a=1");
    assert_eq!(builder.url().unwrap(), "http://h/v1/x?a=1");
    let response = m.run(builder.send()).unwrap();
    assert_eq!(response.url(), "http://h/v1/x?a=1");
    m.only(|r| {
        assert_eq!(r.uri, "http://h/v1/x?a=1");
        assert_eq!(
            values(&r.headers, "authorization"),
            [format!("Basic {BASIC}")]
        );
        assert!(r.headers["authorization"].is_sensitive());
        assert_eq!(values(&r.headers, "host"), ["h"]);
    });
}

#[test]
fn url_credentials_are_percent_decoded() {
    let c = client();
    let m = mock(&c);
    // user `a@b`, password `p:ss w%rd`
    m.run(c.get("http://a%40b:p:ss%20w%25rd@h/x").send())
        .unwrap();
    m.only(|r| {
        assert_eq!(r.uri, "http://h/x");
        // base64("a@b:p:ss w%rd")
        assert_eq!(r.headers["authorization"], "Basic YUBiOnA6c3MgdyVyZA==");
    });
}

#[test]
fn a_user_without_password_and_an_empty_userinfo() {
    let c = client();
    let m = mock(&c);
    m.run(c.get("http://token@h/x").send()).unwrap();
    m.run(c.get("http://@h/y").send()).unwrap();
    let log = m.requests();
    assert_eq!(log[0].uri, "http://h/x");
    // base64("token:")
    assert_eq!(values(&log[0].headers, "authorization"), ["Basic dG9rZW46"]);
    assert_eq!(log[1].uri, "http://h/y");
    assert!(!log[1].headers.contains_key("authorization"));
}

#[test]
fn the_requests_own_authorization_wins_over_url_credentials() {
    let c = client();
    let m = mock(&c);
    m.run(c.get("http://u:p@h/a").bearer_auth("mine").send())
        .unwrap();
    m.run(
        c.get("http://u:p@h/b")
            .header("authorization", "Token t")
            .send(),
    )
    .unwrap();
    m.run(
        c.get("http://u:p@h/c")
            .basic_auth("other", Some("pw"))
            .send(),
    )
    .unwrap();
    let log = m.requests();
    let auth: Vec<Vec<&str>> = log
        .iter()
        .map(|r| values(&r.headers, "authorization"))
        .collect();
    // base64("other:pw")
    assert_eq!(auth, [["Bearer mine"], ["Token t"], ["Basic b3RoZXI6cHc="]]);
    assert!(log.iter().all(|r| !r.uri.contains('@')));
}

#[test]
fn an_executed_request_with_url_credentials_is_sent_without_them() {
    let c = client();
    let m = mock(&c);
    let request = crate::Request::new(Method::GET, "http://u:p@h/z".parse().unwrap());
    m.run(c.execute(request)).unwrap();
    let mut own = crate::Request::new(Method::GET, "http://u:p@h/z".parse().unwrap());
    own.headers_mut()
        .insert("authorization", HeaderValue::from_static("Bearer own"));
    m.run(c.execute(own)).unwrap();
    let log = m.requests();
    assert_eq!(log[0].uri, "http://h/z");
    // base64("u:p")
    assert_eq!(values(&log[0].headers, "authorization"), ["Basic dTpw"]);
    assert!(log[0].headers["authorization"].is_sensitive());
    assert_eq!(log[1].uri, "http://h/z");
    assert_eq!(values(&log[1].headers, "authorization"), ["Bearer own"]);
}

#[test]
fn url_credentials_do_not_follow_a_redirect_to_another_origin() {
    let c = client();
    let m = mock(&c);
    m.push(redirect_to("/v1/same"));
    m.push(redirect_to("http://other.example/there"));
    m.run(c.get("http://u:p@h/v1/start").send()).unwrap();
    let log = m.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(values(&log[0].headers, "authorization"), ["Basic dTpw"]);
    assert_eq!(values(&log[1].headers, "authorization"), ["Basic dTpw"]);
    assert_eq!(log[2].uri, "http://other.example/there");
    assert!(!log[2].headers.contains_key("authorization"));
}

#[test]
fn base_url_credentials_go_to_the_base_origin_only() {
    let c = single_attempt()
        .base_url("http://u:p@h/v1")
        .build()
        .unwrap();
    let m = mock(&c);
    assert_eq!(c.base_url().unwrap(), "http://h/v1");
    assert!(!format!("{c:?}").contains("u:p"));
    m.run(c.get("items").send()).unwrap();
    m.run(c.get("http://other.example/x").send()).unwrap();
    let log = m.requests();
    assert_eq!(log[0].uri, "http://h/v1/items");
    assert_eq!(values(&log[0].headers, "authorization"), ["Basic dTpw"]);
    assert!(log[0].headers["authorization"].is_sensitive());
    assert!(!log[1].headers.contains_key("authorization"));

    // A default Authorization of the client's own wins; a request's own wins over both.
    let c = single_attempt()
        .base_url("http://u:p@h/v1")
        .bearer_auth("client")
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(c.get("a").send()).unwrap();
    m.run(c.get("b").bearer_auth("request").send()).unwrap();
    let log = m.requests();
    assert_eq!(values(&log[0].headers, "authorization"), ["Bearer client"]);
    assert_eq!(values(&log[1].headers, "authorization"), ["Bearer request"]);
}

#[test]
fn a_base_url_with_credentials_and_a_slow_path_join_keeps_them_out() {
    let c = single_attempt()
        .base_url("http://u:p@h/v1")
        .build()
        .unwrap();
    let m = mock(&c);
    // A space and a dot segment: joined by the WHATWG parser, from the base URL.
    m.run(c.get("a b/../c").send()).unwrap();
    m.only(|r| {
        assert_eq!(r.uri, "http://h/v1/c");
        assert_eq!(values(&r.headers, "authorization"), ["Basic dTpw"]);
    });
}

/// Turning certificate verification off is loud: building such a client logs one warning that
/// names the option; a client built without it logs none. A client certificate's key never
/// shows in the builder's or the client's `Debug`.
#[test]
fn verification_off_warns_once_and_keys_stay_hidden() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        Client::<MockTransport>::builder().build().unwrap();
    });
    assert!(!capture.text().contains("danger_accept_invalid_certs"));

    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        Client::<MockTransport>::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
    });
    let text = capture.text();
    assert_eq!(
        text.matches("danger_accept_invalid_certs").count(),
        1,
        "{text}"
    );

    let cert = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nS0VZLTAwMDk=\n-----END PRIVATE KEY-----\n";
    let identity = crate::Identity::from_pem(cert, key).unwrap();
    let builder = Client::<MockTransport>::builder().identity(identity);
    let shown = format!("{builder:?}");
    // The key's bytes are "KEY-0009": neither they nor their base64 may show.
    assert_clean(
        "the builder",
        &shown,
        &["S0VZLTAwMDk", "75, 69, 89", "KEY-0009"],
    );
    let client = builder.build().unwrap();
    assert_clean(
        "the client",
        &format!("{client:?}"),
        &["S0VZLTAwMDk", "75, 69, 89", "KEY-0009"],
    );
}
