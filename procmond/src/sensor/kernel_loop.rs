//! The kernel-stream loop, on every platform: events as the kernel source
//! (`sources::stream`) delivers them, plus the periodic reconciliation pass
//! against a snapshot.
//!
//! A pass: snapshot on a blocking thread while events keep flowing; then a
//! barrier through the source's reader guarantees every event received
//! before the snapshot finished has been applied; then the diff.

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
        let mut reconciler =
            Reconciler::from_inventory(&inventory, inventory.started_on_event_clock());
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

        let mut tick = self.ticker();
        let mut in_flight: Option<(Instant, JoinHandle<std::io::Result<Snapshot>>)> = None;
        let mut awaiting: Option<(u64, Instant, Snapshot)> = None;
        let mut barrier_id = 0u64;
        let result = loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break Ok(Flow::Shutdown),
                done = join_opt(&mut in_flight) => {
                    let started = in_flight.take().map_or_else(Instant::now, |(s, _)| s);
                    match done {
                        Ok(Ok(snap)) => {
                            self.metrics.processes_seen.store(snap.processes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            barrier_id += 1;
                            reader.barrier(barrier_id);
                            awaiting = Some((barrier_id, started, snap));
                        }
                        Ok(Err(e)) => self.pass_failed(&mut reconciler, &e.to_string()),
                        Err(e) => self.pass_failed(&mut reconciler, &e.to_string()),
                    }
                }
                command = self.mailbox.recv(), if self.mailbox_open && in_flight.is_none() && awaiting.is_none() => {
                    if let Some(flow) = self.on_command(command, &mut tick) {
                        break Ok(flow);
                    }
                }
                _ = tick.tick(), if in_flight.is_none() && awaiting.is_none() => {
                    reconciler.begin_pass();
                    let (options, reader) = (self.options, self.reader.clone());
                    in_flight = Some((Instant::now(), tokio::task::spawn_blocking(move || reader.take(options))));
                }
                msg = rx.recv() => match msg {
                    Some(SourceMsg::Events(events)) => {
                        for mut event in events {
                            reconciler.observe(&mut event);
                            self.emit(event).await;
                        }
                        self.flush().await;
                    }
                    Some(SourceMsg::Hashed(event)) => {
                        self.emit(*event).await;
                        self.flush().await;
                    }
                    Some(SourceMsg::Barrier(id)) => {
                        if let Some((_, started, snap)) = awaiting.take_if(|(want, _, _)| *want == id) {
                            let missed = reconciler.reconcile(&snap, snap.started_on_event_clock());
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
                        }
                    }
                    None => break Err(SensorError::ReaderGone),
                },
            }
        };
        // Detach, then drain: the reader sends what the ring still holds.
        // The hash workers hold senders too: stop them so the channel ends.
        self.pipeline.stop_hashing();
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
        result
    }

    fn pass_failed(&self, reconciler: &mut Reconciler, error: &str) {
        Metrics::incr(&self.metrics.snapshot_errors);
        tracing::warn!(error, "reconciliation pass skipped");
        reconciler.abort_pass();
    }
}

/// Awaits the task if there is one; pending forever otherwise.
async fn join_opt<T>(
    task: &mut Option<(Instant, JoinHandle<T>)>,
) -> Result<T, tokio::task::JoinError> {
    match task {
        Some((_, t)) => t.await,
        None => std::future::pending().await,
    }
}
