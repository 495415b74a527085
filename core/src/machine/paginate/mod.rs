//! Pagination: which page to request next, when to stop, and where to resume.
//!
//! A [`Strategy`] reads one page (its request URL, response headers, parsed JSON body and
//! items, together a [`Page`]) and answers with the URL of the next page or [`Next::Done`]:
//!
//! | strategy | the next page | stops when |
//! |---|---|---|
//! | [`link_header`](Strategy::link_header) (GitHub) | the `Link` header's `rel="next"` | there is none |
//! | [`cursor`](Strategy::cursor) | the cursor at a JSON pointer, as a query parameter | the cursor is absent, `null` or `""` |
//! | [`cursor_from_last_item`](Strategy::cursor_from_last_item) (Stripe) | the last item's id, as a query parameter | `has_more` is `false` (or absent) |
//! | [`next_url`](Strategy::next_url) (JSON:API, DRF) | the URL at a JSON pointer, resolved against the request URL | it is absent, `null` or `""` |
//! | [`page_number`](Strategy::page_number) | the page parameter plus one | a page is empty, or the total number of pages is reached |
//! | [`offset`](Strategy::offset) | the offset parameter plus the items received | a page is short, or the total number of items is reached |
//! | [`custom`](Strategy::custom) | whatever the function says | |
//!
//! A [`Paginator`] runs a strategy over a whole listing and adds the safety a server can't be
//! trusted to provide: a limit on the number of pages ([`PaginateError::TooManyPages`]) and
//! cycle detection ([`PaginateError::Cycle`]). It counts the items the caller has processed,
//! so it can write a [`Checkpoint`] at any moment and start again from one.
//!
//! Nothing here performs I/O: the driver requests the URLs and hands over the responses.
//!
//! # States
//!
//! ```text
//!   Paginator::new(strategy, first_url)       Paginator::resume(strategy, &checkpoint)
//!                     │                                       │
//!                     ▼                                       ▼
//!      ┌──► poll_request() = Some(url): request url, parse the body, items_at(…)
//!      │               │
//!      │               ▼
//!      │         on_page(&page) ──► Err(Cycle | TooManyPages | BadCursor | …): stop
//!      │               │
//!      │               ├──► Next::Page(next) ──┐   then, for each item from skip_in_page():
//!      │               └──► Next::Done ────────┤   process it, on_item(), checkpoint()
//!      │                                       │
//!      └───────────────────────────────────────┘   poll_request() = None after Done
//! ```
//!
//! # Checkpoints, and what they guarantee
//!
//! A [`Checkpoint`] names the page the caller is in (`next`) and how many of its items were
//! processed (`skip_in_page`). To resume, request `next` again and skip that many items;
//! [`Paginator::resume`] does both. When the caller commits a checkpoint *after* processing
//! each item, a crash between processing an item and committing the checkpoint processes
//! that item again on resume: **at-least-once** delivery. **Exactly-once** needs the item's
//! effect and the checkpoint committed atomically together (one database transaction, say).
//! Either way, resuming assumes the pages are stable: if the server inserts or removes items
//! before the checkpoint's position in the meantime, offsets and page numbers shift.
//!
//! # Memory
//!
//! Cycle detection keeps a 64-bit hash of the last [`CYCLE_WINDOW`] URLs requested (a few
//! tens of KB at most), so memory stays flat however long the listing: a next URL equal to
//! one of the last 4,096 requested is a cycle; a longer cycle (a server that goes round more
//! than 4,096 pages) is stopped by [`max_pages`](Paginator::max_pages).
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, Uri};
//! use keel_core::machine::paginate::{items_at, Next, Page, Paginator, Strategy};
//! use serde_json::json;
//!
//! let first: Uri = "https://api.example/items".parse().unwrap();
//! let mut pager = Paginator::new(Strategy::cursor("/next_cursor", "cursor"), first);
//! let headers = HeaderMap::new();
//!
//! let url = pager.poll_request().unwrap().clone();
//! let body = json!({"data": [1, 2], "next_cursor": "abc"});
//! let items = items_at(&body, Some("/data")).unwrap();
//! let next = pager.on_page(&Page::new(&url, &headers, &body, items)).unwrap();
//! assert_eq!(next, Next::Page("https://api.example/items?cursor=abc".parse().unwrap()));
//! for _item in &items[pager.skip_in_page()..] {
//!     pager.on_item();
//! }
//!
//! let url = pager.poll_request().unwrap().clone();
//! let body = json!({"data": [3], "next_cursor": null});
//! let items = items_at(&body, Some("/data")).unwrap();
//! assert_eq!(pager.on_page(&Page::new(&url, &headers, &body, items)), Ok(Next::Done));
//! pager.on_item();
//! assert_eq!(pager.poll_request(), None);
//! assert_eq!(pager.checkpoint().items_done, 3);
//! ```

mod link;

use std::collections::{HashSet, VecDeque};
use std::error::Error as StdError;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{HeaderMap, Uri};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::form_urlencoded;

use crate::redact;

pub use link::{next_link, parse_links, Link};

/// The default [`Paginator::max_pages`].
pub const DEFAULT_MAX_PAGES: u64 = 10_000;

