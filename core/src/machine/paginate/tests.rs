//! Tests of the pagination machine: the `Link` parser, each strategy, the query setter, the
//! paginator's limits and checkpoints, then property tests of the parser and of whole
//! listings paged in memory.

use http::header::{HeaderValue, LINK};
use proptest::prelude::{
    any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
};
use proptest::strategy::Strategy as _;
use proptest::test_runner::RngSeed;
use serde_json::json;

use super::*;

fn uri(s: &str) -> Uri {
    s.parse().unwrap()
}

fn links(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(LINK, HeaderValue::from_str(v).unwrap());
    }
    headers
}

/// What `strategy` says after a page requested at `url` with `body`, whose items are at
/// `pointer`.
fn next_of(
    strategy: &Strategy,
    url: &str,
    body: Value,
    pointer: Option<&str>,
) -> Result<Next, PaginateError> {
    let url = uri(url);
    let headers = HeaderMap::new();
    let items = items_at(&body, pointer).unwrap_or(&[]);
    strategy.next(&Page::new(&url, &headers, &body, items))
}

fn page_to(url: &str) -> Result<Next, PaginateError> {
    Ok(Next::Page(uri(url)))
}

const GITHUB: &str = "<https://api.github.com/repositories/1300192/issues?page=2>; rel=\"prev\", <https://api.github.com/repositories/1300192/issues?page=4>; rel=\"next\", <https://api.github.com/repositories/1300192/issues?page=515>; rel=\"last\", <https://api.github.com/repositories/1300192/issues?page=1>; rel=\"first\"";

// ---- Link header ----

#[test]
fn github_link_header() {
    let parsed = parse_links(&links(&[GITHUB]));
    let got: Vec<(String, Vec<String>)> = parsed
        .iter()
        .map(|l| (l.target().to_owned(), l.rels().collect()))
        .collect();
    let base = "https://api.github.com/repositories/1300192/issues?page=";
    assert_eq!(
        got,
        [
            ("2", "prev"),
            ("4", "next"),
            ("515", "last"),
            ("1", "first")
        ]
        .map(|(p, r)| (format!("{base}{p}"), vec![r.to_owned()]))
    );
    let here = uri("https://api.github.com/repositories/1300192/issues?page=3");
    assert_eq!(
        next_link(&links(&[GITHUB]), &here),
        Some(uri(&format!("{base}4")))
    );
}

#[test]
fn several_rels_case_and_spacing() {
    let h = links(&[
        "  <a>;REL = \"Prev  FIRST\" ,<b> ;rel=NEXT;  rel=last",
        "<c>; rel=\"next last\"",
    ]);
    let parsed = parse_links(&h);
    assert_eq!(parsed.len(), 3);
    assert_eq!(parsed[0].rels().collect::<Vec<_>>(), ["prev", "first"]);
    // Only the first `rel` counts.
    assert_eq!(parsed[1].rels().collect::<Vec<_>>(), ["next"]);
    assert!(parsed[2].has_rel("Last"));
    let base = uri("https://x.example/dir/list?page=1");
    assert_eq!(next_link(&h, &base), Some(uri("https://x.example/dir/b")));
}

#[test]
fn quoted_strings_keep_commas_semicolons_and_escapes() {
    let h = links(&[
        r#"<https://a.example/1>; title="x, y; \"z\" \\"; rel=next, <https://a.example/2>; rel=last"#,
    ]);
    let parsed = parse_links(&h);
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].param("title"), Some(r#"x, y; "z" \"#));
    assert!(parsed[0].has_rel("next"));
    assert_eq!(parsed[1].target(), "https://a.example/2");
}

#[test]
fn garbage_is_skipped() {
    let h = links(&[
        "garbage, \"quoted, <not-a-link>\", <https://a.example/ok>; ; =x; rel=next; junk \"a;b\", <unterminated",
        "",
        ";;;,,,",
    ]);
    let parsed = parse_links(&h);
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].target(), "https://a.example/ok");
    assert!(parsed[0].has_rel("next"));
    assert_eq!(parse_links(&HeaderMap::new()), vec![]);
}

