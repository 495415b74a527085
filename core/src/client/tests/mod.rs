//! Unit tests of the async driver over a scripted in-memory transport and a virtual clock.
//!
//! `MockTransport` records every request and answers from a script of `Reply`s. Replies and body
//! chunks can be held back until a point in virtual time. `VirtualTimer` tells virtual time, and
//! `MockState::run` drives a future to completion: it polls only when the future was woken, and
//! when nothing woke it, jumps the clock to the earliest pending sleep (as quinn's test `Pair`
//! jumps to the next timeout). It never sleeps for real, and it panics instead of hanging when a
//! future is stuck with nothing scheduled to wake it or takes too many steps.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method, StatusCode};
use http_body::Frame;

use super::{Client, Response, Timeouts};
use crate::body::{Body, ResponseBody};
use crate::error::{Error, ErrorKind, Stage, TimeoutPhase};
use crate::machine::retry::GiveUpReason;
use crate::tests::clock::{self, Clock, VirtualSleep, VirtualTimer};
use crate::transport::{Backend, BoxTransport, Capabilities, Timer, Transport, TransportConfig};

// ---------------------------------------------------------------------------------------------
// Scripted transport
// ---------------------------------------------------------------------------------------------

/// One step of a scripted response body.
#[derive(Debug)]
enum Step {
    /// A chunk, delivered once virtual time reaches `at`.
    Data { at: Duration, bytes: Bytes },
    /// An error, delivered once virtual time reaches `at`.
    Fail { at: Duration, err: Error },
    /// Nothing, ever.
    Stall,
}

/// A scripted answer to one request.
#[derive(Debug)]
struct Reply {
    /// When the head (or the error) arrives; `None`: never.
    head_at: Option<Duration>,
    outcome: Result<Head, Error>,
}

#[derive(Debug)]
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    steps: Vec<Step>,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            head_at: Some(Duration::ZERO),
            outcome: Ok(Head {
                status: StatusCode::from_u16(status).unwrap(),
                headers: HeaderMap::new(),
                steps: Vec::new(),
            }),
        }
    }

    fn never() -> Self {
        Self {
            head_at: None,
            outcome: Ok(Reply::status(200).outcome.unwrap()),
        }
    }

    fn fail(err: Error) -> Self {
        Self {
            head_at: Some(Duration::ZERO),
            outcome: Err(err),
        }
    }

    fn head_at(mut self, at: Duration) -> Self {
        self.head_at = Some(at);
        self
    }

    fn head(&mut self) -> &mut Head {
        self.outcome.as_mut().expect("a reply with a head")
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.head()
            .headers
            .append(name, HeaderValue::from_static(value));
        self
    }

    /// A chunk available at once.
    fn chunk(self, bytes: impl Into<Bytes>) -> Self {
        self.chunk_at(Duration::ZERO, bytes)
    }

    fn chunk_at(mut self, at: Duration, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        self.head().steps.push(Step::Data { at, bytes });
        self
    }

    fn fail_at(mut self, at: Duration, err: Error) -> Self {
        self.head().steps.push(Step::Fail { at, err });
        self
    }

    fn stall(mut self) -> Self {
        self.head().steps.push(Step::Stall);
        self
    }
}

/// What the transport saw of one request.
#[derive(Debug)]
struct Recorded {
    method: Method,
    uri: String,
    headers: HeaderMap,
    /// The body, when it was buffered.
    body: Option<Bytes>,
    /// When it was sent, in virtual time.
    at: Duration,
}

struct MockState {
    clock: Arc<Clock>,
    timer: Arc<dyn Timer>,
    config: TransportConfig,
    script: Mutex<VecDeque<Reply>>,
    log: Mutex<Vec<Recorded>>,
    /// How many times any response body was polled.
    body_polls: Arc<AtomicUsize>,
    /// How many sends were dropped before their head (or error) came.
    cancelled: Arc<AtomicUsize>,
    /// How many sends and bodies were dropped while `connect::abandoned_on_timeout` said so.
    timed_out: Arc<AtomicUsize>,
}

impl fmt::Debug for MockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockState")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl MockState {
    fn push(&self, reply: Reply) {
        self.script.lock().unwrap().push_back(reply);
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.log.lock().unwrap()
    }

    fn request_count(&self) -> usize {
        self.requests().len()
    }

    /// The one request the transport received, checked to be the only one.
    fn only<R>(&self, f: impl FnOnce(&Recorded) -> R) -> R {
        let log = self.requests();
        assert_eq!(log.len(), 1, "expected exactly one request, got {log:?}");
        f(&log[0])
    }

    fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    fn body_polls(&self) -> usize {
        self.body_polls.load(Ordering::SeqCst)
    }

    fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Sends and bodies dropped because a time limit cut them.
    fn dropped_on_timeout(&self) -> usize {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// Drives `fut` to completion in virtual time; panics instead of hanging.
    fn run<F: Future>(&self, fut: F) -> F::Output {
        clock::run(&self.clock, fut)
    }
}

thread_local! {
    /// The state of the last transport built on this thread (each test runs on its own thread),
    /// for clients whose transport is type-erased.
    static LAST_BUILT: RefCell<Option<Arc<MockState>>> = const { RefCell::new(None) };
}

fn last_built() -> Arc<MockState> {
    LAST_BUILT
        .with(|l| l.borrow().clone())
        .expect("a mock transport was built")
}

/// A transport answering from a script. With `FULL = false` it supports no optional setting.
#[derive(Debug)]
struct MockTransport<const FULL: bool = true> {
    state: Arc<MockState>,
}

type BareTransport = MockTransport<false>;

impl<const FULL: bool> Transport for MockTransport<FULL> {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> crate::BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        let (parts, body) = request.into_parts();
        self.state.log.lock().unwrap().push(Recorded {
            method: parts.method,
            uri: parts.uri.to_string(),
            headers: parts.headers,
            body: body.as_bytes(),
            at: self.state.clock.elapsed(),
        });
        let reply = self
            .state
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Reply::status(200));
        let clock = self.state.clock.clone();
        let polls = self.state.body_polls.clone();
        let timed_out = self.state.timed_out.clone();
        let cancelled = Cancelled(Some((self.state.cancelled.clone(), timed_out.clone())));
        Box::pin(async move {
            let mut cancelled = cancelled;
            match reply.head_at {
                Some(at) => clock.sleep_at(at).await,
                None => std::future::pending().await,
            }
            cancelled.0 = None;
            let head = reply.outcome?;
            let body = MockBody {
                steps: head.steps.into(),
                gate: None,
                clock,
                polls,
                timed_out,
            };
            let mut response = http::Response::new(ResponseBody::new(body));
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            Ok(response)
        })
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        &self.state.timer
    }
}

