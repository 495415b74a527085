//! Content decoding: undoing a response's `Content-Encoding` piece by piece, under limits
//! against decompression bombs.
//!
//! [`ContentDecoder`] is a push-style machine. The caller feeds it the body's bytes as they
//! arrive ([`decode`](ContentDecoder::decode)), takes the decoded bytes out into a buffer of
//! its own size, and says when the body has ended ([`finish`](ContentDecoder::finish)). The
//! decoder never holds the body: only its codecs' state (a 32 KiB window for gzip and deflate;
//! at most 16 MiB for brotli, as RFC 7932 bounds its window; at most 8 MiB for zstd, the limit
//! RFC 9659 sets for the `zstd` content coding) and, for stacked codings, a 32 KiB buffer
//! between two codecs. However small the encoded input and however large the body it inflates
//! to, one call writes at most the output buffer it is given.
//!
//! Each coding is a stage; the body's bytes go through them in the reverse of the order the
//! server applied them (`Content-Encoding: gzip, br` is undone as br, then gzip):
//!
//! ```text
//!                 stream end                 drained
//!  ┌─► Decoding ─────────────► Ending ──────────────► Ended ──► (more input) gzip, zstd: next
//!  │     │   │                                          │        member or frame; deflate,
//!  │     │   └─ the codec refuses the input: Corrupt    │        br: Corrupt (trailing data)
//!  │     └─ the body ends first: Truncated              └─► (body ends) done
//!  └───────────────────────────── next member ◄──────────┘
//! ```
//!
//! Two limits guard against bombs (each its own error): the most bytes the body may decode to
//! ([`DecodeLimits::max_decoded_size`]), and the most decoded bytes per encoded byte
//! ([`DecodeLimits::max_ratio`]), checked once the body has decoded to more than
//! [`RATIO_GRACE`] (small, very compressible answers such as `{"items":[]}` padded with spaces
//! are never refused). A body that is not a valid stream of its coding is
//! [`DecodeError::Corrupt`]; one that ends before its stream does is
//! [`DecodeError::Truncated`]. A body of no bytes at all is an empty body, whatever its
//! `Content-Encoding` says (servers send `Content-Encoding: gzip` on empty answers).
//!
//! ```
//! use std::io::Write as _;
//! use keel_core::machine::decode::{Coding, ContentDecoder, DecodeLimits};
//!
//! let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//! gz.write_all(&[b'a'; 100_000]).unwrap();
//! let encoded = gz.finish().unwrap();
//!
//! let mut decoder = ContentDecoder::new(&[Coding::Gzip], DecodeLimits::new()).unwrap();
//! let mut piece = [0u8; 16 * 1024];
//! let mut decoded = Vec::new();
//! // Feed the body as it arrives (here in two parts), taking out at most 16 KiB at a time.
//! for mut part in [&encoded[..10], &encoded[10..]] {
//!     loop {
//!         let (used, written) = decoder.decode(part, &mut piece)?;
//!         part = &part[used..];
//!         decoded.extend_from_slice(&piece[..written]);
//!         if written == 0 {
//!             break; // all of `part` is in; wait for the next one
//!         }
//!     }
//! }
//! // The body has ended: take what is left, until `finish` writes nothing.
//! loop {
//!     let written = decoder.finish(&mut piece)?;
//!     if written == 0 {
//!         break;
//!     }
//!     decoded.extend_from_slice(&piece[..written]);
//! }
//! assert_eq!(decoded, vec![b'a'; 100_000]);
//! assert_eq!(decoder.encoded_len(), encoded.len() as u64);
//! # Ok::<(), keel_core::machine::decode::DecodeError>(())
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::io;

use compression_codecs::core::util::{PartialBuffer, WriteBuffer};
use http::header::CONTENT_ENCODING;
use http::HeaderMap;

/// The default [`DecodeLimits::max_decoded_size`]: 1 GiB.
pub const DEFAULT_MAX_DECODED_SIZE: u64 = 1024 * 1024 * 1024;

/// The default [`DecodeLimits::max_ratio`]: 100 decoded bytes per encoded byte.
pub const DEFAULT_MAX_RATIO: u32 = 100;

/// How many decoded bytes a body may reach before the ratio limit applies: 1 MiB.
pub const RATIO_GRACE: u64 = 1024 * 1024;

