//! The soak: `keel-benches --soak [N] [--clients a,b,…]`.
//!
//! Each keel backend on its home runtime ([`clients::home`]: keel-hyper on tokio, keel-smol and
//! keel-isahc on smol) sends `N` requests (default [`DEFAULT_REQUESTS`]) to the bench server
//! from [`WORKERS`] concurrent workers, in a child process of its own so that the RSS and
//! descriptors measured are the client's alone. Request `i` is of [`Kind::of`]`(i)`:
//!
//! - 96 in 100 are plain keep-alive GETs of `/json`;
//! - 1 in 100 is answered with `Connection: close` (`/soak/close`);
//! - 1 in 100 is answered `503` and retried by keel's retry policy (`/soak/503/{id}`: 503 the
//!   first time, 200 the second), and must end in a 200 after exactly 2 attempts;
//! - 1 in 100 is dropped by the caller after the first chunk of its body, a 1 MiB body the
//!   server is still sending (`/stream/1048576`);
//! - 1 in 100 runs into a [`READ_IDLE`] read-idle timeout mid-body (`/soak/stall`, whose
//!   server is silent for [`server::STALL`] after the first 16 KiB).
//!
//! Every backend but keel-isahc keeps at most [`WORKERS`] idle connections
//! (`pool_max_idle_per_host`); keel-isahc can't be told (libcurl's pool limit counts every
//! connection, busy or idle), but opens a connection only for a request no idle one can take.
//!
//! The child samples its RSS (`VmRSS`) and open descriptors (`/proc/self/fd`) before the first
//! request, every [`SAMPLE_EVERY`] requests (every tenth of the run when that is shorter) and
//! after the last, and once more when the run has *settled*: [`SETTLE`] after the last request,
//! when every connection a caller abandoned has closed (keel-isahc's close only once the server
//! sends again, see its docs, here after [`server::STALL`]). It passes ([`judge`]) when:
//!
//! - RSS grows less than [`RSS_GROWTH_LIMIT_KIB`] after the warm-up (the first tenth);
//! - descriptors never exceed those open before the first request + one connection in use per
//!   worker + one idle per worker + [`FD_SLACK`] (for keel-isahc, + one per read-idle timeout
//!   of the last [`ABANDONED_WINDOW`], whose connection it holds until the server sends again:
//!   see [`Point::abandoned`]), and once settled are back within those open before the first
//!   request + the idle bound ([`WORKERS`]) + [`FD_SLACK`]: a leak of even [`FD_SLACK`]
//!   descriptors over the run fails;
//! - every request ended as its kind says, to the count.
//!
//! The orchestrator prints a table per backend, writes `soak.md` and `soak-rss.svg` (RSS over
//! requests, a line per backend) to the report directory, and exits non-zero if a backend
//! failed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clients;
use crate::report::{cpu_model, escape, svg};
use crate::{server, sys};

/// Requests per backend when `--soak` is given no number.
pub(crate) const DEFAULT_REQUESTS: u64 = 1_000_000;
/// The backends soaked, in report order, each on its home runtime.
pub(crate) const BACKENDS: [&str; 3] = ["keel-hyper", "keel-smol", "keel-isahc"];
/// Concurrent workers per backend, each sending one request at a time.
pub(crate) const WORKERS: u64 = 64;
/// The read-idle timeout of the requests meant to run into it.
pub(crate) const READ_IDLE: Duration = Duration::from_millis(50);
/// Requests between two samples (a tenth of the run when that is less).
pub(crate) const SAMPLE_EVERY: u64 = 50_000;
/// The most RSS may grow after the warm-up, in KiB.
pub(crate) const RSS_GROWTH_LIMIT_KIB: u64 = 5 * 1024;
/// Descriptors allowed beyond those open before the first request and the connections the
/// workers may hold (the runtime's and the backend's own: timers, wakers, a resolver).
pub(crate) const FD_SLACK: u64 = 16;
/// How long after the last request the settled sample is taken.
pub(crate) const SETTLE: Duration = Duration::from_millis(server::STALL.as_millis() as u64 + 500);
/// The body the caller drops after its first chunk.
const DROPPED_BODY: u64 = 1 << 20;

/// What a request of the mix is meant to meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// A GET of `/json` on a kept-alive connection.
    KeepAlive,
    /// An answer with `Connection: close`.
    Close,
    /// A 503, then a 200 to keel's retry.
    Retried503,
    /// A body the caller drops after its first chunk.
    Dropped,
    /// A body that goes silent past the read-idle timeout.
    ReadIdle,
}

impl Kind {
    /// Every kind, in report order.
    pub(crate) const ALL: [Kind; 5] = [
        Kind::KeepAlive,
        Kind::Close,
        Kind::Retried503,
        Kind::Dropped,
        Kind::ReadIdle,
    ];

    /// Where in every hundred requests this kind falls; `None` for keep-alive (the rest).
    fn residue(self) -> Option<u64> {
        match self {
            Kind::KeepAlive => None,
            Kind::Retried503 => Some(24),
            Kind::Dropped => Some(49),
            Kind::ReadIdle => Some(74),
            Kind::Close => Some(99),
        }
    }

