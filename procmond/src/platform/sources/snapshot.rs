//! One enumeration of the live process table, on every platform.
//!
//! The inventory at start, every reconciliation pass and the polling
//! collector all start from a `Snapshot`. On Linux it is read straight from
//! procfs (fast, and with the same start-time clock as the eBPF stream);
//! on FreeBSD from sysctl `kern.proc.*` (`freebsd::kinfo`); elsewhere from
//! the sysinfo crate. Which one is the platform's is decided in `platform`;
//! this file holds what they share.

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
    /// When it started on the clock kernel events carry, where that is not
    /// the wall clock `taken_at` reads (Linux: CLOCK_BOOTTIME turned into
    /// Unix ns with the run's one offset, `clock`).
    pub taken_at_event_clock: Option<i64>,
    pub processes: Vec<ProcessInfo>,
}

/// What to read besides the basics.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotOptions {
    /// Read each process's working directory (`enhanced_metadata`).
    pub cwd: bool,
}

/// Something that enumerates the live process table: the platform's own
/// reader (`platform::Host`), a kernel source's (the BPF task iterator, the
/// ETW rundown) or a test's (`platform::fake`).
pub trait ProcessTable: Send + Sync {
    /// What health reports as the snapshot reader (`procfs`, `bpf_iter`, …).
    fn name(&self) -> &'static str;
    /// One enumeration.
    fn take(&self, options: SnapshotOptions) -> std::io::Result<Snapshot>;
}

/// Where the sensor's snapshots come from: the platform's reader, or the
/// one a running kernel source brings. Cheap to clone.
#[derive(Clone)]
pub struct SnapshotReader(std::sync::Arc<dyn ProcessTable>);

impl SnapshotReader {
    pub fn new(table: impl ProcessTable + 'static) -> Self {
        Self(std::sync::Arc::new(table))
    }

    /// What `take` reads (`bpf_iter`, `procfs`, `kinfo`, `sysinfo`, …).
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// One snapshot.
    pub fn take(&self, options: SnapshotOptions) -> std::io::Result<Snapshot> {
        self.0.take(options)
    }
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SnapshotReader").field(&self.name()).finish()
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

impl Snapshot {
    /// When the enumeration started, on the clock events carry.
    pub fn started_on_event_clock(&self) -> i64 {
        self.taken_at_event_clock.unwrap_or(self.taken_at)
    }
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
