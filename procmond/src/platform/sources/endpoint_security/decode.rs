//! The mapping from one EndpointSecurity message to a `ProcessEvent`, as a
//! pure function over plain data, so it compiles and is tested on every
//! platform (the real client exists only on macOS).
//!
//! `EsMessage` mirrors the fields of `endpoint_sec::Message` that procmond
//! reads, borrowed from the message (`client.rs` fills it on macOS; tests
//! build it by hand). `to_event` turns it into the same event the Linux
//! probes produce: `exec`, `fork` or `exit`, with pid, parent, original
//! parent, real/effective ids from the audit token, executable, argv, cwd,
//! start time and exit status, and the code-signing facts in `platform`.
//! Bytes from the kernel are still bounded and decoded lossily: nothing here
//! can panic on hostile paths or argv.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::identity::{MacBoot, Timeval, exec_id};
use crate::model::{EventKind, EventSource, Parent, Platform, ProcessEvent};
use crate::sources::snapshot::{ARGV_MAX_ARGS, ARGV_MAX_BYTES, split_argv};

/// Longest path kept for `exe`, `cwd` and `exec_filename`, in bytes
/// (4 × macOS's PATH_MAX). A longer one is cut here and treated like a path
/// EndpointSecurity itself marked truncated.
pub const PATH_MAX_BYTES: usize = 4096;
/// Longest team or signing id kept (Apple's are far shorter).
pub const SIGNING_ID_MAX_BYTES: usize = 256;
/// How many `es_exec_arg` entries the client copies out of a message: one
/// more than are kept, so that a longer argv is seen as truncated.
pub const ARGS_TAKEN: usize = ARGV_MAX_ARGS + 1;

/// A file as ES reports it (`es_file_t`): its path and whether ES cut it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EsFile<'a> {
    pub path: &'a [u8],
    pub truncated: bool,
}

/// A process as ES reports it (`es_process_t` and its audit token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsProcess<'a> {
    /// `audit_token_to_pid`.
    pub pid: i32,
    /// `audit_token_to_pidversion`: XNU gives each process a new one at
    /// fork and again at every exec (bsd/kern/kern_exec.c).
    pub pidversion: i32,
    /// `audit_token_to_ruid`, `_euid`, `_rgid`.
    pub ruid: u32,
    pub euid: u32,
    pub rgid: u32,
    /// The current parent (`ppid`) and the one at creation (`original_ppid`,
    /// which survives reparenting to launchd).
    pub ppid: i32,
    pub original_ppid: i32,
    pub executable: EsFile<'a>,
    /// `start_time` (message version ≥ 3); the crate turns an overflowing
    /// value into the epoch itself.
    pub start_time: Option<SystemTime>,
    pub signing_id: &'a [u8],
    pub team_id: &'a [u8],
    pub cdhash: [u8; 20],
    pub is_platform_binary: bool,
}

/// `es_event_type_t` numbers of the three events procmond subscribes to
/// (ESTypes.h; `client.rs` checks them against endpoint-sec-sys at compile
/// time on macOS).
pub mod event_type {
    pub const NOTIFY_EXEC: u32 = 9;
    pub const NOTIFY_FORK: u32 = 11;
    pub const NOTIFY_EXIT: u32 = 15;
}

/// The three events procmond subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EsEvent<'a> {
    /// `ES_EVENT_TYPE_NOTIFY_EXEC`: `target` is the new image.
    Exec {
        target: EsProcess<'a>,
        /// The first `ARGS_TAKEN` `es_exec_arg` entries.
        args: Vec<&'a [u8]>,
        /// `es_exec_arg_count`: more than `args.len()` means argv was cut.
        arg_count: u32,
        /// The working directory (message version ≥ 3).
        cwd: Option<EsFile<'a>>,
    },
    /// `ES_EVENT_TYPE_NOTIFY_FORK`: the message's process is the parent.
    Fork { child: EsProcess<'a> },
    /// `ES_EVENT_TYPE_NOTIFY_EXIT`: `stat` is a wait(2) status.
    Exit { stat: i32 },
}

/// One ES message: the header fields procmond reads, the process that
/// caused it, and its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsMessage<'a> {
    pub version: u32,
    /// When it happened (`time`, wall clock).
    pub time: SystemTime,
    /// `es_event_type_t` as a number: the per-type sequence's key.
    pub event_type: u32,
    /// Per client and event type (message version ≥ 2).
    pub seq_num: Option<u64>,
    /// Per client, every type (message version ≥ 4).
    pub global_seq_num: Option<u64>,
    /// The Mach thread id that caused it (`es_thread_t.thread_id`, message
    /// version ≥ 4): a 64-bit id unique per boot, not a BSD thread id, so
    /// it is not reported as `tid`.
    pub thread_id: Option<u64>,
    pub process: EsProcess<'a>,
    pub event: EsEvent<'a>,
}

