//! Tests of the `Retry` machine: exact schedules for fixed seeds, each stop reason, and
//! property tests of its invariants. Time is virtual: one `Instant` read per test, plus offsets.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderMap, Method, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::*;
use crate::{Error, ErrorKind, Stage, TimeoutPhase};

fn failed(err: &Error) -> Outcome<'_> {
    Outcome::from(err)
}

use crate::tests::epoch;

/// The wall clock the tests pretend it is: 2000-01-01T00:00:00Z.
const WALL: u64 = 946_684_800;

fn wall(offset: Duration) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(WALL) + offset
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy(jitter: Jitter) -> RetryPolicyBuilder {
    RetryPolicy::builder()
        .max_attempts(6)
        .base_delay(ms(100))
        .multiplier(2.0)
        .max_delay(ms(1_000))
        .jitter(jitter)
}

fn response(status: u16, headers: &HeaderMap) -> Outcome<'_> {
    Outcome::Response {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
    }
}

fn retry_after(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, value.parse().unwrap());
    headers
}

/// Feeds `503`s, each reported right when the previous retry was due, and returns the delays
/// until the machine stops.
fn schedule(policy: &RetryPolicy, seed: u64) -> (Vec<Duration>, RetryAction) {
    let start = epoch();
    let mut retry = Retry::new(policy, start, seed);
    let headers = HeaderMap::new();
    let get = RequestFacts::new(&Method::GET);
    let mut now = start;
    let mut delays = Vec::new();
    for _ in 0..100 {
        match retry.on_outcome(
            now,
            wall(Duration::ZERO),
            &get,
            response(503, &headers),
            None,
        ) {
            RetryAction::RetryAt { at, delay, .. } => {
                assert_eq!(at, now + delay);
                delays.push(delay);
                now = at;
            }
            stop => return (delays, stop),
        }
    }
    panic!("the machine never stopped");
}

fn nanos(values: &[u64]) -> Vec<Duration> {
    values.iter().map(|&n| Duration::from_nanos(n)).collect()
}

#[test]
fn schedule_without_jitter() {
    let policy = policy(Jitter::None).build().unwrap();
    let (delays, stop) = schedule(&policy, 1);
    assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1_000)]);
    assert_eq!(
        stop,
        RetryAction::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 6 })
    );
}

#[test]
fn schedule_with_full_jitter() {
    let policy = policy(Jitter::Full).build().unwrap();
    let (delays, _) = schedule(&policy, 42);
    // In [0, 100 ms], [0, 200 ms], [0, 400 ms], [0, 800 ms], [0, 1 s].
    let expected = [74_156_488, 31_982_078, 111_440_452, 275_352_573, 38_030_168];
    assert_eq!(delays, nanos(&expected));
}

#[test]
fn schedule_with_equal_jitter() {
    let policy = policy(Jitter::Equal).build().unwrap();
    let (delays, _) = schedule(&policy, 42);
    // In [50, 100 ms], [100, 200 ms], [200, 400 ms], [400, 800 ms], [500 ms, 1 s].
    let expected = [
        87_078_244,
        115_991_039,
        255_720_226,
        537_676_286,
        519_015_084,
    ];
    assert_eq!(delays, nanos(&expected));
}

#[test]
fn schedule_with_decorrelated_jitter() {
    let policy = policy(Jitter::Decorrelated).build().unwrap();
    let (delays, _) = schedule(&policy, 42);
    // Each in [100 ms, min(1 s, 3 × the previous delay)], the first previous being 100 ms.
    let expected = [
        248_312_976,
        203_132_437,
        241_918_666,
        315_379_405,
        132_178_778,
    ];
    assert_eq!(delays, nanos(&expected));
}

#[test]
fn same_seed_same_schedule_other_seed_other_schedule() {
    let policy = policy(Jitter::Full).build().unwrap();
    assert_eq!(schedule(&policy, 9), schedule(&policy, 9));
    assert_ne!(schedule(&policy, 9).0, schedule(&policy, 10).0);
}

#[test]
fn constant_backoff_with_multiplier_one() {
    let policy = policy(Jitter::None).multiplier(1.0).build().unwrap();
    assert_eq!(schedule(&policy, 0).0, [ms(100); 5]);
}