impl<const FULL: bool> Backend for MockTransport<FULL> {
    const NAME: &'static str = "mock";

    fn capabilities() -> Capabilities {
        if FULL {
            Capabilities {
                http2: true,
                http2_prior_knowledge: true,
                pool_max_idle_per_host: true,
                pool_idle_timeout: true,
                root_certificates: true,
                disable_built_in_roots: true,
                disable_tcp_nodelay: true,
                cancel_in_flight: true,
                uses_call_deadline: true,
                derives_host: false,
                dns_overrides: true,
                dns_override_any_port: true,
                dns_resolver: true,
                dns_cache: true,
                local_address: true,
                connection_addrs: true,
                connection_reused: true,
                pool_stats: false,
                identity: true,
                min_tls_version: true,
                danger_accept_invalid_certs: true,
                proxy_http: true,
                proxy_tls: true,
                proxy_socks5: true,
                pool_return_on_body_end: true,
                truncated_head_detected: true,
                http2_timeout_retires_connection: true,
                connection_caps: true,
                pool_acquire_timeout: true,
                connection_cap_evicts_idle: true,
            }
        } else {
            Capabilities::none()
        }
    }

    fn from_config(config: &TransportConfig) -> Result<Self, Error> {
        let clock = Clock::new();
        let state = Arc::new(MockState {
            timer: Arc::new(VirtualTimer(clock.clone())),
            clock,
            config: config.clone(),
            script: Mutex::default(),
            log: Mutex::default(),
            body_polls: Arc::default(),
            cancelled: Arc::default(),
            timed_out: Arc::default(),
        });
        LAST_BUILT.with(|l| *l.borrow_mut() = Some(state.clone()));
        Ok(Self { state })
    }
}

