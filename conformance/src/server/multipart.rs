//! The `multipart/form-data` routes: forms parsed with `multer` (the parser axum uses), so the
//! client's encoding is checked by a parser keel didn't write.

use std::fmt;

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::routes::{full, text, ResBody};
use super::{lock, State};

/// Longest part `/multipart/echo` returns as text.
const ECHO_TEXT: usize = 64 * 1024;

/// The connection was dropped on purpose (HTTP/1.1: closed with no response; HTTP/2: the
/// stream reset): hyper is handed this as the service's error.
#[derive(Debug)]
pub(super) struct Aborted(String);

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "aborted by the conformance server: {}", self.0)
    }
}

impl std::error::Error for Aborted {}

/// Answers `/multipart/…`; a 400 says why a form could not be parsed.
pub(super) async fn respond(
    req: Request<Incoming>,
    state: &State,
    path: &str,
    query: Option<&str>,
) -> Result<Response<ResBody>, Aborted> {
    let result = match path.strip_prefix("/multipart/") {
        Some("echo") => echo(req).await,
        Some(rest) if rest.starts_with("digest/") => digest(req, state, path, query).await?,
        _ => Err(format!("no route for {path}")),
    };
    Ok(match result {
        Ok(json) => {
            let mut res = Response::new(full(json.to_string()));
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res
        }
        Err(message) if message.starts_with("no route") => text(StatusCode::NOT_FOUND, message),
        Err(message) => text(StatusCode::BAD_REQUEST, message),
    })
}

/// `/multipart/echo`: every part of the form, in order, as JSON.
async fn echo(req: Request<Incoming>) -> Result<serde_json::Value, String> {
    let framing = framing(&req);
    let mut form = multipart(req)?;
    let mut fields = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(|e| e.to_string())? {
        let mut data = Vec::new();
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(|e| e.to_string())? {
            sha.update(&chunk);
            size += chunk.len() as u64;
            if data.len() < ECHO_TEXT {
                data.extend_from_slice(&chunk);
            }
        }
        let text = (size <= ECHO_TEXT as u64)
            .then(|| String::from_utf8(data).ok())
            .flatten();
        let headers: serde_json::Map<_, _> = field
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), serde_json::Value::String(value))
            })
            .collect();
        fields.push(serde_json::json!({
            "name": field.name(),
            "file_name": field.file_name(),
            "content_type": field.content_type().map(ToString::to_string),
            "headers": headers,
            "size": size,
            "sha256": hex(sha.finish().as_ref()),
            "text": text,
        }));
    }
    Ok(serde_json::json!({ "framing": framing, "fields": fields }))
}

/// `/multipart/digest/{key}?abort_first_after=N`: the size and SHA-256 of every part, and the
/// attempt number (requests to this path so far). With `abort_first_after`, the first
/// request is read for `N` bytes and then its connection is dropped.
async fn digest(
    req: Request<Incoming>,
    state: &State,
    path: &str,
    query: Option<&str>,
) -> Result<Result<serde_json::Value, String>, Aborted> {
    // This request is already in the log: earlier ones are the others.
    let attempt = lock(&state.log)
        .requests
        .iter()
        .filter(|r| r.path == path)
        .count();
    let abort_after = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("abort_first_after="))
        .map(|n| {
            n.parse::<u64>()
                .map_err(|e| format!("abort_first_after: {e}"))
        })
        .transpose();
    let abort_after = match abort_after {
        Ok(n) => n,
        Err(message) => return Ok(Err(message)),
    };
    let framing = framing(&req);
    if let (Some(after), 1) = (abort_after, attempt) {
        let mut body = req.into_body();
        let mut read = 0u64;
        while read < after {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
        return Err(Aborted(format!("after {read} bytes of the first upload")));
    }
    let mut form = match multipart(req) {
        Ok(form) => form,
        Err(message) => return Ok(Err(message)),
    };
    let mut fields = Vec::new();
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    sha.update(&chunk);
                    size += chunk.len() as u64;
                }
                Ok(None) => break,
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        fields.push(serde_json::json!({
            "name": field.name(),
            "file_name": field.file_name(),
            "size": size,
            "sha256": hex(sha.finish().as_ref()),
        }));
    }
    Ok(Ok(serde_json::json!({
        "attempt": attempt,
        "framing": framing,
        "fields": fields,
    })))
}

/// The request's body framing: its `Content-Length`, or whether it came chunked.
fn framing(req: &Request<Incoming>) -> serde_json::Value {
    let header = |name| {
        req.headers()
            .get(name)
            .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    serde_json::json!({
        "content_type": header(CONTENT_TYPE),
        "content_length": header(CONTENT_LENGTH),
        "transfer_encoding": header(TRANSFER_ENCODING),
    })
}

/// The request's form, streamed through `multer`.
fn multipart(req: Request<Incoming>) -> Result<multer::Multipart<'static>, String> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or("no Content-Type")?;
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    Ok(multer::Multipart::new(
        req.into_body().into_data_stream(),
        boundary,
    ))
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
