//! The whole collector in-process, without root: the fake platform for the
//! OS, a real WAL in a temporary directory, a real broker on a real socket.
//! Events reach a subscriber; what a subscriber never confirmed survives a
//! restart and is replayed; in service mode the collector registers, holds
//! events until `begin_monitoring`, answers health, beats and deregisters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{CollectorError, CollectorOptions};
use crate::bus::broker::{Broker, Durable};
use crate::bus::client;
use crate::bus::protocol::{self, Envelope, Status, TOPIC_EVENTS};
use crate::bus::rpc::{Lifecycle, Registration, Request};
use crate::config::ProcmondConfig;
use crate::metrics::Metrics;
use crate::model::batch::Batch;
use crate::model::{EventKind, EventSource, ProcessEvent};
use crate::platform::fake::FakePlatform;
use crate::sensor::ActiveSource;
use crate::sources::snapshot::ProcessInfo;

const WAIT: Duration = Duration::from_secs(10);

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("procmond-coll-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn broker(dir: &Path, stop: &CancellationToken) -> Broker {
    let broker = Broker::new(vec![rustix::process::geteuid().as_raw()]);
    let listener = Broker::bind(&dir.join("bus.sock")).expect("bind");
    tokio::spawn({
        let (b, s) = (broker.clone(), stop.clone());
        async move { b.serve(listener, s).await }
    });
    broker
}

fn table() -> FakePlatform {
    FakePlatform::with_table(vec![ProcessInfo {
        pid: 1,
        name: "init".into(),
        start_time: Some(10),
        ..ProcessInfo::default()
    }])
}

fn exec(pid: u32, start_time: i64) -> ProcessEvent {
    let mut e = ProcessEvent::new(
        EventKind::Exec,
        EventSource::Ebpf,
        crate::clock::now_unix_ns(),
        pid,
    );
    e.start_time = Some(start_time);
    e
}

type Run = JoinHandle<Result<ActiveSource, CollectorError>>;

async fn collector(
    dir: &Path,
    fake: &FakePlatform,
    service: bool,
    shutdown: &CancellationToken,
) -> (Run, Arc<Metrics>) {
    let config = ProcmondConfig {
        collector_id: "fake-1".into(),
        collection_interval_secs: 1,
        heartbeat_interval_secs: 1,
        ..ProcmondConfig::default()
    };
    let options = CollectorOptions {
        config,
        wal_dir: dir.join("wal"),
        socket: dir.join("bus.sock"),
        drain_timeout: Duration::from_millis(500),
        service,
        platform: Arc::new(fake.clone()),
    };
    let connection = client::connect(&dir.join("bus.sock"))
        .await
        .expect("connect");
    let metrics = Arc::new(Metrics::default());
    let run = super::run(options, connection, metrics.clone(), shutdown.clone());
    (tokio::spawn(run), metrics)
}

/// The `(pid, start_time, seq)` of every event in `batch`.
fn keys(batch: &Batch) -> Vec<(u32, Option<i64>, u64)> {
    batch
        .iter()
        .map(|e| e.decode().expect("decodes"))
        .map(|e| (e.pid, e.start_time, e.seq))
        .collect()
}

/// Reads deliveries until `(pid, start_time)` shows up; confirms each one
/// when `confirm`. Returns the event's sequence number.
async fn delivered(rx: &mut mpsc::Receiver<Durable>, key: (u32, i64), confirm: bool) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("delivered in time")
            .expect("a delivery");
        let found = keys(&d.batch)
            .into_iter()
            .find(|(pid, start, _)| (*pid, *start) == (key.0, Some(key.1)));
        if confirm {
            let _ = d.done.send(());
        }
        if let Some((_, _, seq)) = found {
            return seq;
        }
    }
}

