//! isahc and libcurl errors turned into keel's error kinds and stages.
//!
//! isahc keeps libcurl's error as the source of its own, so the mapping reads the `CURLcode`,
//! which is more precise than isahc's kinds. The isahc error stays the source of the keel error.

use std::io;

use keel_core::{find_in_chain, Error, ErrorKind, Stage, TimeoutPhase};

/// Maps a failure of `send_async`: the response head never arrived.
pub(crate) fn from_send_error(err: &isahc::Error) -> Error {
    // A failing request body stream: our own error, already mapped.
    if let Some(found) = find_in_chain(err) {
        return found.clone();
    }
    let connected = err.remote_addr().is_some();
    let (kind, stage) = match keel_core::find_source::<curl::Error>(err) {
        Some(curl) => head_failure(curl, connected),
        None => isahc_failure(err.kind(), connected),
    };
    let mapped = Error::new(kind).with_source(err.clone());
    match stage {
        Some(stage) => mapped.with_stage(stage),
        None => mapped,
    }
}

/// Maps a failure while reading a response body, as isahc's body reader reports it.
///
/// A reply that isn't HTTP is a protocol error; everything else (a truncated body, a reset, an
/// HTTP/2 stream or framing error) is the connection failing mid-body, as keel-hyper reports it.
pub(crate) fn from_body_error(err: io::Error) -> Error {
    let kind = match keel_core::find_source::<curl::Error>(&err) {
        Some(curl)
            if curl.code() == WEIRD_SERVER_REPLY
                || curl.is_unsupported_protocol()
                || curl.is_bad_content_encoding() =>
        {
            ErrorKind::Protocol
        }
        _ => ErrorKind::Body,
    };
    Error::new(kind).with_stage(Stage::Body).with_source(err)
}

/// The kind and stage of a time-out reported by libcurl (`CURLE_OPERATION_TIMEDOUT`).
///
/// keel sets two time limits on libcurl: the connect timeout, and each transfer's bound by the
/// call's deadline ([`CallDeadline`](keel_core::CallDeadline), plus a little slack). The code is
/// the same for both; what tells them apart is whether the connection was up. isahc keeps the
/// address of the connection the transfer used ([`isahc::Error::remote_addr`]), which libcurl
/// (8.x) records only once the whole connection, TLS included, is established, or at once for
/// a reused one.
///
/// - Not connected: the connect timeout ran out while resolving, connecting or in the TLS
///   handshake (libcurl doesn't say which: the stage is the connect stage). Nothing was sent.
/// - Connected: the call's deadline cut the transfer, which may have reached the server, so it
///   is not unsent.
fn timed_out(connected: bool) -> (ErrorKind, Option<Stage>) {
    if connected {
        (
            ErrorKind::Timeout(TimeoutPhase::Deadline),
            Some(Stage::AwaitHead),
        )
    } else {
        (
            ErrorKind::Timeout(TimeoutPhase::Connect),
            Some(Stage::Connect),
        )
    }
}

/// The kind and stage of a libcurl error before the response head; `connected` says whether
/// the transfer had a connection (see [`timed_out`]).
///
/// isahc reads libcurl's errors from the multi handle, which carries the `CURLcode` but not
/// libcurl's message, so the code is all there is to go on.
fn head_failure(err: &curl::Error, connected: bool) -> (ErrorKind, Option<Stage>) {
    if err.is_couldnt_resolve_host() || err.is_couldnt_resolve_proxy() {
        (ErrorKind::Connect, Some(Stage::Dns))
    } else if err.is_couldnt_connect() || err.is_interface_failed() {
        // `INTERFACE_FAILED`: the socket couldn't be bound to the `local_address`.
        (ErrorKind::Connect, Some(Stage::Connect))
    } else if err.is_operation_timedout() {
        timed_out(connected)
    } else if err.is_ssl_connect_error()
        || err.is_peer_failed_verification()
        || err.is_ssl_cacert()
        || err.is_ssl_cacert_badfile()
        || err.is_ssl_certproblem()
        || err.is_ssl_cipher()
        || err.is_ssl_issuer_error()
        || err.is_ssl_crl_badfile()
        || err.is_ssl_engine_initfailed()
        || err.is_ssl_engine_notfound()
        || err.is_ssl_engine_setfailed()
        || err.is_use_ssl_failed()
        || matches!(
            err.code(),
            curl_sys::CURLE_SSL_PINNEDPUBKEYNOTMATCH | curl_sys::CURLE_SSL_INVALIDCERTSTATUS
        )
    {
        (ErrorKind::Tls, Some(Stage::Tls))
    } else if err.is_url_malformed() {
        (ErrorKind::InvalidUrl, None)
    } else if err.code() == WEIRD_SERVER_REPLY
        || err.is_unsupported_protocol()
        || err.is_http2_error()
        || err.is_bad_content_encoding()
        || err.is_write_error()
    {
        // `WRITE_ERROR` before the head: isahc refused a header line it could not parse.
        (ErrorKind::Protocol, Some(Stage::AwaitHead))
    } else if err.is_send_error() || err.is_send_fail_rewind() {
        (ErrorKind::Body, Some(Stage::SendRequest))
    } else if err.is_read_error() || err.is_aborted_by_callback() {
        // The request body could not be read (a stream error is found before we get here).
        (ErrorKind::InvalidRequest, Some(Stage::SendRequest))
    } else {
        // GOT_NOTHING (closed before answering), RECV_ERROR (reset), HTTP2_STREAM (stream
        // reset) and anything unexpected: the connection failed while waiting for the head.
        (ErrorKind::Body, Some(Stage::AwaitHead))
    }
}

