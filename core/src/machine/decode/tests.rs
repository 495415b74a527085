use std::io::Write as _;

use http::header::HeaderValue;
use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------------------------------------
// Encoders (the codecs' own crates, as a server would use them)

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => gzip(data),
        Coding::Deflate => zlib(data),
        Coding::Brotli => brotli(data),
        Coding::Zstd => zstd(data),
    }
}

const ALL: [Coding; 4] = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];

/// Text that compresses like a JSON answer does (a few times, not a thousand).
fn sample(len: usize) -> Vec<u8> {
    let words = [
        &b"\"id\":"[..],
        b"\"name\":\"keel\",",
        b"42,",
        b"{\"items\":[",
        b"\"status\":\"ok\"},",
        b" ",
        b"\"created\":\"2026-12-02T00:00:00Z\",",
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize]);
        out.extend_from_slice(format!("{}", x % 10_000).as_bytes());
    }
    out.truncate(len);
    out
}

/// Feeds `parts` in order, taking decoded bytes out `piece` at a time; every output written
/// must fit the piece (it always does: the check is on the decoder's report).
fn run(
    codings: &[Coding],
    limits: DecodeLimits,
    parts: &[&[u8]],
    piece: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = ContentDecoder::new(codings, limits).expect("compiled in");
    let mut out = vec![0u8; piece];
    let mut decoded = Vec::new();
    for part in parts {
        let mut rest = *part;
        loop {
            let (used, written) = decoder.decode(rest, &mut out)?;
            assert!(written <= piece);
            rest = &rest[used..];
            decoded.extend_from_slice(&out[..written]);
            if written == 0 {
                assert!(rest.is_empty(), "it wrote nothing and left input");
                break;
            }
        }
    }
    for _ in 0..1_000_000 {
        let written = decoder.finish(&mut out)?;
        if written == 0 {
            assert_eq!(decoder.decoded_len(), decoded.len() as u64);
            return Ok(decoded);
        }
        decoded.extend_from_slice(&out[..written]);
    }
    panic!("finish never ended");
}

fn whole(codings: &[Coding], body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    run(codings, DecodeLimits::new(), &[body], 64 * 1024)
}

fn cut(body: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = points.iter().map(|p| p % (body.len() + 1)).collect();
    points.sort_unstable();
    let mut parts = Vec::new();
    let mut at = 0;
    for p in points {
        parts.push(body[at..p].to_vec());
        at = p;
    }
    parts.push(body[at..].to_vec());
    parts
}

// ---------------------------------------------------------------------------------------------
// Each codec

#[test]
fn every_coding_decodes_what_its_encoder_wrote() {
    let data = sample(300_000);
    for coding in ALL {
        let decoded = whole(&[coding], &encode(coding, &data)).unwrap();
        assert_eq!(decoded, data, "{coding}");
    }
}

#[test]
fn deflate_takes_zlib_and_raw_deflate() {
    let data = sample(50_000);
    assert_eq!(whole(&[Coding::Deflate], &zlib(&data)).unwrap(), data);
    assert_eq!(
        whole(&[Coding::Deflate], &raw_deflate(&data)).unwrap(),
        data
    );
    // Fed a byte at a time, the sniffing waits for its two bytes.
    let body = raw_deflate(&data);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    let decoded = run(&[Coding::Deflate], DecodeLimits::new(), &bytes, 7).unwrap();
    assert_eq!(decoded, data);
}

#[test]
fn small_output_pieces_drain_everything_the_codec_holds() {
    let data = sample(40_000);
    for coding in ALL {
        for piece in [1, 2, 3, 7, 64, 1000] {
            let decoded = run(
                &[coding],
                DecodeLimits::new(),
                &[&encode(coding, &data)],
                piece,
            )
            .unwrap();
            assert_eq!(decoded, data, "{coding}, {piece}-byte pieces");
        }
    }
}

