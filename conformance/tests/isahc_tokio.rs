//! The shared suite on keel-isahc, with the client on tokio's executor.

keel_conformance::suite!(keel_isahc::IsahcTransport, keel_conformance::rt::Tokio);
