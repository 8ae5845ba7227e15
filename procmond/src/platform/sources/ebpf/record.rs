//! Decoding of kernel records from the ring buffer.
//!
//! The layout is defined in `procmond-ebpf/include/procmond_record.h`. Bytes
//! from the kernel are still checked: a record with a wrong version, kind or
//! length is refused with a reason (the reader counts and drops it); nothing
//! here can panic or read out of bounds.

use super::layout as at;
use crate::clock;
use crate::model::identity::{self, LinuxBoot, LinuxProcessFacts};
use crate::model::{Creds, EntityId, EventKind, EventSource, Parent, ProcessEvent, Session, Tty};
use crate::sources::snapshot::{ProcessInfo, split_argv};

pub const RECORD_VERSION: u16 = 4;
pub const HEADER_LEN: usize = at::HEADER_LEN;
const KIND_EXEC: u16 = 1;
const KIND_EXIT: u16 = 2;
const KIND_FORK: u16 = 3;
/// A live process from the task iterator (`procmond_iter.bpf.c`).
const KIND_TASK: u16 = 4;
/// A uid/gid change without exec; `prev` holds the ids before.
const KIND_SETUID: u16 = 5;
/// `prev` of a setuid record whose probe could not read the ids before.
const PREV_UNKNOWN: u32 = u32::MAX;
/// `loginuid` when it was never set (or the kernel has no audit).
const LOGINUID_UNSET: u32 = u32::MAX;
const FLAG_ARGS_TRUNCATED: u32 = 1 << 0;
const FLAG_FILENAME_TRUNCATED: u32 = 1 << 1;
const FLAG_CWD_TRUNCATED: u32 = 1 << 2;
/// The header's `#define`s this file mirrors (`layout`'s test compares).
#[cfg(test)]
pub(super) const CONSTANTS: [(&str, u64); 9] = [
    ("RECORD_KIND_EXEC", KIND_EXEC as u64),
    ("RECORD_KIND_EXIT", KIND_EXIT as u64),
    ("RECORD_KIND_FORK", KIND_FORK as u64),
    ("RECORD_KIND_TASK", KIND_TASK as u64),
    ("RECORD_KIND_SETUID", KIND_SETUID as u64),
    ("PREV_UNKNOWN", PREV_UNKNOWN as u64),
    ("RECORD_FLAG_ARGS_TRUNCATED", FLAG_ARGS_TRUNCATED as u64),
    (
        "RECORD_FLAG_FILENAME_TRUNCATED",
        FLAG_FILENAME_TRUNCATED as u64,
    ),
    ("RECORD_FLAG_CWD_TRUNCATED", FLAG_CWD_TRUNCATED as u64),
];

/// Why a kernel record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    #[error("record version {0} is not {RECORD_VERSION} (probe object and procmond disagree)")]
    Version(u16),
    #[error("unknown record kind {0}")]
    Kind(u16),
    #[error("record claims {claimed} payload bytes but carries {actual}")]
    Length { claimed: usize, actual: usize },
}

/// One decoded kernel record, borrowing its variable-length parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRecord<'a> {
    pub kind: EventKind,
    pub flags: u32,
    pub ktime_boot_ns: u64,
    pub start_boottime_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub exit_status: u32,
    pub comm: &'a [u8],
    pub filename: &'a [u8],
    pub args: &'a [u8],
    /// The working directory's components, leaf first, NUL-terminated.
    pub cwd: &'a [u8],
    /// Inode of the executable the task runs (exec, task), else 0.
    pub exe_ino: u64,
    /// Its device, kernel `dev_t` encoding (major << 20 | minor).
    pub exe_dev: u32,
    pub egid: u32,
    pub ident: KernelIdentity,
}

