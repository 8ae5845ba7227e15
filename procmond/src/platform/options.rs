//! The two eBPF keys of procmond.yaml (`ebpf_attach`, `ebpf_probes`):
//! parsed on every platform like the rest of the file, used where the eBPF
//! source runs (`platform/sources/ebpf/attach.rs` gives them their meaning).

/// Which attach method the operator allows (`ebpf_attach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// BTF tracepoints, else classic tracepoints.
    Auto,
    /// BTF tracepoints only.
    Btf,
    /// Classic tracepoints only.
    Tracepoint,
}

/// Which build of the probes to load (`ebpf_probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeBuild {
    /// `bpf_loop` where the kernel has it, else `bounded_loop`.
    Auto,
    /// Path walks with `bpf_loop` (5.17+).
    BpfLoop,
    /// Path walks in a bounded loop (5.8+).
    BoundedLoop,
}

impl ProbeBuild {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::BpfLoop => "bpf_loop",
            Self::BoundedLoop => "bounded_loop",
        }
    }
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
    /// The kernel source this platform has (`auto` and `kernel` mean it).
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

/// What a kernel source starts with (`ProcmondConfig::kernel_options`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelOptions {
    /// Names the collector (ETW session names, its lock).
    pub collector_id: String,
    /// The source asked for: a named one must be this platform's.
    pub source: SourceChoice,
    /// The eBPF ring buffer's size.
    pub ring_buffer_bytes: u32,
    pub ebpf_attach: AttachMode,
    pub ebpf_probes: ProbeBuild,
    /// `setuid` events from the kernel (Linux).
    pub setuid_events: bool,
    /// Working directories and other extra reads (`enhanced_metadata`).
    pub enhanced_metadata: bool,
}
