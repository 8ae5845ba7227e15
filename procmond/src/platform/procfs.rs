//! Fast procfs reader (Linux): the snapshot behind inventory, reconciliation
//! and polling.
//!
//! Per process it reads `stat` (name, parent, start time, session, group,
//! tty), `status` (ids, the tgid in the process's own pid namespace),
//! `cmdline`, `loginuid`, the `exe` and `cwd` links and the `ns/pid` inode
//! (with the start time and that tgid: the `entity_id`'s facts). Nearly all the time goes to the
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

use crate::clock;
use crate::model::identity::LinuxBoot;
use crate::model::{EntityId, Session, Tty};
use crate::sources::snapshot::{
    ARGV_MAX_BYTES, ProcessInfo, Snapshot, SnapshotOptions, split_argv,
};

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
    let mut processes = read_all(&root, &pids, options, worker_count(pids.len()));
    link_parents(&mut processes);
    Ok(Snapshot {
        taken_at,
        taken_at_event_clock: Some(clock::boot_to_unix_ns(taken_at_boot_ns)),
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
    let stat = parse_stat(&buf[..n])?;
    info.ppid = Some(stat.ppid);
    info.start_time = Some(clock::start_from_ticks(stat.start_ticks));
    info.session = Session {
        id: (stat.session > 0).then_some(stat.session as u32),
        pgid: (stat.pgrp > 0).then_some(stat.pgrp as u32),
        tty: Tty::from_tty_nr(stat.tty_nr as u32),
        ..Session::default()
    };
    let start_ticks = stat.start_ticks;
    info.name = stat.name;

    let mut ids = StatusIds::default();
    if let Ok(n) = read_file(dir, c"status", &mut buf[..STATUS_MAX]) {
        ids = parse_status_ids(&buf[..n]);
        (info.uid, info.euid, info.gid, info.egid) = (ids.uid, ids.euid, ids.gid, ids.egid);
    }
    info.entity_id = entity_id(dir, start_ticks, &ids);
    if let Ok(n) = read_file(dir, c"loginuid", &mut buf[..16]) {
        info.session.login_uid = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .filter(|uid| *uid != u32::MAX);
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

/// The process's CPID from its pid namespace (the `ns/pid` link's inode,
/// which `stat` follows), its tgid there and its start ticks. Where the
/// link may not be read (a process that is not dumpable) but `NStgid` has
/// one entry, the namespace is this reader's own.
fn entity_id(dir: BorrowedFd<'_>, start_ticks: u64, ids: &StatusIds) -> Option<EntityId> {
    let boot = LinuxBoot::get()?;
    let ns = match rustix::fs::statat(dir, c"ns/pid", rustix::fs::AtFlags::empty()) {
        Ok(st) => st.st_ino,
        Err(_) if ids.ns_depth == 1 => own_pid_ns()?,
        Err(_) => return None,
    };
    Some(boot.entity_id_ticks(ns, start_ticks, u64::from(ids.ns_tgid?)))
}

/// The inode of this process's pid namespace, read once.
fn own_pid_ns() -> Option<u64> {
    static NS: OnceLock<Option<u64>> = OnceLock::new();
    *NS.get_or_init(|| {
        std::fs::metadata("/proc/self/ns/pid").ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        })
    })
}

/// Fills each process's `parent_entity_id` from its parent's entry in the
/// same enumeration, unless that pid's holder started after the child (the
/// parent exited and its pid was reused).
pub fn link_parents(processes: &mut [ProcessInfo]) {
    let by_pid: std::collections::HashMap<u32, (Option<EntityId>, Option<i64>)> = processes
        .iter()
        .map(|p| (p.pid, (p.entity_id, p.start_time)))
        .collect();
    for p in processes.iter_mut() {
        let Some((id, start)) = p.ppid.and_then(|pp| by_pid.get(&pp)) else {
            continue;
        };
        if start.is_some_and(|s| p.start_time.is_some_and(|c| s > c)) {
            continue;
        }
        p.parent_entity_id = *id;
    }
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

/// What procmond keeps of `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    pub name: String,
    pub ppid: u32,
    pub pgrp: i64,
    pub session: i64,
    /// The controlling tty, kernel `dev_t` encoding (0: none).
    pub tty_nr: i64,
    /// Start, clock ticks since boot.
    pub start_ticks: u64,
}

/// The fields of `/proc/PID/stat` procmond keeps. The name sits between
/// the first `(` and the *last* `)`, since a name may itself contain `)`.
pub fn parse_stat(stat: &[u8]) -> Option<StatFields> {
    let open = stat.iter().position(|b| *b == b'(')?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    if close < open {
        return None;
    }
    let name = String::from_utf8_lossy(&stat[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state(0) ppid(1) pgrp(2) session(3) tty_nr(4) …
    // starttime(19).
    let ppid = fields.nth(1)?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    let tty_nr = fields.next()?.parse().ok()?;
    let start_ticks = fields.nth(14)?.parse().ok()?;
    Some(StatFields {
        name,
        ppid,
        pgrp,
        session,
        tty_nr,
        start_ticks,
    })
}

/// What procmond keeps of `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusIds {
    pub uid: Option<u32>,
    pub euid: Option<u32>,
    pub gid: Option<u32>,
    pub egid: Option<u32>,
    /// The last `NStgid` entry: the tgid in the process's own namespace.
    pub ns_tgid: Option<u32>,
    /// How many `NStgid` entries: 1 when the process's pid namespace is
    /// the reader's.
    pub ns_depth: usize,
}

/// Ids from `/proc/PID/status` (`Uid`, `Gid`, `NStgid`, in that order).
pub fn parse_status_ids(status: &[u8]) -> StatusIds {
    let mut out = StatusIds::default();
    for line in status.split(|b| *b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"Uid:") {
            let mut ids = ids(rest);
            out.uid = ids.next();
            out.euid = ids.next();
        } else if let Some(rest) = line.strip_prefix(b"Gid:") {
            let mut ids = ids(rest);
            out.gid = ids.next();
            out.egid = ids.next();
        } else if let Some(rest) = line.strip_prefix(b"NStgid:") {
            let all: Vec<u32> = ids(rest).collect();
            out.ns_tgid = all.last().copied();
            out.ns_depth = all.len();
            break; // NStgid follows Uid and Gid
        }
    }
    out
}

fn ids(rest: &[u8]) -> impl Iterator<Item = u32> + '_ {
    std::str::from_utf8(rest)
        .unwrap_or("")
        .split_ascii_whitespace()
        .filter_map(|s| s.parse().ok())
}

