//! The `jsonl` sink: every `events.process.*` event as one JSON line,
//! exactly once per `(collector_id, epoch, seq)`.
//!
//! Delivery is at-least-once (a collector replays whatever the broker had not
//! acknowledged), so the sink deduplicates. The key includes the WAL's epoch:
//! a collector whose WAL was wiped or damaged starts over at seq 1 in a new
//! epoch, and its events are new, never mistaken for old ones. Per
//! `(collector, epoch)` the sink remembers the highest seq and the seqs
//! within `WINDOW` below it; the window is seeded from the file's tail at
//! start, so an agent restart does not duplicate either.
//!
//! The sink is a durable subscriber: the batches waiting for it are
//! written, flushed and `fdatasync`ed together (one sync) before they confirm,
//! and only then does the broker acknowledge the publishes — so a collector
//! forgets an event only once it is on disk here. A write that fails (disk
//! full, I/O error) is undone and retried with backoff (`jsonl.rs`); the
//! sink never stops, and says it is degraded in its counters meanwhile.
//!
//! Here: what every sink shares (deduplication, counters, retry pacing);
//! `jsonl.rs` is the jsonl sink's file and loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

mod jsonl;
pub use jsonl::{JsonlError, JsonlFile, run_jsonl, run_jsonl_file};

const WINDOW: u64 = 1 << 20;
/// Most `(collector, epoch)` pairs remembered; the least recently used goes.
const MAX_STREAMS: usize = 256;

/// One `(collector, epoch)`: the highest seq, and which seqs within
/// `WINDOW` below it were seen, as a sparse bitmap (word index → 64 seqs):
/// a full window is ~16 000 words, ~0.3 MiB, where a set of seqs took ~10 MiB
/// (measured by `cargo xtask soak`).
#[derive(Debug, Default)]
struct Stream {
    high: u64,
    seen: BTreeMap<u64, u64>,
    last_used: u64,
}

impl Stream {
    fn contains(&self, seq: u64) -> bool {
        self.seen
            .get(&(seq / 64))
            .is_some_and(|word| word & (1 << (seq % 64)) != 0)
    }

    /// Marks `seq`; false if it was marked already.
    fn insert(&mut self, seq: u64) -> bool {
        let word = self.seen.entry(seq / 64).or_insert(0);
        let bit = 1 << (seq % 64);
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

/// `(collector_id, epoch, seq)` deduplication.
#[derive(Debug, Default)]
pub struct Dedupe {
    streams: HashMap<(String, u64), Stream>,
    clock: u64,
}

impl Dedupe {
    /// Whether `(collector, epoch, seq)` was offered before and is still
    /// remembered; records nothing.
    pub fn seen(&self, collector: &str, epoch: u64, seq: u64) -> bool {
        self.streams
            .get(&(collector.to_string(), epoch))
            .is_some_and(|s| seq.saturating_add(WINDOW) >= s.high && s.contains(seq))
    }

    /// True the first time a `(collector, epoch, seq)` is offered.
    pub fn is_new(&mut self, collector: &str, epoch: u64, seq: u64) -> bool {
        self.clock += 1;
        let key = (collector.to_string(), epoch);
        if !self.streams.contains_key(&key) && self.streams.len() >= MAX_STREAMS {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.streams.remove(&k);
            }
        }
        let stream = self.streams.entry(key).or_default();
        stream.last_used = self.clock;
        if seq.saturating_add(WINDOW) < stream.high {
            // Older than anything remembered: deliver again rather than lose.
            return true;
        }
        if !stream.insert(seq) {
            return false;
        }
        if seq > stream.high {
            stream.high = seq;
            if stream.high > WINDOW {
                // Whole words below the window go; the rest of the lowest
                // word is below it too and never consulted (the check above).
                let keep = stream.seen.split_off(&((stream.high - WINDOW) / 64));
                stream.seen = keep;
            }
        }
        true
    }
}

/// First wait after a failed attempt to store.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// 0 s first, then 100 ms doubling up to 5 s.
pub(crate) fn backoff(attempt: usize) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let attempt = u32::try_from(attempt - 1).unwrap_or(u32::MAX);
    crate::backoff::delay(BACKOFF_MIN, BACKOFF_MAX, attempt)
}

/// Counters of one sink, shared with the agent's health answer and
/// `/metrics`. `reconnects` moves only for sinks behind a network (nats).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events stored: on disk (jsonl), or acknowledged by JetStream as new (nats).
    pub written: AtomicU64,
    /// Events already stored, dropped here or by the server's deduplication.
    pub duplicates: AtomicU64,
    /// Deliveries that were not valid events (dropped, logged).
    pub invalid: AtomicU64,
    /// Failed attempts to store (each retried; nothing is confirmed unstored).
    pub errors: AtomicU64,
    /// Connections re-established after a loss.
    pub reconnects: AtomicU64,
    /// Events received and not yet stored: their publishes wait unacknowledged (gauge).
    pub lag: AtomicU64,
    /// The last attempt to store (or to connect) failed and the sink is
    /// retrying; cleared by the next success.
    pub degraded: AtomicBool,
    /// The last failure, for `ctl health`.
    last_error: Mutex<Option<String>>,
}

