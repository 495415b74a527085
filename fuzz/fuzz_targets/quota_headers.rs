//! `keel_core::machine::rate::quota_hold` (and `jittered`) on any header values: it never
//! panics, and gives the same answer twice.
//!
//! The input is a status selector, then `(name, length, value bytes)` triples; values that
//! `http` refuses as header values are skipped.
//!
//! Run from `fuzz/`: `cargo +nightly fuzz run quota_headers -s none -a -- -runs=10000000`.
#![no_main]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use keel_core::machine::rate::{jittered, quota_hold};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 8] = [
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-other",
];
const STATUSES: [u16; 5] = [200, 403, 429, 503, 500];

fuzz_target!(|data: &[u8]| {
    let Some((&status, mut rest)) = data.split_first() else {
        return;
    };
    let status = StatusCode::from_u16(STATUSES[usize::from(status) % STATUSES.len()]).unwrap();
    let mut headers = HeaderMap::new();
    while let [name, len, after @ ..] = rest {
        let len = usize::from(*len).min(after.len());
        let (value, after) = after.split_at(len);
        rest = after;
        if let Ok(value) = HeaderValue::from_bytes(value) {
            let name = HeaderName::from_static(NAMES[usize::from(*name) % NAMES.len()]);
            headers.append(name, value);
        }
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let hold = quota_hold(status, &headers, now);
    assert_eq!(quota_hold(status, &headers, now), hold);
    if let Some(hold) = hold {
        let seed = data.len() as u64;
        let _ = jittered(hold.delay, hold.delay / 2, seed);
        let _ = jittered(hold.delay, Duration::MAX, seed);
    }
});
