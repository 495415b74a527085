//! What a call shows of itself: its spans and events (asserted with a capturing subscriber),
//! its hooks, and its metrics (with a recorder).

use std::collections::BTreeMap;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event as TraceEvent, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::*;
use crate::hooks::{Attempt, Event, Hook, WaitReason};

// ---------------------------------------------------------------------------------------------
// A capturing subscriber

#[derive(Clone, Debug, Default)]
struct SpanRec {
    name: &'static str,
    parent: Option<usize>,
    fields: BTreeMap<String, String>,
    closed: bool,
}

#[derive(Clone, Debug)]
struct EventRec {
    target: String,
    fields: BTreeMap<String, String>,
    /// The span it was recorded in (an index into `Log::spans`).
    span: Option<usize>,
}

impl EventRec {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }
}

#[derive(Debug, Default)]
struct Log {
    spans: Vec<SpanRec>,
    events: Vec<EventRec>,
    /// Live span ids (the registry reuses them once closed) → index in `spans`.
    live: BTreeMap<u64, usize>,
}

#[derive(Clone, Debug, Default)]
struct Capture(Arc<Mutex<Log>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut log = self.0.lock().unwrap();
        let parent = match attrs.parent() {
            Some(parent) => Some(parent.clone()),
            None if attrs.is_contextual() => ctx.current_span().id().cloned(),
            None => None,
        };
        let parent = parent.and_then(|p| log.live.get(&p.into_u64()).copied());
        let mut rec = SpanRec {
            name: attrs.metadata().name(),
            parent,
            ..SpanRec::default()
        };
        attrs.record(&mut Fields(&mut rec.fields));
        log.spans.push(rec);
        let index = log.spans.len() - 1;
        log.live.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: LayerContext<'_, S>) {
        let mut log = self.0.lock().unwrap();
        if let Some(&index) = log.live.get(&id.into_u64()) {
            values.record(&mut Fields(&mut log.spans[index].fields));
        }
    }

    fn on_event(&self, event: &TraceEvent<'_>, ctx: LayerContext<'_, S>) {
        let mut log = self.0.lock().unwrap();
        let span = event
            .parent()
            .cloned()
            .or_else(|| ctx.current_span().id().cloned())
            .and_then(|id| log.live.get(&id.into_u64()).copied());
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        log.events.push(EventRec {
            target: event.metadata().target().to_owned(),
            fields,
            span,
        });
    }

    fn on_close(&self, id: Id, _: LayerContext<'_, S>) {
        let mut log = self.0.lock().unwrap();
        if let Some(index) = log.live.remove(&id.into_u64()) {
            log.spans[index].closed = true;
        }
    }
}

impl Capture {
    /// Runs `f` with this capture as the thread's subscriber.
    fn during<R>(&self, f: impl FnOnce() -> R) -> R {
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::with_default(subscriber, f)
    }

    fn spans(&self) -> Vec<SpanRec> {
        self.0.lock().unwrap().spans.clone()
    }

    fn events(&self) -> Vec<EventRec> {
        self.0.lock().unwrap().events.clone()
    }

    /// Everything captured, as one string.
    fn dump(&self) -> String {
        let log = self.0.lock().unwrap();
        format!("{:?} {:?}", log.spans, log.events)
    }
}

fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(String::as_str)
}

// ---------------------------------------------------------------------------------------------
// Spans and events

