//! The shared suite on keel-smol, with the client on tokio's current-thread runtime.

keel_conformance::suite!(keel_smol::SmolTransport, keel_conformance::rt::Tokio);