/// Counts a send dropped before it finished (and apart, those dropped on a timeout).
struct Cancelled(Option<(Arc<AtomicUsize>, Arc<AtomicUsize>)>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some((count, timed_out)) = &self.0 {
            count.fetch_add(1, Ordering::SeqCst);
            if crate::connect::abandoned_on_timeout() {
                timed_out.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

struct MockBody {
    steps: VecDeque<Step>,
    gate: Option<VirtualSleep>,
    clock: Arc<Clock>,
    polls: Arc<AtomicUsize>,
    timed_out: Arc<AtomicUsize>,
}

impl Drop for MockBody {
    fn drop(&mut self) {
        if crate::connect::abandoned_on_timeout() {
            self.timed_out.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl http_body::Body for MockBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        this.polls.fetch_add(1, Ordering::SeqCst);
        let at = match this.steps.front() {
            None => return Poll::Ready(None),
            Some(Step::Stall) => return Poll::Pending,
            Some(Step::Data { at, .. } | Step::Fail { at, .. }) => *at,
        };
        let clock = &this.clock;
        let gate = this.gate.get_or_insert_with(|| clock.sleep_at(at));
        if Pin::new(gate).poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.gate = None;
        match this.steps.pop_front() {
            Some(Step::Data { bytes, .. }) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Some(Step::Fail { err, .. }) => Poll::Ready(Some(Err(err))),
            _ => unreachable!("checked above"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A builder for tests of one attempt's behaviour: retries off, so the script is read once.
fn single_attempt() -> crate::ClientBuilder<MockTransport> {
    Client::<MockTransport>::builder().retry_policy(crate::RetryPolicy::disabled())
}

fn client_with(base: &str) -> Client<MockTransport> {
    single_attempt().base_url(base).build().unwrap()
}

fn client() -> Client<MockTransport> {
    client_with("http://h/v1")
}

fn mock(client: &Client<MockTransport>) -> &MockState {
    &client.transport().state
}

/// The URL a request to `target` would go to, as a string, or the error kind.
fn joined(client: &Client<MockTransport>, target: &str) -> Result<String, ErrorKind> {
    client
        .get(target)
        .url()
        .map(|u| u.to_string())
        .map_err(Error::kind)
}

fn values(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Vec<&str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// Sends a GET to `path` answered by `reply`, and reads the body as `bytes()`.
fn get_bytes(client: &Client<MockTransport>, reply: Reply) -> Result<Bytes, Error> {
    let m = mock(client);
    m.push(reply);
    m.run(async { client.get("x").send().await?.bytes().await })
}

fn config_setting<T: fmt::Debug>(result: Result<Client<T>, Error>) -> Option<&'static str> {
    let err = result.expect_err("the build must fail");
    assert_eq!(err.kind(), ErrorKind::Config, "{err:?}");
    err.setting()
}

// ---------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------

#[test]
fn harness_virtual_sleep_wakes_at_its_deadline_and_never_early() {
    let c = client();
    let m = mock(&c);
    let timer = c.transport().timer().clone();
    let start = timer.now();
    m.run(timer.sleep_until(start + secs(7)));
    assert_eq!(m.elapsed(), secs(7));
    assert_eq!(timer.now() - start, secs(7));
    // A sleep for a time already passed is ready at once and does not move the clock.
    m.run(timer.sleep_until(start + secs(1)));
    assert_eq!(m.elapsed(), secs(7));
}

#[test]
#[should_panic(expected = "nothing will wake it")]
fn harness_reports_a_stuck_future_instead_of_hanging() {
    let c = client();
    mock(&c).run(std::future::pending::<()>());
}

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

#[test]
fn relative_paths_are_appended_to_the_base_path_with_or_without_slashes() {
    for base in ["http://h/v1", "http://h/v1/"] {
        let c = client_with(base);
        assert_eq!(
            joined(&c, "users").as_deref(),
            Ok("http://h/v1/users"),
            "base {base}"
        );
        assert_eq!(
            joined(&c, "/users").as_deref(),
            Ok("http://h/v1/users"),
            "base {base}"
        );
        assert_eq!(
            joined(&c, "users?x=1").as_deref(),
            Ok("http://h/v1/users?x=1"),
            "base {base}"
        );
        assert_eq!(
            joined(&c, "/users/42/posts").as_deref(),
            Ok("http://h/v1/users/42/posts"),
            "base {base}"
        );
    }
    // A base without a path joins at the root.
    let c = client_with("https://api.example.com");
    assert_eq!(
        joined(&c, "/users").as_deref(),
        Ok("https://api.example.com/users")
    );
}

#[test]
fn the_joined_url_is_what_the_transport_receives() {
    let c = client_with("http://h/v1/");
    let m = mock(&c);
    let resp = m.run(c.delete("/users?x=1").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.url().to_string(), "http://h/v1/users?x=1");
    m.only(|r| {
        assert_eq!(r.method, Method::DELETE);
        assert_eq!(r.uri, "http://h/v1/users?x=1");
    });
}

#[test]
fn an_absolute_url_overrides_the_base() {
    let c = client();
    assert_eq!(
        joined(&c, "https://other.example/x?y=1").as_deref(),
        Ok("https://other.example/x?y=1")
    );
    let m = mock(&c);
    m.run(c.get("https://other.example/x").send()).unwrap();
    m.only(|r| assert_eq!(r.uri, "https://other.example/x"));
}

#[test]
fn a_relative_url_without_a_base_is_invalid_and_never_sent() {
    let c = single_attempt().build().unwrap();
    assert_eq!(joined(&c, "users"), Err(ErrorKind::InvalidUrl));
    let m = mock(&c);
    let err = m.run(c.get("/users").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidUrl);
    assert_eq!(m.request_count(), 0);
}

#[test]
fn a_url_with_another_scheme_is_invalid() {
    let c = client();
    assert_eq!(joined(&c, "ftp://x/"), Err(ErrorKind::InvalidUrl));
    let m = mock(&c);
    let err = m.run(c.get("ftp://x/").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidUrl);
    assert_eq!(m.request_count(), 0);
}

#[test]
fn a_bad_base_url_fails_the_build_naming_base_url() {
    for bad in [
        "not a url",
        "ftp://h/files",
        "mailto:someone@example.com",
        "/v1",
    ] {
        let result = single_attempt().base_url(bad).build();
        assert_eq!(config_setting(result), Some("base_url"), "base {bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

#[test]
fn the_default_user_agent_is_keel_and_the_version() {
    let c = client();
    let m = mock(&c);
    m.run(c.get("x").send()).unwrap();
    let expected = format!("keel/{}", env!("CARGO_PKG_VERSION"));
    m.only(|r| assert_eq!(values(&r.headers, USER_AGENT), [expected.as_str()]));
}

#[test]
fn a_request_header_replaces_the_default_of_the_same_name() {
    let c = single_attempt()
        .base_url("http://h")
        .user_agent("my-sdk/2")
        .default_header("x-tenant", "a")
        .default_header("x-kept", "k")
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(
        c.get("x")
            .header(USER_AGENT, "override/1")
            .header("X-Tenant", "b")
            .send(),
    )
    .unwrap();
    m.run(c.get("y").send()).unwrap();
    let log = m.requests();
    assert_eq!(values(&log[0].headers, USER_AGENT), ["override/1"]);
    assert_eq!(values(&log[0].headers, "x-tenant"), ["b"]);
    assert_eq!(values(&log[0].headers, "x-kept"), ["k"]);
    // The next request gets the defaults again.
    assert_eq!(values(&log[1].headers, USER_AGENT), ["my-sdk/2"]);
    assert_eq!(values(&log[1].headers, "x-tenant"), ["a"]);
}

#[test]
fn every_value_of_a_multi_valued_default_header_is_sent() {
    let c = single_attempt()
        .base_url("http://h")
        .default_header("accept", "application/json")
        .default_header("accept", "text/plain")
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(c.get("x").send()).unwrap();
    m.run(c.get("x").header("accept", "text/csv").send())
        .unwrap();
    let log = m.requests();
    assert_eq!(
        values(&log[0].headers, "accept"),
        ["application/json", "text/plain"]
    );
    assert_eq!(values(&log[1].headers, "accept"), ["text/csv"]);
}

#[test]
fn headers_adds_every_value_of_a_header_map() {
    let c = client();
    let m = mock(&c);
    let mut extra = HeaderMap::new();
    extra.append("x-tag", HeaderValue::from_static("a"));
    extra.append("x-tag", HeaderValue::from_static("b"));
    extra.insert("x-one", HeaderValue::from_static("1"));
    m.run(c.get("x").headers(extra).send()).unwrap();
    m.only(|r| {
        assert_eq!(values(&r.headers, "x-tag"), ["a", "b"]);
        assert_eq!(values(&r.headers, "x-one"), ["1"]);
    });
}

#[test]
fn an_invalid_header_is_returned_by_send_without_sending() {
    let c = client();
    let m = mock(&c);
    let err = m
        .run(c.get("x").header("x-bad", "line\nbreak").send())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/v1/x")
    );
    let err = m
        .run(c.get("x").header("bad name", "v").send())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(m.request_count(), 0);
}

#[test]
fn an_invalid_default_header_fails_the_build() {
    let result = single_attempt().default_header("x-bad", "a\r\nb").build();
    assert_eq!(config_setting(result), Some("default_header"));
    let result = single_attempt().user_agent("bad\nua").build();
    assert_eq!(config_setting(result), Some("user_agent"));
}

#[test]
fn bearer_auth_sets_a_sensitive_authorization_header() {
    let c = single_attempt()
        .base_url("http://h")
        .default_header(AUTHORIZATION, "Basic ZGVmYXVsdA==")
        .build()
        .unwrap();
    let m = mock(&c);
    // The last token set wins; it replaces the client's default too.
    let request = c.get("x").bearer_auth("expired").bearer_auth("s3cr3t");
    assert!(
        !format!("{request:?}").contains("s3cr3t"),
        "the token leaked into Debug: {request:?}"
    );
    m.run(request.send()).unwrap();
    m.only(|r| {
        let auth: Vec<&HeaderValue> = r.headers.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(auth, [&HeaderValue::from_static("Bearer s3cr3t")]);
        assert!(auth[0].is_sensitive());
    });
}

// ---------------------------------------------------------------------------------------------
// Query and bodies
// ---------------------------------------------------------------------------------------------

#[test]
fn query_appends_to_an_existing_query() {
    let c = client();
    let m = mock(&c);
    m.run(
        c.get("users?x=1")
            .query(&[("y", "2"), ("z", "a b&c")])
            .send(),
    )
    .unwrap();
    m.run(
        c.get("users")
            .query(&[("page", 3)])
            .query(&[("per_page", 50)])
            .send(),
    )
    .unwrap();
    let log = m.requests();
    assert_eq!(log[0].uri, "http://h/v1/users?x=1&y=2&z=a+b%26c");
    assert_eq!(log[1].uri, "http://h/v1/users?page=3&per_page=50");
}

#[derive(serde::Serialize)]
struct NewUser<'a> {
    name: &'a str,
    admin: bool,
}

#[test]
fn json_sets_the_content_type_and_the_body() {
    let c = client();
    let m = mock(&c);
    m.run(
        c.post("users")
            .json(&NewUser {
                name: "Zoë",
                admin: false,
            })
            .send(),
    )
    .unwrap();
    m.only(|r| {
        assert_eq!(r.method, Method::POST);
        assert_eq!(values(&r.headers, CONTENT_TYPE), ["application/json"]);
        assert_eq!(
            r.body.as_deref(),
            Some("{\"name\":\"Zoë\",\"admin\":false}".as_bytes())
        );
    });
}

#[test]
fn json_keeps_a_content_type_the_request_already_set() {
    let c = client();
    let m = mock(&c);
    m.run(
        c.post("users")
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .json(&NewUser {
                name: "a",
                admin: true,
            })
            .send(),
    )
    .unwrap();
    m.only(|r| {
        assert_eq!(
            values(&r.headers, CONTENT_TYPE),
            ["application/merge-patch+json"]
        );
    });
}

#[test]
fn form_sets_the_content_type_and_the_body() {
    let c = client();
    let m = mock(&c);
    m.run(
        c.post("login")
            .form(&[("user", "a b"), ("pw", "x&y=z")])
            .send(),
    )
    .unwrap();
    m.only(|r| {
        assert_eq!(
            values(&r.headers, CONTENT_TYPE),
            ["application/x-www-form-urlencoded"]
        );
        assert_eq!(r.body.as_deref(), Some(b"user=a+b&pw=x%26y%3Dz".as_slice()));
    });
}

#[test]
fn a_body_that_fails_to_serialize_is_returned_by_send() {
    let c = client();
    let m = mock(&c);
    let mut map = std::collections::HashMap::new();
    map.insert((1, 2), "tuple keys are not json");
    let err = m.run(c.post("x").json(&map).send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(m.request_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

#[test]
fn bytes_refuses_a_declared_length_over_the_limit_without_reading() {
    let c = single_attempt()
        .base_url("http://h")
        .max_body_size(10)
        .build()
        .unwrap();
    let m = mock(&c);
    let err = get_bytes(
        &c,
        Reply::status(200)
            .header("content-length", "11")
            .chunk(vec![b'a'; 11]),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge { limit: 10 });
    assert_eq!(err.stage(), Some(Stage::Body));
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/x")
    );
    assert_eq!(m.body_polls(), 0, "the body must not be read");
}

#[test]
fn bytes_refuses_an_undeclared_body_over_the_limit() {
    let c = single_attempt()
        .base_url("http://h")
        .max_body_size(10)
        .build()
        .unwrap();
    // Several chunks that together pass the limit; the rest of the body is never waited for.
    let err = get_bytes(
        &c,
        Reply::status(200).chunk("123456").chunk("789012").stall(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge { limit: 10 });
    assert_eq!(err.stage(), Some(Stage::Body));
    // One chunk over the limit.
    let err = get_bytes(&c, Reply::status(200).chunk(vec![0u8; 11])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge { limit: 10 });
    // A server declaring less than it sends is caught too.
    let err = get_bytes(
        &c,
        Reply::status(200)
            .header("content-length", "4")
            .chunk("1234")
            .chunk("5678901"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge { limit: 10 });
    // Exactly the limit is fine, in one chunk or several.
    assert_eq!(
        get_bytes(
            &c,
            Reply::status(200).chunk("12345").chunk("").chunk("67890")
        )
        .unwrap(),
        "1234567890"
    );
    assert_eq!(
        get_bytes(
            &c,
            Reply::status(200)
                .header("content-length", "10")
                .chunk("1234567890")
        )
        .unwrap(),
        "1234567890"
    );
    assert_eq!(get_bytes(&c, Reply::status(204)).unwrap(), "");
}

#[test]
fn bytes_survives_a_huge_declared_length_under_a_raised_limit() {
    // With the limit raised to "unlimited", a server declaring an absurd Content-Length must not
    // make the client reserve that much memory up front (it panicked with "capacity overflow").
    let c = single_attempt()
        .base_url("http://h")
        .max_body_size(u64::MAX)
        .build()
        .unwrap();
    let reply = Reply::status(200)
        .header("content-length", "18446744073709551615")
        .chunk("a")
        .chunk("b");
    assert_eq!(get_bytes(&c, reply).unwrap(), "ab");
}

#[test]
fn a_fragment_is_never_sent() {
    let c = client();
    let m = mock(&c);
    m.run(c.get("x?q=1#section").send()).unwrap();
    m.only(|r| assert_eq!(r.uri, "http://h/v1/x?q=1"));
}

#[test]
fn text_decodes_the_declared_charset_and_defaults_to_utf8() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("content-type", "text/plain; charset=iso-8859-1")
            .chunk(&b"caf\xe9"[..]),
    );
    m.push(Reply::status(200).chunk("café"));
    m.push(
        Reply::status(200)
            .header("content-type", "application/json")
            .chunk("\"ça\""),
    );
    for expected in ["café", "café", "\"ça\""] {
        let text = m
            .run(async { c.get("x").send().await?.text().await })
            .unwrap();
        assert_eq!(text, expected);
    }
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Item {
    id: u32,
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Items {
    items: Vec<Item>,
}

#[test]
fn json_failure_says_where_in_the_document() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .chunk(r#"{"items":[{"id":1},"#)
            .chunk(r#"{"id":2}]}"#),
    );
    let ok: Items = m
        .run(async { c.get("x").send().await?.json().await })
        .unwrap();
    assert_eq!(ok.items, [Item { id: 1 }, Item { id: 2 }]);

    m.push(Reply::status(200).chunk(r#"{"items":[{"id":1},{"id":"two"}]}"#));
    let err = m
        .run(async { c.get("x").send().await?.json::<Items>().await })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_eq!(err.json_path(), Some("items[1].id"));
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/v1/x")
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn error_for_status_keeps_the_headers_and_a_capped_snippet() {
    let c = client();
    let m = mock(&c);
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    m.push(
        Reply::status(503)
            .header("retry-after", "7")
            .chunk(body[..3000].to_vec())
            .chunk(body[3000..].to_vec())
            .stall(),
    );
    let err = m
        .run(async { c.get("x").send().await?.error_for_status().await })
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Status(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(err.status_code(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(
        values(err.response_headers().unwrap(), "retry-after"),
        ["7"]
    );
    let snippet = err.body_snippet().unwrap();
    assert_eq!(snippet.len(), Response::SNIPPET_LIMIT);
    assert_eq!(&snippet[..], &body[..Response::SNIPPET_LIMIT]);
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/v1/x")
    );
    // It stopped reading once it had the snippet instead of waiting on the stalled rest.
    assert_eq!(m.elapsed(), Duration::ZERO);
}

#[test]
fn error_for_status_keeps_the_status_when_reading_the_snippet_fails() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(404)
            .chunk("not ")
            .fail_at(Duration::ZERO, Error::new(ErrorKind::Body)),
    );
    let err = m
        .run(async { c.get("x").send().await?.error_for_status().await })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status(StatusCode::NOT_FOUND));
    assert_eq!(err.body_snippet().map(|b| &b[..]), Some(&b"not "[..]));
}

#[test]
fn error_for_status_passes_other_responses_through() {
    let c = client();
    let m = mock(&c);
    for status in [200, 201, 204, 304] {
        m.push(Reply::status(status).header("etag", "\"v1\"").chunk("kept"));
        let body = m
            .run(async {
                let resp = c.get("x").send().await?.error_for_status().await?;
                assert_eq!(resp.status().as_u16(), status);
                assert_eq!(values(resp.headers(), "etag"), ["\"v1\""]);
                resp.bytes().await
            })
            .unwrap();
        assert_eq!(body, "kept", "status {status}");
    }
}

#[test]
fn chunks_and_streams_deliver_the_body_in_order() {
    let c = client();
    let m = mock(&c);
    m.push(Reply::status(200).chunk("a").chunk("").chunk("bc"));
    let chunks = m
        .run(async {
            let mut resp = c.get("x").send().await?;
            let mut chunks = Vec::new();
            while let Some(chunk) = resp.chunk().await? {
                chunks.push(chunk);
            }
            // Reading past the end keeps returning the end.
            assert_eq!(resp.chunk().await?, None);
            Ok::<_, Error>(chunks)
        })
        .unwrap();
    assert_eq!(chunks, ["a", "bc"]);

    m.push(Reply::status(200).chunk("x").chunk("yz"));
    let streamed: Vec<Bytes> = m
        .run(async {
            use futures_util::TryStreamExt;
            c.get("x").send().await?.bytes_stream().try_collect().await
        })
        .unwrap();
    assert_eq!(streamed, ["x", "yz"]);
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

#[test]
fn the_attempt_timeout_fires_when_no_head_arrives() {
    let c = single_attempt()
        .base_url("http://h")
        .attempt_timeout(secs(2))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::never());
    let err = m.run(c.get("slow").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Attempt));
    assert!(err.is_retryable());
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/slow")
    );
    assert_eq!(m.elapsed(), secs(2));
    assert_eq!(
        m.dropped_on_timeout(),
        1,
        "the backend was told the attempt went on a timeout"
    );
    assert!(!crate::connect::abandoned_on_timeout(), "and only then");
}

#[test]
fn a_head_within_the_attempt_timeout_is_not_cut_off() {
    let c = single_attempt()
        .base_url("http://h")
        .attempt_timeout(secs(2))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(millis(1999)).chunk("ok"));
    let body = m
        .run(async { c.get("x").send().await?.bytes().await })
        .unwrap();
    assert_eq!(body, "ok");
    m.push(Reply::status(200).head_at(millis(2001) + m.elapsed()));
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Attempt));
}

#[test]
fn a_request_can_shorten_the_attempt_timeout() {
    let c = client();
    let m = mock(&c);
    m.push(Reply::never());
    let err = m
        .run(c.get("x").attempt_timeout(millis(300)).send())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Attempt));
    assert_eq!(m.elapsed(), millis(300));
}

#[test]
fn a_deadline_shorter_than_the_attempt_timeout_fires_as_deadline() {
    let c = single_attempt()
        .base_url("http://h")
        .attempt_timeout(secs(10))
        .deadline(secs(3))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::never());
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Deadline));
    assert!(!err.is_retryable());
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/x")
    );
    assert_eq!(m.elapsed(), secs(3));
}

#[test]
fn read_idle_fires_when_the_body_goes_silent() {
    let c = single_attempt()
        .base_url("http://h")
        .read_idle_timeout(secs(3))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .head_at(secs(1))
            .chunk_at(secs(2), "first")
            .chunk_at(secs(60), "too late"),
    );
    let (first, err) = m
        .run(async {
            let mut resp = c.get("x").send().await?;
            let first = resp.chunk().await?;
            Ok::<_, Error>((first, resp.chunk().await.unwrap_err()))
        })
        .unwrap();
    assert_eq!(first.as_deref(), Some(&b"first"[..]));
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::ReadIdle));
    assert_eq!(err.stage(), Some(Stage::Body));
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/x")
    );
    // Measured from the last chunk, not from the head.
    assert_eq!(m.elapsed(), secs(5));
    assert_eq!(
        m.dropped_on_timeout(),
        1,
        "the body went at once, the backend told it was on a timeout"
    );
}

