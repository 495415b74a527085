//! The client without async: [`Client`], for CLIs, build scripts and thread-based programs.
//!
//! The same surface as the async [`crate::Client`] — the builder's settings, requests, responses,
//! pagination and downloads — with every call returning when it is over instead of a future,
//! and response bodies read through [`std::io::Read`].
//!
//! # How it works
//!
//! Each client (and its clones) owns one thread, its *driver*, running the backend's runtime
//! (a tokio current-thread runtime for keel-hyper, async-io for keel-smol and keel-isahc: see
//! [`Runtime`]). A call is an ordinary async call of the async client, sent to the driver over a
//! channel; the calling thread waits for the answer. So the behaviour is the async client's,
//! exactly: the same retries, redirects, time limits, pool and errors, on every backend.
//!
//! A response body is read one chunk at a time: each [`Read::read`](std::io::Read::read) that
//! needs more bytes asks the driver for the next chunk, so the response holds at most one
//! chunk, whatever the body's size, and nothing is read from the network before it is asked
//! for. [`Response::bytes`], [`Response::text`] and [`Response::json`] run the async reader on
//! the driver, under the client's size limit.
//!
//! The driver stops when the last handle on it is dropped: the last clone of the client and
//! the last response, listing or download made by it. Dropping does not wait for the thread
//! (its connections close as it winds down, at once in practice), so dropping is never a
//! blocking operation.
//!
//! # Inside an async runtime
//!
//! Calling the blocking client from async code blocks the calling thread until the call is
//! over, as any blocking I/O does; it never panics and never deadlocks on keel's account,
//! because the I/O runs on the client's own thread, not on the caller's runtime. That holds
//! for tokio (either flavour), smol, async-std or any other executor, for creating the client,
//! calling it and dropping it. The calling runtime's other tasks on that thread wait meanwhile
//! (and a server running on that very thread could not answer), so in async code use the async
//! client, or run the blocking calls with your runtime's `spawn_blocking`. When the backend can
//! tell cheaply that a call comes from inside its runtime (keel-hyper asks tokio), the client
//! logs a `tracing` warning, once per client (target `keel::blocking`).
//!
//! # Hooks and callbacks
//!
//! Hooks ([`ClientBuilder::on_retry`], …) and download progress callbacks run on the driver
//! thread. A blocking call made from there to the same client would wait for the driver that
//! runs it: it fails at once with [`ErrorKind::InvalidRequest`] instead.
//!
//! # Panics
//!
//! A panic in the code the driver runs for a call (a hook of yours, such as
//! [`ClientBuilder::on_retry`]) is caught on the driver and resumed on the calling thread, as
//! it would surface from the async client's future; the driver carries on with other calls.

mod client;
mod listing;
mod response;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::future::CatchUnwind;
use futures_util::stream::FuturesUnordered;
use futures_util::FutureExt as _;

pub use client::{Client, ClientBuilder, RequestBuilder};
pub use listing::{Download, Paginate};
pub use response::Response;

use crate::error::{Error, ErrorKind};
use crate::transport::Backend;

