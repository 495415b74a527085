//! The blocking client's cases: the basic behaviour of [`keel_core::blocking::Client`] on a
//! backend, against a fresh [`TestServer`], and the same calls made from inside each async
//! runtime (tokio current-thread and multi-thread, smol, an async-std task).
//!
//! Each case runs on its own thread under [`CASE_LIMIT`], so a hang fails the test instead
//! of hanging the run. [`blocking_suite!`](macro@crate::blocking_suite) makes them `#[test]`s
//! for one backend.

use std::io::{BufRead as _, Read as _};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http::StatusCode;
use keel_core::blocking::{Client, ClientBuilder, Runtime};
use keel_core::machine::paginate::Strategy;
use keel_core::{ErrorKind, Jitter, RetryPolicy, TimeoutPhase};

use crate::ensure;
use crate::rt::HostRuntime as _;
use crate::server::{Reply, TestServer};
use crate::suite::{Failure, CASE_LIMIT};

/// What a blocking case returns.
pub type BlockingResult = Result<(), Failure>;

/// Calls `$mac!{ [args] case1 case2 … }` with every blocking case. The one list of cases.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_blocking_case {
    ($mac:ident, $($args:tt)*) => {
        $crate::$mac! { [$($args)*]
            get_echo
            post_json_echo
            status_error
            attempt_timeout
            deadline_bounds_a_read
            retry_503_then_200
            redirect_followed
            large_body_streamed_through_read
            connections_pooled
            dropped_response_closes_its_connection
            upload_from_a_reader
            paginate_as_an_iterator
            download_to_a_file
            tls_settings
            through_a_proxy
            called_from_tokio_current_thread
            called_from_tokio_multi_thread
            called_from_smol
            called_from_async_std_task
        }
    };
}

/// Generates one `#[test]` per blocking case for a backend.
///
/// ```ignore
/// // conformance/tests/blocking_hyper.rs
/// keel_conformance::blocking_suite!(keel_hyper::HyperTransport);
/// ```
#[macro_export]
macro_rules! blocking_suite {
    ($backend:ty) => {
        $crate::__for_each_blocking_case!(__blocking_tests, $backend);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __blocking_tests {
    ([$backend:ty] $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                $crate::blocking::assert_case(
                    stringify!($name),
                    $crate::blocking::$name::<$backend>,
                );
            }
        )*
    };
}

/// Runs `case` against a fresh server on a thread of its own, and panics (failing the calling
/// test) unless it passes within [`CASE_LIMIT`].
pub fn assert_case(name: &str, case: fn(&TestServer) -> BlockingResult) {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("blocking-{name}"))
        .spawn(move || {
            let result = match TestServer::start() {
                Err(e) => Err(Failure(format!("test server did not start: {e}"))),
                Ok(server) => case(&server),
            };
            let _ = tx.send(result);
        })
        .expect("a case thread can be spawned");
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(Ok(())) => {}
        Ok(Err(Failure(msg))) => panic!("{name} failed after {:?}: {msg}", started.elapsed()),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name} did not finish within {CASE_LIMIT:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name} panicked"),
    }
}

/// A builder with the server's plain URL as base URL and a deadline well inside
/// [`CASE_LIMIT`].
fn builder<T: Runtime>(base_url: &str) -> ClientBuilder<T> {
    Client::<T>::builder()
        .base_url(base_url)
        .deadline(Duration::from_secs(30))
}

#[derive(serde::Deserialize)]
struct Echo {
    method: String,
    query: Option<String>,
    headers: std::collections::BTreeMap<String, Vec<String>>,
    body: String,
    body_len: usize,
}

