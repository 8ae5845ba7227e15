//! End-to-end: the agent, its broker and sink, and a real collector, through
//! outages, crashes, restarts, slow consumers and hostile peers.
//!
//! Linux only: it drives the Linux build (eBPF, procfs, Unix sockets and
//! modes); on other targets this test crate is empty but still type-checks.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use common::agent::{Agent, AgentDir, collector_pids, ctl, markers_in_sink};
use common::{entity_id, exits_of, kill, marker, run_shell, runtime};
use procmond::bus::broker::Broker;
use procmond::bus::protocol::{self, Envelope, FrameKind};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn marker_execs<'a>(events: &'a [Value], m: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "exec" && e["argv"][3].as_str().is_some_and(|a| a.starts_with(m)))
        .collect()
}

fn assert_unique_seq(events: &[Value]) {
    let mut seen = HashSet::new();
    for e in events {
        let key = (
            e["collector_id"].as_str().unwrap_or("").to_string(),
            e["epoch"].as_u64().unwrap_or(0),
            e["seq"].as_u64().unwrap_or(0),
        );
        assert!(seen.insert(key.clone()), "duplicate {key:?} in the sink");
    }
}

#[test]
fn agent_sink_gets_every_marker_exec_and_exit_once() {
    let dir = AgentDir::new("agent300");
    let config = dir.write_config("", "", true);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let m = marker("a300");
    run_shell(&format!(
        "i=0; while [ $i -lt 300 ]; do /bin/sh -c 'exit 3' {m}-$i; i=$((i+1)); done"
    ));
    let events = dir.wait_for_sink(Duration::from_secs(30), "300 exec and 300 exit", |ev| {
        let execs = marker_execs(ev, &m);
        let ids: HashSet<&str> = execs.iter().map(|e| entity_id(e)).collect();
        execs.len() >= 300
            && ev
                .iter()
                .filter(|e| e["kind"] == "exit" && ids.contains(entity_id(e)))
                .count()
                >= 300
    });
    let execs = marker_execs(&events, &m);
    assert_eq!(execs.len(), 300);
    // Each exec's exit by entity_id: exactly one each, never by pid.
    let all_exits: Vec<&Value> = events.iter().filter(|e| e["kind"] == "exit").collect();
    let exits = exits_of("the agent's marker processes", &execs, &all_exits);
    assert_eq!(exits.len(), 300);
    assert!(exits.iter().all(|e| e["exit_code"] == 3), "{exits:?}");
    assert_unique_seq(&events);
    let (ok, log) = agent.stop();
    assert!(ok, "agent exit status; log:\n{log}");
    assert!(log.contains("collector stopped"), "{log}");
}

/// Acknowledged batches leave the collector's WAL with the next append or a
/// second later (`Wal::settle`); a clean stop must not leave the last of
/// them behind for the next start to replay.
#[test]
fn a_clean_stop_leaves_nothing_to_replay() {
    let dir = AgentDir::new("clean-stop");
    let config = dir.write_config("", "", true);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    markers_in_sink(&dir, &marker("clean"), 50, Duration::from_secs(60));
    let (ok, log) = agent.stop();
    assert!(ok, "agent exit status; log:\n{log}");
    assert!(
        !log.contains("stopping with unacknowledged events"),
        "the collector drained before it stopped:\n{log}"
    );
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let log = agent.log();
    assert!(
        !log.contains("replaying unacknowledged events from the WAL"),
        "a clean stop left acknowledged batches in the WAL:\n{log}"
    );
    let (ok, log) = agent.stop();
    assert!(ok, "second run's exit status; log:\n{log}");
}

#[test]
fn outage_and_collector_crash_lose_nothing() {
    let dir = AgentDir::new("crash");
    let config = dir.write_config("", "", true);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let before = collector_pids(agent.pid());
    assert_eq!(before.len(), 1, "one collector under the agent");

    agent.signal("STOP");
    let m = marker("crash");
    run_shell(&format!(
        "i=0; while [ $i -lt 200 ]; do /bin/sh -c 'exit 0' {m}-$i; i=$((i+1)); done"
    ));
    std::thread::sleep(Duration::from_millis(1500)); // captured into the WAL
    kill("KILL", before[0]);
    agent.signal("CONT");

    let events = dir.wait_for_sink(Duration::from_secs(60), "the 200 exec events", |ev| {
        marker_execs(ev, &m).len() >= 200
    });
    let execs = marker_execs(&events, &m);
    let args: HashSet<&str> = execs.iter().filter_map(|e| e["argv"][3].as_str()).collect();
    assert_eq!(args.len(), 200, "every marker");
    assert_eq!(execs.len(), 200, "each once");
    assert_unique_seq(&events);
    let after = collector_pids(agent.pid());
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the agent restarted the collector");
    let log = agent.log();
    assert!(log.contains("restarting collector"), "{log}");
    assert!(
        log.contains("replaying unacknowledged events from the WAL"),
        "{log}"
    );
}

