//! The connector in-process, without root: a real WAL in a temporary
//! directory, a real broker on a real Unix socket, batches from a channel.
//! What each test names is what the collector's delivery promises
//! (docs/architecture.md, "Delivery"): published once stored, forgotten
//! once acknowledged, held while the gate is closed, sent again after the
//! broker went away, and nothing left to replay after a clean drain.

use std::collections::BTreeSet;

use tokio::task::JoinHandle;

use super::*;
use crate::bus::broker::Broker;
use crate::bus::protocol::TOPIC_EVENTS;
use crate::delivery::wal::tests::batch;
use crate::model::batch::Batch;

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("procmond-connector-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker serving `socket` until `stop`, as the agent runs it.
fn broker_on(socket: &Path) -> (Broker, CancellationToken) {
    let me = rustix::process::geteuid().as_raw();
    let broker = Broker::new(vec![me]);
    let listener = Broker::bind(socket).expect("bind the broker socket");
    let stop = CancellationToken::new();
    tokio::spawn({
        let (b, s) = (broker.clone(), stop.clone());
        async move { b.serve(listener, s).await }
    });
    (broker, stop)
}

/// Everything the test needs to drive one connector.
struct Rig {
    wal: Arc<Wal>,
    metrics: Arc<Metrics>,
    input: mpsc::Sender<Batch>,
    gate: watch::Sender<bool>,
    task: JoinHandle<Result<(), ConnectorError>>,
}

async fn connector(dir: &Path, socket: &Path, gate_open: bool) -> Rig {
    let metrics = Arc::new(Metrics::default());
    let wal = Arc::new(Wal::open(&dir.join("wal"), 1 << 24, metrics.clone()).expect("open WAL"));
    let (input, rx) = mpsc::channel(64);
    let (gate, gate_rx) = watch::channel(gate_open);
    let (_greet_tx, greeting) = watch::channel(Vec::new());
    let initial = connect_at_startup(socket, 1).await.expect("connect");
    let connector = Connector {
        wal: wal.clone(),
        config: ConnectorConfig {
            socket: socket.to_path_buf(),
            buffer_bytes: 10 << 20,
            drain_timeout: Duration::from_secs(5),
        },
        metrics: metrics.clone(),
        backpressure: watch::channel(false).0,
        control: None,
        outbox: None,
        greeting,
        gate: gate_rx,
    };
    let task = tokio::spawn(connector.run(rx, Some(initial)));
    Rig {
        wal,
        metrics,
        input,
        gate,
        task,
    }
}

/// Seqs of the events in the batches that reach `events`, until `want`
/// distinct ones have arrived or `within` passes.
async fn collect(
    events: &mut mpsc::Receiver<Envelope>,
    want: usize,
    within: Duration,
) -> (BTreeSet<u64>, usize) {
    let mut seqs = BTreeSet::new();
    let mut deliveries = 0;
    let deadline = Instant::now() + within;
    while seqs.len() < want {
        let Ok(Some(env)) = tokio::time::timeout_at(deadline, events.recv()).await else {
            break;
        };
        let batch = Batch::parse_slice(&env.payload).expect("a valid batch");
        for entry in batch.iter() {
            seqs.insert(entry.decode().expect("decodes").seq);
            deliveries += 1;
        }
    }
    (seqs, deliveries)
}

#[tokio::test]
async fn stored_batches_are_published_and_forgotten_once_acknowledged() {
    let scratch = Scratch::new("publish");
    let socket = scratch.0.join("b.sock");
    let (broker, _stop) = broker_on(&socket);
    let mut events = broker.subscribe_local(TOPIC_EVENTS, 64).expect("subscribe");
    let rig = connector(&scratch.0, &socket, true).await;
    for first in [1, 4, 7] {
        rig.input.send(batch(first..first + 3)).await.expect("send");
    }
    let (seqs, deliveries) = collect(&mut events, 9, Duration::from_secs(5)).await;
    assert_eq!(seqs, (1..10).collect(), "every stored event published");
    assert_eq!(deliveries, 9, "each event published once");
    drop(rig.input);
    rig.task.await.expect("joins").expect("drains cleanly");
    assert_eq!(
        rig.wal.pending_count(),
        0,
        "acknowledged events leave the WAL"
    );
    assert_eq!(rig.metrics.events_published.load(Relaxed), 9);
}

#[tokio::test]
async fn a_closed_gate_holds_events_in_the_wal_until_it_opens() {
    let scratch = Scratch::new("gate");
    let socket = scratch.0.join("b.sock");
    let (broker, _stop) = broker_on(&socket);
    let mut events = broker.subscribe_local(TOPIC_EVENTS, 64).expect("subscribe");
    let rig = connector(&scratch.0, &socket, false).await;
    rig.input.send(batch(1..4)).await.expect("send");
    let (held, _) = collect(&mut events, 1, Duration::from_millis(300)).await;
    assert!(
        held.is_empty(),
        "published before monitoring began: {held:?}"
    );
    assert_eq!(
        rig.wal.pending_count(),
        3,
        "stored while the gate is closed"
    );
    rig.gate.send(true).expect("open the gate");
    let (seqs, _) = collect(&mut events, 3, Duration::from_secs(5)).await;
    assert_eq!(seqs, (1..4).collect());
    drop(rig.input);
    rig.task.await.expect("joins").expect("drains cleanly");
}

#[tokio::test]
async fn what_a_lost_broker_never_acknowledged_is_sent_again_after_reconnecting() {
    let scratch = Scratch::new("replay");
    let socket = scratch.0.join("b.sock");
    let (first, stop_first) = broker_on(&socket);
    // A sink that never confirms: the broker never acknowledges.
    let mut unconfirmed = first
        .subscribe_durable(TOPIC_EVENTS, 64)
        .expect("subscribe");
    let rig = connector(&scratch.0, &socket, true).await;
    rig.input.send(batch(1..6)).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), unconfirmed.recv())
        .await
        .expect("delivered to the first broker")
        .expect("a delivery");
    assert_eq!(got.batch.len(), 5);
    assert_eq!(
        rig.wal.pending_count(),
        5,
        "unacknowledged: still in the WAL"
    );

    // The broker goes away and another takes its socket.
    stop_first.cancel();
    drop(unconfirmed);
    let _ = std::fs::remove_file(&socket);
    let (second, _stop) = broker_on(&socket);
    let mut events = second.subscribe_local(TOPIC_EVENTS, 64).expect("subscribe");
    rig.input
        .send(batch(6..8))
        .await
        .expect("send during the outage");
    // First reconnect after FIRST_BACKOFF (1 s).
    let (seqs, _) = collect(&mut events, 7, Duration::from_secs(10)).await;
    assert_eq!(
        seqs,
        (1..8).collect(),
        "the unacknowledged five sent again, then the new two"
    );
    drop(rig.input);
    rig.task.await.expect("joins").expect("drains cleanly");
    assert_eq!(rig.wal.pending_count(), 0);
}
