use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

const OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

fn connect() -> Tunnel {
    let mut t = Tunnel::http_connect("example.com", 443, None);
    let _ = t.poll_transmit();
    t
}

#[test]
fn connect_writes_authority_form_with_credentials() {
    let auth = HeaderValue::from_static("Basic dTpw");
    let mut t = Tunnel::http_connect("::1", 8443, Some(&auth));
    assert_eq!(
        t.poll_transmit().unwrap(),
        b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
    );
    assert_eq!(t.poll_transmit(), None, "the request is handed out once");
}

#[test]
fn connect_accepts_any_2xx_and_bare_newlines() {
    for answer in [
        &b"HTTP/1.0 200 OK\n\n"[..],
        b"HTTP/1.1 204\r\nVia: proxy\r\n\r\n",
        b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\n",
    ] {
        let mut t = connect();
        t.handle_read(answer).unwrap();
        assert!(t.is_established(), "{answer:?}");
        assert_eq!(t.read_limit(), 0);
    }
}

#[test]
fn connect_refusals_carry_the_status() {
    for (answer, code) in [
        (
            &b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\nbody"
                [..],
            407,
        ),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", 502),
        (b"HTTP/1.1 403 \r\n\r\n", 403),
    ] {
        let err = connect().handle_read(answer).unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::from_u16(code).unwrap()));
    }
    let err = connect()
        .handle_read(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
        .unwrap_err();
    assert_eq!(err.to_string(), "proxy answered 502 Bad Gateway");
}

#[test]
fn connect_refuses_what_is_not_http() {
    for answer in [
        &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
    ] {
        let err = connect().handle_read(answer).unwrap_err();
        assert!(
            matches!(err, TunnelError::Malformed(_)),
            "{answer:?}: {err:?}"
        );
    }
}

#[test]
fn connect_refuses_early_data_and_huge_heads() {
    let mut early = OK.to_vec();
    early.extend_from_slice(b"\x16\x03\x01");
    assert_eq!(connect().handle_read(&early), Err(TunnelError::EarlyData));

    let mut t = connect();
    t.handle_read(b"HTTP/1.1 200 OK\r\n").unwrap();
    let filler = vec![b'a'; 1024];
    let mut result = Ok(());
    for _ in 0..20 {
        result = t.handle_read(&filler);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(TunnelError::HeadTooLarge));
}

#[test]
fn connect_needs_the_whole_head() {
    let mut t = connect();
    t.handle_read(b"HTTP/1.1 200 OK\r\n").unwrap();
    assert!(!t.is_established());
    assert_eq!(t.handle_eof(), Err(TunnelError::Closed));
    t.handle_read(b"\r\n").unwrap();
    assert!(t.is_established());
    assert_eq!(t.handle_eof(), Ok(()));
}

/// Drives a SOCKS5 handshake against scripted answers, checking what the client writes.
fn socks(target: SocksTarget, creds: Option<(&str, &str)>) -> Tunnel {
    Tunnel::socks5(target, 443, creds).unwrap()
}

#[test]
fn socks5_without_credentials() {
    let mut t = socks(
        SocksTarget::Ip(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))),
        None,
    );
    assert_eq!(t.poll_transmit().unwrap(), [5, 1, 0]);
    assert_eq!(t.read_limit(), 2);
    t.handle_read(&[5, 0]).unwrap();
    assert_eq!(
        t.poll_transmit().unwrap(),
        [5, 1, 0, 1, 127, 0, 0, 1, 1, 187]
    );
    assert_eq!(t.read_limit(), 4);
    t.handle_read(&[5, 0, 0, 1]).unwrap();
    assert_eq!(t.read_limit(), 6, "an IPv4 bound address and a port follow");
    t.handle_read(&[10, 0, 0, 1, 0, 80]).unwrap();
    assert!(t.is_established());
    assert_eq!(t.read_limit(), 0);
}

#[test]
fn socks5_with_credentials_and_a_name() {
    let mut t = socks(SocksTarget::Name("example.com".into()), Some(("u", "pw")));
    assert_eq!(t.poll_transmit().unwrap(), [5, 2, 0, 2]);
    t.handle_read(&[5, 2]).unwrap();
    assert_eq!(t.poll_transmit().unwrap(), [1, 1, b'u', 2, b'p', b'w']);
    t.handle_read(&[1, 0]).unwrap();
    let mut request = vec![5, 1, 0, 3, 11];
    request.extend_from_slice(b"example.com");
    request.extend_from_slice(&[1, 187]);
    assert_eq!(t.poll_transmit().unwrap(), request);
    // A domain-name bound address, read in pieces.
    t.handle_read(&[5, 0, 0, 3]).unwrap();
    assert_eq!(t.read_limit(), 1);
    t.handle_read(&[2]).unwrap();
    assert_eq!(t.read_limit(), 4);
    t.handle_read(b"ab\x00\x50").unwrap();
    assert!(t.is_established());
}

