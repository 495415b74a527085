//! The host runtimes a suite case can run on.
//!
//! A host runtime is the executor the *client* runs on; the [`TestServer`](crate::server::TestServer)
//! always runs on its own thread and runtime.
//!
//! | runtime | [`HostRuntime::NAME`] | what it is |
//! |---|---|---|
//! | [`Tokio`] | `tokio` | tokio's current-thread runtime |
//! | [`TokioMultiThread`] | `tokio-mt` | tokio's multi-thread runtime, as `#[tokio::main]` builds it |
//! | [`Smol`] | `smol` | `smol::block_on` |
//! | [`AsyncStd`] | `async-std` | `async_std::task::block_on` |
//! | [`NoRuntime`] | `no-runtime` | a plain thread and `futures::executor::block_on`: no reactor, no timer |

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

/// tokio's multi-thread runtime with I/O and time enabled, what `#[tokio::main]` gives: the case
/// runs on the calling thread (`Runtime::block_on`) and the tasks a backend spawns (keel-hyper's
/// connection tasks) run on the runtime's worker threads.
#[derive(Debug, Clone, Copy)]
pub struct TokioMultiThread;

impl HostRuntime for TokioMultiThread {
    const NAME: &'static str = "tokio-mt";

    fn block_on<F: Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a multi-thread tokio runtime can be built")
            .block_on(fut)
    }
}

/// No async runtime at all: the case is polled on a plain thread by
/// `futures::executor::block_on`, which parks the thread between wake-ups and has no reactor and
/// no timer. A backend that passes here brings what it needs itself (keel-smol and keel-isahc:
/// async-io's reactor, which runs on a thread of its own when nothing else drives it). This is
/// the "embed it in an application that has no tokio" case; keel-hyper needs tokio and has no
/// pair here.
#[derive(Debug, Clone, Copy)]
pub struct NoRuntime;

impl HostRuntime for NoRuntime {
    const NAME: &'static str = "no-runtime";

    fn block_on<F: Future>(fut: F) -> F::Output {
        futures_executor::block_on(fut)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_runtime_has_no_tokio_and_tokio_mt_has_workers() {
        // The no-runtime host gives a case no tokio context to lean on.
        assert!(NoRuntime::block_on(async {
            tokio::runtime::Handle::try_current().is_err()
        }));
        // The multi-thread host is tokio's multi-thread flavour, not the current-thread one.
        let flavor = TokioMultiThread::block_on(async {
            tokio::runtime::Handle::current().runtime_flavor()
        });
        assert_eq!(flavor, tokio::runtime::RuntimeFlavor::MultiThread);
    }
}
