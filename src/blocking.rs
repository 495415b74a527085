//! The client without async, for CLIs, build scripts and thread-based programs (feature
//! `blocking`).
//!
//! [`Client`] has the async client's surface — the same builder settings, requests,
//! retries, redirects, time limits and errors — with calls that return when they are over,
//! response bodies read through [`std::io::Read`] (or [`std::io::BufRead`]) one chunk at a time,
//! listings as an [`Iterator`] and downloads to a file. It runs on the default backend
//! ([`DefaultTransport`](crate::DefaultTransport)); on another enabled backend it is
//! `keel::core::blocking::Client<keel_smol::SmolTransport>` and so on.
//!
//! Each client owns a thread running its backend's runtime (a tokio current-thread runtime
//! for hyper, async-io for smol and isahc), where the async client does the work; the calling
//! thread waits for the answer. See [`keel_core::blocking`] for the details.
//!
//! # Inside an async runtime
//!
//! Called from async code (a tokio task of either flavour, `smol::block_on`, an async-std
//! task, …) the blocking client blocks the calling thread until the call is over, and neither
//! panics nor deadlocks: its I/O runs on its own thread, not on the caller's runtime. Creating
//! and dropping it there is fine too (dropping never waits for its thread). What it can't
//! avoid is what blocking always does to async code: the runtime's other tasks on that thread
//! wait meanwhile. In async code, prefer [`crate::Client`], or `spawn_blocking`. With the
//! hyper backend, a call from inside a tokio runtime logs a `tracing` warning once per client
//! (target `keel::blocking`).
//!
//! # Example
//!
//! ```
//! # let server = keel_conformance::server::TestServer::start().unwrap();
//! # let base_url = server.url("");
//! use std::io::Read as _;
//!
//! #[derive(serde::Deserialize)]
//! struct Echo {
//!     method: String,
//!     query: Option<String>,
//! }
//!
//! let client = keel::blocking::Client::builder()
//!     .base_url(&base_url)
//!     .timeout(std::time::Duration::from_secs(30))
//!     .build()?;
//!
//! let echo: Echo = client
//!     .get("/echo")
//!     .query(&[("page", "2")])
//!     .send()?
//!     .error_for_status()?
//!     .json()?;
//! assert_eq!(echo.method, "GET");
//! assert_eq!(echo.query.as_deref(), Some("page=2"));
//!
//! // A large body, read through `Read` with one chunk in memory at a time.
//! let mut body = client.get("/bytes/1000000").send()?;
//! let mut sink = std::io::sink();
//! let copied = std::io::copy(&mut body, &mut sink)?;
//! assert_eq!(copied, 1_000_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use keel_core::blocking::{Download, Driver, Paginate, Response, Runtime};

/// A blocking client on the default backend ([`DefaultTransport`](crate::DefaultTransport)).
pub type Client = keel_core::blocking::Client<crate::DefaultTransport>;

/// Builds a blocking [`Client`].
pub type ClientBuilder = keel_core::blocking::ClientBuilder<crate::DefaultTransport>;

/// A request being built on a blocking [`Client`].
pub type RequestBuilder = keel_core::blocking::RequestBuilder<crate::DefaultTransport>;
