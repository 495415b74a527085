//! hyper errors turned into keel's error kinds and stages, as keel-hyper maps them.

use keel_core::{Error, ErrorKind, Stage};

/// Maps a failure before the response head arrived. `unsent` says that hyper gave the request
/// back without writing any of it.
pub(crate) fn from_send_error(err: hyper::Error, unsent: bool) -> Error {
    if keel_core::tls::is_handshake_alert(&err) {
        // TLS 1.3: the server refused the handshake after the client had finished its side.
        return keel_core::tls::handshake_refused(err);
    }
    let (kind, stage) = if err.is_user() || err.is_body_write_aborted() {
        // The caller's request body stream failed: our side, not the server's.
        (ErrorKind::InvalidRequest, Stage::SendRequest)
    } else if err.is_parse() || err.is_parse_status() {
        (ErrorKind::Protocol, Stage::AwaitHead)
    } else if unsent {
        (ErrorKind::Body, Stage::SendRequest)
    } else {
        (ErrorKind::Body, Stage::AwaitHead)
    };
    #[cfg(feature = "http2")]
    let unsent = unsent || h2_unprocessed(&err);
    let mapped = Error::new(kind).with_stage(stage).with_source(err);
    if unsent {
        mapped.with_unsent()
    } else {
        mapped
    }
}

/// Maps a failure while streaming a response body.
pub(crate) fn from_body_error(err: hyper::Error) -> Error {
    let kind = if err.is_parse() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Body
    };
    Error::new(kind).with_stage(Stage::Body).with_source(err)
}

/// Whether HTTP/2 says the server never processed the stream (RFC 9113, 8.7), so it is safe
/// to send again whatever its method: the server refused it (RST_STREAM `REFUSED_STREAM`), or
/// its GOAWAY named a last processed stream below this one (h2 fails exactly those streams,
/// and the ones opened after the GOAWAY, with the peer's GOAWAY; a processed stream the
/// connection then loses fails with an I/O error instead).
#[cfg(feature = "http2")]
fn h2_unprocessed(err: &hyper::Error) -> bool {
    keel_core::find_source::<h2::Error>(err).is_some_and(|e| {
        e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
    })
}
