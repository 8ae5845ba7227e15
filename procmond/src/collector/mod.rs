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
    let wal = open_wal(&options, &metrics)?;
    let aux = CancellationToken::new();
    let (mailbox_tx, mailbox_rx) = mpsc::channel::<Command>(MAILBOX_CAPACITY);
    let mut initial = SensorStatus::new(config.clone());
    initial.monitoring = !options.service;
    let (status_tx, status_rx) = watch::channel(initial);
    let (gate_tx, gate_rx) = watch::channel(!options.service);
    let (backpressure_tx, backpressure_rx) = watch::channel(false);
    let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
    tokio::spawn(forward_backpressure(
        backpressure_rx,
        mailbox_tx.clone(),
        aux.clone(),
    ));
    tokio::spawn(follow_monitoring(status_rx.clone(), gate_tx, aux.clone()));
    let plane = control::Plane {
        mailbox: mailbox_tx,
        outbox: outbox_tx.clone(),
        status: status_rx,
        metrics: metrics.clone(),
    };
    // Without a control plane the greeting stays empty (its sender lives
    // as long as the collector, so the connector never sees it close).
    let (greeting_tx, greeting) = watch::channel(Vec::new());
    let (control, _idle_greeting) = if options.service {
        (
            spawn_control_plane(&config.collector_id, plane, greeting_tx, &aux),
            None,
        )
    } else {
        drop(plane);
        (None, Some(greeting_tx))
    };
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
        control,
        outbox: Some(outbox_rx),
        greeting,
        gate: gate_rx,
    };
    let shutdown = shutdown.child_token();
    let connector = spawn_connector(connector, rx, connection, shutdown.clone());
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

/// Opens the WAL; what it still holds is replayed first.
fn open_wal(options: &CollectorOptions, metrics: &Arc<Metrics>) -> Result<Arc<Wal>, WalError> {
    let wal = Wal::open(
        &options.wal_dir,
        options.config.wal_max_bytes,
        metrics.clone(),
    )?;
    if wal.pending_count() > 0 {
        tracing::info!(
            pending = wal.pending_count(),
            "replaying unacknowledged events from the WAL"
        );
    }
    Ok(Arc::new(wal))
}

/// Service mode: the RPC dispatcher, heartbeats and the registration sent
/// once the source is attached (into `greeting`, which the connector sends
/// on every connect). Returns the dispatcher's inbox (the connector feeds
/// it).
fn spawn_control_plane(
    collector_id: &str,
    plane: control::Plane,
    greeting: watch::Sender<Vec<crate::bus::protocol::Envelope>>,
    aux: &CancellationToken,
) -> Option<mpsc::Sender<crate::bus::protocol::Envelope>> {
    let (inbox_tx, inbox_rx) = mpsc::channel(256);
    let (status, metrics, outbox) = (
        plane.status.clone(),
        plane.metrics.clone(),
        plane.outbox.clone(),
    );
    let dispatcher = control::dispatch(inbox_rx, plane);
    let cancel = aux.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = dispatcher => {}
            _ = cancel.cancelled() => {}
        }
    });
    let id = collector_id.to_string();
    tokio::spawn(heartbeat::run(
        id.clone(),
        status.clone(),
        metrics,
        outbox,
        aux.clone(),
    ));
    tokio::spawn(register_when_attached(id, status, greeting, aux.clone()));
    Some(inbox_tx)
}

/// A connector that fails (a WAL only a restart can reopen) stops the
/// sensor too: the process exits with the error instead of collecting into
/// a closed channel, and the agent restarts it.
fn spawn_connector(
    connector: Connector,
    rx: mpsc::Receiver<crate::model::batch::Batch>,
    connection: (BusWriter, BusReader),
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), ConnectorError>> {
    tokio::spawn(async move {
        let result = connector.run(rx, Some(connection)).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "delivery failed: stopping the collector");
            stop.cancel();
        }
        result
    })
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
