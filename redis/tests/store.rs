//! A whole client's shared state in a real `redis-server` (`RedisStore`): rate limits, circuit
//! breakers and server quota holds shared by three clients on three Redis connections, as
//! three replicas would, against keel's loopback test server, which counts what arrives.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{check_aggregate, load, run_three_children, RedisServer, GRACE, RATE};
use keel_conformance::server::TestServer;
use keel_core::{
    BreakerPolicy, BreakerState, Client, ClientBuilder, ErrorKind, RateLimit, RetryPolicy,
};
use keel_hyper::HyperTransport;
use keel_redis::{Fallback, FleetErrorKind, RedisStore};

fn store(redis: &str, namespace: &str) -> RedisStore {
    RedisStore::builder(redis, namespace)
        .lease(10)
        .grace(GRACE)
        .fallback(Fallback::Divide(3))
        .build()
        .unwrap()
}

fn builder(store: &RedisStore, server: &TestServer) -> ClientBuilder<HyperTransport> {
    Client::<HyperTransport>::builder()
        .base_url(&server.url(""))
        .state_store(store.clone())
        .retry_policy(RetryPolicy::disabled())
        .deadline(Duration::from_secs(10))
}

fn breaker(cool_down: Duration) -> BreakerPolicy {
    BreakerPolicy::builder()
        .consecutive_failures(3)
        .open_for(cool_down, Duration::from_secs(30))
        .half_open_probes(1)
        .build()
        .unwrap()
}

