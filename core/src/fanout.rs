//! Fan-out: run many requests — or any futures — with a bound on how many run at once.
//!
//! Four helpers replace hand-rolled `join_all` + semaphore code. Each takes the futures as an
//! iterator and a `limit`:
//!
//! | you want | use | the asyncio name |
//! |---|---|---|
//! | every result, in the order submitted | [`all`] | `gather` |
//! | every result in order, or the first error | [`try_all`] | `gather` that fails fast |
//! | each result as soon as it is ready | [`unordered`], a [`Stream`] | `as_completed` |
//! | each result in the order submitted, as soon as it can be | [`ordered`], a [`Stream`] | — |
//!
//! ```
//! use futures_util::StreamExt as _;
//! use keel_core::fanout;
//!
//! # futures_executor::block_on(async {
//! // Every result, in the order submitted, at most two futures at a time.
//! let squares = fanout::all((1..=5).map(|n| async move { n * n }), 2).await;
//! assert_eq!(squares, [1, 4, 9, 16, 25]);
//!
//! // The first error ends the fan-out.
//! let parsed = fanout::try_all(["1", "2", "x", "4"].map(|s| async move { s.parse::<u32>() }), 2);
//! assert!(parsed.await.is_err());
//!
//! // Results as they complete, eight futures at a time, folded as they come.
//! let mut results = fanout::unordered((1..=100).map(|n| async move { n }), 8);
//! let mut total = 0;
//! while let Some(n) = results.next().await {
//!     total += n;
//! }
//! assert_eq!(total, 5050);
//! # });
//! ```
//!
//! With a client, each future is usually a whole call — send, check the status, read the body —
//! so a slot is freed, and its connection given back, as soon as the body is read:
//!
//! ```
//! use keel_core::{fanout, Backend, Client, Error};
//!
//! #[derive(serde::Deserialize)]
//! struct User {
//!     id: u64,
//!     name: String,
//! }
//!
//! /// Every user of `ids`, 32 requests at a time; the first failure cancels the rest.
//! async fn users<T: Backend>(client: &Client<T>, ids: &[u64]) -> Result<Vec<User>, Error> {
//!     let calls = ids.iter().map(|id| async move {
//!         client
//!             .get(&format!("/users/{id}"))
//!             .send()
//!             .await?
//!             .error_for_status()
//!             .await?
//!             .json::<User>()
//!             .await
//!     });
//!     fanout::try_all(calls, 32).await
//! }
//! ```
//!
//! # Memory is bounded by `limit`, not by the number of futures
//!
//! The iterator is pulled lazily: a future is created only when a slot is free, so at most
//! `limit` of them exist at any time, whether the iterator yields ten or ten million. Collecting
//! the futures first (`ids.map(..).collect::<Vec<_>>()`, then `join_all` behind a semaphore)
//! builds every request up front: 10,000 of them sit in memory before the first is sent. Here
//! `(0..10_000).map(..)` holds the one range and `limit` futures.
//!
//! - [`unordered`] holds at most `limit` futures.
//! - [`ordered`] holds at most `limit` futures *and finished results*: a result that is ready
//!   before an earlier one waits in its slot, so one slow future delays the start of new ones.
//!   That is the price of the order; take [`unordered`] when the order does not matter.
//! - [`all`] and [`try_all`] run like [`unordered`] (a slow future never holds up the others)
//!   and put the results back in order at the end; they keep every result, since they return
//!   them all.
//!
//! A `limit` of 0 is taken as 1: the futures run one at a time. It never panics and never
//! stalls.
//!
//! keel's calls ([`Pending`](crate::Pending)) start nothing, not even their deadline, until
//! they are first polled, so a call waiting for a slot is not timing out.
//!
//! # Cancellation is dropping
//!
//! Dropping the stream, or the future of [`all`] or [`try_all`], drops every future in flight
//! and creates no more; a keel call that is dropped is cancelled at once and frees its
//! connection. [`try_all`] does this itself at the first error.
//!
//! # Nothing is spawned
//!
//! The futures run concurrently inside the task that polls the stream (or awaits [`all`]), on
//! any runtime: no task is spawned and no runtime is named. Two consequences:
//!
//! - The futures make progress only while the stream is polled. Keep the work between two
//!   `next()` calls short, or move it into the futures themselves (as the example above reads
//!   the body inside each future); a call's deadline keeps running while it is not polled.
//! - They share one thread at a time. That is what network calls need; CPU-heavy work on each
//!   result belongs on your runtime's blocking pool or in spawned tasks.
//!
//! `limit` bounds this fan-out only. A client's rate limit and breaker still apply to every
//! attempt, so a fan-out of 64 on a client limited to 10 requests per second runs at 10 per
//! second. For a [`Stream`] of futures rather than an iterator, futures-util's
//! `StreamExt::buffered` and `buffer_unordered` do the same (with `limit` 0 they stall).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::stream::{FusedStream, Stream};
use futures_util::stream::{self, BufferUnordered, Buffered, Iter, StreamExt as _};
use futures_util::FutureExt as _;
use pin_project_lite::pin_project;