#[test]
fn successes_and_permanent_failures_finish() {
    let start = epoch();
    let policy = RetryPolicy::default();
    let mut retry = Retry::new(&policy, start, 0);
    let get = RequestFacts::new(&Method::GET);
    let headers = HeaderMap::new();
    for status in [200, 204, 301, 304, 400, 401, 404, 409, 501, 505] {
        let action = retry.on_outcome(
            start,
            wall(Duration::ZERO),
            &get,
            response(status, &headers),
            None,
        );
        assert_eq!(action, RetryAction::Finish, "{status}");
    }
    for err in [
        Error::new(ErrorKind::Timeout(TimeoutPhase::Deadline)),
        Error::new(ErrorKind::Tls).with_stage(Stage::Tls),
        Error::new(ErrorKind::Decode),
        Error::new(ErrorKind::Status(StatusCode::NOT_FOUND)),
    ] {
        let action = retry.on_outcome(start, wall(Duration::ZERO), &get, failed(&err), None);
        assert_eq!(action, RetryAction::Finish, "{err:?}");
    }
    assert_eq!(retry.attempt(), 1);
}

#[test]
fn retryable_errors_are_retried() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let get = RequestFacts::new(&Method::GET);
    for err in [
        Error::new(ErrorKind::Connect).with_stage(Stage::Connect),
        Error::new(ErrorKind::Timeout(TimeoutPhase::Connect)),
        Error::new(ErrorKind::Timeout(TimeoutPhase::Attempt)),
        Error::new(ErrorKind::Timeout(TimeoutPhase::ReadIdle)),
        Error::new(ErrorKind::Body).with_stage(Stage::Body),
        Error::new(ErrorKind::Protocol).with_unsent(),
    ] {
        let mut retry = Retry::new(&policy, start, 0);
        let action = retry.on_outcome(start, wall(Duration::ZERO), &get, failed(&err), None);
        assert_eq!(
            action,
            RetryAction::RetryAt {
                at: start + ms(100),
                delay: ms(100),
                attempt: 2,
                reason: RetryReason::Error(err.kind()),
                pacing: Pacing::Backoff,
            },
            "{err:?}"
        );
    }
}

#[test]
fn post_is_not_retried_once_it_may_have_been_sent() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let post = RequestFacts::new(&Method::POST);
    let headers = HeaderMap::new();
    let mut retry = Retry::new(&policy, start, 0);
    for outcome in [
        response(503, &headers),
        failed(&Error::new(ErrorKind::Timeout(TimeoutPhase::Attempt))),
        failed(&Error::new(ErrorKind::Body).with_stage(Stage::SendRequest)),
    ] {
        let action = retry.on_outcome(start, wall(Duration::ZERO), &post, outcome, None);
        assert_eq!(action, RetryAction::GiveUp(GiveUpReason::NotIdempotent));
    }
}

#[test]
fn unsent_failures_are_retried_for_any_method() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let refused = Error::new(ErrorKind::Connect).with_stage(Stage::Connect);
    let stale = Error::new(ErrorKind::Body)
        .with_stage(Stage::SendRequest)
        .with_unsent();
    let post = RequestFacts::new(&Method::POST);
    let opted_out = RequestFacts::new(&Method::GET).with_idempotent(false);
    for request in [post, opted_out] {
        for err in [&refused, &stale] {
            let mut retry = Retry::new(&policy, start, 0);
            let action = retry.on_outcome(start, wall(Duration::ZERO), &request, failed(err), None);
            assert!(
                matches!(action, RetryAction::RetryAt { attempt: 2, .. }),
                "{action:?}"
            );
        }
    }
    // Opting out still stops a retry once the request may have reached the server.
    let mut retry = Retry::new(&policy, start, 0);
    let headers = HeaderMap::new();
    let action = retry.on_outcome(
        start,
        wall(Duration::ZERO),
        &opted_out,
        response(503, &headers),
        None,
    );
    assert_eq!(action, RetryAction::GiveUp(GiveUpReason::NotIdempotent));
}

