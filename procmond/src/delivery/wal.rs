//! The write-ahead log: every event is on disk before it is published, and
//! leaves only when the broker acknowledges it.
//!
//! Storage is sled, one tree: `e` + big-endian seq → the event's rkyv bytes
//! (sequence order is key order), and `m:next_seq` → the next sequence
//! number, written in the same atomic batch as the events so `seq` stays
//! monotonic across crashes.
//!
//! Durability policy (docs/decisions.md): group commit. A batch of
//! events is applied and then `flush`ed (sled writes it and syncs the file
//! range) before any of it is published, so a collector or kernel crash at
//! any instant loses nothing a subscriber may have seen. sled's flush is not
//! an fdatasync: with a volatile disk cache a power cut can lose the newest
//! batches (those already stored by a sink are safe: sinks fdatasync).
//!
//! Bounded: pending bytes are capped (`max_bytes`); at 80 % a warning is
//! logged, and when full the oldest unacknowledged events are kept and new
//! ones are counted as dropped. Records that fail validation on replay are
//! skipped with a warning, counted and removed; the rest replays.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::metrics::Metrics;
use crate::model::codec::{self, EventBytes};

const EVENT_PREFIX: u8 = b'e';
const NEXT_SEQ_KEY: &[u8] = b"m:next_seq";
/// sled's own page cache: small, so the WAL stays within the RSS budget.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("WAL storage error: {0}")]
    Sled(#[from] sled::Error),
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = EVENT_PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn key_seq(key: &[u8]) -> Option<u64> {
    match key {
        [EVENT_PREFIX, rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
}

/// The collector's write-ahead log.
#[derive(Debug)]
pub struct Wal {
    db: sled::Db,
    max_bytes: u64,
    pending_bytes: AtomicU64,
    pending_count: AtomicU64,
    next_seq: AtomicU64,
    warned_high: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` (made 0700, files 0600).
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<Self, WalError> {
        prepare_dir(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::LowSpace)
            .flush_every_ms(None)
            .open()?;
        restrict_files(dir)?;
        Self::from_db(db, max_bytes, metrics)
    }

    fn from_db(db: sled::Db, max_bytes: u64, metrics: Arc<Metrics>) -> Result<Self, WalError> {
        let stored_next = db
            .get(NEXT_SEQ_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(1, u64::from_be_bytes);
        let (mut bytes, mut count, mut last) = (0u64, 0u64, 0u64);
        for item in db.scan_prefix([EVENT_PREFIX]) {
            let (k, v) = item?;
            if let Some(seq) = key_seq(&k) {
                bytes += v.len() as u64;
                count += 1;
                last = last.max(seq);
            }
        }
        let wal = Self {
            db,
            max_bytes,
            pending_bytes: AtomicU64::new(bytes),
            pending_count: AtomicU64::new(count),
            next_seq: AtomicU64::new(stored_next.max(last + 1)),
            warned_high: AtomicBool::new(false),
            metrics,
        };
        wal.publish_gauges();
        Ok(wal)
    }

    /// The first sequence number not yet used by any stored event.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Relaxed)
    }

    pub fn pending_count(&self) -> u64 {
        self.pending_count.load(Relaxed)
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes.load(Relaxed)
    }

    /// Appends a batch of `(seq, bytes)` and makes it durable. Returns how
    /// many were stored; the rest did not fit and were counted as dropped.
    pub fn append_batch<'a>(
        &self,
        events: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<usize, WalError> {
        let mut batch = sled::Batch::default();
        let mut stored = 0usize;
        let mut added = 0u64;
        let mut max_seq = None;
        let mut dropped = 0u64;
        let base = self.pending_bytes();
        for (seq, bytes) in events {
            max_seq = Some(max_seq.map_or(seq, |m: u64| m.max(seq)));
            if base + added + bytes.len() as u64 > self.max_bytes {
                dropped += 1;
                continue;
            }
            batch.insert(&event_key(seq), bytes);
            added += bytes.len() as u64;
            stored += 1;
        }
        let Some(max_seq) = max_seq else { return Ok(0) };
        let next = (max_seq + 1).max(self.next_seq());
        batch.insert(NEXT_SEQ_KEY, &next.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.next_seq.store(next, Relaxed);
        self.pending_bytes.fetch_add(added, Relaxed);
        self.pending_count.fetch_add(stored as u64, Relaxed);
        if dropped > 0 {
            Metrics::add(&self.metrics.wal_dropped_full, dropped);
            tracing::error!(
                dropped,
                max_bytes = self.max_bytes,
                "WAL full: new events dropped (oldest unacknowledged kept)"
            );
        }
        self.check_fill();
        self.publish_gauges();
        Ok(stored)
    }

    /// The broker acknowledged `seq`: forget it.
    pub fn ack(&self, seq: u64) -> Result<(), WalError> {
        if let Some(old) = self.db.remove(event_key(seq))? {
            self.pending_bytes.fetch_sub(old.len() as u64, Relaxed);
            self.pending_count.fetch_sub(1, Relaxed);
            self.publish_gauges();
            self.check_fill();
        }
        Ok(())
    }

    /// Up to `limit` stored events with `seq >= from`, in sequence order.
    /// Records that fail validation are skipped, counted and removed.
    pub fn read_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, EventBytes)>, WalError> {
        let mut out = Vec::new();
        let start = event_key(from);
        let end = event_key(u64::MAX);
        for item in self.db.range(start..=end) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some(seq) = key_seq(&k) else { continue };
            let bytes = codec::aligned_copy(&v);
            if let Err(e) = codec::access(&bytes) {
                Metrics::incr(&self.metrics.wal_corrupt);
                tracing::warn!(seq, error = %e, "corrupt WAL record skipped");
                self.ack(seq)?;
                continue;
            }
            out.push((seq, bytes));
        }
        Ok(out)
    }

    /// The lowest stored sequence number, if any.
    pub fn first_seq(&self) -> Result<Option<u64>, WalError> {
        Ok(self
            .db
            .scan_prefix([EVENT_PREFIX])
            .next()
            .transpose()?
            .and_then(|(k, _)| key_seq(&k)))
    }

    /// Writes everything to disk (also done by every `append_batch`).
    pub fn flush(&self) -> Result<(), WalError> {
        self.db.flush()?;
        Ok(())
    }

    /// Raw access for tests that must plant a corrupt record.
    #[doc(hidden)]
    pub fn insert_raw_for_test(&self, seq: u64, bytes: &[u8]) -> Result<(), WalError> {
        self.db.insert(event_key(seq), bytes)?;
        self.db.flush()?;
        self.pending_bytes.fetch_add(bytes.len() as u64, Relaxed);
        self.pending_count.fetch_add(1, Relaxed);
        Ok(())
    }

    fn check_fill(&self) {
        let fill = self.pending_bytes() as f64 / self.max_bytes.max(1) as f64;
        if fill >= 0.8 && !self.warned_high.swap(true, Relaxed) {
            tracing::warn!(
                fill_percent = (fill * 100.0) as u64,
                "WAL above 80 % of wal_max_bytes: the broker is not acknowledging"
            );
        } else if fill < 0.7 && self.warned_high.swap(false, Relaxed) {
            tracing::info!(fill_percent = (fill * 100.0) as u64, "WAL back under 70 %");
        }
    }

    fn publish_gauges(&self) {
        self.metrics
            .wal_pending
            .store(self.pending_count(), Relaxed);
        self.metrics
            .wal_pending_bytes
            .store(self.pending_bytes(), Relaxed);
    }
}

fn dir_error(dir: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Dir {
        path: dir.display().to_string(),
        source,
    }
}

fn prepare_dir(dir: &Path) -> Result<(), WalError> {
    std::fs::create_dir_all(dir).map_err(dir_error(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(dir_error(dir))?;
    }
    Ok(())
}

/// sled creates files with the process umask; the WAL holds command lines.
fn restrict_files(dir: &Path) -> Result<(), WalError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir).map_err(dir_error(dir))? {
            let entry = entry.map_err(dir_error(dir))?;
            let path = entry.path();
            let mode = if path.is_dir() { 0o700 } else { 0o600 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(dir_error(dir))?;
            if path.is_dir() {
                restrict_files(&path)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, EventSource, ProcessEvent};

    fn event(seq: u64) -> EventBytes {
        let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, 42);
        e.seq = seq;
        codec::encode(&e).expect("encodes")
    }

    /// Appends one event per seq as a single batch; returns how many were stored.
    fn append(wal: &Wal, seqs: impl IntoIterator<Item = u64>) -> usize {
        let events: Vec<_> = seqs.into_iter().map(|s| (s, event(s))).collect();
        wal.append_batch(events.iter().map(|(s, b)| (*s, b.as_slice())))
            .expect("append")
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("procmond-wal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_reopen_replays_in_order_and_forgets_acked() {
        let dir = temp_dir("reopen");
        let metrics = Arc::new(Metrics::default());
        {
            let wal = Wal::open(&dir, 1 << 20, metrics.clone()).expect("open");
            assert_eq!(wal.next_seq(), 1);
            assert_eq!(append(&wal, 1..=5), 5);
            wal.ack(2).expect("ack");
        }
        let wal = Wal::open(&dir, 1 << 20, metrics).expect("reopen");
        assert_eq!(wal.next_seq(), 6);
        let seqs: Vec<u64> = wal
            .read_from(0, 100)
            .expect("read")
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs, [1, 3, 4, 5]);
        assert_eq!(wal.pending_count(), 4);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for f in std::fs::read_dir(&dir).expect("ls").flatten() {
            if f.path().is_file() {
                assert_eq!(
                    f.metadata().expect("meta").permissions().mode() & 0o077,
                    0,
                    "{:?}",
                    f.path()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn full_wal_keeps_oldest_and_counts_drops() {
        let dir = temp_dir("full");
        let metrics = Arc::new(Metrics::default());
        let one = event(1).len() as u64;
        let wal = Wal::open(&dir, one * 3, metrics.clone()).expect("open");
        assert_eq!(append(&wal, 1..=5), 3);
        assert_eq!(metrics.wal_dropped_full.load(Relaxed), 2);
        let seqs: Vec<u64> = wal
            .read_from(0, 100)
            .expect("read")
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(wal.next_seq(), 6, "dropped events still consume their seq");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_record_is_skipped_counted_and_the_rest_replays() {
        let dir = temp_dir("corrupt");
        let metrics = Arc::new(Metrics::default());
        let wal = Wal::open(&dir, 1 << 20, metrics.clone()).expect("open");
        append(&wal, [1, 3]);
        wal.insert_raw_for_test(2, b"\xff\x00garbage")
            .expect("plant");
        let seqs: Vec<u64> = wal
            .read_from(0, 100)
            .expect("read")
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs, [1, 3]);
        assert_eq!(metrics.wal_corrupt.load(Relaxed), 1);
        assert_eq!(wal.pending_count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
