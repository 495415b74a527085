//! Lines of a body that arrives in chunks, and NDJSON values on those lines.
//!
//! [`LineDecoder`] is fed the chunks of a body as they come, cut anywhere, and gives back whole
//! lines. [`NdjsonDecoder`] does the same with one JSON value per line (NDJSON, JSON Lines).
//! Both are plain data: they perform no I/O, and feeding the same bytes gives the same lines
//! whatever the chunks' boundaries.
//!
//! # The rules
//!
//! - **Line ends** are `\n` and `\r\n`, as NDJSON and JSON Lines say, and neither is part of the
//!   line. A `\r\n` cut between two chunks is one line end. A `\r` not followed by `\n` is part
//!   of the line (unlike in [server-sent events](super::sse), where it ends one).
//! - **The last line** need not end with a line end: after [`finish`](LineDecoder::finish) the
//!   bytes after the last line end are one more line (without a trailing `\r`, as if a `\n`
//!   followed), as `BufRead::lines`, Go's `bufio.Scanner` and tokio's `LinesCodec` do. A body
//!   that ends with a line end has no empty line after it.
//! - **Length**: a line longer than [`max_line`](LineDecoder::max_line) bytes (its line end not
//!   counted) is a [`LineTooLong`] error, raised as soon as the decoder has seen one byte too
//!   many, without waiting for the line's end. The decoder then **resynchronises**: it drops
//!   the rest of that line as it arrives, without buffering it, and the next line is read as
//!   usual. The caller may go on or stop.
//! - **Text**: [`next_line`](LineDecoder::next_line) gives each line as a `String`; a line that is
//!   not UTF-8 is a [`NotUtf8`] error naming the line (the next line is read as usual). A
//!   character cut between two chunks is whole in its line: lines are checked once complete.
//!   [`next_line_bytes`](LineDecoder::next_line_bytes) gives the bytes, unchecked, borrowed from
//!   the decoder. A byte order mark is not removed: it is part of the first line.
//! - **Line numbers** start at 1 and count every line, blank, too long or not UTF-8.
//!
//! # Memory and time
//!
//! Lines are looked for as bytes arrive: each byte is scanned once, however the body is cut.
//! The decoder holds the bytes fed and not yet returned. If the caller takes every line
//! ([`next_line`](LineDecoder::next_line) until `None`) before it feeds the next chunk, which
//! is the way to drive it, that is at most [`max_line`](LineDecoder::max_line) + 1 bytes of a
//! partial line and one chunk.
//!
//! # Driving it
//!
//! ```text
//!   for each chunk:   feed(chunk), then next_line() until None
//!   at end of body:   finish(),    then next_line() until None
//! ```
//!
//! ```
//! use keel_core::machine::lines::{LineDecoder, LineError};
//!
//! let mut lines = LineDecoder::new().with_max_line(16);
//! let mut got = Vec::new();
//! for chunk in [&b"first\r"[..], b"\nsec", b"ond\n\nlast \xE2\x82", b"\xAC"] {
//!     lines.feed(chunk);
//!     while let Some(line) = lines.next_line() {
//!         got.push(line?);
//!     }
//! }
//! lines.finish();
//! while let Some(line) = lines.next_line() {
//!     got.push(line?);
//! }
//! assert_eq!(got, ["first", "second", "", "last €"]);
//!
//! // A line too long is an error; the decoder goes on with the next line.
//! lines.feed(b"way too long for sixteen bytes\nok\n");
//! match lines.next_line() {
//!     Some(Err(LineError::TooLong(e))) => assert_eq!((e.line(), e.limit()), (5, 16)),
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(lines.next_line().transpose()?.as_deref(), Some("ok"));
//! assert_eq!(lines.next_line(), None);
//! # Ok::<(), LineError>(())
//! ```
//!
//! NDJSON, with serde:
//!
//! ```
//! use keel_core::machine::lines::NdjsonDecoder;
//! use serde::Deserialize;
//!
//! #[derive(Debug, PartialEq, Deserialize)]
//! struct Row { id: u32 }
//!
//! let mut rows = NdjsonDecoder::<Row>::new();
//! rows.feed(b"{\"id\": 1}\n\n{\"i");
//! assert_eq!(rows.next_value().unwrap().unwrap(), Row { id: 1 });
//! assert!(rows.next_value().is_none()); // the blank line is skipped, the third isn't whole
//! rows.feed(b"d\": 2}\n{\"id\": \"three\"}");
//! rows.finish();
//! assert_eq!(rows.next_value().unwrap().unwrap(), Row { id: 2 });
//! let err = rows.next_value().unwrap().unwrap_err();
//! assert_eq!(err.line(), 4);
//! assert_eq!(err.json_path(), Some("id"));
//! assert!(rows.next_value().is_none());
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;
use std::str::Utf8Error;