/// The most codings a response may stack (`Content-Encoding: gzip, br` is two) for keel to
/// undo them; a response with more is left as it is.
pub const MAX_CODINGS: usize = 3;

/// The size of the buffer between two stacked codings.
const STAGE_BUFFER: usize = 32 * 1024;

/// A content coding keel can undo (RFC 9110, 8.4.1).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coding {
    /// `gzip` (and its alias `x-gzip`): RFC 1952. Several members in a row are one body.
    Gzip,
    /// `deflate`: a zlib stream (RFC 1950) as RFC 9110 defines it, or a raw deflate stream
    /// (RFC 1951) as some servers send it; the first two bytes tell which.
    Deflate,
    /// `br`: Brotli, RFC 7932.
    Brotli,
    /// `zstd`: Zstandard, RFC 8878, with a window of at most 8 MiB (RFC 9659). Several
    /// frames in a row are one body.
    Zstd,
}

/// The codings compiled in, in the order `Accept-Encoding` lists them.
const COMPILED: &[Coding] = &[
    #[cfg(feature = "gzip")]
    Coding::Gzip,
    #[cfg(feature = "deflate")]
    Coding::Deflate,
    #[cfg(feature = "brotli")]
    Coding::Brotli,
    #[cfg(feature = "zstd")]
    Coding::Zstd,
];

impl Coding {
    /// The codings this build of keel-core can undo (each has a cargo feature of the same
    /// name, on by default), in the order keel lists them in `Accept-Encoding`.
    ///
    /// ```
    /// use keel_core::machine::decode::Coding;
    ///
    /// let all = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];
    /// assert!(Coding::compiled().iter().all(|c| all.contains(c)));
    /// ```
    pub fn compiled() -> &'static [Coding] {
        COMPILED
    }

    /// The coding a `Content-Encoding` token names (case-insensitive), if keel knows it.
    ///
    /// ```
    /// use keel_core::machine::decode::Coding;
    ///
    /// assert_eq!(Coding::from_token("GZIP"), Some(Coding::Gzip));
    /// assert_eq!(Coding::from_token("x-gzip"), Some(Coding::Gzip));
    /// assert_eq!(Coding::from_token("br"), Some(Coding::Brotli));
    /// assert_eq!(Coding::from_token("compress"), None);
    /// ```
    pub fn from_token(token: &str) -> Option<Coding> {
        [
            ("gzip", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("deflate", Coding::Deflate),
            ("br", Coding::Brotli),
            ("zstd", Coding::Zstd),
        ]
        .into_iter()
        .find(|(name, _)| token.eq_ignore_ascii_case(name))
        .map(|(_, coding)| coding)
    }

    /// The coding's token, as `Accept-Encoding` names it.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// Whether this build can undo the coding (its cargo feature is on).
    pub fn is_compiled(self) -> bool {
        COMPILED.contains(&self)
    }

    /// Whether a body may hold several streams of this coding in a row (gzip members, zstd
    /// frames); for the others, data after the end of the stream is an error.
    fn continues(self) -> bool {
        matches!(self, Coding::Gzip | Coding::Zstd)
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// What a response's `Content-Encoding` asks of the client: the codings to undo, in the order
/// the server applied them, or nothing to do.
///
/// Every `Content-Encoding` field line counts, in order, and each may list several codings;
/// `identity` is dropped. When a coding is unknown or not compiled in, or there are more
/// than [`MAX_CODINGS`], the answer is `None`: the body is left as the server sent it.
///
/// ```
/// use http::HeaderMap;
/// use keel_core::machine::decode::{content_codings, Coding};
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(content_codings(&headers), None);
/// headers.insert("content-encoding", "identity".parse().unwrap());
/// assert_eq!(content_codings(&headers), None);
/// headers.insert("content-encoding", "gzip".parse().unwrap());
/// assert_eq!(content_codings(&headers), Some(vec![Coding::Gzip]));
/// headers.insert("content-encoding", "gzip, compress".parse().unwrap());
/// assert_eq!(content_codings(&headers), None, "compress is unknown: nothing is undone");
/// ```
pub fn content_codings(headers: &HeaderMap) -> Option<Vec<Coding>> {
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let value = value.to_str().ok()?;
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("identity") {
                continue;
            }
            let coding = Coding::from_token(token).filter(|c| c.is_compiled())?;
            if codings.len() == MAX_CODINGS {
                return None;
            }
            codings.push(coding);
        }
    }
    (!codings.is_empty()).then_some(codings)
}

