//! Server-sent events: the events of a `text/event-stream` body that arrives in chunks.
//!
//! [`SseParser`] follows the HTML standard's *event stream interpretation* (WHATWG HTML,
//! "Server-sent events", "Interpreting an event stream") to the letter, so a stream means to
//! keel what it means to a browser's `EventSource`. It is plain data: no I/O, no clock, no
//! reconnection of its own. It reads one stream after another (a reconnection is a new
//! stream) and keeps what carries over between them: the last event ID and the
//! reconnection time.
//!
//! # The rules
//!
//! - The body is UTF-8: bytes that aren't are read as U+FFFD REPLACEMENT CHARACTER, as the
//!   standard's UTF-8 decoding does, even when a chunk's end cuts a character. One byte order
//!   mark at the start of a stream is dropped.
//! - Lines end with `\r\n`, `\n` or `\r`. A `\r` at the end of one chunk and a `\n` at the
//!   start of the next are one line end.
//! - A line that starts with `:` is a comment, ignored (servers send them to keep a
//!   connection open; the parser does not report them).
//! - Any other line is a field: its name is what comes before the first `:` (the whole line
//!   if there is none), its value what comes after, less one leading space.
//!   - `event`: the type of the event being read.
//!   - `data`: one more line of the event's data (lines are joined with `\n`).
//!   - `id`: the last event ID, unless the value holds a NUL (then the field is ignored). It is
//!     kept from event to event, until an `id` field changes it (an empty one clears it).
//!   - `retry`: the reconnection time, in milliseconds, if the value is ASCII digits (and not
//!     empty); otherwise ignored. It takes effect at once, event or no event; a value too
//!     large for a `u64` is read as `u64::MAX`.
//!   - anything else is ignored.
//! - A blank line ends an event. The last event ID becomes what the `id` fields have said so
//!   far ([`last_event_id`](SseParser::last_event_id)). If no `data` field came since the last
//!   blank line, nothing is dispatched (and the type is forgotten); otherwise an [`Event`] is,
//!   its data less the final `\n`, its type `message` unless an `event` field said otherwise.
//! - At the end of a stream ([`finish`](SseParser::finish)) an event not ended by a blank line
//!   is discarded, and so is a last line without its line end.
//! - The last event ID and the reconnection time outlive a stream, but the `id` fields'
//!   buffer doesn't: each stream starts with it empty, as the standard says, so a new stream's
//!   first blank line clears the last event ID unless an `id` field came first.
//!
//! # Memory
//!
//! A hostile or broken server could send one endless line, or one endless event. The parser
//! holds at most [`max_event_size`](SseParser::max_event_size) bytes of the event being read
//! (its data and type so far, plus the line being read). Past that, it reports an
//! [`SseError::EventTooLarge`], drops what it has of the event and ignores the stream up to
//! the next blank line, without holding any of it; the events after are read as usual, and the
//! caller may go on or stop. Comments are never held, however long. Events are queued until
//! [`next_event`](SseParser::next_event) takes them, so take them all before feeding the next
//! chunk; then the parser holds at most one event being read and the events of one chunk.
//!
//! No byte is searched twice for a line end, lines that arrive whole are read in place, and the
//! only allocations are those of the events' strings (and their ID, once per change) and of a
//! line cut by a chunk's end.
//!
//! ```text
//!                         a field line, a comment,
//!                         a blank line: dispatch the event, if it has data
//!                            ┌───────┐
//!                            ▼       │
//!   new(), finish() ───►  Reading ───┘
//!                          │    ▲
//!     the event grows past │    │ a blank line
//!     max_event_size:      │    │ (dispatching nothing)
//!     EventTooLarge,       ▼    │
//!     the event dropped   Discarding ◄─┐
//!                              │       │ any other line, held nowhere
//!                              └───────┘
//!
//!   finish(): the event being read is dropped and a new stream starts (a BOM is dropped
//!             again), keeping last_event_id() and retry().
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use keel_core::machine::sse::SseParser;
//!
//! let mut parser = SseParser::new();
//! let mut events = Vec::new();
//! for chunk in [&b"retry: 3000\r\n: keep-alive\r\nevent: add\r\ndata: 7385"[..], b"7293\r", b"\n\r\n"] {
//!     parser.feed(chunk);
//!     while let Some(event) = parser.next_event() {
//!         events.push(event?);
//!     }
//! }
//! parser.feed(b"id: 42\ndata: {\"a\":\ndata: 1}\n\ndata: never ended");
//! while let Some(event) = parser.next_event() {
//!     events.push(event?);
//! }
//! parser.finish(); // the connection closed: the last event is incomplete, and dropped
//! assert!(parser.next_event().is_none());
//!
//! assert_eq!(events.len(), 2);
//! assert_eq!((events[0].event.as_str(), events[0].data.as_str()), ("add", "73857293"));
//! assert_eq!(events[0].retry, Some(Duration::from_secs(3)));
//! assert_eq!((events[1].event.as_str(), events[1].data.as_str()), ("message", "{\"a\":\n1}"));
//! assert_eq!(events[1].id.as_deref(), Some("42"));
//!
//! // What a reconnection needs: the `Last-Event-ID` to send, and how long to wait.
//! assert_eq!(parser.last_event_id(), "42");
//! assert_eq!(parser.retry(), Some(Duration::from_secs(3)));
//! # Ok::<(), keel_core::machine::sse::SseError>(())
//! ```

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::mem;
use std::sync::Arc;
use std::time::Duration;

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// Parses server-sent events from a body fed in chunks: see the [module docs](self) for the
/// rules.
///
/// Drive it like this:
///
/// ```text
///   for each chunk:      feed(chunk), then next_event() until None
///   when the body ends:  finish()     (the event not ended by a blank line is dropped)
///   to reconnect:        send last_event_id() as Last-Event-ID (if not empty), after
///                        retry() (if the server set one); feed the new body to the same parser
/// ```
#[derive(Clone)]
pub struct SseParser {
    max_event_size: usize,

