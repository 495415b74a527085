use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

#[test]
fn proxy_urls() {
    let p = Proxy::all("proxy.example:3128").unwrap();
    assert_eq!(
        (p.scheme(), p.host(), p.port()),
        (ProxyScheme::Http, "proxy.example", 3128)
    );
    assert_eq!(Proxy::all("http://P.example/").unwrap().port(), 80);
    assert_eq!(Proxy::all("HTTPS://p").unwrap().port(), 443);
    assert_eq!(Proxy::all("socks5://p").unwrap().port(), 1080);
    let v6 = Proxy::all("http://[::1]:8080").unwrap();
    assert_eq!((v6.host(), v6.port()), ("::1", 8080));
    assert_eq!(v6.to_string(), "http://[::1]:8080");
    for bad in [
        "ftp://p",
        "socks4://p",
        "http://",
        "http://p:99999",
        "http://p:x",
        "http://a b",
    ] {
        let err = Proxy::all(bad).unwrap_err();
        assert_eq!(
            (err.kind(), err.setting()),
            (ErrorKind::Config, Some("proxy")),
            "{bad}"
        );
    }
}

#[test]
fn credentials_come_from_the_url_or_the_setter_and_never_print() {
    let p = Proxy::all("http://us%3Aer:pa%20ss@proxy:1").unwrap();
    assert_eq!(p.credentials(), Some(("us:er", "pa ss")));
    assert!(p.basic_header().unwrap().is_sensitive());
    assert_eq!(
        p.to_url_with_credentials(),
        "http://us%3Aer:pa%20ss@proxy:1"
    );
    let p = p.basic_auth("alice", "hunter2");
    assert_eq!(p.basic_header().unwrap(), "Basic YWxpY2U6aHVudGVyMg==");
    let config = ProxyConfig::new().proxy(p.clone());
    for shown in [format!("{p}"), format!("{p:?}"), format!("{config:?}")] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(shown.contains("REDACTED:REDACTED@proxy:1"), "{shown}");
    }
}

#[test]
fn env_errors_name_the_variable_not_the_value() {
    let env = |name: &str| (name == "https_proxy").then(|| "gopher://u:hunter2@p".to_owned());
    let err = ProxyConfig::from_vars(env).unwrap_err();
    assert_eq!(err.setting(), Some("proxy_from_env"));
    let chain = format!("{err} {err:?} {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("https_proxy"), "{chain}");
    assert!(!chain.contains("hunter2"), "{chain}");
}

#[test]
fn env_precedence() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let c = ProxyConfig::from_vars(vars(&[
        ("all_proxy", "socks5h://all:1"),
        ("ALL_PROXY", "http://upper-all:1"),
        ("https_proxy", ""),
        ("HTTPS_PROXY", "http://upper-https:1"),
        ("NO_PROXY", "skip.example"),
    ]))
    .unwrap();
    assert_eq!(
        c.select(false, "h", 80).unwrap().host(),
        "all",
        "lowercase wins"
    );
    assert_eq!(
        c.select(true, "h", 443).unwrap().host(),
        "upper-https",
        "an empty value counts as unset"
    );
    assert!(c.select(true, "a.skip.example", 443).is_none());

    let c = ProxyConfig::from_vars(vars(&[("HTTP_PROXY", "http://httpoxy:1")])).unwrap();
    assert!(c.is_empty(), "uppercase HTTP_PROXY is never read");
    let c =
        ProxyConfig::from_vars(vars(&[("http_proxy", "http://p:1"), ("no_proxy", "*")])).unwrap();
    assert!(c.select(false, "h", 80).is_none());
}

#[test]
fn selection_by_scheme() {
    let c = ProxyConfig::new()
        .proxy(Proxy::http("http://plain:1").unwrap())
        .proxy(Proxy::https("http://tunnel:1").unwrap());
    assert_eq!(c.select(false, "h", 80).unwrap().host(), "plain");
    assert_eq!(c.select(true, "h", 443).unwrap().host(), "tunnel");
    let https_only = ProxyConfig::new().proxy(Proxy::https("http://t:1").unwrap());
    assert!(https_only.select(false, "h", 80).is_none());
    assert!(ProxyConfig::new().select(true, "h", 443).is_none());
}

