//! Compressed bodies for the `/encoded/{coding}` and `/bomb` routes, made with the codecs' own
//! crates (flate2, brotli, zstd), as a server would.

use std::io::Write as _;
use std::sync::OnceLock;

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress};

/// The text `/encoded/{coding}?bytes=N` compresses: `N` bytes of JSON-like records from a
/// fixed pseudo-random sequence, so a client can check what it decoded. It compresses a few
/// times over, as real answers do, far under keel's default ratio limit.
///
/// ```
/// use keel_conformance::server::encoded_sample;
///
/// let text = encoded_sample(100);
/// assert_eq!(text.len(), 100);
/// assert_eq!(text, encoded_sample(1000)[..100]);
/// assert!(text.starts_with(b"{\"id\":"));
/// ```
pub fn encoded_sample(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x853C_49E6_748F_EA9B;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let record = format!(
            "{{\"id\":{},\"name\":\"item-{}\",\"score\":{}.{}}},\n",
            x % 1_000_000,
            (x >> 20) % 5_000,
            (x >> 33) % 100,
            (x >> 40) % 100
        );
        out.extend_from_slice(record.as_bytes());
    }
    out.truncate(len);
    out
}

/// `data` in the coding named by the route (`gzip`, `deflate` (zlib), `deflate-raw` (raw
/// deflate, sent as `deflate`), `br`, `zstd`), and the `Content-Encoding` to send it with;
/// `None` for an unknown name.
pub(super) fn encode(coding: &str, data: &[u8]) -> Option<(Vec<u8>, &'static str)> {
    let level = Compression::default();
    let encoded = match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).ok()?;
            (e.finish().ok()?, "gzip")
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).ok()?;
            (e.finish().ok()?, "deflate")
        }
        "deflate-raw" => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
            e.write_all(data).ok()?;
            (e.finish().ok()?, "deflate")
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).ok()?;
            }
            (out, "br")
        }
        "zstd" => (zstd::stream::encode_all(data, 3).ok()?, "zstd"),
        _ => return None,
    };
    Some(encoded)
}

/// A gzip body of `mib` MiB of zeros, as parts to send in order, and its length.
///
/// Made in a few microseconds whatever its size: one raw deflate segment holding 1 MiB of
/// zeros, ended with a full flush (so it needs nothing before it and ends on a byte), is
/// repeated `mib` times between a gzip header and an empty final block, and the trailer's
/// CRC-32 is worked out by combining the segment's. About 1 KiB per MiB: 1 GiB of zeros
/// in about 1 MiB.
pub(super) fn gzip_bomb(mib: u64) -> (Vec<Bytes>, u64) {
    struct Segment {
        deflate: Bytes,
        /// `BLOCK` segments in a row, so the body goes in frames of about 64 KiB.
        block: Bytes,
        crc: Crc,
    }
    const BLOCK: u64 = 64;
    static SEGMENT: OnceLock<Segment> = OnceLock::new();
    let segment = SEGMENT.get_or_init(|| {
        let zeros = vec![0u8; 1 << 20];
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(16 * 1024);
        loop {
            let at = usize::try_from(c.total_in()).unwrap_or(zeros.len());
            // Only fails on a misuse of the stream, which this loop doesn't make.
            let _ = c.compress_vec(&zeros[at..], &mut out, FlushCompress::Full);
            if c.total_in() == zeros.len() as u64 && out.len() < out.capacity() {
                break;
            }
            out.reserve(16 * 1024);
        }
        let mut crc = Crc::new();
        crc.update(&zeros);
        Segment {
            block: out.repeat(BLOCK as usize).into(),
            deflate: out.into(),
            crc,
        }
    });
    let mut crc = Crc::new();
    for _ in 0..mib {
        crc.combine(&segment.crc);
    }
    // Magic, deflate, no flags, no time, best compression, unknown OS.
    let header = Bytes::from_static(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff]);
    // An empty final block with fixed codes, then CRC-32 and the size mod 2^32.
    let mut tail = vec![0x03, 0x00];
    tail.extend_from_slice(&crc.sum().to_le_bytes());
    tail.extend_from_slice(&crc.amount().to_le_bytes());
    let mut parts = vec![header];
    parts.extend((0..mib / BLOCK).map(|_| segment.block.clone()));
    parts.extend((0..mib % BLOCK).map(|_| segment.deflate.clone()));
    parts.push(tail.into());
    let len = parts.iter().map(|p| p.len() as u64).sum();
    (parts, len)
}
