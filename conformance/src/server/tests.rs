//! Exercises the server with blocking std sockets (HTTP/1.1 by hand, a
//! rustls client for TLS, and a hand-made HTTP/2 exchange). Every socket has
//! read and write timeouts, so every test is bounded in time.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{encoded_sample, RawReply, Reply, TestServer};

const TIMEOUT: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(200);

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(TIMEOUT))
        .expect("write timeout");
    stream
}

/// A keep-alive HTTP/1.1 connection.
struct Conn<S: Read + Write> {
    reader: BufReader<S>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Conn<TcpStream> {
    fn open(port: u16) -> Self {
        Conn::over(connect(port))
    }
}

impl<S: Read + Write> Conn<S> {
    fn over(stream: S) -> Self {
        Conn {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(req.as_bytes()).expect("write head");
        stream.write_all(body).expect("write body");
        stream.flush().expect("flush");
    }

    fn head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::new(ErrorKind::InvalidData, format!("status line {line:?}"))
            })?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                return Ok((status, headers));
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
    }

    /// Reads a whole response (Content-Length or chunked).
    fn response(&mut self) -> Resp {
        let (status, headers) = self.head().expect("response head");
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().expect("content-length");
            resp.body = vec![0; len];
            self.reader.read_exact(&mut resp.body).expect("body");
        } else if resp.header("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).expect("chunk size");
                let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).expect("chunk");
                if size == 0 {
                    break;
                }
                resp.body.extend_from_slice(&chunk[..size]);
            }
        }
        resp
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send("GET", path, &[], b"");
        self.response()
    }

    /// Reads until EOF or error, returning what arrived and how it ended.
    fn rest(&mut self) -> (Vec<u8>, io::Result<usize>) {
        let mut out = Vec::new();
        let end = self.reader.read_to_end(&mut out);
        (out, end)
    }
}

fn server() -> TestServer {
    TestServer::start().expect("start test server")
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn json(resp: &Resp) -> serde_json::Value {
    serde_json::from_slice(&resp.body).expect("json body")
}

#[test]
fn urls_have_the_documented_shapes() {
    let s = server();
    assert_eq!(s.url("/a"), format!("http://127.0.0.1:{}/a", s.plain_port));
    assert_eq!(
        s.tls_url("/a"),
        format!("https://localhost:{}/a", s.tls_port)
    );
    assert_eq!(
        s.blackhole_url("/a"),
        format!("https://127.0.0.1:{}/a", s.blackhole_port)
    );
    assert_eq!(
        s.refused_url("/a"),
        format!("http://127.0.0.1:{}/a", s.refused_port)
    );
    assert!(s.ca_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!s.ca_cert_der().is_empty());
    let ports = [s.plain_port, s.tls_port, s.blackhole_port, s.refused_port];
    assert!(ports
        .iter()
        .all(|&p| ports.iter().filter(|&&q| q == p).count() == 1));
    assert!(format!("{s:?}").contains("TestServer"));
}

#[test]
fn echo_returns_the_request() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    c.send(
        "POST",
        "/echo?a=1&b=2",
        &[("X-Multi", "one"), ("X-Multi", "two")],
        b"hello body",
    );
    let resp = c.response();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = json(&resp);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/echo");
    assert_eq!(v["query"], "a=1&b=2");
    assert_eq!(v["body"], "hello body");
    assert_eq!(v["body_len"], 10);
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["headers"]["x-multi"], serde_json::json!(["one", "two"]));
    assert_eq!(v["headers"]["host"], serde_json::json!(["127.0.0.1"]));

    let v = json(&c.get("/echo"));
    assert_eq!(v["method"], "GET");
    assert_eq!(v["query"], serde_json::Value::Null);
    assert_eq!(v["body_len"], 0);
    assert_eq!(s.requests_to("/echo"), 2);
}

