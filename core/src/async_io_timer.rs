//! keel's timer on async-io, which needs no runtime (feature `async-io`).
//!
//! keel-isahc and keel-smol both run on async-io's timers; the timer lives here so they share it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures_util::task::{ArcWake, AtomicWaker};

use crate::transport::{Sleep, Timer};

/// keel's [`Timer`] on [`async_io::Timer`].
///
/// It works inside any executor: async-io drives its timers from `async_io::block_on` when that
/// is what runs the future (as smol does), and otherwise from its own reactor thread, started
/// on first use. No tokio runtime is needed.
///
/// ```
/// use std::time::Duration;
/// use keel_core::{AsyncIoTimer, Timer};
///
/// let timer = AsyncIoTimer::default();
/// let start = timer.now();
/// futures_executor::block_on(timer.sleep_until(start + Duration::from_millis(20)));
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncIoTimer;

impl Timer for AsyncIoTimer {
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(AsyncIoSleep(
            async_io::Timer::at(deadline),
            StableWaker::new(),
        ))
    }
}

/// An [`async_io::Timer`] as a future of `()`, polled through a [`StableWaker`] (a timer that
/// sees a new waker leaves and re-enters the reactor's queue and wakes the reactor's thread).
struct AsyncIoSleep(async_io::Timer, StableWaker);

impl Future for AsyncIoSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let AsyncIoSleep(timer, stable) = self.get_mut();
        stable.poll(cx, |cx| Pin::new(timer).poll(cx).map(drop))
    }
}

/// A waker whose identity stays the same from one poll to the next, for polling async-io
/// sockets and timers.
///
/// async-io keeps the waker of a socket's or a timer's last poll, and a poll that brings a
/// waker which does not [`Waker::will_wake`] the kept one counts as a new task: a socket wakes
/// the kept waker and registers again, a timer leaves and re-enters the reactor's queue and
/// wakes the reactor's thread. tokio's current-thread runtime (1.54) gives the future in its
/// `block_on` a waker whose clones never `will_wake` it, so every poll of a socket in that
/// future woke the future again: a busy loop, which cost keel-smol under
/// `#[tokio::main(flavor = "current_thread")]` 213 CPU-µs per request against 17 on smol.
///
/// [`StableWaker::poll`] passes the caller's context through while its waker keeps passing
/// `will_wake`; the first time it doesn't, it switches for good to a waker of its own (one
/// allocation) that forwards to whichever task polled last. On executors whose wakers are
/// stable it costs a waker clone per first poll.
///
/// ```
/// use std::future::{poll_fn, Future as _};
/// use std::pin::pin;
/// use std::time::{Duration, Instant};
/// use keel_core::StableWaker;
///
/// let mut stable = StableWaker::new();
/// let mut timer = pin!(async_io::Timer::after(Duration::from_millis(10)));
/// futures_executor::block_on(poll_fn(|cx| stable.poll(cx, |cx| timer.as_mut().poll(cx))));
/// ```
#[derive(Debug, Default)]
pub struct StableWaker {
    /// The waker of the first poll, while every poll's waker `will_wake` it.
    first: Option<Waker>,
    /// Once a poll brought another waker: the forwarding waker, and where it forwards to.
    forward: Option<(Arc<Forward>, Waker)>,
}

impl StableWaker {
    /// A `StableWaker` that has seen no poll yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `poll` with a context whose waker wakes the task behind `cx` and keeps its
    /// identity across calls.
    pub fn poll<T>(&mut self, cx: &mut Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> T) -> T {
        if let Some((forward, waker)) = &self.forward {
            forward.0.register(cx.waker());
            return poll(&mut Context::from_waker(waker));
        }
        match &self.first {
            Some(first) if first.will_wake(cx.waker()) => poll(cx),
            None => {
                self.first = Some(cx.waker().clone());
                poll(cx)
            }
            Some(_) => {
                self.first = None;
                let forward = Arc::new(Forward(AtomicWaker::new()));
                forward.0.register(cx.waker());
                let waker = futures_util::task::waker(forward.clone());
                let out = poll(&mut Context::from_waker(&waker));
                self.forward = Some((forward, waker));
                out
            }
        }
    }
}

/// Where a [`StableWaker`]'s own waker forwards to.
#[derive(Debug)]
struct Forward(AtomicWaker);

impl ArcWake for Forward {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A waker that counts its wakes and, like tokio's current-thread `block_on` waker, whose
    /// clones never `will_wake` one another (a new `Arc` per clone).
    fn unstable_waker(wakes: &Arc<std::sync::atomic::AtomicUsize>) -> Waker {
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl ArcWake for Count {
            fn wake_by_ref(arc_self: &Arc<Self>) {
                arc_self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        futures_util::task::waker(Arc::new(Count(wakes.clone())))
    }

    #[test]
    fn a_changing_waker_is_seen_as_one_stable_waker_that_forwards() {
        let wakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut stable = StableWaker::new();
        let mut seen: Vec<Waker> = Vec::new();
        for _ in 0..4 {
            let waker = unstable_waker(&wakes);
            let mut cx = Context::from_waker(&waker);
            stable.poll(&mut cx, |cx| seen.push(cx.waker().clone()));
        }
        // The first poll passes the caller's waker; from the second on, one waker of its own.
        assert!(!seen[1].will_wake(&seen[0]));
        assert!(seen[2].will_wake(&seen[1]) && seen[3].will_wake(&seen[1]));
        // It wakes the task that polled last.
        seen[3].wake_by_ref();
        assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_stable_waker_is_passed_through() {
        let wakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waker = unstable_waker(&wakes);
        let mut stable = StableWaker::new();
        for _ in 0..3 {
            let mut cx = Context::from_waker(&waker);
            stable.poll(&mut cx, |cx| assert!(cx.waker().will_wake(&waker)));
        }
        assert!(stable.forward.is_none());
    }

    #[test]
    fn a_passed_deadline_resolves_at_once() {
        let timer = AsyncIoTimer;
        let past = timer.now() - Duration::from_millis(5);
        futures_executor::block_on(timer.sleep_until(past));
    }

    #[test]
    fn sleeps_on_a_foreign_executor() {
        let timer = AsyncIoTimer;
        let start = Instant::now();
        futures_executor::block_on(timer.sleep_until(start + Duration::from_millis(30)));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(30), "woke after {took:?}");
        assert!(took < Duration::from_secs(5), "woke after {took:?}");
    }
}
