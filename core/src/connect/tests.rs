//! The dialer under a virtual clock (attempts scripted in virtual time), and on real loopback
//! sockets with async-io.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{sort_addresses, Dialer, ATTEMPT_DELAY};
use crate::error::{find_io_in_chain, ErrorKind, Stage, TimeoutPhase};
use crate::tests::clock::{run, Clock, VirtualTimer};
use crate::transport::{Sleep, Timer};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// Address order
// ---------------------------------------------------------------------------------------------

#[test]
fn families_alternate_starting_with_the_first() {
    let v6 = |n: u8| addr(&format!("[::{n}]:443"));
    let v4 = |n: u8| addr(&format!("127.0.0.{n}:443"));
    assert_eq!(
        sort_addresses([v6(1), v6(2), v6(3), v4(1), v4(2)]),
        [v6(1), v4(1), v6(2), v4(2), v6(3)]
    );
    assert_eq!(
        sort_addresses([v4(1), v6(1), v6(2), v6(3), v4(2)]),
        [v4(1), v6(1), v4(2), v6(2), v6(3)]
    );
    assert_eq!(sort_addresses([v4(2), v4(1)]), [v4(2), v4(1)]);
    assert_eq!(sort_addresses([v4(1), v6(1), v4(1), v6(1)]), [v4(1), v6(1)]);
    assert_eq!(sort_addresses([]), []);
}

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    // Few distinct values, so duplicates happen.
    (any::<bool>(), 0u8..4).prop_map(|(v6, n)| {
        if v6 {
            addr(&format!("[::{n}]:80"))
        } else {
            addr(&format!("127.0.0.{n}:80"))
        }
    })
}

proptest! {
    #[test]
    fn sorting_interleaves_and_keeps_each_familys_order(
        addrs in proptest::collection::vec(any_addr(), 0..12),
    ) {
        let sorted = sort_addresses(addrs.clone());
        let mut unique = Vec::new();
        for a in &addrs {
            if !unique.contains(a) {
                unique.push(*a);
            }
        }
        // A permutation of the distinct addresses…
        prop_assert_eq!(sorted.len(), unique.len());
        prop_assert!(unique.iter().all(|a| sorted.contains(a)));
        // …starting with the resolver's first…
        prop_assert_eq!(sorted.first(), unique.first());
        // …keeping each family's order…
        for v6 in [false, true] {
            let family = |list: &[SocketAddr]| {
                list.iter().filter(|a| a.is_ipv6() == v6).copied().collect::<Vec<_>>()
            };
            prop_assert_eq!(family(&sorted), family(&unique));
        }
        // …and alternating while both families are left.
        let v6_left = |from: usize| sorted[from..].iter().filter(|a| a.is_ipv6()).count();
        for i in 1..sorted.len() {
            let both_left = v6_left(i - 1) > 0 && v6_left(i - 1) < sorted.len() - (i - 1);
            if both_left {
                prop_assert_ne!(sorted[i].is_ipv6(), sorted[i - 1].is_ipv6());
            }
        }
        // Sorting twice changes nothing.
        prop_assert_eq!(sort_addresses(sorted.clone()), sorted);
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted attempts
// ---------------------------------------------------------------------------------------------

/// What connecting to an address does, in virtual time.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Connects after this long.
    Connect(Duration),
    /// Is refused after this long.
    Refuse(Duration),
    /// Never answers.
    Hang,
}

/// The attempts a dialer made: address, start time, and whether the attempt was dropped
/// before it finished.
#[derive(Default, Debug)]
struct Log {
    started: Vec<(SocketAddr, Duration)>,
    dropped: Vec<SocketAddr>,
}

struct DropGuard {
    log: Arc<Mutex<Log>>,
    addr: SocketAddr,
    armed: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if self.armed {
            self.log.lock().unwrap().dropped.push(self.addr);
        }
    }
}

/// A fake TCP connect: the "stream" is the address it reached.
fn scripted(
    timer: &VirtualTimer,
    log: &Arc<Mutex<Log>>,
    scripts: &[(SocketAddr, Script)],
) -> impl FnMut(SocketAddr) -> Pin<Box<dyn Future<Output = io::Result<SocketAddr>>>> {
    let timer = timer.clone();
    let log = log.clone();
    let scripts = scripts.to_vec();
    move |addr| {
        let script = scripts
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, s)| *s)
            .expect("an address of the script");
        log.lock().unwrap().started.push((addr, timer.0.elapsed()));
        let guard = DropGuard {
            log: log.clone(),
            addr,
            armed: true,
        };
        let timer = timer.clone();
        Box::pin(async move {
            // Moved in whole, so it lives (and is dropped) with the attempt.
            let mut guard = guard;
            let out = match script {
                Script::Connect(after) => {
                    timer.sleep_for(after).await;
                    Ok(addr)
                }
                Script::Refuse(after) => {
                    timer.sleep_for(after).await;
                    Err(io::ErrorKind::ConnectionRefused.into())
                }
                Script::Hang => std::future::pending().await,
            };
            guard.armed = false;
            out
        })
    }
}

