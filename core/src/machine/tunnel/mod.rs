//! Opening a tunnel through a proxy: the HTTP `CONNECT` handshake and the SOCKS5 handshake, as
//! byte-level machines.
//!
//! A [`Tunnel`] performs no I/O. The caller writes what [`Tunnel::poll_transmit`] gives it,
//! reads at most [`Tunnel::read_limit`] bytes and hands them to [`Tunnel::handle_read`], until
//! [`Tunnel::is_established`]; the stream is then a tunnel to the target, on which the caller
//! speaks TLS or HTTP. keel-core's [`Dialer::tunnel`](crate::connect::Dialer::tunnel) is that
//! caller for every rustls backend.
//!
//! ```text
//!  HTTP CONNECT:  send request ─► read head (≤ 16 KiB) ─► 2xx: established
//!                                                      └► other: Refused { status }
//!  SOCKS5:        greeting ─► method ─┬─► (user/password ─► auth reply) ─► connect ─► reply
//!                                     └─► 0xFF: NoAcceptableMethod
//! ```
//!
//! Neither handshake reads past its end: a SOCKS5 reply has a known length, and the caller is
//! told how many bytes to read at most; after a `CONNECT` answer the proxy must wait for the
//! client (TLS and HTTP both have the client speak first), so bytes that follow the answer's
//! head are refused as [`TunnelError::EarlyData`] rather than lost.
//!
//! Everything the proxy sends is untrusted: any byte sequence gives a typed error, never a
//! panic (property-tested).
//!
//! ```
//! use keel_core::machine::tunnel::{Tunnel, TunnelError};
//!
//! let mut tunnel = Tunnel::http_connect("api.example.com", 443, None);
//! assert_eq!(
//!     tunnel.poll_transmit().unwrap(),
//!     b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n"
//! );
//! tunnel.handle_read(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap();
//! assert!(tunnel.is_established());
//!
//! let mut refused = Tunnel::http_connect("api.example.com", 443, None);
//! let _ = refused.poll_transmit();
//! let err = refused
//!     .handle_read(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
//!     .unwrap_err();
//! assert_eq!(err.status().map(|s| s.as_u16()), Some(407));
//! assert_eq!(err.to_string(), "proxy answered 407 Proxy Authentication Required");
//! ```

mod connect;
mod socks5;

use std::fmt;
use std::net::IpAddr;

use http::{HeaderValue, StatusCode};

pub use connect::MAX_CONNECT_HEAD;

use connect::HttpConnect;
use socks5::Socks5;

/// A proxy handshake in progress: HTTP `CONNECT` or SOCKS5.
#[derive(Debug)]
pub struct Tunnel {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Http(HttpConnect),
    Socks5(Socks5),
}

/// Where a SOCKS5 proxy connects to: an address resolved by the client (`socks5://`), or a
/// host name the proxy resolves (`socks5h://`).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocksTarget {
    /// An IP address (resolved by the client, or given as one).
    Ip(IpAddr),
    /// A host name, at most 255 bytes, resolved by the proxy.
    Name(String),
}

impl Tunnel {
    /// An HTTP `CONNECT host:port` request, with `Proxy-Authorization: <auth>` when given
    /// (a `Basic` value from [`Proxy`](crate::proxy::Proxy)). An IPv6 `host` is written in
    /// brackets.
    pub fn http_connect(host: &str, port: u16, auth: Option<&HeaderValue>) -> Self {
        Self {
            inner: Inner::Http(HttpConnect::new(host, port, auth)),
        }
    }

    /// A SOCKS5 handshake (RFC 1928) connecting to `target:port`, offering user/password
    /// authentication (RFC 1929) when `credentials` are given, "no authentication" otherwise.
    ///
    /// A host name longer than 255 bytes, or a user or password longer than 255 bytes, can't
    /// be written in SOCKS5: that is [`TunnelError::TooLong`].
    pub fn socks5(
        target: SocksTarget,
        port: u16,
        credentials: Option<(&str, &str)>,
    ) -> Result<Self, TunnelError> {
        Ok(Self {
            inner: Inner::Socks5(Socks5::new(target, port, credentials)?),
        })
    }

