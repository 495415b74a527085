//! The shared suite on keel-isahc, with the client on async-std's executor.

keel_conformance::suite!(keel_isahc::IsahcTransport, keel_conformance::rt::AsyncStd);