    // The stream being read.
    /// `Some(n)`: at the start of the stream, the first `n` bytes of a BOM seen.
    bom: Option<u8>,
    /// The line being read, when a chunk's end cut it (empty while `ignoring_line`).
    line: Vec<u8>,
    /// The line being read is a comment, or part of an event being discarded: its bytes are
    /// dropped as they come.
    ignoring_line: bool,
    /// The last chunk ended with `\r`: a `\n` at the start of the next belongs to it.
    after_cr: bool,
    /// The event being read grew too large: lines are ignored up to a blank line.
    discarding: bool,
    data: String,
    event_type: String,
    id_buffer: String,
    /// `id_buffer` may differ from `last_event_id`.
    id_changed: bool,
    /// The reconnection time a `retry` field set since the last blank line.
    event_retry: Option<Duration>,

    // What outlives a stream.
    last_event_id: Arc<str>,
    retry: Option<Duration>,
    ready: VecDeque<Result<Event, SseError>>,
}

impl SseParser {
    /// The default [`max_event_size`](Self::max_event_size): 8 MiB.
    pub const DEFAULT_MAX_EVENT_SIZE: usize = 8 << 20;

    /// A parser at the start of a stream, with no last event ID, no reconnection time, and
    /// events of at most [`DEFAULT_MAX_EVENT_SIZE`](Self::DEFAULT_MAX_EVENT_SIZE) bytes.
    pub fn new() -> Self {
        Self {
            max_event_size: Self::DEFAULT_MAX_EVENT_SIZE,
            bom: Some(0),
            line: Vec::new(),
            ignoring_line: false,
            after_cr: false,
            discarding: false,
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            id_changed: true,
            event_retry: None,
            last_event_id: Arc::from(""),
            retry: None,
            ready: VecDeque::new(),
        }
    }

    /// Sets the most bytes an event may hold while it is read: its data and type so far, plus
    /// the line being read (its line end not counted). Comments don't count.
    #[must_use]
    pub fn with_max_event_size(mut self, max_event_size: usize) -> Self {
        self.max_event_size = max_event_size;
        self
    }

