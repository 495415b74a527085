//! A real `redis-server` on 127.0.0.1 for the tests, and the load they send.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_core::{Backend, Client};

/// A `redis-server` child on an ephemeral loopback port, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port (another, if the port was taken meanwhile); panics, saying
    /// what to install, when `redis-server` is missing.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("an ephemeral port")
                .port();
            if let Some(server) = Self::spawn(port) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ephemeral ports");
    }

    fn spawn(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "keel-redis's tests need a real `redis-server` on the PATH: install it \
                 (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`)"
            ),
            Err(e) => panic!("could not run redis-server: {e}"),
        };
        let mut server = Self {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server.ping() {
                return Some(server);
            }
            let exited = server
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                // The port was taken meanwhile: try another.
                server.child = None;
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {port} did not answer PING within 10 s");
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if let Some(mut server) = Self::spawn(self.port) {
                self.child = server.child.take();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {}", self.port);
    }

    /// A synchronous connection, to plant values.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("a connection to the test redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one load run saw.
#[derive(Debug, Default)]
pub struct Load {
    pub ok: usize,
    pub failed: Vec<String>,
    pub slowest: Duration,
}

/// Sends GET `url` from `workers` concurrent loops until `until`, as fast as the client lets
/// them; runs on any executor.
pub async fn load<T: Backend>(
    client: &Client<T>,
    url: &str,
    workers: usize,
    until: Instant,
) -> Load {
    let loops = (0..workers).map(|_| async {
        let mut seen = Load::default();
        while Instant::now() < until {
            let started = Instant::now();
            let result = client.get(url).send().await;
            seen.slowest = seen.slowest.max(started.elapsed());
            match result {
                Ok(resp) if resp.status() == 200 => seen.ok += 1,
                Ok(resp) => seen.failed.push(format!("status {}", resp.status())),
                Err(e) => seen.failed.push(format!("{e:#}")),
            }
        }
        seen
    });
    let mut all = Load::default();
    for seen in futures_util::future::join_all(loops).await {
        all.ok += seen.ok;
        all.failed.extend(seen.failed);
        all.slowest = all.slowest.max(seen.slowest);
    }
    all
}

/// The most requests the fleet may send in any `span` at `per_second` (burst 1) with a grace
/// of `grace`, allowing `slack` for delays on the way (Redis's replies, the server's clock).
pub fn bound(per_second: u32, span: Duration, grace: Duration, slack: Duration) -> usize {
    1 + (f64::from(per_second) * (span + grace + slack).as_secs_f64()).floor() as usize
}