#[test]
fn opting_in_makes_post_retryable() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let empty = HeaderMap::new();
    let mut keyed = HeaderMap::new();
    keyed.insert("idempotency-key", "7b1c".parse().unwrap());
    let by_key = RequestFacts::new(&Method::POST).with_headers(&keyed);
    let declared = RequestFacts::new(&Method::PATCH).with_idempotent(true);
    for request in [by_key, declared] {
        let mut retry = Retry::new(&policy, start, 0);
        let action = retry.on_outcome(
            start,
            wall(Duration::ZERO),
            &request,
            response(503, &empty),
            None,
        );
        assert!(
            matches!(action, RetryAction::RetryAt { attempt: 2, .. }),
            "{action:?}"
        );
    }
}

#[test]
fn a_body_that_cannot_be_replayed_stops_even_unsent_failures() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let streaming = RequestFacts::new(&Method::PUT).with_replayable_body(false);
    let refused = Error::new(ErrorKind::Connect).with_stage(Stage::Connect);
    let headers = HeaderMap::new();
    let mut retry = Retry::new(&policy, start, 0);
    for outcome in [failed(&refused), response(502, &headers)] {
        let action = retry.on_outcome(start, wall(Duration::ZERO), &streaming, outcome, None);
        assert_eq!(action, RetryAction::GiveUp(GiveUpReason::BodyNotReplayable));
    }
}

#[test]
fn retry_after_seconds_replaces_the_backoff_exactly() {
    let start = epoch();
    // Full jitter: the Retry-After must come out unjittered all the same.
    let policy = policy(Jitter::Full).build().unwrap();
    let get = RequestFacts::new(&Method::GET);
    let headers = retry_after("3");
    let mut retry = Retry::new(&policy, start, 5);
    let now = start + ms(40);
    let action = retry.on_outcome(
        now,
        wall(Duration::ZERO),
        &get,
        response(429, &headers),
        None,
    );
    assert_eq!(
        action,
        RetryAction::RetryAt {
            at: now + Duration::from_secs(3),
            delay: Duration::from_secs(3),
            attempt: 2,
            reason: RetryReason::Status(StatusCode::TOO_MANY_REQUESTS),
            pacing: Pacing::RetryAfter,
        }
    );
}

#[test]
fn retry_after_date_is_measured_against_the_wall_clock_given() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let get = RequestFacts::new(&Method::GET);
    // 2000-01-01T00:00:30Z, in the three formats.
    for value in [
        "Sat, 01 Jan 2000 00:00:30 GMT",
        "Saturday, 01-Jan-00 00:00:30 GMT",
        "Sat Jan  1 00:00:30 2000",
    ] {
        let headers = retry_after(value);
        let mut retry = Retry::new(&policy, start, 0);
        let action = retry.on_outcome(
            start,
            wall(Duration::from_secs(10)),
            &get,
            response(503, &headers),
            None,
        );
        assert!(
            matches!(action, RetryAction::RetryAt { delay, pacing: Pacing::RetryAfter, .. } if delay == Duration::from_secs(20)),
            "{value}: {action:?}"
        );
    }
    // A date already passed means now.
    let headers = retry_after("Sat, 01 Jan 2000 00:00:30 GMT");
    let mut retry = Retry::new(&policy, start, 0);
    let action = retry.on_outcome(
        start,
        wall(Duration::from_secs(31)),
        &get,
        response(503, &headers),
        None,
    );
    assert_eq!(
        action,
        RetryAction::RetryAt {
            at: start,
            delay: Duration::ZERO,
            attempt: 2,
            reason: RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE),
            pacing: Pacing::RetryAfter,
        }
    );
}

#[test]
fn malformed_or_ignored_retry_after_falls_back_to_backoff() {
    let start = epoch();
    let get = RequestFacts::new(&Method::GET);
    let respected = policy(Jitter::None).build().unwrap();
    for value in ["-1", "1.5", "abc", "soon"] {
        let headers = retry_after(value);
        let mut retry = Retry::new(&respected, start, 0);
        let action = retry.on_outcome(
            start,
            wall(Duration::ZERO),
            &get,
            response(503, &headers),
            None,
        );
        assert!(
            matches!(action, RetryAction::RetryAt { delay, pacing: Pacing::Backoff, .. } if delay == ms(100)),
            "{value}: {action:?}"
        );
    }
    let ignoring = policy(Jitter::None)
        .respect_retry_after(false)
        .build()
        .unwrap();
    let headers = retry_after("5000");
    let mut retry = Retry::new(&ignoring, start, 0);
    let action = retry.on_outcome(
        start,
        wall(Duration::ZERO),
        &get,
        response(503, &headers),
        None,
    );
    assert!(matches!(
        action,
        RetryAction::RetryAt {
            pacing: Pacing::Backoff,
            ..
        }
    ));
}

