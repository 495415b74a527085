//! Resumable downloads: whether a response continues the bytes already written, replaces
//! them, or can't be used.
//!
//! A download that fails mid-body asks again for the rest only (`Range: bytes=N-`) and only
//! if the server still has the same version (`If-Range: <validator>`). [`Resume`] keeps the
//! facts that decision needs (how many bytes are kept, the validator of the version being
//! written, the full length when known), builds the headers of the next request, and judges
//! each response head:
//!
//! ```text
//!            ┌──────────── request_headers(): Range + If-Range when offset > 0 and a ──────┐
//!            │             strong validator is known; nothing otherwise                   │
//!            ▼                                                                             │
//!   on_response(status, headers) ──► Append { at: offset }   write the body after the kept │
//!            │                        (a 200 at offset 0,     bytes; on_data(n) per chunk ─┤
//!            │                         a 206 at offset)                                    │
//!            ├──────────────────────► Restart                 a 200 while bytes are kept:  │
//!            │                                                discard them, write from 0 ──┤
//!            ├──────────────────────► Refetch                 a 206 of another version:    │
//!            │                                                discard, ask again from 0 ───┘
//!            ├──────────────────────► Complete                a 416 whose length is what we hold
//!            └──────────────────────► Err(ResumeError)        anything that can't be trusted
//! ```
//!
//! After the body of a response ends cleanly, [`Resume::on_end`] says whether the bytes kept
//! are the whole resource (the length declared by `Content-Length` or `Content-Range`), or a
//! short body that must be resumed like a failure.
//!
//! # Validators, and why a download without one starts over
//!
//! Only a validator that names one exact version can prove that two responses may be
//! spliced: a strong `ETag` (not `W/…`), or a `Last-Modified` at least one second older than
//! the response's `Date` (RFC 9110 §8.8.2.2; a later edit within the same second would go
//! unseen otherwise). Without one no `Range` is sent: the next request asks for the whole
//! body, and a `200` restarts from zero. Bytes of two versions are never spliced.
//!
//! `Resume` performs no I/O and reads no clock: it is plain data, fed by the driver
//! ([`Client::download`](crate::Client::download)).
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use keel_core::machine::download::{Decision, Resume};
//!
//! let mut resume = Resume::new();
//! let mut head = HeaderMap::new();
//! head.insert("etag", "\"v1\"".parse().unwrap());
//! head.insert("content-length", "1000".parse().unwrap());
//! assert_eq!(resume.on_response(StatusCode::OK, &head), Ok(Decision::Append { at: 0 }));
//! resume.on_data(400).unwrap(); // then the connection drops
//!
//! let next = resume.request_headers();
//! assert_eq!(next["range"], "bytes=400-");
//! assert_eq!(next["if-range"], "\"v1\"");
//!
//! let mut partial = HeaderMap::new();
//! partial.insert("etag", "\"v1\"".parse().unwrap());
//! partial.insert("content-range", "bytes 400-999/1000".parse().unwrap());
//! assert_eq!(
//!     resume.on_response(StatusCode::PARTIAL_CONTENT, &partial),
//!     Ok(Decision::Append { at: 400 })
//! );
//! resume.on_data(600).unwrap();
//! assert_eq!(resume.on_end(), Ok(true)); // all 1000 bytes are there
//! ```

use std::fmt;
use std::time::Duration;

use http::header::{
    HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, DATE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, StatusCode};

/// What identifies one version of a resource, strongly enough to splice two responses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Validator {
    /// A strong entity tag, quotes included (`"abc"`).
    ETag(String),
    /// A `Last-Modified` date that is strong: at least a second older than the response.
    LastModified(String),
}

