//! Faults on the wire, from the [chaos proxy](crate::chaos): latency, throttling, 1-byte
//! segments, stalls, resets and closes in the head, the body, the upload or the TLS
//! handshake.
//!
//! Each case runs its fault on every leg the backend can speak through the proxy: plain
//! HTTP/1.1, HTTP/1.1 over TLS (HTTP/2 not offered) and HTTP/2 over TLS (ALPN, where the
//! backend has [`Capabilities::http2`](keel_core::Capabilities::http2)). The HTTP/1.1 legs are
//! required everywhere. A case asserts the error kind and stage (or the recovery: a 200 with
//! the exact body), and that the connection the fault struck is not used again: the faults
//! strike only the proxy's first connection, and a normal request afterwards must go out on a
//! second one, and succeed.
//!
//! Every leg runs; a case is "not supported" when a leg needs a capability the backend lacks:
//!
//! - [`truncated_head_detected`](keel_core::Capabilities::truncated_head_detected): a FIN in
//!   the middle of an HTTP/1.1 head must be an error (libcurl answers with the headers it
//!   got);
//! - [`http2_timeout_retires_connection`](keel_core::Capabilities::http2_timeout_retires_connection):
//!   after a stall timed out on HTTP/2, the silent connection must take no new request (hyper
//!   and libcurl keep it, and the next request would time out too: it is not sent there).
//!
//! Retries are off unless the case is about recovery; time limits are small, so that every
//! case takes well under 5 s (about 2 s at most, on every pair).

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{StatusCode, Version};
use keel_core::{
    Backend, Client, ClientBuilder, Error, ErrorKind, Jitter, RetryPolicy, Stage, TimeoutPhase,
};

use super::{CaseResult, Cx, Failure, Outcome};
use crate::chaos::{Chaos, ChaosProxy, Fault};
use crate::ensure;
use crate::server::Reply;

/// How the client reaches the server through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leg {
    /// HTTP/1.1 on a plain connection.
    Plain,
    /// HTTP/1.1 over TLS (the client does not offer HTTP/2).
    Tls,
    /// HTTP/2 over TLS, by ALPN.
    H2,
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leg::Plain => "plain HTTP/1.1",
            Leg::Tls => "HTTP/1.1 over TLS",
            Leg::H2 => "HTTP/2 over TLS",
        })
    }
}

impl Leg {
    /// The legs backend `T` can run: both HTTP/1.1 legs always, HTTP/2 where it has it.
    fn all<T: Backend>(cx: &Cx<T>) -> Vec<Leg> {
        let caps = cx.capabilities();
        let mut legs = vec![Leg::Plain, Leg::Tls];
        if caps.http2 {
            legs.push(Leg::H2);
        }
        legs
    }

    /// The legs over TLS.
    fn tls<T: Backend>(cx: &Cx<T>) -> Vec<Leg> {
        let mut legs = Self::all(cx);
        legs.retain(|l| *l != Leg::Plain);
        legs
    }

    fn version(self) -> Version {
        match self {
            Leg::Plain | Leg::Tls => Version::HTTP_11,
            Leg::H2 => Version::HTTP_2,
        }
    }
}

/// One leg's setup: the proxy (in front of the plain or the TLS listener) and a client for
/// the leg, with retries off.
struct Rig<T: Backend> {
    leg: Leg,
    proxy: ChaosProxy,
    client: Client<T>,
}

