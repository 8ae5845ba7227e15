//! `procmond run`: the collector in service mode, spawned by the agent.
//!
//! Connects to the broker named by `PROCMOND_BROKER_SOCKET` (or `DAEMONEYE_BROKER_SOCKET`) (3 attempts,
//! then exit non-zero), keeps its WAL in `wal_dir`, and publishes
//! `events.process.*` until SIGTERM/SIGINT, then drains and exits 0.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use procmond::collector::{self, CollectorOptions};
use procmond::config::ProcmondConfig;
use procmond::delivery::connector::connect_at_startup;
use procmond::metrics::Metrics;
use tokio_util::sync::CancellationToken;

use procmond::agent::launcher::{
    BROKER_SOCKET_ENV, CONTRACT_BROKER_SOCKET_ENV, broker_socket_from_env,
};

pub fn run(config_path: Option<&Path>) -> Result<()> {
    let config = match config_path {
        Some(path) => ProcmondConfig::load(path)?,
        None => ProcmondConfig::default(),
    };
    let socket = broker_socket_from_env().with_context(|| {
        format!(
            "neither {BROKER_SOCKET_ENV} nor {CONTRACT_BROKER_SOCKET_ENV} is set: `procmond run` is spawned by the agent"
        )
    })?;
    super::restrict_umask();
    super::log_privileges();
    super::runtime()?.block_on(serve(config, socket))
}

async fn serve(config: ProcmondConfig, socket: PathBuf) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    super::spawn_stop_triggers(shutdown.clone(), None)?;
    let connection = connect_at_startup(&socket, 3).await?;
    tracing::info!(collector_id = %config.collector_id, socket = %socket.display(), "connected to the broker");
    let options = CollectorOptions {
        wal_dir: config.wal_dir.clone(),
        config,
        socket,
        drain_timeout: Duration::from_secs(10),
        service: true,
        platform: procmond::platform::host(),
    };
    let active = collector::run(options, connection, metrics.clone(), shutdown).await?;
    tracing::info!(stats = %metrics.to_json(), source = active.source.as_str(), "collector stopped");
    Ok(())
}
