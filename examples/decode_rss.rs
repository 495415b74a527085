//! Peak memory and throughput of decoding a 1 GiB gzip stream through the client.
//!
//! ```sh
//! cargo run --release --example decode_rss
//! ```
//!
//! The loopback test server's `/bomb?mib=1024` answers about 1 MiB of gzip that inflates to
//! 1 GiB of zeros. With the decoded-size and ratio limits lifted, the client streams all of it
//! (`bytes_stream`) and counts the bytes: the process's peak resident set (`VmHWM`, Linux)
//! before and after shows that decoding holds a bounded buffer, not the body. BENCHMARKS.md
//! records the figures.

use std::time::Instant;

use futures_util::StreamExt as _;

#[path = "common/rss.rs"]
mod rss;

use rss::peak_rss_kib;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let server = keel_conformance::server::TestServer::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = keel::Client::builder()
            .base_url(&server.url(""))
            .max_decoded_size(None)
            .max_decompression_ratio(None)
            .read_idle_timeout(std::time::Duration::from_secs(60))
            .build()?;
        // Warm up: one small stream, so the connection and the runtime are counted before.
        let warm = client.get("/bomb?mib=1").send().await?;
        let mut body = warm.bytes_stream();
        while let Some(chunk) = body.next().await {
            chunk?;
        }
        let before = peak_rss_kib();
        let started = Instant::now();
        let resp = client.get(&format!("/bomb?mib={mib}")).send().await?;
        let encoded = resp.encoded_length();
        let mut body = resp.bytes_stream();
        let (mut decoded, mut largest) = (0u64, 0usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            decoded += chunk.len() as u64;
            largest = largest.max(chunk.len());
        }
        let took = started.elapsed();
        let after = peak_rss_kib();
        assert_eq!(decoded, mib << 20);
        println!(
            "decoded {} MiB (encoded {}) in {:.2} s: {:.0} MiB/s; largest piece {} KiB",
            decoded >> 20,
            encoded.map_or("unknown length".to_owned(), |e| format!("{} KiB", e >> 10)),
            took.as_secs_f64(),
            (decoded >> 20) as f64 / took.as_secs_f64(),
            largest >> 10
        );
        println!(
            "peak RSS: {} KiB before, {} KiB after ({:+} KiB)",
            before,
            after,
            after as i64 - before as i64
        );
        Ok::<(), keel::Error>(())
    })?;
    Ok(())
}
