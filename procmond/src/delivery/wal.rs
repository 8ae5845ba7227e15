//! The write-ahead log: every batch is on disk before it is published, and
//! leaves only when the broker acknowledges it.
//!
//! Storage is sled, one tree: `e` + big-endian first seq → the batch's bytes
//! (sequence order is key order), and `m:next_seq` → the next sequence
//! number and `m:marks` → the marks, written after the batches in sled's
//! log order (`write_in_order`) so `seq` stays monotonic across crashes. One key per batch: one insert, one flush and
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
//! Damage is not silent: sled recovers a damaged log to whatever prefix it
//! can read and says nothing, so the WAL keeps marks (`wal_marks`: in the
//! tree, written after the data they count, plus a witness file beside it)
//! and counts what they say was stored and is gone as `wal_lost`. After a write error sled refuses every further operation;
//! `reopen` closes and opens it again (the connector retries with backoff).
//!
//! Acknowledgements cost no sled write of their own: acknowledged batches
//! are forgotten at once in memory (counts, replay cursor) and leave the
//! tree with the next append's write, after the marks that count them;
//! with no append for `SETTLE_AFTER`, `settle` writes them alone, and a clean
//! close does too. A crash before that replays them: at-least-once, as an
//! ack lost on the wire would, and never counted as lost.
//!
//! Bounded: pending bytes are capped (`max_bytes`); at 80 % a warning is
//! logged, and when full the oldest unacknowledged batches are kept and new
//! ones are counted as dropped, event by event. On replay a record that is
//! not a batch is counted and removed; in a batch, events that fail
//! validation are counted and skipped, and the rest replays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::wal_marks::{Marks, MarksFile};
use crate::metrics::Metrics;
use crate::model::batch::Batch;
use crate::model::codec;

const EVENT_PREFIX: u8 = b'e';
const NEXT_SEQ_KEY: &[u8] = b"m:next_seq";
/// The WAL's identity, written once when the tree is created.
const EPOCH_KEY: &[u8] = b"m:epoch";
/// The marks (`wal_marks`), written after the batches they count and
/// before the removals (`write_in_order`): after a crash they never count
/// more than the tree holds.
const MARKS_KEY: &[u8] = b"m:marks";
/// sled's own page cache: small, so the WAL stays within the RSS budget
/// (batches are written once and read back at most once).
const CACHE_BYTES: u64 = 2 * 1024 * 1024;
/// How long a failed WAL may take to close before a reopen gives up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reopen waits for sled's I/O threads to let go of the old
/// handle's file lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Acknowledged batches wait at most this long for an append to carry
/// their removal before `settle` writes it alone.
pub const SETTLE_AFTER: Duration = Duration::from_secs(1);
/// ... or until this many are waiting.
const SETTLE_KEYS: usize = 4096;

/// Acknowledged batches still in the tree: key → (events, bytes).
#[derive(Debug, Default)]
struct Deferred {
    keys: BTreeMap<u64, (u64, u64)>,
    since: Option<Instant>,
}

impl Deferred {
    fn events(&self) -> u64 {
        self.keys.values().map(|(n, _)| n).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("WAL directory {path} refused: {reason}")]
    Refused { path: String, reason: String },
    #[error("WAL storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("WAL marks file: {0}")]
    Marks(std::io::Error),
    #[error("the WAL is closed after a storage error; it is being reopened")]
    Closed,
    #[error("the WAL did not close after a storage error; only a restart can reopen it")]
    Stuck,
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

fn read_u64(db: &sled::Db, key: &[u8]) -> Result<Option<u64>, WalError> {
    Ok(db
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes))
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
    /// `None` between a storage error and the reopen that follows it.
    db: Mutex<Option<sled::Db>>,
    dir: PathBuf,
    max_bytes: u64,
    pending_bytes: AtomicU64,
    pending_count: AtomicU64,
    next_seq: AtomicU64,
    epoch: AtomicU64,
    warned_high: AtomicBool,
    /// Keys from here on were written by this process from batches it built
    /// itself; older ones come from disk and are validated event by event.
    written_here_from: AtomicU64,
    marks: Mutex<Marks>,
    marks_file: MarksFile,
    /// Acknowledged, forgotten in memory, removed with the next write.
    deferred: Mutex<Deferred>,
    metrics: Arc<Metrics>,
}

impl Wal {
    fn db(&self) -> Result<sled::Db, WalError> {
        self.db
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .ok_or(WalError::Closed)
    }

    fn current_marks(&self) -> Marks {
        self.marks.lock().map(|m| *m).unwrap_or_default()
    }

