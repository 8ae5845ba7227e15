//! End-to-end: the managed system — start-up coordination, privilege drop,
//! heartbeat supervision and escalation, and operator RPCs with `ctl`.
//!
//! Linux only: it drives the Linux build (eBPF, procfs, Unix sockets and
//! modes); on other targets this test crate is empty but still type-checks.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::agent::{
    Agent, AgentDir, FAST_HEARTBEAT, collector_pids, ctl, ids, markers_in_sink, started_agent,
};
use common::{kill, marker, procmond, wait_until};

#[test]
fn agent_drops_to_nobody_and_events_still_flow() {
    let (dir, mut agent) = started_agent("runas", "run_as: nobody");
    agent.wait_for_log("privileges dropped", Duration::from_secs(5));
    let (uids, gids) = ids(agent.pid());
    assert_eq!(uids, [65534; 4], "agent real/effective/saved/fs uid");
    assert_eq!(gids, [65534; 4], "agent gids");
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).expect("status");
    let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:"));
    assert_eq!(cap_eff.map(str::trim), Some("0000000000000000"));
    // Per-thread attributes: every thread, not just the main one.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", agent.pid())).expect("tasks");
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            let line = status.lines().find_map(|l| l.strip_prefix(name));
            line.map(str::trim).unwrap_or("").to_string()
        };
        let tid = task.file_name();
        assert_eq!(field("NoNewPrivs:"), "1", "no_new_privs on thread {tid:?}");
        assert_eq!(
            field("CapBnd:"),
            "0000000000000000",
            "bounding set of thread {tid:?}"
        );
        assert_eq!(
            field("Uid:").split_whitespace().collect::<Vec<_>>(),
            ["65534"; 4]
        );
    }
    let collectors = collector_pids(agent.pid());
    assert_eq!(collectors.len(), 1);
    assert_eq!(ids(collectors[0]).0, [0; 4], "the collector keeps root");
    markers_in_sink(&dir, &marker("runas"), 50, Duration::from_secs(30));
    // Still able to stop its root collector through the launcher.
    let (ok, log) = agent.stop();
    assert!(ok, "{log}");
    assert!(
        log.contains("collector exited after deregistering") || log.contains("collector stopped"),
        "{log}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{}", collectors[0])).exists(),
        "collector stopped with the agent"
    );
}