/// The kind and stage of an isahc error that doesn't come from libcurl.
fn isahc_failure(kind: &isahc::error::ErrorKind, connected: bool) -> (ErrorKind, Option<Stage>) {
    use isahc::error::ErrorKind as K;
    match kind {
        K::NameResolution => (ErrorKind::Connect, Some(Stage::Dns)),
        K::ConnectionFailed => (ErrorKind::Connect, Some(Stage::Connect)),
        K::Timeout => timed_out(connected),
        K::BadServerCertificate | K::BadClientCertificate | K::TlsEngine => {
            (ErrorKind::Tls, Some(Stage::Tls))
        }
        K::InvalidTlsConfiguration | K::ClientInitialization => (ErrorKind::Config, None),
        K::InvalidRequest | K::RequestBodyNotRewindable => {
            (ErrorKind::InvalidRequest, Some(Stage::SendRequest))
        }
        K::ProtocolViolation | K::InvalidContentEncoding => {
            (ErrorKind::Protocol, Some(Stage::AwaitHead))
        }
        _ => (ErrorKind::Body, Some(Stage::AwaitHead)),
    }
}

/// Maps a failure of `send_async` on a request sent through a proxy: libcurl's failures to
/// resolve or reach the proxy, a `CONNECT` it answered with anything but 2xx
/// (`CURLE_COULDNT_CONNECT`: libcurl keeps the proxy's status to itself, and isahc doesn't
/// expose it) and a failed SOCKS5 handshake (`CURLE_PROXY`) are in [`Stage::Proxy`].
pub(crate) fn from_proxied_send_error(err: &isahc::Error) -> Error {
    match keel_core::find_source::<curl::Error>(err) {
        Some(curl) if is_proxy_failure(curl) => Error::new(ErrorKind::Connect)
            .with_stage(Stage::Proxy)
            .with_source(err.clone()),
        _ => from_send_error(err),
    }
}

fn is_proxy_failure(err: &curl::Error) -> bool {
    err.is_couldnt_connect() || err.is_couldnt_resolve_proxy() || err.code() == PROXY
}

/// `CURLE_PROXY` (libcurl 7.73): a proxy handshake failed (SOCKS, or TLS to the proxy). Not
/// in curl-sys.
const PROXY: curl_sys::CURLcode = 97;

