//! keel's timer on async-io, which needs no runtime (feature `async-io`).
//!
//! keel-isahc and keel-smol both run on async-io's timers; the timer lives here so they share it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

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
        Box::pin(AsyncIoSleep(async_io::Timer::at(deadline)))
    }
}

/// An [`async_io::Timer`] as a future of `()`.
struct AsyncIoSleep(async_io::Timer);

impl Future for AsyncIoSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
