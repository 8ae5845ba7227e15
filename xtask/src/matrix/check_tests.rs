//! The checker on a synthetic run shaped like procmond's output: a complete
//! run passes, and each thing the matrix must catch makes it fail.

use serde_json::{Value, json};

use super::*;

/// Builds the events of a run the way procmond reports them.
struct Run {
    events: Vec<Value>,
    next: u64,
}

impl Run {
    fn new() -> Self {
        Self {
            events: Vec::new(),
            next: 100,
        }
    }

    fn id(&mut self) -> String {
        self.next += 1;
        format!("e-{}", self.next)
    }

    fn push(&mut self, kind: &str, entity: &str, exec_id: &str, extra: Value) {
        let mut v = json!({
            "kind": kind, "entity_id": entity, "exec_id": exec_id,
            "timestamp": format!("t{}", self.events.len()),
        });
        if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        self.events.push(v);
    }

    /// fork + exec + exit of one process under `parent`; returns its entity.
    fn process(&mut self, parent: &str, ppid: u64, argv: &[&str], exe: &str, end: Value) -> String {
        let entity = self.id();
        let (fork_id, exec_id) = (self.id(), self.id());
        let parent_json = json!({ "parent": { "entity_id": parent }, "ppid": ppid });
        self.push("fork", &entity, &fork_id, parent_json.clone());
        let name = exe.rsplit('/').next().unwrap_or(exe);
        let mut exec = json!({ "argv": argv, "exe": exe, "name": name, "cwd": "/" });
        if let (Some(e), Value::Object(p)) = (exec.as_object_mut(), parent_json.clone()) {
            e.extend(p);
        }
        self.push("exec", &entity, &exec_id, exec);
        let mut exit = end;
        if let (Some(e), Value::Object(p)) = (exit.as_object_mut(), parent_json) {
            e.extend(p);
        }
        self.push("exit", &entity, &exec_id, exit);
        entity
    }

    /// A child forked by `parent` that never execs and exits `code`, its
    /// exit seen with `exit_ppid`.
    fn forked(&mut self, parent: &str, code: i64, exit_ppid: u64) {
        let (entity, exec_id) = (self.id(), self.id());
        let p = json!({ "parent": { "entity_id": parent }, "ppid": 50 });
        self.push("fork", &entity, &exec_id, p);
        let e = json!({ "exit_code": code, "ppid": exit_ppid });
        self.push("exit", &entity, &exec_id, e);
    }

    /// Everything the guest workload does, with `spawns` per spawner.
    fn complete(spawns: usize) -> Self {
        let mut r = Self::new();
        r.push("snapshot", "e-1", "", json!({ "pid": 1, "name": "init" }));
        r.push(
            "snapshot",
            "e-2",
            "",
            json!({ "pid": 2, "name": "kthreadd" }),
        );
        // /proc names a kworker with its queue; the kernel's comm does not.
        r.push(
            "snapshot",
            "e-3",
            "",
            json!({ "pid": 5, "name": "kworker/0:1" }),
        );
        let ok = json!({ "exit_code": 0 });
        for s in ["a", "b"] {
            let argv = ["/bin/sh", "-c", "loop", "km-spawner", s, "2"];
            let spawner = r.process("e-1", 1, &argv, "/bin/dash", ok.clone());
            for i in 1..=spawns {
                let marker = format!("km-{s}-{i}");
                r.process(
                    &spawner,
                    7,
                    &["/bin/true", &marker],
                    "/bin/true",
                    ok.clone(),
                );
            }
        }
        let sh = |m: &'static str| ["/bin/sh", "-c", "x", m];
        r.process(
            "e-1",
            1,
            &sh("km-exit7"),
            "/bin/dash",
            json!({ "exit_code": 7 }),
        );
        let killed = json!({ "platform": { "signal": 9 } });
        r.process("e-1", 1, &sh("km-kill"), "/bin/dash", killed);
        let fork = r.process("e-1", 1, &sh("km-fork"), "/bin/dash", ok.clone());
        r.forked(&fork, 5, 50);
        let orphan = r.process("e-1", 1, &sh("km-orphan"), "/bin/dash", ok.clone());
        r.forked(&orphan, 6, 1);
        r.drop_to_nobody(ok);
        r
    }

    /// setpriv's exec, its two credential changes, then its exec of /bin/true.
    fn drop_to_nobody(&mut self, end: Value) {
        let argv = ["/bin/setpriv", "--reuid=65534", "/bin/true", "km-setuid"];
        let entity = self.process("e-1", 1, &argv, "/bin/setpriv", end);
        let exit = self.events.pop().expect("exit");
        let exec_id = self
            .events
            .last()
            .map(|e| e["exec_id"].clone())
            .expect("exec");
        let exec_id = exec_id.as_str().unwrap_or_default().to_string();
        let gid = json!({ "uid": 0, "previous_creds": { "uid": 0, "gid": 0 } });
        self.push("setuid", &entity, &exec_id, gid);
        let uid = json!({ "uid": 65534, "previous_creds": { "uid": 0, "gid": 65534 } });
        self.push("setuid", &entity, &exec_id, uid);
        let image = json!({ "argv": ["/bin/true", "km-setuid"], "exe": "/bin/true" });
        self.push("exec", &entity, "x-true", image);
        self.events.push(exit);
    }

