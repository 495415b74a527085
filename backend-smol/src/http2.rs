//! HTTP/2 connections (feature `http2`), shared by every request to their origin.
//!
//! Unlike HTTP/1.1, an HTTP/2 connection serves many tasks at once, and hyper spawns a task per
//! streaming request body through its `Executor`. So its `Connection` future can't be driven by
//! any one caller: it runs on keel-smol's driver thread ([`Driver`]), an `async-executor`
//! started on first use, which needs no runtime from the caller.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::client::conn::http2;
use keel_core::connect::{GuardedBody, OnTimeout};
use keel_core::{Body, Error, ErrorKind, FramedBody, ResponseBody};

use crate::connect::Stream;
use crate::errors::{from_body_error, from_send_error};
use crate::io::HyperIo;
use crate::pool::PoolConn;
use crate::SendError;

/// A handle on a shared HTTP/2 connection; clones send on the same connection.
#[derive(Clone)]
pub(crate) struct H2Conn {
    /// Bodies go to hyper as [`FramedBody`]: an empty one is framed by the core's headers
    /// alone (hyper would add `content-length: 0` to an empty OPTIONS or TRACE).
    sender: http2::SendRequest<FramedBody>,
    /// The connection's facts, for its responses (when the client asked for them).
    facts: Option<keel_core::ConnectionFacts>,
    /// This handle came from the pool: the connection carried a request before.
    reused: bool,
    /// The server refused the TLS handshake after the client's side of it (TLS 1.3).
    refusal: keel_core::tls::RefusalWatch,
    /// A time limit cut a request on this connection: it takes no new ones (see
    /// [`keel_core::connect::abandoned_on_timeout`]).
    retired: Arc<AtomicBool>,
}

impl H2Conn {
    /// Runs the HTTP/2 preface on a connected stream and starts driving the connection.
    pub(crate) async fn handshake(
        io: HyperIo<Stream>,
        facts: Option<keel_core::ConnectionFacts>,
        open: keel_core::connect::OpenConnection,
    ) -> Result<Self, Error> {
        let driver = Driver::get()?;
        let refusal = io.refusal();
        let (sender, conn) = http2::Builder::new(driver)
            .handshake(io)
            .await
            .map_err(|e| from_send_error(e, true))?;
        driver.spawn(async move {
            // Counted as open while the connection runs.
            let _open = open;
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "http/2 connection ended with an error");
            }
        });
        Ok(Self {
            sender,
            facts,
            reused: false,
            refusal,
            retired: Arc::default(),
        })
    }

    /// The handle the pool shares: every request that takes it reuses the connection.
    pub(crate) fn shared(&self) -> Self {
        Self {
            reused: true,
            ..self.clone()
        }
    }
}

impl PoolConn for H2Conn {
    fn is_open(&mut self) -> bool {
        !self.sender.is_closed() && !self.retired.load(Ordering::Relaxed)
    }
}

/// Sends `req` (absolute-form, as HTTP/2 wants it) as a new stream on the connection.
pub(crate) async fn send(
    mut conn: H2Conn,
    req: Request<Body>,
) -> Result<Response<ResponseBody>, SendError> {
    // Retires the connection if a timeout cuts the request or its body: the peer may have
    // gone silent, and new requests would wait on it too.
    let retired = conn.retired.clone();
    let retire = OnTimeout::new(move || {
        tracing::debug!("a time limit cut a request: its connection takes no new ones");
        retired.store(true, Ordering::Relaxed);
    });
    match conn.sender.try_send_request(req.map(FramedBody::new)).await {
        Ok(response) => Ok(response.map(|body| {
            let body = ResponseBody::new(GuardedBody::new(body, retire).map_err(from_body_error));
            match &conn.facts {
                Some(facts) => body.with_connection(facts.for_response(conn.reused)),
                None => body,
            }
        })),
        // The connection failed on the server's refusal of the TLS handshake: a TLS error,
        // whatever hyper says of the request (it fails the ones waiting as "not ready").
        Err(err) if conn.refusal.refused() => Err(SendError::Failed(
            conn.refusal
                .explain(from_send_error(err.into_error(), true)),
        )),
        Err(mut err) => match err.take_message() {
            Some(req) => Err(SendError::Unsent(
                Box::new(req.map(FramedBody::into_inner)),
                from_send_error(err.into_error(), true),
            )),
            None => Err(SendError::Failed(from_send_error(err.into_error(), false))),
        },
    }
}

/// The executor that drives HTTP/2 connections: one `async-executor` on one thread of its own
/// (`keel-smol-h2`), started on first use and shared by every transport in the process.
#[derive(Clone, Copy, Debug)]
struct Driver(&'static async_executor::Executor<'static>);

static EXECUTOR: async_executor::Executor<'static> = async_executor::Executor::new();
static STARTED: OnceLock<Result<(), String>> = OnceLock::new();

impl Driver {
    fn get() -> Result<Self, Error> {
        let started = STARTED.get_or_init(|| {
            std::thread::Builder::new()
                .name("keel-smol-h2".to_owned())
                .spawn(|| async_io::block_on(EXECUTOR.run(std::future::pending::<()>())))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        match started {
            Ok(()) => Ok(Self(&EXECUTOR)),
            Err(why) => Err(Error::new(ErrorKind::Config)
                .with_setting("runtime")
                .with_source(format!(
                    "keel-smol could not start its HTTP/2 driver thread: {why}"
                ))),
        }
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(self, fut: F) {
        self.0.spawn(fut).detach();
    }
}

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for Driver {
    fn execute(&self, fut: F) {
        self.spawn(fut);
    }
}
