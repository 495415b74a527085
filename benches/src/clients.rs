//! The clients under test, and the runtimes they run on.
//!
//! "native" clients use the library directly, the way its own documentation does; "keel-*"
//! clients go through keel with its default policies (time limits, body limit) on. Variants
//! ([`VARIANTS`]) are a default client with something added, run only when named, to measure
//! what the addition costs.
//!
//! A *pair* is a client on a host [`Runtime`], written `client@runtime`. Every client has a
//! home runtime ([`home`]: the one it is normally used with), and [`MATRIX`] lists every pair
//! the conformance suite runs plus the native floor a user on that runtime would otherwise
//! write ([`floor_of`]).

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};

use crate::redis_server::RedisServer;
use crate::scenario::{self, Fetch, Sample, Scenario};

/// Every client name the benchmark knows, in report order.
pub(crate) const ALL: &[&str] = &[
    "hyper-native",
    "keel-hyper",
    "reqwest",
    "isahc-native",
    "keel-isahc",
    "smol-native",
    "async-std-native",
    "keel-smol",
];

/// A host runtime a client runs on: the executor that polls the scenario's one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// tokio's current-thread runtime, I/O and time enabled.
    Tokio,
    /// tokio's multi-thread runtime, as `#[tokio::main]` builds it (the scenario runs in
    /// `block_on` on the main thread; spawned tasks run on the workers).
    TokioMt,
    /// `smol::block_on` (async-io's `block_on`: this thread drives the reactor).
    Smol,
    /// `async_std::task::block_on`.
    AsyncStd,
    /// No async runtime: `futures::executor::block_on` on a plain thread.
    Plain,
}

impl Runtime {
    /// Every runtime, in report order.
    pub(crate) const ALL: [Runtime; 5] = [
        Runtime::Tokio,
        Runtime::TokioMt,
        Runtime::Smol,
        Runtime::AsyncStd,
        Runtime::Plain,
    ];

    /// The name used in pair names and reports (as the conformance scorecard names it).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::TokioMt => "tokio-mt",
            Runtime::Smol => "smol",
            Runtime::AsyncStd => "async-std",
            Runtime::Plain => "no-runtime",
        }
    }

    /// The runtime called `name`.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Runs `fut` to completion on this runtime, on the calling thread.
    pub(crate) fn block_on<F: std::future::Future>(self, fut: F) -> Result<F::Output, String> {
        Ok(match self {
            Runtime::Tokio => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(fut),
            Runtime::TokioMt => tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(fut),
            Runtime::Smol => smol::block_on(fut),
            Runtime::AsyncStd => async_std::task::block_on(fut),
            Runtime::Plain => futures_executor::block_on(fut),
        })
    }
}

/// Every (client, runtime) pair of the runtime matrix, in report order: grouped by runtime,
/// each group's native floor first. The keel pairs are the conformance suite's pairs.
pub(crate) const MATRIX: &[(&str, Runtime)] = &[
    ("hyper-native", Runtime::Tokio),
    ("keel-hyper", Runtime::Tokio),
    ("reqwest", Runtime::Tokio),
    ("keel-smol", Runtime::Tokio),
    ("isahc-native", Runtime::Tokio),
    ("keel-isahc", Runtime::Tokio),
    ("hyper-native", Runtime::TokioMt),
    ("keel-hyper", Runtime::TokioMt),
    ("keel-smol", Runtime::TokioMt),
    ("smol-native", Runtime::Smol),
    ("keel-smol", Runtime::Smol),
    ("isahc-native", Runtime::Smol),
    ("keel-isahc", Runtime::Smol),
    ("async-std-native", Runtime::AsyncStd),
    ("keel-smol", Runtime::AsyncStd),
    ("isahc-native", Runtime::AsyncStd),
    ("keel-isahc", Runtime::AsyncStd),
    ("smol-native", Runtime::Plain),
    ("keel-smol", Runtime::Plain),
    ("isahc-native", Runtime::Plain),
    ("keel-isahc", Runtime::Plain),
];

/// The runtime `client` is normally used with: its pair when named without `@runtime`.
pub(crate) fn home(client: &str) -> Runtime {
    match client {
        "isahc-native" | "keel-isahc" | "smol-native" | "keel-smol" => Runtime::Smol,
        "async-std-native" => Runtime::AsyncStd,
        _ => Runtime::Tokio,
    }
}

