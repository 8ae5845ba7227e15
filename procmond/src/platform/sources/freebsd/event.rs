//! From a parsed BSM record to the `ProcessEvent` it reports, and the
//! audit reader's bookkeeping that completes events the way the Linux
//! probes fill theirs.
//!
//! A record carries the subject (pid and credentials at the system call),
//! the event, the time, and per event: the image path and argv (exec, argv
//! only under the `argv` audit policy), the child pid (fork, in an arg
//! token), the status passed to exit(2) (exit), the jail name (zonename
//! token). It does not carry the process start time, the parent of an
//! exec, or the cwd: `Tracker` adds them from the process table
//! (`ProcTable`: sysctl on FreeBSD, a fake in tests) at the event, and
//! remembers each process's start time until its exit, so that `(pid,
//! start_time)` matches what snapshots say (reconciliation relies on it).
//!
//! Event numbers are FreeBSD's (`AUE_*` in OpenBSM's
//! `sys/bsm/audit_kevents.h`); rfork(2) is 43043 on FreeBSD (353 is
//! Darwin's), and posix_spawn(3) is an rfork (`RFSPAWN`) there. The
//! set*id(2) calls are `setuid` events: the record's subject holds the ids
//! before the call, the process table those after.

use std::collections::HashMap;

use super::bsm::{BsmError, Record};
use super::kinfo::Kinfo;
use crate::model::identity::FreeBsdBoot;
use crate::model::{Creds, EventKind, EventSource, Parent, ProcessEvent};
use crate::sources::snapshot::split_argv;

/// `AUE_*` event numbers procmond reports.
pub mod aue {
    pub const EXIT: u16 = 1;
    pub const FORK: u16 = 2;
    pub const EXEC: u16 = 7;
    pub const EXECVE: u16 = 23;
    pub const VFORK: u16 = 25;
    pub const RFORK: u16 = 43043;
    pub const MAC_EXECVE: u16 = 43131;
    pub const FEXECVE: u16 = 43144;
    pub const PDFORK: u16 = 43197;
    pub const SETREUID: u16 = 40;
    pub const SETREGID: u16 = 41;
    pub const SETUID: u16 = 200;
    pub const SETGID: u16 = 205;
    pub const SETEGID: u16 = 214;
    pub const SETEUID: u16 = 215;
    pub const SETRESUID: u16 = 43057;
    pub const SETRESGID: u16 = 43059;

    /// Every event the audit pipe is asked for.
    pub const ALL: [u16; 17] = [
        EXIT, FORK, EXEC, EXECVE, VFORK, RFORK, MAC_EXECVE, FEXECVE, PDFORK, SETUID, SETEUID,
        SETREUID, SETRESUID, SETGID, SETEGID, SETREGID, SETRESGID,
    ];
}

/// `RFPROC` (sys/sys/unistd.h): rfork(2) creates a process only with it.
pub const RFPROC: u64 = 1 << 4;
/// `RFSPAWN` (sys/sys/unistd.h, `1U << 31`, FreeBSD 13+): libc's
/// posix_spawn(3) calls rfork(RFSPAWN), and the record carries exactly this
/// flag (sys_rfork audits the flags before turning them into
/// `RFFDG | RFPROC | RFPPWAIT | RFMEM`).
pub const RFSPAWN: u64 = 1 << 31;
/// `MAXCOMLEN` (sys/sys/param.h): the kernel's command name is at most this.
pub const MAXCOMLEN: usize = 19;

/// The kind of process event an `AUE_*` number is, if any.
pub fn kind_of(event: u16) -> Option<EventKind> {
    match event {
        aue::EXEC | aue::EXECVE | aue::MAC_EXECVE | aue::FEXECVE => Some(EventKind::Exec),
        aue::FORK | aue::VFORK | aue::RFORK | aue::PDFORK => Some(EventKind::Fork),
        aue::EXIT => Some(EventKind::Exit),
        aue::SETUID
        | aue::SETEUID
        | aue::SETREUID
        | aue::SETRESUID
        | aue::SETGID
        | aue::SETEGID
        | aue::SETREGID
        | aue::SETRESGID => Some(EventKind::SetUid),
        _ => None,
    }
}

