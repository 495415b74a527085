//! The blocking [`Response`], read through [`Read`], and request bodies read from a [`Read`].

use std::fmt;
use std::io::{self, BufRead, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes, BytesMut};
use futures_core::Stream;
use http::{HeaderMap, StatusCode, Uri, Version};
use serde::de::DeserializeOwned;

use super::Handle;
use crate::body::Body;
use crate::client::pipeline::CallRecord;
use crate::client::{decode_json, text_encoding};
use crate::error::Error;
use crate::machine::decode::Coding;
use crate::machine::redirect::Hop;
use crate::machine::retry::GiveUpReason;

/// A response whose head has arrived; the body is read on demand, through [`Read`] (or
/// [`BufRead`]) or all at once.
///
/// The async [`crate::Response`], on the client's driver thread: every way of reading applies
/// the read-idle timeout between chunks and the call's deadline, and
/// [`bytes`](Self::bytes), [`text`](Self::text) and [`json`](Self::json) refuse bodies over
/// the client's size limit (and retry a body that fails mid-way, as the async ones do).
///
/// Reading through [`Read`] holds one chunk at a time (at most 64 KiB of a decoded body, what
/// the backend read of another), whatever the body's size, and reads nothing from the network
/// before it is asked for: memory stays bounded and a slow reader slows the server down. A
/// failure while reading is an [`io::Error`] whose inner error is the keel [`Error`], with its
/// kind (find it with [`find_in_chain`](crate::find_in_chain) or `get_ref` and `downcast_ref`);
/// the same error comes back on every read after it.
///
/// Dropping a response before its body is read to the end closes its connection.
///
/// ```
/// # fn demo<T: keel_core::blocking::Runtime>(client: keel_core::blocking::Client<T>) -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::BufRead as _;
///
/// let response = client.get("/exports/today.csv").send()?.error_for_status()?;
/// for line in response.lines() {
///     let line = line?; // an io::Error wrapping a keel::Error
///     println!("{line}");
/// }
/// # Ok(()) }
/// ```
pub struct Response {
    /// The async response; lent to the driver while a chunk is read, `None` once consumed.
    inner: Option<crate::Response>,
    handle: Arc<Handle>,
    /// What is left of the last chunk.
    buf: Bytes,
    /// The body has ended.
    eof: bool,
    /// The error reading stopped at, given again on every read.
    failed: Option<Error>,
}

impl Response {
    pub(super) fn new(inner: crate::Response, handle: Arc<Handle>) -> Self {
        Self {
            inner: Some(inner),
            handle,
            buf: Bytes::new(),
            eof: false,
            failed: None,
        }
    }

    fn head(&self) -> &crate::Response {
        self.inner
            .as_ref()
            .expect("the async response is away only inside a read, and consumed by value")
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.head().status()
    }

    /// The HTTP version the response came over.
    pub fn version(&self) -> Version {
        self.head().version()
    }

    /// What the backend knows of the connection the response came over; see
    /// [`crate::Response::connection`].
    pub fn connection(&self) -> crate::ConnectionInfo {
        self.head().connection()
    }

    /// The response headers (without `Content-Encoding` and `Content-Length` for a body keel
    /// decodes; see [`crate::Response`]).
    pub fn headers(&self) -> &HeaderMap {
        self.head().headers()
    }

    /// The URL of the request this responds to: after redirects, the last one.
    pub fn url(&self) -> &Uri {
        self.head().url()
    }

    /// The redirects followed to get here, in order.
    pub fn redirects(&self) -> &[Hop] {
        self.head().redirects()
    }

    /// How many attempts the call made, the first included.
    pub fn attempts(&self) -> u32 {
        self.head().attempts()
    }

    /// Why the call stopped retrying although this response was worth retrying; see
    /// [`crate::Response::gave_up`].
    pub fn gave_up(&self) -> Option<&GiveUpReason> {
        self.head().gave_up()
    }

    /// What the call did: attempts, redirects, why retrying stopped.
    pub fn record(&self) -> &CallRecord {
        self.head().record()
    }

    /// The `Content-Length` the server declared, if any (`None` for a body keel decodes).
    pub fn content_length(&self) -> Option<u64> {
        self.head().content_length()
    }

    /// The codings keel undoes as the body is read; see [`crate::Response::decoded_from`].
    pub fn decoded_from(&self) -> Vec<Coding> {
        self.head().decoded_from()
    }

    /// For a body keel decodes, the `Content-Length` the server declared for the encoded body.
    pub fn encoded_length(&self) -> Option<u64> {
        self.head().encoded_length()
    }

    /// Turns a 4xx or 5xx response into an [`ErrorKind::Status`](crate::ErrorKind::Status)
    /// error that keeps the headers and up to
    /// [`SNIPPET_LIMIT`](crate::Response::SNIPPET_LIMIT) bytes of the body (of what is left
    /// of it, if some was read already); passes other responses through untouched.
    pub fn error_for_status(mut self) -> Result<Self, Error> {
        if !(self.status().is_client_error() || self.status().is_server_error()) {
            return Ok(self);
        }
        let inner = self.take_inner()?;
        match self.handle.call(inner.error_for_status())? {
            // Unreachable for a 4xx or 5xx, but harmless: hand the response back.
            Ok(inner) => {
                self.inner = Some(inner);
                Ok(self)
            }
            Err(err) => Err(err),
        }
    }

