//! The agent's metrics in the Prometheus text format (0.0.4), so operators
//! can watch the sensors with the tools they already run; served by
//! `metrics_http.rs`.
//!
//! Everything comes from one place: the agent's own health answer (the
//! `control.agent` RPC that `ctl health` prints), taken at each scrape.
//! Collector figures are those of their last heartbeat (`losses`,
//! `wal_pending`, `events_by_kind` …), so they are at most one heartbeat
//! old and restart from zero when a collector restarts (a counter reset, as
//! Prometheus expects). Registry and encoding are `prometheus-client`, with a
//! `Collector` that turns the JSON into constant counters and gauges.

use std::fmt::Write as _;

use crate::health::{
    AgentHealth, AgentPhase, CollectorHealth, Connection, SinkCounters, SinkHealth, Summary,
};
use crate::model::{EventKind, EventSource};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The health answer of the agent (`control.agent`) in the text format.
pub fn encode(health: AgentHealth) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(health)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

type Labels = Vec<(&'static str, String)>;

/// One sample's value.
#[derive(Debug, Clone, Copy)]
enum Val {
    Count(u64),
    Level(i64),
    Real(f64),
}

/// Builds the families of one scrape.
#[derive(Debug)]
struct Snapshot(AgentHealth);

/// HELP text of the broker's counters (`BrokerStats`); others get a generic one.
const BROKER_HELP: [(&str, &str); 15] = [
    ("connections", "Connections admitted to the broker socket"),
    (
        "connections_refused",
        "Connections refused (uid, credentials or limits)",
    ),
    (
        "frames_rejected",
        "Connections dropped for an invalid frame",
    ),
    (
        "subscribers_dropped",
        "Remote subscribers disconnected because their outbound queue was full",
    ),
    (
        "published",
        "Events (and other messages) published through the broker",
    ),
    (
        "unstored",
        "Publishes left unacknowledged because a sink did not store them",
    ),
    (
        "publishes_refused",
        "Publishes refused by the authorization rules",
    ),
    (
        "subscriptions_refused",
        "Subscriptions refused by the per-connection limit",
    ),
    ("rpcs_refused", "RPCs refused by the per-connection limit"),
    ("idle_closed", "Connections closed for idling"),
    (
        "calls_unauthorized",
        "Operator calls refused by broker.operators",
    ),
    (
        "connections_evicted",
        "Connections closed at a connection cap to let a new one in",
    ),
    ("requests_refused", "Requests to a topic that takes no RPC"),
    (
        "responses_refused",
        "Responses from a connection the request was not sent to",
    ),
    (
        "takeovers",
        "Collector ids taken over from a stale connection by a fresh credential",
    ),
];

/// A sink counter: its name, how to read it, its help.
type SinkCounter = (&'static str, fn(&SinkCounters) -> u64, &'static str);

const SINK_COUNTERS: [SinkCounter; 5] = [
    (
        "written",
        |c| c.written,
        "Events stored by the sink (jsonl: on disk; nats: PublishAck, new)",
    ),
    (
        "duplicates",
        |c| c.duplicates,
        "Events already stored, skipped by the sink or the server",
    ),
    (
        "invalid",
        |c| c.invalid,
        "Deliveries or events that were not valid (dropped, logged)",
    ),
    (
        "errors",
        |c| c.errors,
        "Failed attempts to store (retried; nothing is confirmed unstored)",
    ),
    (
        "reconnects",
        |c| c.reconnects,
        "Connections the sink re-established",
    ),
];

/// A heartbeat figure taken as it is: metric, how to read it, help.
type BeatGauge = (&'static str, fn(&Summary) -> u64, &'static str);

const BEAT_GAUGES: [BeatGauge; 4] = [
    (
        "procmond_collector_processes",
        |b| b.processes_seen,
        "Live processes in the collector's last snapshot",
    ),
    (
        "procmond_collector_wal_pending_events",
        |b| b.wal_pending,
        "Events in the collector's WAL awaiting acknowledgement",
    ),
    (
        "procmond_collector_wal_pending_bytes",
        |b| b.wal_pending_bytes,
        "Bytes in the collector's WAL awaiting acknowledgement",
    ),
    (
        "procmond_collector_buffer_percent",
        |b| b.buffer_percent,
        "Unacknowledged bytes in flight, percent of buffer_bytes (backpressure from 70, off below 50)",
    ),
];

const STATUSES: [&str; 4] = ["healthy", "degraded", "unhealthy", "unknown"];

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        gauge(
            &mut enc,
            "procmond_build_info",
            "procmond version",
            &[(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                Val::Level(1),
            )],
        )?;
        let phases = [
            ("loading", AgentPhase::Loading),
            ("steady_state", AgentPhase::SteadyState),
        ]
        .map(|(name, p)| {
            (
                vec![("phase", name.to_string())],
                Val::Level(i64::from(p == h.phase)),
            )
        });
        gauge(
            &mut enc,
            "procmond_agent_phase",
            "The agent's phase (1 = current)",
            &phases,
        )?;
        collector_families(&mut enc, &h.collectors)?;
        beat_families(&mut enc, &h.collectors)?;
        sink_families(&mut enc, &h.sinks)?;
        broker_families(&mut enc, &h.broker)
    }
}

