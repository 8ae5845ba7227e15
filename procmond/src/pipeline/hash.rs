//! Executable hashes (`compute_hashes: true`): the sha256 of the file an
//! exec actually runs, computed off the hot path.
//!
//! * On the event's path only a `stat` and a cache lookup happen. The file
//!   is found through `/proc/PID/exe` (the very file the process maps, even
//!   if its path was replaced), else through the exec's path — either only
//!   if its device and inode are the ones the probe saw the task run.
//! * Cache: bounded LRU keyed by (device, inode, size, mtime, ctime): a hit
//!   puts `sha256` on the exec event itself.
//! * A miss marks the event `sha256_pending` and queues a job for a small
//!   pool of worker threads (bounded queue: when it is full the event keeps
//!   no hash, counted as skipped). A worker re-checks the file's identity,
//!   hashes it, checks nothing changed while it read, caches the result and
//!   sends a `modify` event with the `sha256` for the same
//!   `(pid, start_time)` down the source's channel.
//! * Files above `hash_max_file_bytes`, non-regular files and identity
//!   mismatches are skipped and counted (`hash_skipped`).

use std::fs::{File, Metadata};
use std::io::Read;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::model::{EventKind, ProcessEvent};
use crate::sources::SourceMsg;

/// Files hashed at once (worker threads).
const WORKERS: usize = 2;
/// Exec events that may wait for a worker.
const QUEUE: usize = 256;
/// Hashes remembered.
const CACHE_ENTRIES: usize = 4096;
const READ_CHUNK: usize = 64 * 1024;

/// What identifies one version of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileKey {
    pub fn of(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

type Cache = Arc<Mutex<lru::LruCache<FileKey, Arc<str>>>>;

struct Job {
    key: FileKey,
    event: ProcessEvent,
}

/// The hashing side of the pipeline; dropping it stops the workers.
#[derive(Debug)]
pub struct Hasher {
    cache: Cache,
    jobs: SyncSender<Job>,
    max_bytes: u64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("key", &self.key).finish()
    }
}

impl Hasher {
    /// Starts the workers; results go to `out` as `SourceMsg::Hashed`.
    pub fn start(
        max_bytes: u64,
        out: mpsc::Sender<SourceMsg>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let capacity = NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        let cache: Cache = Arc::new(Mutex::new(lru::LruCache::new(capacity)));
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..WORKERS {
            let (rx, cache, out, metrics) =
                (rx.clone(), cache.clone(), out.clone(), metrics.clone());
            std::thread::Builder::new()
                .name(format!("hash-{n}"))
                .spawn(move || work(&rx, &cache, &out, &metrics, max_bytes))?;
        }
        Ok(Self {
            cache,
            jobs,
            max_bytes,
            metrics,
        })
    }

    /// Puts `sha256` on an exec event from the cache, or queues its file
    /// and marks it `sha256_pending`. Other kinds are left alone.
    pub fn annotate(&self, event: &mut ProcessEvent) {
        if event.kind != EventKind::Exec {
            return;
        }
        let Some(key) = self.locate(event) else {
            Metrics::incr(&self.metrics.hash_skipped);
            return;
        };
        if let Some(hash) = self
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).cloned())
        {
            Metrics::incr(&self.metrics.hash_cache_hits);
            event.sha256 = Some(hash.to_string());
            return;
        }
        Metrics::incr(&self.metrics.hash_cache_misses);
        let job = Job {
            key,
            event: pending_template(event),
        };
        match self.jobs.try_send(job) {
            Ok(()) => event.sha256_pending = true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                Metrics::incr(&self.metrics.hash_skipped);
                tracing::debug!(pid = event.pid, "hash queue full: exec left without a hash");
            }
        }
    }

    /// The identity of the file the exec runs, if it can be pinned down.
    fn locate(&self, event: &ProcessEvent) -> Option<FileKey> {
        let probe = event.platform.exe_dev.zip(event.platform.exe_inode);
        let candidates = [Some(format!("/proc/{}/exe", event.pid)), event.exe.clone()];
        candidates.into_iter().flatten().find_map(|path| {
            let m = std::fs::metadata(&path).ok()?;
            let key = FileKey::of(&m);
            let same = probe.is_none_or(|(dev, ino)| (key.dev, key.ino) == (dev, ino));
            (same && m.is_file() && key.size <= self.max_bytes).then_some(key)
        })
    }
}

/// What the `modify` event carrying the hash repeats from the exec.
fn pending_template(exec: &ProcessEvent) -> ProcessEvent {
    let mut e = ProcessEvent::new(EventKind::Modify, exec.source, exec.timestamp, exec.pid);
    e.ppid = exec.ppid;
    e.uid = exec.uid;
    e.gid = exec.gid;
    e.euid = exec.euid;
    e.name.clone_from(&exec.name);
    e.exe.clone_from(&exec.exe);
    e.start_time = exec.start_time;
    e.egid = exec.egid;
    e.entity_id = exec.entity_id;
    e.exec_id = exec.exec_id;
    e.parent = exec.parent.as_ref().map(|p| crate::model::Parent {
        entity_id: p.entity_id,
        pid: p.pid,
        start_time: p.start_time,
        ..crate::model::Parent::default()
    });
    e.session = exec.session.clone();
    e.platform.exe_inode = exec.platform.exe_inode;
    e.platform.exe_dev = exec.platform.exe_dev;
    e
}

