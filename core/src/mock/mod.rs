//! Testing without a network: [`MockTransport`], a [`Transport`] that answers from rules on a
//! virtual clock, and [`Recorder`], which records a real transport's exchanges to a
//! [`Cassette`] that a `MockTransport` replays.
//!
//! The models are Python's respx and aioresponses, and Rust's wiremock: mount [`Rule`]s
//! (a [`Matcher`] and an [`Answer`]) on the mock, hand a clone of it to a client, make calls,
//! then assert on what the mock received. Everything the client does on top of the transport
//! — retries, timeouts, breakers, rate limits, redirects, pagination, decoding — runs exactly
//! as it does over a real backend, in virtual time: a test of a backoff of 30 s takes no
//! time at all.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use keel_core::mock::{Answer, Matcher, MockTransport, Rule};
//! use keel_core::{Client, Jitter, RetryPolicy};
//!
//! let mock = MockTransport::new();
//! mock.mount(
//!     Rule::when(Matcher::method("GET").and(Matcher::path("/v1/users/7")))
//!         .respond(Answer::status(503))
//!         .up_to_n_times(2),
//! );
//! let users = mock.mount(
//!     Rule::when(Matcher::path("/v1/users/7"))
//!         .respond(Answer::status(200).json(&serde_json::json!({ "name": "Ada" })))
//!         .expect(1),
//! );
//!
//! let client = Client::<MockTransport>::builder()
//!     .base_url("https://api.example.com/v1/")
//!     .bearer_auth("secret-token")
//!     .retry_policy(
//!         RetryPolicy::builder()
//!             .base_delay(Duration::from_secs(1))
//!             .jitter(Jitter::None)
//!             .build()?,
//!     )
//!     .build_with(mock.clone())?;
//!
//! let user: serde_json::Value = mock.run(async {
//!     client.get("users/7").send().await?.error_for_status().await?.json().await
//! })?;
//! assert_eq!(user["name"], "Ada");
//! assert_eq!(mock.requests().len(), 3, "two 503s, then the 200");
//! // The backoffs (1 s, then 2 s) took no real time.
//! assert_eq!(mock.elapsed(), Duration::from_secs(3));
//! assert_eq!(users.received()[0].header("authorization"), Some("Bearer secret-token"));
//! mock.verify().unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Rules, answers and what is recorded
//!
//! Rules are tried by priority, then in the order they were mounted (see [`Rule`]). A request
//! no rule answers gets `404 Not Found` with a text body saying that no rule matched, and is
//! listed by [`MockTransport::unmatched`]. Every request (each attempt of each call) is recorded
//! with its method, URL, headers, the body when it is buffered (a streaming body is neither read
//! nor recorded) and the virtual time it was sent: [`MockTransport::requests`], and per rule
//! [`MountedRule::received`].
//!
//! # Expectations
//!
//! A rule's [`expect`](Rule::expect) is checked by [`MockTransport::verify`], and when the
//! mock's last clone (the test's, and the client's) is dropped: then an unmet expectation
//! panics with a message listing every unmet one, unless the thread is already panicking, as
//! wiremock does. This panic is deliberate, for tests; nothing else in the mock panics on what
//! a client sends (an answer that isn't valid HTTP is an [`ErrorKind::Protocol`] error).
//!
//! # Virtual time
//!
//! A `MockTransport` carries a [`VirtualTimer`] as its [`Transport::timer`]: the client reads
//! that clock and sleeps on it. [`MockTransport::run`] drives a future on it (exact, also for
//! concurrent calls); under another executor (`#[tokio::test]`, `block_on`) its sleeps move the
//! clock by themselves, so such tests finish at once too (see [`clock`] for the
//! rules of each).
//!
//! # Record and replay
//!
//! [`Recorder`] wraps a real transport, forwards every attempt and records the exchange, with
//! credentials redacted; [`Recorder::save`] writes the [`Cassette`] as JSON, and
//! [`MockTransport::replay`] answers from it offline.
//!
//! [`ErrorKind::Protocol`]: crate::ErrorKind::Protocol

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::body::{Body, ResponseBody};
use crate::error::{Error, ErrorKind};
use crate::transport::{Backend, BoxFuture, Capabilities, Timer, Transport, TransportConfig};