/// The limits a body is decoded under.
///
/// ```
/// use keel_core::machine::decode::DecodeLimits;
///
/// let limits = DecodeLimits::new().max_decoded_size(Some(64 << 20)).max_ratio(None);
/// assert_eq!(limits.decoded_size_limit(), Some(64 << 20));
/// assert_eq!(limits.ratio_limit(), None);
/// assert_eq!(DecodeLimits::default().ratio_limit(), Some(100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    max_decoded_size: Option<u64>,
    max_ratio: Option<u32>,
}

impl DecodeLimits {
    /// The defaults: at most [`DEFAULT_MAX_DECODED_SIZE`] decoded bytes, and at most
    /// [`DEFAULT_MAX_RATIO`] decoded bytes per encoded byte past [`RATIO_GRACE`].
    pub const fn new() -> Self {
        Self {
            max_decoded_size: Some(DEFAULT_MAX_DECODED_SIZE),
            max_ratio: Some(DEFAULT_MAX_RATIO),
        }
    }

    /// The most bytes a body may decode to, or `None` for no limit. A body that decodes to
    /// more is handed out up to the limit, exactly, then decoding fails with
    /// [`DecodeError::TooLarge`].
    #[must_use]
    pub const fn max_decoded_size(mut self, max: Option<u64>) -> Self {
        self.max_decoded_size = max;
        self
    }

    /// The most decoded bytes per encoded byte, or `None` for no limit. Once a body has
    /// decoded to more than [`RATIO_GRACE`], decoding fails with
    /// [`DecodeError::RatioExceeded`] as soon as the bytes decoded so far exceed `max` times
    /// the encoded bytes read so far. A ratio of 0 is taken as 1.
    #[must_use]
    pub const fn max_ratio(mut self, max: Option<u32>) -> Self {
        self.max_ratio = match max {
            Some(0) => Some(1),
            other => other,
        };
        self
    }

    /// The decoded size limit.
    pub fn decoded_size_limit(&self) -> Option<u64> {
        self.max_decoded_size
    }

    /// The ratio limit.
    pub fn ratio_limit(&self) -> Option<u32> {
        self.max_ratio
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a body could not be decoded.
#[non_exhaustive]
#[derive(Debug)]
pub enum DecodeError {
    /// The body is not a valid stream of its coding (a bad header, a checksum that doesn't
    /// match, data after the end of the stream); the codec's error is the source.
    Corrupt {
        /// The coding that failed.
        coding: Coding,
        /// What the codec said.
        source: io::Error,
    },
    /// The body ended before its compressed stream did.
    Truncated {
        /// The coding whose stream was cut short.
        coding: Coding,
    },
    /// The body decodes to more than the limit, in bytes.
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body decodes to more than `limit` bytes per encoded byte.
    RatioExceeded {
        /// The limit.
        limit: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Corrupt { coding, .. } => write!(f, "corrupt {coding} stream"),
            DecodeError::Truncated { coding } => {
                write!(f, "the body ends before its {coding} stream does")
            }
            DecodeError::TooLarge { limit } => {
                write!(f, "the body decodes to more than {limit} bytes")
            }
            DecodeError::RatioExceeded { limit } => write!(
                f,
                "the body decodes to more than {limit} bytes per encoded byte"
            ),
        }
    }
}

impl StdError for DecodeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            DecodeError::Corrupt { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Undoes a body's content codings, piece by piece, under [`DecodeLimits`]; see the
/// [module docs](self).
pub struct ContentDecoder {
    /// `stages[0]` reads the body; the last one writes the caller's output.
    stages: Vec<Stage>,
    limits: DecodeLimits,
    encoded: u64,
    decoded: u64,
    /// An error was returned: every later call returns one too.
    failed: Option<Failed>,
}

#[derive(Clone, Copy, Debug)]
enum Failed {
    Corrupt(Coding),
    Truncated(Coding),
    TooLarge(u64),
    Ratio(u32),
}

impl ContentDecoder {
    /// A decoder for a body the server encoded with `codings`, in the order it applied them.
    ///
    /// `None` when there is nothing to undo, a coding isn't compiled in, or there are more
    /// than [`MAX_CODINGS`].
    pub fn new(codings: &[Coding], limits: DecodeLimits) -> Option<Self> {
        if codings.is_empty()
            || codings.len() > MAX_CODINGS
            || !codings.iter().all(|c| c.is_compiled())
        {
            return None;
        }
        let last = codings.len() - 1;
        let stages = codings
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &coding)| Stage::new(coding, i < last))
            .collect();
        Some(Self {
            stages,
            limits,
            encoded: 0,
            decoded: 0,
            failed: None,
        })
    }

