//! libcurl's time-out of a transfer bounded by the call's deadline: the request was on a live
//! connection, so it may have reached the server and must not count as unsent (issue 9).

use std::io::Read as _;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use keel_core::{Body, CallDeadline, ErrorKind, Stage, TimeoutPhase, Transport, TransportConfig};
use keel_isahc::IsahcTransport;

/// A server on 127.0.0.1 that reads requests and never answers; returns its URL.
fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0; 1024];
                // Read until the client goes away; never write.
                while let Ok(1..) = stream.read(&mut buf) {}
            });
        }
    });
    url
}

#[test]
fn a_transfer_cut_by_the_call_deadline_is_not_unsent() {
    let url = silent_server();
    let transport = IsahcTransport::new(&TransportConfig::default()).unwrap();
    let mut request = http::Request::post(&url)
        .header("content-length", "0")
        .body(Body::empty())
        .unwrap();
    // libcurl bounds the transfer by the deadline plus a second of slack.
    let deadline = Instant::now() + Duration::from_millis(100);
    request.extensions_mut().insert(CallDeadline(deadline));
    let started = Instant::now();
    let err = block_on(transport.send(request)).unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Deadline),
        "{err:?}"
    );
    assert_eq!(err.stage(), Some(Stage::AwaitHead));
    assert!(
        !err.is_unsent(),
        "the request was on a live connection: {err:?}"
    );
}
