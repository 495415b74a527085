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

/// Answers `/items?page=N` from a fixed listing, with a `Link` to page `N + 1`, and a `503`
/// in place of every `fail_every`-th answer (the retry policy sends the request again).
#[derive(Debug)]
struct Listing {
    timer: Arc<dyn Timer>,
    clock: Arc<Clock>,
    pages: Vec<std::ops::Range<u64>>,
    fail_every: usize,
    sent: AtomicUsize,
}

impl Transport for Listing {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> crate::BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        let n = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let page: usize = request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("page="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let mut response = http::Response::new(ResponseBody::empty());
        if self.fail_every > 0 && n % self.fail_every == 0 {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        } else if let Some(ids) = self.pages.get(page - 1) {
            let body: Vec<_> = ids
                .clone()
                .map(|id| serde_json::json!({ "id": id }))
                .collect();
            response = http::Response::new(ResponseBody::full(serde_json::to_vec(&body).unwrap()));
            if page < self.pages.len() {
                let link = format!("</items?page={}>; rel=\"next\"", page + 1);
                response
                    .headers_mut()
                    .insert("link", HeaderValue::from_str(&link).unwrap());
            }
        } else {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
        Box::pin(std::future::ready(Ok(response)))
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        &self.timer
    }
}

impl Backend for Listing {
    const NAME: &'static str = "listing";

    fn capabilities() -> Capabilities {
        Capabilities::none()
    }

    fn from_config(_: &TransportConfig) -> Result<Self, Error> {
        let clock = Clock::new();
        let (pages, fail_every) = NEXT_LISTING
            .with(|l| l.borrow_mut().take())
            .unwrap_or_default();
        Ok(Self {
            timer: Arc::new(VirtualTimer(clock.clone())),
            clock,
            pages,
            fail_every,
            sent: AtomicUsize::new(0),
        })
    }
}

thread_local! {
    /// The pages and failure rate of the next `Listing` built on this thread.
    static NEXT_LISTING: RefCell<Option<(Vec<std::ops::Range<u64>>, usize)>> =
        const { RefCell::new(None) };
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Random page sizes (empty pages too), a 503 every few answers, prefetching on or off,
    /// and a consumer that stops at random points, keeps the checkpoint and resumes from it:
    /// every item comes exactly once, in order.
    #[test]
    fn every_item_exactly_once_in_order(
        sizes in proptest::collection::vec(0u64..7, 1..12),
        fail_every in 0usize..5,
        stops in proptest::collection::vec(0usize..9, 0..6),
        prefetch in proptest::bool::ANY,
    ) {
        let mut pages = Vec::new();
        let mut next = 0;
        for size in sizes {
            pages.push(next..next + size);
            next += size;
        }
        let total = next;
        // Never more 503s in a row than the 3 attempts absorb.
        let fail_every = if fail_every == 1 { 2 } else { fail_every };
        NEXT_LISTING.with(|l| *l.borrow_mut() = Some((pages, fail_every)));
        let client = Client::<Listing>::builder()
            .base_url("http://h")
            .retry_policy(
                crate::RetryPolicy::builder()
                    .max_attempts(3)
                    .jitter(crate::Jitter::None)
                    .build()
                    .unwrap(),
            )
            .retry_budget(None)
            .build()
            .unwrap();
        let clock = client.transport().clock.clone();
        let mut seen = Vec::new();
        let mut checkpoint = None;
        let mut stops = stops.into_iter();
        loop {
            let mut items = match &checkpoint {
                None => {
                    let request = client.get("items?page=1").build().unwrap();
                    client.paginate::<Item>(request, Strategy::link_header())
                }
                Some(checkpoint) => {
                    let template = client.get("/").build().unwrap();
                    client.resume_paginate::<Item>(template, Strategy::link_header(), checkpoint)
                }
            }
            .prefetch(prefetch);
            let stop_after = stops.next();
            let mut taken = 0;
            let finished = loop {
                if stop_after == Some(taken) {
                    break false;
                }
                match clock::run(&clock, items.next()) {
                    Some(item) => {
                        seen.push(item.unwrap().id);
                        taken += 1;
                    }
                    None => break true,
                }
            };
            if finished {
                break;
            }
            // Through JSON, as a process that died would have stored it.
            let stored = serde_json::to_string(&items.checkpoint()).unwrap();
            checkpoint = Some(serde_json::from_str(&stored).unwrap());
        }
        let want: Vec<u64> = (0..total).collect();
        proptest::prop_assert_eq!(seen, want);
    }
}

#[test]
fn pages_come_with_their_headers_and_prefetch_loads_the_next_one_early() {
    let c = client_with("http://h");
    let m = mock(&c);
    m.push(page(0..2, Some("</items?page=2>; rel=\"next\"")).header("x-total", "3"));
    m.push(page(2..3, None));
    let request = c.get("items").build().unwrap();
    let mut pages = c.paginate::<Item>(request, Strategy::link_header()).pages();
    let first = m.run(pages.next()).unwrap().unwrap();
    assert_eq!(first.number, 1);
    assert_eq!(first.headers["x-total"], "3");
    assert_eq!(first.items, [Item { id: 0 }, Item { id: 1 }]);
    let second = m.run(pages.next()).unwrap().unwrap();
    assert_eq!((second.number, second.items.len()), (2, 1));
    assert_eq!(second.url.to_string(), "http://h/items?page=2");
    assert!(m.run(pages.next()).is_none());

    // With prefetch, the second page is asked for while the first is being read.
    m.push(page(0..2, Some("</items?page=2>; rel=\"next\"")));
    m.push(page(2..3, None));
    let request = c.get("items").build().unwrap();
    let mut items = c
        .paginate::<Item>(request, Strategy::link_header())
        .prefetch(true);
    assert_eq!(m.run(items.next()).unwrap().unwrap().id, 0);
    assert_eq!(
        m.request_count(),
        4,
        "page 2 went out with page 1's first item"
    );
    let rest: Vec<u64> = m
        .run(items.collect::<Vec<_>>())
        .into_iter()
        .map(|i| i.unwrap().id)
        .collect();
    assert_eq!(rest, [1, 2]);
    assert_eq!(m.request_count(), 4);
}

#[test]
fn a_next_link_to_another_origin_gets_no_credentials() {
    let c = client_with("http://h");
    let m = mock(&c);
    m.push(page(
        0..1,
        Some("<http://elsewhere/items?page=2>; rel=\"next\""),
    ));
    m.push(page(1..2, Some("</items?page=3>; rel=\"next\"")));
    m.push(page(2..3, None));
    let request = c
        .get("items")
        .bearer_auth("secret")
        .header("x-trace", "t1")
        .build()
        .unwrap();
    let items: Vec<_> = m.run(
        c.paginate::<Item>(request, Strategy::link_header())
            .collect::<Vec<_>>(),
    );
    assert_eq!(items.len(), 3);
    let log = m.requests();
    assert!(log[0].headers.contains_key(AUTHORIZATION));
    for r in &log[1..] {
        assert!(
            !r.headers.contains_key(AUTHORIZATION),
            "{} got the token",
            r.uri
        );
        assert_eq!(values(&r.headers, "x-trace"), ["t1"], "other headers stay");
    }
}
