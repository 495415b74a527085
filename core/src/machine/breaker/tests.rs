//! Tests of the breaker: each rule and transition, the policy's checks and classification, and
//! property tests over random event sequences. Time is virtual: one `Instant` read per test.

use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::*;
use crate::machine::outcome::{ErrorKind, Failure, Outcome, TimeoutPhase};
use crate::machine::redirect::RedirectRefusal;
use crate::tests::epoch;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ticket(breaker: &mut Breaker, now: Instant) -> Ticket {
    match breaker.admit(now).0 {
        Admission::Allowed(t) => t,
        rejected => panic!("expected a ticket, got {rejected:?}"),
    }
}

/// Admits one call and reports `result` for it at the same instant.
fn call(breaker: &mut Breaker, result: CallResult, now: Instant) -> Option<Transition> {
    let t = ticket(breaker, now);
    breaker.on_result(t, result, now)
}

fn consecutive(n: u32) -> BreakerPolicy {
    BreakerPolicy::builder()
        .consecutive_failures(n)
        .open_for(secs(1), secs(10))
        .build()
        .unwrap()
}

fn open_until(breaker: &Breaker) -> Instant {
    match breaker.state() {
        BreakerState::Open { until } => until,
        state => panic!("expected open, got {state:?}"),
    }
}

#[test]
fn default_policy() {
    let policy = BreakerPolicy::default();
    assert_eq!(policy.consecutive_failures(), Some(5));
    assert_eq!(policy.failure_rate(), None);
    assert_eq!(policy.slow_call(), None);
    assert_eq!(policy.open_for(), (secs(5), secs(60)));
    assert_eq!(policy.half_open_probes(), 1);
    assert_eq!(policy.successes_to_close(), 1);
    let t0 = epoch();
    let mut breaker = Breaker::new(&policy);
    for _ in 0..4 {
        assert_eq!(call(&mut breaker, CallResult::Failure, t0), None);
    }
    let transition = call(&mut breaker, CallResult::Failure, t0).unwrap();
    assert_eq!(transition.from, BreakerState::Closed);
    assert_eq!(
        transition.to,
        BreakerState::Open {
            until: t0 + secs(5)
        }
    );
}

#[test]
fn consecutive_failures_trip_and_a_success_resets_the_count() {
    let t0 = epoch();
    let mut breaker = Breaker::new(&consecutive(3));
    call(&mut breaker, CallResult::Failure, t0);
    call(&mut breaker, CallResult::Failure, t0);
    call(&mut breaker, CallResult::Success, t0);
    call(&mut breaker, CallResult::Failure, t0);
    call(&mut breaker, CallResult::Failure, t0);
    // Ignored results neither add to the count nor reset it.
    call(&mut breaker, CallResult::Ignored, t0);
    assert_eq!(breaker.state(), BreakerState::Closed);
    let transition = call(&mut breaker, CallResult::Failure, t0 + ms(7));
    assert_eq!(
        transition,
        Some(Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open {
                until: t0 + ms(1_007)
            }
        })
    );
}

