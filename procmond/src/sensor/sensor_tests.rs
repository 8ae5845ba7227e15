//! The sensor's loops driven in-process on the fake platform: inventory and
//! kernel events in order, reconciliation after an overflow, fallback to
//! polling, a dying reader, stop and start, failed snapshots and the drain
//! at shutdown. No root, no kernel; events are paired by `(pid,
//! start_time)`, never by pid alone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::mailbox::{Command, Lifecycle, SensorStatus};
use super::{ActiveSource, SensorError, SensorIo};
use crate::config::ProcmondConfig;
use crate::metrics::Metrics;
use crate::model::batch::Batch;
use crate::model::{EventKind, EventSource, ProcessEvent};
use crate::platform::fake::FakePlatform;
use crate::sources::SourceChoice;
use crate::sources::snapshot::ProcessInfo;

const WAIT: Duration = Duration::from_secs(10);

fn process(pid: u32, start_time: i64) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: Some(1),
        name: format!("p{pid}"),
        start_time: Some(start_time),
        ..ProcessInfo::default()
    }
}

fn kernel(kind: EventKind, pid: u32, start_time: i64) -> ProcessEvent {
    let mut e = ProcessEvent::new(kind, EventSource::Ebpf, crate::clock::now_unix_ns(), pid);
    e.start_time = Some(start_time);
    e.ppid = Some(1);
    e
}

struct Running {
    fake: FakePlatform,
    out: mpsc::Receiver<Batch>,
    /// Events read from a batch but not yet looked at.
    pending: VecDeque<ProcessEvent>,
    mailbox: mpsc::Sender<Command>,
    status: watch::Receiver<SensorStatus>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<ActiveSource, SensorError>>,
}

fn start(fake: &FakePlatform, source: SourceChoice) -> Running {
    let config = ProcmondConfig {
        source,
        collection_interval_secs: 1,
        ..ProcmondConfig::default()
    };
    let (out_tx, out) = mpsc::channel(64);
    let (mailbox, mailbox_rx) = mpsc::channel(8);
    let (status_tx, status) = watch::channel(SensorStatus::new(config.clone()));
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let io = SensorIo {
        out: out_tx,
        first_seq: 1,
        epoch: 7,
        mailbox: mailbox_rx,
        status: status_tx,
        platform: Arc::new(fake.clone()),
    };
    let task = tokio::spawn(super::run(config, io, metrics.clone(), shutdown.clone()));
    Running {
        fake: fake.clone(),
        out,
        pending: VecDeque::new(),
        mailbox,
        status,
        metrics,
        shutdown,
        task,
    }
}

impl Running {
    /// Reads batches until an event matches `want`; panics after `WAIT`.
    async fn until(&mut self, what: &str, want: impl Fn(&ProcessEvent) -> bool) -> ProcessEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            while let Some(event) = self.pending.pop_front() {
                if want(&event) {
                    return event;
                }
            }
            let batch = tokio::time::timeout_at(deadline, self.out.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
                .unwrap_or_else(|| panic!("the sensor ended before {what}"));
            let events = batch.iter().map(|e| e.decode().expect("its own encoding"));
            self.pending.extend(events);
        }
    }

    /// Everything the sensor sends until it has been quiet for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<ProcessEvent> {
        let mut events: Vec<_> = self.pending.drain(..).collect();
        while let Ok(Some(batch)) = tokio::time::timeout(quiet, self.out.recv()).await {
            events.extend(batch.iter().map(|e| e.decode().expect("decodes")));
        }
        events
    }

    /// Waits until the published status satisfies `want`.
    async fn status_until(&mut self, want: impl Fn(&SensorStatus) -> bool) -> SensorStatus {
        tokio::time::timeout(WAIT, self.status.wait_for(|s| want(s)))
            .await
            .expect("status reached in time")
            .expect("the sensor is alive")
            .clone()
    }

    async fn command(&self, make: impl FnOnce(oneshot::Sender<serde_json::Value>) -> Command) {
        let (reply, answer) = oneshot::channel();
        self.mailbox.send(make(reply)).await.expect("mailbox open");
        tokio::time::timeout(WAIT, answer)
            .await
            .expect("answered in time")
            .expect("an answer");
    }

    async fn stop(self) -> Result<ActiveSource, SensorError> {
        self.shutdown.cancel();
        self.task.await.expect("sensor task")
    }
}

fn is(e: &ProcessEvent, kind: EventKind, source: EventSource, key: (u32, i64)) -> bool {
    e.kind == kind && e.source == source && (e.pid, e.start_time) == (key.0, Some(key.1))
}

