//! Virtual time for the crate's unit tests: the public one of [`crate::mock`], on a clock that
//! moves only when a test (or [`run`]) moves it.

pub(crate) use crate::mock::clock::{run, Clock, VirtualSleep, VirtualTimer};
