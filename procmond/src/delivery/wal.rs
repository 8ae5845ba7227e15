//! The write-ahead log: every batch is on disk before it is published, and
//! leaves only when the broker acknowledges it.
//!
//! Storage is sled, one tree: `e` + big-endian first seq → the batch's bytes
//! (sequence order is key order), and `m:next_seq` → the next sequence
//! number, written in the same atomic write as the batches so `seq` stays
//! monotonic across crashes. One key per batch: one insert, one flush and
//! one remove for what used to cost that per event.
//!
//! Durability policy (docs/decisions.md): group commit. The batches that
//! arrived together are applied and then `flush`ed (sled writes them and
//! syncs the file range) before any of them is published, so a collector or
//! kernel crash at any instant loses nothing a subscriber may have seen.
//! sled's flush is not an fdatasync: with a volatile disk cache a power cut
//! can lose the newest batches (those already stored by a sink are safe:
//! sinks fdatasync).
//!
//! Bounded: pending bytes are capped (`max_bytes`); at 80 % a warning is
//! logged, and when full the oldest unacknowledged batches are kept and new
//! ones are counted as dropped, event by event. On replay a record that is
//! not a batch is counted and removed; in a batch, events that fail
//! validation are counted and skipped, and the rest replays.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::metrics::Metrics;
use crate::model::batch::Batch;
use crate::model::codec;

const EVENT_PREFIX: u8 = b'e';
const NEXT_SEQ_KEY: &[u8] = b"m:next_seq";
/// The WAL's identity, written once when the tree is created.
const EPOCH_KEY: &[u8] = b"m:epoch";
/// sled's own page cache: small, so the WAL stays within the RSS budget
/// (batches are written once and read back at most once).
const CACHE_BYTES: u64 = 2 * 1024 * 1024;

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

/// Events in a stored batch, from its header (0 if it has none).
fn stored_count(value: &[u8]) -> u64 {
    value
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
}

/// The collector's write-ahead log.
#[derive(Debug)]
pub struct Wal {
    db: sled::Db,
    max_bytes: u64,
    pending_bytes: AtomicU64,
    pending_count: AtomicU64,
    next_seq: AtomicU64,
    epoch: u64,
    warned_high: AtomicBool,
    /// Keys from here on were written by this process from batches it built
    /// itself; older ones come from disk and are validated event by event.
    written_here_from: u64,
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
        let epoch = match db
            .get(EPOCH_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        {
            Some(b) => u64::from_be_bytes(b),
            None => {
                // A new WAL: its creation time (ns) names it, so one created
                // after a wipe never shares its numbering with the old one.
                let epoch = u64::try_from(crate::clock::now_unix_ns())
                    .unwrap_or(1)
                    .max(1);
                db.insert(EPOCH_KEY, &epoch.to_be_bytes())?;
                db.flush()?;
                tracing::info!(epoch, "new WAL: events are numbered from 1 in this epoch");
                epoch
            }
        };
        let stored_next = db
            .get(NEXT_SEQ_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(1, u64::from_be_bytes);
        let (mut bytes, mut count, mut last) = (0u64, 0u64, 0u64);
        for item in db.scan_prefix([EVENT_PREFIX]) {
            let (k, v) = item?;
            if let Some(seq) = key_seq(&k) {
                let n = stored_count(&v);
                bytes += v.len() as u64;
                count += n;
                last = last.max(seq + n.saturating_sub(1));
            }
        }
        let next_seq = stored_next.max(last + 1);
        let wal = Self {
            db,
            max_bytes,
            pending_bytes: AtomicU64::new(bytes),
            pending_count: AtomicU64::new(count),
            next_seq: AtomicU64::new(next_seq),
            epoch,
            warned_high: AtomicBool::new(false),
            written_here_from: next_seq,
            metrics,
        };
        wal.publish_gauges();
        Ok(wal)
    }

    /// The identity of this WAL (created with it, kept across reopens).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The first sequence number not yet used by any stored event.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Relaxed)
    }