/// Runs the futures from `futures`, at most `limit` at a time, and yields their outputs in the
/// order the iterator gave the futures.
///
/// The iterator is pulled only when a slot is free. A finished output waits in its slot until
/// every earlier one is yielded, so at most `limit` futures and outputs exist at once. A `limit`
/// of 0 is taken as 1. See the [module docs](self) for the memory bound and cancellation.
///
/// ```
/// use futures_util::StreamExt as _;
/// use keel_core::fanout;
///
/// # futures_executor::block_on(async {
/// let words = ["keel", "fans", "out"];
/// let lengths: Vec<usize> = fanout::ordered(words.map(|w| async move { w.len() }), 2)
///     .collect()
///     .await;
/// assert_eq!(lengths, [4, 4, 3]);
/// # });
/// ```
pub fn ordered<I>(futures: I, limit: usize) -> Ordered<I::IntoIter>
where
    I: IntoIterator,
    I::Item: Future,
{
    let limit = limit.max(1);
    Ordered {
        inner: stream::iter(futures).buffered(limit),
        limit,
    }
}

/// Runs the futures from `futures`, at most `limit` at a time, and yields each output as soon
/// as its future finishes.
///
/// The iterator is pulled only when a slot is free, so at most `limit` futures exist at once.
/// A `limit` of 0 is taken as 1. See the [module docs](self) for the memory bound and
/// cancellation.
///
/// ```
/// use futures_util::StreamExt as _;
/// use keel_core::fanout;
///
/// # futures_executor::block_on(async {
/// let mut sizes = fanout::unordered((1..=1000u64).map(|n| async move { n * 2 }), 16);
/// let (mut count, mut sum) = (0, 0);
/// while let Some(size) = sizes.next().await {
///     count += 1;
///     sum += size;
/// }
/// assert_eq!((count, sum), (1000, 1_001_000));
/// # });
/// ```
pub fn unordered<I>(futures: I, limit: usize) -> Unordered<I::IntoIter>
where
    I: IntoIterator,
    I::Item: Future,
{
    let limit = limit.max(1);
    Unordered {
        inner: stream::iter(futures).buffer_unordered(limit),
        limit,
    }
}

/// Runs the futures from `futures`, at most `limit` at a time, and returns every output in
/// the order the iterator gave the futures.
///
/// The futures run as in [`unordered`], so a slow one never holds up the start of the others;
/// the outputs are put back in order at the end. A `limit` of 0 is taken as 1. For results
/// of type `Result` that should stop at the first error, use [`try_all`].
///
/// ```
/// use keel_core::fanout;
///
/// # futures_executor::block_on(async {
/// let doubled = fanout::all((0..10).map(|n| async move { n * 2 }), 3).await;
/// assert_eq!(doubled, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
/// # });
/// ```
pub async fn all<I>(futures: I, limit: usize) -> Vec<<I::Item as Future>::Output>
where
    I: IntoIterator,
    I::Item: Future,
{
    let outputs = indexed(futures, limit).collect::<Vec<_>>().await;
    in_submission_order(outputs)
}

