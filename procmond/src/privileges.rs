//! Privilege detection (docs/reference.md §6): what this process may do, logged at start
//! and shown by `capabilities`. Missing privilege means degraded mode with a
//! reason, never a crash.

use serde::Serialize;

/// The privileges that matter to procmond on this platform.
#[derive(Debug, Clone, Serialize)]
pub struct Privileges {
    pub euid: Option<u32>,
    /// Linux capabilities procmond uses, and whether each is effective.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<CapabilityState>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CapabilityState {
    pub name: &'static str,
    pub effective: bool,
    pub why: &'static str,
}

impl Privileges {
    fn has(&self, name: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.name == name && c.effective)
    }

    /// Loading and attaching tracing programs.
    pub fn can_load_bpf(&self) -> bool {
        self.has("CAP_SYS_ADMIN") || (self.has("CAP_BPF") && self.has("CAP_PERFMON"))
    }

    /// Reading every process's exe/cwd links and files.
    pub fn can_read_all_processes(&self) -> bool {
        self.has("CAP_SYS_PTRACE") || self.has("CAP_DAC_READ_SEARCH") || self.euid == Some(0)
    }

    /// "CAP_BPF,CAP_PERFMON" or "none".
    pub fn effective_summary(&self) -> String {
        let names: Vec<_> = self
            .capabilities
            .iter()
            .filter(|c| c.effective)
            .map(|c| c.name)
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }
}

#[cfg(target_os = "linux")]
pub fn detect() -> Privileges {
    use caps::{CapSet, Capability};
    const WANTED: [(Capability, &str, &str); 5] = [
        (
            Capability::CAP_BPF,
            "CAP_BPF",
            "load eBPF programs and maps",
        ),
        (
            Capability::CAP_PERFMON,
            "CAP_PERFMON",
            "attach tracing programs",
        ),
        (
            Capability::CAP_SYS_ADMIN,
            "CAP_SYS_ADMIN",
            "eBPF on kernels without CAP_BPF",
        ),
        (
            Capability::CAP_SYS_PTRACE,
            "CAP_SYS_PTRACE",
            "read other users' /proc/PID/exe and cwd",
        ),
        (
            Capability::CAP_DAC_READ_SEARCH,
            "CAP_DAC_READ_SEARCH",
            "read /proc entries regardless of mode",
        ),
    ];
    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    Privileges {
        euid: Some(rustix::process::geteuid().as_raw()),
        capabilities: WANTED
            .iter()
            .map(|(cap, name, why)| CapabilityState {
                name,
                effective: effective.contains(cap),
                why,
            })
            .collect(),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn detect() -> Privileges {
    Privileges {
        euid: None,
        capabilities: Vec::new(),
    }
}