#[test]
fn only_a_time_limit_tells_the_backend_it_cut_an_attempt() {
    let c = single_attempt()
        .base_url("http://h")
        .read_idle_timeout(secs(3))
        .build()
        .unwrap();
    let m = mock(&c);
    // The caller drops a send, and a body halfway; a third body is read to its end.
    m.push(Reply::never());
    m.push(Reply::status(200).chunk_at(secs(1), "a").stall());
    m.push(Reply::status(200).chunk_at(secs(1), "whole"));
    m.run(async {
        let send = c.get("x").send();
        let sleep = m.timer.sleep_until(m.timer.now() + secs(1));
        futures_util::pin_mut!(send);
        let left = futures_util::future::select(send, sleep).await;
        drop(left);
        let mut half = c.get("x").send().await.unwrap();
        assert_eq!(half.chunk().await.unwrap().as_deref(), Some(&b"a"[..]));
        drop(half);
        assert_eq!(
            c.get("x").send().await.unwrap().bytes().await.unwrap(),
            "whole"
        );
    });
    assert_eq!((m.cancelled(), m.dropped_on_timeout()), (1, 0));
}

#[test]
fn read_idle_fires_before_the_first_chunk_too() {
    let c = single_attempt()
        .base_url("http://h")
        .read_idle_timeout(secs(3))
        .build()
        .unwrap();
    let m = mock(&c);
    let err = get_bytes(&c, Reply::status(200).head_at(secs(1)).stall()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::ReadIdle));
    assert_eq!(err.stage(), Some(Stage::Body));
    assert_eq!(m.elapsed(), secs(4));
}

