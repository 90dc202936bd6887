//! Decorrelated-jitter backoff ("Exponential Backoff And Jitter", AWS
//! Architecture Blog): each delay is drawn uniformly from
//! `[base, previous * 3]`, capped. Consecutive retries spread out quickly
//! and many clients retrying at once do not synchronise.
//!
//! It is a [`backon::BackoffBuilder`], so the same policy drives in-process
//! retries with `backon::Retryable`. The outbox persists the last delay of
//! each entry and resumes the sequence from it with [`DecorrelatedJitter::resume`].

use std::time::Duration;

use backon::BackoffBuilder;

/// The policy: where delays start, where they stop growing, how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecorrelatedJitterBuilder {
    pub base: Duration,
    pub cap: Duration,
    pub max_times: Option<usize>,
    /// A fixed seed for the jitter, so a schedule can be replayed exactly
    /// (tests, simulations); `None` (the default) draws one from the OS for
    /// every sequence, so clients retrying together spread out.
    pub seed: Option<u64>,
}

impl Default for DecorrelatedJitterBuilder {
    /// 250 ms to 2 minutes, unbounded attempts (the outbox never gives up
    /// on a transient failure; only a permanent one quarantines).
    fn default() -> Self {
        DecorrelatedJitterBuilder {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(120),
            max_times: None,
            seed: None,
        }
    }
}

impl BackoffBuilder for DecorrelatedJitterBuilder {
    type Backoff = DecorrelatedJitter;

    fn build(self) -> DecorrelatedJitter {
        DecorrelatedJitter::resume(self, Duration::ZERO)
    }
}

/// The iterator of delays.
#[derive(Debug, Clone)]
pub struct DecorrelatedJitter {
    policy: DecorrelatedJitterBuilder,
    prev: Duration,
    yielded: usize,
    rng: u64,
}

impl DecorrelatedJitter {
    /// Continues a sequence whose last delay was `prev` (zero: a fresh one).
    pub fn resume(policy: DecorrelatedJitterBuilder, prev: Duration) -> Self {
        DecorrelatedJitter {
            policy,
            prev,
            yielded: 0,
            rng: policy.seed.map_or_else(seed, |s| s | 1),
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*: plenty for spreading retries.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Iterator for DecorrelatedJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.policy.max_times.is_some_and(|m| self.yielded >= m) {
            return None;
        }
        self.yielded += 1;
        let base = self.policy.base.as_millis() as u64;
        let cap = self.policy.cap.as_millis() as u64;
        let high = (self.prev.as_millis() as u64).saturating_mul(3).max(base);
        let span = high - base;
        let pick = if span == 0 {
            base
        } else {
            base + self.next_u64() % (span + 1)
        };
        let delay = Duration::from_millis(pick.min(cap).max(base.min(cap)));
        self.prev = delay;
        Some(delay)
    }
}

fn seed() -> u64 {
    let mut buf = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok();
    let s = if ok {
        u64::from_le_bytes(buf)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            ^ (std::process::id() as u64) << 32
    };
    s | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_between_base_and_cap_and_grow() {
        let p = DecorrelatedJitterBuilder {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            max_times: Some(50),
            seed: None,
        };
        let delays: Vec<Duration> = p.build().collect();
        assert_eq!(delays.len(), 50);
        for d in &delays {
            assert!(*d >= p.base && *d <= p.cap, "{d:?}");
        }
        assert!(
            delays.iter().any(|d| *d > Duration::from_secs(1)),
            "{delays:?}"
        );
    }

    #[test]
    fn resume_continues_from_the_last_delay() {
        let p = DecorrelatedJitterBuilder::default();
        let d = DecorrelatedJitter::resume(p, Duration::from_secs(10))
            .next()
            .unwrap();
        assert!(d >= p.base && d <= Duration::from_secs(30));
    }

    #[test]
    fn a_seeded_policy_replays_the_same_delays() {
        let p = DecorrelatedJitterBuilder {
            seed: Some(7),
            max_times: Some(20),
            ..DecorrelatedJitterBuilder::default()
        };
        let a: Vec<Duration> = p.build().collect();
        assert_eq!(a, p.build().collect::<Vec<_>>());
        let other: Vec<Duration> = DecorrelatedJitterBuilder { seed: Some(8), ..p }
            .build()
            .collect();
        assert_ne!(a, other, "the seed decides the delays");
    }
}
