//! A lease on a GCRA schedule kept in Redis: slots booked a batch per round trip, handed to
//! attempts locally. Shared by [`FleetLimit`](crate::FleetLimit) and the
//! [`RedisStore`](crate::RedisStore)'s rate limits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::{select, Either, FutureExt, Shared};
use keel_core::machine::rate::Gcra;
use keel_core::pipeline::Action;
use keel_core::store::{Acquire, Admit};
use keel_core::{Error, ErrorKind, RateLimit, Timer};

use crate::conn::Redis;
use crate::{FleetError, FleetErrorKind};

type Refill = Shared<blocking::Task<()>>;

/// The settings of a lease, checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaseSettings {
    pub(crate) lease: u32,
    pub(crate) max_wait: Duration,
    pub(crate) grace: Duration,
}

pub(crate) struct Lease {
    /// The quota's name, for the metric.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    name: String,
    key: String,
    /// µs between two slots, tolerance and horizon, in µs.
    interval: u64,
    tolerance: u64,
    horizon: u64,
    settings: LeaseSettings,
    /// What the fallback is, for the metric: `local` or `fail_closed`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fallback: &'static str,
    redis: Arc<Redis>,
    script: Arc<redis::Script>,
    state: Mutex<State>,
    /// Counts the ids handed to waiting attempts that bring none.
    waiters: AtomicU64,
}

struct State {
    /// The booked slots not taken yet, in order.
    slots: VecDeque<Instant>,
    /// The round trip in flight, and when it started.
    refill: Option<(Refill, Instant)>,
    /// Redis booked nothing: no slot is free before this instant.
    ask_at: Option<Instant>,
    /// The fallback limiter (`None`: fail closed).
    local: Option<Gcra>,
    /// How long the last round trip took.
    round_trip: Duration,
    /// The attempts waiting for slots, first come first served: a round trip's slots go to
    /// them in this order before anyone else.
    queue: VecDeque<u64>,
    /// Slots handed to waiting attempts, not taken yet (dropped a grace after their instant).
    assigned: Vec<(u64, Instant)>,
}

/// What an attempt does next.
pub(crate) enum Step {
    /// Go: the slot taken (at or before now).
    Go(Instant),
    At(Instant),
    Fail(Error),
    /// Wait for the round trip in flight (started at the instant).
    Refill(Refill, Instant),
    /// Redis has no slot before this instant: ask again then.
    AskAt(Instant),
}

pub(crate) fn rate_limited(why: &'static str) -> Error {
    Error::new(ErrorKind::RateLimited).with_source(why)
}

/// The schedule of `limit` in whole µs (the interval rounded up: never faster than the limit):
/// interval, tolerance, horizon.
pub(crate) fn schedule(limit: RateLimit, lease: u32) -> Result<(u64, u64, u64), &'static str> {
    let interval = u64::try_from(limit.interval().as_nanos().div_ceil(1000))
        .map_err(|_| "the rate's interval is too long")?
        .max(1);
    let tolerance = interval.saturating_mul(u64::from(limit.burst_size() - 1));
    let horizon = interval.saturating_mul(u64::from(lease.max(1) * 4 - 1));
    if tolerance.max(horizon) > 1 << 50 {
        return Err("the rate's burst or lease spans too long");
    }
    Ok((interval, tolerance, horizon))
}

