//! Proxies: which requests go through which proxy, and with which credentials.
//!
//! A client sends every request directly unless it is given a proxy, with
//! [`ClientBuilder::proxy`](crate::ClientBuilder::proxy) or
//! [`ClientBuilder::proxy_from_env`](crate::ClientBuilder::proxy_from_env). **The environment
//! is not read by default**: `HTTP_PROXY` and friends apply only to a client that asks for them,
//! so a library built on keel never picks up a proxy its user didn't choose.
//!
//! This module is pure: [`ProxyConfig::select`] says, for a target's scheme, host and port,
//! which [`Proxy`] to use (or none, when [`NoProxy`] matches the host), and the backends carry it
//! out:
//!
//! - an `http` target through an `http://` proxy: the request goes to the proxy in absolute
//!   form (`GET http://host/path`), with `Proxy-Authorization` when the proxy has credentials;
//! - an `https` target through an `http://` proxy: a `CONNECT host:443` tunnel
//!   ([`machine::tunnel`](crate::machine::tunnel)), then TLS to the target inside it;
//! - any target through a `socks5://` proxy (the client resolves the target) or a `socks5h://`
//!   one (the proxy resolves it): a SOCKS5 tunnel, with user/password authentication when the
//!   proxy has credentials;
//! - an `https://` proxy is spoken to over TLS, where the backend can (see the capabilities).
//!
//! A failure talking to the proxy (it can't be reached, it refuses the credentials with
//! `407`, it can't reach the target, it answers garbage) is an error in
//! [`Stage::Proxy`], whose source is a
//! [`TunnelError`] carrying the proxy's status when it
//! gave one. Nothing of the request reached the target then. An HTTP proxy's refusal has the
//! kind [`ErrorKind::Status`] with the proxy's status (so a `407` is not retried, a `502` is);
//! every other proxy failure is [`ErrorKind::Connect`] (see [`tunnel_error`]).
//!
//! Connections are pooled per target origin, and a transport's proxy settings are fixed when it
//! is built, so one origin is always reached the same way: a proxied connection and a direct one
//! never share a pool entry.
//!
//! # Credentials
//!
//! A proxy's user and password come from its URL (`http://user:pass@proxy:3128`,
//! percent-decoded) or from [`Proxy::basic_auth`]. They never print: `Debug` and `Display` of a
//! [`Proxy`] and a [`ProxyConfig`] show them as `REDACTED:REDACTED@`, as
//! [`redact::url`](crate::redact::url) does for request URLs, and errors about a proxy URL never
//! repeat it.
//!
//! # The environment ([`ProxyConfig::from_env`])
//!
//! | variable | used for | note |
//! |---|---|---|
//! | `http_proxy` | `http` targets | lowercase only, as curl does: see below |
//! | `https_proxy`, `HTTPS_PROXY` | `https` targets | |
//! | `all_proxy`, `ALL_PROXY` | targets with no proxy of their own | |
//! | `no_proxy`, `NO_PROXY` | hosts reached directly | see [`NoProxy`] |
//!
//! The lowercase name wins when both are set; an empty value counts as unset. A value without
//! a scheme is an `http://` proxy. Uppercase `HTTP_PROXY` is ignored on purpose ("httpoxy",
//! CVE-2016-5385): a CGI server puts a request's `Proxy:` header in the environment as
//! `HTTP_PROXY`, so honouring it would let any caller of a CGI program pick its proxy.
//!
//! ```
//! use keel_core::proxy::{NoProxy, Proxy, ProxyConfig};
//!
//! let config = ProxyConfig::new()
//!     .proxy(Proxy::all("http://user:secret@proxy.internal:3128")?)
//!     .no_proxy(NoProxy::parse("localhost, .internal, 10.0.0.0/8"));
//! let via = config.select(true, "api.example.com", 443).unwrap();
//! assert_eq!(via.host(), "proxy.internal");
//! assert_eq!(via.to_string(), "http://REDACTED:REDACTED@proxy.internal:3128");
//! assert!(config.select(true, "db.internal", 5432).is_none());
//! assert!(config.select(false, "10.1.2.3", 80).is_none());
//! # Ok::<(), keel_core::Error>(())
//! ```

use std::fmt;
use std::net::IpAddr;

use http::{HeaderValue, StatusCode};

use crate::client::url::percent_decode;
use crate::error::{Error, ErrorKind, Stage};
use crate::machine::tunnel::TunnelError;
use crate::transport::Origin;