/// Runs the futures from `futures`, at most `limit` at a time, and returns every `Ok` value in
/// the order the iterator gave the futures, or the first error.
///
/// "First" is the first to happen: as soon as any future returns `Err`, `try_all` returns it,
/// drops (cancels) the futures still in flight and pulls nothing more from the iterator, even
/// if a future submitted earlier has not finished yet. A `limit` of 0 is taken as 1.
///
/// ```
/// use keel_core::fanout;
///
/// # futures_executor::block_on(async {
/// let ok = fanout::try_all(["1", "2", "3"].map(|s| async move { s.parse::<u8>() }), 2).await;
/// assert_eq!(ok, Ok(vec![1, 2, 3]));
///
/// let mut created = 0;
/// let calls = ["1", "x", "3", "4", "5", "6"].into_iter().map(|s| {
///     created += 1;
///     async move { s.parse::<u8>() }
/// });
/// let err = fanout::try_all(calls, 2).await;
/// assert!(err.is_err());
/// assert!(created < 6, "the futures after the error are never created");
/// # });
/// ```
pub async fn try_all<I, T, E>(futures: I, limit: usize) -> Result<Vec<T>, E>
where
    I: IntoIterator,
    I::Item: Future<Output = Result<T, E>>,
{
    let mut running = indexed(futures, limit);
    let mut outputs = Vec::with_capacity(running.size_hint().0);
    while let Some((index, result)) = running.next().await {
        // Returning drops `running`: the futures in flight with it, and the iterator.
        outputs.push((index, result?));
    }
    Ok(in_submission_order(outputs))
}

pin_project! {
    /// The [`Stream`] returned by [`ordered`]: the futures' outputs in the order submitted,
    /// with at most `limit` futures and waiting outputs at once.
    ///
    /// `I` is the iterator of futures. It is `Unpin` when `I` is, so `next()` works on it
    /// without pinning; to store one whose iterator type cannot be named, box the iterator
    /// (`Ordered<Box<dyn Iterator<Item = Pending> + Send>>`).
    #[must_use = "streams do nothing unless polled"]
    pub struct Ordered<I>
    where
        I: Iterator,
        I::Item: Future,
    {
        #[pin]
        inner: Buffered<Iter<I>>,
        limit: usize,
    }
}

