//! `multipart/form-data` request bodies (RFC 7578): a [`Form`] of named [`Part`]s, sent with
//! [`RequestBuilder::multipart`](crate::RequestBuilder::multipart).
//!
//! A part is text, bytes, a file streamed from disk, or anything that implements
//! [`futures_io::AsyncRead`]. Nothing is buffered whole: files and readers are read in chunks
//! of 64 KiB as the request is sent, files on a small thread pool (the `blocking` crate), so no
//! executor is ever blocked by the disk, whatever the runtime.
//!
//! # Length and retries
//!
//! When every part's length is known (text, bytes, files: their size is read when the part is
//! made, and a reader given [`Part::reader_with_length`]), the request says `Content-Length`;
//! otherwise it is sent chunked. A file or reader that turns out shorter or longer than it said
//! fails the request instead of breaking the framing.
//!
//! A form of text, bytes and file parts is *rebuildable*: every attempt reopens the files and
//! encodes the form again, so a retry or a 307/308 redirect sends it whole. A form with a
//! reader part can be sent once, like any stream (see
//! [`RequestBuilder::body`](crate::RequestBuilder::body)).
//!
//! # Names and boundaries
//!
//! Field names and file names are written as browsers write them (the HTML standard's
//! `multipart/form-data` encoding, which RFC 7578 section 4.2 allows): UTF-8, with `"`, CR
//! and LF percent-encoded as `%22`, `%0D` and `%0A`, so no name can end the quoted string or
//! the header line. The boundary is `keel-` and 128 random bits in hex (RFC 2046 allows 70
//! characters of a small alphabet; [`Form::with_boundary`] checks a chosen one against those
//! rules). Text and bytes parts are searched for it; a random boundary found in one is drawn
//! again, a chosen one is refused. Files and readers are not searched (that would read them
//! twice): a random boundary appears in them with a probability of about 2⁻¹²⁸ per position.
//!
//! ```
//! # async fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) -> Result<(), keel_core::Error> {
//! use keel_core::multipart::{Form, Part};
//!
//! let form = Form::new()
//!     .text("title", "Quarterly report")
//!     .part("data", Part::bytes(&b"1,2,3\n"[..]).file_name("data.csv"))
//!     .file("report", "/var/reports/q3.pdf")
//!     .await?;
//! let created = client.post("/uploads").multipart(form).send().await?;
//! # let _ = created; Ok(()) }
//! ```

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future as _;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_core::Stream;
use futures_io::AsyncRead;
use http::header::{HeaderName, HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::HeaderMap;

use crate::body::Body;
use crate::error::{BoxError, Error, ErrorKind};

/// The size of the chunks files and readers are read in.
const CHUNK: usize = 64 * 1024;

/// How far ahead of the request the thread pool reads a file.
const READ_AHEAD: usize = 4 * CHUNK;

/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

/// How many random boundaries are drawn before a form gives up on finding one that isn't in
/// its text and bytes parts (one in 2¹²⁸ draws collides).
const BOUNDARY_DRAWS: usize = 4;

/// A `multipart/form-data` body being built: named parts in order, and a boundary.
///
/// Send it with [`RequestBuilder::multipart`](crate::RequestBuilder::multipart), which sets
/// `Content-Type` (with the boundary) and, when every part's length is known,
/// `Content-Length`. See the [module docs](self) for lengths, retries and escaping.
///
/// Mistakes in a part (an invalid header or content type) are kept and returned when the
/// request is sent or built, so calls chain without `?`.
///
/// ```
/// use keel_core::multipart::{Form, Part};
///
/// let form = Form::with_boundary("XyZ")?
///     .text("name", "keel")
///     .part("logo", Part::bytes(&b"\x89PNG"[..]).file_name("logo.png").content_type("image/png"));
/// assert_eq!(form.content_type(), "multipart/form-data; boundary=XyZ");
/// assert!(form.is_rebuildable());
///
/// let bytes = futures_executor::block_on(form.to_bytes())?;
/// assert_eq!(
///     &bytes[..],
///     &b"--XyZ\r\n\
///        Content-Disposition: form-data; name=\"name\"\r\n\
///        \r\n\
///        keel\r\n\
///        --XyZ\r\n\
///        Content-Disposition: form-data; name=\"logo\"; filename=\"logo.png\"\r\n\
///        Content-Type: image/png\r\n\
///        \r\n\
///        \x89PNG\r\n\
///        --XyZ--\r\n"[..]
/// );
/// # Ok::<(), keel_core::Error>(())
/// ```
pub struct Form {
    boundary: String,
    /// Whether the boundary was chosen by the caller (refused on a collision) or drawn.
    chosen: bool,
    fields: Vec<(String, Part)>,
    error: Option<Error>,
}

/// One part of a [`Form`]: its content, and optionally a file name, a content type and other
/// headers.
///
/// ```
/// use keel_core::multipart::Part;
///
/// let part = Part::text("{\"a\":1}")
///     .content_type("application/json")
///     .header("x-checksum", "abc");
/// assert_eq!(part.length(), Some(7));
/// ```
pub struct Part {
    data: Data,
    file_name: Option<String>,
    content_type: Option<HeaderValue>,
    headers: HeaderMap,
    error: Option<Error>,
}

enum Data {
    Bytes(Bytes),
    File { path: Arc<Path>, length: u64 },
    Reader(Pin<Box<dyn AsyncRead + Send>>, Option<u64>),
}

impl Form {
    /// An empty form with a random boundary.
    pub fn new() -> Self {
        Self {
            boundary: random_boundary(),
            chosen: false,
            fields: Vec::new(),
            error: None,
        }
    }

    /// An empty form with this boundary, for output that must be the same every time (tests,
    /// signatures).
    ///
    /// RFC 2046 rules apply: 1 to 70 characters among letters, digits and `'()+_,-./:=? `,
    /// not ending with a space. A boundary that occurs in a text or bytes part fails the
    /// request with [`ErrorKind::InvalidRequest`].
    ///
    /// ```
    /// use keel_core::multipart::Form;
    /// use keel_core::ErrorKind;
    ///
    /// assert!(Form::with_boundary("a-boundary_0").is_ok());
    /// let err = Form::with_boundary("no\"quotes").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    /// ```
    pub fn with_boundary(boundary: &str) -> Result<Self, Error> {
        check_boundary(boundary)?;
        Ok(Self {
            boundary: boundary.to_owned(),
            chosen: true,
            fields: Vec::new(),
            error: None,
        })
    }

    /// The boundary between parts.
    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The `Content-Type` the form is sent with: `multipart/form-data; boundary=…`.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.quoted_boundary())
    }

    /// Adds a text part.
    pub fn text(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.part(name, Part::text(value))
    }

    /// Adds a part.
    pub fn part(mut self, name: impl Into<String>, part: Part) -> Self {
        self.fields.push((name.into(), part));
        self
    }

    /// Adds a file part, streamed from disk when the request is sent; see [`Part::file`].
    pub async fn file(
        self,
        name: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        Ok(self.part(name, Part::file(path).await?))
    }

    /// The number of parts.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the form has no parts.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The encoded length in bytes, when every part's length is known.
    ///
    /// ```
    /// use keel_core::multipart::Form;
    ///
    /// let form = Form::with_boundary("b")?.text("a", "1");
    /// let bytes = futures_executor::block_on(form.to_bytes())?;
    /// # let form = Form::with_boundary("b")?.text("a", "1");
    /// assert_eq!(form.content_length(), Some(bytes.len() as u64));
    /// # Ok::<(), keel_core::Error>(())
    /// ```
    pub fn content_length(&self) -> Option<u64> {
        let mut total = closing(&self.boundary).len() as u64;
        for (index, (name, part)) in self.fields.iter().enumerate() {
            let head = part_head(&self.boundary, index == 0, name, part).len() as u64;
            total = total.checked_add(head)?.checked_add(part.length()?)?;
        }
        Some(total)
    }

    /// Whether every part can be made again (text, bytes and files, not readers), so that the
    /// request can be retried and redirected with its body.
    pub fn is_rebuildable(&self) -> bool {
        self.fields
            .iter()
            .all(|(_, part)| !matches!(part.data, Data::Reader(..)))
    }

    /// The form as a body that can be sent once (sized when its length is known). Requests
    /// should use [`RequestBuilder::multipart`](crate::RequestBuilder::multipart) instead,
    /// which makes a rebuildable form retryable.
    pub fn into_body(self) -> Result<Body, Error> {
        let (_, length, segments) = self.encode()?;
        Ok(body_of(Encoder::new(segments), length))
    }

    /// Reads the whole form into memory, files and readers included: for tests and small
    /// forms.
    pub async fn to_bytes(self) -> Result<Bytes, Error> {
        let (_, _, segments) = self.encode()?;
        let mut encoder = Encoder::new(segments);
        let mut out = BytesMut::new();
        while let Some(chunk) =
            std::future::poll_fn(|cx| Pin::new(&mut encoder).poll_next(cx)).await
        {
            out.extend_from_slice(&chunk.map_err(read_error)?);
        }
        Ok(out.freeze())
    }

    /// The form as the request sends it: content type, length, and a body or a body factory.
    pub(crate) fn into_request_body(self) -> Result<RequestBody, Error> {
        let (content_type, length, segments) = self.encode()?;
        let content_type = HeaderValue::try_from(content_type)
            .map_err(|e| Error::new(ErrorKind::InvalidRequest).with_source(e))?;
        let templates: Option<Vec<Template>> = segments
            .iter()
            .map(|s| match s {
                Segment::Template(t) => Some(t.clone()),
                Segment::Reader(..) => None,
            })
            .collect();
        let body = match templates {
            Some(templates) => {
                let templates: Arc<[Template]> = templates.into();
                FormBody::Rebuild(Arc::new(move || {
                    let segments = templates.iter().cloned().map(Segment::Template).collect();
                    body_of(Encoder::new(segments), length)
                }))
            }
            None => FormBody::Once(body_of(Encoder::new(segments), length)),
        };
        Ok(RequestBody {
            content_type,
            length,
            body,
        })
    }

    /// The boundary as a `boundary=` parameter: quoted when it holds characters a token
    /// can't (RFC 2045's tspecials and spaces).
    fn quoted_boundary(&self) -> String {
        let token = self
            .boundary
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"'+_-.".contains(&b));
        if token {
            self.boundary.clone()
        } else {
            format!("\"{}\"", self.boundary)
        }
    }

    /// Checks the parts, settles the boundary and lays the form out as segments; returns the
    /// content type (with the boundary settled on) and the length too.
    fn encode(mut self) -> Result<(String, Option<u64>, VecDeque<Segment>), Error> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        for (name, part) in &mut self.fields {
            if let Some(err) = part.error.take() {
                return Err(Error::new(ErrorKind::InvalidRequest)
                    .with_source(format!("multipart part {name:?}: {err}")));
            }
        }
        let mut draws = 0;
        while let Some(name) = self.collision() {
            if self.chosen || draws == BOUNDARY_DRAWS {
                return Err(Error::new(ErrorKind::InvalidRequest).with_source(format!(
                    "the multipart boundary {:?} occurs in part {name:?}",
                    self.boundary
                )));
            }
            self.boundary = random_boundary();
            draws += 1;
        }
        let length = self.content_length();
        let content_type = self.content_type();
        let mut segments = VecDeque::with_capacity(self.fields.len() * 2 + 1);
        for (index, (name, part)) in self.fields.into_iter().enumerate() {
            let head = part_head(&self.boundary, index == 0, &name, &part);
            segments.push_back(Segment::Template(Template::Bytes(head)));
            let label: Arc<str> = Arc::from(name);
            segments.push_back(match part.data {
                Data::Bytes(bytes) => Segment::Template(Template::Bytes(bytes)),
                Data::File { path, length } => Segment::Template(Template::File {
                    name: label,
                    path,
                    length,
                }),
                Data::Reader(reader, length) => Segment::Reader(label, reader, length),
            });
        }
        segments.push_back(Segment::Template(Template::Bytes(closing(&self.boundary))));
        Ok((content_type, length, segments))
    }

    /// The name of a text or bytes part the boundary occurs in, if any.
    fn collision(&self) -> Option<&str> {
        let delimiter = format!("--{}", self.boundary);
        self.fields
            .iter()
            .find_map(|(name, part)| match &part.data {
                Data::Bytes(bytes) => {
                    contains(bytes, delimiter.as_bytes()).then_some(name.as_str())
                }
                _ => None,
            })
    }
}

