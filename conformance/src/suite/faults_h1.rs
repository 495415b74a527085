//! HTTP/1.1 protocol faults (issue 18): what a server can get wrong on the wire, and what a
//! caller sees for each: a typed error with its [`Stage`], or the correct recovery. Each case
//! also checks that the connection involved is not used again (a raw conversation counts the
//! requests each connection carried), unless reusing it is right.
//!
//! Every case talks to a [`RawConversation`]: the server reads request after request on a
//! kept-alive connection and answers each with scripted bytes, so a client that reuses a
//! connection it should have dropped is caught.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use keel_core::{Backend, Body, Client, ErrorKind, RetryPolicy, Stage, TimeoutPhase};

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;
use crate::server::{RawConversation, RawReply};

/// A complete `200 OK` with this body and its exact `Content-Length`.
fn ok(body: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A client of the case's builder with retries off: a fault must be recovered from (or
/// reported) by the attempt itself, not hidden by a second one.
fn one_attempt<T: Backend>(cx: &Cx<T>) -> Result<Client<T>, Failure> {
    Ok(cx.builder().retry_policy(RetryPolicy::disabled()).build()?)
}

/// The error of `result`, which must be one of `kinds` in `stage`.
fn expect_error<V>(
    what: &str,
    result: Result<V, keel_core::Error>,
    kinds: &[ErrorKind],
    stage: Stage,
) -> Result<keel_core::Error, Failure> {
    match result {
        Ok(_) => Err(Failure(format!("{what}: expected {kinds:?}, got success"))),
        Err(e) if kinds.contains(&e.kind()) && e.stage() == Some(stage) => Ok(e),
        Err(e) => Err(Failure(format!(
            "{what}: expected {kinds:?} in {stage:?}, got {:?} in {:?}: {e:?}",
            e.kind(),
            e.stage()
        ))),
    }
}

/// GETs `path` and returns the body as text.
async fn get_text<T: Backend>(
    client: &Client<T>,
    raw: &RawConversation,
    path: &str,
) -> Result<String, Failure> {
    let resp = client.get(&raw.url(path)).send().await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "{path}: status {}",
        resp.status()
    );
    Ok(resp.text().await?)
}

/// Fails unless every request the conversation received came on a connection of its own.
fn each_on_its_own_connection(raw: &RawConversation, requests: usize) -> Result<(), Failure> {
    let per = raw.requests_per_connection();
    ensure!(
        per == vec![1; requests],
        "a connection was used again after the fault: requests per connection {per:?}"
    );
    Ok(())
}

/// Fails if a request came, after any of the `faulty` ones (indexes in arrival order), on the
/// connection that request came on.
fn not_reused_after(raw: &RawConversation, faulty: &[usize]) -> Result<(), Failure> {
    let conns = raw.request_connections();
    for &i in faulty {
        let Some(&conn) = conns.get(i) else {
            return Err(Failure(format!(
                "request {i} never arrived: connections of the requests {conns:?}"
            )));
        };
        ensure!(
            !conns[i + 1..].contains(&conn),
            "connection {conn} carried a request after the fault of request {i}: connections \
             of the requests {conns:?}"
        );
    }
    Ok(())
}

/// A pooled connection the server closed while it sat idle (no `Connection: close` said it
/// would): the next request goes out on a fresh connection and succeeds, with no error and no
/// retry of keel's (retries are off here), on every backend.
pub async fn fault_idle_closed_connection<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(ok("first")).close_after(Duration::from_millis(20)),
        RawReply::new(ok("second")).close_after(Duration::from_millis(20)),
        RawReply::new(ok("third")),
    ]);
    let client = one_attempt(&cx)?;
    let timer = client.transport().timer().clone();
    let first = get_text(&client, &raw, "/1").await?;
    ensure!(first == "first", "first body {first:?}");
    // The server closes 20 ms after answering: the close has arrived well before this.
    timer
        .sleep_until(timer.now() + Duration::from_millis(300))
        .await;
    let second = get_text(&client, &raw, "/2").await?;
    ensure!(second == "second", "second body {second:?}");
    // Closed again; the next request goes sooner this time. (Not at once: a request sent
    // before the close arrives is lost with the connection, which no client can tell from a
    // request the server dropped, and which only a retry recovers.)
    timer
        .sleep_until(timer.now() + Duration::from_millis(100))
        .await;
    let third = get_text(&client, &raw, "/3").await?;
    ensure!(third == "third", "third body {third:?}");
    each_on_its_own_connection(&raw, 3)?;
    Ok(Outcome::Pass)
}

