//! Retry delays: 1 s doubling up to a cap (30 s on a CN), with jitter so
//! that many CNs restarted together do not hit the broker in step.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First retry delay.
pub const INITIAL: Duration = Duration::from_secs(1);

/// Doubling delays between `INITIAL` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        let max = max.max(Duration::from_millis(1));
        Backoff { next: INITIAL.min(max), max }
    }

    /// The delay before the next attempt (without jitter), then doubles it.
    pub fn next_base(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// The next base delay, without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The delay before the next attempt: the base minus up to 20 % jitter.
    pub fn next_delay(&mut self) -> Duration {
        jitter(self.next_base(), random_u64())
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = INITIAL.min(self.max);
    }
}

/// `base` reduced by `r mod 20 %` of it (never more than `base`).
pub fn jitter(base: Duration, r: u64) -> Duration {
    let millis = base.as_millis() as u64;
    let cut = if millis >= 5 { r % (millis / 5) } else { 0 };
    Duration::from_millis(millis - cut)
}

/// A random number for ids and jitter (std's per-process random hash keys,
/// a counter and the clock; not for secrets).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(30));
        assert_eq!(b.peek(), Duration::from_secs(1));
        let got: Vec<u64> = (0..8).map(|_| b.next_base().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.next_base(), Duration::from_secs(1));
    }

    #[test]
    fn small_cap_wins_over_initial() {
        let mut b = Backoff::new(Duration::from_millis(200));
        assert_eq!(b.next_base(), Duration::from_millis(200));
        assert_eq!(b.next_base(), Duration::from_millis(200));
    }

    #[test]
    fn jitter_stays_within_20_percent() {
        for r in [0, 1, 199, 200, 12345, u64::MAX] {
            let d = jitter(Duration::from_secs(1), r);
            assert!(d <= Duration::from_secs(1) && d > Duration::from_millis(800), "{d:?}");
        }
        assert_eq!(jitter(Duration::from_millis(3), 7), Duration::from_millis(3));
        assert_ne!(random_u64(), random_u64());
    }
}