#[test]
fn read_idle_does_not_fire_while_chunks_keep_arriving() {
    let c = single_attempt()
        .base_url("http://h")
        .read_idle_timeout(secs(3))
        .build()
        .unwrap();
    let m = mock(&c);
    // A chunk every 2 s for 20 s: far longer than the idle limit in total, never idle for 3 s.
    let reply = (1..=10).fold(Reply::status(200), |r, i| {
        r.chunk_at(secs(2 * i), i.to_string())
    });
    let body = get_bytes(&c, reply).unwrap();
    assert_eq!(body, "12345678910");
    assert_eq!(m.elapsed(), secs(20));
}

#[test]
fn read_idle_just_under_and_just_over_the_limit() {
    let c = single_attempt()
        .base_url("http://h")
        .read_idle_timeout(secs(3))
        .build()
        .unwrap();
    let m = mock(&c);
    let body = get_bytes(
        &c,
        Reply::status(200)
            .chunk_at(millis(2999), "a")
            .chunk_at(millis(5998), "b"),
    )
    .unwrap();
    assert_eq!(body, "ab");
    let start = m.elapsed();
    let err = get_bytes(
        &c,
        Reply::status(200)
            .chunk_at(start + millis(1000), "a")
            .chunk_at(start + millis(4001), "b"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::ReadIdle));
    assert_eq!(m.elapsed(), start + secs(4));
}

