//! A streamed chat completion, as the language-model APIs serve them: `POST` a JSON body,
//! read the answer as server-sent events, one token at a time, until `[DONE]`.
//!
//! ```sh
//! cargo run --example chat_stream -- "why is the sky blue"
//! ```
//!
//! It talks to keel's own test server on 127.0.0.1 (its `/sse/chat` route answers like
//! those APIs: `data: {"token":"..."}` events, then `data: [DONE]`), so it runs anywhere. Point
//! `base_url` at a real API, add its `bearer_auth`, and the loop is the same.

use std::io::Write as _;

use futures_util::StreamExt as _;
use keel::{BreakerPolicy, RetryPolicy};
use serde::Deserialize;

/// One streamed event's data.
#[derive(Deserialize)]
struct Chunk {
    token: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prompt = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let prompt = if prompt.is_empty() {
        "tell me about keel".to_owned()
    } else {
        prompt
    };
    let server = keel_conformance::server::TestServer::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = keel::Client::builder()
            .base_url(&server.url(""))
            .bearer_auth("sk-test")
            // A completion is not idempotent: a failed POST is not sent again.
            .retry_policy(RetryPolicy::default())
            .circuit_breaker(BreakerPolicy::default())
            .build()?;
        let mut events = client
            .post("/sse/chat")
            .json(&serde_json::json!({
                "model": "keel-test",
                "stream": true,
                "prompt": prompt,
            }))
            .event_source();
        let mut stdout = std::io::stdout();
        let mut tokens = 0;
        while let Some(event) = events.next().await {
            let event = event?;
            if event.data == "[DONE]" {
                break;
            }
            let chunk: Chunk = event.json()?;
            print!("{}", chunk.token);
            stdout.flush()?;
            tokens += 1;
        }
        println!("\n({tokens} tokens)");
        Ok(())
    })
}