fn id(c: &CollectorHealth) -> Labels {
    vec![("collector_id", c.id.clone())]
}

fn level(n: u64) -> Val {
    Val::Level(i64::try_from(n).unwrap_or(i64::MAX))
}

/// What the agent knows of each collector itself.
fn collector_families(
    enc: &mut DescriptorEncoder,
    collectors: &[CollectorHealth],
) -> std::fmt::Result {
    let per = |f: &dyn Fn(&CollectorHealth) -> Val| -> Vec<(Labels, Val)> {
        collectors.iter().map(|c| (id(c), f(c))).collect()
    };
    let up = per(&|c| Val::Level(i64::from(c.pid.is_some() && c.ready)));
    gauge(
        enc,
        "procmond_collector_up",
        "1 while the collector runs and has reported ready",
        &up,
    )?;
    let mut status = Vec::new();
    for c in collectors {
        let current = c.status.as_deref().unwrap_or("unknown");
        for s in STATUSES {
            let mut labels = id(c);
            labels.push(("status", s.to_string()));
            status.push((labels, Val::Level(i64::from(s == current))));
        }
    }
    gauge(
        enc,
        "procmond_collector_status",
        "The collector's last reported health (1 = current); degraded covers backpressure, losses and a faulted WAL",
        &status,
    )?;
    let restarts = per(&|c| Val::Count(c.restarts));
    counter(
        enc,
        "procmond_collector_restarts",
        "Restarts of the collector by the agent",
        &restarts,
    )?;
    let recent = per(&|c| level(c.restarts_last_10min));
    gauge(
        enc,
        "procmond_collector_restarts_recent",
        "Restarts in the last 10 minutes (3 raise an alert)",
        &recent,
    )?;
    let alert = per(&|c| Val::Level(i64::from(c.alert.is_some())));
    gauge(
        enc,
        "procmond_collector_alert",
        "1 while the crash-loop alert stands",
        &alert,
    )?;
    let age = per(&|c| Val::Real(c.last_heartbeat_ms_ago as f64 / 1000.0));
    gauge(
        enc,
        "procmond_collector_heartbeat_age_seconds",
        "Time since the collector's last heartbeat",
        &age,
    )
}

/// From each collector's last heartbeat: nothing before the first one.
fn beat_families(enc: &mut DescriptorEncoder, collectors: &[CollectorHealth]) -> std::fmt::Result {
    let beats: Vec<(&CollectorHealth, &Summary)> = collectors
        .iter()
        .filter_map(|c| Some((c, c.last_heartbeat.as_ref()?)))
        .collect();
    let beat = |f: &dyn Fn(&Summary) -> Val| -> Vec<(Labels, Val)> {
        beats.iter().map(|(c, b)| (id(c), f(b))).collect()
    };
    let mut losses = Vec::new();
    for (c, b) in &beats {
        for (name, n) in &b.losses {
            let mut labels = id(c);
            labels.push(("counter", name.clone()));
            losses.push((labels, Val::Count(*n)));
        }
    }
    counter(
        enc,
        "procmond_collector_events_lost",
        "Events lost, by loss counter (docs/architecture.md, Where every loss counter lives)",
        &losses,
    )?;
    let published = beat(&|b| Val::Count(b.events_published));
    counter(
        enc,
        "procmond_collector_events_published",
        "Events the broker acknowledged to the collector",
        &published,
    )?;
    let unpersisted = beat(&|b| Val::Count(b.events_unpersisted));
    counter(
        enc,
        "procmond_collector_events_unpersisted",
        "Events the agent acknowledged that were published from memory while the WAL could not store them",
        &unpersisted,
    )?;
    by_kind_and_source(enc, &beats)?;
    for (name, read, help) in BEAT_GAUGES {
        gauge(enc, name, help, &beat(&|b| level(read(b))))?;
    }
    let faulted = beat(&|b| Val::Level(i64::from(b.wal_fault.is_some())));
    gauge(
        enc,
        "procmond_collector_wal_faulted",
        "1 while the collector's WAL cannot be written",
        &faulted,
    )?;
    let connected = beat(&|b| Val::Level(i64::from(b.connection == Connection::Connected)));
    gauge(
        enc,
        "procmond_collector_broker_connected",
        "1 while the collector is connected to the broker",
        &connected,
    )
}

