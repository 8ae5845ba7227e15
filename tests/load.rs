//! End-to-end under load: the host's top spawn rate, and what happens when
//! the kernel ring buffer overflows (loss counted, reconciliation repairs).
//! A separate test binary so these run alone, not beside the functional tests.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Watch, argv_contains, ebpf_unavailable, marker};
use serde_json::Value;

#[test]
fn two_parallel_spawners_of_ten_thousand_give_every_exec_and_exit() {
    if let Some(reason) = ebpf_unavailable() {
        eprintln!(
            "!!! skipping the kernel-rate check: {reason}; the polling fallback cannot see /bin/true"
        );
        let watch = Watch::start(&["--source", "auto"]);
        let out = watch.stop();
        assert!(
            out.stderr.contains("falling back to polling"),
            "{}",
            out.stderr
        );
        return;
    }
    let watch = Watch::start(&["--source", "ebpf"]);
    let script = "i=0; while [ $i -lt 10000 ]; do /bin/true; i=$((i+1)); done";
    let spawners: Vec<_> = (0..2)
        .map(|_| {
            Command::new("/bin/sh")
                .args(["-c", script])
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn spawner")
        })
        .collect();
    let spawner_pids: HashSet<u64> = spawners.iter().map(|c| u64::from(c.id())).collect();
    for mut s in spawners {
        assert!(s.wait().expect("wait").success());
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = watch.stop();
    assert!(out.success, "{}", out.stderr);
    let execs: Vec<&Value> = out
        .of_kind("exec")
        .filter(|e| {
            e["exe"] == "/bin/true"
                && e["ppid"]
                    .as_u64()
                    .is_some_and(|p| spawner_pids.contains(&p))
        })
        .collect();
    let pids: HashSet<u64> = execs.iter().filter_map(|e| e["pid"].as_u64()).collect();
    let exits = out
        .of_kind("exit")
        .filter(|e| e["pid"].as_u64().is_some_and(|p| pids.contains(&p)))
        .count();
    let stats = out.stats();
    eprintln!(
        "20000 spawns: {} exec, {} exit, stats {stats}",
        execs.len(),
        exits
    );
    assert_eq!(execs.len(), 20_000, "exec events; stats {stats}");
    assert_eq!(exits, 20_000, "exit events; stats {stats}");
    assert_eq!(stats["kernel_lost"], 0);
}

#[test]
fn ring_buffer_overflow_is_counted_and_reconciliation_finds_what_was_lost() {
    if let Some(reason) = ebpf_unavailable() {
        eprintln!("!!! no kernel ring buffer to overflow: {reason}");
        return;
    }
    let dir = std::env::temp_dir().join(marker("overflow"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("procmond.yaml");
    // The smallest ring procmond accepts: a few hundred records.
    std::fs::write(&config, "ring_buffer_bytes: 65536\n").expect("config");
    let m = marker("lost");
    let mut watch = Watch::start(&[
        "--source",
        "ebpf",
        "--interval",
        "1",
        "--config",
        config.to_str().expect("utf-8"),
    ]);

    // Freeze the reader, flood the ring, then start a long-lived process whose
    // exec record cannot fit.
    watch.signal("STOP");
    common::run_shell("i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done");
    let mut survivor = Command::new("/bin/sh")
        .args(["-c", "sleep 30", &m])
        .spawn()
        .expect("spawn survivor");
    std::thread::sleep(Duration::from_millis(200));
    watch.signal("CONT");
    watch.wait_for_stderr("records lost", Duration::from_secs(10));
    // A reconciliation pass (every second) after the thaw finds the survivor.
    let pid = u64::from(survivor.id());
    let needle = format!("\"pid\":{pid},");
    watch.wait_for_stdout(
        "the reconcile start of the survivor",
        Duration::from_secs(60),
        |l| l.contains("\"kind\":\"start\"") && l.contains(&needle),
    );
    let _ = survivor.kill();
    let _ = survivor.wait();
    std::thread::sleep(Duration::from_millis(500));
    let out = watch.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.success, "{}", out.stderr);

    let stats = out.stats();
    assert!(
        stats["kernel_lost"].as_u64().unwrap_or(0) > 0,
        "overflow must be counted: {stats}"
    );
    let exec_seen = out.of_kind("exec").any(|e| e["pid"] == pid);
    assert!(
        !exec_seen,
        "the survivor's exec was expected to be lost in the overflow"
    );
    let found = out
        .of_kind("start")
        .find(|e| e["pid"] == pid)
        .unwrap_or_else(|| panic!("reconciliation did not report the lost start; stats {stats}"));
    assert_eq!(found["source"], "reconcile");
    assert!(argv_contains(found, &m));
    assert!(stats["reconcile_missed_starts"].as_u64().unwrap_or(0) >= 1);
    // Its exit came after the thaw: the kernel stream reports it.
    assert!(
        out.of_kind("exit").any(|e| e["pid"] == pid),
        "exit after thaw comes from the kernel"
    );
}
