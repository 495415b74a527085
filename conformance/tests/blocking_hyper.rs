//! The blocking client's cases on keel-hyper, called from a plain thread and from inside
//! each async runtime.

keel_conformance::blocking_suite!(keel_hyper::HyperTransport);
