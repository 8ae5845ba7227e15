//! The FreeBSD kernel event source: audit(4) records read from
//! /dev/auditpipe (auditpipe(4)) on a dedicated thread.
//!
//! Opening the pipe gives this process its own queue of audit records. It
//! is set to local preselection with, for both attributable and
//! non-attributable events (daemons started at boot have no audit user), a
//! class of procmond's own that only the reported events carry
//! (`preselect`: auditon A_SETCLASS adds it, the reader keeps it there
//! after auditd reloads the map), or else the classes the kernel maps them
//! to (auditon A_GETCLASS: `ex` and `pc` with the stock
//! /etc/security/audit_event), successes only, and its queue limit raised
//! to the maximum. The kernel builds records
//! only while an audit trail is open, so auditd must run; the trail's own
//! flags do not matter to the pipe.
//!
//! The reader waits on the pipe with poll(2), cuts what it reads into
//! records (`bsm::RecordStream`), parses them (`bsm`, `event`), completes
//! them from the process table (`event::Tracker`) and sends each drain as
//! one batch. Records the pipe dropped because its queue was full
//! (AUDITPIPE_GET_DROPS, plus GET_TRUNCATES) are added to `kernel_lost`;
//! malformed records to `records_malformed`.
//!
//! Barriers: the kernel hands records to pipes from its audit worker
//! thread, a little after the system call returned, so a barrier is
//! answered only after a drain that began `BARRIER_SETTLE` after it was
//! asked for; reconciliation then does not report as missed a process
//! whose record was still on its way.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::auditpipe::{self as ap, AuMask};
use super::bsm::{BsmError, RecordStream};
use super::event::{self, ProcTable, Tracker, aue};
use super::ffi;
use super::kinfo::{self, Kinfo};
use super::preselect::{self, PRIVATE_CLASS};
use super::reason::{self, Auditon};
use crate::metrics::Metrics;
use crate::model::{EventSource, ProcessEvent};
use crate::platform::options::KernelOptions;
use crate::sources::SourceMsg;
use crate::sources::stream::{ReaderThread, StartedStream};

/// The audit class names (audit_class(5)).
const AUDIT_CLASS: &str = "/etc/security/audit_class";
/// The audit pipe device (a cloning device: each open is a new pipe).
pub const AUDITPIPE: &str = "/dev/auditpipe";
/// How long the reader sleeps in poll(2) between checks of its stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long after a barrier request records may still be on their way
/// from the kernel's audit worker.
const BARRIER_SETTLE: Duration = Duration::from_millis(100);
/// Bytes per read(2).
const READ_CHUNK: usize = 64 << 10;
/// Most events in one batch sent to the sensor.
const MAX_BATCH: usize = 4096;
/// Most bytes read in one drain before barriers and stop are looked at.
const MAX_DRAIN_BYTES: usize = 8 << 20;
/// How often the pipe's loss counters are read.
const LOSS_INTERVAL: Duration = Duration::from_secs(1);

/// Why the audit source cannot run here, before the pipe is opened.
pub fn unavailable_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some(
            "the audit(4) source needs root (/dev/auditpipe is root-only and auditon(2) needs PRIV_AUDIT_CONTROL)"
                .into(),
        );
    }
    match ffi::auditon_int(ap::A_GETCOND) {
        Ok(ap::AUC_AUDITING) => {}
        Ok(cond) => {
            return Some(format!(
                "auditing is off (audit condition {cond}): the kernel records events only while auditd runs; set auditd_enable=\"YES\" in /etc/rc.conf and run `service auditd start`"
            ));
        }
        Err(e) => {
            let how = match e.raw_os_error() {
                Some(libc::ENOSYS) => Auditon::NoSys,
                Some(libc::EPERM) => Auditon::Perm,
                _ => Auditon::Other,
            };
            return Some(reason::auditon_failed(how, jailed(), &e.to_string()));
        }
    }
    if !std::path::Path::new(AUDITPIPE).exists() {
        return Some(format!("{AUDITPIPE} does not exist (device auditpipe)"));
    }
    None
}

/// `security.jail.jailed` (kern_jail.c): whether this process is in a jail.
fn jailed() -> Option<bool> {
    let b = ffi::sysctl_by_name(c"security.jail.jailed").ok()?;
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?) != 0)
}

/// Whether /dev/auditpipe is readable with this process's effective ids.
pub fn auditpipe_readable() -> bool {
    rustix::fs::accessat(
        rustix::fs::CWD,
        AUDITPIPE,
        rustix::fs::Access::READ_OK,
        rustix::fs::AtFlags::EACCESS,
    )
    .is_ok()
}

