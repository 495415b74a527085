//! The same fleet quota from keel-smol on smol's executor: no tokio runtime anywhere.

mod common;

use std::time::{Duration, Instant};

use common::{bound, load, RedisServer};
use keel_conformance::server::{most_within, TestServer};
use keel_core::{Client, RateLimit};
use keel_redis::FleetLimit;
use keel_smol::SmolTransport;

#[test]
fn two_smol_clients_share_a_quota() {
    let redis = RedisServer::start();
    let server = TestServer::start().unwrap();
    let url = server.url("/status/200");
    let run = Duration::from_secs(2);
    let grace = Duration::from_millis(50);
    smol::block_on(async {
        let until = Instant::now() + run;
        let runs = (0..2).map(|_| {
            let fleet =
                FleetLimit::builder(redis.url(), "smol", RateLimit::per_second(20).unwrap())
                    .lease(5)
                    .grace(grace)
                    .build()
                    .unwrap();
            let url = url.clone();
            smol::spawn(async move {
                let client = Client::<SmolTransport>::builder()
                    .policy(fleet.policy())
                    .build()
                    .unwrap();
                load(&client, &url, 4, until).await
            })
        });
        for load in futures_util::future::join_all(runs).await {
            assert!(load.failed.is_empty(), "failed calls: {:?}", load.failed);
        }
    });
    let arrivals = server.arrivals("/status/200");
    let most = most_within(&arrivals, run);
    eprintln!("smol: {} requests, most in any 2 s: {most}", arrivals.len());
    assert!(
        most <= bound(20, run, grace, Duration::from_millis(20)),
        "{most}"
    );
    assert!(most >= 30, "{most}");
}
