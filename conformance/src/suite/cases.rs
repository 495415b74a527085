//! The cases. Each takes a [`Cx`] with a fresh server and checks one promise keel makes.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use http::{Method, StatusCode, Version};
use keel_core::{Backend, ErrorKind, RetryPolicy, Stage, TimeoutPhase};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;

pub use super::caps::*;
pub use super::chaos::*;
pub use super::connection::*;
pub use super::cookies::*;
pub use super::decoding::*;
pub use super::dns::*;
pub use super::downloads::*;
pub use super::fanout::*;
pub use super::faults_h1::*;
pub use super::faults_net::*;
pub use super::hedging::*;
pub use super::limits::*;
pub use super::multipart::*;
pub use super::paginate::*;
pub use super::proxy::*;
pub use super::redirects::*;
pub use super::retries::*;
pub use super::streams::*;
pub use super::tls::*;

/// The JSON the server's `/echo` route answers with.
#[derive(Debug, Deserialize)]
struct Echo {
    method: String,
    path: String,
    query: Option<String>,
    headers: std::collections::BTreeMap<String, Vec<String>>,
    body: String,
    body_len: usize,
    version: String,
}

impl Echo {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// Byte `i` of the server's `/bytes/{n}` bodies.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn expect_kind<T>(
    result: Result<T, keel_core::Error>,
    kind: ErrorKind,
) -> Result<keel_core::Error, Failure> {
    match result {
        Ok(_) => Err(Failure(format!("expected a {kind:?} error, got success"))),
        Err(e) if e.kind() == kind => Ok(e),
        Err(e) => Err(Failure(format!("expected {kind:?}, got {e:?}"))),
    }
}

/// Every common method reaches the server as itself, with its body.
pub async fn methods<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        let has_body = matches!(method, Method::POST | Method::PUT | Method::PATCH);
        let mut req = client.request(method.clone(), "/echo");
        if has_body {
            req = req.body("payload");
        }
        let echo: Echo = req.send().await?.error_for_status().await?.json().await?;
        ensure!(
            echo.method == method.as_str(),
            "sent {method}, server saw {}",
            echo.method
        );
        ensure!(echo.path == "/echo", "path was {}", echo.path);
        if has_body {
            ensure!(echo.body == "payload", "{method} body was {:?}", echo.body);
        }
    }
    let head = client.head("/echo").send().await?;
    ensure!(
        head.status() == StatusCode::OK,
        "HEAD got {}",
        head.status()
    );
    let body = head.bytes().await?;
    ensure!(
        body.is_empty(),
        "HEAD response had a {}-byte body",
        body.len()
    );
    Ok(Outcome::Pass)
}

/// Credentials in a URL (`user:pass@`, percent-encoded) arrive as `Authorization: Basic`,
/// never in the request target or the `Host` header, over HTTP/1.1 and over TLS (HTTP/2 where
/// the backend offers it); a request's own `Authorization` wins over them.
pub async fn url_credentials_become_basic_auth<T: Backend>(cx: Cx<T>) -> CaseResult {
    // "Basic " + base64("al@ice:s3cret")
    const BASIC: &str = "Basic YWxAaWNlOnMzY3JldA==";
    let with_credentials = |url: String| url.replacen("://", "://al%40ice:s3cret@", 1);
    let mut builder = cx.builder();
    let tls = cx.capabilities().root_certificates;
    if tls {
        builder = builder.add_root_certificate(cx.server_root());
    }
    let client = builder.build()?;
    let mut urls = vec![with_credentials(cx.server.url("/echo?a=1"))];
    if tls {
        urls.push(with_credentials(cx.server.tls_url("/echo?a=1")));
    }
    for url in &urls {
        let resp = client.get(url).send().await?.error_for_status().await?;
        ensure!(
            !resp.url().to_string().contains("s3cret"),
            "the response's url is {}",
            resp.url()
        );
        let echo: Echo = resp.json().await?;
        ensure!(
            echo.header("authorization") == [BASIC],
            "{} sent authorization {:?}",
            echo.version,
            echo.header("authorization")
        );
        ensure!(
            echo.path == "/echo" && echo.query.as_deref() == Some("a=1"),
            "{} sent the target {} {:?}",
            echo.version,
            echo.path,
            echo.query
        );
        for host in echo.header("host") {
            ensure!(
                !host.contains('@') && !host.contains("s3cret"),
                "{} sent host {host}",
                echo.version
            );
        }
        let own: Echo = client
            .get(url)
            .bearer_auth("mine")
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            own.header("authorization") == ["Bearer mine"],
            "with its own authorization, the request sent {:?}",
            own.header("authorization")
        );
    }
    Ok(Outcome::Pass)
}