/// How a backend's futures run on a thread of the blocking client's own.
///
/// Each backend implements it under its `blocking` feature: keel-hyper runs a tokio
/// current-thread runtime, keel-smol and keel-isahc run async-io's `block_on`. The core never
/// picks a runtime itself.
///
/// # Example
///
/// A complete implementation for an in-memory backend whose futures need no runtime at all:
///
/// ```
/// use std::sync::Arc;
/// use keel_core::blocking::{Driver, Runtime};
/// use keel_core::{
///     Backend, Body, BoxFuture, Capabilities, Error, ResponseBody, Sleep, Timer, Transport,
///     TransportConfig,
/// };
///
/// struct Canned(Arc<dyn Timer>);
/// #[derive(Debug)]
/// struct NeverSleeps;
///
/// impl Timer for NeverSleeps {
///     fn sleep_until(&self, _: std::time::Instant) -> Sleep {
///         Box::pin(std::future::pending())
///     }
/// }
///
/// impl Transport for Canned {
///     fn send(&self, req: http::Request<Body>) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
///         let reply = format!("you asked for {}", req.uri().path());
///         Box::pin(async move { Ok(http::Response::new(ResponseBody::full(reply))) })
///     }
///     fn timer(&self) -> &Arc<dyn Timer> {
///         &self.0
///     }
/// }
///
/// impl Backend for Canned {
///     const NAME: &'static str = "canned";
///     fn capabilities() -> Capabilities {
///         Capabilities::none()
///     }
///     fn from_config(_: &TransportConfig) -> Result<Self, Error> {
///         Ok(Canned(Arc::new(NeverSleeps)))
///     }
/// }
///
/// impl Runtime for Canned {
///     fn run(driver: Driver) -> std::io::Result<()> {
///         // A real backend enters its runtime here (tokio's `Runtime::block_on`, …).
///         futures_executor::block_on(driver);
///         Ok(())
///     }
/// }
///
/// let client = keel_core::blocking::Client::<Canned>::builder()
///     .base_url("https://api.example.com/v1")
///     .build()?;
/// let text = client.get("users").send()?.text()?;
/// assert_eq!(text, "you asked for /v1/users");
/// # Ok::<(), Error>(())
/// ```
pub trait Runtime: Backend {
    /// Runs `driver` to completion on the current thread, inside the runtime the backend's
    /// futures need, and returns once it is done (when the client's last handle is dropped).
    ///
    /// Called once per client, on the client's own thread, never from inside an async runtime.
    /// An error (the runtime could not be built) fails [`ClientBuilder::build`] with
    /// [`ErrorKind::Config`] naming the setting `runtime`.
    fn run(driver: Driver) -> io::Result<()>;

    /// Whether the calling thread is inside an async runtime, when the backend can tell
    /// cheaply (keel-hyper asks tokio). The client logs a warning the first time a call comes
    /// from there. The default says no.
    fn in_async_context() -> bool {
        false
    }
}

/// The future a blocking client's thread runs: it runs every call sent to the client,
/// concurrently, and ends when the client's last handle is dropped.
///
/// Given to [`Runtime::run`]; it needs no particular executor, only the runtime the backend's
/// own futures need.
#[must_use = "a driver does nothing unless it is run"]
pub struct Driver {
    jobs: Pin<Box<async_channel::Receiver<Job>>>,
    running: FuturesUnordered<CatchUnwind<AssertUnwindSafe<Job>>>,
    /// Told once the driver is first polled: the runtime is up.
    started: Option<mpsc::SyncSender<io::Result<()>>>,
}

