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
    _items: PhantomData<fn() -> T>,
}

enum State {
    Idle,
    Fetching(Pending),
    Reading(PageFuture),
    Done,
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
    pub fn pages(&self) -> u64 {
        self.pager.pages()
    }

    fn fetch(&mut self, url: Uri) -> Option<Pending> {
        let mut request = self.template.try_clone()?;
        request.url = url;
        Some(Pending::new(self.shared.clone(), request, self.epoch))
    }

    /// A page arrived: hands it to the paginator and keeps its items (less those a resume
    /// skips).
    fn on_page(&mut self, url: Uri, headers: HeaderMap, mut body: Value) {
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

impl<T: DeserializeOwned> Stream for Paginate<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.items.pop_front() {
                this.pager.on_item();
                let item = serde_path_to_error::deserialize(item).map_err(|e| {
                    let path = e.path().to_string();
                    Error::decode(path, e.into_inner())
                });
                return Poll::Ready(Some(item));
            }
            if let Some(err) = this.error.take() {
                this.state = State::Done;
                return Poll::Ready(Some(Err(err)));
            }
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Idle => {
                    let Some(url) = this.pager.poll_request().cloned() else {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    };
                    match this.fetch(url) {
                        Some(pending) => this.state = State::Fetching(pending),
                        None => {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(Error::new(ErrorKind::InvalidRequest)
                                .with_source("a one-shot body can't be sent for every page"))));
                        }
                    }
                }
                State::Fetching(pending) => match ready!(Pin::new(pending).poll(cx)) {
                    Ok(resp) => {
                        this.state = State::Reading(Box::pin(async move {
                            let resp = resp.error_for_status().await?;
                            let (url, headers) = (resp.url().clone(), resp.headers().clone());
                            let body = resp.json::<Value>().await?;
                            Ok((url, headers, body))
                        }));
                    }
                    Err(err) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(err)));
                    }
                },
                State::Reading(page) => match ready!(page.as_mut().poll(cx)) {
                    Ok((url, headers, body)) => {
                        this.state = State::Idle;
                        this.on_page(url, headers, body);
                    }
                    Err(err) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(err)));
                    }
                },
            }
        }
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