#[test]
fn stacked_codings_are_undone_in_reverse_order() {
    let data = sample(100_000);
    // `Content-Encoding: gzip, br`: gzip applied first, then br.
    let body = brotli(&gzip(&data));
    assert_eq!(whole(&[Coding::Gzip, Coding::Brotli], &body).unwrap(), data);
    let body = zstd(&zlib(&brotli(&data)));
    let codings = [Coding::Brotli, Coding::Deflate, Coding::Zstd];
    assert_eq!(
        run(&codings, DecodeLimits::new(), &[&body], 100).unwrap(),
        data
    );
}

#[test]
fn several_gzip_members_and_zstd_frames_are_one_body() {
    let mut body = gzip(b"first, ");
    body.extend(gzip(b"second"));
    assert_eq!(whole(&[Coding::Gzip], &body).unwrap(), b"first, second");
    let mut body = zstd(b"one ");
    body.extend(zstd(b"two"));
    assert_eq!(whole(&[Coding::Zstd], &body).unwrap(), b"one two");
}

#[test]
fn an_empty_body_is_empty_whatever_its_coding() {
    for coding in ALL {
        assert_eq!(whole(&[coding], b"").unwrap(), b"", "{coding}");
        // And the encoding of nothing decodes to nothing.
        assert_eq!(whole(&[coding], &encode(coding, b"")).unwrap(), b"");
    }
}

// ---------------------------------------------------------------------------------------------
// Broken streams

#[test]
fn a_truncated_stream_is_a_truncated_error() {
    let data = sample(20_000);
    for coding in ALL {
        let body = encode(coding, &data);
        for keep in [1, body.len() / 2, body.len() - 1] {
            let err = whole(&[coding], &body[..keep]).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { coding: c } if c == coding),
                "{coding} cut at {keep}: {err:?}"
            );
        }
    }
    let err = whole(&[Coding::Deflate], &raw_deflate(&data)[..1]).unwrap_err();
    assert!(matches!(err, DecodeError::Truncated { .. }), "{err:?}");
}

#[test]
fn a_corrupt_stream_is_a_corrupt_error() {
    let data = sample(20_000);
    let mut bad = Vec::new();
    // gzip: a wrong magic number; a checksum that doesn't match.
    let mut body = gzip(&data);
    body[0] ^= 0xff;
    bad.push((Coding::Gzip, body));
    let mut body = gzip(&data);
    let crc = body.len() - 8;
    body[crc] ^= 0x01;
    bad.push((Coding::Gzip, body));
    // zlib: an Adler-32 that doesn't match.
    let mut body = zlib(&data);
    let last = body.len() - 1;
    body[last] ^= 0x01;
    bad.push((Coding::Deflate, body));
    // brotli and zstd: noise.
    bad.push((Coding::Brotli, vec![0xff; 64]));
    let mut body = zstd(&data);
    body[0] ^= 0xff;
    bad.push((Coding::Zstd, body));
    // Data after the end of a brotli or deflate stream.
    let mut body = brotli(&data);
    body.extend_from_slice(b"trailing");
    bad.push((Coding::Brotli, body));
    let mut body = zlib(&data);
    body.extend_from_slice(b"trailing");
    bad.push((Coding::Deflate, body));
    for (coding, body) in bad {
        let err = whole(&[coding], &body).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Corrupt { coding: c, .. } if *c == coding),
            "{coding}: {err:?}"
        );
        assert!(err.source().is_some());
        assert!(err.to_string().starts_with("corrupt"), "{err}");
    }
}

#[test]
fn a_zstd_window_over_8_mib_is_refused() {
    let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(24))
        .unwrap();
    e.include_contentsize(false).unwrap();
    e.write_all(&sample(100_000)).unwrap();
    let body = e.finish().unwrap();
    let err = whole(&[Coding::Zstd], &body).unwrap_err();
    assert!(matches!(err, DecodeError::Corrupt { .. }), "{err:?}");
}

#[test]
fn after_an_error_every_call_fails() {
    let mut decoder = ContentDecoder::new(&[Coding::Brotli], DecodeLimits::new()).unwrap();
    let mut out = [0u8; 64];
    assert!(decoder.decode(&[0xff; 16], &mut out).is_err());
    assert!(decoder.decode(b"more", &mut out).is_err());
    assert!(decoder.finish(&mut out).is_err());
}