#[test]
fn script_replies_in_order_then_repeats_the_last() {
    let s = server();
    let path = s.script(
        "flaky",
        vec![
            Reply::status(503).header("Retry-After", "0").body("busy"),
            Reply::status(503),
            Reply::status(200)
                .body("ok")
                .delay(Duration::from_millis(20)),
        ],
    );
    assert_eq!(path, "/script/flaky");
    let mut c = Conn::open(s.plain_port);
    let first = c.get(&path);
    assert_eq!(first.status, 503);
    assert_eq!(first.header("retry-after"), Some("0"));
    assert_eq!(first.body, b"busy");
    let statuses: Vec<u16> = (0..4).map(|_| c.get(&path).status).collect();
    assert_eq!(statuses, [503, 200, 200, 200]);
    assert_eq!(c.get(&path).body, b"ok");
    assert_eq!(c.get("/script/unknown").status, 404);
    assert_eq!(s.requests_to(&path), 6);

    s.script("bad", vec![Reply::status(200).header("bad name", "x")]);
    assert_eq!(c.get("/script/bad").status, 500);
    s.script("empty", Vec::new());
    assert_eq!(c.get("/script/empty").status, 500);
}

#[test]
fn counts_requests_per_keep_alive_connection() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    for _ in 0..3 {
        assert_eq!(c.get("/status/204").status, 204);
    }
    let mut d = Conn::open(s.plain_port);
    assert_eq!(d.get("/status/200?x=1").status, 200);
    assert_eq!(s.connections_accepted(), 2);
    assert_eq!(s.requests_per_connection(), [3, 1]);
    assert_eq!(s.requests(), 4);
    assert_eq!(s.requests_to("/status/204"), 3);
    assert_eq!(s.requests_to("/status/200"), 1);
    assert_eq!(s.versions(), vec![http::Version::HTTP_11; 4]);
}

#[test]
fn bytes_streams_the_pattern() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    let n = 300_007;
    let resp = c.get(&format!("/bytes/{n}"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("300007"));
    assert_eq!(resp.body.len(), n);
    assert!(resp
        .body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 251) as u8));
    let empty = c.get("/bytes/0");
    assert_eq!((empty.status, empty.body.len()), (200, 0));
    assert_eq!(c.get("/bytes/nope").status, 400);
}

#[test]
fn open_connections_drop_when_the_client_closes() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    assert_eq!(c.get("/status/200").status, 200);
    assert!(s.wait_for_open_connections(1, TIMEOUT));
    drop(c);
    assert!(s.wait_for_open_connections(0, TIMEOUT));
    assert_eq!(s.connections_accepted(), 1);
}

#[test]
fn raw_url_sends_the_bytes_then_closes() {
    let s = server();
    let canned = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec();
    let url = s.raw_url(canned.clone(), false);
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .expect("raw port");
    for _ in 0..2 {
        let mut c = Conn::open(port);
        c.send("POST", "/", &[], b"a body the server never reads");
        let (got, end) = c.rest();
        assert!(end.is_ok(), "clean close expected, got {end:?}");
        assert_eq!(got, canned);
    }
    // Raw listeners are not counted.
    assert_eq!(s.connections_accepted(), 0);
}

#[test]
fn raw_conversations_read_whole_requests_and_answer_in_order() {
    let s = server();
    let raw = s.raw_conversation(vec![
        RawReply::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"[..]),
        RawReply::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo"[..]).close(),
        RawReply::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast"[..]),
    ]);
    let port: u16 = raw
        .url("")
        .trim_start_matches("http://127.0.0.1:")
        .parse()
        .expect("raw port");
    // A chunked body, then a sized one on the same connection; the second reply closes it.
    let mut stream = connect(port);
    stream
        .write_all(
            b"POST /a HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\n\
              POST /b HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\n\r\nhello",
        )
        .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer");
    assert_eq!(
        answer,
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\noneHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo"
    );
    // A body cut short is never complete, and gets no answer.
    let mut cut = connect(port);
    cut.write_all(b"PUT /c HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\nonly this")
        .expect("write");
    cut.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut nothing = Vec::new();
    cut.read_to_end(&mut nothing).expect("close");
    assert!(nothing.is_empty(), "answered a cut request: {nothing:?}");
    // The last reply repeats.
    let mut c = Conn::open(port);
    for _ in 0..2 {
        c.send("GET", "/d", &[], b"");
        assert_eq!(c.response().body, b"last");
    }
    assert_eq!(raw.requests_per_connection(), [2, 1, 2]);
    assert_eq!(raw.request_connections(), [0, 0, 1, 2, 2]);
    assert_eq!(raw.complete_requests(), 4);
    assert_eq!(raw.heads().len(), 5);
}