/// Whether `client` can run on `runtime` at all: hyper-util, reqwest and the variants need
/// tokio; the raw hyper-over-TCP clients need their runtime's sockets and spawner.
pub(crate) fn supports(client: &str, runtime: Runtime) -> bool {
    match client {
        "hyper-native" | "keel-hyper" => matches!(runtime, Runtime::Tokio | Runtime::TokioMt),
        "smol-native" => matches!(runtime, Runtime::Smol | Runtime::Plain),
        "async-std-native" => runtime == Runtime::AsyncStd,
        "isahc-native" | "keel-isahc" | "keel-smol" => true,
        other => is_known(other) && runtime == home(other),
    }
}

/// The native floor of `client` on `runtime`: what a user on that runtime would otherwise
/// write. keel-isahc's is raw isahc on the same runtime; every other client's is the runtime's
/// own hyper (hyper-util on tokio, hyper over smol's TCP on smol and with no runtime, hyper over
/// async-std's TCP on async-std). `None` for a floor itself.
pub(crate) fn floor_of(client: &str, runtime: Runtime) -> Option<(&'static str, Runtime)> {
    let own = match runtime {
        Runtime::Tokio | Runtime::TokioMt => "hyper-native",
        Runtime::Smol | Runtime::Plain => "smol-native",
        Runtime::AsyncStd => "async-std-native",
    };
    let floor = match client {
        "keel-isahc" => "isahc-native",
        _ => own,
    };
    (floor != client).then_some((floor, runtime))
}

/// Parses `client` or `client@runtime` into a supported pair (a bare client is on its home
/// runtime).
pub(crate) fn parse_pair(pair: &str) -> Result<(&str, Runtime), String> {
    let (client, runtime) = match pair.split_once('@') {
        Some((client, rt)) => (
            client,
            Runtime::parse(rt).ok_or_else(|| {
                format!(
                    "unknown runtime `{rt}` (known: {})",
                    Runtime::ALL.map(Runtime::name).join(",")
                )
            })?,
        ),
        None => (pair, home(pair)),
    };
    if !is_known(client) {
        return Err(format!("unknown client `{client}`"));
    }
    if !supports(client, runtime) {
        return Err(format!("{client} does not run on {}", runtime.name()));
    }
    Ok((client, runtime))
}

/// The name of a pair: `client@runtime`.
pub(crate) fn pair_name(client: &str, runtime: Runtime) -> String {
    format!("{client}@{}", runtime.name())
}

/// The pairs `--pairs` names: each entry is `client@runtime`, where either side may be `*`
/// (every pair of [`MATRIX`] that matches), or an exact supported pair outside the matrix.
pub(crate) fn select_pairs(list: &str) -> Result<Vec<(String, Runtime)>, String> {
    let mut out: Vec<(String, Runtime)> = Vec::new();
    for entry in list.split(',').filter(|e| !e.is_empty()) {
        let (client, rt) = entry.split_once('@').unwrap_or((entry, "*"));
        if client == "*" || rt == "*" {
            if client != "*" && !is_known(client) {
                return Err(format!("unknown client `{client}`"));
            }
            if rt != "*" && Runtime::parse(rt).is_none() {
                return Err(format!(
                    "unknown runtime `{rt}` (known: {})",
                    Runtime::ALL.map(Runtime::name).join(",")
                ));
            }
            let matched: Vec<_> = MATRIX
                .iter()
                .filter(|(c, r)| (client == "*" || *c == client) && (rt == "*" || r.name() == rt))
                .collect();
            if matched.is_empty() {
                return Err(format!("`{entry}` matches no pair of the matrix"));
            }
            for (c, r) in matched {
                if !out.iter().any(|(oc, or)| oc == c && or == r) {
                    out.push(((*c).to_owned(), *r));
                }
            }
        } else {
            let (c, r) = parse_pair(entry)?;
            if !out.iter().any(|(oc, or)| oc == c && *or == r) {
                out.push((c.to_owned(), r));
            }
        }
    }
    Ok(out)
}

/// Clients run only when named with `--clients`: each is a default client with something
/// added, reported beside it (see [`base_of`]).
///
/// - `keel-hyper-guarded`: `keel-hyper` with a circuit breaker and a client-wide rate limit
///   that never trip (see [`guarded`]), for the per-request cost of asking and telling them.
/// - `keel-hyper-nodecode`: `keel-hyper` with decompression off (no `Accept-Encoding` sent),
///   for the per-request cost of asking for compressed answers.
/// - `keel-hyper-redis`, `keel-hyper-redis-nolease`: `keel-hyper` with a fleet rate limit in
///   a `redis-server` of the client process's own, that never makes a request wait, booking
///   10 slots per round trip or 1 (a round trip per request); see [`redis_limited_client`].
pub(crate) const VARIANTS: &[&str] = &[
    "keel-hyper-guarded",
    "keel-hyper-nodecode",
    "keel-hyper-redis",
    "keel-hyper-redis-nolease",
];

