//! Compressed bodies: the core decodes gzip, deflate, br and zstd the same way on every backend
//! (no backend decodes, nor asks for compression, by itself), stops decompression bombs at its
//! limits, and reports a cut-short stream as a decode error.

use std::io::Read as _;
use std::time::{Duration, Instant};

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH};
use keel_core::machine::decode::Coding;
use keel_core::{Backend, Error, ErrorKind, Response, Stage};
use serde_json::Value;

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;
use crate::server::encoded_sample;

/// The `Accept-Encoding` values the server's `/echo` saw.
async fn accept_encoding_seen(pending: keel_core::Pending) -> Result<Vec<String>, Failure> {
    let echo: Value = pending.await?.json().await?;
    Ok(echo["headers"][ACCEPT_ENCODING.as_str()]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The body and the chunk sizes it came in, or the error that ended it (with what came
/// before).
async fn read_chunks(resp: &mut Response) -> (Vec<u8>, Vec<usize>, Option<Error>) {
    let mut body = Vec::new();
    let mut sizes = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                sizes.push(chunk.len());
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (body, sizes, None),
            Err(err) => return (body, sizes, Some(err)),
        }
    }
}

/// The client asks for `gzip, deflate, br, zstd`, and a body in each (deflate zlib-wrapped or
/// raw) is decoded: same bytes, `Content-Encoding` and `Content-Length` gone from the
/// headers, the encoded length kept aside; streamed, it comes in chunks of at most 64 KiB.
pub async fn decodes_gzip_deflate_br_and_zstd<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let seen = accept_encoding_seen(client.get("/echo").send()).await?;
    ensure!(
        seen == ["gzip, deflate, br, zstd"],
        "the server saw Accept-Encoding {seen:?}"
    );
    let n = 300_000;
    let expected = encoded_sample(n);
    for (route, coding) in [
        ("gzip", Coding::Gzip),
        ("deflate", Coding::Deflate),
        ("deflate-raw", Coding::Deflate),
        ("br", Coding::Brotli),
        ("zstd", Coding::Zstd),
    ] {
        let resp = client
            .get(&format!("/encoded/{route}?bytes={n}"))
            .send()
            .await?;
        ensure!(
            resp.decoded_from() == [coding],
            "{route}: decoded from {:?}",
            resp.decoded_from()
        );
        ensure!(
            !resp.headers().contains_key(CONTENT_ENCODING)
                && !resp.headers().contains_key(CONTENT_LENGTH)
                && resp.content_length().is_none(),
            "{route}: the headers still describe the encoded body: {:?}",
            resp.headers()
        );
        let encoded = resp.encoded_length();
        ensure!(
            encoded.is_some_and(|len| len > 0 && len < n as u64 / 2),
            "{route}: encoded length {encoded:?}"
        );
        let body = resp.bytes().await?;
        ensure!(
            body == expected,
            "{route}: decoded {} bytes, not the {n} sent",
            body.len()
        );
    }
    // A larger body, streamed: bounded chunks, the same bytes.
    let n = 1_000_000;
    let mut resp = client
        .get(&format!("/encoded/zstd?bytes={n}"))
        .send()
        .await?;
    let (body, sizes, err) = read_chunks(&mut resp).await;
    if let Some(err) = err {
        return Err(Failure(format!("the stream failed: {err:?}")));
    }
    ensure!(
        sizes.iter().all(|&s| s <= Response::DECODED_PIECE),
        "a chunk of {} bytes",
        sizes.iter().max().unwrap_or(&0)
    );
    ensure!(
        body == encoded_sample(n),
        "streamed {} bytes, not the {n} sent",
        body.len()
    );
    // Over TLS too: HTTP/2 where the backend speaks it.
    if cx.capabilities().root_certificates {
        let client = cx
            .builder()
            .add_root_certificate(cx.server_root())
            .build()?;
        let n = 100_000;
        let resp = client
            .get(&cx.server.tls_url(&format!("/encoded/br?bytes={n}")))
            .send()
            .await?;
        let version = resp.version();
        let body = resp.bytes().await?;
        ensure!(
            body == encoded_sample(n),
            "over TLS ({version:?}): decoded {} bytes, not the {n} sent",
            body.len()
        );
    }
    Ok(Outcome::Pass)
}