impl<T: Backend> Rig<T> {
    /// A proxy with `chaos` on its first connection only, and a client built from
    /// [`Cx::builder`] with retries off, set up for `leg`, then through `configure`.
    fn new(
        cx: &Cx<T>,
        leg: Leg,
        chaos: Chaos,
        configure: impl FnOnce(ClientBuilder<T>) -> ClientBuilder<T>,
    ) -> Result<Self, Failure> {
        let chaos = chaos.first_connections(1);
        let proxy = match leg {
            Leg::Plain => ChaosProxy::in_front_of_plain(&cx.server, chaos)?,
            Leg::Tls | Leg::H2 => ChaosProxy::in_front_of_tls(&cx.server, chaos)?,
        };
        let mut builder = cx.builder().retry_policy(RetryPolicy::disabled());
        match leg {
            Leg::Plain => {}
            Leg::Tls => builder = builder.add_root_certificate(cx.server_root()).http2(false),
            Leg::H2 => builder = builder.add_root_certificate(cx.server_root()),
        }
        let client = configure(builder).build()?;
        Ok(Self { leg, proxy, client })
    }

    /// The URL of `path` through the proxy.
    fn url(&self, path: &str) -> String {
        match self.leg {
            Leg::Plain => self.proxy.url(path),
            Leg::Tls | Leg::H2 => self.proxy.tls_url(path),
        }
    }

    /// After a time limit cut the request: as [`not_reused_afterwards`](Self::not_reused_afterwards),
    /// except on HTTP/2 with a backend that keeps such a connection (then the next request
    /// would go to the silent connection and time out too): that is reported as the
    /// capability missing.
    async fn not_reused_after_timeout(&self) -> LegResult {
        if self.leg == Leg::H2 && !T::capabilities().http2_timeout_retires_connection {
            ensure!(
                self.proxy.faults_fired() == 1,
                "the fault struck {} times",
                self.proxy.faults_fired()
            );
            return Ok(Some("http2_timeout_retires_connection"));
        }
        self.not_reused_afterwards().await
    }

    /// The fault struck once, on the proxy's first connection; then a normal request goes
    /// out on a second connection and gets its answer.
    async fn not_reused_afterwards(&self) -> LegResult {
        ensure!(
            self.proxy.faults_fired() == 1,
            "the fault struck {} times (the trigger point was never reached?)",
            self.proxy.faults_fired()
        );
        let resp = self
            .client
            .get(&self.url("/status/200?body=after"))
            .send()
            .await?;
        ensure!(
            resp.version() == self.leg.version(),
            "the request after the fault spoke {:?}",
            resp.version()
        );
        let body = resp.text().await?;
        ensure!(body == "after", "the request after the fault got {body:?}");
        ensure!(
            self.proxy.connections_accepted() == 2,
            "the struck connection and a fresh one make 2, the proxy accepted {}",
            self.proxy.connections_accepted()
        );
        Ok(None)
    }
}

/// What one leg concluded: `Ok(None)` passed; `Ok(Some(capability))` ran, but part of what
/// it checks needs a capability the backend lacks.
type LegResult = Result<Option<&'static str>, Failure>;

/// Runs `leg_case` on each of `legs`, naming the leg in a failure. Every leg runs; the case
/// is not supported when a leg found a capability missing.
async fn on_legs<F, Fut>(legs: Vec<Leg>, leg_case: F) -> CaseResult
where
    F: Fn(Leg) -> Fut,
    Fut: std::future::Future<Output = LegResult>,
{
    ensure!(!legs.is_empty(), "no leg to run");
    let mut missing = None;
    for leg in legs {
        let lacks = leg_case(leg)
            .await
            .map_err(|Failure(msg)| Failure(format!("{leg}: {msg}")))?;
        missing = missing.or(lacks);
    }
    Ok(missing.map_or(Outcome::Pass, Outcome::NotSupported))
}

/// Byte `i` of the server's `/bytes/{n}` bodies.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// Checks an error's kind and stage.
fn expect_error<R>(
    result: Result<R, Error>,
    kind: ErrorKind,
    stage: Option<Stage>,
) -> Result<Error, Failure> {
    match result {
        Ok(_) => Err(Failure(format!("expected a {kind:?} error, got success"))),
        Err(e) if e.kind() == kind && e.stage() == stage => Ok(e),
        Err(e) => Err(Failure(format!(
            "expected {kind:?} at {stage:?}, got {:?} at {:?}: {e}",
            e.kind(),
            e.stage()
        ))),
    }
}

