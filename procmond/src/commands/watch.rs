//! `procmond watch`: the collector with an embedded broker, events on stdout.
//!
//! The same path as service mode — sensor, pipeline, WAL, connector, Unix
//! socket, broker — in one process: the WAL and socket live in a private
//! temporary directory removed at exit, and a local subscriber renders every
//! `events.process.*` delivery to stdout. Exits 0 on SIGINT, SIGTERM or after
//! `--duration`, once every event has been drained from the kernel, published
//! and written; the closing stats line on stderr carries every loss counter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use procmond::bus::broker::Broker;
use procmond::bus::protocol::TOPIC_EVENTS;
use procmond::collector::{self, CollectorOptions};
use procmond::config::ProcmondConfig;
use procmond::delivery::connector::connect_at_startup;
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
    config
        .validate()
        .context("invalid --source or --interval")?;
    super::restrict_umask();
    super::log_privileges();
    let runtime = super::runtime()?;
    let dir = private_temp_dir()?;
    let result = runtime.block_on(watch(config, args.format, args.duration, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn private_temp_dir() -> Result<PathBuf> {
    let nanos = procmond::clock::now_unix_ns();
    let dir = std::env::temp_dir().join(format!("procmond-watch-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(windows)]
    procmond::sys::windows::make_private(&dir)?;
    Ok(dir)
}

async fn watch(
    config: ProcmondConfig,
    format: Format,
    duration: Option<u64>,
    dir: &std::path::Path,
) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    super::spawn_stop_triggers(shutdown.clone(), duration)?;

    #[cfg(unix)]
    let socket = dir.join("broker.sock");
    // Windows: a pipe name of its own (pipes live in their own namespace).
    #[cfg(windows)]
    let socket = PathBuf::from(format!(
        "{}{}",
        procmond::bus::pipe::PIPE_PREFIX,
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let broker = Broker::new(Vec::new());
    let listener = Broker::bind(&socket).context("binding the embedded broker")?;
    let events = broker.subscribe_batches(TOPIC_EVENTS, 4096)?;
    let broker_stop = CancellationToken::new();
    let serving = tokio::spawn({
        let broker = broker.clone();
        let stop = broker_stop.clone();
        async move { broker.serve(listener, stop).await }
    });
    let writer = tokio::spawn(output::write_events(
        events,
        tokio::io::stdout(),
        format,
        metrics.clone(),
    ));

    let connection = connect_at_startup(&socket, 3).await?;
    let options = CollectorOptions {
        config,
        wal_dir: dir.join("wal"),
        socket,
        drain_timeout: Duration::from_secs(30),
        service: false,
        platform: procmond::platform::host(),
    };
    let result = collector::run(options, connection, metrics.clone(), shutdown).await;
    // Everything acknowledged has been delivered to the local subscriber:
    // close the broker, then let the writer drain and flush.
    broker_stop.cancel();
    let _ = serving.await;
    broker.close_local();
    drop(broker);
    writer.await.context("output task failed")?;
    tracing::info!(stats = %metrics.to_json(), "procmond watch finished");
    let active = result?;
    if let Some(reason) = active.degraded_reason {
        tracing::warn!(%reason, source = active.source.as_str(), "ran degraded");
    }
    Ok(())
}