    /// The kind of request `i` (counting from 0): the faults spread evenly, a quarter of a
    /// hundred apart, and every 100th answer closes its connection.
    pub(crate) fn of(i: u64) -> Kind {
        let r = i % 100;
        Kind::ALL
            .into_iter()
            .find(|k| k.residue() == Some(r))
            .unwrap_or(Kind::KeepAlive)
    }

    /// How many of the first `n` requests are of this kind.
    pub(crate) fn expected_count(self, n: u64) -> u64 {
        match self.residue() {
            Some(r) => n / 100 + u64::from(n % 100 > r),
            None => {
                n - Kind::ALL
                    .into_iter()
                    .filter(|k| k.residue().is_some())
                    .map(|k| k.expected_count(n))
                    .sum::<u64>()
            }
        }
    }

    /// The name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::KeepAlive => "keep-alive",
            Kind::Close => "Connection: close",
            Kind::Retried503 => "503, retried",
            Kind::Dropped => "dropped mid-body",
            Kind::ReadIdle => "read-idle timeout",
        }
    }

    /// The outcome (as [`one`] labels it) every request of this kind must end in.
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Kind::KeepAlive | Kind::Close => "200 in 1 attempt",
            Kind::Retried503 => "200 in 2 attempts",
            Kind::Dropped => "dropped after the first chunk",
            Kind::ReadIdle => "Timeout(ReadIdle)",
        }
    }

    fn path(self, i: u64, nonce: u64) -> String {
        match self {
            Kind::KeepAlive => "/json".to_owned(),
            Kind::Close => "/soak/close".to_owned(),
            Kind::Retried503 => format!("/soak/503/{nonce}-{i}"),
            Kind::Dropped => format!("/stream/{DROPPED_BODY}"),
            Kind::ReadIdle => "/soak/stall".to_owned(),
        }
    }
}

/// One sample of the client process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Point {
    /// Requests finished when it was taken.
    pub(crate) done: u64,
    /// VmRSS, KiB.
    pub(crate) rss_kib: u64,
    /// Open descriptors.
    pub(crate) fds: u64,
    /// For a backend that holds a connection its caller gave up on while the server is quiet
    /// until the server speaks again (keel-isahc, as its docs say; the others close it at
    /// once), the read-idle timeouts of the last [`ABANDONED_WINDOW`]; 0 for the others.
    #[serde(default)]
    pub(crate) abandoned: u64,
}

impl Point {
    fn now(done: u64, abandoned: u64) -> Self {
        Self {
            done,
            rss_kib: sys::rss_kib(),
            fds: sys::open_fds(),
            abandoned,
        }
    }
}

/// How long after a read-idle timeout its connection may still be open: until the server
/// sends the rest ([`server::STALL`] after the first chunk, less the timeout itself), with a
/// margin.
pub(crate) const ABANDONED_WINDOW: Duration =
    Duration::from_millis(server::STALL.as_millis() as u64 + 100);

/// How many requests of a kind ended in one outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tallied {
    pub(crate) kind: Kind,
    pub(crate) outcome: String,
    pub(crate) count: u64,
    /// For an error, the first one's message with its causes.
    #[serde(default)]
    pub(crate) first: Option<String>,
}

/// What one backend's child process reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SoakRun {
    /// The pair, `client@runtime`.
    pub(crate) pair: String,
    pub(crate) requests: u64,
    pub(crate) workers: u64,
    /// Wall time from the first request to the last, seconds.
    pub(crate) secs: f64,
    /// The samples, the one before the first request first.
    pub(crate) samples: Vec<Point>,
    /// The sample [`SETTLE`] after the last request.
    pub(crate) settled: Point,
    /// The longest time no request finished, in ms: a client starved of CPU on a busy machine
    /// shows here (and may then see a stalled body's rest arrive before its read-idle timer).
    #[serde(default)]
    pub(crate) longest_pause_ms: u64,
    pub(crate) outcomes: Vec<Tallied>,
}

/// Requests between two samples in a run of `n`.
pub(crate) fn sample_interval(n: u64) -> u64 {
    SAMPLE_EVERY.min(n / 10).max(1)
}

