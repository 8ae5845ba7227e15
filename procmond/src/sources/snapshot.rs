//! One enumeration of the live process table, on every platform.
//!
//! The inventory at start, every reconciliation pass and the polling
//! collector all start from a `Snapshot`. On Linux it is read straight from
//! procfs (fast, and with the same start-time clock as the eBPF stream);
//! on FreeBSD from sysctl `kern.proc.*` (`freebsd::kinfo`); elsewhere from
//! the sysinfo crate.

use crate::model::{EntityId, EventKind, EventSource, Parent, ProcessEvent, Session};

/// Most argv bytes kept per process, in every source (docs/reference.md §2
/// "bounded"): what the probes copy (`ARGS_MAX_LEN - 1` in
/// procmond_record.h), so that procfs and the kernel cut a long command line
/// at the same byte.
pub const ARGV_MAX_BYTES: usize = 4095;
/// Most argv entries kept per process.
pub const ARGV_MAX_ARGS: usize = 256;

/// What one enumeration knows about a live process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub euid: Option<u32>,
    pub name: String,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub cwd: Option<String>,
    /// Unix-epoch ns, tick precision (see `clock`).
    pub start_time: Option<i64>,
    /// Kernel cgroup v2 id, where the reader knows it (the task iterator).
    pub cgroup_id: Option<u64>,
    /// FreeBSD jail id (`ki_jid`), absent on the host.
    pub jail_id: Option<i32>,
    pub egid: Option<u32>,
    /// The process's identity (`model::identity`), where the reader can
    /// compute it from the platform's facts.
    pub entity_id: Option<EntityId>,
    /// The identity of its current image, where the reader knows the
    /// platform's exec count.
    pub exec_id: Option<EntityId>,
    /// The parent's identity: from the kernel (task iterator), or from the
    /// parent's entry in the same enumeration (procfs).
    pub parent_entity_id: Option<EntityId>,
    /// Session id, process group, tty and login uid (the leaders' ids are
    /// filled by the process table, `pipeline::lineage`).
    pub session: Session,
}

impl ProcessInfo {
    /// `(pid, start_time)`: the identity that survives PID reuse.
    pub fn key(&self) -> (u32, Option<i64>) {
        (self.pid, self.start_time)
    }

    /// The event describing this process.
    pub fn to_event(&self, kind: EventKind, source: EventSource, timestamp: i64) -> ProcessEvent {
        let mut e = ProcessEvent::new(kind, source, timestamp, self.pid);
        e.ppid = self.ppid;
        e.uid = self.uid;
        e.gid = self.gid;
        e.euid = self.euid;
        e.name = self.name.clone();
        e.exe = self.exe.clone();
        e.argv = self.argv.clone();
        e.argv_truncated = self.argv_truncated;
        e.cwd = self.cwd.clone();
        e.start_time = self.start_time;
        e.platform.cgroup_id = self.cgroup_id;
        e.platform.jail_id = self.jail_id;
        e.egid = self.egid;
        e.entity_id = self.entity_id;
        e.exec_id = self.exec_id;
        e.session = self.session.clone();
        if let Some(ppid) = self.ppid {
            e.parent = Some(Parent {
                entity_id: self.parent_entity_id,
                pid: ppid,
                ..Parent::default()
            });
        }
        e
    }
}

/// The process table at one instant (as near as a non-atomic read gets).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When the enumeration started, Unix-epoch ns.
    pub taken_at: i64,
    /// When it started on the kernel's clock (CLOCK_BOOTTIME ns), where known.
    pub taken_at_boot_ns: Option<u64>,
    pub processes: Vec<ProcessInfo>,
}

/// What to read besides the basics.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotOptions {
    /// Read each process's working directory (`enhanced_metadata`).
    pub cwd: bool,
}

/// Where the sensor's snapshots come from: the BPF task iterator while the
/// kernel source runs and it loaded, else procfs (sysinfo off Linux).
#[derive(Debug, Clone, Default)]
pub struct SnapshotReader {
    #[cfg(target_os = "linux")]
    iter: Option<std::sync::Arc<std::sync::Mutex<super::ebpf::iter::TaskIter>>>,
    /// Windows: the ETW rundown's command lines, for what sysinfo misses.
    #[cfg(windows)]
    rundown: Option<std::sync::Arc<std::sync::Mutex<super::etw::rundown::Rundown>>>,
}