/// How the client talks to a proxy.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyScheme {
    /// `http://`: plain HTTP to the proxy (default port 80).
    Http,
    /// `https://`: TLS to the proxy, then HTTP (default port 443).
    Https,
    /// `socks5://`: SOCKS5, the client resolving the target (default port 1080).
    Socks5,
    /// `socks5h://`: SOCKS5, the proxy resolving the target (default port 1080).
    Socks5h,
}

impl ProxyScheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }

    /// Whether this is one of the SOCKS5 schemes.
    pub fn is_socks(self) -> bool {
        matches!(self, ProxyScheme::Socks5 | ProxyScheme::Socks5h)
    }
}

/// Which targets a [`Proxy`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Targets {
    Http,
    Https,
    All,
}

/// A proxy: its scheme, host, port and optional credentials, and the targets it is for.
///
/// ```
/// use keel_core::proxy::{Proxy, ProxyScheme};
///
/// let proxy = Proxy::https("socks5h://alice:p%40ss@127.0.0.1:1080")?;
/// assert_eq!(proxy.scheme(), ProxyScheme::Socks5h);
/// assert_eq!((proxy.host(), proxy.port()), ("127.0.0.1", 1080));
/// assert_eq!(proxy.credentials(), Some(("alice", "p@ss")));
/// assert_eq!(format!("{proxy:?}"), r#"Proxy("socks5h://REDACTED:REDACTED@127.0.0.1:1080", https targets)"#);
///
/// let err = Proxy::all("ftp://alice:hunter2@proxy").unwrap_err();
/// assert_eq!(err.setting(), Some("proxy"));
/// assert!(!format!("{err} {err:?}").contains("hunter2"));
/// # Ok::<(), keel_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    scheme: ProxyScheme,
    /// Lowercase, without IPv6 brackets.
    host: Box<str>,
    port: u16,
    credentials: Option<Credentials>,
    targets: Targets,
}

#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    user: String,
    password: String,
    /// `Basic base64(user:password)`, marked sensitive.
    header: HeaderValue,
}

impl Proxy {
    /// A proxy for `http` targets. `url` is `scheme://[user:password@]host[:port]`, with
    /// `http`, `https`, `socks5` or `socks5h` as its scheme (`http` when it has none).
    ///
    /// A URL that doesn't parse, or has another scheme, is [`ErrorKind::Config`] naming
    /// `proxy`; the error doesn't repeat the URL.
    pub fn http(url: &str) -> Result<Self, Error> {
        Self::parse(url, Targets::Http)
    }

    /// A proxy for `https` targets (reached through a `CONNECT` or SOCKS5 tunnel); see
    /// [`Proxy::http`] for `url`.
    pub fn https(url: &str) -> Result<Self, Error> {
        Self::parse(url, Targets::Https)
    }

    /// A proxy for every target; see [`Proxy::http`] for `url`.
    pub fn all(url: &str) -> Result<Self, Error> {
        Self::parse(url, Targets::All)
    }

    fn parse(input: &str, targets: Targets) -> Result<Self, Error> {
        parse_url(input, targets).map_err(|why| {
            Error::new(ErrorKind::Config)
                .with_setting("proxy")
                .with_source(why)
        })
    }

    /// Sets the credentials, replacing any from the URL. Sent as `Proxy-Authorization: Basic`
    /// to an HTTP proxy, and as RFC 1929 user/password to a SOCKS5 one.
    #[must_use]
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some(Credentials::new(user.to_owned(), password.to_owned()));
        self
    }

    /// How the client talks to the proxy.
    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// The proxy's host name or IP address (lowercase, IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user and password, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|c| (c.user.as_str(), c.password.as_str()))
    }

    /// `Basic base64(user:password)`, marked [sensitive](HeaderValue::is_sensitive), for an
    /// HTTP proxy's `Proxy-Authorization` header.
    pub fn basic_header(&self) -> Option<&HeaderValue> {
        self.credentials.as_ref().map(|c| &c.header)
    }

    /// The proxy as a URL with its credentials, for a library that takes one (libcurl). Never
    /// print it: `Display` is the printable form.
    pub fn to_url_with_credentials(&self) -> String {
        let userinfo = match &self.credentials {
            Some(c) => format!(
                "{}:{}@",
                encode_userinfo(&c.user),
                encode_userinfo(&c.password)
            ),
            None => String::new(),
        };
        format!(
            "{}://{userinfo}{}:{}",
            self.scheme.as_str(),
            bracketed(&self.host),
            self.port
        )
    }
}

