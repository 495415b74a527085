//! Peak memory of a paginated listing read to the end: flat, whatever the number of pages.
//!
//! ```sh
//! cargo run --release --example paginate_rss
//! ```
//!
//! Reads 10,000 pages of 10 items from the loopback test server's `/collection` (a `Link`
//! header on each page; the server runs in a child process), and prints the client process's
//! peak resident set (`VmHWM`, Linux) as the pages go by: the stream holds one page at a
//! time. BENCHMARKS.md records the figures.

use std::time::Instant;

use futures_util::StreamExt as _;
use keel::machine::paginate::Strategy;

#[path = "common/rss.rs"]
mod rss;

use rss::peak_rss_kib;

#[derive(serde::Deserialize)]
struct Item {
    id: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server runs in a child process (this program with `--serve`), so that what is
    // measured here is the client's memory only.
    if std::env::args().any(|a| a == "--serve") {
        let server = keel_conformance::server::TestServer::start()?;
        println!("{}", server.url(""));
        // Serve until the parent closes our stdin.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return Ok(());
    }
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut base = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?),
        &mut base,
    )?;
    let base = base.trim().to_owned();
    let result = measure(&base);
    drop(child.stdin.take());
    let _ = child.wait();
    result
}

fn measure(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = keel::Client::builder().base_url(base).build()?;
        let started = Instant::now();
        let mut items = client
            .get("/collection?style=link&per=10&total=100000")
            .paginate::<Item>(Strategy::link_header());
        let mut count = 0u64;
        let mut marks = Vec::new();
        while let Some(item) = items.next().await {
            assert_eq!(item?.id, count);
            count += 1;
            if [1_000, 10_000, 50_000].contains(&count) {
                marks.push((count / 10, peak_rss_kib()));
            }
        }
        let after_all = peak_rss_kib();
        marks.push((items.pages_done(), after_all));
        let after_100_pages = marks[0].1;
        assert_eq!(items.pages_done(), 10_000);
        println!(
            "{count} items in {} pages, {:.2} s ({:.0} pages/s)",
            items.pages_done(),
            started.elapsed().as_secs_f64(),
            items.pages_done() as f64 / started.elapsed().as_secs_f64()
        );
        for (pages, kib) in &marks {
            println!("peak RSS after {pages:>6} pages: {kib} KiB");
        }
        println!(
            "growth from 100 to 10,000 pages: {:+} KiB",
            after_all as i64 - after_100_pages as i64
        );
        Ok::<(), keel::Error>(())
    })?;
    Ok(())
}