#[test]
fn next_link_relative_and_unusable() {
    let base = uri("https://api.example/v1/items?page=1");
    assert_eq!(
        next_link(&links(&["</v1/items?page=2#frag>; rel=next"]), &base),
        Some(uri("https://api.example/v1/items?page=2"))
    );
    assert_eq!(
        next_link(&links(&["<?page=2>; rel=next"]), &base),
        Some(uri("https://api.example/v1/items?page=2"))
    );
    // Not http(s): skipped, the next `next` counts.
    assert_eq!(
        next_link(
            &links(&["<mailto:a@b>; rel=next", "<//b.example/x>; rel=next"]),
            &base
        ),
        Some(uri("https://b.example/x"))
    );
    assert_eq!(next_link(&links(&["<?page=2>; rel=prev"]), &base), None);
}

// ---- strategies ----

#[test]
fn link_header_strategy() {
    let url = uri("https://api.github.com/repositories/1300192/issues?page=3");
    let body = json!([]);
    let h = links(&[GITHUB]);
    let page = Page::new(&url, &h, &body, &[]);
    assert_eq!(
        Strategy::link_header().next(&page),
        page_to("https://api.github.com/repositories/1300192/issues?page=4")
    );
    let none = HeaderMap::new();
    let page = Page::new(&url, &none, &body, &[]);
    assert_eq!(Strategy::link_header().next(&page), Ok(Next::Done));
}

#[test]
fn cursor_strategy() {
    let s = Strategy::cursor("/meta/next", "after");
    let url = "https://a.example/x?after=old&q=1";
    assert_eq!(
        next_of(&s, url, json!({"meta": {"next": "n/1"}}), None),
        page_to("https://a.example/x?after=n%2F1&q=1")
    );
    assert_eq!(
        next_of(&s, url, json!({"meta": {"next": 42}}), None),
        page_to("https://a.example/x?after=42&q=1")
    );
    for done in [
        json!({}),
        json!({"meta": {"next": null}}),
        json!({"meta": {"next": ""}}),
    ] {
        assert_eq!(next_of(&s, url, done, None), Ok(Next::Done));
    }
    assert_eq!(
        next_of(&s, url, json!({"meta": {"next": [1]}}), None),
        Err(PaginateError::BadCursor {
            page: 1,
            pointer: "/meta/next".into()
        })
    );
}

#[test]
fn last_item_strategy() {
    let s = Strategy::cursor_from_last_item("/has_more", "/id", "starting_after");
    let url = "https://api.stripe.com/v1/charges?limit=2";
    let body = |more: Value| json!({"data": [{"id": "ch_1"}, {"id": 7}], "has_more": more});
    assert_eq!(
        next_of(&s, url, body(json!(true)), Some("/data")),
        page_to("https://api.stripe.com/v1/charges?limit=2&starting_after=7")
    );
    assert_eq!(
        next_of(&s, url, body(json!(false)), Some("/data")),
        Ok(Next::Done)
    );
    assert_eq!(
        next_of(&s, url, json!({"data": []}), Some("/data")),
        Ok(Next::Done)
    );
    let bad = |pointer: &str| {
        Err(PaginateError::BadCursor {
            page: 1,
            pointer: pointer.into(),
        })
    };
    assert_eq!(
        next_of(&s, url, body(json!("yes")), Some("/data")),
        bad("/has_more")
    );
    // has_more but no item to continue after, or an item without an id.
    assert_eq!(
        next_of(
            &s,
            url,
            json!({"data": [], "has_more": true}),
            Some("/data")
        ),
        bad("/id")
    );
    assert_eq!(
        next_of(
            &s,
            url,
            json!({"data": [{}], "has_more": true}),
            Some("/data")
        ),
        bad("/id")
    );
}