/// Answers that end their connection (`Connection: close`, or HTTP/1.0 without keep-alive):
/// every request goes out on a new connection and all succeed. The server here keeps the
/// connection open anyway, so a client that ignored the header would be seen reusing it.
pub async fn fault_connection_close_answers<T: Backend>(cx: Cx<T>) -> CaseResult {
    let closing = |body: &str| {
        RawReply::new(format!(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let raw = cx.server.raw_conversation(vec![
        closing("one"),
        closing("two"),
        RawReply::new(&b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nthree"[..]),
        closing("four"),
    ]);
    let client = one_attempt(&cx)?;
    for (i, expected) in ["one", "two", "three", "four"].into_iter().enumerate() {
        let body = get_text(&client, &raw, &format!("/{i}")).await?;
        ensure!(body == expected, "request {i}: body {body:?}");
    }
    each_on_its_own_connection(&raw, 4)?;
    Ok(Outcome::Pass)
}

/// A response head trickled one byte every 100 ms (about 7 s in all) runs past a 300 ms attempt
/// timeout: `Timeout(Attempt)` after about 300 ms, not when the head is finally complete; the
/// next request goes out on a new connection.
pub async fn fault_headers_trickled<T: Backend>(cx: Cx<T>) -> CaseResult {
    let head = b"HTTP/1.1 200 OK\r\nx-slow: one byte at a time, past the timeout\r\ncontent-length: 2\r\n\r\nok";
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(&head[..]).trickle(Duration::from_millis(100)),
        RawReply::new(ok("after")),
    ]);
    let client = cx
        .builder()
        .retry_policy(RetryPolicy::disabled())
        .attempt_timeout(Duration::from_millis(300))
        .build()?;
    let started = Instant::now();
    let result = client.get(&raw.url("/slow")).send().await;
    let took = started.elapsed();
    match result {
        Err(e) if e.kind() == ErrorKind::Timeout(TimeoutPhase::Attempt) => {}
        Err(e) => return Err(Failure(format!("expected Timeout(Attempt), got {e:?}"))),
        Ok(r) => {
            return Err(Failure(format!(
                "the trickled head was accepted ({}) after {took:?}",
                r.status()
            )))
        }
    }
    ensure!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "the 300 ms attempt timeout fired after {took:?}"
    );
    let after = get_text(&client, &raw, "/after").await?;
    ensure!(after == "after", "next body {after:?}");
    each_on_its_own_connection(&raw, 2)?;
    Ok(Outcome::Pass)
}

/// The most a client may take of a 64 MiB header section before it gives up: every backend
/// bounds the head with a fixed limit (keel-hyper: hyper's 100 headers and ~400 KiB read
/// buffer; keel-smol: its 64 KiB head buffer; keel-isahc: libcurl's 100 KiB per line and
/// 300 KiB per response), far below this; the rest is what the two kernels' socket buffers
/// hold. None of the limits is a setting of keel's.
const FLOOD_BOUND: u64 = 24 * 1024 * 1024;

/// A response header section far over the backend's fixed limit (64 MiB of 1 KiB header lines)
/// is an error in `AwaitHead`, `Protocol` (keel-hyper, keel-smol) or `Body` (keel-isahc:
/// libcurl ends the transfer with the code of a failed read, `CURLE_RECV_ERROR`, and keeps its
/// "Too large response headers" only in its error buffer), reached early: the server could write only a bounded
/// part of it before the client gave up and closed (`FLOOD_BOUND`), so memory stays
/// bounded. A header section of 30 KiB is read as usual, and after the flood the next request
/// goes out on a new connection.
pub async fn fault_header_section_over_limit<T: Backend>(cx: Cx<T>) -> CaseResult {
    let mut big = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..30 {
        big.push_str(&format!("x-big-{i:02}: {}\r\n", "b".repeat(1000)));
    }
    big.push_str("content-length: 3\r\n\r\nbig");
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(big),
        RawReply::header_flood(64 * 1024 * 1024),
        RawReply::new(ok("after")),
    ]);
    let client = one_attempt(&cx)?;
    let fits = client.get(&raw.url("/fits")).send().await?;
    ensure!(
        fits.headers().len() >= 30,
        "{} headers of the 30 KiB section arrived",
        fits.headers().len()
    );
    let body = fits.text().await?;
    ensure!(body == "big", "body {body:?}");
    let started = Instant::now();
    let written_before = raw.bytes_written();
    expect_error(
        "the 64 MiB header section",
        client.get(&raw.url("/flood")).send().await,
        &[ErrorKind::Protocol, ErrorKind::Body],
        Stage::AwaitHead,
    )?;
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(10), "the flood took {took:?}");
    // Let the server's last write fail on the closed connection.
    let timer = client.transport().timer().clone();
    timer
        .sleep_until(timer.now() + Duration::from_millis(200))
        .await;
    let flooded = raw.bytes_written() - written_before;
    ensure!(
        flooded < FLOOD_BOUND,
        "the client took {flooded} bytes of header lines before it gave up"
    );
    let after = get_text(&client, &raw, "/after").await?;
    ensure!(after == "after", "next body {after:?}");
    let per = raw.requests_per_connection();
    ensure!(
        per.len() >= 2 && per[per.len() - 1] == 1,
        "the flooded connection was used again: requests per connection {per:?}"
    );
    Ok(Outcome::Pass)
}

