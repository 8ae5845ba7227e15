//! The sensor: one source, the inventory, reconciliation and the pipeline,
//! owned by one task that also serves the mailbox (`mailbox`).
//!
//! Order matters at start: the kernel source attaches first, then the
//! inventory is taken, so a process is either in the inventory or in the
//! stream (or both) — never in neither. `Stop` detaches the source; `Start`
//! attaches it again and takes a fresh inventory.

pub mod mailbox;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::ProcmondConfig;
use crate::metrics::Metrics;
use crate::model::batch::Batch;
use crate::model::{EventKind, EventSource, ProcessEvent};
use crate::pipeline::Pipeline;
use crate::platform::Platform;
use crate::sources::SourceChoice;
use crate::sources::poll::FallbackProcessCollector;
use crate::sources::snapshot::{Snapshot, SnapshotOptions, SnapshotReader};
use mailbox::{Command, Lifecycle, SensorStatus, ok, updated_config};

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
    /// The kernel probes' variant, where the source has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<String>,
}

/// How the sensor is wired to the rest of the process.
#[derive(Debug)]
pub struct SensorIo {
    /// Encoded batches go here (the connector).
    pub out: mpsc::Sender<Batch>,
    /// The first sequence number to use (the WAL's next).
    pub first_seq: u64,
    /// The WAL's identity, stamped on every event.
    pub epoch: u64,
    /// Commands (RPCs, lifecycle, backpressure).
    pub mailbox: mpsc::Receiver<Command>,
    /// Published state, for heartbeats and the registration.
    pub status: watch::Sender<SensorStatus>,
    /// The operating system: `platform::host()`, or a test's fake.
    pub platform: Arc<dyn Platform>,
}

/// What the loop does after handling a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Retick,
    Stop,
    Restart,
    Shutdown,
}