/// Default headers, per-request headers (replacing defaults of the same name), repeated
/// values and the user agent all arrive.
pub async fn headers<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx
        .builder()
        .default_header("x-default", "d")
        .default_header("x-replaced", "from-client")
        .user_agent("conformance/1")
        .build()?;
    let echo: Echo = client
        .get("/echo")
        .header("x-replaced", "from-request")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        echo.header("x-default") == ["d"],
        "x-default: {:?}",
        echo.header("x-default")
    );
    ensure!(
        echo.header("x-replaced") == ["from-request"],
        "x-replaced: {:?}",
        echo.header("x-replaced")
    );
    ensure!(
        echo.header("x-multi") == ["one", "two"],
        "x-multi: {:?}",
        echo.header("x-multi")
    );
    ensure!(
        echo.header("user-agent") == ["conformance/1"],
        "user-agent: {:?}",
        echo.header("user-agent")
    );
    Ok(Outcome::Pass)
}

/// Query parameters are encoded and appended to a query already in the path.
pub async fn query<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let echo: Echo = client
        .get("/echo?q=0")
        .query(&[("a", "1"), ("b", "x y&z")])
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        echo.query.as_deref() == Some("q=0&a=1&b=x+y%26z"),
        "query was {:?}",
        echo.query
    );
    Ok(Outcome::Pass)
}

/// A value sent with `.json()` comes back equal, with the right content type.
pub async fn json_round_trip<T: Backend>(cx: Cx<T>) -> CaseResult {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        id: u64,
        items: Vec<String>,
        note: Option<String>,
        price: f64,
    }
    let order = Order {
        id: 7,
        items: vec!["a".into(), "ü ✓".into()],
        note: None,
        price: 12.5,
    };
    let client = cx.client()?;
    let echo: Echo = client
        .post("/echo")
        .json(&order)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        echo.header("content-type") == ["application/json"],
        "content-type: {:?}",
        echo.header("content-type")
    );
    let back: Order = serde_json::from_str(&echo.body)?;
    ensure!(back == order, "sent {order:?}, got back {back:?}");
    Ok(Outcome::Pass)
}

/// A 10 MiB body arrives whole and intact through `bytes()`.
pub async fn body_10_mib<T: Backend>(cx: Cx<T>) -> CaseResult {
    const N: u64 = 10 * 1024 * 1024;
    let client = cx.client()?;
    let body = client
        .get(&format!("/bytes/{N}"))
        .send()
        .await?
        .bytes()
        .await?;
    ensure!(
        body.len() as u64 == N,
        "got {} bytes, expected {N}",
        body.len()
    );
    if let Some(i) = (0..N).find(|&i| body[i as usize] != pattern(i)) {
        return Err(Failure(format!("byte {i} is corrupt")));
    }
    // A 10 MiB upload too.
    let upload = vec![b'u'; N as usize];
    let echo: Echo = client
        .post("/echo")
        .body(upload)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        echo.body_len as u64 == N,
        "server received {} bytes",
        echo.body_len
    );
    Ok(Outcome::Pass)
}