/// This boot's facts, as Linux gives them: the identity rules' inputs.
impl crate::model::identity::LinuxBoot {
    /// Reads this machine's boot id and clock-tick rate.
    pub fn read() -> std::io::Result<Self> {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
        let boot_id = crate::model::EntityId::parse(text.trim()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "/proc/sys/kernel/random/boot_id is not a UUID: {:?}",
                    text.trim()
                ),
            )
        })?;
        Ok(Self {
            boot_id: boot_id.0,
            clock_ticks_per_sec: crate::clock::ticks_per_sec(),
        })
    }

    /// This boot's facts, read once; `None` where they cannot be read (the
    /// reason is logged once). Every Linux reader computes ids with these.
    pub fn get() -> Option<&'static Self> {
        static BOOT: std::sync::OnceLock<Option<LinuxBoot>> = std::sync::OnceLock::new();
        BOOT.get_or_init(|| {
            Self::read()
                .inspect_err(|e| tracing::error!(error = %e, "no entity_id on any event: the boot id cannot be read"))
                .ok()
        })
        .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_names() {
        let stat = b"42 (a) b\n(c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2";
        let f = parse_stat(stat).expect("parses");
        assert_eq!(
            (f.name.as_str(), f.ppid, f.start_ticks),
            ("a) b\n(c", 7, 98765)
        );
        assert_eq!((f.pgrp, f.session, f.tty_nr), (42, 42, 0));
        assert!(parse_stat(b"42 (trunc").is_none());
        assert!(parse_stat(b"42 (x) S notanumber").is_none());
        assert!(parse_stat(b"").is_none());
    }

    #[test]
    fn parses_ids() {
        let s = b"Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t5\t100\t100\nNStgid:\t8165\t25\n";
        let ids = parse_status_ids(s);
        assert_eq!(
            (ids.uid, ids.euid, ids.gid, ids.egid),
            (Some(1000), Some(0), Some(100), Some(5))
        );
        assert_eq!(ids.ns_tgid, Some(25), "the innermost namespace's tgid");
        assert_eq!(parse_status_ids(b"garbage"), StatusIds::default());
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
