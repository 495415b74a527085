//! Criterion micro-benches of keel-core's hot paths: building a request, mapping errors, the
//! retry, breaker and rate-limit machines' decisions, and the driver's per-request overhead
//! over a transport that answers from memory (plain, and with a breaker and a rate limit that
//! never trip).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use keel_core::machine::decode::{Coding, ContentDecoder, DecodeLimits};
use keel_core::{
    Backend, Body, BoxFuture, BreakerPolicy, Capabilities, Client, Error, ErrorKind, RateLimit,
    ResponseBody, Sleep, Stage, Timer, Transport, TransportConfig,
};

/// A transport that answers every request at once from memory, so only keel's own work is
/// measured.
#[derive(Debug)]
struct Canned {
    timer: Arc<dyn Timer>,
}

#[derive(Debug)]
struct NoSleep;

impl Timer for NoSleep {
    fn sleep_until(&self, _: Instant) -> Sleep {
        Box::pin(std::future::pending())
    }
}

impl Transport for Canned {
    fn send(
        &self,
        _req: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        Box::pin(std::future::ready(Ok(http::Response::new(
            ResponseBody::full(&b"{\"ok\":true}"[..]),
        ))))
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        &self.timer
    }
}

impl Backend for Canned {
    const NAME: &'static str = "canned";

    fn capabilities() -> Capabilities {
        Capabilities::none()
    }

    fn from_config(_: &TransportConfig) -> Result<Self, Error> {
        Ok(Canned {
            timer: Arc::new(NoSleep),
        })
    }
}

fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    futures_util::FutureExt::now_or_never(fut).expect("the canned transport never waits")
}

fn benches(c: &mut Criterion) {
    let client = Client::<Canned>::builder()
        .base_url("http://127.0.0.1:8080/api/v1")
        .default_header("x-api-key", "secret")
        .build()
        .expect("client builds");

    c.bench_function("request building: get + header + query", |b| {
        b.iter(|| {
            let req = client
                .get(black_box("users/42"))
                .header("x-request-id", "abc")
                .query(&[("page", "2")]);
            black_box(req.url().is_ok())
        })
    });

    c.bench_function("driver: send + bytes over an in-memory transport", |b| {
        b.iter(|| {
            block_on(async {
                let resp = client.get(black_box("users/42")).send().await.unwrap();
                black_box(resp.bytes().await.unwrap())
            })
        })
    });

    // The same client with a circuit breaker (default policy: 5 failures in a row) and a
    // client-wide rate limit of a billion requests per second in bursts of a thousand: every
    // response is a 200, so the breaker stays closed, and the limiter books each attempt at its
    // `now` (a burst's worth of slots spans a microsecond, far more than one iteration takes
    // to book). Both are asked and told on every call, and nothing waits: with the `NoSleep`
    // timer a wait would never end, and `block_on` would panic.
    let guarded = Client::<Canned>::builder()
        .base_url("http://127.0.0.1:8080/api/v1")
        .default_header("x-api-key", "secret")
        .circuit_breaker(BreakerPolicy::default())
        .rate_limit(
            RateLimit::per_second(1_000_000_000)
                .and_then(|limit| limit.burst(1_000))
                .expect("a valid rate limit"),
        )
        .build()
        .expect("client builds");

    c.bench_function(
        "driver: send + bytes, with a breaker and a rate limit that never trip",
        |b| {
            b.iter(|| {
                block_on(async {
                    let resp = guarded.get(black_box("users/42")).send().await.unwrap();
                    black_box(resp.bytes().await.unwrap())
                })
            })
        },
    );

    c.bench_function("error: build, classify and drop a connect error", |b| {
        b.iter(|| {
            let err = Error::new(ErrorKind::Connect)
                .with_stage(Stage::Connect)
                .with_source(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
            black_box((err.is_retryable(), err.is_unsent()))
        })
    });
}

fn retry_machine(c: &mut Criterion) {
    use keel_core::machine::retry::{Outcome, RequestFacts, Retry, RetryAction};
    use keel_core::{RetryBudget, RetryPolicy};

    let policy = RetryPolicy::default();
    let mut budget = RetryBudget::default();
    let method = http::Method::GET;
    let headers = http::HeaderMap::new();
    let facts = RequestFacts::new(&method).with_headers(&headers);
    let start = Instant::now();
    let wall = std::time::SystemTime::now();

    c.bench_function("retry: decide on a 200 (finish)", |b| {
        let mut retry = Retry::new(&policy, start, 7);
        b.iter(|| {
            let outcome = Outcome::Response {
                status: http::StatusCode::OK,
                headers: &headers,
            };
            black_box(retry.on_outcome(start, wall, &facts, black_box(outcome), Some(&mut budget)))
        })
    });

    c.bench_function("retry: decide on a 503 (schedule a retry)", |b| {
        b.iter(|| {
            let mut retry = Retry::new(&policy, start, 7);
            let outcome = Outcome::Response {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                headers: &headers,
            };
            let action = retry.on_outcome(start, wall, &facts, black_box(outcome), None);
            black_box(matches!(action, RetryAction::RetryAt { .. }))
        })
    });

    let mut with_date = http::HeaderMap::new();
    with_date.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("Fri, 31 Dec 1999 23:59:59 GMT"),
    );
    c.bench_function("retry: parse an HTTP-date Retry-After", |b| {
        b.iter(|| {
            black_box(keel_core::machine::retry::retry_after_from_headers(
                black_box(&with_date),
                wall,
            ))
        })
    });
}