#[test]
fn a_call_that_retried_and_was_redirected_is_one_span_with_a_child_per_attempt() {
    let capture = Capture::default();
    let c = retrying(policy().max_attempts(3));
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(302).header("location", "/moved"));
    m.push(Reply::status(200).chunk("done"));
    let body = capture.during(|| {
        m.run(async {
            let resp = c.get("/start?page=2").send().await?;
            resp.text().await
        })
    });
    assert_eq!(body.unwrap(), "done");

    let spans = capture.spans();
    let calls: Vec<_> = spans.iter().filter(|s| s.name == "HTTP").collect();
    assert_eq!(calls.len(), 1, "{spans:#?}");
    let call = calls[0];
    let f = &call.fields;
    assert_eq!(field(f, "http.request.method"), Some("GET"));
    assert_eq!(field(f, "otel.name"), Some("GET"));
    assert_eq!(field(f, "otel.kind"), Some("client"));
    assert_eq!(field(f, "server.address"), Some("h"));
    assert_eq!(field(f, "server.port"), Some("80"));
    assert_eq!(field(f, "url.full"), Some("http://h/start?page=2"));
    assert_eq!(field(f, "http.response.status_code"), Some("200"));
    assert_eq!(field(f, "network.protocol.version"), Some("1.1"));
    assert_eq!(field(f, "error.type"), None);
    assert!(call.closed, "the call's span ends with its body");

    let call_index = spans.iter().position(|s| s.name == "HTTP").unwrap();
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "HTTP attempt").collect();
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    for (i, (attempt, status)) in attempts.iter().zip(["503", "302", "200"]).enumerate() {
        assert_eq!(attempt.parent, Some(call_index), "attempt {i}");
        assert_eq!(
            field(&attempt.fields, "http.response.status_code"),
            Some(status)
        );
        let resend = (i > 0).then(|| i.to_string());
        assert_eq!(
            field(&attempt.fields, "http.request.resend_count"),
            resend.as_deref(),
            "attempt {i}"
        );
        assert!(attempt.closed);
    }
    assert_eq!(field(&attempts[0].fields, "error.type"), Some("503"));
    assert_eq!(
        field(&attempts[2].fields, "url.full"),
        Some("http://h/moved"),
        "each attempt names the URL it went to"
    );

    let events = capture.events();
    let retry = events
        .iter()
        .find(|e| e.message() == "retrying")
        .expect("a retry event");
    assert_eq!(retry.target, "keel::retry");
    assert_eq!(retry.span, Some(call_index), "on the call's span");
    assert_eq!(field(&retry.fields, "attempt"), Some("2"));
    assert_eq!(field(&retry.fields, "delay_ms"), Some("100"));
    assert!(
        field(&retry.fields, "reason").is_some_and(|r| r.contains("503")),
        "{retry:?}"
    );
    let redirect = events
        .iter()
        .find(|e| e.message() == "following redirect")
        .expect("a redirect event");
    assert_eq!(redirect.span, Some(call_index));
    assert_eq!(field(&redirect.fields, "to"), Some("http://h/moved"));
    assert_eq!(
        field(&redirect.fields, "http.response.status_code"),
        Some("302")
    );
}

#[test]
fn a_failed_call_records_its_error_type_on_both_spans() {
    let capture = Capture::default();
    let c = single_attempt()
        .base_url("http://h")
        .attempt_timeout(secs(2))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::never());
    let err = capture.during(|| m.run(c.get("x").send())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Attempt));
    let spans = capture.spans();
    for name in ["HTTP", "HTTP attempt"] {
        let span = spans.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            field(&span.fields, "error.type"),
            Some("attempt_timeout"),
            "{name}"
        );
        assert_eq!(field(&span.fields, "otel.status_code"), Some("ERROR"));
        assert!(span.closed);
    }
}

#[test]
fn waits_and_breaker_changes_are_events_on_the_call() {
    let capture = Capture::default();
    let c = single_attempt()
        .base_url("http://h")
        .rate_limit(crate::RateLimit::per_second(1).unwrap().burst(1).unwrap())
        .circuit_breaker(
            crate::BreakerPolicy::builder()
                .consecutive_failures(1)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200));
    m.push(Reply::status(503));
    capture.during(|| {
        m.run(async {
            c.get("a").send().await.unwrap();
            c.get("b").send().await.unwrap();
        })
    });
    let events = capture.events();
    let wait = events
        .iter()
        .find(|e| e.target == "keel::wait")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(field(&wait.fields, "reason"), Some("rate limit"));
    assert_eq!(field(&wait.fields, "delay_ms"), Some("1000"));
    assert!(wait.span.is_some(), "on the call's span");
    let breaker = events
        .iter()
        .find(|e| e.target == "keel::breaker")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(field(&breaker.fields, "from"), Some("closed"));
    assert_eq!(field(&breaker.fields, "to"), Some("open"));
}