    /// Sets the last event ID to start from, such as one kept from an earlier connection:
    /// what [`last_event_id`](Self::last_event_id) says until the stream's first blank line.
    ///
    /// As the standard says, each stream starts with an empty ID buffer: the first blank line
    /// of the stream sets the last event ID to what that stream's `id` fields said, which is
    /// nothing if it sent none.
    #[must_use]
    pub fn with_last_event_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.last_event_id = id.into();
        self
    }

    /// The most bytes an event may hold while it is read.
    pub fn max_event_size(&self) -> usize {
        self.max_event_size
    }

    /// The last event ID: what the `id` fields had said at the last blank line, empty if
    /// nothing (or if an `id` field cleared it). A reconnection sends it as `Last-Event-ID`,
    /// unless it is empty.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time the server set with a `retry` field, if it ever did.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Reads the next chunk of the stream. Take the events it completes with
    /// [`next_event`](Self::next_event) until `None` before feeding the next one.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if let Some(seen) = self.bom {
            let seen = usize::from(seen);
            let take = (BOM.len() - seen).min(rest.len());
            if rest[..take] == BOM[seen..seen + take] {
                rest = &rest[take..];
                if seen + take < BOM.len() {
                    // All of the chunk may be the start of a BOM: wait for more.
                    self.bom = Some((seen + take) as u8);
                    return;
                }
                self.bom = None;
            } else {
                // Not a BOM after all: the bytes held back are the first line's.
                self.bom = None;
                self.read(&BOM[..seen]);
            }
        }
        self.read(rest);
    }

    /// Ends the stream, as when its connection closes: the event not ended by a blank line is
    /// dropped (the standard's "any pending data must be discarded"), and the next
    /// [`feed`](Self::feed) starts a new stream.
    ///
    /// Events already complete stay to be taken with [`next_event`](Self::next_event);
    /// [`last_event_id`](Self::last_event_id) and [`retry`](Self::retry) are kept.
    pub fn finish(&mut self) {
        self.bom = Some(0);
        self.line.clear();
        self.ignoring_line = false;
        self.after_cr = false;
        self.discarding = false;
        self.data.clear();
        self.event_type.clear();
        self.id_buffer.clear();
        self.id_changed = true;
        self.event_retry = None;
    }

    /// The next event of the chunks fed so far, or `None` until more is fed.
    ///
    /// An error stands for an event too large, which the parser dropped; the events after it
    /// come next.
    #[must_use]
    pub fn next_event(&mut self) -> Option<Result<Event, SseError>> {
        self.ready.pop_front()
    }

    /// Reads bytes of the stream, past its BOM.
    fn read(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(at) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = match (rest[at], rest.get(at + 1)) {
                (b'\r', Some(b'\n')) => 2,
                (b'\r', None) => {
                    self.after_cr = true;
                    1
                }
                _ => 1,
            };
            self.end_line(&rest[..at]);
            rest = &rest[at + end..];
        }
        self.extend_line(rest);
    }

    /// The bytes of a line that a chunk's end cuts.
    fn extend_line(&mut self, part: &[u8]) {
        if part.is_empty() || self.ignoring_line {
            return;
        }
        if self.line.is_empty() && (self.discarding || part[0] == b':') {
            self.ignoring_line = true;
            return;
        }
        self.line.extend_from_slice(part);
        if self.held() + self.line.len() > self.max_event_size {
            self.too_large();
            self.ignoring_line = true;
        }
    }

    /// The last bytes of a line, its line end seen.
    fn end_line(&mut self, last: &[u8]) {
        if self.ignoring_line {
            self.ignoring_line = false;
        } else if self.line.is_empty() {
            self.line_read(last);
        } else {
            let mut line = mem::take(&mut self.line);
            line.extend_from_slice(last);
            self.line_read(&line);
            if !self.discarding {
                // Keep the allocation for the next line cut by a chunk's end.
                line.clear();
                self.line = line;
            }
        }
    }

    /// A whole line, line end removed.
    fn line_read(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.discarding = false;
            self.dispatch();
        } else if self.discarding || line[0] == b':' {
            // Part of an event being discarded, or a comment.
        } else if self.held() + line.len() > self.max_event_size {
            self.too_large();
        } else {
            self.field(line);
            // Bytes that aren't UTF-8 may grow (one byte to three) into U+FFFD.
            if self.held() > self.max_event_size {
                self.too_large();
            }
        }
    }

    fn field(&mut self, line: &[u8]) {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match name {
            b"event" => {
                self.event_type.clear();
                push_lossy(&mut self.event_type, value);
            }
            b"data" => {
                push_lossy(&mut self.data, value);
                self.data.push('\n');
            }
            b"id" if !value.contains(&0) => {
                self.id_buffer.clear();
                push_lossy(&mut self.id_buffer, value);
                self.id_changed = true;
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let millis = value.iter().fold(0u64, |n, &digit| {
                    n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
                });
                let retry = Duration::from_millis(millis);
                self.retry = Some(retry);
                self.event_retry = Some(retry);
            }
            _ => {}
        }
    }

    /// A blank line.
    fn dispatch(&mut self) {
        if self.id_changed {
            self.id_changed = false;
            if *self.last_event_id != *self.id_buffer {
                self.last_event_id = Arc::from(self.id_buffer.as_str());
            }
        }
        let retry = self.event_retry.take();
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            mem::take(&mut self.event_type)
        };
        let id = (!self.last_event_id.is_empty()).then(|| Arc::clone(&self.last_event_id));
        self.ready.push_back(Ok(Event {
            event,
            data: mem::take(&mut self.data),
            id,
            retry,
        }));
    }

    /// Bytes held of the event being read, the line being read aside.
    fn held(&self) -> usize {
        self.data.len() + self.event_type.len()
    }

    fn too_large(&mut self) {
        self.ready.push_back(Err(SseError::EventTooLarge {
            limit: self.max_event_size,
        }));
        // Let the memory go: a hostile server may have filled it on purpose.
        self.data = String::new();
        self.event_type = String::new();
        self.line = Vec::new();
        self.event_retry = None;
        self.discarding = true;
    }
}

impl Default for SseParser {
    /// [`SseParser::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SseParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseParser")
            .field("max_event_size", &self.max_event_size)
            .field("last_event_id", &self.last_event_id)
            .field("retry", &self.retry)
            .field("held", &(self.held() + self.line.len()))
            .field("discarding", &self.discarding)
            .field("ready", &self.ready.len())
            .finish()
    }
}

