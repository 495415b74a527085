//! A file download with a progress bar that survives dropped connections.
//!
//! ```sh
//! cargo run --example download_progress
//! ```
//!
//! It downloads 64 MiB from keel's own test server on 127.0.0.1, which cuts every response
//! after 20 MiB on purpose. Each cut is resumed where it stopped (`Range` + `If-Range` with
//! the file's `ETag`), the bar carries on from there, and the bytes on disk are checked at the
//! end. The partial file (`<path>.part`) and its sidecar would let a later run resume too, had
//! this process died mid-way.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use keel::{Checksum, Progress};

const LEN: u64 = 64 << 20;
const CUT: u64 = 20 << 20;

/// The test server's content is the byte pattern `i % 251`: this checks every byte in order,
/// and starts over when the download does.
#[derive(Default)]
struct Pattern {
    at: u64,
    wrong: Option<u64>,
}

impl Checksum for Pattern {
    fn update(&mut self, data: &[u8]) {
        for &byte in data {
            if self.wrong.is_none() && u64::from(byte) != self.at % 251 {
                self.wrong = Some(self.at);
            }
            self.at += 1;
        }
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match self.wrong {
            None => Ok(()),
            Some(at) => Err(format!("byte {at} is not what the server sent").into()),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = keel_conformance::server::TestServer::start()?;
    let dir = std::env::temp_dir().join(format!("keel-download-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("big.bin");

    let bar = ProgressBar::new(LEN);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let client = keel::Client::builder().base_url(&server.url("")).build()?;
        let progress_bar = bar.clone();
        client
            .get(&format!("/file/big?bytes={LEN}&etag=v1&reset_every={CUT}"))
            .download()
            .on_progress(move |p: Progress| {
                if let Some(total) = p.total {
                    progress_bar.set_length(total);
                }
                progress_bar.set_position(p.done);
            })
            .checksum(Pattern::default())
            .to_file(&path)
            .await
    })?;
    bar.finish_with_message(format!(
        "done: {} resumes, {} restarts",
        report.resumes, report.restarts
    ));
    println!(
        "{} bytes in {} ({} resumes)",
        std::fs::metadata(&path)?.len(),
        path.display(),
        report.resumes
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
