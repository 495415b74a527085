//! One Redis: its connection (one round trip at a time), and whether it is considered down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::{FleetError, FleetErrorKind};

/// A Redis and what this process knows of its health.
pub(crate) struct Redis {
    client: redis::Client,
    /// The connection, used by one round trip at a time; `None` until (re)connected.
    conn: Mutex<Option<redis::Connection>>,
    pub(crate) timeout: Duration,
    backoff: (Duration, Duration),
    /// What the logs call it: `quota "github"`, `store "billing"`.
    pub(crate) what: String,
    /// What happens while it is down, for the logs.
    pub(crate) fallback: String,
    health: Mutex<Health>,
    /// Round trips that booked slots or said when to ask again.
    round_trips: AtomicU64,
    /// Admissions decided by the fallback.
    fallbacks: AtomicU64,
}

#[derive(Default)]
struct Health {
    outage: Option<Outage>,
    last_error: Option<FleetError>,
}

struct Outage {
    retry_at: Instant,
    backoff: Duration,
}

impl Redis {
    pub(crate) fn new(
        client: redis::Client,
        timeout: Duration,
        backoff: (Duration, Duration),
        what: String,
        fallback: String,
    ) -> Self {
        Self {
            client,
            conn: Mutex::new(None),
            timeout,
            backoff,
            what,
            fallback,
            health: Mutex::default(),
            round_trips: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// Counts a lease's round trip.
    pub(crate) fn count_round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an admission the fallback decided.
    pub(crate) fn count_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Round trips and fallen-back admissions so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.round_trips.load(Ordering::Relaxed),
            self.fallbacks.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the connection (connecting first if needed), on the calling thread: call it
    /// from the thread pool, never from a runtime's. A connection that failed (not one whose
    /// key held a foreign value) is dropped, so the next call reconnects.
    pub(crate) fn run<T>(
        &self,
        key: &str,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, FleetError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let c = match &mut *conn {
            Some(c) => c,
            slot @ None => {
                let fresh = self
                    .client
                    .get_connection_with_timeout(self.timeout)
                    .and_then(|c| {
                        c.set_read_timeout(Some(self.timeout))?;
                        c.set_write_timeout(Some(self.timeout))?;
                        Ok(c)
                    })
                    .map_err(|e| FleetError::from_redis(&e, key))?;
                slot.insert(fresh)
            }
        };
        match f(c) {
            Ok(reply) => Ok(reply),
            Err(e) => {
                let err = FleetError::from_redis(&e, key);
                if err.kind() != FleetErrorKind::ForeignValue {
                    // A timed-out or broken connection may hold half a reply: start afresh.
                    *conn = None;
                }
                Err(err)
            }
        }
    }

    /// Whether Redis is considered down at `now` (the fallback decides until then).
    pub(crate) fn is_down(&self, now: Instant) -> bool {
        self.health()
            .outage
            .as_ref()
            .is_some_and(|o| now < o.retry_at)
    }

    /// Whether an outage is going on (even one whose backoff is over, not asked again yet).
    pub(crate) fn in_outage(&self) -> bool {
        self.health().outage.is_some()
    }

    pub(crate) fn last_error(&self) -> Option<FleetError> {
        self.health().last_error.clone()
    }

    /// Redis answered.
    pub(crate) fn mark_up(&self) {
        if self.health().outage.take().is_some() {
            tracing::info!(redis = %self.what, "Redis answers again: state is shared again");
        }
    }

    /// Redis failed: falling back until the backoff is over (doubling while it stays down).
    pub(crate) fn mark_down(&self, err: FleetError, now: Instant) {
        let mut health = self.health();
        let backoff = match &health.outage {
            Some(o) if o.retry_at > now => return, // already down; the backoff stands
            Some(o) => (o.backoff * 2).min(self.backoff.1),
            None => {
                tracing::warn!(
                    redis = %self.what,
                    error = %err,
                    fallback = %self.fallback,
                    "Redis can't be used: falling back until it answers"
                );
                self.backoff.0
            }
        };
        health.outage = Some(Outage {
            retry_at: now + backoff,
            backoff,
        });
        health.last_error = Some(err);
    }
}