/// The identity, parent and session facts every record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelIdentity {
    /// `task->self_exec_id`: execs along the process's line.
    pub exec_count: u64,
    pub parent_start_boottime_ns: u64,
    /// The pid namespace the process was created in (inode number).
    pub pid_ns: u32,
    /// Its tgid in that namespace.
    pub ns_tgid: u32,
    pub parent_pid_ns: u32,
    pub parent_ns_tgid: u32,
    pub sid: u32,
    pub pgid: u32,
    pub tty_nr: u32,
    pub loginuid: u32,
    /// uid, euid, gid, egid before a setuid record's change.
    pub prev: [u32; 4],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    (u64::from(u32_at(b, at + 4)) << 32) | u64::from(u32_at(b, at))
}

/// The length of the record at the start of `b` (header plus payload), if
/// its header is there and the payload fits.
pub fn record_len(b: &[u8]) -> Option<usize> {
    if b.len() < HEADER_LEN {
        return None;
    }
    let len = HEADER_LEN
        + usize::from(u16_at(b, at::FILENAME_LEN))
        + usize::from(u16_at(b, at::ARGS_LEN))
        + usize::from(u16_at(b, at::CWD_LEN));
    (len <= b.len()).then_some(len)
}

/// Parses one ring-buffer record.
pub fn parse(b: &[u8]) -> Result<KernelRecord<'_>, RecordError> {
    if b.len() < HEADER_LEN {
        return Err(RecordError::TooShort(b.len()));
    }
    // Every fixed offset below is < HEADER_LEN, checked above.
    let version = u16_at(b, at::VERSION);
    if version != RECORD_VERSION {
        return Err(RecordError::Version(version));
    }
    let kind = match u16_at(b, at::KIND) {
        KIND_EXEC => EventKind::Exec,
        KIND_EXIT => EventKind::Exit,
        KIND_FORK => EventKind::Fork,
        KIND_TASK => EventKind::Snapshot,
        KIND_SETUID => EventKind::SetUid,
        other => return Err(RecordError::Kind(other)),
    };
    let filename_len = usize::from(u16_at(b, at::FILENAME_LEN));
    let args_len = usize::from(u16_at(b, at::ARGS_LEN));
    let cwd_len = usize::from(u16_at(b, at::CWD_LEN));
    let payload = &b[HEADER_LEN..];
    let claimed = filename_len + args_len + cwd_len;
    if claimed > payload.len() {
        return Err(RecordError::Length {
            claimed,
            actual: payload.len(),
        });
    }
    let comm = &b[at::COMM..at::COMM + at::COMM_LEN];
    let comm = &comm[..comm.iter().position(|c| *c == 0).unwrap_or(comm.len())];
    Ok(KernelRecord {
        kind,
        flags: u32_at(b, at::FLAGS),
        ktime_boot_ns: u64_at(b, at::KTIME_BOOT_NS),
        start_boottime_ns: u64_at(b, at::START_BOOTTIME_NS),
        cgroup_id: u64_at(b, at::CGROUP_ID),
        pid: u32_at(b, at::PID),
        tid: u32_at(b, at::TID),
        ppid: u32_at(b, at::PPID),
        uid: u32_at(b, at::UID),
        gid: u32_at(b, at::GID),
        euid: u32_at(b, at::EUID),
        exit_status: u32_at(b, at::EXIT_CODE),
        comm,
        exe_ino: u64_at(b, at::EXE_INO),
        exe_dev: u32_at(b, at::EXE_DEV),
        egid: u32_at(b, at::EGID),
        ident: KernelIdentity {
            exec_count: u64_at(b, at::EXEC_COUNT),
            parent_start_boottime_ns: u64_at(b, at::PARENT_START_BOOTTIME_NS),
            pid_ns: u32_at(b, at::PID_NS),
            ns_tgid: u32_at(b, at::NS_TGID),
            parent_pid_ns: u32_at(b, at::PARENT_PID_NS),
            parent_ns_tgid: u32_at(b, at::PARENT_NS_TGID),
            sid: u32_at(b, at::SID),
            pgid: u32_at(b, at::PGID),
            tty_nr: u32_at(b, at::TTY_NR),
            loginuid: u32_at(b, at::LOGINUID),
            prev: [
                u32_at(b, at::PREV_UID),
                u32_at(b, at::PREV_EUID),
                u32_at(b, at::PREV_GID),
                u32_at(b, at::PREV_EGID),
            ],
        },
        filename: &payload[..filename_len],
        args: &payload[filename_len..filename_len + args_len],
        cwd: &payload[filename_len + args_len..claimed],
    })
}