#[test]
fn retry_after_beyond_the_cap_stops_at_once() {
    let start = epoch();
    let policy = policy(Jitter::None)
        .max_retry_after(Duration::from_secs(30))
        .build()
        .unwrap();
    let get = RequestFacts::new(&Method::GET);
    let headers = retry_after("31");
    let mut retry = Retry::new(&policy, start, 0);
    let action = retry.on_outcome(
        start,
        wall(Duration::ZERO),
        &get,
        response(503, &headers),
        None,
    );
    assert_eq!(
        action,
        RetryAction::GiveUp(GiveUpReason::RetryAfterTooLong {
            retry_after: Duration::from_secs(31),
            max: Duration::from_secs(30),
        })
    );
    // Exactly the cap is honoured.
    let headers = retry_after("30");
    let action = retry.on_outcome(
        start,
        wall(Duration::ZERO),
        &get,
        response(503, &headers),
        None,
    );
    assert!(
        matches!(action, RetryAction::RetryAt { delay, .. } if delay == Duration::from_secs(30))
    );
    // A saturated value is just too long.
    let headers = retry_after("999999999999999999999999");
    let action = retry.on_outcome(
        start,
        wall(Duration::ZERO),
        &get,
        response(503, &headers),
        None,
    );
    assert!(matches!(
        action,
        RetryAction::GiveUp(GiveUpReason::RetryAfterTooLong { .. })
    ));
}

#[test]
fn retry_after_past_the_deadline_stops_at_once() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let get = RequestFacts::new(&Method::GET);
    let headers = retry_after("10");
    let mut retry = Retry::new(&policy, start, 0).with_deadline(start + Duration::from_secs(10));
    let now = start + ms(1);
    let action = retry.on_outcome(
        now,
        wall(Duration::ZERO),
        &get,
        response(429, &headers),
        None,
    );
    assert_eq!(
        action,
        RetryAction::GiveUp(GiveUpReason::RetryAfterPastDeadline {
            retry_after: Duration::from_secs(10)
        })
    );
}

#[test]
fn status_errors_carry_their_retry_after() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let get = RequestFacts::new(&Method::GET);
    let err = Error::status(
        StatusCode::SERVICE_UNAVAILABLE,
        retry_after("4"),
        Bytes::new(),
    );
    let mut retry = Retry::new(&policy, start, 0);
    let action = retry.on_outcome(start, wall(Duration::ZERO), &get, failed(&err), None);
    assert_eq!(
        action,
        RetryAction::RetryAt {
            at: start + Duration::from_secs(4),
            delay: Duration::from_secs(4),
            attempt: 2,
            reason: RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE),
            pacing: Pacing::RetryAfter,
        }
    );
}

#[test]
fn backoff_ending_at_or_after_the_deadline_is_not_started() {
    let start = epoch();
    let policy = policy(Jitter::None).max_elapsed(ms(700)).build().unwrap();
    let (delays, stop) = schedule(&policy, 0);
    // 100 + 200 = 300 ms; the next backoff of 400 ms would end exactly at the deadline.
    assert_eq!(delays, [ms(100), ms(200)]);
    assert_eq!(
        stop,
        RetryAction::GiveUp(GiveUpReason::DeadlineExceeded { delay: ms(400) })
    );
    // The call's own deadline applies too, whichever comes first.
    let mut retry = Retry::new(&policy, start, 0).with_deadline(start + ms(50));
    assert_eq!(retry.deadline(), Some(start + ms(50)));
    let headers = HeaderMap::new();
    let get = RequestFacts::new(&Method::GET);
    let action = retry.on_outcome(
        start,
        wall(Duration::ZERO),
        &get,
        response(500, &headers),
        None,
    );
    assert_eq!(
        action,
        RetryAction::GiveUp(GiveUpReason::DeadlineExceeded { delay: ms(100) })
    );
    let later = Retry::new(&policy, start, 0).with_deadline(start + Duration::from_secs(60));
    assert_eq!(later.deadline(), Some(start + ms(700)));
}