#[test]
fn next_url_strategy() {
    let s = Strategy::next_url("/links/next");
    let url = "https://a.example/api/v1/items?page[size]=2";
    assert_eq!(
        next_of(
            &s,
            url,
            json!({"links": {"next": "https://a.example/api/v1/items?page[after]=x"}}),
            None
        ),
        page_to("https://a.example/api/v1/items?page[after]=x")
    );
    assert_eq!(
        next_of(&s, url, json!({"links": {"next": "../v2/items?p=2"}}), None),
        page_to("https://a.example/api/v2/items?p=2")
    );
    assert_eq!(
        next_of(&s, url, json!({"links": {"next": null}}), None),
        Ok(Next::Done)
    );
    assert_eq!(next_of(&s, url, json!({"links": {}}), None), Ok(Next::Done));
    let bad = Err(PaginateError::BadCursor {
        page: 1,
        pointer: "/links/next".into(),
    });
    assert_eq!(
        next_of(&s, url, json!({"links": {"next": "ftp://x/y"}}), None),
        bad.clone()
    );
    assert_eq!(next_of(&s, url, json!({"links": {"next": 3}}), None), bad);
}

#[test]
fn page_number_strategy() {
    let s = Strategy::page_number("page", 1);
    assert_eq!(
        next_of(&s, "https://a.example/i", json!([1]), None),
        page_to("https://a.example/i?page=2")
    );
    assert_eq!(
        next_of(&s, "https://a.example/i?page=7&x=y", json!([1]), None),
        page_to("https://a.example/i?page=8&x=y")
    );
    assert_eq!(
        next_of(&s, "https://a.example/i?page=7", json!([]), None),
        Ok(Next::Done)
    );
    assert_eq!(
        next_of(&s, "https://a.example/i?page=seven", json!([1]), None),
        Err(PaginateError::BadParam {
            page: 1,
            param: "page".into()
        })
    );
    let t = Strategy::page_number("page", 1).with_total("/pages");
    let body = |n: Value| json!({"items": [1], "pages": n});
    assert_eq!(
        next_of(
            &t,
            "https://a.example/i?page=2",
            body(json!(3)),
            Some("/items")
        ),
        page_to("https://a.example/i?page=3")
    );
    assert_eq!(
        next_of(
            &t,
            "https://a.example/i?page=3",
            body(json!("3")),
            Some("/items")
        ),
        Ok(Next::Done)
    );
    assert_eq!(
        next_of(
            &t,
            "https://a.example/i?page=9",
            body(json!(3)),
            Some("/items")
        ),
        Ok(Next::Done)
    );
    assert_eq!(
        next_of(
            &t,
            "https://a.example/i?page=1",
            body(json!(null)),
            Some("/items")
        ),
        Err(PaginateError::BadTotal {
            page: 1,
            pointer: "/pages".into()
        })
    );
    // Counting from 0: pages 0, 1, 2 of 3.
    let z = Strategy::page_number("p", 0).with_total("/pages");
    assert_eq!(
        next_of(
            &z,
            "https://a.example/i?p=1",
            body(json!(3)),
            Some("/items")
        ),
        page_to("https://a.example/i?p=2")
    );
    assert_eq!(
        next_of(
            &z,
            "https://a.example/i?p=2",
            body(json!(3)),
            Some("/items")
        ),
        Ok(Next::Done)
    );
    assert_eq!(
        s.first_url(&uri("https://a.example/i")),
        uri("https://a.example/i?page=1")
    );
    assert_eq!(
        s.first_url(&uri("https://a.example/i?page=5")),
        uri("https://a.example/i?page=5")
    );
}