/// Reads a `/bytes/{n}` body chunk by chunk until it ends or fails, checking every byte:
/// the bytes read, and how it ended.
async fn read_pattern(resp: &mut keel_core::Response) -> Result<(u64, Result<(), Error>), Failure> {
    let mut received = 0u64;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if let Some(k) =
                    (0..chunk.len()).find(|&k| chunk[k] != pattern(received + k as u64))
                {
                    return Err(Failure(format!("byte {} is corrupt", received + k as u64)));
                }
                received += chunk.len() as u64;
            }
            Ok(None) => return Ok((received, Ok(()))),
            Err(e) => return Ok((received, Err(e))),
        }
    }
}

/// The headers of [`padded`]: this many, of [`PAD_LEN`] bytes each.
const PADS: usize = 12;
/// The length of each padding header's value.
const PAD_LEN: usize = 1000;
/// Where a fault in the response head strikes: past the TLS handshake (a few KiB at most),
/// within the padded head (more than 10 KiB on every leg, HPACK-compressed or not).
const HEAD_CUT: u64 = 6000;

/// A script whose replies are 200 with a head of about 12 KiB (so a fault at [`HEAD_CUT`]
/// lands inside it on every leg; under hyper's 16 KiB HTTP/2 header-list limit) and the body
/// `padded`. Returns its path.
fn padded<T: Backend>(cx: &Cx<T>, name: &str) -> String {
    let mut reply = Reply::status(200).body("padded");
    for i in 0..PADS {
        // Capital letters: HPACK's Huffman code hardly shortens them.
        let value: String = (0..PAD_LEN)
            .map(|k| char::from(b'A' + ((k * 7 + i * 13) % 26) as u8))
            .collect();
        reply = reply.header(format!("x-pad-{i}"), value);
    }
    cx.server.script(name, vec![reply])
}

/// A response that comes late (150 ms before the first byte each way, 5 ms per chunk) but
/// within every time limit is delivered whole, and the upload too.
pub async fn fault_chaos_delay_within_timeouts<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let delay = Fault::Delay {
        first_byte: Duration::from_millis(150),
        per_chunk: Duration::from_millis(5),
    };
    let chaos = Chaos::to_client(delay).with(crate::chaos::Direction::ToServer, delay);
    on_legs(Leg::all(cx), |leg| async move {
        let rig = Rig::new(cx, leg, chaos, |b| {
            b.attempt_timeout(Duration::from_secs(3))
                .read_idle_timeout(Duration::from_secs(1))
        })?;
        let started = Instant::now();
        let mut resp = rig.client.get(&rig.url("/bytes/200000")).send().await?;
        ensure!(
            resp.version() == leg.version(),
            "spoke {:?}",
            resp.version()
        );
        let (received, end) = read_pattern(&mut resp).await?;
        end?;
        ensure!(received == 200_000, "{received} bytes of 200000");
        ensure!(
            started.elapsed() >= Duration::from_millis(150),
            "the delayed answer came in {:?}",
            started.elapsed()
        );
        let upload = Bytes::from(vec![b'u'; 100_000]);
        let echo: serde_json::Value = rig
            .client
            .post(&rig.url("/echo"))
            .body(upload)
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            echo["body_len"] == 100_000,
            "the server got {} bytes of a 100000-byte upload",
            echo["body_len"]
        );
        Ok(None)
    })
    .await
}

