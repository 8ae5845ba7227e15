//! This machine's `Platform`: the one place that picks, by target, which
//! kernel event source runs (eBPF, EndpointSecurity, audit(4), ETW) and
//! which reader enumerates the process table (procfs, kinfo, sysinfo).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Platform;
use super::options::KernelOptions;
use crate::metrics::Metrics;
use crate::sources::snapshot::{ProcessTable, Snapshot, SnapshotOptions, SnapshotReader};
use crate::sources::stream::StartedStream;
use crate::sources::{self, SourceChoice, SourceMsg};

/// The kernel source this platform has (`auto` and `kernel` mean it).
pub const KERNEL_SOURCE: SourceChoice = SourceChoice::platform_kernel();

/// The operating system procmond runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl Platform for Host {
    fn process_table(&self) -> SnapshotReader {
        SnapshotReader::new(NativeTable)
    }

    fn start_kernel_source(
        &self,
        config: &KernelOptions,
        tx: mpsc::Sender<SourceMsg>,
        metrics: Arc<Metrics>,
    ) -> Result<StartedStream, String> {
        config.source.check_platform()?;
        if let Some(reason) = kernel_source_unavailable_reason() {
            return Err(reason);
        }
        start(config, tx, metrics)
    }
}

#[cfg(target_os = "linux")]
fn start(
    config: &KernelOptions,
    tx: mpsc::Sender<SourceMsg>,
    metrics: Arc<Metrics>,
) -> Result<StartedStream, String> {
    sources::ebpf::start(config, tx, metrics)
}

#[cfg(target_os = "macos")]
fn start(
    _config: &KernelOptions, // nothing in procmond.yaml tunes EndpointSecurity
    tx: mpsc::Sender<SourceMsg>,
    metrics: Arc<Metrics>,
) -> Result<StartedStream, String> {
    sources::endpoint_security::start(tx, metrics)
}

#[cfg(target_os = "freebsd")]
fn start(
    config: &KernelOptions,
    tx: mpsc::Sender<SourceMsg>,
    metrics: Arc<Metrics>,
) -> Result<StartedStream, String> {
    sources::freebsd::audit::start(config, tx, metrics)
}

#[cfg(windows)]
fn start(
    config: &KernelOptions,
    tx: mpsc::Sender<SourceMsg>,
    metrics: Arc<Metrics>,
) -> Result<StartedStream, String> {
    sources::etw::start(config, tx, metrics)
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "freebsd",
    windows
)))]
fn start(
    _config: &KernelOptions,
    _tx: mpsc::Sender<SourceMsg>,
    _metrics: Arc<Metrics>,
) -> Result<StartedStream, String> {
    Err(unbuilt())
}

/// Why a target without a kernel source has none.
#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "freebsd",
    windows
)))]
fn unbuilt() -> String {
    format!(
        "the {} kernel source is not built into procmond yet",
        std::env::consts::OS
    )
}

/// Why the kernel source cannot run here, if it cannot.
pub fn kernel_source_unavailable_reason() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let privileges = crate::privileges::detect();
        if !privileges.can_load_bpf() {
            return Some(format!(
                "missing privilege to load eBPF (need CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN; effective: {})",
                privileges.effective_summary()
            ));
        }
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Some("kernel BTF (/sys/kernel/btf/vmlinux) is not available".into());
        }
        None
    }
    #[cfg(target_os = "freebsd")]
    {
        sources::freebsd::audit::unavailable_reason()
    }
    #[cfg(target_os = "macos")]
    {
        sources::endpoint_security::unavailable_reason()
    }
    #[cfg(windows)]
    {
        sources::etw::unavailable_reason()
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "macos",
        windows
    )))]
    {
        Some(unbuilt())
    }
}

