//! Issue 17: keel-smol inside tokio's current-thread `block_on` busy-looped while it waited.
//!
//! In release builds, tokio (1.54) gives the future in its current-thread `block_on` a waker
//! whose clones don't `will_wake` it, and async-io wakes a socket's kept waker whenever a poll
//! brings one that doesn't `will_wake` it: once two requests were in flight in that future,
//! every poll woke it again (keel-smol spent 213 CPU-µs a request there, 17 on smol). keel
//! polls async-io through `keel_core::StableWaker`.
//!
//! The executor here gives every poll a waker of a new identity, as tokio's release build
//! does, so the case fails the same way in a debug build: two requests in one future, answered
//! after 100 ms and 400 ms, were polled thousands of times between the two answers.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::Thread;
use std::time::Duration;

use futures_util::task::ArcWake;
use keel_conformance::server::TestServer;

/// Wakes the thread that polls, through a waker made anew for every poll.
struct Unpark {
    thread: Thread,
    woken: Arc<AtomicBool>,
}

impl ArcWake for Unpark {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::SeqCst);
        arc_self.thread.unpark();
    }
}

/// Runs `fut` on this thread with a waker of a new identity at every poll; returns its output
/// and how many times it was polled.
fn block_on_with_changing_wakers<F: Future>(fut: F) -> (F::Output, usize) {
    let woken = Arc::new(AtomicBool::new(true));
    let mut fut = pin!(fut);
    let mut polls = 0;
    loop {
        if woken.swap(false, Ordering::SeqCst) {
            polls += 1;
            let waker = futures_util::task::waker(Arc::new(Unpark {
                thread: std::thread::current(),
                woken: woken.clone(),
            }));
            if let Poll::Ready(out) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                return (out, polls);
            }
        } else {
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

#[test]
fn keel_smol_waits_without_spinning_when_each_poll_brings_a_new_waker() {
    let server = TestServer::start().expect("the test server starts");
    let client = keel_core::Client::<keel_smol::SmolTransport>::builder()
        .base_url(&server.url(""))
        .deadline(Duration::from_secs(20))
        .build()
        .expect("a client");
    let get = |path: &'static str| {
        let client = &client;
        async move { client.get(path).send().await?.bytes().await }
    };
    let both = futures_util::future::join(get("/delay/100"), get("/delay/400"));
    let ((first, second), polls) = block_on_with_changing_wakers(both);
    first.expect("the first delayed request succeeds");
    second.expect("the second delayed request succeeds");
    // Connects, writes, heads, bodies and a few spurious wake-ups.
    assert!(polls < 50, "polled {polls} times in 400 ms");
}