/// With decompression off (per request or on the client) the request carries no
/// `Accept-Encoding` and the body is the server's bytes, headers and all: the backend neither
/// asks for compression nor decodes by itself.
pub async fn decompress_off_gets_the_bytes_as_sent<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let seen = accept_encoding_seen(client.get("/echo").decompress(false).send()).await?;
    ensure!(seen.is_empty(), "the server saw Accept-Encoding {seen:?}");
    let raw_client = cx.builder().decompress(false).build()?;
    let seen = accept_encoding_seen(raw_client.get("/echo").send()).await?;
    ensure!(seen.is_empty(), "the server saw Accept-Encoding {seen:?}");

    let n = 50_000;
    for resp in [
        client
            .get(&format!("/encoded/gzip?bytes={n}"))
            .decompress(false)
            .send()
            .await?,
        raw_client
            .get(&format!("/encoded/gzip?bytes={n}"))
            .send()
            .await?,
    ] {
        let encoding = resp.headers().get(CONTENT_ENCODING).cloned();
        ensure!(
            encoding.as_ref().is_some_and(|v| v == "gzip"),
            "Content-Encoding {encoding:?}"
        );
        ensure!(resp.decoded_from().is_empty(), "the body was decoded");
        let declared = resp.content_length();
        let body = resp.bytes().await?;
        ensure!(
            declared == Some(body.len() as u64),
            "declared {declared:?}, got {} bytes",
            body.len()
        );
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain)?;
        ensure!(
            plain == encoded_sample(n),
            "the raw body is not the server's gzip"
        );
    }
    Ok(Outcome::Pass)
}

/// A gzip bomb (1 GiB of zeros in about 1 MiB) is stopped early: by the ratio limit by
/// default, by the decoded-size limit when the ratio is off (having handed out exactly the
/// limit, in bounded chunks), and by the buffered-body limit counted in decoded bytes.
pub async fn decompression_bomb_stopped_at_the_limits<T: Backend>(cx: Cx<T>) -> CaseResult {
    let started = Instant::now();
    let client = cx.client()?;
    let err = match client.get("/bomb").send().await?.bytes().await {
        Ok(body) => return Err(Failure(format!("the bomb decoded to {} bytes", body.len()))),
        Err(err) => err,
    };
    ensure!(
        err.kind() == ErrorKind::DecompressionRatio { limit: 100 }
            && err.stage() == Some(Stage::Body),
        "expected the ratio limit, got {err:?}"
    );

    let limit = 8 << 20;
    let client = cx
        .builder()
        .max_decompression_ratio(None)
        .max_decoded_size(Some(limit))
        .build()?;
    let mut resp = client.get("/bomb").send().await?;
    let (body, sizes, err) = read_chunks(&mut resp).await;
    ensure!(
        err.as_ref().map(Error::kind) == Some(ErrorKind::DecodedTooLarge { limit }),
        "expected the decoded-size limit, got {err:?}"
    );
    ensure!(
        body.len() as u64 == limit && body.iter().all(|&b| b == 0),
        "handed out {} bytes before the error",
        body.len()
    );
    ensure!(
        sizes.iter().all(|&s| s <= Response::DECODED_PIECE),
        "a chunk of {} bytes",
        sizes.iter().max().unwrap_or(&0)
    );

    let client = cx
        .builder()
        .max_decompression_ratio(None)
        .max_body_size(1 << 20)
        .build()?;
    let err = match client.get("/bomb").send().await?.bytes().await {
        Ok(body) => return Err(Failure(format!("the bomb decoded to {} bytes", body.len()))),
        Err(err) => err,
    };
    ensure!(
        err.kind() == ErrorKind::BodyTooLarge { limit: 1 << 20 },
        "expected the body limit, got {err:?}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "stopping three bombs took {:?}",
        started.elapsed()
    );
    Ok(Outcome::Pass)
}

/// A compressed body cut short (with HTTP framing that says it is complete) is a decode error
/// in the body stage, in each coding, buffered or streamed; the bytes before the cut are
/// handed out first when streamed.
pub async fn truncated_gzip_is_a_decode_error<T: Backend>(cx: Cx<T>) -> CaseResult {
    let client = cx.client()?;
    let n = 200_000;
    for route in ["gzip", "deflate", "br", "zstd"] {
        let path = format!("/encoded/{route}?bytes={n}&truncate=20");
        let err = match client.get(&path).send().await?.bytes().await {
            Ok(body) => {
                return Err(Failure(format!(
                    "{route}: a cut-short body decoded to {} bytes",
                    body.len()
                )))
            }
            Err(err) => err,
        };
        ensure!(
            err.kind() == ErrorKind::Decode && err.stage() == Some(Stage::Body),
            "{route}: expected a decode error, got {err:?}"
        );
        ensure!(!err.is_retryable(), "{route}: {err:?} is retryable");
    }
    let mut resp = client
        .get(&format!("/encoded/gzip?bytes={n}&truncate=20"))
        .send()
        .await?;
    let (body, _, err) = read_chunks(&mut resp).await;
    ensure!(
        err.as_ref().map(Error::kind) == Some(ErrorKind::Decode),
        "streamed: expected a decode error, got {err:?}"
    );
    let expected = encoded_sample(n);
    ensure!(
        !body.is_empty() && expected.starts_with(&body),
        "streamed: {} bytes before the error, not a prefix of the body",
        body.len()
    );
    // The connection it came on is still good for the next call.
    let next = client.get("/status/204").send().await?;
    ensure!(next.status() == 204, "the next call got {}", next.status());
    Ok(Outcome::Pass)
}
