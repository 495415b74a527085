//! Content decoding in the driver: Accept-Encoding, decoded bodies, headers, limits and time
//! limits, on the scripted transport.

use std::error::Error as _;
use std::io::Write as _;

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH};

use super::*;
use crate::machine::decode::{Coding, DecodeError};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => gzip(data),
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Coding::Brotli => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        Coding::Zstd => zstd::stream::encode_all(data, 3).unwrap(),
    }
}

/// Text that compresses a few times, like JSON.
fn sample(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(format!("{{\"id\":{},\"ok\":true}},", x % 100_000).as_bytes());
    }
    out.truncate(len);
    out
}

fn zeros_gzip(len: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..len / block.len() {
        e.write_all(&block).unwrap();
    }
    e.finish().unwrap()
}

/// A 200 whose body is `body` in `Content-Encoding: coding`, sent in a few chunks, with the
/// encoded length declared.
fn encoded_reply(coding: &'static str, body: &[u8]) -> Reply {
    let mut reply = Reply::status(200)
        .header("content-encoding", coding)
        .header("content-type", "application/json");
    reply
        .head()
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    for part in body.chunks(body.len().div_ceil(3).max(1)) {
        reply = reply.chunk(part.to_vec());
    }
    reply
}

fn read_chunks(c: &Client<MockTransport>, reply: Reply) -> Result<Vec<Bytes>, Error> {
    let m = mock(c);
    m.push(reply);
    m.run(async {
        let mut resp = c.get("x").send().await?;
        let mut chunks = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            chunks.push(chunk);
        }
        Ok(chunks)
    })
}

// ---------------------------------------------------------------------------------------------
// Accept-Encoding

#[test]
fn accept_encoding_lists_the_codings_compiled_in_by_default() {
    let c = client();
    let m = mock(&c);
    m.run(c.get("x").send()).unwrap();
    m.only(|r| {
        assert_eq!(
            values(&r.headers, ACCEPT_ENCODING),
            ["gzip, deflate, br, zstd"]
        )
    });
}

#[test]
fn a_request_or_default_accept_encoding_is_sent_as_set() {
    let c = client();
    let m = mock(&c);
    m.run(c.get("x").header("accept-encoding", "gzip").send())
        .unwrap();
    m.only(|r| assert_eq!(values(&r.headers, ACCEPT_ENCODING), ["gzip"]));

    let c = single_attempt()
        .base_url("http://h")
        .default_header("accept-encoding", "br")
        .build()
        .unwrap();
    let m = mock(&c);
    m.run(c.get("x").send()).unwrap();
    m.run(c.get("x").decompress(false).send()).unwrap();
    let log = m.requests();
    assert_eq!(values(&log[0].headers, ACCEPT_ENCODING), ["br"]);
    assert_eq!(
        values(&log[1].headers, ACCEPT_ENCODING),
        ["br"],
        "the caller's own default stays"
    );
}

#[test]
fn decompress_false_sends_no_accept_encoding_and_keeps_the_body_as_sent() {
    let data = sample(5_000);
    let body = gzip(&data);
    // On the client.
    let c = single_attempt()
        .base_url("http://h")
        .decompress(false)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(encoded_reply("gzip", &body));
    let (headers, raw) = m
        .run(async {
            let resp = c.get("x").send().await?;
            assert!(resp.decoded_from().is_empty());
            assert_eq!(resp.content_length(), Some(body.len() as u64));
            Ok::<_, Error>((resp.headers().clone(), resp.bytes().await?))
        })
        .unwrap();
    assert_eq!(raw, body);
    assert_eq!(values(&headers, CONTENT_ENCODING), ["gzip"]);
    m.only(|r| assert!(r.headers.get(ACCEPT_ENCODING).is_none()));

    // On one request of a client that decompresses; an Accept-Encoding it sets is kept.
    let c = client();
    let m = mock(&c);
    m.push(encoded_reply("gzip", &body));
    let raw = m
        .run(async { c.get("x").decompress(false).send().await?.bytes().await })
        .unwrap();
    assert_eq!(raw, body);
    m.run(
        c.get("x")
            .header("accept-encoding", "zstd")
            .decompress(false)
            .send(),
    )
    .unwrap();
    let log = m.requests();
    assert!(log[0].headers.get(ACCEPT_ENCODING).is_none());
    assert_eq!(values(&log[1].headers, ACCEPT_ENCODING), ["zstd"]);
}

