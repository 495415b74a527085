//! The HTTP `CONNECT` handshake (RFC 9110, 9.3.6).

use http::{HeaderValue, StatusCode};

use super::TunnelError;

/// The longest `CONNECT` answer head accepted, in bytes.
pub const MAX_CONNECT_HEAD: usize = 16 * 1024;

#[derive(Debug)]
pub(super) struct HttpConnect {
    request: Option<Vec<u8>>,
    head: Vec<u8>,
    established: bool,
}

impl HttpConnect {
    pub(super) fn new(host: &str, port: u16, auth: Option<&HeaderValue>) -> Self {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = Vec::with_capacity(64 + authority.len() * 2);
        request.extend_from_slice(b"CONNECT ");
        request.extend_from_slice(authority.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        request.extend_from_slice(authority.as_bytes());
        request.extend_from_slice(b"\r\n");
        if let Some(auth) = auth {
            request.extend_from_slice(b"Proxy-Authorization: ");
            request.extend_from_slice(auth.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        Self {
            request: Some(request),
            head: Vec::new(),
            established: false,
        }
    }

    pub(super) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.request.take()
    }

    pub(super) fn read_limit(&self) -> usize {
        if self.established {
            0
        } else {
            // At least one byte, so a full buffer is reported as too large, not stalled.
            MAX_CONNECT_HEAD.saturating_sub(self.head.len()).max(1)
        }
    }

    pub(super) fn handle_read(&mut self, input: &[u8]) -> Result<(), TunnelError> {
        if self.established {
            return Err(TunnelError::EarlyData);
        }
        let searched = self.head.len().saturating_sub(2);
        self.head.extend_from_slice(input);
        let Some(end) = head_end(&self.head, searched) else {
            if self.head.len() >= MAX_CONNECT_HEAD {
                return Err(TunnelError::HeadTooLarge);
            }
            return Ok(());
        };
        if end > MAX_CONNECT_HEAD {
            return Err(TunnelError::HeadTooLarge);
        }
        let status = status(&self.head[..end])?;
        if !status.is_success() {
            // The connection is given up: a body after the head doesn't matter.
            return Err(TunnelError::Refused { status });
        }
        if self.head.len() > end {
            return Err(TunnelError::EarlyData);
        }
        self.established = true;
        self.head = Vec::new();
        Ok(())
    }

    pub(super) fn is_established(&self) -> bool {
        self.established
    }
}

/// The length of the head (up to and including its empty line), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The status of a response head: `HTTP/1.x SSS[ reason]`.
fn status(head: &[u8]) -> Result<StatusCode, TunnelError> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let rest = line
        .strip_prefix(b"HTTP/1.")
        .ok_or(TunnelError::Malformed("not an HTTP/1.x status line"))?;
    match rest {
        [minor, b' ', code @ ..] if minor.is_ascii_digit() && code.len() >= 3 => {
            let (digits, reason) = code.split_at(3);
            if !reason.is_empty() && reason[0] != b' ' {
                return Err(TunnelError::Malformed(
                    "a status code that isn't three digits",
                ));
            }
            StatusCode::from_bytes(digits)
                .map_err(|_| TunnelError::Malformed("a status code that isn't three digits"))
        }
        _ => Err(TunnelError::Malformed("not an HTTP/1.x status line")),
    }
}
