//! Counters for every place an event can be lost or altered.
//!
//! "Nothing is lost silently": each drop site increments one of these, and
//! they reach the operator through `watch`'s closing stats line (and, with
//! the agent, heartbeats and `ctl health`).

use std::collections::BTreeMap;
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
    /// Events lost while the WAL could not be written (disk full, I/O
    /// error) because the agent could not take them either: not connected
    /// (or not yet monitoring) and the in-memory hold full, or still held
    /// or unacknowledged at exit.
    pub events_unstored_lost: AtomicU64,
    /// Events the agent acknowledged that were published straight from
    /// memory, never stored in the WAL (it could not be written).
    pub events_unpersisted: AtomicU64,
    /// Events the WAL had stored that were gone when it was opened again
    /// (damaged or wiped storage; found against the WAL's marks).
    pub wal_lost: AtomicU64,
    /// 1 while the WAL cannot be written (gauge); the reason is `wal_fault`.
    pub wal_faulted: AtomicU64,
    /// Why the WAL cannot be written, while it cannot.
    pub wal_fault: std::sync::Mutex<Option<String>>,
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
    /// Exec events whose executable hash came from the cache.
    pub hash_cache_hits: AtomicU64,
    /// Exec events whose executable had to be hashed (a later `modify`).
    pub hash_cache_misses: AtomicU64,
    /// Exec events left without a hash: file too large, not regular, not the
    /// one the probe saw, gone, changed while read, or the queue full.
    pub hash_skipped: AtomicU64,
    /// Files hashed.
    pub hashes_computed: AtomicU64,
    /// Events encoded, by kind (`EventKind::ALL` order).
    pub events_by_kind: [AtomicU64; crate::model::EventKind::ALL.len()],
    /// Live processes the full process table dropped to make room: their
    /// children's `parent` and `ancestors` are then unknown.
    pub lineage_evicted: AtomicU64,
    /// Events whose parent the process table did not hold (never seen, or
    /// evicted): `parent.unknown` is set on them.
    pub lineage_parent_unknown: AtomicU64,
    /// Processes in the table, live and recently exited (gauge).
    pub lineage_entries: AtomicU64,
    /// Events encoded, by source (`EventSource::ALL` order).
    pub events_by_source: [AtomicU64; 6],
    /// `losses()` when the last heartbeat was sent: health is judged on the
    /// losses since then, the same way by heartbeats and health checks.
    pub losses_at_last_beat: AtomicU64,
}

/// What a counter means for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    /// Events lost or refused somewhere: any increase degrades health.
    Loss,
    /// A running count.
    Count,
    /// A level that goes up and down.
    Gauge,
}

impl Metrics {
    /// Every counter with its name and kind: the one list that health
    /// checks, heartbeats, `watch`'s closing line and the loss total read.
    pub fn counters(&self) -> [(&'static str, &AtomicU64, CounterKind); 31] {
        use CounterKind::{Count, Gauge, Loss};
        [
            ("kernel_lost", &self.kernel_lost, Loss),
            ("records_malformed", &self.records_malformed, Loss),
            ("wal_dropped_full", &self.wal_dropped_full, Loss),
            ("wal_corrupt", &self.wal_corrupt, Loss),
            ("events_unstored_lost", &self.events_unstored_lost, Loss),
            ("wal_lost", &self.wal_lost, Loss),
            ("events_output_dropped", &self.events_output_dropped, Loss),
            ("events_encode_failed", &self.events_encode_failed, Loss),
            ("lineage_evicted", &self.lineage_evicted, Loss),
            ("events_observed", &self.events_observed, Count),
            ("events_encoded", &self.events_encoded, Count),
            ("events_emitted", &self.events_emitted, Count),
            ("events_published", &self.events_published, Count),
            ("events_unpersisted", &self.events_unpersisted, Count),
            (
                "reconcile_missed_starts",
                &self.reconcile_missed_starts,
                Count,
            ),
            (
                "reconcile_missed_stops",
                &self.reconcile_missed_stops,
                Count,
            ),
            ("snapshot_errors", &self.snapshot_errors, Count),
            ("redactions", &self.redactions, Count),
            ("hash_cache_hits", &self.hash_cache_hits, Count),
            ("hash_cache_misses", &self.hash_cache_misses, Count),
            ("hash_skipped", &self.hash_skipped, Count),
            ("hashes_computed", &self.hashes_computed, Count),
            ("broker_disconnects", &self.broker_disconnects, Count),
            (
                "lineage_parent_unknown",
                &self.lineage_parent_unknown,
                Count,
            ),
            ("processes_seen", &self.processes_seen, Gauge),
            ("lineage_entries", &self.lineage_entries, Gauge),
            ("wal_pending", &self.wal_pending, Gauge),
            ("wal_pending_bytes", &self.wal_pending_bytes, Gauge),
            ("wal_faulted", &self.wal_faulted, Gauge),
            ("buffer_percent", &self.buffer_percent, Gauge),
            ("connected", &self.connected, Gauge),
        ]
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Every counter that means "an event was lost somewhere", summed.
    pub fn losses(&self) -> u64 {
        self.counters()
            .iter()
            .filter(|(_, _, kind)| *kind == CounterKind::Loss)
            .map(|(_, c, _)| c.load(Relaxed))
            .sum()
    }

    /// Losses since the last heartbeat (all of them when none was sent).
    pub fn recent_losses(&self) -> u64 {
        self.losses()
            .saturating_sub(self.losses_at_last_beat.load(Relaxed))
    }

    /// The counters of `kind` (or all) as one JSON object.
    fn json_of(&self, kind: Option<CounterKind>) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (name, counter, k) in self.counters() {
            if kind.is_none_or(|want| want == k) {
                let v = counter.load(Relaxed);
                let value = if name == "connected" {
                    (v == 1).into()
                } else {
                    v.into()
                };
                map.insert(name.into(), value);
            }
        }
        map.into()
    }

    /// All counters as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        self.json_of(None)
    }

