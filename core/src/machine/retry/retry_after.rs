//! Parsing the `Retry-After` response header (RFC 9110 §10.2.3).

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::HeaderMap;

/// Parses a `Retry-After` field value into how long to wait from `now`.
///
/// Both forms of RFC 9110 §10.2.3 are understood:
///
/// - **delta-seconds**, one or more ASCII digits: `120` is two minutes. A value too large for a
///   `u64` saturates to `u64::MAX` seconds instead of failing, so an absurd value still reads as
///   "much too long" and never as "retry now".
/// - **HTTP-date**, in each of the three formats RFC 9110 §5.6.7 requires recipients to accept:
///   IMF-fixdate (`Fri, 31 Dec 1999 23:59:59 GMT`), the obsolete RFC 850 form
///   (`Friday, 31-Dec-99 23:59:59 GMT`) and ANSI C's asctime form (`Fri Dec 31 23:59:59 1999`).
///   The wait is the time from `now`, the current wall-clock time, to that date; a date that is
///   not in the future means "now" and gives [`Duration::ZERO`].
///
/// Leading and trailing optional whitespace (spaces and horizontal tabs, RFC 9110's `OWS`) is
/// ignored, as a field parser would strip it: `" 120 "` is 120 seconds. Anything else is
/// malformed and gives `None`, which means "no usable `Retry-After`": a sign (`+1`, `-1`), a
/// fraction (`1.5`), a unit (`120s`), an empty value, other whitespace, non-ASCII bytes, or a
/// date that is not a valid calendar date (including the wrong weekday) or is before 1970.
///
/// The function is total: it never panics, whatever the bytes.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use keel_core::machine::retry::parse_retry_after;
///
/// // 1999-12-31T23:57:59Z, two minutes before the RFC's example date.
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_679);
/// let two_minutes = Some(Duration::from_secs(120));
/// assert_eq!(parse_retry_after(b"120", now), two_minutes);
/// assert_eq!(parse_retry_after(b"Fri, 31 Dec 1999 23:59:59 GMT", now), two_minutes);
/// assert_eq!(parse_retry_after(b"Friday, 31-Dec-99 23:59:59 GMT", now), two_minutes);
/// assert_eq!(parse_retry_after(b"Fri Dec 31 23:59:59 1999", now), two_minutes);
/// assert_eq!(parse_retry_after(b"Thu, 01 Jan 1970 00:00:00 GMT", now), Some(Duration::ZERO));
/// assert_eq!(parse_retry_after(b"1.5", now), None);
/// ```
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = trim_ows(value);
    if value.is_empty() {
        return None;
    }
    if value.iter().all(u8::is_ascii_digit) {
        let secs = value.iter().fold(0u64, |acc, &d| {
            acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        return Some(Duration::from_secs(secs));
    }
    // Visible ASCII and inner spaces only: no control bytes, no other whitespace at the ends
    // (which `httpdate` would otherwise trim silently).
    if !value.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) || value.ends_with(b" ") {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait asked for by the `Retry-After` header in `headers`, if there is one and it parses.
///
/// Uses the first `Retry-After` field when a response (wrongly) carries several. See
/// [`parse_retry_after`] for the accepted forms.
pub fn retry_after_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v.as_bytes(), now))
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    /// The RFC's example date, 1999-12-31T23:59:59Z, as seconds since the epoch.
    const RFC_DATE: u64 = 946_684_799;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn parse(s: &str, now: SystemTime) -> Option<Duration> {
        parse_retry_after(s.as_bytes(), now)
    }

    #[test]
    fn rfc_9110_examples() {
        let now = at(RFC_DATE - 3600);
        assert_eq!(
            parse("Fri, 31 Dec 1999 23:59:59 GMT", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse("120", now), Some(Duration::from_secs(120)));
    }

    #[test]
    fn obsolete_date_forms_give_the_same_wait() {
        let now = at(RFC_DATE - 90);
        for form in [
            "Fri, 31 Dec 1999 23:59:59 GMT",
            "Friday, 31-Dec-99 23:59:59 GMT",
            "Fri Dec 31 23:59:59 1999",
        ] {
            assert_eq!(parse(form, now), Some(Duration::from_secs(90)), "{form}");
        }
    }

    #[test]
    fn wait_is_measured_from_a_now_with_fractions() {
        let now = at(RFC_DATE - 2) + Duration::from_millis(250);
        assert_eq!(
            parse("Fri, 31 Dec 1999 23:59:59 GMT", now),
            Some(Duration::from_millis(1750))
        );
    }

    #[test]
    fn past_or_present_date_means_now() {
        for now in [at(RFC_DATE), at(RFC_DATE + 1), at(RFC_DATE + 86_400 * 365)] {
            assert_eq!(
                parse("Fri, 31 Dec 1999 23:59:59 GMT", now),
                Some(Duration::ZERO)
            );
        }
    }

    #[test]
    fn zero_and_leading_zeros() {
        let now = at(0);
        assert_eq!(parse("0", now), Some(Duration::ZERO));
        assert_eq!(parse("007", now), Some(Duration::from_secs(7)));
    }

    #[test]
    fn huge_delta_seconds_saturate() {
        let now = at(0);
        assert_eq!(
            parse("18446744073709551615", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse("99999999999999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn optional_whitespace_is_trimmed() {
        let now = at(RFC_DATE - 120);
        let two_minutes = Some(Duration::from_secs(120));
        assert_eq!(parse("120 ", now), two_minutes);
        assert_eq!(parse(" \t120\t ", now), two_minutes);
        assert_eq!(parse("  Fri, 31 Dec 1999 23:59:59 GMT ", now), two_minutes);
    }

    #[test]
    fn malformed_values_are_ignored() {
        let now = at(RFC_DATE - 120);
        for bad in [
            "",
            "   ",
            "-1",
            "+1",
            "1.5",
            "abc",
            "120s",
            "1 20",
            "0x10",
            "120\n",
            "\r120",
            "Fri, 31 Dec 1999 23:59:59",         // no GMT
            "Sat, 31 Dec 1999 23:59:59 GMT",     // wrong weekday
            "Fri, 32 Dec 1999 23:59:59 GMT",     // no such day
            "Fri, 31 Dec 1999 24:00:00 GMT",     // no such hour
            "Wed, 31 Dec 1969 23:59:59 GMT",     // before the epoch
            "Fri, 31 Dec 1999 23:59:59 GMT\x0b", // vertical tab
            "Fri,  31 Dec 1999 23:59:59 GMT",    // double space
            "１２０",                            // full-width digits
        ] {
            assert_eq!(parse(bad, now), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after(b"\xff\xfe", now), None);
    }

    #[test]
    fn reads_the_first_header() {
        let now = at(0);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after_from_headers(&headers, now), None);
        headers.append(RETRY_AFTER, "5".parse().unwrap());
        headers.append(RETRY_AFTER, "9".parse().unwrap());
        assert_eq!(
            retry_after_from_headers(&headers, now),
            Some(Duration::from_secs(5))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2048,
            rng_seed: RngSeed::Fixed(0x5eed_4e7e),
            ..ProptestConfig::default()
        })]

        #[test]
        fn never_panics_on_bytes(value in proptest::collection::vec(any::<u8>(), 0..64), now in any::<u64>()) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now % 400_000_000_000);
            let _ = parse_retry_after(&value, now);
        }

        #[test]
        fn never_panics_on_date_like_text(
            value in "[A-Za-z]{3,9},? ?[0-9]{1,2}[- ][A-Za-z]{3}[- ][0-9]{2,5} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}( GMT)?",
        ) {
            let _ = parse_retry_after(value.as_bytes(), SystemTime::UNIX_EPOCH);
        }

        #[test]
        fn digits_parse_as_seconds(secs in any::<u64>(), pad in "[ \t]{0,3}") {
            let value = format!("{pad}{secs}{pad}");
            prop_assert_eq!(
                parse_retry_after(value.as_bytes(), SystemTime::UNIX_EPOCH),
                Some(Duration::from_secs(secs))
            );
        }

        #[test]
        fn formatted_dates_round_trip(secs in 0u64..253_402_300_799, offset in 0u64..1_000_000) {
            let date = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let text = httpdate::fmt_http_date(date);
            let now = date - Duration::from_secs(offset.min(secs));
            prop_assert_eq!(
                parse_retry_after(text.as_bytes(), now),
                Some(Duration::from_secs(offset.min(secs)))
            );
        }
    }
}