    /// The next chunk of the body, or `None` at its end: what [`Read`] reads from, for code
    /// that wants the chunks as they come.
    pub fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        if !self.buf.is_empty() {
            return Ok(Some(std::mem::take(&mut self.buf)));
        }
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.eof {
            return Ok(None);
        }
        let next = self
            .handle
            .lend(&mut self.inner, |mut lent| async move {
                lent.get().chunk().await
            })
            .and_then(|chunk| chunk);
        match next {
            Ok(Some(chunk)) => Ok(Some(chunk)),
            Ok(None) => {
                self.eof = true;
                Ok(None)
            }
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    /// The whole body (the rest of it, if some was read already), refused with
    /// [`ErrorKind::BodyTooLarge`](crate::ErrorKind::BodyTooLarge) over the client's
    /// `max_body_size`; see [`crate::Response::bytes`].
    pub fn bytes(mut self) -> Result<Bytes, Error> {
        let head = std::mem::take(&mut self.buf);
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        if self.eof {
            return Ok(head);
        }
        let inner = self.take_inner()?;
        let rest = self.handle.call(inner.bytes())??;
        if head.is_empty() {
            return Ok(rest);
        }
        let mut all = BytesMut::with_capacity(head.len() + rest.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(&rest);
        Ok(all.freeze())
    }

    /// The body as text, decoded with the charset named in `Content-Type`; see
    /// [`crate::Response::text`].
    pub fn text(self) -> Result<String, Error> {
        let encoding = text_encoding(self.headers());
        let bytes = self.bytes()?;
        let (text, _, _) = encoding.decode(&bytes);
        Ok(text.into_owned())
    }

    /// The body decoded from JSON. On failure the error's [`Error::json_path`] says where in
    /// the document decoding stopped.
    pub fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let url = self.url().clone();
        let bytes = self.bytes()?;
        decode_json(&url, &bytes)
    }

    fn take_inner(&mut self) -> Result<crate::Response, Error> {
        self.inner.take().ok_or_else(super::stopped)
    }
}

impl Read for Response {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Response {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.buf.is_empty() {
            match self.chunk() {
                Ok(Some(chunk)) => self.buf = chunk,
                Ok(None) => break,
                Err(err) => return Err(err.into()),
            }
        }
        Ok(&self.buf)
    }

    fn consume(&mut self, amt: usize) {
        self.buf.advance(amt.min(self.buf.len()));
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        // Its connection is closed (or pooled) inside the backend's runtime.
        if let Some(inner) = self.inner.take() {
            self.handle.drop_there(inner);
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("blocking::Response");
        if let Some(inner) = &self.inner {
            d.field("status", &inner.status())
                .field("version", &inner.version())
                .field("url", &crate::redact::url(inner.url()))
                .field("headers", inner.headers());
        }
        d.field("buffered", &self.buf.len())
            .field("eof", &self.eof)
            .finish()
    }
}

/// The size of the chunks a [`RequestBuilder::body_reader`](super::RequestBuilder::body_reader)
/// body is read in.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// How many chunks the reading thread may be ahead of the connection.
const UPLOAD_AHEAD: usize = 2;

/// A body streamed from `reader`, read on a thread of its own once the body is first polled.
pub(super) fn reader_body(reader: impl Read + Send + 'static) -> Body {
    Body::from_stream(ReaderStream {
        reader: Some(Box::new(reader)),
        chunks: None,
    })
}

struct ReaderStream {
    /// The reader, until the thread that reads it starts.
    reader: Option<Box<dyn Read + Send>>,
    chunks: Option<Pin<Box<async_channel::Receiver<io::Result<Bytes>>>>>,
}

impl Stream for ReaderStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(reader) = this.reader.take() {
            let (tx, rx) = async_channel::bounded(UPLOAD_AHEAD);
            let started = std::thread::Builder::new()
                .name("keel-blocking-upload".into())
                .spawn(move || pump_reader(reader, &tx));
            if let Err(err) = started {
                return Poll::Ready(Some(Err(err)));
            }
            this.chunks = Some(Box::pin(rx));
        }
        match &mut this.chunks {
            Some(chunks) => chunks.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

/// Reads `reader` to its end (or its first error) into `chunks`; stops early when the body is
/// dropped.
fn pump_reader(
    mut reader: Box<dyn Read + Send>,
    chunks: &async_channel::Sender<io::Result<Bytes>>,
) {
    loop {
        let mut buf = BytesMut::zeroed(UPLOAD_CHUNK);
        let item = match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                Ok(buf.freeze())
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => Err(err),
        };
        let last = item.is_err();
        if chunks.send_blocking(item).is_err() || last {
            return;
        }
    }
}
