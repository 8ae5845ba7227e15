//! End-to-end: an admitted local peer against a live agent (real broker
//! socket, real eBPF collector, real sink), speaking the real protocol.
//! Each test replays one attack from the hostile review (docs/security.md)
//! and asserts the safe outcome: supervision that forged heartbeats cannot
//! fool, memory that peers who never read cannot exhaust, and delivery
//! that stalled subscribers cannot block, during or after the attack.
//!
//! Linux only: it drives the Linux build (eBPF, procfs, Unix sockets and
//! modes); on other targets this test crate is empty but still type-checks.
#![cfg(target_os = "linux")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::agent::{
    Agent, AgentDir, FAST_HEARTBEAT, collector_pids, ctl, markers_in_sink, started_agent,
};
use common::{kill, marker, runtime};
use procmond::bus::client::{BusReader, BusWriter, connect};
use procmond::bus::protocol::{Envelope, FrameKind, MAX_FRAME_BYTES};
use procmond::bus::rpc::{Heartbeat, to_payload};

fn healthy_beat() -> Vec<u8> {
    to_payload(&Heartbeat {
        collector_id: "procmond".into(),
        sequence: 1,
        status: "healthy".into(),
        timestamp: "2026-01-01T00:00:00Z".into(),
        // Well formed: refusing it must be the broker's doing, not a parse error.
        metrics: procmond::health::Summary::default(),
    })
}

