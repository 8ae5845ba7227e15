//! The sensor: one source, the inventory, reconciliation and the pipeline,
//! run until shutdown. `procmond watch` runs it with stdout as the output;
//! the collector service mode runs the same thing with the bus connector.
//!
//! Order matters at start: the kernel source attaches first, then the
//! inventory is taken, so a process is either in the inventory or in the
//! stream (or both) — never in neither.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ProcmondConfig;
use crate::metrics::Metrics;
use crate::model::{EventKind, EventSource, ProcessEvent};
use crate::pipeline::{Encoded, Pipeline};
use crate::sources::SourceChoice;
use crate::sources::poll::FallbackProcessCollector;
use crate::sources::snapshot::{self, Snapshot, SnapshotOptions};

/// Why the sensor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("eBPF source required (--source ebpf) but it cannot start: {0}")]
    KernelSourceRequired(String),
    #[error("reading the process table failed: {0}")]
    Snapshot(#[source] std::io::Error),
    #[error("the kernel event reader stopped unexpectedly")]
    ReaderGone,
    #[error("could not start the kernel event reader: {0}")]
    Reader(#[source] std::io::Error),
}

/// Which source ended up running, and why a better one did not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActiveSource {
    pub source: EventSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_reason: Option<String>,
}

/// How the sensor is wired to the rest of the process.
#[derive(Debug)]
pub struct SensorIo {
    /// Encoded events go here (the connector).
    pub out: mpsc::Sender<Encoded>,
    /// The first sequence number to use (the WAL's next).
    pub first_seq: u64,
    /// `true` while downstream asks for less: the interval is stretched × 1.5.
    pub backpressure: watch::Receiver<bool>,
}