#[test]
fn a_wiped_wal_starts_a_new_epoch_and_loses_nothing() {
    let dir = AgentDir::new("wipe");
    let config = dir.write_config("", "", true);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let m = marker("wipe");
    let spawn = |tag: &str| {
        run_shell(&format!(
            "i=0; while [ $i -lt 150 ]; do /bin/sh -c 'exit 0' {m}-{tag}$i; i=$((i+1)); done"
        ))
    };
    spawn("a");
    dir.wait_for_sink(Duration::from_secs(60), "150 execs before the wipe", |ev| {
        marker_execs(ev, &format!("{m}-a")).len() >= 150
    });
    // The collector dies and its WAL is wiped before the agent restarts it.
    let before = collector_pids(agent.pid());
    agent.signal("STOP");
    kill("KILL", before[0]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(dir.wal()).expect("wipe the WAL");
    agent.signal("CONT");
    agent.wait_for_log(
        "new WAL: events are numbered from 1",
        Duration::from_secs(60),
    );
    // The restarted collector attaches its probes before the next markers.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while agent.log().matches("monitoring started").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "collector did not restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    spawn("b");
    let events = dir.wait_for_sink(Duration::from_secs(60), "150 execs after the wipe", |ev| {
        marker_execs(ev, &format!("{m}-b")).len() >= 150
    });
    let epoch = |tag: &str| -> HashSet<u64> {
        marker_execs(&events, &format!("{m}-{tag}"))
            .iter()
            .filter_map(|e| e["epoch"].as_u64())
            .collect()
    };
    let (old, new) = (epoch("a"), epoch("b"));
    assert_eq!(
        (old.len(), new.len()),
        (1, 1),
        "one epoch each: {old:?} {new:?}"
    );
    assert_ne!(old, new, "the new WAL has a new epoch");
    // The new epoch numbers from 1 again: its first events (the inventory)
    // reuse seqs the old epoch had stored, and still reach the sink.
    let new_epoch = new.iter().next().copied();
    assert!(
        events
            .iter()
            .any(|e| e["epoch"].as_u64() == new_epoch && e["seq"] == 1),
        "seq 1 of the new epoch is in the sink"
    );
    assert_unique_seq(&events);
}

/// The next frame, or a failed test after 10 s.
async fn next_within(
    r: &mut procmond::bus::client::BusReader,
) -> Option<Result<Envelope, protocol::ProtocolError>> {
    tokio::time::timeout(Duration::from_secs(10), r.next())
        .await
        .expect("an answer in time")
}

#[test]
fn a_local_peer_cannot_exhaust_the_broker() {
    let dir = AgentDir::new("limits");
    let config = dir.write_config("", "", true);
    let text = std::fs::read_to_string(&config).expect("read agent.yaml");
    let limits = "  allowed_uids: [0]\n  limits: {max_connections_per_uid: 4, max_subscriptions_per_connection: 2, max_pending_rpcs_per_connection: 1, max_rpc_deadline_secs: 2, idle_timeout_secs: 1}\n";
    std::fs::write(&config, text.replacen("  allowed_uids: [0]\n", limits, 1)).expect("write");
    let mut agent = Agent::start(&config);
    agent.wait_for_log("steady state", Duration::from_secs(60));
    let socket = dir.socket();
    let rt = runtime();
    rt.block_on(async {
        use procmond::bus::client::connect;
        // Idle: connected, never speaks, closed after the idle timeout.
        let (_w, mut idle) = connect(&socket).await.expect("connect");
        assert!(
            next_within(&mut idle).await.is_none(),
            "idle connection closed"
        );

        // Subscriptions: 2 per connection.
        let (mut a_w, mut a_r) = connect(&socket).await.expect("connect");
        for (i, want) in [
            (1, FrameKind::Ack),
            (2, FrameKind::Ack),
            (3, FrameKind::Error),
        ] {
            a_w.subscribe(&format!("app.t{i}"), i)
                .await
                .expect("subscribe");
            let got = next_within(&mut a_r).await.expect("frame").expect("valid");
            assert_eq!(
                (got.kind, got.correlation_id),
                (want, i),
                "subscription {i}"
            );
        }
        // Requests go to RPC topics only, and a collector topic nobody
        // holds is answered at once (the pending-call and deadline caps
        // are covered in-process: bus/broker/tests.rs).
        let (mut b_w, mut b_r) = connect(&socket).await.expect("connect");
        for (corr, topic, status) in [
            (1, "app.t1", protocol::Status::InvalidRequest),
            (2, "control.collector.ghost", protocol::Status::Unavailable),
        ] {
            let env = Envelope::new(FrameKind::Request, topic, corr, b"{}".to_vec());
            b_w.send(&env).await.expect("call");
            let answer = next_within(&mut b_r).await.expect("frame").expect("valid");
            assert_eq!(
                (answer.correlation_id, answer.status),
                (corr, status),
                "{topic}"
            );
        }

        // Connections: 4 per uid; the collector holds one, a_ and b_ two.
        // A fifth closes the least recently active one that holds no
        // collector id (a_) instead of being refused.
        let (mut c_w, _c_r) = connect(&socket).await.expect("connect");
        c_w.subscribe("app.c", 1).await.expect("subscribe");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (mut d_w, mut d_r) = connect(&socket).await.expect("connect");
        assert!(next_within(&mut a_r).await.is_none(), "a_ was evicted");
        d_w.subscribe("app.d", 4).await.expect("subscribe");
        let got = next_within(&mut d_r).await.expect("frame").expect("valid");
        assert_eq!(got.kind, FrameKind::Ack, "the fifth connection is served");
        drop((a_w, a_r, b_w, b_r, c_w, d_w, d_r));
    });
    std::thread::sleep(Duration::from_millis(300));
    let (out, health) = ctl(&dir, &["health"]);
    assert!(out.status.success(), "ctl still answers: {health}");
    let broker = &health["agent"]["broker"];
    assert!(broker["idle_closed"].as_u64() >= Some(1), "{broker}");
    assert_eq!(broker["subscriptions_refused"], 1, "{broker}");
    assert_eq!(broker["requests_refused"], 1, "{broker}");
    assert!(
        broker["connections_evicted"].as_u64() >= Some(1),
        "{broker}"
    );
}

/// Kills the child when the test ends, pass or fail.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the agent does once a collector is ready; tests that play the
/// broker's side do it themselves.
fn begin_monitoring(rt: &tokio::runtime::Runtime, broker: &Broker) {
    let payload = procmond::bus::rpc::to_payload(&procmond::bus::rpc::Lifecycle::BeginMonitoring);
    rt.block_on(broker.publish_local(protocol::TOPIC_LIFECYCLE, payload))
        .expect("broadcast");
}

/// `procmond run` against a broker this test controls.
fn spawn_collector(
    dir: &AgentDir,
    extra: &str,
) -> (Reaped, std::sync::Arc<std::sync::Mutex<String>>) {
    let cfg = dir.dir.join("procmond.yaml");
    let interval = if extra.contains("collection_interval_secs") {
        ""
    } else {
        "collection_interval_secs: 30\n"
    };
    std::fs::write(
        &cfg,
        format!("wal_dir: {}\n{interval}{extra}", dir.wal().display()),
    )
    .expect("cfg");
    let mut child = common::procmond()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("DAEMONEYE_BROKER_SOCKET", dir.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let (log, _) = common::collect_lines(child.stderr.take().expect("stderr"));
    (Reaped(child), log)
}

fn wait_log(log: &std::sync::Mutex<String>, needle: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while !log.lock().expect("lock").contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {needle:?}:\n{}",
            log.lock().expect("lock")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(
    broker: &Broker,
    socket: &std::path::Path,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = Broker::bind(socket).expect("bind");
    let stop = CancellationToken::new();
    let b = broker.clone();
    let s = stop.clone();
    (
        stop,
        tokio::spawn(async move { b.serve(listener, s).await }),
    )
}

#[test]
fn broker_restart_loses_nothing() {
    let rt = runtime();
    let dir = AgentDir::new("restart");
    let broker = Broker::new(vec![0]);
    let mut rx = broker
        .subscribe_local("events.process.exec", 1 << 16)
        .expect("subscribe");
    let (stop, serving) = rt.block_on(async { serve(&broker, &dir.socket()) });
    let (mut collector, log) = spawn_collector(&dir, "");
    wait_log(&log, "source attached", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    begin_monitoring(&rt, &broker);
    wait_log(
        &log,
        "begin_monitoring: publishing events",
        Duration::from_secs(10),
    );

    let m = marker("restart");
    run_shell(&format!(
        "i=0; while [ $i -lt 50 ]; do /bin/sh -c 'exit 0' {m}-a$i; i=$((i+1)); done"
    ));
    std::thread::sleep(Duration::from_millis(500));
    rt.block_on(async {
        stop.cancel();
        let _ = serving.await;
    });
    let _ = std::fs::remove_file(dir.socket());
    wait_log(&log, "lost the broker connection", Duration::from_secs(10));
    run_shell(&format!(
        "i=0; while [ $i -lt 50 ]; do /bin/sh -c 'exit 0' {m}-b$i; i=$((i+1)); done"
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let (stop, _serving) = rt.block_on(async { serve(&broker, &dir.socket()) });
    wait_log(&log, "reconnected to the broker", Duration::from_secs(40));

    let mut seen = HashSet::new();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < 100 {
            let env = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of 100 markers arrived", seen.len()))
                .expect("subscription open");
            let batch = procmond::model::batch::Batch::parse_slice(&env.payload)
                .expect("deliveries are batches");
            for entry in batch.iter() {
                assert_eq!(
                    entry.kind,
                    procmond::model::EventKind::Exec,
                    "only what the pattern matches"
                );
                let event = entry.decode().expect("valid event");
                if event.argv.get(3).is_some_and(|a| a.starts_with(&m)) {
                    seen.insert(event.argv[3].clone());
                }
            }
        }
    });
    assert_eq!(
        seen.len(),
        100,
        "all markers from before, during and after the outage"
    );
    kill("TERM", collector.0.id());
    let status = collector.0.wait().expect("wait");
    assert!(
        status.success(),
        "collector exit:\n{}",
        log.lock().expect("lock")
    );
    stop.cancel();
}

fn log_time(line: &str) -> std::time::SystemTime {
    let ts = line.split_whitespace().next().unwrap_or("");
    humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("no timestamp in {line:?}: {e}"))
}

fn line_with<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
}

#[test]
fn slow_subscriber_triggers_backpressure_and_release() {
    let rt = runtime();
    let dir = AgentDir::new("backpressure");
    let broker = Broker::new(vec![0]);
    // A tiny queue nobody reads yet: delivery blocks, acks stop.
    let mut rx = broker
        .subscribe_local("events.process.#", 8)
        .expect("subscribe");
    let (_stop, _serving) = rt.block_on(async { serve(&broker, &dir.socket()) });
    let (collector, log) =
        spawn_collector(&dir, "buffer_bytes: 65536\ncollection_interval_secs: 2\n");
    wait_log(&log, "source attached", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    begin_monitoring(&rt, &broker);
    wait_log(&log, "monitoring started", Duration::from_secs(60));
    // The inventory alone may not fill 70 % of 64 KiB: add process events.
    for _ in 0..20 {
        if log.lock().expect("lock").contains("backpressure on") {
            break;
        }
        run_shell("i=0; while [ $i -lt 50 ]; do /bin/true; i=$((i+1)); done");
    }
    wait_log(
        &log,
        "collection interval stretched",
        Duration::from_secs(10),
    );
    // Now drain: acks flow, the buffer empties.
    rt.spawn(async move { while rx.recv().await.is_some() {} });
    wait_log(
        &log,
        "collection interval restored",
        Duration::from_secs(20),
    );
    drop(collector);
    let log = log.lock().expect("lock").clone();
    let on = log_time(line_with(&log, "backpressure on"));
    let stretched_line = line_with(&log, "collection interval stretched");
    assert!(
        stretched_line.contains("interval_ms=3000"),
        "2 s x 1.5: {stretched_line}"
    );
    let stretched = log_time(stretched_line);
    let off = log_time(line_with(&log, "backpressure off"));
    let restored_line = line_with(&log, "collection interval restored");
    assert!(
        restored_line.contains("interval_ms=2000"),
        "{restored_line}"
    );
    let restored = log_time(restored_line);
    let within = |a: std::time::SystemTime, b: std::time::SystemTime| {
        b.duration_since(a)
            .is_ok_and(|d| d < Duration::from_secs(1))
    };
    assert!(within(on, stretched), "stretch took too long:\n{log}");
    assert!(within(off, restored), "restore took too long:\n{log}");
    assert!(off > on);
}

#[test]
fn hostile_bytes_drop_only_the_offending_connection() {
    let rt = runtime();
    let dir = AgentDir::new("hostile");
    let config = dir.write_config("", "", true);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("steady state", Duration::from_secs(60));
    let socket = dir.socket();
    let send_raw = |bytes: &[u8], close_write: bool| {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = s.write_all(bytes);
        if close_write {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut buf = [0u8; 64];
        // The broker closes the connection: read sees EOF (or a reset).
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "connection should be closed");
    };
    let frame = |body: &[u8]| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let not_an_event = Envelope::new(
        FrameKind::Publish,
        "events.process.exec",
        1,
        b"not an event".to_vec(),
    );
    let mut oversized = (2u32 * 1024 * 1024).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 64]);
    send_raw(&oversized, false);
    send_raw(&frame(&[7u8; 100])[..40], true);
    send_raw(&frame(b"garbage!"), false);
    send_raw(
        &frame(&protocol::encode(&not_an_event).expect("encode")),
        false,
    );

    // The broker and its other clients keep working.
    rt.block_on(async {
        let (mut sub_w, mut sub_r) = procmond::bus::client::connect(&socket)
            .await
            .expect("subscriber");
        sub_w
            .subscribe("events.process.#", 1)
            .await
            .expect("subscribe");
        assert_eq!(
            sub_r.next().await.expect("frame").expect("valid").kind,
            FrameKind::Ack
        );
        let (mut pub_w, mut pub_r) = procmond::bus::client::connect(&socket)
            .await
            .expect("publisher");
        let mut event = procmond::model::ProcessEvent::new(
            procmond::model::EventKind::Exec,
            procmond::model::EventSource::Ebpf,
            1,
            4242,
        );
        event.collector_id = "hostile-test".into();
        event.seq = 9;
        let payload = procmond::model::codec::encode(&event)
            .expect("encode")
            .into_vec();
        let publish = |topic: &str, corr: u64, payload: &[u8]| {
            Envelope::new(FrameKind::Publish, topic, corr, payload.to_vec())
        };
        // Without the launcher's credential a peer registers no id, so it
        // publishes no events, broadcasts no shutdown and beats for no
        // one: each refused, counted, the connection kept.
        let register = br#"{"type":"register","collector_id":"hostile-test","collector_type":"test","version":"0","pid":1,"hostname":"h","source":"poll","capabilities":{}}"#;
        for (topic, corr, body) in [
            ("events.process.exec", 8, payload.as_slice()),
            (protocol::TOPIC_LIFECYCLE, 7, br#"{"type":"shutdown"}"#.as_slice()),
            ("control.health.heartbeat.procmond", 6, b"{}".as_slice()),
            (protocol::TOPIC_REGISTRATION, 5, register.as_slice()),
            ("events.process.exec", 9, payload.as_slice()),
        ] {
            pub_w.send(&publish(topic, corr, body)).await.expect("publish");
            let answer = pub_r.next().await.expect("frame").expect("valid");
            assert_eq!((answer.kind, answer.correlation_id), (FrameKind::Error, corr), "{topic}");
        }
        // The real collector's events still reach subscribers.
        let marker = std::process::Command::new("/bin/true").status();
        assert!(marker.is_ok_and(|s| s.success()));
        let delivered = next_within(&mut sub_r).await.expect("frame").expect("valid");
        assert_eq!(delivered.kind, FrameKind::Deliver);
    });
    dir.wait_for_sink(Duration::from_secs(10), "the collector's events", |ev| {
        ev.iter().any(|e| e["collector_id"] == "procmond")
    });
    assert!(
        dir.sink_events()
            .iter()
            .all(|e| e["collector_id"] != "hostile-test"),
        "a refused peer's event reached the sink"
    );
    let (_, health) = ctl(&dir, &["health"]);
    assert_eq!(
        health["agent"]["broker"]["publishes_refused"], 5,
        "{health}"
    );
    let (ok, log) = agent.stop();
    assert!(ok);
    let dropped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection dropped"))
        .collect();
    assert_eq!(dropped.len(), 4, "one per hostile connection:\n{log}");
    assert!(dropped[0].contains("frame size too big"), "{}", dropped[0]);
    assert!(dropped[1].contains("bytes remaining"), "{}", dropped[1]);
    assert!(dropped[2].contains("invalid envelope"), "{}", dropped[2]);
    assert!(
        dropped[3].contains("invalid event payload"),
        "{}",
        dropped[3]
    );
}

#[test]
fn a_uid_outside_allowed_uids_cannot_publish() {
    let dir = AgentDir::new("uid");
    let config = dir.write_config("", "", false);
    let mut agent = Agent::start(&config);
    // After the sink has opened its file: the sink refuses a path that others
    // can write, and the chmod below must not race its check.
    agent.wait_for_log("steady state", Duration::from_secs(20));
    // Open the file system path so only the broker's own check stands.
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.dir.clone(), dir.dir.join("run"), dir.socket()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let wal = dir.dir.join("wal-nobody");
    std::fs::create_dir_all(&wal).expect("wal dir");
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let cfg = dir.dir.join("intruder.yaml");
    std::fs::write(
        &cfg,
        format!(
            "collector_id: intruder\nsource: poll\nwal_dir: {}\n",
            wal.display()
        ),
    )
    .expect("cfg");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut intruder = common::procmond()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("DAEMONEYE_BROKER_SOCKET", dir.socket())
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn intruder");
    agent.wait_for_log("uid not in broker.allowed_uids", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let _ = intruder.kill();
    let _ = intruder.wait();
    assert!(agent.log().contains("peer=uid 65534"), "{}", agent.log());
    assert!(
        dir.sink_events()
            .iter()
            .all(|e| e["collector_id"] != "intruder"),
        "an event from a refused uid reached the sink"
    );
}

#[test]
fn publishes_are_acknowledged_only_after_a_durable_sink_stores_them() {
    let rt = runtime();
    let dir = AgentDir::new("durable");
    let broker = Broker::new(vec![0]);
    let mut sink = broker
        .subscribe_durable("events.process.#", 8)
        .expect("subscribe");
    let (_stop, _serving) = rt.block_on(async { serve(&broker, &dir.socket()) });
    rt.block_on(async {
        let (mut w, mut r) = procmond::bus::client::connect(&dir.socket())
            .await
            .expect("connect");
        let event = procmond::model::ProcessEvent::new(
            procmond::model::EventKind::Exec,
            procmond::model::EventSource::Ebpf,
            1,
            7,
        );
        let payload = procmond::model::codec::encode(&event)
            .expect("encode")
            .into_vec();
        let publish = |corr| {
            Envelope::new(
                FrameKind::Publish,
                "events.process.exec",
                corr,
                payload.clone(),
            )
        };
        let quiet = Duration::from_millis(300);

        w.send(&publish(5)).await.expect("publish");
        let delivery = sink.recv().await.expect("delivered");
        assert!(
            tokio::time::timeout(quiet, r.next()).await.is_err(),
            "acked before the sink stored it"
        );
        delivery.done.send(()).expect("confirm");
        let ack = r.next().await.expect("frame").expect("valid");
        assert_eq!((ack.kind, ack.correlation_id), (FrameKind::Ack, 5));

        // A sink that fails to store (drops the delivery): never acknowledged,
        // so the collector keeps the event in its WAL.
        w.send(&publish(6)).await.expect("publish");
        drop(sink.recv().await.expect("delivered"));
        assert!(
            tokio::time::timeout(quiet, r.next()).await.is_err(),
            "acked an event no sink stored"
        );
        // A sink that is gone altogether keeps its place: still no ack.
        drop(sink);
        w.send(&publish(7)).await.expect("publish");
        assert!(
            tokio::time::timeout(quiet, r.next()).await.is_err(),
            "acked with the sink gone"
        );
    });
    let unstored = broker
        .stats()
        .unstored
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(unstored, 2, "both unstored publishes counted");
}
