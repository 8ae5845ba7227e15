//! `procmond watch`: the sensor with stdout as its sink.
//!
//! Exits 0 on SIGINT, SIGTERM or after `--duration`, once every event has
//! been drained from the kernel and written; the closing stats line on
//! stderr carries every loss counter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use procmond::config::ProcmondConfig;
use procmond::metrics::Metrics;
use procmond::output::{self, Format};
use procmond::sources::SourceChoice;
use tokio_util::sync::CancellationToken;

pub struct WatchArgs {
    pub source: Option<SourceChoice>,
    pub format: Format,
    pub duration: Option<u64>,
    pub interval: Option<u64>,
    pub config: Option<PathBuf>,
}

pub fn run(args: WatchArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => ProcmondConfig::load(path)?,
        None => ProcmondConfig::default(),
    };
    if let Some(source) = args.source {
        config.source = source;
    }
    if let Some(interval) = args.interval {
        config.collection_interval_secs = interval;
    }
    config.validate().context("invalid --interval")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(watch(config, args.format, args.duration))
}

async fn watch(config: ProcmondConfig, format: Format, duration: Option<u64>) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    spawn_stop_triggers(shutdown.clone(), duration)?;

    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let writer = tokio::spawn(output::write_events(
        rx,
        tokio::io::stdout(),
        format,
        metrics.clone(),
    ));
    let result = procmond::sensor::run(config, tx, metrics.clone(), shutdown).await;
    // The sensor dropped its sender: the writer drains and flushes, then ends.
    writer.await.context("output task failed")?;
    tracing::info!(stats = %metrics.to_json(), "procmond watch finished");
    let active = result?;
    if let Some(reason) = active.degraded_reason {
        tracing::warn!(%reason, "ran degraded on polling");
    }
    Ok(())
}

fn spawn_stop_triggers(shutdown: CancellationToken, duration: Option<u64>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let limit = async {
            match duration {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining and stopping"),
            _ = int.recv() => tracing::info!("SIGINT: draining and stopping"),
            _ = limit => tracing::info!("--duration reached: draining and stopping"),
        }
        shutdown.cancel();
    });
    Ok(())
}
