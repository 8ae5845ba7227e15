//! The agent: broker, sinks, and the collectors' lifecycle.
//!
//! Loading → Ready → SteadyState:
//! * Loading: the launcher (`launcher.rs`) starts, the broker listens, sinks
//!   subscribe, collectors are spawned in agent.yaml order and must register
//!   and report ready within their startup timeout — otherwise the agent
//!   stops them and exits non-zero naming the laggards.
//! * Ready: privileges are dropped to `run_as` (groups, gid, uid; checked
//!   irreversible). Sinks, socket and launcher were set up before.
//! * SteadyState: `begin_monitoring` is broadcast (and re-sent to any
//!   collector that reports ready later, e.g. after a restart), heartbeats
//!   are supervised (`supervisor` keeps the state, `escalation` acts).

mod agent_loop;
mod escalation;
pub mod launcher;
pub mod metrics_http;
#[cfg(not(target_vendor = "apple"))]
pub mod nats;
#[cfg(unix)]
pub use crate::platform::privdrop;
pub mod prometheus;
#[cfg(windows)]
pub mod service;
pub mod sink;
#[cfg(test)]
mod supervision_tests;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bus::broker::Broker;
use crate::bus::protocol::{self, Envelope, TOPIC_EVENTS};
use crate::bus::rpc::{Heartbeat, Lifecycle, Registration, to_payload};
use crate::config::AgentConfig;
use crate::config::agent::SinkConfig;
use crate::health::{AgentHealth, CollectorHealth, SinkHealth};
use launcher::Report;
use supervisor::Tracked;

