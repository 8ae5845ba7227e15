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
pub use crate::platform::options::SourceChoice;

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