impl Validator {
    /// The strong validator of a response, if it has one: its `ETag` unless weak, otherwise a
    /// `Last-Modified` at least a second older than its `Date`.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use keel_core::machine::download::Validator;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("etag", "W/\"weak\"".parse().unwrap());
    /// assert_eq!(Validator::from_headers(&headers), None);
    /// headers.insert("date", "Tue, 15 Nov 1994 08:12:31 GMT".parse().unwrap());
    /// headers.insert("last-modified", "Tue, 15 Nov 1994 08:12:00 GMT".parse().unwrap());
    /// assert_eq!(
    ///     Validator::from_headers(&headers),
    ///     Some(Validator::LastModified("Tue, 15 Nov 1994 08:12:00 GMT".into()))
    /// );
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Option<Validator> {
        if let Some(etag) = single(headers, &ETAG) {
            let etag = etag.trim();
            if is_strong_etag(etag) {
                return Some(Validator::ETag(etag.to_owned()));
            }
            // A weak tag: fall back to Last-Modified, as If-Range may not carry a weak tag.
        }
        let modified = single(headers, &LAST_MODIFIED)?.trim();
        let date = single(headers, &DATE)?;
        let modified_at = httpdate::parse_http_date(modified).ok()?;
        let date_at = httpdate::parse_http_date(date.trim()).ok()?;
        let age = date_at.duration_since(modified_at).ok()?;
        (age >= Duration::from_secs(1)).then(|| Validator::LastModified(modified.to_owned()))
    }

    /// The value as sent in `If-Range`.
    pub fn as_str(&self) -> &str {
        match self {
            Validator::ETag(v) | Validator::LastModified(v) => v,
        }
    }

    /// Whether `headers` name the same version: the same strong `ETag`, or the same
    /// `Last-Modified` date.
    fn matches(&self, headers: &HeaderMap) -> bool {
        match self {
            Validator::ETag(tag) => single(headers, &ETAG).is_some_and(|v| v.trim() == tag),
            Validator::LastModified(date) => {
                // An ETag that appeared or changed would be a new version too, but a server
                // that validates by date doesn't send one: compare the dates.
                let ours = httpdate::parse_http_date(date).ok();
                let theirs = single(headers, &LAST_MODIFIED)
                    .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
                ours.is_some() && ours == theirs
            }
        }
    }
}

impl fmt::Display for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `Content-Range: bytes first-last/complete` (RFC 9110 §14.4), or the
/// `bytes */complete` of a `416`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    /// The first and last byte positions, inclusive; `None` for `bytes */complete`.
    pub range: Option<(u64, u64)>,
    /// The full length of the resource, when the server knows it (`None` for `/*`).
    pub complete: Option<u64>,
}

impl ContentRange {
    /// Parses a `Content-Range` value. Only the `bytes` unit is understood; whitespace
    /// around the parts is allowed, and anything else is refused (never a panic).
    ///
    /// ```
    /// use keel_core::machine::download::ContentRange;
    ///
    /// let r = ContentRange::parse(b"bytes 100-199/1000").unwrap();
    /// assert_eq!((r.range, r.complete), (Some((100, 199)), Some(1000)));
    /// assert_eq!(ContentRange::parse(b"bytes */1000").unwrap().complete, Some(1000));
    /// assert_eq!(ContentRange::parse(b"bytes 0-9/*").unwrap().complete, None);
    /// assert!(ContentRange::parse(b"bytes 9-0/10").is_none());
    /// assert!(ContentRange::parse(b"bytes 0-10/10").is_none()); // past the end
    /// assert!(ContentRange::parse(b"items 0-1/2").is_none());
    /// ```
    pub fn parse(value: &[u8]) -> Option<ContentRange> {
        let value = std::str::from_utf8(value).ok()?.trim();
        let (unit, rest) = value.split_once([' ', '\t'])?;
        if !unit.eq_ignore_ascii_case("bytes") {
            return None;
        }
        let (range, complete) = rest.trim().split_once('/')?;
        let complete = match complete.trim() {
            "*" => None,
            n => Some(digits(n)?),
        };
        let range = match range.trim() {
            "*" => {
                // `bytes */*` says nothing.
                complete?;
                None
            }
            r => {
                let (first, last) = r.split_once('-')?;
                let (first, last) = (digits(first.trim())?, digits(last.trim())?);
                if last < first || complete.is_some_and(|c| last >= c) {
                    return None;
                }
                Some((first, last))
            }
        };
        Some(ContentRange { range, complete })
    }
}

