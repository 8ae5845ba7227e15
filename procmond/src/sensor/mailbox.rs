//! The sensor's mailbox: the messages that reach the one task owning the
//! collection state, and how each is answered.
//!
//! The mailbox is bounded (`MAILBOX_CAPACITY`); whoever sends RPCs uses
//! `try_send` and answers `busy` when it is full. Messages are taken only
//! between cycles — a poll or a reconciliation pass never sees half a
//! configuration — so an accepted `UpdateConfig` is applied atomically at a
//! cycle boundary.

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::config::ProcmondConfig;

/// docs/reference.md §5: bounded, 100.
pub const MAILBOX_CAPACITY: usize = 100;

/// Keys `UpdateConfig` may change while running; others need a restart.
pub const HOT_RELOAD_KEYS: &[&str] = &[
    "collection_interval_secs",
    "enhanced_metadata",
    "heartbeat_interval_secs",
    "sanitize.extra_flags",
    "sanitize.extra_keys",
];

/// What the sensor can be asked.
#[derive(Debug)]
pub enum Command {
    /// `(key, value)` pairs; values are YAML scalars or flow sequences.
    UpdateConfig {
        changes: Vec<(String, String)>,
        reply: oneshot::Sender<Result<Value, String>>,
    },
    /// Finish the cycle, stop; the collector then drains, deregisters, exits 0.
    GracefulShutdown {
        reply: oneshot::Sender<Value>,
    },
    /// The agent's go-ahead: start publishing.
    BeginMonitoring,
    /// Backpressure: stretch (true) or restore (false) the interval.
    AdjustInterval {
        stretched: bool,
    },
    Start {
        reply: oneshot::Sender<Value>,
    },
    Stop {
        reply: oneshot::Sender<Value>,
    },
    Restart {
        reply: oneshot::Sender<Value>,
    },
}

/// Where the sensor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Starting,
    Running,
    Stopped,
    ShuttingDown,
}

/// What the sensor publishes about itself (read by heartbeats and health
/// checks without going through the mailbox).
#[derive(Debug, Clone, Serialize)]
pub struct SensorStatus {
    pub lifecycle: Lifecycle,
    pub source: Option<crate::model::EventSource>,
    pub degraded_reason: Option<String>,
    /// The kernel probes' variant (e.g. `tp_btf/bpf_loop`), while they run.
    pub probes: Option<String>,
    pub monitoring: bool,
    pub backpressure: bool,
    pub interval_ms: u64,
    pub cycles: u64,
    pub last_cycle_ms: u64,
    /// What snapshots read (`bpf_iter`, `procfs`, …).
    pub snapshot_reader: &'static str,
    pub config: ProcmondConfig,
}

impl SensorStatus {
    pub fn new(config: ProcmondConfig) -> Self {
        Self {
            lifecycle: Lifecycle::Starting,
            source: None,
            degraded_reason: None,
            probes: None,
            monitoring: false,
            backpressure: false,
            interval_ms: config.collection_interval_secs * 1000,
            cycles: 0,
            last_cycle_ms: 0,
            snapshot_reader: crate::platform::Platform::process_table(&crate::platform::Host)
                .name(),
            config,
        }
    }

    /// The `ctl health` body: this status and the counters. Built from
    /// shared state by whoever is asked (the control plane), so it never
    /// waits behind a reconciliation pass in the sensor's mailbox.
    pub fn report(&self, metrics: &crate::metrics::Metrics, detailed: bool) -> Value {
        let connected = metrics.connected.load(std::sync::atomic::Ordering::Relaxed) == 1;
        let mut body = json!({
            "collector_id": self.config.collector_id,
            // Judged like heartbeats: losses since the last beat.
            "status": self.health(connected, metrics),
            "lifecycle": self.lifecycle,
            "source": self.source,
            "degraded_reason": self.degraded_reason,
            "probes": self.probes,
            "monitoring": self.monitoring,
            "collection_interval_secs": self.config.collection_interval_secs,
            "effective_interval_ms": self.interval_ms,
            "backpressure": self.backpressure,
            "snapshot_reader": self.snapshot_reader,
        });
        if let (Some(body), Value::Object(summary)) = (body.as_object_mut(), metrics.summary_json())
        {
            body.extend(summary);
        }
        if detailed {
            let counters = metrics.to_json();
            body["recent_errors"] = crate::telemetry::recent_errors().into();
            body["cycles"] = json!({
                "completed": self.cycles,
                "last_cycle_ms": self.last_cycle_ms,
                "reconcile_missed_starts": counters["reconcile_missed_starts"],
                "reconcile_missed_stops": counters["reconcile_missed_stops"],
                "snapshot_errors": counters["snapshot_errors"],
            });
            body["counters"] = counters;
        }
        body
    }