#[test]
fn raw_listeners_keep_the_request_heads_as_they_arrived() {
    let s = server();
    let url = s.raw_url("HTTP/1.1 204 No Content\r\n\r\n", false);
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .expect("raw port");
    let heads: [&[u8]; 2] = [
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /b HTTP/1.1\r\nHOST: y\r\nContent-Length: 0\r\n\r\n",
    ];
    for head in heads {
        let mut stream = connect(port);
        stream.write_all(head).expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("answer");
        assert!(answer.starts_with(b"HTTP/1.1 204"));
    }
    let kept = s.raw_requests();
    assert_eq!(kept.len(), 2);
    for (kept, sent) in kept.iter().zip(heads) {
        assert_eq!(&kept[..], sent);
    }
}

#[test]
fn raw_url_can_hold_the_connection_open() {
    let s = server();
    let url = s.raw_url("HTTP/1.1 200 OK\r\n", true);
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .expect("raw port");
    let mut stream = connect(port);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut buf = [0u8; 17];
    stream.read_exact(&mut buf).expect("raw bytes");
    assert_eq!(&buf, b"HTTP/1.1 200 OK\r\n");
    stream.set_read_timeout(Some(SHORT)).expect("timeout");
    let err = stream.read(&mut [0u8; 1]).expect_err("nothing more");
    assert!(is_timeout(&err), "{err:?}");
}

#[test]
fn blackhole_accepts_but_never_answers() {
    let s = server();
    let mut stream = connect(s.blackhole_port);
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    stream.set_read_timeout(Some(SHORT)).expect("timeout");
    let err = stream.read(&mut [0u8; 1]).expect_err("no answer");
    assert!(is_timeout(&err), "{err:?}");
    assert_eq!(s.connections_accepted(), 0);
}

#[test]
fn refused_port_refuses() {
    let s = server();
    let err = TcpStream::connect(("127.0.0.1", s.refused_port)).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn status_route_sets_status_body_and_headers() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    let resp =
        c.get("/status/429?body=slow%20down&header=Retry-After:%202&header=X-A:1&header=X-A:2");
    assert_eq!(resp.status, 429);
    assert_eq!(resp.body, b"slow down");
    assert_eq!(resp.header("retry-after"), Some("2"));
    let xa: Vec<&str> = resp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-a"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(xa, ["1", "2"]);
    for bad in [
        "/status/abc",
        "/status/42",
        "/status/100",
        "/status/200?header=nocolon",
        "/status/200?header=bad%20name:1",
        "/stall?bytes=x",
        "/stall?bytes=2000000",
        "/drip?chunk=-1",
        "/reset?after=18446744073709551615",
        "/wrong-length?declared=1",
        "/delay/soon",
    ] {
        let resp = c.get(bad);
        assert_eq!(resp.status, 400, "{bad}");
        assert!(!resp.body.is_empty(), "{bad}");
    }
    for unknown in ["/", "/nope", "/status", "/status/200/x", "/echo/x"] {
        assert_eq!(c.get(unknown).status, 404, "{unknown}");
    }
}

#[test]
fn delay_waits_before_the_head() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    let start = Instant::now();
    let resp = c.get("/delay/150");
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"delayed"[..]));
}

#[test]
fn stall_sends_some_then_nothing() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    c.send("GET", "/stall?bytes=100", &[], b"");
    let (status, headers) = c.head().expect("head");
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".to_owned(), "1000000".to_owned())));
    let mut body = [0u8; 100];
    c.reader.read_exact(&mut body).expect("first bytes");
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    c.reader
        .get_mut()
        .set_read_timeout(Some(SHORT))
        .expect("timeout");
    let err = c.reader.read(&mut [0u8; 1]).expect_err("stalled");
    assert!(is_timeout(&err), "{err:?}");
    // The server notices the client leaving, even mid-stall.
    drop(c);
    assert!(s.wait_for_open_connections(0, TIMEOUT));
}