/// A 64 MiB body streams chunk by chunk, intact, never buffered whole, and past the
/// `bytes()` limit (streams are not limited).
pub async fn stream_large_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    const N: u64 = 64 * 1024 * 1024;
    let client = cx.builder().max_body_size(1024 * 1024).build()?;
    let mut stream = client
        .get(&format!("/bytes/{N}"))
        .send()
        .await?
        .bytes_stream();
    let mut seen = 0u64;
    let mut largest = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        largest = largest.max(chunk.len());
        for (k, b) in chunk.iter().enumerate() {
            if *b != pattern(seen + k as u64) {
                return Err(Failure(format!("byte {} is corrupt", seen + k as u64)));
            }
        }
        seen += chunk.len() as u64;
    }
    ensure!(seen == N, "streamed {seen} bytes, expected {N}");
    ensure!(
        largest <= 4 * 1024 * 1024,
        "a chunk of {largest} bytes: the body was buffered"
    );
    Ok(Outcome::Pass)
}

/// 20 sequential requests on one client use one pooled connection.
pub async fn connection_reuse<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().pool_return_on_body_end && super::tasks_run_on_other_threads() {
        return Ok(Outcome::NotSupported("pool_return_on_body_end"));
    }
    let client = cx.client()?;
    for i in 0..20 {
        let resp = client.get("/status/200?body=hello").send().await?;
        let body = resp.text().await?;
        ensure!(body == "hello", "request {i} got {body:?}");
    }
    ensure!(
        cx.server.connections_accepted() == 1,
        "20 requests opened {} connections (per connection: {:?})",
        cx.server.connections_accepted(),
        cx.server.requests_per_connection()
    );
    ensure!(
        cx.server.requests_per_connection() == [20],
        "requests per connection: {:?}",
        cx.server.requests_per_connection()
    );
    Ok(Outcome::Pass)
}

/// HTTP/2 is negotiated by ALPN over TLS, and concurrent requests share the connection.
pub async fn http2_over_tls<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().http2 {
        return Ok(Outcome::NotSupported("http2"));
    }
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .build()?;
    let url = cx.server.tls_url("/echo");
    let resp = client.get(&url).send().await?;
    ensure!(
        resp.version() == Version::HTTP_2,
        "negotiated {:?}",
        resp.version()
    );
    let echo: Echo = resp.json().await?;
    ensure!(echo.version == "HTTP/2.0", "server saw {}", echo.version);
    let all = futures_util::future::join_all((0..10).map(|_| client.get(&url).send())).await;
    for r in all {
        ensure!(
            r?.version() == Version::HTTP_2,
            "a concurrent request fell back"
        );
    }
    ensure!(
        cx.server.connections_accepted() == 1,
        "11 HTTP/2 requests opened {} connections",
        cx.server.connections_accepted()
    );
    Ok(Outcome::Pass)
}

/// HTTP/2 with prior knowledge on a plain-text connection.
pub async fn http2_prior_knowledge<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().http2_prior_knowledge {
        let refused = cx.builder().http2_prior_knowledge().build();
        let err = expect_kind(refused, ErrorKind::Config)?;
        ensure!(
            err.setting() == Some("http2_prior_knowledge"),
            "the build error names {:?}",
            err.setting()
        );
        return Ok(Outcome::NotSupported("http2_prior_knowledge"));
    }
    let client = cx.builder().http2_prior_knowledge().build()?;
    let resp = client.get("/echo").send().await?;
    ensure!(
        resp.version() == Version::HTTP_2,
        "spoke {:?}",
        resp.version()
    );
    Ok(Outcome::Pass)
}

/// A refused connection is a connect error, before anything was sent.
pub async fn connection_refused<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let err = expect_kind(
        client.get(&cx.server.refused_url("/")).send().await,
        ErrorKind::Connect,
    )?;
    ensure!(
        err.stage() == Some(Stage::Connect),
        "stage {:?}",
        err.stage()
    );
    ensure!(err.is_unsent(), "a refused connection must count as unsent");
    ensure!(err.is_retryable(), "a refused connection is worth retrying");
    ensure!(err.url().is_some(), "the error lost its URL");
    Ok(Outcome::Pass)
}