#[test]
fn decompress_true_on_a_request_asks_and_decodes_on_a_client_that_does_not() {
    let data = sample(5_000);
    let c = single_attempt()
        .base_url("http://h")
        .decompress(false)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(encoded_reply("gzip", &gzip(&data)));
    let decoded = m
        .run(async { c.get("x").decompress(true).send().await?.bytes().await })
        .unwrap();
    assert_eq!(decoded, data);
    m.only(|r| {
        assert_eq!(
            values(&r.headers, ACCEPT_ENCODING),
            ["gzip, deflate, br, zstd"]
        )
    });
}

// ---------------------------------------------------------------------------------------------
// Decoded bodies

#[test]
fn every_coding_is_decoded_and_its_headers_removed() {
    let data = sample(200_000);
    for (token, coding) in [
        ("gzip", Coding::Gzip),
        ("deflate", Coding::Deflate),
        ("br", Coding::Brotli),
        ("zstd", Coding::Zstd),
    ] {
        let c = client();
        let m = mock(&c);
        let body = encode(coding, &data);
        m.push(encoded_reply(token, &body));
        let (headers, decoded_from, encoded_length, length, decoded) = m
            .run(async {
                let resp = c.get("x").send().await?;
                Ok::<_, Error>((
                    resp.headers().clone(),
                    resp.decoded_from(),
                    resp.encoded_length(),
                    resp.content_length(),
                    resp.bytes().await?,
                ))
            })
            .unwrap();
        assert_eq!(decoded, data, "{token}");
        assert!(headers.get(CONTENT_ENCODING).is_none(), "{token}");
        assert!(headers.get(CONTENT_LENGTH).is_none(), "{token}");
        assert_eq!(values(&headers, CONTENT_TYPE), ["application/json"]);
        assert_eq!(decoded_from, [coding]);
        assert_eq!(encoded_length, Some(body.len() as u64));
        assert_eq!(length, None);
    }
}

#[test]
fn json_and_text_read_the_decoded_body() {
    let c = client();
    let m = mock(&c);
    m.push(encoded_reply(
        "br",
        &encode(Coding::Brotli, b"{\"a\":[1,2,3]}"),
    ));
    let value: serde_json::Value = m
        .run(async { c.get("x").send().await?.json().await })
        .unwrap();
    assert_eq!(value, serde_json::json!({"a": [1, 2, 3]}));
    m.push(encoded_reply(
        "zstd",
        &encode(Coding::Zstd, "héllo".as_bytes()),
    ));
    let text = m
        .run(async { c.get("x").send().await?.text().await })
        .unwrap();
    assert_eq!(text, "héllo");
}

#[test]
fn stacked_codings_are_undone_in_reverse() {
    let data = sample(30_000);
    let body = encode(Coding::Brotli, &gzip(&data));
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("content-encoding", "gzip")
            .header("content-encoding", "br")
            .chunk(body),
    );
    let (from, decoded) = m
        .run(async {
            let resp = c.get("x").send().await?;
            Ok::<_, Error>((resp.decoded_from(), resp.bytes().await?))
        })
        .unwrap();
    assert_eq!(from, [Coding::Gzip, Coding::Brotli]);
    assert_eq!(decoded, data);
}

#[test]
fn decoded_chunks_are_never_larger_than_a_piece() {
    let data = sample(1 << 20);
    let body = gzip(&data);
    let c = client();
    // The whole encoded body in one chunk: it still comes out in pieces.
    let chunks = read_chunks(
        &c,
        Reply::status(200)
            .header("content-encoding", "gzip")
            .chunk(body),
    )
    .unwrap();
    assert!(chunks.len() >= 16, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= Response::DECODED_PIECE));
    assert_eq!(chunks.concat(), data);
}