use serde::de::DeserializeOwned;

/// Splits a body fed in chunks into lines: see the [module docs](self) for the rules.
#[derive(Clone)]
pub struct LineDecoder {
    /// Bytes fed and not yet returned; `buf[start..]` is what is left to read.
    buf: Vec<u8>,
    /// Where the next line starts.
    start: usize,
    /// `buf[start..scanned]` holds no `\n`: where the next search for a line end begins.
    scanned: usize,
    max_line: usize,
    /// Line ends seen so far (including the one of a line being dropped as too long).
    lines: u64,
    /// The line being read was too long: its bytes are dropped up to its line end.
    dropping: bool,
}

impl LineDecoder {
    /// The default [`max_line`](Self::max_line): 8 MiB.
    pub const DEFAULT_MAX_LINE: usize = 8 << 20;

    /// A decoder at the start of a body, with lines of at most
    /// [`DEFAULT_MAX_LINE`](Self::DEFAULT_MAX_LINE) bytes.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line: Self::DEFAULT_MAX_LINE,
            lines: 0,
            dropping: false,
        }
    }

    /// Sets the longest line accepted, in bytes, line end not counted.
    #[must_use]
    pub fn with_max_line(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
    }

    /// The longest line accepted, in bytes, line end not counted.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The number of lines ended so far: the number of the last line returned (or rejected),
    /// 0 before the first.
    pub fn line_number(&self) -> u64 {
        self.lines
    }

    /// Adds the next chunk of the body. Take the lines it completes with
    /// [`next_line`](Self::next_line) (or [`next_line_bytes`](Self::next_line_bytes)) until
    /// `None` before feeding the next one, or the decoder holds every chunk fed meanwhile.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            // Everything before `start` has been returned: move the partial line to the front.
            // Each byte is moved at most once, when the line before it is taken.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        let mut chunk = chunk;
        if self.dropping {
            // Dropping a line too long (the buffer is empty): keep nothing of it, only what
            // follows its end.
            match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    chunk = &chunk[end + 1..];
                    self.dropping = false;
                    self.lines += 1;
                }
                None => return,
            }
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Marks the end of the body: the bytes after the last line end, if any, are one more line.
    ///
    /// It ends the line being read as a `\n` would (so a trailing `\r` is dropped). Feeding
    /// more afterwards is allowed: those bytes start a new line.
    pub fn finish(&mut self) {
        if self.buf.len() > self.start && self.buf.last() != Some(&b'\n') {
            self.buf.push(b'\n');
        } else if self.dropping && self.buf.len() == self.start {
            // The line dropped as too long ends here.
            self.dropping = false;
            self.lines += 1;
        }
    }

    /// The next whole line, as text, or `None` until more is fed (or, after
    /// [`finish`](Self::finish), at the end).
    ///
    /// An error stands for one line, too long or not UTF-8; the line after it comes next.
    #[must_use]
    pub fn next_line(&mut self) -> Option<Result<String, LineError>> {
        let number = self.lines + 1;
        match self.next_line_bytes()? {
            Ok(line) => Some(match std::str::from_utf8(line) {
                Ok(text) => Ok(text.to_owned()),
                Err(error) => Err(LineError::NotUtf8(NotUtf8 {
                    line: number,
                    bytes: line.to_vec(),
                    error,
                })),
            }),
            Err(e) => Some(Err(LineError::TooLong(e))),
        }
    }

    /// The next whole line, as bytes borrowed from the decoder (not checked for UTF-8; its
    /// line end removed), or `None` until more is fed (or, after [`finish`](Self::finish), at
    /// the end).
    ///
    /// This allocates nothing: parse the line in place, or copy it.
    #[must_use]
    pub fn next_line_bytes(&mut self) -> Option<Result<&[u8], LineTooLong>> {
        if self.dropping {
            // `feed` keeps nothing of a line being dropped, and stops dropping at its end.
            debug_assert!(self.buf.is_empty());
            return None;
        }
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let newline = self.scanned + at;
                let line_start = self.start;
                let mut end = newline;
                if end > line_start && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                self.start = newline + 1;
                self.scanned = self.start;
                self.lines += 1;
                if end - line_start > self.max_line {
                    return Some(Err(LineTooLong {
                        line: self.lines,
                        limit: self.max_line,
                    }));
                }
                Some(Ok(&self.buf[line_start..end]))
            }
            None => {
                self.scanned = self.buf.len();
                let partial = &self.buf[self.start..];
                // A final `\r` may be the start of the line end: it doesn't count yet.
                let len = partial.len() - usize::from(partial.last() == Some(&b'\r'));
                if len > self.max_line {
                    self.buf.clear();
                    self.start = 0;
                    self.scanned = 0;
                    self.dropping = true;
                    return Some(Err(LineTooLong {
                        line: self.lines + 1,
                        limit: self.max_line,
                    }));
                }
                None
            }
        }
    }
}