#[test]
fn drip_sends_chunks_over_time() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    let start = Instant::now();
    let resp = c.get("/drip?chunk=3&interval_ms=30&count=4");
    assert!(start.elapsed() >= Duration::from_millis(90));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.body, b"xxxxxxxxxxxx");
}

#[test]
fn reset_aborts_mid_body() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    c.send("GET", "/reset?after=70000", &[], b"");
    let (status, headers) = c.head().expect("head");
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".to_owned(), "141000".to_owned())));
    let (body, _) = c.rest();
    assert_eq!(body.len(), 70_000);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

#[test]
fn wrong_length_as_hyper_sends_it() {
    let s = server();
    // Shorter than declared: A bytes, then the connection closes.
    let mut c = Conn::open(s.plain_port);
    c.send("GET", "/wrong-length?declared=100&actual=40", &[], b"");
    let (status, headers) = c.head().expect("head");
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".to_owned(), "100".to_owned())));
    let (body, _) = c.rest();
    assert_eq!(body.len(), 40);

    // Longer than declared: hyper truncates to the declared length.
    let mut c = Conn::open(s.plain_port);
    let resp = c.get("/wrong-length?declared=10&actual=40");
    assert_eq!(resp.body.len(), 10);
    assert_eq!(c.get("/status/200").status, 200);
}

#[test]
fn echo_rejects_bodies_over_64_mib() {
    let s = server();
    let mut stream = connect(s.plain_port);
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        64 * 1024 * 1024 + 1
    );
    stream.write_all(head.as_bytes()).expect("head");
    let mut c = Conn::over(stream);
    let resp = c.response();
    assert_eq!(resp.status, 413);
}

#[test]
fn garbage_gets_no_panic() {
    let s = server();
    for junk in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    ] {
        let mut stream = connect(s.plain_port);
        let _ = stream.write_all(junk);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
    let mut c = Conn::open(s.plain_port);
    assert_eq!(c.get("/status/200").status, 200);
}

#[test]
fn drop_does_not_hang_with_stalled_and_held_connections() {
    let s = server();
    let mut stalled = Conn::open(s.plain_port);
    stalled.send("GET", "/stall?bytes=10", &[], b"");
    stalled.head().expect("head");
    let _held = connect(s.blackhole_port);
    let raw = s.raw_url("x", true);
    let raw_port: u16 = raw
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .expect("raw port");
    let _raw = connect(raw_port);
    assert!(s.wait_for_open_connections(1, TIMEOUT));
    let start = Instant::now();
    drop(s);
    assert!(start.elapsed() < Duration::from_secs(3));
    // The stalled connection was closed by the shutdown.
    let (_, end) = stalled.rest();
    let _ = end;
}

fn tls_client(
    s: &TestServer,
    alpn: &[&[u8]],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(s.ca_cert_der()))
        .expect("add root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    rustls::StreamOwned::new(conn, connect(s.tls_port))
}

#[test]
fn tls_serves_http1_with_the_generated_certificate() {
    let s = server();
    let mut c = Conn::over(tls_client(&s, &[b"http/1.1"]));
    let v = json(&c.get("/echo?tls=1"));
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["query"], "tls=1");
    assert_eq!(c.get("/status/201").status, 201);
    assert_eq!(
        c.reader.get_ref().conn.alpn_protocol(),
        Some(&b"http/1.1"[..])
    );
    assert_eq!(s.requests_per_connection(), [2]);
}

#[test]
fn tls_handshake_failure_drops_only_that_connection() {
    let s = server();
    let mut stream = connect(s.tls_port);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
    assert!(s.wait_for_open_connections(0, TIMEOUT));
    let mut c = Conn::over(tls_client(&s, &[b"http/1.1"]));
    assert_eq!(c.get("/status/200").status, 200);
    assert_eq!(s.connections_accepted(), 2);
    assert_eq!(s.requests_per_connection(), [0, 1]);
}