struct Setup {
    clock: Arc<Clock>,
    timer: VirtualTimer,
    log: Arc<Mutex<Log>>,
}

impl Setup {
    fn new() -> Self {
        let clock = Clock::new();
        Self {
            timer: VirtualTimer(clock.clone()),
            clock,
            log: Arc::default(),
        }
    }

    /// Dials the scripted addresses (in this order, before sorting) with a 10 s timeout.
    fn dial(&self, scripts: &[(SocketAddr, Script)]) -> Result<SocketAddr, crate::Error> {
        let dialer = Dialer::new(&self.timer, Duration::from_secs(10));
        let addrs = scripts.iter().map(|(a, _)| *a).collect();
        let connect = scripted(&self.timer, &self.log, scripts);
        run(&self.clock, dialer.connect(addrs, connect))
    }

    fn started(&self) -> Vec<(SocketAddr, Duration)> {
        self.log.lock().unwrap().started.clone()
    }

    fn dropped(&self) -> Vec<SocketAddr> {
        self.log.lock().unwrap().dropped.clone()
    }
}

#[test]
fn one_address_connects_without_waiting() {
    let t = Setup::new();
    let a = addr("127.0.0.1:80");
    assert_eq!(t.dial(&[(a, Script::Connect(3 * MS))]).unwrap(), a);
    assert_eq!(t.started(), [(a, Duration::ZERO)]);
    assert_eq!(t.clock.elapsed(), 3 * MS);
}

#[test]
fn a_silent_address_gets_company_after_the_attempt_delay() {
    let t = Setup::new();
    let (v6, v4) = (addr("[::1]:80"), addr("127.0.0.1:80"));
    let got = t.dial(&[(v6, Script::Hang), (v4, Script::Connect(10 * MS))]);
    assert_eq!(got.unwrap(), v4);
    assert_eq!(t.started(), [(v6, Duration::ZERO), (v4, ATTEMPT_DELAY)]);
    assert_eq!(t.clock.elapsed(), ATTEMPT_DELAY + 10 * MS);
    // The loser was dropped, not left running.
    assert_eq!(t.dropped(), [v6]);
}

#[test]
fn a_refused_address_moves_on_at_once() {
    let t = Setup::new();
    let (a, b, c) = (
        addr("127.0.0.1:1"),
        addr("127.0.0.2:1"),
        addr("127.0.0.3:1"),
    );
    let got = t.dial(&[
        (a, Script::Refuse(20 * MS)),
        (b, Script::Refuse(30 * MS)),
        (c, Script::Connect(MS)),
    ]);
    assert_eq!(got.unwrap(), c);
    assert_eq!(
        t.started(),
        [(a, Duration::ZERO), (b, 20 * MS), (c, 50 * MS)]
    );
}

#[test]
fn the_delay_restarts_from_an_attempt_started_by_a_failure() {
    let t = Setup::new();
    let (a, b, c, d) = (
        addr("127.0.0.1:1"),
        addr("127.0.0.2:1"),
        addr("127.0.0.3:1"),
        addr("127.0.0.4:1"),
    );
    let got = t.dial(&[
        (a, Script::Hang),
        (b, Script::Refuse(100 * MS)),
        (c, Script::Hang),
        (d, Script::Connect(MS)),
    ]);
    assert_eq!(got.unwrap(), d);
    // b starts at 250 and fails at 350, which starts c; d follows 250 ms after c.
    assert_eq!(
        t.started(),
        [
            (a, Duration::ZERO),
            (b, ATTEMPT_DELAY),
            (c, ATTEMPT_DELAY + 100 * MS),
            (d, 2 * ATTEMPT_DELAY + 100 * MS),
        ]
    );
    let mut dropped = t.dropped();
    dropped.sort();
    assert_eq!(dropped, [a, c]);
}

#[test]
fn a_slow_first_attempt_that_finishes_first_wins() {
    let t = Setup::new();
    let (a, b) = (addr("127.0.0.1:1"), addr("127.0.0.2:1"));
    let got = t.dial(&[
        (a, Script::Connect(300 * MS)),
        (b, Script::Connect(200 * MS)),
    ]);
    assert_eq!(got.unwrap(), a);
    assert_eq!(t.dropped(), [b]);
}