/// The client every backend is soaked with: the defaults, at most [`WORKERS`] idle
/// connections where the backend can hold to it, and a retry policy that retries a 503 after
/// 0 to 2 ms (full jitter) instead of the default's 0 to 100 ms, so that retries don't
/// dominate the wall time.
fn build<T: keel_core::Backend>(base: &str) -> Result<keel_core::Client<T>, String> {
    let retry = keel_core::RetryPolicy::builder()
        .base_delay(Duration::from_millis(2))
        .max_delay(Duration::from_millis(20))
        .build()
        .map_err(|e| e.to_string())?;
    let mut builder = keel_core::Client::<T>::builder()
        .base_url(base)
        .retry_policy(retry);
    if T::capabilities().pool_max_idle_per_host {
        builder = builder.pool_max_idle_per_host(WORKERS as usize);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The outcome label of an error (its kind and stage: one of a few, so the tally stays
/// small however many requests fail), and its message with every cause.
fn error_label(e: &keel_core::Error) -> (String, Option<String>) {
    let label = match e.kind() {
        keel_core::ErrorKind::Timeout(keel_core::TimeoutPhase::ReadIdle) => {
            Kind::ReadIdle.expected().to_owned()
        }
        kind => format!("error {kind:?} in {:?}", e.stage()),
    };
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let _ = write!(message, ": {c}");
        cause = c.source();
    }
    (label, Some(message))
}

fn attempts(n: u32) -> String {
    if n == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{n} attempts")
    }
}

/// Sends request `i` of kind `kind` and labels how it ended (with the error's message when
/// it failed).
async fn one<T: keel_core::Transport>(
    client: &keel_core::Client<T>,
    kind: Kind,
    i: u64,
    nonce: u64,
    json_len: usize,
) -> (String, Option<String>) {
    send(client, kind, &kind.path(i, nonce), json_len)
        .await
        .unwrap_or_else(|e| error_label(&e))
}

async fn send<T: keel_core::Transport>(
    client: &keel_core::Client<T>,
    kind: Kind,
    path: &str,
    json_len: usize,
) -> Result<(String, Option<String>), keel_core::Error> {
    match kind {
        Kind::KeepAlive | Kind::Close | Kind::Retried503 => {
            let resp = client.get(path).send().await?;
            let (status, tries) = (resp.status(), resp.attempts());
            let body = resp.bytes().await?;
            let label = if body.len() == json_len {
                format!("{} in {}", status.as_u16(), attempts(tries))
            } else {
                format!(
                    "{} in {}, {} body bytes instead of {json_len}",
                    status.as_u16(),
                    attempts(tries),
                    body.len()
                )
            };
            Ok((label, None))
        }
        Kind::Dropped => {
            let mut resp = client.get(path).send().await?;
            let label = match resp.chunk().await? {
                Some(chunk) if !chunk.is_empty() => Kind::Dropped.expected().to_owned(),
                _ => format!("{}: no body", resp.status().as_u16()),
            };
            Ok((label, None))
            // `resp` is dropped here, the rest of its body unread.
        }
        Kind::ReadIdle => {
            let mut resp = client.get(path).read_idle_timeout(READ_IDLE).send().await?;
            let mut n = 0;
            // The longest wait for a chunk, as the caller saw it: whether the silence reached
            // the caller, when it ends without a timeout.
            let mut longest = Duration::ZERO;
            loop {
                let asked = Instant::now();
                let Some(chunk) = resp.chunk().await? else {
                    break;
                };
                longest = longest.max(asked.elapsed());
                n += chunk.len();
            }
            Ok((
                format!(
                    "{}: the whole body ({n} bytes), no timeout",
                    resp.status().as_u16()
                ),
                Some(format!(
                    "the longest wait for a chunk was {} ms",
                    longest.as_millis()
                )),
            ))
        }
    }
}

/// Per (kind, outcome): how many requests, and the first error message.
type Tally = BTreeMap<(Kind, String), (u64, Option<String>)>;

/// The state the workers of one run share (they run in one task).
struct Shared {
    n: u64,
    every: u64,
    next: Cell<u64>,
    done: Cell<u64>,
    samples: RefCell<Vec<Point>>,
    /// Whether the backend holds abandoned connections (see [`Point::abandoned`]).
    holds_abandoned: bool,
    /// When the read-idle timeouts of the last [`ABANDONED_WINDOW`] happened.
    timeouts: RefCell<VecDeque<Instant>>,
    tally: RefCell<Tally>,
    /// When the last request finished, and the longest time between two that did.
    last_done: Cell<Option<Instant>>,
    longest_pause: Cell<Duration>,
}

impl Shared {
    /// Read-idle timeouts in the last [`ABANDONED_WINDOW`] (older ones are forgotten).
    fn abandoned_now(&self) -> u64 {
        let mut timeouts = self.timeouts.borrow_mut();
        let now = Instant::now();
        while timeouts
            .front()
            .is_some_and(|t| now.duration_since(*t) > ABANDONED_WINDOW)
        {
            timeouts.pop_front();
        }
        timeouts.len() as u64
    }

    fn record(&self, kind: Kind, (outcome, message): (String, Option<String>)) {
        if self.holds_abandoned && kind == Kind::ReadIdle && outcome == kind.expected() {
            self.timeouts.borrow_mut().push_back(Instant::now());
            self.abandoned_now();
        }
        let now = Instant::now();
        if let Some(last) = self.last_done.replace(Some(now)) {
            self.longest_pause
                .set(self.longest_pause.get().max(now.duration_since(last)));
        }
        let mut tally = self.tally.borrow_mut();
        let entry = tally.entry((kind, outcome)).or_insert((0, message));
        entry.0 += 1;
        drop(tally);
        let done = self.done.get() + 1;
        self.done.set(done);
        if done % self.every == 0 || done == self.n {
            self.samples
                .borrow_mut()
                .push(Point::now(done, self.abandoned_now()));
        }
    }
}

/// Runs the soak of `n` requests on `client`, in the current task; `holds_abandoned` says
/// whether the backend holds connections abandoned on a quiet server (see [`Point::abandoned`]).
async fn drive<T: keel_core::Transport>(
    client: &keel_core::Client<T>,
    n: u64,
    holds_abandoned: bool,
) -> SoakRun {
    let nonce = u64::from(std::process::id());
    let json_len = server::json_body().len();
    let shared = Shared {
        n,
        every: sample_interval(n),
        next: Cell::new(0),
        done: Cell::new(0),
        samples: RefCell::new(vec![Point::now(0, 0)]),
        holds_abandoned,
        timeouts: RefCell::new(VecDeque::new()),
        tally: RefCell::new(Tally::new()),
        last_done: Cell::new(None),
        longest_pause: Cell::new(Duration::ZERO),
    };
    let t0 = Instant::now();
    futures_util::future::join_all((0..WORKERS).map(|_| async {
        loop {
            let i = shared.next.get();
            if i >= n {
                break;
            }
            shared.next.set(i + 1);
            let kind = Kind::of(i);
            let outcome = one(client, kind, i, nonce, json_len).await;
            shared.record(kind, outcome);
        }
    }))
    .await;
    let secs = t0.elapsed().as_secs_f64();
    // async-io's timer works under every runtime, and lets the runtime run its connection
    // tasks meanwhile.
    smol::Timer::after(SETTLE).await;
    let settled = Point::now(n, 0);
    SoakRun {
        pair: String::new(),
        requests: n,
        workers: WORKERS,
        secs,
        samples: shared.samples.into_inner(),
        settled,
        longest_pause_ms: shared.longest_pause.get().as_millis() as u64,
        outcomes: shared
            .tally
            .into_inner()
            .into_iter()
            .map(|((kind, outcome), (count, first))| Tallied {
                kind,
                outcome,
                count,
                first,
            })
            .collect(),
    }
}

/// The child process: soaks `client` on its home runtime with `n` requests against the server
/// on `port`.
pub(crate) fn run(client: &str, n: u64, port: u16) -> Result<SoakRun, String> {
    let runtime = clients::home(client);
    let base = format!("http://127.0.0.1:{port}");
    let mut run = match client {
        "keel-hyper" => runtime.block_on(async {
            let c = build::<keel_hyper::HyperTransport>(&base)?;
            Ok(drive(&c, n, false).await)
        }),
        "keel-smol" => runtime.block_on(async {
            let c = build::<keel_smol::SmolTransport>(&base)?;
            Ok(drive(&c, n, false).await)
        }),
        "keel-isahc" => runtime.block_on(async {
            // isahc sees a dropped body only at libcurl's next callback (keel-isahc's docs,
            // "Cancellation").
            let c = build::<keel_isahc::IsahcTransport>(&base)?;
            Ok(drive(&c, n, true).await)
        }),
        other => Err(format!(
            "the soak runs {}, not `{other}`",
            BACKENDS.join(", ")
        )),
    }
    .and_then(|r| r)?;
    run.pair = clients::pair_name(client, runtime);
    Ok(run)
}

/// The verdict on one run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Verdict {
    /// RSS at the end of the warm-up, KiB.
    pub(crate) warm_rss_kib: u64,
    /// The most RSS grew past it, KiB.
    pub(crate) rss_growth_kib: u64,
    /// The most descriptors allowed during the run.
    pub(crate) fd_bound: u64,
    /// The most descriptors allowed once settled.
    pub(crate) settled_fd_bound: u64,
    /// What failed; empty when the run passed.
    pub(crate) problems: Vec<String>,
}