/// `security.bsd.see_other_uids` (1: non-root sees every user's processes).
pub fn see_other_uids() -> Option<i32> {
    let b = ffi::sysctl_by_name(c"security.bsd.see_other_uids").ok()?;
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// The classes the kernel maps the reported events to (auditon
/// A_GETCLASS; auditd loads the map from /etc/security/audit_event).
fn event_classes() -> Result<Vec<(u16, u32)>, String> {
    aue::ALL
        .iter()
        .map(|&ev| {
            ffi::event_class(ev)
                .map(|class| (ev, class))
                .map_err(|e| format!("auditon(A_GETCLASS, {ev}): {e}"))
        })
        .collect()
}

/// Adds `PRIVATE_CLASS` to the events that lack it (auditon A_SETCLASS);
/// how many were marked.
fn mark_events(classes: &[(u16, u32)]) -> Result<usize, String> {
    let todo = preselect::to_mark(classes, PRIVATE_CLASS);
    for &(ev, class) in &todo {
        ffi::set_event_class(ev, class)
            .map_err(|e| format!("auditon(A_SETCLASS, {ev}, {class:#x}): {e}"))?;
    }
    Ok(todo.len())
}

/// The pipe's class mask, and whether it is the private class (which the
/// reader then keeps in the kernel's map): the private class unless the
/// host's audit_class uses its bit or marking the events failed, then the
/// stock classes of the reported events. A probe (`mark: false`) changes
/// nothing in the kernel: it checks the map and selects the stock classes.
fn class_mask(mark: bool) -> Result<(u32, bool), String> {
    let classes = event_classes()?;
    for &(ev, class) in &classes {
        let essential = matches!(ev, aue::EXECVE | aue::FORK | aue::EXIT);
        if class == 0 && essential {
            return Err(format!(
                "audit event {ev} has no class in the kernel's event map: auditd loads it from /etc/security/audit_event when it starts"
            ));
        }
    }
    let stock = preselect::stock_mask(&classes);
    if !mark {
        return Ok((stock, false));
    }
    let used = std::fs::read_to_string(AUDIT_CLASS)
        .map(|text| preselect::classes_using(&text, PRIVATE_CLASS))
        .unwrap_or_default();
    if !used.is_empty() {
        tracing::warn!(
            classes = ?used,
            "{AUDIT_CLASS} names class bit {PRIVATE_CLASS:#x}: the audit pipe selects the stock classes, and their other events may crowd out process records"
        );
        return Ok((stock, false));
    }
    match mark_events(&classes) {
        Ok(_) => Ok((PRIVATE_CLASS, true)),
        Err(e) => {
            tracing::warn!(error = %e, "marking procmond's audit events with a private class failed: the pipe selects the stock classes");
            Ok((stock, false))
        }
    }
}

/// A configured pipe.
struct Opened {
    pipe: File,
    /// Set when argv is not audited.
    degraded: Option<String>,
    /// The pipe selects `PRIVATE_CLASS`.
    private: bool,
}

/// Opens and configures a pipe; `mark`: select the private class, marking
/// the reported events with it in the kernel's map.
fn open_pipe(mark: bool) -> Result<Opened, String> {
    if let Some(reason) = unavailable_reason() {
        return Err(reason);
    }
    let (mask, private) = class_mask(mark)?;
    let pipe = File::open(AUDITPIPE).map_err(|e| format!("opening {AUDITPIPE}: {e}"))?;
    let fd = pipe.as_fd();
    let setup =
        |what: &str, r: std::io::Result<()>| r.map_err(|e| format!("{AUDITPIPE}: {what}: {e}"));
    setup(
        "set local preselection",
        ffi::set_i32(fd, ap::SET_PRESELECT_MODE, ap::PRESELECT_MODE_LOCAL),
    )?;
    setup(
        "clear per-user masks",
        ffi::call(fd, ap::FLUSH_PRESELECT_AUID),
    )?;
    let masks = AuMask {
        success: mask,
        failure: 0,
    };
    setup(
        "set preselection flags",
        ffi::set_mask(fd, ap::SET_PRESELECT_FLAGS, masks),
    )?;
    setup(
        "set non-attributable flags",
        ffi::set_mask(fd, ap::SET_PRESELECT_NAFLAGS, masks),
    )?;
    let qmax = ffi::get_u32(fd, ap::GET_QLIMIT_MAX)
        .map_err(|e| format!("{AUDITPIPE}: queue limit: {e}"))?;
    setup(
        "raise the queue limit",
        ffi::set_u32(fd, ap::SET_QLIMIT, qmax),
    )?;
    let degraded = match ffi::auditon_int(ap::A_GETPOLICY) {
        Ok(policy) if policy & ap::AUDIT_ARGV != 0 => None,
        Ok(_) => Some(
            "audit policy lacks argv: exec argv is read from kern.proc.args after the event (racy); add argv to `policy:` in /etc/security/audit_control".into(),
        ),
        Err(e) => Some(format!("auditon(A_GETPOLICY): {e}; exec argv may be missing")),
    };
    tracing::info!(
        class_mask = format_args!("{mask:#x}"),
        private,
        queue_limit = qmax,
        "audit pipe configured"
    );
    Ok(Opened {
        pipe,
        degraded,
        private,
    })
}

/// Opens and configures a pipe, then closes it (`procmond capabilities`):
/// the kernel's audit class map is left as it was.
pub fn probe() -> Result<(), String> {
    open_pipe(false).map(|_| ())
}

/// The process table through sysctl, with `kern.boottime` read at most
/// once a second.
#[derive(Debug)]
struct SysctlTable {
    boot: (i64, Instant),
}

impl SysctlTable {
    fn new() -> Self {
        Self {
            boot: (
                kinfo::boottime_us().unwrap_or_else(kinfo::boottime_first_us),
                Instant::now(),
            ),
        }
    }

    fn boot_now(&mut self) -> i64 {
        if self.boot.1.elapsed() >= Duration::from_secs(1) {
            self.boot = (kinfo::boottime_us().unwrap_or(self.boot.0), Instant::now());
        }
        self.boot.0
    }

    fn with_start(&mut self, k: Kinfo) -> (Kinfo, Option<i64>) {
        let start = kinfo::start_time(&k, self.boot_now());
        (k, start)
    }
}

impl ProcTable for SysctlTable {
    fn process(&mut self, pid: u32) -> Option<(Kinfo, Option<i64>)> {
        kinfo::process(pid).map(|k| self.with_start(k))
    }
    fn args(&mut self, pid: u32) -> Option<Vec<u8>> {
        kinfo::args(pid)
    }
    fn exe(&mut self, pid: u32) -> Option<String> {
        kinfo::pathname(pid)
    }
    fn cwd(&mut self, pid: u32) -> Option<String> {
        kinfo::cwd(pid)
    }
}

/// Opens the pipe and starts the reader: the FreeBSD kernel stream.
pub fn start(
    config: &KernelOptions,
    tx: mpsc::Sender<SourceMsg>,
    metrics: Arc<Metrics>,
) -> Result<StartedStream, String> {
    let Opened {
        pipe,
        degraded: degraded_reason,
        private,
    } = open_pipe(true)?;
    let mut table = SysctlTable::new();
    let mut tracker = Tracker::new(config.enhanced_metadata).with_boot(kinfo::boot().copied());
    // Read after the pipe opened: a process is either in it or in a record.
    match kinfo::processes() {
        Ok(all) => tracker.seed(all.into_iter().map(|k| table.with_start(k))),
        Err(e) => tracing::warn!(error = %e, "reading the process table for the audit reader"),
    }
    let mut reader = ReadLoop {
        pipe,
        stream: RecordStream::default(),
        table,
        tracker,
        losses: ap::Losses::default(),
        private,
    };
    let thread = ReaderThread::spawn("audit-reader", move |stop, barriers| {
        reader.run(&tx, &metrics, stop, barriers)
    })
    .map_err(|e| format!("starting the audit reader thread: {e}"))?;
    Ok(StartedStream {
        source: EventSource::Audit,
        degraded_reason,
        stream: Box::new(thread),
        snapshot_reader: None,
        probes: None,
    })
}

/// The reader thread's state.
struct ReadLoop {
    pipe: File,
    stream: RecordStream,
    table: SysctlTable,
    tracker: Tracker,
    /// The pipe's loss counters as last read.
    losses: ap::Losses,
    /// The pipe selects `PRIVATE_CLASS`, which auditd's reloads remove.
    private: bool,
}

impl ReadLoop {
    fn run(
        &mut self,
        tx: &mpsc::Sender<SourceMsg>,
        metrics: &Metrics,
        stop: &AtomicBool,
        barriers: &std::sync::mpsc::Receiver<u64>,
    ) {
        let timeout = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: POLL_INTERVAL.as_nanos() as i64,
        };
        let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut losses_read = Instant::now();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if !stopping {
                self.wait(Some(&timeout));
            }
            pending.extend(barriers.try_iter().map(|id| (id, Instant::now())));
            let drain_started = Instant::now();
            if self.drain(&mut buf, tx, metrics).is_none() {
                return;
            }
            if stopping || losses_read.elapsed() >= LOSS_INTERVAL {
                self.update_lost(metrics);
                self.keep_private_class();
                losses_read = Instant::now();
            }
            while let Some(&(id, asked)) = pending.front() {
                if !stopping && asked + BARRIER_SETTLE > drain_started {
                    break;
                }
                if tx.blocking_send(SourceMsg::Barrier(id)).is_err() {
                    return;
                }
                pending.pop_front();
            }
            if stopping {
                return;
            }
        }
    }

    /// Whether the pipe has bytes, waiting at most `timeout`.
    fn wait(&self, timeout: Option<&rustix::time::Timespec>) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.pipe,
            rustix::event::PollFlags::IN,
        )];
        matches!(rustix::event::poll(&mut fds, timeout), Ok(n) if n > 0)
    }

    /// Reads what the pipe holds and sends it; `None` when the sensor is
    /// gone or the pipe failed.
    fn drain(
        &mut self,
        buf: &mut [u8],
        tx: &mpsc::Sender<SourceMsg>,
        metrics: &Metrics,
    ) -> Option<()> {
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut batch = Vec::new();
        let mut read = 0;
        while read < MAX_DRAIN_BYTES && self.wait(Some(&zero)) {
            let n = match self.pipe.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "reading {AUDITPIPE} failed: the audit source stops");
                    return None;
                }
            };
            read += n;
            self.stream.feed(buf.get(..n).unwrap_or_default());
            while let Some(next) = self.stream.next_record() {
                match next.and_then(event::record_event) {
                    Ok(Some((mut e, had_argv))) => {
                        self.tracker.complete(&mut e, &mut self.table, had_argv);
                        batch.push(e);
                    }
                    Ok(None) => {}
                    Err(e) => malformed(metrics, &e),
                }
            }
            if batch.len() >= MAX_BATCH {
                send(tx, metrics, std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            send(tx, metrics, batch)?;
        }
        Some(())
    }

    /// Marks the reported events with `PRIVATE_CLASS` again after auditd
    /// reloaded the kernel's event map (it starts, or `audit -s`).
    fn keep_private_class(&self) {
        if !self.private {
            return;
        }
        match event_classes().and_then(|classes| mark_events(&classes)) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                events = n,
                "the kernel's audit event classes were reloaded (auditd started, or `audit -s`): procmond's events are marked again; their records since the reload were not selected (reconciliation will catch long-lived processes)"
            ),
            Err(e) => tracing::error!(error = %e, "re-marking procmond's audit events"),
        }
    }

    /// Adds what the pipe dropped since the last look to `kernel_lost`.
    fn update_lost(&mut self, metrics: &Metrics) {
        let fd = self.pipe.as_fd();
        let read = |request| ffi::get_counter(fd, request).map(ap::counter);
        let now = match read(ap::GET_DROPS).and_then(|drops| {
            Ok(ap::Losses {
                drops,
                truncates: read(ap::GET_TRUNCATES)?,
            })
        }) {
            Ok(now) => now,
            Err(e) => {
                tracing::debug!(error = %e, "reading the audit pipe's loss counters");
                return;
            }
        };
        let lost = now.since(self.losses);
        self.losses = now;
        if lost > 0 {
            Metrics::add(&metrics.kernel_lost, lost);
            tracing::warn!(
                lost,
                drops = now.drops,
                truncates = now.truncates,
                "audit pipe queue full: records dropped (reconciliation will catch long-lived processes)"
            );
        }
    }
}

fn malformed(metrics: &Metrics, e: &BsmError) {
    let n = metrics.records_malformed.fetch_add(1, Ordering::Relaxed);
    if n < 10 || n.is_power_of_two() {
        tracing::warn!(error = %e, dropped_so_far = n + 1, "malformed audit record dropped");
    }
}

fn send(tx: &mpsc::Sender<SourceMsg>, metrics: &Metrics, batch: Vec<ProcessEvent>) -> Option<()> {
    Metrics::add(&metrics.events_observed, batch.len() as u64);
    tx.blocking_send(SourceMsg::Events(batch)).ok()
}
