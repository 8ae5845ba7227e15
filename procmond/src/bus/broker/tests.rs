//! The broker against hostile peers, in-process: a real broker on a real
//! Unix socket in a temporary directory, peers speaking the real protocol.
//! No root needed: the peers are this process's own uid.

#![cfg(unix)]

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Broker;
use crate::bus::authz::Operators;
use crate::bus::client::{self, BusReader, BusWriter};
use crate::bus::limits::BrokerLimits;
use crate::bus::protocol::{Envelope, FrameKind, MAX_FRAME_BYTES, Status, TOPIC_AGENT};
use crate::bus::rpc::{Registration, Request, to_payload};

struct Running {
    broker: Broker,
    socket: PathBuf,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The agent's kind of broker, with this process's uid as operator.
fn start(tag: &str, limits: BrokerLimits) -> Running {
    let me = rustix::process::geteuid().as_raw();
    let ops = Operators {
        read_uids: vec![me],
        admin_uids: vec![me],
        ..Operators::default()
    };
    let dir = std::env::temp_dir().join(format!("procmond-broker-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let socket = dir.join("b.sock");
    let broker = Broker::with_registration(Vec::new(), limits, ops);
    let listener = Broker::bind(&socket).expect("bind");
    let stop = CancellationToken::new();
    tokio::spawn({
        let (b, s) = (broker.clone(), stop.clone());
        async move { b.serve(listener, s).await }
    });
    Running {
        broker,
        socket,
        stop,
    }
}

async fn peer(r: &Running) -> (BusWriter, BusReader) {
    client::connect(&r.socket).await.expect("connect")
}

/// The next frame, within a second.
async fn next(reader: &mut BusReader) -> Option<Envelope> {
    match tokio::time::timeout(Duration::from_secs(1), reader.next()).await {
        Ok(Some(Ok(env))) => Some(env),
        _ => None,
    }
}

/// Serves `control.agent` in-process, answering every call `ok`.
fn answer_agent_calls(broker: &Broker) -> tokio::task::JoinHandle<()> {
    let mut agent = broker.serve_local(TOPIC_AGENT, 64).expect("serve");
    let broker = broker.clone();
    tokio::spawn(async move {
        while let Some(req) = agent.recv().await {
            broker.respond(&req, Status::Ok, b"{}".to_vec());
        }
    })
}

fn register(id: &str, credential: Option<String>) -> Envelope {
    let msg = Registration::Register {
        collector_id: id.into(),
        collector_type: "process-monitor".into(),
        version: "test".into(),
        pid: 1,
        hostname: "h".into(),
        source: "poll".into(),
        degraded_reason: None,
        capabilities: serde_json::Value::Null,
        credential,
    };
    Envelope::new(
        FrameKind::Publish,
        crate::bus::protocol::TOPIC_REGISTRATION,
        7,
        to_payload(&msg),
    )
}

fn request(topic: &str, corr: u64) -> Envelope {
    let health = to_payload(&Request::HealthCheck { detailed: false });
    Envelope::new(FrameKind::Request, topic, corr, health)
}

#[tokio::test]
async fn requests_to_publish_topics_are_refused() {
    let r = start("req", BrokerLimits::default());
    let mut beats = r
        .broker
        .subscribe_local("control.health.heartbeat.+", 16)
        .expect("sub");
    let (mut w, mut rd) = peer(&r).await;
    for topic in [
        "control.health.heartbeat.procmond",
        "control.collector.registration",
        "events.process.exec",
    ] {
        w.send(&request(topic, 3)).await.expect("send");
        let answer = next(&mut rd).await.expect("an answer");
        assert_eq!(
            (answer.kind, answer.status),
            (FrameKind::Response, Status::InvalidRequest),
            "{topic}"
        );
    }
    assert!(
        beats.try_recv().is_err(),
        "a request reached the heartbeat handler"
    );
    assert_eq!(r.broker.stats().requests_refused.load(Relaxed), 3);
}

#[tokio::test]
async fn registration_needs_the_credential_and_a_fresh_one_takes_over() {
    let r = start("cred", BrokerLimits::default());
    let mut regs = r
        .broker
        .subscribe_local(crate::bus::protocol::TOPIC_REGISTRATION, 16)
        .expect("sub");
    let (mut intruder, mut intruder_rd) = peer(&r).await;
    intruder
        .send(&register("procmond", None))
        .await
        .expect("send");
    let refused = next(&mut intruder_rd).await.expect("refusal");
    assert_eq!(refused.kind, FrameKind::Error);
    assert!(String::from_utf8_lossy(&refused.payload).contains("credential"));

    let first = r.broker.issue_credential("procmond").expect("credential");
    let (mut old, mut old_rd) = peer(&r).await;
    old.send(&register("procmond", Some(first.clone())))
        .await
        .expect("send");
    assert_eq!(next(&mut old_rd).await.expect("ack").kind, FrameKind::Ack);
    // Subscribers never see the credential.
    let seen = regs.recv().await.expect("delivered");
    assert!(!String::from_utf8_lossy(&seen.payload).contains(&first));

    // A restart: the new instance's credential takes the id from the stale connection.
    let second = r.broker.issue_credential("procmond").expect("credential");
    let (mut new, mut new_rd) = peer(&r).await;
    new.send(&register("procmond", Some(second)))
        .await
        .expect("send");
    assert_eq!(next(&mut new_rd).await.expect("ack").kind, FrameKind::Ack);
    assert!(
        next(&mut old_rd).await.is_none(),
        "the stale connection is closed"
    );
    assert_eq!(r.broker.stats().takeovers.load(Relaxed), 1);
    // The old credential is spent.
    let (mut late, mut late_rd) = peer(&r).await;
    late.send(&register("procmond", Some(first)))
        .await
        .expect("send");
    assert_eq!(
        next(&mut late_rd).await.expect("refusal").kind,
        FrameKind::Error
    );
}

#[tokio::test]
async fn responses_count_only_from_the_connection_that_serves_the_call() {
    let r = start("resp", BrokerLimits::default());
    let credential = r.broker.issue_credential("c1").expect("credential");
    let (mut server, mut server_rd) = peer(&r).await;
    server
        .send(&register("c1", Some(credential)))
        .await
        .expect("register");
    server
        .subscribe("control.collector.c1", 8)
        .await
        .expect("subscribe");
    next(&mut server_rd).await.expect("ack");
    next(&mut server_rd).await.expect("ack");
    // A peer that subscribes to the collector's topic without holding it
    // gets no requests; one that guesses call ids gets no say.
    let (mut squatter, mut squatter_rd) = peer(&r).await;
    squatter
        .subscribe("control.collector.#", 9)
        .await
        .expect("subscribe");
    next(&mut squatter_rd).await.expect("ack");
    let (mut asker, mut asker_rd) = peer(&r).await;
    asker
        .send(&request("control.collector.c1", 42))
        .await
        .expect("ask");
    let call = next(&mut server_rd)
        .await
        .expect("the request reaches the holder");
    assert_eq!(call.kind, FrameKind::Request);
    assert!(
        next(&mut squatter_rd).await.is_none(),
        "the squatter got the request"
    );
    for guess in call.correlation_id.saturating_sub(5)..call.correlation_id + 5 {
        let forged = Envelope::response(guess, Status::Ok, b"forged".to_vec());
        squatter.send(&forged).await.expect("send");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .send(&Envelope::response(
            call.correlation_id,
            Status::Ok,
            b"real".to_vec(),
        ))
        .await
        .expect("answer");
    let answer = next(&mut asker_rd).await.expect("answered");
    assert_eq!(
        (answer.correlation_id, answer.payload.as_slice()),
        (42, b"real".as_slice())
    );
    assert!(r.broker.stats().responses_refused.load(Relaxed) >= 1);
}

#[tokio::test]
async fn answered_calls_leave_no_timer_behind() {
    let limits = BrokerLimits {
        max_rpc_deadline_secs: 600,
        ..BrokerLimits::default()
    };
    let r = start("timers", limits);
    let responder = answer_agent_calls(&r.broker);
    let (mut w, mut rd) = peer(&r).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut ask = async |corr| {
        let mut env = request(TOPIC_AGENT, corr);
        env.deadline_unix_ms = u64::MAX / 2;
        w.send(&env).await.expect("ask");
        assert_eq!(next(&mut rd).await.expect("answer").status, Status::Ok);
    };
    ask(0).await;
    let before = metrics.num_alive_tasks();
    for corr in 1..=300 {
        ask(corr).await;
    }
    tokio::task::yield_now().await;
    let after = metrics.num_alive_tasks();
    assert!(
        after < before + 10,
        "timers outlive answered calls: {before} tasks before, {after} after"
    );
    assert!(r.broker.routes().pending.is_empty());
    responder.abort();
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_dropped_and_publishers_never_wait() {
    let limits = BrokerLimits {
        max_queued_bytes_per_connection: 2 * MAX_FRAME_BYTES,
        max_queued_bytes: 3 * MAX_FRAME_BYTES,
        ..BrokerLimits::default()
    };
    let r = start("stall", limits);
    // Three peers subscribe (each several times over) and never read.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let (mut w, rd) = peer(&r).await;
        for (i, p) in ["app.#", "app.data", "#"].into_iter().enumerate() {
            w.subscribe(p, i as u64).await.expect("subscribe");
        }
        stalled.push((w, rd));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut publisher, mut publisher_rd) = peer(&r).await;
    let started = std::time::Instant::now();
    let mut peak = 0;
    for corr in 0..200u64 {
        let env = Envelope::new(FrameKind::Publish, "app.data", corr, vec![7; 256 * 1024]);
        publisher.send(&env).await.expect("publish");
        assert_eq!(
            next(&mut publisher_rd).await.expect("ack").correlation_id,
            corr
        );
        peak = peak.max(r.broker.inner.budget.total());
    }
    // 200 acks for 50 MiB of deliveries nobody reads: nothing waited 5 s
    // per subscriber, and what was queued stayed within the caps.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        peak <= 3 * MAX_FRAME_BYTES + MAX_FRAME_BYTES,
        "queued peak {peak}"
    );
    assert_eq!(r.broker.stats().subscribers_dropped.load(Relaxed), 3);
    for (_, mut rd) in stalled {
        let mut frames = 0;
        while next(&mut rd).await.is_some() {
            frames += 1;
        }
        assert!(
            frames < 200,
            "one delivery per publish, and the stalled peer was cut off"
        );
    }
}

#[tokio::test]
async fn a_connection_gets_one_delivery_however_many_subscriptions_match() {
    let r = start("once", BrokerLimits::default());
    let (mut w, mut rd) = peer(&r).await;
    for (i, p) in ["app.#", "app.x", "#", "+.x"].into_iter().enumerate() {
        w.subscribe(p, i as u64).await.expect("subscribe");
        next(&mut rd).await.expect("ack");
    }
    let (mut publisher, mut publisher_rd) = peer(&r).await;
    publisher
        .send(&Envelope::new(
            FrameKind::Publish,
            "app.x",
            1,
            b"hi".to_vec(),
        ))
        .await
        .expect("publish");
    next(&mut publisher_rd).await.expect("ack");
    assert_eq!(
        next(&mut rd).await.expect("delivered").kind,
        FrameKind::Deliver
    );
    assert!(next(&mut rd).await.is_none(), "a second copy was delivered");
}

#[tokio::test]
async fn a_flood_of_idle_connections_never_locks_out_an_operator_or_a_collector() {
    let limits = BrokerLimits {
        max_connections_per_uid: 8,
        ..BrokerLimits::default()
    };
    let r = start("flood", limits);
    answer_agent_calls(&r.broker);
    let credential = r.broker.issue_credential("c1").expect("credential");
    let (mut collector, mut collector_rd) = peer(&r).await;
    collector
        .send(&register("c1", Some(credential)))
        .await
        .expect("register");
    next(&mut collector_rd).await.expect("ack");
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(peer(&r).await);
    }
    let (mut operator, mut operator_rd) = peer(&r).await;
    operator.send(&request(TOPIC_AGENT, 5)).await.expect("ask");
    assert_eq!(
        next(&mut operator_rd)
            .await
            .expect("answered at once")
            .status,
        Status::Ok
    );
    assert!(r.broker.stats().connections_evicted.load(Relaxed) >= 33);
    assert!(r.broker.routes().conns.len() <= 8);
    // The registered collector was never the one closed.
    let beat = crate::bus::rpc::Heartbeat {
        collector_id: "c1".into(),
        sequence: 1,
        status: "healthy".into(),
        timestamp: "t".into(),
        metrics: crate::health::Summary::default(),
    };
    let topic = crate::bus::protocol::heartbeat_topic("c1");
    collector
        .send(&Envelope::new(
            FrameKind::Publish,
            &topic,
            9,
            to_payload(&beat),
        ))
        .await
        .expect("beat");
    assert_eq!(
        next(&mut collector_rd).await.expect("ack").kind,
        FrameKind::Ack
    );
}

/// At the per-uid cap, the connection closed is the least recently active
/// one, also when every connection was active within the same millisecond
/// (a millisecond clock tied them, and the broker then closed one of them
/// in hash order: a busy peer lost its connection instead of an idle one).
#[tokio::test]
async fn the_least_recently_active_connection_is_the_one_evicted() {
    let limits = BrokerLimits {
        max_connections_per_uid: 3,
        ..BrokerLimits::default()
    };
    for round in 0..20 {
        let r = start(&format!("lru{round}"), limits);
        let mut peers = Vec::new();
        for i in 0..3 {
            let (mut w, mut rd) = peer(&r).await;
            w.subscribe(&format!("app.t{i}"), 1)
                .await
                .expect("subscribe");
            assert_eq!(next(&mut rd).await.expect("ack").kind, FrameKind::Ack);
            peers.push((w, rd));
        }
        let _fourth = peer(&r).await;
        let (_w, oldest) = &mut peers[0];
        let closed = tokio::time::timeout(Duration::from_secs(1), oldest.next()).await;
        assert!(
            matches!(closed, Ok(None)),
            "round {round}: the least recently active connection was closed"
        );
        for (w, rd) in &mut peers[1..] {
            w.subscribe("app.again", 2).await.expect("subscribe");
            assert_eq!(
                next(rd).await.map(|e| e.kind),
                Some(FrameKind::Ack),
                "round {round}: a more recently active connection still served"
            );
        }
    }
}
