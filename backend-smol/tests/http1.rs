//! HTTP/1.1 on the wire: what keel-smol writes, how it reads every response framing, and when
//! a connection may carry the next request. Against a scripted blocking server on 127.0.0.1
//! that records the raw bytes of each request and answers from a script.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::block_on;
use http_body_util::BodyExt as _;
use keel_core::{Body, Error, ErrorKind, ResponseBody, Stage, Transport as _, TransportConfig};
use keel_smol::SmolTransport;

/// What the server does after answering one request.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    KeepOpen,
    Close,
    /// Keep the connection, but write the answer one byte at a time.
    Trickle,
}

#[derive(Default)]
struct Log {
    connections: usize,
    /// Each request as it arrived: head and body, raw.
    requests: Vec<Vec<u8>>,
}

struct Server {
    port: u16,
    log: Arc<Mutex<Log>>,
}

impl Server {
    /// Answers the n-th request (over all connections) with `script[n]`.
    fn start(script: Vec<(&'static [u8], Then)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Log::default()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let server_log = log.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                server_log.lock().unwrap().connections += 1;
                let (log, script) = (server_log.clone(), script.clone());
                thread::spawn(move || serve(stream, &log, &script));
            }
        });
        Self { port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.log.lock().unwrap().connections
    }

    fn request(&self, n: usize) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap().requests[n]).into_owned()
    }
}

type Script = Mutex<std::vec::IntoIter<(&'static [u8], Then)>>;

fn serve(stream: TcpStream, log: &Mutex<Log>, script: &Script) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    while let Some(request) = read_request(&mut reader) {
        log.lock().unwrap().requests.push(request);
        let Some((answer, then)) = script.lock().unwrap().next() else {
            return;
        };
        let written = if then == Then::Trickle {
            stream.set_nodelay(true).unwrap();
            answer.chunks(1).try_for_each(|b| {
                stream.write_all(b)?;
                thread::sleep(Duration::from_micros(200));
                Ok::<_, std::io::Error>(())
            })
        } else {
            stream.write_all(answer)
        };
        if written.is_err() || then == Then::Close {
            return;
        }
    }
}

/// One request, raw: the head, then a body framed by Content-Length or chunked encoding.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut length = 0;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        raw.extend_from_slice(line.as_bytes());
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            raw.extend_from_slice(size.as_bytes());
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut data = vec![0; n + 2];
            reader.read_exact(&mut data).ok()?;
            raw.extend_from_slice(&data);
            if n == 0 {
                return Some(raw);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    raw.extend_from_slice(&body);
    Some(raw)
}

fn transport() -> SmolTransport {
    let mut config = TransportConfig::default();
    config.connect_timeout = Duration::from_secs(2);
    SmolTransport::new(&config).unwrap()
}

/// Runs `fut` to completion, failing the test if that takes more than 10 s.
fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    block_on(futures_lite::future::or(fut, async {
        async_io::Timer::after(Duration::from_secs(10)).await;
        panic!("the test took more than 10 s")
    }))
}

fn send(
    t: &SmolTransport,
    req: http::Request<Body>,
) -> Result<http::Response<ResponseBody>, Error> {
    bounded(t.send(req))
}

fn body(resp: http::Response<ResponseBody>) -> Result<Bytes, Error> {
    bounded(async { resp.into_body().collect().await.map(|c| c.to_bytes()) })
}

fn get(url: &str) -> http::Request<Body> {
    http::Request::get(url).body(Body::empty()).unwrap()
}

