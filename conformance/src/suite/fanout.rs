//! Fan-out: many calls through `keel_core::fanout` over each backend, against a server whose
//! delays and request counts show the order, the bound and the cancellation.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use http::StatusCode;
use keel_core::{fanout, Backend, Client, Error, ErrorKind, RetryPolicy, Transport};

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;
use crate::server::Reply;

/// How many calls each fan-out makes.
const CALLS: usize = 20;

/// How many of them may run at once.
const LIMIT: usize = 5;

/// Counts the calls running at once, and the most there ever were.
#[derive(Default)]
struct Gauge {
    now: Cell<usize>,
    most: Cell<usize>,
}

impl Gauge {
    /// Runs `call`, counted as running until it finishes.
    async fn count<F: Future>(&self, call: F) -> F::Output {
        self.now.set(self.now.get() + 1);
        self.most.set(self.most.get().max(self.now.get()));
        let output = call.await;
        self.now.set(self.now.get() - 1);
        output
    }
}

/// A whole call: send, check the status, read the body as text.
async fn body_of<T: Transport>(client: &Client<T>, path: &str) -> Result<String, Error> {
    client
        .get(path)
        .send()
        .await?
        .error_for_status()
        .await?
        .text()
        .await
}

/// 20 calls, 5 at a time, each answered with its own number and sooner the later it was sent
/// (call i after (20 - i) × 10 ms). `ordered` yields them in the order sent; `unordered`
/// yields call 4 (160 ms) before call 0 (200 ms), sent with it; neither has more than 5
/// running. `try_all` over calls where the third gets a 500 and the others take 2 s returns
/// that error at once, and the calls after the first five never reach the server.
pub async fn fan_out_keeps_the_asked_order<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().retry_policy(RetryPolicy::disabled()).build()?;
    let client = &client;
    let paths: Vec<String> = (0..CALLS)
        .map(|i| {
            let wait = Duration::from_millis(10 * (CALLS - i) as u64);
            let reply = Reply::status(200).body(i.to_string()).delay(wait);
            cx.server.script(&format!("fan-{i}"), vec![reply])
        })
        .collect();
    let expected: Vec<String> = (0..CALLS).map(|i| i.to_string()).collect();

    // Submission order, though the later calls finish first.
    let gauge = &Gauge::default();
    let calls = paths.iter().map(|path| gauge.count(body_of(client, path)));
    let bodies: Vec<Result<String, Error>> = fanout::ordered(calls, LIMIT).collect().await;
    let bodies = bodies.into_iter().collect::<Result<Vec<_>, _>>()?;
    ensure!(bodies == expected, "ordered yielded {bodies:?}");
    ensure!(
        gauge.most.get() == LIMIT,
        "ordered ran up to {} calls at once, limit {LIMIT}",
        gauge.most.get()
    );
    for path in &paths {
        ensure!(
            cx.server.requests_to(path) == 1,
            "{path} was requested {} times",
            cx.server.requests_to(path)
        );
    }

    // Completion order.
    let gauge = &Gauge::default();
    let calls = paths.iter().map(|path| gauge.count(body_of(client, path)));
    let mut bodies = fanout::unordered(calls, LIMIT);
    let mut order = Vec::new();
    while let Some(body) = bodies.next().await {
        order.push(body?.parse::<usize>()?);
    }
    let position = |call: usize| order.iter().position(|&c| c == call);
    ensure!(
        position(4) < position(0),
        "unordered yielded call 0 (200 ms) before call 4 (160 ms), both sent first: {order:?}"
    );
    order.sort_unstable();
    ensure!(
        order == (0..CALLS).collect::<Vec<_>>(),
        "unordered yielded {order:?}"
    );
    ensure!(
        gauge.most.get() == LIMIT,
        "unordered ran up to {} calls at once, limit {LIMIT}",
        gauge.most.get()
    );

    // The first error ends it at once and cancels the calls in flight.
    let (slow, failing) = ("/delay/2000", "/status/500");
    let calls = (0..CALLS).map(|i| body_of(client, if i == 2 { failing } else { slow }));
    let started = Instant::now();
    let result = fanout::try_all(calls, LIMIT).await;
    let took = started.elapsed();
    let err = match result {
        Ok(bodies) => return Err(Failure(format!("try_all succeeded: {bodies:?}"))),
        Err(err) => err,
    };
    ensure!(
        err.kind() == ErrorKind::Status(StatusCode::INTERNAL_SERVER_ERROR),
        "try_all failed with {err:?}"
    );
    ensure!(
        took < Duration::from_secs(1),
        "try_all took {took:?}: it waited for the calls in flight"
    );
    let (to_slow, to_failing) = (cx.server.requests_to(slow), cx.server.requests_to(failing));
    ensure!(
        to_failing == 1 && to_slow < LIMIT,
        "of {CALLS} calls, the server saw {to_failing} to {failing} and {to_slow} to {slow}; \
         at most {LIMIT} in all should have started"
    );
    Ok(Outcome::Pass)
}
