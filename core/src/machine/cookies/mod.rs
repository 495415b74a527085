//! Cookies: an RFC 6265 cookie jar, as a pure machine.
//!
//! [`CookieJar`] takes the `Set-Cookie` values of a response with the URL it came from and the
//! wall-clock time ([`CookieJar::store`]), and answers with the `Cookie` header a request to a
//! URL must carry ([`CookieJar::header`]). It performs no I/O and never reads a clock: `now`
//! comes in as an argument. The client keeps one behind a lock ([`crate::cookie::Jar`]);
//! anything that wants a cookie store of its own (persisted to disk, shared between
//! processes) can wrap one.
//!
//! ```text
//!   Set-Cookie ──parse (5.2)──► name, value, attributes ──storage model (5.3)──►
//!        malformed, too large, Domain not ours, public suffix,        │ replace same
//!        Secure over http, bad __Secure-/__Host- prefix: ignored      │ name+domain+path;
//!                                                                     ▼ expired: delete
//!   request URL ──► host, parent domains ──► path match, Secure only over https,
//!                   (host-only: exact host)  not expired ──► longest path first, then
//!                                                            oldest ──► Cookie: a=1; b=2
//! ```
//!
//! # What it follows, and what it doesn't
//!
//! - Parsing (RFC 6265 5.2): lenient as the RFC says; a cookie it can't make sense of is
//!   ignored, never a panic. `Expires` in the three HTTP date forms and the Netscape form with
//!   dashes; `Max-Age` wins over `Expires`; a `Path` that doesn't start with `/` means the
//!   default path (5.1.4); `SameSite` is kept (a client sends no cross-site subrequests, so
//!   it changes nothing here). Names and values must be UTF-8 without control characters.
//! - Domains (5.1.3, 5.3): a cookie without `Domain` is host-only (sent to its exact host);
//!   one with `Domain` is sent to that domain and its subdomains, and is ignored unless the
//!   request's host domain-matches it. IP addresses match only themselves.
//! - **Public suffixes**: a `Domain` of a single label (`com`, `localhost`, `internal`) is
//!   treated as a public suffix: ignored, or host-only when it is the request's host, as 5.3
//!   step 5 says. There is no built-in public suffix list, so `Domain=co.uk` from
//!   `a.co.uk` is accepted; give the jar a list with [`CookieJar::public_suffixes`] (the
//!   `psl` or `publicsuffix` crates have one) to refuse those too.
//! - Secure (RFC 6265bis): a `Secure` cookie is sent only over `https`, is never set from
//!   `http`, and an `http` response can't overwrite or shadow one. The `__Secure-` and
//!   `__Host-` name prefixes are enforced.
//! - Ports are not part of a cookie's scope (5.5 of RFC 6265: "cookies do not provide
//!   isolation by port"): two servers on one host share cookies.
//! - Expiry: `now` given to every call; an expired cookie is never sent and is dropped when
//!   seen. `Max-Age` and `Expires` are capped at 400 days (RFC 6265bis).
//! - Limits ([`CookieLimits`], defaults from 6.1): a cookie's name and value at most 4096
//!   bytes, at most 50 cookies per domain and 3000 in all; over a limit, expired cookies go
//!   first, then the oldest. Memory is bounded by these.
//! - Not done: `HttpOnly` is kept but changes nothing (there is no script API); no
//!   third-party or `SameSite` enforcement (a client has no "site for cookies").
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::Uri;
//! use keel_core::machine::cookies::CookieJar;
//!
//! let now = SystemTime::now();
//! let mut jar = CookieJar::new();
//! let login: Uri = "https://api.example.com/login".parse().unwrap();
//! jar.store(&login, b"session=s1; Path=/; Secure; HttpOnly", now).unwrap();
//! jar.store(&login, b"theme=dark; Domain=example.com; Max-Age=60", now).unwrap();
//!
//! let items: Uri = "https://api.example.com/v1/items".parse().unwrap();
//! assert_eq!(jar.header(&items, now).unwrap(), "session=s1; theme=dark");
//!
//! // A sibling host gets the Domain cookie only; plain http doesn't get the Secure one.
//! let cdn: Uri = "http://cdn.example.com/".parse().unwrap();
//! assert_eq!(jar.header(&cdn, now).unwrap(), "theme=dark");
//! // Another site gets nothing, and a minute later the theme has expired.
//! assert!(jar.header(&"https://example.net/".parse().unwrap(), now).is_none());
//! let later = now + Duration::from_secs(61);
//! assert_eq!(jar.header(&items, later).unwrap(), "session=s1");
//! ```