impl Verdict {
    pub(crate) fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Judges a run: RSS growth after the warm-up, descriptors against their bound, and every
/// request's outcome against its kind's.
pub(crate) fn judge(run: &SoakRun) -> Verdict {
    let mut problems = Vec::new();
    let n = run.requests;
    let start = run.samples.first().copied().unwrap_or(Point {
        done: 0,
        rss_kib: 0,
        fds: 0,
        abandoned: 0,
    });
    // The warm-up ends with the first sample at a tenth of the run or later.
    let warm_at = run
        .samples
        .iter()
        .position(|p| p.done > 0 && p.done * 10 >= n);
    let (warm_rss_kib, rss_growth_kib) = match warm_at {
        Some(w) => {
            let warm = run.samples[w].rss_kib;
            let max = run.samples[w..]
                .iter()
                .map(|p| p.rss_kib)
                .max()
                .unwrap_or(warm);
            (warm, max - warm)
        }
        None => {
            problems.push("no sample after the warm-up".to_owned());
            (0, 0)
        }
    };
    if rss_growth_kib >= RSS_GROWTH_LIMIT_KIB {
        problems.push(format!(
            "RSS grew {:.1} MiB after the warm-up (limit {} MiB)",
            rss_growth_kib as f64 / 1024.0,
            RSS_GROWTH_LIMIT_KIB / 1024
        ));
    }
    if run.samples.last().map(|p| p.done) != Some(n) {
        problems.push("no sample at the end".to_owned());
    }
    let fd_bound = start.fds + 2 * run.workers + FD_SLACK;
    if let Some(p) = run.samples.iter().find(|p| p.fds > fd_bound + p.abandoned) {
        problems.push(format!(
            "{} descriptors open after {} requests (bound {}: {} before the first request + \
             {} in use + {} idle + {FD_SLACK} + {} abandoned in the last {} ms)",
            p.fds,
            p.done,
            fd_bound + p.abandoned,
            start.fds,
            run.workers,
            run.workers,
            p.abandoned,
            ABANDONED_WINDOW.as_millis()
        ));
    }
    let settled_fd_bound = start.fds + run.workers + FD_SLACK;
    if run.settled.fds > settled_fd_bound {
        problems.push(format!(
            "{} descriptors open once settled (bound {settled_fd_bound}: {} before the first \
             request + {} idle + {FD_SLACK})",
            run.settled.fds, start.fds, run.workers
        ));
    }
    for kind in Kind::ALL {
        let expected = kind.expected_count(n);
        let got = run
            .outcomes
            .iter()
            .filter(|t| t.kind == kind && t.outcome == kind.expected())
            .map(|t| t.count)
            .sum::<u64>();
        if got != expected {
            problems.push(format!(
                "{}: {got} of {expected} ended as expected ({})",
                kind.name(),
                kind.expected()
            ));
        }
    }
    for t in run
        .outcomes
        .iter()
        .filter(|t| t.outcome != t.kind.expected())
    {
        problems.push(format!(
            "{}: {} ended `{}`{}",
            t.kind.name(),
            t.count,
            t.outcome,
            t.first
                .as_ref()
                .map(|m| format!(" (the first: {m})"))
                .unwrap_or_default()
        ));
    }
    let total: u64 = run.outcomes.iter().map(|t| t.count).sum();
    if total != n {
        problems.push(format!("{total} requests ended, {n} were sent"));
    }
    Verdict {
        warm_rss_kib,
        rss_growth_kib,
        fd_bound,
        settled_fd_bound,
        problems,
    }
}

/// What `--soak` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) requests: u64,
    pub(crate) backends: Vec<String>,
}

