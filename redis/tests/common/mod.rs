//! The test `redis-server` (from keel-conformance), and the load the tests send.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

pub use keel_conformance::redis::RedisServer;
use keel_core::{Backend, Client};

/// A synchronous connection to `redis`, to plant values.
pub fn connection(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .expect("a connection to the test redis-server")
}

/// What one load run saw.
#[derive(Debug, Default)]
pub struct Load {
    pub ok: usize,
    pub failed: Vec<String>,
    pub slowest: Duration,
}

/// Sends GET `url` from `workers` concurrent loops until `until`, as fast as the client lets
/// them; runs on any executor.
pub async fn load<T: Backend>(
    client: &Client<T>,
    url: &str,
    workers: usize,
    until: Instant,
) -> Load {
    let loops = (0..workers).map(|_| async {
        let mut seen = Load::default();
        while Instant::now() < until {
            let started = Instant::now();
            let result = client.get(url).send().await;
            seen.slowest = seen.slowest.max(started.elapsed());
            match result {
                Ok(resp) if resp.status() == 200 => seen.ok += 1,
                Ok(resp) => seen.failed.push(format!("status {}", resp.status())),
                Err(e) => seen.failed.push(format!("{e:#}")),
            }
        }
        seen
    });
    let mut all = Load::default();
    for seen in futures_util::future::join_all(loops).await {
        all.ok += seen.ok;
        all.failed.extend(seen.failed);
        all.slowest = all.slowest.max(seen.slowest);
    }
    all
}

/// The most requests the fleet may send in any `span` at `per_second` (burst 1) with a grace
/// of `grace`, allowing `slack` for delays on the way (Redis's replies, the server's clock).
pub fn bound(per_second: u32, span: Duration, grace: Duration, slack: Duration) -> usize {
    1 + (f64::from(per_second) * (span + grace + slack).as_secs_f64()).floor() as usize
}