impl Default for Form {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Form")
            .field("boundary", &self.boundary)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl Part {
    /// A text part (sent with no `Content-Type`, which means `text/plain` in UTF-8).
    pub fn text(value: impl Into<String>) -> Self {
        Self::new(Data::Bytes(Bytes::from(value.into())))
    }

    /// A part of bytes (sent with no `Content-Type` unless [`content_type`](Self::content_type)
    /// sets one).
    pub fn bytes(value: impl Into<Bytes>) -> Self {
        Self::new(Data::Bytes(value.into()))
    }

    /// A file part, streamed from disk when the request is sent (and read again for every
    /// attempt), with the file's name as its file name and a content type guessed from its
    /// extension (`application/octet-stream` when the extension is not a common one).
    ///
    /// The file's size is read now, off the executor, so the request can say
    /// `Content-Length`; a file whose size has changed when it is sent fails the request.
    /// A path that is not a readable regular file fails with [`ErrorKind::InvalidRequest`].
    ///
    /// ```
    /// # futures_executor::block_on(async {
    /// use keel_core::multipart::Part;
    ///
    /// let path = std::env::temp_dir().join(format!("keel-doc-{}.json", std::process::id()));
    /// std::fs::write(&path, b"{}")?;
    /// let part = Part::file(&path).await?;
    /// assert_eq!(part.length(), Some(2));
    /// std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub async fn file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_owned();
        let (path, length) = blocking::unblock(move || file_length(path)).await?;
        Ok(Self::of_file(path, length))
    }

