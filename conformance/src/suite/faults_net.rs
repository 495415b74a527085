//! Network, TLS and HTTP/2 fault kinds: what a caller sees (error kind and stage) or how keel
//! recovers, and that a connection a fault broke is not used again (the next request goes out
//! on a new one). An HTTP/2 fault of one stream (`REFUSED_STREAM`, a stalled upload) leaves
//! its connection usable: there the case checks that the next request works, wherever it
//! goes.
//!
//! Everything stays on 127.0.0.1: the unresolvable names can't be sent to any DNS server, the
//! unanswered connect is a full accept queue on loopback, the bad certificates come from a CA
//! made for the case, and the HTTP/2 faults from a server that writes its frames by hand
//! ([`TestServer::h2_fault_url`](crate::server::TestServer::h2_fault_url)).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{StatusCode, Version};
use keel_core::dns::{Resolve, Resolving};
use keel_core::{
    Backend, Body, Certificate, Client, Error, ErrorKind, RetryPolicy, Stage, TimeoutPhase,
};

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;
use crate::server::{FaultCert, FaultPki, H2Fault};

/// The port of a `scheme://host:port/...` URL.
fn port_of(url: &str) -> Result<u16, Failure> {
    url.rsplit(':')
        .next()
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .ok_or_else(|| Failure(format!("no port in {url}")))
}

/// The error of `result`, or a failure saying what succeeded instead.
fn failed<T>(result: Result<T, Error>, what: &str) -> Result<Error, Failure> {
    match result {
        Ok(_) => Err(Failure(format!("{what}: the request succeeded"))),
        Err(e) => Ok(e),
    }
}

/// A request through `client` to the server's plain `/status/200?body=after` works.
async fn still_works<T: Backend>(cx: &Cx<T>, client: &Client<T>) -> Result<(), Failure> {
    let body = client
        .get(&cx.server.url("/status/200?body=after"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(body == "after", "the next request got {body:?}");
    Ok(())
}

/// A resolver that knows no name, as a resolver answering NXDOMAIN would; counts its lookups.
struct Nxdomain(Arc<AtomicUsize>);

impl Resolve for Nxdomain {
    fn resolve(&self, host: &str) -> Resolving {
        self.0.fetch_add(1, Ordering::SeqCst);
        let host = host.to_owned();
        Box::pin(async move { Err(format!("{host}: no such name (NXDOMAIN)").into()) })
    }
}

/// Checks a failed lookup: a connect error in the DNS stage, unsent, with its URL.
fn expect_dns_failure(err: &Error, what: &str) -> Result<(), Failure> {
    ensure!(
        err.kind() == ErrorKind::Connect && err.stage() == Some(Stage::Dns),
        "{what}: expected a connect error in the DNS stage, got {:?} in {:?} ({err:?})",
        err.kind(),
        err.stage()
    );
    ensure!(
        err.is_unsent(),
        "{what}: a failed lookup must count as unsent"
    );
    ensure!(err.url().is_some(), "{what}: the error lost its URL");
    Ok(())
}

/// A host name that does not resolve is a connect error in the DNS stage, before anything is
/// sent, and the client still works afterwards.
///
/// Offline by construction: with the system resolver (every backend), the name's first label
/// is 64 bytes, one over what a DNS query can carry (RFC 1035, 2.3.4), under `.invalid` (RFC
/// 6761), so the resolver fails it without asking any server. Where the backend calls keel's
/// resolvers, a custom one that knows no name gives the same error, once per request.
pub async fn fault_name_does_not_resolve<T: Backend>(cx: Cx<T>) -> CaseResult {
    let port = port_of(&cx.server.url(""))?;
    let host = format!("{}.invalid", "n".repeat(64));
    let url = format!("http://{host}:{port}/echo");
    let client = cx
        .builder()
        .connect_timeout(Duration::from_secs(5))
        .retry_policy(RetryPolicy::disabled())
        .build()?;
    let started = Instant::now();
    let err = failed(client.get(&url).send().await, "the system resolver")?;
    expect_dns_failure(&err, "the system resolver")?;
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "the failed lookup took {:?}",
        started.elapsed()
    );
    still_works(&cx, &client).await?;

    if cx.capabilities().dns_resolver {
        let lookups = Arc::new(AtomicUsize::new(0));
        let custom = cx
            .builder()
            .dns_resolver(Nxdomain(lookups.clone()))
            .retry_policy(RetryPolicy::disabled())
            .build()?;
        let err = failed(
            custom
                .get(&format!("http://name.invalid:{port}/echo"))
                .send()
                .await,
            "a resolver that answers NXDOMAIN",
        )?;
        expect_dns_failure(&err, "a resolver that answers NXDOMAIN")?;
        let asked = lookups.load(Ordering::SeqCst);
        ensure!(asked == 1, "the resolver was asked {asked} times");
        // An IP address needs no lookup.
        still_works(&cx, &custom).await?;
        ensure!(
            lookups.load(Ordering::SeqCst) == 1,
            "an IP address was looked up"
        );
    }
    let worked = if cx.capabilities().dns_resolver { 2 } else { 1 };
    ensure!(
        cx.server.requests() == worked,
        "the server saw {} requests, not only the {worked} that worked",
        cx.server.requests()
    );
    Ok(Outcome::Pass)
}

/// A connect to an address that never answers (its SYNs are dropped: plain TCP, no listener
/// that accepts) fails with the connect timeout, in the connect stage, unsent, on time.
pub async fn fault_connect_never_answered<T: Backend>(cx: Cx<T>) -> CaseResult {
    let url = cx.server.unanswered_url("/status/200")?;
    let client = cx
        .builder()
        .connect_timeout(Duration::from_millis(300))
        .retry_policy(RetryPolicy::disabled())
        .build()?;
    let started = Instant::now();
    let err = failed(client.get(&url).send().await, "an unanswered connect")?;
    let took = started.elapsed();
    ensure!(
        err.kind() == ErrorKind::Timeout(TimeoutPhase::Connect),
        "expected a connect timeout, got {err:?}"
    );
    ensure!(
        err.stage() == Some(Stage::Connect),
        "stage {:?} ({err:?})",
        err.stage()
    );
    ensure!(err.is_unsent(), "a connect timeout must count as unsent");
    ensure!(err.is_retryable(), "a connect timeout is worth retrying");
    ensure!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "the 300 ms connect timeout took {took:?}"
    );
    still_works(&cx, &client).await?;
    Ok(Outcome::Pass)
}