/// Every byte, both ways (the TLS handshake included), in a segment of its own: the request
/// and the answer arrive whole.
pub async fn fault_chaos_one_byte_segments<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let chaos = Chaos::to_client(Fault::OneByteSegments)
        .with(crate::chaos::Direction::ToServer, Fault::OneByteSegments);
    on_legs(Leg::all(cx), |leg| async move {
        let rig = Rig::new(cx, leg, chaos, |b| b)?;
        let mut resp = rig.client.get(&rig.url("/bytes/5000")).send().await?;
        ensure!(
            resp.version() == leg.version(),
            "spoke {:?}",
            resp.version()
        );
        let (received, end) = read_pattern(&mut resp).await?;
        end?;
        ensure!(received == 5000, "{received} bytes of 5000");
        let echo: serde_json::Value = rig
            .client
            .post(&rig.url("/echo"))
            .header("x-split", "one byte at a time")
            .body("a body cut into bytes")
            .send()
            .await?
            .json()
            .await?;
        ensure!(
            echo["body"] == "a body cut into bytes"
                && echo["headers"]["x-split"][0] == "one byte at a time",
            "the server saw {echo}"
        );
        Ok(None)
    })
    .await
}

/// A body throttled to 200 KB/s arrives whole, at that pace, within the read-idle limit.
pub async fn fault_chaos_throttled_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let chaos = Chaos::to_client(Fault::Throttle {
        bytes_per_second: 200_000,
    });
    on_legs(Leg::all(cx), |leg| async move {
        let rig = Rig::new(cx, leg, chaos, |b| {
            b.read_idle_timeout(Duration::from_secs(1))
        })?;
        let started = Instant::now();
        let mut resp = rig.client.get(&rig.url("/bytes/100000")).send().await?;
        let (received, end) = read_pattern(&mut resp).await?;
        end?;
        let took = started.elapsed();
        ensure!(received == 100_000, "{received} bytes of 100000");
        ensure!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(4),
            "100 KB at 200 KB/s took {took:?}"
        );
        Ok(None)
    })
    .await
}

/// The answer stops in the middle of its head: the attempt timeout fires (the driver's, no
/// stage), and the stalled connection is not used again.
pub async fn fault_chaos_stall_mid_headers<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let path = padded(cx, "stall-head");
    let chaos = Chaos::to_client(Fault::Stall { after: HEAD_CUT });
    on_legs(Leg::all(cx), |leg| {
        let path = path.clone();
        async move {
            let rig = Rig::new(cx, leg, chaos, |b| {
                b.attempt_timeout(Duration::from_millis(400))
            })?;
            let started = Instant::now();
            expect_error(
                rig.client.get(&rig.url(&path)).send().await,
                ErrorKind::Timeout(TimeoutPhase::Attempt),
                None,
            )?;
            ensure!(
                started.elapsed() < Duration::from_secs(3),
                "the 400 ms attempt timeout took {:?}",
                started.elapsed()
            );
            rig.not_reused_after_timeout().await
        }
    })
    .await
}

/// The body stops after 200 000 bytes on the wire: the read-idle timeout fires in the body,
/// the bytes before were delivered intact, and the connection is not used again.
pub async fn fault_chaos_stall_mid_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let chaos = Chaos::to_client(Fault::Stall { after: 200_000 });
    on_legs(Leg::all(cx), |leg| async move {
        let rig = Rig::new(cx, leg, chaos, |b| {
            b.read_idle_timeout(Duration::from_millis(400))
        })?;
        let mut resp = rig.client.get(&rig.url("/bytes/1000000")).send().await?;
        ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
        let (received, end) = read_pattern(&mut resp).await?;
        expect_error(
            end,
            ErrorKind::Timeout(TimeoutPhase::ReadIdle),
            Some(Stage::Body),
        )?;
        ensure!(
            received > 0 && received < 200_000,
            "{received} bytes before a stall at 200000 on the wire"
        );
        drop(resp);
        rig.not_reused_after_timeout().await
    })
    .await
}

