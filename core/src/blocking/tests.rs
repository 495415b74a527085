//! The blocking client over in-memory transports: the driver, lending, panics, shutdown, and
//! the body read through `Read`. The real backends and servers are in keel-conformance.

use std::io::{self, BufRead as _, Read as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;

use super::{Client, Driver, Runtime};
use crate::{
    Backend, Body, BoxFuture, Capabilities, Error, ErrorKind, ResponseBody, Sleep, Timer,
    Transport, TransportConfig,
};

#[derive(Debug)]
struct NeverSleeps;

impl Timer for NeverSleeps {
    fn sleep_until(&self, _: Instant) -> Sleep {
        Box::pin(std::future::pending())
    }
}

/// Answers by path:
/// - `/chunks`: the body `one`, `two`, `three` in three chunks;
/// - `/fail-mid-body`: `start`, then a connection failure;
/// - `/panic`: panics in the send future;
/// - `/echo-length`: the length of the request body it read;
/// - `/redirect`: a 302 to `/after-redirect`;
/// - anything else: the path.
macro_rules! canned_backend {
    ($name:ident, $ended:ident, $run:expr) => {
        static $ended: AtomicUsize = AtomicUsize::new(0);

        #[derive(Debug)]
        struct $name(Arc<dyn Timer>);

        impl Transport for $name {
            fn send(
                &self,
                req: http::Request<Body>,
            ) -> BoxFuture<Result<http::Response<ResponseBody>, Error>> {
                Box::pin(answer(req))
            }
            fn timer(&self) -> &Arc<dyn Timer> {
                &self.0
            }
        }

        impl Backend for $name {
            const NAME: &'static str = "canned";
            fn capabilities() -> Capabilities {
                Capabilities::none()
            }
            fn from_config(_: &TransportConfig) -> Result<Self, Error> {
                Ok($name(Arc::new(NeverSleeps)))
            }
        }

        impl Runtime for $name {
            fn run(driver: Driver) -> io::Result<()> {
                let run: fn(Driver) -> io::Result<()> = $run;
                let result = run(driver);
                $ended.fetch_add(1, Ordering::SeqCst);
                result
            }
        }
    };
}

fn block_on(driver: Driver) -> io::Result<()> {
    futures_executor::block_on(driver);
    Ok(())
}

canned_backend!(Canned, CANNED_ENDED, block_on);
canned_backend!(Counted, COUNTED_ENDED, block_on);
canned_backend!(NoRuntime, NO_RUNTIME_ENDED, |_| Err(io::Error::other(
    "no runtime here"
)));

async fn answer(req: http::Request<Body>) -> Result<http::Response<ResponseBody>, Error> {
    let chunks = |parts: Vec<Result<&'static str, Error>>| {
        let frames = parts
            .into_iter()
            .map(|p| p.map(|s| http_body::Frame::data(Bytes::from_static(s.as_bytes()))));
        ResponseBody::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    };
    let body = match req.uri().path() {
        "/chunks" => chunks(vec![Ok("one"), Ok("two"), Ok("three")]),
        "/fail-mid-body" => chunks(vec![
            Ok("start"),
            Err(Error::new(ErrorKind::Body).with_source("connection reset")),
        ]),
        "/panic" => panic!("the transport panicked"),
        "/echo-length" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(|e| Error::new(ErrorKind::Body).with_source(e))?;
            ResponseBody::full(body.to_bytes().len().to_string())
        }
        "/redirect" => {
            let mut response = http::Response::new(ResponseBody::empty());
            *response.status_mut() = http::StatusCode::FOUND;
            response.headers_mut().insert(
                http::header::LOCATION,
                http::HeaderValue::from_static("/after-redirect"),
            );
            return Ok(response);
        }
        path => ResponseBody::full(path.to_owned()),
    };
    Ok(http::Response::new(body))
}

fn client<T: Runtime>() -> Client<T> {
    Client::<T>::builder()
        .base_url("http://canned.test")
        .build()
        .unwrap()
}

/// Waits up to 5 s for `cond`.
fn eventually(cond: impl Fn() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[test]
fn a_call_runs_on_the_driver_and_answers() {
    let client = client::<Canned>();
    let response = client.get("/hello").send().unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.url().path(), "/hello");
    assert_eq!(response.text().unwrap(), "/hello");
    let echoed: String = client
        .post("/x")
        .json(&"ignored")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(echoed, "/x");
}

#[test]
fn read_hands_out_the_body_chunk_by_chunk() {
    let client = client::<Canned>();
    let mut response = client.get("/chunks").send().unwrap();
    let mut two = [0u8; 2];
    assert_eq!(response.read(&mut two).unwrap(), 2);
    assert_eq!(&two, b"on");
    // The rest of the first chunk, then the next ones whole.
    assert_eq!(response.chunk().unwrap().as_deref(), Some(&b"e"[..]));
    assert_eq!(response.chunk().unwrap().as_deref(), Some(&b"two"[..]));
    let mut rest = String::new();
    response.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "three");
    assert_eq!(response.read(&mut two).unwrap(), 0);
    assert_eq!(response.chunk().unwrap(), None);
}

#[test]
fn bytes_after_a_partial_read_returns_the_rest() {
    let client = client::<Canned>();
    let mut response = client.get("/chunks").send().unwrap();
    let mut o = [0u8; 1];
    response.read_exact(&mut o).unwrap();
    assert_eq!(&response.bytes().unwrap()[..], b"netwothree");

    let lines: Vec<String> = client
        .get("/chunks")
        .send()
        .unwrap()
        .lines()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lines, ["onetwothree"]);
}