#[tokio::test]
async fn unconfirmed_events_survive_a_restart_and_are_replayed_with_their_sequence() {
    let dir = Dir::new("replay");
    let stop = CancellationToken::new();
    let broker = broker(&dir.0, &stop);
    let fake = table();

    // First life: the sink receives the exec but never confirms it.
    let mut sink = broker.subscribe_durable(TOPIC_EVENTS, 64).expect("sub");
    let shutdown = CancellationToken::new();
    let (run, metrics) = collector(&dir.0, &fake, false, &shutdown).await;
    while !fake.deliver(vec![exec(4242, 42)]).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = delivered(&mut sink, (4242, 42), false).await;
    shutdown.cancel();
    let ended = tokio::time::timeout(WAIT, run).await.expect("ends");
    ended.expect("task").expect("a clean stop, drain timed out");
    assert!(
        metrics
            .wal_pending
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the unconfirmed batch is still in the WAL"
    );
    broker.close_local();
    drop(sink);

    // Second life: the same WAL; this sink confirms.
    let mut sink = broker.subscribe_durable(TOPIC_EVENTS, 64).expect("sub");
    let shutdown = CancellationToken::new();
    let (run, _) = collector(&dir.0, &fake, false, &shutdown).await;
    let replayed = delivered(&mut sink, (4242, 42), true).await;
    assert_eq!(replayed, first, "replayed under the sequence it had");
    shutdown.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("ends")
        .expect("task")
        .expect("a clean stop");
    stop.cancel();
}

/// The next envelope on `rx` that `want` accepts.
async fn next_matching(
    rx: &mut mpsc::Receiver<Envelope>,
    what: &str,
    want: impl Fn(&Envelope) -> bool,
) -> Envelope {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let env = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
            .expect("open");
        if want(&env) {
            return env;
        }
    }
}

fn registration(env: &Envelope) -> Option<Registration> {
    serde_json::from_slice(&env.payload).ok()
}

#[tokio::test]
async fn in_service_mode_events_wait_for_begin_monitoring_and_control_is_answered() {
    let dir = Dir::new("service");
    let stop = CancellationToken::new();
    let broker = broker(&dir.0, &stop);
    let fake = table();
    let mut registrations = broker
        .subscribe_local(protocol::TOPIC_REGISTRATION, 64)
        .expect("sub");
    let mut beats = broker
        .subscribe_local(&protocol::heartbeat_topic("fake-1"), 64)
        .expect("sub");
    let mut events = broker.subscribe_local(TOPIC_EVENTS, 64).expect("sub");
    let shutdown = CancellationToken::new();
    let (run, _) = collector(&dir.0, &fake, true, &shutdown).await;

    let ready = next_matching(&mut registrations, "the registration", |e| {
        matches!(registration(e), Some(Registration::Ready { .. }))
    })
    .await;
    assert!(matches!(
        registration(&ready),
        Some(Registration::Ready { collector_id }) if collector_id == "fake-1"
    ));
    while !fake.deliver(vec![exec(5151, 51)]).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let early = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
    assert!(early.is_err(), "published before begin_monitoring");

    let go = serde_json::to_vec(&Lifecycle::BeginMonitoring).expect("json");
    broker
        .publish_local(protocol::TOPIC_LIFECYCLE, go)
        .await
        .expect("broadcast");
    next_matching(&mut events, "the held exec", |e| {
        keys(&Batch::parse_slice(&e.payload).expect("a valid batch"))
            .iter()
            .any(|(pid, start, _)| (*pid, *start) == (5151, Some(51)))
    })
    .await;

    let ask = serde_json::to_vec(&Request::HealthCheck { detailed: false }).expect("json");
    let topic = protocol::control_topic("fake-1");
    let answer = broker.request_local(&topic, ask, WAIT).await;
    assert_eq!(answer.status, Status::Ok);
    let body: serde_json::Value = serde_json::from_slice(&answer.payload).expect("json");
    assert_eq!(
        (body["collector_id"].as_str(), body["source"].as_str()),
        (Some("fake-1"), Some("ebpf"))
    );
    next_matching(&mut beats, "a heartbeat", |_| true).await;

    let bye = serde_json::to_vec(&Lifecycle::Shutdown).expect("json");
    broker
        .publish_local(protocol::TOPIC_LIFECYCLE, bye)
        .await
        .expect("broadcast");
    let ended = tokio::time::timeout(WAIT, run).await.expect("ends");
    ended.expect("task").expect("a graceful shutdown");
    next_matching(&mut registrations, "the deregistration", |e| {
        matches!(registration(e), Some(Registration::Deregister { .. }))
    })
    .await;
    stop.cancel();
}