/// What the driver must do with a response, from [`Resume::on_response`].
#[must_use]
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write the body after the `at` bytes already kept (`at` is 0 for a download's first
    /// response).
    Append {
        /// The bytes kept, where the body starts.
        at: u64,
    },
    /// Discard the bytes kept and write the body from zero: it is the whole resource (a `200`
    /// to a request that asked for a range, or to one sent without a validator).
    Restart,
    /// Discard the bytes kept and this response (a part of another version), and ask again
    /// for the whole resource.
    Refetch,
    /// Nothing is left to read: the bytes kept are the whole resource (a `416` whose
    /// `Content-Range: bytes */N` is what is kept).
    Complete,
}

/// A response that can't be used, from [`Resume::on_response`], [`Resume::on_data`] or
/// [`Resume::on_end`]. Each is the server contradicting itself or HTTP: the download stops.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeError {
    /// A `206` without a `Content-Range` keel understands (missing, malformed, several, or
    /// `multipart/byteranges`).
    BadContentRange,
    /// A `206` that starts elsewhere than at the bytes kept.
    WrongOffset {
        /// Where the download asked to continue.
        expected: u64,
        /// Where the server's range starts.
        got: u64,
    },
    /// The full length differs from what an earlier response of the same version declared.
    LengthChanged {
        /// The length declared before.
        before: u64,
        /// The length declared now.
        now: u64,
    },
    /// A `416` whose length is not the bytes kept.
    NotSatisfiable {
        /// The bytes kept.
        kept: u64,
        /// The length the server declared, if any.
        complete: Option<u64>,
    },
    /// A body longer than its response declared.
    TooLong {
        /// Where the body should have ended.
        expected: u64,
        /// Where it got to.
        got: u64,
    },
    /// A status a download can't use (anything but `200`, `206` and `416`).
    UnexpectedStatus(StatusCode),
}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumeError::BadContentRange => {
                f.write_str("a 206 response without a usable content-range")
            }
            ResumeError::WrongOffset { expected, got } => write!(
                f,
                "the server resumed at byte {got}, not at byte {expected} as asked"
            ),
            ResumeError::LengthChanged { before, now } => write!(
                f,
                "the resource's length changed from {before} to {now} bytes under the same validator"
            ),
            ResumeError::NotSatisfiable { kept, complete } => match complete {
                Some(c) => write!(
                    f,
                    "range not satisfiable: {kept} bytes kept, the resource has {c}"
                ),
                None => write!(f, "range not satisfiable at byte {kept}"),
            },
            ResumeError::TooLong { expected, got } => write!(
                f,
                "the body is longer than declared: {got} bytes, {expected} expected"
            ),
            ResumeError::UnexpectedStatus(s) => write!(f, "a download can't use a {s} response"),
        }
    }
}

impl std::error::Error for ResumeError {}

/// The state of one download: the bytes kept, the version they belong to, the length the
/// resource has, and where the current response's body should end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    offset: u64,
    validator: Option<Validator>,
    complete: Option<u64>,
    /// Where the body of the response being read should end, when declared.
    end: Option<u64>,
}

impl Resume {
    /// A download with nothing written yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A download that continues `offset` bytes already kept (a partial file left by an
    /// earlier process), of the version named by `validator`, whose full length was
    /// `complete` when known. Without a validator the bytes can't be trusted: the first
    /// request asks for the whole resource and its `200` restarts from zero.
    pub fn from_partial(offset: u64, validator: Option<Validator>, complete: Option<u64>) -> Self {
        Self {
            offset,
            validator,
            complete,
            end: None,
        }
    }

    /// The bytes kept so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The validator of the version being written, if it has a strong one.
    pub fn validator(&self) -> Option<&Validator> {
        self.validator.as_ref()
    }

