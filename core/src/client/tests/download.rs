//! Resumable downloads on virtual time: Range + If-Range after a mid-body failure, restarts
//! from zero, the length and checksum checks, and resuming a part file left on disk.

use std::io;
use std::sync::{Condvar, Mutex as StdMutex};
use std::task::Wake;

use super::*;
use crate::client::download::{Checksum, DownloadReport, Progress};
use crate::machine::download::Validator;

fn body_cut() -> Error {
    Error::new(ErrorKind::Body).with_stage(Stage::Body)
}

/// A 200 of `"v1"`, 10 bytes declared, cut after `hello`.
fn cut_v1() -> Reply {
    Reply::status(200)
        .header("etag", "\"v1\"")
        .header("content-length", "10")
        .chunk("hello")
        .fail_at(Duration::ZERO, body_cut())
}

/// The rest of `"v1"`, from byte 5.
fn rest_v1() -> Reply {
    Reply::status(206)
        .header("etag", "\"v1\"")
        .header("content-range", "bytes 5-9/10")
        .chunk("wor")
        .chunk("ld")
}

fn header(r: &Recorded, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// Records what a checksum is told; `finish` fails when `fail` is set.
#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    fail: bool,
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Checksum for Recorder {
    fn update(&mut self, bytes: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(bytes).into_owned());
    }
    fn reset(&mut self) {
        self.log.lock().unwrap().push("<reset>".into());
    }
    fn finish(&mut self) -> Result<(), crate::BoxError> {
        self.log.lock().unwrap().push("<finish>".into());
        if self.fail {
            Err("digest mismatch".into())
        } else {
            Ok(())
        }
    }
}

/// Every progress report: bytes done, total.
type ProgressLog = Arc<Mutex<Vec<(u64, Option<u64>)>>>;

fn progress_log() -> (ProgressLog, impl FnMut(Progress) + Send) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    (log, move |p: Progress| {
        sink.lock().unwrap().push((p.done, p.total))
    })
}

#[test]
fn a_mid_body_failure_resumes_with_range_and_if_range() {
    let c = client();
    let m = mock(&c);
    m.push(cut_v1());
    m.push(rest_v1());
    let (progress, on_progress) = progress_log();
    let body = m
        .run(c.get("file").download().on_progress(on_progress).to_vec())
        .unwrap();
    assert_eq!(body, b"helloworld");
    let log = m.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(header(&log[0], "range"), None);
    assert_eq!(
        header(&log[0], "accept-encoding").as_deref(),
        Some("identity")
    );
    assert_eq!(header(&log[1], "range").as_deref(), Some("bytes=5-"));
    assert_eq!(header(&log[1], "if-range").as_deref(), Some("\"v1\""));
    // The resume waited the first backoff.
    assert_eq!(log[1].at, millis(100));
    let t = Some(10);
    assert_eq!(
        *progress.lock().unwrap(),
        [(5, t), (5, t), (8, t), (10, t)],
        "a chunk, the resumed offset, two chunks"
    );
}

#[test]
fn a_200_answering_a_resume_restarts_from_zero_with_the_new_version_only() {
    let c = client();
    let m = mock(&c);
    m.push(cut_v1());
    m.push(
        Reply::status(200)
            .header("etag", "\"v2\"")
            .header("content-length", "8")
            .chunk("brand")
            .chunk("new"),
    );
    let sum = Recorder::default();
    let (progress, on_progress) = progress_log();
    let body = m
        .run(
            c.get("file")
                .download()
                .checksum(sum.clone())
                .on_progress(on_progress)
                .to_vec(),
        )
        .unwrap();
    assert_eq!(body, b"brandnew");
    assert_eq!(
        sum.events(),
        ["hello", "<reset>", "brand", "new", "<finish>"]
    );
    assert_eq!(
        *progress.lock().unwrap(),
        [(5, Some(10)), (0, Some(8)), (5, Some(8)), (8, Some(8))]
    );
}

#[test]
fn a_206_of_another_version_is_dropped_and_the_whole_body_asked_again() {
    let c = client();
    let m = mock(&c);
    m.push(cut_v1());
    m.push(
        Reply::status(206)
            .header("etag", "\"v2\"")
            .header("content-range", "bytes 5-9/10")
            .chunk("XXXXX"),
    );
    m.push(
        Reply::status(200)
            .header("etag", "\"v2\"")
            .header("content-length", "10")
            .chunk("0123456789"),
    );
    let body = m.run(c.get("file").download().to_vec()).unwrap();
    assert_eq!(body, b"0123456789");
    let log = m.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(header(&log[2], "range"), None, "asked for all of it");
    assert_eq!(header(&log[2], "if-range"), None);
}

