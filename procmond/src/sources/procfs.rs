//! Fast procfs reader (Linux): the snapshot behind inventory, reconciliation
//! and polling.
//!
//! Per process it reads `stat` (name, parent, start time), `status` (ids),
//! `cmdline` and the `exe` and `cwd` links. Nearly all the time goes to the
//! kernel (docs/benchmarks.md), so the reader is built to make few, cheap
//! system calls and to use every CPU:
//!
//! * `/PID` is opened once as a directory fd under an fd for `/proc`, and the
//!   files and links are reached relative to it: no open walks the full path.
//!   All reads then see one process: if it exits and its PID is reused
//!   mid-read, the old fd fails rather than mixing two processes.
//! * Each file takes one `read`, into a buffer as large as what we keep: these
//!   files return all they can, so `read_to_end`'s read that finds EOF is saved.
//! * PIDs go to up to `MAX_WORKERS` threads (no more than the CPUs) in batches
//!   joined back in PID order; below `PARALLEL_MIN` processes the caller reads
//!   alone, so small hosts do not pay for thread start-up.
//!
//! One scratch buffer per thread; no allocations beyond the strings returned.
//! A process that exits mid-read is skipped: it is gone, and the next pass or
//! the kernel stream accounts for it.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::resume_unwind;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::Builder;

use rustix::fs::{Mode, OFlags, RawDir, openat, readlinkat, readlinkat_raw};
use rustix::io::Errno;
use rustix::path::DecInt;

use super::snapshot::{ARGV_MAX_BYTES, ProcessInfo, Snapshot, SnapshotOptions, split_argv};
use crate::clock;

/// Most bytes kept of `stat` (about 300 in practice).
const STAT_MAX: usize = 1024;
/// Most bytes kept of `status` (about 1.4 KB; the ids come early).
const STATUS_MAX: usize = 4096;
/// Most bytes kept of `cmdline`: one past the bound, so a cut shows.
const CMDLINE_MAX: usize = ARGV_MAX_BYTES + 1;
/// Scratch space per thread: the largest read above; links use all of it.
const SCRATCH: usize = CMDLINE_MAX;
const _: () = assert!(SCRATCH >= STAT_MAX && SCRATCH >= STATUS_MAX);
/// Fewer processes than this are read on the calling thread alone.
const PARALLEL_MIN: usize = 256;
/// Most threads reading at once (the caller included).
const MAX_WORKERS: usize = 4;
/// PIDs a thread takes at a time.
const BATCH: usize = 32;

/// Enumerates every process under `proc_root` (normally `/proc`).
pub fn snapshot(proc_root: &Path, options: SnapshotOptions) -> io::Result<Snapshot> {
    let taken_at_boot_ns = clock::boottime_ns();
    let taken_at = clock::now_unix_ns();
    let root = rustix::fs::open(
        proc_root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let pids = list_pids(&root);
    let processes = read_all(&root, &pids, options, worker_count(pids.len()));
    Ok(Snapshot {
        taken_at,
        taken_at_boot_ns: Some(taken_at_boot_ns),
        processes,
    })
}

/// The numeric entries of the open `/proc`, in the kernel's (PID) order.
fn list_pids(root: &OwnedFd) -> Vec<u32> {
    let mut space = vec![MaybeUninit::<u8>::uninit(); 32 * 1024];
    let mut dir = RawDir::new(root, &mut space);
    let mut pids = Vec::with_capacity(512);
    // An error ends the listing (as in `std::fs::read_dir`); the rest is kept.
    while let Some(Ok(entry)) = dir.next() {
        let name = entry.file_name().to_bytes();
        if let Some(pid) = std::str::from_utf8(name).ok().and_then(|s| s.parse().ok()) {
            pids.push(pid);
        }
    }
    pids
}

/// Reads `pids` on `workers` threads (the caller's included), keeping their order.
fn read_all(
    root: &OwnedFd,
    pids: &[u32],
    options: SnapshotOptions,
    workers: usize,
) -> Vec<ProcessInfo> {
    let read_batch = |batch: &[u32], buf: &mut Vec<u8>| -> Vec<ProcessInfo> {
        batch
            .iter()
            .filter_map(|&pid| read_process(root.as_fd(), pid, buf, options))
            .collect()
    };
    if workers <= 1 {
        return read_batch(pids, &mut Vec::new());
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut buf = Vec::new();
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(batch) = pids.chunks(BATCH).nth(index) else {
                return done;
            };
            done.push((index, read_batch(batch, &mut buf)));
        }
    };
    let mut batches = std::thread::scope(|scope| {
        // A thread that cannot start is no loss: the others take its batches.
        let spawn = || {
            Builder::new()
                .name("procfs-snapshot".into())
                .spawn_scoped(scope, work)
        };
        let helpers: Vec<_> = (1..workers).filter_map(|_| spawn().ok()).collect();
        let mut all = work();
        for helper in helpers {
            all.extend(helper.join().unwrap_or_else(|panic| resume_unwind(panic)));
        }
        all
    });
    batches.sort_unstable_by_key(|(index, _)| *index);
    let mut processes = Vec::with_capacity(batches.iter().map(|(_, b)| b.len()).sum());
    for (_, batch) in batches {
        processes.extend(batch);
    }
    processes
}

/// How many threads to read `n` processes with: one below `PARALLEL_MIN`,
/// else the CPUs this process may use (looked up once), at most `MAX_WORKERS`.
fn worker_count(n: usize) -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    if n < PARALLEL_MIN {
        return 1;
    }
    let cpus =
        *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
    cpus.min(MAX_WORKERS).min(n / (PARALLEL_MIN / 2))
}

