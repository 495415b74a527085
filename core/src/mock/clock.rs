//! Virtual time: a clock only the test moves, a [`Timer`] on it ([`VirtualTimer`]), and an
//! executor ([`VirtualTimer::run`]) that polls a future when it was woken and otherwise jumps the
//! clock to the earliest pending sleep (as quinn's test `Pair` jumps to the next timeout). It
//! never sleeps for real, and it panics instead of hanging when a future is stuck with nothing
//! scheduled to wake it or takes too many steps.
//!
//! # Two ways of moving time
//!
//! - **Inside [`VirtualTimer::run`]** (exact): time moves only when the future run has nothing
//!   left to do but wait, and then to the earliest deadline of all pending sleeps. Concurrent
//!   calls (`join_all`, `select`) see the same order of events they would see in real time.
//! - **Under any other executor** (`#[tokio::test]`, `futures::executor::block_on`, …), a timer
//!   made by [`VirtualTimer::new`] moves by itself: a sleep that is not due yields once (waking
//!   its task at once), and when it is polled again with the clock unchanged, the clock jumps to
//!   the earliest pending sleep. One call (or a `select` in one task) is timed exactly; calls in
//!   separate tasks may see a jump before another task has registered an earlier sleep, so their
//!   relative order is approximate. Use `run` when the order of concurrent events matters.
//!
//! Wall-clock time ([`Timer::now_system`]) moves with the virtual clock, from the real time at
//! which the clock was made, so HTTP-dates (`Retry-After`) are read against virtual time too.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use crate::transport::{Sleep, Timer};

/// The most polls and clock jumps [`run`] makes before it calls a future stuck.
pub(crate) const MAX_STEPS: usize = 100_000;

/// Virtual time: an origin plus an offset that only the test driver moves forward.
#[derive(Debug)]
pub(crate) struct Clock {
    origin: Instant,
    system_origin: SystemTime,
    /// Sleeps move the clock by themselves when no [`run`] drives it (see the module docs).
    auto_advance: bool,
    state: Mutex<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    offset: Duration,
    /// Bumped whenever `offset` moves.
    generation: u64,
    /// How many [`run`]s drive this clock now.
    driven: usize,
    next_id: u64,
    /// Pending sleeps: id → (due offset, waker of the last poll).
    waiters: BTreeMap<u64, (Duration, Waker)>,
}

impl ClockState {
    /// Moves the offset to `to` (never backwards) and takes the wakers of the sleeps due by then.
    fn move_to(&mut self, to: Duration) -> Vec<Waker> {
        if to > self.offset {
            self.offset = to;
            self.generation += 1;
        }
        let now = self.offset;
        let due: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        due.iter()
            .filter_map(|id| self.waiters.remove(id))
            .map(|(_, w)| w)
            .collect()
    }

    /// Moves the offset to the earliest pending sleep; `None` when no sleep is pending.
    fn move_to_next_sleep(&mut self) -> Option<Vec<Waker>> {
        let next = self.waiters.values().map(|(at, _)| *at).min()?;
        Some(self.move_to(next))
    }
}

impl Clock {
    /// A clock that moves only when told to (`advance_to_next_sleep`, or inside [`run`]).
    #[cfg(test)]
    pub(crate) fn new() -> Arc<Self> {
        Self::with_auto_advance(false)
    }

    fn with_auto_advance(auto_advance: bool) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            system_origin: SystemTime::now(),
            auto_advance,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Virtual time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.lock().offset
    }

    /// A future that is ready once virtual time reaches `at` (an offset from the origin).
    pub(crate) fn sleep_at(self: &Arc<Self>, at: Duration) -> VirtualSleep {
        let mut state = self.lock();
        state.next_id += 1;
        VirtualSleep {
            clock: self.clone(),
            id: state.next_id,
            at,
            yielded_at: None,
        }
    }

    /// Moves time forward by `by` and wakes every sleep due by then.
    pub(crate) fn advance(&self, by: Duration) {
        let woken = {
            let mut state = self.lock();
            let to = state.offset.saturating_add(by);
            state.move_to(to)
        };
        woken.into_iter().for_each(Waker::wake);
    }

    /// Moves time to the earliest pending sleep and wakes every sleep due by then.
    /// Returns false when no sleep is pending.
    pub(crate) fn advance_to_next_sleep(&self) -> bool {
        let woken = self.lock().move_to_next_sleep();
        match woken {
            Some(woken) => {
                woken.into_iter().for_each(Waker::wake);
                true
            }
            None => false,
        }
    }

    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }
}

