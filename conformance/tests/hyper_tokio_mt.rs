//! The shared suite on keel-hyper, with the client on tokio's multi-thread runtime (what
//! `#[tokio::main]` gives): hyper's connection tasks run on the runtime's workers.

keel_conformance::suite!(
    keel_hyper::HyperTransport,
    keel_conformance::rt::TokioMultiThread
);
