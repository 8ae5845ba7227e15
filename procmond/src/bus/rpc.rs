//! Control-plane messages carried as JSON payloads on the bus: RPC requests
//! to a collector, lifecycle broadcasts, registration and heartbeats.
//!
//! The control plane is small and rare, so it favours being readable on the
//! wire over zero-copy; process events stay rkyv.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Correlation ids with this bit are control frames, never WAL sequence numbers.
pub const CONTROL_CORRELATION: u64 = 1 << 63;

/// An RPC on `control.collector.<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    HealthCheck {
        #[serde(default)]
        detailed: bool,
    },
    UpdateConfig {
        set: BTreeMap<String, String>,
    },
    GracefulShutdown,
    Start,
    Stop,
    Restart,
}

/// A broadcast on `control.collector.lifecycle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Lifecycle {
    BeginMonitoring,
    Shutdown,
}

/// A message on `control.collector.registration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Registration {
    Register {
        collector_id: String,
        collector_type: String,
        version: String,
        pid: u32,
        hostname: String,
        source: String,
        #[serde(default)]
        degraded_reason: Option<String>,
        capabilities: serde_json::Value,
        /// The credential the launcher handed this collector
        /// (`bus/authz.rs`); the broker removes it before anyone else sees
        /// the registration.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
    },
    Ready {
        collector_id: String,
    },
    Deregister {
        collector_id: String,
    },
}

/// A message on `control.health.heartbeat.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub collector_id: String,
    pub sequence: u64,
    /// healthy / degraded / unhealthy
    pub status: String,
    pub timestamp: String,
    pub metrics: crate::health::Summary,
}

impl Registration {
    /// The same registration without its credential, as subscribers see it.
    pub fn without_credential(mut self) -> Self {
        if let Self::Register { credential, .. } = &mut self {
            *credential = None;
        }
        self
    }
}

/// Correlation ids of the greeting's registration frames: a refusal of one
/// of them means the collector is not registered (it reconnects and tries
/// again).
pub const REGISTER_CORRELATION: u64 = CONTROL_CORRELATION | 3;
pub const READY_CORRELATION: u64 = CONTROL_CORRELATION | 4;

pub fn to_payload<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data structures always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}