#[test]
fn without_a_validator_a_failure_restarts_from_zero() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("etag", "W/\"weak\"")
            .header("content-length", "10")
            .chunk("hello")
            .fail_at(Duration::ZERO, body_cut()),
    );
    m.push(
        Reply::status(200)
            .header("content-length", "10")
            .chunk("helloworld"),
    );
    let body = m.run(c.get("file").download().to_vec()).unwrap();
    assert_eq!(body, b"helloworld");
    let log = m.requests();
    assert_eq!(header(&log[1], "range"), None, "no validator: no range");
    assert_eq!(header(&log[1], "if-range"), None);
}

#[test]
fn a_body_that_ends_short_of_its_length_is_resumed() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("etag", "\"v1\"")
            .header("content-length", "10")
            .chunk("hello"),
    );
    m.push(rest_v1());
    let body = m.run(c.get("file").download().to_vec()).unwrap();
    assert_eq!(body, b"helloworld");
    assert_eq!(
        m.requests()[1].headers["range"],
        "bytes=5-",
        "the short end was resumed"
    );
}

#[test]
fn a_body_longer_than_declared_is_a_protocol_error() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("content-length", "10")
            .chunk("helloworld!!"),
    );
    let err = m.run(c.get("file").download().to_vec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("longer than declared"), "{source}");
}

#[test]
fn a_resume_at_the_wrong_offset_is_refused() {
    let c = client();
    let m = mock(&c);
    m.push(cut_v1());
    m.push(
        Reply::status(206)
            .header("etag", "\"v1\"")
            .header("content-range", "bytes 4-9/10")
            .chunk("oworld"),
    );
    let err = m.run(c.get("file").download().to_vec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("resumed at byte 4"), "{source}");
}

#[test]
fn a_failed_checksum_fails_the_download_as_decode() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("content-length", "5")
            .chunk("hello"),
    );
    let sum = Recorder {
        fail: true,
        ..Recorder::default()
    };
    let err = m
        .run(c.get("file").download().checksum(sum).to_vec())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("digest mismatch"), "{source}");
}

/// An `AsyncWrite` into a shared buffer.
#[derive(Clone, Default)]
struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl futures_io::AsyncWrite for SharedWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A short write each time, to exercise the loop.
        let n = buf.len().min(3);
        self.0.lock().unwrap().extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn a_writer_gets_the_resumed_body() {
    let c = client();
    let m = mock(&c);
    m.push(cut_v1());
    m.push(rest_v1());
    let out = SharedWriter::default();
    let report = m
        .run(c.get("file").download().to_writer(out.clone()))
        .unwrap();
    assert_eq!(&*out.0.lock().unwrap(), b"helloworld");
    let expected = DownloadReport {
        bytes: 10,
        resumes: 1,
        restarts: 0,
        resumed_from: 0,
        validator: Some(Validator::ETag("\"v1\"".into())),
    };
    assert_eq!(report, expected);
}

#[test]
fn a_writer_that_would_need_a_restart_fails_clearly() {
    let c = client();
    let m = mock(&c);
    m.push(cut_v1());
    m.push(
        Reply::status(200)
            .header("etag", "\"v2\"")
            .chunk("0123456789"),
    );
    let out = SharedWriter::default();
    let err = m
        .run(c.get("file").download().to_writer(out.clone()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("can't be rewound"), "{source}");
    assert_eq!(
        &*out.0.lock().unwrap(),
        b"hello",
        "only the first version's prefix"
    );
}

#[test]
fn max_resumes_bounds_failures_in_a_row_without_progress() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("etag", "\"v1\"")
            .header("content-length", "10")
            .chunk("hel")
            .fail_at(Duration::ZERO, body_cut()),
    );
    for _ in 0..5 {
        m.push(Reply::fail(Error::new(ErrorKind::Connect)));
    }
    let err = m
        .run(c.get("file").download().max_resumes(2).to_vec())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert_eq!(m.request_count(), 3, "the first, then two resumes");
    // Backoffs of 100 ms and 200 ms.
    assert_eq!(m.elapsed(), millis(300));
}

#[test]
fn a_status_that_is_not_retryable_fails_at_once() {
    let c = client();
    let m = mock(&c);
    m.push(Reply::status(404));
    let err = m.run(c.get("file").download().to_vec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status(StatusCode::NOT_FOUND));
    assert_eq!(m.request_count(), 1);
}

#[test]
fn to_vec_refuses_a_body_over_the_client_limit() {
    let c = single_attempt()
        .base_url("http://h/")
        .max_body_size(8)
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("content-length", "10")
            .chunk("helloworld"),
    );
    m.push(Reply::status(200).chunk("hello").chunk("world"));
    let err = m.run(c.get("file").download().to_vec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BodyTooLarge { limit: 8 });
    let err = m.run(c.get("file").download().to_vec()).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::BodyTooLarge { limit: 8 },
        "undeclared"
    );
}