/// Events encoded, by kind and by source: every kind and source, zeros too.
fn by_kind_and_source(
    enc: &mut DescriptorEncoder,
    beats: &[(&CollectorHealth, &Summary)],
) -> std::fmt::Result {
    type Pick = fn(&Summary) -> &std::collections::BTreeMap<String, u64>;
    let sets: [(&str, Pick, Vec<&str>); 2] = [
        (
            "kind",
            |b| &b.events_by_kind,
            EventKind::ALL.map(EventKind::as_str).to_vec(),
        ),
        (
            "source",
            |b| &b.events_by_source,
            EventSource::ALL.map(EventSource::as_str).to_vec(),
        ),
    ];
    for (what, pick, all) in sets {
        let mut samples = Vec::new();
        for (c, b) in beats {
            for name in &all {
                let mut labels = id(c);
                labels.push((what, (*name).to_string()));
                let n = pick(b).get(*name).copied().unwrap_or(0);
                samples.push((labels, Val::Count(n)));
            }
        }
        let mut name = String::new();
        write!(name, "procmond_collector_events_by_{what}")?;
        let help = format!("Events the collector encoded, by {what}");
        counter(enc, &name, &help, &samples)?;
    }
    Ok(())
}

fn sink_families(enc: &mut DescriptorEncoder, sinks: &[SinkHealth]) -> std::fmt::Result {
    let labels = |i: usize, s: &SinkHealth| -> Labels {
        vec![
            ("sink", i.to_string()),
            ("type", s.kind.clone()),
            ("target", s.target.clone()),
        ]
    };
    let per = |f: &dyn Fn(&SinkCounters) -> Val| -> Vec<(Labels, Val)> {
        sinks
            .iter()
            .enumerate()
            .map(|(i, s)| (labels(i, s), f(&s.counters)))
            .collect()
    };
    for (key, read, help) in SINK_COUNTERS {
        let samples = per(&|c| Val::Count(read(c)));
        counter(enc, &format!("procmond_sink_{key}"), help, &samples)?;
    }
    gauge(
        enc,
        "procmond_sink_lag_events",
        "Events the sink received and has not stored yet (their publishes wait unacknowledged)",
        &per(&|c| level(c.lag)),
    )?;
    gauge(
        enc,
        "procmond_sink_degraded",
        "1 while the sink's last write or connection failed (it retries with backoff; events wait in the collectors' WALs)",
        &per(&|c| Val::Level(i64::from(c.degraded()))),
    )
}

/// Broker figures that are levels, not counts.
const BROKER_GAUGES: [(&str, &str); 1] = [(
    "queued_bytes",
    "Bytes queued by the broker for its peers right now (capped by broker.limits.max_queued_bytes)",
)];

fn broker_families(
    enc: &mut DescriptorEncoder,
    broker: &std::collections::BTreeMap<String, u64>,
) -> std::fmt::Result {
    for (key, help) in BROKER_GAUGES {
        let samples = [(Vec::new(), level(broker.get(key).copied().unwrap_or(0)))];
        gauge(enc, &format!("procmond_broker_{key}"), help, &samples)?;
    }
    let counts = broker.iter();
    for (key, n) in counts.filter(|(k, _)| !BROKER_GAUGES.iter().any(|(g, _)| g == k)) {
        let help = BROKER_HELP
            .iter()
            .find(|(k, _)| k == key)
            .map_or("A broker counter (ctl health: agent.broker)", |(_, h)| h);
        let samples = [(Vec::new(), Val::Count(*n))];
        counter(enc, &format!("procmond_broker_{key}"), help, &samples)?;
    }
    Ok(())
}