#[test]
fn socks5_ipv6_target() {
    let mut t = socks(SocksTarget::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), None);
    let _ = t.poll_transmit();
    t.handle_read(&[5, 0]).unwrap();
    let request = t.poll_transmit().unwrap();
    assert_eq!(&request[..4], [5, 1, 0, 4]);
    assert_eq!(request.len(), 4 + 16 + 2);
}

#[test]
fn socks5_failures() {
    let ip = || SocksTarget::Ip(Ipv4Addr::LOCALHOST.into());
    assert_eq!(
        socks(ip(), None).handle_read(&[5, 0xff]),
        Err(TunnelError::NoAcceptableMethod)
    );
    assert!(matches!(
        socks(ip(), None).handle_read(&[4, 0]),
        Err(TunnelError::Malformed(_))
    ));
    assert!(
        matches!(
            socks(ip(), None).handle_read(&[5, 2]),
            Err(TunnelError::Malformed(_))
        ),
        "user/password wasn't offered without credentials"
    );
    assert_eq!(
        socks(ip(), Some(("u", "p"))).handle_read(&[5, 2, 1, 1]),
        Err(TunnelError::AuthFailed)
    );
    let err = socks(ip(), None).handle_read(&[5, 0, 5, 5]).unwrap_err();
    assert_eq!(err, TunnelError::SocksReply { code: 5 });
    assert_eq!(err.to_string(), "socks5 proxy failed: connection refused");
    assert!(matches!(
        socks(ip(), None).handle_read(&[5, 0, 5, 0, 0, 9]),
        Err(TunnelError::Malformed(_))
    ));
    assert_eq!(
        socks(ip(), None).handle_read(&[5, 0, 5, 0, 0, 1, 1, 2, 3, 4, 0, 80, 0]),
        Err(TunnelError::EarlyData)
    );
}

#[test]
fn socks5_refuses_what_it_cannot_write() {
    let long = "a".repeat(256);
    assert_eq!(
        Tunnel::socks5(SocksTarget::Name(long.clone()), 1, None).unwrap_err(),
        TunnelError::TooLong("the host name")
    );
    assert!(Tunnel::socks5(SocksTarget::Name(String::new()), 1, None).is_err());
    assert_eq!(
        Tunnel::socks5(SocksTarget::Name("h".into()), 1, Some(("u", &long))).unwrap_err(),
        TunnelError::TooLong("the password")
    );
}

/// Feeds `input` to `t` in pieces no longer than `read_limit`, splitting at `cuts`.
fn feed(t: &mut Tunnel, input: &[u8], cuts: &[usize]) -> Result<(), TunnelError> {
    let mut rest = input;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let limit = t.read_limit().max(1);
        let n = (*cuts.next().unwrap_or(&1)).clamp(1, limit).min(rest.len());
        t.handle_read(&rest[..n])?;
        let _ = t.poll_transmit();
        rest = &rest[n..];
    }
    Ok(())
}

proptest! {
    /// Whatever a proxy sends, the machines answer with a value, never a panic.
    #[test]
    fn any_answer_is_handled(input in proptest::collection::vec(any::<u8>(), 0..600), cuts in proptest::collection::vec(1usize..40, 1..8), socks_first in any::<bool>()) {
        let mut t = if socks_first {
            socks(SocksTarget::Name("h".into()), Some(("u", "p")))
        } else {
            connect()
        };
        let _ = t.poll_transmit();
        let _ = feed(&mut t, &input, &cuts);
        let _ = t.handle_eof();
    }

    /// The CONNECT answer can arrive in any pieces: the outcome is the same.
    #[test]
    fn connect_outcome_is_independent_of_chunking(code in 100u16..600, cuts in proptest::collection::vec(1usize..12, 1..6)) {
        let answer = format!("HTTP/1.1 {code} Whatever\r\nX-A: b\r\n\r\n");
        let mut whole = connect();
        let expected = whole.handle_read(answer.as_bytes());
        let mut pieces = connect();
        let got = feed(&mut pieces, answer.as_bytes(), &cuts);
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(pieces.is_established(), (200..300).contains(&code));
    }

    /// A SOCKS5 reply in any pieces establishes the tunnel, and read_limit never asks for a
    /// byte past it.
    #[test]
    fn socks5_reads_exactly_its_reply(name in "[a-z]{1,40}", cuts in proptest::collection::vec(1usize..9, 1..6)) {
        let mut t = socks(SocksTarget::Ip(Ipv4Addr::LOCALHOST.into()), None);
        let _ = t.poll_transmit();
        let mut answer = vec![5, 0, 5, 0, 0, 3, name.len() as u8];
        answer.extend_from_slice(name.as_bytes());
        answer.extend_from_slice(&[0, 80]);
        feed(&mut t, &answer, &cuts).unwrap();
        prop_assert!(t.is_established());
        prop_assert_eq!(t.read_limit(), 0);
    }
}
