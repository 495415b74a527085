//! Paginated listings read as streams, on the in-memory transport.

use futures_util::StreamExt as _;

use super::*;
use crate::machine::paginate::Strategy;

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Item {
    id: u64,
}

fn page(ids: std::ops::Range<u64>, next: Option<&'static str>) -> Reply {
    let body: Vec<_> = ids.map(|id| serde_json::json!({ "id": id })).collect();
    let reply = Reply::status(200).chunk(serde_json::to_vec(&body).unwrap());
    match next {
        Some(link) => reply.header("link", link),
        None => reply,
    }
}

#[test]
fn pages_are_fetched_only_when_the_consumer_reads_past_one() {
    let c = client_with("http://h");
    let m = mock(&c);
    m.push(page(0..3, Some("</items?page=2>; rel=\"next\"")));
    m.push(page(3..5, None));
    let request = c.get("items").build().unwrap();
    let mut items = c.paginate::<Item>(request, Strategy::link_header());
    let first = m.run(items.next()).unwrap().unwrap();
    assert_eq!(first, Item { id: 0 });
    assert_eq!(m.request_count(), 1, "the second page is not asked for yet");
    let rest: Vec<_> = m.run(items.by_ref().collect::<Vec<_>>());
    let ids: Vec<u64> = rest.into_iter().map(|i| i.unwrap().id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(m.request_count(), 2);
    assert_eq!(m.requests()[1].uri, "http://h/items?page=2");
    assert_eq!(items.checkpoint().next, None, "done");
}

#[test]
fn a_checkpoint_mid_page_resumes_with_exactly_the_rest() {
    let c = client_with("http://h");
    let m = mock(&c);
    m.push(page(0..4, Some("</items?page=2>; rel=\"next\"")));
    let request = c.get("items").build().unwrap();
    let mut items = c.paginate::<Item>(request, Strategy::link_header());
    for id in 0..2 {
        assert_eq!(m.run(items.next()).unwrap().unwrap().id, id);
    }
    let checkpoint = items.checkpoint();
    drop(items);
    assert_eq!(checkpoint.skip_in_page, 2);
    // The page the consumer was in is asked for again, its first two items skipped.
    m.push(page(0..4, Some("</items?page=2>; rel=\"next\"")));
    m.push(page(4..6, None));
    let template = c.get("/").build().unwrap();
    let rest = c.resume_paginate::<Item>(template, Strategy::link_header(), &checkpoint);
    let ids: Vec<u64> = m
        .run(rest.collect::<Vec<_>>())
        .into_iter()
        .map(|i| i.unwrap().id)
        .collect();
    assert_eq!(ids, [2, 3, 4, 5]);
    assert_eq!(m.requests()[1].uri, "http://h/items");
}

#[test]
fn a_page_that_is_not_json_ends_the_stream_after_the_items_before_it() {
    let c = client_with("http://h");
    let m = mock(&c);
    m.push(page(0..2, Some("</items?page=2>; rel=\"next\"")));
    m.push(Reply::status(200).chunk("<html>oops</html>"));
    let request = c.get("items").build().unwrap();
    let items: Vec<_> = m.run(
        c.paginate::<Item>(request, Strategy::link_header())
            .collect::<Vec<_>>(),
    );
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items[0].is_ok() && items[1].is_ok());
    assert_eq!(items[2].as_ref().unwrap_err().kind(), ErrorKind::Decode);

    // A 500 ends it with the status.
    m.push(Reply::status(500));
    let request = c.get("items").build().unwrap();
    let items: Vec<_> = m.run(
        c.paginate::<Item>(request, Strategy::link_header())
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        items[0].as_ref().unwrap_err().kind(),
        ErrorKind::Status(StatusCode::INTERNAL_SERVER_ERROR)
    );
}
