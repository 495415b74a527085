//! The state-store seam, through the public `MockTransport` on virtual time: a store whose
//! cells must wait (a round trip to a shared store) before they answer is waited for and asked
//! again, never past the call's deadline; what the cells are asked is what the policies need.

#![cfg(feature = "mock")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_core::machine::breaker::{CallResult, Ticket, Transition};
use keel_core::mock::{Answer, Matcher, MockTransport, Rule};
use keel_core::store::{Acquire, Admit, BreakerAdmit, CellKey, LocalCell, StateCell, StateStore};
use keel_core::{
    BreakerControl, BreakerPolicy, BreakerState, Client, ErrorKind, RateLimit, RetryPolicy, Timer,
};

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A cell that answers like a local one, except that it first makes `waits` rate-limit
/// and breaker questions wait `delay` (a round trip), and records what it was asked.
#[derive(Debug)]
struct SlowCell {
    local: LocalCell,
    waits: AtomicUsize,
    delay: Duration,
    holds: Mutex<Vec<Instant>>,
}

impl SlowCell {
    fn pending(&self, timer: &Arc<dyn Timer>) -> Option<keel_core::store::Pending> {
        let left = self.waits.load(Ordering::SeqCst);
        if left == 0 {
            return None;
        }
        self.waits.store(left - 1, Ordering::SeqCst);
        let sleep = timer.sleep_until(timer.now() + self.delay);
        Some(Box::pin(sleep))
    }
}

impl StateCell for SlowCell {
    fn acquire(&self, request: &Acquire<'_>) -> Admit {
        match self.pending(request.timer()) {
            Some(wait) => Admit::Again(wait),
            None => self.local.acquire(request),
        }
    }
    fn cancel(&self, slot: Instant) {
        self.local.cancel(slot);
    }
    fn hold(&self, now: Instant, until: Instant) {
        self.holds.lock().unwrap().push(until);
        self.local.hold(now, until);
    }
    fn held_until(&self) -> Option<Instant> {
        self.local.held_until()
    }
    fn admit(
        &self,
        policy: &BreakerPolicy,
        now: Instant,
        timer: &Arc<dyn Timer>,
    ) -> (BreakerAdmit, Option<Transition>) {
        match self.pending(timer) {
            Some(wait) => (BreakerAdmit::Again(wait), None),
            None => self.local.admit(policy, now, timer),
        }
    }
    fn on_result(&self, ticket: Ticket, result: CallResult, now: Instant) -> Option<Transition> {
        self.local.on_result(ticket, result, now)
    }
    fn release(&self, ticket: Ticket) {
        self.local.release(ticket);
    }
    fn breaker_state(&self) -> Option<BreakerState> {
        self.local.breaker_state()
    }
    fn control(&self, policy: &BreakerPolicy, control: BreakerControl) -> Option<Transition> {
        self.local.control(policy, control)
    }
}

/// The cells made so far, by key, in the order they were asked for.
type Cells = Arc<Mutex<Vec<(String, Arc<SlowCell>)>>>;

/// Hands out one shared `SlowCell` per key and remembers the keys asked for.
#[derive(Debug, Clone, Default)]
struct SlowStore {
    cells: Cells,
    waits: usize,
    delay: Duration,
}

impl SlowStore {
    fn new(waits: usize, delay: Duration) -> Self {
        Self {
            waits,
            delay,
            ..Self::default()
        }
    }

    fn get(&self, key: &str) -> Option<Arc<SlowCell>> {
        let cells = self.cells.lock().unwrap();
        cells.iter().find(|(k, _)| k == key).map(|(_, c)| c.clone())
    }

    fn keys(&self) -> Vec<String> {
        self.cells
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl StateStore for SlowStore {
    fn cell(&self, key: CellKey<'_>) -> Arc<dyn StateCell> {
        let name = key.to_string();
        if let Some(cell) = self.get(&name) {
            return cell;
        }
        let cell = Arc::new(SlowCell {
            local: LocalCell::default(),
            waits: AtomicUsize::new(self.waits),
            delay: self.delay,
            holds: Mutex::default(),
        });
        self.cells.lock().unwrap().push((name, cell.clone()));
        cell
    }
}

#[test]
fn cells_are_asked_for_by_a_stable_key() {
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200)));
    let store = SlowStore::new(0, Duration::ZERO);
    let client = Client::<MockTransport>::builder()
        .base_url("https://api.example.com/v1/")
        .state_store(store.clone())
        .rate_limit(RateLimit::per_second(10).unwrap())
        .circuit_breaker(BreakerPolicy::builder().build().unwrap())
        .build_with(mock.clone())
        .unwrap();
    mock.run(async {
        client.get("a").send().await?;
        client
            .get("https://other.example.com:8443/b")
            .send()
            .await?;
        client.get("c").partition("tenant-7").send().await
    })
    .unwrap();
    assert_eq!(
        store.keys(),
        [
            "origin:https://api.example.com:443",
            "client",
            "origin:https://other.example.com:8443",
            "partition:tenant-7",
        ]
    );
}