/// A hand-made HTTP/2 GET with prior knowledge (or over TLS with ALPN h2):
/// returns the DATA payload of stream 1.
fn h2_get<S: Read + Write>(mut io: S, https: bool, authority: &str, path: &str) -> Vec<u8> {
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    // HPACK: :method GET, :scheme http(s) (static indexes), then :path and
    // :authority as literals without indexing, raw (not Huffman) strings.
    let scheme = if https { 0x87 } else { 0x86 };
    let mut block = vec![0x82, scheme, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, authority.len() as u8]);
    block.extend_from_slice(authority.as_bytes());

    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x4 | 0x1, 1, &block));
    io.write_all(&out).expect("write h2");
    io.flush().expect("flush");

    let mut data = Vec::new();
    loop {
        let mut header = [0u8; 9];
        io.read_exact(&mut header).expect("frame header");
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        io.read_exact(&mut payload).expect("frame payload");
        match (kind, stream) {
            // SETTINGS without ACK: acknowledge.
            (0x4, 0) if flags & 0x1 == 0 => {
                io.write_all(&frame(0x4, 0x1, 0, &[]))
                    .expect("settings ack");
            }
            (0x0, 1) => {
                data.extend_from_slice(&payload);
                if flags & 0x1 != 0 {
                    return data;
                }
            }
            (0x1, 1) if flags & 0x1 != 0 => return data,
            (0x3, 1) | (0x7, _) => panic!("stream reset or goaway: {kind}"),
            _ => {}
        }
    }
}

#[test]
fn http2_prior_knowledge_on_the_plain_port() {
    let s = server();
    let authority = format!("127.0.0.1:{}", s.plain_port);
    let body = h2_get(connect(s.plain_port), false, &authority, "/echo?h2=1");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["query"], "h2=1");
    assert_eq!(s.versions(), [http::Version::HTTP_2]);
}

#[test]
fn http2_over_tls_with_alpn() {
    let s = server();
    let mut tls = tls_client(&s, &[b"h2", b"http/1.1"]);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("handshake");
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    let body = h2_get(tls, true, "localhost", "/bytes/1000");
    assert_eq!(body.len(), 1000);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    assert_eq!(s.versions(), [http::Version::HTTP_2]);
}

#[tokio::test]
async fn starts_and_drops_inside_an_async_runtime() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    assert_eq!(c.get("/status/200").status, 200);
    let start = Instant::now();
    drop(s);
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn servers_are_independent() {
    let a = server();
    let b = server();
    assert_ne!(a.plain_port, b.plain_port);
    a.script("s", vec![Reply::status(201)]);
    let mut c = Conn::open(a.plain_port);
    assert_eq!(c.get("/script/s").status, 201);
    let mut d = Conn::open(b.plain_port);
    assert_eq!(d.get("/script/s").status, 404);
    assert_eq!((a.requests(), b.requests()), (1, 1));
    assert_eq!((a.connections_accepted(), b.connections_accepted()), (1, 1));
}

#[test]
fn redirect_sends_the_status_and_the_decoded_location() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    for code in [301, 302, 303, 307, 308] {
        let resp = c.get(&format!(
            "/redirect/{code}?to=http%3A%2F%2F127.0.0.1%3A1%2Fecho%3Fa%3D1%26b%3D2"
        ));
        assert_eq!(resp.status, code);
        assert_eq!(
            resp.header("location"),
            Some("http://127.0.0.1:1/echo?a=1&b=2")
        );
        assert!(resp.body.is_empty());
    }
    let resp = c.get("/redirect/302?to=../relative%20path");
    assert_eq!(resp.header("location"), Some("../relative path"));
    // The request body is read before the answer, and the connection stays usable.
    c.send("POST", "/redirect/307?to=/echo", &[], &[b'p'; 100_000]);
    let resp = c.response();
    assert_eq!(resp.status, 307);
    assert_eq!(resp.header("location"), Some("/echo"));
    assert_eq!(c.get("/status/204").status, 204);
    assert_eq!(s.requests_to("/redirect/307"), 2);
}

#[test]
fn redirect_rejects_bad_parameters() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    for path in [
        "/redirect/200?to=/echo",
        "/redirect/404?to=/echo",
        "/redirect/abc?to=/echo",
        "/redirect/302",
        "/redirect/302?to=a%0Ab",
    ] {
        let resp = c.get(path);
        assert_eq!(resp.status, 400, "{path}");
        assert_eq!(resp.header("location"), None, "{path}");
    }
}