    /// A decoder for a response with these headers ([`content_codings`]), or `None` when the
    /// body is to be left as it is.
    pub fn from_headers(headers: &HeaderMap, limits: DecodeLimits) -> Option<Self> {
        Self::new(&content_codings(headers)?, limits)
    }

    /// Feeds `input` (the next bytes of the body) and writes decoded bytes to `output`.
    /// Returns how many bytes of `input` it took and how many it wrote.
    ///
    /// It returns once all of `input` is taken and nothing more can be decoded from it, or
    /// once `output` is full. So: while it writes something, call it again with the rest of
    /// the input (possibly none: the codec may hold more output); when it writes nothing,
    /// all of `input` was taken and it needs the next bytes, or [`finish`](Self::finish).
    /// An empty `output` takes nothing.
    pub fn decode(
        &mut self,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(usize, usize), DecodeError> {
        self.pump(input, false, output)
    }

    /// Says the body has ended and writes what is left to `output`; returns how many bytes
    /// it wrote. Call it until it writes nothing: then the body is complete. A stream cut
    /// short is [`DecodeError::Truncated`]. `output` must not be empty (nothing can be
    /// written to it, so nothing would tell the end from a pause).
    pub fn finish(&mut self, output: &mut [u8]) -> Result<usize, DecodeError> {
        self.pump(&[], true, output).map(|(_, written)| written)
    }

    /// How many bytes of the body (encoded) it took so far.
    pub fn encoded_len(&self) -> u64 {
        self.encoded
    }

    /// How many decoded bytes it wrote so far.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// The codings it undoes, in the order the server applied them.
    pub fn codings(&self) -> impl Iterator<Item = Coding> + '_ {
        self.stages.iter().rev().map(|s| s.coding)
    }

