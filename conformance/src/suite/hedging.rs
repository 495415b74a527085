//! Hedged requests: a second attempt raced against a slow first one, over each backend, against
//! a server that answers the first request slowly and the second at once.

use std::time::{Duration, Instant};

use http::StatusCode;
use keel_core::{Backend, HedgePolicy, RetryPolicy};

use super::{CaseResult, Cx, Outcome};
use crate::ensure;
use crate::server::Reply;

/// A GET whose first answer takes 3 s is hedged after 100 ms; the hedge's fast answer is the
/// one returned, the slow attempt is dropped, and the client is at once ready for more.
pub async fn hedged_get_returns_the_fast_answer<T: Backend>(cx: Cx<T>) -> CaseResult {
    let path = cx.server.script(
        "hedged",
        vec![
            Reply::status(200)
                .delay(Duration::from_secs(3))
                .body("slow"),
            Reply::status(200).body("fast"),
        ],
    );
    let client = cx
        .builder()
        .retry_policy(RetryPolicy::disabled())
        .hedge(HedgePolicy::after(Duration::from_millis(100)))
        .build()?;
    let started = Instant::now();
    let resp = client.get(&path).send().await?;
    let hedges = resp.record().hedges();
    let body = resp.text().await?;
    let took = started.elapsed();
    ensure!(body == "fast", "the body was {body:?}");
    ensure!(hedges == 1, "{hedges} hedges");
    ensure!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "the call took {took:?}"
    );
    ensure!(
        cx.server.requests_to(&path) == 2,
        "the server saw {} requests",
        cx.server.requests_to(&path)
    );
    // The dropped attempt holds nothing up: the next call goes and comes back at once.
    let started = Instant::now();
    let next = client.get("/status/204").send().await?;
    ensure!(
        next.status() == StatusCode::NO_CONTENT,
        "status {}",
        next.status()
    );
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "the next call took {:?}",
        started.elapsed()
    );

    // A POST is never hedged: it goes once, however slow.
    let slow_post = cx.server.script(
        "slow-post",
        vec![Reply::status(201).delay(Duration::from_millis(400))],
    );
    let resp = client.post(&slow_post).body("order").send().await?;
    ensure!(
        resp.status() == StatusCode::CREATED,
        "status {}",
        resp.status()
    );
    ensure!(
        resp.record().hedges() == 0 && cx.server.requests_to(&slow_post) == 1,
        "the POST was sent {} times",
        cx.server.requests_to(&slow_post)
    );
    Ok(Outcome::Pass)
}
