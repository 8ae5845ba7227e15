//! Exponential backoff: the one rule every retry in procmond follows. Wait
//! `first`, then twice as long each time, never longer than `max`. Broker
//! reconnects, WAL retries, collector restarts and sink retries each use it
//! with their own bounds (docs/reference.md §5 lists them).

use std::time::Duration;

/// The wait before retry `attempt` (0 is the first): `first · 2^attempt`,
/// at most `max`; never overflows.
pub fn delay(first: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 2u32.checked_pow(attempt).unwrap_or(u32::MAX);
    first.checked_mul(factor).map_or(max, |d| d.min(max))
}

/// A retry loop's backoff: each `next_wait` doubles the one after it,
/// `reset` starts over (after a success that held).
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            attempt: 0,
        }
    }

    /// How long to wait before the next retry.
    pub fn next_wait(&mut self) -> Duration {
        let wait = delay(self.first, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        wait
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_on_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_secs(1));
    }

    #[test]
    fn huge_attempts_stay_at_the_cap() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(delay(first, max, 40), max);
        assert_eq!(delay(first, max, u32::MAX), max);
        assert_eq!(delay(Duration::MAX, max, 1), max);
        let mut b = Backoff::new(first, max);
        b.attempt = u32::MAX;
        assert_eq!((b.next_wait(), b.next_wait()), (max, max));
    }
}
