//! The load server: hyper on a current-thread tokio runtime, built for speed, in its own process.
//!
//! Routes:
//! - `/json`: a fixed ~1 KiB JSON body with `Content-Length`, keep-alive;
//! - `/stream/{n}`: `n` bytes in 256 KiB chunks of one shared buffer (no copies);
//! - `/delay/{ms}/json`: the JSON body after `ms` milliseconds.
//!
//! And the soak's (`--soak`, see `soak.rs`):
//! - `/soak/close`: the JSON body with `Connection: close` (the server then closes);
//! - `/soak/503/{id}`: `503 Service Unavailable` the first time an `id` is asked for, the JSON
//!   body the second time (the id is then forgotten);
//! - `/soak/stall`: [`STALL_CHUNK`] bytes of a [`STALL_BODY`]-byte body at once, the rest
//!   after [`STALL`] (by then the caller has timed out).

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The JSON document `/json` returns: about 1 KiB, shaped like an API list response.
pub(crate) fn json_body() -> Bytes {
    let mut items = Vec::new();
    for i in 0..8 {
        items.push(format!(
            r#"{{"id":{i},"name":"item-{i}","price":{}.99,"tags":["alpha","beta","gamma"],"active":true,"owner":{{"id":{},"login":"user{i}"}}}}"#,
            i * 3 + 1,
            1000 + i
        ));
    }
    let doc = format!(
        r#"{{"page":1,"per_page":8,"total":8,"items":[{}],"next":null}}"#,
        items.join(",")
    );
    Bytes::from(doc)
}

const STREAM_CHUNK: usize = 256 * 1024;

/// A body of `remaining` bytes made of one shared chunk.
struct Stream {
    chunk: Bytes,
    remaining: u64,
}

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// How much of `/soak/stall`'s body is sent at once.
pub(crate) const STALL_CHUNK: usize = 16 * 1024;
/// The length `/soak/stall` announces.
pub(crate) const STALL_BODY: usize = 2 * STALL_CHUNK;
/// How long `/soak/stall` is silent after its first [`STALL_CHUNK`] bytes: ten times the
/// soak's read-idle timeout, so that a client held up on a busy machine still sees the
/// silence (it sees the rest arrive instead when held up longer than the difference).
pub(crate) const STALL: Duration = Duration::from_millis(500);

/// `/soak/stall`'s body: the first chunk, a silence, the rest.
struct Stall {
    first: Option<Bytes>,
    /// Started when the first chunk is handed to hyper, so that a server slow to send it
    /// (on a busy machine) still leaves the whole silence after it.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    rest: Option<Bytes>,
}

impl Body for Stall {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            self.sleep = Some(Box::pin(tokio::time::sleep(STALL)));
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if self.rest.is_none() {
            return Poll::Ready(None);
        }
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(self.rest.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let left = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        SizeHint::with_exact(left(&self.first) + left(&self.rest))
    }
}

enum Reply {
    Full(Option<Bytes>),
    Stream(Stream),
    Stall(Stall),
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Reply::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Reply::Stream(s) => Pin::new(s).poll_frame(cx),
            Reply::Stall(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Full(b) => b.is_none(),
            Reply::Stream(s) => s.is_end_stream(),
            Reply::Stall(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Reply::Stream(s) => s.size_hint(),
            Reply::Stall(s) => s.size_hint(),
        }
    }
}

/// The ids `/soak/503/{id}` has answered 503 to and not yet 200.
type Seen = Arc<Mutex<HashSet<String>>>;

/// The soak's routes, or `None` for a path that isn't one of them.
fn soak(path: &str, json: &Bytes, chunk: &Bytes, seen: &Seen) -> Option<Response<Reply>> {
    let mut resp = Response::new(Reply::Full(Some(json.clone())));
    if path == "/soak/close" {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    } else if let Some(id) = path.strip_prefix("/soak/503/") {
        // A poisoned lock only means another connection's task panicked holding it: the set
        // is still a set.
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(id.to_owned()) {
            *resp.body_mut() = Reply::Full(None);
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        } else {
            seen.remove(id);
        }
    } else if path == "/soak/stall" {
        *resp.body_mut() = Reply::Stall(Stall {
            first: Some(chunk.slice(..STALL_CHUNK)),
            sleep: None,
            rest: Some(chunk.slice(..STALL_BODY - STALL_CHUNK)),
        });
    } else {
        return None;
    }
    Some(resp)
}

async fn handle(
    req: Request<Incoming>,
    json: Bytes,
    chunk: Bytes,
    seen: Seen,
) -> Result<Response<Reply>, Infallible> {
    let path = req.uri().path();
    if let Some(resp) = soak(path, &json, &chunk, &seen) {
        return Ok(resp);
    }
    let reply = if path == "/json" {
        Some(Reply::Full(Some(json)))
    } else if let Some(n) = path.strip_prefix("/stream/") {
        n.parse()
            .ok()
            .map(|remaining| Reply::Stream(Stream { chunk, remaining }))
    } else if let Some(rest) = path.strip_prefix("/delay/") {
        match rest.strip_suffix("/json").and_then(|ms| ms.parse().ok()) {
            Some(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Some(Reply::Full(Some(json)))
            }
            None => None,
        }
    } else {
        None
    };
    let Some(reply) = reply else {
        let mut resp = Response::new(Reply::Full(None));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    };
    let mut resp = Response::new(reply);
    if path.ends_with("json") {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    Ok(resp)
}

/// Serves forever on `addr` (port 0 picks one), printing `listening <port>` once bound.
pub(crate) fn run(addr: SocketAddr) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("listening {}", listener.local_addr()?.port());
        let json = json_body();
        let chunk = Bytes::from(vec![b'x'; STREAM_CHUNK]);
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().keep_alive(true);
        let builder = Arc::new(builder);
        let seen = Seen::default();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let (json, chunk, builder) = (json.clone(), chunk.clone(), builder.clone());
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc =
                    service_fn(move |req| handle(req, json.clone(), chunk.clone(), seen.clone()));
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}
