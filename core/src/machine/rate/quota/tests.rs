use http::header::RETRY_AFTER;
use http::HeaderValue;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::*;

const NOW: u64 = 1_700_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for &(name, value) in pairs {
        map.append(name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn hold(status: u16, pairs: &[(&'static str, &str)]) -> Option<QuotaHold> {
    quota_hold(
        StatusCode::from_u16(status).unwrap(),
        &headers(pairs),
        now(),
    )
}

fn delay(status: u16, pairs: &[(&'static str, &str)]) -> Option<Duration> {
    hold(status, pairs).map(|h| h.delay)
}

#[test]
fn retry_after_on_429_and_503() {
    assert_eq!(delay(429, &[("retry-after", "7")]), Some(secs(7)));
    assert_eq!(delay(503, &[("retry-after", "0")]), Some(Duration::ZERO));
    let date = httpdate::fmt_http_date(now() + secs(90));
    assert_eq!(delay(429, &[("retry-after", &date)]), Some(secs(90)));
    // Not on other statuses, and not when it doesn't parse.
    assert_eq!(delay(200, &[("retry-after", "7")]), None);
    assert_eq!(delay(500, &[("retry-after", "7")]), None);
    assert_eq!(delay(301, &[("retry-after", "7")]), None);
    assert_eq!(delay(429, &[("retry-after", "soon")]), None);
    assert_eq!(delay(429, &[]), None);
}

#[test]
fn ietf_fields() {
    let spent = [("ratelimit", r#""default";r=0;t=2"#)];
    assert_eq!(
        hold(200, &spent),
        Some(QuotaHold {
            delay: secs(2),
            partition: None
        })
    );
    assert_eq!(delay(429, &spent), Some(secs(2)));
    assert_eq!(delay(200, &[("ratelimit", r#""default";r=1;t=2"#)]), None);
    // Tokens as names (earlier drafts), parameters in any order, unknown ones ignored.
    assert_eq!(
        delay(200, &[("ratelimit", "default;t=9;x=?1;r=0")]),
        Some(secs(9))
    );
    // A reset of zero: the quota is back now.
    assert_eq!(
        delay(200, &[("ratelimit", r#""a";r=0;t=0"#)]),
        Some(Duration::ZERO)
    );
}

#[test]
fn ietf_partition_key() {
    let h = hold(
        200,
        &[
            ("ratelimit", r#""default";r=0;t=2"#),
            (
                "ratelimit-policy",
                r#""default";q=100;w=60;pk=:cHJvamVjdA==:"#,
            ),
        ],
    )
    .unwrap();
    assert_eq!(h.delay, secs(2));
    assert_eq!(h.partition.as_deref(), Some("project"));
    // The member's own pk wins over its policy's; padding is optional.
    let h = hold(
        200,
        &[
            ("ratelimit", r#""default";r=0;t=2;pk=:dXNlcg:"#),
            (
                "ratelimit-policy",
                r#""default";q=100;w=60;pk=:cHJvamVjdA==:"#,
            ),
        ],
    )
    .unwrap();
    assert_eq!(h.partition.as_deref(), Some("user"));
    // Bytes that aren't UTF-8 are replaced; bad base64 drops the partition, not the hold.
    let h = hold(200, &[("ratelimit", r#""d";r=0;t=2;pk=:/w==:"#)]).unwrap();
    assert_eq!(h.partition.as_deref(), Some("\u{fffd}"));
    let h = hold(200, &[("ratelimit", r#""d";r=0;t=2;pk=:A:"#)]).unwrap();
    assert_eq!(h.partition, None);
    // A pk that isn't a byte sequence is no partition.
    let h = hold(200, &[("ratelimit", r#""d";r=0;t=2;pk="project""#)]).unwrap();
    assert_eq!(h.partition, None);
}

#[test]
fn ietf_reset_from_the_policy_window() {
    let pairs = [
        ("ratelimit", r#""burst";r=5;t=1, "daily";r=0"#),
        (
            "ratelimit-policy",
            r#""burst";q=10;w=1, "daily";q=1000;w=86400"#,
        ),
    ];
    assert_eq!(delay(200, &pairs), Some(secs(86_400)));
    // No t and no matching policy window: nothing to hold for.
    assert_eq!(delay(200, &[("ratelimit", r#""daily";r=0"#)]), None);
    assert_eq!(
        delay(
            200,
            &[
                ("ratelimit", r#""daily";r=0"#),
                ("ratelimit-policy", r#""other";w=60"#)
            ]
        ),
        None
    );
    // An invalid policy field is ignored.
    assert_eq!(
        delay(
            200,
            &[
                ("ratelimit", r#""daily";r=0"#),
                ("ratelimit-policy", r#""daily";w=60,"#)
            ]
        ),
        None
    );
}

#[test]
fn ietf_longest_spent_quota_wins() {
    let h = hold(
        200,
        &[(
            "ratelimit",
            r#""a";r=0;t=5;pk=:YQ==:, "b";r=0;t=50;pk=:Yg==:, "c";r=9;t=500"#,
        )],
    )
    .unwrap();
    assert_eq!(h.delay, secs(50));
    assert_eq!(h.partition.as_deref(), Some("b"));
}

#[test]
fn ietf_field_on_several_lines() {
    let mut map = HeaderMap::new();
    map.append("ratelimit", HeaderValue::from_static(r#""a";r=3;t=1"#));
    map.append("ratelimit", HeaderValue::from_static(r#""b";r=0;t=8"#));
    assert_eq!(
        quota_hold(StatusCode::OK, &map, now()).map(|h| h.delay),
        Some(secs(8))
    );
}

#[test]
fn legacy_fields() {
    for (remaining, reset) in [
        ("x-ratelimit-remaining", "x-ratelimit-reset"),
        ("ratelimit-remaining", "ratelimit-reset"),
    ] {
        assert_eq!(
            delay(200, &[(remaining, "0"), (reset, "30")]),
            Some(secs(30))
        );
        assert_eq!(
            delay(403, &[(remaining, " 0 "), (reset, "1.25")]),
            Some(Duration::from_millis(1_250))
        );
        // A Unix timestamp, in the future or the past.
        let at = (NOW + 42).to_string();
        assert_eq!(
            delay(200, &[(remaining, "0"), (reset, &at)]),
            Some(secs(42))
        );
        let past = (NOW - 42).to_string();
        assert_eq!(
            delay(200, &[(remaining, "0"), (reset, &past)]),
            Some(Duration::ZERO)
        );
        let fractional = format!("{NOW}.5");
        assert_eq!(
            delay(200, &[(remaining, "0"), (reset, &fractional)]),
            Some(Duration::from_millis(500))
        );
        // Quota left, or no reset: no hold.
        assert_eq!(delay(200, &[(remaining, "1"), (reset, "30")]), None);
        assert_eq!(delay(200, &[(remaining, "0")]), None);
        assert_eq!(delay(200, &[(reset, "30")]), None);
    }
    // Just below the timestamp threshold is still a delay.
    assert_eq!(
        delay(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "999999999")
            ]
        ),
        Some(secs(999_999_999))
    );
}

#[test]
fn precedence() {
    let all = [
        ("retry-after", "1"),
        ("ratelimit", r#""a";r=0;t=2;pk=:YQ==:"#),
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "3"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "4"),
    ];
    let h = hold(429, &all).unwrap();
    assert_eq!(h.delay, secs(1));
    assert_eq!(h.partition.as_deref(), Some("a"));
    assert_eq!(delay(200, &all), Some(secs(2)));
    assert_eq!(delay(200, &all[2..]), Some(secs(3)));
    assert_eq!(delay(200, &all[4..]), Some(secs(4)));
    // A valid RateLimit field with quota left decides: no hold, whatever the older fields say.
    let left = [("ratelimit", r#""a";r=5;t=2"#), all[4], all[5]];
    assert_eq!(delay(200, &left), None);
    assert_eq!(delay(429, &[all[0], left[0]]), Some(secs(1)));
    // An invalid RateLimit field, or one without any usable member, is skipped.
    let invalid = [("ratelimit", r#""a";r=0;t=2,"#), all[4], all[5]];
    assert_eq!(delay(200, &invalid), Some(secs(4)));
    let unusable = [("ratelimit", r#""a";t=2, "b";r=-1;t=2"#), all[4], all[5]];
    assert_eq!(delay(200, &unusable), Some(secs(4)));
    // A malformed draft field falls through to the X- fields.
    let fallthrough = [("ratelimit-remaining", "none"), all[4], all[5]];
    assert_eq!(delay(200, &fallthrough), Some(secs(4)));
}

#[test]
fn malformed_values_are_ignored() {
    for bad in [
        "", "-0", "+0", "0x0", "0s", "zero", "0.", ".5", "1e3", "0 0", "٠", "0,0",
    ] {
        assert_eq!(
            delay(
                200,
                &[("x-ratelimit-remaining", bad), ("x-ratelimit-reset", "30")]
            ),
            None,
            "remaining {bad:?}"
        );
        assert_eq!(
            delay(
                200,
                &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", bad)]
            ),
            None,
            "reset {bad:?}"
        );
    }
    for bad in [
        r#""a";r=0;t=-1"#,
        r#""a";r=0;t=1.5"#,
        r#""a";r=0;t="1""#,
        r#""a";r=0.0;t=1"#,
        r#""a";r=?0;t=1"#,
        r#""a";r=0;t=1 "b""#,
        r#""a";r=0;t=1234567890123456"#,
        "a=0, t=1",
        "limit=100, remaining=0, reset=5",
    ] {
        assert_eq!(delay(200, &[("ratelimit", bad)]), None, "{bad:?}");
    }
    // Bytes that aren't text: RFC 9651 fields are ASCII.
    let mut map = HeaderMap::new();
    map.insert(
        "ratelimit",
        HeaderValue::from_bytes(b"\"a\xff\";r=0;t=1").unwrap(),
    );
    map.insert(
        "x-ratelimit-remaining",
        HeaderValue::from_bytes(b"0\xa0").unwrap(),
    );
    map.insert("x-ratelimit-reset", HeaderValue::from_static("1"));
    assert_eq!(quota_hold(StatusCode::OK, &map, now()), None);
}

#[test]
fn huge_values_do_not_overflow() {
    assert_eq!(
        delay(200, &[("ratelimit", r#""a";r=0;t=999999999999999"#)]),
        Some(secs(999_999_999_999_999))
    );
    let huge = "9".repeat(40);
    let d = delay(
        200,
        &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &huge)],
    );
    // A timestamp too far for SystemTime is ignored; one that fits is a long hold.
    assert!(d.is_none() || d > Some(secs(1_000_000_000_000)));
    assert_eq!(
        delay(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1.0000000019")
            ]
        ),
        Some(Duration::from_nanos(1_000_000_001))
    );
    assert_eq!(delay(429, &[("retry-after", &huge)]), Some(secs(u64::MAX)));
    let _ = RETRY_AFTER;
}

#[test]
fn jitter_stays_in_range_and_is_deterministic() {
    let delay = secs(10);
    assert_eq!(jittered(delay, Duration::ZERO, 1), delay);
    assert_eq!(jittered(Duration::MAX, secs(1), 1), Duration::MAX);
    let a = jittered(delay, secs(2), 99);
    assert_eq!(a, jittered(delay, secs(2), 99));
    assert_ne!(a, jittered(delay, secs(2), 100));
    let _ = jittered(delay, Duration::MAX, 3);
}

fn header_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "retry-after",
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-remaining",
        "ratelimit-reset",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ])
}

fn status() -> impl Strategy<Value = StatusCode> {
    prop_oneof![
        Just(StatusCode::TOO_MANY_REQUESTS),
        Just(StatusCode::SERVICE_UNAVAILABLE),
        (100u16..1000).prop_map(|s| StatusCode::from_u16(s).unwrap()),
    ]
}

/// Values shaped like the fields, so that the parsers get past their first byte.
fn field_like() -> impl Strategy<Value = Vec<u8>> {
    let item = (
        prop::sample::select(vec![
            "\"a\"", "a", "\"b\"", "(a b)", "?1", "1.5", "@1", ":YQ==:", "\"\\\"\"",
        ]),
        proptest::collection::vec(
            (
                prop::sample::select(vec!["r", "t", "q", "w", "pk", "x"]),
                prop::sample::select(vec![
                    "0",
                    "-1",
                    "5",
                    "999999999999999",
                    "\"s\"",
                    ":cHJvamVjdA==:",
                    ":/w==:",
                    "?0",
                    "2.5",
                    "",
                ]),
            ),
            0..5,
        ),
    )
        .prop_map(|(item, params)| {
            let mut s = item.to_owned();
            for (key, value) in params {
                s.push(';');
                s.push_str(key);
                if !value.is_empty() {
                    s.push('=');
                    s.push_str(value);
                }
            }
            s
        });
    proptest::collection::vec(item, 0..4).prop_map(|items| items.join(", ").into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        rng_seed: RngSeed::Fixed(0x907a),
        ..ProptestConfig::default()
    })]

    /// Whatever the headers hold, `quota_hold` answers without panicking.
    #[test]
    fn never_panics_on_header_bytes(
        status in status(),
        fields in proptest::collection::vec(
            (header_name(), prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..48),
                field_like(),
                "[0-9. ]{0,22}".prop_map(String::into_bytes),
            ]),
            0..6,
        ),
        now in 0u64..400_000_000_000,
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                map.append(name, value);
            }
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        if let Some(hold) = quota_hold(status, &map, now) {
            // A hold comes from a header that says so.
            prop_assert!(!map.is_empty());
            let _ = jittered(hold.delay, Duration::from_secs(1), now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs());
        }
    }

    /// A spent quota's reset always comes back as the hold.
    #[test]
    fn spent_ietf_quota_holds_for_its_reset(t in 0u64..1_000_000_000_000_000, r in 1u64..1000) {
        let field = format!(r#""a";r={r};t=1, "b";r=0;t={t}"#);
        prop_assert_eq!(delay(200, &[("ratelimit", &field)]), Some(secs(t)));
    }

    #[test]
    fn jitter_is_within_the_spread(delay_ms in any::<u32>(), spread_ms in any::<u32>(), seed in any::<u64>()) {
        let delay = Duration::from_millis(u64::from(delay_ms));
        let spread = Duration::from_millis(u64::from(spread_ms));
        let wait = jittered(delay, spread, seed);
        prop_assert!(delay <= wait && wait <= delay + spread);
    }
}