/// One page, as a strategy sees it.
///
/// Its `Debug` shows the URL through [`redact::url`] and the headers through
/// [`redact::headers`].
#[derive(Clone, Copy)]
pub struct Page<'a> {
    url: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a Value,
    items: &'a [Value],
    number: u64,
}

impl<'a> Page<'a> {
    /// A page: the URL it was requested from, its response headers, its parsed body and the
    /// items found on it (see [`items_at`]).
    pub fn new(url: &'a Uri, headers: &'a HeaderMap, body: &'a Value, items: &'a [Value]) -> Self {
        Page {
            url,
            headers,
            body,
            items,
            number: 1,
        }
    }

    /// The same page, numbered `number` (1-based) in the errors it causes. A [`Paginator`]
    /// numbers its pages itself; a page is page 1 otherwise.
    pub fn with_number(self, number: u64) -> Self {
        Page { number, ..self }
    }

    /// The URL this page was requested from.
    pub fn url(&self) -> &'a Uri {
        self.url
    }

    /// The response headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The parsed body.
    pub fn body(&self) -> &'a Value {
        self.body
    }

    /// The items found on the page.
    pub fn items(&self) -> &'a [Value] {
        self.items
    }

    /// The page's number, 1-based.
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl fmt::Debug for Page<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("url", &redact::url(self.url))
            .field("headers", &redact::headers(self.headers))
            .field("items", &self.items.len())
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

/// What follows a page.
///
/// Its `Debug` shows the URL through [`redact::url`].
#[must_use]
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub enum Next {
    /// Request this URL for the next page.
    Page(Uri),
    /// This was the last page.
    Done,
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Next::Page(url) => f.debug_tuple("Page").field(&redact::url(url)).finish(),
            Next::Done => f.write_str("Done"),
        }
    }
}

/// How a listing is paged: how to find the next page's URL from a page, and when to stop.
///
/// Strategies are plain data (the [`custom`](Strategy::custom) one holds an `Arc`'d
/// function), cheap to clone and shareable between threads.
#[derive(Clone)]
pub struct Strategy {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    LinkHeader,
    Cursor {
        pointer: String,
        param: String,
    },
    LastItem {
        has_more: String,
        id: String,
        param: String,
    },
    NextUrl {
        pointer: String,
    },
    PageNumber {
        param: String,
        start: u64,
        total_pages: Option<String>,
    },
    Offset {
        offset_param: String,
        limit_param: String,
        limit: u64,
        total: Option<String>,
    },
    Custom(CustomFn),
}