    fn pump(
        &mut self,
        input: &[u8],
        eof: bool,
        output: &mut [u8],
    ) -> Result<(usize, usize), DecodeError> {
        if let Some(failed) = self.failed {
            return Err(failed.error());
        }
        // Never decode more than one byte past the size limit: the overshoot is what tells.
        let room = match self.limits.max_decoded_size {
            Some(max) => {
                let left = max.saturating_sub(self.decoded).saturating_add(1);
                output
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            None => output.len(),
        };
        let output = &mut output[..room];
        let ran = self
            .run(input, eof, output)
            .and_then(|(consumed, written)| {
                if written == 0 && consumed < input.len() && !output.is_empty() {
                    // The codecs took nothing more and gave nothing: never leave input behind
                    // silently.
                    let coding = self.stages[0].coding;
                    return Err(DecodeError::Corrupt {
                        coding,
                        source: io::Error::other("the decoder made no progress"),
                    });
                }
                Ok((consumed, written))
            });
        match ran {
            Ok((consumed, written)) => {
                self.encoded += consumed as u64;
                self.decoded += written as u64;
                if let Some(limit) = self.limits.max_decoded_size {
                    if self.decoded > limit {
                        // One byte over: the bytes up to the limit are handed out, and the
                        // next call fails.
                        self.failed = Some(Failed::TooLarge(limit));
                        let keep = written - (self.decoded - limit) as usize;
                        self.decoded = limit;
                        return match keep {
                            0 => Err(DecodeError::TooLarge { limit }),
                            keep => Ok((consumed, keep)),
                        };
                    }
                }
                self.check_ratio()?;
                Ok((consumed, written))
            }
            Err(err) => {
                self.failed = Some(Failed::of(&err));
                Err(err)
            }
        }
    }

    fn check_ratio(&mut self) -> Result<(), DecodeError> {
        if let Some(ratio) = self.limits.max_ratio {
            if self.decoded > RATIO_GRACE
                && self.decoded > self.encoded.saturating_mul(u64::from(ratio))
            {
                self.failed = Some(Failed::Ratio(ratio));
                return Err(DecodeError::RatioExceeded { limit: ratio });
            }
        }
        Ok(())
    }

    /// Moves bytes through the stages until `output` is full or nothing moves.
    fn run(
        &mut self,
        input: &[u8],
        eof: bool,
        output: &mut [u8],
    ) -> Result<(usize, usize), DecodeError> {
        let mut consumed = 0;
        let mut written = 0;
        let count = self.stages.len();
        loop {
            let mut moved = false;
            for i in 0..count {
                let (before, rest) = self.stages.split_at_mut(i);
                let stage = &mut rest[0];
                let step = match before.last_mut() {
                    None => stage.step(&input[consumed..], eof, output, written)?,
                    Some(prev) => {
                        let upstream_ended = eof && prev.done && prev.buffered().is_empty();
                        let step = stage.step(prev.buffered(), upstream_ended, output, written)?;
                        prev.take(step.consumed);
                        step
                    }
                };
                if i == 0 {
                    consumed += step.consumed;
                }
                if stage.buffer.is_none() {
                    written += step.written;
                }
                moved |= step.consumed > 0 || step.written > 0 || step.changed;
            }
            let last_done = self.stages.last().is_some_and(|s| s.done);
            if !moved || written == output.len() || last_done {
                return Ok((consumed, written));
            }
        }
    }
}

impl fmt::Debug for ContentDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentDecoder")
            .field("codings", &self.codings().collect::<Vec<_>>())
            .field("limits", &self.limits)
            .field("encoded", &self.encoded)
            .field("decoded", &self.decoded)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Failed {
    fn of(err: &DecodeError) -> Self {
        match *err {
            DecodeError::Corrupt { coding, .. } => Failed::Corrupt(coding),
            DecodeError::Truncated { coding } => Failed::Truncated(coding),
            DecodeError::TooLarge { limit } => Failed::TooLarge(limit),
            DecodeError::RatioExceeded { limit } => Failed::Ratio(limit),
        }
    }

    fn error(self) -> DecodeError {
        match self {
            Failed::Corrupt(coding) => DecodeError::Corrupt {
                coding,
                source: io::Error::other("the stream already failed"),
            },
            Failed::Truncated(coding) => DecodeError::Truncated { coding },
            Failed::TooLarge(limit) => DecodeError::TooLarge { limit },
            Failed::Ratio(limit) => DecodeError::RatioExceeded { limit },
        }
    }
}

/// What one stage did in one step.
#[derive(Clone, Copy, Debug, Default)]
struct Step {
    consumed: usize,
    written: usize,
    /// The stage changed state without moving bytes.
    changed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Decoding,
    /// The stream ended; what the codec still holds is being drained.
    Ending,
    Ended,
}

/// One coding of the stack.
struct Stage {
    coding: Coding,
    /// `None` for deflate until its first two bytes say zlib or raw.
    codec: Option<Codec>,
    /// The first bytes of a deflate body, kept until they tell which stream it is.
    sniffed: Sniffed,
    state: State,
    /// The last call filled its output: the codec may hold more.
    drain: bool,
    /// Some input reached the stage.
    started: bool,
    /// Done: the stream ended and so did its input.
    done: bool,
    /// What this stage decoded for the next one, when it is not the last.
    buffer: Option<Buffer>,
}

/// The first two bytes of a deflate body, and how many of them the codec has taken.
#[derive(Clone, Copy, Debug, Default)]
struct Sniffed {
    bytes: [u8; 2],
    len: usize,
    fed: usize,
}

type Codec = Box<dyn compression_codecs::DecodeV2 + Send>;

/// Bytes decoded by one stage, waiting for the next.
struct Buffer {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Stage {
    fn new(coding: Coding, buffered: bool) -> Self {
        Self {
            coding,
            codec: new_codec(coding),
            sniffed: Sniffed::default(),
            state: State::Decoding,
            drain: false,
            started: false,
            done: false,
            buffer: buffered.then(|| Buffer {
                data: vec![0; STAGE_BUFFER].into_boxed_slice(),
                start: 0,
                end: 0,
            }),
        }
    }

