//! Loading the probe object and attaching it, with one fallback step.
//!
//! The object comes in two builds of one source: with `bpf_loop` for the
//! path walks (kernel 5.17+), and with a bounded loop in its place (5.8+,
//! where the ring buffer arrived). `ebpf_probes: auto` asks the kernel
//! whether tracepoint programs may call `bpf_loop` (a one-instruction
//! probe load) and picks the build; `bpf_loop` or `bounded_loop` forces
//! one (the kernel matrix forces `bpf_loop` on 5.10 to show it fails).
//!
//! First choice: BTF tracepoints (`tp_btf`), which need no tracefs and see
//! the fork's child task. If they cannot attach, classic tracepoints: they
//! need tracefs to look up the tracepoint ids, so when it is not mounted
//! procmond mounts it for the moment of attaching and unmounts it again
//! (an attached tracepoint no longer needs it). Classic attach reports no
//! fork events; the source says so as its degraded reason. If both fail the
//! caller falls back to polling. Each failure is reported with its cause.

pub use crate::platform::options::{AttachMode, ProbeBuild};
use std::path::Path;

use aya::programs::{BtfTracePoint, FExit, Lsm, ProgramError, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

use super::iter::TaskIter;

use super::chain;

/// The compiled probes (`cargo xtask build-ebpf`), embedded at build time:
/// path walks with `bpf_loop`.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../../../../procmond-ebpf/procmond.bpf.o");
/// The same probes with bounded loops, for kernels without `bpf_loop`.
static OBJECT_COMPAT: &[u8] =
    aya::include_bytes_aligned!("../../../../../procmond-ebpf/procmond_compat.bpf.o");

impl ProbeBuild {
    /// The build `self` stands for on this kernel (`Auto` asks it).
    fn resolve(self) -> Self {
        match self {
            Self::Auto if bpf_loop_supported() => Self::BpfLoop,
            Self::Auto => Self::BoundedLoop,
            forced => forced,
        }
    }

    fn object(self) -> &'static [u8] {
        match self {
            Self::BoundedLoop => OBJECT_COMPAT,
            Self::Auto | Self::BpfLoop => OBJECT,
        }
    }
}

/// Whether tracepoint programs may call `bpf_loop` here: the kernel's own
/// answer to a two-instruction program that calls it. A probe that cannot
/// run at all (no BPF) says no; the load that follows names the cause.
fn bpf_loop_supported() -> bool {
    use aya::programs::ProgramType;
    use aya::sys::{BpfHelper, is_helper_supported};
    match is_helper_supported(ProgramType::TracePoint, BpfHelper::BPF_FUNC_loop) {
        Ok(yes) => yes,
        Err(e) => {
            tracing::debug!(error = %chain(&e), "bpf_loop probe failed: using bounded loops");
            false
        }
    }
}

/// (program, tracepoint) for BTF tracepoints.
const BTF_PROGRAMS: [(&str, &str); 3] = [
    ("handle_exec", "sched_process_exec"),
    ("handle_exit", "sched_process_exit"),
    ("handle_fork", "sched_process_fork"),
];
/// (program, LSM hook) for credential changes: the hooks of the setuid and
/// setgid families, as BPF LSM programs.
const CRED_LSM_PROGRAMS: [(&str, &str); 2] = [
    ("lsm_setuid", "task_fix_setuid"),
    ("lsm_setgid", "task_fix_setgid"),
];
/// The same as fexit programs on the hooks' functions, where the BPF LSM
/// is not running. Both optional: without them the source runs and says it
/// sees no `setuid` events.
const CRED_FEXIT_PROGRAMS: [(&str, &str); 2] = [
    ("handle_setuid", "security_task_fix_setuid"),
    ("handle_setgid", "security_task_fix_setgid"),
];
/// (program, tracepoint) for classic tracepoints (category `sched`).
const CLASSIC_PROGRAMS: [(&str, &str); 2] = [
    ("handle_exec_tp", "sched_process_exec"),
    ("handle_exit_tp", "sched_process_exit"),
];

const TRACEFS: &str = "/sys/kernel/tracing";

/// How the probes ended up attached, and which build of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    pub kind: AttachKind,
    pub build: ProbeBuild,
}

impl Attached {
    /// What health, `capabilities` and the start-up log call this
    /// variant: attach method and path-walk build, e.g. `tp_btf/bpf_loop`.
    pub fn variant(&self) -> String {
        let attach = match self.kind {
            AttachKind::Btf { .. } => "tp_btf",
            AttachKind::Classic { .. } => "tracepoint",
        };
        format!("{attach}/{}", self.build.as_str())
    }
}

/// Which tracepoints the probes are attached to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttachKind {
    /// BTF tracepoints; `setuid_error` says why credential changes are not
    /// seen, when they are not.
    Btf { setuid_error: Option<String> },
    /// Classic tracepoints; `btf_error` says why BTF ones were not used.
    Classic { btf_error: Option<String> },
}