impl Credentials {
    fn new(user: String, password: String) -> Self {
        let header = crate::client::basic_bytes(user.as_bytes(), Some(password.as_bytes()));
        Self {
            user,
            password,
            header,
        }
    }
}

/// `scheme://[REDACTED:REDACTED@]host:port`.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if self.credentials.is_some() {
            f.write_str("REDACTED:REDACTED@")?;
        }
        write!(f, "{}:{}", bracketed(&self.host), self.port)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets = match self.targets {
            Targets::Http => "http targets",
            Targets::Https => "https targets",
            Targets::All => "all targets",
        };
        write!(f, "Proxy(\"{self}\", {targets})")
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Percent-encodes what can't appear in a URL's user info.
fn encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a proxy URL. The reasons never include the URL (it may hold a password).
fn parse_url(input: &str, targets: Targets) -> Result<Proxy, &'static str> {
    let input = input.trim();
    let (scheme, rest) = match input.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_owned(), input),
    };
    let scheme = match scheme.as_str() {
        "http" => ProxyScheme::Http,
        "https" => ProxyScheme::Https,
        "socks5" => ProxyScheme::Socks5,
        "socks5h" => ProxyScheme::Socks5h,
        _ => return Err("a proxy url's scheme must be http, https, socks5 or socks5h"),
    };
    // Only the authority matters; a trailing `/` (as in `http://proxy:3128/`) is common.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (host, port) =
        split_host_port(hostport).ok_or("a proxy url needs a valid host and port")?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err("a proxy url needs a valid host");
    }
    let port = port.unwrap_or(match scheme {
        ProxyScheme::Http => 80,
        ProxyScheme::Https => 443,
        ProxyScheme::Socks5 | ProxyScheme::Socks5h => 1080,
    });
    let credentials = match userinfo {
        None => None,
        Some(userinfo) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let decode = |s: &str| {
                String::from_utf8(percent_decode(s))
                    .map_err(|_| "a proxy url's user info must be UTF-8")
            };
            Some(Credentials::new(decode(user)?, decode(password)?))
        }
    };
    Ok(Proxy {
        scheme,
        host: host.to_ascii_lowercase().into_boxed_str(),
        port,
        credentials,
        targets,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address: the host without
/// brackets and the port if given. `None` when the port is not a number.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((s, None));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((s, None)),
    }
}

/// The hosts reached directly, as `NO_PROXY` lists them.
///
/// The list is separated by commas (whitespace around entries is ignored); each entry is:
///
/// - `*`: every host (no proxy at all);
/// - a domain, with or without a leading `.` or `*.`: that name and every name under it
///   (`example.com` and `.example.com` both match `example.com` and `api.example.com`, never
///   `notexample.com`), as curl does;
/// - an IP address (IPv6 with or without brackets): that address;
/// - a CIDR block, `10.0.0.0/8` or `fd00::/8`: every address in it;
/// - any of the above but `*` and CIDR, followed by `:port`: only that port.
///
/// Matching ignores ASCII case and a trailing dot. Host names are compared as written, never
/// resolved: an IP or CIDR entry matches only a target given as an IP address. An entry that
/// can't be read (a bad CIDR prefix, a bad port) is skipped, as curl skips it.
///
/// ```
/// use keel_core::proxy::NoProxy;
///
/// let no_proxy = NoProxy::parse("localhost,.corp.example, 192.168.0.0/16, [::1], api.example:8443");
/// assert!(no_proxy.matches("LOCALHOST", 80));
/// assert!(no_proxy.matches("git.corp.example", 443));
/// assert!(no_proxy.matches("corp.example.", 443));
/// assert!(!no_proxy.matches("notcorp.example", 443));
/// assert!(no_proxy.matches("192.168.7.1", 80));
/// assert!(no_proxy.matches("::1", 80));
/// assert!(no_proxy.matches("api.example", 8443));
/// assert!(!no_proxy.matches("api.example", 443));
/// assert!(NoProxy::parse("*").matches("anything", 1));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// A domain (lowercase, no leading or trailing dot), and an optional port.
    Domain(Box<str>, Option<u16>),
    /// An IP address, and an optional port.
    Ip(IpAddr, Option<u16>),
    /// A CIDR block: the network and the prefix length.
    Cidr(IpAddr, u8),
}