#[test]
fn forwarded_requests_carry_credentials_only_to_http_proxies() {
    let origin = |s: &str| Origin::from_uri(&s.parse().unwrap()).unwrap();
    let c = ProxyConfig::new().proxy(Proxy::all("http://u:p@proxy:1").unwrap());
    let forwarder = c.forwarder(&origin("http://h/")).unwrap();
    assert!(forwarder.basic_header().is_some());
    assert!(
        c.forwarder(&origin("https://h/")).is_none(),
        "tunnelled: sent in the CONNECT"
    );
    let socks = ProxyConfig::new().proxy(Proxy::all("socks5://u:p@proxy:1").unwrap());
    assert!(socks.forwarder(&origin("http://h/")).is_none());
    let bypassed = c.no_proxy(NoProxy::parse("h"));
    assert!(bypassed.forwarder(&origin("http://h/")).is_none());
}

#[test]
fn a_407_is_a_proxy_error_with_its_status() {
    let err = check_forwarded(StatusCode::PROXY_AUTHENTICATION_REQUIRED).unwrap_err();
    assert_eq!(err.stage(), Some(Stage::Proxy));
    assert_eq!(
        err.kind(),
        ErrorKind::Status(StatusCode::PROXY_AUTHENTICATION_REQUIRED)
    );
    assert!(err.is_unsent());
    assert!(
        !err.is_retryable(),
        "new credentials are needed, not another attempt"
    );
    let gateway = tunnel_error(TunnelError::Refused {
        status: StatusCode::BAD_GATEWAY,
    });
    assert!(
        gateway.is_retryable(),
        "the proxy couldn't reach the target this time"
    );
    let closed = tunnel_error(TunnelError::Closed);
    assert_eq!(
        (closed.kind(), closed.stage()),
        (ErrorKind::Connect, Some(Stage::Proxy))
    );
    let tunnel = crate::find_source::<TunnelError>(&err).unwrap();
    assert_eq!(
        tunnel.status(),
        Some(StatusCode::PROXY_AUTHENTICATION_REQUIRED)
    );
    assert!(check_forwarded(StatusCode::BAD_GATEWAY).is_ok());
}

#[test]
fn no_proxy_entries() {
    let n = NoProxy::parse(
        " , localhost:8080 ,*.wild.example, 127.0.0.1, 10.0.0.0/33, [fe80::1]:1, x:bad",
    );
    assert!(n.matches("localhost", 8080));
    assert!(!n.matches("localhost", 80));
    assert!(n.matches("a.wild.example", 1) && n.matches("wild.example", 1));
    assert!(n.matches("127.0.0.1", 1) && !n.matches("127.0.0.2", 1));
    assert!(!n.matches("10.0.0.1", 1), "a /33 is skipped");
    assert!(n.matches("[fe80::1]", 1) && !n.matches("fe80::1", 2));
    assert!(!n.matches("x", 1), "an entry with a bad port is skipped");
    assert!(
        !n.matches("127.0.0.1.nip.io", 1),
        "IP entries don't match names"
    );
    assert!(NoProxy::parse("").is_empty() && NoProxy::parse(" , ").is_empty());
    assert!(NoProxy::parse("::/0").matches("2001:db8::1", 1));
    assert!(
        !NoProxy::parse("::/0").matches("10.0.0.1", 1),
        "families don't mix"
    );
}

fn label() -> impl Strategy<Value = String> {
    // Starting with a letter: an all-numeric name would be an IPv4 address.
    "[a-z]([a-z0-9-]{0,8}[a-z0-9])?"
}

fn domain() -> impl Strategy<Value = String> {
    proptest::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
}