/// A GET that must succeed, and its whole body.
fn fetch(t: &SmolTransport, url: &str) -> Bytes {
    body(send(t, get(url)).unwrap()).unwrap()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn a_chunked_body_is_decoded_and_its_connection_reused() {
    let chunked: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
    let server = Server::start(vec![(chunked, Then::KeepOpen), (OK, Then::KeepOpen)]);
    let t = transport();
    let resp = send(&t, get(&server.url("/a"))).unwrap();
    assert_eq!(body(resp).unwrap(), "hello world");
    let resp = send(&t, get(&server.url("/b"))).unwrap();
    assert_eq!(body(resp).unwrap(), "hello");
    assert_eq!(server.connections(), 1);
}

#[test]
fn connection_close_from_the_server_is_honoured() {
    let close: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let server = Server::start(vec![(close, Then::KeepOpen), (OK, Then::KeepOpen)]);
    let t = transport();
    assert_eq!(fetch(&t, &server.url("/a")), "hello");
    assert_eq!(fetch(&t, &server.url("/b")), "hello");
    assert_eq!(server.connections(), 2);
}

/// A body framed by `Content-Length` keeps its connection unless a head says otherwise: the
/// server's `Connection: close` among other tokens and in any case, an HTTP/1.0 answer without
/// `keep-alive`, or the request's own `Connection: close`.
#[test]
fn connection_tokens_in_either_head_decide_reuse_after_a_length_framed_body() {
    let listed: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x-hop, CLOSE\r\n\r\nhello";
    let old_kept: &[u8] =
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: Keep-Alive\r\n\r\nhello";
    let old: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    let server = Server::start(vec![
        (listed, Then::KeepOpen),
        (old_kept, Then::KeepOpen),
        (OK, Then::KeepOpen),
        (old, Then::KeepOpen),
        (OK, Then::KeepOpen),
        (OK, Then::KeepOpen),
    ]);
    let t = transport();
    // Closed by the server's list: the second request opens connection 2.
    assert_eq!(fetch(&t, &server.url("/1")), "hello");
    // HTTP/1.0 with keep-alive: the third request reuses connection 2.
    assert_eq!(fetch(&t, &server.url("/2")), "hello");
    assert_eq!(fetch(&t, &server.url("/3")), "hello");
    assert_eq!(server.connections(), 2);
    // HTTP/1.0 without keep-alive: closed after it.
    assert_eq!(fetch(&t, &server.url("/4")), "hello");
    // The request's own `Connection: close`: its connection is not kept either.
    let closing = http::Request::get(server.url("/5"))
        .header("connection", "close")
        .body(Body::empty())
        .unwrap();
    assert_eq!(body(send(&t, closing).unwrap()).unwrap(), "hello");
    assert_eq!(fetch(&t, &server.url("/6")), "hello");
    // `/4` on connection 2, `/5` on 3, `/6` on 4.
    assert_eq!(server.connections(), 4);
}

/// A body framed by length and larger than any one read arrives whole, byte for byte, in
/// frames no larger than the read buffer, and its connection is reused after it.
#[test]
fn a_large_length_framed_body_arrives_whole_and_keeps_its_connection() {
    let len = 3 * 1024 * 1024 + 7;
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    response.extend_from_slice(&payload);
    let response: &'static [u8] = Box::leak(response.into_boxed_slice());
    let server = Server::start(vec![(response, Then::KeepOpen), (OK, Then::KeepOpen)]);
    let t = transport();
    let resp = send(&t, get(&server.url("/big"))).unwrap();
    assert_eq!(
        http_body::Body::size_hint(resp.body()).exact(),
        Some(len as u64)
    );
    let mut body = resp.into_body();
    let mut got = Vec::with_capacity(len);
    let mut frames = 0;
    while let Some(frame) = bounded(body.frame()) {
        let data = frame.unwrap().into_data().unwrap();
        assert!(
            !data.is_empty() && data.len() <= 256 * 1024,
            "a frame of {} bytes",
            data.len()
        );
        got.extend_from_slice(&data);
        frames += 1;
    }
    assert!(got == payload, "the body differs from what was sent");
    assert!(frames >= 12, "{frames} frames");
    assert_eq!(fetch(&t, &server.url("/next")), "hello");
    assert_eq!(server.connections(), 1);
}

#[test]
fn an_http10_body_without_length_ends_at_the_close() {
    let old: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end";
    let server = Server::start(vec![(old, Then::Close), (OK, Then::KeepOpen)]);
    let t = transport();
    let resp = send(&t, get(&server.url("/a"))).unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_10);
    assert_eq!(body(resp).unwrap(), "until the end");
    assert_eq!(fetch(&t, &server.url("/b")), "hello");
    assert_eq!(server.connections(), 2);
}