impl AttachKind {
    /// The degraded reason this attach implies, if any.
    pub fn degraded_reason(&self) -> Option<String> {
        match self {
            Self::Btf { setuid_error } => setuid_error
                .as_deref()
                .map(|e| format!("eBPF without credential probes: no setuid events ({e})")),
            Self::Classic { btf_error } => Some(format!(
                "eBPF on classic tracepoints: no fork or setuid events{}",
                btf_error
                    .as_deref()
                    .map(|e| format!(" (BTF tracepoints failed: {e})"))
                    .unwrap_or_default()
            )),
        }
    }
}

/// Why the eBPF source could not start. Each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("kernel BTF is unavailable (/sys/kernel/btf/vmlinux): {0}")]
    Btf(String),
    #[error("loading the probe object failed: {0}")]
    Load(String),
    #[error("program {program} ({tracepoint}): {reason}")]
    Program {
        program: &'static str,
        tracepoint: &'static str,
        reason: String,
    },
    #[error("map {0} is missing or has the wrong type: {1}")]
    Map(&'static str, String),
    #[error("tracefs: {0}")]
    Tracefs(String),
    #[error("BTF tracepoints failed ({btf}); classic tracepoints failed too ({classic})")]
    Both { btf: String, classic: String },
    /// The probe loader process ran the load and it failed (its text).
    #[error("{0}")]
    Loader(String),
}

fn load(btf: &Btf, ring_buffer_bytes: u32, build: ProbeBuild) -> Result<Ebpf, EbpfError> {
    EbpfLoader::new()
        .btf(Some(btf))
        .map_max_entries("EVENTS", ring_buffer_bytes)
        .load(build.object())
        .map_err(|e| EbpfError::Load(format!("{} build: {}", build.as_str(), chain(&e))))
}

fn program_error(program: &'static str, tracepoint: &'static str) -> impl Fn(String) -> EbpfError {
    move |reason| EbpfError::Program {
        program,
        tracepoint,
        reason,
    }
}

fn attach_btf(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), EbpfError> {
    for (program, tracepoint) in BTF_PROGRAMS {
        let fail = program_error(program, tracepoint);
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| fail("not in the probe object".into()))?
            .try_into()
            .map_err(|e: ProgramError| fail(chain(&e)))?;
        prog.load(tracepoint, btf).map_err(|e| fail(chain(&e)))?;
        prog.attach().map_err(|e| fail(chain(&e)))?;
    }
    Ok(())
}

/// Attaches the credential probes, as BPF LSM programs or else as fexit
/// programs; when neither attaches, both failures come back as text.
fn attach_cred(ebpf: &mut Ebpf, btf: &Btf) -> Option<String> {
    let lsm = bpf_lsm_active().and_then(|()| {
        attach_all(CRED_LSM_PROGRAMS, |program, hook| {
            let prog: &mut Lsm = ebpf
                .program_mut(program)
                .ok_or_else(|| "not in the probe object".to_string())?
                .try_into()
                .map_err(|e: ProgramError| chain(&e))?;
            prog.load(hook, btf).map_err(|e| chain(&e))?;
            prog.attach().map(|_| ()).map_err(|e| chain(&e))
        })
    });
    let Err(lsm) = lsm else { return None };
    let fexit = attach_all(CRED_FEXIT_PROGRAMS, |program, function| {
        let prog: &mut FExit = ebpf
            .program_mut(program)
            .ok_or_else(|| "not in the probe object".to_string())?
            .try_into()
            .map_err(|e: ProgramError| chain(&e))?;
        prog.load(function, btf).map_err(|e| chain(&e))?;
        prog.attach().map(|_| ()).map_err(|e| chain(&e))
    });
    let Err(fexit) = fexit else { return None };
    let fail = |e: String| format!("{CRED_SYS_EXIT} (sys_exit): {e}");
    let sys_exit = (|| {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(CRED_SYS_EXIT)
            .ok_or_else(|| fail("not in the probe object".into()))?
            .try_into()
            .map_err(|e: ProgramError| fail(chain(&e)))?;
        prog.load("sys_exit", btf).map_err(|e| fail(chain(&e)))?;
        prog.attach().map(|_| ()).map_err(|e| fail(chain(&e)))
    })();
    match sys_exit {
        Ok(()) => {
            tracing::info!(%lsm, %fexit, "credential changes read at sys_exit (the LSM and fexit probes could not load)");
            None
        }
        Err(sys_exit) => {
            tracing::warn!(%lsm, %fexit, %sys_exit, "credential probes unavailable: no setuid events");
            Some(format!("BPF LSM: {lsm}; fexit: {fexit}; {sys_exit}"))
        }
    }
}

/// Where the active LSMs are listed (securityfs).
const ACTIVE_LSMS: &str = "/sys/kernel/security/lsm";

/// Whether BPF LSM programs will run here. A kernel built with the BPF LSM
/// but booted without `bpf` in its LSM list (Debian 11's 5.10 by default)
/// loads and attaches them, and never calls them: setuid events would be
/// missing without a word. So they are used only where the list says `bpf`.
fn bpf_lsm_active() -> Result<(), String> {
    let list = std::fs::read_to_string(ACTIVE_LSMS)
        .map_err(|e| format!("cannot read the active LSMs ({ACTIVE_LSMS}: {e})"))?;
    lsm_list_has_bpf(&list)
        .then_some(())
        .ok_or_else(|| format!("the BPF LSM is not active ({ACTIVE_LSMS}: {})", list.trim()))
}

