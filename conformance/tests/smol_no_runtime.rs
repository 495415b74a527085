//! The shared suite on keel-smol with no async runtime: each case is polled on a plain thread
//! by `futures::executor::block_on` (async-io's reactor runs on its own thread).

keel_conformance::suite!(keel_smol::SmolTransport, keel_conformance::rt::NoRuntime);
