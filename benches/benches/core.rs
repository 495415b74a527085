//! Criterion micro-benches of keel-core's hot paths: building a request, mapping errors, and
//! the driver's per-request overhead over a transport that answers from memory.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use keel_core::{
    Backend, Body, BoxFuture, Capabilities, Client, Error, ErrorKind, ResponseBody, Sleep, Stage,
    Timer, Transport, TransportConfig,
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

criterion_group!(core, benches, retry_machine);
criterion_main!(core);