// ---------------------------------------------------------------------------------------------
// Bombs

fn zeros_gzip(len: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        e.write_all(&block[..n]).unwrap();
        left -= n;
    }
    e.finish().unwrap()
}

#[test]
fn a_bomb_stops_at_the_size_limit_and_never_hands_out_more() {
    let bomb = zeros_gzip(10 << 20);
    assert!(bomb.len() < 20_000, "{} bytes", bomb.len());
    let limit = 1 << 20;
    let limits = DecodeLimits::new()
        .max_decoded_size(Some(limit))
        .max_ratio(None);
    let mut decoder = ContentDecoder::new(&[Coding::Gzip], limits).unwrap();
    // A piece size that doesn't divide the limit: the last piece is cut at the limit.
    let mut out = vec![0u8; 10_000];
    let mut handed_out = 0u64;
    let mut rest = &bomb[..];
    let err = loop {
        match decoder.decode(rest, &mut out) {
            Ok((used, written)) => {
                assert!(written <= out.len());
                rest = &rest[used..];
                handed_out += written as u64;
                assert!(written > 0, "the bomb never runs dry before the limit");
            }
            Err(err) => break err,
        }
    };
    assert!(
        matches!(err, DecodeError::TooLarge { limit: l } if l == limit),
        "{err:?}"
    );
    assert_eq!(handed_out, limit, "up to the limit, and not a byte more");
    assert_eq!(decoder.decoded_len(), limit);
    // Only a few KiB of the bomb were read to get there.
    assert!(decoder.encoded_len() < 4_000, "{}", decoder.encoded_len());
}

#[test]
fn a_bomb_stops_at_the_ratio_limit_soon_after_the_grace() {
    let bomb = zeros_gzip(10 << 20);
    let err = whole(&[Coding::Gzip], &bomb).unwrap_err();
    assert!(
        matches!(err, DecodeError::RatioExceeded { limit: 100 }),
        "{err:?}"
    );
    // The same bomb with a lower ratio limit of its own: caught at the grace.
    let mut decoder =
        ContentDecoder::new(&[Coding::Gzip], DecodeLimits::new().max_ratio(Some(10))).unwrap();
    let mut out = vec![0u8; 64 * 1024];
    let mut rest = &bomb[..];
    loop {
        match decoder.decode(rest, &mut out) {
            Ok((used, _)) => rest = &rest[used..],
            Err(DecodeError::RatioExceeded { limit: 10 }) => break,
            Err(err) => panic!("{err:?}"),
        }
    }
    assert!(decoder.decoded_len() <= RATIO_GRACE + 64 * 1024);
}

#[test]
fn a_compressible_body_under_the_grace_is_never_refused() {
    // 1 MiB of zeros compresses about 1000:1: allowed, being no more than the grace.
    let data = vec![0u8; RATIO_GRACE as usize];
    for coding in ALL {
        assert_eq!(whole(&[coding], &encode(coding, &data)).unwrap(), data);
    }
    // Without limits, the 10 MiB bomb is just a body.
    let limits = DecodeLimits::new().max_decoded_size(None).max_ratio(None);
    let decoded = run(&[Coding::Gzip], limits, &[&zeros_gzip(10 << 20)], 64 * 1024).unwrap();
    assert_eq!(decoded.len(), 10 << 20);
}

#[test]
fn the_size_limit_counts_decoded_bytes_exactly() {
    let data = sample(10_000);
    let body = gzip(&data);
    let at = |limit| {
        run(
            &[Coding::Gzip],
            DecodeLimits::new().max_decoded_size(Some(limit)),
            &[&body],
            999,
        )
    };
    assert_eq!(at(10_000).unwrap(), data);
    assert!(matches!(
        at(9_999).unwrap_err(),
        DecodeError::TooLarge { limit: 9_999 }
    ));
}

// ---------------------------------------------------------------------------------------------
// Content-Encoding

