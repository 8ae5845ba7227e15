//! The FreeBSD process table, read straight from sysctl(3): `kern.proc.proc`
//! (one `struct kinfo_proc` per process), then per process
//! `kern.proc.args`, `kern.proc.pathname` and, with `enhanced_metadata`,
//! `kern.proc.cwd` (a `struct kinfo_file`), mapped to `ProcessInfo`.
//!
//! Why not sysinfo (which the other non-Linux builds use): `kinfo_proc`
//! gives the start time in microseconds (`ki_start`; sysinfo rounds it to
//! seconds), the jail id (`ki_jid`), and the same reading serves the audit
//! source's per-process look-ups, so an event and a snapshot name a process
//! with the same `(pid, start_time)`.
//!
//! The byte layout is parsed here by offsets (pure, tested on Linux with
//! fixtures); `ffi.rs` asserts at compile time, on FreeBSD builds, that
//! these offsets are the libc crate's `kinfo_proc` / `kinfo_file` ones.

use crate::model::EntityId;
use crate::model::identity::{FreeBsdBoot, Timeval};
use crate::sources::snapshot::{ProcessInfo, split_argv};

/// `KINFO_PROC_SIZE` on LP64 FreeBSD (sys/sys/user.h): `ki_structsize`
/// of every entry, and the stride of `kern.proc.proc`.
pub const KINFO_PROC_SIZE: usize = 1088;

/// Byte offsets in LP64 `struct kinfo_proc` (sys/sys/user.h; unchanged
/// since FreeBSD 11, new fields take spare space).
pub mod off {
    pub const STRUCTSIZE: usize = 0;
    pub const PID: usize = 72;
    pub const PPID: usize = 76;
    /// `ki_uid`, the effective uid.
    pub const UID: usize = 168;
    pub const RUID: usize = 172;
    pub const RGID: usize = 180;
    /// `ki_groups[0]`, the effective gid (what `KERN_PROC_GID` matches).
    pub const GROUPS: usize = 192;
    /// `ki_start`, a `struct timeval` (two i64: seconds, microseconds).
    pub const START: usize = 336;
    pub const STAT: usize = 388;
    /// `ki_comm[COMMLEN + 1]`.
    pub const COMM: usize = 447;
    pub const COMM_LEN: usize = 20;
    pub const JID: usize = 592;
    /// `kf_path[PATH_MAX]` in `struct kinfo_file` (KINFO_FILE_SIZE 1392).
    pub const KF_PATH: usize = 368;
}

/// `SZOMB` (sys/sys/proc.h).
pub const SZOMB: u8 = 5;

/// What procmond uses of one `kinfo_proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kinfo {
    pub pid: u32,
    pub ppid: u32,
    pub euid: u32,
    pub ruid: u32,
    pub rgid: u32,
    /// `ki_groups[0]`: the effective gid.
    pub egid: u32,
    /// `ki_start` in µs since the epoch; `None` when the kernel left it 0.
    pub start_us: Option<i64>,
    pub comm: String,
    /// `ki_jid`: 0 for the host, else the jail.
    pub jid: i32,
    pub zombie: bool,
}

/// Why a `kern.proc.*` answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KinfoError {
    #[error("kinfo_proc of {0} bytes is shorter than {KINFO_PROC_SIZE}")]
    Short(usize),
    #[error("ki_structsize {0} is not {KINFO_PROC_SIZE}: another kernel ABI")]
    StructSize(i32),
    #[error("process table of {0} bytes is not whole kinfo_proc entries")]
    Ragged(usize),
    #[error("negative pid {0}")]
    Pid(i32),
}

fn ne<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
}
fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    ne(b, at).map(i32::from_ne_bytes)
}
fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    ne(b, at).map(i64::from_ne_bytes)
}

/// Text up to the first NUL, lossy; `None` when empty.
pub fn c_string(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    let s = b.get(..end)?;
    (!s.is_empty()).then(|| String::from_utf8_lossy(s).into_owned())
}

