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
pub mod macho;
pub mod reason;
pub mod seq;

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
