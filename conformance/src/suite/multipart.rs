//! `multipart/form-data` uploads over each backend, parsed on the server by `multer`: a small
//! form read back field by field, and a 100 MiB file streamed with bounded memory and sent
//! again whole after the server drops the first upload halfway.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::multipart::{Form, Part};
use keel_core::{Backend, Jitter, RetryPolicy};
use serde_json::Value;

use super::{CaseResult, Cx, Failure, Outcome};
use crate::ensure;

/// The big upload's size.
const BIG: u64 = 100 * 1024 * 1024;

/// How much of the first big upload the server reads before it drops the connection.
const ABORT_AFTER: u64 = 16 * 1024 * 1024;

/// The most the process's resident memory may grow while the big form is sent (twice): the
/// file is never held whole, so this is what the backend, the server and the parser buffer.
const RSS_GROWTH_LIMIT: u64 = 48 * 1024 * 1024;

/// A folder in the temp dir, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<Self, Failure> {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "keel-conformance-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn field(json: &Value, index: usize) -> &Value {
    &json["fields"][index]
}

/// A form of text, file and bytes parts (names with a quote and non-ASCII letters) reaches
/// the server's parser intact, with `Content-Length`; a form with a reader part of unknown
/// length arrives whole too, without one.
pub async fn multipart_form_round_trips<T: Backend>(cx: Cx<T>) -> CaseResult {
    let dir = TempDir::new("form")?;
    let notes = dir.path("notes.txt");
    let contents = "line one\nline two, with ünïcode\n".repeat(100);
    std::fs::write(&notes, &contents)?;
    let form = Form::new()
        .text("title", "Quarterly report")
        .text("say \"hi\"", "héllo")
        .file("notes", &notes)
        .await?
        .part(
            "blob",
            Part::bytes(vec![0u8, 1, 2, 255])
                .file_name("blob.bin")
                .content_type("application/octet-stream")
                .header("x-part-id", "42"),
        );
    let length = form
        .content_length()
        .ok_or("a form of known parts has a length")?;
    let client = cx.client()?;
    let json: Value = client
        .post("/multipart/echo")
        .multipart(form)
        .send()
        .await?
        .error_for_status()
        .await?
        .json()
        .await?;
    let fields = json["fields"].as_array().ok_or("no fields")?;
    ensure!(fields.len() == 4, "{} fields: {json}", fields.len());
    ensure!(
        json["framing"]["content_length"].as_str() == Some(length.to_string().as_str()),
        "Content-Length {} for a form of {length} bytes",
        json["framing"]["content_length"]
    );
    let title = field(&json, 0);
    ensure!(
        title["name"] == "title" && title["text"] == "Quarterly report",
        "first field {title}"
    );
    ensure!(
        title["file_name"].is_null() && title["content_type"].is_null(),
        "a text part came with a file name or type: {title}"
    );
    let quoted = field(&json, 1);
    // Browsers' escaping, which `multer` (like most servers) reads as it is.
    ensure!(
        quoted["name"] == "say %22hi%22" && quoted["text"] == "héllo",
        "second field {quoted}"
    );
    let file = field(&json, 2);
    ensure!(
        file["name"] == "notes"
            && file["file_name"] == "notes.txt"
            && file["content_type"] == "text/plain"
            && file["text"] == contents.as_str()
            && file["sha256"] == sha256_hex(contents.as_bytes()),
        "file field {}",
        file["file_name"]
    );
    let blob = field(&json, 3);
    ensure!(
        blob["file_name"] == "blob.bin"
            && blob["content_type"] == "application/octet-stream"
            && blob["headers"]["x-part-id"] == "42"
            && blob["size"] == 4
            && blob["sha256"] == sha256_hex(&[0, 1, 2, 255]),
        "bytes field {blob}"
    );

    // A reader of unknown length: sent chunked (HTTP/1.1) with no Content-Length.
    let reader = smol::io::Cursor::new(b"from a reader".to_vec());
    let form = Form::new()
        .text("a", "1")
        .part("r", Part::reader(reader).file_name("r.txt"));
    let json: Value = client
        .post("/multipart/echo")
        .multipart(form)
        .send()
        .await?
        .error_for_status()
        .await?
        .json()
        .await?;
    ensure!(
        json["framing"]["content_length"].is_null(),
        "a form of unknown length said Content-Length {}",
        json["framing"]["content_length"]
    );
    ensure!(
        field(&json, 1)["text"] == "from a reader" && field(&json, 0)["text"] == "1",
        "reader form {json}"
    );
    Ok(Outcome::Pass)
}