type CustomFn = Arc<dyn Fn(&Page<'_>) -> Next + Send + Sync>;

impl Strategy {
    /// The `Link` header's `rel="next"` (RFC 8288), as GitHub sends it; relative targets are
    /// resolved against the request URL. Stops when there is no `next` link.
    ///
    /// ```
    /// use http::{HeaderMap, Uri};
    /// use keel_core::machine::paginate::{Next, Page, Strategy};
    ///
    /// let url: Uri = "https://api.github.com/repositories/1300192/issues?page=3".parse().unwrap();
    /// let mut headers = HeaderMap::new();
    /// headers.insert("link", r#"<https://api.github.com/repositories/1300192/issues?page=4>; rel="next""#.parse().unwrap());
    /// let body = serde_json::json!([]);
    /// let next = Strategy::link_header().next(&Page::new(&url, &headers, &body, &[])).unwrap();
    /// assert_eq!(next, Next::Page("https://api.github.com/repositories/1300192/issues?page=4".parse().unwrap()));
    /// ```
    pub fn link_header() -> Self {
        Strategy {
            kind: Kind::LinkHeader,
        }
    }

    /// A cursor at the JSON pointer `pointer` (RFC 6901) in the body, sent back as the query
    /// parameter `param` of the request URL. A string or a number; stops when it is absent,
    /// `null` or `""`.
    ///
    /// ```
    /// use http::{HeaderMap, Uri};
    /// use keel_core::machine::paginate::{Next, Page, Strategy};
    ///
    /// let url: Uri = "https://api.example/items?limit=10&cursor=a".parse().unwrap();
    /// let body = serde_json::json!({"meta": {"next": "b c"}});
    /// let headers = HeaderMap::new();
    /// let page = Page::new(&url, &headers, &body, &[]);
    /// let next = Strategy::cursor("/meta/next", "cursor").next(&page).unwrap();
    /// assert_eq!(next, Next::Page("https://api.example/items?limit=10&cursor=b+c".parse().unwrap()));
    /// ```
    pub fn cursor(pointer: &str, param: &str) -> Self {
        Strategy {
            kind: Kind::Cursor {
                pointer: pointer.to_owned(),
                param: param.to_owned(),
            },
        }
    }

    /// Stripe's style: while the boolean at `has_more_pointer` is `true`, the next page
    /// starts after the last item, whose id (at `id_pointer`, within the item) is sent as the
    /// query parameter `param`. Stops when `has_more` is `false`, `null` or absent.
    ///
    /// ```
    /// use http::{HeaderMap, Uri};
    /// use keel_core::machine::paginate::{items_at, Next, Page, Strategy};
    ///
    /// let url: Uri = "https://api.stripe.com/v1/customers?limit=2".parse().unwrap();
    /// let body = serde_json::json!({"data": [{"id": "cus_1"}, {"id": "cus_2"}], "has_more": true});
    /// let items = items_at(&body, Some("/data")).unwrap();
    /// let headers = HeaderMap::new();
    /// let page = Page::new(&url, &headers, &body, items);
    /// let strategy = Strategy::cursor_from_last_item("/has_more", "/id", "starting_after");
    /// assert_eq!(
    ///     strategy.next(&page).unwrap(),
    ///     Next::Page("https://api.stripe.com/v1/customers?limit=2&starting_after=cus_2".parse().unwrap())
    /// );
    /// ```
    pub fn cursor_from_last_item(has_more_pointer: &str, id_pointer: &str, param: &str) -> Self {
        Strategy {
            kind: Kind::LastItem {
                has_more: has_more_pointer.to_owned(),
                id: id_pointer.to_owned(),
                param: param.to_owned(),
            },
        }
    }

    /// The next page's URL at the JSON pointer `pointer` in the body (JSON:API's
    /// `/links/next`, Django REST framework's `/next`), resolved against the request URL.
    /// Stops when it is absent, `null` or `""`.
    ///
    /// ```
    /// use http::{HeaderMap, Uri};
    /// use keel_core::machine::paginate::{Next, Page, Strategy};
    ///
    /// let url: Uri = "https://api.example/v1/articles".parse().unwrap();
    /// let body = serde_json::json!({"links": {"next": "articles?page[cursor]=x"}});
    /// let headers = HeaderMap::new();
    /// let page = Page::new(&url, &headers, &body, &[]);
    /// let next = Strategy::next_url("/links/next").next(&page).unwrap();
    /// assert_eq!(next, Next::Page("https://api.example/v1/articles?page[cursor]=x".parse().unwrap()));
    /// ```
    pub fn next_url(pointer: &str) -> Self {
        Strategy {
            kind: Kind::NextUrl {
                pointer: pointer.to_owned(),
            },
        }
    }

    /// Numbered pages: the query parameter `param` counts from `start` (usually 1, or 0).
    /// A request URL without it is page `start`. Stops on an empty page, or, with
    /// [`with_total`](Strategy::with_total), once the total number of pages is reached.
    ///
    /// ```
    /// use http::{HeaderMap, Uri};
    /// use keel_core::machine::paginate::{Next, Page, Strategy};
    ///
    /// let url: Uri = "https://api.example/items?page=2".parse().unwrap();
    /// let body = serde_json::json!({"items": [1], "total_pages": 3});
    /// let items = [serde_json::json!(1)];
    /// let headers = HeaderMap::new();
    /// let page = Page::new(&url, &headers, &body, &items);
    /// let strategy = Strategy::page_number("page", 1).with_total("/total_pages");
    /// assert_eq!(strategy.next(&page).unwrap(), Next::Page("https://api.example/items?page=3".parse().unwrap()));
    /// ```
    pub fn page_number(param: &str, start: u64) -> Self {
        Strategy {
            kind: Kind::PageNumber {
                param: param.to_owned(),
                start,
                total_pages: None,
            },
        }
    }

    /// Offset and limit: the query parameter `offset_param` (0 when absent) advances by the
    /// number of items received; `limit_param` is set to `limit` (at least 1). Stops on a
    /// short page (fewer than `limit` items), or, with [`with_total`](Strategy::with_total),
    /// once the total number of items is reached.
    ///
    /// ```
    /// use http::{HeaderMap, Uri};
    /// use keel_core::machine::paginate::{Next, Page, Strategy};
    ///
    /// let url: Uri = "https://api.example/items?offset=20&limit=2".parse().unwrap();
    /// let body = serde_json::json!([1, 2]);
    /// let items = body.as_array().unwrap();
    /// let headers = HeaderMap::new();
    /// let page = Page::new(&url, &headers, &body, items);
    /// let strategy = Strategy::offset("offset", "limit", 2);
    /// assert_eq!(strategy.next(&page).unwrap(), Next::Page("https://api.example/items?offset=22&limit=2".parse().unwrap()));
    /// ```
    pub fn offset(offset_param: &str, limit_param: &str, limit: u64) -> Self {
        Strategy {
            kind: Kind::Offset {
                offset_param: offset_param.to_owned(),
                limit_param: limit_param.to_owned(),
                limit: limit.max(1),
                total: None,
            },
        }
    }

    /// A function of the page decides. It can't fail: return [`Next::Done`] to stop.
    ///
    /// ```
    /// use http::{HeaderMap, Uri};
    /// use keel_core::machine::paginate::{Next, Page, Strategy};
    ///
    /// // The next URL is in a response header.
    /// let strategy = Strategy::custom(|page: &Page<'_>| {
    ///     match page.headers().get("x-next").and_then(|v| v.to_str().ok()?.parse().ok()) {
    ///         Some(url) => Next::Page(url),
    ///         None => Next::Done,
    ///     }
    /// });
    /// let url: Uri = "https://api.example/items".parse().unwrap();
    /// let body = serde_json::json!([]);
    /// let headers = HeaderMap::new();
    /// let page = Page::new(&url, &headers, &body, &[]);
    /// assert_eq!(strategy.next(&page).unwrap(), Next::Done);
    /// ```
    pub fn custom(f: impl Fn(&Page<'_>) -> Next + Send + Sync + 'static) -> Self {
        Strategy {
            kind: Kind::Custom(Arc::new(f)),
        }
    }

    /// The total at the JSON pointer `pointer` (a number, or a string of digits): for
    /// [`page_number`](Strategy::page_number) the number of pages, for
    /// [`offset`](Strategy::offset) the number of items. Other strategies ignore it.
    pub fn with_total(mut self, pointer: &str) -> Self {
        match &mut self.kind {
            Kind::PageNumber { total_pages, .. } => *total_pages = Some(pointer.to_owned()),
            Kind::Offset { total, .. } => *total = Some(pointer.to_owned()),
            _ => {}
        }
        self
    }

    /// The URL of the first request, from the URL the caller starts at: `offset` sets the
    /// limit parameter (and the offset to 0 when absent), `page_number` sets the page
    /// parameter to `start` when absent; the others leave it as it is.
    pub fn first_url(&self, url: &Uri) -> Uri {
        let set = |url: &Uri, name: &str, value: &str, replace: bool| {
            if !replace && query_param(url, name).is_some() {
                return url.clone();
            }
            set_query_param(url, name, value).unwrap_or_else(|| url.clone())
        };
        match &self.kind {
            Kind::PageNumber { param, start, .. } => set(url, param, &start.to_string(), false),
            Kind::Offset {
                offset_param,
                limit_param,
                limit,
                ..
            } => {
                let url = set(url, offset_param, "0", false);
                set(&url, limit_param, &limit.to_string(), true)
            }
            _ => url.clone(),
        }
    }

    /// What follows `page`.
    ///
    /// # Errors
    ///
    /// [`PaginateError::BadCursor`] when the value that says where the next page is has the
    /// wrong type or can't be used, [`PaginateError::BadTotal`] for a total that isn't a
    /// number, [`PaginateError::BadParam`] when the request URL's page or offset parameter
    /// isn't a number. Each names `page.number()`.
    pub fn next(&self, page: &Page<'_>) -> Result<Next, PaginateError> {
        let n = page.number;
        let bad_cursor = |pointer: &str| PaginateError::BadCursor {
            page: n,
            pointer: pointer.to_owned(),
        };
        let with_param = |name: &str, value: &str| {
            set_query_param(page.url, name, value)
                .map(Next::Page)
                .ok_or_else(|| bad_cursor(name))
        };
        match &self.kind {
            Kind::LinkHeader => {
                Ok(next_link(page.headers, page.url).map_or(Next::Done, Next::Page))
            }
            Kind::Cursor { pointer, param } => match page.body.pointer(pointer) {
                None | Some(Value::Null) => Ok(Next::Done),
                Some(Value::String(s)) if s.is_empty() => Ok(Next::Done),
                Some(v) => with_param(param, &scalar(v).ok_or_else(|| bad_cursor(pointer))?),
            },
            Kind::LastItem {
                has_more,
                id,
                param,
            } => match page.body.pointer(has_more) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(Next::Done),
                Some(Value::Bool(true)) => {
                    let id = page
                        .items
                        .last()
                        .and_then(|item| item.pointer(id))
                        .and_then(scalar)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| bad_cursor(id))?;
                    with_param(param, &id)
                }
                Some(_) => Err(bad_cursor(has_more)),
            },
            Kind::NextUrl { pointer } => match page.body.pointer(pointer) {
                None | Some(Value::Null) => Ok(Next::Done),
                Some(Value::String(s)) if s.is_empty() => Ok(Next::Done),
                Some(Value::String(s)) => resolve(page.url, s)
                    .map(Next::Page)
                    .ok_or_else(|| bad_cursor(pointer)),
                Some(_) => Err(bad_cursor(pointer)),
            },
            Kind::PageNumber {
                param,
                start,
                total_pages,
            } => {
                if page.items.is_empty() {
                    return Ok(Next::Done);
                }
                let current = number_param(page, param)?.unwrap_or(*start);
                if let Some(pointer) = total_pages {
                    let total = total_at(page, pointer)?;
                    // Pages start..start + total exist.
                    if current.saturating_sub(*start).saturating_add(1) >= total {
                        return Ok(Next::Done);
                    }
                }
                let next = current
                    .checked_add(1)
                    .ok_or_else(|| PaginateError::BadParam {
                        page: n,
                        param: param.clone(),
                    })?;
                with_param(param, &next.to_string())
            }
            Kind::Offset {
                offset_param,
                limit_param,
                limit,
                total,
            } => {
                let received = page.items.len() as u64;
                if received < *limit {
                    return Ok(Next::Done);
                }
                let offset = number_param(page, offset_param)?.unwrap_or(0);
                let next = offset.saturating_add(received);
                if let Some(pointer) = total {
                    if next >= total_at(page, pointer)? {
                        return Ok(Next::Done);
                    }
                }
                let url = set_query_param(page.url, offset_param, &next.to_string())
                    .and_then(|url| set_query_param(&url, limit_param, &limit.to_string()))
                    .ok_or_else(|| bad_cursor(offset_param))?;
                Ok(Next::Page(url))
            }
            Kind::Custom(f) => Ok(f(page)),
        }
    }
}

