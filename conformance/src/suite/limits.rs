//! Circuit breaking: the core's breaker driven over each backend, against a real server whose
//! request counts prove what reached it.

use std::time::Duration;

use http::StatusCode;
use keel_core::{Backend, BreakerPolicy, BreakerState, ErrorKind, RetryPolicy};

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