/// Writes `BIG` bytes to `path` in 1 MiB chunks (each MiB numbered, so a reordered or
/// repeated chunk changes the digest) and returns their SHA-256.
fn write_big_file(path: &Path) -> Result<String, Failure> {
    let mut chunk: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for mib in 0..BIG / (1024 * 1024) {
        chunk[..8].copy_from_slice(&mib.to_le_bytes());
        sha.update(&chunk);
        file.write_all(&chunk)?;
    }
    file.into_inner().map_err(|e| e.to_string())?.sync_all()?;
    Ok(hex(sha.finish().as_ref()))
}

/// The process's resident memory, in bytes (Linux only).
fn resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples [`resident`] every 5 ms on a thread of its own until dropped; keeps the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(resident().unwrap_or(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::Builder::new()
                .name("rss-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(now) = resident() {
                            peak.fetch_max(now, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
                .ok()
        };
        Self { stop, peak, thread }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A 100 MiB file sent in a form: the server drops the connection 16 MiB into the first
/// upload, the retry reopens the file and sends it whole, and the server's SHA-256 of what
/// it parsed is the file's. The process's resident memory grows by far less than the file
/// (sampled throughout; the server runs in the same process, so its buffers count too).
pub async fn multipart_100_mib_upload_retried_after_a_reset<T: Backend>(cx: Cx<T>) -> CaseResult {
    let dir = TempDir::new("upload")?;
    let path = dir.path("big.bin");
    let started = Instant::now();
    let expected = write_big_file(&path)?;
    let written = started.elapsed();

    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .base_delay(Duration::from_millis(20))
        .jitter(Jitter::None)
        .build()?;
    let client = cx
        .builder()
        .retry_policy(policy)
        .deadline(Duration::from_secs(50))
        .build()?;
    let form = Form::new()
        .text("name", "big.bin")
        .part("file", Part::file(&path).await?);
    ensure!(form.is_rebuildable(), "a form of a file is rebuildable");
    let length = form.content_length().ok_or("a file form has a length")?;
    let route = format!("/multipart/digest/big?abort_first_after={ABORT_AFTER}");

    let before = resident();
    let sampler = RssSampler::start();
    let sending = Instant::now();
    let response = client
        .post(&route)
        .idempotent(true)
        .multipart(form)
        .send()
        .await?
        .error_for_status()
        .await?;
    let json: Value = response.json().await?;
    let sent = sending.elapsed();
    let peak = sampler.peak();
    drop(sampler);

    let requests = cx.server.requests_to("/multipart/digest/big");
    ensure!(
        requests == 2 && json["attempt"] == 2,
        "{requests} requests, answered on attempt {}",
        json["attempt"]
    );
    ensure!(
        json["framing"]["content_length"].as_str() == Some(length.to_string().as_str()),
        "Content-Length {} for a form of {length} bytes",
        json["framing"]["content_length"]
    );
    let file = field(&json, 1);
    ensure!(
        file["name"] == "file" && file["file_name"] == "big.bin" && file["size"] == BIG,
        "file field {file}"
    );
    ensure!(
        file["sha256"] == expected.as_str(),
        "the server's SHA-256 {} is not the file's {expected}",
        file["sha256"]
    );
    if let Some(before) = before {
        let growth = peak.saturating_sub(before);
        println!(
            "{}: 100 MiB upload: file written in {written:?}, sent (twice) in {sent:?}, \
             resident memory grew by {:.1} MiB at most",
            T::NAME,
            growth as f64 / (1024.0 * 1024.0)
        );
        ensure!(
            growth < RSS_GROWTH_LIMIT,
            "resident memory grew by {growth} bytes while sending a 100 MiB file"
        );
    }
    Ok(Outcome::Pass)
}