/// The TLS settings through the blocking builder: a client certificate (PEM and PKCS#12)
/// accepted by the mTLS listener, a TLS 1.2-only server refused with `min_tls_version(1.3)`,
/// an untrusted certificate accepted only with `danger_accept_invalid_certs`. A backend that
/// can't present a client certificate refuses `identity` by name.
pub fn tls_settings<T: Runtime>(server: &TestServer) -> BlockingResult {
    use keel_core::{Certificate, Identity, Stage, TlsVersion};

    let tls_error = |result: Result<keel_core::blocking::Response, keel_core::Error>,
                     what: &str| {
        match result {
            Ok(r) => Err(Failure(format!("{what}: status {}", r.status()))),
            Err(e) if e.kind() == ErrorKind::Tls && e.stage() == Some(Stage::Tls) => Ok(()),
            Err(e) => Err(Failure(format!("{what}: expected a TLS error, got {e:?}"))),
        }
    };
    let root = || Certificate::from_pem(server.ca_cert_pem());
    let trusting = || builder::<T>(&server.url("")).add_root_certificate(root());
    let pem = Identity::from_pem(server.client_cert_pem(), server.client_key_pem())?;
    let (p12, password) = server.client_pkcs12();
    let p12 = Identity::from_pkcs12(&p12, password)?;
    if T::capabilities().identity {
        let expected = format!("CN={}", server.client_cn());
        for identity in [pem, p12] {
            let client = trusting().identity(identity).build()?;
            let body = client.get(&server.mtls_url("/whoami")).send()?.text()?;
            ensure!(body == expected, "the server saw {body:?}");
        }
        let anonymous = trusting().build()?;
        tls_error(
            anonymous.get(&server.mtls_url("/whoami")).send(),
            "no certificate",
        )?;
    } else {
        match trusting().identity(pem).build() {
            Ok(_) => return Err(Failure("identity was accepted".into())),
            Err(e) => ensure!(e.setting() == Some("identity"), "{e:?}"),
        }
    }

    let tls13 = trusting().min_tls_version(TlsVersion::Tls1_3).build()?;
    tls_error(
        tls13.get(&server.tls12_url("/status/200")).send(),
        "TLS 1.2 server",
    )?;
    let ok = tls13.get(&server.tls_url("/status/200")).send()?;
    ensure!(
        ok.status() == StatusCode::OK,
        "TLS 1.3 server: {}",
        ok.status()
    );

    let strict = builder::<T>(&server.url("")).build()?;
    tls_error(
        strict.get(&server.tls_url("/status/200")).send(),
        "untrusted",
    )?;
    let reckless = builder::<T>(&server.url(""))
        .danger_accept_invalid_certs(true)
        .build()?;
    let ok = reckless.get(&server.tls_url("/status/200")).send()?;
    ensure!(ok.status() == StatusCode::OK, "danger: {}", ok.status());
    Ok(())
}

/// The byte the server's `/bytes` and `/file` routes send at offset `i`.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// A GET with a query and a header, its JSON answer read back.
pub fn get_echo<T: Runtime>(server: &TestServer) -> BlockingResult {
    let client = builder::<T>(&server.url("")).build()?;
    let response = client
        .get("/echo")
        .query(&[("q", "keel"), ("page", "2")])
        .header("x-trace", "abc")
        .send()?;
    ensure!(
        response.status() == StatusCode::OK,
        "status {}",
        response.status()
    );
    ensure!(response.url().path() == "/echo", "url {}", response.url());
    let echo: Echo = response.json()?;
    ensure!(echo.method == "GET", "method {}", echo.method);
    ensure!(
        echo.query.as_deref() == Some("q=keel&page=2"),
        "query {:?}",
        echo.query
    );
    ensure!(
        echo.headers.get("x-trace").is_some_and(|v| v == &["abc"]),
        "headers {:?}",
        echo.headers
    );
    Ok(())
}

/// A POST with a JSON body, echoed back.
pub fn post_json_echo<T: Runtime>(server: &TestServer) -> BlockingResult {
    let client = builder::<T>(&server.url("")).build()?;
    let sent = serde_json::json!({"name": "keel", "tags": ["a", "b"]});
    let echo: Echo = client.post("/echo").json(&sent).send()?.json()?;
    ensure!(echo.method == "POST", "method {}", echo.method);
    let back: serde_json::Value = serde_json::from_str(&echo.body)?;
    ensure!(back == sent, "the server got {}", echo.body);
    ensure!(
        echo.headers
            .get("content-type")
            .is_some_and(|v| v == &["application/json"]),
        "headers {:?}",
        echo.headers
    );
    Ok(())
}

/// `error_for_status` turns a 503 into a status error with its headers and body snippet, and
/// passes a 201 through.
pub fn status_error<T: Runtime>(server: &TestServer) -> BlockingResult {
    let client = builder::<T>(&server.url(""))
        .retry_policy(RetryPolicy::disabled())
        .build()?;
    let body = "e".repeat(10_000);
    let err = match client
        .get(&format!("/status/503?header=Retry-After:7&body={body}"))
        .send()?
        .error_for_status()
    {
        Ok(r) => return Err(Failure(format!("a 503 passed as {}", r.status()))),
        Err(err) => err,
    };
    ensure!(
        err.kind() == ErrorKind::Status(StatusCode::SERVICE_UNAVAILABLE),
        "kind {:?}",
        err.kind()
    );
    let retry_after = err.response_headers().and_then(|h| h.get("retry-after"));
    ensure!(
        retry_after.is_some_and(|v| v == "7"),
        "Retry-After {retry_after:?}"
    );
    let snippet = err.body_snippet().map_or(0, |s| s.len());
    ensure!(
        snippet == keel_core::Response::SNIPPET_LIMIT,
        "snippet of {snippet} bytes"
    );
    let fine = client.get("/status/201").send()?.error_for_status()?;
    ensure!(
        fine.status() == StatusCode::CREATED,
        "201 became {}",
        fine.status()
    );
    Ok(())
}