/// A chunk size that is not hexadecimal is a `Protocol` (or `Body`) error in `Stage::Body`
/// after the chunks before it; the connection is not used again.
pub async fn fault_malformed_chunk_size<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"[..],
        ),
        RawReply::new(ok("after")),
    ]);
    let client = one_attempt(&cx)?;
    let resp = client.get(&raw.url("/chunks")).send().await?;
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    expect_error(
        "a malformed chunk size",
        resp.bytes().await,
        &[ErrorKind::Protocol, ErrorKind::Body],
        Stage::Body,
    )?;
    let after = get_text(&client, &raw, "/after").await?;
    ensure!(after == "after", "next body {after:?}");
    each_on_its_own_connection(&raw, 2)?;
    Ok(Outcome::Pass)
}

/// A body longer than its `Content-Length`: the declared bytes are the body, and the extra
/// (here a whole forged response) is never delivered, neither as body nor as the answer to the
/// next request, which goes out on a new connection.
pub async fn fault_body_longer_than_content_length<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nforge"[..],
        ),
        RawReply::new(ok("right")),
    ]);
    let client = one_attempt(&cx)?;
    let first = get_text(&client, &raw, "/long").await?;
    ensure!(first == "hello", "the body is {first:?}");
    let second = get_text(&client, &raw, "/next").await?;
    ensure!(second == "right", "the next request got {second:?}");
    each_on_its_own_connection(&raw, 2)?;
    Ok(Outcome::Pass)
}

/// Two `Content-Length`s that disagree (two fields, or one list) are a `Protocol` error in
/// `AwaitHead`: nothing of the body is guessed at, and the connection is not used again.
pub async fn fault_conflicting_content_lengths<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nhello!!"[..],
        ),
        RawReply::new(ok("after")),
        RawReply::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 5, 7\r\n\r\nhello!!"[..]),
        RawReply::new(ok("after")),
    ]);
    let client = one_attempt(&cx)?;
    for (what, path) in [("two fields", "/two"), ("one list", "/list")] {
        let result = match client.get(&raw.url(path)).send().await {
            Ok(resp) => resp.bytes().await.map(|b| (b, true)),
            Err(e) => Err(e),
        };
        expect_error(
            &format!("conflicting lengths in {what}"),
            result,
            &[ErrorKind::Protocol],
            Stage::AwaitHead,
        )?;
        let after = get_text(&client, &raw, "/after").await?;
        ensure!(after == "after", "after {what}: body {after:?}");
    }
    not_reused_after(&raw, &[0, 2])?;
    Ok(Outcome::Pass)
}

