//! Downloads that resume after a mid-body failure, to a writer, a `Vec` or a file.
//!
//! The decisions are [`machine::download`](crate::machine::download)'s ([`Resume`]); this
//! driver sends the requests through the client's pipeline, writes the bytes, and waits
//! between resumes on the client's timer.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_io::AsyncWrite;
use http::header::{HeaderValue, ACCEPT_ENCODING, IF_RANGE, RANGE};
use serde::{Deserialize, Serialize};

use super::pending::Pending;
use super::request::Request;
use super::Dispatch;
use crate::error::{BoxError, Error, ErrorKind, Stage, TimeoutPhase};
use crate::machine::download::{Decision, Resume, Validator};
use crate::machine::outcome::RETRYABLE_STATUSES;
use crate::redact;

/// How far a [`Download`] got, given to its [`on_progress`](Download::on_progress) callback.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The bytes written and kept (after a restart from zero, counted from zero again).
    pub done: u64,
    /// The full length, when the server declared it.
    pub total: Option<u64>,
}

/// A running check of the bytes a [`Download`] keeps, verified at the end; see
/// [`Download::checksum`].
///
/// `update` sees every byte kept, in order, exactly once (a download resumed from a
/// partial file first feeds it the bytes already in the file); `reset` is called when the
/// download restarts from zero, and `finish` once at the end: an error there fails the
/// download with [`ErrorKind::Decode`].
///
/// ```
/// use keel_core::{BoxError, Checksum};
///
/// /// FNV-1a, checked against a known value.
/// struct Fnv { hash: u64, expected: u64 }
///
/// impl Checksum for Fnv {
///     fn update(&mut self, bytes: &[u8]) {
///         for b in bytes {
///             self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
///         }
///     }
///     fn reset(&mut self) {
///         self.hash = 0xcbf2_9ce4_8422_2325;
///     }
///     fn finish(&mut self) -> Result<(), BoxError> {
///         if self.hash == self.expected {
///             Ok(())
///         } else {
///             Err(format!("fnv-1a {:016x}, expected {:016x}", self.hash, self.expected).into())
///         }
///     }
/// }
///
/// let mut fnv = Fnv { hash: 0, expected: 0xaf63_dc4c_8601_ec8c };
/// fnv.reset();
/// fnv.update(b"a");
/// assert!(fnv.finish().is_ok());
/// ```
pub trait Checksum: Send {
    /// Adds `bytes`, the next bytes of the body.
    fn update(&mut self, bytes: &[u8]);
    /// Forgets every byte seen: the download starts again from zero.
    fn reset(&mut self);
    /// Checks the whole body; an error fails the download.
    fn finish(&mut self) -> Result<(), BoxError>;
}

/// What a finished [`Download`] did.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadReport {
    /// The length of the body written.
    pub bytes: u64,
    /// Requests sent again after a failure (each with `Range` + `If-Range` when it could).
    pub resumes: u32,
    /// Times the bytes kept were discarded and the body written again from zero (a `200`
    /// answering a resume, a changed validator, a failure with no validator).
    pub restarts: u32,
    /// The bytes found in a partial file and kept, for [`Download::to_file`] (0 otherwise).
    pub resumed_from: u64,
    /// The validator of the version written, if it had a strong one.
    pub validator: Option<Validator>,
}