#[test]
fn ctl_health_config_and_rate_limit() {
    let (dir, agent) = started_agent("ctl", "");
    let (out, health) = ctl(&dir, &["health"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = &health["response"];
    assert_eq!(health["status"], "ok");
    assert!(
        matches!(r["status"].as_str(), Some("healthy" | "degraded")),
        "{r}"
    );
    assert_eq!(r["source"], "ebpf");
    assert_eq!(r["connection"], "connected");
    assert!(r["buffer_percent"].is_u64());
    assert!(r["losses"]["kernel_lost"].is_u64() && r["losses"]["wal_dropped_full"].is_u64());
    assert!(r.get("recent_errors").is_none());
    // The agent's side: broker and sink counters, collector supervision.
    let a = &health["agent"];
    assert_eq!(a["phase"], "steady_state");
    assert_eq!(a["collectors"][0]["ready"], true);
    assert!(a["broker"]["subscribers_dropped"].is_u64() && a["broker"]["frames_rejected"].is_u64());
    // The sink writes on its own schedule: health may be read before its
    // first write lands, so wait for the counter rather than race it.
    wait_until(
        "the sink's written counter",
        Duration::from_secs(30),
        || {
            let (_, h) = ctl(&dir, &["health"]);
            (h["agent"]["sinks"][0]["counters"]["written"].as_u64() > Some(0)).then_some(())
        },
    );

    let (_, detailed) = ctl(&dir, &["health", "--detailed"]);
    assert!(detailed["response"]["recent_errors"].is_array());
    assert!(detailed["response"]["cycles"]["completed"].is_u64());

    let (out, _) = ctl(&dir, &["config", "--set", "collection_interval_secs=7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (_, health) = ctl(&dir, &["health"]);
    assert_eq!(health["response"]["collection_interval_secs"], 7);

    let (out, body) = ctl(&dir, &["config", "--set", "collection_interval_secs=0"]);
    assert!(!out.status.success());
    let err = body["response"]["error"].as_str().unwrap_or("");
    assert!(
        err.contains("collection_interval_secs") && err.contains("between 1 and 3600"),
        "{body}"
    );
    let (_, health) = ctl(&dir, &["health"]);
    assert_eq!(
        health["response"]["collection_interval_secs"], 7,
        "a refused update changes nothing"
    );

    // A flood: some requests are answered busy at once, none unanswered,
    // and heartbeats are not delayed (no escalation in the agent log).
    let statuses = flood(&dir.socket(), 100);
    assert!(
        statuses.iter().all(|s| s == "ok" || s == "busy"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|s| s == "busy"),
        "100 requests at once must hit the rate limit: {statuses:?}"
    );
    assert!(
        !agent.log().contains("missed heartbeats"),
        "{}",
        agent.log()
    );
}

/// `n` health checks pipelined on one connection; the status of each answer.
fn flood(socket: &std::path::Path, n: u64) -> Vec<String> {
    use procmond::bus::protocol::{Envelope, FrameKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut w, mut r) = procmond::bus::client::connect(socket)
            .await
            .expect("connect");
        let body = serde_json::to_vec(&serde_json::json!({"op": "health_check"})).expect("json");
        for id in 1..=n {
            let req = Envelope::new(
                FrameKind::Request,
                "control.collector.procmond",
                id,
                body.clone(),
            );
            w.feed(&req).await.expect("queue request");
        }
        w.flush().await.expect("send");
        let mut statuses = Vec::new();
        while statuses.len() < n as usize {
            let frame = tokio::time::timeout(Duration::from_secs(20), r.next())
                .await
                .expect("every request is answered")
                .expect("open")
                .expect("valid");
            if frame.kind == FrameKind::Response {
                let status = serde_json::to_value(frame.status).expect("status");
                statuses.push(status.as_str().unwrap_or("?").to_string());
            }
        }
        statuses
    })
}

#[test]
fn frozen_collector_is_escalated_killed_and_restarted() {
    let (dir, mut agent) = started_agent("escalate", FAST_HEARTBEAT);
    let before = collector_pids(agent.pid());
    assert_eq!(before.len(), 1);
    let frozen_at = Instant::now();
    kill("STOP", before[0]);
    agent.wait_for_log("restarting collector", Duration::from_secs(20));
    agent.wait_for_log(
        "late ready: sending begin_monitoring",
        Duration::from_secs(30),
    );
    assert!(frozen_at.elapsed() < Duration::from_secs(40));
    let log = agent.log();
    let steps = [
        "missed heartbeats: sending a health check",
        "health check failed: requesting graceful shutdown",
        "still alive after the graceful-shutdown timeout: killing",
        "restarting collector",
    ];
    let mut at = 0;
    for step in steps {
        let found = log[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order:\n{log}"));
        at += found;
    }
    for step in &steps[..3] {
        let line = log.lines().find(|l| l.contains(step)).expect("line");
        assert!(line.contains("WARN") || line.contains("ERROR"), "{line}");
    }
    let after = collector_pids(agent.pid());
    assert_eq!(after.len(), 1);
    assert_ne!(after, before);
    markers_in_sink(&dir, &marker("after-restart"), 20, Duration::from_secs(30));
}

#[test]
fn a_collector_that_never_registers_fails_startup_naming_it() {
    let dir = AgentDir::new("laggard");
    let script = dir.dir.join("sleeper.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = dir.dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "broker:\n  socket: {}\nstartup_timeout_secs: 3\ncollectors:\n  - id: sleepy\n    type: process-monitor\n    binary_path: {}\n    config:\n      wal_dir: {}\n",
            dir.socket().display(),
            script.display(),
            dir.wal().display()
        ),
    )
    .expect("config");
    let started = Instant::now();
    let out = procmond()
        .args(["agent", "--config"])
        .arg(&config)
        .output()
        .expect("agent");
    let elapsed = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(
        err.contains("not ready within their startup timeout: sleepy"),
        "{err}"
    );
    let leftovers = std::process::Command::new("pgrep")
        .args(["-f", &script.display().to_string()])
        .output()
        .expect("pgrep");
    assert!(leftovers.stdout.is_empty(), "the sleeper was left running");
}

#[test]
fn ctl_shutdown_drains_deregisters_and_leaves_an_empty_wal() {
    let (dir, mut agent) = started_agent("shutdown", "");
    markers_in_sink(&dir, &marker("pre-shutdown"), 20, Duration::from_secs(30));
    let pid = collector_pids(agent.pid())[0];
    let (out, body) = ctl(&dir, &["shutdown"]);
    assert!(out.status.success(), "{body}");
    agent.wait_for_log(
        "collector exited after deregistering",
        Duration::from_secs(30),
    );
    let log = agent.log();
    assert!(log.contains("collector deregistered"), "{log}");
    let exit_line = log
        .lines()
        .find(|l| l.contains("collector exited after deregistering"))
        .expect("line");
    assert!(
        exit_line.contains(&format!("pid={pid}")) && exit_line.contains("exit status: 0"),
        "{exit_line}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !log.contains("restarting collector"),
        "a deregistered collector is not restarted"
    );
    assert!(collector_pids(agent.pid()).is_empty());
    let metrics = std::sync::Arc::new(procmond::metrics::Metrics::default());
    let wal = procmond::delivery::wal::Wal::open(&dir.wal(), 1 << 30, metrics).expect("open WAL");
    assert_eq!(wal.pending_count(), 0, "nothing unacknowledged left");
}

#[test]
fn a_uid_outside_allowed_uids_cannot_subscribe_or_call() {
    let (dir, mut agent) = started_agent("uid-ctl", "");
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.dir.clone(), dir.dir.join("run"), dir.socket()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let out = procmond()
        .arg("ctl")
        .arg("--socket")
        .arg(dir.socket())
        .arg("health")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("ctl as nobody");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("closed the connection"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_for_log("uid not in broker.allowed_uids", Duration::from_secs(5));
    let seen: HashSet<&str> = ["ok"].into_iter().collect();
    let (_, health) = ctl(&dir, &["health"]);
    assert!(
        seen.contains(health["status"].as_str().unwrap_or("")),
        "root still gets answers"
    );
}

#[test]
fn operator_calls_are_allowed_per_uid() {
    let dir = AgentDir::new("operators");
    let config = dir.write_config("", "", true);
    let text = std::fs::read_to_string(&config).expect("read agent.yaml");
    let broker =
        "  allowed_uids: [0, 65534]\n  operators: {read_uids: [0, 65534], admin_uids: [0]}\n";
    std::fs::write(&config, text.replacen("  allowed_uids: [0]\n", broker, 1)).expect("write");
    let mut agent = Agent::start(&config);
    agent.wait_for_log("steady state", Duration::from_secs(60));
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.dir.clone(), dir.dir.join("run"), dir.socket()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let as_nobody = |args: &[&str]| {
        procmond()
            .arg("ctl")
            .arg("--socket")
            .arg(dir.socket())
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("ctl as nobody")
    };
    let health = as_nobody(&["health"]);
    assert!(
        health.status.success(),
        "a read uid may ask for health: {}",
        String::from_utf8_lossy(&health.stderr)
    );
    let stop = as_nobody(&["stop"]);
    assert!(!stop.status.success(), "a read uid may not stop collection");
    agent.wait_for_log("operator call refused", Duration::from_secs(5));
    let (_, health) = ctl(&dir, &["health"]);
    assert_eq!(
        health["agent"]["broker"]["calls_unauthorized"], 1,
        "{health}"
    );
    assert_eq!(
        health["response"]["lifecycle"], "running",
        "collection still runs: {health}"
    );
}