impl SinkStats {
    /// Records a failed attempt: counted, the sink degraded until it
    /// succeeds again. Returns the errors so far.
    pub fn failed(&self, error: &dyn std::fmt::Display) -> u64 {
        self.degrade(error);
        self.errors.fetch_add(1, Relaxed) + 1
    }

    /// Marks the sink degraded without counting an error (a lost connection).
    pub fn degrade(&self, why: &dyn std::fmt::Display) {
        self.degraded.store(true, Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
    }

    /// Records a success; true if the sink was degraded until now.
    pub fn recovered(&self) -> bool {
        self.degraded.swap(false, Relaxed)
    }

    /// The last failure, if any (it stays after a recovery).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The counters, as health reports them.
    pub fn counters(&self) -> crate::health::SinkCounters {
        let degraded = self.degraded.load(Relaxed);
        crate::health::SinkCounters {
            status: if degraded { "degraded" } else { "ok" }.into(),
            last_error: self.last_error(),
            written: self.written.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            invalid: self.invalid.load(Relaxed),
            errors: self.errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            lag: self.lag.load(Relaxed),
        }
    }

    /// `counters` as JSON (logs and tests).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupes_per_collector_and_epoch() {
        let mut d = Dedupe::default();
        assert!(d.is_new("a", 7, 1));
        assert!(d.is_new("a", 7, 2));
        assert!(!d.is_new("a", 7, 1));
        assert!(d.is_new("b", 7, 1), "collectors are separate");
        // A wiped WAL: a new epoch starts over at 1, and nothing is dropped.
        for seq in 1..=2 {
            assert!(d.is_new("a", 8, seq), "seq {seq} of the new epoch");
        }
        assert!(!d.is_new("a", 8, 2));
        assert!(!d.is_new("a", 7, 2), "the old epoch is still remembered");
        assert!(d.is_new("a", 7, 3 * WINDOW));
        assert!(!d.is_new("a", 7, 3 * WINDOW));
        assert!(
            d.is_new("a", 7, 5),
            "far below the window: delivered again, not lost"
        );
        assert!(d.seen("a", 8, 2) && !d.seen("a", 8, 3) && !d.seen("c", 8, 2));
        assert!(!d.seen("a", 8, 3), "seen records nothing");
    }

    #[test]
    fn retries_back_off_to_a_cap() {
        let waits: Vec<u64> = (0..9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(usize::MAX), BACKOFF_MAX);
    }

    #[test]
    fn failures_degrade_until_a_success() {
        let s = SinkStats::default();
        assert_eq!(s.to_json()["status"], "ok");
        assert_eq!(s.failed(&"disk full"), 1);
        assert_eq!(s.failed(&"disk full again"), 2);
        let j = s.to_json();
        assert_eq!(
            (j["status"].as_str(), j["errors"].as_u64()),
            (Some("degraded"), Some(2))
        );
        assert_eq!(j["last_error"], "disk full again");
        assert!(s.recovered() && !s.recovered());
        assert_eq!(s.to_json()["status"], "ok");
    }

    #[test]
    fn a_full_window_is_a_bitmap_not_a_set() {
        let mut d = Dedupe::default();
        for seq in 1..=2 * WINDOW {
            assert!(d.is_new("a", 1, seq));
        }
        let stream = &d.streams[&("a".to_string(), 1)];
        assert!(
            stream.seen.len() as u64 <= WINDOW / 64 + 1,
            "{} words for a window of {WINDOW}",
            stream.seen.len()
        );
        assert!(!d.is_new("a", 1, 2 * WINDOW - 5) && !d.is_new("a", 1, WINDOW));
        assert!(d.seen("a", 1, WINDOW) && !d.seen("a", 1, WINDOW - 1));
        assert!(d.is_new("a", 1, 2 * WINDOW + 64));
        assert!(d.is_new("a", 1, 2 * WINDOW + 1), "a gap is filled later");
        assert!(!d.is_new("a", 1, 2 * WINDOW + 1));
    }

    #[test]
    fn streams_are_bounded() {
        let mut d = Dedupe::default();
        for epoch in 0..(MAX_STREAMS as u64 + 10) {
            assert!(d.is_new("a", epoch, 1));
        }
        assert_eq!(d.streams.len(), MAX_STREAMS);
        assert!(
            !d.is_new("a", MAX_STREAMS as u64 + 9, 1),
            "recent ones are kept"
        );
    }
}
