//! [`Recorder`]: a transport wrapper that records a real backend's exchanges into a
//! [`Cassette`].

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::HeaderName;
use http::{HeaderMap, Method, Uri};
use http_body::{Frame, SizeHint};

use super::cassette::{Cassette, End, Exchange, Failure, Outcome};
use crate::body::{Body, ResponseBody};
use crate::error::Error;
use crate::machine::credentials::SensitiveHeaders;
use crate::transport::{Backend, BoxFuture, Capabilities, Timer, Transport, TransportConfig};

/// What replaces a secret in a cassette.
const REDACTED: &str = "REDACTED";

/// A [`Transport`] that forwards every attempt to `T` and records the exchange, for
/// [`MockTransport::replay`](super::MockTransport::replay) to answer from later.
///
/// It records the request's method, its URL as [`redact::url`](crate::redact::url()) prints it
/// (no password, no signature), its headers and its body when buffered (a stream is forwarded
/// unread, and recorded as `null`); the response's status and headers, and its body, copied as
/// it streams to the caller, who reads exactly what `T` sent. Header values are written as
/// `REDACTED` when they are credentials: the names of the default
/// [`SensitiveHeaders`] (`Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`), any
/// value marked [sensitive](http::HeaderValue::is_sensitive) (the client marks the credentials
/// it sends), and the names given to [`redact_header`](Recorder::redact_header). Bodies are
/// recorded as they are: a secret in a body (a login form, a token in a JSON answer) is in the
/// cassette too. Redaction happens when the cassette is taken, so names added late still apply.
///
/// Bodies are kept in memory until the recorder is dropped.
///
/// If `T` is a [`Backend`], so is `Recorder<T>`: `Client::<Recorder<HyperTransport>>::builder()
/// .build()` records through hyper, and [`Client::transport`](crate::Client::transport) gives
/// the recorder back to save its cassette.
///
/// Recording a real API goes through a real backend, `Client::<Recorder<HyperTransport>>`;
/// here the recorded transport is a mock, so the example runs anywhere:
///
/// ```
/// use keel_core::mock::{Answer, Matcher, MockTransport, Recorder, Rule};
/// use keel_core::Client;
///
/// let client = Client::<Recorder<MockTransport>>::builder()
///     .base_url("https://api.example.com")
///     .bearer_auth("s3cret")
///     .build()?;
/// let live = client.transport().inner().clone();
/// live.mount(Rule::when(Matcher::path("/v1/items")).respond(Answer::status(200).text("[1,2]")));
/// let body = live.run(async { client.get("/v1/items").send().await?.text().await })?;
///
/// let dir = std::env::temp_dir().join(format!("keel-doc-recorder-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("items.json");
/// client.transport().save(&path)?;
/// assert!(!std::fs::read_to_string(&path).unwrap().contains("s3cret"));
///
/// // Later, offline:
/// let replay = MockTransport::replay(&path)?;
/// let offline = Client::<MockTransport>::builder()
///     .base_url("https://api.example.com")
///     .build_with(replay.clone())?;
/// let again = replay.run(async { offline.get("/v1/items").send().await?.text().await })?;
/// assert_eq!(again, body);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), keel_core::Error>(())
/// ```
pub struct Recorder<T> {
    inner: T,
    state: Arc<RecorderState>,
}

#[derive(Default)]
struct RecorderState {
    slots: Mutex<Vec<Arc<Mutex<Slot>>>>,
    redact: Mutex<SensitiveHeaders>,
}

/// One exchange, filled in as it happens.
struct Slot {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
    outcome: SlotOutcome,
}

enum SlotOutcome {
    /// No head yet (or never: the attempt was dropped).
    Waiting,
    Failed(Failure),
    Response {
        status: u16,
        headers: HeaderMap,
        body: BytesMut,
        end: Option<End>,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T> Recorder<T> {
    /// Wraps `inner`, with nothing recorded yet.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            state: Arc::default(),
        }
    }

    /// Writes header `name`'s values as `REDACTED` too (`X-Api-Key`, say), in requests and
    /// responses.
    pub fn redact_header(&self, name: HeaderName) {
        lock(&self.state.redact).insert(name);
    }