/// Appends `bytes` decoded as UTF-8, each maximal invalid sequence read as U+FFFD (as the
/// standard's UTF-8 decode, and `String::from_utf8_lossy`, do).
fn push_lossy(to: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        to.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            to.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// One server-sent event, as an `EventSource` would dispatch it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event's type: what its `event` field said, or `message`.
    pub event: String,
    /// The event's `data` lines, joined with `\n`.
    pub data: String,
    /// The last event ID when the event was dispatched (`lastEventId`), which the event's
    /// own `id` field, or an earlier one, set; `None` when it is empty. The events of a
    /// stream share it: a long ID repeated over many events is held once.
    pub id: Option<Arc<str>>,
    /// The reconnection time a `retry` field set between the previous blank line and this
    /// event's. [`SseParser::retry`] has the latest one, event or not.
    pub retry: Option<Duration>,
}

/// Why [`SseParser::next_event`] could not give an event.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseError {
    /// An event, or a line, grew past [`SseParser::max_event_size`]. The parser dropped it,
    /// and ignored the stream up to the next blank line.
    #[non_exhaustive]
    EventTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EventTooLarge { limit } => write!(
                f,
                "server-sent event larger than the limit of {limit} bytes"
            ),
        }
    }
}

impl StdError for SseError {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;

    fn event(event: &str, data: &str, id: Option<&str>) -> Event {
        Event {
            event: event.to_owned(),
            data: data.to_owned(),
            id: id.map(Arc::from),
            retry: None,
        }
    }

    fn message(data: &str) -> Event {
        event("message", data, None)
    }

