//! Storing batches in the WAL, and what the connector does when it cannot:
//! a full disk or an I/O error must neither blind the sensor nor turn into
//! a restart loop.
//!
//! * A full disk is seen before sled sees it: every group commit checks the
//!   WAL filesystem's free space against `FREE_RESERVE` (one `statvfs`). sled
//!   must never run out of space mid-write: after some write errors it
//!   neither recovers nor closes (its flush on drop waits forever).
//! * While the WAL cannot be written the collector stays up, says so, and
//!   keeps the agent seeing events: health and heartbeats turn `degraded`
//!   with the reason (`wal_fault`), and new batches go straight to the agent
//!   from memory, un-persisted (flagged so in the batch header). Live
//!   visibility outranks the durability of the newest events.
//! * The ack path is kept: a batch sent from memory stays here until the
//!   agent acknowledges it (then it is forgotten and its events counted as
//!   `events_unpersisted`, never sent again); if the connection drops first
//!   it goes back to the hold and is sent again on the next connection.
//! * Memory is bounded: batches not yet acknowledged (held while the agent
//!   is away or not yet monitoring, or in flight) take at most `HOLD_BYTES`;
//!   beyond that, and whatever is still here at exit, neither the WAL nor the
//!   agent could take: counted as `events_unstored_lost`.
//! * Storing is retried — free space every second, a storage error by
//!   reopening the WAL with backoff (1, 2, 4 … 30 s). When it succeeds what
//!   is still unacknowledged here is stored first and the WAL is the queue
//!   again.
//! * A storage error the WAL cannot be reopened from in this process
//!   (`WalError::Stuck`) ends the connector with that error; the agent
//!   restarts the collector with its backoff.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::wal::{Wal, WalError};
use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::model::batch::Batch;

/// Most bytes of unacknowledged batches kept in memory while the WAL cannot
/// be written (held for the agent, or sent to it and not yet acknowledged).
pub const HOLD_BYTES: usize = 4 * 1024 * 1024;
/// Free space the WAL's filesystem must keep beyond a write: room for
/// sled's segments (512 KiB each) and a full group commit (4 MiB).
pub const FREE_RESERVE: u64 = 8 * 1024 * 1024;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Below the free-space reserve: sled was not touched.
    DiskFull,
    /// sled reported an error: the WAL must be reopened.
    Storage,
}

#[derive(Debug)]
struct Fault {
    cause: Cause,
    retry_at: Instant,
    backoff: Backoff,
}

/// The connector's side of the WAL.
#[derive(Debug)]
pub struct Storage {
    pub wal: Arc<Wal>,
    metrics: Arc<Metrics>,
    fault: Option<Fault>,
    /// Neither stored nor sent, oldest first.
    held: VecDeque<Batch>,
    /// Sent to the agent un-persisted, awaiting its acknowledgement, by key.
    direct: BTreeMap<u64, Batch>,
    /// Bytes of `held` and `direct` together.
    memory_bytes: usize,
    /// Key and bytes of the batches that were in flight from memory when the
    /// WAL took them back (`retry`): still on their way, not to be sent again.
    stored_in_flight: Vec<(u64, u64)>,
}

fn events(batches: impl IntoIterator<Item = impl std::borrow::Borrow<Batch>>) -> u64 {
    batches.into_iter().map(|b| b.borrow().len() as u64).sum()
}

impl Storage {
    pub fn new(wal: Arc<Wal>, metrics: Arc<Metrics>) -> Self {
        Self {
            wal,
            metrics,
            fault: None,
            held: VecDeque::new(),
            direct: BTreeMap::new(),
            memory_bytes: 0,
            stored_in_flight: Vec::new(),
        }
    }