/// Seconds and microseconds as µs (saturating).
pub fn timeval_us(sec: i64, usec: i64) -> i64 {
    sec.saturating_mul(1_000_000).saturating_add(usec)
}

/// A `struct timeval` (LP64: two native i64) as µs, e.g. `kern.boottime`.
pub fn parse_timeval(b: &[u8]) -> Option<i64> {
    Some(timeval_us(i64_at(b, 0)?, i64_at(b, 8)?))
}

/// Parses one `kinfo_proc` (native byte order).
pub fn parse_kinfo_proc(b: &[u8]) -> Result<Kinfo, KinfoError> {
    if b.len() < KINFO_PROC_SIZE {
        return Err(KinfoError::Short(b.len()));
    }
    let short = || KinfoError::Short(b.len());
    let size = i32_at(b, off::STRUCTSIZE).ok_or_else(short)?;
    if usize::try_from(size).ok() != Some(KINFO_PROC_SIZE) {
        return Err(KinfoError::StructSize(size));
    }
    let u32_at = |at| i32_at(b, at).map(|v| v as u32).ok_or_else(short);
    let pid = i32_at(b, off::PID).ok_or_else(short)?;
    let pid = u32::try_from(pid).map_err(|_| KinfoError::Pid(pid))?;
    let sec = i64_at(b, off::START).ok_or_else(short)?;
    let usec = i64_at(b, off::START + 8).ok_or_else(short)?;
    let comm = b
        .get(off::COMM..off::COMM + off::COMM_LEN)
        .ok_or_else(short)?;
    Ok(Kinfo {
        pid,
        ppid: u32_at(off::PPID)?,
        euid: u32_at(off::UID)?,
        ruid: u32_at(off::RUID)?,
        rgid: u32_at(off::RGID)?,
        egid: u32_at(off::GROUPS)?,
        start_us: (sec != 0 || usec != 0).then(|| timeval_us(sec, usec)),
        comm: c_string(comm).unwrap_or_default(),
        jid: i32_at(b, off::JID).ok_or_else(short)?,
        zombie: b.get(off::STAT).copied() == Some(SZOMB),
    })
}