impl Lease {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        key: String,
        limit: RateLimit,
        settings: LeaseSettings,
        local: Option<RateLimit>,
        redis: Arc<Redis>,
        script: Arc<redis::Script>,
    ) -> Result<Self, &'static str> {
        let (interval, tolerance, horizon) = schedule(limit, settings.lease)?;
        Ok(Self {
            name,
            key,
            interval,
            tolerance,
            horizon,
            settings,
            fallback: if local.is_some() {
                "local"
            } else {
                "fail_closed"
            },
            redis,
            script,
            waiters: AtomicU64::new(0),
            state: Mutex::new(State {
                slots: VecDeque::new(),
                refill: None,
                ask_at: None,
                local: local.map(Gcra::new),
                round_trip: Duration::ZERO,
                queue: VecDeque::new(),
                assigned: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn redis(&self) -> &Redis {
        &self.redis
    }

    /// A fresh id for a waiting attempt (FleetPolicy's; the store's attempts bring their own).
    pub(crate) fn waiter_id(&self) -> u64 {
        self.waiters.fetch_add(1, Ordering::Relaxed) | 1 << 63
    }

    /// The attempt `caller` stopped waiting (its call was dropped): it leaves the queue, so the
    /// attempts behind it don't wait for it.
    pub(crate) fn leave(&self, caller: u64) {
        self.lock().queue.retain(|&c| c != caller);
    }

    /// Decides what the attempt `caller` at `now` does; never blocks and never does I/O (a
    /// round trip it starts runs on the thread pool).
    ///
    /// Attempts that find no slot queue up, and each round trip's slots go to the queue in
    /// order: an attempt that came later never takes a slot before one that waits.
    pub(crate) fn step(
        self: &Arc<Self>,
        now: Instant,
        deadline: Instant,
        hedge: bool,
        caller: u64,
    ) -> Step {
        let mut state = self.lock();
        let grace = self.settings.grace;
        while state.slots.front().is_some_and(|&slot| slot + grace < now) {
            state.slots.pop_front();
        }
        state.assigned.retain(|&(_, slot)| slot + grace >= now);
        if let Some(i) = state.assigned.iter().position(|&(c, _)| c == caller) {
            let (_, slot) = state.assigned.swap_remove(i);
            if slot > now && slot >= deadline {
                return Step::Fail(rate_limited(
                    "no slot of the fleet quota is free before the call's deadline",
                ));
            }
            return if slot <= now {
                Step::Go(slot)
            } else {
                Step::At(slot)
            };
        }
        let queued = state.queue.contains(&caller);
        if let Some(&slot) = state.slots.front().filter(|_| state.queue.is_empty()) {
            if slot > now && (hedge || slot >= deadline) {
                return Step::Fail(rate_limited(
                    "no slot of the fleet quota is free before the call's deadline",
                ));
            }
            state.slots.pop_front();
            self.refill_ahead(&mut state, now);
            return if slot <= now {
                Step::Go(slot)
            } else {
                Step::At(slot)
            };
        }
        if self.redis.is_down(now) {
            if queued {
                state.queue.retain(|&c| c != caller);
            }
            return self.fall_back(&mut state, now, deadline, hedge);
        }
        if hedge {
            return Step::Fail(rate_limited("no slot of the fleet quota is free"));
        }
        if !queued {
            state.queue.push_back(caller);
        }
        if let Some((refill, started)) = &state.refill {
            return Step::Refill(refill.clone(), *started);
        }
        if let Some(at) = state.ask_at.filter(|&at| at > now) {
            if at >= deadline {
                state.queue.retain(|&c| c != caller);
                return Step::Fail(rate_limited(
                    "no slot of the fleet quota is free before the call's deadline",
                ));
            }
            return Step::AskAt(at);
        }
        let lease = self.clone();
        let refill = blocking::unblock(move || lease.refill()).shared();
        state.refill = Some((refill.clone(), now));
        Step::Refill(refill, now)
    }

    /// Books the next slots while half a lease is still left, so that a busy process never
    /// waits for a round trip it could have made earlier (with leases of one, nothing is
    /// booked ahead).
    ///
    /// Only when the slots left are due within two round trips: a process whose slots wait
    /// further ahead is already held back by the quota, and booking more would only take slots
    /// from the other replicas.
    fn refill_ahead(self: &Arc<Self>, state: &mut State, now: Instant) {
        let low = state.slots.len() < (self.settings.lease / 2) as usize
            && state
                .slots
                .back()
                .is_none_or(|&last| last <= now + 2 * state.round_trip);
        if low
            && state.refill.is_none()
            && state.ask_at.is_none_or(|at| at <= now)
            && !self.redis.is_down(now)
        {
            let lease = self.clone();
            let refill = blocking::unblock(move || lease.refill()).shared();
            state.refill = Some((refill, now));
        }
    }

    /// Gives back a slot taken by [`step`](Self::step) whose attempt won't go.
    pub(crate) fn cancel(&self, slot: Instant) {
        let mut state = self.lock();
        if self.redis.in_outage() {
            if let Some(local) = &mut state.local {
                local.cancel(slot);
            }
        } else if state.slots.front().is_none_or(|&first| slot <= first) {
            state.slots.push_front(slot);
        }
    }

    fn fall_back(&self, state: &mut State, now: Instant, deadline: Instant, hedge: bool) -> Step {
        self.redis.count_fallback();
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "keel.redis.fallbacks",
            "quota" => self.name.clone(),
            "fallback" => self.fallback,
        )
        .increment(1);
        let Some(local) = &mut state.local else {
            let err = Error::new(ErrorKind::RateLimited);
            return Step::Fail(match self.redis.last_error() {
                Some(cause) => err.with_source(cause),
                None => err.with_source("the fleet quota's Redis is unavailable"),
            });
        };
        let deadline = if hedge {
            now + Duration::from_nanos(1)
        } else {
            deadline
        };
        match local.acquire(now, Some(deadline)) {
            Ok(at) if at <= now => Step::Go(at),
            Ok(at) => Step::At(at),
            Err(_) => Step::Fail(rate_limited(
                "the fallback limit has no slot before the call's deadline",
            )),
        }
    }

    /// Waits for a round trip (at most `max_wait` after it started), marking Redis down if it
    /// takes longer.
    async fn wait_refill(&self, refill: Refill, started: Instant, timer: &Arc<dyn Timer>) {
        let bound = timer.sleep_until(started + self.settings.max_wait);
        if let Either::Right(_) = select(refill, bound).await {
            self.redis.mark_down(
                FleetError::new(
                    FleetErrorKind::Timeout,
                    format!("no answer within {:?}", self.settings.max_wait),
                ),
                timer.now(),
            );
        }
    }

    /// The store's answer for an attempt: a slot, a refusal, or a wait after which to ask
    /// again.
    pub(crate) fn acquire(self: &Arc<Self>, request: &Acquire<'_>) -> Admit {
        let caller = request.caller();
        match self.step(
            request.now(),
            request.deadline(),
            request.is_hedge(),
            caller,
        ) {
            Step::Go(at) | Step::At(at) => Admit::At(at),
            Step::Fail(err) => Admit::Fail(err),
            Step::Refill(refill, started) => {
                let (lease, timer) = (self.clone(), request.timer().clone());
                Admit::Again(Box::pin(async move {
                    let mut place = Place::new(&lease, caller);
                    lease.wait_refill(refill, started, &timer).await;
                    place.kept();
                }))
            }
            Step::AskAt(at) => {
                let (lease, sleep) = (self.clone(), request.timer().sleep_until(at));
                Admit::Again(Box::pin(async move {
                    let mut place = Place::new(&lease, caller);
                    sleep.await;
                    place.kept();
                }))
            }
        }
    }

    /// Waits as `step` says, then for as many more steps as it takes, racing it all against
    /// the call's deadline (for [`FleetPolicy`](crate::FleetPolicy)).
    pub(crate) async fn wait(
        self: Arc<Self>,
        step: Step,
        timer: Arc<dyn Timer>,
        deadline: Instant,
        caller: u64,
    ) -> Action {
        let give_up = timer.sleep_until(deadline);
        let place = Place::new(&self, caller);
        let steps = async {
            let mut step = step;
            loop {
                match step {
                    Step::Go(_) => return Action::Proceed,
                    Step::Fail(err) => return Action::Fail(err),
                    Step::At(at) => {
                        timer.sleep_until(at).await;
                        return Action::Proceed;
                    }
                    Step::AskAt(at) => timer.sleep_until(at).await,
                    Step::Refill(refill, started) => {
                        self.wait_refill(refill, started, &timer).await;
                    }
                }
                step = self.step(timer.now(), deadline, false, caller);
            }
        };
        let action = match select(Box::pin(steps), give_up).await {
            Either::Left((action, _)) => action,
            Either::Right(_) => Action::Fail(rate_limited(
                "no slot of the fleet quota before the call's deadline",
            )),
        };
        // Done waiting, one way or the other: out of the queue.
        drop(place);
        action
    }

    /// One round trip, on the thread pool: books slots, or records the failure.
    fn refill(&self) {
        let started = Instant::now();
        let result = self.round_trip();
        let now = Instant::now();
        let mut state = self.lock();
        state.refill = None;
        state.round_trip = now - started;
        match result {
            Ok((granted, offset)) => {
                self.redis.count_round_trip();
                self.redis.mark_up();
                if granted <= 0 {
                    let wait = Duration::from_micros(offset.max(1).unsigned_abs());
                    state.ask_at = Some(now + wait);
                    return;
                }
                let interval = i64::try_from(self.interval).unwrap_or(i64::MAX);
                let granted = granted.min(i64::from(self.settings.lease));
                for i in 0..granted {
                    let at = offset.saturating_add(i.saturating_mul(interval)).max(0);
                    state
                        .slots
                        .push_back(now + Duration::from_micros(at.unsigned_abs()));
                }
                // The attempts waiting get the slots first, in the order they came.
                while !state.queue.is_empty() && !state.slots.is_empty() {
                    if let (Some(caller), Some(slot)) =
                        (state.queue.pop_front(), state.slots.pop_front())
                    {
                        state.assigned.push((caller, slot));
                    }
                }
                // This process's own bookings fill the horizon until then: asking sooner would
                // only hear "nothing yet".
                let least = i64::from(self.settings.lease.div_ceil(2));
                let next = offset
                    .saturating_add((granted + least - 1).saturating_mul(interval))
                    .saturating_sub(i64::try_from(self.horizon).unwrap_or(i64::MAX));
                state.ask_at = Some(now + Duration::from_micros(next.max(0).unsigned_abs()));
            }
            Err(err) => {
                drop(state);
                self.redis.mark_down(err, now);
            }
        }
    }

    fn round_trip(&self) -> Result<(i64, i64), FleetError> {
        let lease = self.settings.lease;
        self.redis.run(&self.key, |c| {
            self.script
                .key(&self.key)
                .arg(self.interval)
                .arg(self.tolerance)
                .arg(lease)
                .arg(self.horizon)
                .arg(lease.div_ceil(2))
                .invoke::<(i64, i64)>(c)
        })
    }
}

/// An attempt's place in the queue of a lease, given up if its wait is dropped before it ends
/// (its call was cancelled or ran out of time), so the attempts behind it don't wait for it.
struct Place<'a> {
    lease: &'a Lease,
    caller: u64,
    kept: bool,
}

impl<'a> Place<'a> {
    fn new(lease: &'a Lease, caller: u64) -> Self {
        Self {
            lease,
            caller,
            kept: false,
        }
    }

    /// The wait ended as planned: the attempt asks again with its place kept.
    fn kept(&mut self) {
        self.kept = true;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.lease.leave(self.caller);
        }
    }
}
