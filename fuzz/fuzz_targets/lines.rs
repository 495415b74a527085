//! `keel_core::machine::lines` on any bytes: `LineDecoder` and `NdjsonDecoder` never panic,
//! never give a line longer than their limit, and give the same lines, values and errors
//! (by line number) whether the body comes whole, in random chunks or byte by byte.
//!
//! Run from `fuzz/`: `cargo +nightly fuzz run lines -s none -a -- -runs=10000000 -max_len=256` (see the README).
#![no_main]

use keel_core::machine::lines::{LineDecoder, LineError, NdjsonDecoder};
use libfuzzer_sys::fuzz_target;

mod cuts;

fn lines(chunks: &[&[u8]], limit: usize) -> Vec<Result<String, LineError>> {
    let mut decoder = LineDecoder::new().with_max_line(limit);
    let mut out = Vec::new();
    let mut take = |decoder: &mut LineDecoder| {
        while let Some(line) = decoder.next_line() {
            if let Ok(line) = &line {
                assert!(line.len() <= limit);
            }
            out.push(line);
        }
    };
    for chunk in chunks {
        decoder.feed(chunk);
        take(&mut decoder);
    }
    decoder.finish();
    take(&mut decoder);
    let ended = out.len() as u64;
    assert_eq!(decoder.line_number(), ended);
    out
}

fn values(chunks: &[&[u8]], limit: usize) -> Vec<Result<serde_json::Value, u64>> {
    let mut decoder = NdjsonDecoder::new().with_max_line(limit);
    let mut out = Vec::new();
    let mut take = |decoder: &mut NdjsonDecoder<serde_json::Value>| {
        while let Some(value) = decoder.next_value() {
            out.push(value.map_err(|e| e.line()));
        }
    };
    for chunk in chunks {
        decoder.feed(chunk);
        take(&mut decoder);
    }
    decoder.finish();
    take(&mut decoder);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((setting, seed, body)) = cuts::split(data) else {
        return;
    };
    let limit = if setting < 128 {
        usize::from(setting)
    } else {
        usize::MAX
    };
    let cut = cuts::chunks(body, seed);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();

    let whole = lines(&[body], limit);
    assert_eq!(lines(&cut, limit), whole);
    assert_eq!(lines(&bytes, limit), whole);

    let whole = values(&[body], limit);
    assert_eq!(values(&cut, limit), whole);
    assert_eq!(values(&bytes, limit), whole);
});