/// A live process may have rewritten its argv area with a title
/// (setproctitle: "sshd: user [priv]"). The kernel then shows the area as one
/// string up to its first NUL in /proc/PID/cmdline (a last byte other than
/// NUL is its sign), and the iterator record says the same.
fn retitled(args: &[u8], truncated: bool) -> &[u8] {
    match args.last() {
        Some(&last) if last != 0 && !truncated => {
            let end = args.iter().position(|&b| b == 0).unwrap_or(args.len());
            &args[..end]
        }
        _ => args,
    }
}

/// What the record's identity facts name, computed with this boot's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identities {
    pub entity_id: Option<EntityId>,
    pub exec_id: Option<EntityId>,
    pub parent_entity_id: Option<EntityId>,
}

impl KernelIdentity {
    /// The process's, its image's and its parent's ids; `None` for what the
    /// kernel could not say (a namespace of 0: the read failed).
    pub fn identities(&self, boot: Option<&LinuxBoot>, start_boottime_ns: u64) -> Identities {
        let Some(boot) = boot else {
            return Identities::default();
        };
        let id = |pid_ns: u32, ns_tgid: u32, start: u64| {
            (pid_ns != 0 && ns_tgid != 0).then(|| {
                boot.entity_id(&LinuxProcessFacts {
                    pid_ns: u64::from(pid_ns),
                    ns_tgid: u64::from(ns_tgid),
                    start_boottime_ns: start,
                })
            })
        };
        let entity_id = id(self.pid_ns, self.ns_tgid, start_boottime_ns);
        Identities {
            entity_id,
            exec_id: entity_id.map(|e| identity::exec_id(e, self.exec_count)),
            parent_entity_id: id(
                self.parent_pid_ns,
                self.parent_ns_tgid,
                self.parent_start_boottime_ns,
            ),
        }
    }

    /// Session id, group, tty and login uid (leaders come from the table).
    pub fn session(&self) -> Session {
        Session {
            id: (self.sid != 0).then_some(self.sid),
            pgid: (self.pgid != 0).then_some(self.pgid),
            tty: Tty::from_tty_nr(self.tty_nr),
            login_uid: (self.loginuid != LOGINUID_UNSET).then_some(self.loginuid),
            ..Session::default()
        }
    }
}