#[test]
fn chain_counts_down_with_relative_locations() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    let resp = c.get("/chain/3");
    assert_eq!(resp.status, 302);
    assert_eq!(resp.header("location"), Some("/chain/2"));
    let resp = c.get("/chain/1");
    assert_eq!(resp.status, 302);
    assert_eq!(resp.header("location"), Some("/chain/0"));
    let resp = c.get("/chain/0");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"end");
    assert_eq!(c.get("/chain/x").status, 400);
}

#[test]
fn loop_points_a_and_b_at_each_other() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    let a = c.get("/loop/a");
    assert_eq!((a.status, a.header("location")), (302, Some("/loop/b")));
    let b = c.get("/loop/b");
    assert_eq!((b.status, b.header("location")), (302, Some("/loop/a")));
    assert_eq!(c.get("/loop/c").status, 404);
}

/// Polls `cond` every 5 ms until it holds or `limit` passes; returns whether it held.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn arrivals_are_kept_per_path_in_order() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    let before = Instant::now();
    assert_eq!(c.get("/status/200").status, 200);
    let between = Instant::now();
    assert_eq!(c.get("/status/204?body=x").status, 204);
    assert_eq!(c.get("/status/200").status, 200);
    let after = Instant::now();

    let ok = s.arrivals("/status/200");
    assert_eq!(ok.len(), 2);
    assert!(before <= ok[0] && ok[0] <= between, "{ok:?}");
    assert!(between <= ok[1] && ok[1] <= after, "{ok:?}");
    // The query is not part of the path.
    let empty = s.arrivals("/status/204");
    assert_eq!(empty.len(), 1);
    assert!(ok[0] <= empty[0] && empty[0] <= ok[1]);
    assert!(s.arrivals("/status").is_empty());
}

#[test]
fn delayed_requests_are_in_flight_during_their_delay() {
    let s = server();
    let mut delayed: Vec<Conn<TcpStream>> = (0..3).map(|_| Conn::open(s.plain_port)).collect();
    for c in &mut delayed {
        c.send("GET", "/delay/1000", &[], b"");
    }
    // All three are being delayed at once, well before their delay is over.
    assert!(wait_until(Duration::from_millis(700), || s
        .in_flight("/delay/")
        == 3));
    assert_eq!(s.in_flight(""), 3);

    // A quick request meanwhile is in flight until its body is taken: gone
    // once the client has the response.
    let mut quick = Conn::open(s.plain_port);
    assert_eq!(quick.get("/status/200").status, 200);
    assert_eq!(s.in_flight("/status/"), 0);
    assert_eq!(s.peak_in_flight("/status/"), 1);
    assert_eq!(s.in_flight("/delay/"), 3);

    for c in &mut delayed {
        assert_eq!(c.response().body, b"delayed");
    }
    assert_eq!(s.in_flight(""), 0);
    assert_eq!(s.peak_in_flight("/delay/"), 3);
    assert_eq!(s.peak_in_flight(""), 4);
    assert_eq!(s.peak_in_flight("/nothing"), 0);
}

#[test]
fn sequential_requests_are_never_in_flight_together() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    for _ in 0..3 {
        assert_eq!(c.get("/delay/10").status, 200);
    }
    assert_eq!(s.requests_to("/delay/10"), 3);
    assert_eq!(s.peak_in_flight(""), 1);
}

#[test]
fn a_request_leaves_flight_when_its_client_goes_away() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    c.send("GET", "/delay/3000", &[], b"");
    assert!(wait_until(TIMEOUT, || s.in_flight("/delay/") == 1));
    let dropped = Instant::now();
    drop(c);
    // hyper notices the closed connection and drops the request, long before its delay ends.
    assert!(
        wait_until(Duration::from_millis(1500), || s.in_flight("") == 0),
        "still in flight {:?} after the client went away",
        dropped.elapsed()
    );
    assert_eq!(s.peak_in_flight(""), 1);
}