/// Polls `cond` every 5 ms for up to `limit`; returns how long it took, if it came true.
async fn within(limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cond() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_share_a_client_wide_rate_limit() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let run = Duration::from_secs(5);
    let until = Instant::now() + run;
    let runs = (0..3).map(|_| {
        let store = store(&redis.url(), "three-limits");
        let client = builder(&store, &server)
            .rate_limit(RateLimit::per_second(RATE).unwrap())
            .build()
            .unwrap();
        tokio::spawn(async move { (load(&client, "/status/200", 8, until).await, store.stats()) })
    });
    for run in futures_util::future::join_all(runs).await {
        let (load, stats) = run.unwrap();
        assert!(load.failed.is_empty(), "failed calls: {:?}", load.failed);
        assert!(!stats.falling_back && stats.fallbacks == 0, "{stats:?}");
        eprintln!("one client: {} calls, {stats:?}", load.ok);
    }
    check_aggregate(&server, "/status/200", run, "three clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_seen_by_one_client_fails_the_others_fast() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let store = store(&redis.url(), "trip");
            builder(&store, &server)
                .circuit_breaker(breaker(Duration::from_secs(20)))
                .build()
                .unwrap()
        })
        .collect();
    // Every client has made its breaker (a call each), and hears the fleet's news.
    for client in &clients {
        assert_eq!(
            client.get("/status/200").send().await.unwrap().status(),
            200
        );
    }
    // Three failures trip the first client's breaker.
    for _ in 0..3 {
        let resp = clients[0].get("/status/503").send().await.unwrap();
        assert_eq!(resp.status(), 503);
    }
    assert!(matches!(
        clients[0].breaker_state("/"),
        Some(BreakerState::Open { .. })
    ));
    // The others hear it within a round trip or two.
    for (i, client) in clients.iter().enumerate().skip(1) {
        let took = within(Duration::from_secs(2), || {
            matches!(client.breaker_state("/"), Some(BreakerState::Open { .. }))
        })
        .await;
        eprintln!("client {i} heard of the trip after {took:?}");
        assert!(
            took.is_some_and(|t| t < Duration::from_millis(500)),
            "client {i}'s breaker: {:?} after {took:?}",
            client.breaker_state("/")
        );
        let err = client.get("/status/200").send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err:#}");
        assert!(
            err.retry_in()
                .is_some_and(|d| d > Duration::from_secs(15) && d <= Duration::from_secs(20)),
            "retry_in {:?}",
            err.retry_in()
        );
    }
    // Only the first calls and the three failures reached the server.
    assert_eq!(server.requests_to("/status/200"), 3);
    assert_eq!(server.requests_to("/status/503"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_probes_are_bounded_fleet_wide_and_a_good_one_closes_all() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let cool_down = Duration::from_millis(500);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let store = store(&redis.url(), "probes");
            builder(&store, &server)
                .circuit_breaker(breaker(cool_down))
                .build()
                .unwrap()
        })
        .collect();
    for client in &clients {
        client.get("/status/200").send().await.unwrap();
    }
    for _ in 0..3 {
        clients[0].get("/status/503").send().await.unwrap();
    }
    for client in &clients {
        let heard = within(Duration::from_secs(2), || {
            matches!(client.breaker_state("/"), Some(BreakerState::Open { .. }))
        })
        .await;
        assert!(heard.is_some(), "{:?}", client.breaker_state("/"));
    }
    tokio::time::sleep(cool_down + Duration::from_millis(50)).await;
    // Each client sends five slow calls at once: one probe may go, fleet-wide.
    let started = Instant::now();
    let calls = clients.iter().flat_map(|client| {
        (0..5).map(move |_| async move { client.get("/delay/400").send().await })
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let open = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .is_some_and(|e| e.kind() == ErrorKind::CircuitOpen)
        })
        .count();
    eprintln!(
        "15 calls in half-open: {ok} went, {open} refused, in {:?}",
        started.elapsed()
    );
    assert_eq!(
        (ok, open),
        (1, 14),
        "{:?}",
        results
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.kind()))
            .collect::<Vec<_>>()
    );
    assert_eq!(server.requests_to("/delay/400"), 1);
    // The probe succeeded: every client's breaker closes.
    for (i, client) in clients.iter().enumerate() {
        let took = within(Duration::from_secs(2), || {
            client.breaker_state("/") == Some(BreakerState::Closed)
        })
        .await;
        assert!(
            took.is_some(),
            "client {i}: {:?}",
            client.breaker_state("/")
        );
        assert_eq!(
            client.get("/status/200").send().await.unwrap().status(),
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_seen_by_one_client_holds_the_others() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let store = store(&redis.url(), "holds");
            builder(&store, &server)
                .server_quotas(true)
                .build()
                .unwrap()
        })
        .collect();
    for client in &clients {
        client.get("/status/200").send().await.unwrap();
    }
    let spent = clients[0]
        .get("/status/429?header=Retry-After:2")
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 429);
    drop(spent);
    // The other client hears of the hold, and its next request waits for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let next = clients[1].get("/status/200").send().await.unwrap();
    let held = started.elapsed();
    assert_eq!(next.status(), 200);
    eprintln!("the other client was held {held:?}");
    assert!(
        held >= Duration::from_millis(1_500) && held < Duration::from_secs(4),
        "held {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_under_a_cells_keys_are_errors_not_panics() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let store = store(&redis.url(), "foreign");
    let origin = server.url("");
    let origin = origin.trim_end_matches('/');
    // Another program's data under the breaker's key of the origin (`127.0.0.1` → port 80?
    // no: the origin names its port).
    let key = format!("{}breaker:origin:{origin}", store.key_prefix());
    let mut conn = common::connection(&redis);
    redis::cmd("SET")
        .arg(&key)
        .arg("not a breaker")
        .query::<()>(&mut conn)
        .unwrap();
    let client = builder(&store, &server)
        .circuit_breaker(breaker(Duration::from_secs(1)))
        .build()
        .unwrap();
    // The calls go on, with the process's own breaker.
    for _ in 0..5 {
        assert_eq!(
            client.get("/status/200").send().await.unwrap().status(),
            200
        );
    }
    let err = within(Duration::from_secs(2), || store.last_error().is_some()).await;
    assert!(err.is_some(), "no error was recorded");
    let err = store.last_error().unwrap();
    assert_eq!(err.kind(), FleetErrorKind::ForeignValue, "{err}");
    assert!(err.to_string().contains("breaker"), "{err}");
    // Never overwritten.
    let value: String = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    assert_eq!(value, "not a breaker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_falls_back_and_a_restart_resumes_sharing() {
    let redis = Arc::new(Mutex::new(RedisServer::start()));
    let url = redis.lock().unwrap().url();
    let server = TestServer::start().unwrap();
    let stores: Vec<_> = (0..2)
        .map(|_| {
            RedisStore::builder(&url, "killed")
                .fallback(Fallback::Divide(2))
                .backoff(Duration::from_millis(100), Duration::from_millis(400))
                .build()
                .unwrap()
        })
        .collect();
    let clients: Vec<_> = stores
        .iter()
        .map(|store| {
            builder(store, &server)
                .rate_limit(RateLimit::per_second(RATE).unwrap())
                .circuit_breaker(breaker(Duration::from_secs(20)))
                .build()
                .unwrap()
        })
        .collect();
    // Load through the outage: Redis killed after 1 s, back after 2 s.
    let chaos = {
        let redis = redis.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            redis.lock().unwrap().kill();
            std::thread::sleep(Duration::from_secs(1));
            redis.lock().unwrap().restart();
        })
    };
    let until = Instant::now() + Duration::from_secs(3);
    let loads =
        futures_util::future::join_all(clients.iter().map(|c| load(c, "/status/200", 4, until)))
            .await;
    chaos.join().unwrap();
    for (load, store) in loads.iter().zip(&stores) {
        eprintln!(
            "{} calls, slowest {:?}, {:?}, last error {:?}",
            load.ok,
            load.slowest,
            store.stats(),
            store.last_error()
        );
        assert!(load.failed.is_empty(), "calls failed: {:?}", load.failed);
        assert!(
            load.slowest < Duration::from_secs(2),
            "a call took {:?}",
            load.slowest
        );
        assert!(store.stats().fallbacks > 0, "{:?}", store.stats());
    }
    // Sharing resumes: calls make round trips again, and a trip by one client is heard by the
    // other.
    let started = Instant::now();
    while stores.iter().any(|s| s.stats().falling_back) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still falling back: {:?}",
            stores[0].stats()
        );
        for client in &clients {
            client.get("/status/200").send().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        clients[0].get("/status/503").send().await.unwrap();
    }
    let took = within(Duration::from_secs(10), || {
        matches!(
            clients[1].breaker_state("/"),
            Some(BreakerState::Open { .. })
        )
    })
    .await;
    eprintln!("after the restart, the trip was heard in {took:?}");
    assert!(
        took.is_some(),
        "after the restart the trip was not heard: {:?}",
        stores[1].stats()
    );
}