impl fmt::Debug for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::LinkHeader => f.write_str("Strategy::LinkHeader"),
            Kind::Cursor { pointer, param } => f
                .debug_struct("Strategy::Cursor")
                .field("pointer", pointer)
                .field("param", param)
                .finish(),
            Kind::LastItem {
                has_more,
                id,
                param,
            } => f
                .debug_struct("Strategy::CursorFromLastItem")
                .field("has_more", has_more)
                .field("id", id)
                .field("param", param)
                .finish(),
            Kind::NextUrl { pointer } => f
                .debug_struct("Strategy::NextUrl")
                .field("pointer", pointer)
                .finish(),
            Kind::PageNumber {
                param,
                start,
                total_pages,
            } => f
                .debug_struct("Strategy::PageNumber")
                .field("param", param)
                .field("start", start)
                .field("total_pages", total_pages)
                .finish(),
            Kind::Offset {
                offset_param,
                limit_param,
                limit,
                total,
            } => f
                .debug_struct("Strategy::Offset")
                .field("offset_param", offset_param)
                .field("limit_param", limit_param)
                .field("limit", limit)
                .field("total", total)
                .finish(),
            Kind::Custom(_) => f.write_str("Strategy::Custom(..)"),
        }
    }
}

/// The items of a page: the array at the JSON pointer `pointer` (RFC 6901), or the whole
/// body when `pointer` is `None`.
///
/// ```
/// use keel_core::machine::paginate::items_at;
///
/// let body = serde_json::json!({"data": [1, 2]});
/// assert_eq!(items_at(&body, Some("/data")).unwrap().len(), 2);
/// assert!(items_at(&body, None).is_err()); // the body isn't an array
/// ```
///
/// # Errors
///
/// [`PaginateError::NoItems`] when there is no array there. It names page 0: a free function
/// doesn't know the page; [`Paginator::items_at`] names it.
pub fn items_at<'v>(body: &'v Value, pointer: Option<&str>) -> Result<&'v [Value], PaginateError> {
    let value = match pointer {
        Some(p) => body.pointer(p),
        None => Some(body),
    };
    match value {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(PaginateError::NoItems {
            page: 0,
            pointer: pointer.unwrap_or("").to_owned(),
        }),
    }
}