pub use agent_loop::run;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("binding the broker socket {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bus: {0}")]
    Bus(#[from] crate::bus::protocol::ProtocolError),
    #[error("starting the launcher: {0}")]
    Launcher(#[source] std::io::Error),
    #[error("collectors not ready within their startup timeout: {0}")]
    StartupTimeout(String),
    #[cfg(unix)]
    #[error(transparent)]
    PrivDrop(#[from] privdrop::PrivDropError),
    #[cfg(not(target_vendor = "apple"))]
    #[error("sinks[{index}]: {source}")]
    Sink {
        index: usize,
        #[source]
        source: nats::NatsSinkError,
    },
    #[error("sinks[{index}]: {source}")]
    Jsonl {
        index: usize,
        #[source]
        source: sink::JsonlError,
    },
    #[error("metrics.listen: cannot listen on {addr}: {source}")]
    MetricsBind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Loading, then SteadyState (`health::AgentPhase`).
type Phase = crate::health::AgentPhase;

/// A sink the agent started: what it is, its counters, its task.
struct RunningSink {
    config: SinkConfig,
    stats: Arc<sink::SinkStats>,
    task: tokio::task::JoinHandle<()>,
}

type Sinks = Vec<RunningSink>;

fn start_sinks(config: &AgentConfig, broker: &Broker) -> Result<Sinks, AgentError> {
    let mut sinks = Vec::new();
    for (index, sink) in config.sinks.iter().enumerate() {
        #[cfg(target_vendor = "apple")]
        let _ = index;
        let stats = Arc::new(sink::SinkStats::default());
        let s = stats.clone();
        let task = match sink {
            // Refused by validation where the sink is not built (Apple).
            #[cfg(target_vendor = "apple")]
            SinkConfig::Nats(_) => continue,
            #[cfg(not(target_vendor = "apple"))]
            SinkConfig::Nats(n) => {
                // Credentials and TLS files are read now, before the privilege drop.
                let prepared =
                    nats::prepare(n).map_err(|source| AgentError::Sink { index, source })?;
                let rx = broker.subscribe_durable(TOPIC_EVENTS, 4096)?;
                let target = sink.target();
                tokio::spawn(async move {
                    tracing::info!(sink = %target, subjects = %prepared.subject("<kind>"), "nats sink starting");
                    match nats::run(prepared, rx, s.clone()).await {
                        Ok(()) => {
                            tracing::info!(sink = %target, stats = %s.to_json(), "sink closed")
                        }
                        Err(e) => {
                            tracing::error!(sink = %target, error = %e, "sink failed: events to it are lost from here on")
                        }
                    }
                })
            }
            SinkConfig::Jsonl { path, .. } => {
                // Opened now, as root before the privilege drop, and never again.
                let file = sink::JsonlFile::open(path)
                    .map_err(|source| AgentError::Jsonl { index, source })?;
                let rx = broker.subscribe_durable(TOPIC_EVENTS, 4096)?;
                let (p, format) = (path.clone(), sink.format());
                tokio::spawn(async move {
                    sink::run_jsonl_file(file, format, rx, &s).await;
                    tracing::info!(path = %p.display(), stats = %s.to_json(), "sink closed")
                })
            }
        };
        sinks.push(RunningSink {
            config: sink.clone(),
            stats,
            task,
        });
    }
    Ok(sinks)
}

/// Binds `metrics.listen` (before the privilege drop) and serves `/metrics`.
async fn start_metrics(
    m: &crate::config::agent::MetricsConfig,
    broker: &Broker,
    stop: &CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let bind_error = |source| AgentError::MetricsBind {
        addr: m.listen.clone(),
        source,
    };
    let addr = m.listen_addr().map_err(|e| {
        bind_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            e.to_string(),
        ))
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    tracing::info!(listen = %addr, "metrics listening: GET /metrics (Prometheus text format)");
    let (broker, stop) = (broker.clone(), stop.clone());
    Ok(tokio::spawn(async move {
        metrics_http::serve(listener, broker, stop).await;
    }))
}

/// The agent's own health: phase, collectors, broker and sink counters.
fn agent_health(
    phase: Phase,
    tracked: &mut [Tracked],
    broker: &Broker,
    sinks: &Sinks,
) -> AgentHealth {
    let now = Instant::now();
    let collectors = tracked
        .iter_mut()
        .map(|t| CollectorHealth {
            id: t.id().to_string(),
            pid: t.pid,
            registered: t.registered,
            ready: t.ready,
            deregistered: t.deregistered,
            status: t.last_status.clone(),
            last_heartbeat_ms_ago: now.duration_since(t.last_heartbeat).as_millis() as u64,
            escalation: t.escalation.map(|e| format!("{e:?}")),
            restarts: t.restarts_total,
            restarts_last_10min: t.recent_restarts(now) as u64,
            alert: t
                .alerting(now)
                .then(|| "restarted 3 or more times in 10 minutes".to_string()),
            next_restart_in_ms: t
                .restart_at
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
            last_heartbeat: t.last_metrics.clone(),
        })
        .collect();
    let sinks = sinks
        .iter()
        .map(|s| SinkHealth {
            kind: s.config.kind().to_string(),
            target: s.config.target(),
            format: s.config.format().as_str().to_string(),
            path: match &s.config {
                SinkConfig::Jsonl { path, .. } => Some(path.display().to_string()),
                _ => None,
            },
            counters: s.stats.counters(),
        })
        .collect();
    AgentHealth {
        phase,
        collectors,
        broker: broker.stats_map(),
        sinks,
        #[cfg(unix)]
        uid: Some(nix::unistd::geteuid().as_raw()),
        #[cfg(windows)]
        sid: crate::sys::windows::own_user_sid().ok(),
        ..AgentHealth::default()
    }
}

fn find<'a>(tracked: &'a mut [Tracked], id: &str) -> Option<&'a mut Tracked> {
    tracked.iter_mut().find(|t| t.config.id == id)
}

fn on_report(tracked: &mut [Tracked], report: Report) {
    match report {
        Report::Started { id, pid } => {
            tracing::info!(collector = %id, pid, "collector started");
            if let Some(t) = find(tracked, &id) {
                t.started(pid);
            }
        }
        Report::Exited {
            id,
            pid,
            status,
            success,
        } => {
            let Some(t) = find(tracked, &id) else { return };
            if t.deregistered {
                tracing::info!(collector = %id, pid, %status, "collector exited after deregistering");
            } else if success {
                tracing::warn!(collector = %id, pid, %status, "collector exited");
            } else {
                tracing::error!(collector = %id, pid, %status, "collector exited");
            }
            if !t.exited(Instant::now()) && !t.deregistered {
                tracing::warn!(collector = %id, "auto_restart is off: not restarting");
            }
        }
        Report::Failed { id, message } => {
            tracing::error!(collector = %id, %message, "launcher could not start collector");
            if let Some(t) = find(tracked, &id) {
                // Retried like a crash: with backoff, and alerting.
                t.exited(Instant::now());
            }
        }
    }
}

/// Returns the id of a collector that just reported ready.
fn on_registration(tracked: &mut [Tracked], env: &Envelope) -> Option<String> {
    let msg: Registration = match serde_json::from_slice(&env.payload) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "invalid registration message ignored");
            return None;
        }
    };
    match msg {
        Registration::Register {
            collector_id,
            pid,
            source,
            degraded_reason,
            version,
            ..
        } => {
            // Peer-supplied strings are logged escaped (`?`): a newline in
            // them cannot forge a log line.
            tracing::info!(collector = %collector_id, pid, ?source, ?degraded_reason, ?version, "collector registered");
            if let Some(t) = find(tracked, &collector_id) {
                t.registered = true;
            }
            None
        }
        Registration::Ready { collector_id } => {
            let t = find(tracked, &collector_id)?;
            t.ready = true;
            t.last_heartbeat = Instant::now();
            tracing::info!(collector = %collector_id, "collector ready");
            Some(collector_id)
        }
        Registration::Deregister { collector_id } => {
            let t = find(tracked, &collector_id)?;
            if t.escalation.is_some() {
                // It is leaving because we asked during an escalation: it
                // still comes back if auto_restart says so.
                tracing::warn!(collector = %collector_id, "collector deregistered during an escalation");
            } else {
                tracing::info!(collector = %collector_id, "collector deregistered");
                t.deregistered = true;
            }
            None
        }
    }
}

