//! The blocking client's cases on keel-smol, called from a plain thread and from inside
//! each async runtime.

keel_conformance::blocking_suite!(keel_smol::SmolTransport);