#[tokio::test]
async fn the_inventory_comes_first_then_kernel_events_in_sequence() {
    let fake = FakePlatform::with_table(vec![process(1, 10), process(100, 1_000)]);
    let mut s = start(&fake, SourceChoice::Auto);
    let inv = s
        .until("the inventory", |e| {
            is(e, EventKind::Snapshot, EventSource::Reconcile, (100, 1_000))
        })
        .await;
    let status = s.status_until(|st| st.source.is_some()).await;
    assert_eq!(
        (
            status.source,
            status.probes.as_deref(),
            status.snapshot_reader
        ),
        (Some(EventSource::Ebpf), Some("fake"), "fake")
    );
    assert!(
        s.fake
            .deliver(vec![kernel(EventKind::Exec, 200, 2_000)])
            .await
    );
    let exec = s
        .until("the exec", |e| {
            is(e, EventKind::Exec, EventSource::Ebpf, (200, 2_000))
        })
        .await;
    assert!(exec.seq > inv.seq, "sequence follows arrival");
    assert_eq!(
        (exec.epoch, inv.epoch),
        (7, 7),
        "stamped with the WAL's epoch"
    );
    s.stop().await.expect("a clean shutdown");
}

#[tokio::test]
async fn starts_and_stops_lost_in_an_overflow_are_found_by_the_next_pass() {
    let fake = FakePlatform::with_table(vec![process(1, 10), process(100, 1_000)]);
    let mut s = start(&fake, SourceChoice::Auto);
    s.until("the inventory", |e| {
        e.kind == EventKind::Snapshot && e.pid == 100
    })
    .await;
    // Two records the ring dropped: a start and an exit.
    s.fake.spawn(process(300, 3_000));
    s.fake.reap(100);
    s.fake.overflow(2);
    let start = s
        .until("the missed start", |e| {
            is(e, EventKind::Start, EventSource::Reconcile, (300, 3_000))
        })
        .await;
    assert_eq!(start.name, "p300");
    s.until("the missed stop", |e| {
        is(e, EventKind::Stop, EventSource::Reconcile, (100, 1_000))
    })
    .await;
    let m = &s.metrics;
    assert_eq!(
        (
            m.kernel_lost.load(Relaxed),
            m.reconcile_missed_starts.load(Relaxed),
            m.reconcile_missed_stops.load(Relaxed)
        ),
        (2, 1, 1)
    );
    s.stop().await.expect("a clean shutdown");
}

#[tokio::test]
async fn what_the_kernel_reported_is_not_reported_again_by_a_pass() {
    let fake = FakePlatform::with_table(vec![process(1, 10), process(100, 1_000)]);
    let mut s = start(&fake, SourceChoice::Auto);
    s.until("the inventory", |e| {
        e.kind == EventKind::Snapshot && e.pid == 100
    })
    .await;
    // The kernel reports both (as it does, before the table shows them).
    let seen = vec![
        kernel(EventKind::Exit, 100, 1_000),
        kernel(EventKind::Exec, 400, 4_000),
    ];
    assert!(s.fake.deliver(seen).await);
    s.fake.reap(100);
    s.fake.spawn(process(400, 4_000));
    let passes = s.status.borrow().cycles;
    s.status_until(|st| st.cycles >= passes + 2).await;
    let events = s.drain(Duration::from_millis(200)).await;
    assert!(
        !events.iter().any(|e| e.source == EventSource::Reconcile),
        "a pass repeated what the kernel said: {events:?}"
    );
    let m = &s.metrics;
    assert_eq!(m.reconcile_missed_starts.load(Relaxed), 0);
    assert_eq!(m.reconcile_missed_stops.load(Relaxed), 0);
    s.stop().await.expect("a clean shutdown");
}

#[tokio::test]
async fn without_the_kernel_source_auto_polls_and_says_why() {
    let fake = FakePlatform::with_table(vec![process(1, 10)]);
    fake.refuse_kernel("scripted: no BTF");
    let mut s = start(&fake, SourceChoice::Auto);
    s.until("the polling inventory", |e| {
        is(e, EventKind::Snapshot, EventSource::Poll, (1, 10))
    })
    .await;
    let status = s.status_until(|st| st.source.is_some()).await;
    assert_eq!(status.source, Some(EventSource::Poll));
    assert_eq!(status.degraded_reason.as_deref(), Some("scripted: no BTF"));
    s.fake.spawn(process(500, 5_000));
    s.until("the polled start", |e| {
        is(e, EventKind::Start, EventSource::Poll, (500, 5_000))
    })
    .await;
    let active = s.stop().await.expect("a clean shutdown");
    assert_eq!(active.source, EventSource::Poll);
}