#[test]
fn the_deadline_fires_mid_body() {
    let c = single_attempt()
        .base_url("http://h")
        .read_idle_timeout(secs(3))
        .deadline(secs(5))
        .build()
        .unwrap();
    let m = mock(&c);
    let reply = (1..=10).fold(Reply::status(200).head_at(millis(500)), |r, i| {
        r.chunk_at(secs(i) - millis(100), "c")
    });
    m.push(reply);
    let (received, err) = m
        .run(async {
            let mut resp = c.get("x").send().await?;
            let mut received = 0;
            loop {
                match resp.chunk().await {
                    Ok(Some(_)) => received += 1,
                    Ok(None) => panic!("the body ended before the deadline"),
                    Err(err) => return Ok::<_, Error>((received, err)),
                }
            }
        })
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Deadline));
    assert_eq!(err.stage(), Some(Stage::Body));
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/x")
    );
    assert_eq!(m.elapsed(), secs(5));
    // Every chunk before the deadline arrived (0.9 s … 4.9 s), none after.
    assert_eq!(received, 5);
}

#[test]
fn a_request_can_shorten_the_deadline_and_read_idle() {
    let c = client();
    let m = mock(&c);
    m.push(Reply::status(200).chunk_at(secs(1), "a").stall());
    let err = m
        .run(async {
            c.get("x")
                .read_idle_timeout(secs(2))
                .send()
                .await?
                .bytes()
                .await
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::ReadIdle));
    assert_eq!(m.elapsed(), secs(3));

    let start = m.elapsed();
    m.push(Reply::never());
    let err = m.run(c.get("x").deadline(secs(1)).send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Deadline));
    assert_eq!(m.elapsed(), start + secs(1));
}

#[test]
fn zero_time_limits_fail_the_build_naming_the_setting() {
    let b = || single_attempt();
    assert_eq!(
        config_setting(b().connect_timeout(Duration::ZERO).build()),
        Some("connect_timeout")
    );
    assert_eq!(
        config_setting(b().attempt_timeout(Duration::ZERO).build()),
        Some("attempt_timeout")
    );
    assert_eq!(
        config_setting(b().deadline(Duration::ZERO).build()),
        Some("deadline")
    );
    assert_eq!(
        config_setting(b().read_idle_timeout(Duration::ZERO).build()),
        Some("read_idle_timeout")
    );
    let zero_idle = Timeouts {
        read_idle: Duration::ZERO,
        ..Timeouts::default()
    };
    assert_eq!(
        config_setting(b().timeouts(zero_idle).build()),
        Some("read_idle_timeout")
    );
}

#[test]
fn a_zero_time_limit_on_a_request_is_refused_by_send() {
    let c = client();
    let m = mock(&c);
    let err = m
        .run(c.get("x").attempt_timeout(Duration::ZERO).send())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(m.request_count(), 0);
}

#[test]
fn the_connect_timeout_reaches_the_transport() {
    let c = single_attempt()
        .connect_timeout(millis(1500))
        .build()
        .unwrap();
    assert_eq!(mock(&c).config.connect_timeout, millis(1500));
    assert_eq!(c.timeouts().connect, millis(1500));
}

// ---------------------------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------------------------

#[test]
fn settings_the_backend_lacks_fail_the_build_naming_the_setting() {
    assert_eq!(
        config_setting(
            Client::<BareTransport>::builder()
                .http2_prior_knowledge()
                .build()
        ),
        Some("http2_prior_knowledge")
    );
    assert_eq!(
        config_setting(
            Client::<BareTransport>::builder()
                .pool_max_idle_per_host(4)
                .build()
        ),
        Some("pool_max_idle_per_host")
    );
    assert_eq!(
        config_setting(
            Client::<BareTransport>::builder()
                .pool_max_idle_per_host(4)
                .build_boxed()
        ),
        Some("pool_max_idle_per_host")
    );
    // The same settings on a backend that has them build, and reach it.
    let c = single_attempt()
        .http2_prior_knowledge()
        .pool_max_idle_per_host(4)
        .build()
        .unwrap();
    assert!(mock(&c).config.http2_prior_knowledge);
    assert_eq!(mock(&c).config.pool_max_idle_per_host, Some(4));
    // And the bare backend builds without them.
    Client::<BareTransport>::builder().build().unwrap();
}

#[test]
fn dns_settings_the_backend_lacks_fail_the_build_naming_the_setting() {
    use std::net::{IpAddr, SocketAddr};

    use crate::dns::{Resolve, Resolving};

    struct Nowhere;
    impl Resolve for Nowhere {
        fn resolve(&self, _: &str) -> Resolving {
            Box::pin(async { Ok(Vec::new()) })
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
    let bare = Client::<BareTransport>::builder;
    assert_eq!(
        config_setting(bare().resolve("a.test", addr).build()),
        Some("resolve")
    );
    assert_eq!(
        config_setting(bare().dns_resolver(Nowhere).build()),
        Some("dns_resolver")
    );
    assert_eq!(
        config_setting(bare().dns_cache(Duration::from_secs(1), 8).build()),
        Some("dns_cache")
    );
    assert_eq!(
        config_setting(bare().local_address(IpAddr::from([127, 0, 0, 1])).build()),
        Some("local_address")
    );
    // On a backend that has them they build and reach it; a later override of the same host
    // replaces the earlier one.
    let c = single_attempt()
        .resolve("A.Test", addr)
        .resolve_to_addrs("a.test", &[addr, SocketAddr::from(([127, 0, 0, 2], 0))])
        .dns_resolver(Nowhere)
        .dns_cache(Duration::from_secs(30), 8)
        .local_address(IpAddr::from([127, 0, 0, 1]))
        .build()
        .unwrap();
    let config = &mock(&c).config;
    assert_eq!(config.dns_overrides.len(), 1);
    assert_eq!(config.dns_overrides[0].0, "a.test");
    assert_eq!(config.dns_overrides[0].1.len(), 2);
    assert!(config.dns_resolver.is_some());
    assert_eq!(config.dns_cache.map(|c| c.max_entries), Some(8));
    assert_eq!(config.local_address, Some(IpAddr::from([127, 0, 0, 1])));
}

// ---------------------------------------------------------------------------------------------
// Transport errors and the boxed client
// ---------------------------------------------------------------------------------------------

#[test]
fn transport_errors_come_back_with_the_url() {
    let c = client();
    let m = mock(&c);
    m.push(Reply::fail(
        Error::new(ErrorKind::Connect)
            .with_stage(Stage::Connect)
            .with_source(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
    ));
    let err = m.run(c.get("users").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(err.stage(), Some(Stage::Connect));
    assert!(err.is_unsent());
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/v1/users")
    );
    assert!(crate::find_io_in_chain(&err).is_some());
}

#[test]
fn body_errors_come_back_with_the_url_and_the_body_stage() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .chunk("partial")
            .fail_at(secs(1), Error::new(ErrorKind::Body)),
    );
    let err = m
        .run(async { c.get("download").send().await?.bytes().await })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    assert_eq!(err.stage(), Some(Stage::Body));
    assert_eq!(
        err.url().map(|u| u.to_string()).as_deref(),
        Some("http://h/v1/download")
    );
    // A stage the backend set is kept.
    m.push(Reply::status(200).fail_at(
        Duration::ZERO,
        Error::new(ErrorKind::Protocol).with_stage(Stage::AwaitHead),
    ));
    let err = m
        .run(async { c.get("x").send().await?.bytes().await })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert_eq!(err.stage(), Some(Stage::AwaitHead));
}

#[test]
fn build_boxed_gives_a_working_client() {
    let c: Client<BoxTransport> = single_attempt()
        .base_url("http://h/api")
        .attempt_timeout(secs(4))
        .build_boxed()
        .unwrap();
    assert_eq!(c.transport().backend_name(), "mock");
    assert_eq!(
        c.base_url().map(|u| u.to_string()).as_deref(),
        Some("http://h/api")
    );
    let m = last_built();
    m.push(Reply::status(201).chunk("{\"id\":7}"));
    let item: Item = m
        .run(async { c.post("items").json(&[1, 2]).send().await?.json().await })
        .unwrap();
    assert_eq!(item, Item { id: 7 });
    m.only(|r| {
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.uri, "http://h/api/items");
        assert_eq!(r.body.as_deref(), Some(&b"[1,2]"[..]));
        assert!(r.headers.contains_key(USER_AGENT));
    });
    // The boxed client runs on the backend's timer.
    m.push(Reply::never());
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Attempt));
    assert_eq!(m.elapsed(), secs(4));
}

