//! A fleet-wide quota on a real `redis-server`, through real keel clients (keel-hyper on
//! tokio) against keel's loopback test server, which counts what arrives.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{check_aggregate, load, run_three_children, RedisServer, GRACE, RATE};
use keel_conformance::server::TestServer;
use keel_core::{find_source, Client, ErrorKind, RateLimit};
use keel_hyper::HyperTransport;
use keel_redis::{Fallback, FleetErrorKind, FleetLimit};

const RUN: Duration = Duration::from_secs(5);

fn fleet(redis: &str, name: &str) -> FleetLimit {
    FleetLimit::builder(redis, name, RateLimit::per_second(RATE).unwrap())
        .lease(10)
        .grace(GRACE)
        .build()
        .unwrap()
}

fn client(fleet: &FleetLimit) -> Client<HyperTransport> {
    Client::<HyperTransport>::builder()
        .policy(fleet.policy())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_share_a_quota() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let url = server.url("/status/200");
    let until = Instant::now() + RUN;
    // Three FleetLimits: three Redis connections, three leases, as three replicas would have.
    let runs = (0..3).map(|_| {
        let fleet = fleet(&redis.url(), "three-clients");
        let url = url.clone();
        tokio::spawn(async move {
            let client = client(&fleet);
            (load(&client, &url, 8, until).await, fleet.stats())
        })
    });
    for run in futures_util::future::join_all(runs).await {
        let (load, stats) = run.unwrap();
        assert!(load.failed.is_empty(), "failed calls: {:?}", load.failed);
        assert!(!stats.falling_back && stats.fallbacks == 0, "{stats:?}");
        eprintln!(
            "one client: {} calls, {} round trips",
            load.ok, stats.round_trips
        );
    }
    check_aggregate(&server, "/status/200", RUN, "three clients");
}

#[test]
fn three_processes_share_a_quota() {
    if let (Ok(redis), Ok(url)) = (
        std::env::var("KEEL_REDIS_TEST_CHILD_REDIS"),
        std::env::var("KEEL_REDIS_TEST_CHILD_URL"),
    ) {
        // A child: one replica sending as fast as the quota lets it for 5 s.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let load = rt.block_on(async {
            let fleet = fleet(&redis, "three-processes");
            load(&client(&fleet), &url, 8, Instant::now() + RUN).await
        });
        assert!(load.failed.is_empty(), "failed calls: {:?}", load.failed);
        eprintln!("child {}: {} calls", std::process::id(), load.ok);
        return;
    }
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    run_three_children(
        "three_processes_share_a_quota",
        &[
            ("KEEL_REDIS_TEST_CHILD_REDIS", redis.url()),
            ("KEEL_REDIS_TEST_CHILD_URL", server.url("/status/200")),
        ],
    );
    check_aggregate(&server, "/status/200", RUN, "three processes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_falls_back_and_sharing_resumes() {
    let redis = Arc::new(Mutex::new(RedisServer::start()));
    let url = redis.lock().unwrap().url();
    let server = TestServer::start().unwrap();
    let fleet = FleetLimit::builder(&url, "killed", RateLimit::per_second(RATE).unwrap())
        .lease(10)
        .timeout(Duration::from_millis(100))
        .max_wait(Duration::from_millis(200))
        .backoff(Duration::from_millis(200), Duration::from_millis(400))
        .fallback(Fallback::Local(RateLimit::per_second(50).unwrap()))
        .build()
        .unwrap();
    let client = client(&fleet);
    let started = Instant::now();
    let chaos = {
        let (redis, fleet) = (redis.clone(), fleet.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            redis.lock().unwrap().kill();
            let killed_at = started.elapsed();
            std::thread::sleep(Duration::from_millis(1500));
            let down = fleet.stats();
            redis.lock().unwrap().restart();
            (killed_at, down)
        })
    };
    let run = load(
        &client,
        &server.url("/status/200"),
        4,
        started + Duration::from_millis(4500),
    )
    .await;
    let (killed_at, down) = chaos.join().unwrap();
    let end = fleet.stats();
    eprintln!(
        "killed at {killed_at:?}: {} calls, slowest {:?}; while down {down:?}; at the end {end:?}; last error: {:?}",
        run.ok,
        run.slowest,
        fleet.last_error()
    );
    assert!(run.failed.is_empty(), "calls lost: {:?}", run.failed);
    assert!(down.falling_back && down.fallbacks > 0, "{down:?}");
    assert!(
        run.slowest < Duration::from_millis(500),
        "a call waited {:?}",
        run.slowest
    );
    assert!(!end.falling_back, "sharing did not resume: {end:?}");
    assert!(end.round_trips > down.round_trips, "{down:?} → {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_falls_back_within_the_wait_and_sharing_resumes() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let fleet = FleetLimit::builder(redis.url(), "frozen", RateLimit::per_second(RATE).unwrap())
        .lease(2)
        .timeout(Duration::from_millis(100))
        .max_wait(Duration::from_millis(150))
        .backoff(Duration::from_millis(300), Duration::from_millis(300))
        .fallback(Fallback::Local(RateLimit::per_second(50).unwrap()))
        .build()
        .unwrap();
    let client = client(&fleet);
    let url = server.url("/status/200");
    let warm = load(
        &client,
        &url,
        2,
        Instant::now() + Duration::from_millis(300),
    )
    .await;
    assert!(warm.failed.is_empty() && fleet.stats().fallbacks == 0);
    redis.freeze();
    let frozen = load(
        &client,
        &url,
        2,
        Instant::now() + Duration::from_millis(1500),
    )
    .await;
    let down = fleet.stats();
    redis.thaw();
    let thawed = load(
        &client,
        &url,
        2,
        Instant::now() + Duration::from_millis(1500),
    )
    .await;
    let end = fleet.stats();
    eprintln!(
        "frozen: {} calls, slowest {:?}, {down:?}; thawed: {} calls, slowest {:?}, {end:?}; last error: {:?}",
        frozen.ok,
        frozen.slowest,
        thawed.ok,
        thawed.slowest,
        fleet.last_error()
    );
    assert!(frozen.failed.is_empty() && thawed.failed.is_empty());
    assert!(down.fallbacks > 0 && down.falling_back, "{down:?}");
    // The wait for Redis (150 ms), then the fallback's own pacing (20 ms at 50/s).
    assert!(
        frozen.slowest < Duration::from_millis(400),
        "a call waited {:?}",
        frozen.slowest
    );
    assert!(
        !end.falling_back && end.round_trips > down.round_trips,
        "{end:?}"
    );
}