#[test]
fn informational_responses_are_skipped() {
    let early: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let server = Server::start(vec![(early, Then::KeepOpen)]);
    let resp = send(&transport(), get(&server.url("/"))).unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(body(resp).unwrap(), "ok");
}

#[test]
fn no_body_is_read_after_head_204_or_304() {
    let head: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
    let empty: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
    let not_modified: &[u8] = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
    let server = Server::start(vec![
        (head, Then::KeepOpen),
        (empty, Then::KeepOpen),
        (not_modified, Then::KeepOpen),
        (OK, Then::KeepOpen),
    ]);
    let t = transport();
    let head = http::Request::head(server.url("/"))
        .body(Body::empty())
        .unwrap();
    assert!(body(send(&t, head).unwrap()).unwrap().is_empty());
    assert!(fetch(&t, &server.url("/")).is_empty());
    assert!(fetch(&t, &server.url("/")).is_empty());
    assert_eq!(fetch(&t, &server.url("/")), "hello");
    assert_eq!(server.connections(), 1, "every exchange ended cleanly");
}

#[test]
fn bytes_after_the_response_rule_the_connection_out() {
    let extra: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n";
    let server = Server::start(vec![(extra, Then::KeepOpen), (OK, Then::KeepOpen)]);
    let t = transport();
    assert_eq!(fetch(&t, &server.url("/a")), "hello");
    assert_eq!(fetch(&t, &server.url("/b")), "hello");
    assert_eq!(server.connections(), 2);
}

#[test]
fn an_oversized_head_is_a_protocol_error() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..2000 {
        huge.extend_from_slice(format!("x-filler-{i}: {}\r\n", "v".repeat(40)).as_bytes());
    }
    huge.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let server = Server::start(vec![(huge.leak(), Then::KeepOpen)]);
    let err = send(&transport(), get(&server.url("/"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert_eq!(err.stage(), Some(Stage::AwaitHead));
}

#[test]
fn a_broken_chunk_is_a_protocol_error_in_the_body() {
    let broken: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let server = Server::start(vec![(broken, Then::KeepOpen)]);
    let resp = send(&transport(), get(&server.url("/"))).unwrap();
    let err = body(resp).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert_eq!(err.stage(), Some(Stage::Body));
}

#[test]
fn a_chunked_body_cut_short_is_a_body_error() {
    let cut: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let server = Server::start(vec![(cut, Then::Close)]);
    let resp = send(&transport(), get(&server.url("/"))).unwrap();
    let err = body(resp).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    assert_eq!(err.stage(), Some(Stage::Body));
}

#[test]
fn request_bodies_are_framed_by_length_or_chunks() {
    let server = Server::start(vec![(OK, Then::KeepOpen); 5]);
    let t = transport();
    let url = server.url("/p");
    let full = http::Request::post(&url).body(Body::from("abc")).unwrap();
    // An empty body's framing is keel-core's (`Content-Length: 0` for a POST), in the headers
    // the transport is given.
    let empty_post = http::Request::post(&url)
        .header("content-length", "0")
        .body(Body::empty())
        .unwrap();
    let chunks = futures_lite::stream::iter(vec![
        Ok::<_, std::io::Error>(Bytes::from_static(b"ab")),
        Ok(Bytes::from_static(b"cde")),
    ]);
    let streamed = http::Request::put(&url)
        .body(Body::from_stream(chunks))
        .unwrap();
    let big = vec![b'z'; 100_000];
    let large = http::Request::post(&url).body(Body::from(big)).unwrap();
    for req in [get(&url), full, empty_post, streamed, large] {
        body(send(&t, req).unwrap()).unwrap();
    }
    let get = server.request(0);
    assert!(get.starts_with("GET /p HTTP/1.1\r\n"), "{get}");
    assert!(get.contains("host: 127.0.0.1:"), "{get}");
    assert!(
        !get.to_ascii_lowercase().contains("content-length"),
        "{get}"
    );
    assert!(server.request(1).ends_with("content-length: 3\r\n\r\nabc"));
    assert!(server.request(2).ends_with("content-length: 0\r\n\r\n"));
    let streamed = server.request(3);
    assert!(
        streamed.ends_with("transfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
        "{streamed}"
    );
    let large = server.request(4);
    assert!(large.contains("content-length: 100000\r\n\r\nzzz"));
    assert_eq!(large.len() - large.find("\r\n\r\n").unwrap() - 4, 100_000);
    assert_eq!(server.connections(), 1);
}

#[test]
fn a_body_that_disagrees_with_its_declared_length_is_refused() {
    let server = Server::start(vec![(OK, Then::KeepOpen); 2]);
    let t = transport();
    for (declared, chunks) in [("10", vec!["abc"]), ("2", vec!["abc"])] {
        let stream = futures_lite::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes()))),
        );
        let req = http::Request::post(server.url("/"))
            .header("content-length", declared)
            .body(Body::from_stream(stream))
            .unwrap();
        let err = send(&t, req).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "declared {declared}");
        assert!(!err.is_retryable());
    }
}

