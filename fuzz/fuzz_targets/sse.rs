//! `keel_core::machine::sse::SseParser` on any bytes: it never panics, never holds an event
//! larger than its limit, and gives the same events, errors, last event ID and reconnection
//! time whether the stream comes whole, in random chunks or byte by byte; twice over, with
//! `finish()` between the two streams.
//!
//! Run from `fuzz/`: `cargo +nightly fuzz run sse -s none -a -- -runs=10000000 -max_len=512` (see the README).
#![no_main]

use std::time::Duration;

use keel_core::machine::sse::{Event, SseError, SseParser};
use libfuzzer_sys::fuzz_target;

mod cuts;

/// Per stream: its events and errors, and the last event ID at its end; then the
/// reconnection time.
type Parsed = (
    Vec<(Vec<Result<Event, SseError>>, String)>,
    Option<Duration>,
);

fn parse(chunks: &[&[u8]], limit: usize) -> Parsed {
    let mut parser = SseParser::new().with_max_event_size(limit);
    let mut streams = Vec::new();
    for _stream in 0..2 {
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk);
            while let Some(event) = parser.next_event() {
                if let Ok(event) = &event {
                    // The data held its final "\n" when it was checked against the limit.
                    assert!(event.data.len() < limit);
                }
                events.push(event);
            }
        }
        parser.finish();
        assert!(parser.next_event().is_none());
        streams.push((events, parser.last_event_id().to_owned()));
    }
    (streams, parser.retry())
}

fuzz_target!(|data: &[u8]| {
    let Some((setting, seed, body)) = cuts::split(data) else {
        return;
    };
    // Half the inputs have a small limit, to reach the errors; the others have none.
    let limit = if setting < 128 {
        usize::from(setting)
    } else {
        usize::MAX
    };
    let whole = parse(&[body], limit);
    assert_eq!(parse(&cuts::chunks(body, seed), limit), whole);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(parse(&bytes, limit), whole);
});
