//! Storing batches in the WAL, and what the connector does when it cannot:
//! a full disk or an I/O error must not end collection silently, nor turn
//! into a restart loop.
//!
//! * A full disk is seen before sled sees it: every group commit checks the
//!   WAL filesystem's free space against `FREE_RESERVE` (one `statvfs`). sled
//!   must never run out of space mid-write: after some write errors it
//!   neither recovers nor closes (its flush on drop waits forever).
//! * While the WAL cannot be written the collector stays up and says so:
//!   health and heartbeats turn `degraded` with the reason (`wal_fault`), new
//!   batches are held in memory up to `HOLD_BYTES` (then counted as
//!   `wal_write_failed`), and storing is retried — free space every second,
//!   a storage error by reopening the WAL with backoff (1, 2, 4 … 30 s).
//!   The order is kept: nothing newer is stored while older batches wait.
//! * A storage error the WAL cannot be reopened from in this process
//!   (`WalError::Stuck`) ends the connector with that error; the agent
//!   restarts the collector with its backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::wal::{Wal, WalError};
use crate::metrics::Metrics;
use crate::model::batch::Batch;

/// Most bytes of batches held in memory while the WAL cannot be written.
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
    backoff: Duration,
}

/// The connector's side of the WAL.
#[derive(Debug)]
pub struct Storage {
    pub wal: Arc<Wal>,
    metrics: Arc<Metrics>,
    fault: Option<Fault>,
    held: Vec<Batch>,
    held_bytes: usize,
}

impl Storage {
    pub fn new(wal: Arc<Wal>, metrics: Arc<Metrics>) -> Self {
        Self {
            wal,
            metrics,
            fault: None,
            held: Vec::new(),
            held_bytes: 0,
        }
    }

    /// Stores `batches` (emptied), or holds them while the WAL cannot take
    /// them. Errors only when the WAL is stuck (see the module docs).
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
        for batch in batches.drain(..) {
            let len = batch.as_bytes().len();
            if self.held_bytes + len <= HOLD_BYTES {
                self.held_bytes += len;
                self.held.push(batch);
            } else {
                Metrics::add(&self.metrics.wal_write_failed, batch.len() as u64);
            }
        }
        Ok(())
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
        let backoff = match (&self.fault, cause) {
            (_, Cause::DiskFull) => FIRST_RETRY,
            (Some(f), Cause::Storage) => f.backoff,
            (None, Cause::Storage) => FIRST_RETRY,
        };
        if self.fault.is_none() {
            tracing::error!(%reason, retry_in = ?backoff, "WAL cannot be written: holding new events in memory (up to {} MiB) and retrying", HOLD_BYTES >> 20);
        }
        self.metrics.set_wal_fault(Some(format!(
            "WAL cannot be written: {reason}; events are held in memory up to {} MiB, then counted as wal_write_failed",
            HOLD_BYTES >> 20
        )));
        self.fault = Some(Fault {
            cause,
            retry_at: Instant::now() + backoff,
            backoff: (backoff * 2).min(MAX_RETRY),
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
    /// was held. `Ok(true)` when the WAL is writable again (the caller then
    /// replays from the WAL); an error when only a restart can help.
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
                backoff: FIRST_RETRY,
            });
        }
        let held = std::mem::take(&mut self.held);
        match self.write(&held) {
            Ok(()) => {
                let events: usize = held.iter().map(|b| b.len()).sum();
                tracing::info!(stored_from_memory = events, "WAL writable again");
                self.held_bytes = 0;
                self.fault = None;
                self.metrics.set_wal_fault(None);
                Ok(true)
            }
            Err((cause, reason)) => {
                self.held = held;
                self.fault(cause, &reason);
                Ok(false)
            }
        }
    }

    /// At exit: what is still held was never stored.
    pub fn abandon_held(&mut self) {
        let events: u64 = self.held.iter().map(|b| b.len() as u64).sum();
        if events > 0 {
            Metrics::add(&self.metrics.wal_write_failed, events);
            tracing::error!(
                events,
                "stopping while the WAL cannot be written: held events are lost"
            );
        }
        self.held.clear();
        self.held_bytes = 0;
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

    #[test]
    fn free_space_of_a_real_filesystem_is_read() {
        let free = free_bytes(&std::env::temp_dir());
        assert!(free.is_some_and(|f| f > 0), "{free:?}");
        assert_eq!(free_bytes(std::path::Path::new("/nonexistent/dir")), None);
    }
}