#[tokio::test]
async fn a_required_kernel_source_that_cannot_start_is_an_error() {
    let fake = FakePlatform::with_table(vec![process(1, 10)]);
    fake.refuse_kernel("scripted: no privilege");
    let s = start(&fake, SourceChoice::Kernel);
    let result = tokio::time::timeout(WAIT, s.task).await.expect("ends");
    match result.expect("task") {
        Err(SensorError::KernelSourceRequired(reason)) => {
            assert_eq!(reason, "scripted: no privilege");
        }
        other => panic!("expected KernelSourceRequired, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reader_that_dies_is_replaced_by_polling_and_said_so() {
    let fake = FakePlatform::with_table(vec![process(1, 10)]);
    let mut s = start(&fake, SourceChoice::Auto);
    s.until("the inventory", |e| e.kind == EventKind::Snapshot)
        .await;
    s.fake.kill_reader();
    let status = s
        .status_until(|st| st.source == Some(EventSource::Poll))
        .await;
    assert_eq!(
        status.degraded_reason.as_deref(),
        Some("the kernel event reader stopped unexpectedly")
    );
    s.until("the polling inventory", |e| {
        is(e, EventKind::Snapshot, EventSource::Poll, (1, 10))
    })
    .await;
    s.fake.spawn(process(900, 9_000));
    s.until("a polled start", |e| {
        is(e, EventKind::Start, EventSource::Poll, (900, 9_000))
    })
    .await;
    s.stop().await.expect("a clean shutdown");
}

#[tokio::test]
async fn a_reader_that_dies_under_a_required_kernel_source_ends_the_sensor() {
    let fake = FakePlatform::with_table(vec![process(1, 10)]);
    let mut s = start(&fake, SourceChoice::Kernel);
    s.until("the inventory", |e| e.kind == EventKind::Snapshot)
        .await;
    s.fake.kill_reader();
    let result = tokio::time::timeout(WAIT, s.task).await.expect("ends");
    match result.expect("task") {
        Err(SensorError::KernelSourceRequired(reason)) => {
            assert_eq!(reason, "the kernel event reader stopped unexpectedly");
        }
        other => panic!("a dead reader must not look like a clean stop: {other:?}"),
    }
}

#[tokio::test]
async fn stop_detaches_and_start_reattaches_with_a_fresh_inventory() {
    let fake = FakePlatform::with_table(vec![process(1, 10)]);
    let mut s = start(&fake, SourceChoice::Auto);
    s.until("the inventory", |e| e.kind == EventKind::Snapshot)
        .await;
    s.command(|reply| Command::Stop { reply }).await;
    s.status_until(|st| st.lifecycle == Lifecycle::Stopped)
        .await;
    assert_eq!(s.fake.starts_and_stops(), (1, 1));
    assert!(
        !s.fake.deliver(vec![kernel(EventKind::Exec, 9, 9)]).await,
        "detached"
    );
    s.fake.spawn(process(600, 6_000));
    s.command(|reply| Command::Start { reply }).await;
    s.until("the new inventory", |e| {
        is(e, EventKind::Snapshot, EventSource::Reconcile, (600, 6_000))
    })
    .await;
    assert_eq!(s.fake.starts_and_stops(), (2, 1));
    s.stop().await.expect("a clean shutdown");
    assert_eq!(fake.starts_and_stops(), (2, 2), "detached at shutdown");
}

#[tokio::test]
async fn a_failed_snapshot_skips_one_pass_and_is_counted() {
    let fake = FakePlatform::with_table(vec![process(1, 10)]);
    let mut s = start(&fake, SourceChoice::Auto);
    s.until("the inventory", |e| e.kind == EventKind::Snapshot)
        .await;
    s.fake.fail_snapshots(1);
    s.fake.spawn(process(700, 7_000));
    s.until("the start found after the failure", |e| {
        is(e, EventKind::Start, EventSource::Reconcile, (700, 7_000))
    })
    .await;
    assert_eq!(s.metrics.snapshot_errors.load(Relaxed), 1);
    assert!(
        s.fake.snapshots() >= 3,
        "inventory, the failed pass, a good one"
    );
    s.stop().await.expect("a clean shutdown");
}

#[tokio::test]
async fn shutdown_drains_what_the_source_still_holds() {
    let fake = FakePlatform::with_table(vec![process(1, 10)]);
    let mut s = start(&fake, SourceChoice::Auto);
    s.until("the inventory", |e| e.kind == EventKind::Snapshot)
        .await;
    let burst: Vec<_> = (0..8)
        .map(|i| kernel(EventKind::Exec, 800 + i, 8_000))
        .collect();
    assert!(s.fake.deliver(burst).await);
    s.shutdown.cancel();
    let out = s.drain(Duration::from_millis(500)).await;
    let execs = out.iter().filter(|e| e.kind == EventKind::Exec).count();
    assert_eq!(execs, 8, "every queued exec is emitted before the end");
    s.task.await.expect("task").expect("a clean shutdown");
}
