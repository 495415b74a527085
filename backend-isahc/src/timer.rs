//! keel's timer on async-io, which needs no runtime.

use std::time::Instant;

use keel_core::{Sleep, Timer};

/// keel's [`Timer`] on [`async_io::Timer`].
///
/// It works inside any executor: async-io drives its timers from `async_io::block_on` when that
/// is what runs the future (as smol does), and otherwise from its own reactor thread, started
/// on first use. No tokio runtime is needed.
///
/// ```
/// use std::time::Duration;
/// use keel_core::Timer;
/// use keel_isahc::AsyncIoTimer;
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
        Box::pin(async move {
            async_io::Timer::at(deadline).await;
        })
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