/// `CURLE_WEIRD_SERVER_REPLY` (libcurl renamed it from its FTP-only name in 7.51; curl-sys
/// kept the old one).
const WEIRD_SERVER_REPLY: curl_sys::CURLcode = curl_sys::CURLE_FTP_WEIRD_SERVER_REPLY;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    use curl_sys::{
        CURLcode, CURLE_COULDNT_CONNECT as COULDNT_CONNECT,
        CURLE_COULDNT_RESOLVE_HOST as COULDNT_RESOLVE_HOST, CURLE_GOT_NOTHING as GOT_NOTHING,
        CURLE_HTTP2 as HTTP2, CURLE_HTTP2_STREAM as HTTP2_STREAM,
        CURLE_OPERATION_TIMEDOUT as OPERATION_TIMEDOUT, CURLE_PARTIAL_FILE as PARTIAL_FILE,
        CURLE_PEER_FAILED_VERIFICATION as PEER_FAILED_VERIFICATION, CURLE_RECV_ERROR as RECV_ERROR,
        CURLE_SEND_ERROR as SEND_ERROR, CURLE_SSL_CONNECT_ERROR as SSL_CONNECT_ERROR,
        CURLE_SSL_PINNEDPUBKEYNOTMATCH as SSL_PINNEDPUBKEYNOTMATCH,
        CURLE_UNSUPPORTED_PROTOCOL as UNSUPPORTED_PROTOCOL, CURLE_WRITE_ERROR as WRITE_ERROR,
    };

    /// A failure on a transfer that never got a connection.
    fn head(code: CURLcode) -> (ErrorKind, Option<Stage>) {
        head_failure(&curl::Error::new(code), false)
    }

    #[test]
    fn proxy_failures_are_in_the_proxy_stage() {
        for code in [
            COULDNT_CONNECT,
            curl_sys::CURLE_COULDNT_RESOLVE_PROXY,
            PROXY,
        ] {
            assert!(is_proxy_failure(&curl::Error::new(code)), "{code}");
        }
        for code in [COULDNT_RESOLVE_HOST, RECV_ERROR, SSL_CONNECT_ERROR] {
            assert!(!is_proxy_failure(&curl::Error::new(code)), "{code}");
        }
    }

    #[test]
    fn connect_failures_keep_their_stage() {
        use ErrorKind::*;
        assert_eq!(head(COULDNT_RESOLVE_HOST), (Connect, Some(Stage::Dns)));
        assert_eq!(head(COULDNT_CONNECT), (Connect, Some(Stage::Connect)));
        assert_eq!(
            head(curl_sys::CURLE_INTERFACE_FAILED),
            (Connect, Some(Stage::Connect))
        );
        assert_eq!(
            head(OPERATION_TIMEDOUT),
            (Timeout(TimeoutPhase::Connect), Some(Stage::Connect))
        );
    }

    #[test]
    fn a_time_out_on_a_connection_is_the_deadline_and_may_have_been_sent() {
        let timed_out = curl::Error::new(OPERATION_TIMEDOUT);
        assert_eq!(
            head_failure(&timed_out, true),
            (
                ErrorKind::Timeout(TimeoutPhase::Deadline),
                Some(Stage::AwaitHead)
            )
        );
        let isahc_kind = isahc::error::ErrorKind::Timeout;
        assert_eq!(
            isahc_failure(&isahc_kind, true),
            head_failure(&timed_out, true)
        );
        assert_eq!(isahc_failure(&isahc_kind, false), head(OPERATION_TIMEDOUT));

        // Through the whole mapping: isahc's error knows no connection here, so this one is
        // a connect time-out, unsent.
        let unconnected = isahc::Error::from(io::Error::other(timed_out));
        assert!(unconnected.remote_addr().is_none());
        let err = from_send_error(&unconnected);
        assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Connect));
        assert!(err.is_unsent());
    }

    #[test]
    fn tls_failures_are_tls_errors() {
        for code in [
            PEER_FAILED_VERIFICATION,
            SSL_CONNECT_ERROR,
            SSL_PINNEDPUBKEYNOTMATCH,
        ] {
            assert_eq!(head(code), (ErrorKind::Tls, Some(Stage::Tls)));
        }
    }

    #[test]
    fn broken_responses_are_protocol_errors() {
        for code in [WEIRD_SERVER_REPLY, UNSUPPORTED_PROTOCOL, WRITE_ERROR] {
            assert_eq!(head(code), (ErrorKind::Protocol, Some(Stage::AwaitHead)));
        }
    }

    #[test]
    fn failures_in_flight_are_body_errors() {
        assert_eq!(
            head(SEND_ERROR),
            (ErrorKind::Body, Some(Stage::SendRequest))
        );
        for code in [GOT_NOTHING, RECV_ERROR, HTTP2_STREAM] {
            assert_eq!(head(code), (ErrorKind::Body, Some(Stage::AwaitHead)));
        }
    }

    #[test]
    fn body_errors_keep_the_isahc_error_as_source() {
        // isahc's body reader wraps its error, which wraps libcurl's, in an `io::Error`.
        let isahc = isahc::Error::from(io::Error::other(curl::Error::new(PARTIAL_FILE)));
        let err = from_body_error(io::Error::other(isahc));
        assert_eq!(err.kind(), ErrorKind::Body);
        assert_eq!(err.stage(), Some(Stage::Body));
        let source = err.source().expect("a source");
        assert!(keel_core::find_source::<curl::Error>(source).is_some());

        let weird = isahc::Error::from(io::Error::other(curl::Error::new(WEIRD_SERVER_REPLY)));
        let err = from_body_error(io::Error::other(weird));
        assert_eq!(err.kind(), ErrorKind::Protocol);
        assert_eq!(err.stage(), Some(Stage::Body));

        let framing = isahc::Error::from(io::Error::other(curl::Error::new(HTTP2)));
        assert_eq!(
            from_body_error(io::Error::other(framing)).kind(),
            ErrorKind::Body
        );

        let aborted = from_body_error(io::ErrorKind::ConnectionAborted.into());
        assert_eq!(aborted.kind(), ErrorKind::Body);
    }

    #[test]
    fn a_failing_request_stream_comes_back_as_itself() {
        let ours = Error::new(ErrorKind::InvalidRequest)
            .with_stage(Stage::SendRequest)
            .with_source("stream failed");
        let isahc = isahc::Error::from(io::Error::other(ours));
        let err = from_send_error(&isahc);
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        assert_eq!(err.stage(), Some(Stage::SendRequest));
        assert!(!err.is_unsent());
    }

    #[test]
    fn errors_without_libcurl_use_isahcs_kind() {
        let refused = isahc::Error::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        let err = from_send_error(&refused);
        assert_eq!(err.kind(), ErrorKind::Connect);
        assert!(err.is_unsent());
        assert!(err.source().is_some());
    }
}