/// One unit of work for the driver.
type Job = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a panic carries, to resume it on the calling thread.
type Panic = Box<dyn Any + Send + 'static>;

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(started) = this.started.take() {
            let _ = started.try_send(Ok(()));
        }
        loop {
            let mut closed = false;
            loop {
                match this.jobs.as_mut().poll_next(cx) {
                    Poll::Ready(Some(job)) => {
                        this.running.push(AssertUnwindSafe(job).catch_unwind())
                    }
                    Poll::Ready(None) => {
                        closed = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if closed {
                // No handle is left: nobody waits for what still runs. Dropping it here, inside
                // the runtime, releases its connections.
                this.running.clear();
                return Poll::Ready(());
            }
            match Pin::new(&mut this.running).poll_next(cx) {
                // A job ended (a panic was caught where the caller sees it, see `call`).
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("running", &self.running.len())
            .field("queued", &self.jobs.len())
            .finish()
    }
}

/// The way to a client's driver thread, shared by the client, its clones, and everything
/// that reads from it later (responses, listings, downloads). The thread stops when the last
/// one is dropped.
pub(crate) struct Handle {
    jobs: async_channel::Sender<Job>,
    /// The driver thread, where a blocking call would wait for itself.
    driver: std::thread::ThreadId,
    /// The "called from inside an async runtime" warning was logged.
    warned: AtomicBool,
    in_async_context: fn() -> bool,
}

impl Handle {
    /// Starts a driver thread on backend `T`'s runtime, and waits until it runs.
    pub(crate) fn start<T: Runtime>() -> Result<Self, Error> {
        let (jobs_tx, jobs_rx) = async_channel::unbounded();
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        let driver = Driver {
            jobs: Box::pin(jobs_rx),
            running: FuturesUnordered::new(),
            started: Some(started_tx.clone()),
        };
        let thread = std::thread::Builder::new()
            .name(format!("keel-blocking-{}", T::NAME))
            .spawn(move || {
                if let Err(err) = T::run(driver) {
                    let _ = started_tx.try_send(Err(err));
                }
            })
            .map_err(runtime_error)?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                jobs: jobs_tx,
                driver: thread.thread().id(),
                warned: AtomicBool::new(false),
                in_async_context: T::in_async_context,
            }),
            Ok(Err(err)) => Err(runtime_error(err)),
            Err(_) => Err(runtime_error("the driver thread stopped before it ran")),
        }
    }

    /// Runs `fut` on the driver and waits for its output. A panic in `fut` is resumed here.
    pub(crate) fn call<F>(&self, fut: F) -> Result<F::Output, Error>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.call_catching(fut) {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(err) => Err(err),
        }
    }

    /// [`call`](Self::call), handing a panic back instead of resuming it.
    fn call_catching<F>(&self, fut: F) -> Result<Result<F::Output, Panic>, Error>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if std::thread::current().id() == self.driver {
            // From a hook or a progress callback of this very client: the driver would wait
            // for itself, forever.
            return Err(Error::new(ErrorKind::InvalidRequest).with_source(
                "a blocking call from the client's own driver thread (in a hook or a callback) \
                 would wait for itself",
            ));
        }
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job = async move {
            let out = AssertUnwindSafe(fut).catch_unwind().await;
            // Room for one, and only one is sent: never blocks.
            let _ = reply_tx.try_send(out);
        };
        if self.jobs.try_send(Box::pin(job)).is_err() {
            return Err(stopped());
        }
        reply_rx.recv().map_err(|_| stopped())
    }

    /// Lends the value in `slot` to a job on the driver and waits for the job's output. The
    /// value is back in `slot` when this returns, whatever happened to the job (finished,
    /// panicked, or dropped by a driver that stopped); a panic is resumed after that.
    pub(crate) fn lend<V, F, Fut>(&self, slot: &mut Option<V>, run: F) -> Result<Fut::Output, Error>
    where
        V: Send + 'static,
        F: FnOnce(Lent<V>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let Some(value) = slot.take() else {
            return Err(stopped());
        };
        let (back_tx, back_rx) = mpsc::sync_channel(1);
        let lent = Lent {
            value: Some(value),
            back: back_tx,
        };
        let out = self.call_catching(run(lent));
        // `Lent` sends the value back when it is dropped: by the job at its end, or with the
        // job wherever it is dropped; either way before (or while) the reply comes.
        *slot = back_rx.recv().ok();
        match out {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(err) => Err(err),
        }
    }

    /// Drops `value` on the driver, inside the backend's runtime (or here, if the driver has
    /// stopped). Never blocks.
    pub(crate) fn drop_there<V: Send + 'static>(&self, value: V) {
        let _ = self.jobs.try_send(Box::pin(async move { drop(value) }));
    }

    /// Logs, once, that a call comes from inside an async runtime.
    pub(crate) fn check_context(&self) {
        if !self.warned.load(Ordering::Relaxed) && (self.in_async_context)() {
            self.warned.store(true, Ordering::Relaxed);
            tracing::warn!(
                target: "keel::blocking",
                "the blocking client was called from inside an async runtime: the call blocks \
                 this thread until it is over; use the async client there, or spawn_blocking"
            );
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("running", &!self.jobs.is_closed())
            .finish()
    }
}

/// A value lent to a job on the driver; it goes back to the lender when this is dropped.
pub(crate) struct Lent<V> {
    value: Option<V>,
    back: mpsc::SyncSender<V>,
}

impl<V> Lent<V> {
    /// The value lent.
    pub(crate) fn get(&mut self) -> &mut V {
        self.value
            .as_mut()
            .expect("a lent value is taken out only when it is dropped")
    }
}

impl<V> Drop for Lent<V> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            // Room for one, and only one is sent.
            let _ = self.back.try_send(value);
        }
    }
}

fn runtime_error(source: impl Into<crate::error::BoxError>) -> Error {
    Error::new(ErrorKind::Config)
        .with_setting("runtime")
        .with_source(source)
}

/// The driver thread is gone (its runtime failed under it): the call can't be made.
fn stopped() -> Error {
    runtime_error("the blocking client's driver thread has stopped")
}

#[cfg(test)]
mod tests;