fn lsm_list_has_bpf(list: &str) -> bool {
    list.trim().split(',').any(|l| l == "bpf")
}

/// The last resort for credential changes: a BTF tracepoint on every
/// syscall's exit, filtered in the probe to the setuid family.
const CRED_SYS_EXIT: &str = "handle_sys_exit";

/// Runs `attach` for each (program, target); the first failure, named.
fn attach_all(
    programs: [(&str, &str); 2],
    mut attach: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<(), String> {
    for (program, target) in programs {
        attach(program, target).map_err(|e| format!("{program} ({target}): {e}"))?;
    }
    Ok(())
}

fn attach_classic(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    let mounted = ensure_tracefs()?;
    let result = (|| {
        for (program, tracepoint) in CLASSIC_PROGRAMS {
            let fail = program_error(program, tracepoint);
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| fail("not in the probe object".into()))?
                .try_into()
                .map_err(|e: ProgramError| fail(chain(&e)))?;
            prog.load().map_err(|e| fail(chain(&e)))?;
            prog.attach("sched", tracepoint)
                .map_err(|e| fail(chain(&e)))?;
        }
        Ok(())
    })();
    if mounted {
        match rustix::mount::unmount(TRACEFS, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => tracing::info!(path = TRACEFS, "tracefs unmounted again after attaching"),
            Err(e) => {
                tracing::warn!(path = TRACEFS, error = %e, "could not unmount the tracefs procmond mounted")
            }
        }
    }
    result
}

/// Mounts tracefs at `TRACEFS` if nothing is there; true if this call mounted it.
fn ensure_tracefs() -> Result<bool, EbpfError> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(false);
    }
    let flags = rustix::mount::MountFlags::NOSUID
        | rustix::mount::MountFlags::NODEV
        | rustix::mount::MountFlags::NOEXEC;
    rustix::mount::mount(
        "tracefs",
        TRACEFS,
        "tracefs",
        flags,
        None::<&std::ffi::CStr>,
    )
    .map_err(|e| {
        EbpfError::Tracefs(format!(
            "not mounted, and mounting it at {TRACEFS} failed: {e}"
        ))
    })?;
    tracing::info!(
        path = TRACEFS,
        "tracefs was not mounted: mounted it to attach classic tracepoints"
    );
    Ok(true)
}

/// Loads the object and attaches it as `mode` allows; also loads the task
/// iterator with the same parsed BTF (`None`, logged, where it cannot).
pub fn load_and_attach(
    ring_buffer_bytes: u32,
    mode: AttachMode,
    build: ProbeBuild,
    setuid_events: bool,
) -> Result<(Ebpf, Attached, Option<TaskIter>), EbpfError> {
    let btf = Btf::from_sys_fs().map_err(|e| EbpfError::Btf(chain(&e)))?;
    let build = build.resolve();
    let (ebpf, kind) = attach_probes(&btf, ring_buffer_bytes, mode, build, setuid_events)?;
    let iter = match TaskIter::load(&btf) {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!(error = %e, "BPF task iterator unavailable: snapshots read procfs");
            None
        }
    };
    Ok((ebpf, Attached { kind, build }, iter))
}

fn attach_probes(
    btf: &Btf,
    ring_buffer_bytes: u32,
    mode: AttachMode,
    build: ProbeBuild,
    setuid_events: bool,
) -> Result<(Ebpf, AttachKind), EbpfError> {
    let btf_error = if mode == AttachMode::Tracepoint {
        None
    } else {
        let mut ebpf = load(btf, ring_buffer_bytes, build)?;
        match attach_btf(&mut ebpf, btf) {
            Ok(()) => {
                let setuid_error = if setuid_events {
                    attach_cred(&mut ebpf, btf)
                } else {
                    tracing::info!(
                        "setuid events off (setuid_events: false): no credential probes"
                    );
                    None
                };
                return Ok((ebpf, AttachKind::Btf { setuid_error }));
            }
            Err(e) if mode == AttachMode::Btf => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "BTF tracepoints unavailable: trying classic tracepoints");
                Some(e.to_string())
            }
        }
        // `ebpf` dropped here: whatever did attach is detached.
    };
    let mut ebpf = load(btf, ring_buffer_bytes, build)?;
    match attach_classic(&mut ebpf) {
        Ok(()) => Ok((ebpf, AttachKind::Classic { btf_error })),
        Err(e) => match btf_error {
            Some(btf) => Err(EbpfError::Both {
                btf,
                classic: e.to_string(),
            }),
            None => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bpf_lsm_counts_only_when_listed() {
        assert!(lsm_list_has_bpf("lockdown,capability,yama,bpf\n"));
        assert!(!lsm_list_has_bpf("lockdown,capability,yama,apparmor"));
        assert!(!lsm_list_has_bpf("lockdown,bpffs"));
    }
}
