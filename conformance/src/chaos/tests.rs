//! The proxy on its own, over plain sockets: what passes, and how each fault ends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Chaos, ChaosProxy, Direction, Fault};

/// How long any read in these tests may wait.
const WAIT: Duration = Duration::from_secs(5);

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A target on `127.0.0.1` that runs `serve` on each connection, on a thread of its own.
fn target(serve: impl Fn(TcpStream) + Clone + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(WAIT));
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Echoes what it reads until the client ends its side, then ends its own.
fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// Sends 100 000 pattern bytes, then holds the connection until the client goes away.
fn send_100k(mut stream: TcpStream) {
    if stream.write_all(&pattern(100_000)).is_ok() {
        let mut buf = [0u8; 1024];
        while let Ok(1..) = stream.read(&mut buf) {}
    }
}

fn connect(proxy: &ChaosProxy) -> TcpStream {
    let addr = proxy.url("").trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(addr).expect("connect to the proxy");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream
}

/// Sends `data` (on a thread: the echo must be read meanwhile), reads the echo back to the
/// end; returns it and how long it took.
fn round_trip(proxy: &ChaosProxy, data: Vec<u8>) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut stream = connect(proxy);
    let mut writer = stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        writer.write_all(&data).expect("write");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("read the echo");
    sender.join().expect("sender");
    (back, started.elapsed())
}

/// Reads until the end, an error or the read timeout: the bytes, and how it ended.
fn read_all(stream: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

#[test]
fn bytes_pass_intact_both_ways() {
    let proxy = ChaosProxy::start(target(echo), Chaos::none()).expect("proxy");
    let data = pattern(1_000_000);
    let (back, _) = round_trip(&proxy, data.clone());
    assert!(back == data, "{} bytes came back, altered", back.len());
    assert_eq!(proxy.connections_accepted(), 1);
    assert_eq!(proxy.faults_fired(), 0);
}

#[test]
fn one_byte_segments_keep_the_bytes() {
    let chaos =
        Chaos::to_client(Fault::OneByteSegments).with(Direction::ToServer, Fault::OneByteSegments);
    let proxy = ChaosProxy::start(target(echo), chaos).expect("proxy");
    let data = pattern(20_000);
    let (back, _) = round_trip(&proxy, data.clone());
    assert!(back == data, "{} bytes came back, altered", back.len());
}

#[test]
fn delay_and_throttle_slow_the_bytes_down() {
    let delay = Fault::Delay {
        first_byte: Duration::from_millis(300),
        per_chunk: Duration::ZERO,
    };
    let proxy = ChaosProxy::start(target(echo), Chaos::to_client(delay)).expect("proxy");
    let (back, took) = round_trip(&proxy, b"hello".to_vec());
    assert_eq!(back, b"hello");
    assert!(took >= Duration::from_millis(300), "delayed {took:?}");

    let throttle = Fault::Throttle {
        bytes_per_second: 100_000,
    };
    let proxy = ChaosProxy::start(target(echo), Chaos::to_server(throttle)).expect("proxy");
    let data = pattern(50_000);
    let (back, took) = round_trip(&proxy, data.clone());
    assert!(back == data, "{} bytes came back, altered", back.len());
    // 50 000 bytes at 100 000 per second: half a second, less the first piece.
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "throttled {took:?}"
    );
}

#[test]
fn close_after_n_delivers_exactly_n_then_eof() {
    let chaos = Chaos::to_client(Fault::Close { after: 12_345 });
    let proxy = ChaosProxy::start(target(send_100k), chaos).expect("proxy");
    let mut stream = connect(&proxy);
    let (got, end) = read_all(&mut stream);
    assert!(end.is_ok(), "ended with {end:?}, not a clean end");
    assert!(got == pattern(12_345), "{} bytes, or altered", got.len());
    assert_eq!(proxy.faults_fired(), 1);
}

#[test]
fn reset_after_n_delivers_at_most_n_then_an_error() {
    let chaos = Chaos::to_client(Fault::Reset { after: 12_345 });
    let proxy = ChaosProxy::start(target(send_100k), chaos).expect("proxy");
    let mut stream = connect(&proxy);
    let (got, end) = read_all(&mut stream);
    let err = end.expect_err("a reset connection ended cleanly");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(got.len() <= 12_345, "{} bytes got through", got.len());
    assert!(
        got == pattern(got.len()),
        "the bytes before the reset were altered"
    );
    assert_eq!(proxy.faults_fired(), 1);
}

#[test]
fn stall_keeps_the_connection_open_and_silent() {
    let chaos = Chaos::to_client(Fault::Stall { after: 1000 });
    let proxy = ChaosProxy::start(target(send_100k), chaos).expect("proxy");
    let mut stream = connect(&proxy);
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let (got, end) = read_all(&mut stream);
    let err = end.expect_err("a stalled connection ended");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "ended with {err}"
    );
    assert!(got == pattern(1000), "{} bytes, or altered", got.len());
    assert_eq!((proxy.faults_fired(), proxy.open_connections()), (1, 1));
    // The client going away ends the stalled connection.
    drop(stream);
    let until = Instant::now() + WAIT;
    while proxy.open_connections() != 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        proxy.open_connections(),
        0,
        "the stalled connection lingers"
    );
}

#[test]
fn close_towards_the_server_ends_the_request_at_n_bytes() {
    let (tx, rx) = mpsc::channel();
    let (seen_tx, seen) = mpsc::channel();
    // Reports what it read before the end.
    let count = move |mut stream: TcpStream| {
        let _ = seen_tx.send(read_all(&mut stream));
    };
    let chaos = Chaos::to_server(Fault::Close { after: 5000 });
    let proxy = ChaosProxy::start(target(count), chaos).expect("proxy");
    let mut stream = connect(&proxy);
    let mut writer = stream.try_clone().expect("clone");
    std::thread::spawn(move || {
        // The proxy stops reading at the cut: the write may fail, or not.
        let _ = writer.write_all(&pattern(100_000));
        let _ = tx.send(());
    });
    let (got, end) = read_all(&mut stream);
    assert!(
        end.is_ok() && got.is_empty(),
        "the client got {got:?}, {end:?}"
    );
    assert!(rx.recv_timeout(WAIT).is_ok(), "the writer hung");
    let (received, end) = seen
        .recv_timeout(WAIT)
        .expect("the target saw the connection");
    assert!(end.is_ok(), "the target's side ended with {end:?}");
    assert!(
        received == pattern(5000),
        "the target got {} bytes, or altered",
        received.len()
    );
    assert_eq!(proxy.faults_fired(), 1);
}

#[test]
fn only_the_first_connections_are_struck() {
    let chaos = Chaos::to_client(Fault::Close { after: 10 }).first_connections(1);
    let proxy = ChaosProxy::start(target(send_100k), chaos).expect("proxy");
    let (first, _) = read_all(&mut connect(&proxy));
    assert_eq!(first.len(), 10);
    let mut second = connect(&proxy);
    let mut got = vec![0u8; 100_000];
    second.read_exact(&mut got).expect("the clean connection");
    assert!(
        got == pattern(100_000),
        "the clean connection altered the bytes"
    );
    assert_eq!((proxy.connections_accepted(), proxy.faults_fired()), (2, 1));
}
