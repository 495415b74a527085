//! The core driver's policies over the public `MockTransport`, on virtual time: every test
//! finishes at once whatever the delays it simulates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use keel_core::machine::paginate::Strategy;
use keel_core::mock::{Answer, Matcher, MockTransport, Rule};
use keel_core::{
    BreakerPolicy, BreakerState, Client, ClientBuilder, ErrorKind, Jitter, RateLimit, RetryPolicy,
    Stage, TimeoutPhase, Timer as _,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn builder() -> ClientBuilder<MockTransport> {
    Client::<MockTransport>::builder().base_url("https://api.example.com/v1/")
}

/// Retries every 100 ms · 2^n, without jitter, up to 4 attempts.
fn retrying() -> ClientBuilder<MockTransport> {
    builder().retry_policy(
        RetryPolicy::builder()
            .max_attempts(4)
            .base_delay(millis(100))
            .jitter(Jitter::None)
            .build()
            .unwrap(),
    )
}

fn single_attempt() -> ClientBuilder<MockTransport> {
    builder().retry_policy(RetryPolicy::disabled())
}

#[test]
fn retries_back_off_in_virtual_time() {
    let mock = MockTransport::new();
    let failing = mock.mount(
        Rule::when(Matcher::path("/v1/items"))
            .respond(Answer::status(503))
            .up_to_n_times(2)
            .expect(2),
    );
    let ok = mock.mount(
        Rule::when(Matcher::path("/v1/items"))
            .respond(Answer::status(200).text("done"))
            .expect(1),
    );
    let client = retrying().build_with(mock.clone()).unwrap();
    let (status, attempts, body) = mock
        .run(async {
            let resp = client.get("items").send().await?;
            let (status, attempts) = (resp.status(), resp.attempts());
            Ok::<_, keel_core::Error>((status, attempts, resp.text().await?))
        })
        .unwrap();
    assert_eq!((status.as_u16(), attempts, body.as_str()), (200, 3, "done"));
    let at: Vec<Duration> = mock.requests().iter().map(|r| r.at()).collect();
    assert_eq!(at, [Duration::ZERO, millis(100), millis(300)]);
    assert_eq!(mock.elapsed(), millis(300));
    assert_eq!((failing.hits(), ok.hits()), (2, 1));
    mock.verify().unwrap();
}

#[test]
fn retry_after_is_honoured_as_seconds_and_as_a_date() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/seconds"))
            .respond(Answer::status(429).header("retry-after", "7"))
            .up_to_n_times(1),
    );
    mock.mount(Rule::when(Matcher::path("/v1/seconds")));
    let client = retrying().build_with(mock.clone()).unwrap();
    let resp = mock.run(client.get("seconds").send()).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.elapsed(), secs(7));

    // An HTTP-date is read against the virtual wall clock, which moves with virtual time.
    let timer = mock.clock();
    let date = httpdate::fmt_http_date(timer.now_system() + secs(20));
    mock.mount(
        Rule::when(Matcher::path("/v1/date"))
            .respond(Answer::status(503).header("retry-after", date))
            .up_to_n_times(1),
    );
    mock.mount(Rule::when(Matcher::path("/v1/date")));
    let start = mock.elapsed();
    let resp = mock.run(client.get("date").send()).unwrap();
    assert_eq!(resp.status(), 200);
    let waited = mock.elapsed() - start;
    // The date has whole seconds: the wait is the 20 s less the fraction of the clock's second.
    assert!(waited > secs(19) && waited <= secs(20), "waited {waited:?}");
}

#[test]
fn a_head_delayed_past_the_attempt_timeout_times_out_at_the_timeout() {
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200).delay(secs(10))));
    let client = single_attempt()
        .attempt_timeout(secs(2))
        .build_with(mock.clone())
        .unwrap();
    let err = mock.run(client.get("slow").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Attempt));
    assert_eq!(mock.elapsed(), secs(2));

    // Just inside the limit, it arrives.
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200).delay(millis(1999))));
    let client = single_attempt()
        .attempt_timeout(secs(2))
        .build_with(mock.clone())
        .unwrap();
    assert_eq!(mock.run(client.get("slow").send()).unwrap().status(), 200);
    assert_eq!(mock.elapsed(), millis(1999));
}