impl Default for LineDecoder {
    /// [`LineDecoder::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LineDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineDecoder")
            .field("max_line", &self.max_line)
            .field("line_number", &self.lines)
            .field("buffered", &(self.buf.len() - self.start))
            .field("dropping", &self.dropping)
            .finish()
    }
}

/// A line longer than the decoder's limit. The decoder drops the rest of it and goes on with
/// the next line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineTooLong {
    line: u64,
    limit: usize,
}

impl LineTooLong {
    /// The line's number, from 1.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The limit it exceeded, in bytes ([`LineDecoder::max_line`]).
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} is longer than the limit of {} bytes",
            self.line, self.limit
        )
    }
}

impl StdError for LineTooLong {}

/// A line that is not UTF-8. It gives back the line's bytes; the decoder goes on with the
/// next line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotUtf8 {
    line: u64,
    bytes: Vec<u8>,
    error: Utf8Error,
}

impl NotUtf8 {
    /// The line's number, from 1.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The line's bytes, line end removed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The line's bytes, line end removed.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Where in the line the UTF-8 stops being valid.
    pub fn utf8_error(&self) -> Utf8Error {
        self.error
    }
}

impl fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} is not valid UTF-8", self.line)
    }
}

impl StdError for NotUtf8 {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.error)
    }
}

/// Why [`LineDecoder::next_line`] could not give a line.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    /// The line is longer than the limit.
    TooLong(LineTooLong),
    /// The line is not UTF-8.
    NotUtf8(NotUtf8),
}

impl LineError {
    /// The line's number, from 1.
    pub fn line(&self) -> u64 {
        match self {
            Self::TooLong(e) => e.line,
            Self::NotUtf8(e) => e.line,
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(e) => e.fmt(f),
            Self::NotUtf8(e) => e.fmt(f),
        }
    }
}

impl StdError for LineError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::TooLong(_) => None,
            Self::NotUtf8(e) => Some(&e.error),
        }
    }
}

impl From<LineTooLong> for LineError {
    fn from(e: LineTooLong) -> Self {
        Self::TooLong(e)
    }
}

impl From<NotUtf8> for LineError {
    fn from(e: NotUtf8) -> Self {
        Self::NotUtf8(e)
    }
}

/// Decodes NDJSON (JSON Lines): one JSON value per line, each a `T`.
///
/// Lines are read as by [`LineDecoder`] (same line ends, limit and last line). Blank lines
/// (empty, or only spaces, tabs and `\r`) are skipped. Every other line must hold exactly one
/// JSON value that deserializes to `T`; one that doesn't is an [`NdjsonError::Json`] naming
/// the line, and the value on the next line comes next: the caller may skip bad lines or stop.
/// A line is parsed in place, without copying it.
pub struct NdjsonDecoder<T> {
    lines: LineDecoder,
    values: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> NdjsonDecoder<T> {
    /// A decoder at the start of a body, with lines of at most
    /// [`LineDecoder::DEFAULT_MAX_LINE`] bytes.
    pub fn new() -> Self {
        Self {
            lines: LineDecoder::new(),
            values: PhantomData,
        }
    }

    /// Sets the longest line accepted, in bytes, line end not counted.
    #[must_use]
    pub fn with_max_line(mut self, max_line: usize) -> Self {
        self.lines = self.lines.with_max_line(max_line);
        self
    }

    /// The line decoder underneath, for its settings and line number.
    pub fn lines(&self) -> &LineDecoder {
        &self.lines
    }

    /// Adds the next chunk of the body. Take the values it completes with
    /// [`next_value`](Self::next_value) until `None` before feeding the next one.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.lines.feed(chunk);
    }

    /// Marks the end of the body: a last line without a line end holds one more value.
    pub fn finish(&mut self) {
        self.lines.finish();
    }

