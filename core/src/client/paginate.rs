//! A paginated listing as a lazy [`Stream`] of typed items: the pure
//! [`Paginator`](crate::machine::paginate::Paginator) decides what to request next, every page
//! is a call through the client's pipeline.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use http::{HeaderMap, Uri};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::pending::Pending;
use super::request::Request;
use super::Dispatch;
use crate::error::{Error, ErrorKind, Stage};
use crate::machine::credentials::same_origin;
use crate::machine::paginate::{Checkpoint, Page, PaginateError, Paginator, Strategy};

type PageFuture = Pin<Box<dyn Future<Output = Result<(Uri, HeaderMap, Value), Error>> + Send>>;

/// The items of a paginated listing as a [`Stream`], from
/// [`RequestBuilder::paginate`](crate::RequestBuilder::paginate) or
/// [`Client::paginate`](crate::Client::paginate).
///
/// - **Lazy, one page at a time.** A page is requested when the consumer has taken every item
///   of the one before; only that page's items are held.
/// - **Every page is a call** through the client's pipeline: retries, breakers, rate limits,
///   redirects and the credential rule (a next link to another origin gets no
///   `Authorization`).
/// - **Safe.** A page that leads back to one already requested ([`PaginateError::Cycle`]),
///   more than [`max_pages`](Self::max_pages) pages, or a page with no items where they
///   should be ends the stream with an error ([`ErrorKind::Decode`] whose source is the
///   [`PaginateError`] naming the page); a page that isn't JSON ends it with the JSON error.
///   The items of a page are all given before the error of what follows it. Items given are
///   never given again.
/// - **Resumable.** [`checkpoint`](Self::checkpoint) says where the consumer is (the page, and
///   how many of its items it took); [`Client::resume_paginate`](crate::Client::resume_paginate)
///   starts a new stream exactly there, in this process or another. See
///   [`machine::paginate`](crate::machine::paginate#checkpoints-and-what-they-guarantee) for
///   what committing checkpoints guarantees.
/// - Dropping the stream stops it (a page in flight is cancelled).
#[must_use = "streams do nothing unless polled"]
pub struct Paginate<T> {
    shared: Arc<dyn Dispatch>,
    epoch: Instant,
    /// The request each page is made from (its URL replaced by the page's).
    template: Request,
    pager: Paginator,
    items_pointer: Option<String>,
    state: State,
    /// The current page's items not given yet.
    items: VecDeque<Value>,
    /// The error that ends the stream once the current page's items are given.
    error: Option<Error>,
    /// The URL and headers of the page just loaded, for [`Pages`].
    last: Option<(Uri, HeaderMap)>,
    prefetch: bool,
    ahead: Option<Ahead>,
    _items: PhantomData<fn() -> T>,
}

enum State {
    Idle,
    Loading(PageFuture),
    Done,
}

/// The next page, loaded while the consumer reads this one.
enum Ahead {
    Loading(PageFuture),
    Loaded(Result<(Uri, HeaderMap, Value), Error>),
}

impl<T: DeserializeOwned> Paginate<T> {
    pub(crate) fn new(
        shared: Arc<dyn Dispatch>,
        epoch: Instant,
        template: Request,
        pager: Result<Paginator, Error>,
    ) -> Self {
        let (pager, error) = match pager {
            Ok(pager) => (pager, None),
            // Never asked: the stream only gives the error.
            Err(err) => (
                Paginator::new(Strategy::link_header(), template.url.clone()),
                Some(err),
            ),
        };
        Self {
            state: if error.is_some() {
                State::Done
            } else {
                State::Idle
            },
            shared,
            epoch,
            template,
            pager,
            items_pointer: None,
            items: VecDeque::new(),
            error,
            last: None,
            prefetch: false,
            ahead: None,
            _items: PhantomData,
        }
    }

    /// A stream whose only item is `err`.
    pub(crate) fn failed(shared: Arc<dyn Dispatch>, epoch: Instant, err: Error) -> Self {
        let template = Request::new(http::Method::GET, Uri::default());
        Self::new(shared, epoch, template, Err(err))
    }

    /// Ends the stream with `err` before anything is requested.
    pub(crate) fn fail_with(&mut self, err: Error) {
        self.state = State::Done;
        self.error = Some(err);
    }

    /// Where the items are in each page: a JSON pointer (`/data`, `/results`); by default the
    /// whole body is the array.
    pub fn items_at(mut self, pointer: &str) -> Self {
        self.items_pointer = Some(pointer.to_owned());
        self
    }

