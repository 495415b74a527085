//! Connection caps under load, the pool-acquire timeout, the idle bound, and the cancellation
//! storm: what the server sees of a client that is pushed hard, and what is left afterwards.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::stream::{self, FuturesUnordered, StreamExt as _};
use http::StatusCode;
use keel_core::{Backend, Client, ErrorKind, RetryPolicy, Stage, TimeoutPhase, Timer};

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;

/// 10,000 requests launched at once (all created and polled together) with
/// `max_connections_per_origin(50)`: the server never has more than 50 connections open, and
/// every request succeeds (no acquire timeout, no retries).
pub async fn connection_cap_holds_under_10k_requests<T: Backend>(cx: Cx<T>) -> CaseResult {
    const REQUESTS: usize = 10_000;
    const CAP: usize = 50;
    if !cx.capabilities().connection_caps {
        return Ok(Outcome::NotSupported("connection_caps"));
    }
    let client = cx
        .builder()
        .retry_policy(RetryPolicy::disabled())
        .max_connections_per_origin(CAP)
        .build()?;
    let client = &client;
    let mut calls: FuturesUnordered<_> = (0..REQUESTS)
        .map(|_| async move {
            let resp = client.get("/status/200?body=ok").send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            Ok::<_, keel_core::Error>((status, body))
        })
        .collect();
    let mut done = 0;
    while let Some(result) = calls.next().await {
        let (status, body) = result.map_err(|e| Failure(format!("request {done}: {e}")))?;
        ensure!(
            status == StatusCode::OK && body == "ok",
            "request {done}: {status} {body:?}"
        );
        done += 1;
    }
    let peak = cx.server.peak_open_connections();
    ensure!(
        peak <= CAP,
        "the server had {peak} connections open at once (cap {CAP})"
    );
    ensure!(
        cx.server.requests_to("/status/200") == REQUESTS,
        "the server saw {} requests",
        cx.server.requests_to("/status/200")
    );
    Ok(Outcome::Pass)
}

/// With one connection allowed and its response held, a second request with a 100 ms acquire
/// timeout fails with `Timeout(PoolAcquire)` in `Stage::Pool`, unsent and not retried (the
/// client keeps its default retry policy), without reaching the server; once the first body is
/// dropped, the next request goes through.
pub async fn pool_acquire_timeout_is_its_own_error<T: Backend>(cx: Cx<T>) -> CaseResult {
    let caps = cx.capabilities();
    if !caps.connection_caps {
        return Ok(Outcome::NotSupported("connection_caps"));
    }
    if !caps.pool_acquire_timeout {
        return Ok(Outcome::NotSupported("pool_acquire_timeout"));
    }
    let timeout = Duration::from_millis(100);
    let client = cx
        .builder()
        .max_connections_per_origin(1)
        .pool_acquire_timeout(timeout)
        .build()?;
    // The head, then a body that never ends: the one connection stays busy.
    let mut held = client.get("/stall?bytes=10").send().await?;
    ensure!(held.status() == StatusCode::OK, "held: {}", held.status());
    ensure!(held.chunk().await?.is_some(), "no first chunk");

    let started = Instant::now();
    let err = match client.get("/status/200").send().await {
        Ok(resp) => return Err(format!("the second request got {}", resp.status()).into()),
        Err(err) => err,
    };
    let took = started.elapsed();
    ensure!(
        err.kind() == ErrorKind::Timeout(TimeoutPhase::PoolAcquire),
        "kind {:?}: {err}",
        err.kind()
    );
    ensure!(err.stage() == Some(Stage::Pool), "stage {:?}", err.stage());
    ensure!(err.is_unsent(), "a pool-acquire timeout sent nothing");
    ensure!(
        !err.is_retryable(),
        "a pool-acquire timeout is not retryable"
    );
    ensure!(err.attempts() == 1, "{} attempts", err.attempts());
    ensure!(
        err.to_string()
            .contains("timed out waiting for a pooled connection"),
        "display: {err}"
    );
    ensure!(
        took >= timeout && took < Duration::from_secs(3),
        "gave up after {took:?}"
    );
    ensure!(
        cx.server.requests_to("/status/200") == 0,
        "the timed-out request reached the server"
    );

    drop(held);
    let resp = client.get("/status/200?body=after").send().await?;
    let body = resp.text().await?;
    ensure!(body == "after", "after the drop: {body:?}");
    Ok(Outcome::Pass)
}