mod parse;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderValue, SET_COOKIE};
use http::Uri;

use parse::Expiry;

/// One cookie as stored: its name and value, its scope (domain, path, Secure) and its expiry.
///
/// Its `Debug` doesn't print the value, which is a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie {
    name: Box<str>,
    value: Box<str>,
    domain: Box<str>,
    host_only: bool,
    path: Box<str>,
    secure: bool,
    http_only: bool,
    same_site: Option<SameSite>,
    expires: Option<SystemTime>,
    created: SystemTime,
    /// Creation order in the jar, for equal creation times.
    seq: u64,
}

impl Cookie {
    /// A host-only session cookie for `host` at `path`, created at `created`: what a jar
    /// restored from storage is built from (see [`CookieJar::insert`]). The setters give it
    /// the rest of its attributes.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use keel_core::machine::cookies::{Cookie, CookieJar};
    ///
    /// let now = SystemTime::now();
    /// let saved = Cookie::new("sid", "abc", "api.example.com", "/", now)
    ///     .with_secure(true)
    ///     .with_expires(Some(now + Duration::from_secs(3600)));
    /// let mut jar = CookieJar::new();
    /// jar.insert(saved, now).unwrap();
    /// let url = "https://api.example.com/x".parse().unwrap();
    /// assert_eq!(jar.header(&url, now).unwrap(), "sid=abc");
    /// ```
    pub fn new(
        name: impl Into<Box<str>>,
        value: impl Into<Box<str>>,
        host: impl Into<Box<str>>,
        path: impl Into<Box<str>>,
        created: SystemTime,
    ) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            domain: host.into().to_ascii_lowercase().into(),
            host_only: true,
            path: path.into(),
            secure: false,
            http_only: false,
            same_site: None,
            expires: None,
            created,
            seq: 0,
        }
    }

    /// Sent to the domain's subdomains too (`false`), or to its exact host only (`true`).
    pub fn with_host_only(mut self, host_only: bool) -> Self {
        self.host_only = host_only;
        self
    }

    /// Sent over `https` only.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Marked `HttpOnly`.
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// Its `SameSite` attribute.
    pub fn with_same_site(mut self, same_site: Option<SameSite>) -> Self {
        self.same_site = same_site;
        self
    }

    /// When it expires; `None` for a session cookie.
    pub fn with_expires(mut self, expires: Option<SystemTime>) -> Self {
        self.expires = expires;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its value: a credential, print it nowhere.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The domain it belongs to (lowercase, no leading dot): its host when
    /// [`is_host_only`](Self::is_host_only).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether it goes to its exact host only (it came without a `Domain` attribute).
    pub fn is_host_only(&self) -> bool {
        self.host_only
    }

    /// The path it is sent under.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether it is sent over `https` only.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Whether it came with `HttpOnly`.
    pub fn is_http_only(&self) -> bool {
        self.http_only
    }

    /// Its `SameSite` attribute, if it had a known one.
    pub fn same_site(&self) -> Option<SameSite> {
        self.same_site
    }

    /// When it expires; `None` for a session cookie.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// When it was first stored (a replacement keeps the time of the cookie it replaced).
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// Its size for the limits: name and value.
    fn size(&self) -> usize {
        self.name.len() + self.value.len()
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cookie")
            .field("name", &self.name)
            .field("value", &"Sensitive")
            .field("domain", &self.domain)
            .field("host_only", &self.host_only)
            .field("path", &self.path)
            .field("secure", &self.secure)
            .field("http_only", &self.http_only)
            .field("same_site", &self.same_site)
            .field("expires", &self.expires)
            .finish()
    }
}

/// A cookie's `SameSite` attribute.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None`.
    None,
}

impl SameSite {
    fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("strict") {
            Some(Self::Strict)
        } else if value.eq_ignore_ascii_case("lax") {
            Some(Self::Lax)
        } else if value.eq_ignore_ascii_case("none") {
            Some(Self::None)
        } else {
            None
        }
    }
}

/// The bounds of a jar: how large one cookie may be, and how many it keeps.
///
/// The defaults are RFC 6265's minimums (section 6.1): 4096 bytes of name and value, 50
/// cookies per domain, 3000 in all.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieLimits {
    /// The most bytes of name and value one cookie may have; a larger one is ignored.
    pub max_cookie_size: usize,
    /// The most cookies kept for one domain (host-only cookies count under their host).
    pub max_per_domain: usize,
    /// The most cookies kept in all.
    pub max_total: usize,
}

