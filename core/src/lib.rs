//! keel-core: the runtime-agnostic heart of keel.
//!
//! It holds the [`Transport`] and [`Timer`] traits that backends implement, the async driver
//! ([`Client`], [`RequestBuilder`], [`Response`]) that runs over them, and keel's one error type,
//! [`Error`]. Backends (`keel-hyper`, …) only move bytes; everything that decides what to do —
//! time limits, body limits, retries, redirects, credentials and the policies to come — lives
//! here, so every backend behaves the same. [`fanout`] runs many calls (or any futures) with a
//! bound on how many are in flight.
//!
//! It is **not** an HTTP implementation: it opens no sockets, spawns no tasks and names no
//! runtime. Most users depend on the `keel` facade, which picks a backend by feature flag.
//!
//! # The pipeline
//!
//! A call is one loop in the driver over an ordered stack of policies; each policy is a pure
//! machine from [`machine`] behind the [`pipeline::Policy`] trait, answering with one action
//! from a small shared set. The order, and why, is in [`pipeline`]:
//!
//! ```text
//!  Request ─► [your policies] ─► redirect ─► retry ─► in flight ─► rate limit ─► breaker ─► attempt
//!                    ▲               ▲          ▲          ▲            ▲            ▲      (+ hedge)
//!                    └───────────────┴──────────┴──────────┴────────────┴────────────┴─────────┘
//!                                                                    outcome, innermost first
//!  Response (+ guards until the body ends, + the CallRecord: attempts, hops, hedges, why it stopped)
//! ```
//!
//! State the policies share across calls (retry budgets, breakers, limiters, server quota
//! holds, permits, latencies) lives in one place per client, keyed by [`Origin`], or by a
//! partition a request names.
//!
//! # Example
//!
//! The driver is tested without a network through a transport that answers from memory:
//!
//! ```
//! use std::sync::Arc;
//! use keel_core::{
//!     Backend, Body, BoxFuture, Capabilities, Client, Error, ResponseBody, Sleep, Timer,
//!     Transport, TransportConfig,
//! };
//!
//! struct Canned(Arc<dyn Timer>);
//! #[derive(Debug)]
//! struct NeverSleeps;
//!
//! impl Timer for NeverSleeps {
//!     fn sleep_until(&self, _: std::time::Instant) -> Sleep {
//!         Box::pin(std::future::pending())
//!     }
//! }
//!
//! impl Transport for Canned {
//!     fn send(&self, req: http::Request<Body>) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
//!         let reply = format!("{{\"path\":\"{}\"}}", req.uri().path());
//!         Box::pin(async move { Ok(http::Response::new(ResponseBody::full(reply))) })
//!     }
//!     fn timer(&self) -> &Arc<dyn Timer> {
//!         &self.0
//!     }
//! }
//!
//! impl Backend for Canned {
//!     const NAME: &'static str = "canned";
//!     fn capabilities() -> Capabilities {
//!         Capabilities::none()
//!     }
//!     fn from_config(_: &TransportConfig) -> Result<Self, Error> {
//!         Ok(Canned(Arc::new(NeverSleeps)))
//!     }
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Echo {
//!     path: String,
//! }
//!
//! # futures_executor::block_on(async {
//! let client = Client::<Canned>::builder()
//!     .base_url("https://api.example.com/v1")
//!     .build()?;
//! let echo: Echo = client.get("users").send().await?.json().await?;
//! assert_eq!(echo.path, "/v1/users");
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "async-io")]
mod async_io_timer;
#[cfg(feature = "blocking")]
pub mod blocking;
mod body;
mod client;
pub mod connect;
pub mod cookie;
pub mod dns;
mod error;
pub mod fanout;
mod identity;
pub mod machine;
#[cfg(any(test, feature = "mock"))]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
pub mod multipart;
pub mod proxy;
pub mod redact;
pub mod store;
mod transport;

#[cfg(test)]
mod tests;

#[cfg(feature = "rustls")]
pub mod tls;

#[cfg(feature = "async-io")]
pub use async_io_timer::{AsyncIoTimer, StableWaker};
pub use body::{Body, FramedBody, ResponseBody};
pub use client::{hooks, pipeline};
pub use client::{
    BodyStream, BreakerControl, BreakerEvent, Checksum, Client, ClientBuilder, Download,
    DownloadReport, EndReason, EventSource, Lines, ListingPage, Ndjson, Pages, Paginate, Pending,
    Progress, RedirectEvent, Request, RequestBuilder, Response, RetryEvent, Timeouts,
    DEFAULT_MAX_BODY_SIZE,
};
pub use error::{
    find_in_chain, find_io_in_chain, find_source, BoxError, Error, ErrorKind, Stage, TimeoutPhase,
};
/// The `http` crate keel's types are made of (`Method`, `StatusCode`, `HeaderMap`, `Uri`, …).
pub use http;
pub use identity::{Identity, TlsVersion};
pub use machine::breaker::{
    BreakerPolicy, BreakerPolicyBuilder, BreakerState, InvalidBreakerConfig,
};
pub use machine::credentials::SensitiveHeaders;
pub use machine::hedge::HedgePolicy;
pub use machine::outcome::{Failure, Outcome};
pub use machine::rate::{InvalidRateConfig, RateLimit};
pub use machine::redirect::{
    Hop, RedirectAttempt, RedirectDecision, RedirectPolicy, RedirectRefusal,
};
pub use machine::retry::{
    GiveUpReason, InvalidRetryConfig, Jitter, Pacing, RequestFacts, RetryBudget, RetryPolicy,
    RetryPolicyBuilder, RetryReason,
};
pub use machine::InvalidSetting;
pub use transport::{
    Backend, BoxFuture, BoxTransport, CallDeadline, Capabilities, Certificate, CertificateEncoding,
    ConnectionFacts, ConnectionInfo, Origin, PoolStats, Sleep, Timer, Transport, TransportConfig,
};