    /// At most this many pages (default
    /// [`DEFAULT_MAX_PAGES`](crate::machine::paginate::DEFAULT_MAX_PAGES)).
    pub fn max_pages(mut self, max: u64) -> Self {
        self.pager = self.pager.max_pages(max);
        self
    }

    /// Where the consumer is: store it to resume with
    /// [`Client::resume_paginate`](crate::Client::resume_paginate).
    pub fn checkpoint(&self) -> Checkpoint {
        self.pager.checkpoint()
    }

    /// Pages received so far (counting those before a resume).
    pub fn pages_done(&self) -> u64 {
        self.pager.pages()
    }

    /// Loads the next page while the consumer reads this one (off by default): one page
    /// more is held, and a consumer that stops early has made one request too many.
    pub fn prefetch(mut self, ahead: bool) -> Self {
        self.prefetch = ahead;
        self
    }

    /// The listing a page at a time, with each page's URL and headers.
    pub fn pages(self) -> Pages<T> {
        Pages { inner: self }
    }

    /// The page at `url`: fetched through the pipeline, refused unless `2xx`, read as JSON.
    fn fetch(&mut self, url: Uri) -> Option<PageFuture> {
        let mut request = self.template.try_clone()?;
        if !same_origin(&self.template.url, &url) {
            // A next link to another origin gets none of the request's credentials: the
            // redirect rule, for pages.
            let sensitive = &self.shared.config().sensitive;
            let names: Vec<_> = request
                .headers
                .keys()
                .filter(|name| sensitive.contains(name))
                .cloned()
                .collect();
            for name in names {
                request.headers.remove(name);
            }
        }
        request.url = url;
        let pending = Pending::new(self.shared.clone(), request, self.epoch);
        Some(Box::pin(async move {
            let resp = pending.await?.error_for_status().await?;
            let (url, headers) = (resp.url().clone(), resp.headers().clone());
            let body = resp.json::<Value>().await?;
            Ok((url, headers, body))
        }))
    }

    /// A page arrived: hands it to the paginator and keeps its items (less those a resume
    /// skips).
    fn on_page(&mut self, url: Uri, headers: HeaderMap, mut body: Value) {
        self.last = Some((url.clone(), headers.clone()));
        let found = self
            .pager
            .items_at(&body, self.items_pointer.as_deref())
            .map(<[Value]>::len);
        if let Err(err) = found {
            self.error = Some(paginate_error(err, &url));
            return;
        }
        let next = {
            let items = self
                .pager
                .items_at(&body, self.items_pointer.as_deref())
                .unwrap_or(&[]);
            self.pager.on_page(&Page::new(&url, &headers, &body, items))
        };
        let array = match self.items_pointer.as_deref() {
            Some(pointer) => body.pointer_mut(pointer),
            None => Some(&mut body),
        };
        if let Some(Value::Array(items)) = array {
            let skip = self.pager.skip_in_page().min(items.len());
            self.items = std::mem::take(items).into_iter().skip(skip).collect();
        }
        if let Err(err) = next {
            self.error = Some(paginate_error(err, &url));
        }
    }
}

fn paginate_error(err: PaginateError, url: &Uri) -> Error {
    Error::new(ErrorKind::Decode)
        .with_stage(Stage::Body)
        .with_url(url.clone())
        .with_source(err)
}

