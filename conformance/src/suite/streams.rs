//! Bodies read as streams of something: server-sent events that reconnect, and NDJSON, over
//! each backend against a server that cuts its event streams on purpose.

use std::time::Duration;

use futures_util::StreamExt as _;
use keel_core::{Backend, EndReason, RetryPolicy};
use serde::Deserialize;

use super::{CaseResult, Cx, Outcome};
use crate::ensure;

/// An event stream the server cuts twice in the middle of an event delivers every event
/// exactly once, in order: each reconnection sends the right `Last-Event-ID` (the server
/// refuses any other with a 400, which would end the stream with an error), and the `204`
/// at the end stops it.
pub async fn sse_reconnects_with_the_last_event_id<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().build()?;
    let mut events = client.get("/sse/feed?events=10&per=4").event_source();
    let mut ids = Vec::new();
    while let Some(event) = events.next().await {
        let event = event?;
        ensure!(
            event.data == format!("event {}", event.id.as_deref().unwrap_or("?")),
            "event {:?} with data {:?}",
            event.id,
            event.data
        );
        ids.push(event.id.as_deref().unwrap_or("?").to_owned());
    }
    let want: Vec<String> = (1..=10).map(|k| k.to_string()).collect();
    ensure!(ids == want, "got the events {ids:?}");
    ensure!(
        events.end_reason() == Some(EndReason::NoContent),
        "ended with {:?}",
        events.end_reason()
    );
    // Three connections of events (two cut, one clean), and the one answered 204.
    ensure!(
        cx.server.requests_to("/sse/feed") == 4,
        "{} connections",
        cx.server.requests_to("/sse/feed")
    );
    Ok(Outcome::Pass)
}

/// A streamed chat completion: a `POST` with a JSON body answered with an event stream,
/// read as typed events until `[DONE]`; the request is sent once.
pub async fn sse_post_streams_a_completion<T: Backend>(cx: Cx<T>) -> CaseResult {
    #[derive(Deserialize)]
    struct Token {
        token: String,
    }
    let client = cx.builder().retry_policy(RetryPolicy::disabled()).build()?;
    let mut events = client
        .post("/sse/chat")
        .json(&serde_json::json!({ "prompt": "the quick brown fox", "stream": true }))
        .event_source();
    let mut text = String::new();
    while let Some(event) = events.next().await {
        let event = event?;
        if event.data == "[DONE]" {
            break;
        }
        text.push_str(&event.json::<Token>()?.token);
    }
    ensure!(text == "the quick brown fox ", "streamed {text:?}");
    // The stream ends with the body: a POST is not sent again.
    ensure!(
        events.next().await.is_none(),
        "the stream went on after the body ended"
    );
    ensure!(
        cx.server.requests_to("/sse/chat") == 1,
        "{} requests",
        cx.server.requests_to("/sse/chat")
    );
    Ok(Outcome::Pass)
}

/// 100,000 NDJSON lines (about 1.3 MB) read as typed values by a client whose buffered-read
/// limit is 64 KiB: the stream holds one line at a time, never the body.
pub async fn ndjson_streams_100k_lines<T: Backend>(cx: Cx<T>) -> CaseResult {
    #[derive(Deserialize)]
    struct Line {
        n: u64,
    }
    let client = cx
        .builder()
        .max_body_size(64 * 1024)
        .read_idle_timeout(Duration::from_secs(10))
        .build()?;
    let resp = client.get("/ndjson?lines=100000").send().await?;
    let mut values = resp.ndjson::<Line>();
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some(line) = values.next().await {
        let line = line?;
        ensure!(line.n == count, "line {count} said {}", line.n);
        count += 1;
        sum += line.n;
    }
    ensure!(count == 100_000, "{count} lines");
    ensure!(sum == 99_999 * 100_000 / 2, "sum {sum}");
    Ok(Outcome::Pass)
}