/// `max_connections(4)` across two origins (`127.0.0.1` and `localhost`, one server, both
/// HTTP/1.1): 40 requests at once, 20 to each, all succeed, and the server never has more than
/// 4 of them in flight at once (each HTTP/1.1 request in flight holds a connection of its own).
/// Then the connections idle for one origin make room for the other: 8 requests to the first
/// leave its connections idle, and 8 to the second still go through, within the cap.
///
/// The check is on requests in flight, not on the server's count of open connections: a
/// client that closes one connection to make room and opens the next at once is counted with
/// both open until the server has read the close.
pub async fn total_connection_cap_across_origins<T: Backend>(cx: Cx<T>) -> CaseResult {
    const CAP: usize = 4;
    let caps = cx.capabilities();
    if !caps.connection_caps {
        return Ok(Outcome::NotSupported("connection_caps"));
    }
    // Without eviction, a connection idle for one origin keeps its place from the other until
    // its idle timeout: check the cap alone, with no idle connections kept.
    let evicts = caps.connection_cap_evicts_idle;
    let mut builder = cx
        .builder()
        .retry_policy(RetryPolicy::disabled())
        .max_connections(CAP);
    if !evicts {
        if !caps.pool_max_idle_per_host {
            return Ok(Outcome::NotSupported("connection_cap_evicts_idle"));
        }
        builder = builder.pool_max_idle_per_host(0);
    }
    let client = builder.build()?;
    let first = cx.server.url("/delay/20");
    let second = first.replacen("127.0.0.1", "localhost", 1);
    let mixed: Vec<&str> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                first.as_str()
            } else {
                second.as_str()
            }
        })
        .collect();
    for (i, result) in burst(&client, mixed).await.into_iter().enumerate() {
        let status = result.map_err(|e| Failure(format!("mixed request {i}: {e}")))?;
        ensure!(status == StatusCode::OK, "mixed request {i}: {status}");
    }
    let peak = cx.server.peak_in_flight("/delay/");
    ensure!(
        peak <= CAP,
        "the server had {peak} requests (each on its own connection) at once (total cap {CAP})"
    );
    ensure!(
        cx.server.requests_to("/delay/20") == 40,
        "the server saw {} requests",
        cx.server.requests_to("/delay/20")
    );
    if !evicts {
        return Ok(Outcome::NotSupported("connection_cap_evicts_idle"));
    }
    for (name, url) in [("first", &first), ("second", &second)] {
        for (i, result) in burst(&client, vec![url.as_str(); 8])
            .await
            .into_iter()
            .enumerate()
        {
            let status = result.map_err(|e| Failure(format!("{name} request {i}: {e}")))?;
            ensure!(status == StatusCode::OK, "{name} request {i}: {status}");
        }
    }
    let peak = cx.server.peak_in_flight("/delay/");
    ensure!(
        peak <= CAP,
        "the server had {peak} requests at once (total cap {CAP})"
    );
    Ok(Outcome::Pass)
}

/// Sends a request to each of `urls` at once and reads each body; the statuses in order.
async fn burst<T: Backend>(
    client: &Client<T>,
    urls: Vec<&str>,
) -> Vec<Result<StatusCode, keel_core::Error>> {
    let calls = urls.into_iter().map(|url| async move {
        let resp = client.get(url).send().await?;
        let status = resp.status();
        resp.bytes().await?;
        Ok::<_, keel_core::Error>(status)
    });
    futures_util::future::join_all(calls).await
}

/// `pool_max_idle_per_host(2)`: ten requests at once open ten connections; once they are
/// answered, no more than two stay open, and the next request reuses one of them.
pub async fn idle_connections_are_bounded<T: Backend>(cx: Cx<T>) -> CaseResult {
    const IDLE: usize = 2;
    if !cx.capabilities().pool_max_idle_per_host {
        return Ok(Outcome::NotSupported("pool_max_idle_per_host"));
    }
    let client = cx
        .builder()
        .retry_policy(RetryPolicy::disabled())
        .pool_max_idle_per_host(IDLE)
        .build()?;
    let timer = client.transport().timer().clone();
    let client = &client;
    let calls = (0..10).map(|_| async move {
        let resp = client.get("/delay/200").send().await?;
        let status = resp.status();
        resp.bytes().await?;
        Ok::<_, keel_core::Error>(status)
    });
    for status in futures_util::future::join_all(calls).await {
        let status = status?;
        ensure!(status == StatusCode::OK, "status {status}");
    }
    let opened = cx.server.connections_accepted();
    ensure!(
        opened == 10,
        "10 requests at once opened {opened} connections"
    );
    ensure!(
        wait_until(&*timer, Duration::from_secs(5), || cx
            .server
            .open_connections()
            <= IDLE)
        .await,
        "{} connections still open, {IDLE} idle allowed",
        cx.server.open_connections()
    );
    let resp = client.get("/status/200").send().await?;
    resp.bytes().await?;
    ensure!(
        cx.server.connections_accepted() == opened,
        "the next request opened a connection instead of reusing an idle one"
    );
    Ok(Outcome::Pass)
}

