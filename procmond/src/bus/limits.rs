//! What one admitted peer may hold on the broker, so that a local peer
//! cannot exhaust the agent (memory, file descriptors, routing time).
//!
//! Each cap has an agent.yaml key (`broker.*`) with a default sized for a
//! handful of collectors and operators; each refusal is counted
//! (`BrokerStats`) and logged. The broker enforces them; this module holds
//! the numbers and their checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bus::protocol::MAX_FRAME_BYTES;

/// The broker's caps (agent.yaml `broker:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerLimits {
    /// Connections at once, all peers together.
    pub max_connections: usize,
    /// Connections at once from one uid.
    pub max_connections_per_uid: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// RPCs one connection may have waiting for an answer.
    pub max_pending_rpcs_per_connection: usize,
    /// The longest deadline an RPC may ask for; longer ones are cut to it.
    pub max_rpc_deadline_secs: u64,
    /// A connection that has neither registered, subscribed, published nor
    /// called within this time is closed.
    pub idle_timeout_secs: u64,
    /// Bytes waiting to be written to one connection; a subscriber whose
    /// queue would pass this is disconnected (it does not read).
    pub max_queued_bytes_per_connection: usize,
    /// Bytes waiting to be written to all connections together; past it
    /// the connection with the largest queue is disconnected.
    pub max_queued_bytes: usize,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_connections_per_uid: 64,
            max_subscriptions_per_connection: 64,
            max_pending_rpcs_per_connection: 64,
            max_rpc_deadline_secs: 60,
            idle_timeout_secs: 30,
            max_queued_bytes_per_connection: 8 * 1024 * 1024,
            max_queued_bytes: 64 * 1024 * 1024,
        }
    }
}

impl BrokerLimits {
    /// Each key with its allowed range, for validation.
    pub fn ranges(&self) -> [(&'static str, u64, u64, u64); 8] {
        [
            (
                "broker.limits.max_connections",
                self.max_connections as u64,
                2,
                65_536,
            ),
            (
                "broker.limits.max_connections_per_uid",
                self.max_connections_per_uid as u64,
                1,
                65_536,
            ),
            (
                "broker.limits.max_subscriptions_per_connection",
                self.max_subscriptions_per_connection as u64,
                1,
                10_000,
            ),
            (
                "broker.limits.max_pending_rpcs_per_connection",
                self.max_pending_rpcs_per_connection as u64,
                1,
                10_000,
            ),
            (
                "broker.limits.max_rpc_deadline_secs",
                self.max_rpc_deadline_secs,
                1,
                3600,
            ),
            (
                "broker.limits.idle_timeout_secs",
                self.idle_timeout_secs,
                1,
                3600,
            ),
            // At least two of the largest frames, so one delivery always fits.
            (
                "broker.limits.max_queued_bytes_per_connection",
                self.max_queued_bytes_per_connection as u64,
                2 * MAX_FRAME_BYTES as u64,
                1 << 30,
            ),
            (
                "broker.limits.max_queued_bytes",
                self.max_queued_bytes as u64,
                2 * MAX_FRAME_BYTES as u64,
                1 << 32,
            ),
        ]
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// `requested` cut to the cap (0 = none asked: the default).
    pub fn rpc_deadline(&self, requested: Option<Duration>, default: Duration) -> Duration {
        let cap = Duration::from_secs(self.max_rpc_deadline_secs);
        requested.unwrap_or(default).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_capped_and_defaults_are_in_range() {
        let l = BrokerLimits::default();
        let five = Duration::from_secs(5);
        assert_eq!(l.rpc_deadline(None, five), five);
        assert_eq!(
            l.rpc_deadline(Some(Duration::from_secs(u64::MAX)), five),
            Duration::from_secs(60)
        );
        for (key, v, lo, hi) in l.ranges() {
            assert!((lo..=hi).contains(&v), "{key}");
        }
    }
}
