//! Circuit breaking and rate limits: the core's breaker and limiter driven over each backend,
//! against a real server whose request counts prove what reached it.

use std::time::{Duration, Instant};

use http::StatusCode;
use keel_core::{Backend, BreakerPolicy, BreakerState, ErrorKind, RateLimit, RetryPolicy};

use super::{CaseResult, Cx, Outcome};
use crate::ensure;

/// Five failures open the breaker; the sixth call never reaches the server; after the
/// cool-down one probe goes through and its success closes the breaker.
pub async fn breaker_opens_and_a_probe_closes_it<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cool_down = Duration::from_millis(300);
    let client = cx
        .builder()
        .retry_policy(RetryPolicy::disabled())
        .circuit_breaker(
            BreakerPolicy::builder()
                .consecutive_failures(5)
                .open_for(cool_down, Duration::from_secs(5))
                .build()?,
        )
        .build()?;
    for i in 0..5 {
        let resp = client.get("/status/503").send().await?;
        ensure!(
            resp.status() == StatusCode::SERVICE_UNAVAILABLE,
            "call {i}: {}",
            resp.status()
        );
    }
    let err = match client.get("/status/503").send().await {
        Ok(resp) => return Err(format!("the sixth call got {}", resp.status()).into()),
        Err(err) => err,
    };
    ensure!(
        err.kind() == ErrorKind::CircuitOpen,
        "kind {:?}",
        err.kind()
    );
    ensure!(
        err.retry_in().is_some_and(|d| d <= cool_down),
        "retry_in {:?}",
        err.retry_in()
    );
    // A call to another path of the same origin meets the same breaker.
    let other = client.get("/status/200").send().await;
    ensure!(
        other.as_ref().err().map(|e| e.kind()) == Some(ErrorKind::CircuitOpen),
        "a call to another path went through: {other:?}"
    );
    ensure!(
        cx.server.requests_to("/status/503") == 5 && cx.server.requests_to("/status/200") == 0,
        "the server saw {} and {} requests",
        cx.server.requests_to("/status/503"),
        cx.server.requests_to("/status/200")
    );

    let timer = client.transport().timer().clone();
    timer.sleep_until(timer.now() + cool_down).await;
    let probe = client.get("/status/200").send().await?;
    ensure!(
        probe.status() == StatusCode::OK,
        "the probe got {}",
        probe.status()
    );
    ensure!(
        client.breaker_state("/") == Some(BreakerState::Closed),
        "after a good probe: {:?}",
        client.breaker_state("/")
    );
    let after = client.get("/status/200").send().await?;
    ensure!(
        after.status() == StatusCode::OK,
        "after closing: {}",
        after.status()
    );
    ensure!(
        cx.server.requests_to("/status/200") == 2,
        "{} requests",
        cx.server.requests_to("/status/200")
    );
    Ok(Outcome::Pass)
}

/// 21 requests at 20 per second (burst 1) take a second, however fast the server is.
pub async fn rate_limit_paces_requests<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx
        .builder()
        .rate_limit(RateLimit::per_second(20)?)
        .build()?;
    let started = Instant::now();
    let calls = (0..21).map(|_| client.get("/status/200").send());
    for result in futures_util::future::join_all(calls).await {
        let resp = result?;
        ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    }
    let took = started.elapsed();
    ensure!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(4),
        "21 requests at 20/s took {took:?}"
    );
    ensure!(
        cx.server.requests_to("/status/200") == 21,
        "{} requests",
        cx.server.requests_to("/status/200")
    );
    Ok(Outcome::Pass)
}

/// A server answering `RateLimit: "default";r=0;t=1` makes the client hold its next request
/// about a second, without a 429.
pub async fn server_quota_holds_requests<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().server_quotas(true).build()?;
    // `RateLimit: "default";r=0;t=1`, through the test server's `header=` parameter.
    let spent = "/status/200?header=RateLimit:%22default%22%3Br%3D0%3Bt%3D1";
    let first = client.get(spent).send().await?;
    ensure!(
        first.status() == StatusCode::OK,
        "status {}",
        first.status()
    );
    ensure!(
        first.headers().contains_key("ratelimit"),
        "the server sent no RateLimit header: {:?}",
        first.headers()
    );
    drop(first);
    let started = Instant::now();
    let next = client.get("/status/200").send().await?;
    let held = started.elapsed();
    ensure!(next.status() == StatusCode::OK, "status {}", next.status());
    ensure!(
        held >= Duration::from_millis(950) && held < Duration::from_secs(3),
        "the next request was held {held:?}"
    );
    Ok(Outcome::Pass)
}