/// The reference: the first `prefix` bits of two addresses, compared bit by bit.
fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    (0..usize::from(prefix)).all(|i| (a[i / 8] >> (7 - i % 8)) & 1 == (b[i / 8] >> (7 - i % 8)) & 1)
}

proptest! {
    #[test]
    fn a_star_matches_everything(host in domain(), port in any::<u16>(), other in domain()) {
        let list = format!("{other},*");
        prop_assert!(NoProxy::parse(&list).matches(&host, port));
    }

    #[test]
    fn a_domain_matches_itself_and_names_under_it(d in domain(), sub in label(), port in any::<u16>(), dot in any::<bool>(), upper in any::<bool>()) {
        let entry = if dot { format!(".{d}") } else { d.clone() };
        let entry = if upper { entry.to_ascii_uppercase() } else { entry };
        let n = NoProxy::parse(&entry);
        prop_assert!(n.matches(&d, port));
        let (under, under_dot) = (format!("{sub}.{d}"), format!("{sub}.{d}."));
        prop_assert!(n.matches(&under, port));
        prop_assert!(n.matches(&under_dot, port));
        prop_assert!(n.matches(&d.to_ascii_uppercase(), port));
    }

    #[test]
    fn a_domain_never_matches_across_a_label(d in domain(), prefix in label()) {
        // `prefix` glued to `d` without a dot is a different name.
        let n = NoProxy::parse(&d);
        let (glued, longer) = (format!("{prefix}{d}"), format!("{prefix}.{d}"));
        prop_assert!(!n.matches(&glued, 80));
        // Nor does a name match a longer entry that ends like it.
        prop_assert!(!NoProxy::parse(&longer).matches(&d, 80));
    }

    #[test]
    fn a_port_restricts_the_entry(d in domain(), port in 1u16.., other in 1u16..) {
        let n = NoProxy::parse(&format!("{d}:{port}"));
        prop_assert!(n.matches(&d, port));
        prop_assert_eq!(n.matches(&d, other), other == port);
    }

    #[test]
    fn ipv4_cidr_is_a_bit_prefix(net in any::<[u8; 4]>(), ip in any::<[u8; 4]>(), prefix in 0u8..=32) {
        let n = NoProxy::parse(&format!("{}/{prefix}", Ipv4Addr::from(net)));
        prop_assert_eq!(n.matches(&Ipv4Addr::from(ip).to_string(), 1), same_prefix(&net, &ip, prefix));
        prop_assert!(n.matches(&Ipv4Addr::from(net).to_string(), 1));
    }

    #[test]
    fn ipv6_cidr_is_a_bit_prefix(net in any::<[u8; 16]>(), ip in any::<[u8; 16]>(), prefix in 0u8..=128, bracketed in any::<bool>()) {
        let host = Ipv6Addr::from(ip).to_string();
        let host = if bracketed { format!("[{host}]") } else { host };
        let n = NoProxy::parse(&format!("{}/{prefix}", Ipv6Addr::from(net)));
        prop_assert_eq!(n.matches(&host, 1), same_prefix(&net, &ip, prefix));
    }

    /// A list matches exactly when one of its entries does, in any order, with any spacing.
    #[test]
    fn a_list_is_the_union_of_its_entries(entries in proptest::collection::vec(domain(), 0..5), host in domain(), port in any::<u16>(), spaces in 0usize..3) {
        let sep = format!("{},{}", " ".repeat(spaces), " ".repeat(spaces));
        let any = entries.iter().any(|e| NoProxy::parse(e).matches(&host, port));
        prop_assert_eq!(NoProxy::parse(&entries.join(&sep)).matches(&host, port), any);
        let mut reversed = entries.clone();
        reversed.reverse();
        prop_assert_eq!(NoProxy::parse(&reversed.join(",")).matches(&host, port), any);
    }

    /// Parsing never panics, whatever NO_PROXY holds.
    #[test]
    fn any_list_parses(list in ".{0,80}", host in ".{0,30}", port in any::<u16>()) {
        let _ = NoProxy::parse(&list).matches(&host, port);
        let _ = Proxy::all(&list);
    }
}