#[test]
fn offset_strategy() {
    let s = Strategy::offset("offset", "limit", 3);
    assert_eq!(
        s.first_url(&uri("https://a.example/i?limit=50")),
        uri("https://a.example/i?limit=3&offset=0")
    );
    assert_eq!(
        next_of(
            &s,
            "https://a.example/i?offset=3&limit=3",
            json!([1, 2, 3]),
            None
        ),
        page_to("https://a.example/i?offset=6&limit=3")
    );
    assert_eq!(
        next_of(&s, "https://a.example/i", json!([1, 2, 3]), None),
        page_to("https://a.example/i?offset=3&limit=3")
    );
    assert_eq!(
        next_of(&s, "https://a.example/i?offset=3", json!([1, 2]), None),
        Ok(Next::Done)
    );
    assert_eq!(
        next_of(&s, "https://a.example/i?offset=3", json!([]), None),
        Ok(Next::Done)
    );
    let t = Strategy::offset("offset", "limit", 3).with_total("/total");
    let body = json!({"items": [1, 2, 3], "total": 6});
    assert_eq!(
        next_of(
            &t,
            "https://a.example/i?offset=0",
            body.clone(),
            Some("/items")
        ),
        page_to("https://a.example/i?offset=3&limit=3")
    );
    assert_eq!(
        next_of(&t, "https://a.example/i?offset=3", body, Some("/items")),
        Ok(Next::Done)
    );
    assert_eq!(
        next_of(&s, "https://a.example/i?offset=-1", json!([1, 2, 3]), None),
        Err(PaginateError::BadParam {
            page: 1,
            param: "offset".into()
        })
    );
}

#[test]
fn custom_strategy() {
    let s = Strategy::custom(|page: &Page<'_>| {
        if page.items().len() > 1 {
            Next::Page(set_query_param(page.url(), "more", "1").unwrap())
        } else {
            Next::Done
        }
    });
    assert_eq!(
        next_of(&s, "https://a.example/i", json!([1, 2]), None),
        page_to("https://a.example/i?more=1")
    );
    assert_eq!(
        next_of(&s, "https://a.example/i", json!([1]), None),
        Ok(Next::Done)
    );
    assert!(format!("{s:?}").contains("Custom"));
}

#[test]
fn items_at_errors() {
    let body = json!({"data": {"x": 1}});
    assert_eq!(
        items_at(&body, Some("/data")),
        Err(PaginateError::NoItems {
            page: 0,
            pointer: "/data".into()
        })
    );
    assert_eq!(
        items_at(&body, Some("/nope")),
        Err(PaginateError::NoItems {
            page: 0,
            pointer: "/nope".into()
        })
    );
    assert_eq!(
        items_at(&body, None),
        Err(PaginateError::NoItems {
            page: 0,
            pointer: String::new()
        })
    );
    let pager = Paginator::new(Strategy::link_header(), uri("https://a.example/"));
    assert_eq!(
        pager.items_at(&body, Some("/data")),
        Err(PaginateError::NoItems {
            page: 1,
            pointer: "/data".into()
        })
    );
}

// ---- query setter ----

#[test]
fn query_setter() {
    let u = uri("https://a.example/p?a=1&b=2&a=3");
    assert_eq!(
        set_query_param(&u, "a", "x").unwrap(),
        "https://a.example/p?a=x&b=2"
    );
    assert_eq!(
        set_query_param(&u, "c", "x y/é&=").unwrap(),
        "https://a.example/p?a=1&b=2&a=3&c=x+y%2F%C3%A9%26%3D"
    );
    assert_eq!(
        set_query_param(&uri("https://a.example"), "n", "1").unwrap(),
        "https://a.example/?n=1"
    );
    assert_eq!(
        set_query_param(&uri("https://a.example/p?"), "n", "1").unwrap(),
        "https://a.example/p?n=1"
    );
    // Names are compared decoded, and encoded when written.
    let u = uri("https://a.example/p?page%5Bnumber%5D=1&keep=%7E");
    assert_eq!(
        set_query_param(&u, "page[number]", "2").unwrap(),
        "https://a.example/p?page%5Bnumber%5D=2&keep=%7E"
    );
    assert_eq!(
        query_param(&uri("https://a.example/p?c=x+y%2F"), "c").as_deref(),
        Some("x y/")
    );
    assert_eq!(query_param(&uri("https://a.example/p"), "c"), None);
}

