//! The shared suite on keel-isahc with no async runtime: each case is polled on a plain thread
//! by `futures::executor::block_on` (libcurl runs on isahc's agent thread, timers on async-io's).

keel_conformance::suite!(keel_isahc::IsahcTransport, keel_conformance::rt::NoRuntime);
