//! The shared suite on keel-smol, with the client on tokio's multi-thread runtime (what
//! `#[tokio::main]` gives).

keel_conformance::suite!(
    keel_smol::SmolTransport,
    keel_conformance::rt::TokioMultiThread
);