/// Reads process `pid` from the open `/proc` directory `proc_root`, using
/// `buf` as scratch space; `None` if it vanished.
pub fn read_process(
    proc_root: BorrowedFd<'_>,
    pid: u32,
    buf: &mut Vec<u8>,
    options: SnapshotOptions,
) -> Option<ProcessInfo> {
    if buf.len() < SCRATCH {
        buf.resize(SCRATCH, 0);
    }
    let dir = openat(
        proc_root,
        DecInt::new(pid),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let dir = dir.as_fd();
    let mut info = ProcessInfo {
        pid,
        ..ProcessInfo::default()
    };

    let n = read_file(dir, c"stat", &mut buf[..STAT_MAX]).ok()?;
    let (name, ppid, start_ticks) = parse_stat(&buf[..n])?;
    info.name = name;
    info.ppid = Some(ppid);
    info.start_time = Some(clock::start_from_ticks(start_ticks));

    if let Ok(n) = read_file(dir, c"status", &mut buf[..STATUS_MAX]) {
        let (uid, euid, gid) = parse_status_ids(&buf[..n]);
        info.uid = uid;
        info.euid = euid;
        info.gid = gid;
    }

    if let Ok(n) = read_file(dir, c"cmdline", &mut buf[..CMDLINE_MAX]) {
        let (argv, truncated) = split_argv(&buf[..n], false);
        info.argv = argv;
        info.argv_truncated = truncated;
    }

    info.exe = read_link(dir, c"exe", buf);
    if options.cwd {
        info.cwd = read_link(dir, c"cwd", buf);
    }
    Some(info)
}

/// Reads `name` under `dir` into `buf`; returns the length read. One `read`:
/// `stat` and `status` are single-record seq files and `cmdline` copies all
/// it can, so a read returns the whole file when it fits, and what fits of it
/// otherwise — never a short read before the end.
fn read_file(dir: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let file = openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    loop {
        match rustix::io::read(&file, &mut *buf) {
            Err(Errno::INTR) => continue,
            read => return Ok(read?),
        }
    }
}

/// The target of link `name` under `dir`, read through `buf`.
fn read_link(dir: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> Option<String> {
    let n = readlinkat_raw(dir, name, &mut *buf).ok()?;
    if n < buf.len() {
        return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // It may have been cut: let rustix grow a buffer until it fits.
    let target = readlinkat(dir, name, Vec::new()).ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// `(name, ppid, starttime ticks)` from `/proc/PID/stat`. The name sits between
/// the first `(` and the *last* `)`, since a name may itself contain `)`.
pub fn parse_stat(stat: &[u8]) -> Option<(String, u32, u64)> {
    let open = stat.iter().position(|b| *b == b'(')?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    if close < open {
        return None;
    }
    let name = String::from_utf8_lossy(&stat[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state(0) ppid(1) … starttime(19).
    let ppid = fields.nth(1)?.parse().ok()?;
    let start = fields.nth(17)?.parse().ok()?;
    Some((name, ppid, start))
}

/// `(uid, euid, gid)` from `/proc/PID/status`.
pub fn parse_status_ids(status: &[u8]) -> (Option<u32>, Option<u32>, Option<u32>) {
    let (mut uid, mut euid, mut gid) = (None, None, None);
    for line in status.split(|b| *b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"Uid:") {
            let mut ids = ids(rest);
            uid = ids.next();
            euid = ids.next();
        } else if let Some(rest) = line.strip_prefix(b"Gid:") {
            gid = ids(rest).next();
            break; // Gid follows Uid
        }
    }
    (uid, euid, gid)
}

fn ids(rest: &[u8]) -> impl Iterator<Item = u32> + '_ {
    std::str::from_utf8(rest)
        .unwrap_or("")
        .split_ascii_whitespace()
        .filter_map(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_names() {
        let stat = b"42 (a) b\n(c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2";
        let (name, ppid, start) = parse_stat(stat).expect("parses");
        assert_eq!((name.as_str(), ppid, start), ("a) b\n(c", 7, 98765));
        assert!(parse_stat(b"42 (trunc").is_none());
        assert!(parse_stat(b"42 (x) S notanumber").is_none());
        assert!(parse_stat(b"").is_none());
    }

    #[test]
    fn parses_ids() {
        let s = b"Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_status_ids(s), (Some(1000), Some(0), Some(100)));
        assert_eq!(parse_status_ids(b"garbage"), (None, None, None));
    }

    #[test]
    fn snapshot_sees_this_process() {
        let snap =
            snapshot(Path::new("/proc"), SnapshotOptions { cwd: true }).expect("reads /proc");
        let me = snap
            .processes
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("this process is listed");
        assert!(me.start_time.is_some());
        assert_eq!(me.uid, Some(rustix::process::getuid().as_raw()));
        assert!(me.exe.as_deref().is_some_and(|e| e.starts_with('/')));
        assert!(me.cwd.is_some());
        assert_eq!(me.argv, std::env::args().collect::<Vec<_>>());
    }

    #[test]
    fn threads_keep_pid_order() {
        let root = rustix::fs::open("/proc", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .expect("opens /proc");
        let me = std::process::id();
        let mine = read_all(&root, &[me; 100], SnapshotOptions::default(), 3);
        assert_eq!(mine.len(), 100);
        assert!(mine.iter().all(|p| p.pid == me && p.cwd.is_none()));
        let pids = list_pids(&root);
        assert!(pids.contains(&me) && pids.is_sorted());
        let all = read_all(&root, &pids, SnapshotOptions::default(), 2);
        assert!(all.iter().map(|p| p.pid).is_sorted());
    }
}
