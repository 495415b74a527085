//! The fault matrix: every kind of failure the suite injects, the case that injects it, and
//! what a caller of keel sees.
//!
//! [`FAULT_KINDS`] is the one list. The scorecard's "Fault matrix" section is drawn from it, and
//! so is the README's "Failure behaviour" table ([`failure_table`]; a test keeps the README in
//! step). Each entry names a case of the [`suite`](mod@crate::suite), which asserts the error kind
//! and stage (or the recovery) on every (backend, runtime) pair, or reports the capability the
//! backend lacks.

use std::fmt::Write as _;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultKind {
    /// What goes wrong, in a few words.
    pub fault: &'static str,
    /// The suite case that injects it.
    pub case: &'static str,
    /// What the caller sees: the error kind and stage, or the recovery.
    pub sees: &'static str,
    /// Whether keel retries it (with the default retry policy).
    pub retried: &'static str,
}

const fn kind(
    fault: &'static str,
    case: &'static str,
    sees: &'static str,
    retried: &'static str,
) -> FaultKind {
    FaultKind {
        fault,
        case,
        sees,
        retried,
    }
}

/// Every fault kind the suite injects, grouped by where it happens.
pub const FAULT_KINDS: &[FaultKind] = &[
    // Reaching the server.
    kind(
        "the port refuses the connection",
        "connection_refused",
        "`Connect` in `Connect`, unsent",
        "yes, any method",
    ),
    kind(
        "a TLS listener accepts and never answers",
        "connect_timeout_tls",
        "`Timeout(Connect)`",
        "yes, any method",
    ),
    kind(
        "the proxy refuses the connection",
        "proxy_refusing_connections_is_a_proxy_error",
        "`Connect` in `Proxy`, unsent",
        "yes, any method",
    ),
    kind(
        "a host name that does not resolve",
        "fault_name_does_not_resolve",
        "`Connect` in `Dns`, unsent",
        "yes, any method",
    ),
    kind(
        "a connect to an address that never answers",
        "fault_connect_never_answered",
        "`Timeout(Connect)` in `Connect`",
        "yes, any method",
    ),
    // TLS.
    kind(
        "a certificate for another host name",
        "fault_tls_name_mismatch",
        "`Tls` in `Tls`, unsent",
        "no",
    ),
    kind(
        "an expired certificate",
        "fault_tls_expired_certificate",
        "`Tls` in `Tls`, unsent",
        "no",
    ),
    kind(
        "`https://` to a port that speaks plain HTTP",
        "fault_https_to_a_plain_port",
        "`Tls` in `Tls`, unsent",
        "no",
    ),
    kind(
        "`http://` to a port that speaks TLS",
        "fault_http_to_a_tls_port",
        "`Protocol` in `AwaitHead`",
        "no",
    ),
    kind(
        "a certificate signed by an unknown CA",
        "untrusted_certificate",
        "`Tls` in `Tls`",
        "no",
    ),
    kind(
        "the server speaks only an older TLS version than the minimum",
        "min_tls_version_refuses_older_servers",
        "`Tls` in `Tls`",
        "no",
    ),
    kind(
        "the server refuses the client certificate (TLS 1.3, after the handshake)",
        "mtls_accepts_the_right_certificate_only",
        "`Tls` in `Tls`",
        "no",
    ),
    // The response head.
    kind(
        "the response head is later than the attempt timeout",
        "attempt_timeout",
        "`Timeout(Attempt)`",
        "idempotent requests",
    ),
    kind(
        "the server answers something that is not HTTP",
        "garbage_response",
        "`Protocol` in `AwaitHead`",
        "no (yes if provably unsent)",
    ),
    kind(
        "503 twice, then 200",
        "retry_503_twice_then_200",
        "the 200, after three attempts",
        "yes: 408, 429, 500, 502, 503, 504",
    ),
    kind(
        "429 with `Retry-After`",
        "retry_after_429",
        "the 200, after the server's delay",
        "yes, after `Retry-After` (up to 60 s)",
    ),
    // HTTP/2.
    kind(
        "HTTP/2 GOAWAY below an in-flight stream",
        "fault_h2_goaway_mid_stream",
        "the unprocessed stream is sent again on a new connection (any method); a processed stream cut off is `Body` in `Body`",
        "unprocessed streams, any method",
    ),
    kind(
        "HTTP/2 RST_STREAM with REFUSED_STREAM",
        "fault_h2_refused_stream",
        "the request is sent again and succeeds (any method)",
        "yes, any method",
    ),
    kind(
        "an HTTP/2 peer that grants no flow-control window",
        "fault_h2_no_flow_control_window",
        "`Timeout(Attempt)`; no more than the window was sent",
        "idempotent requests",
    ),
    // The response body.
    kind(
        "the body stalls after the head",
        "read_idle_timeout",
        "`Timeout(ReadIdle)` in `Body`",
        "buffered reads of idempotent requests",
    ),
    kind(
        "the call's deadline passes mid-body",
        "deadline_mid_body",
        "`Timeout(Deadline)` in `Body`",
        "no",
    ),
    kind(
        "a body shorter than its `Content-Length`",
        "truncated_body",
        "`Body` in `Body`",
        "buffered reads of idempotent requests",
    ),
    kind(
        "the connection is reset mid-body",
        "reset_mid_body",
        "`Body` in `Body`, the bytes before the reset delivered",
        "buffered reads of idempotent requests",
    ),
    kind(
        "a body over the configured limit",
        "body_over_limit",
        "`BodyTooLarge` (declared or counted)",
        "no",
    ),
    kind(
        "a compressed body cut short",
        "truncated_gzip_is_a_decode_error",
        "`Decode` in `Body`",
        "no",
    ),
    kind(
        "a decompression bomb",
        "decompression_bomb_stopped_at_the_limits",
        "`DecompressionRatio` or `DecodedTooLarge` in `Body`",
        "no",
    ),
    // HTTP/1.1 framing and connection management.
    kind(
        "a pooled connection the server closed while idle",
        "fault_idle_closed_connection",
        "the next request goes out on a fresh connection and succeeds (retries off)",
        "-",
    ),
    kind(
        "`Connection: close` and HTTP/1.0 answers on a socket left open",
        "fault_connection_close_answers",
        "every request on a new connection, all succeed",
        "-",
    ),
    kind(
        "the head trickled a byte every 100 ms",
        "fault_headers_trickled",
        "`Timeout(Attempt)`; the next request on a new connection",
        "idempotent requests",
    ),
    kind(
        "a 64 MiB header section",
        "fault_header_section_over_limit",
        "`Protocol` (hyper, smol) or `Body` (libcurl) in `AwaitHead`, memory bounded by the backend's fixed limit",
        "no",
    ),
    kind(
        "a malformed chunk size",
        "fault_malformed_chunk_size",
        "`Protocol` or `Body` in `Body`",
        "buffered reads of idempotent requests",
    ),
    kind(
        "a body longer than its `Content-Length`",
        "fault_body_longer_than_content_length",
        "the declared bytes; the rest never becomes the next answer",
        "-",
    ),
    kind(
        "two conflicting `Content-Length`s",
        "fault_conflicting_content_lengths",
        "`Protocol` in `AwaitHead`",
        "no",
    ),
    kind(
        "both `Transfer-Encoding: chunked` and `Content-Length`",
        "fault_chunked_and_content_length",
        "`Protocol` in `AwaitHead` (RFC 9112 6.3)",
        "no",
    ),
    kind(
        "100 and 103 before the final answer",
        "fault_informational_before_final",
        "the final 200 and its body",
        "-",
    ),
    kind(
        "204 and 304 with a stray body",
        "fault_no_content_stray_body",
        "an empty body; the stray bytes never become the next answer",
        "-",
    ),
    kind(
        "HEAD answered with a `Content-Length`",
        "fault_head_with_content_length",
        "an empty body at once; the connection is reused",
        "-",
    ),
    kind(
        "413 before the server read the 5 MiB upload, then a close",
        "fault_early_413",
        "the 413 answer (`Status(413)` from `error_for_status`), never a hang",
        "no",
    ),
    // Through the chaos proxy: each on plain HTTP/1.1, HTTP/1.1 over TLS and HTTP/2 over TLS.
    kind(
        "every byte late (150 ms first, 5 ms per chunk), within the limits",
        "fault_chaos_delay_within_timeouts",
        "the whole answer, and the whole upload",
        "-",
    ),
    kind(
        "every byte in a segment of its own, both ways, TLS handshake included",
        "fault_chaos_one_byte_segments",
        "the whole answer",
        "-",
    ),
    kind(
        "the body throttled to 200 KB/s",
        "fault_chaos_throttled_body",
        "the whole body, at that pace",
        "-",
    ),
    kind(
        "the first byte back later than the attempt timeout",
        "fault_chaos_delay_past_attempt_timeout",
        "`Timeout(Attempt)`; the late connection is not reused",
        "idempotent requests",
    ),
    kind(
        "the answer trickles in a byte every 50 ms",
        "fault_chaos_trickled_head_past_attempt_timeout",
        "`Timeout(Attempt)`, however steadily bytes arrive",
        "idempotent requests",
    ),
    kind(
        "the answer stops mid-head, the connection left open",
        "fault_chaos_stall_mid_headers",
        "`Timeout(Attempt)`; the stalled connection is not reused",
        "idempotent requests",
    ),
    kind(
        "the answer stops mid-body, the connection left open",
        "fault_chaos_stall_mid_body",
        "`Timeout(ReadIdle)` in `Body`, the bytes before delivered",
        "buffered reads of idempotent requests",
    ),
    kind(
        "FIN mid-head",
        "fault_chaos_close_mid_headers",
        "`Body` in `AwaitHead`",
        "idempotent requests, on a fresh connection",
    ),
    kind(
        "RST mid-head",
        "fault_chaos_reset_mid_headers",
        "`Body` in `AwaitHead`",
        "idempotent requests, on a fresh connection",
    ),
    kind(
        "FIN mid-head, then a retry",
        "fault_chaos_close_then_retry_on_fresh_connection",
        "the whole answer, from a fresh connection",
        "yes",
    ),
    kind(
        "RST mid-head, then a retry",
        "fault_chaos_reset_then_retry_on_fresh_connection",
        "the whole answer, from a fresh connection",
        "yes",
    ),
    kind(
        "RST mid-body",
        "fault_chaos_reset_mid_body",
        "`Body` in `Body`, the bytes before delivered intact",
        "buffered reads of idempotent requests",
    ),
    kind(
        "FIN mid-body, short of the `Content-Length`",
        "fault_chaos_close_mid_body",
        "`Body` in `Body`, never a short success",
        "buffered reads of idempotent requests",
    ),
    kind(
        "FIN mid-body in a chunked body",
        "fault_chaos_close_mid_chunked_body",
        "`Body` in `Body`, never a short success",
        "buffered reads of idempotent requests",
    ),
    kind(
        "RST 256 KiB into a 16 MiB upload",
        "fault_chaos_reset_request_upload",
        "`Body` in `SendRequest` or `AwaitHead`, not unsent",
        "idempotent requests with a replayable body",
    ),
    kind(
        "FIN 256 KiB into a 16 MiB upload",
        "fault_chaos_close_request_upload",
        "`Body` in `SendRequest` or `AwaitHead`, not unsent",
        "idempotent requests with a replayable body",
    ),
    kind(
        "the upload stops reaching the server, the connection left open",
        "fault_chaos_stall_request_upload",
        "`Timeout(Attempt)`; the connection is not reused",
        "idempotent requests with a replayable body",
    ),
    kind(
        "the server's half of the TLS handshake never arrives",
        "fault_chaos_stall_tls_handshake",
        "`Timeout(Connect)`, unsent",
        "yes, any method",
    ),
    kind(
        "RST before the server's half of the TLS handshake",
        "fault_chaos_reset_tls_handshake",
        "`Tls` in `Tls`, unsent",
        "no",
    ),
    // The caller.
    kind(
        "an invalid header name from the caller",
        "invalid_header",
        "`InvalidRequest`, nothing sent",
        "no",
    ),
    kind(
        "a CR or LF in a header value, name or token the caller sets (request smuggling)",
        "fault_header_value_crlf",
        "`InvalidRequest` (`Config` for a default header), no connection made",
        "no",
    ),
    kind(
        "the caller's streaming request body fails midway",
        "fault_request_body_fails_midway",
        "`InvalidRequest` in `SendRequest`, the caller's error as the source; the connection is not reused",
        "no",
    ),
    kind(
        "the caller drops a response mid-body",
        "drop_response_mid_body",
        "its connection is closed, never reused",
        "-",
    ),
    kind(
        "the caller drops the request future while it waits",
        "drop_request_future",
        "its connection is released at once",
        "-",
    ),
];

/// The README's "Failure behaviour" table, in Markdown.
pub fn failure_table() -> String {
    let mut out =
        String::from("| fault | what the caller sees | retried | case |\n|---|---|---|---|\n");
    for k in FAULT_KINDS {
        let _ = writeln!(
            out,
            "| {} | {} | {} | `{}` |",
            k.fault, k.sees, k.retried, k.case
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_kind_names_a_case_of_the_suite_once() {
        let names = crate::suite::CASE_NAMES;
        for k in FAULT_KINDS {
            assert!(names.contains(&k.case), "{} is not a suite case", k.case);
        }
        for (i, k) in FAULT_KINDS.iter().enumerate() {
            assert!(
                FAULT_KINDS[..i]
                    .iter()
                    .all(|o| o.case != k.case && o.fault != k.fault),
                "{} is listed twice",
                k.case
            );
        }
    }

    #[test]
    fn the_readme_shows_the_failure_table() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&failure_table()),
            "README.md's \"Failure behaviour\" table is out of date (`cargo run -p \
             keel-conformance -- --failure-table` prints it); it should read:\n{}",
            failure_table()
        );
    }
}
