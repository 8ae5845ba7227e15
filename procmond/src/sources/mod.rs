//! Event sources: where process events come from on each platform.
//!
//! * `stream` — the interface every kernel source implements, and `start`,
//!   which starts this platform's.
//! * `ebpf` — Linux kernel probes (the preferred source).
//! * `endpoint_security` — macOS EndpointSecurity client (its pure decoding
//!   is compiled and tested everywhere).
//! * `freebsd` — audit(4) via /dev/auditpipe and the sysctl process table
//!   (its BSM parser and kinfo decoding are compiled and tested everywhere).
//! * `etw` — Windows ETW sessions (its decoding and correlation are
//!   compiled and tested everywhere).
//! * `poll` — the FallbackProcessCollector, on every platform.
//! * `snapshot` / `procfs` / `sysinfo_snapshot` — one enumeration of the
//!   process table, used by the inventory, reconciliation and polling.
//!
//! `select` decides which source runs and records why any better one could
//! not, so the sensor degrades visibly instead of failing.

#[cfg(target_os = "linux")]
pub mod ebpf;
pub mod endpoint_security;
pub mod etw;
pub mod freebsd;
pub mod poll;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod snapshot;
pub mod stream;
pub mod sysinfo_snapshot;

use crate::model::ProcessEvent;

/// What a kernel source sends to the sensor.
#[derive(Debug)]
pub enum SourceMsg {
    /// Events in the order the kernel wrote them (one drain of the ring).
    Events(Vec<ProcessEvent>),
    /// Every record written before the barrier was requested has been sent.
    Barrier(u64),
    /// A `modify` event carrying the sha256 of an earlier exec
    /// (`pipeline::hash`): emitted as is, not a kernel observation.
    Hashed(Box<ProcessEvent>),
}

/// Which source the operator asked for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum SourceChoice {
    /// The best kernel source, else polling.
    Auto,
    /// This platform's kernel source only: fail if it cannot start.
    Kernel,
    /// eBPF only (Linux): fail if it cannot start.
    Ebpf,
    /// EndpointSecurity only (macOS): fail if it cannot start.
    #[value(name = "endpoint-security", alias = "endpoint_security")]
    #[serde(alias = "endpoint-security")]
    EndpointSecurity,
    /// audit(4) only (FreeBSD): fail if it cannot start.
    Audit,
    /// ETW only (Windows): fail if it cannot start.
    Etw,
    /// Polling snapshots only.
    Poll,
}

impl SourceChoice {
    /// The kernel source this platform has.
    pub const fn platform_kernel() -> Self {
        if cfg!(target_os = "linux") {
            Self::Ebpf
        } else if cfg!(target_os = "macos") {
            Self::EndpointSecurity
        } else if cfg!(target_os = "freebsd") {
            Self::Audit
        } else if cfg!(windows) {
            Self::Etw
        } else {
            Self::Kernel
        }
    }

    /// Whether this choice tries the kernel source at all.
    pub fn tries_kernel(self) -> bool {
        self != Self::Poll
    }

    /// Whether this choice fails instead of falling back to polling.
    pub fn requires_kernel(self) -> bool {
        !matches!(self, Self::Auto | Self::Poll)
    }

    /// `Err(reason)` when this names another platform's kernel source.
    pub fn check_platform(self) -> Result<(), String> {
        let named = matches!(
            self,
            Self::Ebpf | Self::EndpointSecurity | Self::Audit | Self::Etw
        );
        if named && self != Self::platform_kernel() {
            return Err(format!(
                "source {} does not exist on {}; this platform's kernel source is {} (or use auto, kernel, poll)",
                self.name(),
                std::env::consts::OS,
                Self::platform_kernel().name()
            ));
        }
        Ok(())
    }

    /// The name config files use (`endpoint_security`, `audit`, …).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// Why the kernel source is not running here, if it is not.
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
        freebsd::audit::unavailable_reason()
    }
    #[cfg(target_os = "macos")]
    {
        endpoint_security::unavailable_reason()
    }
    #[cfg(windows)]
    {
        etw::unavailable_reason()
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "macos",
        windows
    )))]
    {
        Some(format!(
            "the {} kernel source is not built into procmond yet",
            std::env::consts::OS
        ))
    }
}