/// Checks a body cut at 200 000 bytes on the wire: a body error in the body stage, with what
/// came before delivered intact.
async fn cut_mid_body<T: Backend>(cx: &Cx<T>, leg: Leg, fault: Fault) -> LegResult {
    let rig = Rig::new(cx, leg, Chaos::to_client(fault), |b| b)?;
    let mut resp = rig.client.get(&rig.url("/bytes/1000000")).send().await?;
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    let (received, end) = read_pattern(&mut resp).await?;
    expect_error(end, ErrorKind::Body, Some(Stage::Body))?;
    ensure!(
        received < 200_000,
        "{received} bytes before a cut at 200000 on the wire"
    );
    drop(resp);
    rig.not_reused_afterwards().await
}

/// The connection is reset (RST) 200 000 bytes into the answer: a body error in the body
/// stage; the connection is not used again.
pub async fn fault_chaos_reset_mid_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    on_legs(Leg::all(cx), |leg| {
        cut_mid_body(cx, leg, Fault::Reset { after: 200_000 })
    })
    .await
}

/// The connection is closed (FIN, no TLS `close_notify`) 200 000 bytes into a body with a
/// `Content-Length` of 1 000 000: a truncated body is a body error in the body stage, never a
/// short success.
pub async fn fault_chaos_close_mid_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    on_legs(Leg::all(cx), |leg| {
        cut_mid_body(cx, leg, Fault::Close { after: 200_000 })
    })
    .await
}

/// Whether `fault`, striking mid-head on `leg`, is a clean close the backend takes for the
/// end of the head (HTTP/1.1 only: HTTP/2 frames say where a head ends).
fn truncated_head_undetected<T: Backend>(leg: Leg, fault: Fault) -> bool {
    matches!(fault, Fault::Close { .. })
        && leg != Leg::H2
        && !T::capabilities().truncated_head_detected
}

/// A chunked body (no `Content-Length`; on HTTP/2, DATA frames without the end of the
/// stream) whose connection is closed cleanly 200 000 bytes in: the missing last chunk makes it
/// a body error in the body stage, never a short success; the connection is not used again.
pub async fn fault_chaos_close_mid_chunked_body<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let chaos = Chaos::to_client(Fault::Close { after: 200_000 });
    on_legs(Leg::all(cx), |leg| async move {
        let rig = Rig::new(cx, leg, chaos, |b| b)?;
        let resp = rig
            .client
            .get(&rig.url("/drip?chunk=10000&interval_ms=1&count=100"))
            .send()
            .await?;
        ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
        let err = expect_error(resp.bytes().await, ErrorKind::Body, Some(Stage::Body))?;
        ensure!(!err.is_unsent(), "a cut body counts as unsent");
        rig.not_reused_afterwards().await
    })
    .await
}

/// The answer is late by more than the attempt timeout (a 2 s latency before the first byte
/// back, the TLS handshake's included): the attempt timeout fires, and the late connection is
/// not used again.
pub async fn fault_chaos_delay_past_attempt_timeout<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let chaos = Chaos::to_client(Fault::Delay {
        first_byte: Duration::from_secs(2),
        per_chunk: Duration::ZERO,
    });
    on_legs(Leg::all(cx), |leg| async move {
        let rig = Rig::new(cx, leg, chaos, |b| {
            b.attempt_timeout(Duration::from_millis(300))
        })?;
        let started = Instant::now();
        expect_error(
            rig.client.get(&rig.url("/status/200")).send().await,
            ErrorKind::Timeout(TimeoutPhase::Attempt),
            None,
        )?;
        let took = started.elapsed();
        ensure!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
            "the 300 ms attempt timeout took {took:?}"
        );
        // A delay is not a fault that strikes: check the fresh connection by the count.
        let body = rig
            .client
            .get(&rig.url("/status/200?body=after"))
            .send()
            .await?
            .text()
            .await?;
        ensure!(
            body == "after",
            "the request after the timeout got {body:?}"
        );
        ensure!(
            rig.proxy.connections_accepted() == 2,
            "the late connection and a fresh one make 2, the proxy accepted {}",
            rig.proxy.connections_accepted()
        );
        Ok(None)
    })
    .await
}