/// Whether this platform's kernel source can start here, by really starting
/// it and stopping it again (`procmond capabilities`): `Err(reason)` if not,
/// else the probe variant that loaded where there are several.
pub fn probe_kernel_source(config: &KernelOptions) -> Result<Option<String>, String> {
    if let Some(reason) = kernel_source_unavailable_reason() {
        return Err(reason);
    }
    #[cfg(target_os = "linux")]
    {
        sources::ebpf::attach(
            config.ring_buffer_bytes,
            config.ebpf_attach,
            config.ebpf_probes,
            config.setuid_events,
        )
        .map(|source| Some(source.variant()))
        .map_err(|e| e.to_string())
    }
    #[cfg(target_os = "macos")]
    {
        let _ = config;
        sources::endpoint_security::probe().map(|()| None)
    }
    #[cfg(target_os = "freebsd")]
    {
        let _ = config;
        sources::freebsd::audit::probe().map(|()| None)
    }
    #[cfg(windows)]
    {
        sources::etw::probe(config).map(|()| None)
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    )))]
    {
        let _ = config;
        Ok(None)
    }
}

/// One enumeration for a one-shot caller (`procmond snapshot`): the task
/// iterator where it loads (Linux, privileged), else the native reader.
pub fn snapshot_once(options: SnapshotOptions) -> std::io::Result<Snapshot> {
    #[cfg(target_os = "linux")]
    match sources::ebpf::iter::TaskIter::load_standalone() {
        Ok(mut iter) => return iter.snapshot(options),
        Err(e) => tracing::debug!(error = %e, "task iterator unavailable: reading procfs"),
    }
    NativeTable.take(options)
}

/// Makes this binary the loader of every eBPF load the process does
/// (`procmond probe-loader`, platform/sources/ebpf/handover.rs); nothing elsewhere.
pub fn register_probe_loader() {
    #[cfg(target_os = "linux")]
    sources::ebpf::handover::enable(std::path::Path::new("/proc/self/exe"));
}

/// Serves one load for a collector as `procmond probe-loader`: `request`
/// is the load as the collector wrote it (JSON).
pub fn serve_probe_load(request: &str) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use sources::ebpf::handover;
        let request: handover::LoadRequest =
            serde_json::from_str(request).map_err(|e| format!("reading the load request: {e}"))?;
        handover::serve(request)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = request;
        Err("the probe loader exists on Linux only".into())
    }
}

/// The running kernel's release (`uname -r`), where procmond reports it
/// (`capabilities`: the probes depend on it).
pub fn kernel_release() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        Some(
            rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
        )
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The kernel's random id of this boot, as text (Linux:
/// /proc/sys/kernel/random/boot_id); `None` where the platform has none.
pub fn boot_id() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The platform's own process-table reader: procfs on Linux, sysctl
/// `kern.proc` on FreeBSD, the sysinfo crate elsewhere.
struct NativeTable;

impl ProcessTable for NativeTable {
    fn name(&self) -> &'static str {
        if cfg!(target_os = "linux") {
            "procfs"
        } else if cfg!(target_os = "freebsd") {
            "kinfo"
        } else {
            "sysinfo"
        }
    }

    fn take(&self, options: SnapshotOptions) -> std::io::Result<Snapshot> {
        #[cfg(target_os = "linux")]
        {
            super::procfs::snapshot(std::path::Path::new("/proc"), options)
        }
        #[cfg(target_os = "freebsd")]
        {
            sources::freebsd::kinfo::snapshot(options)
        }
        #[cfg(target_os = "macos")]
        {
            let mut snapshot = sources::sysinfo_snapshot::snapshot(options)?;
            sources::endpoint_security::fill_snapshot_ids(&mut snapshot.processes);
            Ok(snapshot)
        }
        #[cfg(windows)]
        {
            let mut snapshot = sources::sysinfo_snapshot::snapshot(options)?;
            sources::etw::fill_snapshot_ids(&mut snapshot.processes);
            Ok(snapshot)
        }
        #[cfg(not(any(
            target_os = "linux",
            target_os = "freebsd",
            target_os = "macos",
            windows
        )))]
        {
            sources::sysinfo_snapshot::snapshot(options)
        }
    }
}
