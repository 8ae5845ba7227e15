//! Everything the operating system decides, behind one seam (ADR 21).
//!
//! What the sensor asks of the OS — start the kernel event source, read the
//! process table — goes through `Platform`; what the pipeline reads after a
//! source (procfs on Linux) is `NativeEnricher`. `host()` is this machine's
//! implementation (`host.rs`, the one place that picks eBPF, ETW,
//! EndpointSecurity or audit(4) and procfs, kinfo or sysinfo by target);
//! `fake` is a scripted one that replays records, process tables and faults
//! so the sensor's loops are tested in-process without root. The modules
//! below it are the OS-facing pieces themselves: the kernel sources, procfs,
//! clocks, privileges and their drop, and `sys` (the calls that need
//! `unsafe`). `cfg(target_os)` appears nowhere else in the crate.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::sources::SourceMsg;
use crate::sources::snapshot::SnapshotReader;
use crate::sources::stream::StartedStream;

pub mod clock;
pub mod container;
#[cfg(test)]
pub mod fake;
mod host;
pub mod options;
pub mod private_files;
#[cfg(unix)]
pub mod privdrop;
pub mod privileges;
#[cfg(target_os = "linux")]
pub mod procfs;
#[cfg(target_os = "linux")]
mod procfs_enrich;
pub mod sources;
pub mod sys;

/// What the platform adds to an event after its source (`pipeline::enrich`).
#[cfg(target_os = "linux")]
pub use procfs_enrich::NativeEnricher;

/// Off Linux the sources capture all they can at the event; nothing is
/// read afterwards.
#[cfg(not(target_os = "linux"))]
#[derive(Debug, Clone, Default)]
pub struct NativeEnricher;

#[cfg(not(target_os = "linux"))]
impl NativeEnricher {
    pub fn new() -> Self {
        Self
    }

    pub fn enrich(&mut self, _event: &mut crate::model::ProcessEvent, _enhanced: bool) {}
}

pub use host::{
    Host, KERNEL_SOURCE, boot_id, kernel_release, kernel_source_unavailable_reason,
    probe_kernel_source, register_probe_loader, serve_probe_load, snapshot_once,
};

/// What the sensor needs from the operating system.
pub trait Platform: Send + Sync + std::fmt::Debug {
    /// The process-table reader snapshots use while no kernel source
    /// brings its own.
    fn process_table(&self) -> SnapshotReader;

    /// Starts the kernel event source with `options`, sending to `tx`; `Err(reason)` when
    /// it cannot run here (the sensor falls back to polling or fails).
    fn start_kernel_source(
        &self,
        options: &options::KernelOptions,
        tx: mpsc::Sender<SourceMsg>,
        metrics: Arc<Metrics>,
    ) -> Result<StartedStream, String>;
}

/// This machine's operating system.
pub fn host() -> Arc<dyn Platform> {
    Arc::new(Host)
}