#[test]
fn attempts_follow_the_interleaved_order() {
    let t = Setup::new();
    let v6 = |n| addr(&format!("[::{n}]:80"));
    let v4 = |n| addr(&format!("127.0.0.{n}:80"));
    let scripts = [
        (v6(1), Script::Refuse(MS)),
        (v6(2), Script::Refuse(MS)),
        (v4(1), Script::Refuse(MS)),
        (v4(2), Script::Connect(MS)),
    ];
    assert_eq!(t.dial(&scripts).unwrap(), v4(2));
    let order: Vec<SocketAddr> = t.started().into_iter().map(|(a, _)| a).collect();
    assert_eq!(order, [v6(1), v4(1), v6(2), v4(2)]);
}

#[test]
fn when_every_attempt_fails_the_last_error_is_the_source() {
    let t = Setup::new();
    let (a, b) = (addr("127.0.0.1:1"), addr("127.0.0.2:1"));
    let err = t
        .dial(&[(a, Script::Refuse(MS)), (b, Script::Refuse(MS))])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(err.stage(), Some(Stage::Connect));
    assert!(err.is_unsent());
    let io = find_io_in_chain(&err).expect("the attempt's io error");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(t.clock.elapsed(), 2 * MS);
}

#[test]
fn the_connect_timeout_bounds_all_attempts() {
    let t = Setup::new();
    let addrs: Vec<_> = (1..=100)
        .map(|n| (addr(&format!("127.0.0.{n}:80")), Script::Hang))
        .collect();
    let err = t.dial(&addrs).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Connect));
    assert_eq!(err.stage(), Some(Stage::Connect));
    assert!(err.is_unsent());
    assert_eq!(t.clock.elapsed(), Duration::from_secs(10));
    // One attempt every 250 ms until the deadline (the one due at 10 s loses to it).
    assert_eq!(t.started().len(), 40);
    assert_eq!(t.dropped().len(), 40);
}

#[test]
fn no_address_is_a_connect_error() {
    let t = Setup::new();
    let err = t.dial(&[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.is_unsent());
}

// ---------------------------------------------------------------------------------------------
// Resolution and handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn an_ip_address_is_not_looked_up() {
    let t = Setup::new();
    let dialer = Dialer::new(&t.timer, Duration::from_secs(1));
    let lookup = async { panic!("the lookup was polled") };
    let addrs = run(
        &t.clock,
        dialer.resolve::<Vec<SocketAddr>, _>("::1", 443, lookup),
    );
    assert_eq!(addrs.unwrap(), [addr("[::1]:443")]);
}

#[test]
fn lookups_fail_in_the_dns_stage() {
    let t = Setup::new();
    let dialer = Dialer::new(&t.timer, Duration::from_secs(1));

    let found = run(
        &t.clock,
        dialer.resolve("example.test", 80, async {
            Ok(vec![addr("127.0.0.1:80"), addr("[::1]:80")])
        }),
    );
    assert_eq!(found.unwrap(), [addr("127.0.0.1:80"), addr("[::1]:80")]);

    let failed = run(
        &t.clock,
        dialer.resolve::<Vec<SocketAddr>, _>("example.test", 80, async {
            Err(io::Error::other("no such host"))
        }),
    )
    .unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::Connect);
    assert_eq!(failed.stage(), Some(Stage::Dns));
    assert!(failed.is_unsent());

    let nothing = run(
        &t.clock,
        dialer.resolve("example.test", 80, async { Ok(Vec::new()) }),
    )
    .unwrap_err();
    assert_eq!(nothing.kind(), ErrorKind::Connect);
    assert_eq!(nothing.stage(), Some(Stage::Dns));

    let timer = t.timer.clone();
    let slow = async move {
        timer.sleep_for(Duration::from_secs(5)).await;
        Ok(vec![addr("127.0.0.1:80")])
    };
    let late = run(&t.clock, dialer.resolve("example.test", 80, slow)).unwrap_err();
    assert_eq!(late.kind(), ErrorKind::Timeout(TimeoutPhase::Connect));
    assert_eq!(late.stage(), Some(Stage::Dns));
    assert_eq!(t.clock.elapsed(), Duration::from_secs(1));
}

/// Answers with 192.0.2.7 for `*.test`, fails for other names, and counts the lookups.
struct Counting(Arc<Mutex<usize>>);

