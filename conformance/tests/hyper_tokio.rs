//! The shared suite on keel-hyper, with the client on tokio's current-thread runtime.

keel_conformance::suite!(keel_hyper::HyperTransport, keel_conformance::rt::Tokio);