    /// Stores `batches` (emptied), or keeps them in memory for the agent
    /// while the WAL cannot take them. Errors only when the WAL is stuck
    /// (see the module docs).
    pub fn store(&mut self, batches: &mut Vec<Batch>) -> Result<(), WalError> {
        if self.fault.is_none() {
            match self.write(batches) {
                Ok(()) => {
                    batches.clear();
                    return Ok(());
                }
                Err((cause, reason)) => self.fault(cause, &reason),
            }
        }
        let end = batches.iter().map(|b| b.first_seq() + b.len() as u64).max();
        if let Some(end) = end
            && let Err(e) = self.wal.skip_to(end)
        {
            tracing::warn!(error = %e, "could not note the sequence numbers used while the WAL is faulted");
        }
        for batch in batches.drain(..) {
            let len = batch.as_bytes().len();
            if self.memory_bytes + len <= HOLD_BYTES {
                self.memory_bytes += len;
                self.held.push_back(batch);
            } else {
                Metrics::add(&self.metrics.events_unstored_lost, batch.len() as u64);
            }
        }
        Ok(())
    }

    /// While faulted: hands the held batches, oldest first, to `send` (the
    /// agent's connection), flagged un-persisted, and keeps each one sent
    /// until it is acknowledged. Stops at the first `send` that fails.
    pub fn send_direct(&mut self, mut send: impl FnMut(u64, &Batch) -> bool) {
        while let Some(mut batch) = self.held.pop_front() {
            batch.mark_unpersisted();
            if !send(batch.first_seq(), &batch) {
                self.held.push_front(batch);
                return;
            }
            self.direct.insert(batch.first_seq(), batch);
        }
    }

    /// The agent acknowledged `key`: if it was sent from memory, forgets it
    /// and returns its events (counted as published un-persisted).
    pub fn acked(&mut self, key: u64) -> Option<u64> {
        let batch = self.direct.remove(&key)?;
        self.memory_bytes -= batch.as_bytes().len();
        let n = batch.len() as u64;
        Metrics::add(&self.metrics.events_unpersisted, n);
        Some(n)
    }

    /// The connection is gone: what it did not acknowledge is held again,
    /// in order, for the next connection (or the WAL when it returns).
    pub fn connection_lost(&mut self) {
        let mut unacked: VecDeque<Batch> = std::mem::take(&mut self.direct).into_values().collect();
        unacked.append(&mut self.held);
        self.held = unacked;
    }

    /// Batches kept in memory (held or awaiting acknowledgement).
    pub fn in_memory(&self) -> usize {
        self.held.len() + self.direct.len()
    }

    /// Checks the free space, then appends.
    fn write(&self, batches: &[Batch]) -> Result<(), (Cause, String)> {
        let bytes: usize = batches.iter().map(|b| b.as_bytes().len()).sum();
        if let Some(free) = free_bytes(self.wal.dir())
            && free < FREE_RESERVE + bytes as u64
        {
            return Err((
                Cause::DiskFull,
                format!(
                    "the WAL's filesystem has {} KiB free, below the {} MiB reserve plus this write",
                    free >> 10,
                    FREE_RESERVE >> 20
                ),
            ));
        }
        self.wal
            .append(batches)
            .map(drop)
            .map_err(|e| (Cause::Storage, e.to_string()))
    }

    /// A WAL operation outside `store` failed (read, acknowledge).
    pub fn failed(&mut self, error: &WalError) {
        self.fault(Cause::Storage, &error.to_string());
    }

    fn fault(&mut self, cause: Cause, reason: &str) {
        // A storage error outranks a full disk: it needs a reopen.
        let cause = match &self.fault {
            Some(f) if f.cause == Cause::Storage => Cause::Storage,
            _ => cause,
        };
        // A full disk is retried soon again; a storage error backs off.
        let mut backoff = match (&self.fault, cause) {
            (Some(f), Cause::Storage) => f.backoff.clone(),
            _ => Backoff::new(FIRST_RETRY, MAX_RETRY),
        };
        let wait = backoff.next_wait();
        if self.fault.is_none() {
            tracing::error!(%reason, retry_in = ?wait, "WAL cannot be written: publishing new events to the agent un-persisted (up to {} MiB in memory) and retrying", HOLD_BYTES >> 20);
        }
        self.metrics.set_wal_fault(Some(format!(
            "WAL cannot be written: {reason}; new events go to the agent un-persisted \
             (events_unpersisted), up to {} MiB unacknowledged in memory, beyond that \
             counted as events_unstored_lost",
            HOLD_BYTES >> 20
        )));
        self.fault = Some(Fault {
            cause,
            retry_at: Instant::now() + wait,
            backoff,
        });
    }

