//! Record exchanges with the real loopback server through hyper, save the cassette, and replay
//! it offline with the server stopped: same bodies, same failures, and no secret in the file.

use std::time::Duration;

use keel::core::Client;
use keel::keel_hyper::HyperTransport;
use keel::mock::{MockTransport, Recorder};
use keel::{ErrorKind, Jitter, RetryPolicy};
use keel_conformance::server::{Reply, TestServer};

const BEARER: &str = "bearer-secret-1d4f";
const COOKIE: &str = "cookie-secret-8a2c";
const PASSWORD: &str = "pass-secret-5e9b";
/// `ada:pass-secret-5e9b` in base64, as Basic auth sends it.
const BASIC: &str = "YWRhOnBhc3Mtc2VjcmV0LTVlOWI=";
const API_KEY: &str = "key-secret-77c0";
const QUERY_TOKEN: &str = "query-secret-03aa";

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("keel-record-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(3)
        .base_delay(Duration::from_millis(10))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

/// What each call gave: a status and body, or the kind of error and the bytes read before it.
#[derive(Debug, PartialEq)]
enum Got {
    Body(u16, Vec<u8>),
    Failed(ErrorKind, usize),
}

/// The calls, the same whether recorded or replayed.
async fn calls<T: keel::core::Transport>(client: &Client<T>) -> Vec<Got> {
    let requests = [
        client.get("/echo").query(&[("page", "2")]),
        client
            .get("/script/login")
            .bearer_auth(BEARER)
            .header("x-api-key", API_KEY),
        client
            .get("/status/200")
            .query(&[("body", "signed"), ("access_token", QUERY_TOKEN)]),
        client
            .post("/status/201")
            .query(&[("body", "made")])
            .basic_auth("ada", Some(PASSWORD))
            .body("{\"order\":1}"),
        client.get("/bytes/600"),
        // 503, then 200 on the retry: two exchanges for one call, replayed in order.
        client.get("/script/flaky"),
        client.get("/script/cut"),
    ];
    let mut got = Vec::new();
    for request in requests {
        let resp = match request.send().await {
            Ok(resp) => resp,
            Err(err) => {
                got.push(Got::Failed(err.kind(), 0));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let mut stream = resp.bytes_stream();
        let mut body = Vec::new();
        let mut failed = None;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            match chunk {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(err) => {
                    failed = Some(err.kind());
                    break;
                }
            }
        }
        got.push(match failed {
            Some(kind) => Got::Failed(kind, body.len()),
            None => Got::Body(status, body),
        });
    }
    got
}

#[test]
fn a_recording_replays_offline_with_its_secrets_redacted() {
    let dir = TempDir::new();
    let path = dir.0.join("cassette.json");
    let server = TestServer::start().unwrap();
    server.script(
        "login",
        vec![Reply::status(200)
            .header("set-cookie", format!("session={COOKIE}; HttpOnly"))
            .header("x-api-key", API_KEY)
            .body("welcome")],
    );
    server.script(
        "flaky",
        vec![Reply::status(503), Reply::status(200).body("second")],
    );
    server.script(
        "cut",
        vec![Reply::status(200).body(vec![b'x'; 1000]).reset_after(100)],
    );
    let base_url = server.url("");

    let recorded = {
        let client = Client::<Recorder<HyperTransport>>::builder()
            .base_url(&base_url)
            .retry_policy(retry())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        client
            .transport()
            .redact_header(keel::http::HeaderName::from_static("x-api-key"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = runtime.block_on(calls(&client));
        assert_eq!(client.transport().len(), 8, "7 calls, one of them retried");
        client.transport().save(&path).unwrap();
        got
    };
    assert_eq!(server.requests_to("/script/flaky"), 2);
    drop(server);

    // The calls saw what the server sent, through the recorder.
    assert!(matches!(&recorded[0], Got::Body(200, b) if b.starts_with(b"{")));
    assert_eq!(recorded[1], Got::Body(200, b"welcome".to_vec()));
    assert_eq!(recorded[2], Got::Body(200, b"signed".to_vec()));
    assert_eq!(recorded[3], Got::Body(201, b"made".to_vec()));
    let pattern: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(recorded[4], Got::Body(200, pattern));
    assert_eq!(recorded[5], Got::Body(200, b"second".to_vec()));
    assert_eq!(recorded[6], Got::Failed(ErrorKind::Body, 100));

    let file = std::fs::read_to_string(&path).unwrap();
    for secret in [BEARER, COOKIE, PASSWORD, BASIC, API_KEY, QUERY_TOKEN] {
        assert!(
            !file.contains(secret),
            "{secret} is in the cassette:\n{file}"
        );
    }
    for redacted in ["authorization", "x-api-key", "set-cookie"] {
        assert!(
            file.contains(&format!("\"{redacted}: REDACTED\"")),
            "{redacted}"
        );
    }
    assert!(file.contains("access_token=REDACTED"));
    assert!(file.contains("\"base64\""), "the binary body is base64");
    assert!(
        file.contains(r#""text": "{\"order\":1}""#),
        "the request body is text"
    );

    // Offline: the same calls, answered from the cassette, in virtual time.
    let replay = MockTransport::replay(&path).unwrap();
    let client = Client::<MockTransport>::builder()
        .base_url(&base_url)
        .retry_policy(retry())
        .build_with(replay.clone())
        .unwrap();
    let replayed = replay.run(calls(&client));
    assert_eq!(replayed, recorded);
    assert!(replay.unmatched().is_empty(), "{:?}", replay.unmatched());
    assert_eq!(replay.requests().len(), 8);

    // A request the cassette doesn't hold fails, and says so.
    let err = replay
        .run(client.get("/echo").query(&[("page", "3")]).send())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    let why = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        why.contains("GET") && why.contains("/echo?page=3") && why.contains("is not in"),
        "{why}"
    );
    assert_eq!(replay.unmatched().len(), 1);
}

/// A mock client awaited under tokio (not `MockTransport::run`): its sleeps move the virtual
/// clock by themselves, so 30 s of backoff take no real time.
#[tokio::test]
async fn a_mock_under_tokio_finishes_at_once() {
    use keel::mock::{Answer, Matcher, Rule};

    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/jobs/1"))
            .respond(Answer::status(503).header("retry-after", "30"))
            .up_to_n_times(1),
    );
    mock.mount(
        Rule::when(Matcher::path("/v1/jobs/1"))
            .respond(Answer::status(200).text("done"))
            .expect(1),
    );
    let client = Client::<MockTransport>::builder()
        .base_url("https://api.example.com/v1/")
        .build_with(mock.clone())
        .unwrap();
    let started = std::time::Instant::now();
    let body = client
        .get("jobs/1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "done");
    assert_eq!(mock.elapsed(), Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(5));
}
