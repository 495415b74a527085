//! What a call shows of itself: `tracing` spans and events named as OpenTelemetry's HTTP
//! client conventions name them, the client's hooks, and (feature `metrics`) metrics.
//!
//! Every URL shown goes through [`redact::url`], and no header value is
//! ever a field.
//!
//! With no subscriber interested in target `keel`, a span costs a check of a cached level
//! and nothing is formatted.

use http::{Method, StatusCode, Uri, Version};
use tracing::field::Empty;
use tracing::Span;

use super::hooks::Event;
use super::ClientConfig;
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::redact;

/// Reports a policy's decision: as a `tracing` event (on the span current then: the call's),
/// to the client's hooks, and to the metrics.
pub(crate) fn event(config: &ClientConfig, event: &Event<'_>) {
    trace_event(event);
    #[cfg(feature = "metrics")]
    metrics::event(event);
    if !config.hooks.is_empty() {
        config.hooks.event(event);
    }
}

fn trace_event(event: &Event<'_>) {
    match event {
        Event::Retry(e) => tracing::info!(target: "keel::retry",
            attempt = e.attempt, reason = %e.reason, delay_ms = millis(e.delay),
            pacing = ?e.pacing, url.full = %redact::url(&e.url), "retrying"),
        Event::Redirect(e) => tracing::info!(target: "keel::redirect",
            from = %redact::url(e.hop.from()), to = %redact::url(e.hop.to()),
            http.response.status_code = e.hop.status().as_u16(),
            http.request.method = %e.hop.method(), "following redirect"),
        Event::Hedge(e) => tracing::info!(target: "keel::hedge",
            after_ms = millis(e.after), url.full = %redact::url(&e.url), "hedging a slow attempt"),
        Event::Breaker(e) => tracing::info!(target: "keel::breaker",
            from = state_name(&e.transition.from), to = state_name(&e.transition.to),
            server.address = e.origin.host(), server.port = e.origin.port(),
            partition = e.partition.as_deref(), "circuit breaker state changed"),
        Event::Wait(e) => tracing::info!(target: "keel::wait",
            reason = %e.reason, delay_ms = e.delay.map(millis), url.full = %redact::url(&e.url),
            "waiting before the attempt"),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn state_name(state: &crate::machine::breaker::BreakerState) -> &'static str {
    use crate::machine::breaker::BreakerState::*;
    match state {
        Closed => "closed",
        Open { .. } => "open",
        HalfOpen => "half_open",
        ForcedOpen => "forced_open",
        Disabled => "disabled",
    }
}

/// The host and port a URL goes to.
fn server(url: &Uri) -> (&str, u16) {
    let host = url.host().unwrap_or("");
    let port = url
        .port_u16()
        .unwrap_or(if url.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    (host, port)
}

/// The span of one call: from its first poll until its response's body ends (or the
/// response is dropped), or until it fails.
#[inline]
pub(crate) fn call_span(method: &Method, url: &Uri) -> Span {
    tracing::info_span!(target: "keel", "HTTP",
        otel.name = method.as_str(),
        otel.kind = "client",
        http.request.method = method.as_str(),
        server.address = server(url).0,
        server.port = server(url).1,
        url.full = %redact::url(url),
        http.response.status_code = Empty,
        network.protocol.version = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// The span of one attempt (a child of the call's): from when it is handed to the transport
/// until its head or error arrives.
#[inline]
pub(crate) fn attempt_span(
    call: &Span,
    method: &Method,
    url: &Uri,
    number: u32,
    hedge: bool,
) -> Span {
    if call.is_disabled() {
        return Span::none();
    }
    let span = tracing::info_span!(target: "keel", parent: call, "HTTP attempt",
        otel.name = method.as_str(),
        otel.kind = "client",
        http.request.method = method.as_str(),
        server.address = server(url).0,
        server.port = server(url).1,
        url.full = %redact::url(url),
        http.request.resend_count = Empty,
        keel.hedge = hedge,
        http.response.status_code = Empty,
        network.protocol.version = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    );
    if number > 1 {
        span.record("http.request.resend_count", number - 1);
    }
    span
}

/// Records a response head on `span`.
pub(crate) fn record_head(span: &Span, status: StatusCode, version: Version) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", status.as_u16());
    if let Some(version) = protocol_version(version) {
        span.record("network.protocol.version", version);
    }
    if status.is_client_error() || status.is_server_error() {
        span.record("error.type", status.as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// Records an error on `span`.
pub(crate) fn record_error(span: &Span, err: &Error) {
    if span.is_disabled() {
        return;
    }
    match err.status_code() {
        // The exact code, as `record_head` records it (`error_type` groups rare codes, for
        // metrics' labels).
        Some(status) => {
            span.record("http.response.status_code", status.as_u16());
            span.record("error.type", status.as_str());
        }
        None => {
            span.record("error.type", error_type(err.kind()));
        }
    }
    span.record("otel.status_code", "ERROR");
}

fn protocol_version(version: Version) -> Option<&'static str> {
    Some(match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

/// The `error.type` of an error: a short, stable name of its kind (for a status error, the
/// status code, as OpenTelemetry asks; rare codes grouped as `4xx`/`5xx`, so a metric's
/// labels stay few).
pub(crate) fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Timeout(TimeoutPhase::Connect) => "connect_timeout",
        ErrorKind::Timeout(TimeoutPhase::Attempt) => "attempt_timeout",
        ErrorKind::Timeout(TimeoutPhase::Deadline) => "deadline",
        ErrorKind::Timeout(TimeoutPhase::ReadIdle) => "read_idle_timeout",
        ErrorKind::Timeout(TimeoutPhase::PoolAcquire) => "pool_acquire_timeout",
        ErrorKind::Connect => "connect",
        ErrorKind::Tls => "tls",
        ErrorKind::Status(status) => status_str(status),
        ErrorKind::Body => "body",
        ErrorKind::Protocol => "protocol",
        ErrorKind::Decode => "decode",
        ErrorKind::BodyTooLarge { .. } => "body_too_large",
        ErrorKind::DecodedTooLarge { .. } => "decoded_too_large",
        ErrorKind::DecompressionRatio { .. } => "decompression_ratio",
        ErrorKind::InvalidUrl => "invalid_url",
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::Config => "config",
        ErrorKind::Redirect(_) => "redirect",
        ErrorKind::CircuitOpen => "circuit_open",
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::LineTooLong { .. } => "line_too_long",
        ErrorKind::EventTooLarge { .. } => "event_too_large",
    }
}

/// A status code as a `'static` string (for labels that must outlive the error).
fn status_str(status: StatusCode) -> &'static str {
    // The standard codes keel's policies act on; others are grouped by class.
    match status.as_u16() {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ if status.is_client_error() => "4xx",
        _ if status.is_server_error() => "5xx",
        _ => "_OTHER",
    }
}

/// Adds W3C trace context from `span`'s OpenTelemetry context to `headers` (unless they have
/// a `traceparent` already).
#[cfg(feature = "opentelemetry")]
pub(crate) fn inject_trace_context(span: &Span, headers: &mut http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    if span.is_disabled() || headers.contains_key("traceparent") {
        return;
    }
    let context = span.context();
    let otel = context.span();
    let span_context = otel.span_context();
    if !span_context.is_valid() {
        return;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    );
    if let Ok(value) = http::HeaderValue::from_str(&traceparent) {
        headers.insert("traceparent", value);
    }
    let state = span_context.trace_state().header();
    if !state.is_empty() {
        if let Ok(value) = http::HeaderValue::from_str(&state) {
            headers.insert("tracestate", value);
        }
    }
}

/// Metrics through the `metrics` facade: see the crate's feature `metrics`.
#[cfg(feature = "metrics")]
pub(crate) mod metrics {
    use std::time::Duration;

    use http::{Method, StatusCode, Uri};

    use super::{error_type, server, status_str, Event};
    use crate::error::ErrorKind;

    /// One call ended: its head arrived (`status`) or it failed (`error`), `elapsed` after
    /// its first poll.
    pub(crate) fn call(
        method: &Method,
        url: &Uri,
        elapsed: Duration,
        status: Option<StatusCode>,
        error: Option<ErrorKind>,
    ) {
        let (host, port) = server(url);
        let mut labels = vec![
            ("http.request.method", method.as_str().to_owned()),
            ("server.address", host.to_owned()),
            ("server.port", port.to_string()),
        ];
        if let Some(status) = status {
            labels.push(("http.response.status_code", status.as_u16().to_string()));
            if status.is_client_error() || status.is_server_error() {
                labels.push(("error.type", status_str(status).to_owned()));
            }
        }
        if let Some(kind) = error {
            labels.push(("error.type", error_type(kind).to_owned()));
            ::metrics::counter!("keel.client.errors", "error.type" => error_type(kind))
                .increment(1);
        }
        ::metrics::histogram!("http.client.request.duration", &labels)
            .record(elapsed.as_secs_f64());
    }

    /// One attempt was handed to the transport.
    pub(crate) fn attempt(url: &Uri, hedge: bool) {
        let (host, _) = server(url);
        ::metrics::counter!("keel.client.attempts", "server.address" => host.to_owned(),
            "keel.hedge" => if hedge { "true" } else { "false" })
        .increment(1);
    }

    pub(super) fn event(event: &Event<'_>) {
        match event {
            Event::Retry(e) => {
                ::metrics::counter!("keel.client.retries", "reason" => e.reason.to_string())
                    .increment(1)
            }
            Event::Redirect(_) => ::metrics::counter!("keel.client.redirects").increment(1),
            Event::Hedge(_) => ::metrics::counter!("keel.client.hedges").increment(1),
            Event::Breaker(e) => {
                let host = e.origin.host().to_owned();
                let partition = e.partition.as_deref().unwrap_or("").to_owned();
                ::metrics::counter!("keel.client.breaker.transitions",
                    "server.address" => host.clone(), "partition" => partition.clone(),
                    "to" => super::state_name(&e.transition.to))
                .increment(1);
                // 0 closed, 1 half-open, 2 open (forced too), -1 disabled.
                let value = match super::state_name(&e.transition.to) {
                    "closed" => 0.0,
                    "half_open" => 1.0,
                    "open" | "forced_open" => 2.0,
                    _ => -1.0,
                };
                ::metrics::gauge!("keel.client.breaker.state", "server.address" => host,
                    "partition" => partition)
                .set(value);
            }
            Event::Wait(e) => {
                ::metrics::counter!("keel.client.rate_limit.waits",
                    "reason" => e.reason.to_string())
                .increment(1);
                if let Some(delay) = e.delay {
                    ::metrics::histogram!("keel.client.rate_limit.wait.duration",
                        "reason" => e.reason.to_string())
                    .record(delay.as_secs_f64());
                }
            }
        }
    }
}