#[test]
fn traces_and_debug_output_never_show_credentials() {
    let capture = Capture::default();
    let c = Client::<MockTransport>::builder()
        .base_url("http://h")
        .sensitive_header("x-api-key")
        .retry_policy(
            policy()
                .max_attempts(2)
                .jitter(crate::Jitter::None)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(302).header("location", "/next?sig=s1gn4ture"));
    m.push(Reply::status(401).header("set-cookie", "session=c00kie-from-server"));
    let request = c
        .get("http://user:hunter2@h/private?X-Amz-Signature=s1gn4ture&page=1")
        .bearer_auth("b34rer-t0ken")
        .header("cookie", "session=c00kie-v4lue")
        .header("x-api-key", "k3y-v4lue");
    let shown_builder = format!("{request:?}");
    let result = capture.during(|| m.run(async { request.send().await?.error_for_status().await }));
    let err = result.unwrap_err();
    let shown = format!("{} {shown_builder} {err:?} {err} {c:?}", capture.dump());
    for secret in [
        "hunter2",
        "b34rer-t0ken",
        "c00kie-v4lue",
        "c00kie-from-server",
        "k3y-v4lue",
        "s1gn4ture",
    ] {
        assert!(!shown.contains(secret), "{secret} printed in: {shown}");
    }
    assert!(shown.contains("REDACTED"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Hooks

/// Records what it sees, and stamps each attempt.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
}

impl Hook for Arc<Recorder> {
    fn before_attempt(
        &self,
        attempt: &Attempt,
        request: &mut http::Request<Body>,
    ) -> Result<(), Error> {
        self.seen.lock().unwrap().push(format!(
            "before #{} {}{}",
            attempt.number(),
            request.uri().path(),
            if attempt.is_hedge() { " hedge" } else { "" }
        ));
        request
            .headers_mut()
            .insert("x-attempt", attempt.number().into());
        Ok(())
    }

    fn after_response(
        &self,
        attempt: &Attempt,
        response: &mut http::Response<ResponseBody>,
    ) -> Result<(), Error> {
        self.seen.lock().unwrap().push(format!(
            "after #{} {}",
            attempt.number(),
            response.status().as_u16()
        ));
        Ok(())
    }

    fn on_event(&self, event: &Event<'_>) {
        let line = match event {
            Event::Retry(e) => format!("retry {} in {:?}", e.attempt, e.delay),
            Event::Redirect(e) => format!("redirect {}", e.hop.to()),
            Event::Wait(e) => format!("wait {} {:?}", e.reason, e.delay),
            Event::Breaker(e) => format!("breaker {:?}", e.transition.to),
            Event::Hedge(e) => format!("hedge after {:?}", e.after),
        };
        self.seen.lock().unwrap().push(line);
    }
}

#[test]
fn hooks_see_every_attempt_response_and_decision_in_order() {
    let hook = Arc::new(Recorder::default());
    let c = retrying_builder(policy().max_attempts(3).base_delay(millis(100)))
        .hook(hook.clone())
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(302).header("location", "/moved"));
    m.push(Reply::status(200));
    let resp = m.run(c.get("/start").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        *hook.seen.lock().unwrap(),
        [
            "before #1 /start",
            "after #1 503",
            "retry 2 in 100ms",
            "before #2 /start",
            "after #2 302",
            "redirect http://h/moved",
            "before #3 /moved",
            "after #3 200",
        ]
    );
    // The stamp applies to its attempt: each carried its own number.
    let stamps: Vec<String> = m
        .requests()
        .iter()
        .map(|r| values(&r.headers, "x-attempt").join(","))
        .collect();
    assert_eq!(stamps, ["1", "2", "3"]);
}

#[test]
fn hooks_run_after_the_policies_admit_so_a_token_is_fresh_when_the_request_leaves() {
    let hook = Arc::new(Recorder::default());
    let c = single_attempt()
        .base_url("http://h")
        .rate_limit(crate::RateLimit::per_second(1).unwrap().burst(1).unwrap())
        .hook(hook.clone())
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(async {
        c.get("a").send().await.unwrap();
        c.get("b").send().await.unwrap();
    });
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "before #1 /a",
            "after #1 200",
            "wait rate limit Some(1s)",
            "before #1 /b",
            "after #1 200"
        ]
    );
    assert_eq!(m.requests()[1].at, secs(1), "sent when the wait was over");
}