/// `url` with the query parameter `name` set to `value`: the first parameter of that name
/// (compared after decoding) takes the new value in place, later ones are removed, and
/// without one it is appended. Name and value are percent-encoded
/// (`application/x-www-form-urlencoded`: a space becomes `+`); the other parameters are kept
/// byte for byte.
///
/// `None` only if the result isn't a valid URI, which doesn't happen for a valid `url`.
///
/// ```
/// use http::Uri;
/// use keel_core::machine::paginate::set_query_param;
///
/// let url: Uri = "https://a.example/p?page=1&q=x%20y".parse().unwrap();
/// assert_eq!(set_query_param(&url, "page", "2").unwrap(), "https://a.example/p?page=2&q=x%20y");
/// assert_eq!(set_query_param(&url, "c", "a&b=c").unwrap(), "https://a.example/p?page=1&q=x%20y&c=a%26b%3Dc");
/// ```
pub fn set_query_param(url: &Uri, name: &str, value: &str) -> Option<Uri> {
    let pair: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(name, value)
        .finish();
    let mut out: Vec<&str> = Vec::new();
    let mut replaced = false;
    for raw in url.query().unwrap_or("").split('&') {
        if raw.is_empty() {
            continue;
        }
        if pair_name(raw) == name {
            if !replaced {
                out.push(&pair);
                replaced = true;
            }
        } else {
            out.push(raw);
        }
    }
    if !replaced {
        out.push(&pair);
    }
    let path = match url.path() {
        "" => "/",
        p => p,
    };
    let pq: PathAndQuery = format!("{path}?{}", out.join("&")).parse().ok()?;
    let mut parts = url.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).ok()
}

/// The decoded value of the first query parameter `name` of `url`, if any.
///
/// ```
/// use http::Uri;
/// use keel_core::machine::paginate::query_param;
///
/// let url: Uri = "https://a.example/p?q=x+y&page=2".parse().unwrap();
/// assert_eq!(query_param(&url, "q").as_deref(), Some("x y"));
/// assert_eq!(query_param(&url, "cursor"), None);
/// ```
pub fn query_param(url: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(url.query()?.as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

fn pair_name(raw: &str) -> String {
    form_urlencoded::parse(raw.as_bytes())
        .next()
        .map(|(n, _)| n.into_owned())
        .unwrap_or_default()
}

/// A string, or a number written out; `None` for other values.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number_param(page: &Page<'_>, param: &str) -> Result<Option<u64>, PaginateError> {
    match query_param(page.url, param) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| PaginateError::BadParam {
                page: page.number,
                param: param.to_owned(),
            }),
    }
}