impl SnapshotReader {
    #[cfg(target_os = "linux")]
    pub fn with_task_iter(iter: super::ebpf::iter::TaskIter) -> Self {
        Self {
            iter: Some(std::sync::Arc::new(std::sync::Mutex::new(iter))),
        }
    }

    /// Windows: sysinfo, with command lines it cannot read taken from the
    /// ETW source's rundown (`etw::rundown`).
    #[cfg(windows)]
    pub fn with_rundown(
        rundown: std::sync::Arc<std::sync::Mutex<super::etw::rundown::Rundown>>,
    ) -> Self {
        Self {
            rundown: Some(rundown),
        }
    }

    /// `bpf_iter` or `procfs` (`kinfo` on FreeBSD, `sysinfo` elsewhere):
    /// what `take` reads.
    pub fn name(&self) -> &'static str {
        #[cfg(target_os = "linux")]
        if self.iter.is_some() {
            return "bpf_iter";
        }
        if cfg!(target_os = "linux") {
            "procfs"
        } else if cfg!(target_os = "freebsd") {
            "kinfo"
        } else {
            "sysinfo"
        }
    }

    /// One snapshot; a failed iterator pass falls back to procfs (logged).
    pub fn take(&self, options: SnapshotOptions) -> std::io::Result<Snapshot> {
        #[cfg(target_os = "linux")]
        if let Some(iter) = &self.iter {
            let mut iter = iter.lock().unwrap_or_else(|p| p.into_inner());
            match iter.snapshot(options) {
                Ok(s) => return Ok(s),
                Err(e) => tracing::warn!(error = %e, "task iterator pass failed: reading procfs"),
            }
        }
        #[cfg(windows)]
        if let Some(rundown) = &self.rundown {
            let mut snapshot = take(options)?;
            let filled = rundown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fill(&mut snapshot);
            tracing::debug!(filled, "command lines from the ETW rundown");
            return Ok(snapshot);
        }
        take(options)
    }
}

/// Enumerates every live process with the platform's fastest reader.
pub fn take(options: SnapshotOptions) -> std::io::Result<Snapshot> {
    #[cfg(target_os = "linux")]
    {
        super::procfs::snapshot(std::path::Path::new("/proc"), options)
    }
    #[cfg(target_os = "freebsd")]
    {
        super::freebsd::kinfo::snapshot(options)
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    {
        super::sysinfo_snapshot::snapshot(options)
    }
}

/// Splits NUL-separated argv bytes (as in `/proc/PID/cmdline` or the kernel's
/// arg area) into strings: invalid UTF-8 becomes U+FFFD, the result is bounded
/// by `ARGV_MAX_BYTES` / `ARGV_MAX_ARGS`, and `truncated` reports any cut.
pub fn split_argv(bytes: &[u8], already_truncated: bool) -> (Vec<String>, bool) {
    let mut truncated = already_truncated;
    let mut bytes = bytes;
    if bytes.len() > ARGV_MAX_BYTES {
        bytes = &bytes[..ARGV_MAX_BYTES];
        truncated = true;
    }
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return (Vec::new(), truncated);
    }
    let mut argv = Vec::new();
    for part in bytes.split(|b| *b == 0) {
        if argv.len() == ARGV_MAX_ARGS {
            truncated = true;
            break;
        }
        argv.push(String::from_utf8_lossy(part).into_owned());
    }
    (argv, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_argv_handles_hostile_input() {
        assert_eq!(
            split_argv(b"a\0b c\0", false),
            (vec!["a".into(), "b c".into()], false)
        );
        let (v, t) = split_argv(b"\xff\xfe\0x\ny", false);
        assert_eq!(v, vec!["\u{fffd}\u{fffd}".to_string(), "x\ny".to_string()]);
        assert!(!t);
        let huge = vec![b'a'; ARGV_MAX_BYTES * 3];
        let (v, t) = split_argv(&huge, false);
        assert!(t);
        assert_eq!(v[0].len(), ARGV_MAX_BYTES);
        let many = "x\0".repeat(ARGV_MAX_ARGS + 10);
        let (v, t) = split_argv(many.as_bytes(), false);
        assert_eq!((v.len(), t), (ARGV_MAX_ARGS, true));
        assert_eq!(split_argv(b"", true), (vec![], true));
    }
}