#[test]
fn zero_consecutive_failures_is_off() {
    let t0 = epoch();
    let policy = consecutive(0);
    assert_eq!(policy.consecutive_failures(), None);
    let mut breaker = Breaker::new(&policy);
    for _ in 0..1_000 {
        assert_eq!(call(&mut breaker, CallResult::Failure, t0), None);
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn open_rejects_until_the_cool_down_ends_then_half_opens_on_admit() {
    let t0 = epoch();
    let mut breaker = Breaker::new(&consecutive(1));
    call(&mut breaker, CallResult::Failure, t0);
    let until = t0 + secs(1);
    assert_eq!(
        breaker.admit(t0 + ms(999)),
        (Admission::Rejected { until: Some(until) }, None)
    );
    // Time alone changes nothing.
    assert_eq!(breaker.state(), BreakerState::Open { until });
    let (admission, transition) = breaker.admit(t0 + secs(3));
    let Admission::Allowed(probe) = admission else {
        panic!("{admission:?}")
    };
    assert!(probe.is_probe());
    assert_eq!(
        transition,
        Some(Transition {
            from: BreakerState::Open { until },
            to: BreakerState::HalfOpen
        })
    );
    assert_eq!(breaker.probes_in_flight(), 1);
}

#[test]
fn half_open_limits_probes_and_closes_after_enough_successes() {
    let t0 = epoch();
    let policy = BreakerPolicy::builder()
        .consecutive_failures(1)
        .open_for(secs(1), secs(10))
        .half_open_probes(2)
        .successes_to_close(3)
        .build()
        .unwrap();
    let mut breaker = Breaker::new(&policy);
    call(&mut breaker, CallResult::Failure, t0);
    let t1 = t0 + secs(1);
    let a = ticket(&mut breaker, t1);
    let b = ticket(&mut breaker, t1);
    assert!(a.is_probe() && b.is_probe());
    assert_eq!(
        breaker.admit(t1),
        (Admission::Rejected { until: None }, None)
    );
    assert_eq!(breaker.on_result(a, CallResult::Success, t1), None);
    // A released probe frees its slot and counts nothing.
    breaker.release(b);
    assert_eq!(breaker.probes_in_flight(), 0);
    let c = ticket(&mut breaker, t1);
    let d = ticket(&mut breaker, t1);
    assert_eq!(breaker.on_result(c, CallResult::Ignored, t1), None);
    assert_eq!(breaker.on_result(d, CallResult::Success, t1), None);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let e = ticket(&mut breaker, t1);
    assert_eq!(
        breaker.on_result(e, CallResult::Success, t1),
        Some(Transition {
            from: BreakerState::HalfOpen,
            to: BreakerState::Closed
        })
    );
    let t = ticket(&mut breaker, t1);
    assert!(!t.is_probe());
}

#[test]
fn failed_probes_double_the_cool_down_up_to_max_and_a_close_resets_it() {
    let t0 = epoch();
    let policy = BreakerPolicy::builder()
        .consecutive_failures(1)
        .open_for(secs(1), secs(5))
        .build()
        .unwrap();
    let mut breaker = Breaker::new(&policy);
    call(&mut breaker, CallResult::Failure, t0);
    let mut now = open_until(&breaker);
    assert_eq!(now, t0 + secs(1));
    let mut cool_downs = Vec::new();
    for _ in 0..4 {
        call(&mut breaker, CallResult::Failure, now);
        let until = open_until(&breaker);
        cool_downs.push(until - now);
        now = until;
    }
    assert_eq!(cool_downs, [secs(2), secs(4), secs(5), secs(5)]);
    // The probe succeeds: closed, and the next trip opens for the base again.
    call(&mut breaker, CallResult::Success, now);
    assert_eq!(breaker.state(), BreakerState::Closed);
    call(&mut breaker, CallResult::Failure, now);
    assert_eq!(open_until(&breaker), now + secs(1));
    // A reset also brings the cool-down back to base.
    let t = open_until(&breaker);
    call(&mut breaker, CallResult::Failure, t);
    assert_eq!(open_until(&breaker), t + secs(2));
    breaker.reset();
    call(&mut breaker, CallResult::Failure, t);
    assert_eq!(open_until(&breaker), t + secs(1));
}

#[test]
fn results_from_an_earlier_state_are_ignored() {
    let t0 = epoch();
    let mut breaker = Breaker::new(&consecutive(2));
    let slow_one = ticket(&mut breaker, t0);
    let slow_two = ticket(&mut breaker, t0);
    call(&mut breaker, CallResult::Failure, t0);
    call(&mut breaker, CallResult::Failure, t0);
    let until = open_until(&breaker);
    // Calls admitted while closed finish while open: nothing changes.
    assert_eq!(breaker.on_result(slow_one, CallResult::Failure, t0), None);
    assert_eq!(open_until(&breaker), until);
    let probe = ticket(&mut breaker, until);
    // …or while half-open: a closed-state success does not close it.
    assert_eq!(
        breaker.on_result(slow_two, CallResult::Success, until),
        None
    );
    breaker.release(slow_two);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(breaker.probes_in_flight(), 1);
    // A probe from before a reset counts nothing in the new closed state.
    breaker.reset();
    assert_eq!(breaker.on_result(probe, CallResult::Failure, until), None);
    breaker.release(probe);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn rate_rule_over_a_count_window() {
    let t0 = epoch();
    let policy = BreakerPolicy::builder()
        .consecutive_failures(0)
        .failure_rate(0.5, Window::Count(4), 4)
        .build()
        .unwrap();
    let mut breaker = Breaker::new(&policy);
    // Under min_calls nothing trips, even at 100 %.
    for _ in 0..1 {
        call(&mut breaker, CallResult::Failure, t0);
    }
    call(&mut breaker, CallResult::Success, t0);
    call(&mut breaker, CallResult::Success, t0);
    assert_eq!(breaker.state(), BreakerState::Closed);
    // F S S S: 25 %.
    call(&mut breaker, CallResult::Success, t0);
    assert_eq!(breaker.state(), BreakerState::Closed);
    // The oldest (the failure) leaves: S S S F, then S S F F = 50 %.
    call(&mut breaker, CallResult::Failure, t0);
    assert_eq!(breaker.state(), BreakerState::Closed);
    let transition = call(&mut breaker, CallResult::Failure, t0);
    assert_eq!(transition.map(|t| t.from), Some(BreakerState::Closed));
}

#[test]
fn rate_rule_checks_after_a_success_too() {
    let t0 = epoch();
    let policy = BreakerPolicy::builder()
        .consecutive_failures(0)
        .failure_rate(0.5, Window::Count(10), 4)
        .build()
        .unwrap();
    let mut breaker = Breaker::new(&policy);
    for _ in 0..3 {
        call(&mut breaker, CallResult::Failure, t0);
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    // 3 failures of 4 calls.
    assert!(call(&mut breaker, CallResult::Success, t0).is_some());
}

#[test]
fn rate_rule_over_a_time_window_forgets_old_calls() {
    let t0 = epoch();
    let policy = BreakerPolicy::builder()
        .consecutive_failures(0)
        .failure_rate(0.5, Window::Time(secs(10)), 4)
        .build()
        .unwrap();
    let mut breaker = Breaker::new(&policy);
    for _ in 0..3 {
        call(&mut breaker, CallResult::Failure, t0);
    }
    // Ten seconds later the failures have left the window: 1 of 1 call, under min_calls.
    call(&mut breaker, CallResult::Failure, t0 + secs(10));
    call(&mut breaker, CallResult::Success, t0 + secs(10));
    call(&mut breaker, CallResult::Success, t0 + secs(11));
    assert_eq!(breaker.state(), BreakerState::Closed);
    // 2 of 4 within the window.
    assert!(call(&mut breaker, CallResult::Failure, t0 + secs(12)).is_some());
    // A late `now` counts in the current slot, and never panics.
    breaker.reset();
    call(&mut breaker, CallResult::Failure, t0 + secs(20));
    call(&mut breaker, CallResult::Failure, t0);
    call(&mut breaker, CallResult::Success, t0);
    assert!(call(&mut breaker, CallResult::Success, t0).is_some());
}

#[test]
fn force_open_disable_and_reset() {
    let t0 = epoch();
    let mut breaker = Breaker::new(&consecutive(1));
    let before = ticket(&mut breaker, t0);
    assert_eq!(
        breaker.force_open(),
        Some(Transition {
            from: BreakerState::Closed,
            to: BreakerState::ForcedOpen
        })
    );
    assert_eq!(breaker.force_open(), None);
    assert_eq!(
        breaker.admit(t0 + secs(3_600)),
        (Admission::Rejected { until: None }, None)
    );
    assert_eq!(breaker.on_result(before, CallResult::Failure, t0), None);
    assert_eq!(
        breaker.disable(),
        Some(Transition {
            from: BreakerState::ForcedOpen,
            to: BreakerState::Disabled
        })
    );
    for _ in 0..100 {
        assert_eq!(call(&mut breaker, CallResult::Failure, t0), None);
    }
    assert_eq!(breaker.state(), BreakerState::Disabled);
    assert_eq!(
        breaker.reset(),
        Some(Transition {
            from: BreakerState::Disabled,
            to: BreakerState::Closed
        })
    );
    assert_eq!(breaker.reset(), None);
    assert!(call(&mut breaker, CallResult::Failure, t0).is_some());
}

#[test]
fn reset_clears_the_counters() {
    let t0 = epoch();
    let mut breaker = Breaker::new(&consecutive(2));
    call(&mut breaker, CallResult::Failure, t0);
    assert_eq!(breaker.reset(), None);
    assert_eq!(call(&mut breaker, CallResult::Failure, t0), None);
    assert!(call(&mut breaker, CallResult::Failure, t0).is_some());
}

#[test]
fn classify_default_rule() {
    let policy = BreakerPolicy::default();
    let headers = HeaderMap::new();
    let fast = ms(1);
    let response = |code: u16| Outcome::Response {
        status: StatusCode::from_u16(code).unwrap(),
        headers: &headers,
    };
    let error = |kind: ErrorKind| Outcome::Error(Failure::new(kind));
    for code in [200, 204, 301, 400, 404, 429] {
        assert_eq!(
            policy.classify(&response(code), fast),
            CallResult::Success,
            "{code}"
        );
    }
    for code in [500, 502, 503, 504, 599] {
        assert_eq!(
            policy.classify(&response(code), fast),
            CallResult::Failure,
            "{code}"
        );
    }
    let failures = [
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Timeout(TimeoutPhase::Connect),
        ErrorKind::Timeout(TimeoutPhase::Attempt),
        ErrorKind::Timeout(TimeoutPhase::Deadline),
        ErrorKind::Timeout(TimeoutPhase::ReadIdle),
        ErrorKind::Status(StatusCode::SERVICE_UNAVAILABLE),
        ErrorKind::Body,
        ErrorKind::Protocol,
    ];
    for kind in failures {
        assert_eq!(
            policy.classify(&error(kind), fast),
            CallResult::Failure,
            "{kind:?}"
        );
    }
    assert_eq!(
        policy.classify(&error(ErrorKind::Status(StatusCode::NOT_FOUND)), fast),
        CallResult::Success
    );
    let ignored = [
        ErrorKind::Redirect(RedirectRefusal::TooManyHops { max: 10 }),
        ErrorKind::CircuitOpen,
        ErrorKind::RateLimited,
        ErrorKind::InvalidUrl,
        ErrorKind::InvalidRequest,
        ErrorKind::Config,
        ErrorKind::Decode,
        ErrorKind::BodyTooLarge { limit: 10 },
    ];
    for kind in ignored {
        assert_eq!(
            policy.classify(&error(kind), fast),
            CallResult::Ignored,
            "{kind:?}"
        );
    }
}

#[test]
fn classify_predicate_first_then_slow_calls() {
    let policy = BreakerPolicy::builder()
        .slow_call(secs(1))
        .failure_predicate(|o: &Outcome<'_>| match o.status().map(|s| s.as_u16()) {
            Some(429) => Some(true),
            Some(503) => Some(false),
            _ => None,
        })
        .build()
        .unwrap();
    let headers = HeaderMap::new();
    let response = |code: u16| Outcome::Response {
        status: StatusCode::from_u16(code).unwrap(),
        headers: &headers,
    };
    assert_eq!(policy.classify(&response(429), ms(1)), CallResult::Failure);
    assert_eq!(policy.classify(&response(503), ms(1)), CallResult::Success);
    assert_eq!(policy.classify(&response(500), ms(1)), CallResult::Failure);
    // Slow: only a success becomes a failure, and only strictly over the limit.
    assert_eq!(
        policy.classify(&response(503), secs(2)),
        CallResult::Failure
    );
    assert_eq!(
        policy.classify(&response(200), secs(1)),
        CallResult::Success
    );
    assert_eq!(
        policy.classify(&response(200), ms(1_001)),
        CallResult::Failure
    );
    let invalid = Outcome::Error(Failure::new(ErrorKind::InvalidUrl));
    assert_eq!(policy.classify(&invalid, secs(5)), CallResult::Ignored);
    assert!(format!("{policy:?}").contains("predicate: Some(\"Fn\")"));
}

#[test]
fn rejects_bad_settings() {
    let setting = |b: BreakerPolicyBuilder| b.build().unwrap_err().setting();
    let b = BreakerPolicy::builder;
    for threshold in [0.0, -0.5, 1.01, f64::NAN, f64::INFINITY] {
        assert_eq!(
            setting(b().failure_rate(threshold, Window::Count(10), 5)),
            "breaker.failure_rate.threshold"
        );
    }
    for window in [
        Window::Count(0),
        Window::Count(10_001),
        Window::Time(ms(999)),
        Window::Time(secs(3_601)),
    ] {
        assert_eq!(
            setting(b().failure_rate(0.5, window, 1)),
            "breaker.failure_rate.window"
        );
    }
    assert_eq!(
        setting(b().failure_rate(0.5, Window::Count(10), 11)),
        "breaker.failure_rate.min_calls"
    );
    assert_eq!(
        setting(b().failure_rate(0.5, Window::Time(secs(10)), 0)),
        "breaker.failure_rate.min_calls"
    );
    assert_eq!(setting(b().slow_call(Duration::ZERO)), "breaker.slow_call");
    assert_eq!(
        setting(b().open_for(Duration::ZERO, secs(1))),
        "breaker.open_for"
    );
    assert_eq!(setting(b().open_for(secs(2), secs(1))), "breaker.open_for");
    assert_eq!(
        setting(b().open_for(secs(1), secs(86_401))),
        "breaker.open_for"
    );
    assert_eq!(setting(b().half_open_probes(0)), "breaker.half_open_probes");
    assert_eq!(
        setting(b().successes_to_close(0)),
        "breaker.successes_to_close"
    );
    // The limits themselves are fine.
    b().failure_rate(1.0, Window::Count(10_000), 10_000)
        .failure_rate(1.0, Window::Time(secs(3_600)), u32::MAX)
        .open_for(secs(86_400), secs(86_400))
        .half_open_probes(u32::MAX)
        .successes_to_close(u32::MAX)
        .build()
        .unwrap();
    let err = b().half_open_probes(0).build().unwrap_err();
    assert_eq!(err.reason(), "must be at least 1");
}

#[test]
fn a_tripped_count_window_starts_empty_after_closing() {
    let t0 = epoch();
    let policy = BreakerPolicy::builder()
        .consecutive_failures(0)
        .failure_rate(1.0, Window::Count(3), 3)
        .open_for(secs(1), secs(1))
        .build()
        .unwrap();
    let mut breaker = Breaker::new(&policy);
    for _ in 0..3 {
        call(&mut breaker, CallResult::Failure, t0);
    }
    let until = open_until(&breaker);
    call(&mut breaker, CallResult::Success, until);
    assert_eq!(breaker.state(), BreakerState::Closed);
    // Two failures are not enough: the window was cleared on close.
    call(&mut breaker, CallResult::Failure, until);
    call(&mut breaker, CallResult::Failure, until);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(call(&mut breaker, CallResult::Failure, until).is_some());
}

/// One event of a random history.
#[derive(Clone, Debug)]
enum Event {
    Admit,
    /// Gives back the held ticket at this index (modulo), with a result.
    Result(usize, CallResult),
    /// Releases the held ticket at this index (modulo).
    Release(usize),
    /// Moves the clock forward.
    Advance(u64),
    /// Moves the clock backward (a late reading).
    Rewind(u64),
    ForceOpen,
    Disable,
    Reset,
}

fn event() -> impl Strategy<Value = Event> {
    let result = prop_oneof![
        Just(CallResult::Success),
        Just(CallResult::Failure),
        Just(CallResult::Ignored),
    ];
    prop_oneof![
        8 => Just(Event::Admit),
        8 => (any::<usize>(), result).prop_map(|(i, r)| Event::Result(i, r)),
        2 => any::<usize>().prop_map(Event::Release),
        4 => (0u64..3_000).prop_map(Event::Advance),
        1 => (0u64..500).prop_map(Event::Rewind),
        1 => Just(Event::ForceOpen),
        1 => Just(Event::Disable),
        1 => Just(Event::Reset),
    ]
}

fn policy_strategy() -> impl Strategy<Value = BreakerPolicy> {
    (
        0u32..4,
        prop::option::of((1u32..=10, any::<bool>(), 1u32..=10, 1u32..=100)),
        1u32..4,
        1u32..4,
        prop::option::of(1u64..2_000),
    )
        .prop_map(|(consecutive, rate, probes, to_close, slow)| {
            let mut b = BreakerPolicy::builder()
                .consecutive_failures(consecutive)
                .open_for(ms(500), secs(4))
                .half_open_probes(probes)
                .successes_to_close(to_close);
            if let Some((size, by_time, min_calls, pct)) = rate {
                let window = if by_time {
                    Window::Time(secs(u64::from(size)))
                } else {
                    Window::Count(size)
                };
                b = b.failure_rate(f64::from(pct) / 100.0, window, min_calls.min(size));
            }
            if let Some(slow) = slow {
                b = b.slow_call(ms(slow));
            }
            b.build().unwrap()
        })
}

/// What a breaker answered to one event, to compare two runs.
#[derive(Clone, Debug, PartialEq)]
enum Answer {
    Admitted(Admission, Option<Transition>),
    Changed(Option<Transition>),
    Nothing,
}

/// A breaker, the clock and the tickets held by callers.
#[derive(Clone, Debug)]
struct Run {
    breaker: Breaker,
    now: Instant,
    held: Vec<Ticket>,
}

impl Run {
    fn new(policy: &BreakerPolicy, t0: Instant) -> Self {
        Self {
            breaker: Breaker::new(policy),
            now: t0,
            held: Vec::new(),
        }
    }

    /// Feeds one event, checking the invariants around it.
    fn step(&mut self, event: &Event) -> Result<Answer, TestCaseError> {
        let before = self.breaker.state();
        let answer = match *event {
            Event::Admit => {
                let (admission, transition) = self.breaker.admit(self.now);
                if matches!(before, BreakerState::Closed | BreakerState::Disabled) {
                    prop_assert!(
                        matches!(admission, Admission::Allowed(_)),
                        "rejected while {:?}",
                        before
                    );
                }
                if let Admission::Allowed(t) = admission {
                    self.held.push(t);
                }
                Answer::Admitted(admission, transition)
            }
            Event::Result(i, result) if !self.held.is_empty() => {
                let t = self.held.swap_remove(i % self.held.len());
                Answer::Changed(self.breaker.on_result(t, result, self.now))
            }
            Event::Release(i) if !self.held.is_empty() => {
                let t = self.held.swap_remove(i % self.held.len());
                self.breaker.release(t);
                Answer::Nothing
            }
            Event::Result(..) | Event::Release(_) => Answer::Nothing,
            Event::Advance(n) => {
                self.now += ms(n);
                Answer::Nothing
            }
            Event::Rewind(n) => {
                self.now = self.now.checked_sub(ms(n)).unwrap_or(self.now);
                Answer::Nothing
            }
            Event::ForceOpen => Answer::Changed(self.breaker.force_open()),
            Event::Disable => Answer::Changed(self.breaker.disable()),
            Event::Reset => Answer::Changed(self.breaker.reset()),
        };
        let transition = match answer {
            Answer::Admitted(_, t) | Answer::Changed(t) => t,
            Answer::Nothing => None,
        };
        if let Some(t) = transition {
            prop_assert_eq!(t.from, before);
            prop_assert_eq!(t.to, self.breaker.state());
            prop_assert_ne!(t.from, t.to);
            prop_assert!(
                !(t.from == BreakerState::Closed && t.to == BreakerState::HalfOpen),
                "closed went straight to half-open"
            );
        } else {
            prop_assert_eq!(before, self.breaker.state(), "a silent change of state");
        }
        // Probes out: those held by callers from the current generation, never more than allowed.
        let probes_held = self
            .held
            .iter()
            .filter(|t| t.probe && t.generation == self.breaker.generation)
            .count() as u32;
        if self.breaker.state() == BreakerState::HalfOpen {
            prop_assert_eq!(probes_held, self.breaker.probes_in_flight());
        } else {
            prop_assert_eq!(self.breaker.probes_in_flight(), 0);
            prop_assert_eq!(probes_held, 0);
        }
        prop_assert!(probes_held <= self.breaker.policy().half_open_probes());
        Ok(answer)
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x0b7e_a6e7),
        ..ProptestConfig::default()
    })]

    /// Probes never exceed the limit, closed never goes straight to half-open, and a closed
    /// or disabled breaker never rejects (checked in `Run::step`).
    #[test]
    fn invariants_hold_over_random_histories(
        policy in policy_strategy(),
        events in proptest::collection::vec(event(), 0..400),
    ) {
        let mut run = Run::new(&policy, epoch());
        for event in &events {
            run.step(event)?;
        }
    }

    /// The state is a function of the history: two breakers fed the same events agree, and so
    /// does a clone taken mid-way and fed the same suffix.
    #[test]
    fn the_state_is_a_function_of_the_history(
        policy in policy_strategy(),
        events in proptest::collection::vec(event(), 0..300),
        split in any::<prop::sample::Index>(),
    ) {
        let t0 = epoch();
        let mut a = Run::new(&policy, t0);
        let mut b = Run::new(&policy, t0);
        let split = split.index(events.len() + 1);
        for event in &events[..split] {
            prop_assert_eq!(a.step(event)?, b.step(event)?);
            prop_assert_eq!(a.breaker.state(), b.breaker.state());
        }
        let mut c = a.clone();
        for event in &events[split..] {
            let answer = a.step(event)?;
            prop_assert_eq!(&answer, &b.step(event)?);
            prop_assert_eq!(&answer, &c.step(event)?);
            prop_assert_eq!(a.breaker.state(), b.breaker.state());
            prop_assert_eq!(a.breaker.state(), c.breaker.state());
        }
    }
}