#[test]
fn an_async_hook_can_wait_and_its_edit_applies_to_every_attempt() {
    let refreshed = Arc::new(AtomicUsize::new(0));
    let count = refreshed.clone();
    let c = retrying_builder(policy().max_attempts(2).base_delay(millis(100)));
    let timer_slot: Arc<Mutex<Option<Arc<dyn Timer>>>> = Arc::default();
    let slot = timer_slot.clone();
    let c = c
        .before_attempt_async(move |mut request, attempt| {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let timer = slot.lock().unwrap().clone().expect("the timer is set");
            async move {
                // A token refresh that takes half a second of (virtual) time.
                timer.sleep_until(timer.now() + millis(500)).await;
                let value = format!("Bearer token-{n}-for-attempt-{}", attempt.number());
                request.headers_mut().insert(
                    http::header::AUTHORIZATION,
                    HeaderValue::from_str(&value).unwrap(),
                );
                Ok(request)
            }
        })
        .build()
        .unwrap();
    *timer_slot.lock().unwrap() = Some(c.transport().timer().clone());
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(200));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(refreshed.load(Ordering::SeqCst), 2, "once per attempt");
    let log = m.requests();
    assert_eq!(
        values(&log[0].headers, AUTHORIZATION),
        ["Bearer token-1-for-attempt-1"]
    );
    assert_eq!(
        values(&log[1].headers, AUTHORIZATION),
        ["Bearer token-2-for-attempt-2"]
    );
    assert_eq!(log[0].at, millis(500), "sent once the hook was done");
    assert_eq!(log[1].at, millis(500 + 100 + 500));
}

#[test]
fn a_hook_error_fails_the_attempt_unsent_and_the_retry_policy_may_retry_it() {
    let failures = Arc::new(AtomicUsize::new(0));
    let count = failures.clone();
    let c = retrying_builder(policy().max_attempts(3).base_delay(millis(100)))
        .before_attempt(move |attempt, _request| {
            if attempt.number() == 1 {
                count.fetch_add(1, Ordering::SeqCst);
                return Err(Error::new(ErrorKind::Connect).with_source("token endpoint down"));
            }
            Ok(())
        })
        .build()
        .unwrap();
    let m = mock(&c);
    let resp = m.run(c.post("x").body("not idempotent").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(failures.load(Ordering::SeqCst), 1);
    assert_eq!(
        m.request_count(),
        1,
        "the failed attempt never reached the transport"
    );
}

#[test]
fn an_after_response_hook_can_turn_a_response_into_an_error_the_policies_see() {
    let c = retrying_builder(policy().max_attempts(2).base_delay(millis(100)))
        .after_response(|_, response| {
            // An API that says "try again" in a header of a 200.
            if response.headers().contains_key("x-overloaded") {
                return Err(Error::new(ErrorKind::Body).with_source("overloaded"));
            }
            Ok(())
        })
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).header("x-overloaded", "1"));
    m.push(Reply::status(200).chunk("ok"));
    let body = m.run(async { c.get("x").send().await?.text().await });
    assert_eq!(body.unwrap(), "ok");
    assert_eq!(m.request_count(), 2);
}

#[test]
fn hedges_are_events_and_their_attempts_are_marked() {
    let hook = Arc::new(Recorder::default());
    let c = Client::<MockTransport>::builder()
        .base_url("http://h")
        .hedge(crate::HedgePolicy::after(millis(50)))
        .hook(hook.clone())
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(secs(1)));
    m.push(Reply::status(200).head_at(millis(60)));
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "before #1 /x",
            "hedge after 50ms",
            "before #2 /x hedge",
            "after #2 200"
        ]
    );
}

