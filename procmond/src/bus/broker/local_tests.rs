//! The broker's in-process side (`local.rs`) with a real collector-side
//! peer on a real socket: when a publisher is acknowledged depends on the
//! kind of local subscriber (queued for a plain one, confirmed for a sink),
//! and the agent's own publishes and requests reach who serves them.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::bus::client::{self, BusReader, BusWriter};
use crate::bus::protocol::{
    Envelope, FrameKind, Status, TOPIC_AGENT, TOPIC_EVENT_BATCH, TOPIC_EVENTS,
};
use crate::delivery::wal::tests::batch;

struct Running {
    broker: Broker,
    dir: std::path::PathBuf,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(tag: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("procmond-local-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let broker = Broker::new(vec![rustix::process::geteuid().as_raw()]);
    let listener = Broker::bind(&dir.join("b.sock")).expect("bind");
    let stop = CancellationToken::new();
    tokio::spawn({
        let (b, s) = (broker.clone(), stop.clone());
        async move { b.serve(listener, s).await }
    });
    Running { broker, dir, stop }
}

async fn publisher(r: &Running) -> (BusWriter, BusReader) {
    client::connect(&r.dir.join("b.sock"))
        .await
        .expect("connect")
}

async fn publish(w: &mut BusWriter, key: u64) {
    let env = Envelope::new(
        FrameKind::Publish,
        TOPIC_EVENT_BATCH,
        key,
        batch([key]).as_bytes().to_vec(),
    );
    w.send(&env).await.expect("publish");
}

/// The acknowledgement for `key`, if one comes within `within`.
async fn ack(r: &mut BusReader, key: u64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(env))) = tokio::time::timeout_at(deadline, r.next()).await {
        if env.kind == FrameKind::Ack && env.correlation_id == key {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn a_sink_subscriber_is_acknowledged_only_once_it_confirms() {
    let running = start("durable");
    let mut sink = running
        .broker
        .subscribe_durable(TOPIC_EVENTS, 8)
        .expect("subscribe");
    let (mut w, mut r) = publisher(&running).await;
    publish(&mut w, 41).await;
    let delivery = tokio::time::timeout(Duration::from_secs(2), sink.recv())
        .await
        .expect("delivered")
        .expect("a delivery");
    assert!(
        !ack(&mut r, 41, Duration::from_millis(300)).await,
        "acknowledged before the sink stored it"
    );
    delivery.done.send(()).expect("confirm");
    assert!(
        ack(&mut r, 41, Duration::from_secs(2)).await,
        "acknowledged once confirmed"
    );
}

#[tokio::test]
async fn a_plain_subscriber_is_acknowledged_on_queueing_and_close_local_ends_it() {
    let running = start("plain");
    let mut events = running
        .broker
        .subscribe_local(TOPIC_EVENTS, 8)
        .expect("subscribe");
    let (mut w, mut r) = publisher(&running).await;
    publish(&mut w, 7).await;
    assert!(ack(&mut r, 7, Duration::from_secs(2)).await);
    assert_eq!(events.recv().await.expect("delivered").correlation_id, 7);
    running.broker.close_local();
    assert!(events.recv().await.is_none(), "closed: the receiver ends");
}

#[tokio::test]
async fn the_agents_own_publishes_and_requests_reach_who_serves_them() {
    let running = start("rpc");
    let broker = &running.broker;
    let mut events = broker.subscribe_local(TOPIC_EVENTS, 8).expect("subscribe");
    broker
        .publish_local(TOPIC_EVENT_BATCH, batch([3]).as_bytes().to_vec())
        .await
        .expect("a valid publish");
    let got = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
    assert!(matches!(got, Ok(Some(_))), "local publish delivered");
    assert!(
        broker
            .publish_local("events.process", b"not a batch".to_vec())
            .await
            .is_err(),
        "an invalid batch is refused in-process too"
    );

    let unanswered = broker
        .request_local(
            "control.collector.nobody",
            b"{}".to_vec(),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(unanswered.status, Status::Unavailable, "nobody serves it");

    let mut server = broker.serve_local(TOPIC_AGENT, 8).expect("serve");
    let answering = tokio::spawn({
        let broker = broker.clone();
        async move {
            let req = server.recv().await.expect("a request");
            broker.respond(&req, Status::Ok, req.payload.clone());
        }
    });
    let answer = broker
        .request_local(TOPIC_AGENT, b"ping".to_vec(), Duration::from_secs(2))
        .await;
    tokio::time::timeout(Duration::from_secs(2), answering)
        .await
        .expect("the server answered")
        .expect("server task");
    assert_eq!(
        (answer.status, answer.payload.as_slice()),
        (Status::Ok, &b"ping"[..])
    );
}

/// In-process event subscribers get the batch the broker validated, cut to
/// the kinds their pattern matches, and never a plain publish; a pattern
/// that matches no event topic is refused up front.
#[tokio::test]
async fn event_subscribers_get_validated_batches_of_their_kinds_only() {
    use crate::bus::protocol::event_topic;
    use crate::model::batch::BatchBuilder;
    use crate::model::{EventKind, EventSource, ProcessEvent};

    let running = start("batches");
    let broker = &running.broker;
    let mut exits = broker
        .subscribe_batches(&event_topic(EventKind::Exit), 8)
        .expect("subscribe");
    let mut sink = broker.subscribe_durable("events.#", 8).expect("subscribe");
    assert!(broker.subscribe_durable("control.#", 8).is_err());
    assert!(broker.subscribe_batches("app.x", 8).is_err());

    broker
        .publish_local("events.other", b"plain".to_vec())
        .await
        .expect("plain publish");
    let mut b = BatchBuilder::new();
    for (seq, kind) in [
        (1, EventKind::Exec),
        (2, EventKind::Exit),
        (3, EventKind::Exec),
    ] {
        let mut e = ProcessEvent::new(kind, EventSource::Ebpf, 1, 42);
        e.seq = seq;
        b.push(&e).expect("encodes");
    }
    let (mut w, _r) = publisher(&running).await;
    let env = Envelope::new(
        FrameKind::Publish,
        TOPIC_EVENT_BATCH,
        9,
        b.finish().as_bytes().to_vec(),
    );
    w.send(&env).await.expect("publish");

    let within = Duration::from_secs(2);
    let exit = tokio::time::timeout(within, exits.recv())
        .await
        .expect("in time")
        .expect("a batch");
    let seqs: Vec<u64> = exit.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2], "only the exit");
    let whole = tokio::time::timeout(within, sink.recv())
        .await
        .expect("in time")
        .expect("a delivery");
    assert_eq!(
        whole.batch.len(),
        3,
        "the sink got the plain publish or a cut batch"
    );
    assert!(whole.batch.iter().all(|e| e.event().is_ok()));
}