#[test]
fn a_body_that_stalls_meets_the_read_idle_timeout() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::any()).respond(
            Answer::status(200)
                .chunk("first")
                .chunk_after(secs(1), " second")
                .stall_body(),
        ),
    );
    let client = single_attempt()
        .read_idle_timeout(secs(5))
        .build_with(mock.clone())
        .unwrap();
    let err = mock
        .run(async { client.get("drip").send().await?.bytes().await })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::ReadIdle));
    assert_eq!(
        mock.elapsed(),
        secs(6),
        "1 s for the second chunk, then 5 s idle"
    );
}

#[test]
fn the_breaker_opens_after_failures_and_half_opens_after_its_cool_down() {
    let mock = MockTransport::new();
    let down = mock.mount(
        Rule::when(Matcher::any())
            .respond(Answer::error(ErrorKind::Connect, Stage::Connect))
            .up_to_n_times(3),
    );
    let up = mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200)));
    let client = single_attempt()
        .circuit_breaker(
            BreakerPolicy::builder()
                .consecutive_failures(3)
                .open_for(secs(30), secs(300))
                .build()
                .unwrap(),
        )
        .build_with(mock.clone())
        .unwrap();
    for _ in 0..3 {
        let err = mock.run(client.get("x").send()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connect);
        assert!(err.is_unsent());
    }
    let err = mock.run(client.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(err.retry_in(), Some(secs(30)));
    assert_eq!(mock.requests().len(), 3, "the open breaker sent nothing");
    assert!(matches!(
        client.breaker_state("x"),
        Some(BreakerState::Open { .. })
    ));

    mock.advance(secs(30));
    assert_eq!(mock.run(client.get("x").send()).unwrap().status(), 200);
    assert_eq!(client.breaker_state("x"), Some(BreakerState::Closed));
    assert_eq!((down.hits(), up.hits()), (3, 1));
}

#[test]
fn a_rate_limit_paces_requests_over_virtual_time() {
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::any()).expect(21));
    let client = single_attempt()
        .rate_limit(RateLimit::per_second(10).unwrap())
        .build_with(mock.clone())
        .unwrap();
    for _ in 0..11 {
        mock.run(client.get("x").send()).unwrap();
    }
    assert_eq!(mock.elapsed(), secs(1), "10 intervals of 100 ms");

    // Concurrent calls are paced the same way under `run`.
    let start = mock.elapsed();
    let calls = (0..10).map(|_| client.get("x").send());
    let results = mock.run(futures_util::future::join_all(calls));
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(mock.elapsed() - start, secs(1));
    let gaps: Vec<Duration> = mock.requests()[11..]
        .windows(2)
        .map(|w| w[1].at() - w[0].at())
        .collect();
    assert_eq!(gaps, [millis(100); 9]);
}

#[test]
fn redirects_are_followed_and_credentials_stay_home() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/old"))
            .respond(Answer::status(301).header("location", "/v1/new")),
    );
    mock.mount(
        Rule::when(Matcher::path("/v1/new").and(Matcher::header("authorization", "Bearer t0k")))
            .respond(Answer::status(302).header("location", "https://cdn.example.net/blob")),
    );
    let cdn = mock.mount(
        Rule::when(Matcher::host("cdn.example.net").and(Matcher::header_absent("authorization")))
            .respond(Answer::status(200).body("blob"))
            .expect(1),
    );
    let client = single_attempt()
        .bearer_auth("t0k")
        .build_with(mock.clone())
        .unwrap();
    let body = mock
        .run(async { client.get("old").send().await?.bytes().await })
        .unwrap();
    assert_eq!(body, "blob");
    let paths: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.uri().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "https://api.example.com/v1/old",
            "https://api.example.com/v1/new",
            "https://cdn.example.net/blob"
        ]
    );
    assert!(mock.unmatched().is_empty());
    assert_eq!(cdn.hits(), 1);
}