    /// [`Part::file`] for code that may block: the file's size is read on the calling thread
    /// (for the blocking client, or a thread that is not an executor's).
    pub fn blocking_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let (path, length) = file_length(path.as_ref().to_owned())?;
        Ok(Self::of_file(path, length))
    }

    /// A part read from `reader` as the request is sent, of unknown length (so the request
    /// is sent chunked). It can be sent once: the request is not retried once it may have
    /// reached the server.
    pub fn reader(reader: impl AsyncRead + Send + 'static) -> Self {
        Self::new(Data::Reader(Box::pin(reader), None))
    }

    /// A part read from `reader` as the request is sent, of exactly `length` bytes (so the
    /// request can say `Content-Length` when the other parts' lengths are known too). A reader
    /// that ends short of `length`, or has more, fails the request.
    pub fn reader_with_length(reader: impl AsyncRead + Send + 'static, length: u64) -> Self {
        Self::new(Data::Reader(Box::pin(reader), Some(length)))
    }

    /// Sets the part's file name (the `filename` parameter of its `Content-Disposition`).
    pub fn file_name(mut self, file_name: impl Into<String>) -> Self {
        self.file_name = Some(file_name.into());
        self
    }

    /// Sets the part's `Content-Type`, such as `image/png` or `application/json;
    /// charset=utf-8`. A value that is not a media type is kept as an error for the request.
    pub fn content_type(mut self, content_type: &str) -> Self {
        match content_type.parse::<mime::Mime>() {
            Ok(_) => match HeaderValue::from_str(content_type) {
                Ok(value) => self.content_type = Some(value),
                Err(e) => self.fail(e),
            },
            Err(e) => self.fail(format!("invalid content type {content_type:?}: {e}")),
        }
        self
    }

    /// Adds a header to the part. `Content-Type` sets the content type;
    /// `Content-Disposition` is the form's to write, and an invalid name or value is kept as
    /// an error for the request.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<BoxError>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<BoxError>,
    {
        let name = match HeaderName::try_from(name) {
            Ok(name) => name,
            Err(e) => {
                self.fail(e);
                return self;
            }
        };
        let value = match HeaderValue::try_from(value) {
            Ok(value) => value,
            Err(e) => {
                self.fail(e);
                return self;
            }
        };
        if name == CONTENT_DISPOSITION {
            self.fail("a part's Content-Disposition is written by the form");
        } else if name == CONTENT_TYPE {
            match value.to_str() {
                Ok(text) => return self.content_type(text),
                Err(e) => self.fail(e),
            }
        } else {
            self.headers.append(name, value);
        }
        self
    }

    /// The length of the part's content, when it is known.
    pub fn length(&self) -> Option<u64> {
        match &self.data {
            Data::Bytes(bytes) => Some(bytes.len() as u64),
            Data::File { length, .. } => Some(*length),
            Data::Reader(_, length) => *length,
        }
    }

    fn new(data: Data) -> Self {
        Self {
            data,
            file_name: None,
            content_type: None,
            headers: HeaderMap::new(),
            error: None,
        }
    }

    fn of_file(path: PathBuf, length: u64) -> Self {
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        let content_type = guess_content_type(&path);
        Self {
            data: Data::File {
                path: Arc::from(path),
                length,
            },
            file_name,
            content_type: Some(HeaderValue::from_static(content_type)),
            headers: HeaderMap::new(),
            error: None,
        }
    }

    fn fail(&mut self, err: impl Into<BoxError>) {
        if self.error.is_none() {
            self.error = Some(Error::new(ErrorKind::InvalidRequest).with_source(err));
        }
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Part");
        match &self.data {
            Data::Bytes(bytes) => s.field("bytes", &bytes.len()),
            Data::File { path, length } => s.field("file", path).field("length", length),
            Data::Reader(_, length) => s.field("reader", length),
        };
        s.field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// A form ready for a request.
pub(crate) struct RequestBody {
    pub(crate) content_type: HeaderValue,
    pub(crate) length: Option<u64>,
    pub(crate) body: FormBody,
}

/// The body of a form: made again for every attempt, or sent once.
pub(crate) enum FormBody {
    Rebuild(Arc<dyn Fn() -> Body + Send + Sync>),
    Once(Body),
}

/// A piece of an encoded form that can be made again.
#[derive(Clone)]
enum Template {
    Bytes(Bytes),
    File {
        name: Arc<str>,
        path: Arc<Path>,
        length: u64,
    },
}

/// A piece of an encoded form.
enum Segment {
    Template(Template),
    Reader(Arc<str>, Pin<Box<dyn AsyncRead + Send>>, Option<u64>),
}

/// The encoded form as a stream of chunks.
struct Encoder {
    segments: VecDeque<Segment>,
    active: Option<Active>,
    buf: Vec<u8>,
}

/// The file or reader being sent.
enum Active {
    Opening {
        name: Arc<str>,
        path: Arc<Path>,
        length: u64,
        task: blocking::Task<io::Result<std::fs::File>>,
    },
    Reading {
        name: Arc<str>,
        reader: Pin<Box<dyn AsyncRead + Send>>,
        expected: Option<u64>,
        read: u64,
    },
}

impl Encoder {
    fn new(segments: VecDeque<Segment>) -> Self {
        Self {
            segments,
            active: None,
            buf: Vec::new(),
        }
    }

    /// The next chunk of the active reader; `None` at its end.
    fn poll_active(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match self.active.as_mut() {
                None => return Poll::Ready(None),
                Some(Active::Opening {
                    name,
                    path,
                    length,
                    task,
                }) => {
                    let file = match ready!(Pin::new(task).poll(cx)) {
                        Ok(file) => file,
                        Err(e) => {
                            let err = part_error(name, &format!("{}: {e}", path.display()), e);
                            self.active = None;
                            return Poll::Ready(Some(Err(err)));
                        }
                    };
                    self.active = Some(Active::Reading {
                        name: name.clone(),
                        reader: Box::pin(blocking::Unblock::with_capacity(READ_AHEAD, file)),
                        expected: Some(*length),
                        read: 0,
                    });
                }
                Some(Active::Reading {
                    name,
                    reader,
                    expected,
                    read,
                }) => {
                    // Past the expected length, one byte more is asked for: there should be
                    // none.
                    let want = match expected {
                        Some(expected) => (*expected - *read).clamp(1, CHUNK as u64) as usize,
                        None => CHUNK,
                    };
                    self.buf.resize(want, 0);
                    let n = match ready!(reader.as_mut().poll_read(cx, &mut self.buf)) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            let err = part_error(name, &e.to_string(), e);
                            self.active = None;
                            return Poll::Ready(Some(Err(err)));
                        }
                    };
                    let total = *read + n as u64;
                    let wrong = match *expected {
                        Some(expected) if total > expected => {
                            Some(format!("has more than the {expected} bytes it said it had"))
                        }
                        Some(expected) if n == 0 && total < expected => Some(format!(
                            "ended after {total} of the {expected} bytes it said it had"
                        )),
                        _ => None,
                    };
                    if let Some(wrong) = wrong {
                        let err = part_error(name, &wrong, io::ErrorKind::UnexpectedEof.into());
                        self.active = None;
                        return Poll::Ready(Some(Err(err)));
                    }
                    if n == 0 {
                        self.active = None;
                        return Poll::Ready(None);
                    }
                    *read = total;
                    return Poll::Ready(Some(Ok(Bytes::copy_from_slice(&self.buf[..n]))));
                }
            }
        }
    }
}

