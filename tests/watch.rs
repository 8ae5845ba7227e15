//! End-to-end: `procmond watch` against the real kernel with real processes.
//! Runs as root in CI; where eBPF cannot start, each kernel test says
//! SKIPPED (and fails under PROCMOND_REQUIRE_EBPF, which CI sets).
//!
//! Linux only: it drives the Linux build (eBPF, procfs, Unix sockets and
//! modes); on other targets this test crate is empty but still type-checks.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::time::Duration;

use common::{
    Watch, argv_contains, ebpf_unavailable, entity_id, exits_of, marker, procmond, run_shell,
};
use serde_json::Value;

#[test]
fn three_hundred_marker_processes_give_exec_and_exit_with_code() {
    if let Some(reason) = ebpf_unavailable() {
        return eprintln!("SKIPPED: a kernel test, eBPF unavailable: {reason}");
    }
    let m = marker("exit3");
    let watch = Watch::start(&["--source", "ebpf", "--format", "json"]);
    let spawner = run_shell(&format!(
        "i=0; while [ $i -lt 300 ]; do /bin/sh -c 'exit 3' {m}-$i; i=$((i+1)); done"
    ));
    std::thread::sleep(Duration::from_millis(500));
    let out = watch.stop();
    assert!(out.success, "watch failed:\n{}", out.stderr);

    let execs: Vec<&Value> = out
        .of_kind("exec")
        .filter(|e| e["argv"][3].as_str().is_some_and(|a| a.starts_with(&m)))
        .collect();
    assert_eq!(execs.len(), 300, "exec events with the marker");
    let ids: HashSet<&str> = execs.iter().map(|e| entity_id(e)).collect();
    assert_eq!(ids.len(), 300, "distinct entity_ids");
    for e in &execs {
        assert_eq!(e["source"], "ebpf");
        assert_eq!(e["ppid"], spawner, "ppid is the spawning shell: {e}");
        assert_eq!(e["exe"], "/bin/sh");
        assert_eq!(e["argv"][2], "exit 3");
        assert!(
            e["start_time"].is_string() && e["uid"].is_u64() && e["tid"].is_u64(),
            "{e}"
        );
    }
    // Each exec's exit by its entity_id: exactly one, none twice.
    let all_exits: Vec<&Value> = out.of_kind("exit").collect();
    let exits = exits_of("the marker processes", &execs, &all_exits);
    assert_eq!(exits.len(), 300, "exit events for the marker processes");
    assert!(
        exits
            .iter()
            .all(|e| e["exit_code"] == 3 && e["source"] == "ebpf"),
        "every marker exit has code 3 from ebpf"
    );
    let stats = out.stats();
    assert_eq!(stats["kernel_lost"], 0, "kernel-side loss: {stats}");
    assert_eq!(stats["records_malformed"], 0, "{stats}");
    // seq is strictly increasing in output order.
    let seqs: Vec<u64> = out
        .events
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "seq not monotonic");
}

#[test]
fn polling_reports_start_and_stop_of_three_second_processes() {
    poll_sees_three_second_process();
}

fn poll_sees_three_second_process() {
    let m = marker("poll");
    let watch = Watch::start(&["--source", "poll", "--interval", "1"]);
    run_shell(&format!("/bin/sh -c 'sleep 3' {m}"));
    // A poll sees the exit within an interval or two; a loaded host is slower.
    watch.wait_for_stdout("the marker's stop", Duration::from_secs(30), |l| {
        l.contains("\"kind\":\"stop\"") && l.contains(&m)
    });
    let out = watch.stop();
    assert!(out.success, "watch failed:\n{}", out.stderr);
    let starts: Vec<&Value> = out
        .of_kind("start")
        .filter(|e| e["argv"][3] == m.as_str())
        .collect();
    assert_eq!(starts.len(), 1, "one start for the marker process");
    assert_eq!(starts[0]["source"], "poll");
    // procfs polling computes the entity_id too (Linux): the stop is paired
    // with the start by it, not by pid.
    let id = entity_id(starts[0]);
    let stops = out.of_kind("stop").filter(|e| entity_id(e) == id).count();
    assert_eq!(stops, 1, "one stop for entity_id {id}");
    assert!(out.events.iter().all(|e| e["source"] == "poll"));
}