#[test]
fn on_event_sees_wait_reasons_for_in_flight_limits() {
    let seen: Arc<Mutex<Vec<WaitReason>>> = Arc::default();
    let log = seen.clone();
    let c = single_attempt()
        .base_url("http://h")
        .max_in_flight(1)
        .on_event(move |event| {
            if let Event::Wait(wait) = event {
                log.lock().unwrap().push(wait.reason);
            }
        })
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(200).head_at(secs(1)));
    m.push(Reply::status(200));
    m.run(async {
        let a = async { c.get("a").send().await?.bytes().await };
        let b = async { c.get("b").send().await?.bytes().await };
        let (a, b) = futures_util::future::join(a, b).await;
        drop((a.unwrap(), b.unwrap()));
    });
    assert_eq!(*seen.lock().unwrap(), [WaitReason::InFlight]);
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[cfg(feature = "metrics")]
#[test]
fn metrics_count_attempts_errors_and_time_calls() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let c = retrying(policy().max_attempts(2));
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(503));
    metrics::with_local_recorder(&recorder, || {
        let resp = m.run(c.get("x").send()).unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        m.push(Reply::fail(connect_refused()));
        m.push(Reply::fail(connect_refused()));
        m.run(c.get("y").send()).unwrap_err();
    });
    let mut counters = BTreeMap::new();
    let mut histograms = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        match value {
            DebugValue::Counter(n) => {
                counters.insert(name, n);
            }
            DebugValue::Histogram(v) => {
                histograms.insert(name, v.len());
            }
            DebugValue::Gauge(_) => {}
        }
    }
    assert_eq!(
        counters.get("keel.client.attempts{keel.hedge=false,server.address=h}"),
        Some(&4),
        "{counters:#?}"
    );
    let retries: u64 = counters
        .iter()
        .filter(|(k, _)| k.starts_with("keel.client.retries{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(retries, 2, "{counters:#?}");
    assert_eq!(
        counters.get("keel.client.errors{error.type=connect}"),
        Some(&1),
        "{counters:#?}"
    );
    assert_eq!(
        histograms.get(
            "http.client.request.duration{error.type=503,http.request.method=GET,\
             http.response.status_code=503,server.address=h,server.port=80}"
        ),
        Some(&1),
        "{histograms:#?}"
    );
    assert_eq!(
        histograms.get(
            "http.client.request.duration{error.type=connect,http.request.method=GET,\
             server.address=h,server.port=80}"
        ),
        Some(&1),
        "{histograms:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Trace context

#[cfg(feature = "opentelemetry")]
#[test]
fn every_attempt_carries_the_w3c_trace_context_of_its_own_span() {
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("keel-test")));
    let c = retrying_builder(policy().max_attempts(2).base_delay(millis(100)))
        .propagate_trace_context(true)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(Reply::status(503));
    m.push(Reply::status(200));
    let trace_id = tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("handle order");
        let trace_id = outer.context().span().span_context().trace_id();
        let _entered = outer.enter();
        m.run(c.get("x").send()).unwrap();
        trace_id
    });
    let log = m.requests();
    let parents: Vec<&str> = log
        .iter()
        .map(|r| r.headers["traceparent"].to_str().unwrap())
        .collect();
    assert_eq!(parents.len(), 2);
    for parent in &parents {
        let parts: Vec<&str> = parent.split('-').collect();
        assert_eq!(parts.len(), 4, "{parent}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], trace_id.to_string(), "the caller's trace");
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01", "sampled");
    }
    assert_ne!(parents[0], parents[1], "each attempt is its own span");
    drop(log);

    // Without a tracing-opentelemetry layer there is no trace id, and no header.
    m.push(Reply::status(200));
    m.run(c.get("y").send()).unwrap();
    assert!(!m.requests()[2].headers.contains_key("traceparent"));
}

#[test]
fn a_response_hides_the_headers_the_client_marked_and_a_status_error_says_when_to_come_back() {
    let c = single_attempt()
        .base_url("http://h")
        .sensitive_header("x-session-token")
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(
        Reply::status(429)
            .header("x-session-token", "t0p-s3cret")
            .header("retry-after", "7"),
    );
    let resp = m.run(c.get("x").send()).unwrap();
    assert!(!format!("{:?}", resp.headers()).contains("t0p-s3cret"));
    let err = m.run(resp.error_for_status()).unwrap_err();
    assert_eq!(err.retry_in(), Some(secs(7)));
    assert!(!format!("{err:?}").contains("t0p-s3cret"));

    // A 403 is "come back later" only when the server says when.
    m.push(Reply::status(403));
    let err = m
        .run(async { c.get("y").send().await?.error_for_status().await })
        .unwrap_err();
    assert_eq!(err.retry_in(), None);
    m.push(
        Reply::status(403)
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", "0"),
    );
    let err = m
        .run(async { c.get("z").send().await?.error_for_status().await })
        .unwrap_err();
    assert_eq!(
        err.retry_in(),
        Some(Duration::ZERO),
        "a reset in the past: now"
    );
}
