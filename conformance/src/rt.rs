//! The host runtimes a suite case can run on.
//!
//! A host runtime is the executor the *client* runs on; the [`TestServer`](crate::server::TestServer)
//! always runs on its own thread and runtime.

use std::future::Future;

/// An executor that can run a case to completion on the current thread.
pub trait HostRuntime: 'static {
    /// A short name for reports, such as `"tokio"`.
    const NAME: &'static str;

    /// Runs `fut` to completion.
    fn block_on<F: Future>(fut: F) -> F::Output;
}

/// tokio's current-thread runtime, with I/O and time enabled.
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

impl HostRuntime for Tokio {
    const NAME: &'static str = "tokio";

    fn block_on<F: Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime can always be built")
            .block_on(fut)
    }
}

/// smol's executor (`smol::block_on`, driving async-io's reactor).
#[derive(Debug, Clone, Copy)]
pub struct Smol;

impl HostRuntime for Smol {
    const NAME: &'static str = "smol";

    fn block_on<F: Future>(fut: F) -> F::Output {
        smol::block_on(fut)
    }
}

/// async-std's executor. async-std is deprecated upstream in favour of smol, but applications
/// still run on it, so keel is tested inside it.
#[derive(Debug, Clone, Copy)]
pub struct AsyncStd;

impl HostRuntime for AsyncStd {
    const NAME: &'static str = "async-std";

    fn block_on<F: Future>(fut: F) -> F::Output {
        async_std::task::block_on(fut)
    }
}