impl Stream for Encoder {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.active.is_some() {
                match ready!(this.poll_active(cx)) {
                    Some(chunk) => return Poll::Ready(Some(chunk)),
                    None => this.active = None,
                }
            }
            match this.segments.pop_front() {
                None => return Poll::Ready(None),
                Some(Segment::Template(Template::Bytes(bytes))) if bytes.is_empty() => {}
                Some(Segment::Template(Template::Bytes(bytes))) => {
                    return Poll::Ready(Some(Ok(bytes)))
                }
                Some(Segment::Template(Template::File { name, path, length })) => {
                    let open = path.clone();
                    this.active = Some(Active::Opening {
                        name,
                        path,
                        length,
                        task: blocking::unblock(move || std::fs::File::open(open)),
                    });
                }
                Some(Segment::Reader(name, reader, expected)) => {
                    this.active = Some(Active::Reading {
                        name,
                        reader,
                        expected,
                        read: 0,
                    });
                }
            }
        }
    }
}

/// A sized body when the length is known, chunked otherwise.
fn body_of(encoder: Encoder, length: Option<u64>) -> Body {
    match length {
        Some(length) => Body::from_sized_stream(encoder, length),
        None => Body::from_stream(encoder),
    }
}

/// An I/O error of a part, naming it.
fn part_error(name: &str, what: &str, cause: io::Error) -> io::Error {
    io::Error::new(cause.kind(), format!("multipart part {name:?}: {what}"))
}

