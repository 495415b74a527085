//! The test `redis-server` (from keel-conformance), and the load the tests send.

#![allow(dead_code, unreachable_pub)]

use std::process::Command;
use std::time::{Duration, Instant};

pub use keel_conformance::redis::RedisServer;
use keel_conformance::server::{most_within, TestServer};
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

/// Shared 100/s in the tests, a grace of 50 ms, and 20 ms for delays on the way that can bunch
/// requests (Redis's replies, the client's timer, the server's accept loop: all loopback).
pub const RATE: u32 = 100;
pub const GRACE: Duration = Duration::from_millis(50);
pub const SLACK: Duration = Duration::from_millis(20);

/// Asserts what the server saw of `path` over a `run` of a fleet sharing [`RATE`]: within the
/// bound in any `run` and any second, and most of the quota used (sharing, not starving).
pub fn check_aggregate(server: &TestServer, path: &str, run: Duration, what: &str) {
    let arrivals = server.arrivals(path);
    let in_run = most_within(&arrivals, run);
    let in_second = most_within(&arrivals, Duration::from_secs(1));
    eprintln!(
        "{what}: {} requests; most in any {run:?}: {in_run}; most in any 1 s: {in_second}",
        arrivals.len()
    );
    let most = bound(RATE, run, GRACE, SLACK);
    assert!(
        in_run <= most,
        "{in_run} requests in {run:?}, more than {most}"
    );
    let most = bound(RATE, Duration::from_secs(1), GRACE, SLACK);
    assert!(
        in_second <= most,
        "{in_second} requests in 1 s, more than {most}"
    );
    let least = (f64::from(RATE) * run.as_secs_f64() * 0.9) as usize;
    assert!(in_run >= least, "only {in_run} requests in {run:?}");
}

/// Runs this test binary's test `test` in three child processes with `env` set, and waits for
/// them (60 s at most); panics if one fails or hangs.
pub fn run_three_children(test: &str, env: &[(&str, String)]) {
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..3)
        .map(|_| {
            let mut command = Command::new(&exe);
            command.args(["--exact", test, "--nocapture"]);
            for (key, value) in env {
                command.env(key, value);
            }
            command.spawn().unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for child in &mut children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a child process did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "a child process failed: {status}");
    }
}
