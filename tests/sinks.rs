//! End-to-end: the agent's jsonl sink when its disk fills up (a tiny tmpfs:
//! it holds the events unconfirmed, says it is degraded, and stores every
//! one once there is room again) and when its path is a trap (a symbolic
//! link to a victim file, a directory anyone can write: the agent refuses to
//! start, naming the path, and the victim stays untouched).
//!
//! Linux only: it drives the Linux build (eBPF, procfs, Unix sockets and
//! modes); on other targets this test crate is empty but still type-checks.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::agent::{Agent, AgentDir, ctl};
use common::{marker, run_shell, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

/// agent.yaml with a jsonl sink at `sink`, 1 s heartbeats and one collector.
fn agent_yaml(dir: &AgentDir, sink: &Path) -> PathBuf {
    let sinks = format!("  - type: jsonl\n    path: {}\n", sink.display());
    dir.write_config_with_sinks(&sinks, "heartbeat:\n  interval_secs: 1\n")
}

/// A 1 MiB tmpfs, unmounted (lazily) when the test ends, however it ends.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(at: PathBuf) -> TinyDisk {
        std::fs::create_dir_all(&at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
            .arg(&at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        TinyDisk(at)
    }

    /// Fills the disk to the last byte; returns the filler.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&[0]);
        filler
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Every whole line of the sink (one being written may be read half-way).
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Exec events of markers `<m>-<i>` in the sink, by `i`.
fn marker_execs(events: &[Value], m: &str) -> Vec<usize> {
    let prefix = format!("{m}-");
    let mut found: Vec<usize> = events
        .iter()
        .filter(|e| e["kind"] == "exec")
        .filter_map(|e| e["argv"][1].as_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect();
    found.sort_unstable();
    found
}

fn sink_counters(dir: &AgentDir) -> Option<Value> {
    let (out, json) = ctl(dir, &["health"]);
    out.status
        .success()
        .then(|| json["agent"]["sinks"][0]["counters"].clone())
        .filter(Value::is_object)
}

#[test]
fn a_full_disk_delays_events_and_loses_none() {
    let dir = AgentDir::new("enospc");
    let disk = TinyDisk::mount(dir.dir.join("disk"));
    let sink = disk.0.join("events.jsonl");
    let mut agent = Agent::start(&agent_yaml(&dir, &sink));
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let m = marker("enospc");
    run_shell(&format!(
        "for i in 0 1 2 3 4 5 6 7 8 9; do /bin/true {m}-$i; done"
    ));
    wait_until("the first 10 markers on disk", WAIT, || {
        (marker_execs(&lines(&sink), &m).len() == 10).then_some(())
    });

    let filler = disk.fill();
    run_shell(&format!(
        "i=10; while [ $i -lt 60 ]; do /bin/true {m}-$i; i=$((i+1)); done"
    ));
    let degraded = wait_until("the sink to report itself degraded", WAIT, || {
        sink_counters(&dir).filter(|c| c["status"] == "degraded" && c["errors"].as_u64() >= Some(2))
    });
    eprintln!("disk full: {degraded}");
    let last_error = degraded["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains(&*sink.to_string_lossy()), "{degraded}");
    let (_, health) = ctl(&dir, &["health"]);
    assert!(
        health["response"]["wal_pending"].as_u64() >= Some(1),
        "the WAL keeps them: {health}"
    );

    std::fs::remove_file(&filler).expect("free the disk");
    let events = wait_until("all 60 markers on disk", WAIT, || {
        let events = lines(&sink);
        (marker_execs(&events, &m).len() >= 60).then_some(events)
    });
    assert_eq!(
        marker_execs(&events, &m),
        (0..60).collect::<Vec<_>>(),
        "each marker once"
    );
    let mut keys = std::collections::HashSet::new();
    for e in &events {
        let key = (
            e["collector_id"].to_string(),
            e["epoch"].to_string(),
            e["seq"].to_string(),
        );
        assert!(keys.insert(key), "an event twice: {e}");
    }
    let counters = wait_until("the sink to recover", WAIT, || {
        sink_counters(&dir).filter(|c| c["status"] == "ok" && c["lag"] == 0)
    });
    assert!(
        counters["errors"].as_u64() >= Some(2),
        "errors stay counted: {counters}"
    );
    let (ok, log) = agent.stop();
    assert!(ok, "agent exit status; log:\n{log}");
    assert!(
        log.contains("jsonl sink: writing failed; retrying"),
        "{log}"
    );
    assert!(log.contains("jsonl sink stores again"), "{log}");
}

/// Starts the agent expecting it to refuse; returns its log.
fn refused(dir: &AgentDir, sink: &Path) -> String {
    let mut agent = Agent::start(&agent_yaml(dir, sink));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = agent.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not refuse:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!status.success(), "{}", agent.log());
    agent.log()
}

#[test]
fn a_sink_path_that_is_a_trap_is_refused_and_its_victim_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = AgentDir::new("sinktrap");
    let victim = dir.dir.join("victim");
    std::fs::write(&victim, "root only\n").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = dir.dir.join("events.jsonl");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let log = refused(&dir, &link);
    let want = format!(
        "sinks[0]: jsonl sink: {} is a symbolic link: refusing to follow it",
        link.display()
    );
    assert!(log.contains(&want), "{log}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "root only\n"
    );

    // A directory any user can write, on the way to the sink.
    let open = dir.dir.join("open");
    std::fs::create_dir(&open).expect("dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let log = refused(&dir, &open.join("sub/events.jsonl"));
    assert!(
        log.contains(&format!("{} is writable by other users", open.display())),
        "{log}"
    );
    assert!(!open.join("sub").exists(), "nothing made below it");
}