pub(crate) const USAGE: &str =
    "usage: keel-benches --soak [N] [--clients keel-hyper,keel-smol,keel-isahc]";

/// Parses `--soak [N] [--clients a,b,…]`.
pub(crate) fn options(args: &[String]) -> Result<Options, String> {
    let mut requests = DEFAULT_REQUESTS;
    let mut backends: Vec<String> = BACKENDS.iter().map(|b| (*b).to_owned()).collect();
    let mut rest = args.iter().peekable();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--soak" => {
                if let Some(n) = rest.next_if(|n| !n.starts_with("--")) {
                    requests = n
                        .replace(['_', ','], "")
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("--soak takes a number of requests, not `{n}`"))?;
                }
            }
            "--clients" => {
                let list = rest.next().ok_or("--clients needs a value")?;
                backends = list
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect();
                if let Some(other) = backends.iter().find(|b| !BACKENDS.contains(&b.as_str())) {
                    return Err(format!(
                        "the soak runs {}, not `{other}`",
                        BACKENDS.join(", ")
                    ));
                }
                if backends.is_empty() {
                    return Err("--clients names no backend".to_owned());
                }
            }
            other => return Err(format!("unknown argument `{other}` with --soak")),
        }
    }
    Ok(Options { requests, backends })
}

/// Runs one backend's soak in a child process; one still running after `limit` is killed.
fn run_child(
    exe: &Path,
    client: &str,
    n: u64,
    port: u16,
    pin: bool,
    limit: Duration,
) -> Result<SoakRun, String> {
    let mut cmd = Command::new(exe);
    cmd.args([
        "__soak",
        "--client",
        client,
        "--requests",
        &n.to_string(),
        "--port",
        &port.to_string(),
    ]);
    let text = crate::run_child_process(cmd, pin, limit)?;
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("bad result {line:?}: {e}"))
}