#[test]
fn unlimited_attempts_stop_at_the_deadline() {
    let policy = policy(Jitter::None)
        .unlimited_attempts()
        .max_elapsed(Duration::from_secs(10))
        .build()
        .unwrap();
    let (delays, stop) = schedule(&policy, 0);
    // 100 + 200 + 400 + 800 = 1.5 s, then 1 s each until 9.5 s; 10.5 s is past the deadline.
    assert_eq!(delays.len(), 12);
    assert_eq!(delays.iter().sum::<Duration>(), ms(9_500));
    assert_eq!(
        stop,
        RetryAction::GiveUp(GiveUpReason::DeadlineExceeded { delay: ms(1_000) })
    );
}

#[test]
fn disabled_policy_never_retries() {
    let (delays, stop) = schedule(&RetryPolicy::disabled(), 0);
    assert!(delays.is_empty());
    assert_eq!(
        stop,
        RetryAction::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 1 })
    );
}

#[test]
fn the_budget_is_withdrawn_from_only_for_retries_that_happen() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let mut budget = RetryBudget::new(Duration::from_secs(10), 0, 1.0).unwrap();
    let get = RequestFacts::new(&Method::GET);
    let headers = HeaderMap::new();

    budget.deposit(start);
    let mut retry = Retry::new(&policy, start, 0).with_deadline(start + ms(150));
    // The deadline stops the second retry before the budget is asked.
    let first = retry.on_outcome(
        start,
        wall(Duration::ZERO),
        &get,
        response(503, &headers),
        Some(&mut budget),
    );
    assert!(matches!(first, RetryAction::RetryAt { attempt: 2, .. }));
    assert_eq!(budget.available(start), 0);
    budget.deposit(start);
    let second = retry.on_outcome(
        start + ms(100),
        wall(Duration::ZERO),
        &get,
        response(503, &headers),
        Some(&mut budget),
    );
    assert!(matches!(
        second,
        RetryAction::GiveUp(GiveUpReason::DeadlineExceeded { .. })
    ));
    assert_eq!(budget.available(start), 1);

    // Another call takes that retry; the one after finds the budget empty.
    let mut other = Retry::new(&policy, start, 0);
    let action = other.on_outcome(
        start,
        wall(Duration::ZERO),
        &get,
        response(503, &headers),
        Some(&mut budget),
    );
    assert!(matches!(action, RetryAction::RetryAt { .. }));
    let action = other.on_outcome(
        start + ms(100),
        wall(Duration::ZERO),
        &get,
        response(503, &headers),
        Some(&mut budget),
    );
    assert_eq!(action, RetryAction::GiveUp(GiveUpReason::BudgetExhausted));
    // A refused budget moves nothing: the same attempt may be judged again.
    assert_eq!(other.attempt(), 2);
}

#[test]
fn a_body_failure_after_a_good_head_is_judged_for_the_same_attempt() {
    let start = epoch();
    let policy = policy(Jitter::None).build().unwrap();
    let get = RequestFacts::new(&Method::GET);
    let headers = HeaderMap::new();
    let mut retry = Retry::new(&policy, start, 0);
    assert_eq!(
        retry.on_outcome(
            start,
            wall(Duration::ZERO),
            &get,
            response(200, &headers),
            None
        ),
        RetryAction::Finish
    );
    let reset = Error::new(ErrorKind::Body).with_stage(Stage::Body);
    let now = start + ms(30);
    assert_eq!(
        retry.on_outcome(now, wall(Duration::ZERO), &get, failed(&reset), None),
        RetryAction::RetryAt {
            at: now + ms(100),
            delay: ms(100),
            attempt: 2,
            reason: RetryReason::Error(ErrorKind::Body),
            pacing: Pacing::Backoff,
        }
    );
}

