//! The jsonl sink's file and loop.
//!
//! * Opened once, as root and before the privilege drop, never reopened:
//!   on Unix through `sys::safe_path` — every directory on the way owned by
//!   root (or procmond's user) and writable by no one else unless sticky, no
//!   link followed at the path itself, a regular file with one link — so a
//!   user cannot make root append to a file of their choosing.
//! * Deliveries waiting together are written and `fdatasync`ed as one group,
//!   then confirmed. A group that fails (ENOSPC, EIO, a failed sync) is cut
//!   back to where it began — no partial line stays, and nothing a failed
//!   sync may have dropped is trusted — and written again with backoff
//!   (100 ms doubling to 5 s). Meanwhile its deliveries stay unconfirmed, so
//!   the collectors keep them in their WALs; new deliveries join the group
//!   up to `HOLD_BYTES`, then the broker (and the collectors) wait.
//! * Every failure counts in `errors` and marks the sink degraded in its
//!   counters (`ctl health`, `/metrics`) until a write succeeds again.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Dedupe, SinkStats, backoff};
use crate::bus::broker::Durable;
use crate::output::{EventFormat, dedupe_key};

const SEED_BYTES: u64 = 4 * 1024 * 1024;
/// Event lines held unwritten at most; beyond it the sink stops taking
/// deliveries and the broker (then the collectors' WALs) waits.
const HOLD_BYTES: usize = 64 * 1024 * 1024;
/// After the agent closes the sink, how long it still tries to store what it holds.
const DRAIN_AT_CLOSE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("jsonl sink: {0}")]
    Open(#[from] crate::platform::private_files::PrivateError),
    #[error("jsonl sink: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The sink's file, opened (see the module comment).
#[derive(Debug)]
pub struct JsonlFile {
    file: File,
    path: PathBuf,
}

impl JsonlFile {
    pub fn open(path: &Path) -> Result<Self, JsonlError> {
        let file = crate::platform::private_files::open_append(path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }
}

/// Opens `path` and writes deliveries from `rx` to it until `rx` closes.
pub async fn run_jsonl(
    path: &Path,
    format: EventFormat,
    rx: mpsc::Receiver<Durable>,
    stats: &SinkStats,
) -> Result<(), JsonlError> {
    let file = JsonlFile::open(path)?;
    run_jsonl_file(file, format, rx, stats).await;
    Ok(())
}

/// Deliveries accepted and not yet stored.
#[derive(Default)]
struct Group {
    bytes: Vec<u8>,
    lines: u64,
    done: Vec<oneshot::Sender<()>>,
    /// The file's length before this group's first attempt.
    start: Option<u64>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    fn accept(
        &mut self,
        Durable { batch, done }: Durable,
        format: EventFormat,
        dedupe: &mut Dedupe,
        stats: &SinkStats,
    ) {
        self.done.push(done);
        for entry in batch.iter() {
            // Validated and read in place: the native format is written
            // from the archived event without decoding it.
            let written = entry.event().map_err(|e| e.to_string()).and_then(|event| {
                let (collector, epoch, seq) = (
                    event.collector_id.as_str(),
                    event.epoch.to_native(),
                    event.seq.to_native(),
                );
                if !dedupe.is_new(collector, epoch, seq) {
                    return Ok(false);
                }
                let mark = self.bytes.len();
                format
                    .write_archived(event, &mut self.bytes)
                    .map_err(|e| {
                        self.bytes.truncate(mark);
                        e.to_string()
                    })
                    .map(|()| true)
            });
            match written {
                Ok(true) => {
                    self.bytes.push(b'\n');
                    self.lines += 1;
                    stats.lag.fetch_add(1, Relaxed);
                }
                Ok(false) => {
                    stats.duplicates.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    stats.invalid.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, seq = entry.seq, "sink dropped an invalid event");
                }
            }
        }
    }

    /// Stored: counted and confirmed, ready for the next group.
    fn confirm(&mut self, stats: &SinkStats) {
        stats.written.fetch_add(self.lines, Relaxed);
        stats.lag.fetch_sub(self.lines, Relaxed);
        for done in self.done.drain(..) {
            let _ = done.send(());
        }
        self.bytes.clear();
        self.lines = 0;
        self.start = None;
    }
}

/// Writes and syncs `bytes` at the end of `file`, first cutting off what a
/// failed attempt at the same group may have left after `start`.
fn store(file: &File, start: &mut Option<u64>, bytes: &[u8]) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    match *start {
        Some(s) if len > s => file.set_len(s)?,
        _ => *start = Some(len),
    }
    let mut w = file;
    w.write_all(bytes)?;
    file.sync_data()
}

