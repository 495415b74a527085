//! keel-conformance: proof that every keel backend behaves the same.
//!
//! - [`server::TestServer`]: a real HTTP/1.1 and HTTP/2 server on 127.0.0.1 with a TLS listener
//!   (self-signed certificate made at start), on its own thread and runtime, scripting faults
//!   per test and counting connections and requests.
//! - [`suite`](mod@suite): the cases, written once and generic over the backend, run on any
//!   [`rt::HostRuntime`]. [`suite!`](macro@suite) turns them into `#[test]`s for one (backend, runtime) pair.
//! - [`blocking`](mod@blocking): the blocking client's cases, on each backend and from inside each
//!   async runtime; [`blocking_suite!`](macro@blocking_suite) makes them `#[test]`s.
//! - [`chaos::ChaosProxy`]: a loopback TCP proxy in front of the test server that delays,
//!   throttles, splits, stalls, resets or closes the bytes, for the `fault_chaos_*` cases.
//! - [`redis::RedisServer`]: a real `redis-server` on loopback, for the cases on the Redis state
//!   store (keel-redis).
//! - [`faults`]: the fault matrix: each kind of failure the suite injects, and what a caller
//!   sees.
//! - [`report`]: the scorecard printed by `cargo run --release -p keel-conformance`.
//!
//! Not published; it exists for keel's own tests and for backend authors.

pub mod blocking;
pub mod chaos;
pub mod faults;
pub mod redis;
pub mod report;
pub mod rt;
pub mod server;
pub mod suite;

/// One (backend, runtime) pair of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    /// The backend's name.
    pub backend: &'static str,
    /// The host runtime's name.
    pub runtime: &'static str,
    /// Runs the whole suite on this pair.
    pub run: fn() -> Vec<suite::CaseReport>,
}

impl Pair {
    /// The pair of backend `T` on runtime `R`.
    pub fn of<T: keel_core::Backend, R: rt::HostRuntime>() -> Self {
        Self {
            backend: T::NAME,
            runtime: R::NAME,
            run: run_all::<T, R>,
        }
    }
}

/// The (backend, runtime) pairs built into this crate, by feature.
pub fn matrix() -> Vec<Pair> {
    vec![
        #[cfg(feature = "hyper")]
        Pair::of::<keel_hyper::HyperTransport, rt::Tokio>(),
        #[cfg(feature = "hyper")]
        Pair::of::<keel_hyper::HyperTransport, rt::TokioMultiThread>(),
        #[cfg(feature = "isahc")]
        Pair::of::<keel_isahc::IsahcTransport, rt::Tokio>(),
        #[cfg(feature = "isahc")]
        Pair::of::<keel_isahc::IsahcTransport, rt::Smol>(),
        #[cfg(feature = "isahc")]
        Pair::of::<keel_isahc::IsahcTransport, rt::AsyncStd>(),
        #[cfg(feature = "isahc")]
        Pair::of::<keel_isahc::IsahcTransport, rt::NoRuntime>(),
        #[cfg(feature = "smol")]
        Pair::of::<keel_smol::SmolTransport, rt::Smol>(),
        #[cfg(feature = "smol")]
        Pair::of::<keel_smol::SmolTransport, rt::AsyncStd>(),
        #[cfg(feature = "smol")]
        Pair::of::<keel_smol::SmolTransport, rt::Tokio>(),
        #[cfg(feature = "smol")]
        Pair::of::<keel_smol::SmolTransport, rt::TokioMultiThread>(),
        #[cfg(feature = "smol")]
        Pair::of::<keel_smol::SmolTransport, rt::NoRuntime>(),
    ]
}

/// Runs every case for backend `T` on runtime `R`, one after another.
pub fn run_all<T: keel_core::Backend, R: rt::HostRuntime>() -> Vec<suite::CaseReport> {
    suite::all::<T>()
        .iter()
        .map(suite::run_case::<T, R>)
        .collect()
}