#[test]
fn give_up_reasons_read_well() {
    let cases = [
        (
            GiveUpReason::AttemptsExhausted { attempts: 3 },
            "gave up after 3 attempts",
        ),
        (
            GiveUpReason::AttemptsExhausted { attempts: 1 },
            "retries are disabled",
        ),
        (
            GiveUpReason::DeadlineExceeded { delay: ms(400) },
            "a retry in 400ms would start after the deadline",
        ),
        (
            GiveUpReason::RetryAfterTooLong {
                retry_after: Duration::from_secs(120),
                max: Duration::from_secs(60),
            },
            "the server asked to wait 120s, longer than the 60s allowed",
        ),
        (
            GiveUpReason::RetryAfterPastDeadline {
                retry_after: Duration::from_secs(5),
            },
            "the server asked to wait 5s, past the deadline",
        ),
        (
            GiveUpReason::BudgetExhausted,
            "the client's retry budget is exhausted",
        ),
        (GiveUpReason::NotIdempotent, "the request is not idempotent"),
        (
            GiveUpReason::BodyNotReplayable,
            "the request body can't be sent again",
        ),
    ];
    for (reason, text) in cases {
        assert_eq!(reason.to_string(), text);
    }
    assert_eq!(
        RetryReason::Status(StatusCode::BAD_GATEWAY).to_string(),
        "server returned 502 Bad Gateway"
    );
    assert_eq!(
        RetryReason::Error(ErrorKind::Connect).to_string(),
        "connection failed"
    );
}

#[test]
fn outcome_accessors() {
    let response = http::Response::builder()
        .status(503)
        .header(RETRY_AFTER, "1")
        .body(())
        .unwrap();
    let outcome = Outcome::from(&response);
    assert_eq!(outcome.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert!(outcome.headers().unwrap().contains_key(RETRY_AFTER));
    assert!(outcome.failure().is_none());
    assert!(!outcome.is_unsent());
    let err = Error::new(ErrorKind::Connect).with_stage(Stage::Dns);
    let outcome = Outcome::from(&err);
    assert_eq!(outcome.status(), None);
    assert!(outcome.headers().is_none());
    assert!(outcome.is_unsent());
    assert_eq!(outcome.error_kind(), Some(ErrorKind::Connect));
    assert_eq!(outcome.failure().unwrap().stage, Some(Stage::Dns));
}

// ---------------------------------------------------------------------------------------------
// Property tests

/// One attempt's outcome, as generated data.
#[derive(Clone, Debug)]
enum Step {
    Status(u16, Option<RetryAfterValue>),
    Failure(ErrorKind, bool),
}

#[derive(Clone, Debug)]
enum RetryAfterValue {
    Seconds(u64),
    /// Seconds from the test's wall clock, negative for the past.
    Date(i64),
    Garbage,
}

fn step() -> impl Strategy<Value = Step> {
    let retry_after = prop_oneof![
        (0u64..200).prop_map(RetryAfterValue::Seconds),
        (-100i64..200).prop_map(RetryAfterValue::Date),
        Just(RetryAfterValue::Garbage),
    ];
    let status = prop_oneof![
        Just(200u16),
        Just(201),
        Just(404),
        Just(408),
        Just(418),
        Just(429),
        Just(500),
        Just(502),
        Just(503),
        Just(504),
    ];
    let kind = prop_oneof![
        Just(ErrorKind::Connect),
        Just(ErrorKind::Timeout(TimeoutPhase::Connect)),
        Just(ErrorKind::Timeout(TimeoutPhase::Attempt)),
        Just(ErrorKind::Timeout(TimeoutPhase::Deadline)),
        Just(ErrorKind::Timeout(TimeoutPhase::ReadIdle)),
        Just(ErrorKind::Body),
        Just(ErrorKind::Protocol),
        Just(ErrorKind::Tls),
        Just(ErrorKind::Decode),
    ];
    prop_oneof![
        (status, proptest::option::of(retry_after)).prop_map(|(s, r)| Step::Status(s, r)),
        (kind, any::<bool>()).prop_map(|(k, unsent)| Step::Failure(k, unsent)),
    ]
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::POST),
        Just(Method::PATCH),
    ]
}