/// Where a request of the storm is dropped.
#[derive(Clone, Copy, Debug)]
enum DropPoint {
    /// After its first poll: before its connection is open, or while it is being opened.
    BeforeConnect,
    /// While the server delays the head, after `ms` milliseconds.
    MidHeaders { ms: u64 },
    /// After `chunks` chunks of a body the server dribbles.
    MidBody { chunks: u32 },
}

/// Where a request of the storm was dropped, compared with its [`DropPoint`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Landed {
    AsPlanned,
    /// A head the server delayed came before the timer: dropped before its body instead.
    AfterHead,
    /// A dribbled body came in fewer reads than planned: it ended before the drop.
    AfterEnd,
    /// The connection could not be opened (see [`failed`]).
    ConnectFailed(String),
}

/// A small seeded xorshift: the storm is the same every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How many requests the storm sends: 100,000 in release builds (the scorecard), 10,000 in
/// debug builds.
pub const STORM_REQUESTS: usize = if cfg!(debug_assertions) {
    10_000
} else {
    100_000
};

/// 200 at a time, [`STORM_REQUESTS`] requests each dropped at a seeded random point: right
/// after the first poll, while the server delays the head, or mid-body while it dribbles the
/// body. Afterwards nothing panicked, the connections open (as the server counts them, and
/// the client's pool where it counts) are back within the idle bound within a few seconds, and
/// a normal request succeeds.
///
/// keel-isahc runs it too, without [`cancel_in_flight`](keel_core::Capabilities::cancel_in_flight):
/// libcurl ends a dropped transfer at its next callback, so its sockets close a little later,
/// within the wait. The storm keeps more than 1024 descriptors open at its peak, which is how
/// it caught libcurl built without `poll()` failing every connect on a socket numbered 1024 or
/// above (see the workspace's `.cargo/config.toml`).
pub async fn cancellation_storm<T: Backend>(cx: Cx<T>) -> CaseResult {
    const AT_ONCE: usize = 200;
    const IDLE: usize = 8;
    let caps = cx.capabilities();
    let mut builder = cx.builder().retry_policy(RetryPolicy::disabled());
    if caps.pool_max_idle_per_host {
        builder = builder.pool_max_idle_per_host(IDLE);
    }
    let client = builder.build()?;
    let timer = client.transport().timer().clone();
    let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
    let points: Vec<DropPoint> = (0..STORM_REQUESTS)
        .map(|_| match rng.below(3) {
            0 => DropPoint::BeforeConnect,
            1 => DropPoint::MidHeaders {
                ms: 1 + rng.below(10),
            },
            _ => DropPoint::MidBody {
                chunks: 1 + rng.below(3) as u32,
            },
        })
        .collect();
    let planned_mid_headers = points
        .iter()
        .filter(|p| matches!(p, DropPoint::MidHeaders { .. }))
        .count();
    let started = Instant::now();
    let client_ref = &client;
    let timer_ref = &*timer;
    let results: Vec<Result<Landed, String>> = stream::iter(points)
        .map(|point| storm_one(client_ref, timer_ref, point))
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    let took = started.elapsed();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    ensure!(
        failures.is_empty(),
        "{} of {STORM_REQUESTS} storm requests failed unexpectedly, first: {}",
        failures.len(),
        failures[0]
    );
    // The drop points are real: nearly every head the server delayed was still awaited.
    let late = results
        .iter()
        .filter(|r| matches!(r, Ok(Landed::AfterHead)))
        .count();
    let mid_headers = planned_mid_headers;
    ensure!(
        late * 10 <= mid_headers,
        "{late} of {mid_headers} mid-header drops came after the head"
    );
    let ended = results
        .iter()
        .filter(|r| matches!(r, Ok(Landed::AfterEnd)))
        .count();
    ensure!(
        ended * 10 <= STORM_REQUESTS / 3,
        "{ended} mid-body drops came after the body ended"
    );
    let connect_failed: Vec<&String> = results
        .iter()
        .filter_map(|r| match r {
            Ok(Landed::ConnectFailed(message)) => Some(message),
            _ => None,
        })
        .collect();
    // Every connect the storm started succeeded.
    ensure!(
        connect_failed.is_empty(),
        "{} of {STORM_REQUESTS} storm requests could not connect, first: {}",
        connect_failed.len(),
        connect_failed[0]
    );
    tracing_summary(STORM_REQUESTS, took, late, ended);

    // The server's view: within the idle bound (no bound set: every connection idle, at most
    // the storm's concurrency).
    let bound = if caps.pool_max_idle_per_host {
        IDLE
    } else {
        AT_ONCE
    };
    ensure!(
        wait_until(&*timer, Duration::from_secs(5), || cx
            .server
            .open_connections()
            <= bound)
        .await,
        "{} connections still open after the storm ({bound} allowed), {} accepted",
        cx.server.open_connections(),
        cx.server.connections_accepted()
    );
    // The client's view, where it counts its sockets.
    if let Some(stats) = client.pool_stats() {
        let open: usize = stats.iter().map(|s| s.open).sum();
        ensure!(
            open <= bound,
            "the client still counts {open} connections open ({bound} allowed)"
        );
    }
    let body = client
        .get("/status/200?body=calm")
        .send()
        .await?
        .text()
        .await?;
    ensure!(body == "calm", "after the storm: {body:?}");
    Ok(Outcome::Pass)
}

