//! The shared suite on keel-smol, with the client on async-std's executor.

keel_conformance::suite!(keel_smol::SmolTransport, keel_conformance::rt::AsyncStd);