impl crate::dns::Resolve for Counting {
    fn resolve(&self, host: &str) -> crate::dns::Resolving {
        *self.0.lock().unwrap() += 1;
        let known = host.ends_with(".test");
        Box::pin(async move {
            if known {
                Ok(vec![std::net::IpAddr::from([192, 0, 2, 7])])
            } else {
                Err("no such service".into())
            }
        })
    }
}

fn dns(configure: impl FnOnce(&mut crate::TransportConfig)) -> crate::dns::Dns {
    let mut config = crate::TransportConfig::default();
    configure(&mut config);
    crate::dns::Dns::new(&config)
}

#[test]
fn an_override_comes_before_the_resolver_and_the_system() {
    let t = Setup::new();
    let dialer = Dialer::new(&t.timer, Duration::from_secs(1));
    let lookups = Arc::new(Mutex::new(0));
    let counting = lookups.clone();
    let dns = dns(move |c| {
        c.dns_overrides
            .push(("api.test".into(), vec![addr("127.0.0.1:0")]));
        c.dns_resolver = Some(crate::dns::SharedResolver::new(Counting(counting)));
    });
    let system = || async { panic!("the system resolver was called") };
    let found = run(
        &t.clock,
        dialer.lookup::<Vec<SocketAddr>, _>(&dns, "api.test", 8443, system),
    );
    assert_eq!(found.unwrap(), [addr("127.0.0.1:8443")]);
    assert_eq!(*lookups.lock().unwrap(), 0);

    let resolved = run(
        &t.clock,
        dialer.lookup::<Vec<SocketAddr>, _>(&dns, "other.test", 80, system),
    );
    assert_eq!(resolved.unwrap(), [addr("192.0.2.7:80")]);
    assert_eq!(*lookups.lock().unwrap(), 1);

    let failed = run(
        &t.clock,
        dialer.lookup::<Vec<SocketAddr>, _>(&dns, "example.com", 80, system),
    )
    .unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::Connect);
    assert_eq!(failed.stage(), Some(Stage::Dns));
    assert!(
        format!("{failed:?}").contains("no such service"),
        "{failed:?}"
    );
}

#[test]
fn cached_answers_are_reused_until_their_ttl() {
    let t = Setup::new();
    let lookups = Arc::new(Mutex::new(0));
    let counting = lookups.clone();
    let dns = dns(move |c| {
        c.dns_resolver = Some(crate::dns::SharedResolver::new(Counting(counting)));
        c.dns_cache = Some(crate::dns::DnsCacheConfig {
            ttl: Duration::from_secs(10),
            max_entries: 4,
        });
    });
    let system = || async { panic!("the system resolver was called") };
    let lookup = |port| {
        let dialer = Dialer::new(&t.timer, Duration::from_secs(1));
        run(
            &t.clock,
            dialer.lookup::<Vec<SocketAddr>, _>(&dns, "api.test", port, system),
        )
        .unwrap()
    };
    assert_eq!(lookup(80), [addr("192.0.2.7:80")]);
    // The cache keeps addresses, not ports.
    assert_eq!(lookup(443), [addr("192.0.2.7:443")]);
    assert_eq!(*lookups.lock().unwrap(), 1);
    t.clock.advance(Duration::from_secs(10));
    assert_eq!(lookup(80), [addr("192.0.2.7:80")]);
    assert_eq!(*lookups.lock().unwrap(), 2);
}

#[test]
fn without_settings_the_system_resolver_answers() {
    let t = Setup::new();
    let dialer = Dialer::new(&t.timer, Duration::from_secs(1));
    let dns = dns(|_| {});
    let found = run(
        &t.clock,
        dialer.lookup(&dns, "example.test", 80, || async {
            Ok(vec![addr("[::1]:80")])
        }),
    );
    assert_eq!(found.unwrap(), [addr("[::1]:80")]);
}