#[test]
fn a_streaming_request_body_reaches_the_transport() {
    let c = client();
    let m = mock(&c);
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("a"))]);
    m.run(c.put("upload").body(Body::from_stream(chunks)).send())
        .unwrap();
    m.only(|r| {
        assert_eq!(r.method, Method::PUT);
        assert_eq!(r.body, None, "a stream is passed through, not buffered");
    });
}

#[test]
fn a_path_with_a_colon_is_a_path_not_a_scheme() {
    let c = client_with("http://h/v1");
    assert_eq!(
        joined(&c, "users:search").as_deref(),
        Ok("http://h/v1/users:search")
    );
    assert_eq!(
        joined(&c, "items/a:b?q=1").as_deref(),
        Ok("http://h/v1/items/a:b?q=1")
    );
    assert_eq!(joined(&c, "ftp://x/"), Err(ErrorKind::InvalidUrl));
}

#[test]
fn a_head_response_is_not_refused_for_the_length_it_declares() {
    let c = single_attempt()
        .base_url("http://h")
        .max_body_size(10)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).header("content-length", "5000"));
    let body = m.run(async { c.head("x").send().await?.bytes().await });
    assert_eq!(body.unwrap(), Bytes::new());
    m.push(Reply::status(200).header("content-length", "5000"));
    let err = m.run(async { c.get("x").send().await?.bytes().await });
    assert_eq!(
        err.unwrap_err().kind(),
        ErrorKind::BodyTooLarge { limit: 10 }
    );
}

#[test]
fn a_slow_consumer_is_not_mistaken_for_a_silent_server() {
    let c = single_attempt()
        .base_url("http://h")
        .read_idle_timeout(secs(3))
        .build()
        .unwrap();
    let m = mock(&c);
    // A chunk every 6 s; the caller spends 5 s on each, so the server is silent for only 1 s
    // after the caller asks for more, though 6 s pass between chunks.
    m.push(
        Reply::status(200)
            .chunk("a")
            .chunk_at(secs(6), "b")
            .chunk_at(secs(12), "c"),
    );
    let timer = c.transport().timer().clone();
    let got = m.run(async {
        let mut resp = c.get("x").send().await?;
        let mut got = String::new();
        while let Some(chunk) = resp.chunk().await? {
            got.push_str(std::str::from_utf8(&chunk).unwrap());
            timer.sleep_until(timer.now() + secs(5)).await;
        }
        Ok::<_, Error>(got)
    });
    assert_eq!(got.unwrap(), "abc");
    assert_eq!(m.elapsed(), secs(17));
}

// ---------------------------------------------------------------------------------------------
// Retries through the driver
// ---------------------------------------------------------------------------------------------

/// A client that retries with a fixed, jitter-free schedule: 100 ms, 200 ms, 400 ms, … (the
/// base delay and jitter of `policy` are replaced).
fn retrying(policy: crate::machine::retry::RetryPolicyBuilder) -> Client<MockTransport> {
    retrying_builder(policy.base_delay(millis(100)))
        .build()
        .unwrap()
}

/// A builder whose retries follow `policy` without jitter, for tests that set more.
fn retrying_builder(
    policy: crate::machine::retry::RetryPolicyBuilder,
) -> crate::ClientBuilder<MockTransport> {
    Client::<MockTransport>::builder()
        .base_url("http://h")
        .retry_policy(policy.jitter(crate::Jitter::None).build().unwrap())
}

fn policy() -> crate::machine::retry::RetryPolicyBuilder {
    crate::RetryPolicy::builder()
}

fn connect_refused() -> Error {
    Error::new(ErrorKind::Connect).with_stage(crate::Stage::Connect)
}

#[test]
fn two_503s_then_200_succeed_on_the_third_attempt_after_the_backoffs() {
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let c = retrying_builder(policy().base_delay(millis(100)))
        .on_retry(move |e| seen.lock().unwrap().push((e.attempt, e.reason, e.delay)))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(503));
    m.push(Reply::status(200).chunk("ok"));
    let body = m
        .run(async { c.get("x").send().await?.bytes().await })
        .unwrap();
    assert_eq!(body, "ok");
    assert_eq!(m.request_count(), 3);
    assert_eq!(m.elapsed(), millis(300));
    let status = crate::machine::retry::RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        *events.lock().unwrap(),
        [(2, status, millis(100)), (3, status, millis(200))]
    );
}

#[test]
fn retry_after_replaces_the_backoff_exactly() {
    let c = retrying(policy());
    let m = mock(&c);
    m.push(Reply::status(429).header("retry-after", "1"));
    m.push(Reply::status(200));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(m.elapsed(), secs(1));
}