/// The attempt timeout fires on a slow head, and the client works afterwards.
pub fn attempt_timeout<T: Runtime>(server: &TestServer) -> BlockingResult {
    let client = builder::<T>(&server.url(""))
        .attempt_timeout(Duration::from_millis(300))
        .retry_policy(RetryPolicy::disabled())
        .build()?;
    let started = Instant::now();
    let err = match client.get("/delay/10000").send() {
        Ok(r) => return Err(Failure(format!("answered {}", r.status()))),
        Err(err) => err,
    };
    let took = started.elapsed();
    ensure!(
        err.kind() == ErrorKind::Timeout(TimeoutPhase::Attempt),
        "kind {:?}",
        err.kind()
    );
    ensure!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "the 300 ms attempt timeout took {took:?}"
    );
    let ok = client.get("/status/204").send()?;
    ensure!(
        ok.status() == StatusCode::NO_CONTENT,
        "then got {}",
        ok.status()
    );
    Ok(())
}

/// The call's deadline bounds a read that stalls: the `Read` fails with `TimedOut`, its inner
/// error the keel deadline error.
pub fn deadline_bounds_a_read<T: Runtime>(server: &TestServer) -> BlockingResult {
    let client = builder::<T>(&server.url(""))
        .deadline(Duration::from_millis(500))
        .build()?;
    let started = Instant::now();
    let mut response = client.get("/stall?bytes=10").send()?;
    let mut body = Vec::new();
    let err = match response.read_to_end(&mut body) {
        Ok(n) => return Err(Failure(format!("a stalled body ended after {n} bytes"))),
        Err(err) => err,
    };
    let took = started.elapsed();
    ensure!(
        body.len() == 10,
        "read {} bytes before the stall",
        body.len()
    );
    ensure!(
        err.kind() == std::io::ErrorKind::TimedOut,
        "io kind {:?}",
        err.kind()
    );
    let keel = keel_core::find_in_chain(&err);
    ensure!(
        keel.is_some_and(|e| e.kind() == ErrorKind::Timeout(TimeoutPhase::Deadline)),
        "inner error {keel:?}"
    );
    ensure!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "the 500 ms deadline took {took:?}"
    );
    Ok(())
}

/// A 503 then a 200: the call retries and returns the 200.
pub fn retry_503_then_200<T: Runtime>(server: &TestServer) -> BlockingResult {
    let path = server.script(
        "flaky",
        vec![Reply::status(503), Reply::status(200).body("recovered")],
    );
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .base_delay(Duration::from_millis(20))
        .jitter(Jitter::None)
        .build()?;
    let client = builder::<T>(&server.url("")).retry_policy(policy).build()?;
    let response = client.get(&path).send()?;
    ensure!(response.attempts() == 2, "{} attempts", response.attempts());
    let body = response.error_for_status()?.text()?;
    ensure!(body == "recovered", "body {body:?}");
    ensure!(
        server.requests_to(&path) == 2,
        "the server saw {}",
        server.requests_to(&path)
    );
    Ok(())
}

/// A 302 is followed to its target.
pub fn redirect_followed<T: Runtime>(server: &TestServer) -> BlockingResult {
    let client = builder::<T>(&server.url("")).build()?;
    let response = client.get("/redirect/302?to=%2Fecho%3Fafter%3D1").send()?;
    ensure!(
        response.status() == StatusCode::OK,
        "status {}",
        response.status()
    );
    ensure!(
        response.redirects().len() == 1,
        "{} hops",
        response.redirects().len()
    );
    ensure!(
        response.url().path() == "/echo",
        "ended at {}",
        response.url()
    );
    let echo: Echo = response.json()?;
    ensure!(
        echo.query.as_deref() == Some("after=1"),
        "query {:?}",
        echo.query
    );
    Ok(())
}