#[test]
fn handshakes_fail_in_the_tls_stage() {
    let t = Setup::new();
    let dialer = Dialer::new(&t.timer, Duration::from_secs(1));
    let ok = run(&t.clock, dialer.handshake(async { Ok::<_, io::Error>(7) }));
    assert_eq!(ok.unwrap(), 7);

    let bad = run(
        &t.clock,
        dialer.handshake(async { Err::<(), _>(io::Error::other("bad certificate")) }),
    )
    .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Tls);
    assert_eq!(bad.stage(), Some(Stage::Tls));

    let stalled = run(
        &t.clock,
        dialer.handshake(std::future::pending::<Result<(), io::Error>>()),
    )
    .unwrap_err();
    assert_eq!(stalled.kind(), ErrorKind::Timeout(TimeoutPhase::Connect));
    assert_eq!(stalled.stage(), Some(Stage::Tls));
    assert!(stalled.is_unsent());
    assert_eq!(t.clock.elapsed(), Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// Proxy tunnels over a scripted stream
// ---------------------------------------------------------------------------------------------

/// A connection to a proxy that answers `answer` and then stalls (`stall`) or closes.
struct ScriptedProxy {
    answer: Vec<u8>,
    stall: bool,
    written: Vec<u8>,
}

impl ScriptedProxy {
    fn new(answer: &[u8], stall: bool) -> Self {
        Self {
            answer: answer.to_vec(),
            stall,
            written: Vec::new(),
        }
    }
}

impl futures_io::AsyncRead for ScriptedProxy {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        if self.answer.is_empty() && self.stall {
            return std::task::Poll::Pending;
        }
        let n = buf.len().min(self.answer.len());
        buf[..n].copy_from_slice(&self.answer[..n]);
        self.answer.drain(..n);
        std::task::Poll::Ready(Ok(n))
    }
}

impl futures_io::AsyncWrite for ScriptedProxy {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn tunnel_through(
    t: &Setup,
    proxy: &str,
    target: &str,
    io: &mut ScriptedProxy,
    dns: &crate::dns::Dns,
) -> Result<(), crate::Error> {
    let dialer = Dialer::new(&t.timer, Duration::from_secs(1));
    let proxy = crate::proxy::Proxy::all(proxy).unwrap();
    let target = crate::Origin::from_uri(&target.parse().unwrap()).unwrap();
    let no_system = || async { Err::<Vec<SocketAddr>, _>(io::Error::other("no system resolver")) };
    run(&t.clock, dialer.tunnel(io, &proxy, &target, dns, no_system))
}

#[test]
fn a_silent_proxy_times_out_in_the_proxy_stage() {
    let t = Setup::new();
    let mut io = ScriptedProxy::new(b"HTTP/1.1 200", true);
    let err = tunnel_through(&t, "http://p:1", "https://h/", &mut io, &dns(|_| {})).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Connect));
    assert_eq!(err.stage(), Some(Stage::Proxy));
    assert!(err.is_unsent());
    assert_eq!(t.clock.elapsed(), Duration::from_secs(1));
}

#[test]
fn a_proxy_closing_mid_handshake_is_a_connect_error() {
    let t = Setup::new();
    let mut io = ScriptedProxy::new(b"HTTP/1.1 200 OK\r\n", false);
    let err = tunnel_through(&t, "http://p:1", "https://h/", &mut io, &dns(|_| {})).unwrap_err();
    assert_eq!(
        (err.kind(), err.stage()),
        (ErrorKind::Connect, Some(Stage::Proxy))
    );
    let source = crate::find_source::<crate::machine::tunnel::TunnelError>(&err);
    assert_eq!(source, Some(&crate::machine::tunnel::TunnelError::Closed));
}

#[test]
fn socks5_resolves_the_target_and_socks5h_hands_over_the_name() {
    let t = Setup::new();
    let reply = [5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 80];
    let mut io = ScriptedProxy::new(&reply, false);
    tunnel_through(
        &t,
        "socks5h://p",
        "http://api.test:8080/",
        &mut io,
        &dns(|_| {}),
    )
    .unwrap();
    assert!(
        io.written.ends_with(b"\x03\x08api.test\x1f\x90"),
        "{:?}",
        io.written
    );

    // socks5: the name is resolved here, through keel's DNS settings (an override).
    let overridden = dns(|c| {
        c.dns_overrides
            .push(("api.test".into(), vec![addr("192.0.2.7:0")]));
    });
    let mut io = ScriptedProxy::new(&reply, false);
    tunnel_through(
        &t,
        "socks5://p",
        "http://api.test:8080/",
        &mut io,
        &overridden,
    )
    .unwrap();
    assert!(
        io.written.ends_with(&[1, 192, 0, 2, 7, 0x1f, 0x90]),
        "{:?}",
        io.written
    );

    // A name that doesn't resolve fails in the DNS stage, before the proxy is asked.
    let mut io = ScriptedProxy::new(&reply, false);
    let err =
        tunnel_through(&t, "socks5://p", "http://api.test/", &mut io, &dns(|_| {})).unwrap_err();
    assert_eq!(err.stage(), Some(Stage::Dns));
    assert!(
        io.written.is_empty(),
        "the proxy was asked: {:?}",
        io.written
    );
}

// ---------------------------------------------------------------------------------------------
// Real sockets on loopback
// ---------------------------------------------------------------------------------------------

