//! The kernel-stream loop, on every platform: events as the kernel source
//! (`sources::stream`) delivers them, plus the periodic reconciliation pass
//! against a snapshot.
//!
//! A pass: snapshot on a blocking thread while events keep flowing; then a
//! barrier through the source's reader guarantees every event received
//! before the snapshot finished has been applied; then the diff.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ActiveSource, Flow, Sensor, SensorError};
use crate::metrics::Metrics;
use crate::model::{EventKind, EventSource};
use crate::reconcile::Reconciler;
use crate::sources::SourceMsg;
use crate::sources::snapshot::Snapshot;
use crate::sources::stream::KernelStream;

impl Sensor {
    /// Starts the kernel source and runs it until it is stopped; `Err(reason)`
    /// if it could not start (the caller decides whether to fall back).
    pub(super) async fn try_kernel_source(&mut self) -> Result<(Flow, ActiveSource), String> {
        let (tx, rx) = mpsc::channel(16);
        self.pipeline
            .start_hashing(&self.config, &tx, &self.metrics)
            .map_err(|e| format!("starting the hash workers: {e}"))?;
        let started = self.platform.start_kernel_source(
            &self.config.kernel_options(),
            tx,
            self.metrics.clone(),
        );
        let started = match started {
            Ok(s) => s,
            Err(reason) => {
                self.pipeline.stop_hashing();
                return Err(reason);
            }
        };
        if let Some(reader) = started.snapshot_reader {
            self.set_reader(reader);
        }
        let active = ActiveSource {
            source: started.source,
            degraded_reason: started.degraded_reason,
            probes: started.probes,
        };
        if let Some(reason) = &active.degraded_reason {
            tracing::warn!(%reason, "kernel source running degraded");
        }
        self.announce(&active);
        let result = self.run_stream(active.source, started.stream, rx).await;
        // Without the kernel source, snapshots use the platform's reader again.
        self.set_reader(self.platform.process_table());
        match result {
            Ok(flow) => Ok((flow, active)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn run_stream(
        &mut self,
        source: EventSource,
        reader: Box<dyn KernelStream>,
        mut rx: mpsc::Receiver<SourceMsg>,
    ) -> Result<Flow, SensorError> {
        // Inventory after attach: nothing falls between the two.
        let inventory = self.snapshot().await?;
        let reconciler = Reconciler::from_inventory(&inventory, inventory.started_on_event_clock());
        self.emit_inventory(&inventory, EventSource::Reconcile)
            .await;
        tracing::info!(
            source = source.as_str(),
            probes = self.status.borrow().probes.as_deref().unwrap_or("-"),
            processes = inventory.processes.len(),
            snapshot_reader = self.reader.name(),
            reconcile_interval_secs = self.base_interval.as_secs(),
            "monitoring started"
        );
        let mut stream = Stream {
            reconciler,
            pass: Pass::Idle,
            barriers: 0,
            reader,
        };
        let mut tick = self.ticker();
        let result = loop {
            let idle = matches!(stream.pass, Pass::Idle);
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break Ok(Flow::Shutdown),
                done = stream.pass.snapshot_done() => self.on_snapshot(&mut stream, done),
                command = self.mailbox.recv(), if self.mailbox_open && idle => {
                    if let Some(flow) = self.on_command(command, &mut tick) {
                        break Ok(flow);
                    }
                }
                _ = tick.tick(), if idle => self.begin_pass(&mut stream),
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_source(&mut stream, msg).await,
                    None => break Err(SensorError::ReaderGone),
                },
            }
        };
        self.detach_and_drain(stream, rx).await;
        result
    }

    /// A pass starts: the snapshot is read on a blocking thread while
    /// events keep flowing.
    fn begin_pass(&self, stream: &mut Stream) {
        stream.reconciler.begin_pass();
        let (options, reader) = (self.options, self.reader.clone());
        let task = tokio::task::spawn_blocking(move || reader.take(options));
        stream.pass = Pass::Snapshotting(Instant::now(), task);
    }

    /// The pass's snapshot is read: ask the reader for a barrier, so the
    /// diff waits until every event before it has been applied.
    fn on_snapshot(&self, stream: &mut Stream, done: SnapshotDone) {
        let started = match std::mem::replace(&mut stream.pass, Pass::Idle) {
            Pass::Snapshotting(started, _) => started,
            _ => Instant::now(),
        };
        let error = match done {
            Ok(Ok(snap)) => {
                let seen = snap.processes.len() as u64;
                self.metrics.processes_seen.store(seen, Relaxed);
                stream.barriers += 1;
                stream.reader.barrier(stream.barriers);
                stream.pass = Pass::AwaitingBarrier(stream.barriers, started, snap);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        Metrics::incr(&self.metrics.snapshot_errors);
        tracing::warn!(error, "reconciliation pass skipped");
        stream.reconciler.abort_pass();
    }

    /// One message from the kernel source.
    async fn on_source(&mut self, stream: &mut Stream, msg: SourceMsg) {
        match msg {
            SourceMsg::Events(events) => {
                for mut event in events {
                    stream.reconciler.observe(&mut event);
                    self.emit(event).await;
                }
            }
            SourceMsg::Hashed(event) => self.emit(*event).await,
            SourceMsg::Barrier(id) => {
                let Some((started, snap)) = stream.pass.take_barrier(id) else {
                    return;
                };
                let missed = stream
                    .reconciler
                    .reconcile(&snap, snap.started_on_event_clock());
                for e in missed {
                    let counter = if e.kind == EventKind::Start {
                        &self.metrics.reconcile_missed_starts
                    } else {
                        &self.metrics.reconcile_missed_stops
                    };
                    Metrics::incr(counter);
                    self.emit(e).await;
                }
                self.flush().await;
                self.cycle_done(started);
                return;
            }
        }
        self.flush().await;
    }

    /// Detach, then drain: the reader sends what the ring still holds. The
    /// hash workers hold senders too: they stop first, so the channel ends.
    async fn detach_and_drain(&mut self, stream: Stream, mut rx: mpsc::Receiver<SourceMsg>) {
        self.pipeline.stop_hashing();
        let Stream {
            mut reconciler,
            reader,
            ..
        } = stream;
        let stopper = tokio::task::spawn_blocking(move || reader.stop());
        while let Some(msg) = rx.recv().await {
            match msg {
                SourceMsg::Events(events) => {
                    for mut event in events {
                        reconciler.observe(&mut event);
                        self.emit(event).await;
                    }
                }
                SourceMsg::Hashed(event) => self.emit(*event).await,
                SourceMsg::Barrier(_) => {}
            }
            self.flush().await;
        }
        let _ = stopper.await;
    }
}

/// The kernel stream's state between two messages.
struct Stream {
    reconciler: Reconciler,
    pass: Pass,
    /// The last barrier id asked for.
    barriers: u64,
    reader: Box<dyn KernelStream>,
}

type SnapshotDone = Result<std::io::Result<Snapshot>, tokio::task::JoinError>;

/// Where the reconciliation pass stands.
enum Pass {
    /// Between passes: commands are served, the next tick starts one.
    Idle,
    /// The snapshot is being read (since when).
    Snapshotting(Instant, JoinHandle<std::io::Result<Snapshot>>),
    /// Read; waiting for barrier `id` before the diff.
    AwaitingBarrier(u64, Instant, Snapshot),
}

impl Pass {
    /// Resolves when the snapshot being read is done; never otherwise.
    async fn snapshot_done(&mut self) -> SnapshotDone {
        match self {
            Self::Snapshotting(_, task) => task.await,
            _ => std::future::pending().await,
        }
    }

    /// The read snapshot if `id` is the barrier it waits for.
    fn take_barrier(&mut self, id: u64) -> Option<(Instant, Snapshot)> {
        if !matches!(self, Self::AwaitingBarrier(want, _, _) if *want == id) {
            return None;
        }
        match std::mem::replace(self, Self::Idle) {
            Self::AwaitingBarrier(_, started, snap) => Some((started, snap)),
            _ => None,
        }
    }
}