#[test]
fn pagination_follows_link_headers() {
    #[derive(serde::Deserialize)]
    struct Item {
        id: u32,
    }
    let mock = MockTransport::new();
    let link = |page: u32| format!("<https://api.example.com/v1/items?page={page}>; rel=\"next\"");
    mock.mount(
        Rule::when(Matcher::path("/v1/items").and(Matcher::query("page", "2")))
            .respond(
                Answer::status(200)
                    .json(&serde_json::json!([{ "id": 3 }, { "id": 4 }]))
                    .header("link", link(3)),
            )
            .expect(1),
    );
    mock.mount(
        Rule::when(Matcher::path("/v1/items").and(Matcher::query("page", "3")))
            .respond(Answer::status(200).json(&serde_json::json!([{ "id": 5 }])))
            .expect(1),
    );
    // The first page: no `page` parameter; lowest priority so the others are tried first.
    mock.mount(
        Rule::when(Matcher::path("/v1/items"))
            .priority(9)
            .respond(
                Answer::status(200)
                    .json(&serde_json::json!([{ "id": 1 }, { "id": 2 }]))
                    .header("link", link(2)),
            )
            .expect(1),
    );
    let client = single_attempt().build_with(mock.clone()).unwrap();
    let request = client.get("items").build().unwrap();
    let ids: Vec<u32> = mock.run(
        client
            .paginate::<Item>(request, Strategy::link_header())
            .map(|item| item.unwrap().id)
            .collect::<Vec<_>>(),
    );
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    mock.verify().unwrap();
}

#[test]
fn requests_are_recorded_with_headers_and_body() {
    let mock = MockTransport::new();
    let orders = mock.mount(
        Rule::when(
            Matcher::method("POST")
                .and(Matcher::path("/v1/orders"))
                .and(Matcher::body_json(
                    &serde_json::json!({ "sku": "A1", "qty": 2 }),
                )),
        )
        .respond_with(|r| {
            Answer::status(201).text(format!("made {}", r.body().map_or(0, |b| b.len())))
        })
        .expect(1),
    );
    let client = single_attempt()
        .default_header("x-tenant", "acme")
        .build_with(mock.clone())
        .unwrap();
    let text = mock
        .run(async {
            client
                .post("orders")
                .json(&serde_json::json!({ "qty": 2, "sku": "A1" }))
                .send()
                .await?
                .text()
                .await
        })
        .unwrap();
    let received = orders.received();
    let order = &received[0];
    assert_eq!(text, format!("made {}", order.body().unwrap().len()));
    assert_eq!(order.method(), "POST");
    assert_eq!(order.header("x-tenant"), Some("acme"));
    assert_eq!(order.header("content-type"), Some("application/json"));
    let sent: serde_json::Value = order.body_json().unwrap();
    assert_eq!(sent["sku"], "A1");
}

#[test]
fn an_unmatched_request_gets_a_404_saying_so() {
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::path("/v1/known")));
    let client = single_attempt().build_with(mock.clone()).unwrap();
    let (status, body) = mock
        .run(async {
            let resp = client.get("unknown?q=1").send().await?;
            Ok::<_, keel_core::Error>((resp.status(), resp.text().await?))
        })
        .unwrap();
    assert_eq!(status, 404);
    assert!(
        body.contains("no rule matched GET https://api.example.com/v1/unknown?q=1"),
        "{body}"
    );
    let unmatched = mock.unmatched();
    assert_eq!(unmatched.len(), 1);
    assert_eq!(unmatched[0].query_param("q").as_deref(), Some("1"));
}

