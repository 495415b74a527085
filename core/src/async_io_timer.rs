//! keel's timer on async-io, which needs no runtime (feature `async-io`).
//!
//! keel-isahc and keel-smol both run on async-io's timers; the timer lives here so they share it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
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
/// Its sleeps share one async-io timer per process, armed at the earliest of their deadlines
/// (a wheel): a call's attempt and read-idle timers are armed and dropped on every request,
/// nearly always later than one already armed, and each async-io timer of their own would be
/// a trip through the reactor's queue and, often, a wake-up of its thread.
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
        Box::pin(WheelSleep {
            stable: StableWaker::new(),
            entry: Entry {
                deadline,
                id: None,
                waker: None,
            },
        })
    }
}

/// The sleeps of every [`AsyncIoTimer`] in the process, and the one async-io timer that wakes
/// them: armed at the earliest deadline among them (or earlier: a sleep dropped before its
/// deadline leaves the timer armed, and its firing then wakes nobody, or re-arms it).
struct Wheel {
    state: Mutex<WheelState>,
}

struct WheelState {
    /// Armed at `armed`, polled with `waker` so async-io wakes the wheel.
    timer: async_io::Timer,
    armed: Option<Instant>,
    /// The sleeps waiting, by deadline (and an id, for two with one deadline).
    sleepers: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// Wakes the wheel: set once, when the wheel is made.
    waker: Option<Waker>,
}

impl Wheel {
    fn get() -> &'static Arc<Wheel> {
        static WHEEL: OnceLock<Arc<Wheel>> = OnceLock::new();
        WHEEL.get_or_init(|| {
            let wheel = Arc::new(Wheel {
                state: Mutex::new(WheelState {
                    timer: async_io::Timer::never(),
                    armed: None,
                    sleepers: BTreeMap::new(),
                    next_id: 0,
                    waker: None,
                }),
            });
            let waker = futures_util::task::waker(wheel.clone());
            wheel.lock().waker = Some(waker);
            wheel
        })
    }

    fn lock(&self) -> MutexGuard<'_, WheelState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl WheelState {
    /// Arms the async-io timer at `at` if it is armed later (or not at all), and registers the
    /// wheel's waker with it. Returns false if `at` has passed already.
    fn arm(&mut self, at: Instant) -> bool {
        if self.armed.is_some_and(|armed| armed <= at) {
            return true;
        }
        self.timer.set_at(at);
        self.armed = Some(at);
        let Some(waker) = self.waker.clone() else {
            return true;
        };
        match Pin::new(&mut self.timer).poll(&mut Context::from_waker(&waker)) {
            Poll::Pending => true,
            Poll::Ready(_) => {
                self.armed = None;
                false
            }
        }
    }

    /// Takes the wakers of the sleeps due now, and arms the timer for the next one.
    fn fire(&mut self, due: &mut Vec<Waker>) {
        loop {
            // Read again on every turn: the next deadline may pass while the timer is armed
            // for it, and then it is due too.
            let now = Instant::now();
            let later = self.sleepers.split_off(&(now, u64::MAX));
            due.extend(std::mem::replace(&mut self.sleepers, later).into_values());
            self.armed = None;
            let next = self.sleepers.keys().next().map(|&(at, _)| at);
            match next {
                // Its deadline passed meanwhile: take that one too.
                Some(next) if !self.arm(next) => continue,
                _ => return,
            }
        }
    }
}

impl ArcWake for Wheel {
    /// The async-io timer fired: wakes the sleeps that are due, outside the lock.
    fn wake_by_ref(arc_self: &Arc<Self>) {
        let mut due = Vec::new();
        arc_self.lock().fire(&mut due);
        for waker in due {
            waker.wake();
        }
    }
}

/// A sleep on the [`Wheel`]. Polled through a [`StableWaker`]: on an executor whose wakers
/// change identity from poll to poll (tokio's current-thread `block_on`), every poll would
/// otherwise take the wheel's lock to hand it the new waker.
struct WheelSleep {
    stable: StableWaker,
    entry: Entry,
}

/// A sleep's place on the wheel.
struct Entry {
    deadline: Instant,
    /// Its key in the wheel, once it waits there.
    id: Option<u64>,
    /// The waker the wheel holds for it: a poll with the same one needs no lock.
    waker: Option<Waker>,
}

impl Future for WheelSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let WheelSleep { stable, entry } = self.get_mut();
        stable.poll(cx, |cx| entry.poll(cx))
    }
}

