//! Virtual time for the crate's unit tests: a clock only the test moves, a [`Timer`] on it, and
//! [`run`], an executor that polls a future when it was woken and otherwise jumps the clock to
//! the earliest pending sleep (as quinn's test `Pair` jumps to the next timeout). It never
//! sleeps for real, and it panics instead of hanging when a future is stuck with nothing
//! scheduled to wake it or takes too many steps.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::transport::{Sleep, Timer};

/// The most polls and clock jumps [`run`] makes before it calls a future stuck.
pub(crate) const MAX_STEPS: usize = 10_000;

/// Virtual time: an origin plus an offset that only the test driver moves forward.
#[derive(Debug)]
pub(crate) struct Clock {
    origin: Instant,
    state: Mutex<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    offset: Duration,
    next_id: u64,
    /// Pending sleeps: id → (due offset, waker of the last poll).
    waiters: BTreeMap<u64, (Duration, Waker)>,
}

impl Clock {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
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
        }
    }

    /// Moves time to the earliest pending sleep and wakes every sleep due by then.
    /// Returns false when no sleep is pending.
    pub(crate) fn advance_to_next_sleep(&self) -> bool {
        let woken: Vec<Waker> = {
            let mut state = self.lock();
            let Some(next) = state.waiters.values().map(|(at, _)| *at).min() else {
                return false;
            };
            state.offset = state.offset.max(next);
            let now = state.offset;
            let due: Vec<u64> = state
                .waiters
                .iter()
                .filter(|(_, (at, _))| *at <= now)
                .map(|(id, _)| *id)
                .collect();
            due.iter()
                .filter_map(|id| state.waiters.remove(id))
                .map(|(_, w)| w)
                .collect()
        };
        woken.into_iter().for_each(Waker::wake);
        true
    }
}

/// A sleep on a [`Clock`].
pub(crate) struct VirtualSleep {
    clock: Arc<Clock>,
    id: u64,
    at: Duration,
}

impl Future for VirtualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.clock.lock();
        if state.offset >= self.at {
            state.waiters.remove(&self.id);
            Poll::Ready(())
        } else {
            state.waiters.insert(self.id, (self.at, cx.waker().clone()));
            Poll::Pending
        }
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

/// The [`Timer`] of a [`Clock`].
#[derive(Clone, Debug)]
pub(crate) struct VirtualTimer(pub(crate) Arc<Clock>);

impl VirtualTimer {
    /// A sleep that is ready `d` from now.
    pub(crate) fn sleep_for(&self, d: Duration) -> VirtualSleep {
        let now = self.0.elapsed();
        self.0.sleep_at(now + d)
    }
}

impl Timer for VirtualTimer {
    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let at = deadline.saturating_duration_since(self.0.origin);
        Box::pin(self.0.sleep_at(at))
    }

    fn now(&self) -> Instant {
        self.0.origin + self.0.elapsed()
    }
}

/// Records that a future was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Drives `fut` to completion in virtual time: polls it when it was woken, and otherwise jumps
/// `clock` to the next sleep. Panics instead of hanging.
pub(crate) fn run<F: Future>(clock: &Clock, fut: F) -> F::Output {
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
                "stuck at {:?}: the future is pending and nothing will wake it",
                clock.elapsed()
            );
        }
    }
    panic!("the future did not finish within {MAX_STEPS} steps");
}
