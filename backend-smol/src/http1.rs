//! HTTP/1.1 connections, driven by the task that uses them.
//!
//! hyper splits a client connection into a `SendRequest` handle and a `Connection` future that
//! does the reading and writing. keel-smol spawns nothing for HTTP/1.1: an [`H1Conn`] keeps both
//! halves together, and whoever holds it polls the `Connection` alongside its own work — the
//! send future while it waits for the head, the [`H1Body`] while the body is read. So a
//! connection only makes progress on the caller's task, on whatever runtime that is, and
//! dropping the request future or the body drops the connection, which closes it.
//!
//! An idle connection in the pool is not polled at all; [`PoolConn::is_open`] polls it once
//! before it is reused, which is when a close by the server is noticed.

use std::future::{poll_fn, Future as _};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use keel_core::{Body, Error, ErrorKind, Origin, ResponseBody, Stage};

use crate::connect::Stream;
use crate::errors::{from_body_error, from_send_error};
use crate::io::HyperIo;
use crate::pool::{PoolConn, Pooled};
use crate::SendError;

/// An HTTP/1.1 connection: hyper's request handle and the connection future it needs driven.
pub(crate) struct H1Conn {
    sender: http1::SendRequest<Body>,
    /// Boxed: hyper's connection state is several hundred bytes, and an `H1Conn` moves in and
    /// out of the pool.
    conn: Box<http1::Connection<HyperIo<Stream>, Body>>,
    /// The connection future has finished: the connection is closed.
    closed: bool,
}

impl H1Conn {
    /// Starts HTTP/1.1 on a connected stream. No bytes are exchanged yet.
    pub(crate) async fn handshake(io: HyperIo<Stream>) -> Result<Self, Error> {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| from_send_error(e, true))?;
        Ok(Self {
            sender,
            conn: Box::new(conn),
            closed: false,
        })
    }

    /// Lets hyper read and write what it can; true once the connection is closed.
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed {
            if let Poll::Ready(result) = Pin::new(&mut *self.conn).poll(cx) {
                self.closed = true;
                if let Err(err) = result {
                    tracing::debug!(error = %err, "http/1.1 connection ended with an error");
                }
            }
        }
        self.closed
    }
}

impl PoolConn for H1Conn {
    fn is_open(&mut self) -> bool {
        // Nobody waits on this poll: it only lets hyper notice a close (or stray bytes) that
        // arrived while the connection was idle. The next real poll registers a real waker.
        let mut cx = Context::from_waker(Waker::noop());
        !self.poll_drive(&mut cx) && self.sender.is_ready()
    }
}

/// Sends `req` on an exclusive connection and returns the head with a body that keeps the
/// connection until the end of the body.
pub(crate) async fn send(
    mut pooled: Pooled<Origin, H1Conn>,
    mut req: Request<Body>,
) -> Result<Response<ResponseBody>, SendError> {
    let rewritten = to_origin_form(&mut req);
    let ready = poll_fn(|cx| {
        let conn = pooled.conn_mut();
        let closed = conn.poll_drive(cx);
        match conn.sender.poll_ready(cx) {
            Poll::Pending if closed => Poll::Ready(Err(None)),
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => Poll::Ready(result.map_err(Some)),
        }
    })
    .await;
    if let Err(err) = ready {
        let err = match err {
            Some(err) => from_send_error(err, true),
            None => Error::new(ErrorKind::Body)
                .with_stage(Stage::SendRequest)
                .with_unsent()
                .with_source("the connection closed before the request was sent"),
        };
        return Err(SendError::Unsent(Box::new(restore(req, rewritten)), err));
    }

    let mut response = pin!(pooled.conn_mut().sender.try_send_request(req));
    let result = poll_fn(|cx| {
        pooled.conn_mut().poll_drive(cx);
        response.as_mut().poll(cx)
    })
    .await;
    match result {
        Ok(response) => Ok(response.map(|body| ResponseBody::new(H1Body::new(body, pooled)))),
        Err(mut err) => match err.take_message() {
            Some(req) => Err(SendError::Unsent(
                Box::new(restore(req, rewritten)),
                from_send_error(err.into_error(), true),
            )),
            None => Err(SendError::Failed(from_send_error(err.into_error(), false))),
        },
    }
}

/// What [`to_origin_form`] changed, to undo it.
struct Rewritten {
    absolute: Uri,
    added_host: bool,
}

/// Rewrites an absolute-form request for the wire: origin-form target and a `Host` header
/// (unless the caller set one).
fn to_origin_form(req: &mut Request<Body>) -> Rewritten {
    let absolute = req.uri().clone();
    let mut added_host = false;
    if !req.headers().contains_key(HOST) {
        let authority = absolute.authority().map_or("", |a| a.as_str());
        // Userinfo never goes into `Host`.
        let host = authority.rsplit('@').next().unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(host) {
            if !host.is_empty() {
                req.headers_mut().insert(HOST, value);
                added_host = true;
            }
        }
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        absolute
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    if let Ok(origin_form) = Uri::from_parts(parts) {
        *req.uri_mut() = origin_form;
    }
    Rewritten {
        absolute,
        added_host,
    }
}

/// Undoes [`to_origin_form`] on a request hyper gave back unsent, so that it can be sent on
/// any connection again.
fn restore(mut req: Request<Body>, rewritten: Rewritten) -> Request<Body> {
    *req.uri_mut() = rewritten.absolute;
    if rewritten.added_host {
        req.headers_mut().remove(HOST);
    }
    req
}

/// A response body that holds its connection: back to the pool at a clean end of the body,
/// closed when dropped before it.
struct H1Body {
    body: Incoming,
    conn: Option<Pooled<Origin, H1Conn>>,
}

impl H1Body {
    fn new(body: Incoming, conn: Pooled<Origin, H1Conn>) -> Self {
        Self {
            body,
            conn: Some(conn),
        }
    }

    /// The exchange is over: pool the connection if hyper is ready for the next request on
    /// it, otherwise close it.
    fn finish(&mut self, cx: &mut Context<'_>) {
        let Some(mut pooled) = self.conn.take() else {
            return;
        };
        let conn = pooled.conn_mut();
        // One more turn lets hyper see the end of the exchange and ask for the next request.
        if !conn.poll_drive(cx) && conn.sender.is_ready() {
            pooled.release(Instant::now());
        }
    }
}

impl http_body::Body for H1Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if let Some(pooled) = this.conn.as_mut() {
            pooled.conn_mut().poll_drive(cx);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish(cx);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(err))) => {
                this.conn = None;
                Poll::Ready(Some(Err(from_body_error(err))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body that has delivered all its bytes (or never had any) but was not polled to its
        // end still completed its exchange.
        if self.conn.is_some() && self.body.is_end_stream() {
            self.finish(&mut Context::from_waker(Waker::noop()));
        }
    }
}