    fn files(&self) -> RunFiles {
        let stats = LOSS_COUNTERS
            .iter()
            .chain(&["kernel_lost"])
            .map(|k| format!("\"{k}\":0"))
            .collect::<Vec<_>>()
            .join(",");
        RunFiles {
            meta: "rc=0 watch_pid=9 started=10.5 ended=14.0\n6.1.0\n".into(),
            log: format!(
                "INFO procmond::sensor::kernel_loop: monitoring started source=\"ebpf\" probes=\"tp_btf/bounded_loop\" processes=2 snapshot_reader=\"procfs\" reconcile_interval_secs=30\n\
                 INFO procmond::commands::watch: procmond watch finished stats={{{stats}}}\n"
            ),
            events: self.events.iter().map(|v| v.to_string() + "\n").collect(),
            procs_before: "1 init\n2 kthreadd\n33 gone\n5 kworker/0:1-events\n".into(),
            procs_after: "1 init\n2 kthreadd\n9 procmond\n5 kworker/0:1-events\n".into(),
        }
    }
}

fn problems(files: &RunFiles) -> Vec<String> {
    check(files, Expect::Btf, 3).problems
}

#[test]
fn a_complete_run_passes_with_its_counts() {
    let out = check(&Run::complete(3).files(), Expect::Btf, 3);
    assert_eq!(out.problems, Vec::<String>::new());
    // 6 spawns + 2 spawners + exit7, kill, fork, orphan, setpriv.
    let all = |n| Tally {
        expected: n,
        seen: n,
    };
    assert_eq!(out.execs, all(13));
    assert_eq!(out.setuid, all(1));
    // 6 spawns, exit7, kill and the two forked children.
    assert_eq!(
        out.exits,
        Tally {
            expected: 10,
            seen: 10
        }
    );
    // 6 spawns' forks + the two forked children.
    assert_eq!(
        out.forks,
        Tally {
            expected: 8,
            seen: 8
        }
    );
    assert_eq!((out.inventory, out.inventory_missing), (3, 0));
    assert_eq!(out.probes, "tp_btf/bounded_loop");
    assert_eq!(out.snapshots, "procfs");
    assert!((out.seconds - 3.5).abs() < 1e-9);
}

#[test]
fn a_missing_exit_fails_unless_kernel_lost_counts_it() {
    let mut run = Run::complete(3);
    let at = run
        .events
        .iter()
        .position(|v| v["kind"] == "exec" && v["argv"][1] == "km-b-2")
        .expect("km-b-2");
    run.events.remove(at + 1);
    let p = problems(&run.files());
    let missing = "km-b-2 exit: 0 exit events, want 1".to_string();
    assert_eq!(
        p,
        vec![
            "1 expected events missing, kernel_lost only 0".to_string(),
            missing.clone()
        ]
    );
    let mut files = run.files();
    files.log = files.log.replace("\"kernel_lost\":0", "\"kernel_lost\":1");
    let out = check(&files, Expect::Btf, 3);
    assert!(out.passed(), "{:?}", out.problems);
    assert_eq!(out.missing, vec![missing]);
    assert_eq!(out.verdict(), "pass, 1 missing (counted in kernel_lost)");
}

#[test]
fn a_duplicate_fails_twice_over() {
    let mut run = Run::complete(3);
    let dup = run
        .events
        .iter()
        .find(|v| v["kind"] == "exec" && v["argv"][1] == "km-a-1")
        .cloned()
        .expect("km-a-1");
    run.events.push(dup);
    let p = problems(&run.files());
    assert!(
        p.contains(&"km-a-1: 2 exec events, want 1".to_string()),
        "{p:?}"
    );
    assert!(
        p.contains(&"1 events were delivered twice".to_string()),
        "{p:?}"
    );
}

#[test]
fn polling_or_the_wrong_attach_fails() {
    let mut files = Run::complete(3).files();
    files.log = files.log.replace("source=\"ebpf\"", "source=\"poll\"");
    assert!(problems(&files)[0].starts_with("not the eBPF source"));
    let files = Run::complete(3).files();
    let p = check(&files, Expect::Classic, 3).problems;
    assert!(
        p.iter()
            .any(|p| p.starts_with("probes tp_btf/bounded_loop where tracepoint/")),
        "{p:?}"
    );
    let mut files = Run::complete(3).files();
    files.log = "INFO x\nError: eBPF source required but it cannot start: E2BIG\n: more\n".into();
    let p = problems(&files);
    assert_eq!(
        p,
        vec!["procmond never started monitoring: Error: eBPF source required but it cannot start: E2BIG".to_string()]
    );
}