    /// The next value, or `None` until more is fed (or, after [`finish`](Self::finish), at the
    /// end). An error stands for one line; the next line's value comes after it.
    #[must_use]
    pub fn next_value(&mut self) -> Option<Result<T, NdjsonError>> {
        loop {
            // A line given is always the one after the last line ended.
            let line_number = self.lines.line_number() + 1;
            let line = match self.lines.next_line_bytes()? {
                Ok(line) => line,
                Err(e) => return Some(Err(NdjsonError::TooLong(e))),
            };
            if line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
                continue;
            }
            let de = &mut serde_json::Deserializer::from_slice(line);
            let value = match serde_path_to_error::deserialize(&mut *de) {
                Ok(value) => value,
                Err(e) => {
                    return Some(Err(NdjsonError::Json {
                        line: line_number,
                        path: e.path().to_string(),
                        source: e.into_inner(),
                    }))
                }
            };
            // Whatever follows the value on the line must be whitespace.
            return Some(match de.end() {
                Ok(()) => Ok(value),
                Err(source) => Err(NdjsonError::Json {
                    line: line_number,
                    path: ".".to_owned(),
                    source,
                }),
            });
        }
    }
}

impl<T: DeserializeOwned> Default for NdjsonDecoder<T> {
    /// [`NdjsonDecoder::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for NdjsonDecoder<T> {
    fn clone(&self) -> Self {
        Self {
            lines: self.lines.clone(),
            values: PhantomData,
        }
    }
}

impl<T> fmt::Debug for NdjsonDecoder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdjsonDecoder")
            .field("lines", &self.lines)
            .finish()
    }
}

/// Why [`NdjsonDecoder::next_value`] could not give a value.
#[non_exhaustive]
#[derive(Debug)]
pub enum NdjsonError {
    /// The line is longer than the limit.
    TooLong(LineTooLong),
    /// The line is not one JSON value of the type asked for (or not UTF-8, which JSON must be).
    #[non_exhaustive]
    Json {
        /// The line's number, from 1.
        line: u64,
        /// Where in the value decoding stopped, such as `items[2].id` (`.` for the top).
        path: String,
        /// What serde_json said. Its own line and column count within this one line.
        source: serde_json::Error,
    },
}

impl NdjsonError {
    /// The line's number, from 1.
    pub fn line(&self) -> u64 {
        match self {
            Self::TooLong(e) => e.line,
            Self::Json { line, .. } => *line,
        }
    }

    /// For [`NdjsonError::Json`], where in the value decoding stopped.
    pub fn json_path(&self) -> Option<&str> {
        match self {
            Self::TooLong(_) => None,
            Self::Json { path, .. } => Some(path),
        }
    }
}

impl fmt::Display for NdjsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(e) => e.fmt(f),
            Self::Json { line, path, .. } => {
                write!(
                    f,
                    "could not decode the JSON value on line {line} at `{path}`"
                )
            }
        }
    }
}

impl StdError for NdjsonError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::TooLong(_) => None,
            Self::Json { source, .. } => Some(source),
        }
    }
}

