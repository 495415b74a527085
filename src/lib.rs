//! keel: production REST API clients, written once, run on any async runtime.
//!
//! keel is for authors of SDKs and services that call HTTP APIs. It gives one client with
//! pooled connections, time limits on every phase, bounded bodies and typed errors that carry
//! where an attempt failed, on a backend chosen by feature flag:
//!
//! | feature | backend | runtime | pick it when |
//! |---|---|---|---|
//! | `hyper` (default) | `keel_hyper`: hyper 1.x, hyper-util's pool, rustls, HTTP/1.1 + HTTP/2 | tokio (either flavour) | your application runs on tokio: the fastest and most complete backend |
//! | `smol` | `keel_smol`: HTTP/1.1 through ureq-proto over async-io, keel's own pool, rustls; HTTP/2 with `smol-http2` | smol, async-std, or any executor (no tokio crate in the tree; `smol-http2` adds tokio's sync and I/O-trait modules, never a runtime) | you must not pull in tokio, or you run on smol or async-std |
//! | `isahc` | `keel_isahc`: libcurl (built from source), HTTP/2 by nghttp2 | any executor (curl runs on its own thread) | you want curl's protocol stack, or a runtime nothing else supports |
//!
//! With several features on, [`DefaultTransport`] is hyper, else smol, else isahc; the others
//! are still usable as `keel::core::Client<keel_smol::SmolTransport>` and so on.
//!
//! The features `gzip`, `deflate`, `brotli` and `zstd` (all on by default) pick the content
//! codings the core asks for and decodes, the same way on every backend (see
//! [`ClientBuilder::decompress`](keel_core::ClientBuilder::decompress)); `zstd` builds the
//! zstd C library, so it needs a C compiler. Without them, bodies are handed over as they came.
//!
//! Everything that decides what to do lives in the sans-IO core ([`keel_core`]), so every
//! backend behaves the same; the conformance suite (`keel-conformance`) proves it against a
//! fault-injecting loopback server.
//!
//! [`Client`] is the client on the default backend; with the feature `blocking`,
//! `keel::blocking::Client` is the same client without async, for CLIs and thread-based
//! programs (bodies through `std::io::Read`). To pick a backend at run time, build a
//! `keel::core::Client<BoxTransport>` with
//! [`ClientBuilder::build_boxed`](keel_core::ClientBuilder::build_boxed).
//!
//! Every call is a `tracing` span with a child span per attempt, named as OpenTelemetry's HTTP
//! client conventions name them, and every decision of a policy is an event on it;
//! [`hooks`] see and change the same things from code. The feature `metrics` records through
//! the `metrics` facade, `opentelemetry` sends W3C trace context, and `mock` adds
//! `keel::mock`: a transport that answers from rules on a virtual clock, for testing code
//! built on keel without a network (see TESTING.md).
//!
//! # Example
//!
//! ```
//! # let server = keel_conformance::server::TestServer::start().unwrap();
//! # let base_url = server.url("");
//! #[derive(serde::Deserialize)]
//! struct Echo {
//!     method: String,
//!     query: Option<String>,
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let client = keel::Client::builder()
//!     .base_url(&base_url)
//!     .read_idle_timeout(std::time::Duration::from_secs(10))
//!     .build()?;
//!
//! let echo: Echo = client
//!     .get("/echo")
//!     .query(&[("page", "2")])
//!     .send()
//!     .await?
//!     .error_for_status()
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(echo.method, "GET");
//! assert_eq!(echo.query.as_deref(), Some("page=2"));
//! # Ok::<(), keel::Error>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(all(
    feature = "blocking",
    any(feature = "hyper", feature = "smol", feature = "isahc")
))]
pub mod blocking;

pub use keel_core as core;
/// The `http` crate keel's types are made of: `keel::http::{Method, StatusCode, HeaderMap, …}`.
pub use keel_core::http;
pub use keel_core::{
    cookie, dns, fanout, hooks, machine, multipart, pipeline, proxy, redact, store,
};
pub use keel_core::{
    Body, BodyStream, BoxTransport, BreakerControl, BreakerEvent, BreakerPolicy, BreakerState,
    Capabilities, Certificate, Checksum, ConnectionInfo, Download, DownloadReport, EndReason,
    Error, ErrorKind, EventSource, Failure, GiveUpReason, HedgePolicy, Hop, Identity,
    InvalidRetryConfig, Jitter, Lines, Ndjson, Outcome, Pacing, Paginate, Pending, PoolStats,
    Progress, RateLimit, RedirectAttempt, RedirectDecision, RedirectEvent, RedirectPolicy,
    RedirectRefusal, Request, RequestFacts, Response, RetryBudget, RetryEvent, RetryPolicy,
    RetryPolicyBuilder, RetryReason, SensitiveHeaders, Stage, TimeoutPhase, Timeouts, TlsVersion,
};

/// Testing without a network: `MockTransport`, virtual time, record and replay (feature `mock`).
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub use keel_core::mock;
/// Fleet-wide rate limits, breakers and quota holds through Redis (feature `redis`): see
/// [`keel_redis`].
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use keel_redis as redis;

#[cfg(feature = "hyper")]
pub use keel_hyper;
#[cfg(feature = "isahc")]
pub use keel_isahc;
#[cfg(feature = "smol")]
pub use keel_smol;

/// The backend the enabled features select: hyper if enabled, else smol, else isahc.
#[cfg(feature = "hyper")]
pub type DefaultTransport = keel_hyper::HyperTransport;
/// The backend the enabled features select: hyper if enabled, else smol, else isahc.
#[cfg(all(feature = "smol", not(feature = "hyper")))]
pub type DefaultTransport = keel_smol::SmolTransport;
/// The backend the enabled features select: hyper if enabled, else smol, else isahc.
#[cfg(all(feature = "isahc", not(any(feature = "hyper", feature = "smol"))))]
pub type DefaultTransport = keel_isahc::IsahcTransport;

/// A client on the default backend ([`DefaultTransport`]).
#[cfg(any(feature = "hyper", feature = "smol", feature = "isahc"))]
pub type Client = keel_core::Client<DefaultTransport>;

/// Builds a [`Client`].
#[cfg(any(feature = "hyper", feature = "smol", feature = "isahc"))]
pub type ClientBuilder = keel_core::ClientBuilder<DefaultTransport>;

/// A request being built on a [`Client`].
#[cfg(any(feature = "hyper", feature = "smol", feature = "isahc"))]
pub type RequestBuilder = keel_core::RequestBuilder<DefaultTransport>;

#[cfg(not(any(feature = "hyper", feature = "smol", feature = "isahc")))]
pub use keel_core::{Client, ClientBuilder, RequestBuilder};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The examples of the draft of the README's testing section, compiled and run as doctests.
#[cfg(all(doctest, feature = "mock"))]
#[doc = include_str!("../TESTING.md")]
struct TestingDoctests;