/// A download that resumes after a mid-body failure, from
/// [`Client::download`](crate::Client::download) or
/// [`RequestBuilder::download`](crate::RequestBuilder::download). Nothing is sent until a
/// terminal method ([`to_writer`](Self::to_writer), [`to_vec`](Self::to_vec),
/// [`to_file`](Self::to_file)) is awaited.
///
/// - **Resuming.** When the body fails mid-way (the connection drops, the read-idle timeout
///   fires, a body ends short of its declared length, a retryable status answers a resume),
///   the request is sent again with `Range: bytes=N-` for the `N` bytes kept and `If-Range`
///   with the first response's strong validator (an `ETag` that isn't `W/`, or a
///   `Last-Modified` a second older than the response's `Date`). A `206` that starts at `N`
///   with the same validator is appended.
/// - **Never two versions.** A `200` (the server ignored the range, or `If-Range` found a
///   new version) or a `206` of another version discards the bytes kept, resets the
///   [checksum](Self::checksum) and writes from zero. Without a strong validator nothing can
///   prove a range is of the same version, so no `Range` is sent and a failure restarts from
///   zero. A plain writer can't be rewound: [`to_writer`](Self::to_writer) fails instead
///   (see there).
/// - **Checking.** The length written must be the `Content-Length` of the `200` or the
///   length in `Content-Range` (a body that ends short is resumed; one that runs long is an
///   error), and the optional [checksum](Self::checksum) must pass.
/// - **Limits.** Each request goes through the client's pipeline (retries, breakers, rate
///   and in-flight limits apply to it), and each resume draws on the origin's retry budget
///   and waits a backoff first (100 ms, doubling up to 5 s). After
///   [`max_resumes`](Self::max_resumes) failures in a row that brought no new byte, the
///   download fails with the last error. The read-idle timeout applies to every body. A
///   download is long-lived: unless the request set its own
///   [deadline](crate::RequestBuilder::deadline) (which then bounds the whole download,
///   resumes included), the client's deadline doesn't apply.
/// - **Memory.** One chunk at a time, except [`to_vec`](Self::to_vec), which holds the body
///   and refuses one larger than the client's
///   [`max_body_size`](crate::ClientBuilder::max_body_size) (or [`max_size`](Self::max_size)).
/// - **Encoding.** Ranges count the bytes on the wire, so a download asks for
///   `Accept-Encoding: identity` unless the request chose an encoding itself.
///
/// The request's `Range` and `If-Range` headers, if it had any, are replaced. A request
/// whose body is a one-shot stream is sent once and never resumed.
///
/// ```
/// # async fn demo<T: keel_core::Transport>(client: keel_core::Client<T>) -> Result<(), keel_core::Error> {
/// let report = client
///     .get("/releases/v1.2.tar.gz")
///     .download()
///     .on_progress(|p| eprintln!("{} of {:?} bytes", p.done, p.total))
///     .to_file("v1.2.tar.gz")
///     .await?;
/// eprintln!("{} bytes, {} resumes", report.bytes, report.resumes);
/// # Ok(()) }
/// ```
#[must_use = "a download does nothing until a terminal method is awaited"]
pub struct Download {
    shared: Arc<dyn Dispatch>,
    epoch: Instant,
    request: Result<Request, Error>,
    progress: Option<Box<dyn FnMut(Progress) + Send>>,
    checksum: Option<Box<dyn Checksum>>,
    max_resumes: u32,
    max_size: Option<u64>,
}

impl Download {
    /// The default [`max_resumes`](Self::max_resumes).
    pub const DEFAULT_MAX_RESUMES: u32 = 10;
    const FIRST_DELAY: Duration = Duration::from_millis(100);
    const MAX_DELAY: Duration = Duration::from_secs(5);

    pub(crate) fn new(
        shared: Arc<dyn Dispatch>,
        epoch: Instant,
        request: Result<Request, Error>,
    ) -> Self {
        Self {
            shared,
            epoch,
            request,
            progress: None,
            checksum: None,
            max_resumes: Self::DEFAULT_MAX_RESUMES,
            max_size: None,
        }
    }

    /// Calls `progress` after every chunk written, once with the offset a resume continues
    /// from, and with `done: 0` after a restart from zero.
    pub fn on_progress(mut self, progress: impl FnMut(Progress) + Send + 'static) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Checks the bytes kept with `checksum` (see [`Checksum`]); a failed check fails the
    /// download with [`ErrorKind::Decode`] (and [`to_file`](Self::to_file) deletes the
    /// partial file, whose bytes are wrong).
    pub fn checksum(mut self, checksum: impl Checksum + 'static) -> Self {
        self.checksum = Some(Box::new(checksum));
        self
    }

    /// Sets how many failures in a row that brought no new byte are resumed before the
    /// download fails with the last error (default
    /// [`DEFAULT_MAX_RESUMES`](Self::DEFAULT_MAX_RESUMES)). A failure after new bytes starts
    /// the count again.
    pub fn max_resumes(mut self, n: u32) -> Self {
        self.max_resumes = n;
        self
    }

    /// Refuses a body larger than `bytes` with [`ErrorKind::BodyTooLarge`] (declared or
    /// read). Default: no limit, except [`to_vec`](Self::to_vec), which holds the body in
    /// memory and defaults to the client's `max_body_size`.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// Writes the body to `writer`, and flushes it (it isn't closed).
    ///
    /// A writer can't be rewound: when the download must restart from zero after bytes were
    /// written (the server answered a resume with the whole body, or has a new version, or
    /// the first response had no strong validator), it fails with [`ErrorKind::Body`]
    /// saying so, and the writer holds a prefix of the body. Use [`to_file`](Self::to_file)
    /// or [`to_vec`](Self::to_vec), which restart cleanly, when that matters.
    pub async fn to_writer<W>(self, writer: W) -> Result<DownloadReport, Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let mut sink = WriterSink { writer };
        self.run(&mut sink, Resume::new(), 0).await
    }