#[test]
#[should_panic(expected = "expected exactly 2 requests, received 1")]
fn unmet_expectations_panic_when_the_last_clone_is_dropped() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/twice"))
            .named("twice")
            .expect(2),
    );
    let client = single_attempt().build_with(mock.clone()).unwrap();
    mock.run(client.get("twice").send()).unwrap();
    let err = mock.verify().unwrap_err();
    assert_eq!(err.unmet().len(), 1);
    assert!(err.unmet()[0].starts_with("rule #1 \"twice\""), "{err}");
    drop(mock);
    // The client holds the last clone.
    drop(client);
}

#[test]
fn expectations_accept_ranges_and_a_met_one_drops_quietly() {
    let mock = MockTransport::new();
    let rule = mock.mount(Rule::when(Matcher::any()).expect(1..=3));
    let client = single_attempt().build_with(mock.clone()).unwrap();
    assert!(!rule.is_satisfied());
    mock.run(client.get("a").send()).unwrap();
    mock.run(client.get("b").send()).unwrap();
    assert!(rule.is_satisfied());
    mock.verify().unwrap();
}

#[test]
fn an_unsent_failure_is_retried_even_for_a_post() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::method("POST"))
            .respond(Answer::error(ErrorKind::Body, Stage::SendRequest).unsent())
            .up_to_n_times(1),
    );
    mock.mount(Rule::when(Matcher::method("POST")).respond(Answer::status(201)));
    let client = retrying().build_with(mock.clone()).unwrap();
    let resp = mock.run(client.post("orders").body("x").send()).unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(mock.requests().len(), 2);

    // Without `unsent`, the same failure is not retried: the server may have seen it.
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::method("POST"))
            .respond(Answer::error(ErrorKind::Body, Stage::SendRequest)),
    );
    let client = retrying().build_with(mock.clone()).unwrap();
    let err = mock
        .run(client.post("orders").body("x").send())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn an_answer_that_isnt_http_is_a_protocol_error_not_a_panic() {
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::path("/v1/a")).respond(Answer::status(42)));
    mock.mount(
        Rule::when(Matcher::path("/v1/b")).respond(Answer::status(200).header("bad name", "x")),
    );
    let client = single_attempt().build_with(mock.clone()).unwrap();
    for path in ["a", "b"] {
        let err = mock.run(client.get(path).send()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{path}");
    }
}

#[test]
fn build_with_checks_the_settings_like_build() {
    let err = single_attempt()
        .attempt_timeout(Duration::ZERO)
        .build_with(MockTransport::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.setting(), Some("attempt_timeout"));
    // And the mock is a Backend too: `build()` makes an empty one, reachable from the client.
    let client = builder().build().unwrap();
    let mock = client.transport().clone();
    mock.mount(
        Rule::when(Matcher::any())
            .respond(Answer::status(204))
            .expect(1),
    );
    assert_eq!(mock.run(client.get("x").send()).unwrap().status(), 204);
}

#[test]
fn under_a_foreign_executor_sleeps_move_the_clock_by_themselves() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/items"))
            .respond(Answer::status(503))
            .up_to_n_times(2),
    );
    mock.mount(
        Rule::when(Matcher::path("/v1/items"))
            .respond(Answer::status(200).delay(millis(50)).body("ok")),
    );
    let client = retrying()
        .attempt_timeout(secs(1))
        .build_with(mock.clone())
        .unwrap();
    let body =
        futures_executor::block_on(async { client.get("items").send().await?.bytes().await })
            .unwrap();
    assert_eq!(body, "ok");
    // The backoffs and the head delay, and not the attempt timeout raced beside the head.
    assert_eq!(mock.elapsed(), millis(350));

    // A head later than the timeout still times out at the timeout.
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200).delay(secs(60))));
    let client = single_attempt()
        .attempt_timeout(secs(1))
        .build_with(mock.clone())
        .unwrap();
    let err = futures_executor::block_on(client.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Attempt));
    assert_eq!(mock.elapsed(), secs(1));
}