/// The orchestrator of `--soak`: starts the server, soaks every backend in turn, reports.
pub(crate) fn orchestrate(opts: &Options, exe: &Path, dir: &Path) -> i32 {
    let pin = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let (server, port) = match crate::start_server(exe, pin) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let n = opts.requests;
    // Generous: a backend that stalls is stopped, not waited on forever.
    let limit = Duration::from_secs(60) + Duration::from_millis(n);
    let mut results: Vec<(String, Result<SoakRun, String>)> = Vec::new();
    for client in &opts.backends {
        eprint!("soak {client:<12} {n} requests ... ");
        let result = run_child(exe, client, n, port, pin, limit);
        match &result {
            Ok(run) => {
                let v = judge(run);
                eprintln!(
                    "{:.1} s, {}",
                    run.secs,
                    if v.passed() { "pass" } else { "FAIL" }
                );
            }
            Err(e) => eprintln!("failed: {e}"),
        }
        results.push((client.clone(), result));
    }
    drop(server);
    let md = to_markdown(n, &results);
    print!("{md}");
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join("soak.md"), &md))
        .and_then(|()| std::fs::write(dir.join("soak-rss.svg"), rss_svg(n, &results)));
    match written {
        Ok(()) => eprintln!("wrote {}/soak.md, soak-rss.svg", dir.display()),
        Err(e) => eprintln!("could not write the report: {e}"),
    }
    let failed = results
        .iter()
        .filter(|(_, r)| r.as_ref().map_or(true, |run| !judge(run).passed()))
        .count();
    if failed > 0 {
        eprintln!("{failed} backend(s) failed the soak: see the report");
        1
    } else {
        0
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The report: the verdict table, the outcomes, the samples.
pub(crate) fn to_markdown(n: u64, results: &[(String, Result<SoakRun, String>)]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Soak: {n} requests per backend\n\n\
         {WORKERS} workers per backend, each backend on its home runtime in a process of its own, \
         against the bench server (also its own process) on loopback; {}. \
         The mix, per hundred requests: 96 keep-alive, 1 answered with `Connection: close`, \
         1 answered 503 and retried (must end 200 after 2 attempts), 1 dropped by the caller \
         after the first chunk of a 1 MiB body, 1 hitting a {} ms read-idle timeout mid-body. \
         Pass: RSS grows less than {} MiB after the warm-up (the first tenth); descriptors \
         stay within those open before the first request + {WORKERS} in use + {WORKERS} idle \
         + {FD_SLACK} (for keel-isahc, + the read-idle timeouts of the last {} ms: it holds \
         such a connection until the server sends again, as its docs say), and {} ms after \
         the last request (settled) within those before + {WORKERS} idle + {FD_SLACK}; every \
         request ends as its kind says. Wall times are noisy when other work shares the \
         machine.\n",
        cpu_model(),
        READ_IDLE.as_millis(),
        RSS_GROWTH_LIMIT_KIB / 1024,
        ABANDONED_WINDOW.as_millis(),
        SETTLE.as_millis()
    );
    md.push_str(
        "| backend | requests | wall s | req/s | RSS MiB first / warm / last / max | \
         RSS growth MiB | fds first / last / max (bound + abandoned) | fds settled (bound) | \
         verdict |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (client, result) in results {
        match result {
            Ok(run) => {
                let v = judge(run);
                let rss = |f: fn(&Point) -> u64| run.samples.iter().map(f);
                let first = run.samples.first().copied();
                let last = run.samples.last().copied();
                let peak = run.samples.iter().copied().max_by_key(|p| p.fds);
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.1} | {:.0} | {} / {} / {} / {} | {} | {} / {} / {} ({}) | {} ({}) | {} |",
                    run.pair,
                    run.requests,
                    run.secs,
                    run.requests as f64 / run.secs.max(1e-9),
                    mib(first.map_or(0, |p| p.rss_kib)),
                    mib(v.warm_rss_kib),
                    mib(last.map_or(0, |p| p.rss_kib)),
                    mib(rss(|p| p.rss_kib).max().unwrap_or(0)),
                    mib(v.rss_growth_kib),
                    first.map_or(0, |p| p.fds),
                    last.map_or(0, |p| p.fds),
                    peak.map_or(0, |p| p.fds),
                    match peak.map_or(0, |p| p.abandoned) {
                        0 => v.fd_bound.to_string(),
                        a => format!("{} + {a}", v.fd_bound),
                    },
                    run.settled.fds,
                    v.settled_fd_bound,
                    if v.passed() { "pass" } else { "**FAIL**" }
                );
            }
            Err(e) => {
                let _ = writeln!(
                    md,
                    "| {client} | {n} | | | | | | | **FAIL**: {} |",
                    escape(e)
                );
            }
        }
    }
    for (_, result) in results {
        let Ok(run) = result else { continue };
        let v = judge(run);
        let _ = writeln!(
            md,
            "\n## {}\n\nThe longest time no request finished: {} ms.\n\n\
             | kind | expected outcome | requests | as expected |\n|---|---|---:|---:|",
            run.pair, run.longest_pause_ms
        );
        for kind in Kind::ALL {
            let ok = run
                .outcomes
                .iter()
                .filter(|t| t.kind == kind && t.outcome == kind.expected())
                .map(|t| t.count)
                .sum::<u64>();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {ok} |",
                kind.name(),
                kind.expected(),
                kind.expected_count(run.requests)
            );
        }
        if !v.passed() {
            md.push_str("\nFailed:\n\n");
            for p in &v.problems {
                let _ = writeln!(md, "- {}", escape(p));
            }
        }
    }
    let runs: Vec<&SoakRun> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    if let Some(longest) = runs.iter().max_by_key(|r| r.samples.len()) {
        md.push_str(
            "\n## Samples\n\nRSS MiB / open descriptors (read-idle timeouts in the last \
             window, whose connections may still be open):\n\n| requests |",
        );
        for run in &runs {
            let _ = write!(md, " {} |", run.pair);
        }
        md.push_str("\n|---:|");
        md.push_str(&"---:|".repeat(runs.len()));
        md.push('\n');
        for (i, p) in longest.samples.iter().enumerate() {
            let _ = write!(md, "| {} |", p.done);
            for run in &runs {
                match run.samples.get(i) {
                    Some(q) => {
                        let _ = write!(md, " {} / {} ({}) |", mib(q.rss_kib), q.fds, q.abandoned);
                    }
                    None => md.push_str(" |"),
                }
            }
            md.push('\n');
        }
        md.push_str("\nRSS over requests: `soak-rss.svg`.\n");
    }
    md
}