/// The connect timeout covers the TLS handshake: a listener that accepts and never answers.
pub async fn connect_timeout_tls<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx
        .builder()
        .connect_timeout(Duration::from_millis(300))
        .build()?;
    let started = Instant::now();
    let err = expect_kind(
        client.get(&cx.server.blackhole_url("/")).send().await,
        ErrorKind::Timeout(TimeoutPhase::Connect),
    )?;
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(5),
        "the connect timeout took {took:?}"
    );
    ensure!(err.is_unsent(), "a connect timeout must count as unsent");
    Ok(Outcome::Pass)
}

/// The per-attempt timeout fires when the head is late.
pub async fn attempt_timeout<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx
        .builder()
        .attempt_timeout(Duration::from_millis(300))
        .build()?;
    let started = Instant::now();
    expect_kind(
        client.get("/delay/10000").send().await,
        ErrorKind::Timeout(TimeoutPhase::Attempt),
    )?;
    let took = started.elapsed();
    ensure!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "the 300 ms attempt timeout took {took:?}"
    );
    // The client still works afterwards.
    let ok = client.get("/status/204").send().await?;
    ensure!(
        ok.status() == StatusCode::NO_CONTENT,
        "then got {}",
        ok.status()
    );
    Ok(Outcome::Pass)
}

/// The read-idle timeout fires when a body stalls after the head.
pub async fn read_idle_timeout<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx
        .builder()
        .read_idle_timeout(Duration::from_millis(300))
        .build()?;
    let resp = client.get("/stall?bytes=10").send().await?;
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    let started = Instant::now();
    let err = expect_kind(
        resp.bytes().await,
        ErrorKind::Timeout(TimeoutPhase::ReadIdle),
    )?;
    ensure!(err.stage() == Some(Stage::Body), "stage {:?}", err.stage());
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(5),
        "the 300 ms idle timeout took {took:?}"
    );
    // A body that keeps dripping faster than the idle limit is not cut.
    let slow = client
        .get("/drip?chunk=10&interval_ms=100&count=8")
        .send()
        .await?
        .bytes()
        .await?;
    ensure!(
        slow.len() == 80,
        "the drip-fed body has {} bytes",
        slow.len()
    );
    Ok(Outcome::Pass)
}

/// The overall deadline covers reading the body.
pub async fn deadline_mid_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().deadline(Duration::from_millis(600)).build()?;
    let resp = client
        .get("/drip?chunk=10&interval_ms=100&count=100")
        .send()
        .await?;
    let err = expect_kind(
        resp.bytes().await,
        ErrorKind::Timeout(TimeoutPhase::Deadline),
    )?;
    ensure!(
        !err.is_retryable(),
        "a passed deadline must not be retryable"
    );
    Ok(Outcome::Pass)
}

/// Bodies over the limit are refused, by declared length and while reading a chunked body.
pub async fn body_over_limit<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().max_body_size(1000).build()?;
    let declared = client.get("/bytes/5000").send().await?.bytes().await;
    expect_kind(declared, ErrorKind::BodyTooLarge { limit: 1000 })?;
    let chunked = client
        .get("/drip?chunk=300&interval_ms=1&count=10")
        .send()
        .await?
        .bytes()
        .await;
    expect_kind(chunked, ErrorKind::BodyTooLarge { limit: 1000 })?;
    let fits = client.get("/bytes/1000").send().await?.bytes().await?;
    ensure!(
        fits.len() == 1000,
        "a body at the limit has {} bytes",
        fits.len()
    );
    Ok(Outcome::Pass)
}

/// Dropping a response mid-body closes its connection; the next request still works.
pub async fn drop_response_mid_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let timer = client.transport().timer().clone();
    let mut resp = client.get("/bytes/104857600").send().await?;
    let first = resp.chunk().await?;
    ensure!(first.is_some(), "no first chunk");
    drop(resp);
    let ok = client
        .get("/status/200?body=after")
        .send()
        .await?
        .text()
        .await?;
    ensure!(ok == "after", "the next request got {ok:?}");
    ensure!(
        cx.wait_for_open_connections(&*timer, 1, Duration::from_secs(5))
            .await,
        "the half-read connection was not closed: {} open, {} accepted",
        cx.server.open_connections(),
        cx.server.connections_accepted()
    );
    Ok(Outcome::Pass)
}