/// 64 MiB read through `BufRead`/`Read` under a 1 MiB `max_body_size`: every byte right, and
/// the response never holds more than one chunk.
pub fn large_body_streamed_through_read<T: Runtime>(server: &TestServer) -> BlockingResult {
    const N: u64 = 64 * 1024 * 1024;
    let client = builder::<T>(&server.url(""))
        .max_body_size(1024 * 1024)
        .build()?;
    let mut response = client.get(&format!("/bytes/{N}")).send()?;
    let mut seen = 0u64;
    let mut largest = 0usize;
    loop {
        let held = response.fill_buf()?;
        if held.is_empty() {
            break;
        }
        largest = largest.max(held.len());
        for (k, b) in held.iter().enumerate() {
            ensure!(
                *b == pattern(seen + k as u64),
                "byte {} is corrupt",
                seen + k as u64
            );
        }
        let n = held.len();
        seen += n as u64;
        response.consume(n);
    }
    ensure!(seen == N, "streamed {seen} bytes, expected {N}");
    ensure!(
        largest <= 4 * 1024 * 1024,
        "held {largest} bytes at once: the body was buffered"
    );
    // And through plain `Read`, into `io::copy`.
    let mut again = client.get(&format!("/bytes/{N}")).send()?;
    let copied = std::io::copy(&mut again, &mut std::io::sink())?;
    ensure!(copied == N, "copied {copied}");
    Ok(())
}

/// 20 sequential calls, read whole or through `Read` to the end, share one connection.
pub fn connections_pooled<T: Runtime>(server: &TestServer) -> BlockingResult {
    let client = builder::<T>(&server.url("")).build()?;
    for i in 0..20 {
        let mut response = client.get("/status/200?body=hello").send()?;
        let body = if i % 2 == 0 {
            response.text()?
        } else {
            let mut s = String::new();
            response.read_to_string(&mut s)?;
            s
        };
        ensure!(body == "hello", "request {i} got {body:?}");
    }
    ensure!(
        server.connections_accepted() == 1,
        "20 requests opened {} connections (per connection: {:?})",
        server.connections_accepted(),
        server.requests_per_connection()
    );
    Ok(())
}

/// A response dropped half-read closes its connection; the next call works.
pub fn dropped_response_closes_its_connection<T: Runtime>(server: &TestServer) -> BlockingResult {
    let client = builder::<T>(&server.url("")).build()?;
    let mut response = client.get("/bytes/104857600").send()?;
    let mut first = [0u8; 1024];
    response.read_exact(&mut first)?;
    drop(response);
    let after = client.get("/status/200?body=after").send()?.text()?;
    ensure!(after == "after", "the next request got {after:?}");
    ensure!(
        server.wait_for_open_connections(1, Duration::from_secs(5)),
        "the half-read connection was not closed: {} open, {} accepted",
        server.open_connections(),
        server.connections_accepted()
    );
    Ok(())
}

/// A body read from a `Read` is streamed to the server whole.
pub fn upload_from_a_reader<T: Runtime>(server: &TestServer) -> BlockingResult {
    const N: usize = 5 * 1024 * 1024 + 3;
    let client = builder::<T>(&server.url("")).build()?;
    let data: Vec<u8> = (0..N as u64).map(pattern).collect();
    let echo: Echo = client
        .post("/echo")
        .body_reader(std::io::Cursor::new(data))
        .send()?
        .error_for_status()?
        .json()?;
    ensure!(echo.body_len == N, "the server got {} bytes", echo.body_len);
    Ok(())
}

/// A Link-header listing of 10,000 items in 100 pages, read as an iterator.
pub fn paginate_as_an_iterator<T: Runtime>(server: &TestServer) -> BlockingResult {
    #[derive(serde::Deserialize)]
    struct Item {
        id: u64,
    }
    let client = builder::<T>(&server.url("")).build()?;
    let mut listing = client
        .get("/collection?style=link&per=100")
        .paginate::<Item>(Strategy::link_header());
    let mut next_id = 0;
    for item in listing.by_ref() {
        let item = item?;
        ensure!(
            item.id == next_id,
            "item {} where {next_id} was due",
            item.id
        );
        next_id += 1;
    }
    ensure!(next_id == 10_000, "{next_id} items");
    ensure!(
        listing.pages_done() == 100,
        "{} pages",
        listing.pages_done()
    );
    ensure!(
        server.requests_to("/collection") == 100,
        "{} requests",
        server.requests_to("/collection")
    );
    Ok(())
}