mod loopback {
    use std::net::{TcpListener, TcpStream};

    use async_io::Async;
    use socket2::{Domain, Socket, Type};

    use super::*;

    /// async-io's timer, for the real tests.
    #[derive(Debug)]
    struct IoTimer;

    impl Timer for IoTimer {
        fn sleep_until(&self, deadline: Instant) -> Sleep {
            Box::pin(async move {
                async_io::Timer::at(deadline).await;
            })
        }
    }

    async fn tcp(addr: SocketAddr) -> io::Result<Async<TcpStream>> {
        Async::<TcpStream>::connect(addr).await
    }

    /// A port on `ip` that is bound but not listening: connecting to it is refused. Keep the
    /// socket for as long as the port must stay taken.
    fn refusing(ip: &str) -> io::Result<(Socket, SocketAddr)> {
        let at = SocketAddr::new(ip.parse().expect("an IP address"), 0);
        let socket = Socket::new(Domain::for_address(at), Type::STREAM, None)?;
        socket.bind(&at.into())?;
        let bound = socket.local_addr()?.as_socket().expect("an inet address");
        Ok((socket, bound))
    }

    fn dial(addrs: Vec<SocketAddr>, timeout: Duration) -> Result<Async<TcpStream>, crate::Error> {
        let timer = IoTimer;
        let dialer = Dialer::new(&timer, timeout);
        async_io::block_on(dialer.connect(addrs, tcp))
    }

    /// A timer whose sleeps never end: the dialer can then only move on when an attempt fails.
    #[derive(Debug)]
    struct NeverTimer;

    impl Timer for NeverTimer {
        fn sleep_until(&self, _: Instant) -> Sleep {
            Box::pin(std::future::pending())
        }
    }

    #[test]
    fn falls_back_from_a_refusing_port_to_a_listening_one() {
        let (_refusing, refused) = refusing("127.0.0.1").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listening = listener.local_addr().unwrap();
        let stream = dial(vec![refused, listening], Duration::from_secs(5)).unwrap();
        assert_eq!(stream.get_ref().peer_addr().unwrap(), listening);

        // A refusal moves on at once, without waiting for the attempt delay: with a timer that
        // never fires, the second address is reached all the same.
        let timer = NeverTimer;
        let dialer = Dialer::new(&timer, Duration::from_secs(5));
        let stream = async_io::block_on(dialer.connect(vec![refused, listening], tcp)).unwrap();
        assert_eq!(stream.get_ref().peer_addr().unwrap(), listening);
    }

    #[test]
    fn refused_everywhere_is_a_connect_error_with_the_io_error() {
        let (_a, a) = refusing("127.0.0.1").unwrap();
        let (_b, b) = refusing("127.0.0.1").unwrap();
        let err = dial(vec![a, b], Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connect);
        assert_eq!(err.stage(), Some(Stage::Connect));
        let io = find_io_in_chain(&err).expect("an io error");
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn falls_back_across_families() {
        // ::1 may be missing where IPv6 is off; then there is nothing to test.
        let Ok((_refusing, refused_v6)) = refusing("::1") else {
            eprintln!("no ::1 on this machine: skipped");
            return;
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listening = listener.local_addr().unwrap();
        let stream = dial(vec![refused_v6, listening], Duration::from_secs(5)).unwrap();
        assert_eq!(stream.get_ref().peer_addr().unwrap(), listening);
    }

    /// A listener on 127.0.0.1 whose accept queue is full, so the kernel drops further SYNs:
    /// a connect to it hangs (on Linux). `None` where that can't be arranged.
    fn blackhole() -> Option<(Socket, Vec<TcpStream>, SocketAddr)> {
        let at = addr("127.0.0.1:0");
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
        socket.bind(&at.into()).ok()?;
        socket.listen(0).ok()?;
        let bound = socket.local_addr().ok()?.as_socket()?;
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match TcpStream::connect_timeout(&bound, Duration::from_millis(200)) {
                Ok(stream) => fillers.push(stream),
                // The queue is full: connects now hang.
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Some((socket, fillers, bound))
                }
                Err(_) => return None,
            }
        }
        None
    }