impl<T: DeserializeOwned> Paginate<T> {
    /// Loads the next page into `items`: `Ready(Some(Ok(())))` when one was loaded (it may
    /// have no items, or end with `error` set), `Ready(Some(Err(_)))` when fetching it
    /// failed, `Ready(None)` at the end of the listing.
    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<(), Error>>> {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(None),
                State::Idle => match self.ahead.take() {
                    Some(Ahead::Loaded(page)) => return Poll::Ready(Some(self.loaded(page))),
                    Some(Ahead::Loading(page)) => self.state = State::Loading(page),
                    None => {
                        let Some(url) = self.pager.poll_request().cloned() else {
                            self.state = State::Done;
                            return Poll::Ready(None);
                        };
                        match self.fetch(url) {
                            Some(page) => self.state = State::Loading(page),
                            None => {
                                self.state = State::Done;
                                return Poll::Ready(Some(Err(one_shot())));
                            }
                        }
                    }
                },
                State::Loading(page) => {
                    let page = ready!(page.as_mut().poll(cx));
                    self.state = State::Idle;
                    return Poll::Ready(Some(self.loaded(page)));
                }
            }
        }
    }

    /// A page's answer arrived (or failed).
    fn loaded(&mut self, page: Result<(Uri, HeaderMap, Value), Error>) -> Result<(), Error> {
        match page {
            Ok((url, headers, body)) => {
                self.on_page(url, headers, body);
                self.start_prefetch();
                Ok(())
            }
            Err(err) => {
                self.state = State::Done;
                Err(err)
            }
        }
    }

    /// With prefetching on, starts loading the next page while this one is read.
    fn start_prefetch(&mut self) {
        if !self.prefetch || self.ahead.is_some() || self.error.is_some() {
            return;
        }
        if let Some(url) = self.pager.poll_request().cloned() {
            self.ahead = self.fetch(url).map(Ahead::Loading);
        }
    }

    /// Moves the page being prefetched along, so it is ready when the consumer gets there.
    fn poll_ahead(&mut self, cx: &mut Context<'_>) {
        if let Some(Ahead::Loading(page)) = &mut self.ahead {
            if let Poll::Ready(page) = page.as_mut().poll(cx) {
                self.ahead = Some(Ahead::Loaded(page));
            }
        }
    }
}

fn one_shot() -> Error {
    Error::new(ErrorKind::InvalidRequest)
        .with_source("a one-shot body can't be sent for every page")
}

impl<T: DeserializeOwned> Stream for Paginate<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.items.pop_front() {
                this.poll_ahead(cx);
                this.pager.on_item();
                return Poll::Ready(Some(decode_item(item)));
            }
            if let Some(err) = this.error.take() {
                this.state = State::Done;
                return Poll::Ready(Some(Err(err)));
            }
            match ready!(this.poll_page(cx)) {
                Some(Ok(())) => {}
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => return Poll::Ready(None),
            }
        }
    }
}

fn decode_item<T: DeserializeOwned>(item: Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(item).map_err(|e| {
        let path = e.path().to_string();
        Error::decode(path, e.into_inner())
    })
}

/// One page of a listing, from [`Pages`]: where it came from, its headers, and its items.
#[non_exhaustive]
#[derive(Debug)]
pub struct ListingPage<T> {
    /// The page's number, from 1 (counting pages before a resume).
    pub number: u64,
    /// The URL that answered (after redirects).
    pub url: Uri,
    /// The page's response headers (rate-limit counters, totals, `Link`).
    pub headers: HeaderMap,
    /// The page's items (less those a resume skips).
    pub items: Vec<T>,
}

/// The pages of a paginated listing, for callers that need each page's headers or want to
/// handle a page at a time: [`Paginate::pages`]. A page counts as taken when it is given, so
/// a [`checkpoint`](Self::checkpoint) taken after it resumes at the next page.
#[must_use = "streams do nothing unless polled"]
pub struct Pages<T> {
    inner: Paginate<T>,
}

impl<T: DeserializeOwned> Pages<T> {
    /// Where the consumer is; see [`Paginate::checkpoint`].
    pub fn checkpoint(&self) -> Checkpoint {
        self.inner.checkpoint()
    }
}

impl<T: DeserializeOwned> Stream for Pages<T> {
    type Item = Result<ListingPage<T>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut self.get_mut().inner;
        loop {
            if !this.items.is_empty() || this.last.is_some() {
                let (url, headers) = this.last.take().unwrap_or_default();
                let mut items = Vec::with_capacity(this.items.len());
                for item in std::mem::take(&mut this.items) {
                    this.pager.on_item();
                    match decode_item(item) {
                        Ok(item) => items.push(item),
                        Err(err) => return Poll::Ready(Some(Err(err))),
                    }
                }
                this.poll_ahead(cx);
                return Poll::Ready(Some(Ok(ListingPage {
                    number: this.pager.pages(),
                    url,
                    headers,
                    items,
                })));
            }
            // The page was given; what its next link led to comes after it.
            if let Some(err) = this.error.take() {
                this.state = State::Done;
                return Poll::Ready(Some(Err(err)));
            }
            match ready!(this.poll_page(cx)) {
                Some(Ok(())) => {}
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => return Poll::Ready(None),
            }
        }
    }
}

impl<T> fmt::Debug for Pages<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pages")
            .field("pages", &self.inner.pager.pages())
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Paginate<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paginate")
            .field("pages", &self.pager.pages())
            .field("items_held", &self.items.len())
            .field("done", &matches!(self.state, State::Done))
            .finish_non_exhaustive()
    }
}
