//! Requests in flight, hedged requests and partitions, on virtual time.

use super::*;
use crate::machine::hedge::HedgePolicy;
use crate::machine::retry::RetryBudget;
use crate::{BreakerControl, BreakerPolicy, BreakerState, RateLimit};

fn at(m: &MockState) -> Vec<Duration> {
    m.requests().iter().map(|r| r.at).collect()
}

/// Sends a GET to `path` and reads its body.
async fn fetch(c: &Client<MockTransport>, path: &str) -> Result<Bytes, Error> {
    c.get(path).send().await?.bytes().await
}

// ---------------------------------------------------------------------------------------------
// Requests in flight

#[test]
fn max_in_flight_holds_a_call_until_a_body_ends() {
    let c = single_attempt()
        .base_url("http://h")
        .max_in_flight(2)
        .build()
        .unwrap();
    let m = mock(&c);
    // Heads at once, bodies a second later: a permit is held until the body has been read.
    for _ in 0..3 {
        m.push(Reply::status(200).chunk_at(secs(1), "x"));
    }
    let calls = (0..3).map(|_| fetch(&c, "x"));
    let results = m.run(futures_util::future::join_all(calls));
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(at(m), [Duration::ZERO, Duration::ZERO, secs(1)]);
}

#[test]
fn a_dropped_response_gives_its_permit_back() {
    let c = single_attempt()
        .base_url("http://h")
        .max_in_flight(1)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).stall());
    let resp = m.run(c.get("x").send()).unwrap();
    // The body never ends; while the response lives, the next call can't go.
    let next = c.get("x").deadline(secs(1)).send();
    let err = m.run(next).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(
        m.elapsed(),
        secs(1),
        "it waited for a permit until its deadline"
    );
    assert_eq!(m.request_count(), 1);
    drop(resp);
    m.run(c.get("x").send()).unwrap();
    assert_eq!(m.request_count(), 2);
    assert_eq!(m.elapsed(), secs(1), "the permit was free at once");
}

#[test]
fn a_failed_attempt_gives_its_permit_back_before_the_retry_waits() {
    let c = retrying_builder(policy().max_attempts(2).base_delay(secs(1)))
        .max_in_flight(1)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(200));
    m.push(Reply::status(200));
    // The first call backs off for a second after its 503; the second call doesn't wait for
    // it.
    let first = fetch(&c, "x");
    let second = async {
        let timer = c.transport().timer().clone();
        timer.sleep_until(timer.now() + millis(10)).await;
        fetch(&c, "y").await
    };
    let (a, b) = m.run(futures_util::future::join(first, second));
    a.unwrap();
    b.unwrap();
    assert_eq!(at(m), [Duration::ZERO, millis(10), secs(1)]);
}

#[test]
fn the_per_origin_limit_keeps_origins_apart() {
    let c = single_attempt()
        .base_url("http://h")
        .max_in_flight_per_origin(1)
        .build()
        .unwrap();
    let m = mock(&c);
    for _ in 0..3 {
        m.push(Reply::status(200).chunk_at(secs(1), "x"));
    }
    let calls = ["http://a/1", "http://b/1", "http://a/2"].map(|url| fetch(&c, url));
    let results = m.run(futures_util::future::join_all(calls));
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let log = m.requests();
    let sent: Vec<_> = log.iter().map(|r| (r.uri.as_str(), r.at)).collect();
    assert_eq!(
        sent,
        [
            ("http://a/1", Duration::ZERO),
            ("http://b/1", Duration::ZERO),
            ("http://a/2", secs(1)),
        ]
    );
}

#[test]
fn a_limit_of_zero_fails_the_build() {
    let built = single_attempt().max_in_flight(0).build();
    assert_eq!(config_setting(built), Some("max_in_flight"));
    let built = single_attempt().max_in_flight_per_origin(0).build();
    assert_eq!(config_setting(built), Some("max_in_flight_per_origin"));
}

// ---------------------------------------------------------------------------------------------
// Hedged requests

fn hedging(policy: HedgePolicy) -> crate::ClientBuilder<MockTransport> {
    single_attempt().base_url("http://h").hedge(policy)
}

#[test]
fn a_slow_get_is_hedged_and_the_fast_answer_wins() {
    let c = hedging(HedgePolicy::after(millis(100))).build().unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(secs(5)));
    m.push(Reply::status(203).head_at(millis(150)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), 203, "the hedge's answer");
    assert_eq!(m.elapsed(), millis(150));
    assert_eq!(at(m), [Duration::ZERO, millis(100)]);
    assert_eq!(resp.record().hedges(), 1);
    assert_eq!(m.cancelled(), 1, "the slow attempt was dropped");
    assert_eq!(
        m.dropped_on_timeout(),
        0,
        "a lost race says nothing of its connection"
    );
}