/// The answer trickles in a byte every 50 ms (20 bytes per second: on TLS, the server's half
/// of the handshake trickles too): the attempt timeout fires, however steadily bytes arrive,
/// and the trickling connection is not used again.
pub async fn fault_chaos_trickled_head_past_attempt_timeout<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let path = padded(cx, "trickle-head");
    let chaos = Chaos::to_client(Fault::Throttle {
        bytes_per_second: 20,
    });
    on_legs(Leg::all(cx), |leg| {
        let path = path.clone();
        async move {
            let rig = Rig::new(cx, leg, chaos, |b| {
                b.attempt_timeout(Duration::from_millis(500))
            })?;
            let started = Instant::now();
            expect_error(
                rig.client.get(&rig.url(&path)).send().await,
                ErrorKind::Timeout(TimeoutPhase::Attempt),
                None,
            )?;
            let took = started.elapsed();
            ensure!(
                took >= Duration::from_millis(450) && took < Duration::from_secs(2),
                "the 500 ms attempt timeout took {took:?}"
            );
            // A throttle never strikes: check the fresh connection by the count.
            let body = rig
                .client
                .get(&rig.url("/status/200?body=after"))
                .send()
                .await?
                .text()
                .await?;
            ensure!(
                body == "after",
                "the request after the timeout got {body:?}"
            );
            ensure!(
                rig.proxy.connections_accepted() == 2,
                "the trickling connection and a fresh one make 2, the proxy accepted {}",
                rig.proxy.connections_accepted()
            );
            Ok(None)
        }
    })
    .await
}

/// Checks an answer cut in the middle of its head.
async fn cut_mid_headers<T: Backend>(cx: &Cx<T>, leg: Leg, path: &str, fault: Fault) -> LegResult {
    let rig = Rig::new(cx, leg, Chaos::to_client(fault), |b| b)?;
    if truncated_head_undetected::<T>(leg, fault) {
        // The answer may come as a success made of the headers received: nothing to assert
        // about it but that the client goes on working.
        let _ = rig.client.get(&rig.url(path)).send().await;
        rig.not_reused_afterwards().await?;
        return Ok(Some("truncated_head_detected"));
    }
    let err = match rig.client.get(&rig.url(path)).send().await {
        Ok(resp) => return Err(Failure(format!("the cut head answered {}", resp.status()))),
        Err(e) => e,
    };
    // A FIN is seen by reading: awaiting the head. A reset is seen by whatever touches the
    // socket first, and on HTTP/2 the client may be writing (a window update, a settings
    // acknowledgement: libcurl then says "sending"), so a reset may also say so.
    let stage_ok = match fault {
        Fault::Reset { .. } => matches!(err.stage(), Some(Stage::AwaitHead | Stage::SendRequest)),
        _ => err.stage() == Some(Stage::AwaitHead),
    };
    ensure!(
        err.kind() == ErrorKind::Body && stage_ok,
        "expected Body awaiting the head, got {:?} at {:?}: {err}",
        err.kind(),
        err.stage()
    );
    ensure!(
        err.is_retryable(),
        "a GET cut before its head is worth retrying"
    );
    rig.not_reused_afterwards().await
}

/// The connection is closed (FIN) in the middle of the answer's head: a body error while
/// awaiting the head (worth retrying for a GET); the connection is not used again.
pub async fn fault_chaos_close_mid_headers<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let path = padded(cx, "close-head");
    on_legs(Leg::all(cx), |leg| {
        cut_mid_headers(cx, leg, &path, Fault::Close { after: HEAD_CUT })
    })
    .await
}

/// The connection is reset (RST) in the middle of the answer's head: a body error while
/// awaiting the head (or while sending, for a backend that saw the reset on a write); the
/// connection is not used again.
pub async fn fault_chaos_reset_mid_headers<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let path = padded(cx, "reset-head");
    on_legs(Leg::all(cx), |leg| {
        cut_mid_headers(cx, leg, &path, Fault::Reset { after: HEAD_CUT })
    })
    .await
}