#[test]
fn three_processes_share_a_store_limit() {
    let run = Duration::from_secs(5);
    if let (Ok(redis), Ok(base)) = (
        std::env::var("KEEL_REDIS_STORE_CHILD_REDIS"),
        std::env::var("KEEL_REDIS_STORE_CHILD_BASE"),
    ) {
        // A child: one replica with its state in the store, sending as fast as the shared
        // limit lets it for 5 s.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let load = rt.block_on(async {
            let store = store(&redis, "three-processes");
            let client = Client::<HyperTransport>::builder()
                .base_url(&base)
                .state_store(store)
                .rate_limit(RateLimit::per_second(RATE).unwrap())
                .build()
                .unwrap();
            load(&client, "/status/200", 8, Instant::now() + run).await
        });
        assert!(load.failed.is_empty(), "failed calls: {:?}", load.failed);
        eprintln!("child {}: {} calls", std::process::id(), load.ok);
        return;
    }
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    run_three_children(
        "three_processes_share_a_store_limit",
        &[
            ("KEEL_REDIS_STORE_CHILD_REDIS", redis.url()),
            ("KEEL_REDIS_STORE_CHILD_BASE", server.url("")),
        ],
    );
    check_aggregate(&server, "/status/200", run, "three processes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_attempts_are_served_in_the_order_they_came() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    // One slot per round trip at 200/s, and 20 callers always waiting: each call waits for
    // the 19 ahead of it (about 100 ms), never for a stream of later ones.
    let store = RedisStore::builder(redis.url(), "fifo")
        .lease(1)
        .build()
        .unwrap();
    let client = builder(&store, &server)
        .rate_limit(RateLimit::per_second(200).unwrap())
        .build()
        .unwrap();
    let load = load(
        &client,
        "/status/200",
        20,
        Instant::now() + Duration::from_secs(3),
    )
    .await;
    eprintln!("{} calls, the slowest took {:?}", load.ok, load.slowest);
    assert!(load.failed.is_empty(), "failed calls: {:?}", load.failed);
    assert!(load.ok >= 400, "only {} calls in 3 s", load.ok);
    assert!(
        load.slowest < Duration::from_millis(400),
        "a call waited {:?} (20 callers at 200/s: about 100 ms each)",
        load.slowest
    );
}
