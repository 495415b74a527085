//! [`Cassette`]: recorded exchanges, as a [`Recorder`](super::Recorder) saves them and a
//! [`MockTransport`](super::MockTransport) replays them.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Answer, Matcher, Rule};
use crate::error::{Error, ErrorKind, Stage, TimeoutPhase};

/// The format version this build writes and reads.
const VERSION: u32 = 1;

/// Recorded exchanges: made by [`Recorder::cassette`](super::Recorder::cassette), saved as
/// JSON, replayed by [`MockTransport::from_cassette`](super::MockTransport::from_cassette).
///
/// The file is JSON:
///
/// ```json
/// { "keel_cassette": 1,
///   "interactions": [
///     { "request": { "method": "GET", "url": "http://127.0.0.1:8080/v1/items?page=2",
///                    "headers": ["authorization: REDACTED", "user-agent: keel/0.1.0"],
///                    "body": null },
///       "response": { "status": 200, "headers": ["content-type: application/json"],
///                     "body": { "text": "[1,2]" }, "end": "complete" } } ] }
/// ```
///
/// Headers are `"name: value"` strings, in the order sent or received; values that aren't
/// visible ASCII are stored lossily (as UTF-8 with replacement characters). A body is
/// `{"text": …}` when it is UTF-8, `{"base64": …}` otherwise, and `null` for a request body
/// that was a stream. A response's `end` is `"complete"`, `"incomplete"` (the caller stopped
/// reading, or hadn't finished when the cassette was taken) or `{"error": {…}}`. An exchange
/// whose attempt failed before a head has `"error"` instead of `"response"`; one the client gave
/// up on (a timeout) has neither. An error is
/// `{"kind": …, "stage": …, "unsent": …, "message": …}`, its kind one of `connect`, `tls`,
/// `body`, `protocol`, `timeout_connect`, `timeout_attempt`, `timeout_deadline`,
/// `timeout_read_idle`, its stage one of `dns`, `connect`, `tls`, `send_request`,
/// `await_head`, `body` (or absent).
#[derive(Clone, Default)]
pub struct Cassette {
    pub(crate) exchanges: Vec<Exchange>,
}

/// One recorded attempt.
#[derive(Clone, Debug)]
pub(crate) struct Exchange {
    pub(crate) method: String,
    /// Redacted.
    pub(crate) url: String,
    pub(crate) request_headers: Vec<(String, String)>,
    pub(crate) request_body: Option<Bytes>,
    pub(crate) outcome: Outcome,
}

#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// The attempt was dropped before its head.
    NoHead,
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
        end: End,
    },
    Failed(Failure),
}

#[derive(Clone, Debug)]
pub(crate) enum End {
    Complete,
    Incomplete,
    Failed(Failure),
}

#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    pub(crate) stage: Option<Stage>,
    pub(crate) unsent: bool,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn of(err: &Error) -> Self {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Self {
            kind: err.kind(),
            stage: err.stage(),
            unsent: err.is_unsent(),
            message,
        }
    }

    fn to_error(&self) -> Error {
        let mut err = Error::new(self.kind).with_source(format!("replayed: {}", self.message));
        if let Some(stage) = self.stage {
            err = err.with_stage(stage);
        }
        if self.unsent {
            err = err.with_unsent();
        }
        err
    }
}

impl Cassette {
    /// How many exchanges it holds.
    pub fn len(&self) -> usize {
        self.exchanges.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty()
    }

    /// The cassette as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        let file = WireFile {
            keel_cassette: VERSION,
            interactions: self.exchanges.iter().map(WireInteraction::from).collect(),
        };
        // Strings, numbers and lists only: serializing can't fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// Reads a cassette from JSON. Anything else (another version, a body that isn't valid
    /// base64, an unknown error kind) is [`ErrorKind::Config`] naming `cassette`.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let file: WireFile = serde_json::from_str(json).map_err(invalid)?;
        if file.keel_cassette != VERSION {
            return Err(invalid(format!(
                "cassette version {} (this keel reads version {VERSION})",
                file.keel_cassette
            )));
        }
        let exchanges = file
            .interactions
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                Exchange::try_from(w)
                    .map_err(|why| invalid(format!("interaction {}: {why}", i + 1)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { exchanges })
    }

    /// Writes the cassette to `path` as JSON. An I/O failure is [`ErrorKind::Config`] naming
    /// `cassette`, with the I/O error as its source.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json())
            .map_err(|e| invalid(format!("writing {}: {e}", path.display())))
    }

    /// Reads a cassette saved at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("reading {}: {e}", path.display())))?;
        Self::from_json(&json)
    }

    /// One rule per exchange, answering once, in recorded order.
    pub(crate) fn rules(&self) -> Vec<Rule> {
        self.exchanges
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let target = path_and_query(&x.url);
                let method = x.method.clone();
                let description = format!("{} {target} (recorded exchange #{})", x.method, i + 1);
                let matcher = Matcher::custom(description, move |r| {
                    r.method().as_str() == method
                        && path_and_query(&crate::redact::url(r.uri()).to_string()) == target
                });
                Rule::when(matcher).respond(x.answer()).up_to_n_times(1)
            })
            .collect()
    }
}