/// Runs the sensor until `shutdown`.
pub async fn run(
    config: ProcmondConfig,
    io: SensorIo,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<ActiveSource, SensorError> {
    let base = Duration::from_secs(config.collection_interval_secs);
    let mut sensor = Sensor {
        pipeline: Pipeline::new(&config, io.first_seq, metrics.clone()),
        options: SnapshotOptions {
            cwd: config.enhanced_metadata,
        },
        base_interval: base,
        interval: base,
        backpressure: io.backpressure,
        out: io.out,
        metrics,
        shutdown,
    };
    let degraded_reason = match config.source {
        SourceChoice::Poll => None,
        SourceChoice::Ebpf | SourceChoice::Auto => match sensor.try_kernel_source(&config).await {
            Ok(active) => return Ok(active),
            Err(reason) if config.source == SourceChoice::Ebpf => {
                return Err(SensorError::KernelSourceRequired(reason));
            }
            Err(reason) => {
                tracing::warn!(%reason, "kernel event source unavailable: falling back to polling (short-lived processes between polls will be missed)");
                Some(reason)
            }
        },
    };
    sensor.run_poll().await?;
    Ok(ActiveSource {
        source: EventSource::Poll,
        degraded_reason,
    })
}

struct Sensor {
    pipeline: Pipeline,
    options: SnapshotOptions,
    base_interval: Duration,
    interval: Duration,
    backpressure: watch::Receiver<bool>,
    out: mpsc::Sender<Encoded>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Sensor {
    async fn emit(&mut self, event: ProcessEvent) {
        if let Some(encoded) = self.pipeline.process(event)
            && self.out.send(encoded).await.is_err()
        {
            Metrics::incr(&self.metrics.events_output_dropped);
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, SensorError> {
        let options = self.options;
        let snap = tokio::task::spawn_blocking(move || snapshot::take(options))
            .await
            .map_err(|e| SensorError::Snapshot(std::io::Error::other(e)))?
            .map_err(SensorError::Snapshot)?;
        self.metrics.processes_seen.store(
            snap.processes.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(snap)
    }

    async fn emit_inventory(&mut self, inventory: &Snapshot, source: EventSource) {
        for p in &inventory.processes {
            let event = p.to_event(EventKind::Snapshot, source, inventory.taken_at);
            self.emit(event).await;
        }
    }

    /// Applies a backpressure change: interval × 1.5 while on, restored when off.
    fn on_backpressure(&mut self) -> tokio::time::Interval {
        let on = *self.backpressure.borrow_and_update();
        self.interval = if on {
            self.base_interval.mul_f64(1.5)
        } else {
            self.base_interval
        };
        if on {
            tracing::info!(
                interval_ms = self.interval.as_millis() as u64,
                "backpressure: collection interval stretched x1.5"
            );
        } else {
            tracing::info!(
                interval_ms = self.interval.as_millis() as u64,
                "backpressure released: collection interval restored"
            );
        }
        self.ticker()
    }

    fn ticker(&self) -> tokio::time::Interval {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }

    /// The FallbackProcessCollector loop.
    async fn run_poll(&mut self) -> Result<(), SensorError> {
        let inventory = self.snapshot().await?;
        let mut collector = FallbackProcessCollector::new(&inventory);
        self.emit_inventory(&inventory, EventSource::Poll).await;
        tracing::info!(
            source = "poll",
            processes = collector.len(),
            interval_secs = self.interval.as_secs(),
            "monitoring started"
        );
        let mut tick = self.ticker();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                Ok(()) = self.backpressure.changed() => tick = self.on_backpressure(),
                _ = tick.tick() => {
                    let snap = match self.snapshot().await {
                        Ok(s) => s,
                        Err(e) => {
                            Metrics::incr(&self.metrics.snapshot_errors);
                            tracing::warn!(error = %e, "poll skipped");
                            continue;
                        }
                    };
                    let events = collector.diff(snap);
                    Metrics::add(&self.metrics.events_observed, events.len() as u64);
                    for e in events {
                        self.emit(e).await;
                    }
                }
            }
        }
    }

    /// Starts the kernel source and runs it to shutdown; `Err(reason)` if it
    /// could not start (the caller decides whether to fall back).
    #[cfg(target_os = "linux")]
    async fn try_kernel_source(&mut self, config: &ProcmondConfig) -> Result<ActiveSource, String> {
        if let Some(reason) = crate::sources::kernel_source_unavailable_reason() {
            return Err(reason);
        }
        let source =
            crate::sources::ebpf::attach(config.ring_buffer_bytes).map_err(|e| e.to_string())?;
        match self.run_kernel(source).await {
            Ok(()) => Ok(ActiveSource {
                source: EventSource::Ebpf,
                degraded_reason: None,
            }),
            Err(e) => Err(e.to_string()),
        }
    }

    #[cfg(not(target_os = "linux"))]
    async fn try_kernel_source(
        &mut self,
        _config: &ProcmondConfig,
    ) -> Result<ActiveSource, String> {
        Err(crate::sources::kernel_source_unavailable_reason().unwrap_or_default())
    }

    #[cfg(target_os = "linux")]
    async fn run_kernel(
        &mut self,
        source: crate::sources::ebpf::EbpfSource,
    ) -> Result<(), SensorError> {
        use crate::clock;
        use crate::reconcile::Reconciler;
        use crate::sources::SourceMsg;

        let (tx, mut rx) = mpsc::channel(8192);
        let reader = source
            .spawn_reader(tx, self.metrics.clone())
            .map_err(SensorError::Reader)?;
        let snapshot_start = |s: &Snapshot| {
            s.taken_at_boot_ns
                .map_or(s.taken_at, clock::boot_to_unix_ns)
        };

        // Inventory after attach: nothing falls between the two.
        let inventory = self.snapshot().await?;
        let mut reconciler = Reconciler::from_inventory(&inventory, snapshot_start(&inventory));
        self.emit_inventory(&inventory, EventSource::Reconcile)
            .await;
        tracing::info!(
            source = "ebpf",
            processes = inventory.processes.len(),
            reconcile_interval_secs = self.interval.as_secs(),
            "monitoring started"
        );

        let mut tick = self.ticker();
        let mut in_flight: Option<JoinHandle<std::io::Result<Snapshot>>> = None;
        let mut awaiting: Option<(u64, Snapshot)> = None;
        let mut barrier_id = 0u64;
        let result = loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break Ok(()),
                done = join_opt(&mut in_flight) => {
                    in_flight = None;
                    match done {
                        Ok(Ok(snap)) => {
                            self.metrics.processes_seen.store(snap.processes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            barrier_id += 1;
                            reader.barrier(barrier_id);
                            awaiting = Some((barrier_id, snap));
                        }
                        Ok(Err(e)) => {
                            Metrics::incr(&self.metrics.snapshot_errors);
                            tracing::warn!(error = %e, "reconciliation pass skipped");
                            reconciler.abort_pass();
                        }
                        Err(e) => {
                            Metrics::incr(&self.metrics.snapshot_errors);
                            tracing::warn!(error = %e, "reconciliation pass skipped");
                            reconciler.abort_pass();
                        }
                    }
                }
                Ok(()) = self.backpressure.changed() => tick = self.on_backpressure(),
                _ = tick.tick(), if in_flight.is_none() && awaiting.is_none() => {
                    reconciler.begin_pass();
                    let options = self.options;
                    in_flight = Some(tokio::task::spawn_blocking(move || snapshot::take(options)));
                }
                msg = rx.recv() => match msg {
                    Some(SourceMsg::Event(mut event)) => {
                        reconciler.observe(&mut event);
                        self.emit(*event).await;
                    }
                    Some(SourceMsg::Barrier(id)) => {
                        if let Some((want, snap)) = awaiting.take_if(|(want, _)| *want == id) {
                            debug_assert_eq!(want, id);
                            let missed = reconciler.reconcile(&snap, snapshot_start(&snap));
                            for e in missed {
                                let counter = if e.kind == EventKind::Start {
                                    &self.metrics.reconcile_missed_starts
                                } else {
                                    &self.metrics.reconcile_missed_stops
                                };
                                Metrics::incr(counter);
                                self.emit(e).await;
                            }
                        }
                    }
                    None => break Err(SensorError::ReaderGone),
                },
            }
        };
        // Detach, then drain: the reader sends what the ring still holds.
        let stopper = tokio::task::spawn_blocking(move || reader.stop());
        while let Some(msg) = rx.recv().await {
            if let SourceMsg::Event(mut event) = msg {
                reconciler.observe(&mut event);
                self.emit(*event).await;
            }
        }
        let _ = stopper.await;
        result
    }
}

/// Awaits the task if there is one; pending forever otherwise.
async fn join_opt<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}
