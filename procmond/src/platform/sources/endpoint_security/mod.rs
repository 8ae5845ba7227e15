//! The macOS kernel event source: Apple's EndpointSecurity framework,
//! through the `endpoint-sec` crate (`source: endpoint_security`, `--source
//! endpoint-security`).
//!
//! * `client` (macOS only) — the ES client and the thread that owns it:
//!   NOTIFY_EXEC, NOTIFY_FORK, NOTIFY_EXIT handed off without blocking,
//!   read, decoded and sent as `SourceMsg::Events` batches.
//! * `decode` — the pure mapping from an ES message to a `ProcessEvent`.
//! * `seq` — sequence-number gaps (ES drops and hand-off drops) into
//!   `Metrics::kernel_lost`.
//! * `reason` — `es_new_client` failures and pre-checks as degraded reasons.
//! * `access`, `macho` — root, entitlement and Full Disk Access for
//!   `privileges::detect`.
//!
//! Everything but `client` is plain Rust compiled on every platform, so its
//! tests run on Linux; the client itself has only been type-checked for
//! the two macOS targets (docs/platforms.md says what was verified where).
//! The inventory and reconciliation use the sysinfo snapshot, as polling
//! does.

pub mod access;
#[cfg(target_os = "macos")]
mod client;
pub mod decode;
#[cfg(target_os = "macos")]
mod ffi;
pub mod macho;
pub mod reason;
pub mod seq;

#[cfg(test)]
mod layout_tests;

#[cfg(target_os = "macos")]
pub use client::{probe, start};

/// This Mac's `(major, minor, patch)`, from `kern.osproductversion`.
#[cfg(target_os = "macos")]
pub fn macos_version() -> Option<(u64, u64, u64)> {
    sysinfo::System::os_version()
        .ok()
        .and_then(|v| reason::parse_macos_version(&v))
}

/// Why the source cannot be tried here (not root, macOS too old), before
/// any client is created; `None` lets `es_new_client` decide.
#[cfg(target_os = "macos")]
pub fn unavailable_reason() -> Option<String> {
    reason::precheck(rustix::process::geteuid().as_raw(), macos_version())
}

/// This boot's facts for `entity_id` (serial number, hardware UUID, the
/// start of kernel_task and launchd), read once; `None` (logged once) when
/// one of them cannot be read.
#[cfg(target_os = "macos")]
pub fn boot() -> Option<&'static crate::model::identity::MacBoot> {
    use crate::model::identity::MacBoot;
    static BOOT: std::sync::OnceLock<Option<MacBoot>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        let read = || -> Result<MacBoot, String> {
            let serial = ffi::serial_number().map_err(|e| e.to_string())?;
            Ok(MacBoot {
                serial: MacBoot::serial_field(&serial).ok_or_else(|| {
                    format!("serial number {serial:?} is not 1 to 16 ASCII bytes")
                })?,
                hardware_uuid: ffi::hardware_uuid().map_err(|e| format!("gethostuuid: {e}"))?,
                kernel_task_start: ffi::start_time(0).map_err(|e| e.to_string())?,
                launchd_start: ffi::start_time(1).map_err(|e| e.to_string())?,
            })
        };
        read()
            .inspect_err(|e| tracing::error!(error = %e, "no entity_id on any event: this boot's facts cannot be read"))
            .ok()
    })
    .as_ref()
}

/// Fills the ids of a sysinfo snapshot's processes: `entity_id` from each
/// one's start (`kern.proc.pid`), the parent's from its entry in the same
/// snapshot. No `exec_id`: the pid version is in the audit token, which a
/// snapshot does not read.
#[cfg(target_os = "macos")]
pub fn fill_snapshot_ids(processes: &mut [crate::sources::snapshot::ProcessInfo]) {
    let Some(boot) = boot() else {
        return;
    };
    let mut by_pid = std::collections::HashMap::with_capacity(processes.len());
    for p in processes.iter_mut() {
        p.entity_id = ffi::start_time(p.pid)
            .ok()
            .map(|start| boot.entity_id(start, p.pid));
        if let Some(id) = p.entity_id {
            by_pid.insert(p.pid, id);
        }
    }
    for p in processes.iter_mut() {
        p.parent_entity_id = p.ppid.and_then(|pp| by_pid.get(&pp).copied());
    }
}