    /// The marks after `change`, to be written with the data they count.
    fn next_marks(&self, change: impl FnOnce(&mut Marks)) -> Marks {
        let mut m = self.current_marks();
        change(&mut m);
        m
    }

    /// After sled took the write that carried `marks`: keeps them, and
    /// rewrites the witness beside the tree.
    fn set_marks(&self, marks: Marks) -> Result<(), WalError> {
        if let Ok(mut m) = self.marks.lock() {
            *m = marks;
        }
        self.marks_file.write(&marks).map_err(WalError::Marks)
    }

    /// Where the WAL lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The identity of this WAL (created with it, kept across reopens).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    /// The first sequence number not yet used by any stored event.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Relaxed)
    }

    /// Sequence numbers below `next` were used by events that could not be
    /// stored (sent to the agent from memory, or lost): they are never
    /// handed out again, even after a restart while the WAL is faulted. The
    /// tree cannot take a write then, so only the marks witness (rewritten
    /// in place, no new disk space) remembers it until the next append.
    pub fn skip_to(&self, next: u64) -> Result<(), WalError> {
        if next <= self.next_seq() {
            return Ok(());
        }
        self.next_seq.fetch_max(next, Relaxed);
        let marks = self.next_marks(|m| m.next_seq = m.next_seq.max(next));
        self.set_marks(marks)
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
    /// On an error nothing of `batches` is counted: the caller decides.
    pub fn append(&self, batches: &[Batch]) -> Result<u64, WalError> {
        let db = self.db()?;
        let mut data: Vec<([u8; 9], &[u8])> = Vec::with_capacity(batches.len());
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
            data.push((event_key(batch.first_seq()), batch.as_bytes()));
            added += len;
            stored += batch.len() as u64;
        }
        let Some(next) = next else { return Ok(0) };
        let next = next.max(self.next_seq());
        let settled = self.take_deferred();
        let marks = self.next_marks(|m| {
            m.next_seq = next;
            m.stored += stored;
            m.acked += settled.events();
        });
        let written = write_in_order(&db, &data, Some(next), &marks, &settled)
            .and_then(|()| db.flush().map(drop));
        if let Err(e) = written {
            self.restore_deferred(settled);
            return Err(e.into());
        }
        self.next_seq.store(next, Relaxed);
        self.pending_bytes.fetch_add(added, Relaxed);
        self.pending_count.fetch_add(stored, Relaxed);
        self.set_marks(marks)?;
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
        self.ack_all(&[key])
    }

    /// The broker acknowledged the batches stored under `keys`: forgets
    /// them at once (counts, replay) and removes them from the tree with
    /// the next write, after the marks counting them (`write_in_order`). Returns how many events they held.
    pub fn ack_all(&self, keys: &[u64]) -> Result<u64, WalError> {
        let db = self.db()?;
        let (mut events, mut bytes) = (0u64, 0u64);
        let waiting = {
            let mut d = self.deferred.lock().map_err(|_| WalError::Closed)?;
            for key in keys {
                if d.keys.contains_key(key) {
                    continue;
                }
                if let Some(old) = db.get(event_key(*key))? {
                    let n = stored_count(&old);
                    events += n;
                    bytes += old.len() as u64;
                    d.keys.insert(*key, (n, old.len() as u64));
                }
            }
            if bytes > 0 && d.since.is_none() {
                d.since = Some(Instant::now());
            }
            d.keys.len()
        };
        if bytes == 0 {
            return Ok(0);
        }
        self.pending_bytes.fetch_sub(bytes, Relaxed);
        self.pending_count.fetch_sub(events, Relaxed);
        self.publish_gauges();
        self.check_fill();
        if waiting >= SETTLE_KEYS {
            self.settle()?;
        }
        Ok(events)
    }

    /// When `settle` is due: `SETTLE_AFTER` after the first acknowledgement
    /// no append has carried yet.
    pub fn settle_at(&self) -> Option<Instant> {
        self.deferred.lock().ok()?.since.map(|t| t + SETTLE_AFTER)
    }

    /// Removes the acknowledged batches no append carried, with the marks
    /// counting them, in one write of their own.
    pub fn settle(&self) -> Result<(), WalError> {
        let mut settled = self.take_deferred();
        if settled.keys.is_empty() {
            return Ok(());
        }
        let marks = self.next_marks(|m| m.acked += settled.events());
        let written = self
            .db()
            .and_then(|db| Ok(write_in_order(&db, &[], None, &marks, &settled)?));
        if let Err(e) = written {
            // Tried again `SETTLE_AFTER` from now, not at once: a WAL that
            // cannot be written must not spin the connector.
            settled.since = Some(Instant::now());
            self.restore_deferred(settled);
            return Err(e);
        }
        self.set_marks(marks)
    }

    fn take_deferred(&self) -> Deferred {
        self.deferred
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    /// A write that was to carry `settled` failed: they wait for the next.
    fn restore_deferred(&self, settled: Deferred) {
        if let Ok(mut d) = self.deferred.lock() {
            d.keys.extend(settled.keys);
            d.since = match (d.since, settled.since) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    fn deferred_keys(&self) -> BTreeMap<u64, (u64, u64)> {
        self.deferred
            .lock()
            .map(|d| d.keys.clone())
            .unwrap_or_default()
    }

    fn is_deferred(&self, key: u64) -> bool {
        self.deferred
            .lock()
            .is_ok_and(|d| d.keys.contains_key(&key))
    }

    /// Up to `limit` stored batches with key `>= from`, in sequence order,
    /// each with its key. A record that is not a batch is counted and
    /// removed; events that fail validation are counted and left out.
    pub fn read_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, Batch)>, WalError> {
        let mut out = Vec::new();
        let written_here_from = self.written_here_from.load(Relaxed);
        for item in self.db()?.range(event_key(from)..=event_key(u64::MAX)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some(key) = key_seq(&k) else { continue };
            if self.is_deferred(key) {
                continue;
            }
            let batch = match Batch::parse(codec::aligned_copy(&v)) {
                Ok(b) => b,
                Err(e) => {
                    Metrics::incr(&self.metrics.wal_corrupt);
                    tracing::warn!(key, error = %e, "corrupt WAL record skipped");
                    self.ack(key)?;
                    continue;
                }
            };
            if key >= written_here_from {
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
        for item in self.db()?.scan_prefix([EVENT_PREFIX]) {
            let (k, _) = item?;
            if let Some(key) = key_seq(&k).filter(|k| !self.is_deferred(*k)) {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Writes everything to disk (also done by every `append`).
    pub fn flush(&self) -> Result<(), WalError> {
        self.settle()?;
        self.db()?.flush()?;
        Ok(())
    }

    /// Raw access for tests that must plant a corrupt record (as one from
    /// an earlier run: it gets the replay checks).
    #[doc(hidden)]
    pub fn insert_raw_for_test(&self, key: u64, bytes: &[u8]) -> Result<(), WalError> {
        let written_here_from = self.written_here_from.load(Relaxed);
        if key >= written_here_from {
            return Err(WalError::Sled(sled::Error::Unsupported(format!(
                "plant test records below {written_here_from} (earlier runs' keys)"
            ))));
        }
        let db = self.db()?;
        let marks = self.next_marks(|m| m.stored += stored_count(bytes));
        let mut write = sled::Batch::default();
        write.insert(&event_key(key), bytes);
        write.insert(MARKS_KEY, &marks.encode()[..]);
        db.apply_batch(write)?;
        db.flush()?;
        self.pending_bytes.fetch_add(bytes.len() as u64, Relaxed);
        self.pending_count.fetch_add(stored_count(bytes), Relaxed);
        self.set_marks(marks)?;
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

/// One WAL write, in the order that keeps every crash honest: the batches,
/// the next seq, the marks, then the removals of acknowledged batches.
///
/// Single-key sled writes, not `apply_batch`: a batch costs sled two more
/// log-buffer writes (and I/O-pool wake-ups) around its manifest. sled
/// recovers its log up to the first missing or torn message, so a crash
/// leaves a prefix of these writes, and in every prefix the tree holds at
/// least what the marks say is pending: batches before the marks that
/// count them, removals after. The marks never claim a loss that did not
/// happen (acknowledged batches a crash kept replay, at-least-once), and
/// `load` recounts them from the tree on the next open.
fn write_in_order(
    db: &sled::Db,
    data: &[([u8; 9], &[u8])],
    next_seq: Option<u64>,
    marks: &Marks,
    settled: &Deferred,
) -> sled::Result<()> {
    for (key, bytes) in data {
        db.insert(key, *bytes)?;
    }
    if let Some(next) = next_seq {
        db.insert(NEXT_SEQ_KEY, &next.to_be_bytes())?;
    }
    db.insert(MARKS_KEY, &marks.encode()[..])?;
    for key in settled.keys.keys() {
        db.remove(event_key(*key))?;
    }
    Ok(())
}

/// A clean close writes the removals no append carried.
impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.settle() {
            tracing::warn!(error = %e, "acknowledged batches stay in the WAL and replay on the next start");
        }
    }
}

#[path = "wal_open.rs"]
mod open;

#[cfg(test)]
#[path = "wal_tests.rs"]
pub(crate) mod tests;