/// Whether the benchmark knows `client`, as a default client or a variant.
pub(crate) fn is_known(client: &str) -> bool {
    ALL.contains(&client) || VARIANTS.contains(&client)
}

/// Where `client` goes in the report: the default clients in [`ALL`]'s order, then the
/// variants, then anything else.
pub(crate) fn rank(client: &str) -> usize {
    ALL.iter()
        .chain(VARIANTS)
        .position(|c| *c == client)
        .unwrap_or(usize::MAX)
}

/// For a variant, the default client it adds to.
pub(crate) fn base_of(variant: &str) -> Option<&'static str> {
    match variant {
        "keel-hyper-guarded"
        | "keel-hyper-nodecode"
        | "keel-hyper-redis"
        | "keel-hyper-redis-nolease" => Some("keel-hyper"),
        _ => None,
    }
}

/// For a keel client, the native client it wraps.
pub(crate) fn native_of(client: &str) -> Option<&'static str> {
    match client {
        "keel-hyper" => Some("hyper-native"),
        "keel-isahc" => Some("isahc-native"),
        "keel-smol" => Some("smol-native"),
        _ => None,
    }
}

/// Runs `scenario` on `client` on `runtime` against the server at `port`; a helper process the
/// client needs (a `redis-server`) is pinned to `helper_cpu` if given.
pub(crate) fn run(
    client: &str,
    runtime: Runtime,
    scenario: Scenario,
    port: u16,
    helper_cpu: Option<usize>,
) -> Result<Sample, String> {
    if !supports(client, runtime) {
        return Err(format!("{client} does not run on {}", runtime.name()));
    }
    let base = format!("http://127.0.0.1:{port}");
    match client {
        "hyper-native" => runtime.block_on(async {
            let c =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Empty<Bytes>>();
            scenario::run(&HyperNative { client: c, base }, scenario).await
        }),
        "keel-hyper" => runtime
            .block_on(async {
                let c = keel_core::Client::<keel_hyper::HyperTransport>::builder()
                    .base_url(&base)
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(scenario::run(&Keel(c), scenario).await)
            })
            .and_then(|r| r),
        "keel-hyper-nodecode" => runtime
            .block_on(async {
                let c = keel_core::Client::<keel_hyper::HyperTransport>::builder()
                    .base_url(&base)
                    .decompress(false)
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(scenario::run(&Keel(c), scenario).await)
            })
            .and_then(|r| r),
        "keel-hyper-guarded" => runtime
            .block_on(async {
                let c = guarded(keel_core::Client::<keel_hyper::HyperTransport>::builder())?
                    .base_url(&base)
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(scenario::run(&Keel(c), scenario).await)
            })
            .and_then(|r| r),
        "keel-hyper-redis" | "keel-hyper-redis-nolease" => {
            let lease = if client == "keel-hyper-redis" { 10 } else { 1 };
            // Dropped (killed) when this arm ends, on error too, after the client.
            let redis = RedisServer::start(helper_cpu)?;
            runtime
                .block_on(async {
                    let c = redis_limited_client(&redis.url(), lease, &base)?;
                    Ok(scenario::run(&WithRedis(Keel(c), &redis), scenario).await)
                })
                .and_then(|r| r)
        }
        "reqwest" => runtime
            .block_on(async {
                let c = reqwest::Client::builder()
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(scenario::run(&Reqwest { client: c, base }, scenario).await)
            })
            .and_then(|r| r),
        "isahc-native" => {
            let client = isahc::HttpClient::new().map_err(|e| e.to_string())?;
            runtime.block_on(scenario::run(&IsahcNative { client, base }, scenario))
        }
        "keel-isahc" => runtime
            .block_on(async {
                let c = keel_core::Client::<keel_isahc::IsahcTransport>::builder()
                    .base_url(&base)
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(scenario::run(&Keel(c), scenario).await)
            })
            .and_then(|r| r),
        "smol-native" => {
            let ex = std::rc::Rc::new(smol::LocalExecutor::new());
            let client = RawHyper::new(Spawner::Local(ex.clone()), port)?;
            runtime.block_on(ex.run(async { scenario::run(&client, scenario).await }))
        }
        "async-std-native" => {
            let client = RawHyper::new(Spawner::AsyncStd, port)?;
            runtime.block_on(scenario::run(&client, scenario))
        }
        "keel-smol" => runtime
            .block_on(async {
                let c = keel_core::Client::<keel_smol::SmolTransport>::builder()
                    .base_url(&base)
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(scenario::run(&Keel(c), scenario).await)
            })
            .and_then(|r| r),
        other => Err(format!("unknown client {other}")),
    }
}