impl<I> Ordered<I>
where
    I: Iterator,
    I::Item: Future,
{
    /// How many futures (and waiting outputs) may exist at once: the `limit` given, or 1 for 0.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl<I> Stream for Ordered<I>
where
    I: Iterator,
    I::Item: Future,
{
    type Item = <I::Item as Future>::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project().inner.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<I> FusedStream for Ordered<I>
where
    I: Iterator,
    I::Item: Future,
{
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}

impl<I> fmt::Debug for Ordered<I>
where
    I: Iterator,
    I::Item: Future,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ordered")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The [`Stream`] returned by [`unordered`]: the futures' outputs as they finish, with at
    /// most `limit` futures at once.
    ///
    /// `I` is the iterator of futures. It is `Unpin` when `I` is, so `next()` works on it
    /// without pinning; to store one whose iterator type cannot be named, box the iterator
    /// (`Unordered<Box<dyn Iterator<Item = Pending> + Send>>`).
    #[must_use = "streams do nothing unless polled"]
    pub struct Unordered<I>
    where
        I: Iterator,
        I::Item: Future,
    {
        #[pin]
        inner: BufferUnordered<Iter<I>>,
        limit: usize,
    }
}

impl<I> Unordered<I>
where
    I: Iterator,
    I::Item: Future,
{
    /// How many futures may run at once: the `limit` given, or 1 for 0.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl<I> Stream for Unordered<I>
where
    I: Iterator,
    I::Item: Future,
{
    type Item = <I::Item as Future>::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project().inner.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<I> FusedStream for Unordered<I>
where
    I: Iterator,
    I::Item: Future,
{
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}

impl<I> fmt::Debug for Unordered<I>
where
    I: Iterator,
    I::Item: Future,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unordered")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// [`unordered`] over the futures tagged with their position in the iterator.
fn indexed<I>(
    futures: I,
    limit: usize,
) -> Unordered<impl Iterator<Item = impl Future<Output = (usize, <I::Item as Future>::Output)>>>
where
    I: IntoIterator,
    I::Item: Future,
{
    let tagged = futures
        .into_iter()
        .enumerate()
        .map(|(index, future)| future.map(move |output| (index, output)));
    unordered(tagged, limit)
}

/// The outputs of [`indexed`], sorted back into submission order, without their positions.
fn in_submission_order<T>(mut outputs: Vec<(usize, T)>) -> Vec<T> {
    outputs.sort_unstable_by_key(|&(index, _)| index);
    outputs.into_iter().map(|(_, output)| output).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::future::{ready, Ready};
    use std::pin::pin;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::task::Waker;

    use futures_executor::block_on;
    use futures_util::task::noop_waker_ref;

    use super::*;

    /// Futures that finish only when the test opens their gate, and a record of what became of
    /// them: how many the iterator created, how many finished, how many were dropped unfinished.
    ///
    /// A gate never wakes itself, so once a stream returns `Pending` nothing can move until the
    /// test opens a gate: the tests step through a fan-out deterministically, with no clock.
    #[derive(Default)]
    struct Gates(Mutex<Record>);

    #[derive(Default)]
    struct Record {
        created: usize,
        finished: usize,
        cancelled: usize,
        most_alive: usize,
        open: HashSet<usize>,
        wakers: HashMap<usize, Waker>,
    }

    impl Record {
        fn alive(&self) -> usize {
            self.created - self.finished - self.cancelled
        }
    }

    /// What became of the futures so far, for comparing in one `assert_eq!`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Seen {
        created: usize,
        finished: usize,
        cancelled: usize,
        most_alive: usize,
    }

    impl Gates {
        fn new() -> Arc<Self> {
            Arc::default()
        }

        fn record(&self) -> MutexGuard<'_, Record> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        /// A future that resolves to `output` once gate `id` is open; it counts as created now.
        fn gate<T: Unpin>(self: &Arc<Self>, id: usize, output: T) -> Gate<T> {
            let mut record = self.record();
            record.created += 1;
            record.most_alive = record.most_alive.max(record.alive());
            Gate {
                id,
                gates: Arc::clone(self),
                output: Some(output),
            }
        }

        /// Opens gate `id`, waking its future if it is waiting.
        fn open(&self, id: usize) {
            let waker = {
                let mut record = self.record();
                record.open.insert(id);
                record.wakers.remove(&id)
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }

        fn seen(&self) -> Seen {
            let record = self.record();
            Seen {
                created: record.created,
                finished: record.finished,
                cancelled: record.cancelled,
                most_alive: record.most_alive,
            }
        }
    }

    struct Gate<T> {
        id: usize,
        gates: Arc<Gates>,
        output: Option<T>,
    }

    impl<T: Unpin> Future for Gate<T> {
        type Output = T;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
            let this = self.get_mut();
            let mut record = this.gates.record();
            if !record.open.contains(&this.id) {
                record.wakers.insert(this.id, cx.waker().clone());
                return Poll::Pending;
            }
            match this.output.take() {
                Some(output) => {
                    record.finished += 1;
                    Poll::Ready(output)
                }
                None => panic!("gate {} polled after it finished", this.id),
            }
        }
    }

    impl<T> Drop for Gate<T> {
        fn drop(&mut self) {
            if self.output.is_some() {
                self.gates.record().cancelled += 1;
            }
        }
    }

    /// Polls `stream` until it is pending or ends: what it yielded, and whether it ended.
    fn poll_ready<S: Stream + Unpin>(stream: &mut S) -> (Vec<S::Item>, bool) {
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut items = Vec::new();
        loop {
            match Pin::new(&mut *stream).poll_next(&mut cx) {
                Poll::Ready(Some(item)) => items.push(item),
                Poll::Ready(None) => return (items, true),
                Poll::Pending => return (items, false),
            }
        }
    }

    /// Polls `future` once.
    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(noop_waker_ref()))
    }

    #[test]
    fn ordered_keeps_submission_order_when_later_futures_finish_first() {
        let gates = Gates::new();
        let mut outputs = ordered((0..6).map(|i| gates.gate(i, i)), 3);
        assert_eq!(poll_ready(&mut outputs), (vec![], false));
        assert_eq!(gates.seen().created, 3);

        gates.open(2);
        gates.open(1);
        // 1 and 2 are done but wait for 0, and keep their slots: nothing new is created.
        assert_eq!(poll_ready(&mut outputs), (vec![], false));
        assert_eq!(gates.seen().created, 3);
        assert_eq!(gates.seen().finished, 2);

        gates.open(0);
        assert_eq!(poll_ready(&mut outputs), (vec![0, 1, 2], false));
        assert_eq!(gates.seen().created, 6);

        for i in (3..6).rev() {
            gates.open(i);
        }
        assert_eq!(poll_ready(&mut outputs), (vec![3, 4, 5], true));
        assert!(outputs.is_terminated());
    }

    #[test]
    fn unordered_yields_in_completion_order() {
        let gates = Gates::new();
        let mut outputs = unordered((0..5).map(|i| gates.gate(i, i)), 3);
        assert_eq!(poll_ready(&mut outputs), (vec![], false));
        let mut yielded = Vec::new();
        for i in [1, 3, 0, 4, 2] {
            gates.open(i);
            let (items, ended) = poll_ready(&mut outputs);
            assert_eq!(items, [i], "after opening {i}");
            yielded.extend(items);
            assert_eq!(ended, yielded.len() == 5);
        }
        assert_eq!(gates.seen().most_alive, 3);
    }

    /// Steps a fan-out of 50 futures with limit 4 to its end, opening the gates in an order
    /// that mixes newest and oldest, and checks after every step that no more than 4 futures
    /// exist and that the iterator was never pulled more than 4 ahead of what was yielded.
    fn run_bounded<S>(gates: &Gates, mut outputs: S) -> Vec<usize>
    where
        S: Stream<Item = usize> + Unpin,
    {
        const N: usize = 50;
        const LIMIT: usize = 4;
        let mut yielded = Vec::new();
        let mut opened = HashSet::new();
        for step in 0..=N {
            let (items, ended) = poll_ready(&mut outputs);
            yielded.extend(items);
            let seen = gates.seen();
            assert!(
                seen.created - seen.finished - seen.cancelled <= LIMIT,
                "step {step}: {seen:?}"
            );
            assert!(
                seen.created - yielded.len() <= LIMIT,
                "step {step}: {} created, {} yielded",
                seen.created,
                yielded.len()
            );
            if ended {
                break;
            }
            let waiting = (0..seen.created).filter(|i| !opened.contains(i));
            let next = if step % 2 == 0 {
                waiting.max()
            } else {
                waiting.min()
            };
            let next = next.unwrap_or_else(|| panic!("step {step}: pending with nothing to open"));
            opened.insert(next);
            gates.open(next);
        }
        assert_eq!(yielded.len(), N);
        assert_eq!(
            gates.seen(),
            Seen {
                created: N,
                finished: N,
                cancelled: 0,
                most_alive: LIMIT,
            }
        );
        yielded
    }

    #[test]
    fn ordered_keeps_at_most_limit_in_flight_and_pulls_lazily() {
        let gates = Gates::new();
        let yielded = run_bounded(&gates, ordered((0..50).map(|i| gates.gate(i, i)), 4));
        assert_eq!(yielded, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn unordered_keeps_at_most_limit_in_flight_and_pulls_lazily() {
        let gates = Gates::new();
        let mut yielded = run_bounded(&gates, unordered((0..50).map(|i| gates.gate(i, i)), 4));
        assert_ne!(
            yielded,
            (0..50).collect::<Vec<_>>(),
            "the gates opened out of order"
        );
        yielded.sort_unstable();
        assert_eq!(yielded, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn all_returns_submission_order_whatever_the_completion_order() {
        let gates = Gates::new();
        let mut outputs = pin!(all((0..5).map(|i| gates.gate(i, i * 10)), 5));
        assert!(poll_once(outputs.as_mut()).is_pending());
        for i in (1..5).rev() {
            gates.open(i);
            assert!(
                poll_once(outputs.as_mut()).is_pending(),
                "0 is still running"
            );
        }
        gates.open(0);
        assert_eq!(poll_once(outputs), Poll::Ready(vec![0, 10, 20, 30, 40]));
    }

    #[test]
    fn all_does_not_let_a_slow_future_hold_up_new_ones() {
        let gates = Gates::new();
        let mut outputs = pin!(all((0..6).map(|i| gates.gate(i, i)), 2));
        assert!(poll_once(outputs.as_mut()).is_pending());
        // 0 stays running while 1..6 pass through the other slot one after another.
        for i in 1..6 {
            gates.open(i);
            assert!(poll_once(outputs.as_mut()).is_pending());
        }
        assert_eq!(gates.seen().created, 6);
        gates.open(0);
        assert_eq!(poll_once(outputs), Poll::Ready(vec![0, 1, 2, 3, 4, 5]));
        assert_eq!(gates.seen().most_alive, 2);
    }

    #[test]
    fn try_all_returns_every_value_in_submission_order() {
        let gates = Gates::new();
        let calls = (0..4).map(|i| gates.gate(i, Ok::<_, String>(i)));
        let mut outputs = pin!(try_all(calls, 2));
        assert!(poll_once(outputs.as_mut()).is_pending());
        for i in [1, 3, 2] {
            gates.open(i);
            assert!(poll_once(outputs.as_mut()).is_pending());
        }
        gates.open(0);
        assert_eq!(poll_once(outputs), Poll::Ready(Ok(vec![0, 1, 2, 3])));
    }

    #[test]
    fn try_all_stops_at_the_first_error() {
        let gates = Gates::new();
        let calls = (0..10).map(|i| gates.gate(i, if i == 1 { Err(i) } else { Ok(i) }));
        let mut outputs = pin!(try_all(calls, 3));
        assert!(poll_once(outputs.as_mut()).is_pending());
        assert_eq!(gates.seen().created, 3);

        gates.open(2); // a success frees a slot: 3 starts
        assert!(poll_once(outputs.as_mut()).is_pending());
        assert_eq!(gates.seen().created, 4);

        // 1 fails while 0, submitted earlier, is still running: the error comes back at once.
        gates.open(1);
        assert_eq!(poll_once(outputs), Poll::Ready(Err(1)));
        assert_eq!(
            gates.seen(),
            Seen {
                // 4..10 were never created,
                created: 4,
                finished: 2,
                // and 0 and 3, in flight, were dropped.
                cancelled: 2,
                most_alive: 3,
            }
        );
    }

    #[test]
    fn dropping_a_stream_cancels_the_futures_in_flight() {
        let gates = Gates::new();
        let mut outputs = ordered((0..10).map(|i| gates.gate(i, i)), 3);
        gates.open(0);
        assert_eq!(poll_ready(&mut outputs), (vec![0], false));
        drop(outputs);
        assert_eq!(
            gates.seen(),
            Seen {
                created: 4,
                finished: 1,
                cancelled: 3,
                most_alive: 3,
            }
        );
    }

    #[test]
    fn limit_zero_runs_one_at_a_time() {
        let gates = Gates::new();
        let mut outputs = unordered((0..3).map(|i| gates.gate(i, i)), 0);
        assert_eq!(outputs.limit(), 1);
        assert_eq!(poll_ready(&mut outputs), (vec![], false));
        assert_eq!(gates.seen().created, 1);
        for i in 0..3 {
            gates.open(i);
            assert_eq!(poll_ready(&mut outputs), (vec![i], i == 2));
        }
        assert_eq!(gates.seen().most_alive, 1);

        let gates = Gates::new();
        let mut outputs = ordered((0..3).map(|i| gates.gate(i, i)), 0);
        assert_eq!(outputs.limit(), 1);
        assert_eq!(poll_ready(&mut outputs), (vec![], false));
        assert_eq!(gates.seen().created, 1);

        // Run to the end on a real executor: limit 0 never stalls.
        let gates = Gates::new();
        for i in 0..5 {
            gates.open(i);
        }
        let outputs = block_on(all((0..5).map(|i| gates.gate(i, i)), 0));
        assert_eq!(outputs, [0, 1, 2, 3, 4]);
        let calls = (0..5).map(|i| gates.gate(i, Ok::<_, ()>(i)));
        assert_eq!(block_on(try_all(calls, 0)), Ok(vec![0, 1, 2, 3, 4]));
        assert_eq!(gates.seen().most_alive, 1);
    }

    #[test]
    fn no_futures_no_results() {
        let none = || std::iter::empty::<Ready<Result<u8, ()>>>();
        assert!(block_on(all(none(), 4)).is_empty());
        assert_eq!(block_on(try_all(none(), 4)), Ok(vec![]));
        let mut outputs = ordered(none(), 4);
        assert_eq!(poll_ready(&mut outputs), (vec![], true));
        assert!(outputs.is_terminated());
        let mut outputs = unordered(none(), 4);
        assert_eq!(poll_ready(&mut outputs), (vec![], true));
        assert!(outputs.is_terminated());
    }

    #[test]
    fn runs_to_the_end_on_an_executor() {
        let squares = block_on(ordered((0..100u32).map(|n| ready(n * n)), 7).collect::<Vec<_>>());
        assert_eq!(squares, (0..100).map(|n| n * n).collect::<Vec<_>>());
        let sum: u32 = block_on(unordered((0..100u32).map(ready), 7).collect::<Vec<_>>())
            .into_iter()
            .sum();
        assert_eq!(sum, 4950);
    }
}