    /// Feeds `chunks` one by one, taking the events after each, then finishes.
    fn parse_with(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<Result<Event, SseError>> {
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk);
            while let Some(event) = parser.next_event() {
                out.push(event);
            }
        }
        parser.finish();
        assert_eq!(parser.next_event(), None);
        out
    }

    fn events(chunks: &[&[u8]]) -> Vec<Event> {
        parse_with(&mut SseParser::new(), chunks)
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    // The examples of the standard's "Server-sent events" section, in order.

    #[test]
    fn spec_stock_ticker() {
        let got = events(&[b"data: YHOO\ndata: +2\ndata: 10\n\n"]);
        assert_eq!(got, [message("YHOO\n+2\n10")]);
    }

    #[test]
    fn spec_test_stream_with_ids() {
        let mut parser = SseParser::new();
        parser.feed(
            b": test stream\n\ndata: first event\nid: 1\n\n\
              data:second event\nid\n\ndata:  third event\n\n",
        );
        assert_eq!(
            parser.next_event(),
            Some(Ok(message_with_id("first event", "1")))
        );
        assert_eq!(parser.next_event(), Some(Ok(message("second event"))));
        assert_eq!(parser.next_event(), Some(Ok(message(" third event"))));
        assert_eq!(parser.next_event(), None);
        assert_eq!(parser.last_event_id(), "");
    }

    fn message_with_id(data: &str, id: &str) -> Event {
        event("message", data, Some(id))
    }

    #[test]
    fn spec_empty_data_and_the_last_block_discarded() {
        let got = events(&[b"data\n\ndata\ndata\n\ndata:"]);
        assert_eq!(got, [message(""), message("\n")]);
    }

    #[test]
    fn spec_one_leading_space_is_removed() {
        let got = events(&[b"data:test\n\ndata: test\n\n"]);
        assert_eq!(got, [message("test"), message("test")]);
    }

    #[test]
    fn spec_event_types() {
        let got = events(&[
            b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n\
              event: add\ndata: 113411\n\n",
        ]);
        assert_eq!(
            got,
            [
                event("add", "73857293", None),
                event("remove", "2153", None),
                event("add", "113411", None),
            ]
        );
    }

    #[test]
    fn spec_messages_and_multiline_data() {
        let got = events(&[b"data: This is the first message.\n\n\
              data: This is the second message, it\ndata: has two lines.\n\n\
              data: This is the third message.\n\n"]);
        assert_eq!(
            got,
            [
                message("This is the first message."),
                message("This is the second message, it\nhas two lines."),
                message("This is the third message."),
            ]
        );
    }

    #[test]
    fn spec_comments_as_keep_alive_and_retry() {
        let mut parser = SseParser::new();
        parser.feed(b":\n: keep-alive\n\nretry: 5000\ndata: x\n\n");
        let mut expected = message("x");
        expected.retry = Some(Duration::from_secs(5));
        assert_eq!(parser.next_event(), Some(Ok(expected)));
        assert_eq!(parser.next_event(), None);
        assert_eq!(parser.retry(), Some(Duration::from_secs(5)));
    }

    // Line ends.

    #[test]
    fn lines_end_with_crlf_lf_or_cr() {
        let got = events(&[b"data: a\r\n\r\ndata: b\n\ndata: c\r\rdata: d\r\n\n"]);
        assert_eq!(
            got,
            [message("a"), message("b"), message("c"), message("d")]
        );
        // "\n\r" is two line ends, "\r\n" one.
        let got = events(&[b"data: e\n\rdata: f\r\n\r\n"]);
        assert_eq!(got, [message("e"), message("f")]);
    }

    #[test]
    fn a_crlf_cut_between_chunks_is_one_line_end() {
        // If the `\n` counted as a second line end, "a" would be dispatched alone.
        let got = events(&[b"data: a\r", b"\ndata: b\r", b"", b"\n\r", b"\n"]);
        assert_eq!(got, [message("a\nb")]);
        let got = events(&[b"data: a\r", b"\r", b"data: b\n\n"]);
        assert_eq!(got, [message("a"), message("b")]);
    }

    #[test]
    fn a_line_cut_anywhere_is_whole() {
        let got = events(&[b"da", b"ta", b":", b" h", b"i\n", b"\n"]);
        assert_eq!(got, [message("hi")]);
    }

    // Fields.

    #[test]
    fn a_field_without_colon_has_an_empty_value() {
        let got = events(&[b"data\ndata\n\nevent\ndata: x\n\n"]);
        assert_eq!(got, [message("\n"), message("x")]);
    }

    #[test]
    fn the_value_splits_at_the_first_colon_and_loses_one_space() {
        let got = events(&[b"data:  two: spaces : \n\ndata:\n\n"]);
        assert_eq!(got, [message(" two: spaces : "), message("")]);
    }

    #[test]
    fn unknown_fields_and_comments_are_ignored() {
        let got = events(&[b"foo: bar\nDATA: no\ndata : no\n:data: no\ndata: yes\n\n"]);
        assert_eq!(got, [message("yes")]);
    }

    #[test]
    fn a_block_without_data_dispatches_nothing_and_forgets_its_type() {
        let got = events(&[b"event: ping\n\ndata: x\n\nevent: add\nevent:\ndata: y\n\n"]);
        assert_eq!(got, [message("x"), message("y")]);
    }

    #[test]
    fn the_last_event_id_persists_across_events() {
        let mut parser = SseParser::new();
        assert_eq!(parser.last_event_id(), "");
        parser.feed(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\n\ndata: c\n\nid\ndata: d\n\n");
        let got: Vec<_> = std::iter::from_fn(|| parser.next_event()).collect();
        assert_eq!(
            got,
            [
                Ok(message_with_id("a", "7")),
                Ok(message_with_id("b", "7")),
                Ok(message_with_id("c", "8")),
                Ok(message("d")),
            ]
        );
        // The events share the ID.
        let (a, b) = (got[0].as_ref().unwrap(), got[1].as_ref().unwrap());
        assert!(Arc::ptr_eq(a.id.as_ref().unwrap(), b.id.as_ref().unwrap()));
    }

    #[test]
    fn an_id_is_set_at_the_blank_line_even_with_no_event() {
        let mut parser = SseParser::new();
        parser.feed(b"id: 5\n");
        assert_eq!(parser.last_event_id(), "");
        parser.feed(b"\n");
        assert_eq!(parser.next_event(), None);
        assert_eq!(parser.last_event_id(), "5");
        // An id at the end of the stream, not ended by a blank line, never counts.
        parser.feed(b"id: 6\n");
        parser.finish();
        assert_eq!(parser.last_event_id(), "5");
    }

    #[test]
    fn an_id_with_nul_is_ignored() {
        let got = events(&[b"id: 1\n\nid: 2\x003\ndata: x\n\n"]);
        assert_eq!(got, [message_with_id("x", "1")]);
    }

    #[test]
    fn retry_takes_ascii_digits_only() {
        let mut parser = SseParser::new();
        parser.feed(b"retry: 1500\n");
        assert_eq!(parser.retry(), Some(Duration::from_millis(1500)));
        for ignored in [
            &b"retry: 1s\n"[..],
            b"retry: -1\n",
            b"retry: 1.5\n",
            b"retry:  2\n",
            b"retry: \n",
            b"retry\n",
            b"retry: \xD9\xA3\n", // an Arabic-Indic digit three
        ] {
            parser.feed(ignored);
            assert_eq!(parser.retry(), Some(Duration::from_millis(1500)));
        }
        parser.feed(b"retry: 0\n\n");
        assert_eq!(parser.retry(), Some(Duration::ZERO));
        parser.feed(b"retry: 99999999999999999999999999\n\n");
        assert_eq!(parser.retry(), Some(Duration::from_millis(u64::MAX)));
        assert_eq!(parser.next_event(), None);
    }

    #[test]
    fn an_events_retry_is_the_one_set_in_its_block() {
        let got = events(&[b"retry: 10\n\ndata: a\n\ndata: b\nretry: 20\n\n"]);
        assert_eq!(got[0].retry, None);
        assert_eq!(got[1].retry, Some(Duration::from_millis(20)));
    }

    // Encoding.

    #[test]
    fn one_bom_is_dropped_at_the_start_of_a_stream() {
        let got = events(&[b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n"]);
        assert_eq!(got, [message("a")]); // the second BOM is part of a field name
        let got = events(&[b"\xEF", b"\xBB", b"", b"\xBF", b"data: a\n\n"]);
        assert_eq!(got, [message("a")]);
        let got = events(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"]);
        assert!(got.is_empty());
    }

    #[test]
    fn the_start_of_a_bom_that_isnt_one_is_read() {
        // EF BB then ':' is a broken character (U+FFFD) then ':', not a comment.
        let got = events(&[b"\xEF\xBB", b":\n\ndata\xEF: x\n\n"]);
        assert!(got.is_empty());
        let got = events(&[b"\xEF", b"data: x\n\n"]);
        assert!(got.is_empty());
        let mut parser = SseParser::new();
        parser.feed(b"\xEF\xBB");
        parser.feed(b"\ndata: \xEF\xBB\xBF\xEF\xBB\n\n");
        assert_eq!(parser.next_event(), Some(Ok(message("\u{FEFF}\u{FFFD}"))));
    }

    #[test]
    fn each_stream_drops_its_bom() {
        let mut parser = SseParser::new();
        let got = parse_with(&mut parser, &[b"\xEF\xBB\xBFdata: a\n\n"]);
        assert_eq!(got, [Ok(message("a"))]);
        let got = parse_with(&mut parser, &[b"\xEF\xBB\xBFdata: b\n\n"]);
        assert_eq!(got, [Ok(message("b"))]);
    }

    #[test]
    fn bytes_not_utf8_are_replacement_characters() {
        let got = events(&[b"data: a\xFFb\xE2\x82\n\nevent: \xF0\x9F\x98\ndata: \xC3\n\n"]);
        assert_eq!(
            got,
            [
                message("a\u{FFFD}b\u{FFFD}"),
                event("\u{FFFD}", "\u{FFFD}", None)
            ]
        );
        let got = events(&[b"id: \xFF\ndata\n\n"]);
        assert_eq!(got, [message_with_id("", "\u{FFFD}")]);
    }

    #[test]
    fn a_character_cut_between_chunks_is_whole() {
        // "€" is E2 82 AC.
        let got = events(&[b"data: \xE2", b"\x82", b"\xAC\n", b"\n"]);
        assert_eq!(got, [message("€")]);
    }

    // The end of a stream, and the next one.

    #[test]
    fn finish_drops_the_event_being_read_and_starts_a_new_stream() {
        let mut parser = SseParser::new().with_last_event_id("41");
        assert_eq!(parser.last_event_id(), "41");
        parser.feed(b"data: done\n\nretry: 100\nid: 42\nevent: x\ndata: half");
        parser.finish();
        // Events already complete are still there.
        assert_eq!(parser.next_event(), Some(Ok(message("done"))));
        assert_eq!(parser.next_event(), None);
        // The retry took effect at once; the id never reached a blank line.
        assert_eq!(parser.retry(), Some(Duration::from_millis(100)));
        assert_eq!(parser.last_event_id(), "");
        // A new stream: nothing of the dropped event remains.
        parser.feed(b"data: new\n\n");
        assert_eq!(parser.next_event(), Some(Ok(message("new"))));
    }

    #[test]
    fn a_new_streams_id_buffer_starts_empty() {
        let mut parser = SseParser::new();
        parser.feed(b"id: 1\ndata: a\n\n");
        parser.finish();
        assert_eq!(parser.last_event_id(), "1");
        parser.feed(b"data: b\n");
        assert_eq!(parser.last_event_id(), "1");
        parser.feed(b"\n");
        assert_eq!(parser.next_event(), Some(Ok(message_with_id("a", "1"))));
        assert_eq!(parser.next_event(), Some(Ok(message("b"))));
        assert_eq!(parser.last_event_id(), "");
    }

    #[test]
    fn a_line_end_cut_by_finish_does_not_carry_over() {
        let mut parser = SseParser::new();
        parser.feed(b"data: a\r");
        parser.finish();
        parser.feed(b"\ndata: b\n\n");
        // The "\n" is the new stream's first line: a blank line, then "b".
        assert_eq!(parser.next_event(), Some(Ok(message("b"))));
    }

    // The size limit.

    fn too_large(limit: usize) -> Result<Event, SseError> {
        Err(SseError::EventTooLarge { limit })
    }

    #[test]
    fn an_event_too_large_is_an_error_and_the_next_is_read() {
        let mut parser = SseParser::new().with_max_event_size(10);
        assert_eq!(parser.max_event_size(), 10);
        let got = parse_with(
            &mut parser,
            &[b"data: 12345\ndata: 6789\ndata: more\nid: 3\n\ndata: ok\n\n"],
        );
        assert_eq!(got, [too_large(10), Ok(message("ok"))]);
        // The id after the error was ignored with the rest of the event.
        assert_eq!(parser.last_event_id(), "");
        assert_eq!(
            too_large(10).unwrap_err().to_string(),
            "server-sent event larger than the limit of 10 bytes"
        );
        assert!(too_large(10).unwrap_err().source().is_none());
    }

    #[test]
    fn the_limit_counts_data_type_and_the_line_being_read() {
        // "data: 1234" is 10 bytes: at the limit. Then data holds "1234\n" (5), and the
        // 6-byte line "event:" makes 11.
        let got = parse_with(
            &mut SseParser::new().with_max_event_size(10),
            &[b"data: 1234\n\ndata: 1234\nevent:\n\ndata: x\n\n"],
        );
        assert_eq!(got, [Ok(message("1234")), too_large(10), Ok(message("x"))]);
    }

    #[test]
    fn the_same_errors_however_the_stream_is_cut() {
        let body = b"data: 0123456789\n\ndata: abc\ndata: defgh\ndata: i\n\nevent: e\ndata: j\n\n";
        let whole = parse_with(&mut SseParser::new().with_max_event_size(12), &[body]);
        let chunks: Vec<&[u8]> = body.chunks(1).collect();
        let cut = parse_with(&mut SseParser::new().with_max_event_size(12), &chunks);
        let expected = [too_large(12), too_large(12), Ok(event("e", "j", None))];
        assert_eq!(whole, expected);
        assert_eq!(cut, expected);
    }

    #[test]
    fn an_endless_line_is_not_held() {
        let mut parser = SseParser::new().with_max_event_size(100);
        parser.feed(b"data: ");
        for _ in 0..1_000 {
            parser.feed(&[b'x'; 1_000]);
            assert!(parser.line.capacity() <= 2_000);
        }
        assert_eq!(parser.next_event(), Some(too_large(100)));
        assert_eq!(parser.next_event(), None);
        parser.feed(b"\ndata: more\n\ndata: ok\n\n");
        assert_eq!(parser.next_event(), Some(Ok(message("ok"))));
    }

    #[test]
    fn an_endless_event_is_not_held() {
        let mut parser = SseParser::new().with_max_event_size(100);
        for _ in 0..1_000 {
            parser.feed(b"data: 0123456789\n");
            assert!(parser.data.len() <= 100);
        }
        assert_eq!(parser.next_event(), Some(too_large(100)));
        assert_eq!(parser.next_event(), None);
        assert!(parser.data.capacity() == 0);
    }

    #[test]
    fn comments_are_never_held() {
        let mut parser = SseParser::new().with_max_event_size(10);
        parser.feed(b":");
        for _ in 0..100 {
            parser.feed(&[b'x'; 100]);
        }
        assert!(parser.line.is_empty());
        parser.feed(b"\n: another long comment line\ndata: x\n\n");
        assert_eq!(parser.next_event(), Some(Ok(message("x"))));
        assert_eq!(parser.next_event(), None);
    }

    #[test]
    fn replacement_characters_count() {
        // Three bytes not UTF-8 are nine bytes of U+FFFD.
        let got = parse_with(
            &mut SseParser::new().with_max_event_size(10),
            &[b"data:\xFF\xFF\xFF\n\ndata:\xFF\xFF\xFF\xFF\n\n"],
        );
        assert_eq!(
            got,
            [Ok(message("\u{FFFD}\u{FFFD}\u{FFFD}")), too_large(10)]
        );
    }

    #[test]
    fn a_limit_of_zero_allows_only_blank_lines_and_comments() {
        let got = parse_with(
            &mut SseParser::new().with_max_event_size(0),
            &[b"\n: hi\n\ndata\n\n"],
        );
        assert_eq!(got, [too_large(0)]);
    }

    #[test]
    fn debug_shows_the_state_not_the_data() {
        let mut parser = SseParser::new();
        parser.feed(b"id: 3\n\ndata: secret");
        let debug = format!("{parser:?}");
        assert!(debug.contains("last_event_id: \"3\""), "{debug}");
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(
            format!("{:?}", SseParser::default()),
            format!("{:?}", SseParser::new())
        );
    }

    // Property tests: the standard's algorithm, transcribed as plainly as possible over the
    // whole body, is the oracle; every way of cutting the body must agree with it.

    /// What the standard dispatches for `body` as one whole stream, then the last event ID
    /// and the reconnection time.
    fn oracle(body: &[u8]) -> (Vec<Event>, String, Option<Duration>) {
        let body = body.strip_prefix(BOM).unwrap_or(body);
        let text = String::from_utf8_lossy(body);
        let mut lines = Vec::new();
        let mut line = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    lines.push(mem::take(&mut line));
                }
                '\n' => lines.push(mem::take(&mut line)),
                c => line.push(c),
            }
        }
        // `line` is the last line, without its line end: discarded.
        let (mut data, mut kind, mut id_buffer) = (String::new(), String::new(), String::new());
        let mut last_id = String::new();
        let (mut retry, mut event_retry) = (None, None);
        let mut events = Vec::new();
        for line in lines {
            if line.is_empty() {
                last_id = id_buffer.clone();
                let retry = event_retry.take();
                if data.is_empty() {
                    kind.clear();
                    continue;
                }
                if data.ends_with('\n') {
                    data.pop();
                }
                events.push(Event {
                    event: if kind.is_empty() {
                        "message".to_owned()
                    } else {
                        mem::take(&mut kind)
                    },
                    data: mem::take(&mut data),
                    id: (!last_id.is_empty()).then(|| Arc::from(last_id.as_str())),
                    retry,
                });
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (name, value) = match line.find(':') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (&line[..], ""),
            };
            let value = value.strip_prefix(' ').unwrap_or(value);
            match name {
                "event" => kind = value.to_owned(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" if !value.contains('\0') => id_buffer = value.to_owned(),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    let ms = value.parse::<u64>().unwrap_or(u64::MAX);
                    retry = Some(Duration::from_millis(ms));
                    event_retry = retry;
                }
                _ => {}
            }
        }
        (events, last_id, retry)
    }

    type Parsed = (Vec<Result<Event, SseError>>, String, Option<Duration>);

    /// `body` cut at `cuts` (indices, any order, repeats give empty chunks), checking on the
    /// way that the parser never holds more than its limit of the event being read.
    fn parse_cut(body: &[u8], cuts: &[usize], max: usize) -> Parsed {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut parser = SseParser::new().with_max_event_size(max);
        let mut out = Vec::new();
        let mut from = 0;
        for to in cuts.into_iter().chain([body.len()]) {
            parser.feed(&body[from..to]);
            while let Some(event) = parser.next_event() {
                out.push(event);
            }
            assert!(parser.held() + parser.line.len() <= max);
            assert!(!parser.ignoring_line || parser.line.is_empty());
            from = to;
        }
        parser.finish();
        assert_eq!(parser.next_event(), None);
        (out, parser.last_event_id().to_owned(), parser.retry())
    }

    /// Streams of lines: fields known and not, comments, blank lines, values with
    /// multi-byte characters, NUL, bytes that aren't UTF-8 and digits, and every line end;
    /// sometimes a BOM. Or any bytes.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let name = prop::sample::select(vec![
            "data",
            "data",
            "data",
            "event",
            "id",
            "retry",
            "",
            "dat",
            "Data",
            "x",
            "\u{FEFF}data",
            "d\u{e9}",
        ]);
        let separator = prop::sample::select(vec![":", ": ", ":  ", "", " :"]);
        let piece = prop::sample::select(vec![
            &b"a"[..],
            b" ",
            b":",
            b"0",
            b"7",
            b"\0",
            "é".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            b"\xFF",
            b"\xE2\x82",
            b"\xF0\x9F",
            b"\xEF\xBB\xBF",
        ]);
        let value = prop_oneof![
            prop::collection::vec(piece, 0..6).prop_map(|p| p.concat()),
            "[0-9]{1,25}".prop_map(String::into_bytes),
        ];
        let end = prop::sample::select(vec![&b"\n"[..], b"\r\n", b"\r"]);
        let line = prop_oneof![
            6 => (name, separator, value).prop_map(|(name, sep, value)| {
                let mut line = name.as_bytes().to_vec();
                if !sep.is_empty() {
                    line.extend_from_slice(sep.as_bytes());
                    line.extend_from_slice(&value);
                }
                line
            }),
            1 => "[a-z ]{0,6}".prop_map(|c| format!(":{c}").into_bytes()),
            3 => Just(Vec::new()),
        ];
        let lines = (
            prop::sample::select(vec![&b""[..], b"", BOM, b"\xEF\xBB"]),
            prop::collection::vec((line, end), 0..24),
        )
            .prop_map(|(start, lines)| {
                let mut body = start.to_vec();
                for (line, end) in lines {
                    body.extend_from_slice(&line);
                    body.extend_from_slice(end);
                }
                body
            });
        prop_oneof![
            4 => lines,
            1 => prop::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), any::<u8>()],
                0..200,
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2_000,
            rng_seed: RngSeed::Fixed(0x0073_7365),
            ..ProptestConfig::default()
        })]

        /// However the stream is cut, even inside a character or between `\r` and `\n`, the
        /// events, the last event ID and the reconnection time are the standard's.
        #[test]
        fn any_cut_gives_the_standards_events(
            body in stream(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let (events, last_id, retry) = oracle(&body);
            let expected: Parsed = (events.into_iter().map(Ok).collect(), last_id, retry);
            prop_assert_eq!(&parse_cut(&body, &[], usize::MAX), &expected);
            prop_assert_eq!(&parse_cut(&body, &cuts, usize::MAX), &expected);
            let every_byte: Vec<usize> = (0..body.len()).collect();
            prop_assert_eq!(&parse_cut(&body, &every_byte, usize::MAX), &expected);
        }

        /// With a small limit: the same events and errors however the stream is cut, and no
        /// more held than the limit (checked in `parse_cut`).
        #[test]
        fn any_cut_gives_the_same_errors(
            body in stream(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
            max in 0usize..24,
        ) {
            let whole = parse_cut(&body, &[], max);
            prop_assert_eq!(&parse_cut(&body, &cuts, max), &whole);
            let every_byte: Vec<usize> = (0..body.len()).collect();
            prop_assert_eq!(&parse_cut(&body, &every_byte, max), &whole);
            // Below the limit, the events are the standard's.
            if whole.0.iter().all(Result::is_ok) {
                let (events, _, _) = oracle(&body);
                let got: Vec<Event> = whole.0.into_iter().map(Result::unwrap).collect();
                prop_assert_eq!(got, events);
            }
        }
    }
}