    /// The transport it records.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// How many exchanges (attempts) it has recorded.
    pub fn len(&self) -> usize {
        lock(&self.state.slots).len()
    }

    /// True when nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The exchanges so far, redacted, in the order the attempts were sent.
    pub fn cassette(&self) -> Cassette {
        let sensitive = lock(&self.state.redact).clone();
        let slots = lock(&self.state.slots).clone();
        let exchanges = slots
            .iter()
            .map(|slot| {
                let slot = lock(slot);
                Exchange {
                    method: slot.method.to_string(),
                    url: crate::redact::url(&slot.uri).to_string(),
                    request_headers: redacted(&slot.headers, &sensitive),
                    request_body: slot.body.clone(),
                    outcome: match &slot.outcome {
                        SlotOutcome::Waiting => Outcome::NoHead,
                        SlotOutcome::Failed(f) => Outcome::Failed(f.clone()),
                        SlotOutcome::Response {
                            status,
                            headers,
                            body,
                            end,
                        } => Outcome::Response {
                            status: *status,
                            headers: redacted(headers, &sensitive),
                            body: Bytes::copy_from_slice(body),
                            end: end.clone().unwrap_or(End::Incomplete),
                        },
                    },
                }
            })
            .collect();
        Cassette { exchanges }
    }

    /// Writes [`cassette`](Recorder::cassette) to `path` as JSON (see [`Cassette::save`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        self.cassette().save(path)
    }
}

/// `headers` as name/value pairs, credentials as `REDACTED`.
fn redacted(headers: &HeaderMap, sensitive: &SensitiveHeaders) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if value.is_sensitive() || sensitive.contains(name) {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}

impl<T: Clone> Clone for Recorder<T> {
    /// A recorder of a clone of the transport, sharing this one's records.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: self.state.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Recorder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("inner", &self.inner)
            .field("exchanges", &self.len())
            .finish()
    }
}

impl<T: Transport> Transport for Recorder<T> {
    fn send(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
        let slot = Arc::new(Mutex::new(Slot {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            body: request.body().as_bytes(),
            outcome: SlotOutcome::Waiting,
        }));
        lock(&self.state.slots).push(slot.clone());
        let sending = self.inner.send(request);
        Box::pin(async move {
            match sending.await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let end = http_body::Body::is_end_stream(&body).then_some(End::Complete);
                    lock(&slot).outcome = SlotOutcome::Response {
                        status: parts.status.as_u16(),
                        headers: parts.headers.clone(),
                        body: BytesMut::new(),
                        end,
                    };
                    let tee = Tee { inner: body, slot };
                    Ok(http::Response::from_parts(parts, ResponseBody::new(tee)))
                }
                Err(err) => {
                    lock(&slot).outcome = SlotOutcome::Failed(Failure::of(&err));
                    Err(err)
                }
            }
        })
    }

    fn timer(&self) -> &Arc<dyn Timer> {
        self.inner.timer()
    }
}

impl<T: Backend> Backend for Recorder<T> {
    const NAME: &'static str = T::NAME;

    fn capabilities() -> Capabilities {
        T::capabilities()
    }

    /// `T` built from `config`, wrapped.
    fn from_config(config: &TransportConfig) -> Result<Self, Error> {
        T::from_config(config).map(Self::new)
    }
}

/// A response body passed through as it is, its data copied into the exchange.
struct Tee {
    inner: ResponseBody,
    slot: Arc<Mutex<Slot>>,
}

impl Tee {
    fn record(&self, f: impl FnOnce(&mut BytesMut, &mut Option<End>)) {
        if let SlotOutcome::Response { body, end, .. } = &mut lock(&self.slot).outcome {
            f(body, end);
        }
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let ended = self.inner.is_end_stream();
                self.record(|body, end| {
                    if let Some(data) = frame.data_ref() {
                        body.extend_from_slice(data);
                    }
                    if ended {
                        *end = Some(End::Complete);
                    }
                });
            }
            Poll::Ready(Some(Err(err))) => {
                let failure = Failure::of(err);
                self.record(|_, end| *end = Some(End::Failed(failure)));
            }
            Poll::Ready(None) => self.record(|_, end| {
                end.get_or_insert(End::Complete);
            }),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