/// One request of the storm, dropped at `point`; an error is a failure only where the point
/// can't explain it (nothing was dropped yet when it came).
async fn storm_one<T: Backend>(
    client: &Client<T>,
    timer: &dyn Timer,
    point: DropPoint,
) -> Result<Landed, String> {
    match point {
        DropPoint::BeforeConnect => {
            let mut send = pin!(client.get("/status/200").send());
            // One poll starts it (a pooled connection taken, or a connection being opened);
            // dropping it then must give either back.
            let polled = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
            if let Poll::Ready(Err(e)) = polled {
                return failed("before connect", &e);
            }
            Ok(Landed::AsPlanned)
        }
        DropPoint::MidHeaders { ms } => {
            let send = pin!(client.get("/delay/50").send());
            let sleep = timer.sleep_until(timer.now() + Duration::from_millis(ms));
            match futures_util::future::select(send, sleep).await {
                // The head beat the timer (a busy machine): dropped before its body instead.
                futures_util::future::Either::Left((Ok(resp), _)) => {
                    drop(resp);
                    Ok(Landed::AfterHead)
                }
                futures_util::future::Either::Left((Err(e), _)) => failed("mid-headers", &e),
                futures_util::future::Either::Right(_) => Ok(Landed::AsPlanned),
            }
        }
        DropPoint::MidBody { chunks } => {
            let resp = client
                .get("/drip?chunk=64&interval_ms=5&count=40")
                .send()
                .await
                .map_err(|e| failed("mid-body head", &e));
            let mut resp = match resp {
                Ok(resp) => resp,
                Err(landed) => return landed,
            };
            for i in 0..chunks {
                match resp.chunk().await {
                    Ok(Some(_)) => {}
                    // The chunks came together (a busy machine): it ended before the drop.
                    Ok(None) => return Ok(Landed::AfterEnd),
                    Err(e) => return Err(format!("mid-body chunk {i}: {}", chain(&e))),
                }
            }
            drop(resp);
            Ok(Landed::AsPlanned)
        }
    }
}

/// A storm request failed before it was dropped: a failure of the case, except a connection
/// that could not be opened (unsent, [`Stage::Connect`]), which is counted and reported: what
/// the storm asserts is what is left afterwards, and libcurl under the storm fails some
/// connects.
fn failed(at: &str, err: &keel_core::Error) -> Result<Landed, String> {
    let message = format!("{at}: {}", chain(err));
    if err.kind() == ErrorKind::Connect && err.stage() == Some(Stage::Connect) {
        return Ok(Landed::ConnectFailed(message));
    }
    Err(message)
}

/// `err` and its sources, for a failure message.
fn chain(err: &keel_core::Error) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// How long the storm took, for the scorecard's reader (stderr, shown by `--nocapture`).
fn tracing_summary(requests: usize, took: Duration, late: usize, ended: usize) {
    eprintln!(
        "cancellation_storm: {requests} requests in {:.2} s ({late} heads and {ended} bodies \
         came before their drop)",
        took.as_secs_f64()
    );
}

/// Polls `cond` every 10 ms on `timer` until it holds or `limit` passes.
async fn wait_until(timer: &dyn Timer, limit: Duration, cond: impl Fn() -> bool) -> bool {
    let until = timer.now() + limit;
    loop {
        if cond() {
            return true;
        }
        let now = timer.now();
        if now >= until {
            return false;
        }
        timer.sleep_until(now + Duration::from_millis(10)).await;
    }
}