fn total_at(page: &Page<'_>, pointer: &str) -> Result<u64, PaginateError> {
    let total = match page.body.pointer(pointer) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    total.ok_or_else(|| PaginateError::BadTotal {
        page: page.number,
        pointer: pointer.to_owned(),
    })
}

/// Resolves a URI reference against `base`, as a redirect's `Location` is.
fn resolve(base: &Uri, reference: &str) -> Option<Uri> {
    crate::machine::redirect::resolve_reference(base, reference)
}

/// Runs a [`Strategy`] over a listing: the next URL to request, a page limit, cycle
/// detection, counts, and [`Checkpoint`]s. See the [module docs](self) for the states.
///
/// Its `Debug` shows URLs through [`redact::url`].
#[derive(Clone)]
pub struct Paginator {
    strategy: Strategy,
    max_pages: u64,
    /// The URL to request next; `None` once done.
    request: Option<Uri>,
    /// Pages given to `on_page`, and items given to `on_item`.
    pages_seen: u64,
    items_done: u64,
    /// The page whose items are being processed, its item count, and how many are done.
    current: Option<Uri>,
    items_in_page: usize,
    skip_in_page: usize,
    /// Items of the first page after a resume that were processed before the checkpoint.
    resume_skip: usize,
    /// `on_page` failed: nothing more is requested, and checkpoints stay on the current page.
    failed: bool,
    seen: HashSet<u64>,
    /// The hashes in `seen`, oldest first: the window cycle detection looks back over.
    window: VecDeque<u64>,
}

impl fmt::Debug for Paginator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paginator")
            .field("strategy", &self.strategy)
            .field("max_pages", &self.max_pages)
            .field("request", &self.request.as_ref().map(redact::url))
            .field("pages_seen", &self.pages_seen)
            .field("items_done", &self.items_done)
            .field("current", &self.current.as_ref().map(redact::url))
            .field("items_in_page", &self.items_in_page)
            .field("skip_in_page", &self.skip_in_page)
            .field("resume_skip", &self.resume_skip)
            .field("failed", &self.failed)
            .field("urls_remembered", &self.window.len())
            .finish()
    }
}

/// How many of the URLs last requested cycle detection remembers.
pub const CYCLE_WINDOW: usize = 4096;

impl Paginator {
    /// A paginator that starts at `first`, as [`Strategy::first_url`] adjusts it, with the
    /// [default page limit](DEFAULT_MAX_PAGES).
    pub fn new(strategy: Strategy, first: Uri) -> Self {
        let first = strategy.first_url(&first);
        let hash = url_hash(&first);
        Paginator {
            strategy,
            max_pages: DEFAULT_MAX_PAGES,
            request: Some(first),
            pages_seen: 0,
            items_done: 0,
            current: None,
            items_in_page: 0,
            skip_in_page: 0,
            resume_skip: 0,
            failed: false,
            seen: HashSet::from([hash]),
            window: VecDeque::from([hash]),
        }
    }

    /// Continues from `checkpoint`: the first request is its `next` page, whose first
    /// [`skip_in_page`](Paginator::skip_in_page) items were processed already. Pages and
    /// items count on from the checkpoint's; cycle detection starts afresh.
    ///
    /// ```
    /// use http::{HeaderMap, Uri};
    /// use keel_core::machine::paginate::{items_at, Checkpoint, Page, Paginator, Strategy};
    ///
    /// let saved = r#"{"next":"https://a.example/i?page=2","pages_done":1,"items_done":12,"skip_in_page":2}"#;
    /// let checkpoint: Checkpoint = serde_json::from_str(saved).unwrap();
    /// let mut pager = Paginator::resume(Strategy::page_number("page", 1), &checkpoint).unwrap();
    /// let url = pager.poll_request().unwrap().clone();
    /// assert_eq!(url, "https://a.example/i?page=2");
    /// let body = serde_json::json!(["a", "b", "c"]);
    /// let items = items_at(&body, None).unwrap();
    /// let _ = pager.on_page(&Page::new(&url, &HeaderMap::new(), &body, items)).unwrap();
    /// assert_eq!(&items[pager.skip_in_page()..], [serde_json::json!("c")]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`PaginateError::BadCheckpoint`] when `next` isn't a URL.
    pub fn resume(strategy: Strategy, checkpoint: &Checkpoint) -> Result<Self, PaginateError> {
        let request = match &checkpoint.next {
            None => None,
            Some(url) => Some(
                url.parse::<Uri>()
                    .map_err(|_| PaginateError::BadCheckpoint { next: url.clone() })?,
            ),
        };
        let hashes: Vec<u64> = request.iter().map(url_hash).collect();
        Ok(Paginator {
            strategy,
            max_pages: DEFAULT_MAX_PAGES,
            request,
            pages_seen: checkpoint.pages_done,
            items_done: checkpoint.items_done,
            current: None,
            items_in_page: 0,
            skip_in_page: 0,
            resume_skip: checkpoint.skip_in_page,
            failed: false,
            seen: hashes.iter().copied().collect(),
            window: hashes.into_iter().collect(),
        })
    }