/// Dropping a request future while it waits for the head releases its connection at once.
pub async fn drop_request_future<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let timer = client.transport().timer().clone();
    let send = client.get("/delay/5000").send();
    let sleep = timer.sleep_until(timer.now() + Duration::from_millis(200));
    match futures_util::future::select(send, sleep).await {
        futures_util::future::Either::Left(_) => {
            return Err(Failure("the delayed request answered early".into()))
        }
        futures_util::future::Either::Right(((), send)) => drop(send),
    }
    let ok = client
        .get("/status/200?body=after")
        .send()
        .await?
        .text()
        .await?;
    ensure!(ok == "after", "the next request got {ok:?}");
    if !cx.capabilities().cancel_in_flight {
        // The backend frees the abandoned connection only when the server next speaks (bounded
        // by the call's deadline); the client itself keeps working, as checked above.
        return Ok(Outcome::NotSupported("cancel_in_flight"));
    }
    ensure!(
        cx.wait_for_open_connections(&*timer, 1, Duration::from_secs(2))
            .await,
        "the abandoned connection was not closed: {} open",
        cx.server.open_connections()
    );
    Ok(Outcome::Pass)
}

/// An untrusted certificate is a TLS error; trusting its root makes the same request work.
pub async fn untrusted_certificate<T: Backend>(cx: Cx<T>) -> CaseResult {
    let url = cx.server.tls_url("/status/200");
    let strict = cx.client()?;
    let err = expect_kind(strict.get(&url).send().await, ErrorKind::Tls)?;
    ensure!(err.stage() == Some(Stage::Tls), "stage {:?}", err.stage());
    ensure!(
        !err.is_retryable(),
        "an untrusted certificate is not worth retrying"
    );
    let trusting = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .build()?;
    let resp = trusting.get(&url).send().await?;
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    Ok(Outcome::Pass)
}

/// Invalid URLs are refused before anything is sent.
pub async fn invalid_url<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    for bad in ["http://exa mple.com/", "ftp://127.0.0.1/", "http://[::1/"] {
        expect_kind(client.get(bad).send().await, ErrorKind::InvalidUrl)?;
    }
    let no_base = keel_core::Client::<T>::new()?;
    expect_kind(no_base.get("/relative").send().await, ErrorKind::InvalidUrl)?;
    let bad_base = keel_core::Client::<T>::builder()
        .base_url("not a url")
        .build();
    expect_kind(bad_base, ErrorKind::Config)?;
    ensure!(
        cx.server.requests() == 0,
        "an invalid request reached the server"
    );
    Ok(Outcome::Pass)
}

/// Invalid header names and values are refused, never sent, never a panic.
pub async fn invalid_header<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    expect_kind(
        client
            .get("/echo")
            .header("x-bad", "line\nbreak")
            .send()
            .await,
        ErrorKind::InvalidRequest,
    )?;
    expect_kind(
        client.get("/echo").header("bad name", "v").send().await,
        ErrorKind::InvalidRequest,
    )?;
    let built = cx.builder().default_header("x-bad", "a\r\nb").build();
    expect_kind(built, ErrorKind::Config)?;
    ensure!(
        cx.server.requests() == 0,
        "an invalid request reached the server"
    );
    Ok(Outcome::Pass)
}

/// A server that answers garbage gives a protocol error.
pub async fn garbage_response<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let url = cx.server.raw_url(
        &b"SSH-2.0-OpenSSH_9.0\r\nnot http at all\r\n\r\n"[..],
        false,
    );
    expect_kind(client.get(&url).send().await, ErrorKind::Protocol)?;
    Ok(Outcome::Pass)
}

