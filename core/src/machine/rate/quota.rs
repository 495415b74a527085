//! Quotas the server announces: when a response says the quota is spent, and for how long.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http::header::HeaderName;
use http::{HeaderMap, StatusCode};

use super::sf::{self, Bare, Member};
use crate::machine::retry::retry_after_from_headers;

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The remaining and reset fields of the draft's earlier versions, then the common `X-` ones.
const LEGACY: [(&str, &str); 2] = [
    ("ratelimit-remaining", "ratelimit-reset"),
    ("x-ratelimit-remaining", "x-ratelimit-reset"),
];
/// A reset at least this large (about 31 years of seconds) is a Unix timestamp, not a delay.
const TIMESTAMP_FROM: u64 = 1_000_000_000;

/// How long to hold further requests because the server says its quota is spent.
///
/// Returned by [`quota_hold`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaHold {
    /// How long from when the response arrived to hold requests (before any [`jittered`]
    /// spread). Zero when the server says the quota resets now.
    pub delay: Duration,
    /// The quota partition the hold applies to, when the server names one (the `pk` parameter
    /// of the IETF fields, decoded, as UTF-8 with invalid bytes replaced); `None` means the
    /// whole origin.
    pub partition: Option<String>,
}

/// What `response` says about the server's quota, if it says the quota is spent.
///
/// The first of these that the response carries, in a form that parses, decides:
///
/// 1. On a `429 Too Many Requests` or a `503 Service Unavailable`, a `Retry-After` (as read by
///    [`retry_after_from_headers`]): hold for that long. If the IETF fields below also name a
///    spent quota's partition, the hold carries it.
/// 2. The IETF httpapi draft's `RateLimit` field (a Structured Field List: `"default";r=0;t=30`),
///    with `RateLimit-Policy` (`"default";q=100;w=60;pk=:cHJvamVjdA==:`). Each `RateLimit`
///    member names a policy and gives its remaining quota units `r` (required) and the seconds
///    until the quota resets `t`. A member with `r=0` is spent: hold for `t` seconds, or, without
///    `t`, for the window `w` of the `RateLimit-Policy` member of the same name. When several
///    are spent, the longest hold wins. The partition is the member's `pk` (a byte sequence),
///    else its policy's. A `RateLimit` field with a member that has a valid `r` decides, even
///    when nothing is spent (then there is no hold).
/// 3. `RateLimit-Remaining` with `RateLimit-Reset` (the draft's earlier versions), then
///    `X-RateLimit-Remaining` with `X-RateLimit-Reset` (GitHub, Twitter and many others): hold
///    when the remaining count is `0`. The reset is in seconds, fractions allowed (`1.5`); a
///    value of at least 10⁹ is a Unix timestamp, measured against `now_system` (one in the
///    past means "now": a zero hold).
///
/// Without any of these, or when what the server sent leaves quota remaining, there is no hold:
/// a `429` without a usable header is left to the retry policy's backoff. A value that doesn't
/// parse (a `RateLimit` field that isn't a valid List, a negative count, a unit, non-ASCII
/// bytes) is ignored as if absent, never an error. The function never panics, whatever the
/// headers hold; it allocates only for a partition name, or to join a field sent on several
/// lines.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, StatusCode};
/// use keel_core::machine::rate::quota_hold;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset", "1700000042".parse().unwrap());
/// let hold = quota_hold(StatusCode::FORBIDDEN, &headers, now).unwrap();
/// assert_eq!(hold.delay, Duration::from_secs(42));
///
/// // The IETF fields come first, and name a partition.
/// headers.insert("ratelimit", r#""hourly";r=0;t=600"#.parse().unwrap());
/// headers.insert("ratelimit-policy", r#""hourly";q=1000;w=3600;pk=:cHJvamVjdA==:"#.parse().unwrap());
/// let hold = quota_hold(StatusCode::OK, &headers, now).unwrap();
/// assert_eq!(hold.delay, Duration::from_secs(600));
/// assert_eq!(hold.partition.as_deref(), Some("project"));
///
/// // A 429's Retry-After comes before everything.
/// headers.insert("retry-after", "5".parse().unwrap());
/// let hold = quota_hold(StatusCode::TOO_MANY_REQUESTS, &headers, now).unwrap();
/// assert_eq!(hold.delay, Duration::from_secs(5));
///
/// // Quota left: no hold.
/// headers.insert("ratelimit", r#""hourly";r=3;t=600"#.parse().unwrap());
/// assert_eq!(quota_hold(StatusCode::OK, &headers, now), None);
/// ```
pub fn quota_hold(
    status: StatusCode,
    headers: &HeaderMap,
    now_system: SystemTime,
) -> Option<QuotaHold> {
    let announced = ietf_quota(headers);
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        if let Some(delay) = retry_after_from_headers(headers, now_system) {
            let partition = match announced {
                Some(Some(hold)) => hold.partition,
                _ => None,
            };
            return Some(QuotaHold { delay, partition });
        }
    }
    if let Some(hold) = announced {
        return hold;
    }
    LEGACY.iter().find_map(|&(remaining, reset)| {
        let remaining = headers.get(remaining)?;
        let remaining = parse_seconds(remaining.as_bytes())?;
        if !remaining.is_zero() || remaining.subsec_nanos() != 0 {
            // Quota left (or a fraction of a request, which is nonsense): no hold.
            return Some(None);
        }
        let reset = headers.get(reset)?;
        let reset = parse_seconds(reset.as_bytes())?;
        let delay = if reset.as_secs() >= TIMESTAMP_FROM {
            let at = SystemTime::UNIX_EPOCH.checked_add(reset)?;
            at.duration_since(now_system).unwrap_or(Duration::ZERO)
        } else {
            reset
        };
        Some(Some(QuotaHold {
            delay,
            partition: None,
        }))
    })?
}

