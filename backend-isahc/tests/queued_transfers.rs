//! Transfers beyond a connection cap wait in keel, not in libcurl's queue, where their connect
//! timeout would run down while they wait (issue 17: a 10,000-request burst on 50 connections
//! failed with "connect timed out" under load).

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use futures_util::future::join_all;
use http_body_util::BodyExt as _;
use keel_core::{Body, Transport, TransportConfig};
use keel_isahc::IsahcTransport;

/// A keep-alive server on 127.0.0.1 that answers each request after 200 ms; returns its URL
/// and the most connections it had open at once.
fn slow_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (open, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = peak.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let open = open.clone();
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0; 4096];
                // One request per read is enough for bodiless GETs sent one at a time.
                while let Ok(1..) = stream.read(&mut buf) {
                    thread::sleep(Duration::from_millis(200));
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(ok).is_err() {
                        break;
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, seen)
}

#[test]
fn transfers_queued_behind_the_cap_longer_than_the_connect_timeout_succeed() {
    let (url, peak) = slow_server();
    let mut config = TransportConfig::default();
    config.connect_timeout = Duration::from_millis(300);
    config.max_connections_per_origin = Some(1);
    let transport = Arc::new(IsahcTransport::new(&config).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // On a thread of its own, so a hang fails the test instead of holding it.
    thread::spawn(move || {
        // Four at once on one connection: the last waits about 600 ms, twice the connect
        // timeout.
        let sends = (0..4).map(|_| {
            let request = http::Request::get(&url).body(Body::empty()).unwrap();
            let transport = transport.clone();
            async move {
                let response = transport.send(request).await?;
                response.into_body().collect().await.map(|c| c.to_bytes())
            }
        });
        let _ = tx.send(futures_executor::block_on(join_all(sends)));
    });
    let results = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the four requests finish within 20 s");
    for (i, result) in results.into_iter().enumerate() {
        let body = result.unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(body, "ok");
    }
    assert_eq!(peak.load(Ordering::SeqCst), 1, "the cap held");
}