mod answer;
mod cassette;
pub mod clock;
mod matcher;
mod recorder;
mod request;
mod rule;

pub use answer::Answer;
pub use cassette::Cassette;
pub use clock::VirtualTimer;
pub use matcher::Matcher;
pub use recorder::Recorder;
pub use request::RecordedRequest;
pub use rule::{MountedRule, Rule, Times};

use rule::{Mounted, Respond};

/// A [`Transport`] that answers from [`Rule`]s, on virtual time: see the
/// [module documentation](self).
///
/// Cheap to clone: clones share the rules, the records and the clock. Give one clone to the
/// client ([`ClientBuilder::build_with`](crate::ClientBuilder::build_with), or
/// `Client::<MockTransport>::builder().build()` and then [`Client::transport`](crate::Client::transport))
/// and keep one to mount rules and assert.
///
/// As a [`Backend`] it claims every optional capability, so any builder setting is accepted
/// (and the transport settings, pools and TLS roots, are ignored).
#[derive(Clone)]
pub struct MockTransport {
    state: Arc<State>,
}

struct State {
    clock: VirtualTimer,
    timer: Arc<dyn Timer>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Sorted by priority, then by mount order.
    rules: Vec<Arc<Mounted>>,
    mounted: usize,
    requests: Vec<RecordedRequest>,
    unmatched: Vec<RecordedRequest>,
    /// For a replaying mock: the cassette it replays (a request it doesn't hold is an error).
    replaying: Option<String>,
    /// An unmatched request fails (and fails `verify`) instead of getting a `404`.
    strict: bool,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn verify(&self) -> Result<(), VerifyError> {
        let (rules, unmatched) = {
            let inner = self.lock();
            (inner.rules.clone(), inner.unmatched.clone())
        };
        let mut unmet: Vec<(usize, String)> = rules
            .iter()
            .filter_map(|m| m.unmet().map(|why| (m.seq, why)))
            .collect();
        unmet.sort_by_key(|(seq, _)| *seq);
        if self.lock().strict && !unmatched.is_empty() {
            unmet.push((
                usize::MAX,
                format!("{} request(s) no rule matched", unmatched.len()),
            ));
        }
        if unmet.is_empty() {
            return Ok(());
        }
        Err(VerifyError {
            unmet: unmet.into_iter().map(|(_, why)| why).collect(),
            unmatched: unmatched.iter().map(ToString::to_string).collect(),
        })
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Err(err) = self.verify() {
            panic!("{err}");
        }
    }
}

impl MockTransport {
    /// A mock with no rules (every request gets the 404 of an unmatched request), at virtual
    /// time zero.
    pub fn new() -> Self {
        let clock = VirtualTimer::new();
        Self {
            state: Arc::new(State {
                timer: Arc::new(clock.clone()),
                clock,
                inner: Mutex::default(),
            }),
        }
    }

    /// A mock that answers from the cassette saved at `path` (by [`Recorder::save`]): see
    /// [`MockTransport::from_cassette`].
    ///
    /// A file that can't be read or isn't a cassette is [`ErrorKind::Config`] naming the
    /// setting `cassette`.
    pub fn replay(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let cassette = Cassette::load(path)?;
        Ok(Self::from_cassette_named(
            &cassette,
            path.display().to_string(),
        ))
    }