    /// Events awaiting acknowledgement.
    pub fn pending_count(&self) -> u64 {
        self.pending_count.load(Relaxed)
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes.load(Relaxed)
    }

    /// Stores `batches` with one write and one flush. Returns how many
    /// events were stored; batches that did not fit were counted as dropped.
    pub fn append(&self, batches: &[Batch]) -> Result<u64, WalError> {
        let mut write = sled::Batch::default();
        let (mut stored, mut added, mut dropped) = (0u64, 0u64, 0u64);
        let mut next = None;
        let base = self.pending_bytes();
        for batch in batches.iter().filter(|b| !b.is_empty()) {
            let end = batch.first_seq() + batch.len() as u64;
            next = Some(next.map_or(end, |n: u64| n.max(end)));
            let len = batch.as_bytes().len() as u64;
            if base + added + len > self.max_bytes {
                dropped += batch.len() as u64;
                continue;
            }
            write.insert(&event_key(batch.first_seq()), batch.as_bytes());
            added += len;
            stored += batch.len() as u64;
        }
        let Some(next) = next else { return Ok(0) };
        let next = next.max(self.next_seq());
        write.insert(NEXT_SEQ_KEY, &next.to_be_bytes());
        self.db.apply_batch(write)?;
        self.db.flush()?;
        self.next_seq.store(next, Relaxed);
        self.pending_bytes.fetch_add(added, Relaxed);
        self.pending_count.fetch_add(stored, Relaxed);
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

    /// The broker acknowledged the batch stored under `key`: forget it.
    /// Returns how many events it held.
    pub fn ack(&self, key: u64) -> Result<u64, WalError> {
        let Some(old) = self.db.remove(event_key(key))? else {
            return Ok(0);
        };
        let n = stored_count(&old);
        self.pending_bytes.fetch_sub(old.len() as u64, Relaxed);
        self.pending_count.fetch_sub(n, Relaxed);
        self.publish_gauges();
        self.check_fill();
        Ok(n)
    }

    /// Up to `limit` stored batches with key `>= from`, in sequence order,
    /// each with its key. A record that is not a batch is counted and
    /// removed; events that fail validation are counted and left out.
    pub fn read_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, Batch)>, WalError> {
        let mut out = Vec::new();
        for item in self.db.range(event_key(from)..=event_key(u64::MAX)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some(key) = key_seq(&k) else { continue };
            let batch = match Batch::parse(codec::aligned_copy(&v)) {
                Ok(b) => b,
                Err(e) => {
                    Metrics::incr(&self.metrics.wal_corrupt);
                    tracing::warn!(key, error = %e, "corrupt WAL record skipped");
                    self.ack(key)?;
                    continue;
                }
            };
            if key >= self.written_here_from {
                // Built and encoded by this process; sled checksums what it
                // stores. Replayed records get the full check below.
                out.push((key, batch));
                continue;
            }
            let (valid, invalid) = batch.validated();
            if invalid > 0 {
                Metrics::add(&self.metrics.wal_corrupt, invalid as u64);
                tracing::warn!(key, invalid, "corrupt events in a WAL batch skipped");
            }
            match valid {
                Some(b) => out.push((key, b)),
                None => {
                    self.ack(key)?;
                }
            }
        }
        Ok(out)
    }

    /// The lowest stored key, if any.
    pub fn first_seq(&self) -> Result<Option<u64>, WalError> {
        Ok(self
            .db
            .scan_prefix([EVENT_PREFIX])
            .next()
            .transpose()?
            .and_then(|(k, _)| key_seq(&k)))
    }

    /// Writes everything to disk (also done by every `append`).
    pub fn flush(&self) -> Result<(), WalError> {
        self.db.flush()?;
        Ok(())
    }