/// Runs the sensor until `shutdown` (or a GracefulShutdown command).
pub async fn run(
    config: ProcmondConfig,
    io: SensorIo,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<ActiveSource, SensorError> {
    let base = Duration::from_secs(config.collection_interval_secs);
    let mut sensor = Sensor {
        pipeline: Pipeline::new(&config, io.epoch, io.first_seq, metrics.clone()),
        options: SnapshotOptions {
            cwd: config.enhanced_metadata,
        },
        reader: io.platform.process_table(),
        platform: io.platform,
        config,
        base_interval: base,
        stretched: false,
        mailbox: io.mailbox,
        mailbox_open: true,
        status: io.status,
        out: io.out,
        metrics,
        shutdown,
    };
    sensor.set_reader(sensor.reader.clone());
    let active = loop {
        sensor.set_lifecycle(Lifecycle::Running);
        let (flow, active) = sensor.run_source().await?;
        match flow {
            Flow::Shutdown => break active,
            Flow::Restart => continue,
            _ => {
                sensor.set_lifecycle(Lifecycle::Stopped);
                tracing::warn!("collection stopped by request; waiting for Start");
                if sensor.wait_for_start().await == Flow::Shutdown {
                    break active;
                }
            }
        }
    };
    sensor.set_lifecycle(Lifecycle::ShuttingDown);
    Ok(active)
}

struct Sensor {
    config: ProcmondConfig,
    pipeline: Pipeline,
    options: SnapshotOptions,
    /// procfs, or the task iterator while the kernel source runs.
    reader: SnapshotReader,
    platform: Arc<dyn Platform>,
    base_interval: Duration,
    stretched: bool,
    mailbox: mpsc::Receiver<Command>,
    /// False once every sender is gone (then the branch is not polled).
    mailbox_open: bool,
    status: watch::Sender<SensorStatus>,
    out: mpsc::Sender<Batch>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Sensor {
    fn interval(&self) -> Duration {
        if self.stretched {
            self.base_interval.mul_f64(1.5)
        } else {
            self.base_interval
        }
    }

    fn set_lifecycle(&self, lifecycle: Lifecycle) {
        self.status.send_modify(|s| s.lifecycle = lifecycle);
    }

    /// Runs the configured source (falling back where allowed) until a
    /// command or shutdown ends it.
    async fn run_source(&mut self) -> Result<(Flow, ActiveSource), SensorError> {
        let choice = self.config.source;
        let degraded_reason = match choice {
            SourceChoice::Poll => None,
            _ => match self.try_kernel_source().await {
                Ok(done) => return Ok(done),
                Err(reason) if choice.requires_kernel() => {
                    return Err(SensorError::KernelSourceRequired(reason));
                }
                Err(reason) => {
                    tracing::warn!(%reason, "kernel event source unavailable: falling back to polling (short-lived processes between polls will be missed)");
                    Some(reason)
                }
            },
        };
        let active = ActiveSource {
            source: EventSource::Poll,
            degraded_reason,
            probes: None,
        };
        self.announce(&active);
        let flow = self.run_poll().await?;
        Ok((flow, active))
    }

    /// What snapshots read from now on, as health reports it.
    fn set_reader(&mut self, reader: SnapshotReader) {
        let name = reader.name();
        self.reader = reader;
        self.status.send_modify(|s| s.snapshot_reader = name);
    }

    fn announce(&self, active: &ActiveSource) {
        self.status.send_modify(|s| {
            s.source = Some(active.source);
            s.degraded_reason.clone_from(&active.degraded_reason);
            s.probes.clone_from(&active.probes);
        });
    }

    /// Puts one event into the open batch; sends the batch if it is full.
    async fn emit(&mut self, event: ProcessEvent) {
        if self.pipeline.push(event) {
            self.flush().await;
        }
    }

    /// Sends the open batch (sources call this at their natural boundary:
    /// one drain of the kernel ring, one snapshot).
    async fn flush(&mut self) {
        if let Some(batch) = self.pipeline.take() {
            let n = batch.len() as u64;
            if self.out.send(batch).await.is_err() {
                Metrics::add(&self.metrics.events_output_dropped, n);
            }
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, SensorError> {
        let (options, reader) = (self.options, self.reader.clone());
        let snap = tokio::task::spawn_blocking(move || reader.take(options))
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
        let mut events: Vec<ProcessEvent> = inventory
            .processes
            .iter()
            .map(|p| p.to_event(EventKind::Snapshot, source, inventory.taken_at))
            .collect();
        self.pipeline.prepare_all(&mut events);
        for event in events {
            if self.pipeline.push_prepared(event) {
                self.flush().await;
            }
        }
        self.flush().await;
    }

    fn ticker(&self) -> tokio::time::Interval {
        let interval = self.interval();
        self.status
            .send_modify(|s| s.interval_ms = interval.as_millis() as u64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }

    fn cycle_done(&self, started: Instant) {
        let ms = started.elapsed().as_millis() as u64;
        self.status.send_modify(|s| {
            s.cycles += 1;
            s.last_cycle_ms = ms;
        });
    }

    /// Handles one command between cycles.
    fn handle(&mut self, command: Command) -> Flow {
        match command {
            Command::UpdateConfig { changes, reply } => {
                match updated_config(&self.config, &changes) {
                    Ok(config) => {
                        let interval_changed =
                            config.collection_interval_secs != self.config.collection_interval_secs;
                        self.base_interval = Duration::from_secs(config.collection_interval_secs);
                        self.options.cwd = config.enhanced_metadata;
                        self.pipeline.reconfigure(&config);
                        self.config = config.clone();
                        self.status.send_modify(|s| s.config = config);
                        tracing::info!(?changes, "configuration updated");
                        let _ = reply.send(Ok(ok("applied")));
                        if interval_changed {
                            Flow::Retick
                        } else {
                            Flow::Continue
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "configuration update refused");
                        let _ = reply.send(Err(e));
                        Flow::Continue
                    }
                }
            }
            Command::GracefulShutdown { reply } => {
                tracing::info!("graceful shutdown requested: finishing the cycle");
                let _ = reply.send(ok("shutting down"));
                self.shutdown.cancel();
                Flow::Shutdown
            }
            Command::BeginMonitoring => {
                if !self.status.borrow().monitoring {
                    tracing::info!("begin_monitoring: publishing events");
                    self.status.send_modify(|s| s.monitoring = true);
                }
                Flow::Continue
            }
            Command::AdjustInterval { stretched } => {
                self.stretched = stretched;
                self.status.send_modify(|s| s.backpressure = stretched);
                let ms = self.interval().as_millis() as u64;
                if stretched {
                    tracing::info!(
                        interval_ms = ms,
                        "backpressure: collection interval stretched x1.5"
                    );
                } else {
                    tracing::info!(
                        interval_ms = ms,
                        "backpressure released: collection interval restored"
                    );
                }
                Flow::Retick
            }
            Command::Start { reply } => {
                let _ = reply.send(ok("already running"));
                Flow::Continue
            }
            Command::Stop { reply } => {
                let _ = reply.send(ok("stopping collection"));
                Flow::Stop
            }
            Command::Restart { reply } => {
                tracing::info!("restart requested: re-attaching the source");
                let _ = reply.send(ok("restarting collection"));
                Flow::Restart
            }
        }
    }

    /// A command taken in a collection loop: `Some(flow)` ends the loop.
    fn on_command(
        &mut self,
        command: Option<Command>,
        tick: &mut tokio::time::Interval,
    ) -> Option<Flow> {
        let Some(command) = command else {
            self.mailbox_open = false;
            return None;
        };
        match self.handle(command) {
            Flow::Continue => None,
            Flow::Retick => {
                *tick = self.ticker();
                None
            }
            other => Some(other),
        }
    }

    /// While stopped: everything but collection still answers.
    async fn wait_for_start(&mut self) -> Flow {
        loop {
            let command = tokio::select! {
                _ = self.shutdown.cancelled() => return Flow::Shutdown,
                c = self.mailbox.recv() => match c { Some(c) => c, None => return Flow::Shutdown },
            };
            match command {
                Command::Start { reply } | Command::Restart { reply } => {
                    tracing::info!("collection starting again");
                    let _ = reply.send(ok("starting collection"));
                    return Flow::Restart;
                }
                Command::Stop { reply } => {
                    let _ = reply.send(ok("already stopped"));
                }
                other => {
                    if self.handle(other) == Flow::Shutdown {
                        return Flow::Shutdown;
                    }
                }
            }
        }
    }

    /// The FallbackProcessCollector loop.
    async fn run_poll(&mut self) -> Result<Flow, SensorError> {
        let inventory = self.snapshot().await?;
        let mut collector = FallbackProcessCollector::new(&inventory);
        self.emit_inventory(&inventory, EventSource::Poll).await;
        tracing::info!(
            source = "poll",
            processes = collector.len(),
            interval_secs = self.base_interval.as_secs(),
            "monitoring started"
        );
        let mut tick = self.ticker();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(Flow::Shutdown),
                command = self.mailbox.recv(), if self.mailbox_open => {
                    if let Some(flow) = self.on_command(command, &mut tick) {
                        return Ok(flow);
                    }
                }
                _ = tick.tick() => {
                    let started = Instant::now();
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
                    self.flush().await;
                    self.cycle_done(started);
                }
            }
        }
    }
}

mod kernel_loop;

#[cfg(test)]
#[path = "sensor_tests.rs"]
mod sensor_tests;