#[test]
fn credentials_in_the_url_are_not_sent() {
    let server = Server::start(vec![(OK, Then::KeepOpen)]);
    let url = format!("http://user:secret@127.0.0.1:{}/", server.port);
    body(send(&transport(), get(&url)).unwrap()).unwrap();
    let req = server.request(0).to_ascii_lowercase();
    assert!(!req.contains("authorization"), "{req}");
    assert!(!req.contains("secret"), "{req}");
}

#[test]
fn a_response_arriving_a_byte_at_a_time_is_read_whole() {
    let chunked: &[u8] =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    let server = Server::start(vec![(chunked, Then::Trickle), (OK, Then::Trickle)]);
    let t = transport();
    let resp = send(&t, get(&server.url("/a"))).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-a"], "b");
    assert_eq!(body(resp).unwrap(), "abc0123456789abcdef");
    assert_eq!(fetch(&t, &server.url("/b")), "hello");
    assert_eq!(server.connections(), 1);
}

/// A response framed by length, chunks or the close, written by the server in pieces of the
/// given sizes (cycled), each flushed on its own.
fn serve_in_pieces(response: Vec<u8>, pieces: Vec<usize>, close: bool) -> (u16, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Log::default()));
    let server_log = log.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            server_log.lock().unwrap().connections += 1;
            stream.set_nodelay(true).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if read_request(&mut reader).is_none() {
                continue;
            }
            let mut rest = &response[..];
            for &n in pieces.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                if stream.write_all(piece).is_err() {
                    break;
                }
                rest = tail;
                thread::sleep(Duration::from_micros(100));
            }
            if close {
                continue;
            }
            while read_request(&mut reader).is_some() {
                if stream.write_all(OK).is_err() {
                    break;
                }
            }
        }
    });
    (port, log)
}