    /// healthy / degraded / unhealthy, as heartbeats and health checks
    /// report it: degraded by a degraded source, backpressure, losses since
    /// the last heartbeat, or a WAL that cannot be written.
    pub fn health(&self, connected: bool, metrics: &crate::metrics::Metrics) -> &'static str {
        use std::sync::atomic::Ordering::Relaxed;
        let losses = metrics.recent_losses();
        let wal_faulted = metrics.wal_faulted.load(Relaxed) != 0;
        if matches!(self.lifecycle, Lifecycle::Stopped) || !connected {
            "unhealthy"
        } else if self.degraded_reason.is_some() || self.backpressure || losses > 0 || wal_faulted {
            "degraded"
        } else {
            "healthy"
        }
    }
}

/// Applies `changes` to a copy of `config`; the result is validated whole,
/// so a bad value changes nothing. Errors name the key.
pub fn updated_config(
    config: &ProcmondConfig,
    changes: &[(String, String)],
) -> Result<ProcmondConfig, String> {
    if changes.is_empty() {
        return Err("no KEY=VALUE given".into());
    }
    let mut value = serde_json::to_value(config).map_err(|e| e.to_string())?;
    for (key, raw) in changes {
        if !HOT_RELOAD_KEYS.contains(&key.as_str()) {
            let known = value
                .pointer(&format!("/{}", key.replace('.', "/")))
                .is_some();
            return Err(if known {
                format!(
                    "{key}: not hot-reloadable; change it in procmond.yaml and restart the collector"
                )
            } else {
                format!(
                    "{key}: unknown key (hot-reloadable: {})",
                    HOT_RELOAD_KEYS.join(", ")
                )
            });
        }
        let parsed: Value = serde_norway::from_str(raw).map_err(|e| format!("{key}: {e}"))?;
        let slot = value
            .pointer_mut(&format!("/{}", key.replace('.', "/")))
            .ok_or_else(|| format!("{key}: unknown key"))?;
        *slot = parsed;
    }
    let updated: ProcmondConfig = serde_json::from_value(value).map_err(|e| {
        let keys: Vec<&str> = changes.iter().map(|(k, _)| k.as_str()).collect();
        format!("{}: {e}", keys.join(", "))
    })?;
    updated.validate().map_err(|e| e.to_string())?;
    Ok(updated)
}

/// An `ok` body.
pub fn ok(message: &str) -> Value {
    json!({ "result": message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(k: &str, v: &str) -> Vec<(String, String)> {
        vec![(k.to_string(), v.to_string())]
    }

    #[test]
    fn updates_are_validated_whole_and_name_the_key() {
        let c = ProcmondConfig::default();
        let u = updated_config(&c, &change("collection_interval_secs", "7")).expect("valid");
        assert_eq!(u.collection_interval_secs, 7);
        let e = updated_config(&c, &change("collection_interval_secs", "0")).expect_err("range");
        assert!(
            e.contains("collection_interval_secs") && e.contains("between 1 and 3600"),
            "{e}"
        );
        let e = updated_config(&c, &change("collection_interval_secs", "soon")).expect_err("type");
        assert!(e.contains("collection_interval_secs"), "{e}");
        let e = updated_config(&c, &change("wal_dir", "/tmp")).expect_err("restart-only");
        assert!(e.contains("wal_dir") && e.contains("restart"), "{e}");
        let e = updated_config(&c, &change("nope", "1")).expect_err("unknown");
        assert!(e.contains("nope") && e.contains("unknown"), "{e}");
        let u = updated_config(&c, &change("sanitize.extra_keys", "[SESSION]")).expect("list");
        assert_eq!(u.sanitize.extra_keys, ["SESSION"]);
    }
}