impl Entry {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.leave();
            return Poll::Ready(());
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // On the wheel with this task's waker: it wakes the task at the deadline.
            return Poll::Pending;
        }
        self.waker = Some(cx.waker().clone());
        #[cfg(test)]
        tests::LOCKED_POLLS.with(|n| n.set(n.get() + 1));
        let mut wheel = Wheel::get().lock();
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = wheel.next_id;
                wheel.next_id += 1;
                self.id = Some(id);
                id
            }
        };
        wheel
            .sleepers
            .insert((self.deadline, id), cx.waker().clone());
        if wheel.arm(self.deadline) {
            return Poll::Pending;
        }
        // The deadline passed while the timer was being armed.
        wheel.sleepers.remove(&(self.deadline, id));
        self.id = None;
        self.waker = None;
        let mut due = Vec::new();
        wheel.fire(&mut due);
        drop(wheel);
        for waker in due {
            waker.wake();
        }
        Poll::Ready(())
    }

    /// Takes this sleep off the wheel, if it waits there.
    fn leave(&mut self) {
        self.waker = None;
        if let Some(id) = self.id.take() {
            Wheel::get().lock().sleepers.remove(&(self.deadline, id));
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.leave();
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

    thread_local! {
        /// Polls of a sleep on this thread that took the wheel's lock.
        pub(super) static LOCKED_POLLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn a_sleep_polled_with_changing_wakers_takes_the_lock_at_most_twice_and_still_wakes() {
        within_10s(|| {
            let wakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let timer = AsyncIoTimer;
            let mut sleep = timer.sleep_until(timer.now() + Duration::from_millis(50));
            for _ in 0..100 {
                let waker = unstable_waker(&wakes);
                assert!(sleep
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending());
            }
            assert!(
                LOCKED_POLLS.with(std::cell::Cell::get) <= 2,
                "{} of 100 polls took the lock",
                LOCKED_POLLS.with(std::cell::Cell::get)
            );
            while wakes.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let waker = unstable_waker(&wakes);
            assert!(sleep
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready());
        });
    }

    #[test]
    fn a_passed_deadline_resolves_at_once() {
        let timer = AsyncIoTimer;
        let past = timer.now() - Duration::from_millis(5);
        futures_executor::block_on(timer.sleep_until(past));
    }

    /// Runs `f` on a thread of its own and fails if it takes longer than 10 s: a sleep the
    /// wheel never wakes must fail the test, not hang it.
    fn within_10s(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => thread.join().unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(thread.join().unwrap_err())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("a sleep never woke"),
        }
    }

    #[test]
    fn sleeps_on_the_wheel_wake_at_their_deadlines_in_any_order() {
        within_10s(wake_in_order);
    }

    fn wake_in_order() {
        let timer = AsyncIoTimer;
        let start = Instant::now();
        // Later deadlines first, then earlier ones, which re-arm the wheel's timer; one sleep is
        // dropped before its deadline and must not hold the others up.
        let offsets = [120u64, 90, 60, 30, 45, 10];
        let abandoned = timer.sleep_until(start + Duration::from_millis(5));
        let mut woke = Vec::new();
        futures_executor::block_on(async {
            let sleeps = offsets.iter().map(|&ms| {
                let sleep = timer.sleep_until(start + Duration::from_millis(ms));
                async move {
                    sleep.await;
                    (ms, start.elapsed())
                }
            });
            drop(abandoned);
            let mut all: futures_util::stream::FuturesUnordered<_> = sleeps.collect();
            while let Some(done) = futures_util::StreamExt::next(&mut all).await {
                woke.push(done);
            }
        });
        let order: Vec<u64> = woke.iter().map(|&(ms, _)| ms).collect();
        assert_eq!(order, [10, 30, 45, 60, 90, 120]);
        for (ms, at) in woke {
            assert!(at >= Duration::from_millis(ms), "{ms} ms woke at {at:?}");
            assert!(
                at < Duration::from_millis(ms + 2000),
                "{ms} ms woke at {at:?}"
            );
        }
    }

    #[test]
    fn deadlines_that_pass_while_the_wheel_rearms_are_all_woken() {
        within_10s(|| {
            // A microsecond apart: the next deadline often passes while the timer is being
            // armed for it, which once made the wheel spin, holding its lock, forever.
            let start = Instant::now() + Duration::from_millis(5);
            let sleeps: futures_util::stream::FuturesUnordered<_> = (0..5000u64)
                .map(|i| AsyncIoTimer.sleep_until(start + Duration::from_micros(i)))
                .collect();
            let woken = futures_executor::block_on(futures_util::StreamExt::count(sleeps));
            assert_eq!(woken, 5000);
        });
    }

    #[test]
    fn sleeps_on_many_threads_share_the_wheel() {
        within_10s(many_threads);
    }

    fn many_threads() {
        let start = Instant::now();
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                std::thread::spawn(move || {
                    let at = start + Duration::from_millis(10 + 7 * i);
                    for _ in 0..20 {
                        futures_executor::block_on(AsyncIoTimer.sleep_until(at));
                    }
                    assert!(start.elapsed() >= Duration::from_millis(10 + 7 * i));
                    // Short sleeps, one after another: each arms the wheel again.
                    for _ in 0..5 {
                        let from = Instant::now();
                        futures_executor::block_on(
                            AsyncIoTimer.sleep_until(from + Duration::from_millis(3)),
                        );
                        assert!(from.elapsed() >= Duration::from_millis(3));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn sleeps_on_a_foreign_executor() {
        within_10s(foreign_executor);
    }

    fn foreign_executor() {
        let timer = AsyncIoTimer;
        let start = Instant::now();
        futures_executor::block_on(timer.sleep_until(start + Duration::from_millis(30)));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(30), "woke after {took:?}");
        assert!(took < Duration::from_secs(5), "woke after {took:?}");
    }
}