/// A failure to read a part while encoding the form in memory.
fn read_error(err: io::Error) -> Error {
    Error::new(ErrorKind::InvalidRequest).with_source(err)
}

/// The size of the regular file at `path`.
fn file_length(path: PathBuf) -> Result<(PathBuf, u64), Error> {
    let invalid = |what: String| Error::new(ErrorKind::InvalidRequest).with_source(what);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok((path, meta.len())),
        Ok(_) => Err(invalid(format!(
            "multipart file {} is not a regular file",
            path.display()
        ))),
        Err(e) => Err(invalid(format!("multipart file {}: {e}", path.display()))),
    }
}

/// The delimiter, headers and blank line before a part's content. Every part but the first
/// starts with the CRLF that ends the content before it (RFC 2046: it belongs to the
/// delimiter).
fn part_head(boundary: &str, first: bool, name: &str, part: &Part) -> Bytes {
    let mut head = BytesMut::with_capacity(boundary.len() + name.len() + 64);
    if !first {
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"--");
    head.put_slice(boundary.as_bytes());
    head.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
    escape_into(name, &mut head);
    head.put_slice(b"\"");
    if let Some(file_name) = &part.file_name {
        head.put_slice(b"; filename=\"");
        escape_into(file_name, &mut head);
        head.put_slice(b"\"");
    }
    head.put_slice(b"\r\n");
    if let Some(content_type) = &part.content_type {
        head.put_slice(b"Content-Type: ");
        head.put_slice(content_type.as_bytes());
        head.put_slice(b"\r\n");
    }
    for (name, value) in &part.headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    head.freeze()
}

