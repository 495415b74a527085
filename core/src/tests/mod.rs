//! Helpers shared by the crate's unit tests.
//!
//! The clock read lives here, outside `machine/`, so that "nothing under `machine/` reads a
//! clock" stays checkable with a grep: the machines' tests take their instants from here.

use std::time::Instant;

pub(crate) mod clock;

/// The one clock read of a test; every other instant is an offset from it.
pub(crate) fn epoch() -> Instant {
    Instant::now()
}