/// The size of the uploads cut on their way: more than the socket buffers on both sides of
/// the proxy can hold, so the client is still writing when the fault strikes.
const UPLOAD: usize = 16 * 1024 * 1024;

/// Checks a 16 MiB upload whose connection `fault` cuts 256 KiB in: a body error after the
/// connection was made, not unsent (the server may have seen part of it), and the connection
/// is not used again.
async fn cut_upload<T: Backend>(cx: &Cx<T>, leg: Leg, fault: Fault, upload: Bytes) -> LegResult {
    let rig = Rig::new(cx, leg, Chaos::to_server(fault), |b| b)?;
    let err = match rig.client.post(&rig.url("/echo")).body(upload).send().await {
        Ok(resp) => return Err(Failure(format!("the cut upload got {}", resp.status()))),
        Err(e) => e,
    };
    // hyper and libcurl see the cut on their read side, and can't say whether the whole
    // request had been written: either stage after the connection was made.
    ensure!(
        err.kind() == ErrorKind::Body
            && matches!(err.stage(), Some(Stage::SendRequest | Stage::AwaitHead)),
        "expected Body while sending or awaiting the head, got {:?} at {:?}: {err}",
        err.kind(),
        err.stage()
    );
    ensure!(!err.is_unsent(), "a half-sent upload counts as unsent");
    rig.not_reused_afterwards().await
}

/// The connection is reset (RST) 256 KiB into a 16 MiB upload: a body error while sending the
/// request or awaiting the head; the connection is not used again.
pub async fn fault_chaos_reset_request_upload<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let upload = Bytes::from(vec![b'u'; UPLOAD]);
    on_legs(Leg::all(cx), |leg| {
        cut_upload(cx, leg, Fault::Reset { after: 256 * 1024 }, upload.clone())
    })
    .await
}

/// The connection is closed (FIN; what the client still sends is read and dropped) 256 KiB
/// into a 16 MiB upload, with no answer: a body error while sending the request or awaiting
/// the head; the connection is not used again.
pub async fn fault_chaos_close_request_upload<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let upload = Bytes::from(vec![b'u'; UPLOAD]);
    on_legs(Leg::all(cx), |leg| {
        cut_upload(cx, leg, Fault::Close { after: 256 * 1024 }, upload.clone())
    })
    .await
}

/// The upload stops reaching the server 256 KiB into 16 MiB (the connection stays open): the
/// attempt timeout fires; the connection is not used again.
pub async fn fault_chaos_stall_request_upload<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let chaos = Chaos::to_server(Fault::Stall { after: 256 * 1024 });
    let upload = Bytes::from(vec![b'u'; UPLOAD]);
    on_legs(Leg::all(cx), |leg| {
        let upload = upload.clone();
        async move {
            let rig = Rig::new(cx, leg, chaos, |b| {
                b.attempt_timeout(Duration::from_millis(500))
            })?;
            expect_error(
                rig.client.post(&rig.url("/echo")).body(upload).send().await,
                ErrorKind::Timeout(TimeoutPhase::Attempt),
                None,
            )?;
            rig.not_reused_after_timeout().await
        }
    })
    .await
}

/// A policy that retries at once, three attempts at most.
fn quick_retries() -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(3)
        .base_delay(Duration::from_millis(10))
        .jitter(Jitter::None)
        .build()
        .expect("a valid policy")
}