/// A client that trusts `pki`'s CA.
fn trusting_client<T: Backend>(cx: &Cx<T>, pki: &FaultPki) -> Result<Client<T>, Failure> {
    Ok(cx
        .builder()
        .add_root_certificate(Certificate::from_pem(pki.ca_pem()))
        .connect_timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(5))
        .build()?)
}

/// A listener presenting `cert` (from a CA the client trusts) fails the handshake with a TLS
/// error in the TLS stage, not worth retrying; a second request fails the same way on a new
/// connection (nothing of the failed one is kept); the same CA's valid certificate works.
async fn bad_certificate<T: Backend>(cx: Cx<T>, cert: FaultCert) -> CaseResult {
    let pki = FaultPki::generate()?;
    let bad = cx.server.tls_fault_url(&pki, cert, "/status/200")?;
    let client = trusting_client(&cx, &pki)?;
    for attempt in 1..=2 {
        let err = failed(client.get(&bad).send().await, "a bad certificate")?;
        ensure!(
            err.kind() == ErrorKind::Tls && err.stage() == Some(Stage::Tls),
            "request {attempt}: expected a TLS error in the TLS stage, got {:?} in {:?} ({err:?})",
            err.kind(),
            err.stage()
        );
        ensure!(
            !err.is_retryable(),
            "a certificate the client refuses is not worth retrying"
        );
        ensure!(err.is_unsent(), "a refused handshake must count as unsent");
        ensure!(
            cx.server.connections_accepted() == attempt,
            "after {attempt} requests the bad listener accepted {} connections",
            cx.server.connections_accepted()
        );
    }
    let good = cx
        .server
        .tls_fault_url(&pki, FaultCert::Valid, "/status/200")?;
    let resp = client.get(&good).send().await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "the valid certificate: {}",
        resp.status()
    );
    ensure!(
        cx.server.requests() == 1,
        "{} requests reached the server, not only the one over the valid certificate",
        cx.server.requests()
    );
    Ok(Outcome::Pass)
}

/// A certificate for another host name, issued by a trusted CA: a TLS error.
pub async fn fault_tls_name_mismatch<T: Backend>(cx: Cx<T>) -> CaseResult {
    bad_certificate(cx, FaultCert::OtherName).await
}