    /// The bytes waiting for the next stage.
    fn buffered(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .map_or(&[][..], |b| &b.data[b.start..b.end])
    }

    /// The next stage took `n` of the waiting bytes.
    fn take(&mut self, n: usize) {
        if let Some(b) = &mut self.buffer {
            b.start += n;
            if b.start == b.end {
                b.start = 0;
                b.end = 0;
            }
        }
    }

    /// One step: `input` is what the stage may read, `ended` says no more will come; it
    /// writes to its buffer, or to `output[written..]` when it is the last stage.
    fn step(
        &mut self,
        input: &[u8],
        ended: bool,
        output: &mut [u8],
        written: usize,
    ) -> Result<Step, DecodeError> {
        if self.done {
            return Ok(Step::default());
        }
        let coding = self.coding;
        let out: &mut [u8] = match &mut self.buffer {
            Some(b) => {
                if b.start > 0 {
                    b.data.copy_within(b.start..b.end, 0);
                    b.end -= b.start;
                    b.start = 0;
                }
                &mut b.data[b.end..]
            }
            None => &mut output[written..],
        };
        if out.is_empty() {
            return Ok(Step::default());
        }
        let step = step_codec(
            coding,
            &mut self.codec,
            &mut self.sniffed,
            &mut self.state,
            &mut self.drain,
            &mut self.started,
            &mut self.done,
            input,
            ended,
            out,
        )?;
        if let Some(b) = &mut self.buffer {
            b.end += step.written;
        }
        Ok(step)
    }
}

fn corrupt(coding: Coding) -> impl FnOnce(io::Error) -> DecodeError {
    move |source| DecodeError::Corrupt { coding, source }
}

/// The codec of `coding`; deflate's waits for its first bytes.
fn new_codec(coding: Coding) -> Option<Codec> {
    match coding {
        #[cfg(feature = "gzip")]
        Coding::Gzip => Some(Box::new(compression_codecs::GzipDecoder::new())),
        #[cfg(feature = "brotli")]
        Coding::Brotli => Some(Box::new(compression_codecs::BrotliDecoder::new())),
        #[cfg(feature = "zstd")]
        Coding::Zstd => Some(Box::new(compression_codecs::ZstdDecoder::new_with_params(
            // RFC 9659: a zstd content coding uses a window of at most 8 MiB; a frame that
            // asks for more is refused instead of making the decoder allocate it.
            &[compression_codecs::zstd::params::DParameter::window_log_max(23)],
        ))),
        _ => None,
    }
}

/// Whether the first two bytes of a deflate body are a zlib header (RFC 1950, 2.2: method 8,
/// a window of at most 32 KiB, and a check value that makes the pair a multiple of 31).
fn is_zlib_header(b: [u8; 2]) -> bool {
    b[0] & 0x0f == 8 && b[0] >> 4 <= 7 && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

/// One step of one stage's codec (the stage's fields are passed apart so the stage's buffer
/// can be the output).
#[allow(clippy::too_many_arguments)]
fn step_codec(
    coding: Coding,
    codec: &mut Option<Codec>,
    sniffed: &mut Sniffed,
    state: &mut State,
    drain: &mut bool,
    started: &mut bool,
    done: &mut bool,
    input: &[u8],
    ended: bool,
    out: &mut [u8],
) -> Result<Step, DecodeError> {
    let truncated = DecodeError::Truncated { coding };
    let Some(c) = codec else {
        // Deflate: gather the first two bytes, then pick zlib or raw.
        let take = input.len().min(2 - sniffed.len);
        sniffed.bytes[sniffed.len..sniffed.len + take].copy_from_slice(&input[..take]);
        sniffed.len += take;
        *started |= take > 0;
        if sniffed.len == 2 {
            *codec = deflate_codec(is_zlib_header(sniffed.bytes));
            if codec.is_none() {
                return Err(DecodeError::Corrupt {
                    coding,
                    source: io::Error::other("deflate is not compiled in"),
                });
            }
            return Ok(Step {
                consumed: take,
                changed: true,
                ..Step::default()
            });
        }
        if ended {
            if sniffed.len > 0 {
                return Err(truncated);
            }
            *done = true;
            *state = State::Ended;
            return Ok(Step {
                changed: true,
                ..Step::default()
            });
        }
        return Ok(Step {
            consumed: take,
            ..Step::default()
        });
    };
    match *state {
        State::Decoding => {
            if sniffed.fed < sniffed.len {
                // The sniffed bytes go in first.
                let pending = sniffed.bytes;
                let (used, n, end) = decode_once(c, &pending[sniffed.fed..sniffed.len], out)
                    .map_err(corrupt(coding))?;
                sniffed.fed += used;
                *drain = n == out.len();
                if end {
                    *state = State::Ending;
                }
                return Ok(Step {
                    written: n,
                    changed: used > 0 || end,
                    ..Step::default()
                });
            }
            if *drain {
                let mut w = WriteBuffer::new_initialized(out);
                c.flush(&mut w).map_err(corrupt(coding))?;
                let n = w.written_len();
                *drain = n == out.len();
                if n > 0 {
                    return Ok(Step {
                        written: n,
                        ..Step::default()
                    });
                }
            }
            if !input.is_empty() {
                *started = true;
                let (used, n, end) = decode_once(c, input, out).map_err(corrupt(coding))?;
                *drain = n == out.len();
                if end {
                    *state = State::Ending;
                }
                return Ok(Step {
                    consumed: used,
                    written: n,
                    changed: end,
                });
            }
            if !ended {
                return Ok(Step::default());
            }
            if !*started {
                // No byte at all: an empty body, whatever the header said.
                *state = State::Ended;
                *done = true;
                return Ok(Step {
                    changed: true,
                    ..Step::default()
                });
            }
            let mut w = WriteBuffer::new_initialized(out);
            let finished = c
                .finish(&mut w)
                .map_err(|_| DecodeError::Truncated { coding })?;
            let n = w.written_len();
            if finished {
                *state = State::Ended;
                *done = true;
            } else if n == 0 {
                return Err(truncated);
            }
            Ok(Step {
                written: n,
                changed: finished,
                ..Step::default()
            })
        }
        State::Ending => {
            let mut w = WriteBuffer::new_initialized(out);
            let finished = c.finish(&mut w).map_err(corrupt(coding))?;
            let n = w.written_len();
            if finished {
                *state = State::Ended;
            } else if n == 0 {
                return Err(DecodeError::Corrupt {
                    coding,
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the stream ended but the decoder did not finish",
                    ),
                });
            }
            Ok(Step {
                written: n,
                changed: finished,
                ..Step::default()
            })
        }
        State::Ended => {
            if !input.is_empty() {
                if !coding.continues() {
                    return Err(DecodeError::Corrupt {
                        coding,
                        source: io::Error::new(
                            io::ErrorKind::InvalidData,
                            "data after the end of the stream",
                        ),
                    });
                }
                // Another gzip member or zstd frame.
                c.reinit().map_err(corrupt(coding))?;
                *state = State::Decoding;
                *drain = false;
                return Ok(Step {
                    changed: true,
                    ..Step::default()
                });
            }
            if ended {
                *done = true;
                return Ok(Step {
                    changed: true,
                    ..Step::default()
                });
            }
            Ok(Step::default())
        }
    }
}

/// One `decode` call: (input taken, output written, the stream ended).
fn decode_once(c: &mut Codec, input: &[u8], out: &mut [u8]) -> io::Result<(usize, usize, bool)> {
    let mut i = PartialBuffer::new(input);
    let mut w = WriteBuffer::new_initialized(out);
    let end = c.decode(&mut i, &mut w)?;
    Ok((i.written_len(), w.written_len(), end))
}

/// The codec of a deflate body: zlib, or raw deflate; `None` when deflate isn't compiled in
/// (no deflate stage is built then: see [`ContentDecoder::new`]).
fn deflate_codec(zlib: bool) -> Option<Codec> {
    #[cfg(feature = "deflate")]
    return Some(if zlib {
        Box::new(compression_codecs::ZlibDecoder::new())
    } else {
        Box::new(compression_codecs::DeflateDecoder::new())
    });
    #[cfg(not(feature = "deflate"))]
    {
        let _ = zlib;
        None
    }
}

// The tests decode every coding: they need all four compiled in.
#[cfg(all(
    test,
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
mod tests;