    /// Reads the body into memory, refusing one larger than the client's `max_body_size`
    /// unless [`max_size`](Self::max_size) says otherwise.
    pub async fn to_vec(mut self) -> Result<Vec<u8>, Error> {
        let limit = self.shared.config().max_body_size;
        self.max_size.get_or_insert(limit);
        let mut sink = VecSink(Vec::new());
        self.run(&mut sink, Resume::new(), 0).await?;
        Ok(sink.0)
    }

    /// Writes the body to the file at `path`, resuming what an earlier download left.
    ///
    /// The bytes go to `<path>.part`, and the validator, the length and the URL to
    /// `<path>.part.meta` (a small JSON file). When the download completes (and the checksum
    /// passes), the part file is synced and renamed to `path`, and the metadata deleted. If
    /// it fails, both are left in place, and a later `to_file` of the same URL to the same
    /// path continues from the part file's length with `Range` + `If-Range` (feeding its
    /// bytes to the checksum first): a download whose process died resumes from disk. A
    /// part file without metadata for the same URL and a strong validator is started over.
    ///
    /// The file system is used through [`blocking`]'s thread pool, so this works under any
    /// executor.
    pub async fn to_file(mut self, path: impl AsRef<Path>) -> Result<DownloadReport, Error> {
        let path = path.as_ref().to_owned();
        let url = match &self.request {
            Ok(request) => request.url.to_string(),
            // Reports the request's error.
            Err(_) => return self.run(&mut VecSink(Vec::new()), Resume::new(), 0).await,
        };
        let part = suffixed(&path, ".part");
        let meta = suffixed(&path, ".part.meta");
        let checksum = self.checksum.take();
        let (open_part, opened_meta, url2) = (part.clone(), meta.clone(), url.clone());
        let opened =
            blocking::unblock(move || open_partial(&open_part, &opened_meta, &url2, checksum))
                .await
                .map_err(|e| file_error(&part, e))?;
        self.checksum = opened.checksum;
        let resumed_from = opened.resume.offset();
        let mut sink = FileSink {
            file: Some(opened.file),
            meta: meta.clone(),
            url,
        };
        let result = self.run(&mut sink, opened.resume, resumed_from).await;
        let report = match result {
            Ok(report) => report,
            Err(err) => {
                if err.kind() == ErrorKind::Decode {
                    // The checksum failed: the bytes on disk are wrong, don't resume them.
                    drop(sink.file.take());
                    let (part, meta) = (part.clone(), meta.clone());
                    blocking::unblock(move || {
                        let _ = std::fs::remove_file(&part);
                        let _ = std::fs::remove_file(&meta);
                    })
                    .await;
                }
                return Err(err);
            }
        };
        let file = sink.file.take();
        let (from, to) = (part.clone(), path);
        blocking::unblock(move || {
            if let Some(file) = file {
                file.sync_all()?;
            }
            std::fs::rename(&from, &to)?;
            match std::fs::remove_file(&meta) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| file_error(&part, e))?;
        Ok(report)
    }

    /// Sends and resends the request until the body is whole, writing it to `sink`.
    async fn run<S: Sink>(
        mut self,
        sink: &mut S,
        mut resume: Resume,
        resumed_from: u64,
    ) -> Result<DownloadReport, Error> {
        let mut template = Some(std::mem::replace(
            &mut self.request,
            Err(Error::new(ErrorKind::InvalidRequest)),
        )?);
        let timer = self.shared.timer().clone();
        let url = template.as_ref().map(|r| r.url.clone()).unwrap_or_default();
        // The request's own deadline bounds the whole download; the client's doesn't.
        let until = template
            .as_ref()
            .and_then(|r| r.timeouts.deadline)
            .and_then(|d| timer.now().checked_add(d));
        let mut report = DownloadReport {
            bytes: 0,
            resumes: 0,
            restarts: 0,
            resumed_from,
            validator: None,
        };
        let mut failures = 0u32;
        loop {
            let mut request = match template.as_ref().and_then(Request::try_clone) {
                Some(copy) => copy,
                None => match template.take() {
                    Some(one_shot) => one_shot,
                    None => {
                        return Err(Error::new(ErrorKind::Body)
                            .with_stage(Stage::Body)
                            .with_url(url)
                            .with_source("the request's body is a one-shot stream: it can't be sent again to resume"))
                    }
                },
            };
            request.headers.remove(RANGE);
            request.headers.remove(IF_RANGE);
            request.headers.extend(resume.request_headers());
            if !request.headers.contains_key(ACCEPT_ENCODING) {
                request
                    .headers
                    .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            }
            request.timeouts.deadline = Some(match until {
                // The download lives as long as it makes progress.
                None => super::NEVER,
                Some(end) => {
                    let left = end.saturating_duration_since(timer.now());
                    if left.is_zero() {
                        return Err(
                            Error::new(ErrorKind::Timeout(TimeoutPhase::Deadline)).with_url(url)
                        );
                    }
                    left
                }
            });
            let before = resume.offset();
            let err = match self.attempt(request, sink, &mut resume, &mut report).await {
                Ok(()) => break,
                Err(Step::Fatal(err)) => return Err(err),
                Err(Step::Again(err)) => err,
            };
            if resume.offset() > before {
                failures = 0;
            }
            failures += 1;
            if failures > self.max_resumes {
                return Err(err);
            }
            let now = timer.now();
            let store = self.shared.store();
            let refused = !store.resolve(&store.find(&url)).try_withdraw_retry(now);
            if refused {
                tracing::debug!(target: "keel::download", url = %redact::url(&url), "not resuming: the retry budget is spent");
                return Err(err);
            }
            let doublings = (failures - 1).min(16);
            let delay = Self::FIRST_DELAY
                .saturating_mul(1 << doublings)
                .min(Self::MAX_DELAY);
            tracing::debug!(target: "keel::download", url = %redact::url(&url), offset = resume.offset(),
                ?delay, error = %err, "resuming the download");
            timer
                .sleep_until(now.checked_add(delay).unwrap_or(now))
                .await;
            report.resumes += 1;
        }
        if let Some(checksum) = &mut self.checksum {
            checksum.finish().map_err(|e| {
                Error::new(ErrorKind::Decode)
                    .with_stage(Stage::Body)
                    .with_url(url.clone())
                    .with_source(format!("checksum mismatch: {e}"))
            })?;
        }
        sink.finish().await.map_err(|e| sink_error(&url, e))?;
        report.bytes = resume.offset();
        report.validator = resume.validator().cloned();
        Ok(report)
    }

    /// One request: its answer judged, its body written. `Again` when the download should
    /// resume.
    async fn attempt<S: Sink>(
        &mut self,
        request: Request,
        sink: &mut S,
        resume: &mut Resume,
        report: &mut DownloadReport,
    ) -> Result<(), Step> {
        let again = |err: Error| {
            if err.is_retryable() {
                Step::Again(err)
            } else {
                Step::Fatal(err)
            }
        };
        let mut resp = Pending::new(self.shared.clone(), request, self.epoch)
            .await
            .map_err(again)?;
        let url = resp.url().clone();
        let status = resp.status();
        if !status.is_success() && status != http::StatusCode::RANGE_NOT_SATISFIABLE {
            let err = Error::status(status, resp.headers().clone(), Bytes::new()).with_url(url);
            return Err(if RETRYABLE_STATUSES.contains(&status.as_u16()) {
                Step::Again(err)
            } else {
                Step::Fatal(err)
            });
        }
        let kept = resume.offset();
        let decision = resume
            .on_response(status, resp.headers())
            .map_err(|e| Step::Fatal(protocol(&url, e)))?;
        match decision {
            Decision::Complete => return Ok(()),
            Decision::Append { at } => {
                if at > 0 {
                    self.report(at, resume.complete_length());
                }
            }
            Decision::Restart | Decision::Refetch => {
                if kept > 0 {
                    if !sink.can_rewind() {
                        return Err(Step::Fatal(
                            Error::new(ErrorKind::Body)
                                .with_stage(Stage::Body)
                                .with_url(url)
                                .with_source(format!(
                                    "the download must restart from zero ({}) after {kept} bytes were written, \
                                     and a writer can't be rewound (to_file and to_vec restart cleanly)",
                                    if decision == Decision::Restart {
                                        "the server sent the whole body again"
                                    } else {
                                        "the server has a new version"
                                    }
                                )),
                        ));
                    }
                    sink.rewind()
                        .await
                        .map_err(|e| Step::Fatal(sink_error(&url, e)))?;
                    if let Some(checksum) = &mut self.checksum {
                        checksum.reset();
                    }
                    report.restarts += 1;
                    self.report(0, resume.complete_length());
                }
                if decision == Decision::Refetch {
                    return Err(Step::Again(protocol(
                        &url,
                        "a partial response of another version: asking again for all of it",
                    )));
                }
            }
        }
        if matches!(decision, Decision::Restart | Decision::Append { at: 0 }) {
            sink.on_version(resume.validator().cloned(), resume.complete_length())
                .await
                .map_err(|e| Step::Fatal(sink_error(&url, e)))?;
        }
        let limit = self.max_size;
        let too_large = |limit: u64, url: &http::Uri| {
            Step::Fatal(
                Error::new(ErrorKind::BodyTooLarge { limit })
                    .with_stage(Stage::Body)
                    .with_url(url.clone()),
            )
        };
        if let (Some(limit), Some(total)) = (limit, resume.complete_length()) {
            if total > limit {
                return Err(too_large(limit, &url));
            }
        }
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    return match resume.on_end() {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(Step::Again(
                            Error::new(ErrorKind::Body)
                                .with_stage(Stage::Body)
                                .with_url(url)
                                .with_source(format!(
                                    "the body ended at byte {} of {}",
                                    resume.offset(),
                                    resume
                                        .complete_length()
                                        .map_or_else(|| "?".to_owned(), |n| n.to_string())
                                )),
                        )),
                        Err(e) => Err(Step::Fatal(protocol(&url, e))),
                    };
                }
                Err(err) => return Err(again(err)),
            };
            resume
                .on_data(chunk.len() as u64)
                .map_err(|e| Step::Fatal(protocol(&url, e)))?;
            if limit.is_some_and(|limit| resume.offset() > limit) {
                return Err(too_large(limit.unwrap_or_default(), &url));
            }
            if let Some(checksum) = &mut self.checksum {
                checksum.update(&chunk);
            }
            sink.write(chunk)
                .await
                .map_err(|e| Step::Fatal(sink_error(&url, e)))?;
            self.report(resume.offset(), resume.complete_length());
        }
    }

    fn report(&mut self, done: u64, total: Option<u64>) {
        if let Some(progress) = &mut self.progress {
            progress(Progress { done, total });
        }
    }
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("request", &self.request)
            .field("on_progress", &self.progress.is_some())
            .field("checksum", &self.checksum.is_some())
            .field("max_resumes", &self.max_resumes)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

