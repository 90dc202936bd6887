//! The time the outbox schedules by: retry times, leases and the
//! connectivity record are Unix milliseconds read from a [`Clock`].
//!
//! Production uses [`SystemClock`] (the wall clock, which other processes
//! on this host read too: a lease is a promise to them, so it must be in
//! their time). Tests swap in a clock they drive: [`ManualClock`] here, or
//! the sync crate's clock that follows tokio's paused time, so backoff,
//! lease and `Retry-After` decisions are asserted exactly, without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of "now" in Unix milliseconds. `Send + Sync`: one clock is
/// shared by an outbox and the actor delivering from it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The wall clock ([`crate::host::now_ms`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::host::now_ms()
    }
}

/// A clock that moves only when told to: for tests of what happens at an
/// exact instant (a retry due, a lease running out).
#[derive(Debug)]
pub struct ManualClock {
    // An atomic, not a Mutex: readers never wait, and a test moving the
    // clock from one thread while an outbox reads it from another sees
    // either the old or the new time, never a torn one.
    now: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            now: AtomicI64::new(start_ms),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}