impl Default for CookieLimits {
    fn default() -> Self {
        Self {
            max_cookie_size: 4096,
            max_per_domain: 50,
            max_total: 3000,
        }
    }
}

impl CookieLimits {
    /// The most bytes of name and value one cookie may have.
    pub fn max_cookie_size(mut self, bytes: usize) -> Self {
        self.max_cookie_size = bytes;
        self
    }

    /// The most cookies kept for one domain (at least 1).
    pub fn max_per_domain(mut self, n: usize) -> Self {
        self.max_per_domain = n.max(1);
        self
    }

    /// The most cookies kept in all (at least 1).
    pub fn max_total(mut self, n: usize) -> Self {
        self.max_total = n.max(1);
        self
    }
}

/// What [`CookieJar::store`] did with a cookie it accepted.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A new cookie.
    Added,
    /// It replaced the cookie of the same name, domain and path.
    Replaced,
    /// It had expired already: the cookie of the same name, domain and path (if any) is gone.
    Removed,
}

/// Why a cookie was ignored. The server sent something wrong (or something the jar's limits
/// refuse): a client goes on without it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not a cookie: no `name=value`, an empty name, bytes that aren't UTF-8 or control
    /// characters.
    Malformed,
    /// Name and value are larger than [`CookieLimits::max_cookie_size`].
    TooLarge,
    /// The URL has no host, or isn't `http`/`https`.
    NotHttp,
    /// Its `Domain` isn't the request's host nor a parent of it.
    DomainMismatch,
    /// Its `Domain` is a public suffix (a single label, or one the jar's list names).
    PublicSuffix,
    /// A `Secure` cookie from a response that didn't come over `https`, or one that would
    /// overwrite a `Secure` cookie from plain `http`.
    Insecure,
    /// A `__Secure-` or `__Host-` name without the attributes its prefix requires.
    Prefix,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed cookie",
            Self::TooLarge => "cookie larger than the limit",
            Self::NotHttp => "not an http or https url with a host",
            Self::DomainMismatch => "cookie domain doesn't match the request's host",
            Self::PublicSuffix => "cookie domain is a public suffix",
            Self::Insecure => "secure cookie from plain http",
            Self::Prefix => "cookie name prefix without its required attributes",
        })
    }
}

impl std::error::Error for Rejection {}