    /// A mock that answers from `cassette`: each recorded exchange answers one request with the
    /// same method, path and query (compared as [`redact::url`](crate::redact::url()) prints
    /// them, so a redacted signature still matches), in the order they were recorded; the host
    /// is not compared, so the recording's server needn't run. A request with no unused
    /// exchange left fails with [`ErrorKind::InvalidRequest`] (not retried) whose source names
    /// the request and the cassette, and is listed by [`unmatched`](MockTransport::unmatched).
    ///
    /// An exchange whose head never came (the client gave up on the attempt) answers with
    /// [`Answer::never`]; one whose body failed, or wasn't read to the end, fails its body at
    /// the point the recording stops.
    pub fn from_cassette(cassette: &Cassette) -> Self {
        Self::from_cassette_named(cassette, "the cassette".to_owned())
    }

    fn from_cassette_named(cassette: &Cassette, name: String) -> Self {
        let mock = Self::new();
        for rule in cassette.rules() {
            mock.mount(rule);
        }
        mock.state.lock().replaying = Some(name);
        mock
    }

    /// Makes the mock strict: a request no rule matches fails with
    /// [`ErrorKind::InvalidRequest`] (not retried, nothing sent) instead of getting a `404`,
    /// and [`verify`](Self::verify) (and the drop of the last clone) fails while there is
    /// one. Use it when the code under test maps a `404` to a result of its own, so that a
    /// typo in a rule's path can't pass for a real "not found".
    ///
    /// ```
    /// use keel_core::mock::MockTransport;
    ///
    /// let mock = MockTransport::new().strict();
    /// let client = keel_core::Client::<MockTransport>::builder()
    ///     .base_url("https://api.example.com/")
    ///     .build_with(mock.clone())
    ///     .unwrap();
    /// let err = mock.run(client.get("users/7").send()).unwrap_err();
    /// assert_eq!(err.kind(), keel_core::ErrorKind::InvalidRequest);
    /// assert!(mock.verify().is_err());
    /// # std::mem::forget(mock); // its drop would fail the doctest on purpose
    /// ```
    #[must_use]
    pub fn strict(self) -> Self {
        self.state.lock().strict = true;
        self
    }

    /// Adds `rule`; returns a handle to what it receives.
    pub fn mount(&self, rule: Rule) -> MountedRule {
        let mut inner = self.state.lock();
        let mounted = Arc::new(Mounted {
            rule,
            seq: inner.mounted,
            received: Mutex::default(),
        });
        inner.mounted += 1;
        let at = inner
            .rules
            .partition_point(|m| m.rule.priority <= mounted.rule.priority);
        inner.rules.insert(at, mounted.clone());
        MountedRule { inner: mounted }
    }

    /// Every request received so far, in order, matched or not.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().requests.clone()
    }

    /// The requests no rule answered.
    pub fn unmatched(&self) -> Vec<RecordedRequest> {
        self.state.lock().unmatched.clone()
    }

    /// Checks every rule's expectation now.
    pub fn verify(&self) -> Result<(), VerifyError> {
        self.state.verify()
    }

    /// The virtual timer the mock gives the client.
    pub fn clock(&self) -> VirtualTimer {
        self.state.clock.clone()
    }

    /// Virtual time since the mock was made.
    pub fn elapsed(&self) -> Duration {
        self.state.clock.elapsed()
    }

    /// Moves virtual time forward by `by`, waking the sleeps due by then.
    pub fn advance(&self, by: Duration) {
        self.state.clock.advance(by);
    }

    /// Drives `fut` to completion in virtual time: see [`VirtualTimer::run`].
    ///
    /// # Panics
    ///
    /// When the future can't finish (pending with no sleep pending), or takes too many steps;
    /// the message names the virtual time.
    pub fn run<F: Future>(&self, fut: F) -> F::Output {
        self.state.clock.run(fut)
    }

    /// Records `request` and finds its answer.
    fn answer(&self, request: RecordedRequest) -> Answer {
        let rules = {
            let mut inner = self.state.lock();
            inner.requests.push(request.clone());
            inner.rules.clone()
        };
        for mounted in &rules {
            if !mounted.rule.matcher.matches(&request) {
                continue;
            }
            {
                let mut received = mounted.received();
                if mounted.rule.limit.is_some_and(|n| received.len() >= n) {
                    continue;
                }
                received.push(request.clone());
            }
            return match &mounted.rule.respond {
                Respond::Fixed(answer) => answer.clone(),
                Respond::With(make) => make(&request),
            };
        }
        let mut inner = self.state.lock();
        inner.unmatched.push(request.clone());
        match &inner.replaying {
            None if inner.strict => Answer::fail(
                Error::new(ErrorKind::InvalidRequest)
                    .with_unsent()
                    .with_source(format!(
                        "keel MockTransport (strict): no rule matched {request} ({} rules \
                         mounted)",
                        inner.rules.len()
                    )),
            ),
            Some(cassette) => {
                Answer::fail(Error::new(ErrorKind::InvalidRequest).with_source(format!(
                    "{request} is not in {cassette} (or all its recorded exchanges were \
                     replayed already)"
                )))
            }
            None => Answer::status(404).text(format!(
                "keel MockTransport: no rule matched {request} ({} rules mounted)",
                inner.rules.len()
            )),
        }
    }
}