/// A body shorter than its Content-Length is an error, not a short success.
pub async fn truncated_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let raw = cx.server.raw_url(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly twenty bytes..."[..],
        false,
    );
    let resp = client.get(&raw).send().await?;
    let err = expect_kind(resp.bytes().await, ErrorKind::Body)?;
    ensure!(err.stage() == Some(Stage::Body), "stage {:?}", err.stage());
    let routed = client
        .get("/wrong-length?declared=5000&actual=100")
        .send()
        .await?;
    expect_kind(routed.bytes().await, ErrorKind::Body)?;
    Ok(Outcome::Pass)
}

/// A connection reset mid-body is a body error, and the data before it was delivered.
///
/// The server sends a 100000-byte prefix, waits 50 ms, then aborts the response. The prefix is
/// already in the kernel by then and the abort closes a connection with nothing unread, so no
/// backend has a reason to lose it: at least part of it must arrive, intact.
pub async fn reset_mid_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    const PREFIX: u64 = 100_000;
    let client = cx.client()?;
    let mut resp = client.get(&format!("/reset?after={PREFIX}")).send().await?;
    let mut received = 0u64;
    let err = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if let Some(k) =
                    (0..chunk.len()).find(|&k| chunk[k] != pattern(received + k as u64))
                {
                    return Err(Failure(format!(
                        "byte {} of the prefix is corrupt",
                        received + k as u64
                    )));
                }
                received += chunk.len() as u64;
            }
            Ok(None) => {
                return Err(Failure(format!(
                    "the reset body ended cleanly after {received} bytes"
                )))
            }
            Err(e) => break e,
        }
    };
    ensure!(err.kind() == ErrorKind::Body, "kind {:?}", err.kind());
    ensure!(err.stage() == Some(Stage::Body), "stage {:?}", err.stage());
    ensure!(
        received > 0,
        "none of the {PREFIX}-byte prefix sent before the reset was delivered"
    );
    ensure!(
        received <= PREFIX,
        "received {received} bytes of a {PREFIX}-byte prefix"
    );
    let ok = client.get("/status/200").send().await?;
    ensure!(
        ok.status() == StatusCode::OK,
        "the next request got {}",
        ok.status()
    );
    Ok(Outcome::Pass)
}

/// `error_for_status` turns 4xx/5xx into a status error with headers and a bounded snippet.
pub async fn status_error<T: Backend>(cx: Cx<T>) -> CaseResult {
    // One attempt: this case is about the error, not about honouring its Retry-After.
    let client = cx.builder().retry_policy(RetryPolicy::disabled()).build()?;
    let body = "e".repeat(10_000);
    let resp = client
        .get(&format!("/status/503?header=Retry-After:7&body={body}"))
        .send()
        .await?;
    let err = expect_kind(
        resp.error_for_status().await,
        ErrorKind::Status(StatusCode::SERVICE_UNAVAILABLE),
    )?;
    ensure!(err.is_retryable(), "503 is retryable");
    let retry_after = err.response_headers().and_then(|h| h.get("retry-after"));
    ensure!(
        retry_after.is_some_and(|v| v == "7"),
        "Retry-After: {retry_after:?}"
    );
    let snippet = err.body_snippet().map_or(0, |s| s.len());
    ensure!(
        snippet == keel_core::Response::SNIPPET_LIMIT,
        "snippet of {snippet} bytes"
    );
    let not_found = client
        .get("/status/404")
        .send()
        .await?
        .error_for_status()
        .await;
    let err = expect_kind(not_found, ErrorKind::Status(StatusCode::NOT_FOUND))?;
    ensure!(!err.is_retryable(), "404 is not retryable");
    let fine = client
        .get("/status/201")
        .send()
        .await?
        .error_for_status()
        .await?;
    ensure!(
        fine.status() == StatusCode::CREATED,
        "201 became {}",
        fine.status()
    );
    Ok(Outcome::Pass)
}