#[test]
fn unknown_identity_and_bodiless_responses_are_left_as_they_came() {
    let c = client();
    let m = mock(&c);
    // An unknown coding: passed through, headers and all.
    m.push(
        Reply::status(200)
            .header("content-encoding", "compress")
            .header("content-length", "3")
            .chunk("abc"),
    );
    let (headers, body) = m
        .run(async {
            let resp = c.get("x").send().await?;
            Ok::<_, Error>((resp.headers().clone(), resp.bytes().await?))
        })
        .unwrap();
    assert_eq!(body, "abc");
    assert_eq!(values(&headers, CONTENT_ENCODING), ["compress"]);
    assert_eq!(values(&headers, CONTENT_LENGTH), ["3"]);
    // A known coding stacked on an unknown one: nothing is undone.
    m.push(
        Reply::status(200)
            .header("content-encoding", "compress, gzip")
            .chunk("xyz"),
    );
    assert_eq!(
        m.run(async { c.get("x").send().await?.bytes().await })
            .unwrap(),
        "xyz"
    );
    // identity: untouched.
    m.push(
        Reply::status(200)
            .header("content-encoding", "identity")
            .header("content-length", "2")
            .chunk("ok"),
    );
    let resp = m.run(c.get("x").send()).unwrap();
    assert_eq!(resp.content_length(), Some(2));
    assert_eq!(m.run(resp.bytes()).unwrap(), "ok");
    // HEAD, 204 and 304 have no body to decode: no error, headers kept.
    for (method, status) in [(Method::HEAD, 200), (Method::GET, 204), (Method::GET, 304)] {
        m.push(
            Reply::status(status)
                .header("content-encoding", "gzip")
                .header("content-length", "20"),
        );
        let resp = m.run(c.request(method.clone(), "x").send()).unwrap();
        assert_eq!(
            values(resp.headers(), CONTENT_ENCODING),
            ["gzip"],
            "{method} {status}"
        );
        assert!(resp.decoded_from().is_empty());
        assert_eq!(m.run(resp.bytes()).unwrap(), "", "{method} {status}");
    }
    // An empty 200 that says gzip is an empty body.
    m.push(Reply::status(200).header("content-encoding", "gzip"));
    assert_eq!(
        m.run(async { c.get("x").send().await?.bytes().await })
            .unwrap(),
        ""
    );
}

#[test]
fn the_snippet_of_a_status_error_is_decoded() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(503)
            .header("content-encoding", "gzip")
            .chunk(gzip(b"{\"error\":\"busy\"}")),
    );
    let err = m
        .run(async { c.get("x").send().await?.error_for_status().await })
        .unwrap_err();
    assert_eq!(err.body_snippet().unwrap(), "{\"error\":\"busy\"}");
}

// ---------------------------------------------------------------------------------------------
// Broken bodies