/// RSS over requests, a line per backend.
pub(crate) fn rss_svg(n: u64, results: &[(String, Result<SoakRun, String>)]) -> String {
    let (left, top, w, h) = (70.0, 40.0, 560.0, 300.0);
    let runs: Vec<&SoakRun> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    let mut body = format!(
        r#"<text x="10" y="20" font-weight="bold">Soak: client RSS (MiB) over {n} requests</text>"#
    );
    let max_kib = runs
        .iter()
        .flat_map(|r| r.samples.iter().map(|p| p.rss_kib))
        .max()
        .unwrap_or(1024);
    // A round top: the next multiple of 5 MiB (the growth limit) above the highest sample.
    let step = 5.0;
    let top_mib = ((max_kib as f64 / 1024.0 / step).floor() + 1.0) * step;
    let xpos = |done: u64| left + done as f64 / n.max(1) as f64 * w;
    let ypos = |kib: u64| top + h - kib as f64 / 1024.0 / top_mib * h;
    let mut mark = 0.0;
    while mark <= top_mib + 1e-9 {
        let y = top + h - mark / top_mib * h;
        let _ = write!(
            body,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="10" y="{:.1}">{mark:.0}</text>"##,
            left + w,
            y + 4.0
        );
        mark += step;
    }
    for tick in 0..=4u64 {
        let done = n * tick / 4;
        let _ = write!(
            body,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{done}</text>"#,
            xpos(done),
            top + h + 16.0
        );
    }
    let _ = write!(
        body,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">requests</text>"#,
        left + w / 2.0,
        top + h + 34.0
    );
    // The end of the warm-up: growth is judged from here on.
    let warm = xpos(n / 10);
    let _ = write!(
        body,
        r##"<line x1="{warm:.1}" x2="{warm:.1}" y1="{top}" y2="{}" stroke="#999" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="10" fill="#666">warm-up</text>"##,
        top + h,
        warm + 4.0,
        top + 12.0
    );
    let palette = ["#2a6fdb", "#d98c1f", "#2aa876", "#a83279", "#7a7a7a"];
    for (i, run) in runs.iter().enumerate() {
        let color = palette[i % palette.len()];
        let points: Vec<String> = run
            .samples
            .iter()
            .map(|p| format!("{:.1},{:.1}", xpos(p.done), ypos(p.rss_kib)))
            .collect();
        crate::report::line_with_legend(
            &mut body,
            color,
            &points,
            &run.pair,
            (left + w + 20.0, top),
            i,
        );
    }
    svg(left + w + 200.0, top + h + 50.0, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_mix_is_one_in_a_hundred_of_each_fault_and_the_counts_add_up() {
        let kinds: Vec<Kind> = (0..100).map(Kind::of).collect();
        for kind in Kind::ALL {
            let want = if kind == Kind::KeepAlive { 96 } else { 1 };
            assert_eq!(
                kinds.iter().filter(|k| **k == kind).count(),
                want,
                "{kind:?}"
            );
        }
        assert_eq!(Kind::of(99), Kind::Close);
        assert_eq!(Kind::of(199), Kind::Close);
        for n in [0, 1, 24, 25, 99, 100, 101, 12_345, 100_000] {
            let mut counted = BTreeMap::new();
            for i in 0..n {
                *counted.entry(Kind::of(i)).or_insert(0u64) += 1;
            }
            for kind in Kind::ALL {
                assert_eq!(
                    kind.expected_count(n),
                    counted.get(&kind).copied().unwrap_or(0),
                    "{kind:?} in {n}"
                );
            }
        }
    }

    fn run_of(n: u64, samples: &[(u64, u64, u64)]) -> SoakRun {
        SoakRun {
            pair: "keel-smol@smol".to_owned(),
            requests: n,
            workers: WORKERS,
            secs: 1.0,
            samples: samples
                .iter()
                .map(|&(done, rss_kib, fds)| Point {
                    done,
                    rss_kib,
                    fds,
                    abandoned: 0,
                })
                .collect(),
            settled: Point {
                done: n,
                rss_kib: 30_000,
                fds: 50,
                abandoned: 0,
            },
            longest_pause_ms: 3,
            outcomes: Kind::ALL
                .into_iter()
                .map(|kind| Tallied {
                    kind,
                    outcome: kind.expected().to_owned(),
                    count: kind.expected_count(n),
                    first: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_clean_run_passes_and_growth_counts_only_after_the_warm_up() {
        // 20 MiB of start-up growth before the tenth, 4 MiB after it: a pass.
        let run = run_of(
            1000,
            &[
                (0, 10_000, 10),
                (100, 30_000, 74),
                (500, 33_000, 70),
                (1000, 34_000, 60),
            ],
        );
        let v = judge(&run);
        assert!(v.passed(), "{:?}", v.problems);
        assert_eq!((v.warm_rss_kib, v.rss_growth_kib), (30_000, 4_000));
        assert_eq!(v.fd_bound, 10 + 2 * WORKERS + FD_SLACK);
        assert_eq!(v.settled_fd_bound, 10 + WORKERS + FD_SLACK);
    }

    #[test]
    fn growth_leaked_descriptors_and_unexpected_outcomes_fail() {
        let grown = run_of(
            1000,
            &[(0, 10_000, 10), (100, 30_000, 74), (1000, 35_200, 60)],
        );
        assert!(judge(&grown).problems[0].contains("RSS grew 5.1 MiB"));

        let crowded = run_of(
            1000,
            &[(0, 10_000, 10), (100, 30_000, 74), (1000, 30_000, 155)],
        );
        let problems = judge(&crowded).problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("155 descriptors open after 1000 requests"));

        // Over the bound, but by fewer than the connections abandoned on a quiet server.
        let mut quiet = run_of(
            1000,
            &[(0, 10_000, 10), (100, 30_000, 74), (1000, 30_000, 155)],
        );
        quiet.samples[2].abandoned = 1;
        assert!(judge(&quiet).passed());

        // Within the bound all along, but 21 more open once settled than the idle bound allows.
        let mut leaked = run_of(
            1000,
            &[(0, 10_000, 10), (100, 30_000, 74), (1000, 30_000, 140)],
        );
        leaked.settled.fds = 10 + WORKERS + FD_SLACK + 21;
        let problems = judge(&leaked).problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("111 descriptors open once settled (bound 90"));

        let mut wrong = run_of(
            1000,
            &[(0, 10_000, 10), (100, 30_000, 74), (1000, 30_000, 60)],
        );
        wrong.outcomes[2].count -= 1; // one 503 not retried
        wrong.outcomes.push(Tallied {
            kind: Kind::Retried503,
            outcome: "503 in 3 attempts".to_owned(),
            count: 1,
            first: None,
        });
        wrong.outcomes.push(Tallied {
            kind: Kind::KeepAlive,
            outcome: "error Body in Some(Body)".to_owned(),
            count: 2,
            first: Some("connection closed: reset by peer".to_owned()),
        });
        wrong.outcomes[0].count -= 2;
        let problems = judge(&wrong).problems;
        assert_eq!(
            problems,
            [
                "keep-alive: 958 of 960 ended as expected (200 in 1 attempt)",
                "503, retried: 9 of 10 ended as expected (200 in 2 attempts)",
                "503, retried: 1 ended `503 in 3 attempts`",
                "keep-alive: 2 ended `error Body in Some(Body)` (the first: connection closed: \
                 reset by peer)"
            ]
        );

        let mut short = run_of(
            1000,
            &[(0, 10_000, 10), (100, 30_000, 74), (900, 30_000, 60)],
        );
        short.outcomes[0].count -= 100;
        let problems = judge(&short).problems;
        assert!(problems.iter().any(|p| p == "no sample at the end"));
        assert!(problems
            .iter()
            .any(|p| p == "900 requests ended, 1000 were sent"));
    }

    #[test]
    fn sampling_is_every_50000_or_every_tenth() {
        assert_eq!(sample_interval(1_000_000), 50_000);
        assert_eq!(sample_interval(100_000), 10_000);
        assert_eq!(sample_interval(5), 1);
    }

    #[test]
    fn soak_arguments() {
        assert_eq!(
            options(&args("--soak")).unwrap(),
            Options {
                requests: DEFAULT_REQUESTS,
                backends: BACKENDS.map(str::to_owned).to_vec()
            }
        );
        assert_eq!(options(&args("--soak 100_000")).unwrap().requests, 100_000);
        let picked = options(&args("--soak 5000 --clients keel-smol,keel-isahc")).unwrap();
        assert_eq!((picked.requests, picked.backends.len()), (5000, 2));
        assert_eq!(
            options(&args("--clients keel-hyper --soak"))
                .unwrap()
                .requests,
            DEFAULT_REQUESTS
        );
        assert!(options(&args("--soak 0")).is_err());
        assert!(options(&args("--soak ten")).unwrap_err().contains("ten"));
        assert!(options(&args("--soak --clients reqwest"))
            .unwrap_err()
            .contains("reqwest"));
        assert!(options(&args("--soak --quick"))
            .unwrap_err()
            .contains("--quick"));
    }

    #[test]
    fn the_report_has_a_row_per_backend_and_a_line_per_run() {
        let run = run_of(
            1000,
            &[(0, 10_000, 10), (100, 30_000, 74), (1000, 31_000, 60)],
        );
        let results = vec![
            ("keel-smol".to_owned(), Ok(run)),
            ("keel-isahc".to_owned(), Err("exited with 1".to_owned())),
        ];
        let md = to_markdown(1000, &results);
        assert!(md.contains("| keel-smol@smol | 1000 | 1.0 | 1000 | 9.8 / 29.3 / 30.3 / 30.3 | 1.0 | 10 / 60 / 74 (154) | 50 (90) | pass |"), "{md}");
        assert!(md.contains("| keel-isahc | 1000 | | | | | | | **FAIL**: exited with 1 |"));
        assert!(md.contains("| 1000 | 30.3 / 60 (0) |"));
        assert!(md.contains("The longest time no request finished: 3 ms."));
        let svg = rss_svg(1000, &results);
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains(">keel-smol@smol</text>"));
    }
}
