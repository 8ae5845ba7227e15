//! Event sources: where process events come from on each platform.
//!
//! * `stream` — the interface every kernel source implements (`platform`
//!   starts this platform's).
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

pub mod ebpf;
pub mod endpoint_security;
pub mod etw;
pub mod freebsd;
pub mod poll;
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
    /// The kernel source this platform has (`platform::KERNEL_SOURCE`).
    pub const fn platform_kernel() -> Self {
        crate::platform::KERNEL_SOURCE
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
