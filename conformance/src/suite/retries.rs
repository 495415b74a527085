//! Retry cases: the core's retry machine driven over each backend, against a real server.

use std::time::{Duration, Instant};

use http::StatusCode;
use keel_core::{Backend, ClientBuilder, ErrorKind, Jitter, RetryPolicy};

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;
use crate::server::Reply;

/// A policy that retries fast and predictably: 20 ms, 40 ms, 80 ms, … without jitter.
fn fast(attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .base_delay(Duration::from_millis(20))
        .jitter(Jitter::None)
        .build()
        .expect("a valid policy")
}

fn retrying<T: Backend>(cx: &Cx<T>, attempts: u32) -> ClientBuilder<T> {
    cx.builder().retry_policy(fast(attempts))
}

/// "503 twice, then 200" succeeds on the third attempt; the server saw exactly three.
pub async fn retry_503_twice_then_200<T: Backend>(cx: Cx<T>) -> CaseResult {
    let path = cx.server.script(
        "flaky",
        vec![
            Reply::status(503),
            Reply::status(503),
            Reply::status(200).body("recovered"),
        ],
    );
    let client = retrying(&cx, 3).build()?;
    let body = client
        .get(&path)
        .send()
        .await?
        .error_for_status()
        .await?
        .text()
        .await?;
    ensure!(body == "recovered", "body {body:?}");
    ensure!(
        cx.server.requests_to(&path) == 3,
        "the server saw {} attempts",
        cx.server.requests_to(&path)
    );
    Ok(Outcome::Pass)
}

/// A 429 with `Retry-After: 1` waits about a second, not the short backoff.
pub async fn retry_after_429<T: Backend>(cx: Cx<T>) -> CaseResult {
    let path = cx.server.script(
        "limited",
        vec![
            Reply::status(429).header("Retry-After", "1"),
            Reply::status(200).body("ok"),
        ],
    );
    let client = retrying(&cx, 3).build()?;
    let started = Instant::now();
    let resp = client.get(&path).send().await?;
    let took = started.elapsed();
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    ensure!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "Retry-After: 1 waited {took:?}"
    );
    ensure!(
        cx.server.requests_to(&path) == 2,
        "{} attempts",
        cx.server.requests_to(&path)
    );
    Ok(Outcome::Pass)
}

/// POST is not retried by default; it is with an idempotency key.
pub async fn post_retried_only_with_idempotency_key<T: Backend>(cx: Cx<T>) -> CaseResult {
    let plain = cx
        .server
        .script("post-plain", vec![Reply::status(503), Reply::status(201)]);
    let client = retrying(&cx, 3).build()?;
    let resp = client.post(&plain).body("order").send().await?;
    ensure!(
        resp.status() == StatusCode::SERVICE_UNAVAILABLE,
        "a plain POST got {} (it was retried)",
        resp.status()
    );
    ensure!(
        cx.server.requests_to(&plain) == 1,
        "{} attempts",
        cx.server.requests_to(&plain)
    );

    let keyed = cx
        .server
        .script("post-keyed", vec![Reply::status(503), Reply::status(201)]);
    let resp = client
        .post(&keyed)
        .header("Idempotency-Key", "order-42")
        .body("order")
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::CREATED,
        "a keyed POST got {}",
        resp.status()
    );
    ensure!(
        cx.server.requests_to(&keyed) == 2,
        "{} attempts",
        cx.server.requests_to(&keyed)
    );
    Ok(Outcome::Pass)
}

/// The overall deadline cuts a long retry chain short.
pub async fn deadline_stops_retries<T: Backend>(cx: Cx<T>) -> CaseResult {
    let path = cx.server.script("down", vec![Reply::status(503)]);
    let policy = RetryPolicy::builder()
        .max_attempts(50)
        .base_delay(Duration::from_millis(100))
        .multiplier(1.0)
        .jitter(Jitter::None)
        .build()?;
    let client = cx
        .builder()
        .retry_policy(policy)
        .deadline(Duration::from_millis(1000))
        .build()?;
    let started = Instant::now();
    let resp = client.get(&path).send().await?;
    let took = started.elapsed();
    ensure!(
        resp.status() == StatusCode::SERVICE_UNAVAILABLE,
        "status {}",
        resp.status()
    );
    let attempts = cx.server.requests_to(&path);
    ensure!(
        (5..=11).contains(&attempts),
        "{attempts} attempts in a 1 s deadline with 100 ms backoff"
    );
    ensure!(
        took < Duration::from_millis(1500),
        "the deadline let the chain run {took:?}"
    );
    Ok(Outcome::Pass)
}

/// A GET whose connection resets mid-body is sent again, and the buffered read returns the
/// whole second body.
pub async fn reset_mid_body_is_retried<T: Backend>(cx: Cx<T>) -> CaseResult {
    let body = "x".repeat(200_000);
    let path = cx.server.script(
        "reset-once",
        vec![
            Reply::status(200).body(body.clone()).reset_after(50_000),
            Reply::status(200).body(body.clone()),
        ],
    );
    let client = retrying(&cx, 3).build()?;
    let got = client.get(&path).send().await?.bytes().await?;
    ensure!(
        got.len() == body.len(),
        "got {} of {} bytes",
        got.len(),
        body.len()
    );
    ensure!(
        cx.server.requests_to(&path) == 2,
        "{} attempts",
        cx.server.requests_to(&path)
    );
    Ok(Outcome::Pass)
}

/// The final error says how many attempts were made and keeps the last cause.
pub async fn final_error_counts_attempts<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = retrying(&cx, 3).build()?;
    let err = match client.get(&cx.server.refused_url("/")).send().await {
        Ok(resp) => {
            return Err(Failure(format!(
                "a refused port answered {}",
                resp.status()
            )))
        }
        Err(e) => e,
    };
    ensure!(err.kind() == ErrorKind::Connect, "kind {:?}", err.kind());
    ensure!(err.attempts() == 3, "{} attempts", err.attempts());
    ensure!(
        std::error::Error::source(&err).is_some(),
        "the cause was lost"
    );
    Ok(Outcome::Pass)
}