/// `Transfer-Encoding: chunked` with a `Content-Length`: a `Protocol` error in `AwaitHead`, and
/// the next request gets its own answer. RFC 9112 §6.3 lets the chunked framing win but says
/// the message "ought to be handled as an error": a correct server never sends it (§6.2), and a
/// reader that trusted the length would take the rest of the chunks for the next response
/// (response splitting). The HTTP libraries under the backends read it as chunked and would hand
/// it over, so keel-core refuses such a head for every backend, before any hook or policy sees
/// it. The body is dropped unread: keel-smol closes the connection; hyper and libcurl may
/// already have read the small chunked body to its end and pooled the connection, which is
/// then in step (read by the chunked framing, the one that wins), as the next answer shows.
pub async fn fault_chunked_and_content_length<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        ),
        RawReply::new(ok("after")),
    ]);
    let client = one_attempt(&cx)?;
    expect_error(
        "chunked with a Content-Length",
        client.get(&raw.url("/both")).send().await,
        &[ErrorKind::Protocol],
        Stage::AwaitHead,
    )?;
    let after = get_text(&client, &raw, "/after").await?;
    ensure!(after == "after", "next body {after:?}");
    let per = raw.requests_per_connection();
    ensure!(
        per.iter().sum::<usize>() == 2,
        "requests per connection {per:?}"
    );
    Ok(Outcome::Pass)
}

/// `100 Continue` and `103 Early Hints` before the final answer: the caller gets the `200`
/// and its body, and the next request its own answer.
pub async fn fault_informational_before_final<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal"[..],
        ),
        RawReply::new(ok("after")),
    ]);
    let client = one_attempt(&cx)?;
    let body = get_text(&client, &raw, "/hints").await?;
    ensure!(body == "final", "the body is {body:?}");
    let after = get_text(&client, &raw, "/after").await?;
    ensure!(after == "after", "next body {after:?}");
    let per = raw.requests_per_connection();
    ensure!(
        per.iter().sum::<usize>() == 2,
        "requests per connection {per:?}"
    );
    Ok(Outcome::Pass)
}

/// `204` and `304`, without and with stray bytes after the head (here a forged response):
/// each has an empty body, and the stray bytes never become the answer to the next request.
pub async fn fault_no_content_stray_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    const FORGED: &str = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nforge";
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]),
        RawReply::new(ok("one")),
        RawReply::new(format!("HTTP/1.1 204 No Content\r\n\r\n{FORGED}")),
        RawReply::new(ok("two")),
        RawReply::new(&b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n"[..]),
        RawReply::new(ok("three")),
        RawReply::new(format!(
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 5\r\n\r\n{FORGED}"
        )),
        RawReply::new(ok("four")),
    ]);
    let client = one_attempt(&cx)?;
    let cases = [
        (StatusCode::NO_CONTENT, "one"),
        (StatusCode::NO_CONTENT, "two"),
        (StatusCode::NOT_MODIFIED, "three"),
        (StatusCode::NOT_MODIFIED, "four"),
    ];
    for (i, (status, next)) in cases.into_iter().enumerate() {
        let resp = client.get(&raw.url(&format!("/empty{i}"))).send().await?;
        ensure!(
            resp.status() == status,
            "reply {i}: status {}",
            resp.status()
        );
        let body = resp.bytes().await?;
        ensure!(body.is_empty(), "a {status} delivered a body of {body:?}");
        let after = get_text(&client, &raw, &format!("/next{i}")).await?;
        ensure!(
            after == next,
            "after the {status} (stray bytes: {}), the next request got {after:?}",
            i % 2 == 1
        );
    }
    let per = raw.requests_per_connection();
    ensure!(
        per.iter().sum::<usize>() == 8,
        "requests per connection {per:?}"
    );
    Ok(Outcome::Pass)
}