    /// At most `max` pages (at least 1) in all, counting those before a resume: a next page
    /// beyond it is [`PaginateError::TooManyPages`]. Default: [`DEFAULT_MAX_PAGES`].
    pub fn max_pages(mut self, max: u64) -> Self {
        self.max_pages = max.max(1);
        self
    }

    /// The URL to request now; `None` once the last page was given to
    /// [`on_page`](Paginator::on_page), or after an error.
    pub fn poll_request(&self) -> Option<&Uri> {
        self.request.as_ref()
    }

    /// The items of a page, as [`items_at`] finds them, with errors naming the page about to
    /// be given to [`on_page`](Paginator::on_page).
    ///
    /// # Errors
    ///
    /// [`PaginateError::NoItems`] when there is no array there.
    pub fn items_at<'v>(
        &self,
        body: &'v Value,
        pointer: Option<&str>,
    ) -> Result<&'v [Value], PaginateError> {
        items_at(body, pointer).map_err(|e| match e {
            PaginateError::NoItems { pointer, .. } => PaginateError::NoItems {
                page: self.pages_seen.saturating_add(1),
                pointer,
            },
            e => e,
        })
    }

    /// The response to [`poll_request`](Paginator::poll_request) arrived: decides what
    /// follows it, and makes it the page whose items are being processed. After `Ok`,
    /// [`poll_request`](Paginator::poll_request) is the next page (or `None` after
    /// [`Next::Done`]).
    ///
    /// # Errors
    ///
    /// The strategy's errors; [`PaginateError::Cycle`] when the next URL was requested
    /// before; [`PaginateError::TooManyPages`] when it would be one page too many. After an
    /// error the paginator requests nothing more, but the page's items may still be
    /// processed and checkpointed.
    pub fn on_page(&mut self, page: &Page<'_>) -> Result<Next, PaginateError> {
        let number = self.pages_seen.saturating_add(1);
        let page = page.with_number(number);
        self.pages_seen = number;
        self.current = Some(page.url.clone());
        self.items_in_page = page.items.len();
        self.skip_in_page = std::mem::take(&mut self.resume_skip).min(self.items_in_page);
        self.request = None;
        let next = self.decide(&page);
        self.failed = next.is_err();
        next
    }

    fn decide(&mut self, page: &Page<'_>) -> Result<Next, PaginateError> {
        let next = self.strategy.next(page)?;
        if let Next::Page(url) = &next {
            let hash = url_hash(url);
            if !self.seen.insert(hash) {
                return Err(PaginateError::Cycle {
                    page: page.number,
                    url: url.clone(),
                });
            }
            self.window.push_back(hash);
            if self.window.len() > CYCLE_WINDOW {
                if let Some(oldest) = self.window.pop_front() {
                    self.seen.remove(&oldest);
                }
            }
            if page.number >= self.max_pages {
                return Err(PaginateError::TooManyPages {
                    max: self.max_pages,
                });
            }
            self.request = Some(url.clone());
        }
        Ok(next)
    }

    /// One more item of the current page was processed. Calls beyond the page's item count
    /// are ignored.
    pub fn on_item(&mut self) {
        if self.skip_in_page < self.items_in_page {
            self.skip_in_page += 1;
            self.items_done = self.items_done.saturating_add(1);
        }
    }

    /// How many items of the current page were processed: after a resume, those the
    /// checkpoint says to skip.
    pub fn skip_in_page(&self) -> usize {
        self.skip_in_page
    }

    /// Pages given to [`on_page`](Paginator::on_page), counting those before a resume.
    pub fn pages(&self) -> u64 {
        self.pages_seen
    }

    /// Where to resume after what was processed so far: the current page and the items of it
    /// processed, or, once all of them were, the next page. After an error from
    /// [`on_page`](Paginator::on_page) it stays on the current page (a resume meets the error
    /// again, rather than taking the listing for done).
    pub fn checkpoint(&self) -> Checkpoint {
        match &self.current {
            Some(url) if self.failed || self.skip_in_page < self.items_in_page => Checkpoint {
                next: Some(url.to_string()),
                pages_done: self.pages_seen.saturating_sub(1),
                items_done: self.items_done,
                skip_in_page: self.skip_in_page,
            },
            _ => Checkpoint {
                next: self.request.as_ref().map(Uri::to_string),
                pages_done: self.pages_seen,
                items_done: self.items_done,
                skip_in_page: self.resume_skip,
            },
        }
    }
}

/// A hash of the URL, normalized: the scheme and host lowercased, the default port and the
/// fragment dropped (as the WHATWG URL parser writes it).
fn url_hash(url: &Uri) -> u64 {
    let text = url.to_string();
    let mut hasher = DefaultHasher::new();
    match url::Url::parse(&text) {
        Ok(mut parsed) => {
            parsed.set_fragment(None);
            parsed.as_str().hash(&mut hasher);
        }
        Err(_) => text.hash(&mut hasher),
    }
    hasher.finish()
}