/// The last path component, cut to `MAXCOMLEN` bytes as the kernel cuts
/// `p_comm` (at a character boundary).
pub fn comm_of(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let mut end = base.len().min(MAXCOMLEN);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    base[..end].to_string()
}

/// The child a fork record created: the "child PID" arg token (arg 0),
/// which the kernel writes whenever fork1() made a process (`AUDIT_ARG_PID`
/// in do_fork; audit_bsm.c writes it for fork, vfork and rfork), else the
/// parent's return value for fork/vfork and an rfork that asked for a
/// process (`RFPROC`, or `RFSPAWN`); pdfork returns a descriptor. `None`
/// for an rfork that created no process.
fn child_pid(r: &Record<'_>) -> Option<u32> {
    let from_arg = r
        .args
        .iter()
        .find(|a| a.num == 0 && a.text.eq_ignore_ascii_case(b"child PID"))
        .map(|a| a.value);
    let creates = match r.header.event {
        aue::PDFORK => false,
        aue::RFORK => r
            .args
            .iter()
            .find(|a| a.num == 1 && a.text == b"flags")
            .is_none_or(|flags| flags.value & (RFPROC | RFSPAWN) != 0),
        _ => true,
    };
    let from_ret = creates.then(|| r.ret.map(|ret| ret.value)).flatten();
    from_arg
        .or(from_ret)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|p| *p > 0)
}

/// The event a record reports: `Ok(None)` for other events, failed system
/// calls (nothing was created or replaced) and forks without a child;
/// `Err` for a process record that cannot be attributed.
pub fn to_event(r: &Record<'_>) -> Result<Option<ProcessEvent>, BsmError> {
    let Some(kind) = kind_of(r.header.event) else {
        return Ok(None);
    };
    if r.ret.is_some_and(|ret| ret.error != 0) {
        return Ok(None);
    }
    let subject = r.subject.ok_or(BsmError::NoSubject)?;
    let pid = match kind {
        EventKind::Fork => match child_pid(r) {
            Some(child) => child,
            None => return Ok(None),
        },
        _ => subject.pid,
    };
    let mut e = ProcessEvent::new(kind, EventSource::Audit, r.header.unix_ns(), pid);
    if kind == EventKind::SetUid {
        // The subject is the credential the kernel copied when the system
        // call began (`audit_record_ctor`: `td->td_ucred`), so before the
        // change; the ids after it are read from the process table
        // (`Tracker::complete`).
        e.previous_creds = Some(Creds {
            uid: subject.ruid,
            euid: subject.euid,
            gid: subject.rgid,
            egid: subject.egid,
        });
        return Ok(Some(e));
    }
    // The child of a fork starts with its parent's credentials.
    e.uid = Some(subject.ruid);
    e.euid = Some(subject.euid);
    e.gid = Some(subject.rgid);
    if let Some(jail) = r.zonename.filter(|z| !z.is_empty()) {
        e.platform.jail_name = Some(String::from_utf8_lossy(jail).into_owned());
    }
    match kind {
        EventKind::Fork => e.ppid = Some(subject.pid),
        EventKind::Exec => {
            if let Some(path) = r.paths.first().filter(|p| !p.is_empty()) {
                let path = String::from_utf8_lossy(path).into_owned();
                e.name = comm_of(&path);
                if path.starts_with('/') {
                    e.exe = Some(path);
                } else {
                    e.platform.exec_filename = Some(path);
                }
            }
            if let Some(args) = r.exec_args {
                let (argv, truncated) = split_argv(args.raw, false);
                e.argv = argv;
                e.argv_truncated = truncated;
            }
        }
        EventKind::Exit => {
            // exit1() records the status given to exit(2); wait(2) sees its
            // low 8 bits. Deaths by signal make no exit record.
            e.exit_code = r.exit.map(|x| (x.status & 0xff) as i32);
        }
        _ => {}
    }
    Ok(Some(e))
}