    /// The resource's full length, when a response declared it.
    pub fn complete_length(&self) -> Option<u64> {
        self.complete
    }

    /// Whether the next request can ask for the rest only: bytes are kept and a strong
    /// validator names their version. When false, the next response restarts from zero.
    pub fn can_resume(&self) -> bool {
        self.offset > 0 && self.validator.is_some()
    }

    /// The headers the next request must carry: `Range: bytes=<offset>-` and
    /// `If-Range: <validator>` when [`can_resume`](Self::can_resume), none otherwise. The
    /// driver removes any `Range`/`If-Range` the request had before adding these.
    pub fn request_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let (true, Some(validator)) = (self.offset > 0, &self.validator) {
            if let Ok(value) = HeaderValue::from_str(validator.as_str()) {
                headers.insert(RANGE, HeaderValue::from(RangeValue(self.offset)));
                headers.insert(IF_RANGE, value);
            }
        }
        headers
    }

    /// Judges a response head; see the [module docs](self) for the table. On
    /// [`Decision::Restart`] and [`Decision::Refetch`] the bytes kept are forgotten (the
    /// offset is 0 again) and the caller must discard them.
    pub fn on_response(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Decision, ResumeError> {
        match status {
            StatusCode::OK => {
                let length = content_length(headers);
                let restart = self.offset > 0;
                self.offset = 0;
                self.validator = Validator::from_headers(headers);
                self.complete = length;
                self.end = length;
                Ok(if restart {
                    Decision::Restart
                } else {
                    Decision::Append { at: 0 }
                })
            }
            StatusCode::PARTIAL_CONTENT => {
                let range = single_bytes(headers, &CONTENT_RANGE)
                    .and_then(ContentRange::parse)
                    .ok_or(ResumeError::BadContentRange)?;
                let (first, last) = range.range.ok_or(ResumeError::BadContentRange)?;
                let same = match &self.validator {
                    Some(v) => v.matches(headers),
                    // Only a download that sent no If-Range has no validator: a 206 then is
                    // of an unknown version, and usable only if it starts at zero.
                    None => self.offset == 0,
                };
                if !same {
                    self.forget();
                    return Ok(Decision::Refetch);
                }
                if first != self.offset {
                    return Err(ResumeError::WrongOffset {
                        expected: self.offset,
                        got: first,
                    });
                }
                if let (Some(before), Some(now)) = (self.complete, range.complete) {
                    if before != now {
                        return Err(ResumeError::LengthChanged { before, now });
                    }
                }
                if self.offset == 0 && self.validator.is_none() {
                    self.validator = Validator::from_headers(headers);
                }
                self.complete = range.complete.or(self.complete);
                // `last < complete` was checked by the parser, so `last + 1` can't overflow.
                self.end = Some(last + 1);
                Ok(Decision::Append { at: first })
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let complete = single_bytes(headers, &CONTENT_RANGE)
                    .and_then(ContentRange::parse)
                    .and_then(|r| r.complete);
                if self.offset > 0 && complete == Some(self.offset) {
                    self.complete = complete;
                    self.end = complete;
                    Ok(Decision::Complete)
                } else {
                    Err(ResumeError::NotSatisfiable {
                        kept: self.offset,
                        complete,
                    })
                }
            }
            other => Err(ResumeError::UnexpectedStatus(other)),
        }
    }

    /// Records `n` more bytes of the current body, written after those kept. A body that
    /// goes past the end its response declared is refused.
    pub fn on_data(&mut self, n: u64) -> Result<(), ResumeError> {
        let got = self.offset.saturating_add(n);
        if let Some(expected) = self.end {
            if got > expected {
                return Err(ResumeError::TooLong { expected, got });
            }
        }
        self.offset = got;
        Ok(())
    }

    /// The current body ended cleanly: `Ok(true)` when the bytes kept are the whole
    /// resource (or as much as was declared, when no length was), `Ok(false)` when the body
    /// stopped short of its declared end and the rest must be asked for, like after a
    /// failure.
    pub fn on_end(&self) -> Result<bool, ResumeError> {
        let Some(expected) = self.end else {
            // Nothing was declared (a chunked 200): its end is the end.
            return Ok(true);
        };
        if self.offset > expected {
            return Err(ResumeError::TooLong {
                expected,
                got: self.offset,
            });
        }
        if self.offset < expected {
            return Ok(false);
        }
        // A 206 of a range that stops before the complete length (a server that caps its
        // ranges) leaves the rest to ask for.
        Ok(self.complete.is_none_or(|c| self.offset >= c))
    }

    fn forget(&mut self) {
        *self = Self::new();
    }
}