#[test]
fn a_cell_that_must_wait_is_waited_for_and_asked_again() {
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200)));
    // Two waits of 40 ms on each cell: the client-wide limiter's and the breaker's.
    let store = SlowStore::new(2, millis(40));
    let client = Client::<MockTransport>::builder()
        .base_url("https://api.example.com/v1/")
        .state_store(store.clone())
        .rate_limit(RateLimit::per_second(10).unwrap())
        .circuit_breaker(BreakerPolicy::builder().build().unwrap())
        .build_with(mock.clone())
        .unwrap();
    let status = mock
        .run(async { client.get("a").send().await.map(|r| r.status()) })
        .unwrap();
    assert_eq!(status, 200);
    // The limiter waited twice, then the breaker twice: 160 ms, then the request went.
    assert_eq!(mock.requests()[0].at(), millis(160));
    let second = mock
        .run(async { client.get("a").send().await.map(|r| r.status()) })
        .unwrap();
    // Nothing to wait for any more but the limiter's own pace (10/s, burst 1): its first slot
    // was booked at 80 ms (before the breaker's waits), so the next is at 180 ms.
    assert_eq!(second, 200);
    assert_eq!(mock.requests()[1].at(), millis(180));
}

#[test]
fn a_cell_that_never_answers_fails_the_call_at_its_deadline() {
    let mock = MockTransport::new();
    mock.mount(Rule::when(Matcher::any()).respond(Answer::status(200)));
    let store = SlowStore::new(usize::MAX, millis(400));
    let client = Client::<MockTransport>::builder()
        .base_url("https://api.example.com/v1/")
        .state_store(store)
        .rate_limit(RateLimit::per_second(10).unwrap())
        .deadline(millis(1_000))
        .build_with(mock.clone())
        .unwrap();
    let err = mock.run(client.get("a").send()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(mock.elapsed(), millis(1_000));
    assert!(mock.requests().is_empty());
}

#[test]
fn holds_and_trips_go_through_the_cells() {
    let mock = MockTransport::new();
    mock.mount(
        Rule::when(Matcher::path("/v1/spent"))
            .respond(Answer::status(429).header("retry-after", "2")),
    );
    mock.mount(Rule::when(Matcher::path("/v1/down")).respond(Answer::status(503)));
    let store = SlowStore::new(0, Duration::ZERO);
    let client = Client::<MockTransport>::builder()
        .base_url("https://api.example.com/v1/")
        .state_store(store.clone())
        .retry_policy(RetryPolicy::disabled())
        .server_quotas(true)
        .circuit_breaker(
            BreakerPolicy::builder()
                .consecutive_failures(2)
                .build()
                .unwrap(),
        )
        .build_with(mock.clone())
        .unwrap();
    let origin = "origin:https://api.example.com:443";
    mock.run(async {
        client.get("spent").send().await.ok();
        client.get("spent").partition("t1").send().await.ok();
    });
    // The origin's hold, then the partition's, each about 2 s (give or take 10 % of jitter).
    let holds: Vec<usize> = [origin, "partition:t1"]
        .iter()
        .map(|k| store.get(k).unwrap().holds.lock().unwrap().len())
        .collect();
    assert_eq!(holds, [1, 1]);
    let store2 = SlowStore::new(0, Duration::ZERO);
    let client = Client::<MockTransport>::builder()
        .base_url("https://api.example.com/v1/")
        .state_store(store2.clone())
        .retry_policy(RetryPolicy::disabled())
        .circuit_breaker(
            BreakerPolicy::builder()
                .consecutive_failures(2)
                .build()
                .unwrap(),
        )
        .build_with(mock.clone())
        .unwrap();
    mock.run(async {
        client.get("down").send().await.ok();
        client.get("down").send().await.ok();
    });
    let cell = store2.get(origin).unwrap();
    assert!(matches!(
        cell.breaker_state(),
        Some(BreakerState::Open { .. })
    ));
    assert_eq!(
        client.breaker_state("/"),
        cell.breaker_state(),
        "the client reads the breaker from its cell"
    );
}