impl NoProxy {
    /// Reads a `NO_PROXY` list (see the [type documentation](NoProxy)). Never fails: an
    /// unreadable entry is skipped.
    pub fn parse(list: &str) -> Self {
        let mut no_proxy = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no_proxy.all = true;
            } else if let Some(parsed) = parse_entry(entry) {
                no_proxy.entries.push(parsed);
            }
        }
        no_proxy
    }

    /// Whether `host` (a name, or an IP address with or without IPv6 brackets) at `port` is
    /// reached directly.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        if self.entries.is_empty() {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host);
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.entries.iter().any(|e| match e {
                Entry::Ip(entry, p) => *entry == ip && port_ok(p),
                Entry::Cidr(net, prefix) => in_block(ip, *net, *prefix),
                Entry::Domain(..) => false,
            });
        }
        self.entries.iter().any(|e| match e {
            Entry::Domain(domain, p) => port_ok(p) && is_same_or_under(host, domain),
            Entry::Ip(..) | Entry::Cidr(..) => false,
        })
    }

    /// Whether the list matches nothing.
    pub fn is_empty(&self) -> bool {
        !self.all && self.entries.is_empty()
    }
}

fn parse_entry(entry: &str) -> Option<Entry> {
    if let Some((net, prefix)) = entry.split_once('/') {
        let net: IpAddr = net
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        return (prefix <= max).then_some(Entry::Cidr(net, prefix));
    }
    let (host, port) = split_host_port(entry)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Entry::Ip(ip, port));
    }
    let host = host
        .strip_prefix("*.")
        .or_else(|| host.strip_prefix('.'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some(Entry::Domain(
        host.to_ascii_lowercase().into_boxed_str(),
        port,
    ))
}

/// `host` is `domain` or a name under it (compared ignoring ASCII case).
fn is_same_or_under(host: &str, domain: &str) -> bool {
    let (h, d) = (host.as_bytes(), domain.as_bytes());
    if h.len() == d.len() {
        return h.eq_ignore_ascii_case(d);
    }
    h.len() > d.len()
        && h[h.len() - d.len() - 1] == b'.'
        && h[h.len() - d.len()..].eq_ignore_ascii_case(d)
}

/// `ip` is in `net/prefix` (same family only).
fn in_block(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (ip, net, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (ip >> shift) == (net >> shift)
}

/// A client's proxies: one for `http` targets, one for `https` targets, and the hosts reached
/// directly. See the [module documentation](self).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    http: Option<Proxy>,
    https: Option<Proxy>,
    no_proxy: NoProxy,
}

impl ProxyConfig {
    /// No proxy at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `proxy` for the targets it is for ([`Proxy::http`], [`Proxy::https`],
    /// [`Proxy::all`]), replacing the proxy set for them before.
    #[must_use]
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        match proxy.targets {
            Targets::Http => self.http = Some(proxy),
            Targets::Https => self.https = Some(proxy),
            Targets::All => {
                self.http = Some(proxy.clone());
                self.https = Some(proxy);
            }
        }
        self
    }

    /// Reaches the hosts `no_proxy` matches directly, replacing the list set before.
    #[must_use]
    pub fn no_proxy(mut self, no_proxy: NoProxy) -> Self {
        self.no_proxy = no_proxy;
        self
    }

    /// The proxies the process environment names (see the [module documentation](self) for
    /// the variables and why uppercase `HTTP_PROXY` is ignored).
    ///
    /// A variable holding something that isn't a proxy URL is [`ErrorKind::Config`] naming
    /// `proxy_from_env`; the error names the variable, never its value.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env), reading the variables through `var`: for tests, or an
    /// environment kept elsewhere.
    ///
    /// ```
    /// use keel_core::proxy::ProxyConfig;
    ///
    /// let env = |name: &str| match name {
    ///     "HTTP_PROXY" => Some("http://attacker:1".to_owned()),
    ///     "HTTPS_PROXY" => Some("proxy:3128".to_owned()),
    ///     "no_proxy" => Some("localhost".to_owned()),
    ///     _ => None,
    /// };
    /// let config = ProxyConfig::from_vars(env)?;
    /// assert!(config.select(false, "api.example.com", 80).is_none(), "HTTP_PROXY is ignored");
    /// assert_eq!(config.select(true, "api.example.com", 443).unwrap().port(), 3128);
    /// assert!(config.select(true, "localhost", 443).is_none());
    /// # Ok::<(), keel_core::Error>(())
    /// ```
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let read = |names: &[&'static str]| {
            names.iter().find_map(|&name| {
                var(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        let parse = |found: Option<(&'static str, String)>, targets: Targets| {
            found
                .map(|(name, value)| {
                    parse_url(&value, targets).map_err(|why| {
                        Error::new(ErrorKind::Config)
                            .with_setting("proxy_from_env")
                            .with_source(format!("`{name}`: {why}"))
                    })
                })
                .transpose()
        };
        let all = parse(read(&["all_proxy", "ALL_PROXY"]), Targets::All)?;
        let http = parse(read(&["http_proxy"]), Targets::Http)?;
        let https = parse(read(&["https_proxy", "HTTPS_PROXY"]), Targets::Https)?;
        let no_proxy = read(&["no_proxy", "NO_PROXY"])
            .map(|(_, v)| NoProxy::parse(&v))
            .unwrap_or_default();
        Ok(Self {
            http: http.or_else(|| all.clone()),
            https: https.or(all),
            no_proxy,
        })
    }

    /// The proxy for a target (`https` or not, its host and port), or `None` when it is
    /// reached directly: no proxy for its scheme, or [`NoProxy`] matches it.
    pub fn select(&self, https: bool, host: &str, port: u16) -> Option<&Proxy> {
        let proxy = if https { &self.https } else { &self.http };
        let proxy = proxy.as_ref()?;
        if self.no_proxy.matches(host, port) {
            return None;
        }
        Some(proxy)
    }

    /// [`select`](Self::select) for `origin`.
    pub fn for_origin(&self, origin: &Origin) -> Option<&Proxy> {
        self.select(origin.is_https(), origin.host(), origin.port())
    }

    /// The proxies set, for `http` targets then `https` targets.
    pub fn proxies(&self) -> impl Iterator<Item = &Proxy> {
        self.http.iter().chain(&self.https)
    }

    /// Whether no proxy is set (every request goes directly).
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy that forwards a plain `http` request to `origin` in absolute form (an
    /// `http://` or `https://` proxy), if any; its [`basic_header`](Proxy::basic_header) goes
    /// on the request as `Proxy-Authorization`. `None` for `https` targets (tunnelled, their
    /// credentials go in the `CONNECT`), SOCKS5 proxies, and direct requests.
    pub fn forwarder(&self, origin: &Origin) -> Option<&Proxy> {
        if origin.is_https() {
            return None;
        }
        self.for_origin(origin).filter(|p| !p.scheme.is_socks())
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("http", &self.http.as_ref().map(ToString::to_string))
            .field("https", &self.https.as_ref().map(ToString::to_string))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// The error for a proxy that refused a forwarded request (`407 Proxy Authentication
/// Required` as the answer to a request sent in absolute form), in [`Stage::Proxy`]; `Ok` for
/// any other status. Backends call it on the responses to proxied `http` requests, so a
/// refusal reads the same whether it came to a `CONNECT` or to a forwarded request.
pub fn check_forwarded(status: StatusCode) -> Result<(), Error> {
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        return Err(tunnel_error(TunnelError::Refused { status }));
    }
    Ok(())
}

/// A handshake failure as keel's error, in [`Stage::Proxy`] (so it is unsent: nothing reached
/// the target), with `err` as its source:
///
/// - an HTTP proxy's refusal ([`TunnelError::Refused`]) is
///   [`ErrorKind::Status`]`(status)`, so it is retried exactly when that status would be
///   (`502`, `503`, `504`: the proxy couldn't reach the target) and never for `407`;
/// - anything else (a SOCKS5 failure, a malformed answer, a closed connection) is
///   [`ErrorKind::Connect`], retried like a failed connection.
///
/// ```
/// use keel_core::machine::tunnel::TunnelError;
/// use keel_core::{ErrorKind, Stage};
///
/// let status = http::StatusCode::PROXY_AUTHENTICATION_REQUIRED;
/// let err = keel_core::proxy::tunnel_error(TunnelError::Refused { status });
/// assert_eq!((err.kind(), err.stage()), (ErrorKind::Status(status), Some(Stage::Proxy)));
/// assert!(err.is_unsent() && !err.is_retryable());
/// ```
pub fn tunnel_error(err: TunnelError) -> Error {
    let kind = match err.status() {
        Some(status) => ErrorKind::Status(status),
        None => ErrorKind::Connect,
    };
    Error::new(kind).with_stage(Stage::Proxy).with_source(err)
}

#[cfg(test)]
mod tests;
