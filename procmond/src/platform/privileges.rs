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
    /// macOS: root, the EndpointSecurity entitlement and Full Disk Access,
    /// each yes/no/unknown with its evidence; `None` elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_security: Option<crate::sources::endpoint_security::access::EsAccess>,
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

    /// Reading every process's exe/cwd links and files (Windows: opening
    /// every process, SeDebugPrivilege).
    pub fn can_read_all_processes(&self) -> bool {
        self.has("CAP_SYS_PTRACE")
            || self.has("CAP_DAC_READ_SEARCH")
            || self.euid == Some(0)
            || self.has("SeDebugPrivilege")
    }

    /// "CAP_BPF,CAP_PERFMON" or "none"; on macOS
    /// "root=yes,es_entitlement=unknown,full_disk_access=no".
    pub fn effective_summary(&self) -> String {
        if let Some(es) = &self.endpoint_security {
            return es.summary();
        }
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
        endpoint_security: None,
    }
}

/// macOS: the euid, and what EndpointSecurity needs (`endpoint_security`).
#[cfg(target_os = "macos")]
pub fn detect() -> Privileges {
    let euid = rustix::process::geteuid().as_raw();
    Privileges {
        euid: Some(euid),
        capabilities: Vec::new(),
        endpoint_security: Some(crate::sources::endpoint_security::access::detect(euid)),
    }
}

/// FreeBSD: root, whether /dev/auditpipe is readable (the audit source),
/// and `security.bsd.see_other_uids` (0 limits a non-root collector's view).
#[cfg(target_os = "freebsd")]
pub fn detect() -> Privileges {
    use crate::sources::freebsd::audit;
    let euid = rustix::process::geteuid().as_raw();
    Privileges {
        euid: Some(euid),
        capabilities: vec![
            CapabilityState {
                name: "root",
                effective: euid == 0,
                why: "configure audit(4) and read every process's args, path and cwd",
            },
            CapabilityState {
                name: "auditpipe_readable",
                effective: audit::auditpipe_readable(),
                why: "/dev/auditpipe: the audit(4) event source",
            },
            CapabilityState {
                name: "security.bsd.see_other_uids",
                effective: audit::see_other_uids() == Some(1),
                why: "1: other users' processes are visible; 0 hides them from a non-root collector",
            },
        ],
        endpoint_security: None,
    }
}

/// Windows: elevation and the token privileges that matter
/// (`platform/sources/etw/access.rs`).
#[cfg(windows)]
pub fn detect() -> Privileges {
    Privileges {
        euid: None,
        capabilities: crate::sources::etw::access::detect(),
        endpoint_security: None,
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "freebsd",
    windows
)))]
pub fn detect() -> Privileges {
    Privileges {
        euid: None,
        capabilities: Vec::new(),
        endpoint_security: None,
    }
}