#[test]
fn a_userspace_loss_or_a_failed_stop_fails() {
    let mut files = Run::complete(3).files();
    files.log = files.log.replace("\"wal_lost\":0", "\"wal_lost\":4");
    let p = problems(&files);
    assert_eq!(
        p,
        vec!["wal_lost is 4: procmond itself lost events".to_string()]
    );
    let mut files = Run::complete(3).files();
    files.meta = "rc=143 started=1 ended=2\n".into();
    assert!(problems(&files)[0].starts_with("procmond did not exit 0"));
}

#[test]
fn wrong_exit_codes_and_signals_fail() {
    let mut run = Run::complete(3);
    for v in &mut run.events {
        if v["kind"] == "exit" && v["exit_code"] == 7 {
            v["exit_code"] = json!(0);
        }
        if v.pointer("/platform/signal").is_some() {
            v["platform"]["signal"] = json!(15);
        }
    }
    let p = problems(&run.files());
    assert!(
        p.iter().any(|p| p == "km-exit7: exit_code Some(0), want 7"),
        "{p:?}"
    );
    assert!(
        p.iter().any(|p| p.starts_with("km-kill: signal Some(15)")),
        "{p:?}"
    );
}

#[test]
fn a_fork_child_that_execs_or_an_orphan_not_reparented_fails() {
    let mut run = Run::complete(3);
    let orphan_exit = run
        .events
        .iter_mut()
        .rev()
        .find(|v| v["kind"] == "exit" && v["exit_code"] == 6)
        .expect("orphan exit");
    orphan_exit["ppid"] = json!(50);
    let p = problems(&run.files());
    assert!(
        p.iter().any(|p| p.starts_with("km-orphan: not reparented")),
        "{p:?}"
    );

    let mut run = Run::complete(3);
    let child = run
        .events
        .iter()
        .find(|v| v["kind"] == "exit" && v["exit_code"] == 5)
        .map(|v| v["entity_id"].clone())
        .expect("fork child");
    run.events
        .push(json!({ "kind": "exec", "entity_id": child, "argv": ["x"] }));
    let p = problems(&run.files());
    assert!(
        p.iter()
            .any(|p| p == "km-fork: the forked child has an exec"),
        "{p:?}"
    );
}

#[test]
fn classic_runs_expect_no_forks() {
    let mut run = Run::complete(2);
    run.events.retain(|v| v["kind"] != "fork");
    let mut files = run.files();
    files.log = files.log.replace("tp_btf/", "tracepoint/");
    let out = check(&files, Expect::Classic, 2);
    assert_eq!(out.problems, Vec::<String>::new());
    assert_eq!(out.forks, Tally::default());
    // The same run judged as BTF misses every fork.
    assert!(!check(&files, Expect::Btf, 2).passed());
}

#[test]
fn the_inventory_must_match_proc() {
    let mut run = Run::complete(3);
    run.events
        .retain(|v| !(v["kind"] == "snapshot" && v["pid"] == 2));
    run.push(
        "snapshot",
        "e-9",
        "",
        json!({ "pid": 4242, "name": "ghost" }),
    );
    // A process that lived only while the inventory was taken: its exit shows it.
    run.push(
        "snapshot",
        "e-8",
        "",
        json!({ "pid": 4343, "name": "grep" }),
    );
    run.push("exit", "e-8", "", json!({ "exit_code": 0 }));
    let out = check(&run.files(), Expect::Btf, 3);
    assert_eq!((out.inventory_missing, out.inventory_extra), (1, 1));
    assert!(
        out.problems
            .contains(&"inventory: pid 2 (kthreadd) missing".to_string())
    );
    assert!(
        out.problems
            .contains(&"inventory: pid 4242 in the inventory, not in /proc".to_string())
    );
}

#[test]
fn a_missing_or_wrong_drop_to_nobody_fails() {
    let mut run = Run::complete(3);
    run.events.retain(|v| v["kind"] != "setuid");
    let p = problems(&run.files());
    assert!(
        p.contains(&"km-setuid: 0 setuid events, want 1 or more".to_string()),
        "{p:?}"
    );
    let mut run = Run::complete(3);
    for v in &mut run.events {
        if v["kind"] == "setuid" {
            v["uid"] = json!(0);
        }
    }
    let p = problems(&run.files());
    assert!(
        p.iter()
            .any(|p| p.starts_with("km-setuid: previous uid Some(0), then (Some(0)")),
        "{p:?}"
    );
}