#[test]
fn the_request_deadline_bounds_the_whole_download() {
    let c = client();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("etag", "\"v1\"")
            .header("content-length", "10")
            .chunk("hel")
            .stall(),
    );
    let err = m
        .run(c.get("file").deadline(secs(5)).download().to_vec())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout(TimeoutPhase::Deadline));
    assert_eq!(m.elapsed(), secs(5));
}

#[test]
fn the_client_deadline_does_not_cut_a_long_download() {
    let c = single_attempt()
        .base_url("http://h/")
        .deadline(secs(10))
        .build()
        .unwrap();
    let m = mock(&c);
    m.push(
        Reply::status(200)
            .header("content-length", "6")
            .chunk("ab")
            .chunk_at(secs(8), "cd")
            .chunk_at(secs(16), "ef"),
    );
    let body = m.run(c.get("file").download().to_vec()).unwrap();
    assert_eq!(body, b"abcdef");
}

#[test]
fn a_download_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let c = client();
    let to_vec = c.get("file").download().to_vec();
    assert_send(&to_vec);
    let to_file = c.get("file").download().to_file("unused");
    assert_send(&to_file);
    let to_writer = c.get("file").download().to_writer(SharedWriter::default());
    assert_send(&to_writer);
}

// ---------------------------------------------------------------------------------------------
// Files

/// Wakes a parked test thread.
struct Signal {
    woken: StdMutex<bool>,
    cv: Condvar,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Like `MockState::run`, for futures that also wait on `blocking`'s thread pool: waits a
/// little real time for a wake before it moves virtual time, and gives up after 20 s.
fn run_with_files<F: Future>(m: &MockState, fut: F) -> F::Output {
    let signal = Arc::new(Signal {
        woken: StdMutex::new(true),
        cv: Condvar::new(),
    });
    let waker = std::task::Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(std::time::Instant::now() < give_up, "the download is stuck");
        let woken = {
            let guard = signal.woken.lock().unwrap();
            let (mut guard, _) = signal
                .cv
                .wait_timeout_while(guard, Duration::from_millis(100), |w| !*w)
                .unwrap();
            std::mem::replace(&mut *guard, false)
        };
        if woken {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        } else {
            m.clock.advance_to_next_sleep();
        }
    }
}

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let unique = format!(
            "keel-download-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], "");
        let dir = std::env::temp_dir().join(unique);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_part_file_left_by_a_failed_download_is_resumed_by_the_next() {
    let dir = TempDir::new("resume");
    let path = dir.0.join("out.bin");
    let part = dir.0.join("out.bin.part");
    let meta = dir.0.join("out.bin.part.meta");
    let c = client();
    let m = mock(&c);

    // The first process gets 5 bytes and dies (here: gives up at once).
    m.push(cut_v1());
    let err =
        run_with_files(m, c.get("file").download().max_resumes(0).to_file(&path)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body);
    assert_eq!(std::fs::read(&part).unwrap(), b"hello");
    let sidecar = std::fs::read_to_string(&meta).unwrap();
    assert!(
        sidecar.contains(r#""etag":"\"v1\"""#) && sidecar.contains("http://h/v1/file"),
        "{sidecar}"
    );
    assert!(!path.exists());

    // The next one continues from the part file.
    m.push(rest_v1());
    let sum = Recorder::default();
    let (progress, on_progress) = progress_log();
    let report = run_with_files(
        m,
        c.get("file")
            .download()
            .checksum(sum.clone())
            .on_progress(on_progress)
            .to_file(&path),
    )
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"helloworld");
    assert!(
        !part.exists() && !meta.exists(),
        "the part and its sidecar are gone"
    );
    assert_eq!(report.resumed_from, 5);
    assert_eq!(report.bytes, 10);
    assert_eq!(sum.events(), ["hello", "wor", "ld", "<finish>"]);
    assert_eq!(progress.lock().unwrap()[0], (5, Some(10)));
    let log = m.requests();
    assert_eq!(header(&log[1], "range").as_deref(), Some("bytes=5-"));
    assert_eq!(header(&log[1], "if-range").as_deref(), Some("\"v1\""));
}

#[test]
fn a_part_file_for_another_url_is_started_over_and_a_restart_truncates() {
    let dir = TempDir::new("other");
    let path = dir.0.join("out.bin");
    let part = dir.0.join("out.bin.part");
    std::fs::write(&part, b"stale bytes").unwrap();
    std::fs::write(
        dir.0.join("out.bin.part.meta"),
        br#"{"url":"http://elsewhere/","etag":"\"v1\""}"#,
    )
    .unwrap();
    let c = client();
    let m = mock(&c);
    m.push(cut_v1());
    m.push(
        Reply::status(200)
            .header("etag", "\"v2\"")
            .header("content-length", "3")
            .chunk("new"),
    );
    let report = run_with_files(m, c.get("file").download().to_file(&path)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!((report.resumed_from, report.restarts), (0, 1));
    assert_eq!(header(&m.requests()[0], "range"), None);
}