#[test]
fn when_retries_run_out_the_last_response_is_returned_as_it_is() {
    let c = retrying(policy().max_attempts(2));
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(502).chunk("bad gateway"));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(m.request_count(), 2);
}

#[test]
fn post_is_not_retried_unless_it_opts_in_or_carries_an_idempotency_key() {
    let c = retrying(policy());
    let m = mock(&c);
    m.push(Reply::status(503));
    let resp = m.run(c.post("x").body("order").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(m.request_count(), 1);

    m.push(Reply::status(503));
    m.push(Reply::status(201));
    let resp = m
        .run(c.post("x").body("order").idempotent(true).send())
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(m.request_count(), 3);

    m.push(Reply::status(503));
    m.push(Reply::status(201));
    let resp = m
        .run(
            c.post("x")
                .header("idempotency-key", "k1")
                .body("order")
                .send(),
        )
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(m.request_count(), 5);
    // Every attempt carried the whole body.
    assert!(m
        .requests()
        .iter()
        .all(|r| r.body.as_deref() == Some(&b"order"[..])));
}

#[test]
fn a_failure_that_never_reached_the_server_is_retried_for_any_method() {
    let c = retrying(policy());
    let m = mock(&c);
    m.push(Reply::fail(connect_refused()));
    m.push(Reply::status(201));
    let resp = m.run(c.post("x").body("order").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(m.request_count(), 2);
}

#[test]
fn the_final_error_counts_the_attempts_and_keeps_the_last_cause() {
    let c = retrying(policy().max_attempts(3));
    let m = mock(&c);
    for _ in 0..3 {
        m.push(Reply::fail(connect_refused().with_source("refused")));
    }
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(err.attempts(), 3);
    assert_eq!(
        err.gave_up(),
        Some(&crate::machine::retry::GiveUpReason::AttemptsExhausted { attempts: 3 })
    );
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "refused"
    );
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert_eq!(m.request_count(), 3);
}

#[test]
fn the_deadline_stops_a_long_retry_chain() {
    let c = retrying_builder(
        policy()
            .max_attempts(20)
            .base_delay(millis(100))
            .multiplier(2.0),
    )
    .deadline(millis(1000))
    .build()
    .unwrap();
    let m = mock(&c);
    for _ in 0..20 {
        m.push(Reply::fail(connect_refused()));
    }
    let err = m.run(c.get("x").send()).unwrap_err();
    // 100 + 200 + 400 ms of backoff fit in 1 s; the next 800 ms would end past it.
    assert_eq!(m.request_count(), 4);
    assert_eq!(m.elapsed(), millis(700));
    assert!(
        matches!(
            err.gave_up(),
            Some(crate::machine::retry::GiveUpReason::DeadlineExceeded { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn a_stream_body_is_not_retried_but_a_rebuildable_one_is() {
    let c = retrying(policy());
    let m = mock(&c);
    m.push(Reply::fail(
        Error::new(ErrorKind::Body).with_stage(crate::Stage::AwaitHead),
    ));
    let stream = || {
        Body::from_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
            Bytes::from_static(b"part"),
        )]))
    };
    let err = m.run(c.put("x").body(stream()).send()).unwrap_err();
    assert_eq!(
        err.gave_up(),
        Some(&crate::machine::retry::GiveUpReason::BodyNotReplayable)
    );
    assert_eq!(m.request_count(), 1);

    let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = built.clone();
    m.push(Reply::fail(
        Error::new(ErrorKind::Body).with_stage(crate::Stage::AwaitHead),
    ));
    m.push(Reply::status(200));
    let resp = m
        .run(
            c.put("x")
                .body_with(move || {
                    count.fetch_add(1, Ordering::SeqCst);
                    stream()
                })
                .send(),
        )
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(built.load(Ordering::SeqCst), 2);
}

#[test]
fn a_body_that_fails_mid_way_is_fetched_again_by_buffered_reads() {
    let c = retrying(policy());
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .chunk("first half ")
            .fail_at(Duration::ZERO, Error::new(ErrorKind::Body)),
    );
    m.push(Reply::status(200).chunk("whole ").chunk("body"));
    let body = m
        .run(async { c.get("x").send().await?.bytes().await })
        .unwrap();
    assert_eq!(body, "whole body");
    assert_eq!(m.request_count(), 2);
}

#[test]
fn a_stream_reader_sees_the_mid_body_failure_instead_of_a_silent_retry() {
    let c = retrying(policy());
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .chunk("first half")
            .fail_at(Duration::ZERO, Error::new(ErrorKind::Body)),
    );
    let err = m
        .run(async {
            let mut resp = c.get("x").send().await?;
            while resp.chunk().await?.is_some() {}
            Ok::<_, Error>(())
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    assert_eq!(m.request_count(), 1);
}

#[test]
fn dropping_the_call_while_it_waits_to_retry_stops_the_retries() {
    let c = retrying_builder(policy().base_delay(secs(10)))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(200));
    let timer = c.transport().timer().clone();
    let outcome = m.run(async {
        let send = c.get("x").send();
        let give_up = timer.sleep_until(timer.now() + secs(1));
        match futures_util::future::select(send, give_up).await {
            futures_util::future::Either::Left(_) => "answered",
            futures_util::future::Either::Right(_) => "dropped",
        }
    });
    assert_eq!(outcome, "dropped");
    // Let the backoff's deadline pass: nothing is sent any more.
    m.run(timer.sleep_until(timer.now() + secs(30)));
    assert_eq!(m.request_count(), 1);
}

#[test]
fn the_budget_caps_retries_across_calls() {
    let c = retrying_builder(policy().max_attempts(2).base_delay(millis(1)))
        .retry_budget(Some(
            crate::RetryBudget::new(secs(10), 1, 0.0).expect("a valid budget"),
        ))
        .build()
        .unwrap();
    let m = mock(&c);
    for _ in 0..40 {
        m.push(Reply::status(503));
    }
    // The reserve is 1 retry per second over a 10 s window: the first 10 calls get their
    // retry, and the other 10 find the budget empty. Each call's response says which.
    let mut reasons = Vec::new();
    for _ in 0..20 {
        let resp = m.run(c.get("x").send()).unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        reasons.push((resp.attempts(), resp.gave_up().copied()));
    }
    let exhausted = (2, Some(GiveUpReason::AttemptsExhausted { attempts: 2 }));
    let refused = (1, Some(GiveUpReason::BudgetExhausted));
    assert_eq!(reasons[..10], [exhausted; 10]);
    assert_eq!(reasons[10..], [refused; 10]);
    assert_eq!(m.request_count(), 30, "20 first attempts and 10 retries");
}

mod download;
// Decodes every coding: needs all four compiled in.
#[cfg(all(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
mod decoding;
mod limits;
mod observe;
mod paginate;
mod pipeline;
mod secrets;
mod streams;