/// Adds what `keel-hyper-guarded` adds to `keel-hyper`: a circuit breaker per origin with the
/// default policy (it opens after 5 failures in a row; the benchmark server never fails), and
/// a client-wide rate limit of a billion requests per second in bursts of a thousand.
///
/// The limiter books every attempt at its `now` and never makes one wait: a burst's worth of
/// slots spans a microsecond, and one client on one thread can't start a thousand requests in a
/// microsecond. So both are asked before and told after every attempt, as when they matter,
/// and nothing else changes.
fn guarded<T: keel_core::Backend>(
    builder: keel_core::ClientBuilder<T>,
) -> Result<keel_core::ClientBuilder<T>, String> {
    let limit = keel_core::RateLimit::per_second(1_000_000_000)
        .and_then(|limit| limit.burst(1_000))
        .map_err(|e| e.to_string())?;
    Ok(builder
        .circuit_breaker(keel_core::BreakerPolicy::default())
        .rate_limit(limit))
}

/// `keel-hyper` with a fleet rate limit kept in the Redis at `redis_url`, booking `lease`
/// slots per round trip, under a quota name of this run's own.
///
/// The quota, a million per second in bursts of a million, never makes a request wait: Redis
/// books slots 1 µs apart, up to a second ahead of its clock, and the process places each
/// granted slot at the instant the reply arrived (earlier ones are "now"). So what the variant
/// adds is the round trips themselves: one per `lease` requests, on the `blocking` thread
/// pool, each a loopback exchange and a run of the Lua script.
fn redis_limited_client(
    redis_url: &str,
    lease: u32,
    base: &str,
) -> Result<keel_core::Client<keel_hyper::HyperTransport>, String> {
    let limit = keel_core::RateLimit::per_second(1_000_000)
        .and_then(|limit| limit.burst(1_000_000))
        .map_err(|e| e.to_string())?;
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "keel-benches-{}-{}",
        std::process::id(),
        since_epoch.as_nanos()
    );
    let store = keel_redis::RedisStore::builder(redis_url, name)
        .lease(lease)
        .build()
        .map_err(|e| e.to_string())?;
    keel_core::Client::<keel_hyper::HyperTransport>::builder()
        .base_url(base)
        .state_store(store)
        .rate_limit(limit)
        .build()
        .map_err(|e| e.to_string())
}

/// A client that depends on a `redis-server` of its own: reports the server's CPU time.
struct WithRedis<'a, F>(F, &'a RedisServer);

impl<F: Fetch> Fetch for WithRedis<'_, F> {
    async fn fetch_bytes(&self, path: &str) -> Result<u64, String> {
        self.0.fetch_bytes(path).await
    }

    async fn fetch_stream(&self, path: &str) -> Result<u64, String> {
        self.0.fetch_stream(path).await
    }

    fn helper_cpu_time_us(&self) -> Option<f64> {
        Some(self.1.cpu_time_us())
    }
}

/// isahc used as its documentation shows: one `HttpClient`, default settings.
struct IsahcNative {
    client: isahc::HttpClient,
    base: String,
}

impl Fetch for IsahcNative {
    async fn fetch_bytes(&self, path: &str) -> Result<u64, String> {
        use futures_lite::AsyncReadExt as _;
        let mut resp = self
            .client
            .get_async(format!("{}{path}", self.base))
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        resp.body_mut()
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok(buf.len() as u64)
    }

    async fn fetch_stream(&self, path: &str) -> Result<u64, String> {
        use futures_lite::AsyncReadExt as _;
        let mut resp = self
            .client
            .get_async(format!("{}{path}", self.base))
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0;
        loop {
            match resp
                .body_mut()
                .read(&mut buf)
                .await
                .map_err(|e| e.to_string())?
            {
                0 => return Ok(n),
                k => n += k as u64,
            }
        }
    }
}