/// A 3 MiB file cut every MiB is downloaded to disk, resumed twice, every byte right.
pub fn download_to_a_file<T: Runtime>(server: &TestServer) -> BlockingResult {
    const N: u64 = 3 * 1024 * 1024;
    let dir = std::env::temp_dir().join(format!(
        "keel-blocking-download-{}-{}",
        std::process::id(),
        T::NAME
    ));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("file.bin");
    let client = builder::<T>(&server.url("")).build()?;
    let report = client
        .get(&format!("/file/big?bytes={N}&reset_every=1048576"))
        .download()
        .to_file(&path)?;
    let bytes = std::fs::read(&path)?;
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(report.bytes == N, "report of {} bytes", report.bytes);
    ensure!(report.resumes >= 2, "{} resumes", report.resumes);
    ensure!(bytes.len() as u64 == N, "{} bytes on disk", bytes.len());
    let wrong = bytes
        .iter()
        .enumerate()
        .position(|(i, b)| *b != pattern(i as u64));
    ensure!(wrong.is_none(), "byte {wrong:?} is wrong");
    Ok(())
}

/// Through an HTTP proxy with credentials: a plain `http` request forwarded, an `https` one
/// through a `CONNECT` tunnel; without credentials, a `407` in the proxy stage.
pub fn through_a_proxy<T: Runtime>(server: &TestServer) -> BlockingResult {
    use keel_core::proxy::Proxy;

    let proxy = crate::server::proxy::TestProxy::start(Some(("keel", "pw")))?;
    let client = builder::<T>(&server.url(""))
        .add_root_certificate(keel_core::Certificate::from_pem(server.ca_cert_pem()))
        .proxy(Proxy::all(&proxy.http_url(Some(("keel", "pw"))))?)
        .build()?;
    let plain = client.get("/echo").send()?;
    ensure!(
        plain.status() == StatusCode::OK,
        "status {}",
        plain.status()
    );
    let _ = plain.bytes()?;
    let tls = client.get(&server.tls_url("/echo")).send()?;
    ensure!(tls.status() == StatusCode::OK, "status {}", tls.status());
    let _ = tls.bytes()?;
    ensure!(
        (proxy.forwarded(), proxy.tunnels()) == (1, 1),
        "forwarded {}, tunnels {}",
        proxy.forwarded(),
        proxy.tunnels()
    );

    let refused = builder::<T>(&server.url(""))
        .proxy(Proxy::all(&proxy.http_url(None))?)
        .build()?;
    match refused.get("/echo").send() {
        Ok(resp) => Err(Failure(format!(
            "the proxy let it through: {}",
            resp.status()
        ))),
        Err(e)
            if e.stage() == Some(keel_core::Stage::Proxy)
                && e.kind() == ErrorKind::Status(StatusCode::PROXY_AUTHENTICATION_REQUIRED) =>
        {
            Ok(())
        }
        Err(e) => Err(Failure(format!("expected the proxy's 407, got {e:?}"))),
    }
}

/// What the runtime cases do inside each runtime: build a client, call it, read a body through
/// `Read`, drop the client while a response is still open, read on, and drop everything.
fn round_trip<T: Runtime>(base_url: &str) -> BlockingResult {
    let client = builder::<T>(base_url).build()?;
    let echo: Echo = client.get("/echo?from=async").send()?.json()?;
    ensure!(
        echo.query.as_deref() == Some("from=async"),
        "query {:?}",
        echo.query
    );
    let mut body = client.get("/bytes/300000").send()?;
    drop(client);
    let read = std::io::copy(&mut body, &mut std::io::sink())?;
    ensure!(read == 300_000, "read {read} bytes");
    // A second client made and dropped here, unused.
    drop(builder::<T>(base_url).build()?);
    Ok(())
}

/// The blocking client called (built, used, dropped) from inside a tokio current-thread
/// runtime: no panic, no deadlock.
pub fn called_from_tokio_current_thread<T: Runtime>(server: &TestServer) -> BlockingResult {
    let url = server.url("");
    crate::rt::Tokio::block_on(async { round_trip::<T>(&url) })
}

/// The blocking client called from a task on tokio's multi-thread runtime.
pub fn called_from_tokio_multi_thread<T: Runtime>(server: &TestServer) -> BlockingResult {
    let url = server.url("");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tokio::spawn(async move { round_trip::<T>(&url) })
            .await
            .map_err(|e| Failure(format!("the task failed: {e}")))?
    })
}

/// The blocking client called from inside `smol::block_on`.
pub fn called_from_smol<T: Runtime>(server: &TestServer) -> BlockingResult {
    let url = server.url("");
    crate::rt::Smol::block_on(async { round_trip::<T>(&url) })
}

/// The blocking client called from an async-std task.
pub fn called_from_async_std_task<T: Runtime>(server: &TestServer) -> BlockingResult {
    let url = server.url("");
    async_std::task::block_on(async_std::task::spawn(async move { round_trip::<T>(&url) }))
}