/// A sleep on a [`Clock`].
pub(crate) struct VirtualSleep {
    clock: Arc<Clock>,
    id: u64,
    at: Duration,
    /// The clock's generation when this sleep last yielded to let others run first
    /// (auto-advancing clocks only).
    yielded_at: Option<u64>,
}

impl Future for VirtualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = this.clock.lock();
        if state.offset >= this.at {
            state.waiters.remove(&this.id);
            return Poll::Ready(());
        }
        state.waiters.insert(this.id, (this.at, cx.waker().clone()));
        if !this.clock.auto_advance || state.driven > 0 {
            return Poll::Pending;
        }
        // Under a foreign executor: yield once so that everything else polled with this sleep
        // gets its turn; polled again with nothing moved, jump to the earliest pending sleep.
        if this.yielded_at == Some(state.generation) {
            let woken = state.move_to_next_sleep().unwrap_or_default();
            let ready = state.offset >= this.at;
            if ready {
                state.waiters.remove(&this.id);
            }
            let generation = state.generation;
            drop(state);
            woken.into_iter().for_each(Waker::wake);
            if ready {
                return Poll::Ready(());
            }
            this.yielded_at = Some(generation);
        } else {
            this.yielded_at = Some(state.generation);
            drop(state);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for VirtualSleep {
    fn drop(&mut self) {
        self.clock.lock().waiters.remove(&self.id);
    }
}

impl fmt::Debug for VirtualSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualSleep")
            .field("at", &self.at)
            .finish()
    }
}

/// A [`Timer`] on virtual time, which only the test moves: see the
/// [module documentation](self) for how.
///
/// Cheap to clone: clones share the clock. A [`MockTransport`](super::MockTransport) carries
/// one; [`MockTransport::clock`](super::MockTransport::clock) returns it.
///
/// ```
/// use std::time::Duration;
/// use keel_core::mock::VirtualTimer;
/// use keel_core::Timer as _;
///
/// let timer = VirtualTimer::new();
/// let start = timer.now();
/// // Twenty virtual minutes, at once.
/// timer.run(timer.sleep_until(start + Duration::from_secs(1200)));
/// assert_eq!(timer.elapsed(), Duration::from_secs(1200));
/// timer.advance(Duration::from_millis(5));
/// assert_eq!(timer.now() - start, Duration::from_millis(1_200_005));
/// ```
#[derive(Clone)]
pub struct VirtualTimer(pub(crate) Arc<Clock>);

impl VirtualTimer {
    /// A timer at virtual time zero, which moves by itself under a foreign executor (see the
    /// [module documentation](self)).
    pub fn new() -> Self {
        Self(Clock::with_auto_advance(true))
    }

    /// Virtual time since the timer was made.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    /// Moves virtual time forward by `by`, waking the sleeps due by then.
    pub fn advance(&self, by: Duration) {
        self.0.advance(by);
    }

    /// Drives `fut` to completion in virtual time, on the calling thread: polls it when it was
    /// woken, and otherwise jumps the clock to the earliest pending sleep. It never sleeps for
    /// real.
    ///
    /// # Panics
    ///
    /// When the future is pending with no sleep pending (nothing would ever wake it), or after
    /// 100,000 polls and jumps; the message names the virtual time. Both are bugs in the test
    /// (or in the code under test), reported instead of a hang.
    pub fn run<F: Future>(&self, fut: F) -> F::Output {
        run(&self.0, fut)
    }