#[test]
fn a_streamed_body_keeps_its_request_in_flight_until_it_ends() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    // Three chunks 100 ms apart: in flight for about 200 ms after the head.
    c.send("GET", "/drip?chunk=1&interval_ms=100&count=3", &[], b"");
    let (status, _) = c.head().expect("head");
    assert_eq!(status, 200);
    assert_eq!(s.in_flight("/drip"), 1);
    let mut rest = c.reader;
    let mut line = String::new();
    // Read the chunked body to its last (empty) chunk and the blank line after it.
    loop {
        line.clear();
        rest.read_line(&mut line).expect("chunk line");
        if line == "0\r\n" {
            rest.read_line(&mut line).expect("last line");
            break;
        }
    }
    assert_eq!(s.in_flight("/drip"), 0);
}

#[test]
fn http2_requests_leave_flight_too() {
    let s = server();
    let authority = format!("127.0.0.1:{}", s.plain_port);
    let body = h2_get(connect(s.plain_port), false, &authority, "/delay/50");
    assert_eq!(body, b"delayed");
    assert_eq!(s.peak_in_flight("/delay/"), 1);
    assert_eq!(s.in_flight(""), 0);
}

#[test]
fn most_within_counts_both_ends_in_any_order() {
    use super::most_within;

    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let times = [t0 + ms(40), t0, t0 + ms(20), t0 + ms(20), t0 + ms(41)];
    assert_eq!(most_within(&times, ms(0)), 2);
    assert_eq!(most_within(&times, ms(20)), 3);
    assert_eq!(most_within(&times, ms(21)), 4);
    assert_eq!(most_within(&times, ms(40)), 4);
    assert_eq!(most_within(&times, ms(41)), 5);
    assert_eq!(most_within(&times, Duration::MAX), 5);
    assert_eq!(most_within(&[t0], ms(1)), 1);
}

fn decoded(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(body).read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body).read_to_end(&mut out),
        "deflate-raw" => flate2::read::DeflateDecoder::new(body).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(body, 4096).read_to_end(&mut out),
        "zstd" => zstd::stream::read::Decoder::new(body).and_then(|mut d| d.read_to_end(&mut out)),
        other => panic!("no coding {other}"),
    }
    .expect("a valid stream");
    out
}

#[test]
fn encoded_serves_the_sample_in_each_coding() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    let n = 200_003;
    for (coding, header) in [
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("deflate-raw", "deflate"),
        ("br", "br"),
        ("zstd", "zstd"),
    ] {
        let resp = c.get(&format!("/encoded/{coding}?bytes={n}"));
        assert_eq!(resp.status, 200, "{coding}");
        assert_eq!(resp.header("content-encoding"), Some(header));
        let len: usize = resp.header("content-length").unwrap().parse().unwrap();
        assert_eq!(len, resp.body.len());
        assert!(len < n / 2, "{coding}: {len} bytes");
        assert_eq!(decoded(coding, &resp.body), encoded_sample(n), "{coding}");
    }
    let whole = c.get("/encoded/gzip?bytes=5000");
    let cut = c.get("/encoded/gzip?bytes=5000&truncate=10");
    assert_eq!(cut.body, whole.body[..whole.body.len() - 10]);
    assert_eq!(c.get("/encoded/compress").status, 404);
    assert_eq!(c.get("/encoded/gzip?bytes=99999999999").status, 400);
}

#[test]
fn bomb_is_a_small_valid_gzip_of_many_zeros() {
    let s = server();
    let mut c = Conn::open(s.plain_port);
    let resp = c.get("/bomb?mib=70");
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert!(resp.body.len() < 100 * 1024, "{} bytes", resp.body.len());
    let zeros = decoded("gzip", &resp.body);
    assert_eq!(zeros.len(), 70 << 20);
    assert!(zeros.iter().all(|&b| b == 0));
    // The default, 1 GiB, in about 1 MiB: only its head is read here.
    c.send("GET", "/bomb", &[], b"");
    let (status, headers) = c.head().unwrap();
    assert_eq!(status, 200);
    let len: u64 = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    assert!(len < 2 << 20, "{len} bytes");
}
