//! The trace of one call that was retried and redirected: "why was this call slow?"
//!
//! ```sh
//! cargo run --example trace_call
//! ```
//!
//! keel gives every call a span (`HTTP`) with one child span per attempt (`HTTP attempt`),
//! with OpenTelemetry's HTTP client fields (`http.request.method`, `server.address`,
//! `server.port`, `url.full` with its secrets redacted, `http.response.status_code`,
//! `error.type`, `network.protocol.version`, `http.request.resend_count`), and every decision
//! of a policy as an event on the call's span: each retry and why, each wait and how long,
//! each redirect, hedge and breaker change. Here `tracing-subscriber`'s `fmt` layer prints
//! them; `tracing-opentelemetry` would export the same spans to a collector.
//!
//! The call goes to keel's own test server on 127.0.0.1: its first answer is a `503` with
//! `Retry-After: 1`, its second a `302` to another path, which answers `200`. A hook prints
//! what it sees too, in the order hooks run.

use std::time::Duration;

use keel::hooks::Event;
use keel_conformance::server::{Reply, TestServer};
use tracing_subscriber::fmt::format::FmtSpan;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("keel=debug")
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .init();

    let server = TestServer::start()?;
    let path = server.script(
        "slow-then-moved",
        vec![
            Reply::status(503).header("retry-after", "1"),
            Reply::status(302).header("location", "/status/200"),
        ],
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = keel::Client::builder()
            .base_url(&server.url(""))
            .timeout(Duration::from_secs(10))
            .bearer_auth("never-printed")
            .before_attempt(|attempt, request| {
                println!(
                    "hook: attempt #{} to {}",
                    attempt.number(),
                    keel::redact::url(request.uri())
                );
                Ok(())
            })
            .on_event(|event| match event {
                Event::Retry(retry) => println!(
                    "hook: retry #{} in {:?} because {}",
                    retry.attempt, retry.delay, retry.reason
                ),
                Event::Redirect(redirect) => println!("hook: redirect {}", redirect.hop),
                _ => {}
            })
            .build()?;
        let response = client.get(&path).send().await?;
        println!(
            "{} after {} attempts and {} redirect(s)",
            response.status(),
            response.attempts(),
            response.redirects().len()
        );
        response.bytes().await?;
        Ok::<_, keel::Error>(())
    })?;
    Ok(())
}