#[test]
fn rules_are_tried_by_priority_then_in_mount_order() {
    let mock = MockTransport::new();
    let first = mock.mount(Rule::when(Matcher::any()).respond(Answer::status(201)));
    let second = mock.mount(Rule::when(Matcher::any()).respond(Answer::status(202)));
    let urgent = mock.mount(
        Rule::when(Matcher::path_prefix("/v1/urgent"))
            .priority(1)
            .respond(Answer::status(203)),
    );
    let client = single_attempt().build_with(mock.clone()).unwrap();
    let status = |path: &'static str| mock.run(client.get(path).send()).unwrap().status().as_u16();
    assert_eq!(status("plain"), 201);
    assert_eq!(status("urgent/1"), 203);
    assert_eq!((first.hits(), second.hits(), urgent.hits()), (1, 0, 1));
}

#[test]
fn a_body_fails_mid_stream_where_the_answer_says() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::any()).respond(
            Answer::status(200)
                .chunk("abc")
                .fail_body_after(millis(10), ErrorKind::Body),
        ),
    );
    let client = single_attempt().build_with(mock.clone()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let err = mock
        .run(async {
            let mut stream = client.get("x").send().await?.bytes_stream();
            while let Some(chunk) = stream.next().await {
                seen.lock().unwrap().push(chunk?);
            }
            Ok::<_, keel_core::Error>(())
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    assert_eq!(err.stage(), Some(Stage::Body));
    assert_eq!(*seen.lock().unwrap(), ["abc"]);
    assert_eq!(mock.elapsed(), millis(10));
}

#[test]
fn a_recording_of_a_timeout_and_of_a_body_left_unread_replays_them() {
    use keel_core::mock::Recorder;

    let client = Client::<Recorder<MockTransport>>::builder()
        .base_url("https://api.example.com/v1/")
        .retry_policy(RetryPolicy::disabled())
        .attempt_timeout(secs(1))
        .build()
        .unwrap();
    let live = client.transport().inner().clone();
    live.mount(Rule::when(Matcher::path("/v1/slow")).respond(Answer::status(200).delay(secs(10))));
    live.mount(
        Rule::when(Matcher::path("/v1/big"))
            .respond(Answer::status(200).chunk("a").chunk("b").chunk("c")),
    );
    let err = live.run(client.get("slow").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Attempt));
    let first = live
        .run(async {
            let mut stream = client.get("big").send().await?.bytes_stream();
            stream.next().await.transpose()
        })
        .unwrap();
    assert_eq!(first.as_deref(), Some(&b"a"[..]));
    let cassette = client.transport().cassette();
    assert_eq!(cassette.len(), 2);
    let json = cassette.to_json();
    assert!(json.contains("\"end\": \"incomplete\""), "{json}");

    let replay = MockTransport::from_cassette(&cassette);
    let offline = single_attempt()
        .attempt_timeout(secs(1))
        .build_with(replay.clone())
        .unwrap();
    // The head that never came times out again, at the client's limit.
    let err = replay.run(offline.get("slow").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Attempt));
    assert_eq!(replay.elapsed(), secs(1));
    // The body is there as far as it was read, and fails past that.
    let err = replay
        .run(async { offline.get("big").send().await?.bytes().await })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    let why = std::error::Error::source(&err).unwrap().to_string();
    assert!(why.contains("recording of this body stops here"), "{why}");
}

#[test]
fn a_boxed_client_can_run_over_a_mock_the_test_keeps() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/x"))
            .respond(Answer::status(202))
            .expect(1),
    );
    let client: Client<keel_core::BoxTransport> = builder().build_boxed_with(mock.clone()).unwrap();
    assert_eq!(client.transport().backend_name(), "mock");
    assert_eq!(mock.run(client.get("x").send()).unwrap().status(), 202);
}