/// How an attempt ended, when not with the whole body.
enum Step {
    /// Resume (after the backoff), if the limits allow.
    Again(Error),
    /// Stop with this error.
    Fatal(Error),
}

fn protocol(url: &http::Uri, source: impl Into<BoxError>) -> Error {
    Error::new(ErrorKind::Protocol)
        .with_stage(Stage::Body)
        .with_url(url.clone())
        .with_source(source)
}

fn sink_error(url: &http::Uri, err: io::Error) -> Error {
    Error::new(ErrorKind::Body)
        .with_stage(Stage::Body)
        .with_url(url.clone())
        .with_source(err)
}

fn file_error(path: &Path, err: io::Error) -> Error {
    let message = format!("{}: {err}", path.display());
    Error::new(ErrorKind::InvalidRequest).with_source(io::Error::new(err.kind(), message))
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------------------------
// Where the bytes go

/// Where a download writes: a writer, a `Vec`, a file.
trait Sink: Send {
    /// Whether [`rewind`](Sink::rewind) works.
    fn can_rewind(&self) -> bool;
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>> + Send + '_;
    /// Discards everything written.
    fn rewind(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_;
    /// The version being written from zero (to keep for a later resume).
    fn on_version(
        &mut self,
        validator: Option<Validator>,
        complete: Option<u64>,
    ) -> impl Future<Output = io::Result<()>> + Send + '_ {
        let _ = (validator, complete);
        std::future::ready(Ok(()))
    }
    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

struct WriterSink<W> {
    writer: W,
}

impl<W: AsyncWrite + Unpin + Send> Sink for WriterSink<W> {
    fn can_rewind(&self) -> bool {
        false
    }

    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut self.writer).poll_write(cx, rest)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = &rest[n..];
        }
        Ok(())
    }

    fn rewind(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Err(io::Error::other("a writer can't be rewound")))
    }

    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        poll_fn(|cx| Pin::new(&mut self.writer).poll_flush(cx))
    }
}