fn headers(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn content_codings_reads_every_field_line_in_order() {
    assert_eq!(
        content_codings(&headers(&["gzip", "br"])),
        Some(vec![Coding::Gzip, Coding::Brotli])
    );
    assert_eq!(
        content_codings(&headers(&["X-Gzip , identity,ZSTD"])),
        Some(vec![Coding::Gzip, Coding::Zstd])
    );
    assert_eq!(content_codings(&headers(&["identity", ""])), None);
    assert_eq!(content_codings(&headers(&["gzip", "compress"])), None);
    assert_eq!(
        content_codings(&headers(&["gzip, gzip, gzip"])).map(|c| c.len()),
        Some(3)
    );
    assert_eq!(content_codings(&headers(&["gzip, gzip, gzip, gzip"])), None);
    let mut odd = HeaderMap::new();
    odd.insert(
        CONTENT_ENCODING,
        HeaderValue::from_bytes(b"gz\xffip").unwrap(),
    );
    assert_eq!(content_codings(&odd), None);
}

#[test]
fn from_headers_builds_a_decoder_only_when_there_is_work() {
    assert!(ContentDecoder::from_headers(&HeaderMap::new(), DecodeLimits::new()).is_none());
    let d = ContentDecoder::from_headers(&headers(&["gzip, br"]), DecodeLimits::new()).unwrap();
    assert_eq!(
        d.codings().collect::<Vec<_>>(),
        [Coding::Gzip, Coding::Brotli]
    );
    assert!(ContentDecoder::new(&[], DecodeLimits::new()).is_none());
}

#[test]
fn zlib_headers_are_told_from_raw_deflate() {
    let data = sample(1000);
    let zlib = zlib(&data);
    assert!(is_zlib_header([zlib[0], zlib[1]]));
    for level in 0..=9 {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(&data).unwrap();
        let z = e.finish().unwrap();
        assert!(is_zlib_header([z[0], z[1]]), "level {level}");
    }
    assert!(!is_zlib_header([0x78, 0x00]));
}

// ---------------------------------------------------------------------------------------------
// Any chunking gives the same bytes

fn codings() -> impl Strategy<Value = Vec<Coding>> {
    prop_oneof![
        Just(vec![Coding::Gzip]),
        Just(vec![Coding::Deflate]),
        Just(vec![Coding::Brotli]),
        Just(vec![Coding::Zstd]),
        Just(vec![Coding::Gzip, Coding::Brotli]),
        Just(vec![Coding::Zstd, Coding::Deflate]),
    ]
}

fn encode_all(codings: &[Coding], data: &[u8]) -> Vec<u8> {
    codings
        .iter()
        .fold(data.to_vec(), |body, &coding| encode(coding, &body))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_cut_points_and_piece_size_give_the_same_bytes(
        codings in codings(),
        len in 0usize..60_000,
        points in proptest::collection::vec(any::<usize>(), 0..12),
        piece in 1usize..20_000,
    ) {
        let data = sample(len);
        let body = encode_all(&codings, &data);
        let parts = cut(&body, &points);
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let decoded = run(&codings, DecodeLimits::new(), &parts, piece).unwrap();
        prop_assert_eq!(decoded, data);
    }

    #[test]
    fn a_truncated_stream_never_decodes_in_any_chunking(
        coding in prop_oneof![Just(Coding::Gzip), Just(Coding::Deflate), Just(Coding::Brotli), Just(Coding::Zstd)],
        len in 1usize..20_000,
        keep in any::<usize>(),
        points in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let body = encode(coding, &sample(len));
        let keep = 1 + keep % (body.len() - 1);
        let body = &body[..keep];
        let parts = cut(body, &points);
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let result = run(&[coding], DecodeLimits::new(), &parts, 4096);
        prop_assert!(result.is_err(), "{coding} kept {keep} of the body and decoded");
    }

    #[test]
    fn garbage_never_panics(
        coding in codings(),
        body in proptest::collection::vec(any::<u8>(), 0..2_000),
        points in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let parts = cut(&body, &points);
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let _ = run(&coding, DecodeLimits::new(), &parts, 512);
    }
}