#[test]
fn the_first_answer_wins_even_when_it_is_the_first_attempt() {
    let c = hedging(HedgePolicy::after(millis(100))).build().unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(millis(120)));
    m.push(Reply::status(203).head_at(secs(1)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(m.elapsed(), millis(120));
    assert_eq!((m.request_count(), m.cancelled()), (2, 1));
}

#[test]
fn a_fast_answer_is_not_hedged() {
    let c = hedging(HedgePolicy::after(millis(100))).build().unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(millis(50)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.record().hedges(), 0);
    assert_eq!(m.request_count(), 1);
}

#[test]
fn only_requests_safe_to_send_twice_are_hedged() {
    let c = hedging(HedgePolicy::after(millis(100))).build().unwrap();
    let m = mock(&c);
    m.push(Reply::status(201).head_at(secs(1)));
    let resp = m.run(c.post("x").body("order").send()).unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(m.request_count(), 1, "a POST is never sent twice");

    // Unless it says it may be.
    m.push(Reply::status(201).head_at(secs(2)));
    m.push(Reply::status(201).head_at(millis(1_200)));
    let resp = m
        .run(c.post("x").body("order").idempotent(true).send())
        .unwrap();
    assert_eq!(resp.record().hedges(), 1);
    assert_eq!(m.request_count(), 3);
    assert_eq!(
        m.requests()[2].body.as_deref(),
        Some(&b"order"[..]),
        "the hedge carries the body"
    );

    // And a request can opt out of the client's hedging.
    m.push(Reply::status(200).head_at(secs(3)));
    let resp = m
        .run(c.get("x").hedge(HedgePolicy::never()).send())
        .unwrap();
    assert_eq!(resp.record().hedges(), 0);
    assert_eq!(m.request_count(), 4);
}

#[test]
fn a_failed_hedge_leaves_the_first_attempt_and_a_failed_first_attempt_the_hedge() {
    let c = hedging(HedgePolicy::after(millis(100))).build().unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(secs(1)));
    m.push(Reply::fail(connect_refused()).head_at(millis(150)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(m.elapsed(), secs(1));

    m.push(Reply::fail(connect_refused()).head_at(millis(1_200)));
    m.push(Reply::status(203).head_at(millis(1_500)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), 203);
    assert_eq!(m.elapsed(), millis(1_500));

    // Both fail: the call fails with the last failure.
    m.push(Reply::fail(connect_refused()).head_at(millis(1_700)));
    m.push(Reply::fail(Error::new(ErrorKind::Timeout(TimeoutPhase::Connect))).head_at(secs(2)));
    let err = m.run(c.get("x").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Connect));
    assert_eq!(m.request_count(), 6);
}

#[test]
fn hedges_draw_on_the_retry_budget() {
    let empty = RetryBudget::new(secs(10), 0, 0.0).unwrap();
    let c = hedging(HedgePolicy::after(millis(100)))
        .retry_budget(Some(empty))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(secs(1)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.record().hedges(), 0, "the budget is empty");
    assert_eq!(m.request_count(), 1);

    // One retry per two calls: every other slow call is hedged.
    let half = RetryBudget::new(secs(10), 0, 0.5).unwrap();
    let c = hedging(HedgePolicy::after(millis(100)))
        .retry_budget(Some(half))
        .build()
        .unwrap();
    let m = mock(&c);
    let mut hedged = 0;
    for i in 0..4 {
        let start = m.elapsed();
        m.push(Reply::status(200).head_at(start + secs(1)));
        m.push(Reply::status(200).head_at(start + millis(200)));
        let resp = m.run(c.get("x").send()).unwrap();
        hedged += resp.record().hedges();
        if resp.record().hedges() == 0 {
            // The hedge's reply was never asked for.
            m.script.lock().unwrap().pop_front();
        }
        assert!(m.elapsed() > start, "call {i}");
    }
    assert_eq!(hedged, 2);
}

#[test]
fn a_hedge_never_waits_for_the_rate_limit() {
    let c = hedging(HedgePolicy::after(millis(100)))
        .rate_limit(RateLimit::per_second(1).unwrap())
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(millis(500)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.record().hedges(), 0, "its slot would only come at 1 s");
    assert_eq!(m.request_count(), 1);
    // Nothing was booked for it: the next call goes at 1 s, not 2 s.
    m.run(c.get("x").send()).unwrap();
    assert_eq!(at(m), [Duration::ZERO, secs(1)]);
}

#[test]
fn a_losing_attempt_gives_back_its_permit_and_its_breaker_ticket() {
    let c = hedging(HedgePolicy::after(millis(100)))
        .max_in_flight(2)
        .circuit_breaker(
            BreakerPolicy::builder()
                .consecutive_failures(1)
                .half_open_probes(1)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(secs(1)));
    m.push(Reply::status(200).head_at(millis(150)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.record().hedges(), 1);
    drop(resp);
    // Both permits are free: two calls go at once.
    let start = m.elapsed();
    let calls = (0..2).map(|_| c.get("x").send());
    let results = m.run(futures_util::future::join_all(calls));
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(m.elapsed(), start);
    assert_eq!(c.breaker_state("x"), Some(BreakerState::Closed));
}

#[test]
fn percentile_hedging_learns_the_origin_latency() {
    let c = hedging(HedgePolicy::at_percentile(0.9).unwrap())
        .build()
        .unwrap();
    let m = mock(&c);
    // Until it has seen enough answers it doesn't know the tail, and doesn't hedge.
    for _ in 0..crate::machine::hedge::Latencies::MIN_SAMPLES {
        let start = m.elapsed();
        m.push(Reply::status(200).head_at(start + millis(10)));
        let resp = m.run(c.get("x").send()).unwrap();
        assert_eq!(resp.record().hedges(), 0);
    }
    let start = m.elapsed();
    m.push(Reply::status(200).head_at(start + secs(1)));
    m.push(Reply::status(203).head_at(start + millis(50)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), 203);
    let hedged_at = m.requests().last().unwrap().at - start;
    assert!(
        hedged_at >= millis(10) && hedged_at <= millis(12),
        "hedged after {hedged_at:?}, the p90 of 10 ms answers"
    );
}

// ---------------------------------------------------------------------------------------------
// Partitions

#[test]
fn a_partition_has_its_own_breaker() {
    let c = breaking_builder(2).build().unwrap();
    let m = mock(&c);
    for _ in 0..2 {
        m.push(Reply::status(503));
        m.run(c.get("billing").partition("billing").send()).unwrap();
    }
    let err = m
        .run(c.get("billing").partition("billing").send())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert!(matches!(
        c.partition_breaker_state("billing"),
        Some(BreakerState::Open { .. })
    ));
    // Another partition, and the origin's own breaker, are untouched.
    m.run(c.get("search").partition("search").send()).unwrap();
    m.run(c.get("other").send()).unwrap();
    assert_eq!(c.breaker_state("x"), Some(BreakerState::Closed));
    assert_eq!(
        c.partition_breaker_state("search"),
        Some(BreakerState::Closed)
    );
    assert_eq!(c.partition_breaker_state("nobody"), None);
    assert_eq!(m.request_count(), 4);

    assert!(c.control_partition_breaker("billing", BreakerControl::Reset));
    m.run(c.get("billing").partition("billing").send()).unwrap();
    assert_eq!(m.request_count(), 5);
}

fn breaking_builder(failures: u32) -> crate::ClientBuilder<MockTransport> {
    single_attempt().base_url("http://h").circuit_breaker(
        BreakerPolicy::builder()
            .consecutive_failures(failures)
            .open_for(secs(5), secs(60))
            .build()
            .unwrap(),
    )
}

#[test]
fn a_quota_hold_for_a_partition_holds_only_that_partition() {
    let c = single_attempt()
        .base_url("http://h")
        .server_quotas(true)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).header("ratelimit", "\"default\";r=0;t=2"));
    m.run(c.get("x").partition("alice").send()).unwrap();
    // Bob and the origin's other requests go at once; Alice's next waits for the reset.
    m.run(c.get("x").partition("bob").send()).unwrap();
    m.run(c.get("x").send()).unwrap();
    assert_eq!(m.elapsed(), Duration::ZERO);
    m.run(c.get("x").partition("alice").send()).unwrap();
    assert!(m.elapsed() >= secs(2), "{:?}", m.elapsed());

    // A server that names the partition (`pk`, a byte sequence: "bob") holds that one.
    let start = m.elapsed();
    m.push(Reply::status(200).header("ratelimit", "\"default\";r=0;t=3;pk=:Ym9i:"));
    m.run(c.get("x").partition("alice").send()).unwrap();
    m.run(c.get("x").partition("alice").send()).unwrap();
    assert_eq!(m.elapsed(), start);
    m.run(c.get("x").partition("bob").send()).unwrap();
    assert!(m.elapsed() >= start + secs(3), "{:?}", m.elapsed() - start);
}