// ---- the paginator ----

/// Feeds `body` (items at the root) to `pager` as the page at its requested URL.
fn feed(pager: &mut Paginator, body: &Value) -> Result<Next, PaginateError> {
    let url = pager
        .poll_request()
        .cloned()
        .unwrap_or_else(|| uri("https://done.example/"));
    let items = items_at(body, None).unwrap();
    pager.on_page(&Page::new(&url, &HeaderMap::new(), body, items))
}

#[test]
fn cycle_is_detected() {
    // The server's next link points back at page 1 (same URL, different case and fragment).
    let s = Strategy::next_url("/next");
    let mut pager = Paginator::new(s, uri("https://a.example/i?page=1"));
    let p2 = json!({"next": "https://a.example/i?page=2"});
    let items = json!([]);
    let url = pager.poll_request().unwrap().clone();
    assert!(pager
        .on_page(&Page::new(
            &url,
            &HeaderMap::new(),
            &p2,
            items.as_array().unwrap()
        ))
        .is_ok());
    let back = json!({"next": "HTTPS://A.EXAMPLE:443/i?page=1#top"});
    let url = pager.poll_request().unwrap().clone();
    let err = pager
        .on_page(&Page::new(&url, &HeaderMap::new(), &back, &[]))
        .unwrap_err();
    assert_eq!(
        err,
        PaginateError::Cycle {
            page: 2,
            url: uri("https://a.example/i?page=1")
        }
    );
    assert_eq!(
        err.to_string(),
        "page 2 leads back to https://a.example/i?page=1, requested before"
    );
    assert_eq!(pager.poll_request(), None);
}

#[test]
fn cycle_detection_remembers_a_bounded_window() {
    let s = Strategy::page_number("page", 1);
    let mut pager = Paginator::new(s, uri("https://a.example/i")).max_pages(100_000);
    let body = json!(["x"]);
    for _ in 0..(CYCLE_WINDOW + 500) {
        let url = pager.poll_request().unwrap().clone();
        let items = items_at(&body, None).unwrap();
        assert!(pager
            .on_page(&Page::new(&url, &HeaderMap::new(), &body, items))
            .is_ok());
    }
    assert_eq!(pager.seen.len(), CYCLE_WINDOW, "flat, however many pages");
    assert_eq!(pager.window.len(), CYCLE_WINDOW);
}

#[test]
fn too_many_pages() {
    let s = Strategy::page_number("page", 1);
    let mut pager = Paginator::new(s, uri("https://a.example/i")).max_pages(3);
    let body = json!([1]);
    assert!(feed(&mut pager, &body).is_ok());
    assert!(feed(&mut pager, &body).is_ok());
    assert_eq!(
        pager.poll_request(),
        Some(&uri("https://a.example/i?page=3"))
    );
    assert_eq!(
        feed(&mut pager, &body),
        Err(PaginateError::TooManyPages { max: 3 })
    );
    assert_eq!(pager.poll_request(), None);
    assert_eq!(pager.pages(), 3);
    // A last page within the limit is fine.
    let mut pager =
        Paginator::new(Strategy::page_number("page", 1), uri("https://a.example/i")).max_pages(1);
    assert_eq!(feed(&mut pager, &json!([])), Ok(Next::Done));
}

#[test]
fn error_messages() {
    let cases = [
        (PaginateError::TooManyPages { max: 5 }, "more than 5 pages"),
        (
            PaginateError::NoItems {
                page: 2,
                pointer: "/data".into(),
            },
            "page 2 has no array of items at `/data`",
        ),
        (
            PaginateError::BadCursor {
                page: 3,
                pointer: "/c".into(),
            },
            "page 3: the next page at `/c` can't be used",
        ),
        (
            PaginateError::BadTotal {
                page: 1,
                pointer: "/t".into(),
            },
            "page 1: the total at `/t` isn't a number",
        ),
        (
            PaginateError::BadParam {
                page: 4,
                param: "page".into(),
            },
            "page 4: query parameter `page` isn't a usable number",
        ),
        (
            PaginateError::BadCheckpoint { next: "::".into() },
            "checkpoint: `::` isn't a URL",
        ),
    ];
    for (err, msg) in cases {
        assert_eq!(err.to_string(), msg);
    }
}