/// One framed record from the pipe as the reader takes it: the event it
/// reports, and whether it carried argv (`exec_args`). Records of other
/// events are skipped by their header's event number before any token is
/// parsed: the pipe's classes hold many other events, and every pipe also
/// gets every user record submitted with audit(2).
pub fn record_event(rec: &[u8]) -> Result<Option<(ProcessEvent, bool)>, BsmError> {
    if super::bsm::header_event(rec).and_then(kind_of).is_none() {
        return Ok(None);
    }
    let record = super::bsm::parse_record(rec)?;
    let had_argv = record.exec_args.is_some();
    Ok(to_event(&record)?.map(|e| (e, had_argv)))
}

/// Where the tracker looks processes up (sysctl on FreeBSD).
pub trait ProcTable {
    /// The live (or zombie) process, with its start time as snapshots
    /// report it.
    fn process(&mut self, pid: u32) -> Option<(Kinfo, Option<i64>)>;
    /// NUL-separated argv.
    fn args(&mut self, pid: u32) -> Option<Vec<u8>>;
    /// The executable's absolute path.
    fn exe(&mut self, pid: u32) -> Option<String>;
    fn cwd(&mut self, pid: u32) -> Option<String>;
}

/// What the reader remembers of a live process.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    start_time: Option<i64>,
    ppid: Option<u32>,
    name: String,
    jail_id: Option<i32>,
}

/// Most processes remembered; beyond, the memory starts over (exits of the
/// forgotten ones then carry no start time, and reconciliation settles it).
const MAX_KNOWN: usize = 1 << 20;

/// Completes audit events from the process table and remembers start
/// times from exec/fork to exit.
#[derive(Debug, Default)]
pub struct Tracker {
    known: HashMap<u32, Known>,
    /// Read the cwd of exec'd processes (`enhanced_metadata` at start).
    cwd: bool,
    /// This boot's facts for `entity_id`; `None` leaves ids out.
    boot: Option<FreeBsdBoot>,
}

impl Tracker {
    pub fn new(cwd: bool) -> Self {
        Self {
            known: HashMap::new(),
            cwd,
            boot: None,
        }
    }

    /// Computes `entity_id` (the process's and its parent's) with `boot`.
    pub fn with_boot(mut self, boot: Option<FreeBsdBoot>) -> Self {
        self.boot = boot;
        self
    }

    /// Processes remembered.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Starts from the process table read once the pipe is open.
    pub fn seed(&mut self, table: impl IntoIterator<Item = (Kinfo, Option<i64>)>) {
        for (k, start_time) in table {
            self.remember(k.pid, Known::from_kinfo(&k, start_time));
        }
    }

