//! The health contract, typed once. A collector's heartbeat and its health
//! answer carry a `Summary`; the agent answers about itself with an
//! `AgentHealth`, which `ctl health` prints and `/metrics` turns into
//! families. Producer and readers share these structs, so a field renamed
//! here is renamed for all of them, and a body that does not parse is an
//! error someone sees, not a metric that silently goes missing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Whether a collector is connected to its broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    Connected,
    #[default]
    Disconnected,
}

/// What a heartbeat and a collector's health answer carry besides the
/// status (`Metrics::summary`). Fields a sender left out read as zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// Live processes in the last snapshot.
    pub processes_seen: u64,
    /// Events the broker acknowledged.
    pub events_published: u64,
    /// Events acknowledged that were published from memory while the WAL
    /// could not store them.
    pub events_unpersisted: u64,
    /// Unacknowledged bytes, percent of `buffer_bytes`.
    pub buffer_percent: u64,
    /// Events in the WAL awaiting acknowledgement, and their bytes.
    pub wal_pending: u64,
    pub wal_pending_bytes: u64,
    /// Why the WAL cannot be written, while it cannot.
    pub wal_fault: Option<String>,
    pub connection: Connection,
    /// Every loss counter, by name (`Metrics`, kind `Loss`).
    pub losses: BTreeMap<String, u64>,
    /// Events encoded, by kind and by source (zeros left out).
    pub events_by_kind: BTreeMap<String, u64>,
    pub events_by_source: BTreeMap<String, u64>,
}

/// The agent's phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentPhase {
    #[default]
    Loading,
    SteadyState,
}

/// One collector as the agent supervises it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectorHealth {
    pub id: String,
    pub pid: Option<u32>,
    pub registered: bool,
    pub ready: bool,
    pub deregistered: bool,
    /// Its last reported health (`healthy`, `degraded`, `unhealthy`).
    pub status: Option<String>,
    pub last_heartbeat_ms_ago: u64,
    /// The escalation step under way, if any.
    pub escalation: Option<String>,
    /// Restarts since the agent started, and in the last 10 minutes.
    pub restarts: u64,
    pub restarts_last_10min: u64,
    /// Set while the crash-loop alert stands.
    pub alert: Option<String>,
    pub next_restart_in_ms: Option<u64>,
    /// What its last heartbeat carried; `None` before the first.
    pub last_heartbeat: Option<Summary>,
}

/// A sink's counters (`SinkStats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkCounters {
    /// `ok`, or `degraded` while its last write or connection failed.
    pub status: String,
    pub last_error: Option<String>,
    pub written: u64,
    pub duplicates: u64,
    pub invalid: u64,
    pub errors: u64,
    pub reconnects: u64,
    /// Events received and not stored yet.
    pub lag: u64,
}

impl SinkCounters {
    pub fn degraded(&self) -> bool {
        self.status == "degraded"
    }
}

/// One sink the agent runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkHealth {
    #[serde(rename = "type")]
    pub kind: String,
    pub target: String,
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub counters: SinkCounters,
}

/// The agent's answer on `control.agent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentHealth {
    pub phase: AgentPhase,
    pub collectors: Vec<CollectorHealth>,
    /// The broker's counters by name, and `queued_bytes`.
    pub broker: BTreeMap<String, u64>,
    pub sinks: Vec<SinkHealth>,
    /// The account the agent runs as (uid on Unix, SID on Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_round_trips_and_missing_fields_read_as_zero() {
        let mut s = Summary {
            wal_pending: 3,
            connection: Connection::Connected,
            ..Summary::default()
        };
        s.losses.insert("kernel_lost".into(), 4);
        let json = serde_json::to_value(&s).expect("serializes");
        assert_eq!(json["connection"], "connected");
        assert_eq!(json["losses"]["kernel_lost"], 4);
        let back: Summary = serde_json::from_value(json).expect("parses");
        assert_eq!(back, s);
        let sparse: Summary = serde_json::from_str(r#"{"wal_pending": 9}"#).expect("parses");
        assert_eq!((sparse.wal_pending, sparse.events_published), (9, 0));
        assert!(serde_json::from_str::<Summary>(r#"{"wal_pending": "nine"}"#).is_err());
    }
}