#[test]
fn checkpoints() {
    let s = Strategy::page_number("page", 1);
    let mut pager = Paginator::new(s.clone(), uri("https://a.example/i"));
    let first = pager.checkpoint();
    assert_eq!(first.next.as_deref(), Some("https://a.example/i?page=1"));
    assert_eq!(
        (first.pages_done, first.items_done, first.skip_in_page),
        (0, 0, 0)
    );

    let _ = feed(&mut pager, &json!([1, 2, 3])).unwrap();
    pager.on_item();
    pager.on_item();
    let mid = pager.checkpoint();
    assert_eq!(
        mid,
        Checkpoint {
            next: Some("https://a.example/i?page=1".into()),
            pages_done: 0,
            items_done: 2,
            skip_in_page: 2
        }
    );
    let text = serde_json::to_string(&mid).unwrap();
    assert_eq!(serde_json::from_str::<Checkpoint>(&text).unwrap(), mid);

    pager.on_item();
    pager.on_item(); // beyond the page: ignored
    let end = pager.checkpoint();
    assert_eq!(
        end,
        Checkpoint {
            next: Some("https://a.example/i?page=2".into()),
            pages_done: 1,
            items_done: 3,
            skip_in_page: 0
        }
    );

    // Resuming from the middle of page 1 skips what was processed.
    let mut resumed = Paginator::resume(s.clone(), &mid).unwrap();
    assert_eq!(resumed.checkpoint(), mid);
    let _ = feed(&mut resumed, &json!([1, 2, 3])).unwrap();
    assert_eq!(resumed.skip_in_page(), 2);
    resumed.on_item();
    assert_eq!(resumed.checkpoint(), end);

    let done = Checkpoint {
        next: None,
        pages_done: 4,
        items_done: 9,
        skip_in_page: 0,
    };
    assert_eq!(
        Paginator::resume(s.clone(), &done).unwrap().poll_request(),
        None
    );
    let bad = Checkpoint {
        next: Some("not a url".into()),
        ..done
    };
    assert_eq!(
        Paginator::resume(s, &bad).unwrap_err(),
        PaginateError::BadCheckpoint {
            next: "not a url".into()
        }
    );
}

#[test]
fn checkpoint_after_an_error_stays_on_the_page() {
    let mut pager = Paginator::new(Strategy::cursor("/c", "c"), uri("https://a.example/i"));
    let body = json!({"c": true});
    let url = pager.poll_request().unwrap().clone();
    assert!(pager
        .on_page(&Page::new(&url, &HeaderMap::new(), &body, &[]))
        .is_err());
    let cp = pager.checkpoint();
    assert_eq!(cp.next.as_deref(), Some("https://a.example/i"));
    assert_eq!(cp.pages_done, 0);
}

// ---- property tests ----

/// A link for the generator: target, rels (any case), and a title that needs quoting.
fn arb_link() -> impl proptest::strategy::Strategy<Value = (String, Vec<String>, Option<String>)> {
    (
        "https://[a-z]{1,8}\\.example/[a-z0-9/?=&,;%]{0,20}",
        prop::collection::vec(
            prop::sample::select(vec!["next", "prev", "LAST", "First", "alternate", "x-y"]),
            1..4,
        ),
        prop::option::of("[ -~]{0,12}"),
    )
        .prop_map(|(t, rels, title)| (t, rels.into_iter().map(String::from).collect(), title))
}