/// Says whether a domain (lowercase, no leading dot) is a public suffix.
type SuffixCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// An RFC 6265 cookie jar: stores what `Set-Cookie` says and tells which cookies go with a
/// request. See the [module documentation](self) for the rules it follows.
///
/// Cookies are kept by domain, so finding those of a request looks at the request's host and
/// its parent domains only, not at every cookie.
#[derive(Clone, Default)]
pub struct CookieJar {
    by_domain: HashMap<Box<str>, Vec<Cookie>>,
    len: usize,
    next_seq: u64,
    limits: CookieLimits,
    public_suffix: Option<SuffixCheck>,
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieJar")
            .field("len", &self.len)
            .field("limits", &self.limits)
            .field("public_suffixes", &self.public_suffix.is_some())
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// An empty jar with the default [`CookieLimits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty jar with these limits.
    pub fn with_limits(limits: CookieLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Refuses a `Domain` attribute for which `is_public_suffix` is true (besides the single
    /// labels always refused), e.g. from a public suffix list:
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use keel_core::machine::cookies::{CookieJar, Rejection};
    ///
    /// let mut jar = CookieJar::new().public_suffixes(|domain| ["co.uk", "github.io"].contains(&domain));
    /// let url = "https://shop.co.uk/".parse().unwrap();
    /// let now = SystemTime::now();
    /// assert_eq!(jar.store(&url, b"a=1; Domain=co.uk", now), Err(Rejection::PublicSuffix));
    /// assert!(jar.store(&url, b"a=1; Domain=shop.co.uk", now).is_ok());
    /// ```
    pub fn public_suffixes(
        mut self,
        is_public_suffix: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.public_suffix = Some(Arc::new(is_public_suffix));
        self
    }

    /// The jar's limits.
    pub fn limits(&self) -> CookieLimits {
        self.limits
    }

    /// How many cookies the jar holds (expired ones not dropped yet included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the jar holds no cookie.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every cookie held, in no particular order: what a persistent store saves.
    pub fn iter(&self) -> impl Iterator<Item = &Cookie> + '_ {
        self.by_domain.values().flatten()
    }

    /// Drops every cookie.
    pub fn clear(&mut self) {
        self.by_domain.clear();
        self.len = 0;
    }

    /// Drops the cookies expired at `now`.
    pub fn remove_expired(&mut self, now: SystemTime) {
        let mut removed = 0;
        self.by_domain.retain(|_, cookies| {
            let before = cookies.len();
            cookies.retain(|c| !c.is_expired(now));
            removed += before - cookies.len();
            !cookies.is_empty()
        });
        self.len -= removed;
    }

    /// Stores every `Set-Cookie` of a response from `url`, received at `now`; those it must
    /// ignore are ignored. Returns how many were accepted.
    pub fn store_response(&mut self, url: &Uri, headers: &HeaderMap, now: SystemTime) -> usize {
        headers
            .get_all(SET_COOKIE)
            .iter()
            .filter(|value| self.store(url, value.as_bytes(), now).is_ok())
            .count()
    }

    /// Stores one `Set-Cookie` value of a response from `url`, received at `now`, as RFC 6265
    /// section 5.3 says: the cookie is added, replaces the one of the same name, domain and
    /// path, or (expired already) removes it.
    ///
    /// # Errors
    ///
    /// Why the cookie was ignored; the jar is unchanged then.
    pub fn store(
        &mut self,
        url: &Uri,
        set_cookie: &[u8],
        now: SystemTime,
    ) -> Result<Stored, Rejection> {
        let (host, secure_url) = request_host(url).ok_or(Rejection::NotHttp)?;
        let parsed = parse::parse(set_cookie, now).ok_or(Rejection::Malformed)?;
        let (domain, host_only) = match parsed.domain {
            None => (host.clone(), true),
            Some(domain) => {
                if !domain.is_ascii() {
                    return Err(Rejection::DomainMismatch);
                }
                let domain = domain.to_ascii_lowercase();
                if self.is_public_suffix(&domain) {
                    if domain != host {
                        return Err(Rejection::PublicSuffix);
                    }
                    // The host itself is a public suffix: a host-only cookie.
                    (host.clone(), true)
                } else if domain_match(&host, &domain) {
                    (domain, false)
                } else {
                    return Err(Rejection::DomainMismatch);
                }
            }
        };
        let path = match parsed.path {
            Some(path) => path,
            None => default_path(url.path()),
        };
        let expires = match parsed.expiry {
            Expiry::Session => None,
            Expiry::At(at) => Some(at),
        };
        let cookie = Cookie {
            name: parsed.name.into(),
            value: parsed.value.into(),
            domain: domain.into(),
            host_only,
            path: path.into(),
            secure: parsed.secure,
            http_only: parsed.http_only,
            same_site: parsed.same_site,
            expires,
            created: now,
            seq: 0,
        };
        self.admit(cookie, secure_url, now)
    }

    /// Puts `cookie` in the jar as if a response over `https` from its domain had set it:
    /// how a persistent store fills a jar again. The same rules hold (prefixes, limits,
    /// replacement); its creation time is kept.
    ///
    /// # Errors
    ///
    /// Why the cookie was refused; the jar is unchanged then.
    pub fn insert(&mut self, mut cookie: Cookie, now: SystemTime) -> Result<Stored, Rejection> {
        let valid = |s: &str| !s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f);
        if cookie.name.is_empty()
            || cookie.name.contains(['=', ';'])
            || cookie.value.contains(';')
            || !valid(&cookie.name)
            || !valid(&cookie.value)
            || !cookie.path.starts_with('/')
            || cookie.domain.is_empty()
        {
            return Err(Rejection::Malformed);
        }
        cookie.domain = cookie.domain.trim_start_matches('.').into();
        if !cookie.host_only && self.is_public_suffix(&cookie.domain) {
            return Err(Rejection::PublicSuffix);
        }
        self.admit(cookie, true, now)
    }

