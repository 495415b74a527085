//! Resumable downloads over each backend, against a server that cuts its bodies on purpose
//! and honours `Range` + `If-Range`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use keel_core::{Backend, BoxError, Checksum};

use super::{CaseResult, Cx, Outcome};
use crate::ensure;

/// The period of the server's byte pattern (`/file` and `/bytes`).
const PERIOD: usize = 251;

/// Checks that the body is the server's pattern for a version, byte for byte, and its
/// length: byte `i` must be `(i + shift) % 251`.
struct PatternCheck {
    expected_len: u64,
    shift: u64,
    pos: u64,
    first_bad: Option<u64>,
    table: Vec<u8>,
}

impl PatternCheck {
    fn new(expected_len: u64, shift: u64) -> Self {
        Self {
            expected_len,
            shift,
            pos: 0,
            first_bad: None,
            table: (0..PERIOD + 64 * 1024)
                .map(|i| (i % PERIOD) as u8)
                .collect(),
        }
    }
}

impl Checksum for PatternCheck {
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let start = ((self.pos + self.shift) % PERIOD as u64) as usize;
            let n = bytes.len().min(self.table.len() - start);
            if self.first_bad.is_none() && bytes[..n] != self.table[start..start + n] {
                self.first_bad = Some(self.pos);
            }
            self.pos += n as u64;
            bytes = &bytes[n..];
        }
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.first_bad = None;
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        if let Some(at) = self.first_bad {
            return Err(format!("wrong bytes from byte {at} on").into());
        }
        if self.pos != self.expected_len {
            return Err(format!("{} bytes, {} expected", self.pos, self.expected_len).into());
        }
        Ok(())
    }
}

/// A writer that counts and drops what it is given.
#[derive(Default)]
struct Discard(u64);

impl futures_io::AsyncWrite for Discard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0 += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A 100 MiB download whose responses are each reset after 30 MiB completes after three
/// resumes with the right bytes: each resume asks for `Range: bytes=N-` with `If-Range`,
/// and the server's 206s are appended (the pattern check would see a splice or a gap).
pub async fn download_resumes_a_100_mib_body_cut_three_times<T: Backend>(cx: Cx<T>) -> CaseResult {
    const LEN: u64 = 100 * 1024 * 1024;
    const CUT: u64 = 30 * 1024 * 1024;
    let client = cx.builder().build()?;
    let mut out = Discard::default();
    let report = client
        .get(&format!("/file/big?bytes={LEN}&etag=big&reset_every={CUT}"))
        .download()
        .checksum(PatternCheck::new(LEN, 0))
        .to_writer(&mut out)
        .await?;
    ensure!(out.0 == LEN, "{} bytes written", out.0);
    ensure!(report.bytes == LEN, "report says {} bytes", report.bytes);
    ensure!(
        (report.resumes, report.restarts) == (3, 0),
        "{} resumes, {} restarts",
        report.resumes,
        report.restarts
    );
    let sent = cx.server.requests_to("/file/big");
    ensure!(sent == 4, "{sent} requests");
    Ok(Outcome::Pass)
}

/// When the resource changes between a cut and the resume, `If-Range` gets the whole new
/// version: the download restarts from zero and the file holds the new version only
/// (checked byte for byte), after more cuts that are resumed from the new version.
pub async fn download_restarts_from_zero_when_the_etag_changes<T: Backend>(
    cx: Cx<T>,
) -> CaseResult {
    const LEN: u64 = 4 * 1024 * 1024;
    const CUT: u64 = 1024 * 1024;
    let dir = std::env::temp_dir().join(format!(
        "keel-conformance-download-{}-{}",
        std::process::id(),
        T::NAME
    ));
    std::fs::create_dir_all(&dir)?;
    let path =
        dir.join(format!("doc-{:?}.bin", std::thread::current().id()).replace(['(', ')'], ""));
    let client = cx.builder().build()?;
    let result = client
        .get(&format!(
            "/file/doc?bytes={LEN}&etag=doc&reset_every={CUT}&etag_changes_after=1"
        ))
        .download()
        .checksum(PatternCheck::new(LEN, 7))
        .to_file(&path)
        .await;
    let written = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    let report = result?;
    let written = written?;
    ensure!(
        written.len() as u64 == LEN,
        "{} bytes on disk",
        written.len()
    );
    ensure!(
        written
            .iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == (i + 7) % PERIOD),
        "the file is not the second version"
    );
    ensure!(
        report.restarts == 1,
        "{} restarts ({} resumes)",
        report.restarts,
        report.resumes
    );
    ensure!(
        report.validator.as_ref().map(|v| v.as_str()) == Some("\"doc-2\""),
        "validator {:?}",
        report.validator
    );
    Ok(Outcome::Pass)
}