    /// When the next retry is due, while faulted.
    pub fn retry_at(&self) -> Option<Instant> {
        self.fault.as_ref().map(|f| f.retry_at)
    }

    pub fn is_faulted(&self) -> bool {
        self.fault.is_some()
    }

    /// Tries again: reopens the WAL after a storage error, then stores what
    /// is still unacknowledged in memory. `Ok(true)` when the WAL is writable
    /// again (the caller then publishes from the WAL); an error when only a
    /// restart can help.
    pub fn retry(&mut self) -> Result<bool, WalError> {
        let Some(fault) = &self.fault else {
            return Ok(true);
        };
        if fault.cause == Cause::Storage {
            match self.wal.reopen() {
                Ok(()) => {}
                Err(WalError::Stuck) => {
                    self.abandon_held();
                    return Err(WalError::Stuck);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "WAL still cannot be reopened");
                    self.failed(&e);
                    return Ok(false);
                }
            }
            self.fault = Some(Fault {
                cause: Cause::DiskFull,
                retry_at: Instant::now(),
                backoff: Backoff::new(FIRST_RETRY, MAX_RETRY),
            });
        }
        // Sent but unacknowledged, then never sent: key order either way.
        let sent: Vec<u64> = self.direct.keys().copied().collect();
        let mut pending: Vec<Batch> = std::mem::take(&mut self.direct).into_values().collect();
        pending.extend(self.held.drain(..));
        pending.sort_by_key(Batch::first_seq);
        for batch in &mut pending {
            batch.mark_persisted();
        }
        match self.write(&pending) {
            Ok(()) => {
                tracing::info!(stored_from_memory = events(&pending), "WAL writable again");
                self.stored_in_flight = pending
                    .iter()
                    .filter(|b| sent.binary_search(&b.first_seq()).is_ok())
                    .map(|b| (b.first_seq(), b.as_bytes().len() as u64))
                    .collect();
                self.memory_bytes = 0;
                self.fault = None;
                self.metrics.set_wal_fault(None);
                Ok(true)
            }
            Err((cause, reason)) => {
                for mut batch in pending {
                    if sent.binary_search(&batch.first_seq()).is_ok() {
                        batch.mark_unpersisted();
                        self.direct.insert(batch.first_seq(), batch);
                    } else {
                        self.held.push_back(batch);
                    }
                }
                self.fault(cause, &reason);
                Ok(false)
            }
        }
    }

    /// After a `retry` that stored them: the batches (key, bytes) that were
    /// in flight from memory, now in the WAL and still awaiting their ack.
    pub fn take_stored_in_flight(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.stored_in_flight)
    }

    /// At exit: what is still in memory was never stored, and the agent did
    /// not confirm it.
    pub fn abandon_held(&mut self) {
        let lost = events(&self.held) + events(self.direct.values());
        if lost > 0 {
            Metrics::add(&self.metrics.events_unstored_lost, lost);
            tracing::error!(
                events = lost,
                "stopping while the WAL cannot be written: events neither stored nor acknowledged are lost"
            );
        }
        self.held.clear();
        self.direct.clear();
        self.memory_bytes = 0;
    }
}