#[test]
fn secrets_never_leave_the_process() {
    let source = if ebpf_unavailable().is_some() {
        "poll"
    } else {
        "ebpf"
    };
    let m = marker("secret");
    let watch = Watch::start(&["--source", source, "--interval", "1"]);
    // Long enough for the polling fallback to see them too.
    run_shell(&format!(
        "/bin/sh -c 'sleep 2' {m} --password hunter2 --token=abc123 API_KEY=zzz https://u:pw@host/x &
         /bin/sh -c 'sleep 2' {m}-ssh ssh -p 22 host &
         wait"
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let out = watch.stop();
    for secret in ["hunter2", "abc123", "zzz", "u:pw@", ":pw"] {
        assert!(!out.stdout.contains(secret), "{secret} leaked to stdout");
        assert!(!out.stderr.contains(secret), "{secret} leaked to stderr");
    }
    let kind = if source == "ebpf" { "exec" } else { "start" };
    let secret_event = out
        .of_kind(kind)
        .find(|e| e["argv"][3] == m.as_str())
        .unwrap_or_else(|| panic!("no {kind} event for {m}"));
    assert_eq!(
        secret_event["argv"],
        serde_json::json!([
            "/bin/sh",
            "-c",
            "sleep 2",
            m,
            "--password",
            "[REDACTED]",
            "--token=[REDACTED]",
            "API_KEY=[REDACTED]",
            "https://u:[REDACTED]@host/x"
        ])
    );
    let ssh = out
        .of_kind(kind)
        .find(|e| e["argv"][3] == format!("{m}-ssh").as_str())
        .expect("ssh marker event");
    assert_eq!(ssh["argv"][5], "-p");
    assert_eq!(ssh["argv"][6], "22", "a port after -p is kept");
}

#[test]
fn hostile_names_and_argv_give_one_json_object_per_line() {
    let source = if ebpf_unavailable().is_some() {
        "poll"
    } else {
        "ebpf"
    };
    let dir = std::env::temp_dir().join(marker("hostile"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // 15 bytes, the kernel's comm limit: newline, ANSI escape, invalid UTF-8.
    let name = std::ffi::OsStr::from_bytes(b"ev\nl\x1b[31m\xffname");
    let link = dir.join(name);
    std::os::unix::fs::symlink("/bin/sleep", &link).expect("symlink");
    let m = marker("argv");
    let watch = Watch::start(&["--source", source, "--interval", "1"]);
    // sleep fails at once on the extra operands: the exec is what matters.
    let _ = Command::new(&link)
        .stderr(std::process::Stdio::null())
        .arg("1.5")
        .arg(std::ffi::OsStr::from_bytes(
            format!("{m}\nsecond line\x1b[2J").as_bytes(),
        ))
        .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe bad utf8"))
        .status();
    std::thread::sleep(Duration::from_millis(1500));
    let out = watch.stop(); // panics unless every stdout line is one JSON object
    let _ = std::fs::remove_dir_all(&dir);
    let kind = if source == "ebpf" { "exec" } else { "start" };
    let hits: Vec<&Value> = out.of_kind(kind).filter(|e| argv_contains(e, &m)).collect();
    if source == "ebpf" {
        assert_eq!(hits.len(), 1, "one exec for the hostile process");
        let e = hits[0];
        assert_eq!(e["name"], "ev\nl\u{1b}[31m\u{fffd}name");
        assert_eq!(e["argv"][2], format!("{m}\nsecond line\u{1b}[2J"));
        assert_eq!(e["argv"][3], "\u{fffd}\u{fffd} bad utf8");
    }
    assert!(
        out.stdout.lines().all(|l| !l.contains('\u{1b}')),
        "raw ESC in output"
    );
}

#[test]
fn inventory_comes_first_and_lists_processes_alive_at_start() {
    let m = marker("inventory");
    let mut sleeper = Command::new("/bin/sh")
        .args(["-c", "sleep 30", &m])
        .spawn()
        .expect("spawn sleeper");
    let expect_source = if ebpf_unavailable().is_some() {
        "poll"
    } else {
        "reconcile"
    };
    let watch = Watch::start(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let out = watch.stop();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let n = out.of_kind("snapshot").count();
    assert!(n > 5, "inventory has the host's processes ({n})");
    assert!(
        out.events[..n]
            .iter()
            .all(|e| e["kind"] == "snapshot" && e["source"] == expect_source),
        "snapshot events come first"
    );
    let me = out
        .of_kind("snapshot")
        .find(|e| e["pid"] == sleeper.id())
        .expect("the sleeper is in the inventory");
    assert!(argv_contains(me, &m));
    assert!(me["start_time"].is_string());
}

#[test]
fn duration_and_sigterm_exit_zero_after_flushing() {
    let out = procmond()
        .args(["watch", "--duration", "1", "--format", "text"])
        .output()
        .expect("run watch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().count() > 5
            && text
                .lines()
                .all(|l| l.contains(" snapshot ") || l.contains("pid="))
    );
    let watch = Watch::start(&[]);
    watch.signal("TERM");
    let out = watch.finish();
    assert!(out.success, "SIGTERM exit: {}", out.stderr);
    assert!(out.stats()["events_emitted"].as_u64().unwrap_or(0) > 5);
}

#[test]
fn without_privileges_ebpf_fails_clearly_and_auto_degrades() {
    if !common::is_root() {
        eprintln!("!!! not root: cannot drop to nobody; checking the unprivileged run directly");
    }
    let as_nobody = || {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_procmond"));
        c
    };
    let out = as_nobody()
        .args(["watch", "--source", "ebpf", "--duration", "1"])
        .output()
        .expect("run setpriv");
    assert!(
        !out.status.success(),
        "--source ebpf must fail without privilege"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("eBPF source required") && err.contains("CAP_BPF"),
        "{err}"
    );

    let mut watch = Watch::start_with(as_nobody(), &["--source", "auto", "--interval", "1"]);
    watch.wait_for_stderr("falling back to polling", Duration::from_secs(5));
    let out = watch.stop();
    assert!(out.success, "{}", out.stderr);
    assert!(out.of_kind("snapshot").all(|e| e["source"] == "poll"));
    assert!(out.of_kind("snapshot").count() > 5);

    let caps = as_nobody()
        .arg("capabilities")
        .output()
        .expect("capabilities");
    let caps: Value = serde_json::from_slice(&caps.stdout).expect("json");
    assert_eq!(caps["active_source"], "poll");
    assert_eq!(caps["degraded"], true);
    assert!(
        caps["degraded_reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("CAP_BPF"))
    );
}

#[test]
fn capabilities_and_config_validation() {
    let caps = procmond()
        .arg("capabilities")
        .output()
        .expect("capabilities");
    assert!(caps.status.success());
    let caps: Value = serde_json::from_slice(&caps.stdout).expect("json");
    assert_eq!(caps["platform"]["os"], "linux");
    if ebpf_unavailable().is_none() {
        // The variant that loaded is named (reference §7).
        let probes = caps["probes"].as_str().unwrap_or_default();
        assert!(probes.starts_with("tp_btf/"), "probes: {caps}");
    }
    let names: Vec<&str> = caps["privileges"]["capabilities"]
        .as_array()
        .expect("capability list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_SYS_ADMIN",
            "CAP_SYS_PTRACE",
            "CAP_DAC_READ_SEARCH"
        ]
    );

    let dir = std::env::temp_dir().join(marker("config"));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    };
    let validate = |p: &std::path::Path| {
        procmond()
            .args(["config", "validate"])
            .arg(p)
            .output()
            .expect("validate")
    };
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/procmond.yaml");
    assert!(validate(&shipped).status.success());
    let cases: [(&str, &str, u32, &str); 4] = [
        (
            "bad-interval.yaml",
            "collection_interval_secs: 0\n",
            0o600,
            "collection_interval_secs",
        ),
        (
            "typo.yaml",
            "enhanced_metdata: true\n",
            0o600,
            "enhanced_metdata",
        ),
        (
            "open.yaml",
            "collection_interval_secs: 5\n",
            0o666,
            "world-writable",
        ),
        (
            "agent.yaml",
            "collectors:\n  - id: p\n    type: process-monitor\n    binary_path: /nonexistent\n",
            0o600,
            "collectors[0].binary_path",
        ),
    ];
    for (name, text, mode, needle) in cases {
        let out = validate(&write(name, text, mode));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{name}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Both builds of the probes load and capture here, and the start-up line
/// names the one that ran: the bounded-loop build (kernels before 5.17) is
/// exercised on this kernel too, not only in the kernel matrix.
#[test]
fn both_probe_builds_capture_and_name_themselves() {
    if let Some(reason) = ebpf_unavailable() {
        return eprintln!("SKIPPED: a kernel test, eBPF unavailable: {reason}");
    }
    for build in ["bpf_loop", "bounded_loop"] {
        let m = marker(build);
        let dir = std::env::temp_dir().join(&m);
        std::fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("procmond.yaml");
        std::fs::write(&config, format!("ebpf_probes: {build}\n")).expect("config");
        let watch = Watch::start(&[
            "--source",
            "ebpf",
            "--config",
            config.to_str().expect("utf-8"),
        ]);
        run_shell(&format!(
            "cd /tmp && i=0; while [ $i -lt 20 ]; do /bin/sh -c 'exit 4' {m}-$i; i=$((i+1)); done"
        ));
        std::thread::sleep(Duration::from_millis(500));
        let out = watch.stop();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.success, "{}", out.stderr);
        let named = format!("probes=\"tp_btf/{build}\"");
        assert!(out.stderr.contains(&named), "{named} in:\n{}", out.stderr);
        let execs: Vec<&Value> = out
            .of_kind("exec")
            .filter(|e| e["argv"][3].as_str().is_some_and(|a| a.starts_with(&m)))
            .collect();
        assert_eq!(execs.len(), 20, "{build}");
        // The cwd comes from the path walk each build does its own way.
        assert!(
            execs.iter().all(|e| e["cwd"] == "/tmp"),
            "{build}: {execs:?}"
        );
        let all_exits: Vec<&Value> = out.of_kind("exit").collect();
        let exits = exits_of(build, &execs, &all_exits);
        assert!(exits.iter().all(|e| e["exit_code"] == 4), "{build}");
    }
}

#[test]
fn classic_tracepoints_are_the_fallback_attach_and_leave_no_mount_behind() {
    if let Some(reason) = ebpf_unavailable() {
        return eprintln!("SKIPPED: a kernel test, eBPF unavailable: {reason}");
    }
    let mounted_before = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .contains(" /sys/kernel/tracing ");
    let dir = std::env::temp_dir().join(marker("classic"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("procmond.yaml");
    std::fs::write(&config, "ebpf_attach: tracepoint\n").expect("config");
    let m = marker("classic");
    let watch = Watch::start(&[
        "--source",
        "ebpf",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    let spawner = run_shell(&format!(
        "i=0; while [ $i -lt 50 ]; do /bin/sh -c 'exit 5' {m}-$i; i=$((i+1)); done"
    ));
    std::thread::sleep(Duration::from_millis(500));
    let out = watch.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("no fork or setuid events"),
        "the degraded reason is reported:\n{}",
        out.stderr
    );
    let execs: Vec<&Value> = out
        .of_kind("exec")
        .filter(|e| e["argv"][3].as_str().is_some_and(|a| a.starts_with(&m)))
        .collect();
    assert_eq!(execs.len(), 50);
    assert!(
        execs
            .iter()
            .all(|e| e["ppid"] == spawner && e["source"] == "ebpf")
    );
    let all_exits: Vec<&Value> = out.of_kind("exit").collect();
    let exits = exits_of("the classic-attach markers", &execs, &all_exits);
    assert!(exits.iter().all(|e| e["exit_code"] == 5), "{exits:?}");
    assert_eq!(exits.len(), 50);
    assert_eq!(
        out.of_kind("fork").count(),
        0,
        "classic attach reports no forks"
    );
    let mounted_after = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .contains(" /sys/kernel/tracing ");
    assert_eq!(
        mounted_before, mounted_after,
        "tracefs left as it was found"
    );
}

/// A marker and a directory on tmpfs (a mount the kernel-side path walks
/// must cross) named after it; `None` (test skipped) without eBPF.
fn marker_and_shm_dir(tag: &str, suffix: &str) -> Option<(String, std::path::PathBuf)> {
    if let Some(reason) = ebpf_unavailable() {
        eprintln!("SKIPPED: eBPF unavailable: {reason}");
        return None;
    }
    let m = marker(tag);
    let dir = std::path::PathBuf::from("/dev/shm").join(format!("{m}{suffix}"));
    std::fs::create_dir_all(&dir).expect("shm dir");
    Some((m, dir))
}

#[test]
fn exec_cwd_comes_from_the_kernel_across_mounts_and_deep_paths_fall_back() {
    // A name with a space and a control character, and a path deeper than
    // the probe walks (32).
    let Some((m, shm)) = marker_and_shm_dir("cwd", " a\u{1}b") else {
        return;
    };
    let deep = (0..40).fold(std::env::temp_dir().join(&m), |p, i| {
        p.join(format!("d{i}"))
    });
    std::fs::create_dir_all(&deep).expect("deep dir");
    let watch = Watch::start(&["--source", "ebpf"]);
    // The kernel path serves even a process gone at once; the procfs
    // fallback for a too-deep path needs the process still alive.
    for (dir, tag, script) in [(&shm, "shm", "exit 0"), (&deep, "deep", "sleep 1")] {
        let status = Command::new("/bin/sh")
            .args(["-c", script, &format!("{m}-{tag}")])
            .current_dir(dir)
            .status()
            .expect("spawn");
        assert!(status.success());
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = watch.stop();
    for (dir, tag) in [(&shm, "shm"), (&deep, "deep")] {
        let e = out
            .of_kind("exec")
            .find(|e| e["argv"][3] == format!("{m}-{tag}").as_str())
            .unwrap_or_else(|| panic!("no exec for {tag}"));
        assert_eq!(e["cwd"], dir.display().to_string(), "{tag}: {e}");
    }
    let _ = std::fs::remove_dir_all(&shm);
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&m));
}

#[test]
fn task_iterator_reads_what_procfs_reads() {
    use procmond::sources::snapshot::SnapshotOptions;
    // A process with argv, a cwd with a space, on a tmpfs mount.
    let Some((m, dir)) = marker_and_shm_dir("iter", " dir") else {
        return;
    };
    let mut child = Command::new("/bin/sh")
        .args(["-c", "sleep 30", &m])
        .current_dir(&dir)
        .spawn()
        .expect("spawn");
    // A command line longer than the argv bound: both readers must cut it at
    // the same byte (a CI host had one that differed by a trailing space).
    let long_tail = format!("{} tail", "x ".repeat(3000));
    let mut long = Command::new("/bin/sh")
        .args(["-c", "sleep 30", &m, &long_tail])
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(200));
    let options = SnapshotOptions { cwd: true };
    let mut iter =
        procmond::sources::ebpf::iter::TaskIter::load_standalone().expect("iterator loads");
    let from_kernel = iter.snapshot(options).expect("iterator snapshot");
    let from_procfs = procmond::platform::procfs::snapshot(std::path::Path::new("/proc"), options)
        .expect("procfs snapshot");
    let _ = child.kill();
    let _ = child.wait();
    let _ = long.kill();
    let _ = long.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let long_of = |s: &procmond::sources::snapshot::Snapshot| {
        s.processes
            .iter()
            .find(|p| p.pid == long.id())
            .map(|p| (p.argv.clone(), p.argv_truncated))
            .expect("the long process")
    };
    let (kernel_long, procfs_long) = (long_of(&from_kernel), long_of(&from_procfs));
    assert!(kernel_long.1, "the long argv is reported truncated");
    assert_eq!(
        kernel_long, procfs_long,
        "both readers cut at the same byte"
    );

    let mine = from_kernel
        .processes
        .iter()
        .find(|p| p.pid == child.id())
        .expect("the marker process");
    assert_eq!(mine.argv, ["/bin/sh", "-c", "sleep 30", m.as_str()]);
    assert_eq!(mine.cwd.as_deref(), Some(dir.to_str().expect("utf-8")));
    let exe = std::fs::canonicalize("/bin/sh").expect("sh");
    assert_eq!(mine.exe.as_deref(), exe.to_str());
    assert!(
        from_kernel.processes.iter().any(|p| p.pid == 1),
        "PID 1 is always there"
    );
    // Every process both saw agrees on identity and facts (procfs-only
    // ones may have started or ended between the two reads).
    let mut compared = 0;
    for p in &from_procfs.processes {
        let Some(k) = from_kernel.processes.iter().find(|k| k.pid == p.pid) else {
            continue;
        };
        if k.start_time != p.start_time {
            continue; // the pid was reused between the reads
        }
        assert_eq!(
            (k.ppid, k.uid, k.gid, k.euid, k.egid),
            (p.ppid, p.uid, p.gid, p.euid, p.egid),
            "pid {}",
            p.pid
        );
        // The same process gets the same id from both (OCSF CPID from the
        // same facts), and the same session facts.
        assert!(k.entity_id.is_some(), "pid {}: no entity_id", p.pid);
        assert_eq!(k.entity_id, p.entity_id, "pid {}", p.pid);
        assert_eq!(k.parent_entity_id, p.parent_entity_id, "pid {}", p.pid);
        assert_eq!(
            (
                k.session.id,
                k.session.pgid,
                k.session.tty,
                k.session.login_uid
            ),
            (
                p.session.id,
                p.session.pgid,
                p.session.tty,
                p.session.login_uid
            ),
            "pid {}",
            p.pid
        );
        // procfs shows kernel threads' full names; the kernel's comm is 15 bytes.
        assert!(
            p.name.starts_with(&k.name),
            "pid {}: {} vs {}",
            p.pid,
            k.name,
            p.name
        );
        assert_eq!(k.argv, p.argv, "pid {}", p.pid);
        if p.exe.as_deref().is_some_and(|e| !e.ends_with(" (deleted)")) {
            assert_eq!(k.exe, p.exe, "pid {}", p.pid);
        }
        if p.cwd.as_deref().is_some_and(|c| !c.ends_with(" (deleted)")) {
            assert_eq!(k.cwd, p.cwd, "pid {}", p.pid);
        }
        compared += 1;
    }
    assert!(
        compared * 10 >= from_procfs.processes.len() * 9,
        "{compared} of {}",
        from_procfs.processes.len()
    );
}