/// `bytes=N-`.
struct RangeValue(u64);

impl From<RangeValue> for HeaderValue {
    fn from(RangeValue(n): RangeValue) -> HeaderValue {
        HeaderValue::try_from(format!("bytes={n}-")).expect("digits are a valid header value")
    }
}

/// Whether `etag` is a strong entity tag: `"…"` with no `W/`.
fn is_strong_etag(etag: &str) -> bool {
    etag.len() >= 2
        && etag.starts_with('"')
        && etag.ends_with('"')
        && !etag[1..etag.len() - 1].contains('"')
}

/// The one value of `name`, as text; `None` when absent, repeated or not text.
fn single<'a>(headers: &'a HeaderMap, name: &http::header::HeaderName) -> Option<&'a str> {
    single_bytes(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}

fn single_bytes<'a>(headers: &'a HeaderMap, name: &http::header::HeaderName) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then(|| first.as_bytes())
}

/// The `Content-Length` of a response: one value of digits, or `None`.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    digits(single(headers, &CONTENT_LENGTH)?.trim())
}

/// A non-empty run of ASCII digits that fits a `u64`.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;

    fn head(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    /// A download that kept `offset` bytes of version `"v1"` of a 1000-byte resource.
    fn kept(offset: u64) -> Resume {
        let mut r = Resume::new();
        let first = head(&[("etag", "\"v1\""), ("content-length", "1000")]);
        assert_eq!(
            r.on_response(StatusCode::OK, &first),
            Ok(Decision::Append { at: 0 })
        );
        r.on_data(offset).unwrap();
        r
    }

    fn partial(range: &str, etag: &str) -> HeaderMap {
        head(&[("content-range", range), ("etag", etag)])
    }

    #[test]
    fn content_range_forms() {
        let p = |s: &str| ContentRange::parse(s.as_bytes());
        assert_eq!(
            p("bytes 0-0/1"),
            Some(ContentRange {
                range: Some((0, 0)),
                complete: Some(1)
            })
        );
        assert_eq!(p(" BYTES  5 - 9 / * ").unwrap().range, Some((5, 9)));
        assert_eq!(p("bytes */0").unwrap().complete, Some(0));
        for bad in [
            "",
            "bytes",
            "bytes */*",
            "bytes 1-/10",
            "bytes -1/10",
            "bytes +1-2/10",
            "bytes 1-2",
            "bytes 1-2/",
            "bytes 1-2/x",
            "bytes 0-18446744073709551616/*",
            "bytes 5-4/10",
            "bytes 0-9/9",
            "bytes=0-9/10",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(ContentRange::parse(b"bytes 0-1/\xff"), None);
    }

    #[test]
    fn a_strong_etag_is_preferred_and_a_weak_one_ignored() {
        assert_eq!(
            Validator::from_headers(&head(&[("etag", "\"a\"")])),
            Some(Validator::ETag("\"a\"".into()))
        );
        for weak in ["W/\"a\"", "a", "\"", "\"a\"b\""] {
            assert_eq!(Validator::from_headers(&head(&[("etag", weak)])), None);
        }
        // Two ETags: neither can be trusted.
        assert_eq!(
            Validator::from_headers(&head(&[("etag", "\"a\""), ("etag", "\"b\"")])),
            None
        );
    }

    #[test]
    fn last_modified_counts_only_when_a_second_older_than_the_date() {
        let lm = "Tue, 15 Nov 1994 08:12:30 GMT";
        let same = head(&[("last-modified", lm), ("date", lm)]);
        assert_eq!(Validator::from_headers(&same), None);
        let older = head(&[
            ("last-modified", lm),
            ("date", "Tue, 15 Nov 1994 08:12:31 GMT"),
        ]);
        assert_eq!(
            Validator::from_headers(&older),
            Some(Validator::LastModified(lm.into()))
        );
        assert_eq!(
            Validator::from_headers(&head(&[("last-modified", lm)])),
            None,
            "no Date: can't tell"
        );
    }

    #[test]
    fn resume_headers_need_bytes_and_a_validator() {
        assert!(Resume::new().request_headers().is_empty());
        let r = kept(400);
        let h = r.request_headers();
        assert_eq!(h[RANGE], "bytes=400-");
        assert_eq!(h[IF_RANGE], "\"v1\"");
        let mut nameless = Resume::new();
        let _ = nameless
            .on_response(StatusCode::OK, &head(&[("content-length", "10")]))
            .unwrap();
        nameless.on_data(5).unwrap();
        assert!(!nameless.can_resume());
        assert!(nameless.request_headers().is_empty());
    }

    #[test]
    fn decisions() {
        // A 206 at the offset, same version: append.
        let mut r = kept(400);
        assert_eq!(
            r.on_response(
                StatusCode::PARTIAL_CONTENT,
                &partial("bytes 400-999/1000", "\"v1\"")
            ),
            Ok(Decision::Append { at: 400 })
        );
        // A 200 on a resume: restart, and the new version's validator is adopted.
        let mut r = kept(400);
        let fresh = head(&[("etag", "\"v2\""), ("content-length", "900")]);
        assert_eq!(r.on_response(StatusCode::OK, &fresh), Ok(Decision::Restart));
        assert_eq!(r.offset(), 0);
        assert_eq!(r.validator(), Some(&Validator::ETag("\"v2\"".into())));
        assert_eq!(r.complete_length(), Some(900));
        // A 206 of another version: refetch.
        let mut r = kept(400);
        assert_eq!(
            r.on_response(
                StatusCode::PARTIAL_CONTENT,
                &partial("bytes 400-999/1000", "\"v2\"")
            ),
            Ok(Decision::Refetch)
        );
        assert_eq!(r, Resume::new());
        // A 206 elsewhere: refused.
        let mut r = kept(400);
        assert_eq!(
            r.on_response(
                StatusCode::PARTIAL_CONTENT,
                &partial("bytes 300-999/1000", "\"v1\"")
            ),
            Err(ResumeError::WrongOffset {
                expected: 400,
                got: 300
            })
        );
        // A 206 whose length changed under the same tag: refused.
        let mut r = kept(400);
        assert_eq!(
            r.on_response(
                StatusCode::PARTIAL_CONTENT,
                &partial("bytes 400-1099/1100", "\"v1\"")
            ),
            Err(ResumeError::LengthChanged {
                before: 1000,
                now: 1100
            })
        );
        // A 206 with no or a bad Content-Range.
        for range in [None, Some("bytes */1000"), Some("bytes 400-999/x")] {
            let mut r = kept(400);
            let mut h = head(&[("etag", "\"v1\"")]);
            if let Some(range) = range {
                h.insert(CONTENT_RANGE, HeaderValue::from_str(range).unwrap());
            }
            assert_eq!(
                r.on_response(StatusCode::PARTIAL_CONTENT, &h),
                Err(ResumeError::BadContentRange)
            );
        }
        // A 416 that says everything is there, and one that doesn't.
        let mut r = kept(1000);
        let h = head(&[("content-range", "bytes */1000")]);
        assert_eq!(
            r.on_response(StatusCode::RANGE_NOT_SATISFIABLE, &h),
            Ok(Decision::Complete)
        );
        let mut r = kept(400);
        assert_eq!(
            r.on_response(StatusCode::RANGE_NOT_SATISFIABLE, &h),
            Err(ResumeError::NotSatisfiable {
                kept: 400,
                complete: Some(1000)
            })
        );
        assert_eq!(
            Resume::new().on_response(StatusCode::NOT_FOUND, &HeaderMap::new()),
            Err(ResumeError::UnexpectedStatus(StatusCode::NOT_FOUND))
        );
    }

    #[test]
    fn the_end_is_checked_against_the_declared_length() {
        let r = kept(999);
        assert_eq!(r.on_end(), Ok(false), "one byte short: resume");
        let mut r = kept(999);
        assert_eq!(
            r.on_data(2),
            Err(ResumeError::TooLong {
                expected: 1000,
                got: 1001
            })
        );
        // A chunked 200 declares nothing: its end is the end.
        let mut r = Resume::new();
        let _ = r.on_response(StatusCode::OK, &HeaderMap::new()).unwrap();
        r.on_data(12).unwrap();
        assert_eq!(r.on_end(), Ok(true));
        // A 206 of a capped range ends short of the whole: more to ask for.
        let mut r = kept(0);
        r.offset = 0;
        let _ = r
            .on_response(
                StatusCode::PARTIAL_CONTENT,
                &partial("bytes 0-99/1000", "\"v1\""),
            )
            .unwrap();
        r.on_data(100).unwrap();
        assert_eq!(r.on_end(), Ok(false));
    }

    #[test]
    fn a_partial_file_without_a_validator_restarts() {
        let mut r = Resume::from_partial(500, None, Some(1000));
        assert!(!r.can_resume());
        let h = head(&[("content-length", "1000")]);
        assert_eq!(r.on_response(StatusCode::OK, &h), Ok(Decision::Restart));
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2_000,
            rng_seed: RngSeed::Fixed(0x646c),
            ..ProptestConfig::default()
        })]

        /// Whatever the headers, parsing and judging never panic, and an `Append` is always
        /// at the bytes kept.
        #[test]
        fn random_heads_never_panic(
            offset in prop_oneof![Just(0u64), any::<u64>(), 0u64..2000],
            status in prop::sample::select(vec![200u16, 206, 416, 404, 500]),
            range in prop_oneof![
                Just(String::new()),
                "[ -~]{0,40}",
                (any::<u64>(), any::<u64>(), prop::option::of(any::<u64>()))
                    .prop_map(|(a, b, c)| format!("bytes {a}-{b}/{}", c.map_or("*".into(), |c| c.to_string()))),
                (0u64..2000, 0u64..2000).prop_map(|(a, b)| format!("bytes {a}-{b}/2000")),
            ],
            etag in prop_oneof![Just("\"v1\"".to_owned()), Just("W/\"v1\"".to_owned()), "[ -~]{0,12}"],
            length in prop_oneof![Just(String::new()), "[0-9]{1,22}", "[ -~]{0,8}"],
            data in prop::collection::vec(any::<u64>(), 0..4),
        ) {
            let _ = ContentRange::parse(range.as_bytes());
            let mut r = Resume::from_partial(offset, Some(Validator::ETag("\"v1\"".into())), None);
            let mut h = HeaderMap::new();
            for (name, value) in [(CONTENT_RANGE, &range), (ETAG, &etag), (CONTENT_LENGTH, &length)] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    if !value.is_empty() {
                        h.insert(name, v);
                    }
                }
            }
            let before = r.offset();
            if let Ok(Decision::Append { at }) = r.on_response(StatusCode::from_u16(status).unwrap(), &h) {
                prop_assert!(at == before || at == 0);
                prop_assert_eq!(r.offset(), at);
            }
            for n in data {
                let _ = r.on_data(n);
            }
            let _ = r.on_end();
            let _ = r.request_headers();
        }
    }
}