#[derive(Clone, Debug)]
struct Scenario {
    jitter: Jitter,
    base_ms: u64,
    extra_ms: u64,
    multiplier: f64,
    max_attempts: Option<u32>,
    max_elapsed_ms: Option<u64>,
    max_retry_after_s: u64,
    method: Method,
    keyed: bool,
    declared: Option<bool>,
    replayable: bool,
    seed: u64,
    steps: Vec<(Step, u64)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        (
            jitter(),
            0u64..2_000,
            0u64..30_000,
            1.0f64..5.0,
            proptest::option::of(1u32..8),
            proptest::option::of(1u64..120_000),
            0u64..120,
        ),
        (
            method(),
            any::<bool>(),
            proptest::option::of(any::<bool>()),
            proptest::bool::weighted(0.9),
            any::<u64>(),
            proptest::collection::vec((step(), 0u64..5_000), 1..12),
        ),
    )
        .prop_map(
            |(
                (jitter, base_ms, extra_ms, multiplier, max_attempts, max_elapsed_ms, ra),
                (method, keyed, declared, replayable, seed, steps),
            )| Scenario {
                jitter,
                base_ms,
                extra_ms,
                multiplier,
                // Keep every policy valid: unlimited attempts need a time limit.
                max_attempts: max_attempts.or(if max_elapsed_ms.is_none() {
                    Some(3)
                } else {
                    None
                }),
                max_elapsed_ms,
                max_retry_after_s: ra,
                method,
                keyed,
                declared,
                replayable,
                seed,
                steps,
            },
        )
}

/// Whether the default rules retry `step`, written out independently of the policy code.
fn retried_by_default(step: &Step) -> bool {
    match step {
        Step::Status(code, _) => matches!(code, 408 | 429 | 500 | 502 | 503 | 504),
        Step::Failure(kind, unsent) => match kind {
            ErrorKind::Connect | ErrorKind::Body => true,
            ErrorKind::Timeout(phase) => *phase != TimeoutPhase::Deadline,
            ErrorKind::Protocol => *unsent,
            _ => false,
        },
    }
}

/// Whether the default rules treat the scenario's request as idempotent, written out
/// independently of the policy code.
fn idempotent_by_default(s: &Scenario) -> bool {
    s.declared
        .unwrap_or(s.keyed || [Method::GET, Method::PUT, Method::DELETE].contains(&s.method))
}

fn build_policy(s: &Scenario) -> RetryPolicy {
    let mut builder = RetryPolicy::builder()
        .base_delay(ms(s.base_ms))
        .max_delay(ms(s.base_ms + s.extra_ms))
        .multiplier(s.multiplier)
        .jitter(s.jitter)
        .max_retry_after(Duration::from_secs(s.max_retry_after_s));
    builder = match s.max_attempts {
        Some(n) => builder.max_attempts(n),
        None => builder.unlimited_attempts(),
    };
    if let Some(e) = s.max_elapsed_ms {
        builder = builder.max_elapsed(ms(e));
    }
    builder.build().unwrap()
}