/// Parses a `kern.proc.proc` / `kern.proc.pid` answer. A wrong entry size
/// refuses the whole table (every entry would be misread); an entry with
/// an impossible pid is skipped.
pub fn parse_table(b: &[u8]) -> Result<Vec<Kinfo>, KinfoError> {
    if !b.len().is_multiple_of(KINFO_PROC_SIZE) {
        return Err(KinfoError::Ragged(b.len()));
    }
    let mut out = Vec::with_capacity(b.len() / KINFO_PROC_SIZE);
    for entry in b.chunks_exact(KINFO_PROC_SIZE) {
        match parse_kinfo_proc(entry) {
            Ok(k) => out.push(k),
            Err(KinfoError::Pid(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The path of a `kern.proc.cwd` answer (`struct kinfo_file`).
pub fn parse_kinfo_file_path(b: &[u8]) -> Option<String> {
    let size = usize::try_from(i32_at(b, 0)?).ok()?;
    c_string(b.get(off::KF_PATH..size.min(b.len()))?)
}

/// `ki_start` as Unix ns, re-based on the boot time first seen: stepping
/// the clock moves `kern.boottime` and every `ki_start` with it, and must
/// not change which process a `(pid, start_time)` names. Arguments in µs.
pub fn start_time_ns(start_us: i64, boottime_now_us: i64, boottime_first_us: i64) -> i64 {
    start_us
        .saturating_sub(boottime_now_us)
        .saturating_add(boottime_first_us)
        .saturating_mul(1_000)
}

/// A process's id from its pid and its start time as events and snapshots
/// carry it (`start_time_ns`: `ki_start` re-based on the boot time first
/// seen, so the id survives a clock step while procmond runs). `None`
/// without a start time.
pub fn entity_id(boot: &FreeBsdBoot, pid: u32, start_time: Option<i64>) -> Option<EntityId> {
    let start = Timeval::from_us(start_time?.div_euclid(1_000))?;
    Some(boot.entity_id(start, pid))
}

/// `kern.hostuuid` (text, NUL-terminated) as 16 RFC 9562 bytes; `None`
/// for text that is no UUID, and for the all-zero UUID a host without one
/// reports (it would name every such host alike).
pub fn parse_hostuuid(b: &[u8]) -> Option<[u8; 16]> {
    let text = c_string(b)?;
    EntityId::parse(text.trim())
        .map(|u| u.0)
        .filter(|u| u.iter().any(|b| *b != 0))
}

/// Fills each entry's `entity_id` and its parent's (from the parent's
/// entry in the same table).
pub fn fill_identity(boot: &FreeBsdBoot, processes: &mut [ProcessInfo]) {
    let mut by_pid = std::collections::HashMap::with_capacity(processes.len());
    for p in processes.iter_mut() {
        p.entity_id = entity_id(boot, p.pid, p.start_time);
        if let Some(id) = p.entity_id {
            by_pid.insert(p.pid, id);
        }
    }
    for p in processes.iter_mut() {
        p.parent_entity_id = p.ppid.and_then(|pp| by_pid.get(&pp).copied());
    }
}

/// The snapshot entry for a process: its `kinfo_proc`, the start time
/// (`start_time_ns`), and what the per-process sysctls gave (argv bytes as
/// `kern.proc.args` returns them, exe, cwd); missing ones stay `None`.
pub fn to_process_info(
    k: &Kinfo,
    start_time: Option<i64>,
    args: Option<&[u8]>,
    exe: Option<String>,
    cwd: Option<String>,
) -> ProcessInfo {
    let (argv, argv_truncated) = split_argv(args.unwrap_or_default(), false);
    ProcessInfo {
        pid: k.pid,
        ppid: Some(k.ppid),
        uid: Some(k.ruid),
        gid: Some(k.rgid),
        euid: Some(k.euid),
        egid: Some(k.egid),
        name: k.comm.clone(),
        exe,
        argv,
        argv_truncated,
        cwd,
        start_time,
        jail_id: (k.jid != 0).then_some(k.jid),
        ..ProcessInfo::default()
    }
}

#[cfg(target_os = "freebsd")]
pub use live::*;

/// The sysctl reads (FreeBSD builds only).
#[cfg(target_os = "freebsd")]
mod live {
    use std::sync::OnceLock;

    use super::*;
    use crate::clock;
    use crate::sources::freebsd::ffi;
    use crate::sources::snapshot::{Snapshot, SnapshotOptions};

    fn mib(what: libc::c_int, pid: u32) -> [libc::c_int; 4] {
        [
            libc::CTL_KERN,
            libc::KERN_PROC,
            what,
            libc::c_int::try_from(pid).unwrap_or(-1),
        ]
    }

    /// `kern.boottime` now, in µs.
    pub fn boottime_us() -> Option<i64> {
        ffi::sysctl(&[libc::CTL_KERN, libc::KERN_BOOTTIME])
            .ok()
            .and_then(|b| parse_timeval(&b))
    }

    /// The boot time first seen by this process, µs (see `start_time_ns`).
    pub fn boottime_first_us() -> i64 {
        static FIRST: OnceLock<i64> = OnceLock::new();
        *FIRST.get_or_init(|| boottime_us().unwrap_or(0))
    }

    /// This boot's facts for process ids (`kern.hostuuid`, the boot time
    /// first seen), read once; `None` (logged once) when the host has no
    /// usable hostuuid.
    pub fn boot() -> Option<&'static FreeBsdBoot> {
        static BOOT: OnceLock<Option<FreeBsdBoot>> = OnceLock::new();
        BOOT.get_or_init(|| {
            let hostuuid = ffi::sysctl_by_name(c"kern.hostuuid")
                .inspect_err(|e| tracing::error!(error = %e, "no entity_id on any event: kern.hostuuid cannot be read"))
                .ok()
                .and_then(|b| {
                    let id = parse_hostuuid(&b);
                    if id.is_none() {
                        tracing::error!(value = ?c_string(&b), "no entity_id on any event: kern.hostuuid is not a usable UUID");
                    }
                    id
                })?;
            let boottime = Timeval::from_us(boottime_first_us())?;
            Some(FreeBsdBoot { hostuuid, boottime })
        })
        .as_ref()
    }

    /// A process's start time as events and snapshots report it.
    pub fn start_time(k: &Kinfo, boottime_now_us: i64) -> Option<i64> {
        k.start_us
            .map(|s| start_time_ns(s, boottime_now_us, boottime_first_us()))
    }

    /// Every process (`kern.proc.proc`, threads folded).
    pub fn processes() -> std::io::Result<Vec<Kinfo>> {
        let b = ffi::sysctl(&[libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PROC])?;
        parse_table(&b).map_err(std::io::Error::other)
    }

    /// One process (`kern.proc.pid.PID`), if it still exists.
    pub fn process(pid: u32) -> Option<Kinfo> {
        let b = ffi::sysctl(&mib(libc::KERN_PROC_PID, pid)).ok()?;
        parse_table(&b).ok()?.into_iter().find(|k| k.pid == pid)
    }

    /// `kern.proc.args.PID`: NUL-separated argv.
    pub fn args(pid: u32) -> Option<Vec<u8>> {
        ffi::sysctl(&mib(libc::KERN_PROC_ARGS, pid)).ok()
    }

    /// `kern.proc.pathname.PID`: the executable's path.
    pub fn pathname(pid: u32) -> Option<String> {
        c_string(&ffi::sysctl(&mib(libc::KERN_PROC_PATHNAME, pid)).ok()?)
    }

    /// `kern.proc.cwd.PID`: the working directory (needs the right to
    /// debug the process, i.e. root for others').
    pub fn cwd(pid: u32) -> Option<String> {
        parse_kinfo_file_path(&ffi::sysctl(&mib(libc::KERN_PROC_CWD, pid)).ok()?)
    }

    /// One enumeration of the process table.
    pub fn snapshot(options: SnapshotOptions) -> std::io::Result<Snapshot> {
        let taken_at = clock::now_unix_ns();
        let boot = boottime_us().unwrap_or_else(boottime_first_us);
        let table = processes()?;
        let mut processes: Vec<ProcessInfo> = table
            .iter()
            .map(|k| {
                let args = if k.zombie { None } else { args(k.pid) };
                let exe = if k.zombie { None } else { pathname(k.pid) };
                let cwd = (options.cwd && !k.zombie).then(|| cwd(k.pid)).flatten();
                to_process_info(k, start_time(k, boot), args.as_deref(), exe, cwd)
            })
            .collect();
        if let Some(ids) = self::boot() {
            fill_identity(ids, &mut processes);
        }
        Ok(Snapshot {
            taken_at,
            taken_at_event_clock: None,
            processes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `kinfo_proc` as the kernel lays it out (native byte order).
    fn entry(pid: i32, ppid: i32, comm: &[u8], jid: i32, start: (i64, i64)) -> Vec<u8> {
        let mut b = vec![0u8; KINFO_PROC_SIZE];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(off::STRUCTSIZE, &(KINFO_PROC_SIZE as i32).to_ne_bytes());
        put(off::PID, &pid.to_ne_bytes());
        put(off::PPID, &ppid.to_ne_bytes());
        put(off::UID, &0i32.to_ne_bytes());
        put(off::RUID, &1001i32.to_ne_bytes());
        put(off::RGID, &20i32.to_ne_bytes());
        put(off::GROUPS, &21i32.to_ne_bytes());
        put(off::START, &start.0.to_ne_bytes());
        put(off::START + 8, &start.1.to_ne_bytes());
        put(off::STAT, &[2]);
        put(off::COMM, comm);
        put(off::JID, &jid.to_ne_bytes());
        b
    }

    #[test]
    fn parses_kinfo_proc() {
        let k = parse_kinfo_proc(&entry(42, 1, b"sshd\0", 3, (1_700_000_000, 123_456)))
            .expect("parses");
        assert_eq!(
            (k.pid, k.ppid, k.ruid, k.euid, k.rgid),
            (42, 1, 1001, 0, 20)
        );
        assert_eq!(k.egid, 21);
        assert_eq!(k.comm, "sshd");
        assert_eq!((k.jid, k.zombie), (3, false));
        assert_eq!(k.start_us, Some(1_700_000_000_123_456));
        // A full-width name has no NUL; hostile bytes are replaced.
        let k = parse_kinfo_proc(&entry(1, 0, &[0xff; off::COMM_LEN], 0, (0, 0))).expect("parses");
        assert_eq!(k.comm.chars().count(), off::COMM_LEN);
        assert_eq!(k.start_us, None);
    }

    #[test]
    fn refuses_other_layouts() {
        let e = entry(1, 0, b"init", 0, (1, 0));
        assert_eq!(parse_kinfo_proc(&e[..100]), Err(KinfoError::Short(100)));
        let mut other = e.clone();
        other[..4].copy_from_slice(&1096i32.to_ne_bytes());
        assert_eq!(parse_kinfo_proc(&other), Err(KinfoError::StructSize(1096)));
        assert_eq!(
            parse_table(&e[..KINFO_PROC_SIZE - 1]),
            Err(KinfoError::Ragged(1087))
        );
        // A table: an impossible pid is skipped, the rest kept.
        let mut table = entry(-5, 0, b"bad", 0, (1, 0));
        table.extend(entry(7, 1, b"ok", 0, (1, 0)));
        let all = parse_table(&table).expect("parses");
        assert_eq!(all.iter().map(|k| k.pid).collect::<Vec<_>>(), [7]);
        assert_eq!(parse_table(&[]), Ok(vec![]));
    }

    #[test]
    fn kinfo_file_path_and_strings() {
        let mut f = vec![0u8; 1392];
        f[..4].copy_from_slice(&1392i32.to_ne_bytes());
        f[off::KF_PATH..off::KF_PATH + 5].copy_from_slice(b"/home");
        assert_eq!(parse_kinfo_file_path(&f).as_deref(), Some("/home"));
        // Packed (kf_structsize smaller), or cut short: still bounded.
        f[..4].copy_from_slice(&376i32.to_ne_bytes());
        assert_eq!(parse_kinfo_file_path(&f).as_deref(), Some("/home"));
        assert_eq!(parse_kinfo_file_path(&f[..370]).as_deref(), Some("/h"));
        assert_eq!(parse_kinfo_file_path(&f[..10]), None);
        f[..4].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(parse_kinfo_file_path(&f), None);
        assert_eq!(c_string(b"/bin/sh\0junk").as_deref(), Some("/bin/sh"));
        assert_eq!(c_string(b"\0"), None);
        let tv: Vec<u8> = [5i64, 7].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(parse_timeval(&tv), Some(5_000_007));
        assert_eq!(parse_timeval(&tv[..15]), None);
    }

    #[test]
    fn start_time_survives_a_clock_step() {
        // Booted at 1000 s; the process started 5 s later.
        let first = 1_000_000_000;
        assert_eq!(
            start_time_ns(1_005_000_000, first, first),
            1_005_000_000_000
        );
        // The clock is stepped forward by 60 s: boottime and ki_start move.
        let stepped = first + 60_000_000;
        assert_eq!(
            start_time_ns(1_065_000_000, stepped, first),
            1_005_000_000_000
        );
    }

    #[test]
    fn identity_from_start_time_and_parent_in_the_table() {
        let boot = FreeBsdBoot {
            hostuuid: [7; 16],
            boottime: Timeval {
                sec: 1_000,
                usec: 0,
            },
        };
        let k = |pid, ppid| {
            let e = entry(pid, ppid, b"sh\0", 0, (1_005, 250));
            parse_kinfo_proc(&e).expect("parses")
        };
        let mut table = vec![
            to_process_info(&k(1, 0), Some(1_000_500_000_000), None, None, None),
            to_process_info(&k(50, 1), Some(1_005_000_250_000), None, None, None),
            to_process_info(&k(51, 99), Some(1_005_000_250_000), None, None, None),
            to_process_info(&k(52, 50), None, None, None, None),
        ];
        fill_identity(&boot, &mut table);
        let start = Timeval {
            sec: 1_005,
            usec: 250,
        };
        assert_eq!(table[1].entity_id, Some(boot.entity_id(start, 50)));
        assert_eq!(table[1].parent_entity_id, table[0].entity_id);
        assert!(table[0].entity_id.is_some());
        assert_eq!(table[2].parent_entity_id, None, "parent not in the table");
        assert_eq!(table[3].entity_id, None, "no start time, no id");
        assert_eq!(table[3].parent_entity_id, table[1].entity_id);
        let e = table[1].to_event(
            crate::model::EventKind::Snapshot,
            crate::model::EventSource::Poll,
            1,
        );
        assert_eq!(e.parent.and_then(|p| p.entity_id), table[0].entity_id);
        // kern.hostuuid as the kernel answers it.
        let mut text = b"5a3e1b2c-9d4f-11ee-8c90-0242ac120002".to_vec();
        text.push(0);
        assert_eq!(
            parse_hostuuid(&text).map(|u| u[0]),
            Some(0x5a),
            "text to RFC bytes"
        );
        assert_eq!(
            parse_hostuuid(b"00000000-0000-0000-0000-000000000000\0"),
            None
        );
        assert_eq!(parse_hostuuid(b"not a uuid\0"), None);
    }

    #[test]
    fn maps_to_process_info() {
        let k = parse_kinfo_proc(&entry(9, 1, b"cron\0", 0, (10, 0))).expect("parses");
        let p = to_process_info(
            &k,
            Some(10_000_000_000),
            Some(b"/usr/sbin/cron\0-s\0"),
            Some("/usr/sbin/cron".into()),
            None,
        );
        assert_eq!(
            (p.pid, p.ppid, p.uid, p.euid, p.gid),
            (9, Some(1), Some(1001), Some(0), Some(20))
        );
        assert_eq!(
            (p.name.as_str(), p.exe.as_deref()),
            ("cron", Some("/usr/sbin/cron"))
        );
        assert_eq!(p.argv, ["/usr/sbin/cron", "-s"]);
        assert_eq!((p.start_time, p.cwd), (Some(10_000_000_000), None));
        assert_eq!(p.jail_id, None, "jid 0 is the host");
        // A kernel process: no args, no path.
        let p = to_process_info(&k, None, Some(b""), None, None);
        assert!(p.argv.is_empty() && p.exe.is_none());
        // A jailed one: its jail id reaches the event.
        let jailed = parse_kinfo_proc(&entry(10, 1, b"nginx\0", 7, (10, 0))).expect("parses");
        let p = to_process_info(&jailed, None, None, None, None);
        assert_eq!(p.jail_id, Some(7));
        let e = p.to_event(
            crate::model::EventKind::Snapshot,
            crate::model::EventSource::Poll,
            1,
        );
        assert_eq!(e.platform.jail_id, Some(7));
    }
}