/// An expired certificate, issued by a trusted CA for the right name: a TLS error.
pub async fn fault_tls_expired_certificate<T: Backend>(cx: Cx<T>) -> CaseResult {
    bad_certificate(cx, FaultCert::Expired).await
}

/// `https://` to a port that speaks plain HTTP: the handshake fails with a TLS error (the
/// server's answer is not TLS), typed, at once, and the next request opens a new connection.
pub async fn fault_https_to_a_plain_port<T: Backend>(cx: Cx<T>) -> CaseResult {
    let port = port_of(&cx.server.url(""))?;
    let url = format!("https://localhost:{port}/status/200");
    let client = cx
        .builder()
        .add_root_certificate(cx.server_root())
        .connect_timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    let err = failed(client.get(&url).send().await, "TLS to a plain port")?;
    let took = started.elapsed();
    ensure!(
        err.kind() == ErrorKind::Tls && err.stage() == Some(Stage::Tls),
        "expected a TLS error in the TLS stage, got {:?} in {:?} ({err:?})",
        err.kind(),
        err.stage()
    );
    ensure!(err.is_unsent(), "a failed handshake must count as unsent");
    ensure!(
        took < Duration::from_secs(3),
        "the failed handshake took {took:?}"
    );
    let accepted = cx.server.connections_accepted();
    ensure!(accepted == 1, "one TLS request made {accepted} connections");
    still_works(&cx, &client).await?;
    ensure!(
        cx.server.connections_accepted() == 2,
        "the next request did not open a new connection ({} accepted)",
        cx.server.connections_accepted()
    );
    Ok(Outcome::Pass)
}

/// `http://` to a TLS port: the server's TLS alert is no HTTP response. A typed protocol or
/// body error before any head, at once, never a hang; the connection is not used again.
pub async fn fault_http_to_a_tls_port<T: Backend>(cx: Cx<T>) -> CaseResult {
    let port = port_of(&cx.server.tls_url(""))?;
    let url = format!("http://127.0.0.1:{port}/status/200");
    let client = cx
        .builder()
        .connect_timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(5))
        .retry_policy(RetryPolicy::disabled())
        .build()?;
    for attempt in 1..=2 {
        let started = Instant::now();
        let err = failed(client.get(&url).send().await, "plain HTTP to a TLS port")?;
        let took = started.elapsed();
        ensure!(
            matches!(err.kind(), ErrorKind::Protocol | ErrorKind::Body)
                && err.stage() == Some(Stage::AwaitHead),
            "request {attempt}: expected a protocol or body error awaiting the head, got {:?} in \
             {:?} ({err:?})",
            err.kind(),
            err.stage()
        );
        ensure!(
            took < Duration::from_secs(3),
            "request {attempt}: the failure took {took:?}"
        );
        ensure!(
            cx.server.connections_accepted() == attempt,
            "after {attempt} requests the TLS port accepted {} connections",
            cx.server.connections_accepted()
        );
    }
    ensure!(
        cx.server.requests() == 0,
        "a plain request was served on the TLS port"
    );
    still_works(&cx, &client).await?;
    ensure!(
        cx.server.connections_accepted() == 3,
        "the next request did not open a new connection ({} accepted)",
        cx.server.connections_accepted()
    );
    Ok(Outcome::Pass)
}

/// HTTP/2 GOAWAY mid-stream: the server answered stream A in part, then sends GOAWAY naming A
/// as the last stream it processed while stream B (a POST without an idempotency key) is in
/// flight, and closes. B was never processed: keel sends it again on a new connection and
/// the caller gets its 200. A was processed and cut: a body error. The connection that went
/// away is not used again.
pub async fn fault_h2_goaway_mid_stream<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().http2 {
        return Ok(Outcome::NotSupported("http2"));
    }
    let pki = FaultPki::generate()?;
    let h2 = cx.server.h2_fault_url(&pki, H2Fault::GoAwayMidStream)?;
    let client = trusting_client(&cx, &pki)?;
    let mut a = client.get(&h2.url("/a")).send().await?;
    ensure!(a.version() == Version::HTTP_2, "spoke {:?}", a.version());
    let b = client
        .post(&h2.url("/b"))
        .body(Bytes::from_static(b"not processed"))
        .send()
        .await?;
    ensure!(b.status() == StatusCode::OK, "B got {}", b.status());
    let b_body = b.text().await?;
    ensure!(b_body == "ok", "B's body: {b_body:?}");
    ensure!(
        h2.heads_per_connection() == [2, 1],
        "stream heads per connection: {:?} (A and B on the first, B again on the second)",
        h2.heads_per_connection()
    );
    let mut received = 0;
    let err = loop {
        match a.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => {
                return Err(Failure(format!(
                    "A's cut body ended cleanly after {received} bytes"
                )))
            }
            Err(e) => break e,
        }
    };
    ensure!(
        err.kind() == ErrorKind::Body && err.stage() == Some(Stage::Body),
        "A: expected a body error in the body stage, got {:?} in {:?} ({err:?})",
        err.kind(),
        err.stage()
    );
    ensure!(received <= 100, "A delivered {received} of 100 bytes sent");
    let next = client.get(&h2.url("/c")).send().await?.text().await?;
    ensure!(next == "ok", "the next request got {next:?}");
    ensure!(
        h2.heads_per_connection() == [2, 2],
        "the connection that went away was used again: {:?}",
        h2.heads_per_connection()
    );
    Ok(Outcome::Pass)
}