    /// What a heartbeat and a health answer carry besides the status: the
    /// gauges, the published count, every loss counter, why the WAL cannot
    /// be written while it cannot, and the events encoded by kind and source.
    pub fn summary(&self) -> crate::health::Summary {
        use crate::health::Connection;
        let (events_by_kind, events_by_source) = self.by_kind_and_source();
        let losses = self
            .counters()
            .into_iter()
            .filter(|(_, _, kind)| *kind == CounterKind::Loss)
            .map(|(name, counter, _)| (name.to_string(), counter.load(Relaxed)))
            .collect();
        crate::health::Summary {
            processes_seen: self.processes_seen.load(Relaxed),
            events_published: self.events_published.load(Relaxed),
            events_unpersisted: self.events_unpersisted.load(Relaxed),
            buffer_percent: self.buffer_percent.load(Relaxed),
            wal_pending: self.wal_pending.load(Relaxed),
            wal_pending_bytes: self.wal_pending_bytes.load(Relaxed),
            wal_fault: self.wal_fault(),
            connection: if self.connected.load(Relaxed) == 1 {
                Connection::Connected
            } else {
                Connection::Disconnected
            },
            losses,
            events_by_kind,
            events_by_source,
        }
    }

    /// `summary` as JSON (`ctl health` merges it into its body).
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::to_value(self.summary()).unwrap_or_default()
    }

    /// Counts one encoded event under its kind and source.
    pub fn count_event(&self, kind: crate::model::EventKind, source: crate::model::EventSource) {
        if let Some(c) = self.events_by_kind.get(kind as usize) {
            c.fetch_add(1, Relaxed);
        }
        if let Some(c) = self.events_by_source.get(source as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Events encoded by kind and by source (zeros left out).
    fn by_kind_and_source(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        use crate::model::{EventKind, EventSource};
        let kinds = EventKind::ALL
            .iter()
            .zip(&self.events_by_kind)
            .map(|(k, c)| (k.as_str().to_string(), c.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let sources = EventSource::ALL
            .iter()
            .zip(&self.events_by_source)
            .map(|(s, c)| (s.as_str().to_string(), c.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        (kinds, sources)
    }

    /// Records that the WAL cannot be written (`Some(reason)`) or can again.
    pub fn set_wal_fault(&self, reason: Option<String>) {
        self.wal_faulted.store(u64::from(reason.is_some()), Relaxed);
        if let Ok(mut slot) = self.wal_fault.lock() {
            *slot = reason;
        }
    }

    /// Why the WAL cannot be written, while it cannot.
    pub fn wal_fault(&self) -> Option<String> {
        self.wal_fault.lock().ok().and_then(|s| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loss_counter_counts_and_reaches_every_summary() {
        let m = Metrics::default();
        let losses: Vec<&str> = m
            .counters()
            .iter()
            .filter(|(_, _, k)| *k == CounterKind::Loss)
            .map(|(n, _, _)| *n)
            .collect();
        for (i, (_, counter, kind)) in m.counters().iter().enumerate() {
            if *kind == CounterKind::Loss {
                Metrics::add(counter, i as u64 + 1);
            }
        }
        let want: u64 = m
            .counters()
            .iter()
            .enumerate()
            .filter(|(_, (_, _, k))| *k == CounterKind::Loss)
            .map(|(i, _)| i as u64 + 1)
            .sum();
        assert_eq!(m.losses(), want);
        let summary = m.summary_json();
        let all = m.to_json();
        for name in &losses {
            assert!(
                summary["losses"][name].as_u64().is_some_and(|v| v > 0),
                "{name}"
            );
            assert_eq!(all[name], summary["losses"][name], "{name}");
        }
        assert_eq!(all.as_object().map(|o| o.len()), Some(m.counters().len()));
        assert_eq!(all["connected"], false);
    }

    #[test]
    fn events_are_counted_by_kind_and_source() {
        use crate::model::{EventKind, EventSource};
        let m = Metrics::default();
        m.count_event(EventKind::Exec, EventSource::Ebpf);
        m.count_event(EventKind::Exec, EventSource::Ebpf);
        m.count_event(EventKind::Stop, EventSource::Reconcile);
        m.count_event(EventKind::Modify, EventSource::Audit);
        let s = m.summary_json();
        assert_eq!(
            s["events_by_kind"],
            serde_json::json!({"exec": 2, "stop": 1, "modify": 1})
        );
        assert_eq!(
            s["events_by_source"],
            serde_json::json!({"ebpf": 2, "reconcile": 1, "audit": 1})
        );
    }
}