/// The close delimiter after the last part (or the whole of an empty form).
fn closing(boundary: &str) -> Bytes {
    let mut end = BytesMut::with_capacity(boundary.len() + 8);
    end.put_slice(b"\r\n--");
    end.put_slice(boundary.as_bytes());
    end.put_slice(b"--\r\n");
    end.freeze()
}

/// Writes a field or file name for a quoted `Content-Disposition` parameter, as browsers do:
/// `"`, CR and LF percent-encoded, everything else (UTF-8 included) as it is.
fn escape_into(name: &str, out: &mut BytesMut) {
    for &b in name.as_bytes() {
        match b {
            b'"' => out.put_slice(b"%22"),
            b'\r' => out.put_slice(b"%0D"),
            b'\n' => out.put_slice(b"%0A"),
            _ => out.put_u8(b),
        }
    }
}

/// Checks a boundary against RFC 2046's grammar.
fn check_boundary(boundary: &str) -> Result<(), Error> {
    let bchar = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
    let why = if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
        Some("must be 1 to 70 characters long")
    } else if !boundary.bytes().all(bchar) {
        Some("may only hold letters, digits and '()+_,-./:=? and spaces")
    } else if boundary.ends_with(' ') {
        Some("must not end with a space")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::new(ErrorKind::InvalidRequest)
            .with_source(format!("the multipart boundary {boundary:?} {why}"))),
        None => Ok(()),
    }
}

/// `keel-` and 128 random bits in hex: 37 characters.
fn random_boundary() -> String {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let draw = DRAWS.fetch_add(1, Ordering::Relaxed);
    let mut boundary = String::with_capacity(37);
    boundary.push_str("keel-");
    for half in 0..2u64 {
        // Each `RandomState` has keys of its own, from the OS's randomness; SipHash under
        // secret keys gives bits no one can predict.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(draw);
        hasher.write_u64(half);
        boundary.push_str(&format!("{:016x}", hasher.finish()));
    }
    boundary
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut at = 0;
    while let Some(i) = haystack[at..].iter().position(|&b| b == first) {
        let start = at + i;
        if haystack[start + 1..].starts_with(rest) {
            return true;
        }
        at = start + 1;
    }
    false
}

/// A content type for a file, from its extension: a small table of the common ones.
fn guess_content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match extension.as_str() {
        "txt" | "text" | "log" => "text/plain",
        "htm" | "html" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests;