struct VecSink(Vec<u8>);

impl Sink for VecSink {
    fn can_rewind(&self) -> bool {
        true
    }

    fn write(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.0.extend_from_slice(&chunk);
        std::future::ready(Ok(()))
    }

    fn rewind(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.0.clear();
        std::future::ready(Ok(()))
    }

    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }
}

/// A part file, written on [`blocking`]'s thread pool.
struct FileSink {
    /// `None` only while an operation has it (or after a cancelled one).
    file: Option<std::fs::File>,
    meta: PathBuf,
    url: String,
}

impl FileSink {
    /// Runs `op` on the file on the thread pool.
    async fn with_file(
        &mut self,
        op: impl FnOnce(&mut std::fs::File) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the part file was lost by a cancelled write"))?;
        let (file, result) = blocking::unblock(move || {
            let result = op(&mut file);
            (file, result)
        })
        .await;
        self.file = Some(file);
        result
    }
}

impl Sink for FileSink {
    fn can_rewind(&self) -> bool {
        true
    }

    fn write(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.with_file(move |f| f.write_all(&chunk))
    }

    fn rewind(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.with_file(|f| {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0)).map(drop)
        })
    }

    fn on_version(
        &mut self,
        validator: Option<Validator>,
        complete: Option<u64>,
    ) -> impl Future<Output = io::Result<()>> + Send + '_ {
        let meta = self.meta.clone();
        let record = PartMeta::new(self.url.clone(), validator.as_ref(), complete);
        async move {
            blocking::unblock(move || match record {
                // Nothing to resume with: a leftover part is started over.
                None => match std::fs::remove_file(&meta) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
                Some(record) => {
                    let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
                    std::fs::write(&meta, json)
                }
            })
            .await
        }
    }

    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.with_file(|f| f.flush())
    }
}