    /// The bytes to write to the proxy next, if any. Each call hands out what is pending and
    /// leaves nothing behind.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        match &mut self.inner {
            Inner::Http(h) => h.poll_transmit(),
            Inner::Socks5(s) => s.poll_transmit(),
        }
    }

    /// The most bytes to read before the next [`handle_read`](Self::handle_read): never more
    /// than the handshake still needs, so no byte of the tunnel is read by it. 0 once
    /// established.
    pub fn read_limit(&self) -> usize {
        match &self.inner {
            Inner::Http(h) => h.read_limit(),
            Inner::Socks5(s) => s.read_limit(),
        }
    }

    /// Takes bytes read from the proxy (all of them: the machine keeps a partial answer).
    pub fn handle_read(&mut self, input: &[u8]) -> Result<(), TunnelError> {
        match &mut self.inner {
            Inner::Http(h) => h.handle_read(input),
            Inner::Socks5(s) => s.handle_read(input),
        }
    }

    /// The proxy closed the connection: an error unless the tunnel was established.
    pub fn handle_eof(&mut self) -> Result<(), TunnelError> {
        if self.is_established() {
            Ok(())
        } else {
            Err(TunnelError::Closed)
        }
    }

    /// Whether the handshake is over and the stream now leads to the target.
    pub fn is_established(&self) -> bool {
        match &self.inner {
            Inner::Http(h) => h.is_established(),
            Inner::Socks5(s) => s.is_established(),
        }
    }
}

/// Why a proxy did not open a tunnel, or refused a request.
///
/// What the proxy sent never shows beyond its status code and the fixed words for it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelError {
    /// The HTTP proxy answered with a status other than 2xx (`407 Proxy Authentication
    /// Required`: credentials missing or wrong; `502`, `503`: the target can't be reached).
    Refused {
        /// The proxy's status.
        status: StatusCode,
    },
    /// The answer is not HTTP/1.x, or not SOCKS5.
    Malformed(&'static str),
    /// The `CONNECT` answer's head is longer than [`MAX_CONNECT_HEAD`].
    HeadTooLarge,
    /// The proxy sent bytes after its `CONNECT` answer before the client spoke.
    EarlyData,
    /// The proxy closed the connection before the handshake was over.
    Closed,
    /// The SOCKS5 proxy accepts none of the authentication methods offered (with credentials:
    /// user/password and none; without: none).
    NoAcceptableMethod,
    /// The SOCKS5 proxy refused the user and password.
    AuthFailed,
    /// The SOCKS5 proxy answered the connect request with a failure code (RFC 1928, 6).
    SocksReply {
        /// The reply code, 1 to 255.
        code: u8,
    },
    /// A host name, user or password too long to be written in SOCKS5 (255 bytes at most).
    TooLong(&'static str),
}

impl TunnelError {
    /// The proxy's HTTP status, for [`TunnelError::Refused`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            TunnelError::Refused { status } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::Refused { status } => {
                write!(f, "proxy answered {}", status.as_u16())?;
                if let Some(reason) = status.canonical_reason() {
                    write!(f, " {reason}")?;
                }
                Ok(())
            }
            TunnelError::Malformed(what) => write!(f, "malformed proxy answer: {what}"),
            TunnelError::HeadTooLarge => write!(
                f,
                "the proxy's CONNECT answer has a head over {MAX_CONNECT_HEAD} bytes"
            ),
            TunnelError::EarlyData => {
                f.write_str("the proxy sent data after its CONNECT answer before the client spoke")
            }
            TunnelError::Closed => f.write_str("the proxy closed the connection mid-handshake"),
            TunnelError::NoAcceptableMethod => {
                f.write_str("the socks5 proxy accepts none of the authentication methods offered")
            }
            TunnelError::AuthFailed => f.write_str("the socks5 proxy refused the credentials"),
            TunnelError::SocksReply { code } => {
                write!(f, "socks5 proxy failed: {}", socks5::reply_text(*code))
            }
            TunnelError::TooLong(what) => {
                write!(f, "{what} is longer than socks5 allows (255 bytes)")
            }
        }
    }
}

impl std::error::Error for TunnelError {}

#[cfg(test)]
mod tests;