#[test]
fn a_truncated_or_corrupt_body_is_a_decode_error_in_the_body_stage() {
    let data = sample(50_000);
    let body = gzip(&data);
    let c = client();
    let err = get_bytes(&c, encoded_reply("gzip", &body[..body.len() - 5])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_eq!(err.stage(), Some(Stage::Body));
    assert!(!err.is_retryable());
    let source = err.source().and_then(|s| s.downcast_ref::<DecodeError>());
    assert!(
        matches!(
            source,
            Some(DecodeError::Truncated {
                coding: Coding::Gzip
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.url().map(ToString::to_string).as_deref(),
        Some("http://h/v1/x")
    );

    let mut corrupt = body.clone();
    corrupt[body.len() - 8] ^= 1; // the CRC
    let err = get_bytes(&c, encoded_reply("gzip", &corrupt)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    let source = err.source().and_then(|s| s.downcast_ref::<DecodeError>());
    assert!(
        matches!(source, Some(DecodeError::Corrupt { .. })),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "could not decode the body (during reading the body) for http://h/v1/x"
    );
}

#[test]
fn a_failure_of_the_connection_stays_a_body_error() {
    let body = gzip(&sample(50_000));
    let c = client();
    let err = get_bytes(
        &c,
        Reply::status(200)
            .header("content-encoding", "gzip")
            .chunk(body[..100].to_vec())
            .fail_at(
                Duration::ZERO,
                Error::new(ErrorKind::Body).with_stage(Stage::Body),
            ),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn a_bomb_is_stopped_by_the_ratio_limit_by_default() {
    let bomb = zeros_gzip(10 << 20);
    let c = client();
    let err = get_bytes(&c, encoded_reply("gzip", &bomb)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DecompressionRatio { limit: 100 });
    assert_eq!(err.stage(), Some(Stage::Body));
    assert!(!err.is_retryable());
    // Streamed: stopped soon after the grace, every chunk at most a piece.
    let chunks = std::cell::RefCell::new(Vec::new());
    let m = mock(&c);
    m.push(encoded_reply("gzip", &bomb));
    let err = m
        .run(async {
            let mut resp = c.get("x").send().await?;
            while let Some(chunk) = resp.chunk().await? {
                chunks.borrow_mut().push(chunk.len());
            }
            Ok::<_, Error>(())
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DecompressionRatio { limit: 100 });
    let chunks = chunks.into_inner();
    assert!(chunks.iter().all(|&n| n <= Response::DECODED_PIECE));
    let seen: usize = chunks.iter().sum();
    assert!(
        seen as u64 <= crate::machine::decode::RATIO_GRACE + Response::DECODED_PIECE as u64,
        "{seen}"
    );
}

#[test]
fn a_bomb_is_stopped_by_the_decoded_size_limit_with_bounded_chunks() {
    let bomb = zeros_gzip(10 << 20);
    let limit = 3 << 20;
    let c = single_attempt()
        .base_url("http://h")
        .max_decompression_ratio(None)
        .max_decoded_size(Some(limit))
        .build()
        .unwrap();
    let chunks = read_chunks(&c, encoded_reply("gzip", &bomb));
    let err = chunks.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DecodedTooLarge { limit });
    assert_eq!(
        err.to_string(),
        format!("response body decodes to more than {limit} bytes (during reading the body) for http://h/x")
    );
    // What was handed out before the error: exactly the limit, in bounded chunks.
    let m = mock(&c);
    m.push(encoded_reply("gzip", &bomb));
    let mut seen = Vec::new();
    let _ = m.run(async {
        let mut resp = c.get("x").send().await?;
        while let Some(chunk) = resp.chunk().await? {
            seen.push(chunk.len());
        }
        Ok::<_, Error>(())
    });
    assert!(seen.iter().all(|&n| n <= Response::DECODED_PIECE));
    assert_eq!(seen.iter().sum::<usize>() as u64, limit);
}

#[test]
fn the_buffered_body_limit_counts_decoded_bytes_not_the_declared_length() {
    let c = single_attempt()
        .base_url("http://h")
        .max_body_size(100_000)
        .max_decompression_ratio(None)
        .build()
        .unwrap();
    // 10 MiB of zeros in 10 KiB of gzip, declared as such: refused once 100,000 bytes are
    // decoded, as a body too large.
    let err = get_bytes(&c, encoded_reply("gzip", &zeros_gzip(10 << 20))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge { limit: 100_000 });
    // An encoded body longer than the limit that decodes to less is fine: the declared
    // length is the encoded one.
    let data = sample(90_000);
    let c = single_attempt()
        .base_url("http://h")
        .max_body_size(90_000)
        .build()
        .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..90_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let body = gzip(&noise);
    assert!(body.len() > 90_000);
    assert_eq!(get_bytes(&c, encoded_reply("gzip", &body)).unwrap(), noise);
    assert_eq!(
        get_bytes(&c, encoded_reply("gzip", &gzip(&data))).unwrap(),
        data
    );
}

#[test]
fn the_limits_apply_to_a_decoded_stream_too() {
    let c = single_attempt()
        .base_url("http://h")
        .max_body_size(10)
        .build()
        .unwrap();
    // Streams are not held to max_body_size, decoded or not.
    let data = sample(100_000);
    let chunks = read_chunks(&c, encoded_reply("gzip", &gzip(&data))).unwrap();
    assert_eq!(chunks.concat(), data);
}

// ---------------------------------------------------------------------------------------------
// Time limits

#[test]
fn the_read_idle_timeout_applies_between_encoded_chunks() {
    let body = gzip(&sample(50_000));
    let c = single_attempt()
        .base_url("http://h")
        .read_idle_timeout(secs(30))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("content-encoding", "gzip")
            .chunk(body[..body.len() / 2].to_vec())
            .chunk_at(secs(40), body[body.len() / 2..].to_vec()),
    );
    let err = m
        .run(async { c.get("x").send().await?.bytes().await })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::ReadIdle));
    assert_eq!(err.stage(), Some(Stage::Body));
    assert_eq!(m.elapsed(), secs(30));
    // Chunks 20 s apart keep it alive, decoded as they come.
    m.push(
        Reply::status(200)
            .header("content-encoding", "gzip")
            .chunk(body[..body.len() / 2].to_vec())
            .chunk_at(secs(50), body[body.len() / 2..].to_vec()),
    );
    let decoded = m
        .run(async { c.get("x").send().await?.bytes().await })
        .unwrap();
    assert_eq!(decoded.len(), 50_000);
}

#[test]
fn the_deadline_applies_to_a_decoded_stream() {
    let body = gzip(&sample(50_000));
    let c = single_attempt()
        .base_url("http://h")
        .deadline(secs(10))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("content-encoding", "gzip")
            .chunk(body[..100].to_vec())
            .stall(),
    );
    let err = m
        .run(async {
            let resp = c.get("x").send().await?;
            use futures_util::TryStreamExt;
            resp.bytes_stream().try_collect::<Vec<Bytes>>().await
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Deadline));
}