#[tokio::test]
async fn a_foreign_value_under_the_key_is_an_error_not_a_panic() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let mut conn = common::connection(&redis);
    let plant = |conn: &mut redis::Connection, cmd: &mut redis::Cmd| {
        cmd.query::<()>(conn).unwrap();
        let _ = conn;
    };
    for (name, setup) in [
        (
            "string",
            redis::cmd("SET")
                .arg("keel:quota:string")
                .arg("hello")
                .clone(),
        ),
        (
            "number",
            redis::cmd("SET")
                .arg("keel:quota:number")
                .arg("keel1:12ab")
                .clone(),
        ),
        (
            "hash",
            redis::cmd("HSET")
                .arg("keel:quota:hash")
                .arg("f")
                .arg("v")
                .clone(),
        ),
    ] {
        plant(&mut conn, &mut setup.clone());
        // Fail closed: the call fails with RateLimited, caused by the typed error.
        let closed = FleetLimit::builder(redis.url(), name, RateLimit::per_second(RATE).unwrap())
            .build()
            .unwrap();
        let err = client(&closed)
            .get(&server.url("/status/200"))
            .send()
            .await
            .expect_err("the quota can't be read");
        assert_eq!(err.kind(), ErrorKind::RateLimited, "{err:#}");
        let cause = find_source::<keel_redis::FleetError>(&err).expect("the FleetError");
        assert_eq!(cause.kind(), FleetErrorKind::ForeignValue, "{cause}");
        // A local fallback: the call goes.
        let local = FleetLimit::builder(redis.url(), name, RateLimit::per_second(RATE).unwrap())
            .fallback(Fallback::Local(RateLimit::per_second(RATE).unwrap()))
            .build()
            .unwrap();
        let resp = client(&local)
            .get(&server.url("/status/200"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            local.last_error().map(|e| e.kind()),
            Some(FleetErrorKind::ForeignValue)
        );
    }
    // Nothing was overwritten.
    let value: String = redis::cmd("GET")
        .arg("keel:quota:string")
        .query(&mut conn)
        .unwrap();
    assert_eq!(value, "hello");
}

#[tokio::test]
async fn redis_missing_from_the_start_fails_closed_within_the_wait() {
    // A port nothing listens on: connection refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::start().unwrap();
    let fleet = FleetLimit::builder(
        format!("redis://127.0.0.1:{port}/"),
        "nowhere",
        RateLimit::per_second(RATE).unwrap(),
    )
    .build()
    .unwrap();
    let started = Instant::now();
    let err = client(&fleet)
        .get(&server.url("/status/200"))
        .send()
        .await
        .expect_err("fails closed");
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests(), 0);
    assert_eq!(
        fleet.last_error().map(|e| e.kind()),
        Some(FleetErrorKind::Unavailable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_admits_most_calls_without_a_round_trip() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let fleet = fleet(&redis.url(), "lone");
    let run = load(
        &client(&fleet),
        &server.url("/status/200"),
        8,
        Instant::now() + Duration::from_secs(1),
    )
    .await;
    let stats = fleet.stats();
    eprintln!("lone replica: {} calls, {stats:?}", run.ok);
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert!(run.ok >= 90, "{} calls", run.ok);
    // A lease of 10 per round trip, at least half of it when the schedule is busy.
    assert!(
        stats.round_trips as usize <= run.ok / 5 + 2,
        "{} round trips for {} calls",
        stats.round_trips,
        run.ok
    );
}
