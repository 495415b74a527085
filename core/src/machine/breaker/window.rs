//! The calls a failure-rate rule looks at: the last N, or those of the last D.
//!
//! Both windows allocate once, when the breaker is built (a bit per call for a count window,
//! ten fixed slots for a time window), and never per call.

use std::time::{Duration, Instant};

use super::policy::{Window, MAX_COUNT_WINDOW};

/// Number of slots a time window is cut into.
const SLOTS: usize = 10;

/// Calls and failures in the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) calls: u32,
    pub(super) failures: u32,
}

/// The counts of one breaker's failure-rate rule, or nothing when it has none.
#[derive(Clone, Debug)]
pub(super) enum Counts {
    Off,
    Count(CountWindow),
    Time(TimeWindow),
}

impl Counts {
    pub(super) fn new(window: Option<Window>) -> Self {
        match window {
            None => Counts::Off,
            Some(Window::Count(n)) => Counts::Count(CountWindow::new(n)),
            Some(Window::Time(d)) => Counts::Time(TimeWindow::new(d)),
        }
    }

    /// Counts one call, and returns the tally that includes it.
    pub(super) fn record(&mut self, failure: bool, now: Instant) -> Tally {
        match self {
            Counts::Off => Tally::default(),
            Counts::Count(w) => w.record(failure),
            Counts::Time(w) => w.record(failure, now),
        }
    }

    pub(super) fn clear(&mut self) {
        match self {
            Counts::Off => {}
            Counts::Count(w) => w.clear(),
            Counts::Time(w) => w.clear(),
        }
    }
}

/// The last `size` calls, a bit each (set for a failure), in a ring.
#[derive(Clone, Debug)]
pub(super) struct CountWindow {
    bits: Box<[u64]>,
    size: u32,
    next: u32,
    len: u32,
    failures: u32,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        // The policy checked the size; clamped again so that no input can make this panic.
        let size = size.clamp(1, MAX_COUNT_WINDOW);
        Self {
            bits: vec![0; size.div_ceil(64) as usize].into_boxed_slice(),
            size,
            next: 0,
            len: 0,
            failures: 0,
        }
    }

    fn record(&mut self, failure: bool) -> Tally {
        let mask = 1u64 << (self.next % 64);
        if let Some(word) = self.bits.get_mut((self.next / 64) as usize) {
            if self.len == self.size {
                // The oldest call leaves the window.
                if *word & mask != 0 {
                    self.failures = self.failures.saturating_sub(1);
                }
            } else {
                self.len += 1;
            }
            if failure {
                *word |= mask;
                self.failures += 1;
            } else {
                *word &= !mask;
            }
        }
        self.next += 1;
        if self.next >= self.size {
            self.next = 0;
        }
        Tally {
            calls: self.len,
            failures: self.failures,
        }
    }

    fn clear(&mut self) {
        self.bits.fill(0);
        self.next = 0;
        self.len = 0;
        self.failures = 0;
    }
}

/// The calls of the last `window`, in ten slots of `window / 10`, like the retry budget's.
///
/// A `now` earlier than one seen before counts in the current slot.
#[derive(Clone, Debug)]
pub(super) struct TimeWindow {
    /// A window is at most an hour, so a slot's length fits a `u64` of nanoseconds.
    slot_nanos: u64,
    slots: [Tally; SLOTS],
    origin: Option<Instant>,
    epoch: u64,
}

impl TimeWindow {
    fn new(window: Duration) -> Self {
        let slot_nanos = u64::try_from(window.as_nanos() / SLOTS as u128).unwrap_or(u64::MAX);
        Self {
            slot_nanos: slot_nanos.max(1),
            slots: [Tally::default(); SLOTS],
            origin: None,
            epoch: 0,
        }
    }

    fn record(&mut self, failure: bool, now: Instant) -> Tally {
        let slot = &mut self.slots[self.advance(now)];
        slot.calls = slot.calls.saturating_add(1);
        if failure {
            slot.failures = slot.failures.saturating_add(1);
        }
        self.slots.iter().fold(Tally::default(), |sum, slot| Tally {
            calls: sum.calls.saturating_add(slot.calls),
            failures: sum.failures.saturating_add(slot.failures),
        })
    }

    fn clear(&mut self) {
        self.slots = [Tally::default(); SLOTS];
        self.origin = None;
        self.epoch = 0;
    }

    /// Moves the window to `now` and returns the index of the current slot.
    fn advance(&mut self, now: Instant) -> usize {
        let origin = *self.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
        let epoch = elapsed / self.slot_nanos;
        if epoch > self.epoch {
            if epoch - self.epoch >= SLOTS as u64 {
                self.slots = [Tally::default(); SLOTS];
            } else {
                for e in self.epoch + 1..=epoch {
                    self.slots[(e % SLOTS as u64) as usize] = Tally::default();
                }
            }
            self.epoch = epoch;
        }
        (self.epoch % SLOTS as u64) as usize
    }
}
