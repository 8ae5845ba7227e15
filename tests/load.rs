//! End-to-end under load: the host's top spawn rate, and what happens when
//! the kernel ring buffer overflows (loss counted, reconciliation repairs).
//! A separate test binary so these run alone, not beside the functional tests.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Watch, argv_contains, ebpf_unavailable, entity_id, marker};
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
    let m = marker("load");
    let script = "i=0; while [ $i -lt 10000 ]; do /bin/true; i=$((i+1)); done";
    let spawners: Vec<_> = (0..2)
        .map(|_| {
            Command::new("/bin/sh")
                .args(["-c", script, &m])
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn spawner")
        })
        .collect();
    for mut s in spawners {
        assert!(s.wait().expect("wait").success());
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = watch.stop();
    assert!(out.success, "{}", out.stderr);
    // The spawners by their marker, their children by the parent's
    // entity_id: no pid names a process here.
    let spawner_ids: HashSet<&str> = out
        .of_kind("exec")
        .filter(|e| e["argv"][3] == m.as_str())
        .map(entity_id)
        .collect();
    assert_eq!(spawner_ids.len(), 2, "the two spawners' execs");
    let execs: Vec<&Value> = out
        .of_kind("exec")
        .filter(|e| {
            e["exe"] == "/bin/true"
                && e["parent"]["entity_id"]
                    .as_str()
                    .is_some_and(|p| spawner_ids.contains(p))
        })
        .collect();
    // Paired by entity_id, never by pid: 20 000 spawns wrap pid_max (32768
    // here) when the host is busy, and a reused pid's exit is another
    // process's (once 20 001 exits for 20 000 execs).
    let ids: HashSet<&str> = execs.iter().map(|e| entity_id(e)).collect();
    let mut exits_per_id: HashMap<&str, usize> = HashMap::new();
    for x in out.of_kind("exit") {
        *exits_per_id.entry(entity_id(x)).or_default() += 1;
    }
    let exits: usize = ids
        .iter()
        .map(|id| exits_per_id.get(id).copied().unwrap_or(0))
        .sum();
    let stats = out.stats();
    eprintln!(
        "20000 spawns: {} exec ({} entity_ids), {} exit, stats {stats}",
        execs.len(),
        ids.len(),
        exits
    );
    let no_parent_id = out
        .of_kind("exec")
        .filter(|e| e["exe"] == "/bin/true" && e["parent"]["entity_id"].is_null())
        .count();
    assert_eq!(
        execs.len(),
        20_000,
        "exec events ({no_parent_id} /bin/true execs without parent.entity_id); stats {stats}"
    );
    assert_eq!(ids.len(), 20_000, "one entity_id per spawn; stats {stats}");
    let twice: Vec<_> = exits_per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "entity_ids with two exits: {twice:?}");
    let without: Vec<&&Value> = execs
        .iter()
        .filter(|e| !exits_per_id.contains_key(entity_id(e)))
        .take(5)
        .collect();
    assert!(
        without.is_empty(),
        "execs without an exit of their entity_id (first 5): {without:?}; stats {stats}"
    );
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
    // A reconciliation pass (every second) after the thaw finds the survivor
    // (by its marker: the flood may have wrapped pids).
    watch.wait_for_stdout(
        "the reconcile start of the survivor",
        Duration::from_secs(60),
        |l| l.contains("\"kind\":\"start\"") && l.contains(&m),
    );
    let pid = survivor.id();
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
    let found = out
        .of_kind("start")
        .find(|e| argv_contains(e, &m))
        .unwrap_or_else(|| panic!("reconciliation did not report the lost start; stats {stats}"));
    assert_eq!(found["source"], "reconcile");
    assert_eq!(found["pid"], pid, "{found}");
    // The survivor's events by its entity_id, never by its pid: the flood's
    // 3000 processes may have held that pid before it.
    let id = entity_id(found);
    let exec_seen = out.of_kind("exec").any(|e| entity_id(e) == id);
    assert!(
        !exec_seen,
        "the survivor's exec was expected to be lost in the overflow"
    );
    assert!(stats["reconcile_missed_starts"].as_u64().unwrap_or(0) >= 1);
    // Its exit came after the thaw: the kernel stream reports it.
    assert!(
        out.of_kind("exit").any(|e| entity_id(e) == id),
        "exit after thaw comes from the kernel, with the entity_id of the reconcile start {id}"
    );
}
