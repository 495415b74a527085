//! Connects on sockets numbered 1024 and above. A libcurl built without `poll()` checks a
//! connecting socket with `select()`, which can't hold a descriptor past `FD_SETSIZE` (1024):
//! every such connect failed with `CURLE_COULDNT_CONNECT` although the socket had connected
//! (curl/curl#15080). A service with a thousand connections open is an ordinary one.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::fd::AsRawFd as _;
use std::thread;
use std::time::Duration;

use futures_executor::block_on;
use keel_core::{Body, Transport, TransportConfig};
use keel_isahc::IsahcTransport;

/// A server on 127.0.0.1 that answers every request with `ok` and closes the connection, so
/// each request opens a socket of its own; returns its URL.
fn closing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                stream.write_all(answer.as_bytes()).ok();
            });
        }
    });
    url
}

#[test]
fn connects_on_descriptors_past_1024() {
    // Hold enough descriptors that the sockets libcurl opens next are numbered 1024 or above.
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) if file.as_raw_fd() >= 1100 => break,
            Ok(file) => held.push(file),
            Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                // EMFILE or ENFILE: this process may not open that many, so no socket of it can be
                // numbered that high and the failure can't happen here.
                eprintln!("skipped: the descriptor limit stops at {}", held.len());
                return;
            }
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
    let url = closing_server();
    let transport = IsahcTransport::new(&TransportConfig::default()).unwrap();
    for i in 0..20 {
        let request = http::Request::get(&url).body(Body::empty()).unwrap();
        let response = block_on(transport.send(request))
            .unwrap_or_else(|e| panic!("request {i} with {} descriptors held: {e}", held.len()));
        assert_eq!(response.status(), 200);
    }
    drop(held);
}