    /// The storage model's last steps: limits, prefixes, Secure, replacement, eviction.
    fn admit(
        &mut self,
        mut cookie: Cookie,
        secure_url: bool,
        now: SystemTime,
    ) -> Result<Stored, Rejection> {
        if cookie.size() > self.limits.max_cookie_size {
            return Err(Rejection::TooLarge);
        }
        if cookie.secure && !secure_url {
            return Err(Rejection::Insecure);
        }
        check_prefix(&cookie, secure_url)?;
        if !cookie.secure && !secure_url && self.shadows_secure(&cookie) {
            return Err(Rejection::Insecure);
        }
        let expired = cookie.is_expired(now);
        let key = cookie.domain.clone();
        let cookies = self.by_domain.entry(key.clone()).or_default();
        let old = cookies
            .iter()
            .position(|c| c.name == cookie.name && c.path == cookie.path);
        let stored = match (old, expired) {
            (Some(i), true) => {
                cookies.swap_remove(i);
                self.len -= 1;
                Stored::Removed
            }
            (None, true) => Stored::Removed,
            (Some(i), false) => {
                let old = &cookies[i];
                cookie.created = old.created;
                cookie.seq = old.seq;
                cookies[i] = cookie;
                Stored::Replaced
            }
            (None, false) => {
                cookie.seq = self.next_seq;
                self.next_seq += 1;
                cookies.push(cookie);
                self.len += 1;
                Stored::Added
            }
        };
        if cookies.is_empty() {
            self.by_domain.remove(&*key);
        }
        if stored == Stored::Added {
            self.evict(now);
        }
        Ok(stored)
    }

    /// Whether an insecure `cookie` would overwrite or shadow a `Secure` one: same name, one
    /// domain matching the other, and its path inside the secure one's (RFC 6265bis 5.7).
    fn shadows_secure(&self, cookie: &Cookie) -> bool {
        self.iter().any(|c| {
            c.secure
                && c.name == cookie.name
                && (domain_match(&c.domain, &cookie.domain)
                    || domain_match(&cookie.domain, &c.domain))
                && path_match(&cookie.path, &c.path)
        })
    }

    /// Keeps the jar within its limits after a cookie was added: in the fullest domain and then
    /// in all, expired cookies go first, then the oldest.
    fn evict(&mut self, now: SystemTime) {
        let per_domain = self.limits.max_per_domain;
        let over: Vec<Box<str>> = self
            .by_domain
            .iter()
            .filter(|(_, c)| c.len() > per_domain)
            .map(|(d, _)| d.clone())
            .collect();
        for domain in over {
            if let Some(cookies) = self.by_domain.get_mut(&domain) {
                let before = cookies.len();
                cookies.retain(|c| !c.is_expired(now));
                while cookies.len() > per_domain {
                    let oldest = oldest(cookies.iter());
                    cookies.remove(oldest);
                }
                self.len -= before - cookies.len();
            }
        }
        if self.len > self.limits.max_total {
            self.remove_expired(now);
            while self.len > self.limits.max_total {
                let Some((domain, i)) = self
                    .by_domain
                    .iter()
                    .flat_map(|(d, cs)| cs.iter().enumerate().map(move |(i, c)| (d, i, c)))
                    .min_by_key(|(_, _, c)| c.seq)
                    .map(|(d, i, _)| (d.clone(), i))
                else {
                    break;
                };
                if let Some(cookies) = self.by_domain.get_mut(&domain) {
                    cookies.remove(i);
                    self.len -= 1;
                    if cookies.is_empty() {
                        self.by_domain.remove(&domain);
                    }
                }
            }
        }
    }

    /// The cookies a request to `url` carries at `now`, in the order the `Cookie` header lists
    /// them: longer paths first, then those created earlier. Expired cookies met on the way are
    /// dropped.
    pub fn cookies_for(&mut self, url: &Uri, now: SystemTime) -> Vec<&Cookie> {
        let Some((host, secure_url)) = request_host(url) else {
            return Vec::new();
        };
        let path = match url.path() {
            "" => "/",
            path => path,
        };
        // The host, then each parent domain (an IP address has none).
        let mut domains = vec![host.as_str()];
        if !is_ip(&host) {
            domains.extend(host.match_indices('.').map(|(i, _)| &host[i + 1..]));
        }
        let mut dropped = 0;
        for domain in &domains {
            if let Some(cookies) = self.by_domain.get_mut(*domain) {
                let before = cookies.len();
                cookies.retain(|c| !c.is_expired(now));
                dropped += before - cookies.len();
            }
        }
        self.len -= dropped;
        let mut found: Vec<&Cookie> = domains
            .iter()
            .filter_map(|domain| self.by_domain.get(*domain))
            .flatten()
            .filter(|c| {
                (!c.host_only || *c.domain == *host)
                    && (!c.secure || secure_url)
                    && path_match(path, &c.path)
            })
            .collect();
        found.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then(a.created.cmp(&b.created))
                .then(a.seq.cmp(&b.seq))
        });
        found
    }

    /// The `Cookie` header a request to `url` carries at `now` (marked sensitive), or `None`
    /// when no cookie goes with it.
    pub fn header(&mut self, url: &Uri, now: SystemTime) -> Option<HeaderValue> {
        let cookies = self.cookies_for(url, now);
        if cookies.is_empty() {
            return None;
        }
        let size: usize = cookies.iter().map(|c| c.size() + 3).sum();
        let mut line = Vec::with_capacity(size);
        for (i, cookie) in cookies.iter().enumerate() {
            if i > 0 {
                line.extend_from_slice(b"; ");
            }
            line.extend_from_slice(cookie.name.as_bytes());
            line.push(b'=');
            line.extend_from_slice(cookie.value.as_bytes());
        }
        // Names and values hold no control characters: always a valid header value.
        let mut value = HeaderValue::from_bytes(&line).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    fn is_public_suffix(&self, domain: &str) -> bool {
        (!domain.contains('.') && !is_ip(domain))
            || self
                .public_suffix
                .as_ref()
                .is_some_and(|check| check(domain))
    }
}

