//! The `jsonl` sink: every `events.process.*` event as one JSON line,
//! exactly once per `(collector_id, seq)`.
//!
//! Delivery is at-least-once (a collector replays whatever the broker had not
//! acknowledged), so the sink deduplicates. Per collector it remembers the
//! highest seq and the seqs within `WINDOW` below it; anything older than the
//! window is taken as new (a collector whose WAL was wiped starts over at 1,
//! and its events must not vanish). The window is seeded from the file's
//! tail at start, so an agent restart does not duplicate either.
//!
//! The sink is a durable subscriber: the batches waiting for it are
//! written, flushed and `fdatasync`ed together (one sync) before they confirm, and only then does the broker
//! acknowledge the publishes — so a collector forgets an event only once it
//! is on disk here.

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

/// `(collector_id, seq)` deduplication.
#[derive(Debug, Default)]
pub struct Dedupe {
    collectors: HashMap<String, (u64, BTreeSet<u64>)>,
}

impl Dedupe {
    /// True the first time a `(collector, seq)` is offered.
    pub fn is_new(&mut self, collector: &str, seq: u64) -> bool {
        let (high, seen) = self.collectors.entry(collector.to_string()).or_default();
        if seq.saturating_add(WINDOW) < *high {
            return true;
        }
        if !seen.insert(seq) {
            return false;
        }
        if seq > *high {
            *high = seq;
            if *high > WINDOW {
                let keep = seen.split_off(&(*high - WINDOW));
                *seen = keep;
            }
        }
        true
    }
}

/// Counters of one sink, shared with the agent's health answer.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub written: AtomicU64,
    pub duplicates: AtomicU64,
    /// Deliveries that were not valid events (dropped, logged).
    pub invalid: AtomicU64,
}

impl SinkStats {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "written": self.written.load(Relaxed),
            "duplicates": self.duplicates.load(Relaxed),
            "invalid": self.invalid.load(Relaxed),
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
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut dedupe = Dedupe::default();
    seed(path, &mut dedupe);
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .await?
        .into_std()
        .await;
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
                    Ok(event) if dedupe.is_new(&event.collector_id, event.seq) => {
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
            dedupe.is_new(c, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupes_within_the_window_and_accepts_a_restart() {
        let mut d = Dedupe::default();
        assert!(d.is_new("a", 1));
        assert!(d.is_new("a", 2));
        assert!(!d.is_new("a", 1));
        assert!(d.is_new("b", 1), "collectors are separate");
        assert!(d.is_new("a", 3 * WINDOW));
        assert!(!d.is_new("a", 3 * WINDOW));
        assert!(
            d.is_new("a", 5),
            "far below the window: a wiped WAL restarting"
        );
        assert!(d.is_new("a", 3 * WINDOW - 1));
    }
}