    /// A sleep that is ready `d` from now.
    #[cfg(test)]
    pub(crate) fn sleep_for(&self, d: Duration) -> VirtualSleep {
        let now = self.0.elapsed();
        self.0.sleep_at(now + d)
    }
}

impl Default for VirtualTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for VirtualTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.0.lock();
        f.debug_struct("VirtualTimer")
            .field("elapsed", &state.offset)
            .field("pending_sleeps", &state.waiters.len())
            .finish()
    }
}

impl Timer for VirtualTimer {
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let at = deadline.saturating_duration_since(self.0.origin);
        Box::pin(self.0.sleep_at(at))
    }

    fn now(&self) -> Instant {
        self.0.now()
    }

    fn now_system(&self) -> SystemTime {
        self.0.system_origin + self.0.elapsed()
    }
}

/// Records that a future was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Marks a clock as driven by [`run`] while it lives.
struct Driven<'a>(&'a Clock);

impl<'a> Driven<'a> {
    fn new(clock: &'a Clock) -> Self {
        clock.lock().driven += 1;
        Self(clock)
    }
}

impl Drop for Driven<'_> {
    fn drop(&mut self) {
        self.0.lock().driven -= 1;
    }
}

/// Drives `fut` to completion in virtual time: polls it when it was woken, and otherwise jumps
/// `clock` to the next sleep. Panics instead of hanging.
pub(crate) fn run<F: Future>(clock: &Clock, fut: F) -> F::Output {
    let _driven = Driven::new(clock);
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    for _ in 0..MAX_STEPS {
        if flag.0.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        } else {
            assert!(
                clock.advance_to_next_sleep(),
                "stuck at {:?} of virtual time: the future is pending and nothing will wake it",
                clock.elapsed()
            );
        }
    }
    panic!(
        "the future did not finish within {MAX_STEPS} steps (at {:?} of virtual time)",
        clock.elapsed()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_executor_jumps_to_the_earliest_sleep_not_the_first_polled() {
        let timer = VirtualTimer::new();
        let start = timer.now();
        let late = timer.sleep_until(start + Duration::from_secs(30));
        let early = timer.sleep_until(start + Duration::from_secs(2));
        let winner = futures_executor::block_on(futures_util::future::select(late, early));
        assert!(matches!(winner, futures_util::future::Either::Right(_)));
        assert_eq!(timer.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn a_ready_future_polled_beside_a_sleep_wins_without_moving_time() {
        let timer = VirtualTimer::new();
        let sleep = timer.sleep_until(timer.now() + Duration::from_secs(30));
        let out = futures_executor::block_on(async {
            match futures_util::future::select(sleep, std::future::ready(7)).await {
                futures_util::future::Either::Left(_) => None,
                futures_util::future::Either::Right((v, _)) => Some(v),
            }
        });
        assert_eq!(out, Some(7));
        assert_eq!(timer.elapsed(), Duration::ZERO);
    }

    #[test]
    fn a_manual_clock_never_moves_by_itself() {
        let clock = Clock::new();
        let timer = VirtualTimer(clock.clone());
        let mut sleep = pin!(timer.sleep_for(Duration::from_secs(1)));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..3 {
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(clock.elapsed(), Duration::ZERO);
        assert!(clock.advance_to_next_sleep());
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn wall_clock_time_moves_with_virtual_time() {
        let timer = VirtualTimer::new();
        let start = timer.now_system();
        timer.advance(Duration::from_secs(90));
        assert_eq!(
            timer.now_system().duration_since(start).unwrap(),
            Duration::from_secs(90)
        );
    }

    #[test]
    #[should_panic(expected = "virtual time")]
    fn run_names_the_virtual_time_when_stuck() {
        let timer = VirtualTimer::new();
        timer.advance(Duration::from_secs(3));
        timer.run(std::future::pending::<()>());
    }
}