/// RST_STREAM `REFUSED_STREAM`: the server did not process the stream, so it is safe to send
/// again, and keel does, even for a POST without an idempotency key; the caller gets the 200
/// and the server saw both attempts.
pub async fn fault_h2_refused_stream<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().http2 {
        return Ok(Outcome::NotSupported("http2"));
    }
    let pki = FaultPki::generate()?;
    let h2 = cx.server.h2_fault_url(&pki, H2Fault::RefusedStream)?;
    let client = trusting_client(&cx, &pki)?;
    let resp = client
        .post(&h2.url("/refused"))
        .body(Bytes::from_static(b"retry me"))
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    ensure!(
        resp.version() == Version::HTTP_2,
        "spoke {:?}",
        resp.version()
    );
    let body = resp.text().await?;
    ensure!(body == "ok", "body {body:?}");
    let heads: usize = h2.heads_per_connection().iter().sum();
    ensure!(
        heads == 2 && h2.answered() == 1,
        "the server saw {heads} streams and answered {} (heads per connection: {:?})",
        h2.answered(),
        h2.heads_per_connection()
    );
    Ok(Outcome::Pass)
}

/// The HTTP/2 connection flow-control window before any WINDOW_UPDATE (RFC 9113, 6.9.2).
const CONNECTION_WINDOW: usize = 65_535;

/// An HTTP/2 peer that never grants flow-control window: an upload larger than the window
/// stalls, and the attempt timeout fires, typed, on time; the client sent no more than the
/// window allowed, and a request without a body still works.
///
/// Not checked: where a later upload goes. The stalled connection has no send window left, so
/// an upload on it stalls again until its own timeout: keel-hyper keeps the connection in its
/// pool after the attempt timeout and a small POST on it timed out too; through libcurl it
/// was answered.
pub async fn fault_h2_no_flow_control_window<T: Backend>(cx: Cx<T>) -> CaseResult {
    if !cx.capabilities().http2 {
        return Ok(Outcome::NotSupported("http2"));
    }
    let pki = FaultPki::generate()?;
    let h2 = cx.server.h2_fault_url(&pki, H2Fault::NoWindow)?;
    let client = cx
        .builder()
        .add_root_certificate(Certificate::from_pem(pki.ca_pem()))
        .attempt_timeout(Duration::from_millis(500))
        .retry_policy(RetryPolicy::disabled())
        .build()?;
    let upload = vec![b'u'; 4 * CONNECTION_WINDOW];
    let started = Instant::now();
    let err = failed(
        client
            .post(&h2.url("/upload"))
            .body(Body::from(upload))
            .send()
            .await,
        "an upload with no window",
    )?;
    let took = started.elapsed();
    ensure!(
        err.kind() == ErrorKind::Timeout(TimeoutPhase::Attempt),
        "expected the attempt timeout, got {err:?}"
    );
    ensure!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "the 500 ms attempt timeout took {took:?}"
    );
    ensure!(h2.answered() == 0, "the stalled upload was answered");
    // A client may send before it has read the server's SETTINGS (with the default stream
    // window), but never more than the connection's window, which only WINDOW_UPDATE raises.
    let sent = h2.data_received();
    ensure!(
        sent <= CONNECTION_WINDOW,
        "the client sent {sent} bytes of body into a connection window of {CONNECTION_WINDOW}"
    );
    let next = client.get(&h2.url("/after")).send().await?.text().await?;
    ensure!(next == "ok", "the next request got {next:?}");
    Ok(Outcome::Pass)
}