#[test]
fn a_read_error_is_an_io_error_around_the_keel_error_and_stays() {
    let client = client::<Canned>();
    let mut response = client.get("/fail-mid-body").send().unwrap();
    let mut body = Vec::new();
    let err = response.read_to_end(&mut body).unwrap_err();
    assert_eq!(body, b"start");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    let keel = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .expect("the keel error is the inner error");
    assert_eq!(keel.kind(), ErrorKind::Body);
    // Every read after it says the same.
    let again = response.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::ConnectionAborted);
    assert_eq!(response.chunk().unwrap_err().kind(), ErrorKind::Body);
}

#[test]
fn a_panic_on_the_driver_resumes_on_the_caller_and_the_driver_goes_on() {
    let client = client::<Canned>();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = client.get("/panic").send();
    }));
    let payload = caught.expect_err("the panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the transport panicked")
    );
    assert_eq!(
        client.get("/after").send().unwrap().text().unwrap(),
        "/after"
    );
}

#[test]
fn the_driver_stops_with_the_last_handle_and_not_before() {
    let client = client::<Counted>();
    let ended = || COUNTED_ENDED.load(Ordering::SeqCst);
    let before = ended();
    let clone = client.clone();
    let mut response = clone.get("/chunks").send().unwrap();
    drop(client);
    drop(clone);
    // The response keeps the driver: its body is still read.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ended(), before);
    assert_eq!(response.chunk().unwrap().as_deref(), Some(&b"one"[..]));
    drop(response);
    assert!(
        eventually(|| ended() == before + 1),
        "the driver still runs"
    );
}

#[test]
fn a_call_from_the_driver_thread_fails_instead_of_waiting_for_itself() {
    use std::sync::{mpsc, Mutex};

    // A redirect hook that calls the client it belongs to, from the driver thread.
    let slot: Arc<Mutex<Option<Client<Canned>>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let hook_slot = slot.clone();
    let client = Client::<Canned>::builder()
        .base_url("http://canned.test")
        .on_redirect(move |_| {
            let nested = hook_slot.lock().unwrap().clone();
            if let Some(client) = nested {
                let _ = tx.send(client.get("/nested").send().map(|_| ()));
            }
        })
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(client.clone());
    let response = client.get("/redirect").send().unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let nested = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(nested.unwrap_err().kind(), ErrorKind::InvalidRequest);
    // The hook holds a clone of the client: break the cycle.
    slot.lock().unwrap().take();
}

#[test]
fn a_runtime_that_fails_to_start_fails_the_build() {
    let err = Client::<NoRuntime>::builder().build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.setting(), Some("runtime"));
    assert_eq!(NO_RUNTIME_ENDED.load(Ordering::SeqCst), 1);
}

#[test]
fn a_settings_mistake_fails_the_build_before_a_thread_starts() {
    let err = Client::<Canned>::builder()
        .max_in_flight(0)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), Some("max_in_flight"));
}

#[test]
fn a_body_read_from_a_reader_is_sent_whole() {
    let client = client::<Canned>();
    let payload = vec![7u8; 1_000_003];
    let sent = client
        .post("/echo-length")
        .body_reader(io::Cursor::new(payload))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(sent, "1000003");
}

#[test]
fn a_multipart_form_with_a_file_is_sent_whole() {
    use crate::multipart::{Form, Part};

    let path = std::env::temp_dir().join(format!("keel-blocking-form-{}", std::process::id()));
    std::fs::write(&path, vec![3u8; 300_001]).unwrap();
    let form = Form::new()
        .text("a", "1")
        .part("f", Part::blocking_file(&path).unwrap());
    let length = form.content_length().unwrap();
    let sent = client::<Canned>()
        .post("/echo-length")
        .multipart(form)
        .send()
        .unwrap()
        .text()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(sent, length.to_string());
}

#[test]
fn a_listing_is_an_iterator() {
    use crate::machine::paginate::Strategy;

    let client = client::<Canned>();
    // One page: a body that is not a JSON array is an error, given once.
    let mut items = client
        .get("/not-json")
        .paginate::<u32>(Strategy::link_header());
    let first = items.next().expect("one item: the error");
    assert_eq!(first.unwrap_err().kind(), ErrorKind::Decode);
    assert!(items.next().is_none());
    assert!(items.checkpoint().is_some());
}

/// The blocking builder has every setting of the async one.
#[test]
fn the_builder_forwards_every_async_setting() {
    let names = |source: &str, start: &str| -> Vec<String> {
        let block = &source[source.find(start).expect("the impl block")..];
        let end = block.find("\n}\n").unwrap_or(block.len());
        block[..end]
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub fn "))
            .map(|l| l.split(['(', '<']).next().unwrap_or_default().to_owned())
            .collect()
    };
    let async_names = names(
        include_str!("../client/mod.rs"),
        "impl<T: Backend> ClientBuilder<T> {",
    );
    let source = include_str!("client.rs");
    let forwarded: Vec<String> = names(source, "impl<T: Runtime> ClientBuilder<T> {")
        .into_iter()
        .chain(
            source
                .lines()
                .filter_map(|l| l.trim().strip_prefix("fn "))
                .map(|l| l.split('(').next().unwrap_or_default().to_owned()),
        )
        .collect();
    assert!(async_names.len() > 30, "found {async_names:?}");
    let missing: Vec<&String> = async_names
        .iter()
        // Building on another transport is the async client's business.
        .filter(|n| !n.starts_with("build_") && !forwarded.contains(n))
        .collect();
    assert!(missing.is_empty(), "not forwarded: {missing:?}");
}
