//! The shared suite on keel-smol, with the client on smol's executor.

keel_conformance::suite!(keel_smol::SmolTransport, keel_conformance::rt::Smol);
