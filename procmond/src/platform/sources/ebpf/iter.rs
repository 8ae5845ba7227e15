//! The process table from a BPF task iterator (`procmond_iter.bpf.c`).
//!
//! One read of the iterator's file walks every task in the kernel and
//! returns a record per process: ids, credentials, start time, cgroup id,
//! comm, argv, and the exe and cwd walked from their dentries. It replaces
//! five procfs reads per process for the inventory and each reconciliation
//! pass. It is loaded with the probes (the same parsed BTF), by the probe
//! loader when there is one (`handover`: it arrives as a link, and each pass
//! opens an iterator from it); where it cannot load, snapshots read procfs,
//! and `Snapshot::reader` says which ran.
//!
//! On Linux 6.18 the task iterator does not yield PID 1 (measured on this
//! project's machines, with a minimal iterator too); PID 1 is then read from
//! procfs, so the inventory is never short of it.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use aya::programs::Iter;
use aya::{Btf, Ebpf, EbpfLoader};

use super::{EbpfError, chain, record};
use crate::clock;
use crate::platform::procfs;
use crate::sources::snapshot::{ProcessInfo, ProcessTable, Snapshot, SnapshotOptions};

static ITER_OBJECT: &[u8] =
    aya::include_bytes_aligned!("../../../../../procmond-ebpf/procmond_iter.bpf.o");
const PROGRAM: &str = "snapshot_task";

/// The task iterator as the sensor's snapshot reader (`bpf_iter`); a pass
/// that fails reads procfs instead (logged).
pub struct IterTable(std::sync::Mutex<TaskIter>);

impl std::fmt::Debug for IterTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IterTable")
    }
}

impl IterTable {
    pub fn new(iter: TaskIter) -> Self {
        Self(std::sync::Mutex::new(iter))
    }
}

impl ProcessTable for IterTable {
    fn name(&self) -> &'static str {
        "bpf_iter"
    }

    fn take(&self, options: SnapshotOptions) -> std::io::Result<Snapshot> {
        let mut iter = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match iter.snapshot(options) {
            Ok(s) => Ok(s),
            Err(e) => {
                tracing::warn!(error = %e, "task iterator pass failed: reading procfs");
                procfs::snapshot(std::path::Path::new("/proc"), options)
            }
        }
    }
}

/// A loaded task iterator; each `snapshot` runs it once.
pub struct TaskIter {
    inner: Inner,
}

enum Inner {
    /// Loaded here: each pass attaches a new link and reads it.
    Loaded(Ebpf),
    /// Handed over by the probe loader (`handover`): one link, a new
    /// iterator opened from it for each pass.
    Link(OwnedFd),
}

impl std::fmt::Debug for TaskIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskIter").finish_non_exhaustive()
    }
}

impl TaskIter {
    /// Loads the iterator program against the kernel's BTF.
    pub fn load(btf: &Btf) -> Result<Self, EbpfError> {
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .load(ITER_OBJECT)
            .map_err(|e| EbpfError::Load(chain(&e)))?;
        let fail = |reason: String| EbpfError::Program {
            program: PROGRAM,
            tracepoint: "iter/task",
            reason,
        };
        let prog: &mut Iter = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| fail("missing from the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| fail(chain(&e)))?;
        prog.load("task", btf).map_err(|e| fail(chain(&e)))?;
        Ok(Self {
            inner: Inner::Loaded(ebpf),
        })
    }

    /// The iterator behind a link handed over by the probe loader.
    pub fn from_link(link: OwnedFd) -> Self {
        Self {
            inner: Inner::Link(link),
        }
    }

    /// Attaches one link that stays with the program (the probe loader
    /// hands its descriptor over).
    pub(super) fn attach_link(&mut self) -> Result<(), String> {
        let Inner::Loaded(ebpf) = &mut self.inner else {
            return Ok(());
        };
        iter_program(ebpf)?.attach().map_err(|e| chain(&e))?;
        Ok(())
    }

    /// Loads the iterator on its own (parsing the kernel's BTF), for
    /// callers without the probes (benchmarks, tools).
    pub fn load_standalone() -> Result<Self, EbpfError> {
        let btf = Btf::from_sys_fs().map_err(|e| EbpfError::Btf(chain(&e)))?;
        Self::load(&btf)
    }

    /// Every live process, read in one pass of the iterator.
    pub fn snapshot(&mut self, options: SnapshotOptions) -> std::io::Result<Snapshot> {
        let taken_at_boot_ns = clock::boottime_ns();
        let taken_at = clock::now_unix_ns();
        let bytes = self.run().map_err(std::io::Error::other)?;
        let mut processes = parse_records(&bytes);
        if !options.cwd {
            processes.iter_mut().for_each(|p| p.cwd = None);
        }
        if !processes.iter().any(|p| p.pid == 1)
            && let Some(init) = read_init(options)
        {
            processes.insert(0, init);
        }
        Ok(Snapshot {
            taken_at,
            taken_at_event_clock: Some(clock::boot_to_unix_ns(taken_at_boot_ns)),
            processes,
        })
    }

    /// One pass: a new iterator, its file read to the end.
    fn run(&mut self) -> Result<Vec<u8>, String> {
        let mut file = match &mut self.inner {
            Inner::Loaded(ebpf) => {
                let prog = iter_program(ebpf)?;
                let id = prog.attach().map_err(|e| chain(&e))?;
                let link = prog.take_link(id).map_err(|e| chain(&e))?;
                link.into_file().map_err(|e| chain(&e))?
            }
            Inner::Link(link) => std::fs::File::from(
                crate::sys::bpf_iter::create(link.as_fd())
                    .map_err(|e| format!("bpf_iter_create: {e}"))?,
            ),
        };
        let mut bytes = Vec::with_capacity(256 * 1024);
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        Ok(bytes)
    }
}

fn iter_program(ebpf: &mut Ebpf) -> Result<&mut Iter, String> {
    ebpf.program_mut(PROGRAM)
        .ok_or("iterator program missing")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| chain(&e))
}

/// The records one after another; a malformed one ends the parse (the rest
/// cannot be framed), keeping what came before.
pub fn parse_records(mut bytes: &[u8]) -> Vec<ProcessInfo> {
    let mut out = Vec::with_capacity(bytes.len() / 200);
    while !bytes.is_empty() {
        let Some(len) = record::record_len(bytes) else {
            tracing::warn!(
                left = bytes.len(),
                "malformed task-iterator record: the rest of the pass is dropped"
            );
            break;
        };
        match record::parse(&bytes[..len]) {
            Ok(r) if r.kind == crate::model::EventKind::Snapshot => out.push(r.to_process_info()),
            Ok(_) | Err(_) => {
                tracing::warn!("unexpected task-iterator record skipped");
            }
        }
        bytes = &bytes[len..];
    }
    out
}

fn read_init(options: SnapshotOptions) -> Option<ProcessInfo> {
    use std::os::fd::AsFd;
    let proc_root = std::fs::File::open("/proc").ok()?;
    let mut buf = Vec::new();
    procfs::read_process(proc_root.as_fd(), 1, &mut buf, options)
}