/// `HEAD` answered with a `Content-Length`: the length is the resource's, the body is empty,
/// nothing is waited for, and the connection stays usable: reusing it is right here.
pub async fn fault_head_with_content_length<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"[..]),
        RawReply::new(ok("after")),
    ]);
    let client = cx
        .builder()
        .retry_policy(RetryPolicy::disabled())
        .read_idle_timeout(Duration::from_secs(2))
        .attempt_timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    let resp = client.head(&raw.url("/head")).send().await?;
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    let length = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .map(|v| v.as_bytes().to_vec());
    ensure!(
        length.as_deref() == Some(&b"1000"[..]),
        "content-length {length:?}"
    );
    let body = resp.bytes().await?;
    ensure!(body.is_empty(), "HEAD delivered {} body bytes", body.len());
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(1), "the HEAD took {took:?}");
    let after = get_text(&client, &raw, "/after").await?;
    ensure!(after == "after", "next body {after:?}");
    let per = raw.requests_per_connection();
    if !cx.capabilities().pool_return_on_body_end && super::tasks_run_on_other_threads() {
        ensure!(
            per.iter().sum::<usize>() == 2,
            "requests per connection {per:?}"
        );
        return Ok(Outcome::NotSupported("pool_return_on_body_end"));
    }
    ensure!(
        per == [2],
        "the connection was not reused after the HEAD: requests per connection {per:?}"
    );
    Ok(Outcome::Pass)
}

/// A server that answers `413` as soon as the head of a 5 MiB upload arrives, then closes
/// without reading the body: the caller sees the `413` (as a response, so
/// `error_for_status` gives `Status(413)`), within seconds, never a hang; the next request goes
/// out on a new connection. hyper and libcurl read the response while they send the body;
/// keel-smol, which sends the whole body first, reads it once the body's write fails (the
/// server drops the connection a second after answering).
pub async fn fault_early_413<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx.server.raw_conversation(vec![
        RawReply::new(
            &b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!"[..],
        )
        .early(),
        RawReply::new(ok("after")),
    ]);
    let client = one_attempt(&cx)?;
    let upload = Bytes::from(vec![b'u'; 5 * 1024 * 1024]);
    let started = Instant::now();
    let result = client.post(&raw.url("/upload")).body(upload).send().await;
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(10), "the upload took {took:?}");
    match result {
        Ok(resp) => {
            let err = resp.error_for_status().await;
            match err {
                Err(e) if e.kind() == ErrorKind::Status(StatusCode::PAYLOAD_TOO_LARGE) => {}
                other => return Err(Failure(format!("expected Status(413), got {other:?}"))),
            }
        }
        Err(e) => return Err(Failure(format!("the early 413 was lost: {e:?}"))),
    }
    ensure!(
        raw.complete_requests() == 0,
        "the server read the whole upload"
    );
    let after = get_text(&client, &raw, "/after").await?;
    ensure!(after == "after", "next body {after:?}");
    each_on_its_own_connection(&raw, 2)?;
    Ok(Outcome::Pass)
}

/// The caller's streaming request body fails after 128 KiB (chunked, and with a declared
/// length): an `InvalidRequest` error in `SendRequest` (the caller's side failed, not the
/// server's: keel-core types a request body's own failure so) with the caller's error in its
/// source chain; not retried (even with retries on: the stream can't be sent again, and the
/// kind is not retryable), and the server never sees a complete request (no last chunk, no
/// padding to the length); the next request goes out on a new connection.
pub async fn fault_request_body_fails_midway<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx
        .server
        .raw_conversation(vec![RawReply::new(ok("answer"))]);
    let client = cx.client()?;
    let failing = || {
        let chunk = Bytes::from(vec![b'c'; 64 * 1024]);
        futures_util::stream::iter(vec![
            Ok(chunk.clone()),
            Ok(chunk),
            Err(std::io::Error::other("the caller's body failed")),
        ])
    };
    for (what, body) in [
        ("chunked", Body::from_stream(failing())),
        ("sized", Body::from_sized_stream(failing(), 1024 * 1024)),
    ] {
        let started = Instant::now();
        let err = expect_error(
            &format!("a {what} body failing midway"),
            client
                .post(&raw.url("/upload"))
                .idempotent(true)
                .body(body)
                .send()
                .await,
            &[ErrorKind::InvalidRequest],
            Stage::SendRequest,
        )?;
        let mut chain = Vec::new();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        ensure!(
            chain.iter().any(|m| m.contains("the caller's body failed")),
            "{what}: the caller's error is not in the chain {chain:?}"
        );
        ensure!(
            err.attempts() == 1,
            "{what}: the failed body was retried ({} attempts)",
            err.attempts()
        );
        let took = started.elapsed();
        ensure!(took < Duration::from_secs(5), "{what}: took {took:?}");
        ensure!(
            raw.complete_requests() == 0,
            "{what}: the server saw a complete request"
        );
    }
    let after = get_text(&client, &raw, "/after").await?;
    ensure!(after == "answer", "next body {after:?}");
    // The failed requests' heads may never have left the client (hyper drops a head still
    // buffered with the body that failed); any that arrived had their connection closed.
    let arrived = raw.request_connections().len();
    let faulty: Vec<usize> = (0..arrived.saturating_sub(1)).collect();
    not_reused_after(&raw, &faulty)?;
    Ok(Outcome::Pass)
}

