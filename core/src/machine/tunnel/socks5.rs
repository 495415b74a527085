//! The SOCKS5 handshake: RFC 1928, with RFC 1929's user/password authentication.

use std::net::IpAddr;

use super::{SocksTarget, TunnelError};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0x00;
const USER_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE: u8 = 0xff;
const CONNECT: u8 = 0x01;

#[derive(Debug)]
pub(super) struct Socks5 {
    state: State,
    /// Bytes to write next.
    out: Option<Vec<u8>>,
    /// The user/password sub-negotiation, written if the proxy picks it.
    auth: Option<Vec<u8>>,
    /// The connect request, written once authenticated.
    request: Vec<u8>,
    /// The part of the current answer read so far.
    buf: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// `VER METHOD`: 2 bytes.
    ExpectMethod,
    /// `VER STATUS`: 2 bytes.
    ExpectAuth,
    /// `VER REP RSV ATYP`, then the bound address and port.
    ExpectReply,
    Established,
}

impl Socks5 {
    pub(super) fn new(
        target: SocksTarget,
        port: u16,
        credentials: Option<(&str, &str)>,
    ) -> Result<Self, TunnelError> {
        let mut request = vec![VERSION, CONNECT, 0];
        match target {
            SocksTarget::Ip(IpAddr::V4(ip)) => {
                request.push(0x01);
                request.extend_from_slice(&ip.octets());
            }
            SocksTarget::Ip(IpAddr::V6(ip)) => {
                request.push(0x04);
                request.extend_from_slice(&ip.octets());
            }
            SocksTarget::Name(name) => {
                let len = u8::try_from(name.len())
                    .ok()
                    .filter(|&l| l > 0)
                    .ok_or(TunnelError::TooLong("the host name"))?;
                request.push(0x03);
                request.push(len);
                request.extend_from_slice(name.as_bytes());
            }
        }
        request.extend_from_slice(&port.to_be_bytes());
        let (greeting, auth) = match credentials {
            None => (vec![VERSION, 1, NO_AUTH], None),
            Some((user, password)) => {
                let u = u8::try_from(user.len()).map_err(|_| TunnelError::TooLong("the user"))?;
                let p = u8::try_from(password.len())
                    .map_err(|_| TunnelError::TooLong("the password"))?;
                let mut auth = vec![1, u];
                auth.extend_from_slice(user.as_bytes());
                auth.push(p);
                auth.extend_from_slice(password.as_bytes());
                (vec![VERSION, 2, NO_AUTH, USER_PASSWORD], Some(auth))
            }
        };
        Ok(Self {
            state: State::ExpectMethod,
            out: Some(greeting),
            auth,
            request,
            buf: Vec::with_capacity(22),
        })
    }

    pub(super) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.take()
    }

    /// How many bytes the current answer still needs (known exactly once its first bytes are
    /// in).
    pub(super) fn read_limit(&self) -> usize {
        let want = match self.state {
            State::ExpectMethod | State::ExpectAuth => 2,
            State::ExpectReply => match self.buf.get(3) {
                None => 4,
                Some(0x01) => 4 + 4 + 2,
                Some(0x04) => 4 + 16 + 2,
                Some(0x03) => match self.buf.get(4) {
                    None => 5,
                    Some(&len) => 5 + usize::from(len) + 2,
                },
                // An unknown address type is refused as soon as it is read.
                Some(_) => 4,
            },
            State::Established => return 0,
        };
        want.saturating_sub(self.buf.len())
    }

    pub(super) fn handle_read(&mut self, input: &[u8]) -> Result<(), TunnelError> {
        for &byte in input {
            if self.state == State::Established {
                return Err(TunnelError::EarlyData);
            }
            self.buf.push(byte);
            self.step()?;
        }
        Ok(())
    }

    /// Acts on the answer once it is complete.
    fn step(&mut self) -> Result<(), TunnelError> {
        match self.state {
            State::ExpectMethod if self.buf.len() == 2 => {
                if self.buf[0] != VERSION {
                    return Err(TunnelError::Malformed("not a socks5 answer"));
                }
                match (self.buf[1], self.auth.take()) {
                    (NO_AUTH, _) => {
                        self.out = Some(std::mem::take(&mut self.request));
                        self.state = State::ExpectReply;
                    }
                    (USER_PASSWORD, Some(auth)) => {
                        self.out = Some(auth);
                        self.state = State::ExpectAuth;
                    }
                    (NO_ACCEPTABLE, _) => return Err(TunnelError::NoAcceptableMethod),
                    _ => return Err(TunnelError::Malformed("a method that wasn't offered")),
                }
                self.buf.clear();
            }
            State::ExpectAuth if self.buf.len() == 2 => {
                // RFC 1929 names the version of the sub-negotiation 1; some servers answer 5.
                if self.buf[1] != 0 {
                    return Err(TunnelError::AuthFailed);
                }
                self.out = Some(std::mem::take(&mut self.request));
                self.state = State::ExpectReply;
                self.buf.clear();
            }
            State::ExpectReply => {
                if self.buf.len() == 1 && self.buf[0] != VERSION {
                    return Err(TunnelError::Malformed("not a socks5 answer"));
                }
                if self.buf.len() == 2 && self.buf[1] != 0 {
                    return Err(TunnelError::SocksReply { code: self.buf[1] });
                }
                if self.buf.len() == 4 && !matches!(self.buf[3], 0x01 | 0x03 | 0x04) {
                    return Err(TunnelError::Malformed("an unknown address type"));
                }
                if self.buf.len() >= 4 && self.read_limit() == 0 {
                    self.state = State::Established;
                    self.buf = Vec::new();
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn is_established(&self) -> bool {
        self.state == State::Established
    }
}

/// RFC 1928's words for a reply code.
pub(super) fn reply_text(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "ttl expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown reply code",
    }
}