fn ows() -> impl proptest::strategy::Strategy<Value = String> {
    "[ \t]{0,2}"
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_000,
        rng_seed: RngSeed::Fixed(0x6c696e6b),
        ..ProptestConfig::default()
    })]

    /// Whatever the bytes, parsing never panics, and each link found is well formed.
    #[test]
    fn link_parser_never_panics(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..4),
                                text in "[<>;,=\" \\\\a-zé€😀]{0,60}") {
        let mut headers = HeaderMap::new();
        for v in &values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                headers.append(LINK, v);
            }
        }
        headers.append(LINK, HeaderValue::from_bytes(text.as_bytes()).unwrap());
        for link in parse_links(&headers) {
            prop_assert!(!link.target().contains('>'));
        }
        let _ = next_link(&headers, &uri("https://a.example/p?q=1"));
    }

    /// Links written with random spacing and quoting, split across random headers, parse back
    /// to the same targets and rels.
    #[test]
    fn links_round_trip(
        list in prop::collection::vec((arb_link(), ows(), ows(), ows(), any::<bool>(), any::<bool>()), 0..6),
        splits in prop::collection::vec(any::<bool>(), 6),
        seps in prop::collection::vec(ows(), 6),
    ) {
        let mut headers: Vec<String> = vec![String::new()];
        for (i, ((target, rels, title), a, b, c, quote_rel, title_first)) in list.iter().enumerate() {
            let rel_value = if rels.len() == 1 && !quote_rel { rels[0].clone() } else { quote(&rels.join(" ")) };
            let rel = format!("{a};{b}rel{c}={b}{rel_value}");
            let title = title.as_ref().map(|t| format!("{b};{a}title={}", quote(t))).unwrap_or_default();
            let params = if *title_first { format!("{title}{rel}") } else { format!("{rel}{title}") };
            let link = format!("<{target}>{params}");
            let current = headers.last_mut().unwrap();
            if !current.is_empty() {
                if splits[i] {
                    headers.push(link);
                    continue;
                }
                current.push_str(&format!("{},{}", seps[i], seps[(i + 1) % 6]));
            }
            current.push_str(&link);
        }
        let map = links(&headers.iter().map(String::as_str).collect::<Vec<_>>());
        let parsed = parse_links(&map);
        let got: Vec<(String, Vec<String>)> = parsed.iter().map(|l| (l.target().to_owned(), l.rels().collect())).collect();
        let want: Vec<(String, Vec<String>)> = list
            .iter()
            .map(|((t, rels, _), ..)| (t.clone(), rels.iter().map(|r| r.to_ascii_lowercase()).collect()))
            .collect();
        prop_assert_eq!(got, want);
        for (link, ((_, _, title), ..)) in parsed.iter().zip(&list) {
            prop_assert_eq!(link.param("title"), title.as_deref());
        }
    }

    /// The setter replaces or appends, and the value reads back decoded.
    #[test]
    fn query_setter_round_trips(keep in "[a-z]{1,5}=[a-z0-9%]{0,5}", name in "[ -~]{1,8}", value in "\\PC{0,12}") {
        let url = uri(&format!("https://a.example/p?{keep}"));
        let set = set_query_param(&url, &name, &value).unwrap();
        prop_assert_eq!(query_param(&set, &name), Some(value.clone()));
        let again = set_query_param(&set, &name, "z").unwrap();
        prop_assert_eq!(query_param(&again, &name), Some("z".to_owned()));
        prop_assert!(again.query().unwrap().starts_with(&keep) || pair_name(&keep) == name);
    }
}

/// How the in-memory server pages its collection.
#[derive(Clone, Copy, Debug)]
enum Style {
    Offset { total: bool },
    Cursor,
    LastItem,
}