impl fmt::Debug for Cassette {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cassette")
            .field("exchanges", &self.exchanges.len())
            .finish()
    }
}

fn invalid(why: impl Into<crate::BoxError>) -> Error {
    Error::new(ErrorKind::Config)
        .with_setting("cassette")
        .with_source(why)
}

/// The path and query of a URL as printed, or the whole text if it doesn't parse.
fn path_and_query(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        Err(_) => url.to_owned(),
    }
}

impl Exchange {
    fn answer(&self) -> Answer {
        match &self.outcome {
            Outcome::NoHead => Answer::never(),
            Outcome::Failed(failure) => Answer::fail(failure.to_error()),
            Outcome::Response {
                status,
                headers,
                body,
                end,
            } => {
                let mut answer = Answer::status(*status);
                for (name, value) in headers {
                    answer = answer.header(name, value);
                }
                if !body.is_empty() {
                    answer = answer.chunk(body.clone());
                }
                match end {
                    End::Complete => answer,
                    End::Incomplete => answer.fail_body_because(
                        ErrorKind::Body,
                        "replayed: the recording of this body stops here (the caller had \
                         stopped reading it)"
                            .to_owned(),
                    ),
                    End::Failed(failure) => answer
                        .fail_body_because(failure.kind, format!("replayed: {}", failure.message)),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The JSON form
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct WireFile {
    keel_cassette: u32,
    interactions: Vec<WireInteraction>,
}

#[derive(Serialize, Deserialize)]
struct WireInteraction {
    request: WireRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<WireResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<WireFailure>,
}

#[derive(Serialize, Deserialize)]
struct WireRequest {
    method: String,
    url: String,
    headers: Vec<String>,
    body: Option<WireBody>,
}

#[derive(Serialize, Deserialize)]
struct WireResponse {
    status: u16,
    headers: Vec<String>,
    body: WireBody,
    end: WireEnd,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireEnd {
    Complete,
    Incomplete,
    Error(WireFailure),
}

#[derive(Serialize, Deserialize)]
struct WireFailure {
    kind: String,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    unsent: bool,
    message: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireBody {
    Text(String),
    Base64(String),
}

impl From<&Bytes> for WireBody {
    fn from(bytes: &Bytes) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => WireBody::Text(text.to_owned()),
            Err(_) => WireBody::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }
}

impl TryFrom<WireBody> for Bytes {
    type Error = String;

    fn try_from(body: WireBody) -> Result<Self, String> {
        match body {
            WireBody::Text(text) => Ok(Bytes::from(text)),
            WireBody::Base64(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("a body that isn't valid base64: {e}")),
        }
    }
}

fn to_wire(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect()
}

fn from_wire(headers: Vec<String>) -> Result<Vec<(String, String)>, String> {
    headers
        .into_iter()
        .map(|line| match line.split_once(':') {
            Some((name, value)) => Ok((
                name.to_owned(),
                value.strip_prefix(' ').unwrap_or(value).to_owned(),
            )),
            None => Err(format!("a header without a colon: {line:?}")),
        })
        .collect()
}

const STAGES: [(Stage, &str); 7] = [
    (Stage::Dns, "dns"),
    (Stage::Connect, "connect"),
    (Stage::Tls, "tls"),
    (Stage::SendRequest, "send_request"),
    (Stage::AwaitHead, "await_head"),
    (Stage::Body, "body"),
    (Stage::Pool, "pool"),
];

const KINDS: [(ErrorKind, &str); 9] = [
    (ErrorKind::Timeout(TimeoutPhase::Connect), "timeout_connect"),
    (ErrorKind::Timeout(TimeoutPhase::Attempt), "timeout_attempt"),
    (
        ErrorKind::Timeout(TimeoutPhase::Deadline),
        "timeout_deadline",
    ),
    (
        ErrorKind::Timeout(TimeoutPhase::ReadIdle),
        "timeout_read_idle",
    ),
    (
        ErrorKind::Timeout(TimeoutPhase::PoolAcquire),
        "timeout_pool_acquire",
    ),
    (ErrorKind::Connect, "connect"),
    (ErrorKind::Tls, "tls"),
    (ErrorKind::Body, "body"),
    (ErrorKind::Protocol, "protocol"),
];

impl From<&Failure> for WireFailure {
    /// A kind a transport doesn't report is saved as `protocol` (its name stays in the
    /// message).
    fn from(f: &Failure) -> Self {
        let kind = KINDS
            .iter()
            .find(|(k, _)| *k == f.kind)
            .map_or("protocol", |(_, name)| name);
        Self {
            kind: kind.to_owned(),
            stage: f
                .stage
                .and_then(|s| STAGES.iter().find(|(st, _)| *st == s))
                .map(|(_, name)| (*name).to_owned()),
            unsent: f.unsent,
            message: f.message.clone(),
        }
    }
}

impl TryFrom<WireFailure> for Failure {
    type Error = String;

    fn try_from(w: WireFailure) -> Result<Self, String> {
        let kind = KINDS
            .iter()
            .find(|(_, name)| *name == w.kind)
            .map(|(k, _)| *k)
            .ok_or_else(|| format!("unknown error kind {:?}", w.kind))?;
        let stage = match w.stage {
            None => None,
            Some(stage) => Some(
                STAGES
                    .iter()
                    .find(|(_, name)| *name == stage)
                    .map(|(s, _)| *s)
                    .ok_or_else(|| format!("unknown stage {stage:?}"))?,
            ),
        };
        Ok(Self {
            kind,
            stage,
            unsent: w.unsent,
            message: w.message,
        })
    }
}

impl From<&Exchange> for WireInteraction {
    fn from(x: &Exchange) -> Self {
        let (response, error) = match &x.outcome {
            Outcome::NoHead => (None, None),
            Outcome::Failed(f) => (None, Some(WireFailure::from(f))),
            Outcome::Response {
                status,
                headers,
                body,
                end,
            } => (
                Some(WireResponse {
                    status: *status,
                    headers: to_wire(headers),
                    body: WireBody::from(body),
                    end: match end {
                        End::Complete => WireEnd::Complete,
                        End::Incomplete => WireEnd::Incomplete,
                        End::Failed(f) => WireEnd::Error(WireFailure::from(f)),
                    },
                }),
                None,
            ),
        };
        Self {
            request: WireRequest {
                method: x.method.clone(),
                url: x.url.clone(),
                headers: to_wire(&x.request_headers),
                body: x.request_body.as_ref().map(WireBody::from),
            },
            response,
            error,
        }
    }
}

impl TryFrom<WireInteraction> for Exchange {
    type Error = String;

    fn try_from(w: WireInteraction) -> Result<Self, String> {
        let outcome = match (w.response, w.error) {
            (Some(_), Some(_)) => return Err("both a response and an error".to_owned()),
            (None, None) => Outcome::NoHead,
            (None, Some(f)) => Outcome::Failed(f.try_into()?),
            (Some(r), None) => Outcome::Response {
                status: r.status,
                headers: from_wire(r.headers)?,
                body: r.body.try_into()?,
                end: match r.end {
                    WireEnd::Complete => End::Complete,
                    WireEnd::Incomplete => End::Incomplete,
                    WireEnd::Error(f) => End::Failed(f.try_into()?),
                },
            },
        };
        Ok(Self {
            method: w.request.method,
            url: w.request.url,
            request_headers: from_wire(w.request.headers)?,
            request_body: w.request.body.map(Bytes::try_from).transpose()?,
            outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cassette_survives_its_json_form() {
        let failure = Failure {
            kind: ErrorKind::Timeout(TimeoutPhase::ReadIdle),
            stage: Some(Stage::Body),
            unsent: false,
            message: "slow".into(),
        };
        let cassette = Cassette {
            exchanges: vec![
                Exchange {
                    method: "POST".into(),
                    url: "http://h/x?sig=REDACTED".into(),
                    request_headers: vec![("authorization".into(), "REDACTED".into())],
                    request_body: Some(Bytes::from_static(b"\xff\x00binary")),
                    outcome: Outcome::Response {
                        status: 201,
                        headers: vec![("set-cookie".into(), "REDACTED".into())],
                        body: Bytes::from_static(b"text"),
                        end: End::Failed(failure),
                    },
                },
                Exchange {
                    method: "GET".into(),
                    url: "http://h/y".into(),
                    request_headers: vec![],
                    request_body: None,
                    outcome: Outcome::NoHead,
                },
            ],
        };
        let json = cassette.to_json();
        assert!(json.contains("\"base64\": \"/wBiaW5hcnk=\""), "{json}");
        assert!(json.contains("\"timeout_read_idle\""), "{json}");
        assert!(json.contains("\"authorization: REDACTED\""), "{json}");
        let back = Cassette::from_json(&json).unwrap();
        assert_eq!(back.to_json(), json);
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn a_bad_cassette_is_a_config_error_naming_the_interaction() {
        let bad = r#"{"keel_cassette":1,"interactions":[{"request":{"method":"GET","url":"http://h/",
            "headers":[],"body":{"base64":"!!"}}}]}"#;
        let err = Cassette::from_json(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.setting(), Some("cassette"));
        let why = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            why.starts_with("interaction 1: a body that isn't valid base64"),
            "{why}"
        );
        for other in ["not json", r#"{"keel_cassette":2,"interactions":[]}"#] {
            assert_eq!(
                Cassette::from_json(other).unwrap_err().kind(),
                ErrorKind::Config
            );
        }
    }
}
