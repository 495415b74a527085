//! The load scenarios, written once over [`Fetch`] and run on whatever runtime a client needs.
//!
//! Every scenario runs its concurrency inside one task (`join_all` / `FuturesUnordered`), so
//! no client gets an advantage from spawning, and measures from the client's side only.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One HTTP client under test.
pub(crate) trait Fetch {
    /// GETs `path` and reads the whole body into memory; returns its length.
    fn fetch_bytes(&self, path: &str) -> impl Future<Output = Result<u64, String>>;
    /// GETs `path` and reads the body chunk by chunk, discarding it; returns its length.
    fn fetch_stream(&self, path: &str) -> impl Future<Output = Result<u64, String>>;
    /// CPU time so far, in microseconds, of a helper process the client depends on and that
    /// does part of its work (the `-redis` variants' own `redis-server`); `None` when none.
    fn helper_cpu_time_us(&self) -> Option<f64> {
        None
    }
}

/// Which scenario to run, with its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Scenario {
    /// `bursts` bursts of `concurrent` requests launched at once.
    S1 { bursts: u32, concurrent: u32 },
    /// `workers` sequential workers on `/json` for `secs` seconds.
    S2 { workers: u32, millis: u64 },
    /// `count` streamed bodies of `bytes` bytes, one after another.
    S3 { bytes: u64, count: u32 },
    /// `workers` sequential workers on a 50 ms endpoint for `secs` seconds.
    S4 { workers: u32, millis: u64 },
    /// Exactly `requests` requests by `workers` workers (for instruction counts).
    Fixed { workers: u32, requests: u64 },
}

impl Scenario {
    /// The short name used in reports.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Scenario::S1 { .. } => "S1",
            Scenario::S2 { .. } => "S2",
            Scenario::S3 { .. } => "S3",
            Scenario::S4 { .. } => "S4",
            Scenario::Fixed { .. } => "fixed",
        }
    }
}

/// What one run measured. Latencies are in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// Completed requests.
    pub(crate) requests: u64,
    /// Failed requests.
    pub(crate) errors: u64,
    /// Body bytes read.
    pub(crate) bytes: u64,
    /// Wall-clock time of the measured part, in seconds.
    pub(crate) secs: f64,
    /// Client CPU time (user + system, all threads) of the measured part, in microseconds.
    pub(crate) cpu_us: f64,
    /// Peak resident set size of the client process, in KiB.
    pub(crate) peak_rss_kib: u64,
    /// Latency percentiles: p50, p90, p99, p99.9, max.
    pub(crate) latency_us: [u64; 5],
    /// (quantile, latency µs) points for a distribution plot.
    pub(crate) cdf: Vec<(f64, u64)>,
    /// The first error seen, if any.
    pub(crate) first_error: Option<String>,
    /// CPU time of the client's helper process (see [`Fetch::helper_cpu_time_us`]) over the
    /// measured part, in microseconds, when it has one.
    #[serde(default)]
    pub(crate) helper_cpu_us: Option<f64>,
}

/// Runs `scenario` with `client`; `cpu_time` reads the process CPU time.
pub(crate) async fn run<F: Fetch>(client: &F, scenario: Scenario) -> Sample {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut tally = Tally::default();
    // Warm up: open the connections the scenario will use.
    let warm = match scenario {
        Scenario::S1 { concurrent, .. } => concurrent,
        Scenario::S2 { workers, .. } | Scenario::S4 { workers, .. } => workers,
        Scenario::Fixed { workers, .. } => workers,
        Scenario::S3 { .. } => 1,
    };
    let warm_path = match scenario {
        Scenario::S4 { .. } => "/delay/50/json",
        _ => "/json",
    };
    let _ = futures_util::future::join_all((0..warm).map(|_| client.fetch_bytes(warm_path))).await;

    let helper0 = client.helper_cpu_time_us();
    let cpu0 = crate::sys::cpu_time_us();
    let t0 = Instant::now();
    match scenario {
        Scenario::S1 { bursts, concurrent } => {
            for _ in 0..bursts {
                let mut set: FuturesUnordered<_> = (0..concurrent)
                    .map(|_| timed(client.fetch_bytes("/json")))
                    .collect();
                while let Some((r, lat)) = set.next().await {
                    tally.record(&mut hist, r, lat);
                }
            }
        }
        Scenario::S2 { workers, millis } | Scenario::S4 { workers, millis } => {
            let path = if matches!(scenario, Scenario::S4 { .. }) {
                "/delay/50/json"
            } else {
                "/json"
            };
            let until = t0 + Duration::from_millis(millis);
            let results = futures_util::future::join_all((0..workers).map(|_| async move {
                let mut mine = Vec::new();
                while Instant::now() < until {
                    mine.push(timed(client.fetch_bytes(path)).await);
                }
                mine
            }))
            .await;
            for (r, lat) in results.into_iter().flatten() {
                tally.record(&mut hist, r, lat);
            }
        }
        Scenario::S3 { bytes, count } => {
            for _ in 0..count {
                let (r, lat) = timed(client.fetch_stream(&format!("/stream/{bytes}"))).await;
                tally.record(&mut hist, r, lat);
            }
        }
        Scenario::Fixed { workers, requests } => {
            let per = requests / u64::from(workers.max(1));
            let results = futures_util::future::join_all((0..workers).map(|_| async move {
                let mut mine = Vec::new();
                for _ in 0..per {
                    mine.push(timed(client.fetch_bytes("/json")).await);
                }
                mine
            }))
            .await;
            for (r, lat) in results.into_iter().flatten() {
                tally.record(&mut hist, r, lat);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu_us = crate::sys::cpu_time_us() - cpu0;
    let helper_cpu_us = helper0.zip(client.helper_cpu_time_us()).map(|(a, b)| b - a);
    let q = |q: f64| hist.value_at_quantile(q);
    Sample {
        requests: tally.ok,
        errors: tally.errors,
        bytes: tally.bytes,
        secs,
        cpu_us,
        peak_rss_kib: crate::sys::peak_rss_kib(),
        latency_us: [q(0.5), q(0.9), q(0.99), q(0.999), hist.max()],
        cdf: [
            0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
        ]
        .iter()
        .map(|&p| (p, q(p)))
        .collect(),
        first_error: tally.first_error,
        helper_cpu_us,
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, hist: &mut Histogram<u64>, r: Result<u64, String>, lat: Duration) {
        match r {
            Ok(n) => {
                self.ok += 1;
                self.bytes += n;
                let _ = hist.record((lat.as_micros() as u64).max(1));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = fut.await;
    (out, start.elapsed())
}
