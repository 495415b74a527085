//! Failures map to the kinds and stages keel-hyper gives them, on loopback listeners only.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use keel_core::{
    Body, Error, ErrorKind, ResponseBody, Stage, TimeoutPhase, Transport as _, TransportConfig,
};
use keel_smol::SmolTransport;

/// One attempt on the transport itself, so that no policy of the client (retries) is involved.
fn get(url: &str) -> Result<http::Response<ResponseBody>, Error> {
    let mut config = TransportConfig::default();
    config.connect_timeout = Duration::from_millis(300);
    let transport = SmolTransport::new(&config).unwrap();
    let req = http::Request::get(url).body(Body::empty()).unwrap();
    async_io::block_on(transport.send(req))
}

/// A port where nothing listens.
fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A listener that answers every connection with `bytes` and closes it.
fn answering(bytes: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = stream.write_all(bytes);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            thread::sleep(Duration::from_millis(200));
        }
    });
    port
}

#[test]
fn a_refused_connection_is_a_connect_error_before_sending() {
    let port = refused_port();
    let err = get(&format!("http://127.0.0.1:{port}/")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(err.stage(), Some(Stage::Connect));
    assert!(err.is_unsent());
}

#[test]
fn a_stalled_tls_handshake_is_a_connect_timeout_in_the_tls_stage() {
    // Connections complete in the backlog; nothing ever answers the ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let err = get(&format!("https://127.0.0.1:{port}/")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Connect));
    assert_eq!(err.stage(), Some(Stage::Tls));
    assert!(err.is_unsent());
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}

#[test]
fn a_tls_handshake_with_a_plain_server_is_a_tls_error() {
    let port = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let err = get(&format!("https://127.0.0.1:{port}/")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls);
    assert_eq!(err.stage(), Some(Stage::Tls));
}

#[test]
fn garbage_instead_of_a_head_is_a_protocol_error() {
    let port = answering(b"SSH-2.0-OpenSSH_9.0\r\n\r\n");
    let err = get(&format!("http://127.0.0.1:{port}/")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert_eq!(err.stage(), Some(Stage::AwaitHead));
}

#[test]
fn a_close_before_the_head_is_a_body_error_awaiting_the_head() {
    let port = answering(b"");
    let err = get(&format!("http://127.0.0.1:{port}/")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    assert_eq!(err.stage(), Some(Stage::AwaitHead));
}

#[test]
fn a_truncated_body_is_a_body_error_in_the_body_stage() {
    let port = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
    let body = get(&format!("http://127.0.0.1:{port}/"))
        .unwrap()
        .into_body();
    let err = async_io::block_on(body.collect()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    assert_eq!(err.stage(), Some(Stage::Body));
}