    #[test]
    fn a_blackholed_address_costs_the_attempt_delay_not_the_timeout() {
        let Some((_socket, _fillers, silent)) = blackhole() else {
            eprintln!("no blackhole on loopback here: covered by the virtual-clock tests");
            return;
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listening = listener.local_addr().unwrap();
        let start = Instant::now();
        let stream = dial(vec![silent, listening], Duration::from_secs(5)).unwrap();
        let took = start.elapsed();
        assert_eq!(stream.get_ref().peer_addr().unwrap(), listening);
        assert!(took >= ATTEMPT_DELAY, "took {took:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");

        // Alone, it runs into the connect timeout.
        let start = Instant::now();
        let err = dial(vec![silent], Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Connect));
        assert_eq!(err.stage(), Some(Stage::Connect));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "took {took:?}");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
}

/// The connection permits: caps, order, hand-overs, wake-ups.
mod permits {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use super::super::{Acquired, OpenConnection, OpenConnections};
    use crate::error::{ErrorKind, Stage};
    use crate::transport::{Origin, Sleep, Timer};

    #[derive(Debug)]
    struct NeverTimer;
    impl Timer for NeverTimer {
        fn sleep_until(&self, _: std::time::Instant) -> Sleep {
            Box::pin(std::future::pending())
        }
    }

    #[derive(Default)]
    struct Woken(AtomicUsize);
    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    type Acquiring = Pin<Box<dyn Future<Output = Result<Acquired, crate::Error>>>>;

    /// A request waiting for a place, polled by hand.
    struct Req {
        fut: Acquiring,
        woken: Arc<Woken>,
    }

    impl Req {
        fn new(open: &OpenConnections, origin: &Origin) -> Self {
            let (open, origin) = (open.clone(), origin.clone());
            Self {
                fut: Box::pin(async move { open.acquire(&origin, &NeverTimer, None).await }),
                woken: Arc::default(),
            }
        }

        fn poll(&mut self) -> Poll<Result<Acquired, crate::Error>> {
            let waker = Waker::from(self.woken.clone());
            self.fut.as_mut().poll(&mut Context::from_waker(&waker))
        }

        fn woken(&self) -> usize {
            self.woken.0.load(Ordering::SeqCst)
        }

        fn permit(&mut self) -> OpenConnection {
            match self.poll() {
                Poll::Ready(Ok(Acquired::Permit(p))) => p,
                other => panic!("expected a permit, got {other:?}"),
            }
        }
    }

    fn origin(port: u16) -> Origin {
        Origin::from_uri(&format!("http://127.0.0.1:{port}").parse().unwrap()).unwrap()
    }

    #[test]
    fn the_per_origin_cap_holds_and_places_go_in_order() {
        let open = OpenConnections::with_caps(Some(2), None);
        let (a, b) = (origin(1), origin(2));
        let p1 = Req::new(&open, &a).permit();
        let _p2 = Req::new(&open, &a).permit();
        let mut third = Req::new(&open, &a);
        let mut fourth = Req::new(&open, &a);
        assert!(third.poll().is_pending());
        assert!(fourth.poll().is_pending());
        // Another origin has its own cap.
        let _b1 = Req::new(&open, &b).permit();
        assert_eq!(open.waiting(), 2);
        drop(p1);
        assert_eq!((third.woken(), fourth.woken()), (1, 0), "oldest first");
        // A newcomer can't take the place handed to the third.
        assert!(Req::new(&open, &a).poll().is_pending());
        let _p3 = third.permit();
        assert!(fourth.poll().is_pending());
        let mut counts = open.counts();
        counts.sort_by_key(|(o, _)| o.port());
        assert_eq!(counts, [(a, 2), (b, 1)]);
    }

    #[test]
    fn the_total_cap_holds_across_origins() {
        let open = OpenConnections::with_caps(None, Some(2));
        let p1 = Req::new(&open, &origin(1)).permit();
        let _p2 = Req::new(&open, &origin(2)).permit();
        assert!(open.is_full());
        let mut waiting = Req::new(&open, &origin(3));
        assert!(waiting.poll().is_pending());
        // An idle connection to origin 1 back in the pool: nobody wants origin 1, but origin 3
        // waits behind the total, so the pool is told to close it.
        assert!(!open.keeps_idle(&origin(1)));
        assert!(!open.returned(&origin(1)));
        drop(p1);
        assert_eq!(waiting.woken(), 1);
        let _p3 = waiting.permit();
        assert!(open.is_full());
    }