impl From<LineTooLong> for NdjsonError {
    fn from(e: LineTooLong) -> Self {
        Self::TooLong(e)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;
    use serde::Deserialize;

    use super::*;

    /// Every line of `chunks`, fed one by one, then finished, as text.
    fn lines_of(decoder: &mut LineDecoder, chunks: &[&[u8]]) -> Vec<Result<String, LineError>> {
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk);
            while let Some(line) = decoder.next_line() {
                out.push(line);
            }
        }
        decoder.finish();
        while let Some(line) = decoder.next_line() {
            out.push(line);
        }
        out
    }

    fn ok_lines(chunks: &[&[u8]]) -> Vec<String> {
        lines_of(&mut LineDecoder::new(), chunks)
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn splits_on_lf_and_crlf() {
        assert_eq!(ok_lines(&[b"a\nb\r\nc\n"]), ["a", "b", "c"]);
        assert_eq!(ok_lines(&[b"\n\r\n\n"]), ["", "", ""]);
    }

    #[test]
    fn a_lone_cr_is_part_of_the_line() {
        assert_eq!(ok_lines(&[b"a\rb\n\r\r\n\rc\n"]), ["a\rb", "\r", "\rc"]);
        assert_eq!(ok_lines(&[b"a\r", b"b\n"]), ["a\rb"]);
    }

    #[test]
    fn a_crlf_cut_between_chunks_is_one_line_end() {
        assert_eq!(ok_lines(&[b"a\r", b"\nb\r", b"\n"]), ["a", "b"]);
        assert_eq!(ok_lines(&[b"a\r", b"", b"\n", b"\n"]), ["a", ""]);
    }

    #[test]
    fn the_last_line_needs_no_line_end() {
        assert_eq!(ok_lines(&[b"a\nlast"]), ["a", "last"]);
        assert_eq!(ok_lines(&[b"a\nlast\r"]), ["a", "last"]);
        assert_eq!(ok_lines(&[b"a\n"]), ["a"]);
        assert_eq!(ok_lines(&[b"a\r\n"]), ["a"]);
        assert_eq!(ok_lines(&[b"\r"]), [""]);
        assert!(ok_lines(&[]).is_empty());
        assert!(ok_lines(&[b""]).is_empty());
    }

    #[test]
    fn nothing_comes_before_the_line_end_or_finish() {
        let mut lines = LineDecoder::new();
        lines.feed(b"abc");
        assert_eq!(lines.next_line(), None);
        lines.feed(b"def\r");
        assert_eq!(lines.next_line(), None);
        lines.feed(b"\n");
        assert_eq!(lines.next_line(), Some(Ok("abcdef".to_owned())));
        assert_eq!(lines.next_line(), None);
    }

    #[test]
    fn feeding_after_finish_starts_a_new_line() {
        let mut lines = LineDecoder::new();
        lines.feed(b"one");
        lines.finish();
        lines.finish();
        lines.feed(b"two\n");
        assert_eq!(lines.next_line(), Some(Ok("one".to_owned())));
        assert_eq!(lines.next_line(), Some(Ok("two".to_owned())));
        assert_eq!(lines.next_line(), None);
        assert_eq!(lines.line_number(), 2);
    }

    #[test]
    fn a_character_cut_between_chunks_is_whole() {
        // "é" is C3 A9, "😀" is F0 9F 98 80.
        let got = ok_lines(&[b"caf\xC3", b"\xA9\n\xF0\x9F", b"\x98", b"\x80"]);
        assert_eq!(got, ["café", "😀"]);
    }

    #[test]
    fn a_line_not_utf8_is_an_error_naming_it() {
        let got = lines_of(&mut LineDecoder::new(), &[b"ok\nbad \xFF\nok again\n"]);
        assert_eq!(got[0], Ok("ok".to_owned()));
        let Err(LineError::NotUtf8(e)) = &got[1] else {
            panic!("{:?}", got[1]);
        };
        assert_eq!(e.line(), 2);
        assert_eq!(e.as_bytes(), b"bad \xFF");
        assert_eq!(e.utf8_error().valid_up_to(), 4);
        assert_eq!(e.to_string(), "line 2 is not valid UTF-8");
        assert!(got[1].as_ref().unwrap_err().source().is_some());
        assert_eq!(e.clone().into_bytes(), b"bad \xFF");
        assert_eq!(got[2], Ok("ok again".to_owned()));
        // A character cut by the end of the body is not UTF-8 either.
        let got = lines_of(&mut LineDecoder::new(), &[b"\xE2\x82"]);
        assert_eq!(got[0].as_ref().unwrap_err().line(), 1);
    }

    #[test]
    fn the_bytes_api_takes_any_bytes() {
        let mut lines = LineDecoder::new();
        lines.feed(b"\xFF\xFE\r\n\xEF\xBB\xBFbom\n");
        assert_eq!(lines.next_line_bytes(), Some(Ok(&b"\xFF\xFE"[..])));
        assert_eq!(lines.next_line_bytes(), Some(Ok(&b"\xEF\xBB\xBFbom"[..])));
        assert_eq!(lines.next_line_bytes(), None);
    }

    #[test]
    fn a_line_too_long_is_an_error_and_the_next_line_is_read() {
        let mut lines = LineDecoder::new().with_max_line(3);
        assert_eq!(lines.max_line(), 3);
        // Whole in one chunk, then cut: the same errors, the same lines after.
        let whole = lines_of(&mut lines, &[b"abc\nabcd\nxyz\r\nabcde"]);
        let cut = lines_of(
            &mut LineDecoder::new().with_max_line(3),
            &[b"abc\nab", b"cd", b"\nxyz\r", b"\nabcd", b"e"],
        );
        let too_long = |line| Err(LineError::TooLong(LineTooLong { line, limit: 3 }));
        let expected = vec![
            Ok("abc".to_owned()),
            too_long(2),
            Ok("xyz".to_owned()),
            too_long(4),
        ];
        assert_eq!(whole, expected);
        assert_eq!(cut, expected);
        assert_eq!(
            too_long(2).unwrap_err().to_string(),
            "line 2 is longer than the limit of 3 bytes"
        );
        assert!(too_long(2).unwrap_err().source().is_none());
    }

    #[test]
    fn a_line_at_the_limit_is_accepted_with_its_cr_pending() {
        // "abc\r" might be "abc" and half a line end: not too long yet.
        let got = lines_of(&mut LineDecoder::new().with_max_line(3), &[b"abc\r", b"\n"]);
        assert_eq!(got, [Ok("abc".to_owned())]);
        let got = lines_of(&mut LineDecoder::new().with_max_line(3), &[b"abc\r"]);
        assert_eq!(got, [Ok("abc".to_owned())]);
        let got = lines_of(
            &mut LineDecoder::new().with_max_line(3),
            &[b"abc\r", b"x\n"],
        );
        assert_eq!(got[0].as_ref().unwrap_err().line(), 1);
        let got = lines_of(&mut LineDecoder::new().with_max_line(0), &[b"\n\r\nx\n\n"]);
        let ok = |s: &str| Ok(s.to_owned());
        assert_eq!(got[..2], [ok(""), ok("")]);
        assert_eq!(got[2].as_ref().unwrap_err().line(), 3);
        assert_eq!(got[3], ok(""));
    }

    #[test]
    fn the_error_comes_before_the_line_ends_and_its_rest_is_not_kept() {
        let mut lines = LineDecoder::new().with_max_line(4);
        lines.feed(b"ok\n12345");
        assert_eq!(lines.next_line(), Some(Ok("ok".to_owned())));
        assert_eq!(
            lines.next_line(),
            Some(Err(LineError::TooLong(LineTooLong { line: 2, limit: 4 })))
        );
        for _ in 0..100 {
            lines.feed(&[b'x'; 1000]);
            assert_eq!(lines.next_line(), None);
            assert!(lines.buf.is_empty());
        }
        lines.feed(b"xx\r\nnext\nlast");
        assert_eq!(lines.next_line(), Some(Ok("next".to_owned())));
        assert_eq!(lines.line_number(), 3);
        assert_eq!(lines.next_line(), None);
        assert_eq!(lines.buf[lines.start..], *b"last");
        // A body that ends in the middle of the line too long ends it.
        let mut lines = LineDecoder::new().with_max_line(1);
        lines.feed(b"long");
        assert!(lines.next_line().unwrap().is_err());
        lines.finish();
        assert_eq!(lines.line_number(), 1);
        lines.feed(b"a\n");
        assert_eq!(lines.next_line(), Some(Ok("a".to_owned())));
        assert_eq!(lines.line_number(), 2);
    }

    #[test]
    fn a_long_line_fed_byte_by_byte_is_scanned_once() {
        let mut lines = LineDecoder::new();
        for _ in 0..100_000 {
            lines.feed(b"x");
            assert_eq!(lines.next_line_bytes(), None);
            assert_eq!(lines.scanned, lines.buf.len());
        }
        lines.feed(b"\n");
        assert_eq!(lines.next_line_bytes().unwrap().unwrap().len(), 100_000);
    }

    #[test]
    fn line_numbers_count_every_line() {
        let mut lines = LineDecoder::new().with_max_line(2);
        assert_eq!(lines.line_number(), 0);
        let got = lines_of(&mut lines, &[b"\nlong\n\xFF\nok"]);
        let numbers: Vec<_> = got
            .iter()
            .map(|l| l.as_ref().map_err(|e| e.line()))
            .collect();
        assert_eq!(
            numbers,
            [Ok(&String::new()), Err(2), Err(3), Ok(&"ok".to_owned())]
        );
        assert_eq!(lines.line_number(), 4);
        assert!(format!("{lines:?}").contains("line_number: 4"));
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Row {
        id: u32,
        tags: Vec<String>,
    }

    fn values_of<T: DeserializeOwned>(
        decoder: &mut NdjsonDecoder<T>,
        chunks: &[&[u8]],
    ) -> Vec<Result<T, NdjsonError>> {
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk);
            while let Some(value) = decoder.next_value() {
                out.push(value);
            }
        }
        decoder.finish();
        while let Some(value) = decoder.next_value() {
            out.push(value);
        }
        out
    }

    #[test]
    fn ndjson_values_one_per_line_blank_lines_skipped() {
        let body: &[&[u8]] = &[
            b"{\"id\":1,\"tags\":[]}\n\n   \r\n\t\n{\"id\":2,",
            b"\"tags\":[\"a\"]}\r\n",
            b"  {\"id\":3,\"tags\":[\"\xC3",
            b"\xA9\"]}  ",
        ];
        let got: Vec<Row> = values_of(&mut NdjsonDecoder::new(), body)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            got,
            [
                Row {
                    id: 1,
                    tags: vec![]
                },
                Row {
                    id: 2,
                    tags: vec!["a".into()]
                },
                Row {
                    id: 3,
                    tags: vec!["é".into()]
                },
            ]
        );
    }

    #[test]
    fn ndjson_errors_name_the_line_and_the_path() {
        let body: &[&[u8]] = &[
            b"{\"id\":1,\"tags\":[]}\n\n{\"id\":2,\"tags\":[\"a\",7]}\n{\"id\":3,\"tags\":[]}\n",
        ];
        let got = values_of(&mut NdjsonDecoder::<Row>::new(), body);
        assert_eq!(got.len(), 3);
        let err = got[1].as_ref().unwrap_err();
        assert_eq!(err.line(), 3);
        assert_eq!(err.json_path(), Some("tags[1]"));
        assert_eq!(
            err.to_string(),
            "could not decode the JSON value on line 3 at `tags[1]`"
        );
        let source = err.source().unwrap().downcast_ref::<serde_json::Error>();
        assert!(source.unwrap().is_data());
        assert_eq!(got[2].as_ref().unwrap().id, 3);
    }

    #[test]
    fn ndjson_lines_with_two_values_or_bad_json_are_errors() {
        let body: &[&[u8]] = &[b"1 2\n[1,\n\"\xFF\"\n{}x\n3"];
        let got = values_of(&mut NdjsonDecoder::<serde_json::Value>::new(), body);
        let errors: Vec<_> = got[..4]
            .iter()
            .map(|r| {
                let e = r.as_ref().unwrap_err();
                (e.line(), e.json_path().unwrap().to_owned())
            })
            .collect();
        assert_eq!(errors[0], (1, ".".to_owned()));
        assert_eq!(errors[1].0, 2);
        assert_eq!(errors[2].0, 3);
        assert_eq!(errors[3], (4, ".".to_owned()));
        assert_eq!(got[4].as_ref().unwrap(), &serde_json::json!(3));
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn ndjson_lines_too_long() {
        let mut values = NdjsonDecoder::<u32>::new().with_max_line(3);
        assert_eq!(values.lines().max_line(), 3);
        let got = values_of(&mut values, &[b"1\n12345\n", b"6"]);
        assert_eq!(got.len(), 3);
        let err = got[1].as_ref().unwrap_err();
        assert!(matches!(err, NdjsonError::TooLong(e) if e.line() == 2 && e.limit() == 3));
        assert_eq!(err.json_path(), None);
        assert!(err.source().is_none());
        assert_eq!(
            err.to_string(),
            "line 2 is longer than the limit of 3 bytes"
        );
        assert_eq!(*got[2].as_ref().unwrap(), 6);
        assert!(format!("{:?}", values.clone()).contains("NdjsonDecoder"));
    }

    // Property tests. The oracle below splits a whole body the obvious way, and every way of
    // cutting the body into chunks must give what it gives.

    /// What the rules say the lines of `body` are, as `Ok(bytes)` or `Err(line number)` for a
    /// line too long.
    fn oracle(body: &[u8], max_line: usize) -> Vec<Result<Vec<u8>, u64>> {
        if body.is_empty() {
            return Vec::new();
        }
        let mut pieces: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
        if body.ends_with(b"\n") {
            pieces.pop();
        }
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let line = piece.strip_suffix(b"\r").unwrap_or(piece);
                if line.len() > max_line {
                    Err(i as u64 + 1)
                } else {
                    Ok(line.to_vec())
                }
            })
            .collect()
    }

    /// The lines of `body` cut at `cuts` (indices, any order, repeats give empty chunks),
    /// checking on the way that the decoder never holds more than a line and a chunk.
    fn decode_cut(body: &[u8], cuts: &[usize], max_line: usize) -> Vec<Result<Vec<u8>, u64>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut decoder = LineDecoder::new().with_max_line(max_line);
        let mut out = Vec::new();
        let mut from = 0;
        let drain = |decoder: &mut LineDecoder, out: &mut Vec<_>| {
            while let Some(line) = decoder.next_line_bytes() {
                out.push(line.map(<[u8]>::to_vec).map_err(|e| e.line()));
            }
            assert!(decoder.buf.len() - decoder.start <= max_line.saturating_add(1));
        };
        for to in cuts.into_iter().chain([body.len()]) {
            decoder.feed(&body[from..to]);
            drain(&mut decoder, &mut out);
            from = to;
        }
        decoder.finish();
        drain(&mut decoder, &mut out);
        out
    }

    /// Bodies made of lines: text with multi-byte characters and stray `\r`s, ended by `\n`,
    /// `\r\n` or nothing, or any bytes.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let text = "[a-c\r\u{e9}\u{20ac}\u{1f600} ]{0,12}";
        let line = (text, prop::sample::select(vec!["\n", "\r\n", ""]))
            .prop_map(|(text, end)| format!("{text}{end}").into_bytes());
        prop_oneof![
            prop::collection::vec(line, 0..12).prop_map(|lines| lines.concat()),
            prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..200),
        ]
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,8}|[\"\\\\\n\r\t\u{0}\u{1f600}]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\u{e9}]{0,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2_000,
            rng_seed: RngSeed::Fixed(0x6c69_6e65),
            ..ProptestConfig::default()
        })]

        /// However the body is cut, the lines are the oracle's.
        #[test]
        fn any_cut_gives_the_lines_of_the_whole(
            body in body(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
            max_line in prop_oneof![Just(usize::MAX), 0usize..16],
        ) {
            let expected = oracle(&body, max_line);
            prop_assert_eq!(&decode_cut(&body, &[], max_line), &expected);
            prop_assert_eq!(&decode_cut(&body, &cuts, max_line), &expected);
            let every_byte: Vec<usize> = (0..body.len()).collect();
            prop_assert_eq!(&decode_cut(&body, &every_byte, max_line), &expected);
        }

        /// Text lines are the byte lines that are UTF-8, the others are errors naming them.
        #[test]
        fn text_lines_are_the_utf8_byte_lines(
            body in body(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for to in cuts.into_iter().chain([body.len()]) {
                chunks.push(&body[from..to]);
                from = to;
            }
            let got = lines_of(&mut LineDecoder::new(), &chunks);
            let expected = oracle(&body, usize::MAX);
            prop_assert_eq!(got.len(), expected.len());
            for (i, (got, expected)) in got.iter().zip(expected).enumerate() {
                let expected = expected.unwrap();
                match String::from_utf8(expected) {
                    Ok(text) => prop_assert_eq!(got, &Ok(text)),
                    Err(e) => {
                        let Err(LineError::NotUtf8(err)) = got else {
                            return Err(TestCaseError::fail(format!("{got:?}")));
                        };
                        prop_assert_eq!(err.line(), i as u64 + 1);
                        prop_assert_eq!(err.as_bytes(), e.as_bytes());
                    }
                }
            }
        }

        /// NDJSON: any values, on lines with any line ends and blank lines between them, cut
        /// anywhere, come back equal.
        #[test]
        fn ndjson_any_cut_gives_the_values(
            values in prop::collection::vec(
                (json_value(), prop::sample::select(vec!["\n", "\r\n", "\n\n", "\r\n \t\r\n"])),
                0..8,
            ),
            last_ended in any::<bool>(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut body = Vec::new();
            for (i, (value, end)) in values.iter().enumerate() {
                body.extend_from_slice(serde_json::to_string(value).unwrap().as_bytes());
                if last_ended || i + 1 < values.len() {
                    body.extend_from_slice(end.as_bytes());
                }
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for to in cuts.into_iter().chain([body.len()]) {
                chunks.push(&body[from..to]);
                from = to;
            }
            let got: Vec<serde_json::Value> = values_of(&mut NdjsonDecoder::new(), &chunks)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let expected: Vec<serde_json::Value> = values.into_iter().map(|(v, _)| v).collect();
            prop_assert_eq!(got, expected);
        }

        /// Any bytes: no panic, and the same values or errors (by line) however they are cut.
        #[test]
        fn ndjson_any_bytes(
            body in body(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let summary = |chunks: &[&[u8]]| -> Vec<Result<serde_json::Value, u64>> {
                values_of(&mut NdjsonDecoder::new().with_max_line(40), chunks)
                    .into_iter()
                    .map(|r| r.map_err(|e| e.line()))
                    .collect()
            };
            let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for to in cuts.into_iter().chain([body.len()]) {
                chunks.push(&body[from..to]);
                from = to;
            }
            prop_assert_eq!(summary(&chunks), summary(&[&body]));
        }
    }
}
