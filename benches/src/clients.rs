//! The clients under test, each on the runtime it is normally used with.
//!
//! "native" clients use the library directly, the way its own documentation does; "keel-*"
//! clients go through keel with its default policies (time limits, body limit) on. Variants
//! ([`VARIANTS`]) are a default client with something added, run only when named, to measure
//! what the addition costs.

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
    "keel-smol",
];

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

/// Runs `scenario` on `client` against the server at `port`; a helper process the client
/// needs (a `redis-server`) is pinned to `helper_cpu` if given.
pub(crate) fn run(
    client: &str,
    scenario: Scenario,
    port: u16,
    helper_cpu: Option<usize>,
) -> Result<Sample, String> {
    let base = format!("http://127.0.0.1:{port}");
    match client {
        "hyper-native" => tokio_current_thread(async {
            let c =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Empty<Bytes>>();
            scenario::run(&HyperNative { client: c, base }, scenario).await
        }),
        "keel-hyper" => tokio_current_thread(async {
            let c = keel_core::Client::<keel_hyper::HyperTransport>::builder()
                .base_url(&base)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(scenario::run(&Keel(c), scenario).await)
        })
        .and_then(|r| r),
        "keel-hyper-nodecode" => tokio_current_thread(async {
            let c = keel_core::Client::<keel_hyper::HyperTransport>::builder()
                .base_url(&base)
                .decompress(false)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(scenario::run(&Keel(c), scenario).await)
        })
        .and_then(|r| r),
        "keel-hyper-guarded" => tokio_current_thread(async {
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
            tokio_current_thread(async {
                let c = redis_limited_client(&redis.url(), lease, &base)?;
                Ok(scenario::run(&WithRedis(Keel(c), &redis), scenario).await)
            })
            .and_then(|r| r)
        }
        "reqwest" => tokio_current_thread(async {
            let c = reqwest::Client::builder()
                .build()
                .map_err(|e| e.to_string())?;
            Ok(scenario::run(&Reqwest { client: c, base }, scenario).await)
        })
        .and_then(|r| r),
        "isahc-native" => {
            let client = isahc::HttpClient::new().map_err(|e| e.to_string())?;
            Ok(smol::block_on(scenario::run(
                &IsahcNative { client, base },
                scenario,
            )))
        }
        "keel-isahc" => smol::block_on(async {
            let c = keel_core::Client::<keel_isahc::IsahcTransport>::builder()
                .base_url(&base)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(scenario::run(&Keel(c), scenario).await)
        }),
        "smol-native" => {
            let ex = std::rc::Rc::new(smol::LocalExecutor::new());
            let client = SmolNative {
                ex: ex.clone(),
                addr: ([127, 0, 0, 1], port).into(),
                host: http::HeaderValue::from_str(&format!("127.0.0.1:{port}"))
                    .map_err(|e| e.to_string())?,
                idle: std::cell::RefCell::new(Vec::new()),
            };
            Ok(smol::block_on(
                ex.run(async { scenario::run(&client, scenario).await }),
            ))
        }
        "keel-smol" => smol::block_on(async {
            let c = keel_core::Client::<keel_smol::SmolTransport>::builder()
                .base_url(&base)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(scenario::run(&Keel(c), scenario).await)
        }),
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

/// hyper's HTTP/1.1 client connections over smol's TCP (through the `smol-hyper` adapter),
/// with the minimal pool a user would write: idle senders in a Vec, connection tasks on a
/// local executor.
struct SmolNative {
    ex: std::rc::Rc<smol::LocalExecutor<'static>>,
    addr: std::net::SocketAddr,
    host: http::HeaderValue,
    idle: std::cell::RefCell<Vec<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>,
}

impl SmolNative {
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
        let stream = smol::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(smol_hyper::rt::FuturesIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        self.ex
            .spawn(async move {
                let _ = conn.await;
            })
            .detach();
        Ok(sender)
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

impl Fetch for SmolNative {
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

fn tokio_current_thread<F: std::future::Future>(fut: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(rt.block_on(fut))
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