#[test]
fn a_trip_or_a_close_heard_from_elsewhere() {
    let t0 = epoch();
    let mut breaker = Breaker::new(&consecutive(3));
    // A closed breaker opens until the instant the peer's trip says, and a ticket from before
    // no longer counts.
    let before = ticket(&mut breaker, t0);
    let opened = breaker.opened_elsewhere(t0 + secs(5));
    assert_eq!(
        opened.map(|t| t.to),
        Some(BreakerState::Open {
            until: t0 + secs(5)
        })
    );
    assert_eq!(breaker.on_result(before, CallResult::Failure, t0), None);
    assert_eq!(
        breaker.admit(t0 + secs(1)).0,
        Admission::Rejected {
            until: Some(t0 + secs(5))
        }
    );
    // The same trip heard again, later: extended without a transition; earlier: unchanged.
    assert_eq!(breaker.opened_elsewhere(t0 + secs(6)), None);
    assert_eq!(breaker.opened_elsewhere(t0 + secs(2)), None);
    assert_eq!(
        breaker.state(),
        BreakerState::Open {
            until: t0 + secs(6)
        }
    );
    // Half-open after the cool-down; a close heard from elsewhere closes it, counters cleared.
    let probe = ticket(&mut breaker, t0 + secs(6));
    assert!(probe.is_probe());
    assert_eq!(
        breaker.closed_elsewhere().map(|t| (t.from, t.to)),
        Some((BreakerState::HalfOpen, BreakerState::Closed))
    );
    assert_eq!(breaker.closed_elsewhere(), None);
    assert_eq!(call(&mut breaker, CallResult::Failure, t0 + secs(7)), None);
    assert_eq!(call(&mut breaker, CallResult::Failure, t0 + secs(7)), None);
    assert!(call(&mut breaker, CallResult::Failure, t0 + secs(7)).is_some());
    // An operator's order wins over what peers say.
    breaker.force_open();
    assert_eq!(breaker.closed_elsewhere(), None);
    assert_eq!(breaker.opened_elsewhere(t0 + secs(60)), None);
    assert_eq!(breaker.state(), BreakerState::ForcedOpen);
    breaker.disable();
    assert_eq!(breaker.opened_elsewhere(t0 + secs(60)), None);
    assert_eq!(breaker.state(), BreakerState::Disabled);
}