impl Default for MockTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.state.lock();
        f.debug_struct("MockTransport")
            .field("rules", &inner.rules.len())
            .field("requests", &inner.requests.len())
            .field("unmatched", &inner.unmatched.len())
            .field("elapsed", &self.state.clock.elapsed())
            .finish()
    }
}

impl Transport for MockTransport {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        let (parts, body) = request.into_parts();
        let clock = self.state.clock.0.clone();
        let recorded = RecordedRequest {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body: body.as_bytes(),
            at: clock.elapsed(),
        };
        let answer = self.answer(recorded);
        let head = answer
            .head_delay()
            .map(|delay| clock.sleep_at(clock.elapsed().saturating_add(delay)));
        Box::pin(async move {
            match head {
                Some(sleep) => sleep.await,
                None => std::future::pending().await,
            }
            answer.into_response(clock)
        })
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        &self.state.timer
    }
}

impl Backend for MockTransport {
    const NAME: &'static str = "mock";

    fn capabilities() -> Capabilities {
        Capabilities {
            http2: true,
            http2_prior_knowledge: true,
            pool_max_idle_per_host: true,
            pool_idle_timeout: true,
            root_certificates: true,
            disable_built_in_roots: true,
            disable_tcp_nodelay: true,
            cancel_in_flight: true,
            dns_overrides: true,
            dns_override_any_port: true,
            dns_resolver: true,
            dns_cache: true,
            local_address: true,
            identity: true,
            min_tls_version: true,
            danger_accept_invalid_certs: true,
            // Like the other transport settings, proxies are accepted so clients built for
            // tests can carry them; the mock answers from its rules either way.
            proxy_http: true,
            proxy_tls: true,
            proxy_socks5: true,
            connection_caps: true,
            pool_acquire_timeout: true,
            ..Capabilities::none()
        }
    }

    /// An empty mock; the settings are ignored.
    fn from_config(_: &TransportConfig) -> Result<Self, Error> {
        Ok(Self::new())
    }
}

/// The unmet expectations [`MockTransport::verify`] found.
#[derive(Clone, Debug)]
pub struct VerifyError {
    unmet: Vec<String>,
    unmatched: Vec<String>,
}

impl VerifyError {
    /// One line per unmet expectation: the rule, what it expected, what it received.
    pub fn unmet(&self) -> &[String] {
        &self.unmet
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "keel MockTransport: {} unmet expectation(s):",
            self.unmet.len()
        )?;
        for why in &self.unmet {
            writeln!(f, "  - {why}")?;
        }
        if !self.unmatched.is_empty() {
            writeln!(f, "requests no rule matched:")?;
            for r in &self.unmatched {
                writeln!(f, "  - {r}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for VerifyError {}