/// Why a message could not become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("EndpointSecurity message names pid {0}, which is negative")]
    NegativePid(i32),
}

/// The event `msg` describes, before enrichment and sanitizing.
pub fn to_event(msg: &EsMessage<'_>) -> Result<ProcessEvent, DecodeError> {
    let (kind, subject) = match &msg.event {
        EsEvent::Exec { target, .. } => (EventKind::Exec, target),
        EsEvent::Fork { child } => (EventKind::Fork, child),
        EsEvent::Exit { .. } => (EventKind::Exit, &msg.process),
    };
    let pid = u32::try_from(subject.pid).map_err(|_| DecodeError::NegativePid(subject.pid))?;
    let mut e = ProcessEvent::new(
        kind,
        EventSource::EndpointSecurity,
        unix_ns(msg.time).unwrap_or(0),
        pid,
    );
    // `tid` stays empty: `msg.thread_id` is a 64-bit Mach thread id (unique
    // per boot), not the 32-bit BSD thread id `tid` holds on the other
    // platforms.
    e.ppid = u32::try_from(subject.ppid).ok();
    e.uid = Some(subject.ruid);
    e.euid = Some(subject.euid);
    e.gid = Some(subject.rgid);
    let (path, cut) = bounded(subject.executable.path, PATH_MAX_BYTES);
    e.name = basename(path);
    e.start_time = subject.start_time.and_then(start_time_ns);
    signing_facts(&mut e.platform, subject);
    e.platform.original_ppid = u32::try_from(subject.original_ppid).ok();
    let clean = !cut && !subject.executable.truncated && path.starts_with(b"/");
    if clean {
        e.exe = Some(lossy(path));
    }
    match &msg.event {
        EsEvent::Exec {
            args,
            arg_count,
            cwd,
            ..
        } => {
            if !clean && !path.is_empty() {
                e.platform.exec_filename = Some(lossy(path));
            }
            let (argv, truncated) = argv_from_args(args, *arg_count);
            e.argv = argv;
            e.argv_truncated = truncated;
            e.cwd = cwd.as_ref().and_then(cwd_path);
        }
        EsEvent::Exit { stat } => exit_status(&mut e, *stat),
        EsEvent::Fork { .. } => {}
    }
    Ok(e)
}

