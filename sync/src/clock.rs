//! A [`Clock`] that follows tokio's time, for tests on paused time
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`): the
//! outbox's retry times and leases then move with the timers the actor
//! sleeps on, so a test asserts them exactly without sleeping.

use sparkwing_outbox::clock::Clock;
use tokio::time::Instant;

/// The wall clock when made, plus the tokio time elapsed since. Under
/// `tokio::time::pause` it stands still until time is advanced (by hand or
/// by the runtime auto-advancing to its next timer).
#[derive(Debug)]
pub struct TokioClock {
    origin_ms: i64,
    origin: Instant,
}

impl TokioClock {
    /// A clock reading the wall clock now, from then on moving with tokio.
    pub fn new() -> Self {
        TokioClock {
            origin_ms: sparkwing_outbox::host::now_ms(),
            origin: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.origin_ms + Instant::now().duration_since(self.origin).as_millis() as i64
    }
}