#[test]
fn forged_heartbeats_do_not_hide_a_frozen_collector() {
    let (dir, mut agent) = started_agent("forged-beats", FAST_HEARTBEAT);
    let before = collector_pids(agent.pid());
    assert_eq!(before.len(), 1);
    // The forger beats for the collector every 100 ms every way it can:
    // a publish on its heartbeat topic, a request to it, a registration.
    let stop = Arc::new(AtomicBool::new(false));
    let forger = std::thread::spawn({
        let (socket, stop) = (dir.socket(), stop.clone());
        move || {
            runtime().block_on(async {
                let (mut w, _r) = connect(&socket).await.expect("connect");
                let topic = "control.health.heartbeat.procmond";
                let register = br#"{"type":"register","collector_id":"procmond","collector_type":"x","version":"0","pid":1,"hostname":"h","source":"poll","capabilities":{}}"#;
                while !stop.load(Relaxed) {
                    for (kind, t, body) in [
                        (FrameKind::Publish, topic, healthy_beat()),
                        (FrameKind::Request, topic, healthy_beat()),
                        (FrameKind::Publish, "control.collector.registration", register.to_vec()),
                    ] {
                        if w.send(&Envelope::new(kind, t, 1, body)).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    let frozen_at = Instant::now();
    kill("STOP", before[0]);
    agent.wait_for_log("restarting collector", Duration::from_secs(30));
    // Budget: 3 missed beats, 1 s health check, 2 s grace, 1 s backoff.
    assert!(
        frozen_at.elapsed() < Duration::from_secs(15),
        "restarted after {:?}",
        frozen_at.elapsed()
    );
    agent.wait_for_log(
        "late ready: sending begin_monitoring",
        Duration::from_secs(30),
    );
    stop.store(true, Relaxed);
    forger.join().expect("forger");
    let after = collector_pids(agent.pid());
    assert_eq!(after.len(), 1);
    assert_ne!(after, before);
    let (_, health) = ctl(&dir, &["health"]);
    let broker = &health["agent"]["broker"];
    assert!(broker["requests_refused"].as_u64() >= Some(1), "{broker}");
    assert!(broker["publishes_refused"].as_u64() >= Some(2), "{broker}");
    markers_in_sink(&dir, &marker("after-forgery"), 20, Duration::from_secs(30));
}

/// Peak resident memory of `pid` (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// Connections that subscribe to everything and never read.
async fn stalled_subscribers(socket: &std::path::Path, n: usize) -> Vec<(BusWriter, BusReader)> {
    let mut stalled = Vec::new();
    for _ in 0..n {
        let (mut w, r) = connect(socket).await.expect("connect");
        for (i, pattern) in ["#", "events.process.#", "app.#"].into_iter().enumerate() {
            w.subscribe(pattern, i as u64).await.expect("subscribe");
        }
        stalled.push((w, r));
    }
    stalled
}

#[test]
fn peers_that_never_read_cannot_exhaust_the_agent() {
    let (dir, agent) = started_agent("never-read", "");
    let socket = dir.socket();
    let rt = runtime();
    let published = rt.block_on(async {
        let stalled = stalled_subscribers(&socket, 4).await;
        let (mut w, mut r) = connect(&socket).await.expect("publisher");
        let payload = vec![0x5a; MAX_FRAME_BYTES - 4096];
        let mut acked = 0;
        for corr in 0..400u64 {
            let env = Envelope::new(FrameKind::Publish, "app.flood", corr, payload.clone());
            w.send(&env).await.expect("publish");
            let ack = tokio::time::timeout(Duration::from_secs(10), r.next()).await;
            if matches!(ack, Ok(Some(Ok(ref a))) if a.kind == FrameKind::Ack) {
                acked += 1;
            }
        }
        drop(stalled);
        acked
    });
    // 400 MiB were published to four peers who read none of it (1.6 GiB of
    // deliveries): every publish was acknowledged, and the agent's peak
    // stayed within the queued-bytes cap (64 MiB) plus its own working set.
    assert_eq!(published, 400);
    let peak = peak_rss(agent.pid());
    eprintln!("agent peak RSS after the flood: {} MiB", peak >> 20);
    assert!(
        peak < 192 * 1024 * 1024,
        "agent peak RSS {} MiB",
        peak >> 20
    );
    let (out, health) = ctl(&dir, &["health"]);
    assert!(out.status.success(), "{health}");
    let broker = &health["agent"]["broker"];
    assert!(
        broker["subscribers_dropped"].as_u64() >= Some(4),
        "{broker}"
    );
    markers_in_sink(&dir, &marker("after-flood"), 20, Duration::from_secs(30));
}

#[test]
fn stalled_subscribers_leave_nothing_stuck() {
    let (dir, agent) = started_agent("stalled", "heartbeat:\n  interval_secs: 1");
    let before = collector_pids(agent.pid());
    let socket = dir.socket();
    let rt = runtime();
    let stalled = rt.block_on(stalled_subscribers(&socket, 4));
    // A storm while four subscribers stall; then they go away.
    let storm = marker("storm");
    markers_in_sink(&dir, &storm, 2000, Duration::from_secs(120));
    drop(stalled);
    markers_in_sink(&dir, &marker("after-stall"), 50, Duration::from_secs(30));
    // The same collector throughout, registered, nothing left in its WAL.
    assert_eq!(
        collector_pids(agent.pid()),
        before,
        "the collector was restarted"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, health) = ctl(&dir, &["health", "--detailed"]);
        let c = &health["agent"]["collectors"][0];
        let pending = &c["last_heartbeat"]["wal_pending"];
        if c["ready"] == true && pending.as_u64() == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still pending or unregistered: {health}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Raises this test process's own open-file limit so that it, not the
/// agent, can hold the flood.
fn allow_open_files(n: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < n) {
        limit.current = Some(limit.maximum.map_or(n, |m| m.min(n)));
        setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE");
    }
}

#[test]
fn a_same_uid_flood_cannot_lock_out_an_operator() {
    allow_open_files(4096);
    let dir = AgentDir::new("uid-flood");
    let config = dir.write_config("", "", true);
    // The agent gets the usual service limit of 1 024 open files.
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=1024:1024")
        .arg(env!("CARGO_BIN_EXE_procmond"));
    let mut agent = Agent::start_with(cmd, &config);
    agent.wait_for_log("steady state", Duration::from_secs(60));
    // 1 100 idle connections from root, the operators' own uid.
    let flood: Vec<std::os::unix::net::UnixStream> = (0..1100)
        .map(|_| std::os::unix::net::UnixStream::connect(dir.socket()).expect("connect"))
        .collect();
    let asked = Instant::now();
    let (out, health) = ctl(&dir, &["health"]);
    assert!(
        out.status.success(),
        "ctl refused during the flood: {health}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered after {:?}: not at once",
        asked.elapsed()
    );
    let broker = &health["agent"]["broker"];
    assert!(
        broker["connections_evicted"].as_u64() >= Some(1000),
        "{broker}"
    );
    markers_in_sink(&dir, &marker("during-flood"), 20, Duration::from_secs(30));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .expect("fd dir")
        .count();
    assert!(fds < 512, "the agent holds {fds} descriptors");
    drop(flood);
    let log = agent.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("connection cap reached"))
            .count()
            < 40,
        "eviction warnings are rate-limited"
    );
}