/// Writes deliveries from `rx` to `file` until `rx` closes (then at most
/// `DRAIN_AT_CLOSE` more); never gives up on a failed write. Each event is
/// one line in `format`.
pub async fn run_jsonl_file(
    file: JsonlFile,
    format: EventFormat,
    mut rx: mpsc::Receiver<Durable>,
    stats: &SinkStats,
) {
    let JsonlFile { file, path } = file;
    let mut dedupe = Dedupe::default();
    seed(&file, &mut dedupe);
    let file = Arc::new(file);
    let mut group = Group::default();
    let (mut failures, mut retry_at) = (0usize, None::<Instant>);
    let mut closing: Option<Instant> = None;
    loop {
        if group.is_empty() {
            if closing.is_some() {
                break;
            }
            match rx.recv().await {
                Some(d) => group.accept(d, format, &mut dedupe, stats),
                None => break,
            }
        }
        while closing.is_none() && group.bytes.len() < HOLD_BYTES {
            match rx.try_recv() {
                Ok(d) => group.accept(d, format, &mut dedupe, stats),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closing = Some(Instant::now() + DRAIN_AT_CLOSE);
                }
            }
        }
        if retry_at.is_none_or(|t| t <= Instant::now()) {
            match attempt(&file, &mut group, stats).await {
                Ok(()) => {
                    // Healthy again before anyone hears of the store.
                    if stats.recovered() {
                        tracing::info!(path = %path.display(), failed_attempts = failures, "jsonl sink stores again");
                    }
                    group.confirm(stats);
                    (failures, retry_at) = (0, None);
                    continue;
                }
                Err(e) => {
                    let n = stats.failed(&format_args!("{}: {e}", path.display()));
                    failures += 1;
                    let wait = backoff(failures);
                    if n <= 10 || n.is_power_of_two() {
                        tracing::warn!(path = %path.display(), error = %e, errors = n, retry_in = ?wait, held = group.lines, "jsonl sink: writing failed; retrying (nothing is confirmed until stored: the collectors keep the events in their WALs)");
                    }
                    retry_at = Some(Instant::now() + wait);
                }
            }
        }
        let taking = closing.is_none() && group.bytes.len() < HOLD_BYTES;
        tokio::select! {
            d = rx.recv(), if taking => match d {
                Some(d) => group.accept(d, format, &mut dedupe, stats),
                None => closing = Some(Instant::now() + DRAIN_AT_CLOSE),
            },
            () = sleep_until(retry_at) => {}
            () = sleep_until(closing), if closing.is_some() => break,
        }
    }
    if group.lines > 0 {
        // No partial line left behind (best effort: the next start cuts one too).
        if let Some(start) = group.start {
            let _ = file.set_len(start);
        }
        stats.lag.fetch_sub(group.lines, Relaxed);
        tracing::warn!(path = %path.display(), events = group.lines, "jsonl sink closed with events not stored: their publishes stay unacknowledged in the collectors' WALs");
    }
}

/// One attempt at storing the group (in a blocking thread).
async fn attempt(file: &Arc<File>, group: &mut Group, stats: &SinkStats) -> std::io::Result<()> {
    if group.bytes.is_empty() {
        return Ok(());
    }
    let f = file.clone();
    let bytes = std::mem::take(&mut group.bytes);
    let mut start = group.start;
    let joined = tokio::task::spawn_blocking(move || {
        let result = store(&f, &mut start, &bytes);
        (bytes, start, result)
    })
    .await;
    let (bytes, start, result) = match joined {
        Ok(r) => r,
        Err(e) => {
            // The lines went with the thread: their deliveries are left
            // unconfirmed (the collectors send them again), never confirmed.
            group.done.clear();
            stats.lag.fetch_sub(group.lines, Relaxed);
            group.lines = 0;
            return Err(std::io::Error::other(e));
        }
    };
    group.bytes = bytes;
    group.start = start;
    result
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Feeds the last lines already in the file to the deduplicator, and cuts
/// off a partial last line (a write the agent died in: never confirmed, so
/// the collector sends it again) so the next line does not join it.
fn seed(file: &File, dedupe: &mut Dedupe) {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(SEED_BYTES);
    let mut r = file;
    if r.seek(SeekFrom::Start(start)).is_err() {
        return;
    }
    let mut tail = Vec::new();
    if r.read_to_end(&mut tail).is_err() {
        return;
    }
    if tail.last().is_some_and(|b| *b != b'\n') {
        let keep = match tail.iter().rposition(|b| *b == b'\n') {
            Some(at) => start + at as u64 + 1,
            None if start == 0 => 0,
            None => len,
        };
        if keep < len {
            tracing::warn!(
                cut = len - keep,
                "jsonl sink: cutting off a partial last line"
            );
            let _ = file.set_len(keep);
            tail.truncate((keep - start) as usize);
        }
    }
    // Whichever format wrote them (the sink's format may have changed).
    for line in tail.split(|b| *b == b'\n') {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
            && let Some((c, epoch, seq)) = dedupe_key(&v)
        {
            dedupe.is_new(c, epoch, seq);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
#[path = "jsonl_tests.rs"]
mod tests;