fn breaker_machine(c: &mut Criterion) {
    use keel_core::machine::breaker::{Admission, Breaker, CallResult, Window};

    let start = Instant::now();

    // One call through a closed breaker: admitted, then counted as a success. With the default
    // policy only the consecutive-failure rule counts; with a failure-rate rule each result
    // also goes into the window.
    let policies = [
        ("default policy", BreakerPolicy::default()),
        (
            "failure rate over the last 100 calls",
            BreakerPolicy::builder()
                .failure_rate(0.5, Window::Count(100), 20)
                .build()
                .expect("a valid policy"),
        ),
    ];
    for (name, policy) in policies {
        c.bench_function(
            &format!("breaker: closed admit + on_result(success), {name}"),
            |b| {
                let mut breaker = Breaker::new(&policy);
                b.iter(|| {
                    let (Admission::Allowed(ticket), None) = breaker.admit(black_box(start)) else {
                        panic!("a closed breaker admits every call");
                    };
                    black_box(breaker.on_result(ticket, black_box(CallResult::Success), start))
                })
            },
        );
    }

    c.bench_function("breaker: open, admit rejected", |b| {
        let policy = BreakerPolicy::default();
        let mut breaker = Breaker::new(&policy);
        // Five failures in a row open it for 5 s; every admit at `start` is inside the
        // cool-down, so the state never changes.
        for _ in 0..5 {
            let (Admission::Allowed(ticket), _) = breaker.admit(start) else {
                panic!("a closed breaker admits every call");
            };
            let _ = breaker.on_result(ticket, CallResult::Failure, start);
        }
        b.iter(|| {
            let (admission, transition) = breaker.admit(black_box(start));
            assert!(matches!(admission, Admission::Rejected { .. }) && transition.is_none());
            black_box(admission)
        })
    });
}

fn rate_machine(c: &mut Criterion) {
    use keel_core::machine::rate::Gcra;

    let start = Instant::now();
    let limit = RateLimit::per_second(1_000).expect("a valid rate limit");
    let interval = limit.interval();
    // The driver always passes the call's deadline; this one is never reached.
    let deadline = start + Duration::from_secs(1 << 40);

    // Each call comes one interval after the last: it conforms, and goes at once.
    c.bench_function("rate: Gcra::acquire, goes at once", |b| {
        let mut limiter = Gcra::new(limit);
        let mut now = start;
        b.iter(|| {
            now += interval;
            let at = limiter.acquire(black_box(now), Some(deadline));
            assert_eq!(at, Ok(now));
            black_box(at)
        })
    });

    // Every call comes at the same instant: each books the slot one interval after the
    // previous one, so the queue grows by a millisecond per iteration (a few days' worth over
    // a bench run; the cost of a booking doesn't depend on how far ahead it is).
    c.bench_function("rate: Gcra::acquire, books a later slot", |b| {
        let mut limiter = Gcra::new(limit);
        let _ = limiter.acquire(start, None);
        b.iter(|| {
            let at = limiter.acquire(black_box(start), Some(deadline));
            assert!(at.is_ok_and(|at| at > start));
            black_box(at)
        })
    });
}

/// A JSON-like body of `len` bytes: an API answer, compressing about as well as real ones.
fn json_body(len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(len + 128);
    let mut id = 0u64;
    body.push(b'[');
    while body.len() < len {
        id += 1;
        let item = format!(
            "{{\"id\":{id},\"name\":\"user-{}\",\"score\":{},\"active\":{}}},",
            id.wrapping_mul(2654435761) % 100_000,
            id.wrapping_mul(40503) % 1000,
            id % 3 == 0
        );
        body.extend_from_slice(item.as_bytes());
    }
    body.truncate(len);
    body
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Coding::Brotli => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 64 * 1024, 5, 22);
                e.write_all(data).unwrap();
            }
            out
        }
        Coding::Zstd => zstd::encode_all(data, 3).unwrap(),
        _ => unreachable!("no other coding is compiled in"),
    }
}

/// Decoding throughput per codec: an 8 MiB JSON body, fed in 16 KiB chunks (as a connection
/// delivers it) and decoded into the 64 KiB pieces the body reader uses.
fn decode_machine(c: &mut Criterion) {
    let body = json_body(8 << 20);
    let mut group = c.benchmark_group("decode 8 MiB JSON");
    group.throughput(criterion::Throughput::Bytes(body.len() as u64));
    for &coding in Coding::compiled() {
        let encoded = encode(coding, &body);
        group.bench_function(
            format!(
                "{} (ratio {:.1})",
                coding.token(),
                body.len() as f64 / encoded.len() as f64
            ),
            |b| {
                let mut out = vec![0u8; 64 * 1024];
                b.iter(|| {
                    let mut decoder = ContentDecoder::new(&[coding], DecodeLimits::new()).unwrap();
                    let mut decoded = 0usize;
                    for chunk in encoded.chunks(16 * 1024) {
                        let mut input = chunk;
                        loop {
                            let (used, written) = decoder.decode(input, &mut out).unwrap();
                            decoded += written;
                            input = &input[used..];
                            if written == 0 && input.is_empty() {
                                break;
                            }
                        }
                    }
                    loop {
                        let written = decoder.finish(&mut out).unwrap();
                        if written == 0 {
                            break;
                        }
                        decoded += written;
                    }
                    assert_eq!(decoded, body.len());
                    black_box(decoded)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(
    core,
    benches,
    retry_machine,
    breaker_machine,
    rate_machine,
    decode_machine
);
criterion_main!(core);