impl KernelRecord<'_> {
    fn identities(&self, boot: Option<&LinuxBoot>) -> Identities {
        self.ident.identities(boot, self.start_boottime_ns)
    }

    /// The live process a task-iterator record describes; its filename slot
    /// holds the exe as path components, like the cwd.
    pub fn to_process_info(&self) -> ProcessInfo {
        self.to_process_info_with(LinuxBoot::get())
    }

    /// As `to_process_info`, with the boot's facts given (tests).
    pub fn to_process_info_with(&self, boot: Option<&LinuxBoot>) -> ProcessInfo {
        let ids = self.identities(boot);
        let truncated = self.flags & FLAG_ARGS_TRUNCATED != 0;
        let (argv, argv_truncated) = split_argv(retitled(self.args, truncated), truncated);
        let components = |raw: &[u8], cut: u32| {
            if self.flags & cut == 0 {
                cwd_from_components(raw)
            } else {
                None
            }
        };
        ProcessInfo {
            pid: self.pid,
            ppid: Some(self.ppid),
            uid: Some(self.uid),
            gid: Some(self.gid),
            euid: Some(self.euid),
            name: String::from_utf8_lossy(self.comm).into_owned(),
            exe: components(self.filename, FLAG_FILENAME_TRUNCATED),
            argv,
            argv_truncated,
            cwd: components(self.cwd, FLAG_CWD_TRUNCATED),
            start_time: Some(clock::start_from_boot_ns(self.start_boottime_ns)),
            cgroup_id: Some(self.cgroup_id),
            jail_id: None,
            egid: Some(self.egid),
            entity_id: ids.entity_id,
            exec_id: ids.exec_id,
            parent_entity_id: ids.parent_entity_id,
            session: self.ident.session(),
        }
    }

    /// The event this record describes (before enrichment and sanitizing).
    pub fn to_event(&self) -> ProcessEvent {
        self.to_event_with(LinuxBoot::get())
    }

    /// As `to_event`, with the boot's facts given (tests).
    pub fn to_event_with(&self, boot: Option<&LinuxBoot>) -> ProcessEvent {
        let mut e = ProcessEvent::new(
            self.kind,
            EventSource::Ebpf,
            clock::boot_to_unix_ns(self.ktime_boot_ns),
            self.pid,
        );
        e.tid = Some(self.tid);
        e.ppid = Some(self.ppid);
        e.uid = Some(self.uid);
        e.gid = Some(self.gid);
        e.euid = Some(self.euid);
        e.name = String::from_utf8_lossy(self.comm).into_owned();
        e.start_time = Some(clock::start_from_boot_ns(self.start_boottime_ns));
        e.platform.cgroup_id = Some(self.cgroup_id);
        e.egid = Some(self.egid);
        let ids = self.identities(boot);
        e.entity_id = ids.entity_id;
        e.exec_id = ids.exec_id;
        e.parent = Some(Parent {
            entity_id: ids.parent_entity_id,
            pid: self.ppid,
            start_time: (self.ident.parent_start_boottime_ns != 0)
                .then(|| clock::start_from_boot_ns(self.ident.parent_start_boottime_ns)),
            ..Parent::default()
        });
        e.session = self.ident.session();
        match self.kind {
            EventKind::Exec => {
                let filename = String::from_utf8_lossy(self.filename).into_owned();
                if filename.starts_with('/') && self.flags & FLAG_FILENAME_TRUNCATED == 0 {
                    e.exe = Some(filename);
                } else if !filename.is_empty() {
                    e.platform.exec_filename = Some(filename);
                }
                let (argv, truncated) =
                    split_argv(self.args, self.flags & FLAG_ARGS_TRUNCATED != 0);
                e.argv = argv;
                e.argv_truncated = truncated;
                if self.flags & FLAG_CWD_TRUNCATED == 0 {
                    e.cwd = cwd_from_components(self.cwd);
                }
                if self.exe_ino != 0 {
                    e.platform.exe_inode = Some(self.exe_ino);
                    e.platform.exe_dev = Some(user_dev(self.exe_dev));
                }
            }
            EventKind::Exit => {
                // A wait status: (code << 8) | signal, 0x80 when core dumped.
                let signal = self.exit_status & 0x7f;
                if signal == 0 {
                    e.exit_code = Some(((self.exit_status >> 8) & 0xff) as i32);
                } else {
                    e.platform.signal = Some(signal as i32);
                    e.platform.core_dumped = Some(self.exit_status & 0x80 != 0);
                }
            }
            // PREV_UNKNOWN (sys_exit probe): the process table fills them.
            EventKind::SetUid if self.ident.prev != [PREV_UNKNOWN; 4] => {
                let [uid, euid, gid, egid] = self.ident.prev;
                e.previous_creds = Some(Creds {
                    uid,
                    euid,
                    gid,
                    egid,
                });
            }
            _ => {}
        }
        e
    }
}

/// The kernel's internal `dev_t` (12-bit major << 20 | 20-bit minor) as
/// `stat(2)` reports `st_dev` (glibc's `makedev` encoding).
pub fn user_dev(kernel: u32) -> u64 {
    let (major, minor) = (u64::from(kernel >> 20), u64::from(kernel & 0xf_ffff));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32)
}