/// A JSON body of the wrong shape names the path where decoding failed.
pub async fn decode_error_path<T: Backend>(cx: Cx<T>) -> CaseResult {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        id: u64,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Page {
        items: Vec<Item>,
    }
    let client = cx.client()?;
    let payload = serde_json::json!({"items": [{"id": 1}, {"id": "two"}]});
    let resp = client.post("/echo").json(&payload).send().await?;
    let echo: Echo = resp.json().await?;
    let value: Value = serde_json::from_str(&echo.body)?;
    ensure!(value == payload, "echo altered the payload");
    // Ask the server to return the payload as the body itself.
    let encoded = serde_json::to_string(&payload)?;
    let resp = client
        .get("/status/200")
        .query(&[
            ("body", encoded.as_str()),
            ("header", "Content-Type:application/json"),
        ])
        .send()
        .await?;
    let err = expect_kind(resp.json::<Page>().await, ErrorKind::Decode)?;
    ensure!(
        err.json_path() == Some("items[1].id"),
        "path {:?}",
        err.json_path()
    );
    let garbage = client.get("/status/200?body=%7Bnot%20json").send().await?;
    expect_kind(garbage.json::<Page>().await, ErrorKind::Decode)?;
    Ok(Outcome::Pass)
}

/// An empty request body is framed by one rule on every backend, to the byte: the line
/// `content-length: 0` for POST, PUT, PATCH and extension methods (QUERY here), no framing
/// header at all for GET, HEAD, DELETE, OPTIONS and TRACE; never `Transfer-Encoding`. Checked on
/// the raw HTTP/1.1 heads the server received, then over TLS (HTTP/2 where the backend
/// negotiates it) on the headers the server parsed.
pub async fn empty_body_framing<T: Backend>(cx: Cx<T>) -> CaseResult {
    let query = Method::from_bytes(b"QUERY").map_err(|e| Failure(e.to_string()))?;
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        query,
    ];
    let says_length = |method: &Method| {
        !matches!(
            *method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
        )
    };

    let client = cx.client()?;
    let raw = cx.server.raw_url(
        &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..],
        false,
    );
    for method in &methods {
        client
            .request(method.clone(), &raw)
            .send()
            .await?
            .bytes()
            .await?;
    }
    let heads = cx.server.raw_requests();
    ensure!(
        heads.len() == methods.len(),
        "{} requests sent, {} heads received",
        methods.len(),
        heads.len()
    );
    let mut wrong = Vec::new();
    for (method, head) in methods.iter().zip(&heads) {
        let head = String::from_utf8_lossy(head);
        let head = head.split("\r\n\r\n").next().unwrap_or_default();
        ensure!(
            head.starts_with(&format!("{method} / HTTP/1.1\r\n")),
            "expected a {method} request, got:\n{head}"
        );
        let framing: Vec<&str> = head
            .split("\r\n")
            .skip(1)
            .filter(|line| {
                let name = line.split(':').next().unwrap_or_default();
                name.eq_ignore_ascii_case("content-length")
                    || name.eq_ignore_ascii_case("transfer-encoding")
            })
            .collect();
        let expected: &[&str] = if says_length(method) {
            &["content-length: 0"]
        } else {
            &[]
        };
        if framing != expected {
            wrong.push(format!("{method}: {framing:?}"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "framing header lines of empty HTTP/1.1 requests (expected `content-length: 0` for POST, \
         PUT, PATCH and QUERY, nothing for the others): {}",
        wrong.join("; ")
    );

    // The same rule over TLS, as the server parsed it: HTTP/2 where the backend negotiates it.
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .build()?;
    let url = cx.server.tls_url("/echo");
    for method in methods.iter().filter(|m| **m != Method::HEAD) {
        let resp = client.request(method.clone(), &url).send().await?;
        let version = resp.version();
        let echo: Echo = resp.error_for_status().await?.json().await?;
        let length = echo.header("content-length");
        let chunked = echo.header("transfer-encoding");
        let expected: &[&str] = if says_length(method) { &["0"] } else { &[] };
        ensure!(
            length == expected && chunked.is_empty() && echo.body_len == 0,
            "{method} over {version:?}: content-length {length:?}, transfer-encoding {chunked:?}, \
             {} body bytes",
            echo.body_len
        );
    }
    Ok(Outcome::Pass)
}
