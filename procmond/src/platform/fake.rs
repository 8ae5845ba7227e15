//! A scripted operating system for in-process tests: a process table the
//! test edits, a kernel stream the test feeds, and the faults a real one
//! shows (a ring that overflows, a source that refuses to start, a reader
//! that dies, a snapshot that fails). Time is real: the sensor's interval
//! is whatever the test configures.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::Platform;
use super::options::KernelOptions;
use crate::metrics::Metrics;
use crate::model::EventSource;
use crate::sources::SourceMsg;
use crate::sources::snapshot::SnapshotReader;
use crate::sources::snapshot::{ProcessInfo, ProcessTable, Snapshot, SnapshotOptions};
use crate::sources::stream::{KernelStream, StartedStream};

/// The fake OS; clones share one state, so a test keeps one to script it
/// while the sensor holds another.
#[derive(Debug, Clone, Default)]
pub struct FakePlatform {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    table: Vec<ProcessInfo>,
    /// The kernel source refuses to start, with this reason.
    refusal: Option<String>,
    /// The running stream's channel (`None`: not running).
    tx: Option<mpsc::Sender<SourceMsg>>,
    metrics: Option<Arc<Metrics>>,
    starts: u32,
    stops: u32,
    failing_snapshots: u32,
    snapshots: u32,
}

impl FakePlatform {
    /// A machine whose process table holds `table`.
    pub fn with_table(table: Vec<ProcessInfo>) -> Self {
        let fake = Self::default();
        fake.lock().table = table;
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A process appears in the table (the kernel says nothing of it).
    pub fn spawn(&self, info: ProcessInfo) {
        self.lock().table.push(info);
    }

    /// Process `pid` leaves the table (the kernel says nothing of it).
    pub fn reap(&self, pid: u32) {
        self.lock().table.retain(|p| p.pid != pid);
    }

    /// The kernel stream delivers `events` (one drain of its ring); false
    /// when no stream runs.
    pub async fn deliver(&self, events: Vec<crate::model::ProcessEvent>) -> bool {
        let tx = self.lock().tx.clone();
        match tx {
            Some(tx) => tx.send(SourceMsg::Events(events)).await.is_ok(),
            None => false,
        }
    }

    /// The ring overflowed and `lost` records were dropped, as the reader
    /// would count them.
    pub fn overflow(&self, lost: u64) {
        if let Some(metrics) = &self.lock().metrics {
            Metrics::add(&metrics.kernel_lost, lost);
        }
    }

    /// From now on the kernel source will not start, for `reason`.
    pub fn refuse_kernel(&self, reason: &str) {
        self.lock().refusal = Some(reason.to_string());
    }

    /// The next `n` snapshots fail.
    pub fn fail_snapshots(&self, n: u32) {
        self.lock().failing_snapshots = n;
    }

    /// The reader dies without being asked to stop.
    pub fn kill_reader(&self) {
        self.lock().tx = None;
    }

    /// How often the kernel source was started and stopped.
    pub fn starts_and_stops(&self) -> (u32, u32) {
        let state = self.lock();
        (state.starts, state.stops)
    }

    /// Snapshots taken so far (failed ones included).
    pub fn snapshots(&self) -> u32 {
        self.lock().snapshots
    }
}

impl Platform for FakePlatform {
    fn process_table(&self) -> SnapshotReader {
        SnapshotReader::new(self.clone())
    }

    fn start_kernel_source(
        &self,
        _options: &KernelOptions,
        tx: mpsc::Sender<SourceMsg>,
        metrics: Arc<Metrics>,
    ) -> Result<StartedStream, String> {
        let mut state = self.lock();
        if let Some(reason) = &state.refusal {
            return Err(reason.clone());
        }
        state.tx = Some(tx);
        state.metrics = Some(metrics);
        state.starts += 1;
        Ok(StartedStream {
            source: EventSource::Ebpf,
            degraded_reason: None,
            stream: Box::new(self.clone()),
            snapshot_reader: None,
            probes: Some("fake".into()),
        })
    }
}

impl ProcessTable for FakePlatform {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn take(&self, _options: SnapshotOptions) -> std::io::Result<Snapshot> {
        let mut state = self.lock();
        state.snapshots += 1;
        if state.failing_snapshots > 0 {
            state.failing_snapshots -= 1;
            return Err(std::io::Error::other("scripted snapshot failure"));
        }
        Ok(Snapshot {
            taken_at: crate::clock::now_unix_ns(),
            taken_at_event_clock: None,
            processes: state.table.clone(),
        })
    }
}

impl KernelStream for FakePlatform {
    /// Everything `deliver` sent has been queued already, so the barrier
    /// only needs to follow it on the same channel.
    fn barrier(&self, id: u64) {
        let Some(tx) = self.lock().tx.clone() else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(msg)) = tx.try_send(SourceMsg::Barrier(id)) {
            tokio::spawn(async move { tx.send(msg).await });
        }
    }

    fn stop(self: Box<Self>) {
        let mut state = self.lock();
        state.tx = None;
        state.stops += 1;
    }
}
