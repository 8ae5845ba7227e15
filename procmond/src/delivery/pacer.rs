//! Group commit pacing for the WAL: how long the connector lets batches
//! gather before it writes and flushes them.
//!
//! A WAL flush has a fixed cost (sled wakes its I/O threads and syncs the
//! file range) whatever it carries. Under light load every batch is
//! committed at once, so an event's latency is the flush itself; as the
//! event rate climbs the connector waits up to `MAX_DELAY` after the last
//! commit, so a fork storm costs ~100 flushes a second instead of one per
//! drain of the kernel ring. Pure bookkeeping over the times it is given,
//! so it is tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// Below this rate (events/s) nothing waits: the latency goal (exec →
/// subscriber p99 < 10 ms) is measured at 400 spawns/s, ~1 200 events/s
/// (a fork, an exec and an exit each). The eBPF reader's own gather
/// window (1 ms and up) already merges a spawn's records into one batch.
const LIGHT_LOAD: f64 = 1_500.0;
/// At or above this rate commits are `MAX_DELAY` apart. Kept close to
/// `LIGHT_LOAD`: between the thresholds a slower storm (a busy host) would
/// otherwise pay for more flushes per event than a fast one, each waking
/// sled's I/O pool.
const HEAVY_LOAD: f64 = 2_000.0;
/// The longest a batch waits for company before its commit.
pub const MAX_DELAY: Duration = Duration::from_millis(10);
/// The rate is measured over windows this long.
const RATE_WINDOW: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct CommitPacer {
    window_start: Instant,
    events_in_window: u64,
    rate: f64,
    last_commit: Instant,
}

impl CommitPacer {
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            events_in_window: 0,
            rate: 0.0,
            last_commit: now,
        }
    }

    /// Events per second over the last complete window.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How far apart commits are at the current rate.
    pub fn delay(&self) -> Duration {
        let load = ((self.rate - LIGHT_LOAD) / (HEAVY_LOAD - LIGHT_LOAD)).clamp(0.0, 1.0);
        MAX_DELAY.mul_f64(load)
    }

    /// When the next commit may happen (now or in the past: at once).
    pub fn next_commit_at(&self, now: Instant) -> Instant {
        // A rate measured before a quiet spell no longer holds.
        if now.duration_since(self.window_start) > RATE_WINDOW * 4 {
            return now;
        }
        self.last_commit + self.delay()
    }

    /// A commit of `events` happened at `now`.
    pub fn committed(&mut self, now: Instant, events: u64) {
        self.last_commit = now;
        let elapsed = now.duration_since(self.window_start);
        if elapsed > RATE_WINDOW * 4 {
            // The window's earlier events belong to a storm that ended.
            self.events_in_window = 0;
        }
        self.events_in_window += events;
        if elapsed >= RATE_WINDOW {
            self.rate = self.events_in_window as f64 / elapsed.as_secs_f64();
            self.window_start = now;
            self.events_in_window = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200 commits of `events`, 2 ms apart, from `t`; returns the last time.
    fn storm(p: &mut CommitPacer, mut t: Instant, events: u64) -> Instant {
        for _ in 0..200 {
            t += Duration::from_millis(2);
            p.committed(t, events);
        }
        t
    }

    #[test]
    fn light_load_commits_at_once_and_a_storm_waits_up_to_the_cap() {
        let t0 = Instant::now();
        let mut p = CommitPacer::new(t0);
        // 400 spawns/s, a batch of 3 events (fork, exec, exit) every
        // 2.5 ms: never waits.
        let mut t = t0;
        for _ in 0..200 {
            t += Duration::from_micros(2_500);
            p.committed(t, 3);
            assert_eq!(p.next_commit_at(t), t);
        }
        assert!((p.rate() - 1_200.0).abs() < 60.0, "{}", p.rate());
        // 10 000 events/s in 2 ms drains: commits become MAX_DELAY apart.
        let t = storm(&mut p, t, 20);
        assert!(p.rate() > HEAVY_LOAD);
        assert_eq!(p.delay(), MAX_DELAY);
        assert_eq!(p.next_commit_at(t), t + MAX_DELAY);
        // Half-way between the thresholds: half the cap.
        p.rate = (LIGHT_LOAD + HEAVY_LOAD) / 2.0;
        assert_eq!(p.delay(), MAX_DELAY / 2);
    }

    #[test]
    fn a_slow_storm_flushes_no_more_often_than_a_fast_one() {
        let t0 = Instant::now();
        let mut p = CommitPacer::new(t0);
        // 2 000 events/s (a storm on a busy host): the full cap, as at
        // 10 000/s, so a slower storm does not pay more flushes per event.
        let t = storm(&mut p, t0, 4);
        assert!((p.rate() - 2_000.0).abs() < 100.0, "{}", p.rate());
        assert_eq!(p.next_commit_at(t), t + MAX_DELAY);
    }

    #[test]
    fn a_quiet_spell_forgets_the_storm() {
        let t0 = Instant::now();
        let mut p = CommitPacer::new(t0);
        let t = storm(&mut p, t0, 50);
        assert_eq!(p.delay(), MAX_DELAY);
        let later = t + Duration::from_secs(5);
        assert_eq!(
            p.next_commit_at(later),
            later,
            "the first event after a pause waits for nothing"
        );
        p.committed(later, 1);
        assert!(p.rate() < LIGHT_LOAD, "{}", p.rate());
    }
}
