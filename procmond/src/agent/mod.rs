//! The agent: runs the broker, supervises collectors, feeds sinks.
//!
//! Start-up order: broker socket and sinks first (so the first event has
//! somewhere to go), then the enabled collectors in the order agent.yaml
//! lists them. Shutdown is the reverse: collectors stop (drain, publish,
//! exit), then the broker closes and the sinks flush.

pub mod sink;
pub mod supervisor;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::bus::broker::Broker;
use crate::bus::protocol::TOPIC_EVENTS;
use crate::config::AgentConfig;
use crate::config::agent::SinkConfig;

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
}

/// Runs the agent until `shutdown`.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let socket = config.broker.socket.clone();
    let broker = Broker::new(config.broker.allowed_uids.clone());
    let listener = Broker::bind(&socket).map_err(|source| AgentError::Bind {
        path: socket.display().to_string(),
        source,
    })?;
    tracing::info!(socket = %socket.display(), allowed_uids = ?config.broker.allowed_uids, "broker listening");

    let mut sinks = Vec::new();
    for sink in &config.sinks {
        let SinkConfig::Jsonl { path } = sink;
        let rx = broker.subscribe_local(TOPIC_EVENTS, 4096)?;
        let path = path.clone();
        sinks.push(tokio::spawn(async move {
            match sink::run_jsonl(&path, rx).await {
                Ok(stats) => tracing::info!(path = %path.display(), written = stats.written, duplicates = stats.duplicates, invalid = stats.invalid, "sink closed"),
                Err(e) => tracing::error!(path = %path.display(), error = %e, "sink failed: events to it are lost from here on"),
            }
        }));
    }

    let broker_stop = CancellationToken::new();
    let serving = tokio::spawn({
        let broker = broker.clone();
        let stop = broker_stop.clone();
        async move { broker.serve(listener, stop).await }
    });

    let runtime_dir = socket
        .parent()
        .map_or_else(|| PathBuf::from("/run/procmond"), |p| p.to_path_buf());
    let grace = std::time::Duration::from_secs(config.heartbeat.graceful_shutdown_timeout_secs);
    let mut supervisors = Vec::new();
    for collector in config.collectors.iter().filter(|c| c.enabled) {
        supervisors.push(tokio::spawn(supervisor::supervise(
            collector.clone(),
            socket.clone(),
            runtime_dir.clone(),
            grace,
            shutdown.clone(),
        )));
    }

    shutdown.cancelled().await;
    for s in supervisors {
        let _ = s.await;
    }
    broker_stop.cancel();
    let _ = serving.await;
    broker.close_local();
    for s in sinks {
        let _ = s.await;
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
