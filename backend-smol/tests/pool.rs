//! The pool's promises, end to end, against a small blocking HTTP/1.1 server on 127.0.0.1 that
//! counts connections: what is reused, what is closed, what is opened concurrently.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use http_body_util::BodyExt as _;
use keel_core::{Body, Client, ClientBuilder, Transport as _, TransportConfig};
use keel_smol::{AsyncIoTimer, SmolTransport};

/// A server whose routes are:
/// - `/small`: `hello`, keep-alive;
/// - `/big`: 8 MiB, keep-alive;
/// - `/slow`: `hello` after 300 ms;
/// - `/close`: `hello` with `Connection: close`, then closes;
/// - `/then-close`: `hello` (keep-alive framing), then closes after 50 ms without a word.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                thread::spawn(move || {
                    serve(stream);
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            accepted,
            closed,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits up to 5 s for the server to have seen `n` connections close.
    fn wait_closed(&self, n: usize) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if self.closed.load(Ordering::SeqCst) >= n {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// Serves requests on one connection until the client goes away or a route closes it.
fn serve(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        // Skip the headers; the client sends no bodies here.
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        let hello = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".as_slice();
        let result = match path.as_str() {
            "/small" => stream.write_all(hello),
            "/slow" => {
                thread::sleep(Duration::from_millis(300));
                stream.write_all(hello)
            }
            "/big" => {
                let len = 8 * 1024 * 1024;
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&vec![b'x'; len]))
            }
            "/close" => {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                );
                return;
            }
            "/then-close" => {
                let _ = stream.write_all(hello);
                thread::sleep(Duration::from_millis(50));
                return;
            }
            _ => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        };
        if result.is_err() {
            return;
        }
    }
}

fn builder() -> ClientBuilder<SmolTransport> {
    Client::<SmolTransport>::builder().deadline(Duration::from_secs(20))
}

async fn text(client: &Client<SmolTransport>, url: String) -> String {
    client.get(&url).send().await.unwrap().text().await.unwrap()
}

#[test]
fn a_body_read_to_its_end_gives_its_connection_back() {
    let server = Server::start();
    let client = builder().build().unwrap();
    async_io::block_on(async {
        for _ in 0..5 {
            assert_eq!(text(&client, server.url("/small")).await, "hello");
        }
    });
    assert_eq!(server.accepted(), 1);
}

#[test]
fn a_body_dropped_before_its_end_closes_its_connection() {
    let server = Server::start();
    let client = builder().build().unwrap();
    async_io::block_on(async {
        let mut resp = client.get(&server.url("/big")).send().await.unwrap();
        assert!(resp.chunk().await.unwrap().is_some());
        drop(resp);
        assert_eq!(text(&client, server.url("/small")).await, "hello");
    });
    assert_eq!(server.accepted(), 2, "the half-read connection was reused");
    assert!(
        server.wait_closed(1),
        "the half-read connection stayed open"
    );
}

#[test]
fn a_dropped_request_closes_its_connection() {
    // On the transport itself: the client's retry policy must not add attempts here.
    let server = Server::start();
    let transport = SmolTransport::new(&TransportConfig::default()).unwrap();
    let get = |path: &str| {
        let req = http::Request::get(server.url(path)).body(Body::empty());
        transport.send(req.unwrap())
    };
    async_io::block_on(async {
        let abandoned = futures_lite::future::or(async { Some(get("/slow").await) }, async {
            sleep(Duration::from_millis(100)).await;
            None
        });
        assert!(abandoned.await.is_none(), "the slow request answered early");
        let response = get("/small").await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
    });
    assert_eq!(server.accepted(), 2, "the abandoned connection was reused");
    assert!(
        server.wait_closed(1),
        "the abandoned connection stayed open"
    );
}

#[test]
fn concurrent_requests_open_their_own_connections() {
    let server = Server::start();
    let client = builder().build().unwrap();
    let started = Instant::now();
    // No async-io executor here: async-io's reactor thread drives the sockets.
    block_on(async {
        let all = (0..4).map(|_| text(&client, server.url("/slow")));
        for body in futures_util::future::join_all(all).await {
            assert_eq!(body, "hello");
        }
    });
    assert_eq!(server.accepted(), 4);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "4 × 300 ms took {took:?}: serialized"
    );
}

#[test]
fn no_more_than_max_idle_per_host_are_kept() {
    let server = Server::start();
    let client = builder().pool_max_idle_per_host(1).build().unwrap();
    async_io::block_on(async {
        let three = (0..3).map(|_| text(&client, server.url("/slow")));
        futures_util::future::join_all(three).await;
        assert_eq!(server.accepted(), 3);
        // One was kept: of two concurrent requests, one reuses it and one connects.
        let two = (0..2).map(|_| text(&client, server.url("/slow")));
        futures_util::future::join_all(two).await;
    });
    assert_eq!(server.accepted(), 4);
    assert!(
        server.wait_closed(2),
        "the connections over the limit stayed open"
    );
}

#[test]
fn idle_connections_expire() {
    let server = Server::start();
    let client = builder()
        .pool_idle_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    async_io::block_on(async {
        text(&client, server.url("/small")).await;
        sleep(Duration::from_millis(250)).await;
        text(&client, server.url("/small")).await;
    });
    assert_eq!(server.accepted(), 2, "an expired connection was reused");
    assert!(server.wait_closed(1), "the expired connection stayed open");
}

#[test]
fn connections_closed_by_the_server_are_not_reused() {
    let server = Server::start();
    let client = builder().build().unwrap();
    async_io::block_on(async {
        assert_eq!(text(&client, server.url("/close")).await, "hello");
        assert_eq!(text(&client, server.url("/then-close")).await, "hello");
        // The server closes that one, silently, while it idles in the pool.
        assert!(server.wait_closed(2));
        assert_eq!(text(&client, server.url("/small")).await, "hello");
    });
    assert_eq!(server.accepted(), 3);
}

/// Sleeps on the crate's own timer.
async fn sleep(d: Duration) {
    use keel_core::Timer as _;
    AsyncIoTimer::default()
        .sleep_until(Instant::now() + d)
        .await;
}
