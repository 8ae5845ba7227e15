//! Fast procfs reader (Linux): the snapshot behind inventory, reconciliation
//! and polling.
//!
//! Per process it reads `stat` (name, parent, start time), `status` (ids),
//! `cmdline` and the `exe` link — four small reads, one reused buffer, no
//! per-field allocations beyond the strings it returns. A process that exits
//! mid-read is skipped: it is gone, and the next pass or the kernel stream
//! accounts for it.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::snapshot::{ARGV_MAX_BYTES, ProcessInfo, Snapshot, SnapshotOptions, split_argv};
use crate::clock;

/// Enumerates every process under `proc_root` (normally `/proc`).
pub fn snapshot(proc_root: &Path, options: SnapshotOptions) -> io::Result<Snapshot> {
    let taken_at_boot_ns = clock::boottime_ns();
    let taken_at = clock::now_unix_ns();
    let mut processes = Vec::with_capacity(512);
    let mut buf = Vec::with_capacity(4096);
    let mut path = proc_root.to_path_buf();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        path.push(entry.file_name());
        if let Some(info) = read_process(&mut path, pid, &mut buf, options) {
            processes.push(info);
        }
        path.pop();
    }
    Ok(Snapshot {
        taken_at,
        taken_at_boot_ns: Some(taken_at_boot_ns),
        processes,
    })
}

/// Reads one process (`dir` is `/proc/PID`); `None` if it vanished.
pub fn read_process(
    dir: &mut std::path::PathBuf,
    pid: u32,
    buf: &mut Vec<u8>,
    options: SnapshotOptions,
) -> Option<ProcessInfo> {
    let mut info = ProcessInfo {
        pid,
        ..ProcessInfo::default()
    };

    read_into(dir, "stat", buf, 1024).ok()?;
    let (name, ppid, start_ticks) = parse_stat(buf)?;
    info.name = name;
    info.ppid = Some(ppid);
    info.start_time = Some(clock::start_from_ticks(start_ticks));

    if read_into(dir, "status", buf, 4096).is_ok() {
        let (uid, euid, gid) = parse_status_ids(buf);
        info.uid = uid;
        info.euid = euid;
        info.gid = gid;
    }

    if read_into(dir, "cmdline", buf, ARGV_MAX_BYTES + 1).is_ok() {
        let (argv, truncated) = split_argv(buf, false);
        info.argv = argv;
        info.argv_truncated = truncated;
    }

    info.exe = read_link(dir, "exe");
    if options.cwd {
        info.cwd = read_link(dir, "cwd");
    }
    Some(info)
}

/// Reads at most `limit` bytes of `dir/name` into `buf`.
fn read_into(
    dir: &mut std::path::PathBuf,
    name: &str,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<()> {
    dir.push(name);
    let file = File::open(&*dir);
    dir.pop();
    buf.clear();
    file?.take(limit as u64).read_to_end(buf)?;
    Ok(())
}

fn read_link(dir: &mut std::path::PathBuf, name: &str) -> Option<String> {
    dir.push(name);
    let target = std::fs::read_link(&*dir);
    dir.pop();
    target.ok().map(|p| p.to_string_lossy().into_owned())
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
        assert!(!me.argv.is_empty());
    }
}
