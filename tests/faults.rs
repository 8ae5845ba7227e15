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

/// Polls the sink until it holds `n` markers starting with `m` (or fails).
fn sink_until(dir: &AgentDir, m: &str, n: usize) -> HashSet<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = markers(&dir.sink_events(), m);
        if seen.len() >= n {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} {m} markers reached the sink: {}",
            seen.len(),
            ctl(dir, &["health"]).1
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn execs(m: &str, n: u32, argv_bytes: usize) {
    run_shell(&format!(
        "big=$(head -c {argv_bytes} /dev/zero | tr '\\0' x); i=0; \
         while [ $i -lt {n} ]; do /bin/true {m}-$i $big; i=$((i+1)); done"
    ));
}

#[test]
fn a_full_disk_keeps_events_flowing_to_the_agent_and_loses_nothing_it_confirmed() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = AgentDir::new("diskfull");
    // 1 MiB: below the WAL's free-space reserve from the start.
    let Some(disk) = Tmpfs::mount(&dir.wal(), "1m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    // A generous missed-heartbeat threshold: the agent is stopped for a few
    // seconds below, and must not restart the collector for that.
    let top = "heartbeat:\n  interval_secs: 1\n  missed_threshold: 30";
    let config = dir.write_config(top, "", true);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("monitoring started", Duration::from_secs(60));
    let before = collector_pids(agent.pid());

    // The WAL cannot store a single batch, and the agent still sees every
    // event, live: published from memory, un-persisted.
    let live = marker("live");
    execs(&live, 200, 8);
    agent.wait_for_log("WAL cannot be written", Duration::from_secs(30));
    sink_until(&dir, &live, 200);
    let faulted = health_until(&dir, "a degraded collector publishing from memory", |h| {
        let beat = &h["agent"]["collectors"][0]["last_heartbeat"];
        h["response"]["status"] == "degraded"
            && h["response"]["events_unpersisted"].as_u64() >= Some(200)
            && beat["wal_fault"].is_string()
            && beat["events_unpersisted"].as_u64() > Some(0)
    });
    let reason = faulted["response"]["wal_fault"].as_str().unwrap_or("");
    assert!(reason.contains("KiB free, below the"), "{faulted}");
    assert!(reason.contains("un-persisted"), "{faulted}");
    assert_eq!(faulted["response"]["wal_pending"], 0, "nothing was stored");
    // The agent saw it through heartbeats (above) and restarts nothing.

    // The agent stops taking events: ~6 MB of execs, more than the 4 MiB
    // the collector keeps in memory. What neither could take is counted.
    agent.signal("STOP");
    let away = marker("away");
    let total = 2000;
    execs(&away, total, 3000);
    std::thread::sleep(Duration::from_secs(1));
    agent.signal("CONT");
    let overflowed = health_until(&dir, "the overflow to be counted", |h| {
        loss(h, "events_unstored_lost") > 0
    });
    // Let the agent acknowledge what it was sent before space returns.
    health_until(&dir, "the sink to catch up", |h| {
        h["agent"]["sinks"][0]["counters"]["lag"] == 0
            && h["response"]["events_unpersisted"].as_u64()
                > overflowed["response"]["events_unpersisted"].as_u64()
    });
    std::thread::sleep(Duration::from_secs(2));

    // Space comes back: WAL-first again, the fault clears.
    disk.resize("64m");
    agent.wait_for_log("WAL writable again", Duration::from_secs(60));
    let cleared = health_until(&dir, "the fault to clear", |h| {
        h["response"]["wal_fault"].is_null() && h["response"]["wal_pending"] == 0
    });
    let unpersisted = cleared["response"]["events_unpersisted"].as_u64();
    let after = marker("after");
    execs(&after, 100, 8);
    sink_until(&dir, &after, 100);
    let end = health_until(&dir, "the WAL to drain", |h| {
        h["response"]["wal_pending"] == 0
    });
    assert_eq!(
        end["response"]["events_unpersisted"].as_u64(),
        unpersisted,
        "stored in the WAL first again"
    );

    let away_seen = markers(&dir.sink_events(), &away);
    let missing = u64::from(total) - away_seen.len() as u64;
    let counted = loss(&end, "events_unstored_lost") + loss(&end, "kernel_lost");
    assert!(
        missing <= counted,
        "{missing} markers missing, only {counted} counted: {end}"
    );
    assert!(
        away_seen.len() >= 300,
        "what was kept reached the sink ({})",
        away_seen.len()
    );
    eprintln!(
        "live {} of 200; away {} of {total} seen, {missing} missing, {counted} counted; unpersisted {unpersisted:?}",
        markers(&dir.sink_events(), &live).len(),
        away_seen.len()
    );
    // Nothing the agent confirmed was sent to it again.
    let sink = &end["agent"]["sinks"][0]["counters"];
    assert_eq!(sink["duplicates"], 0, "{end}");
    assert_eq!(
        collector_pids(agent.pid()),
        before,
        "still the same collector"
    );
    assert!(!agent.log().contains("restarting collector"));
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
