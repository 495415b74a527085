//! Regression test for issue 3: plain isahc lets libcurl's pool shrink with the number of
//! running transfers, so a load that drops and comes back opens new connections.
//!
//! 20 workers, then one worker for 1.5 s (long enough for libcurl 8.x to evict connections idle
//! for a second), then 20 workers again must use no more than 20 connections. With isahc's
//! defaults this opens 38.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use keel_core::Client;
use keel_isahc::IsahcTransport;

/// A keep-alive HTTP/1.1 server on 127.0.0.1 answering `hello` to every request; counts the
/// connections it accepts.
fn serve() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || answer(stream));
        }
    });
    (url, accepted)
}

fn answer(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    loop {
        // Read one request head (the requests have no body).
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}

fn workers(client: &Client<IsahcTransport>, url: &str, n: usize, each: usize) {
    thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| {
                block_on(async {
                    for _ in 0..each {
                        let body = client.get(url).send().await.unwrap().text().await.unwrap();
                        assert_eq!(body, "hello");
                    }
                })
            });
        }
    });
}

#[test]
fn the_pool_keeps_its_connections_when_load_drops() {
    let (url, accepted) = serve();
    let client = Client::<IsahcTransport>::new().unwrap();
    workers(&client, &url, 20, 20);
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(1500) {
        workers(&client, &url, 1, 1);
    }
    workers(&client, &url, 20, 20);
    let opened = accepted.load(Ordering::SeqCst);
    assert!(opened <= 20, "20 workers opened {opened} connections");
}