/// One family: HELP and TYPE (a counter when its values are counts), then
/// a sample per label set. A family without samples keeps its HELP and TYPE.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels, Val)],
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = metric.encode_family(labels)?;
        match (kind, *value) {
            (MetricType::Counter, Val::Count(n)) => ConstCounter::new(n).encode(sample)?,
            (_, Val::Count(n)) => {
                ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(sample)?
            }
            (_, Val::Level(n)) => ConstGauge::new(n).encode(sample)?,
            (_, Val::Real(x)) => ConstGauge::new(x).encode(sample)?,
        }
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, Val)],
) -> std::fmt::Result {
    family(enc, name, help, MetricType::Counter, samples)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, Val)],
) -> std::fmt::Result {
    family(enc, name, help, MetricType::Gauge, samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> AgentHealth {
        serde_json::from_value(serde_json::json!({
            "phase": "steady_state",
            "collectors": [
                {"id": "procmond", "pid": 42, "ready": true, "status": "degraded",
                 "restarts": 2, "restarts_last_10min": 1, "alert": null,
                 "last_heartbeat_ms_ago": 1500,
                 "last_heartbeat": {"processes_seen": 90, "events_published": 7,
                    "buffer_percent": 75, "wal_pending": 3, "wal_pending_bytes": 900,
                    "events_unpersisted": 11,
                    "wal_fault": null, "connection": "connected",
                    "losses": {"kernel_lost": 4, "wal_lost": 0},
                    "events_by_kind": {"exec": 5}, "events_by_source": {"ebpf": 5}}},
                {"id": "spare", "pid": null, "ready": false, "status": null,
                 "restarts": 0, "restarts_last_10min": 0, "alert": null,
                 "last_heartbeat_ms_ago": 10, "last_heartbeat": null}
            ],
            "broker": {"connections": 3, "connections_refused": 1, "new_one": 2, "queued_bytes": 4096},
            "sinks": [{"type": "nats", "target": "nats://h:4222 stream S \"x\"",
                       "counters": {"written": 9, "duplicates": 1, "invalid": 0,
                                    "errors": 2, "reconnects": 1, "lag": 6, "status": "degraded"}}]
        }))
        .expect("the agent's health, as the agent writes it")
    }

    #[test]
    fn health_becomes_families_with_help_type_and_labels() {
        let text = encode(health()).expect("encodes");
        let expect = [
            "# TYPE procmond_collector_events_lost_total counter",
            "procmond_collector_events_lost_total{collector_id=\"procmond\",counter=\"kernel_lost\"} 4",
            "procmond_collector_status{collector_id=\"procmond\",status=\"degraded\"} 1",
            "procmond_collector_status{collector_id=\"spare\",status=\"unknown\"} 1",
            "procmond_collector_up{collector_id=\"spare\"} 0",
            "procmond_collector_restarts_total{collector_id=\"procmond\"} 2",
            "procmond_collector_events_by_kind_total{collector_id=\"procmond\",kind=\"exec\"} 5",
            "procmond_collector_events_by_kind_total{collector_id=\"procmond\",kind=\"fork\"} 0",
            "procmond_collector_events_by_source_total{collector_id=\"procmond\",source=\"ebpf\"} 5",
            "procmond_collector_buffer_percent{collector_id=\"procmond\"} 75",
            "procmond_collector_wal_pending_bytes{collector_id=\"procmond\"} 900",
            "procmond_collector_heartbeat_age_seconds{collector_id=\"procmond\"} 1.5",
            "# TYPE procmond_sink_lag_events gauge",
            "procmond_sink_lag_events{sink=\"0\",type=\"nats\",target=\"nats://h:4222 stream S \\\"x\\\"\"} 6",
            "procmond_sink_reconnects_total{sink=\"0\",type=\"nats\",target=\"nats://h:4222 stream S \\\"x\\\"\"} 1",
            "procmond_broker_connections_refused_total 1",
            "# TYPE procmond_broker_queued_bytes gauge",
            "procmond_broker_queued_bytes 4096",
            "procmond_collector_events_unpersisted_total{collector_id=\"procmond\"} 11",
            "procmond_sink_degraded{sink=\"0\",type=\"nats\",target=\"nats://h:4222 stream S \\\"x\\\"\"} 1",
            "# HELP procmond_broker_new_one_total A broker counter",
            "procmond_agent_phase{phase=\"steady_state\"} 1",
        ];
        for line in expect {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(
            !text.contains("procmond_collector_wal_pending_events{collector_id=\"spare\"}"),
            "no heartbeat, no heartbeat figures:\n{text}"
        );
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = l.split(' ').nth(2).unwrap_or_default();
            assert!(text.contains(&format!("# HELP {name} ")), "HELP for {name}");
        }
    }
}