/// The sidecar of a part file: what a later process needs to resume it.
#[derive(Debug, Serialize, Deserialize)]
struct PartMeta {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    complete: Option<u64>,
}

impl PartMeta {
    fn new(url: String, validator: Option<&Validator>, complete: Option<u64>) -> Option<Self> {
        let mut meta = PartMeta {
            url,
            etag: None,
            last_modified: None,
            complete,
        };
        match validator? {
            Validator::ETag(v) => meta.etag = Some(v.clone()),
            Validator::LastModified(v) => meta.last_modified = Some(v.clone()),
        }
        Some(meta)
    }

    fn validator(&self) -> Option<Validator> {
        match (&self.etag, &self.last_modified) {
            (Some(tag), _) => Some(Validator::ETag(tag.clone())),
            (None, Some(date)) => Some(Validator::LastModified(date.clone())),
            (None, None) => None,
        }
    }
}

/// A part file opened for writing at its end, what to resume it with, and the checksum fed
/// with its bytes.
struct Opened {
    file: std::fs::File,
    resume: Resume,
    checksum: Option<Box<dyn Checksum>>,
}

/// Opens (or creates) `part`; keeps its bytes when `meta` describes them for `url` with a
/// strong validator, and empties it otherwise.
fn open_partial(
    part: &Path,
    meta: &Path,
    url: &str,
    mut checksum: Option<Box<dyn Checksum>>,
) -> io::Result<Opened> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)?;
    let len = file.metadata()?.len();
    let record = std::fs::read(meta)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<PartMeta>(&bytes).ok())
        .filter(|m| m.url == url);
    let validator = record.as_ref().and_then(PartMeta::validator);
    let complete = record.as_ref().and_then(|m| m.complete);
    let resume = match validator {
        Some(validator) if len > 0 && complete.is_none_or(|c| len <= c) => {
            if let Some(checksum) = &mut checksum {
                let mut buf = vec![0; 256 * 1024];
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    checksum.update(&buf[..n]);
                }
            }
            file.seek(SeekFrom::Start(len))?;
            Resume::from_partial(len, Some(validator), complete)
        }
        _ => {
            file.set_len(0)?;
            Resume::new()
        }
    };
    Ok(Opened {
        file,
        resume,
        checksum,
    })
}