/// A CR or LF in a header value (or name) the caller sets is refused before anything is
/// sent: `InvalidRequest` (`Config` for a client
/// default), and the server sees no connection at all. No request smuggling. A URL with CR, LF
/// and spaces is either refused (`InvalidUrl`) or sent as one well-formed request line.
pub async fn fault_header_value_crlf<T: Backend>(cx: Cx<T>) -> CaseResult {
    let raw = cx
        .server
        .raw_conversation(vec![RawReply::new(ok("smuggled"))]);
    let client = cx.client()?;
    let url = raw.url("/");
    let attempts = [
        (
            "CRLF in a value",
            client.get(&url).header("x-a", "v\r\nx-injected: 1"),
        ),
        (
            "CR in a value",
            client.get(&url).header("x-a", "v\rx-injected: 1"),
        ),
        (
            "LF in a value",
            client.get(&url).header("x-a", "v\nx-injected: 1"),
        ),
        (
            "CRLF in a name",
            client.get(&url).header("x-a\r\nx-injected", "1"),
        ),
        (
            "CRLF in a bearer token",
            client.get(&url).bearer_auth("token\r\nx-injected: 1"),
        ),
    ];
    for (what, request) in attempts {
        match request.send().await {
            Err(e) if e.kind() == ErrorKind::InvalidRequest => {}
            other => {
                return Err(Failure(format!(
                    "{what}: expected InvalidRequest, got {:?}",
                    other.map(|r| r.status())
                )))
            }
        }
    }
    for (what, built) in [
        (
            "a default header",
            cx.builder()
                .default_header("x-a", "v\r\nx-injected: 1")
                .build(),
        ),
        (
            "the user agent",
            cx.builder().user_agent("agent\r\nx-injected: 1").build(),
        ),
    ] {
        ensure!(
            matches!(&built, Err(e) if e.kind() == ErrorKind::Config),
            "CRLF in {what}: expected Config, got {:?}",
            built.as_ref().err()
        );
    }
    ensure!(
        raw.connections() == 0 && cx.server.connections_accepted() == 0,
        "the server saw {} connections ({:?} heads)",
        raw.connections(),
        raw.heads()
    );
    // A URL is parsed as a browser does (WHATWG): CR, LF and tabs are dropped and spaces
    // percent-encoded, so what goes out is one request line, whatever the caller wrote.
    let smuggling_url = raw.url("/a HTTP/1.1\r\nx-injected: 1\r\n\r\nGET /b");
    match client.get(&smuggling_url).send().await {
        Err(e) if e.kind() == ErrorKind::InvalidUrl => {}
        Err(e) => return Err(Failure(format!("CRLF in the URL: {e:?}"))),
        Ok(resp) => {
            let _ = resp.bytes().await?;
            let heads = raw.heads();
            ensure!(
                heads.len() == 1,
                "CRLF in the URL: {} requests arrived",
                heads.len()
            );
            let head = String::from_utf8_lossy(&heads[0]).into_owned();
            let line = head.split("\r\n").next().unwrap_or_default();
            ensure!(
                line.split(' ').count() == 3
                    && !head.to_ascii_lowercase().contains("\r\nx-injected"),
                "CRLF in the URL went out as: {head:?}"
            );
        }
    }
    Ok(Outcome::Pass)
}