fn work(
    jobs: &Mutex<Receiver<Job>>,
    cache: &Cache,
    out: &mpsc::Sender<SourceMsg>,
    metrics: &Metrics,
    max_bytes: u64,
) {
    loop {
        let job = match jobs.lock().map(|rx| rx.recv()) {
            Ok(Ok(job)) => job,
            _ => return, // the Hasher was dropped
        };
        let cached = cache.lock().ok().and_then(|mut c| c.get(&job.key).cloned());
        let hash = match cached {
            Some(h) => Some(h),
            None => hash_file(&job, max_bytes).inspect(|h| {
                metrics.hashes_computed.fetch_add(1, Relaxed);
                if let Ok(mut c) = cache.lock() {
                    c.put(job.key, h.clone());
                }
            }),
        };
        let Some(hash) = hash else {
            Metrics::incr(&metrics.hash_skipped);
            continue;
        };
        let mut event = job.event;
        event.timestamp = crate::clock::now_unix_ns();
        event.sha256 = Some(hash.to_string());
        if out
            .blocking_send(SourceMsg::Hashed(Box::new(event)))
            .is_err()
        {
            return;
        }
    }
}

/// Hashes the job's file if it is still the one keyed: through
/// `/proc/PID/exe` while the process lives, else its path.
fn hash_file(job: &Job, max_bytes: u64) -> Option<Arc<str>> {
    let paths = [
        Some(format!("/proc/{}/exe", job.event.pid)),
        job.event.exe.clone(),
    ];
    let mut file = paths.into_iter().flatten().find_map(|p| {
        let f = File::open(p).ok()?;
        let m = f.metadata().ok()?;
        (FileKey::of(&m) == job.key).then_some(f)
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_bytes {
            return None;
        }
        hasher.update(&buf[..n]);
    }
    // Written to while being read: the hash would describe neither version.
    let after = FileKey::of(&file.metadata().ok()?);
    (after == job.key && total == job.key.size).then(|| hex(&hasher.finalize()).into())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventSource;

    fn exec_of(path: &std::path::Path, pid: u32) -> ProcessEvent {
        let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, pid);
        e.exe = Some(path.display().to_string());
        let m = std::fs::metadata(path).expect("file");
        e.platform.exe_inode = Some(m.ino());
        e.platform.exe_dev = Some(m.dev());
        e
    }

    #[tokio::test]
    async fn a_miss_is_hashed_by_a_worker_then_hits_and_changes_are_seen() {
        let dir = std::env::temp_dir().join(format!("procmond-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("tool");
        std::fs::write(&file, b"abc").expect("write");
        let (tx, mut rx) = mpsc::channel(8);
        let metrics = Arc::new(Metrics::default());
        let hasher = Hasher::start(1 << 20, tx, metrics.clone()).expect("start");
        // pid 0 has no /proc entry: the path is used, checked by inode.
        let mut first = exec_of(&file, 0);
        hasher.annotate(&mut first);
        assert!(first.sha256_pending && first.sha256.is_none());
        let Some(SourceMsg::Hashed(m)) = rx.recv().await else {
            panic!("a hashed event");
        };
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            (m.kind, m.sha256.as_deref()),
            (EventKind::Modify, Some(abc))
        );
        let mut second = exec_of(&file, 0);
        hasher.annotate(&mut second);
        assert_eq!(second.sha256.as_deref(), Some(abc), "a cache hit");
        // Rewritten in place: a new key, a new hash.
        std::fs::write(&file, b"abcd").expect("rewrite");
        let mut third = exec_of(&file, 0);
        hasher.annotate(&mut third);
        assert!(third.sha256_pending);
        let Some(SourceMsg::Hashed(m)) = rx.recv().await else {
            panic!("a hashed event");
        };
        assert_eq!(
            m.sha256.as_deref(),
            Some("88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589")
        );
        // The probe saw another file: nothing is hashed.
        let mut other = exec_of(&file, 0);
        other.platform.exe_inode = Some(1);
        hasher.annotate(&mut other);
        assert!(!other.sha256_pending && other.sha256.is_none());
        // Too large.
        let small = Hasher::start(2, mpsc::channel(1).0, metrics.clone()).expect("start");
        let mut big = exec_of(&file, 0);
        small.annotate(&mut big);
        assert!(!big.sha256_pending);
        assert_eq!(
            (
                metrics.hash_cache_hits.load(Relaxed),
                metrics.hash_cache_misses.load(Relaxed),
                metrics.hash_skipped.load(Relaxed),
                metrics.hashes_computed.load(Relaxed),
            ),
            (1, 2, 2, 2)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
