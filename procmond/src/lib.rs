//! procmond: a privileged host sensor that reports every process start and
//! stop, from the kernel as it happens, without losing events silently.
//!
//! Follow one event: `sources::ebpf` (kernel record) → `sources::ebpf::record`
//! (decode) → `sensor` (the actor; reconcile bookkeeping) → `pipeline`
//! (enrich, sanitize, encode) → `delivery::wal` → `delivery::connector` →
//! `bus::broker` → `agent::sink` (or `output` in `watch`) — see
//! docs/architecture.md.

pub mod agent;
pub mod backoff;
pub mod bus;
pub mod clock;
pub mod collector;
pub mod config;
pub mod delivery;
pub mod metrics;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod platform;
pub mod privileges;
pub mod reconcile;
pub mod sensor;
pub mod sources;
pub mod sys;
pub mod telemetry;