/// `/a/b/c` from the probe's leaf-first `c\0b\0a\0`; `/` for the root
/// (one empty component). `None` when the probe sent none (older kernels'
/// failures) or bytes that are not components.
fn cwd_from_components(raw: &[u8]) -> Option<String> {
    if raw == [0] {
        return Some("/".into());
    }
    let body = raw.strip_suffix(&[0])?;
    let mut path = String::with_capacity(raw.len() + 1);
    for part in body.rsplit(|b| *b == 0) {
        if part.is_empty() || part.contains(&b'/') {
            return None;
        }
        path.push('/');
        path.push_str(&String::from_utf8_lossy(part));
    }
    Some(path)
}

/// A record as the probes write it (pid 1234, parent 1, comm with hostile
/// bytes, exit status 3): fixtures for tests and the fuzz seeds.
#[doc(hidden)]
fn put(b: &mut [u8], at: usize, value: &[u8]) {
    b[at..at + value.len()].copy_from_slice(value);
}

pub fn fixture(kind: u16, filename: &[u8], args: &[u8], cwd: &[u8]) -> Vec<u8> {
    let len16 = |b: &[u8]| u16::try_from(b.len()).unwrap_or(u16::MAX).to_le_bytes();
    let mut b = vec![0u8; HEADER_LEN];
    put(&mut b, at::VERSION, &RECORD_VERSION.to_le_bytes());
    put(&mut b, at::KIND, &kind.to_le_bytes());
    put(&mut b, at::PID, &1234u32.to_le_bytes());
    put(&mut b, at::PPID, &1u32.to_le_bytes());
    put(&mut b, at::EXIT_CODE, &(3u32 << 8).to_le_bytes());
    put(&mut b, at::FILENAME_LEN, &len16(filename));
    put(&mut b, at::ARGS_LEN, &len16(args));
    put(&mut b, at::COMM, b"sh\n\x1b\xff\0");
    put(&mut b, at::CWD_LEN, &len16(cwd));
    put(&mut b, at::EXE_INO, &4242u64.to_le_bytes());
    put(&mut b, at::EXE_DEV, &((8u32 << 20) | 1).to_le_bytes());
    put(&mut b, at::EXEC_COUNT, &2u64.to_le_bytes());
    put(
        &mut b,
        at::PARENT_START_BOOTTIME_NS,
        &1_000_000_000u64.to_le_bytes(),
    );
    put(&mut b, at::PID_NS, &4_026_531_836u32.to_le_bytes());
    put(&mut b, at::NS_TGID, &1234u32.to_le_bytes());
    put(&mut b, at::PARENT_PID_NS, &4_026_531_836u32.to_le_bytes());
    put(&mut b, at::PARENT_NS_TGID, &1u32.to_le_bytes());
    put(&mut b, at::SID, &1234u32.to_le_bytes());
    put(&mut b, at::PGID, &1234u32.to_le_bytes());
    put(&mut b, at::TTY_NR, &34819u32.to_le_bytes());
    put(&mut b, at::LOGINUID, &1000u32.to_le_bytes());
    b.extend_from_slice(filename);
    b.extend_from_slice(args);
    b.extend_from_slice(cwd);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u16, filename: &[u8], args: &[u8]) -> Vec<u8> {
        record_with_cwd(kind, filename, args, b"")
    }

    fn record_with_cwd(kind: u16, filename: &[u8], args: &[u8], cwd: &[u8]) -> Vec<u8> {
        fixture(kind, filename, args, cwd)
    }

    #[test]
    fn task_records_become_process_info() {
        let b = record_with_cwd(KIND_TASK, b"true\0bin\0usr\0", b"/bin/true\0x\0", b"tmp\0");
        let r = parse(&b).expect("valid");
        assert_eq!(r.kind, EventKind::Snapshot);
        let p = r.to_process_info();
        assert_eq!(p.exe.as_deref(), Some("/usr/bin/true"));
        assert_eq!(p.argv, ["/bin/true", "x"]);
        assert_eq!(p.cwd.as_deref(), Some("/tmp"));
        assert_eq!((p.pid, p.ppid), (1234, Some(1)));
        // A kernel thread: no exe, argv or cwd.
        let k = parse(&record(KIND_TASK, b"", b""))
            .expect("valid")
            .to_process_info();
        assert_eq!((k.exe, k.argv.len(), k.cwd), (None, 0, None));
        // A retitled process (last byte not NUL): one string up to the first
        // NUL, as /proc/PID/cmdline shows it; the old tail is not argv.
        let t = parse(&record(KIND_TASK, b"", b"sshd: root [priv]\0\0-D\0x"))
            .expect("valid")
            .to_process_info();
        assert_eq!(t.argv, ["sshd: root [priv]"]);
    }

    #[test]
    fn exec_records_carry_the_executable_identity() {
        let b = record(KIND_EXEC, b"/bin/ls", b"ls\0");
        let e = parse(&b).expect("valid").to_event();
        // 8:1 is /dev/sda1: st_dev 0x801 in stat(2)'s encoding.
        assert_eq!(
            (e.platform.exe_inode, e.platform.exe_dev),
            (Some(4242), Some(0x801))
        );
        // 259:0x12345 (an NVMe partition with a large minor), as glibc encodes it.
        assert_eq!(user_dev((259 << 20) | 0x12345), 0x1231_0345);
        let exit = parse(&record(KIND_EXIT, b"", b""))
            .expect("valid")
            .to_event();
        assert_eq!(exit.platform.exe_inode, None, "only exec events carry it");
    }

    #[test]
    fn cwd_comes_from_the_probe_leaf_first() {
        let b = record_with_cwd(KIND_EXEC, b"/bin/ls", b"ls\0", b"c\0b b\0a\0");
        let e = parse(&b).expect("valid").to_event();
        assert_eq!(e.cwd.as_deref(), Some("/a/b b/c"));
        assert_eq!(e.argv, ["ls"]);
        let root = record_with_cwd(KIND_EXEC, b"/bin/ls", b"", b"\0");
        assert_eq!(
            parse(&root).expect("valid").to_event().cwd.as_deref(),
            Some("/")
        );
        let none = record_with_cwd(KIND_EXEC, b"/bin/ls", b"", b"");
        assert_eq!(parse(&none).expect("valid").to_event().cwd, None);
        // Truncated by the probe: no cwd rather than a wrong one.
        let mut deep = record_with_cwd(KIND_EXEC, b"/bin/ls", b"", b"");
        put(&mut deep, at::FLAGS, &FLAG_CWD_TRUNCATED.to_le_bytes());
        assert_eq!(parse(&deep).expect("valid").to_event().cwd, None);
        // Hostile bytes: not components, so no cwd; never a panic.
        for raw in [&b"a"[..], b"\0\0", b"a\0\0", b"x/y\0"] {
            let rec = record_with_cwd(KIND_EXEC, b"/x", b"", raw);
            assert_eq!(parse(&rec).expect("valid").to_event().cwd, None, "{raw:?}");
        }
        assert_eq!(
            cwd_from_components(b"\xff\0tmp\0"),
            Some("/tmp/\u{fffd}".into())
        );
    }

    #[test]
    fn decodes_exec_and_exit() {
        let b = record(KIND_EXEC, b"/bin/sh", b"sh\0-c\0exit 3\0");
        let e = parse(&b).expect("valid").to_event();
        assert_eq!((e.kind, e.pid, e.ppid), (EventKind::Exec, 1234, Some(1)));
        assert_eq!(e.exe.as_deref(), Some("/bin/sh"));
        assert_eq!(e.argv, ["sh", "-c", "exit 3"]);
        assert_eq!(e.name, "sh\n\u{1b}\u{fffd}");
        let e = parse(&record(KIND_EXIT, b"", b""))
            .expect("valid")
            .to_event();
        assert_eq!(e.exit_code, Some(3));
        let rel = parse(&record(KIND_EXEC, b"./x", b""))
            .expect("valid")
            .to_event();
        assert_eq!(
            (rel.exe, rel.platform.exec_filename.as_deref()),
            (None, Some("./x"))
        );
    }

    fn boot() -> LinuxBoot {
        LinuxBoot {
            boot_id: [7; 16],
            clock_ticks_per_sec: 100,
        }
    }

    #[test]
    fn records_name_the_process_its_image_and_its_parent() {
        let mut b = record(KIND_EXEC, b"/bin/ls", b"ls\0");
        put(
            &mut b,
            at::START_BOOTTIME_NS,
            &5_000_000_000u64.to_le_bytes(),
        );
        let r = parse(&b).expect("valid");
        let e = r.to_event_with(Some(&boot()));
        let own = boot().entity_id_ticks(4_026_531_836, 500, 1234);
        assert_eq!(e.entity_id, Some(own));
        assert_eq!(e.exec_id, Some(identity::exec_id(own, 2)));
        let parent = e.parent.expect("parent");
        assert_eq!(
            (parent.entity_id, parent.pid),
            (Some(boot().entity_id_ticks(4_026_531_836, 100, 1)), 1)
        );
        assert_eq!(e.session.id, Some(1234));
        assert_eq!(
            e.session.tty,
            Some(Tty {
                major: 136,
                minor: 3
            })
        );
        assert_eq!(e.session.login_uid, Some(1000));
        // The iterator's record of the same process names it the same way.
        let mut t = record(KIND_TASK, b"", b"");
        t[16..24].copy_from_slice(&5_000_000_000u64.to_le_bytes());
        let p = parse(&t)
            .expect("valid")
            .to_process_info_with(Some(&boot()));
        assert_eq!((p.entity_id, p.exec_id), (e.entity_id, e.exec_id));
        assert_eq!(p.parent_entity_id, parent.entity_id);
        // A namespace the kernel could not read: no id rather than a wrong one.
        let mut unread = b.clone();
        unread[120..124].fill(0);
        let u = parse(&unread).expect("valid").to_event_with(Some(&boot()));
        assert_eq!((u.entity_id, u.exec_id), (None, None));
        // No boot facts: nothing computed.
        assert_eq!(r.to_event_with(None).entity_id, None);
        // An unset login uid is absent.
        let mut nologin = b.clone();
        nologin[148..152].copy_from_slice(&u32::MAX.to_le_bytes());
        let n = parse(&nologin).expect("valid").to_event_with(None);
        assert_eq!(n.session.login_uid, None);
    }

    #[test]
    fn setuid_records_carry_the_ids_before_and_after() {
        let mut b = record(KIND_SETUID, b"", b"");
        put(&mut b, at::UID, &65534u32.to_le_bytes());
        put(&mut b, at::EUID, &65534u32.to_le_bytes());
        put(&mut b, at::PREV_UID, &0u32.to_le_bytes());
        put(&mut b, at::PREV_EUID, &0u32.to_le_bytes());
        put(&mut b, at::PREV_GID, &0u32.to_le_bytes());
        put(&mut b, at::PREV_EGID, &0u32.to_le_bytes());
        let e = parse(&b).expect("valid").to_event_with(None);
        assert_eq!(e.kind, EventKind::SetUid);
        assert_eq!((e.uid, e.euid), (Some(65534), Some(65534)));
        assert_eq!(e.previous_creds, Some(Creds::default()));
    }

    #[test]
    fn refuses_malformed_records() {
        assert_eq!(parse(&[0; 10]), Err(RecordError::TooShort(10)));
        let mut b = record(KIND_EXEC, b"/x", b"a\0");
        b[at::VERSION] = 9;
        assert_eq!(parse(&b), Err(RecordError::Version(9)));
        let mut b = record(KIND_EXEC, b"/x", b"a\0");
        b[at::KIND] = 77;
        assert_eq!(parse(&b), Err(RecordError::Kind(77)));
        // A record of the previous layout is refused by its version.
        let mut old = record(KIND_EXEC, b"/x", b"a\0");
        old[0..2].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(parse(&old), Err(RecordError::Version(3)));
        let mut b = record(KIND_EXEC, b"/x", b"a\0");
        b.truncate(HEADER_LEN + 1);
        assert!(matches!(parse(&b), Err(RecordError::Length { .. })));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            if let Ok(r) = parse(&data) { let _ = r.to_event(); }
        }
    }
}