    fn remember(&mut self, pid: u32, known: Known) {
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&pid) {
            self.known.clear();
        }
        self.known.insert(pid, known);
    }

    /// Fills in what the record lacks. `had_argv`: the record carried an
    /// exec_args token (else argv is read from the process, after the fact).
    pub fn complete(&mut self, e: &mut ProcessEvent, table: &mut impl ProcTable, had_argv: bool) {
        self.complete_fields(e, table, had_argv);
        self.identify(e, table);
    }

    /// `entity_id` from the pid and start time; the parent from its own
    /// (remembered, else read from the table; a parent gone by now and
    /// never seen keeps no id). No `exec_id`: FreeBSD keeps no count of a
    /// process's execs that procmond could read after a restart.
    fn identify(&mut self, e: &mut ProcessEvent, table: &mut impl ProcTable) {
        let Some(boot) = self.boot else {
            return;
        };
        e.entity_id = super::kinfo::entity_id(&boot, e.pid, e.start_time);
        let Some(ppid) = e.ppid else {
            return;
        };
        let parent_start = match self.known.get(&ppid) {
            Some(k) => k.start_time,
            None => table
                .process(ppid)
                .filter(|(k, _)| k.pid == ppid)
                .and_then(|(_, start)| start),
        };
        e.parent = Some(Parent {
            entity_id: super::kinfo::entity_id(&boot, ppid, parent_start),
            pid: ppid,
            start_time: parent_start,
            ..Parent::default()
        });
    }

    fn complete_fields(
        &mut self,
        e: &mut ProcessEvent,
        table: &mut impl ProcTable,
        had_argv: bool,
    ) {
        match e.kind {
            EventKind::Exec => self.complete_exec(e, table, had_argv),
            EventKind::Fork => self.complete_fork(e, table),
            EventKind::SetUid => {
                // The ids now, as the table shows them (a later change
                // before this read shows through); unknown when the process
                // is gone.
                let found = table.process(e.pid);
                if let Some((k, _)) = &found {
                    e.uid = Some(k.ruid);
                    e.euid = Some(k.euid);
                    e.gid = Some(k.rgid);
                    e.egid = Some(k.egid);
                }
                let known = self
                    .known
                    .get(&e.pid)
                    .cloned()
                    .or_else(|| found.map(|(k, start)| Known::from_kinfo(&k, start)));
                if let Some(k) = known {
                    e.start_time = k.start_time;
                    e.ppid = k.ppid;
                    e.name = k.name;
                    e.platform.jail_id = k.jail_id;
                }
            }
            EventKind::Exit => {
                let known = self.known.remove(&e.pid).or_else(|| {
                    table
                        .process(e.pid)
                        .map(|(k, start)| Known::from_kinfo(&k, start))
                });
                if let Some(k) = known {
                    e.start_time = k.start_time;
                    e.ppid = k.ppid;
                    e.name = k.name;
                    e.platform.jail_id = k.jail_id;
                }
            }
            _ => {}
        }
    }

    fn complete_fork(&mut self, e: &mut ProcessEvent, table: &mut impl ProcTable) {
        let found = table.process(e.pid);
        let parent = e.ppid.and_then(|p| self.known.get(&p)).cloned();
        // The child's exec record may have come first (records are queued
        // as the calls return): what that exec remembered is this child's
        // when the start times agree, or when the child is gone already.
        let execd = self.known.get(&e.pid).cloned().filter(|k| match &found {
            Some((_, start)) => start.is_some() && k.start_time == *start,
            None => true,
        });
        let mut known = match (&found, &execd) {
            (Some((k, start)), _) => Known::from_kinfo(k, *start),
            (None, Some(k)) => k.clone(),
            (None, None) => Known {
                start_time: None,
                ppid: e.ppid,
                name: parent.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                jail_id: parent.as_ref().and_then(|p| p.jail_id),
            },
        };
        known.ppid = e.ppid.or(known.ppid);
        // At the fork the child bears its parent's name (the table may
        // already show what it exec'd since); afterwards, what it exec'd.
        let at_fork = parent.map(|p| p.name).filter(|n| !n.is_empty());
        e.name = at_fork.clone().unwrap_or_else(|| known.name.clone());
        if let Some(name) = execd.map(|k| k.name).or(at_fork) {
            known.name = name;
        }
        e.start_time = known.start_time;
        e.platform.jail_id = known.jail_id;
        self.remember(e.pid, known);
    }

    fn complete_exec(&mut self, e: &mut ProcessEvent, table: &mut impl ProcTable, had_argv: bool) {
        // exec keeps the pid and the start time; the parent may have
        // changed since the fork (reparenting), so the table has the say.
        let mut known = match table.process(e.pid) {
            Some((k, start)) => Known::from_kinfo(&k, start),
            None => match self.known.get(&e.pid) {
                Some(k) => k.clone(),
                None => Known {
                    start_time: None,
                    ppid: None,
                    name: String::new(),
                    jail_id: None,
                },
            },
        };
        if !e.name.is_empty() {
            known.name.clone_from(&e.name);
        }
        e.start_time = known.start_time;
        e.ppid = known.ppid;
        e.name.clone_from(&known.name);
        e.platform.jail_id = known.jail_id;
        if e.exe.is_none() {
            e.exe = table.exe(e.pid);
        }
        if !had_argv
            && e.argv.is_empty()
            && let Some(args) = table.args(e.pid)
        {
            let (argv, truncated) = split_argv(&args, false);
            e.argv = argv;
            e.argv_truncated = truncated;
        }
        if self.cwd {
            e.cwd = table.cwd(e.pid);
        }
        self.remember(e.pid, known);
    }
}

impl Known {
    fn from_kinfo(k: &Kinfo, start_time: Option<i64>) -> Self {
        Self {
            start_time,
            ppid: Some(k.ppid),
            name: k.comm.clone(),
            // 0 is the host: like a container id, only a jail is named.
            jail_id: (k.jid != 0).then_some(k.jid),
        }
    }
}