    /// Under both caps, with many requests of a full origin in front: a freed place passes
    /// over them to a later request whose origin has room, and a request told to retry or
    /// dropped while waiting no longer counts as one a place could go to.
    #[test]
    fn a_freed_place_passes_over_a_full_origins_queue_to_an_origin_with_room() {
        let open = OpenConnections::with_caps(Some(1), Some(2));
        let (a, b) = (origin(1), origin(2));
        let _pa = Req::new(&open, &a).permit();
        let extra = Req::new(&open, &origin(3)).permit();
        let mut for_a: Vec<Req> = (0..100).map(|_| Req::new(&open, &a)).collect();
        for req in &mut for_a {
            assert!(req.poll().is_pending());
        }
        let mut for_b = Req::new(&open, &b);
        assert!(for_b.poll().is_pending());
        // A pooled connection to `a` for the oldest: it stops waiting for a place.
        assert!(open.returned(&a));
        assert!(matches!(for_a[0].poll(), Poll::Ready(Ok(Acquired::Retry))));
        // A request for `a` gone from the middle of the queue.
        drop(for_a.remove(50));
        drop(extra);
        assert_eq!(for_b.woken(), 1, "the place went to the request for b");
        let _pb = for_b.permit();
        assert!(for_a[1..].iter().all(|req| req.woken() == 0));
        assert_eq!(open.waiting(), 98);
    }

    #[test]
    fn a_returned_connection_wakes_one_request_for_its_origin() {
        let open = OpenConnections::with_caps(Some(1), None);
        let a = origin(1);
        let _p = Req::new(&open, &a).permit();
        let mut first = Req::new(&open, &a);
        let mut second = Req::new(&open, &a);
        assert!(first.poll().is_pending() && second.poll().is_pending());
        assert!(open.keeps_idle(&a), "a request waits for it: keep it");
        assert!(open.returned(&a));
        assert_eq!((first.woken(), second.woken()), (1, 0));
        // The first is dropped before it looked: the news goes to the second.
        drop(first);
        assert_eq!(second.woken(), 1);
        assert!(matches!(second.poll(), Poll::Ready(Ok(Acquired::Retry))));
        // Nobody waits: keep it.
        assert!(open.keeps_idle(&a));
        assert!(!open.returned(&a));
    }

    #[test]
    fn a_place_handed_to_a_dropped_request_passes_on() {
        let open = OpenConnections::with_caps(Some(1), None);
        let a = origin(1);
        let p = Req::new(&open, &a).permit();
        let mut first = Req::new(&open, &a);
        let mut second = Req::new(&open, &a);
        assert!(first.poll().is_pending() && second.poll().is_pending());
        drop(p);
        assert_eq!(first.woken(), 1);
        drop(first);
        assert_eq!(second.woken(), 1);
        let _p = second.permit();
        assert_eq!(open.counts(), [(a, 1)]);
        assert_eq!(open.waiting(), 0);
    }

    #[test]
    fn closing_fails_the_waiting_requests() {
        let open = OpenConnections::with_caps(Some(1), None);
        let a = origin(1);
        let _p = Req::new(&open, &a).permit();
        let mut waiting = Req::new(&open, &a);
        assert!(waiting.poll().is_pending());
        open.close();
        assert_eq!(waiting.woken(), 1);
        let Poll::Ready(Err(err)) = waiting.poll() else {
            panic!("expected an error");
        };
        assert_eq!(
            (err.kind(), err.stage()),
            (ErrorKind::Connect, Some(Stage::Pool))
        );
        assert_eq!(open.waiting(), 0);
    }

    #[test]
    fn a_shared_connection_wakes_every_request_for_its_origin() {
        let open = OpenConnections::with_caps(Some(1), None);
        let a = origin(1);
        let _p = Req::new(&open, &a).permit();
        let mut reqs: Vec<Req> = (0..3).map(|_| Req::new(&open, &a)).collect();
        for r in &mut reqs {
            assert!(r.poll().is_pending());
        }
        open.shared(&a);
        for r in &mut reqs {
            assert!(matches!(r.poll(), Poll::Ready(Ok(Acquired::Retry))));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Drops on a timeout
// ---------------------------------------------------------------------------------------------

#[test]
fn on_timeout_runs_only_when_dropped_on_a_timeout_and_in_a_guarded_body() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{abandoned_on_timeout, on_timeout, GuardedBody, OnTimeout};

    let runs = Arc::new(AtomicUsize::new(0));
    let guard = || {
        let runs = runs.clone();
        OnTimeout::new(move || {
            runs.fetch_add(1, Ordering::SeqCst);
        })
    };
    drop(guard());
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a plain drop");
    let g = guard();
    on_timeout(|| drop(g));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a drop on a timeout");
    let body = GuardedBody::new(http_body_util::Empty::<bytes::Bytes>::new(), guard());
    on_timeout(|| drop(body));
    assert_eq!(runs.load(Ordering::SeqCst), 2, "inside a body");
    assert!(!abandoned_on_timeout(), "the flag is down again afterwards");
}