/// The index of the oldest cookie.
fn oldest<'a>(cookies: impl Iterator<Item = &'a Cookie>) -> usize {
    cookies
        .enumerate()
        .min_by_key(|(_, c)| c.seq)
        .map_or(0, |(i, _)| i)
}

/// The `__Secure-` and `__Host-` prefixes (RFC 6265bis 4.1.3): a cookie so named must be
/// Secure and come over https, and a `__Host-` one must also be host-only at `/`.
fn check_prefix(cookie: &Cookie, secure_url: bool) -> Result<(), Rejection> {
    let name = cookie.name.as_bytes();
    let has = |prefix: &[u8]| {
        name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    if has(b"__Secure-") && !(cookie.secure && secure_url) {
        return Err(Rejection::Prefix);
    }
    if has(b"__Host-") && !(cookie.secure && secure_url && cookie.host_only && &*cookie.path == "/")
    {
        return Err(Rejection::Prefix);
    }
    Ok(())
}

/// The request's host, lowercase, and whether it goes over https; `None` for a URL that isn't
/// `http`/`https` or has no host.
fn request_host(url: &Uri) -> Option<(String, bool)> {
    let secure = match url.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return None,
    };
    let host = url.host().filter(|h| !h.is_empty())?;
    Some((host.to_ascii_lowercase(), secure))
}

/// Whether `host` is an IP address (IPv6 in brackets, as URLs write it).
fn is_ip(host: &str) -> bool {
    host.parse::<Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<Ipv6Addr>()
            .is_ok()
}

/// Whether `host` domain-matches `domain` (RFC 6265 5.1.3), both lowercase: they are equal,
/// or `domain` is a parent of `host` (a suffix after a `.`) and `host` is a name, not an IP
/// address.
///
/// ```
/// use keel_core::machine::cookies::domain_match;
///
/// assert!(domain_match("api.example.com", "example.com"));
/// assert!(domain_match("example.com", "example.com"));
/// assert!(!domain_match("badexample.com", "example.com"));
/// assert!(!domain_match("example.com", "api.example.com"));
/// assert!(!domain_match("10.0.0.1", "0.0.1"));
/// ```
pub fn domain_match(host: &str, domain: &str) -> bool {
    if host == domain {
        return true;
    }
    !domain.is_empty()
        && host.len() > domain.len()
        && host.ends_with(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        && !is_ip(host)
}

/// Whether a request for `request_path` gets a cookie of `cookie_path` (RFC 6265 5.1.4):
/// equal, or `cookie_path` is a prefix ending at a `/` of `request_path`.
///
/// ```
/// use keel_core::machine::cookies::path_match;
///
/// assert!(path_match("/docs/web", "/docs"));
/// assert!(path_match("/docs/", "/docs/"));
/// assert!(path_match("/anything", "/"));
/// assert!(!path_match("/docsweb", "/docs"));
/// assert!(!path_match("/", "/docs"));
/// ```
pub fn path_match(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

/// The default path of a cookie set by a response to a request for `uri_path` (RFC 6265
/// 5.1.4): the path up to, not including, its last `/`; `/` when that leaves nothing.
///
/// ```
/// use keel_core::machine::cookies::default_path;
///
/// assert_eq!(default_path("/v1/login"), "/v1");
/// assert_eq!(default_path("/v1/users/"), "/v1/users");
/// assert_eq!(default_path("/login"), "/");
/// assert_eq!(default_path(""), "/");
/// ```
pub fn default_path(uri_path: &str) -> &str {
    if !uri_path.starts_with('/') {
        return "/";
    }
    match uri_path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &uri_path[..i],
    }
}