/// Where [`RawHyper`] opens connections and runs their tasks.
enum Spawner {
    /// smol's TCP (async-io), connection tasks on a local executor the scenario runs inside.
    Local(std::rc::Rc<smol::LocalExecutor<'static>>),
    /// async-std's TCP, connection tasks spawned with `async_std::task::spawn` (on async-std's
    /// executor threads), as an async-std user writes it.
    AsyncStd,
}

/// hyper's HTTP/1.1 client connections over a runtime's own TCP (through the `smol-hyper`
/// adapter, for futures-io streams), with the minimal pool a user would write: idle senders in
/// a Vec, connection tasks on the runtime's spawner. `smol-native` is this on smol's TCP,
/// `async-std-native` on async-std's.
struct RawHyper {
    spawner: Spawner,
    addr: std::net::SocketAddr,
    host: http::HeaderValue,
    idle: std::cell::RefCell<Vec<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>,
}

impl RawHyper {
    fn new(spawner: Spawner, port: u16) -> Result<Self, String> {
        Ok(Self {
            spawner,
            addr: ([127, 0, 0, 1], port).into(),
            host: http::HeaderValue::from_str(&format!("127.0.0.1:{port}"))
                .map_err(|e| e.to_string())?,
            idle: std::cell::RefCell::new(Vec::new()),
        })
    }

    async fn sender(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
        loop {
            let pooled = self.idle.borrow_mut().pop();
            match pooled {
                Some(s) if !s.is_closed() => return Ok(s),
                Some(_) => continue,
                None => break,
            }
        }
        match &self.spawner {
            Spawner::Local(ex) => {
                let stream = smol::net::TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(smol_hyper::rt::FuturesIo::new(stream))
                        .await
                        .map_err(|e| e.to_string())?;
                ex.spawn(async move {
                    let _ = conn.await;
                })
                .detach();
                Ok(sender)
            }
            Spawner::AsyncStd => {
                let stream = async_std::net::TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(smol_hyper::rt::FuturesIo::new(stream))
                        .await
                        .map_err(|e| e.to_string())?;
                async_std::task::spawn(async move {
                    let _ = conn.await;
                });
                Ok(sender)
            }
        }
    }

    async fn get(
        &self,
        path: &str,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
            hyper::body::Incoming,
        ),
        String,
    > {
        let mut sender = self.sender().await?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::get(path)
            .header(http::header::HOST, self.host.clone())
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok((sender, resp.into_body()))
    }
}

impl Fetch for RawHyper {
    async fn fetch_bytes(&self, path: &str) -> Result<u64, String> {
        let (sender, body) = self.get(path).await?;
        let body = body.collect().await.map_err(|e| e.to_string())?;
        self.idle.borrow_mut().push(sender);
        Ok(body.to_bytes().len() as u64)
    }

    async fn fetch_stream(&self, path: &str) -> Result<u64, String> {
        let (sender, mut body) = self.get(path).await?;
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
                n += data.len() as u64;
            }
        }
        self.idle.borrow_mut().push(sender);
        Ok(n)
    }
}

struct HyperNative {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Empty<Bytes>,
    >,
    base: String,
}

impl Fetch for HyperNative {
    async fn fetch_bytes(&self, path: &str) -> Result<u64, String> {
        let uri: http::Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let resp = self.client.get(uri).await.map_err(|e| e.to_string())?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(body.to_bytes().len() as u64)
    }

    async fn fetch_stream(&self, path: &str) -> Result<u64, String> {
        let uri: http::Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| format!("{e}"))?;
        let mut body = self
            .client
            .get(uri)
            .await
            .map_err(|e| e.to_string())?
            .into_body();
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
                n += data.len() as u64;
            }
        }
        Ok(n)
    }
}

struct Keel<T>(keel_core::Client<T>);

impl<T: keel_core::Transport> Fetch for Keel<T> {
    async fn fetch_bytes(&self, path: &str) -> Result<u64, String> {
        let resp = self.0.get(path).send().await.map_err(|e| e.to_string())?;
        Ok(resp.bytes().await.map_err(|e| e.to_string())?.len() as u64)
    }

    async fn fetch_stream(&self, path: &str) -> Result<u64, String> {
        let mut resp = self
            .0
            .get(path)
            .deadline(std::time::Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}

struct Reqwest {
    client: reqwest::Client,
    base: String,
}

impl Fetch for Reqwest {
    async fn fetch_bytes(&self, path: &str) -> Result<u64, String> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.bytes().await.map_err(|e| e.to_string())?.len() as u64)
    }

    async fn fetch_stream(&self, path: &str) -> Result<u64, String> {
        let mut resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}