    /// Raw access for tests that must plant a corrupt record (as one from
    /// an earlier run: it gets the replay checks).
    #[doc(hidden)]
    pub fn insert_raw_for_test(&self, key: u64, bytes: &[u8]) -> Result<(), WalError> {
        if key >= self.written_here_from {
            return Err(WalError::Sled(sled::Error::Unsupported(format!(
                "plant test records below {} (earlier runs' keys)",
                self.written_here_from
            ))));
        }
        self.db.insert(event_key(key), bytes)?;
        self.db.flush()?;
        self.pending_bytes.fetch_add(bytes.len() as u64, Relaxed);
        self.pending_count.fetch_add(stored_count(bytes), Relaxed);
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
    use crate::model::batch::BatchBuilder;
    use crate::model::{EventKind, EventSource, ProcessEvent};

    /// One batch of one event per seq.
    fn batch(seqs: impl IntoIterator<Item = u64>) -> Batch {
        let mut b = BatchBuilder::new();
        for seq in seqs {
            let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, 42);
            e.seq = seq;
            b.push(&e).expect("encodes");
        }
        b.finish()
    }

    fn keys(wal: &Wal) -> Vec<u64> {
        wal.read_from(0, 100)
            .expect("read")
            .iter()
            .map(|(k, _)| *k)
            .collect()
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
            assert_eq!(
                wal.append(&[batch(1..=2), batch(3..=3)]).expect("append"),
                3
            );
            assert_eq!(wal.append(&[batch(4..=5)]).expect("append"), 2);
            assert_eq!(wal.ack(3).expect("ack"), 1);
        }
        let wal = Wal::open(&dir, 1 << 20, metrics).expect("reopen");
        assert_eq!(wal.next_seq(), 6);
        assert_eq!(keys(&wal), [1, 4]);
        let seqs: Vec<u64> = wal.read_from(0, 100).expect("read")[1]
            .1
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [4, 5]);
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
        let one = batch(1..=2).as_bytes().len() as u64;
        let wal = Wal::open(&dir, one * 2, metrics.clone()).expect("open");
        let batches = [batch(1..=2), batch(3..=4), batch(5..=6)];
        assert_eq!(wal.append(&batches).expect("append"), 4);
        assert_eq!(metrics.wal_dropped_full.load(Relaxed), 2);
        assert_eq!(keys(&wal), [1, 3]);
        assert_eq!(wal.next_seq(), 7, "dropped events still consume their seq");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_records_are_skipped_counted_and_the_rest_replays() {
        let dir = temp_dir("corrupt");
        let metrics = Arc::new(Metrics::default());
        Wal::open(&dir, 1 << 20, metrics.clone())
            .and_then(|w| w.append(&[batch([10]), batch([14, 15])]))
            .expect("append");
        // Reopened: what is on disk now comes from an earlier run.
        let wal = Wal::open(&dir, 1 << 20, metrics.clone()).expect("reopen");
        wal.insert_raw_for_test(11, b"\xff\x00garbage")
            .expect("plant");
        // A batch whose structure holds but whose first event is garbled.
        let mut bytes = batch([12, 13]).as_bytes().to_vec();
        for b in &mut bytes[32..56] {
            *b = 0xff;
        }
        wal.insert_raw_for_test(12, &bytes).expect("plant");
        assert!(
            wal.insert_raw_for_test(wal.next_seq(), b"x").is_err(),
            "keys of this run are not planted"
        );
        let read = wal.read_from(0, 100).expect("read");
        let seqs: Vec<Vec<u64>> = read
            .iter()
            .map(|(_, b)| b.iter().map(|e| e.seq).collect())
            .collect();
        assert_eq!(seqs, [vec![10], vec![13], vec![14, 15]]);
        assert_eq!(metrics.wal_corrupt.load(Relaxed), 2);
        assert_eq!(keys(&wal), [10, 12, 14], "the garbage record is gone");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