/// The server: a page of `items` for `url`. Offset pages must ask for `limit` items; for
/// cursor styles, `sizes` gives the page sizes the server picks.
fn serve(style: Style, items: &[u64], url: &Uri, limit: usize, sizes: &[usize]) -> Value {
    let size = |start: usize| {
        // A function of the page's start, so the same URL always gets the same page.
        let n = sizes[start % sizes.len()];
        items.len().min(start + n)
    };
    match style {
        Style::Offset { .. } => {
            let offset: usize = query_param(url, "offset").unwrap().parse().unwrap();
            assert_eq!(query_param(url, "limit"), Some(limit.to_string()));
            let end = items.len().min(offset + limit);
            let page = &items[offset.min(end)..end];
            json!({"data": page, "total": items.len()})
        }
        Style::Cursor => {
            let start: usize = query_param(url, "cursor")
                .map_or(0, |c| c.trim_start_matches('c').parse().unwrap());
            let end = size(start);
            let next = if end < items.len() {
                json!(format!("c{end}"))
            } else {
                json!(null)
            };
            json!({"data": &items[start..end], "next": next})
        }
        Style::LastItem => {
            let start = query_param(url, "after").map_or(0, |id| {
                let id: u64 = id.parse().unwrap();
                items.iter().position(|&i| i == id).unwrap() + 1
            });
            let end = size(start);
            let data: Vec<Value> = items[start..end].iter().map(|i| json!({"id": i})).collect();
            json!({"data": data, "has_more": end < items.len()})
        }
    }
}

fn arb_style() -> impl proptest::strategy::Strategy<Value = Style> {
    prop_oneof![
        any::<bool>().prop_map(|total| Style::Offset { total }),
        Just(Style::Cursor),
        Just(Style::LastItem),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 500,
        rng_seed: RngSeed::Fixed(0x70616765),
        ..ProptestConfig::default()
    })]

    /// Paging through a collection visits every item once, in order, even when the consumer
    /// crashes at random points and resumes from its last checkpoint (committed together with
    /// each item, so exactly once).
    #[test]
    fn paging_visits_every_item_once(
        style in arb_style(),
        len in 0usize..120,
        limit in 1usize..15,
        sizes in prop::collection::vec(1usize..15, 1..6),
        crashes in prop::collection::vec(0usize..200, 0..4),
    ) {
        let items: Vec<u64> = (0..len as u64).map(|i| i * 7 + 1).collect();
        let strategy = match style {
            Style::Offset { total: false } => Strategy::offset("offset", "limit", limit as u64),
            Style::Offset { total: true } => Strategy::offset("offset", "limit", limit as u64).with_total("/total"),
            Style::Cursor => Strategy::cursor("/next", "cursor"),
            Style::LastItem => Strategy::cursor_from_last_item("/has_more", "/id", "after"),
        };
        let mut pager = Paginator::new(strategy.clone(), uri("https://api.example/items"));
        let mut committed = (pager.checkpoint(), Vec::<u64>::new());
        let mut requests = 0;
        let mut steps = 0;
        while let Some(url) = pager.poll_request().cloned() {
            requests += 1;
            prop_assert!(requests < 1_000, "runaway");
            let body = serve(style, &items, &url, limit, &sizes);
            let page_items = pager.items_at(&body, Some("/data")).unwrap();
            let next = pager.on_page(&Page::new(&url, &HeaderMap::new(), &body, page_items));
            prop_assert!(next.is_ok(), "{:?}", next);
            let skip = pager.skip_in_page();
            for item in &page_items[skip..] {
                steps += 1;
                if crashes.contains(&steps) {
                    // Crash before this item: start again from the last commit.
                    let text = serde_json::to_string(&committed.0).unwrap();
                    pager = Paginator::resume(strategy.clone(), &serde_json::from_str(&text).unwrap()).unwrap();
                    break;
                }
                let id = item.get("id").unwrap_or(item).as_u64().unwrap();
                pager.on_item();
                // Processing and the checkpoint are committed together.
                committed.1.push(id);
                committed.0 = pager.checkpoint();
            }
            if pager.skip_in_page() == page_items.len() {
                // The page is done (maybe empty): nothing to process, the checkpoint moves on.
                committed.0 = pager.checkpoint();
            }
        }
        prop_assert_eq!(&committed.1, &items);
        prop_assert_eq!(committed.0.items_done, items.len() as u64);
        prop_assert_eq!(committed.0.next, None);
    }
}
