//! End-to-end storage faults under the agent: the collector's WAL on a full
//! disk, and a WAL damaged while its collector was down. Neither may lose an
//! event without a counter saying so, and a full disk is not a crash loop.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::agent::{Agent, AgentDir, collector_pids, ctl};
use common::{is_root, kill, marker, run_shell};

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(path.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Distinct marker arguments (argv[1]) of exec events starting with `m`.
fn markers(events: &[Value], m: &str) -> HashSet<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "exec")
        .filter_map(|e| e["argv"][1].as_str())
        .filter(|a| a.starts_with(m))
        .map(str::to_string)
        .collect()
}

fn loss(health: &Value, name: &str) -> u64 {
    health["response"]["losses"][name].as_u64().unwrap_or(0)
}

/// Polls `ctl health` until `pred` holds (or fails the test).
fn health_until(dir: &AgentDir, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, health) = ctl(dir, &["health"]);
        if pred(&health) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {health}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_full_disk_degrades_the_collector_without_a_restart_and_counts_what_it_drops() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = AgentDir::new("diskfull");
    let Some(disk) = Tmpfs::mount(&dir.wal(), "1m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let top = "heartbeat:\n  interval_secs: 1\n  missed_threshold: 5";
    let config = dir.write_config(top, "", true);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let before = collector_pids(agent.pid());

    // 2 000 execs with 3 kB of argv each: ~6 MB of events, more than the
    // disk (1 MiB, below the WAL's free-space reserve from the start) and
    // the collector's memory hold (4 MiB) together.
    let m = marker("full");
    let total = 2000;
    run_shell(&format!(
        "big=$(head -c 3000 /dev/zero | tr '\\0' x); i=0; \
         while [ $i -lt {total} ]; do /bin/true {m}-$i $big; i=$((i+1)); done"
    ));
    agent.wait_for_log("WAL cannot be written", Duration::from_secs(30));
    let faulted = health_until(&dir, "a degraded collector with drops", |h| {
        h["response"]["status"] == "degraded" && loss(h, "wal_write_failed") > 0
    });
    let reason = faulted["response"]["wal_fault"].as_str().unwrap_or("");
    assert!(reason.contains("KiB free, below the"), "{faulted}");
    // The agent sees it through heartbeats and does not restart anything.
    let seen = &faulted["agent"]["collectors"][0];
    assert!(seen["last_heartbeat"]["wal_fault"].is_string(), "{seen}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(collector_pids(agent.pid()), before, "no restart");
    assert!(!agent.log().contains("restarting collector"));

    // Space comes back: the WAL reopens, held events flow, the fault clears.
    disk.resize("64m");
    agent.wait_for_log("WAL writable again", Duration::from_secs(60));
    let cleared = health_until(&dir, "the fault to clear", |h| {
        h["response"]["wal_fault"].is_null() && h["response"]["wal_pending"] == 0
    });
    std::thread::sleep(Duration::from_secs(2));
    let seen = markers(&dir.sink_events(), &m);
    let missing = total - seen.len() as u64;
    let counted = loss(&cleared, "wal_write_failed") + loss(&cleared, "kernel_lost");
    assert!(missing > 0, "the hold overflowed, as arranged");
    assert!(
        missing <= counted,
        "{missing} markers missing, only {counted} counted: {cleared}"
    );
    // 4 MiB of held batches is some 900–1 300 of these execs (with their
    // forks and exits); 300 proves the hold was stored and published.
    assert!(
        seen.len() >= 300,
        "what was held reached the sink ({} of {total})",
        seen.len()
    );
    assert_eq!(
        collector_pids(agent.pid()),
        before,
        "still the same collector"
    );
}

#[test]
fn a_wal_damaged_while_the_collector_was_down_is_counted_as_lost() {
    let dir = AgentDir::new("damaged");
    let config = dir.write_config("", "", true);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let before = collector_pids(agent.pid());

    // The agent stops acknowledging; 200 execs wait in the collector's WAL.
    agent.signal("STOP");
    let m = marker("damaged");
    run_shell(&format!(
        "i=0; while [ $i -lt 200 ]; do /bin/true {m}-$i; i=$((i+1)); done"
    ));
    std::thread::sleep(Duration::from_millis(1500));
    kill("KILL", before[0]);
    std::thread::sleep(Duration::from_millis(300));
    // The storage is damaged behind its back.
    let db = dir.wal().join("db");
    let len = std::fs::metadata(&db).expect("sled's file").len() as usize;
    std::fs::write(&db, vec![0x5a; len]).expect("garble the WAL");
    agent.signal("CONT");

    agent.wait_for_log(
        "WAL storage lost events it had stored",
        Duration::from_secs(60),
    );
    let health = health_until(&dir, "the restarted collector's health", |h| {
        loss(h, "wal_lost") > 0
    });
    std::thread::sleep(Duration::from_secs(2));
    let seen = markers(&dir.sink_events(), &m);
    let missing = 200 - seen.len() as u64;
    assert!(missing > 0, "the damage destroyed stored events");
    assert!(
        missing <= loss(&health, "wal_lost"),
        "{missing} markers missing: {health}"
    );
}
