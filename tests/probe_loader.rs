//! End-to-end: the probe loader. `procmond watch --source ebpf` has its
//! probes loaded by `procmond probe-loader`, which hands their descriptors
//! over and exits (platform/sources/ebpf/handover.rs). The probes must then capture
//! as before, be held by the collector alone, and live exactly as long as
//! it does: a collector killed outright leaves nothing attached.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Watch, ebpf_unavailable, entity_id, marker, run_shell};
use serde_json::Value;

/// The BPF programs `pid` holds a descriptor of (a program, or a link to
/// one), by id, from its fdinfo.
fn prog_ids_held_by(pid: u32) -> BTreeSet<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Every BPF program loaded in the kernel, by id.
fn loaded_prog_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn handed_over_probes_capture_and_a_killed_collector_leaves_none_attached() {
    if let Some(reason) = ebpf_unavailable() {
        return eprintln!("SKIPPED: a kernel test, eBPF unavailable: {reason}");
    }
    let watch = Watch::start(&["--source", "ebpf", "--format", "json"]);
    assert!(
        watch
            .stderr()
            .contains("probes handed over by the probe loader"),
        "the probes were not loaded by the loader:\n{}",
        watch.stderr()
    );
    let m = marker("loader");
    run_shell(&format!("/bin/sh -c 'exit 5' {m}; true"));
    watch.wait_for_stdout("the marker's exec", Duration::from_secs(10), |l| {
        l.contains("\"exec\"") && l.contains(&m)
    });
    let exec = json_lines(&watch.stdout_now())
        .into_iter()
        .find(|e| e["kind"] == "exec" && e["argv"].to_string().contains(&m))
        .expect("the marker's exec");
    let id = entity_id(&exec).to_owned();
    watch.wait_for_stdout("the marker's exit", Duration::from_secs(10), |l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|e| e["kind"] == "exit" && e["entity_id"] == id.as_str())
    });

    // exec, exit, fork and the task iterator, held here and loaded.
    let held = prog_ids_held_by(watch.pid());
    assert!(held.len() >= 4, "programs held by the collector: {held:?}");
    let loaded = loaded_prog_ids();
    assert!(held.is_subset(&loaded), "held {held:?}, loaded {loaded:?}");

    watch.signal("KILL");
    let _ = watch.finish();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let still: Vec<u32> = loaded_prog_ids().intersection(&held).copied().collect();
        if still.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs still loaded 10 s after the collector was killed: {still:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
