//! Opening the WAL, and opening it again after a storage error: sled's
//! tree is read into the counters, and whatever its marks say it held and
//! no longer does is counted as `wal_lost` (wal.rs says why).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    CACHE_BYTES, CLOSE_TIMEOUT, Deferred, EPOCH_KEY, EVENT_PREFIX, LOCK_WAIT, MARKS_KEY,
    NEXT_SEQ_KEY, Wal, WalError, key_seq, read_u64, stored_count,
};
use crate::delivery::wal_dir::{self, dir_error, restrict_files};
use crate::delivery::wal_marks::{self, Found, Marks, MarksFile};
use crate::metrics::Metrics;

pub(super) fn open_db(dir: &Path) -> Result<sled::Db, WalError> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES)
        .mode(sled::Mode::LowSpace)
        .flush_every_ms(None)
        .open()?;
    restrict_files(dir)?;
    Ok(db)
}

/// Opens the tree again just after its old handle was dropped. sled's I/O
/// threads can hold the old handle's file lock a moment longer (its own
/// test suite blocks on that lock for the same reason), and sled reports
/// the conflict only as text: wait for the lock up to `LOCK_WAIT`.
fn open_db_after_close(dir: &Path) -> Result<sled::Db, WalError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match open_db(dir) {
            Err(WalError::Sled(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` (refused if it is a symlink or
    /// another user could swap it; made 0700, files 0600), and
    /// counts as `wal_lost` what its marks say it held and it no longer does.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<Self, WalError> {
        wal_dir::prepare(dir)?;
        let (marks_file, found) = MarksFile::open(dir).map_err(dir_error(dir))?;
        let db = open_db(dir)?;
        let wal = Self {
            db: Mutex::new(None),
            dir: dir.to_path_buf(),
            max_bytes,
            pending_bytes: AtomicU64::new(0),
            pending_count: AtomicU64::new(0),
            next_seq: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            warned_high: AtomicBool::new(false),
            written_here_from: AtomicU64::new(1),
            marks: Mutex::new(Marks::default()),
            marks_file,
            deferred: Mutex::new(Deferred::default()),
            metrics,
        };
        wal.load(db, &found, None)?;
        Ok(wal)
    }

    /// After a storage error: closes sled (which refuses every operation
    /// once a write failed) and opens it again, keeping this WAL's epoch
    /// and sequence numbers. What was stored and is gone counts as lost.
    pub fn reopen(&self) -> Result<(), WalError> {
        let old = self.db.lock().ok().and_then(|mut slot| slot.take());
        if let Some(old) = old {
            // sled flushes when the last handle drops, and after some write
            // errors that flush never returns: drop it on a thread of its
            // own, and give up on reopening in this process if it hangs
            // (the file lock stays held).
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let dropper = std::thread::Builder::new()
                .name("wal-close".into())
                .spawn(move || {
                    drop(old);
                    let _ = done_tx.send(());
                });
            if dropper.is_err() || done_rx.recv_timeout(CLOSE_TIMEOUT).is_err() {
                return Err(WalError::Stuck);
            }
        }
        let db = open_db_after_close(&self.dir)?;
        let found = Found::Read(self.current_marks());
        self.load(db, &found, Some(self.epoch()))
    }

    /// Reads the tree's state into this WAL, judged against `found` marks.
    fn load(&self, db: sled::Db, found: &Found, keep_epoch: Option<u64>) -> Result<(), WalError> {
        let (epoch, new_tree) = tree_epoch(&db, found, keep_epoch)?;
        let Held {
            bytes,
            count,
            last,
            settled_bytes,
            settled_count,
        } = self.scan_held(&db)?;
        let in_tree = db
            .get(MARKS_KEY)?
            .and_then(|v| Marks::decode(&v).ok())
            .filter(|m| m.epoch == epoch);
        let witness_next = match found {
            Found::Read(m) if m.epoch == epoch => m.next_seq,
            _ => 1,
        };
        let marked_next = witness_next.max(in_tree.map_or(1, |m| m.next_seq));
        let next_seq = read_u64(&db, NEXT_SEQ_KEY)?
            .unwrap_or(1)
            .max(last + 1)
            .max(marked_next)
            .max(self.next_seq());
        self.judge_loss(found, in_tree.as_ref(), epoch, count, new_tree);
        let marks = Marks {
            epoch,
            next_seq,
            stored: count,
            acked: 0,
        };
        db.insert(MARKS_KEY, &marks.encode()[..])?;
        db.flush()?;
        self.set_marks(marks)?;
        self.epoch.store(epoch, Relaxed);
        self.next_seq.store(next_seq, Relaxed);
        self.written_here_from.store(next_seq, Relaxed);
        // Acknowledged batches still in the tree (a reopen in this
        // process) are not pending; the marks count them until removed.
        self.pending_bytes.store(bytes - settled_bytes, Relaxed);
        self.pending_count.store(count - settled_count, Relaxed);
        if let Ok(mut slot) = self.db.lock() {
            *slot = Some(db);
        }
        self.publish_gauges();
        Ok(())
    }

    /// What the tree holds: bytes, events and the last sequence, and of
    /// them what was already acknowledged (removal deferred). Deferred keys
    /// the tree no longer holds are forgotten.
    fn scan_held(&self, db: &sled::Db) -> Result<Held, WalError> {
        let mut held = Held::default();
        let deferred = self.deferred_keys();
        let mut still_held = Vec::new();
        for item in db.scan_prefix([EVENT_PREFIX]) {
            let (k, v) = item?;
            if let Some(seq) = key_seq(&k) {
                let n = stored_count(&v);
                held.bytes += v.len() as u64;
                held.count += n;
                held.last = held.last.max(seq + n.saturating_sub(1));
                if deferred.contains_key(&seq) {
                    held.settled_bytes += v.len() as u64;
                    held.settled_count += n;
                    still_held.push(seq);
                }
            }
        }
        if let Ok(mut d) = self.deferred.lock() {
            d.keys.retain(|k, _| still_held.binary_search(k).is_ok());
        }
        Ok(held)
    }

    /// Counts (and says) what the tree lost, judged by the marks stored in
    /// it and by the witness beside it (`wal_marks::lost_events`).
    fn judge_loss(
        &self,
        found: &Found,
        in_tree: Option<&Marks>,
        epoch: u64,
        count: u64,
        new_tree: bool,
    ) {
        match (wal_marks::lost_events(found, in_tree, epoch, count), found) {
            (Some(0), _) => {}
            (Some(lost), _) => {
                Metrics::add(&self.metrics.wal_lost, lost);
                tracing::error!(
                    lost,
                    pending = count,
                    dir = %self.dir.display(),
                    "WAL storage lost events it had stored (damaged, truncated or replaced files)"
                );
            }
            (None, Found::Unreadable(why)) => {
                tracing::warn!(%why, "WAL marks unreadable: this start cannot check the WAL for damage");
            }
            (None, _) if !new_tree => {
                tracing::warn!("WAL without marks: this start cannot check it for damage");
            }
            (None, _) => {}
        }
    }
}

/// What a scan of the tree found (`Wal::scan_held`).
#[derive(Debug, Default)]
struct Held {
    bytes: u64,
    count: u64,
    last: u64,
    settled_bytes: u64,
    settled_count: u64,
}

/// The tree's epoch, and whether the tree is new. A new tree under marks
/// (sled's files lost, the marks kept) continues their epoch and numbering,
/// so the gap shows downstream too; a new WAL is named by its creation time
/// (ns), so one created after a wipe never shares its numbering with the
/// old one.
fn tree_epoch(
    db: &sled::Db,
    found: &Found,
    keep_epoch: Option<u64>,
) -> Result<(u64, bool), WalError> {
    if let Some(e) = read_u64(db, EPOCH_KEY)? {
        return Ok((e, false));
    }
    let marked = match found {
        Found::Read(m) => Some(m.epoch),
        _ => None,
    };
    let epoch = keep_epoch.or(marked).unwrap_or_else(|| {
        u64::try_from(crate::clock::now_unix_ns())
            .unwrap_or(1)
            .max(1)
    });
    db.insert(EPOCH_KEY, &epoch.to_be_bytes())?;
    db.flush()?;
    tracing::info!(epoch, "new WAL: events are numbered from 1 in this epoch");
    Ok((epoch, true))
}
