//! Counters for every place an event can be lost or altered.
//!
//! "Nothing is lost silently": each drop site increments one of these, and
//! they reach the operator through `watch`'s closing stats line (and, with
//! the agent, heartbeats and `ctl health`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Shared, lock-free counters; one instance per sensor.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records the kernel could not write to the ring buffer (read from the probes' LOST map).
    pub kernel_lost: AtomicU64,
    /// Kernel records refused by the decoder.
    pub records_malformed: AtomicU64,
    /// Events produced by the active source (kernel or polling).
    pub events_observed: AtomicU64,
    /// Events that went through the pipeline (enriched, sanitized, encoded).
    pub events_encoded: AtomicU64,
    /// Events that could not be encoded.
    pub events_encode_failed: AtomicU64,
    /// Events handed to the output (stdout, bus).
    pub events_emitted: AtomicU64,
    /// Events the output could not take (closed stdout, failed write).
    pub events_output_dropped: AtomicU64,
    /// Starts the kernel stream missed and reconciliation found.
    pub reconcile_missed_starts: AtomicU64,
    /// Stops the kernel stream missed and reconciliation found.
    pub reconcile_missed_stops: AtomicU64,
    /// Snapshots that failed to read the process table.
    pub snapshot_errors: AtomicU64,
    /// argv values replaced with `[REDACTED]`.
    pub redactions: AtomicU64,
    /// Live processes in the last snapshot.
    pub processes_seen: AtomicU64,
    /// Events refused because the WAL was full.
    pub wal_dropped_full: AtomicU64,
    /// WAL records that failed validation on replay (skipped).
    pub wal_corrupt: AtomicU64,
    /// Events in the WAL awaiting acknowledgement (gauge).
    pub wal_pending: AtomicU64,
    /// Bytes in the WAL awaiting acknowledgement (gauge).
    pub wal_pending_bytes: AtomicU64,
    /// Events published to the broker and acknowledged.
    pub events_published: AtomicU64,
    /// Connections to the broker that were lost.
    pub broker_disconnects: AtomicU64,
    /// Unacknowledged bytes held for publishing, percent of the buffer (gauge).
    pub buffer_percent: AtomicU64,
    /// 1 while connected to the broker (gauge).
    pub connected: AtomicU64,
    /// `losses()` when the last heartbeat was sent: health is judged on the
    /// losses since then, the same way by heartbeats and health checks.
    pub losses_at_last_beat: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Every counter that means "an event was lost somewhere", summed.
    pub fn losses(&self) -> u64 {
        [
            &self.kernel_lost,
            &self.records_malformed,
            &self.wal_dropped_full,
            &self.events_output_dropped,
            &self.events_encode_failed,
        ]
        .iter()
        .map(|c| c.load(Relaxed))
        .sum()
    }

    /// Losses since the last heartbeat (all of them when none was sent).
    pub fn recent_losses(&self) -> u64 {
        self.losses()
            .saturating_sub(self.losses_at_last_beat.load(Relaxed))
    }

    /// All counters as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Relaxed);
        serde_json::json!({
            "kernel_lost": get(&self.kernel_lost),
            "records_malformed": get(&self.records_malformed),
            "events_observed": get(&self.events_observed),
            "events_encoded": get(&self.events_encoded),
            "events_encode_failed": get(&self.events_encode_failed),
            "events_emitted": get(&self.events_emitted),
            "events_output_dropped": get(&self.events_output_dropped),
            "reconcile_missed_starts": get(&self.reconcile_missed_starts),
            "reconcile_missed_stops": get(&self.reconcile_missed_stops),
            "snapshot_errors": get(&self.snapshot_errors),
            "redactions": get(&self.redactions),
            "processes_seen": get(&self.processes_seen),
            "wal_dropped_full": get(&self.wal_dropped_full),
            "wal_corrupt": get(&self.wal_corrupt),
            "wal_pending": get(&self.wal_pending),
            "wal_pending_bytes": get(&self.wal_pending_bytes),
            "events_published": get(&self.events_published),
            "broker_disconnects": get(&self.broker_disconnects),
            "buffer_percent": get(&self.buffer_percent),
            "connected": get(&self.connected) == 1,
        })
    }
}