/// Bytes an unprivileged writer may still use on the filesystem of `dir`
/// (`None` where that cannot be read: then only sled's errors tell).
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::fs::statvfs(dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    }
    #[cfg(windows)]
    {
        crate::sys::windows::free_bytes(dir).ok()
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = dir;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::Ordering::Relaxed;

    use crate::delivery::wal::tests::batch;

    #[test]
    fn a_faulted_wal_publishes_from_memory_and_never_resends_what_was_acked() {
        let dir = std::env::temp_dir().join(format!("procmond-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let metrics = Arc::new(Metrics::default());
        let wal = Arc::new(Wal::open(&dir, 1 << 24, metrics.clone()).expect("open"));
        let mut storage = Storage::new(wal.clone(), metrics.clone());
        storage.failed(&WalError::Closed);
        assert!(storage.is_faulted());
        assert!(
            metrics
                .wal_fault()
                .is_some_and(|r| r.contains("un-persisted"))
        );
        storage
            .store(&mut vec![batch(1..3), batch(3..6), batch(6..7)])
            .expect("held");
        let mut sent = Vec::new();
        storage.send_direct(|key, b| {
            assert!(b.is_unpersisted(), "flagged");
            sent.push(key);
            key < 6 // the third send fails: the connection is going away
        });
        assert_eq!(sent, [1, 3, 6]);
        assert_eq!(storage.acked(1), Some(2));
        assert_eq!(storage.acked(1), None, "an ack counts once");
        assert_eq!(metrics.events_unpersisted.load(Relaxed), 2);
        // The connection drops before 3 is acknowledged: 3 goes again.
        storage.connection_lost();
        let mut again = Vec::new();
        storage.send_direct(|key, _| {
            again.push(key);
            true
        });
        assert_eq!(again, [3, 6], "unacknowledged are resent, acked never");
        // The WAL comes back: what is unacknowledged is stored, unflagged.
        assert!(storage.retry().expect("reopened"));
        assert_eq!(storage.in_memory(), 0);
        let in_flight: Vec<u64> = storage
            .take_stored_in_flight()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            in_flight,
            [3, 6],
            "still on their way: not to be sent again"
        );
        let stored: Vec<(u64, bool)> = wal
            .read_from(0, 10)
            .expect("read")
            .iter()
            .map(|(k, b)| (*k, b.is_unpersisted()))
            .collect();
        assert_eq!(stored, [(3, false), (6, false)]);
        assert!(metrics.wal_fault().is_none());
        assert_eq!(metrics.events_unstored_lost.load(Relaxed), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn seqs_used_while_faulted_are_not_handed_out_again_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("procmond-storage-seq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let metrics = Arc::new(Metrics::default());
            let wal = Arc::new(Wal::open(&dir, 1 << 24, metrics.clone()).expect("open"));
            wal.append(&[batch(1..3)]).expect("append");
            let mut storage = Storage::new(wal, metrics);
            storage.failed(&WalError::Closed);
            storage.store(&mut vec![batch(3..9)]).expect("held");
            storage.send_direct(|_, _| true);
            assert_eq!(storage.acked(3), Some(6), "the agent has seqs 3..9");
        } // stopped (or crashed) while still faulted
        let metrics = Arc::new(Metrics::default());
        let wal = crate::delivery::wal::tests::reopen(&dir, 1 << 24, metrics.clone());
        assert_eq!(wal.next_seq(), 9, "3..9 are not numbered again");
        assert_eq!(
            (wal.pending_count(), metrics.wal_lost.load(Relaxed)),
            (2, 0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_neither_the_wal_nor_the_agent_takes_is_counted() {
        let dir =
            std::env::temp_dir().join(format!("procmond-storage-lost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let metrics = Arc::new(Metrics::default());
        let wal = Arc::new(Wal::open(&dir, 1 << 24, metrics.clone()).expect("open"));
        let mut storage = Storage::new(wal, metrics.clone());
        storage.failed(&WalError::Closed);
        let one = batch(1..2049).as_bytes().len();
        let fit = HOLD_BYTES / one;
        let mut batches: Vec<Batch> = (0..fit as u64 + 2)
            .map(|i| batch(1 + i * 2048..1 + (i + 1) * 2048))
            .collect();
        storage.store(&mut batches).expect("held");
        assert_eq!(metrics.events_unstored_lost.load(Relaxed), 2 * 2048);
        storage.abandon_held();
        assert_eq!(
            metrics.events_unstored_lost.load(Relaxed),
            (fit as u64 + 2) * 2048
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn free_space_of_a_real_filesystem_is_read() {
        let free = free_bytes(&std::env::temp_dir());
        assert!(free.is_some_and(|f| f > 0), "{free:?}");
        assert_eq!(free_bytes(std::path::Path::new("/nonexistent/dir")), None);
    }
}
