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
//! forgets an event only once it is on disk here.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::mpsc;

use crate::bus::broker::Durable;
use crate::model::batch::Batch;
use crate::output::{Format, render};

const WINDOW: u64 = 1 << 20;
const SEED_BYTES: u64 = 4 * 1024 * 1024;
/// Most `(collector, epoch)` pairs remembered; the least recently used goes.
const MAX_STREAMS: usize = 256;

#[derive(Debug, Default)]
struct Stream {
    high: u64,
    seen: BTreeSet<u64>,
    last_used: u64,
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
            .is_some_and(|s| seq.saturating_add(WINDOW) >= s.high && s.seen.contains(&seq))
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
        if !stream.seen.insert(seq) {
            return false;
        }
        if seq > stream.high {
            stream.high = seq;
            if stream.high > WINDOW {
                let keep = stream.seen.split_off(&(stream.high - WINDOW));
                stream.seen = keep;
            }
        }
        true
    }
}

/// Counters of one sink, shared with the agent's health answer and
/// `/metrics`. The last three move only for sinks behind a network (nats).
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
}

impl SinkStats {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "written": self.written.load(Relaxed),
            "duplicates": self.duplicates.load(Relaxed),
            "invalid": self.invalid.load(Relaxed),
            "errors": self.errors.load(Relaxed),
            "reconnects": self.reconnects.load(Relaxed),
            "lag": self.lag.load(Relaxed),
        })
    }
}

/// Writes deliveries from `rx` to `path` until `rx` closes.
pub async fn run_jsonl(
    path: &Path,
    mut rx: mpsc::Receiver<Durable>,
    stats: &SinkStats,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        #[cfg(windows)]
        let created = !parent.exists();
        tokio::fs::create_dir_all(parent).await?;
        // Windows: a directory procmond made gets the private ACL; one that
        // existed keeps its own (it may be shared), the file gets it below.
        #[cfg(windows)]
        if created {
            crate::sys::windows::make_private(parent)?;
        }
    }
    let mut dedupe = Dedupe::default();
    seed(path, &mut dedupe);
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(0o600);
    let file = options.open(path).await?.into_std().await;
    #[cfg(windows)]
    crate::sys::windows::make_private(path)?;
    let mut file = Some(file);
    // Every line of the deliveries waiting at once, written and synced by one
    // blocking call: one thread hand-off per group, not one per buffer.
    let mut out: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut line = Vec::with_capacity(1024);
    let mut stored = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(Durable { envelope, done }) = next {
            let batch = match Batch::parse_slice(&envelope.payload) {
                Ok(b) => b,
                Err(e) => {
                    stats.invalid.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, topic = %envelope.topic, "sink dropped a delivery that is not a batch");
                    stored.push(done);
                    next = rx.try_recv().ok();
                    continue;
                }
            };
            for entry in batch.iter() {
                match entry.decode() {
                    Ok(event) if dedupe.is_new(&event.collector_id, event.epoch, event.seq) => {
                        line.clear();
                        render(&event, Format::Json, &mut line);
                        out.extend_from_slice(&line);
                        stats.written.fetch_add(1, Relaxed);
                    }
                    Ok(_) => {
                        stats.duplicates.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        stats.invalid.fetch_add(1, Relaxed);
                        tracing::error!(error = %e, seq = entry.seq, "sink dropped an invalid event");
                    }
                }
            }
            stored.push(done);
            next = rx.try_recv().ok();
        }
        // On disk before the collectors may forget the batch.
        let f = file
            .take()
            .ok_or_else(|| std::io::Error::other("sink file lost"))?;
        let bytes = std::mem::take(&mut out);
        let (f, bytes) = tokio::task::spawn_blocking(move || {
            let mut w = &f;
            w.write_all(&bytes)?;
            f.sync_data()?;
            Ok::<_, std::io::Error>((f, bytes))
        })
        .await
        .map_err(std::io::Error::other)??;
        file = Some(f);
        out = bytes;
        out.clear();
        for done in stored.drain(..) {
            let _ = done.send(());
        }
    }
    Ok(())
}

/// Feeds the last lines already in the file to the deduplicator.
fn seed(path: &Path, dedupe: &mut Dedupe) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(SEED_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return;
    }
    let mut tail = Vec::new();
    if file.read_to_end(&mut tail).is_err() {
        return;
    }
    for line in tail.split(|b| *b == b'\n') {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
            && let (Some(c), Some(s)) = (v["collector_id"].as_str(), v["seq"].as_u64())
        {
            dedupe.is_new(c, v["epoch"].as_u64().unwrap_or(0), s);
        }
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
