//! Paginated listings as streams of typed items, over each backend, against a server that
//! paginates a 10,000-item collection in each common style.

use futures_util::StreamExt as _;
use keel_core::machine::paginate::{Checkpoint, Next, Strategy};
use keel_core::{Backend, Client, ErrorKind};
use serde::Deserialize;

use super::{CaseResult, Cx, Outcome};
use crate::ensure;

#[derive(Deserialize)]
struct Item {
    id: u64,
}

/// Reads every item of a listing, checking they come once each, in order.
async fn read_all<T: Backend>(
    client: &Client<T>,
    path: &str,
    strategy: Strategy,
    items_at: Option<&str>,
) -> Result<(u64, u64), super::Failure> {
    let request = client.get(path).build()?;
    let mut items = client.paginate::<Item>(request, strategy);
    if let Some(pointer) = items_at {
        items = items.items_at(pointer);
    }
    let mut seen = 0u64;
    while let Some(item) = items.next().await {
        let item = item?;
        ensure!(item.id == seen, "item {seen} had id {}", item.id);
        seen += 1;
    }
    Ok((seen, items.pages_done()))
}

/// GitHub style: 10,000 items over 100 pages of `Link: <...>; rel="next"`.
pub async fn paginate_link_header<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().build()?;
    let (items, pages) = read_all(
        &client,
        "/collection?style=link&per=100",
        Strategy::link_header(),
        None,
    )
    .await?;
    ensure!(
        items == 10_000 && pages == 100,
        "{items} items in {pages} pages"
    );
    ensure!(
        cx.server.requests_to("/collection") == 100,
        "{} requests",
        cx.server.requests_to("/collection")
    );
    Ok(Outcome::Pass)
}

/// Slack style cursors, a next URL in the body, offset/limit with a total, page numbers with
/// a total-pages field, Stripe's `has_more` + the last item's id, and a custom rule: each
/// reads the 10,000 items once, in order.
pub async fn paginate_body_strategies<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().build()?;
    let cases = [
        (
            "/collection?style=cursor&per=250",
            Strategy::cursor("/next_cursor", "cursor"),
            Some("/data"),
        ),
        (
            "/collection?style=next&per=250",
            Strategy::next_url("/links/next"),
            Some("/data"),
        ),
        (
            "/collection?style=offset",
            Strategy::offset("offset", "limit", 250).with_total("/total"),
            Some("/results"),
        ),
        (
            "/collection?style=page&per=250",
            Strategy::page_number("page", 1).with_total("/total_pages"),
            Some("/items"),
        ),
        (
            "/collection?style=stripe&per=250",
            Strategy::cursor_from_last_item("/has_more", "/id", "starting_after"),
            Some("/data"),
        ),
        (
            // Anything else: the caller's own rule (here, page numbers until a short page).
            "/collection?style=page&per=250&page=1",
            Strategy::custom(|page| {
                let number: u64 = page
                    .url()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("page=")))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                match page.items().len() {
                    250 => keel_core::machine::paginate::set_query_param(
                        page.url(),
                        "page",
                        &(number + 1).to_string(),
                    )
                    .map_or(Next::Done, Next::Page),
                    _ => Next::Done,
                }
            }),
            Some("/items"),
        ),
    ];
    for (path, strategy, items_at) in cases {
        let (items, pages) = read_all(&client, path, strategy, items_at).await?;
        // The custom rule only knows it is done at a short page: one more, empty.
        let want = if path.ends_with("page=1") { 41 } else { 40 };
        ensure!(
            items == 10_000 && pages == want,
            "{path}: {items} items in {pages} pages"
        );
    }
    Ok(Outcome::Pass)
}

/// A next link back to a page already fetched is an error naming the page, after the items of
/// the pages before it; a stream dropped mid-page resumes from its checkpoint with exactly the
/// rest.
pub async fn paginate_cycle_and_resume<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.builder().build()?;
    let request = client.get("/collection?style=cycle&per=10").build()?;
    let mut items = client.paginate::<Item>(request, Strategy::link_header());
    let mut seen = 0;
    let err = loop {
        match items.next().await {
            Some(Ok(_)) => seen += 1,
            Some(Err(err)) => break err,
            None => return Err(super::Failure("the cycle was not noticed".into())),
        }
    };
    ensure!(seen == 30, "{seen} items before the error");
    ensure!(err.kind() == ErrorKind::Decode, "kind {:?}", err.kind());
    let message = std::error::Error::source(&err).map(ToString::to_string);
    ensure!(
        message.as_deref().is_some_and(|m| m.contains("page 3")),
        "the error doesn't name the page: {message:?}"
    );

    // Take 1,234 items (the middle of page 13), drop the stream, store the checkpoint.
    let request = client.get("/collection?style=link&per=100").build()?;
    let mut items = client.paginate::<Item>(request, Strategy::link_header());
    for k in 0..1_234 {
        let item = items.next().await.ok_or("ended early")??;
        ensure!(item.id == k, "item {k} had id {}", item.id);
    }
    let stored = serde_json::to_string(&items.checkpoint())?;
    drop(items);
    let checkpoint: Checkpoint = serde_json::from_str(&stored)?;
    let template = client.get("/").build()?;
    let mut rest = client.resume_paginate::<Item>(template, Strategy::link_header(), &checkpoint);
    let mut next = 1_234;
    while let Some(item) = rest.next().await {
        let item = item?;
        ensure!(item.id == next, "resumed item {next} had id {}", item.id);
        next += 1;
    }
    ensure!(next == 10_000, "the resumed stream ended at {next}");
    Ok(Outcome::Pass)
}
