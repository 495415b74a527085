//! Rate limits: pacing our own requests, and honouring the quotas a server announces.
//!
//! Two halves, both plain data:
//!
//! - [`Gcra`] paces requests to a [`RateLimit`] the client sets for itself (per origin, or per
//!   client): "at most 10 requests per second, in bursts of up to 5". It is the generic cell
//!   rate algorithm: one instant of state, no timer, no queue. [`Gcra::acquire`] books the
//!   earliest slot at which one more request conforms, so callers that arrive together queue
//!   up one behind the other instead of all going at once.
//! - [`quota_hold`] reads what a response says about the server's quota (`Retry-After` on a
//!   `429` or `503`, the IETF `RateLimit` and `RateLimit-Policy` fields, or the common
//!   `X-RateLimit-Remaining` and `X-RateLimit-Reset`) and, when the quota is spent, says how
//!   long to hold further requests. [`jittered`] spreads the end of the hold so that clients
//!   held together don't all come back together.
//!
//! Nothing here performs I/O, reads a clock or owns randomness: the driver passes `now` (and
//! `now_system` for the wall clock), the jitter comes from a seed, and the same inputs always
//! give the same answers. No method panics, whatever the settings accepted by [`RateLimit`] and
//! whatever bytes a server sends.
//!
//! # What the driver does
//!
//! For each request, with the limiter of its origin (behind whatever lock the driver keeps
//! the per-origin state in, held only for the call):
//!
//! 1. `limiter.acquire(now, deadline)`:
//!    - `Ok(at)`: release the lock, sleep until `at` (no sleep when `at == now`) and send. If
//!      the caller goes away while sleeping, `limiter.cancel(at)` gives the slot back.
//!    - `Err(at)`: the request could not go before its deadline; fail it at once (a timeout)
//!      instead of sleeping for nothing.
//! 2. When the response head arrives, `quota_hold(status, headers, now_system)`: on
//!    `Some(hold)`, hold every request to the origin (or to `hold.partition`, if the driver
//!    keeps holds per partition) until `now + jittered(hold.delay, spread, seed)`.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use http::{HeaderMap, StatusCode};
//! use keel_core::machine::rate::{jittered, quota_hold, Gcra, RateLimit};
//!
//! // 2 requests per second, in bursts of up to 3.
//! let limit = RateLimit::per_second(2)?.burst(3)?;
//! let mut limiter = Gcra::new(limit);
//! let t0 = Instant::now(); // the driver's timer; a virtual clock would do as well
//! let ms = Duration::from_millis;
//!
//! // Three callers arriving together go at once; the next ones queue up 500 ms apart.
//! for _ in 0..3 {
//!     assert_eq!(limiter.acquire(t0, None), Ok(t0));
//! }
//! assert_eq!(limiter.acquire(t0, None), Ok(t0 + ms(500)));
//! assert_eq!(limiter.acquire(t0, None), Ok(t0 + ms(1_000)));
//! // One whose deadline comes first is refused, and books nothing.
//! assert_eq!(limiter.acquire(t0, Some(t0 + ms(1_200))), Err(t0 + ms(1_500)));
//! // The caller booked at 1 s went away: its slot is given back.
//! limiter.cancel(t0 + ms(1_000));
//! assert_eq!(limiter.acquire(t0 + ms(100), None), Ok(t0 + ms(1_000)));
//!
//! // The server says the quota is spent, for 30 more seconds.
//! let mut headers = HeaderMap::new();
//! headers.insert("ratelimit", r#""default";r=0;t=30"#.parse().unwrap());
//! headers.insert("ratelimit-policy", r#""default";q=100;w=60"#.parse().unwrap());
//! let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let hold = quota_hold(StatusCode::OK, &headers, wall).unwrap();
//! assert_eq!(hold.delay, Duration::from_secs(30));
//! assert_eq!(hold.partition, None);
//! // Come back between 30 and 31 s from now, at a point chosen by the seed.
//! let wait = jittered(hold.delay, Duration::from_secs(1), 42);
//! assert!(wait >= hold.delay && wait <= hold.delay + Duration::from_secs(1));
//! # Ok::<(), keel_core::machine::rate::InvalidRateConfig>(())
//! ```

mod gcra;
mod quota;
mod sf;

pub use gcra::{Gcra, InvalidRateConfig, RateLimit};
pub use quota::{jittered, quota_hold, QuotaHold};
