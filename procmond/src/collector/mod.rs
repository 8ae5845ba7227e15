//! The collector runtime: sensor → pipeline → WAL → connector → broker, and
//! in service mode the control plane around it (RPCs, lifecycle,
//! registration, heartbeats).
//!
//! `procmond run` (spawned by the agent) and `procmond watch` (standalone,
//! embedded broker) both run this; `watch` leaves out the control plane and
//! publishes from the start instead of waiting for `begin_monitoring`.

pub mod control;
pub mod heartbeat;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::bus::client::{BusReader, BusWriter};
use crate::config::ProcmondConfig;
use crate::delivery::connector::{Connector, ConnectorConfig, ConnectorError};
use crate::delivery::wal::{Wal, WalError};
use crate::metrics::Metrics;
use crate::sensor::mailbox::{Command, MAILBOX_CAPACITY, SensorStatus};
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
    /// Service mode: register, heartbeat, serve RPCs, wait for begin_monitoring.
    pub service: bool,
    /// The operating system (`platform::host()`, or a test's fake).
    pub platform: Arc<dyn crate::platform::Platform>,
}

/// Runs until `shutdown` (or a GracefulShutdown RPC), then drains: the
/// sensor stops, the connector publishes what is left and waits for the
/// acknowledgements, the collector deregisters.
pub async fn run(
    options: CollectorOptions,
    connection: (BusWriter, BusReader),
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<ActiveSource, CollectorError> {
    let config = options.config.clone();
    let wal = Arc::new(Wal::open(
        &options.wal_dir,
        config.wal_max_bytes,
        metrics.clone(),
    )?);
    if wal.pending_count() > 0 {
        tracing::info!(
            pending = wal.pending_count(),
            "replaying unacknowledged events from the WAL"
        );
    }
    let aux = CancellationToken::new();
    let (mailbox_tx, mailbox_rx) = mpsc::channel::<Command>(MAILBOX_CAPACITY);
    let mut initial = SensorStatus::new(config.clone());
    initial.monitoring = !options.service;
    let (status_tx, status_rx) = watch::channel(initial);
    let (gate_tx, gate_rx) = watch::channel(!options.service);
    let (greeting_tx, greeting_rx) = watch::channel(Vec::new());
    let (backpressure_tx, backpressure_rx) = watch::channel(false);
    let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
    let (inbox_tx, inbox_rx) = mpsc::channel(256);

    tokio::spawn(forward_backpressure(
        backpressure_rx,
        mailbox_tx.clone(),
        aux.clone(),
    ));
    tokio::spawn(follow_monitoring(status_rx.clone(), gate_tx, aux.clone()));
    if options.service {
        let dispatcher = control::dispatch(
            inbox_rx,
            control::Plane {
                mailbox: mailbox_tx.clone(),
                outbox: outbox_tx.clone(),
                status: status_rx.clone(),
                metrics: metrics.clone(),
            },
        );
        let cancel = aux.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = dispatcher => {}
                _ = cancel.cancelled() => {}
            }
        });
        tokio::spawn(heartbeat::run(
            config.collector_id.clone(),
            status_rx.clone(),
            metrics.clone(),
            outbox_tx.clone(),
            aux.clone(),
        ));
        tokio::spawn(register_when_attached(
            config.collector_id.clone(),
            status_rx.clone(),
            greeting_tx,
            aux.clone(),
        ));
    }
    drop(mailbox_tx);

    let (tx, rx) = mpsc::channel(16);
    let connector = Connector {
        wal: wal.clone(),
        config: ConnectorConfig {
            socket: options.socket.clone(),
            buffer_bytes: config.buffer_bytes,
            drain_timeout: options.drain_timeout,
        },
        metrics: metrics.clone(),
        backpressure: backpressure_tx,
        control: options.service.then_some(inbox_tx),
        outbox: Some(outbox_rx),
        greeting: greeting_rx,
        gate: gate_rx,
    };
    // A connector that fails (a WAL only a restart can reopen) stops the
    // sensor too: the process exits with the error instead of collecting
    // into a closed channel, and the agent restarts it.
    let shutdown = shutdown.child_token();
    let connector = tokio::spawn({
        let stop = shutdown.clone();
        async move {
            let result = connector.run(rx, Some(connection)).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "delivery failed: stopping the collector");
                stop.cancel();
            }
            result
        }
    });
    let io = SensorIo {
        out: tx,
        first_seq: wal.next_seq(),
        epoch: wal.epoch(),
        mailbox: mailbox_rx,
        status: status_tx,
        platform: options.platform.clone(),
    };
    let sensed = sensor::run(config.clone(), io, metrics, shutdown).await;
    aux.cancel();
    if options.service {
        let _ = outbox_tx.send(control::deregistration(&config.collector_id));
    }
    drop(outbox_tx);
    let drained = connector
        .await
        .map_err(|e| CollectorError::Task(e.to_string()))?;
    let active = sensed?;
    drained?;
    Ok(active)
}

/// Backpressure changes become `AdjustInterval` commands (never dropped).
async fn forward_backpressure(
    mut rx: watch::Receiver<bool>,
    mailbox: mpsc::Sender<Command>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let stretched = *rx.borrow_and_update();
        if mailbox
            .send(Command::AdjustInterval { stretched })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Opens the connector's gate when the sensor starts monitoring.
async fn follow_monitoring(
    mut status: watch::Receiver<SensorStatus>,
    gate: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    loop {
        let monitoring = status.borrow_and_update().monitoring;
        gate.send_if_modified(|g| std::mem::replace(g, monitoring) != monitoring);
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}

/// Registers (and reports ready) once the source is attached.
async fn register_when_attached(
    collector_id: String,
    mut status: watch::Receiver<SensorStatus>,
    greeting: watch::Sender<Vec<crate::bus::protocol::Envelope>>,
    cancel: CancellationToken,
) {
    let attached = tokio::select! {
        _ = cancel.cancelled() => return,
        s = status.wait_for(|s| s.source.is_some()) => match s { Ok(s) => s.clone(), Err(_) => return },
    };
    let source = attached.source.map_or("unknown", |s| s.as_str());
    tracing::info!(
        source,
        degraded = attached.degraded_reason.is_some(),
        "source attached: registering and reporting ready"
    );
    greeting.send_replace(control::greeting(
        &collector_id,
        source,
        attached.degraded_reason,
    ));
}

#[cfg(all(test, unix))]
#[path = "collector_tests.rs"]
mod collector_tests;
