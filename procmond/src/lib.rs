//! procmond: a privileged host sensor that reports every process start and
//! stop, from the kernel as it happens, without losing events silently.
//!
//! Follow one event: `sources::ebpf` (kernel record) → `sources::ebpf::record`
//! (decode) → `sensor::kernel_loop` (the sensor task; reconcile bookkeeping)
//! → `pipeline` (enrich, sanitize, encode) → `delivery::wal` →
//! `delivery::connector_loop` / `connector` → `bus::broker` → `agent::sink`
//! (or `output` in `watch`) — see docs/architecture.md. What differs by
//! operating system is under `platform` (the seam, and `sources`, `sys`, …).

pub mod agent;
pub mod backoff;
pub mod bus;
pub mod collector;
pub mod config;
pub mod delivery;
pub mod health;
pub mod metrics;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod platform;
pub mod reconcile;
#[cfg(unix)]
pub mod safe_path;
pub mod sensor;
pub mod telemetry;

// The operating system's modules live under `platform/`; these paths stay
// for the rest of the crate.
pub use platform::{clock, privileges, sources, sys};