/// Checks that a GET whose first connection is cut mid-head by `fault` is retried on a fresh
/// connection and gets the whole answer.
async fn recovers<T: Backend>(cx: &Cx<T>, leg: Leg, path: &str, fault: Fault) -> LegResult {
    if truncated_head_undetected::<T>(leg, fault) {
        // The first attempt "succeeds" with the headers received: there is nothing to retry.
        return Ok(Some("truncated_head_detected"));
    }
    let rig = Rig::new(cx, leg, Chaos::to_client(fault), |b| {
        b.retry_policy(quick_retries())
    })?;
    let before = cx.server.requests_to(path);
    let resp = rig.client.get(&rig.url(path)).send().await?;
    ensure!(resp.status() == StatusCode::OK, "status {}", resp.status());
    ensure!(
        resp.version() == leg.version(),
        "spoke {:?}",
        resp.version()
    );
    let body = resp.text().await?;
    ensure!(body == "padded", "the retried GET got {body:?}");
    ensure!(
        rig.proxy.faults_fired() == 1 && rig.proxy.connections_accepted() == 2,
        "the fault struck {} times, on {} connections",
        rig.proxy.faults_fired(),
        rig.proxy.connections_accepted()
    );
    let attempts = cx.server.requests_to(path) - before;
    ensure!(attempts == 2, "the server saw {attempts} attempts");
    Ok(None)
}

/// The first connection is closed mid-head; the GET is retried on a fresh connection (the
/// closed one is not reused) and gets the whole answer.
pub async fn fault_chaos_close_then_retry_on_fresh_connection<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let path = padded(cx, "close-retry");
    on_legs(Leg::all(cx), |leg| {
        recovers(cx, leg, &path, Fault::Close { after: HEAD_CUT })
    })
    .await
}

/// The first connection is reset mid-head; the GET is retried on a fresh connection and gets
/// the whole answer.
pub async fn fault_chaos_reset_then_retry_on_fresh_connection<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let path = padded(cx, "reset-retry");
    on_legs(Leg::all(cx), |leg| {
        recovers(cx, leg, &path, Fault::Reset { after: HEAD_CUT })
    })
    .await
}

/// The server's half of the TLS handshake never arrives (the connection stays open): the
/// connect timeout fires, nothing was sent, and the next request gets a fresh connection.
pub async fn fault_chaos_stall_tls_handshake<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let chaos = Chaos::to_client(Fault::Stall { after: 0 });
    on_legs(Leg::tls(cx), |leg| async move {
        let rig = Rig::new(cx, leg, chaos, |b| {
            b.connect_timeout(Duration::from_millis(400))
        })?;
        let err = match rig.client.get(&rig.url("/status/200")).send().await {
            Ok(resp) => {
                return Err(Failure(format!(
                    "a stalled handshake got {}",
                    resp.status()
                )))
            }
            Err(e) => e,
        };
        // libcurl doesn't say whether its connect timeout ran out in TCP or in TLS.
        ensure!(
            err.kind() == ErrorKind::Timeout(TimeoutPhase::Connect)
                && matches!(err.stage(), Some(Stage::Tls | Stage::Connect)),
            "expected a connect timeout in TLS, got {:?} at {:?}: {err}",
            err.kind(),
            err.stage()
        );
        ensure!(err.is_unsent(), "a stalled handshake counts as sent");
        rig.not_reused_afterwards().await
    })
    .await
}

/// The connection is reset before the server's half of the TLS handshake: a TLS error in the
/// TLS stage, nothing sent, and the next request gets a fresh connection.
pub async fn fault_chaos_reset_tls_handshake<T: Backend>(cx: Cx<T>) -> CaseResult {
    let cx = &cx;
    let chaos = Chaos::to_client(Fault::Reset { after: 0 });
    on_legs(Leg::tls(cx), |leg| async move {
        let rig = Rig::new(cx, leg, chaos, |b| b)?;
        let err = expect_error(
            rig.client.get(&rig.url("/status/200")).send().await,
            ErrorKind::Tls,
            Some(Stage::Tls),
        )?;
        ensure!(err.is_unsent(), "a reset handshake counts as sent");
        rig.not_reused_afterwards().await
    })
    .await
}