/// What the IETF `RateLimit` field says: `None` when it is absent, invalid or has no usable
/// member (the next source decides), `Some(None)` when no quota is spent.
fn ietf_quota(headers: &HeaderMap) -> Option<Option<QuotaHold>> {
    let field = joined(headers, &RATELIMIT)?;
    let policies = joined(headers, &RATELIMIT_POLICY);
    let policies = policies.as_deref().unwrap_or_default();
    let policies_valid = sf::for_each_member(policies, |_| {}).is_some();

    let mut usable = false;
    let mut spent: Option<(Duration, Option<Bare<'_>>)> = None;
    sf::for_each_member(&field, |member| {
        let Some(Bare::Integer(remaining @ 0..)) = member.r else {
            return;
        };
        usable = true;
        if remaining != 0 {
            return;
        }
        let policy = member
            .name()
            .filter(|_| policies_valid)
            .and_then(|name| find_policy(policies, name));
        let reset = seconds(member.t).or_else(|| policy.and_then(|p| seconds(p.w)));
        let Some(delay) = reset else {
            return;
        };
        let pk = member.pk.or_else(|| policy.and_then(|p| p.pk));
        if spent.is_none_or(|(longest, _)| delay > longest) {
            spent = Some((delay, pk));
        }
    })?;
    if !usable {
        return None;
    }
    Some(spent.map(|(delay, pk)| QuotaHold {
        delay,
        partition: pk.and_then(partition),
    }))
}

/// The first member of the `RateLimit-Policy` list named `name`.
fn find_policy<'a>(policies: &'a [u8], name: &[u8]) -> Option<Member<'a>> {
    let mut found = None;
    sf::for_each_member(policies, |policy| {
        if found.is_none() && policy.name() == Some(name) {
            found = Some(policy);
        }
    });
    found
}

/// A non-negative Integer parameter, as seconds.
fn seconds(value: Option<Bare<'_>>) -> Option<Duration> {
    match value {
        Some(Bare::Integer(secs)) => u64::try_from(secs).ok().map(Duration::from_secs),
        _ => None,
    }
}

/// A partition key: a byte sequence, decoded.
fn partition(pk: Bare<'_>) -> Option<String> {
    let Bare::Bytes(text) = pk else {
        return None;
    };
    let bytes = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
        .decode(text)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// All lines of a field, joined with `, ` as RFC 9110 §5.3 says; borrowed when there is one.
fn joined<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, [u8]>> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?.as_bytes();
    let Some(second) = lines.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut all = first.to_vec();
    for line in std::iter::once(second).chain(lines) {
        all.extend_from_slice(b", ");
        all.extend_from_slice(line.as_bytes());
    }
    Some(Cow::Owned(all))
}

/// Seconds as ASCII digits, with an optional fraction (`1.25`), between optional whitespace.
/// Digits past the nanosecond are dropped; seconds past `u64::MAX` saturate.
fn parse_seconds(value: &[u8]) -> Option<Duration> {
    let value = value.trim_ascii();
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], Some(&value[dot + 1..])),
        None => (value, None),
    };
    if whole.is_empty() || !whole.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = whole.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    let mut nanos = 0u32;
    if let Some(fraction) = fraction {
        if fraction.is_empty() || !fraction.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for i in 0..9 {
            let digit = fraction.get(i).map_or(0, |&d| u32::from(d - b'0'));
            nanos = nanos * 10 + digit;
        }
    }
    Some(Duration::new(secs, nanos))
}

/// `delay` plus a uniform share of `spread`, chosen by `seed`: somewhere in
/// `[delay, delay + spread]`, both included.
///
/// Clients that a server held together come back together unless each spreads its return:
/// give every hold a fresh seed. Equal inputs give equal outputs; the sum saturates at
/// [`Duration::MAX`], and a spread longer than `u64::MAX` nanoseconds (about 584 years) counts
/// as that long.
///
/// ```
/// use std::time::Duration;
/// use keel_core::machine::rate::jittered;
///
/// let delay = Duration::from_secs(30);
/// let spread = Duration::from_secs(3);
/// let wait = jittered(delay, spread, 7);
/// assert!(delay <= wait && wait <= delay + spread);
/// assert_eq!(jittered(delay, spread, 7), wait);
/// assert_eq!(jittered(delay, Duration::ZERO, 7), delay);
/// ```
pub fn jittered(delay: Duration, spread: Duration, seed: u64) -> Duration {
    let spread = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
    let extra = SplitMix64::new(seed).between(0, spread);
    delay.saturating_add(Duration::from_nanos(extra))
}

/// SplitMix64, as in the retry backoff (whose copy is private to `retry`).
#[derive(Clone, Copy, Debug)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high]` (`low` when `high <= low`), by Lemire's multiply-shift.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        let span = u128::from(high - low) + 1;
        let offset = (u128::from(self.next_u64()) * span) >> 64;
        // offset < span, so it fits in a u64 and low + offset <= high.
        low + offset as u64
    }
}

#[cfg(test)]
mod tests;
