//! The collector runtime: sensor → pipeline → WAL → connector → broker.
//!
//! `procmond run` (service mode, spawned by the agent) and `procmond watch`
//! (standalone, with an embedded broker) both run exactly this; they differ
//! only in where the broker is and what else listens to it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::bus::client::{BusReader, BusWriter};
use crate::bus::protocol::Envelope;
use crate::config::ProcmondConfig;
use crate::metrics::Metrics;
use crate::pipeline::connector::{Connector, ConnectorConfig, ConnectorError};
use crate::pipeline::wal::{Wal, WalError};
use crate::sensor::{self, ActiveSource, SensorError, SensorIo};

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Sensor(#[from] SensorError),
    #[error("the connector task failed: {0}")]
    Task(String),
}

/// Where the collector keeps its WAL and finds its broker.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    pub config: ProcmondConfig,
    pub wal_dir: PathBuf,
    pub socket: PathBuf,
    pub drain_timeout: Duration,
}

/// Runs until `shutdown`, then drains: the sensor stops, the connector
/// publishes what is left and waits for the acknowledgements.
pub async fn run(
    options: CollectorOptions,
    connection: (BusWriter, BusReader),
    control: Option<mpsc::Sender<Envelope>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<ActiveSource, CollectorError> {
    let wal = Arc::new(Wal::open(
        &options.wal_dir,
        options.config.wal_max_bytes,
        metrics.clone(),
    )?);
    if wal.pending_count() > 0 {
        tracing::info!(
            pending = wal.pending_count(),
            "replaying unacknowledged events from the WAL"
        );
    }
    let (backpressure_tx, backpressure_rx) = watch::channel(false);
    let (tx, rx) = mpsc::channel(4096);
    let connector = Connector {
        wal: wal.clone(),
        config: ConnectorConfig {
            socket: options.socket.clone(),
            buffer_bytes: options.config.buffer_bytes,
            drain_timeout: options.drain_timeout,
        },
        metrics: metrics.clone(),
        backpressure: backpressure_tx,
        control,
    };
    let connector = tokio::spawn(connector.run(rx, Some(connection)));
    let io = SensorIo {
        out: tx,
        first_seq: wal.next_seq(),
        backpressure: backpressure_rx,
    };
    let sensed = sensor::run(options.config, io, metrics, shutdown).await;
    let drained = connector
        .await
        .map_err(|e| CollectorError::Task(e.to_string()))?;
    let active = sensed?;
    drained?;
    Ok(active)
}