#[test]
fn a_chunk_header_cut_by_the_end_of_the_read_buffer_is_joined() {
    // One-byte chunks: every third byte of the body is the start of a size line, so whatever
    // the read buffer's size, some reads end in the middle of one. Padding the head shifts the
    // cut through every position of the six-byte chunk.
    let data: Vec<u8> = (0..30_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for pad in 0..6 {
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(pad + 1)
        )
        .into_bytes();
        for b in &data {
            response.extend_from_slice(b"1\r\n");
            response.push(*b);
            response.extend_from_slice(b"\r\n");
        }
        response.extend_from_slice(b"0\r\n\r\n");
        let (port, log) = serve_in_pieces(response, vec![usize::MAX], false);
        let t = transport();
        let url = format!("http://127.0.0.1:{port}/");
        assert_eq!(fetch(&t, &url), data, "pad {pad}");
        assert_eq!(fetch(&t, &url), "hello");
        assert_eq!(log.lock().unwrap().connections, 1);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Whatever the framing and however the bytes are cut on the way, the body arrives whole
    /// and in order, and a connection whose framing allows it carries the next request.
    #[test]
    fn any_framing_in_any_pieces_is_read_whole(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100_000),
        framing in 0u8..3,
        chunk in 1usize..5_000,
        pieces in proptest::collection::vec(1usize..20_000, 1..12),
    ) {
        let mut response = Vec::new();
        let close = framing == 2;
        match framing {
            0 => {
                response.extend_from_slice(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len()).as_bytes(),
                );
                response.extend_from_slice(&data);
            }
            1 => {
                response.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                for c in data.chunks(chunk) {
                    response.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    response.extend_from_slice(c);
                    response.extend_from_slice(b"\r\n");
                }
                response.extend_from_slice(b"0\r\n\r\n");
            }
            _ => {
                response.extend_from_slice(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                response.extend_from_slice(&data);
            }
        }
        let (port, log) = serve_in_pieces(response, pieces, close);
        let t = transport();
        let url = format!("http://127.0.0.1:{port}/");
        let got = fetch(&t, &url);
        proptest::prop_assert_eq!(got.len(), data.len());
        proptest::prop_assert!(got == data, "the body arrived altered");
        if !close {
            let next = fetch(&t, &url);
            proptest::prop_assert_eq!(&next[..], b"hello");
            proptest::prop_assert_eq!(log.lock().unwrap().connections, 1);
        }
    }
}

/// A body framed by length, larger than a direct read's threshold, written by the server in
/// pieces of 1 to 7,000 bytes: every byte arrives once, in order, whatever the frames' sizes,
/// and the connection carries the next request.
#[test]
fn a_length_framed_body_written_in_pieces_arrives_whole() {
    let len = 200_000;
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
    let mut response = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    let head = response.len();
    response.extend_from_slice(&payload);
    // The head and the first bytes together, then pieces of every size.
    let pieces = vec![head + 3, 1, 7_000, 4_096, 13, 65_536, 999];
    let (port, log) = serve_in_pieces(response, pieces, false);
    let t = transport();
    let url = format!("http://127.0.0.1:{port}");
    let got = body(send(&t, get(&format!("{url}/big"))).unwrap()).unwrap();
    assert_eq!(got.len(), len);
    assert!(got == payload, "the body differs from what was sent");
    assert_eq!(fetch(&t, &format!("{url}/next")), "hello");
    assert_eq!(log.lock().unwrap().connections, 1);
}

/// A body framed by length whose connection closes a third of the way in: the bytes that came
/// are delivered, then a `Body` error in the body stage, and the connection is not reused.
#[test]
fn a_length_framed_body_cut_short_is_a_body_error_after_its_bytes() {
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n".to_vec();
    response.extend(std::iter::repeat_n(b'x', 100_000));
    let (port, log) = serve_in_pieces(response, vec![30_000], true);
    let t = transport();
    let url = format!("http://127.0.0.1:{port}");
    let mut body = send(&t, get(&format!("{url}/cut"))).unwrap().into_body();
    let mut got = 0;
    let err = loop {
        match bounded(body.frame()) {
            Some(Ok(frame)) => got += frame.into_data().unwrap().len(),
            Some(Err(err)) => break err,
            None => panic!("the body ended cleanly after {got} bytes"),
        }
    };
    assert_eq!(got, 100_000);
    assert_eq!(err.kind(), ErrorKind::Body, "{err:?}");
    assert_eq!(err.stage(), Some(Stage::Body));
    // The next request opens a connection of its own (and is cut short the same way).
    drop(body);
    let next = send(&t, get(&format!("{url}/next"))).unwrap();
    assert_eq!(next.status(), 200);
    assert_eq!(log.lock().unwrap().connections, 2);
}