/// Applies a heartbeat to the collector its topic names: the broker let
/// only the connection holding that id publish there, so the topic, not
/// the payload, says whose it is; a payload naming another is ignored.
fn on_heartbeat(tracked: &mut [Tracked], env: &Envelope, ignored: &mut u64) {
    let id = env.topic.strip_prefix("control.health.heartbeat.");
    let beat = serde_json::from_slice::<Heartbeat>(&env.payload);
    match (id, beat) {
        (Some(id), Ok(beat)) if beat.collector_id == id => {
            if let Some(t) = find(tracked, id) {
                t.heartbeat(&beat.status, beat.metrics);
            }
        }
        (id, beat) => {
            *ignored += 1;
            if crate::bus::broker::worth_logging(*ignored) {
                let why = beat.err().map(|e| e.to_string());
                tracing::warn!(topic = ?id, error = ?why, ignored_so_far = *ignored, "heartbeat ignored: invalid, or naming another collector than its topic");
            }
        }
    }
}

fn laggards(
    tracked: &[Tracked],
    config: &AgentConfig,
    started: Instant,
    now: Instant,
) -> Option<String> {
    let late: Vec<&str> = tracked
        .iter()
        .filter(|t| !t.ready)
        .filter(|t| {
            let limit = config
                .startup_timeout_secs
                .min(t.config.startup_timeout_secs);
            now.duration_since(started) >= Duration::from_secs(limit)
        })
        .map(|t| t.id())
        .collect();
    (!late.is_empty()).then(|| late.join(", "))
}

async fn become_steady(
    config: &AgentConfig,
    broker: &Broker,
    tracked: &[Tracked],
) -> Result<(), AgentError> {
    tracing::info!(
        collectors = tracked.len(),
        "ready: all collectors reported ready"
    );
    #[cfg(not(unix))]
    let _ = config; // run_as is refused on Windows by validation
    #[cfg(unix)]
    if let Some(user) = &config.run_as {
        let dropped = privdrop::drop_to(user)?;
        tracing::info!(user = %user, uid = dropped.uid, gid = dropped.gid, "privileges dropped (irreversibly)");
    }
    tracing::info!("steady state: broadcasting begin_monitoring");
    begin_monitoring(broker).await;
    Ok(())
}

async fn begin_monitoring(broker: &Broker) {
    if let Err(e) = broker
        .publish_local(
            protocol::TOPIC_LIFECYCLE,
            to_payload(&Lifecycle::BeginMonitoring),
        )
        .await
    {
        tracing::error!(error = %e, "could not broadcast begin_monitoring");
    }
}