/// Where to resume a listing: request `next`, skip its first `skip_in_page` items.
///
/// Written by [`Paginator::checkpoint`], read by [`Paginator::resume`]; serializable so it
/// can be stored anywhere. See the [module docs](self#checkpoints-and-what-they-guarantee)
/// for the guarantee a caller gets (at-least-once, or exactly-once with an atomic commit).
///
/// ```
/// use keel_core::machine::paginate::Checkpoint;
///
/// let json = r#"{"next":null,"pages_done":3,"items_done":30,"skip_in_page":0}"#;
/// let done: Checkpoint = serde_json::from_str(json).unwrap();
/// assert_eq!(done.next, None); // nothing left to request
/// assert_eq!(serde_json::to_string(&done).unwrap(), json);
/// ```
///
/// Its `Debug` shows the URL through [`redact::url`]; serialized, it holds the URL as it is
/// (signature parameters of a pre-signed URL included), so store it as you would the URL.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The URL of the page the caller was in (or the next one, if it had finished a page);
    /// `None` when the listing is done.
    pub next: Option<String>,
    /// Pages fully processed.
    pub pages_done: u64,
    /// Items processed.
    pub items_done: u64,
    /// Items of `next` already processed, to skip on resume.
    pub skip_in_page: usize,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let next = self.next.as_deref().map(|next| match next.parse::<Uri>() {
            Ok(url) => redact::url(&url).to_string(),
            // Not a URL: nothing to recognize a secret in, and nothing to request either.
            Err(_) => "(not a url)".to_owned(),
        });
        f.debug_struct("Checkpoint")
            .field("next", &next)
            .field("pages_done", &self.pages_done)
            .field("items_done", &self.items_done)
            .field("skip_in_page", &self.skip_in_page)
            .finish()
    }
}

/// Why pagination stopped early. Pages are numbered from 1.
///
/// Its `Debug` and `Display` show URLs through [`redact::url`].
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub enum PaginateError {
    /// Page `page` leads to `url`, which was requested before: the server sends the listing
    /// round in circles.
    Cycle {
        /// The page whose next URL it is.
        page: u64,
        /// The URL requested again.
        url: Uri,
    },
    /// The listing has more than `max` pages ([`Paginator::max_pages`]).
    TooManyPages {
        /// The limit.
        max: u64,
    },
    /// Page `page` has no array at `pointer` (`""`: the body isn't an array).
    NoItems {
        /// The page, or 0 when not known.
        page: u64,
        /// The JSON pointer.
        pointer: String,
    },
    /// On page `page`, the value at `pointer` (or the query parameter it goes in) that says
    /// where the next page is can't be used: the wrong type, an empty item id, a next URL
    /// that isn't `http`/`https`.
    BadCursor {
        /// The page.
        page: u64,
        /// The JSON pointer.
        pointer: String,
    },
    /// On page `page`, the total at `pointer` isn't a number.
    BadTotal {
        /// The page.
        page: u64,
        /// The JSON pointer.
        pointer: String,
    },
    /// Page `page` was requested with a query parameter `param` that isn't a number (page
    /// number or offset), or is too large to increase.
    BadParam {
        /// The page.
        page: u64,
        /// The query parameter.
        param: String,
    },
    /// A checkpoint's `next` isn't a URL.
    BadCheckpoint {
        /// The text found.
        next: String,
    },
}

impl fmt::Display for PaginateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaginateError::Cycle { page, url } => {
                write!(
                    f,
                    "page {page} leads back to {}, requested before",
                    redact::url(url)
                )
            }
            PaginateError::TooManyPages { max } => write!(f, "more than {max} pages"),
            PaginateError::NoItems { page, pointer } => {
                write!(f, "page {page} has no array of items at `{pointer}`")
            }
            PaginateError::BadCursor { page, pointer } => {
                write!(f, "page {page}: the next page at `{pointer}` can't be used")
            }
            PaginateError::BadTotal { page, pointer } => {
                write!(f, "page {page}: the total at `{pointer}` isn't a number")
            }
            PaginateError::BadParam { page, param } => {
                write!(
                    f,
                    "page {page}: query parameter `{param}` isn't a usable number"
                )
            }
            PaginateError::BadCheckpoint { next } => {
                write!(f, "checkpoint: `{next}` isn't a URL")
            }
        }
    }
}

impl fmt::Debug for PaginateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaginateError::Cycle { page, url } => f
                .debug_struct("Cycle")
                .field("page", page)
                .field("url", &redact::url(url))
                .finish(),
            PaginateError::TooManyPages { max } => {
                f.debug_struct("TooManyPages").field("max", max).finish()
            }
            PaginateError::NoItems { page, pointer } => f
                .debug_struct("NoItems")
                .field("page", page)
                .field("pointer", pointer)
                .finish(),
            PaginateError::BadCursor { page, pointer } => f
                .debug_struct("BadCursor")
                .field("page", page)
                .field("pointer", pointer)
                .finish(),
            PaginateError::BadTotal { page, pointer } => f
                .debug_struct("BadTotal")
                .field("page", page)
                .field("pointer", pointer)
                .finish(),
            PaginateError::BadParam { page, param } => f
                .debug_struct("BadParam")
                .field("page", page)
                .field("param", param)
                .finish(),
            PaginateError::BadCheckpoint { next } => {
                f.debug_struct("BadCheckpoint").field("next", next).finish()
            }
        }
    }
}

impl StdError for PaginateError {}

#[cfg(test)]
mod tests;