/// Unix-epoch ns; `None` before the epoch.
fn unix_ns(t: SystemTime) -> Option<i64> {
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    Some(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A process start time as `start_time` carries it on macOS: whole seconds,
/// the precision of the sysinfo snapshots it is reconciled against (so one
/// process has one `(pid, start_time)` in the stream and in a snapshot).
/// The epoch itself is the crate's overflow value, not a time: `None`.
pub fn start_time_ns(t: SystemTime) -> Option<i64> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    if secs == 0 {
        return None;
    }
    Some(i64::try_from(secs).unwrap_or(i64::MAX / 1_000_000_000) * 1_000_000_000)
}

/// A start time as the CPID reads it (`p_start`: seconds and µs); `None`
/// for the crate's overflow value (the epoch) and times before it.
pub fn start_timeval(t: SystemTime) -> Option<Timeval> {
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    (d.as_secs() != 0).then(|| Timeval {
        sec: d.as_secs(),
        usec: u64::from(d.subsec_micros()),
    })
}

/// `kp_proc.p_starttime` from a `kern.proc.pid.PID` answer (64-bit
/// `struct kinfo_proc`, bsd/sys/proc.h: `p_un.__p_starttime` — an i64
/// seconds and an i32 µs — at offset 0, `p_pid` at 40), when the entry is
/// `pid`'s and the time is set (the kernel answers an empty buffer for a
/// pid that does not exist).
pub fn parse_kinfo_proc_start(b: &[u8], pid: u32) -> Option<Timeval> {
    const P_PID: usize = 40;
    let sec = i64::from_ne_bytes(b.get(0..8)?.try_into().ok()?);
    let usec = i32::from_ne_bytes(b.get(8..12)?.try_into().ok()?);
    let found = i32::from_ne_bytes(b.get(P_PID..P_PID + 4)?.try_into().ok()?);
    if u32::try_from(found).ok() != Some(pid) || sec <= 0 || !(0..1_000_000).contains(&usec) {
        return None;
    }
    Some(Timeval {
        sec: u64::try_from(sec).ok()?,
        usec: u64::try_from(usec).ok()?,
    })
}

/// The ids of an event `to_event` made from `msg`: the subject's
/// `entity_id` (CPID: `boot`, its start, its pid) and `exec_id` (its audit
/// token's pid version, which every exec changes); the parent's `entity_id`
/// from the message itself on a fork (the forking process is the parent),
/// else from `parent_start`, the parent's start as the caller read it —
/// used only when it is not later than the subject's (a later one belongs
/// to a process that reused the parent's pid).
pub fn identify(
    e: &mut ProcessEvent,
    msg: &EsMessage<'_>,
    boot: &MacBoot,
    parent_start: Option<Timeval>,
) {
    let subject = match &msg.event {
        EsEvent::Exec { target, .. } => target,
        EsEvent::Fork { child } => child,
        EsEvent::Exit { .. } => &msg.process,
    };
    let start = subject.start_time.and_then(start_timeval);
    e.entity_id = start.map(|s| boot.entity_id(s, e.pid));
    e.exec_id = e
        .entity_id
        .map(|id| exec_id(id, u64::from(subject.pidversion.cast_unsigned())));
    let (ppid, parent_start) = match &msg.event {
        EsEvent::Fork { .. } => (
            u32::try_from(msg.process.pid).ok(),
            msg.process.start_time.and_then(start_timeval),
        ),
        _ => (
            e.ppid,
            parent_start.filter(|p| start.is_none_or(|s| (p.sec, p.usec) <= (s.sec, s.usec))),
        ),
    };
    if let Some(pid) = ppid {
        e.parent = Some(Parent {
            entity_id: parent_start.map(|s| boot.entity_id(s, pid)),
            pid,
            // Whole seconds, as `start_time` is on macOS.
            start_time: parent_start
                .and_then(|s| i64::try_from(s.sec).ok())
                .map(|s| s.saturating_mul(1_000_000_000)),
            ..Parent::default()
        });
    }
}

/// `bytes`, cut to `max`, and whether it was cut.
fn bounded(bytes: &[u8], max: usize) -> (&[u8], bool) {
    if bytes.len() > max {
        (&bytes[..max], true)
    } else {
        (bytes, false)
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The short name: the executable's last path component, whole. (The
/// kernel keeps it cut: `p_comm` holds MAXCOMLEN = 16 bytes, `p_name` 32.)
fn basename(path: &[u8]) -> String {
    let leaf = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
    lossy(leaf)
}

/// The working directory, when ES gave a whole absolute path.
fn cwd_path(cwd: &EsFile<'_>) -> Option<String> {
    let (path, cut) = bounded(cwd.path, PATH_MAX_BYTES);
    (!cut && !cwd.truncated && path.starts_with(b"/")).then(|| lossy(path))
}

/// argv from the `es_exec_arg` entries, bounded like every other source
/// (`split_argv`: 4095 bytes, 256 entries); `arg_count` larger than the
/// entries given marks it truncated. Copies at most the bound, whatever the
/// size of one argument.
pub fn argv_from_args(args: &[&[u8]], arg_count: u32) -> (Vec<String>, bool) {
    let given = u32::try_from(args.len()).unwrap_or(u32::MAX);
    let mut truncated = arg_count > given;
    let mut buf = Vec::with_capacity(256);
    for arg in args {
        let room = (ARGV_MAX_BYTES + 1).saturating_sub(buf.len());
        if room == 0 {
            truncated = true;
            break;
        }
        buf.extend_from_slice(&arg[..arg.len().min(room)]);
        buf.push(0);
    }
    split_argv(&buf, truncated)
}

/// Exit code, or signal and core dump, from a wait(2) status (the same
/// encoding the Linux probes read).
fn exit_status(e: &mut ProcessEvent, stat: i32) {
    let signal = stat & 0x7f;
    match signal {
        0 => e.exit_code = Some((stat >> 8) & 0xff),
        // "Stopped", never an exit status: nothing is made up.
        0x7f => {}
        _ => {
            e.platform.signal = Some(signal);
            e.platform.core_dumped = Some(stat & 0x80 != 0);
        }
    }
}

/// Team id, signing id, cdhash (hex) and platform-binary flag.
fn signing_facts(p: &mut Platform, subject: &EsProcess<'_>) {
    let text = |raw: &[u8]| {
        let (raw, _) = bounded(raw, SIGNING_ID_MAX_BYTES);
        (!raw.is_empty()).then(|| lossy(raw))
    };
    p.team_id = text(subject.team_id);
    p.signing_id = text(subject.signing_id);
    p.cdhash = cdhash_hex(&subject.cdhash);
    p.platform_binary = Some(subject.is_platform_binary);
}

/// Lowercase hex of a code-directory hash; `None` for all zeros (no
/// signature).
pub fn cdhash_hex(hash: &[u8; 20]) -> Option<String> {
    if hash.iter().all(|b| *b == 0) {
        return None;
    }
    Some(hash.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