fn headers_for(value: &Option<RetryAfterValue>) -> HeaderMap {
    match value {
        None => HeaderMap::new(),
        Some(RetryAfterValue::Seconds(s)) => retry_after(&s.to_string()),
        Some(RetryAfterValue::Date(offset)) => {
            let date =
                SystemTime::UNIX_EPOCH + Duration::from_secs(WALL.saturating_add_signed(*offset));
            retry_after(&httpdate::fmt_http_date(date))
        }
        Some(RetryAfterValue::Garbage) => retry_after("later, please"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        rng_seed: RngSeed::Fixed(0x4e7_2e7),
        ..ProptestConfig::default()
    })]

    /// Runs a whole call against generated outcomes and checks every decision.
    #[test]
    fn every_decision_respects_the_policy(s in scenario()) {
        let policy = build_policy(&s);
        let start = epoch();
        let call_deadline = start + Duration::from_secs(90);
        let mut retry = Retry::new(&policy, start, s.seed).with_deadline(call_deadline);
        let deadline = retry.deadline().unwrap();
        prop_assert!(deadline <= call_deadline);
        let mut keyed = HeaderMap::new();
        if s.keyed {
            keyed.insert("idempotency-key", "k".parse().unwrap());
        }
        let mut request = RequestFacts::new(&s.method)
            .with_headers(&keyed)
            .with_replayable_body(s.replayable);
        if let Some(d) = s.declared {
            request = request.with_idempotent(d);
        }
        let idempotent = policy.is_idempotent(&request);
        prop_assert_eq!(idempotent, idempotent_by_default(&s));
        let max_delay = ms(s.base_ms + s.extra_ms);
        let base = ms(s.base_ms);
        let mut now = start;
        let mut retries = 0u32;

        for (step, took_ms) in &s.steps {
            // The attempt takes a while before its outcome is known.
            now += ms(*took_ms);
            let now_system = wall(now - start);
            let (headers, err);
            let outcome = match step {
                Step::Status(code, value) => {
                    headers = headers_for(value);
                    response(*code, &headers)
                }
                Step::Failure(kind, unsent) => {
                    let e = Error::new(*kind);
                    err = if *unsent { e.with_unsent() } else { e };
                    failed(&err)
                }
            };
            prop_assert_eq!(policy.retry_reason(&outcome).is_some(), retried_by_default(step));
            let attempt_before = retry.attempt();
            let action = retry.on_outcome(now, now_system, &request, outcome, None);
            match action {
                RetryAction::RetryAt { at, delay, attempt, reason, pacing } => {
                    retries += 1;
                    prop_assert_eq!(Some(reason), policy.retry_reason(&outcome));
                    prop_assert!(idempotent || outcome.is_unsent(), "retried a non-idempotent request");
                    prop_assert!(s.replayable, "retried a body that can't be replayed");
                    prop_assert_eq!(attempt, attempt_before + 1);
                    prop_assert_eq!(retry.attempt(), attempt);
                    if let Some(max) = s.max_attempts {
                        prop_assert!(attempt <= max, "attempt {} of {}", attempt, max);
                    }
                    prop_assert_eq!(at, now + delay);
                    prop_assert!(at < deadline, "a retry starts at or after the deadline");
                    prop_assert!(delay < deadline - now);
                    match pacing {
                        Pacing::Backoff => {
                            prop_assert!(delay <= max_delay, "{:?} > cap {:?}", delay, max_delay);
                            match s.jitter {
                                Jitter::Decorrelated => prop_assert!(delay >= base),
                                Jitter::None => prop_assert!(delay >= base),
                                _ => {}
                            }
                        }
                        Pacing::RetryAfter => {
                            prop_assert!(delay <= Duration::from_secs(s.max_retry_after_s));
                        }
                    }
                    now = at;
                }
                RetryAction::Finish => {
                    prop_assert!(policy.retry_reason(&outcome).is_none());
                    prop_assert_eq!(retry.attempt(), attempt_before);
                }
                RetryAction::GiveUp(reason) => {
                    prop_assert!(policy.retry_reason(&outcome).is_some());
                    prop_assert_eq!(retry.attempt(), attempt_before);
                    match reason {
                        GiveUpReason::NotIdempotent => prop_assert!(!idempotent && !outcome.is_unsent()),
                        GiveUpReason::BodyNotReplayable => prop_assert!(!s.replayable),
                        GiveUpReason::AttemptsExhausted { attempts } => {
                            prop_assert_eq!(Some(attempts), s.max_attempts);
                        }
                        _ => {}
                    }
                    // A call ends on GiveUp; so does the scenario.
                    break;
                }
            }
        }
        prop_assert!(retries < s.max_attempts.unwrap_or(u32::MAX));
    }

    /// Same inputs, same decisions.
    #[test]
    fn decisions_are_deterministic(s in scenario()) {
        let run = || {
            let policy = build_policy(&s);
            let start = epoch();
            let mut retry = Retry::new(&policy, start, s.seed);
            let request = RequestFacts::new(&s.method);
            let mut out = Vec::new();
            let mut now = start;
            for (step, took_ms) in &s.steps {
                now += ms(*took_ms);
                let headers;
                let err;
                let outcome = match step {
                    Step::Status(code, value) => {
                        headers = headers_for(value);
                        response(*code, &headers)
                    }
                    Step::Failure(kind, _) => {
                        err = Error::new(*kind);
                        failed(&err)
                    }
                };
                match retry.on_outcome(now, wall(now - start), &request, outcome, None) {
                    RetryAction::RetryAt { delay, attempt, pacing, .. } => out.push((delay, attempt, pacing)),
                    _ => break,
                }
            }
            out
        };
        prop_assert_eq!(run(), run());
    }
}
