//! The process table against the sequences the kernel produces: fork,
//! exec, exit in stream order, parents that exit first, overflow.

use super::*;
use crate::model::{EventSource, Parent, Session};

fn id(n: u8) -> EntityId {
    EntityId([n; 16])
}

/// An event of `kind` for process `n` (pid 100 + n) whose parent is `p`.
fn ev(kind: EventKind, n: u8, p: u8) -> ProcessEvent {
    let mut e = ProcessEvent::new(kind, EventSource::Ebpf, 1, 100 + u32::from(n));
    e.entity_id = Some(id(n));
    e.start_time = Some(i64::from(n));
    e.parent = Some(Parent {
        entity_id: (p != 0).then(|| id(p)),
        pid: if p == 0 { 0 } else { 100 + u32::from(p) },
        ..Parent::default()
    });
    e
}

fn exec(n: u8, p: u8, exe: &str, argv: &[&str]) -> ProcessEvent {
    let mut e = ev(EventKind::Exec, n, p);
    e.exe = Some(exe.into());
    e.name = exe.rsplit('/').next().unwrap_or_default().into();
    e.argv = argv.iter().map(|s| (*s).to_string()).collect();
    e
}

/// Records then annotates, as the pipeline does.
fn through(t: &mut ProcessTable, mut e: ProcessEvent) -> ProcessEvent {
    t.record(&mut e);
    t.annotate(&mut e);
    e
}

#[test]
fn an_exec_names_its_parent_and_ancestors_and_keeps_its_entity() {
    let mut t = ProcessTable::new(1024, 16);
    through(&mut t, exec(1, 0, "/usr/bin/test-harness", &["harness"]));
    through(&mut t, ev(EventKind::Fork, 2, 1));
    through(&mut t, exec(2, 1, "/usr/bin/bash", &["bash", "-c", "sh"]));
    through(&mut t, ev(EventKind::Fork, 3, 2));
    let sh = through(
        &mut t,
        exec(3, 2, "/usr/bin/sh", &["sh", "-c", "exec true"]),
    );
    let tr = through(&mut t, exec(3, 2, "/usr/bin/true", &["true"]));
    assert_eq!(sh.entity_id, tr.entity_id, "exec keeps the process");
    let p = tr.parent.expect("parent");
    assert_eq!(p.entity_id, Some(id(2)));
    assert_eq!(p.exe.as_deref(), Some("/usr/bin/bash"));
    assert_eq!(p.argv, ["bash", "-c", "sh"]);
    assert!(!p.unknown);
    assert_eq!(tr.ancestors, [id(1)]);
}

#[test]
fn a_fork_runs_its_parents_image_until_it_execs() {
    let mut t = ProcessTable::new(1024, 16);
    through(&mut t, exec(1, 0, "/usr/bin/bash", &["bash"]));
    through(&mut t, ev(EventKind::Fork, 2, 1));
    through(&mut t, ev(EventKind::Fork, 3, 2));
    let child = through(&mut t, exec(3, 2, "/bin/ls", &["ls"]));
    let p = child.parent.expect("parent");
    assert_eq!(p.exe.as_deref(), Some("/usr/bin/bash"), "the fork's image");
    assert_eq!(p.argv, ["bash"]);
}

#[test]
fn a_parent_that_exited_before_the_childs_exec_is_still_known() {
    let mut t = ProcessTable::new(1024, 16);
    through(&mut t, exec(1, 0, "/usr/bin/bash", &["bash"]));
    through(&mut t, ev(EventKind::Fork, 2, 1));
    through(&mut t, exec(2, 1, "/usr/bin/sh", &["sh", "-c", "x &"]));
    through(&mut t, ev(EventKind::Fork, 3, 2));
    through(&mut t, ev(EventKind::Exit, 2, 1));
    let orphan = through(&mut t, exec(3, 2, "/usr/bin/sleep", &["sleep", "1"]));
    let p = orphan.parent.expect("parent");
    assert_eq!((p.exe.as_deref(), p.unknown), (Some("/usr/bin/sh"), false));
    assert_eq!(orphan.ancestors, [id(1)]);
}

#[test]
fn an_overflow_is_counted_and_the_lost_parent_is_unknown_not_invented() {
    let mut t = ProcessTable::new(16, 16);
    through(&mut t, exec(1, 0, "/usr/bin/old-parent", &["old"]));
    let mut evicted = 0;
    for n in 2..40 {
        let mut e = exec(n, 0, "/bin/x", &["x"]);
        evicted += t.record(&mut e).evicted;
    }
    assert!(evicted > 0, "live entries had to go");
    assert!(t.len() <= 16);
    let mut child = exec(50, 1, "/bin/child", &["child"]);
    t.record(&mut child);
    let unknown = t.annotate(&mut child);
    let p = child.parent.expect("parent");
    assert!(unknown && p.unknown);
    assert_eq!(p.entity_id, Some(id(1)), "the kernel's id stays");
    assert_eq!((p.exe, p.name), (None, None), "nothing made up");
}

#[test]
fn exited_entries_retire_first_and_are_not_counted_as_evictions() {
    let mut t = ProcessTable::new(16, 16);
    let mut evicted = 0;
    for n in 1..100 {
        let mut e = exec(n, 0, "/bin/x", &["x"]);
        evicted += t.record(&mut e).evicted;
        let mut x = ev(EventKind::Exit, n, 0);
        evicted += t.record(&mut x).evicted;
    }
    assert_eq!(evicted, 0);
    assert!(t.len() <= 1, "a sixteenth of the table for exited ones");
}

#[test]
fn setuid_takes_the_ids_before_from_the_table_and_drops_no_op_calls() {
    let mut t = ProcessTable::new(1024, 16);
    let mut e = exec(1, 0, "/usr/bin/su", &["su"]);
    (e.uid, e.euid, e.gid, e.egid) = (Some(0), Some(0), Some(0), Some(0));
    through(&mut t, e);
    let mut s = ev(EventKind::SetUid, 1, 0);
    (s.uid, s.euid, s.gid, s.egid) = (Some(1000), Some(1000), Some(0), Some(0));
    let r = t.record(&mut s);
    assert!(!r.unchanged_setuid);
    assert_eq!(s.previous_creds, Some(Creds::default()));
    let mut again = ev(EventKind::SetUid, 1, 0);
    (again.uid, again.euid, again.gid, again.egid) = (Some(1000), Some(1000), Some(0), Some(0));
    assert!(t.record(&mut again).unchanged_setuid);
}

fn with_session(mut e: ProcessEvent, sid: u8, pgid: u8, tty: bool) -> ProcessEvent {
    e.session = Session {
        id: Some(100 + u32::from(sid)),
        pgid: Some(100 + u32::from(pgid)),
        tty: tty.then_some(Tty {
            major: 136,
            minor: 0,
        }),
        ..Session::default()
    };
    e
}

#[test]
fn leaders_are_the_live_holders_of_the_session_group_and_entry() {
    let mut t = ProcessTable::new(1024, 16);
    let mut init = exec(1, 0, "/sbin/init", &["init"]);
    init.pid = 1;
    through(&mut t, init);
    // sshd (a service under init) → its session child → the login shell
    // (session leader on a pty) → a pipeline group.
    let mut sshd = with_session(exec(2, 1, "/usr/sbin/sshd", &["sshd"]), 2, 2, false);
    sshd.parent = Some(Parent {
        entity_id: Some(id(1)),
        pid: 1,
        ..Parent::default()
    });
    through(&mut t, sshd);
    through(
        &mut t,
        with_session(exec(3, 2, "/usr/sbin/sshd", &["sshd: u"]), 3, 3, false),
    );
    through(
        &mut t,
        with_session(exec(4, 3, "/bin/bash", &["-bash"]), 4, 4, true),
    );
    let cat = through(
        &mut t,
        with_session(exec(5, 4, "/bin/cat", &["cat"]), 4, 5, true),
    );
    assert_eq!(cat.session.leader, Some(id(4)));
    assert_eq!(cat.session.group_leader, Some(id(5)));
    assert_eq!(cat.session.entry_leader, Some(id(4)), "the login shell");
    let sshd_child = through(
        &mut t,
        with_session(exec(6, 2, "/usr/sbin/sshd", &["sshd"]), 2, 2, false),
    );
    assert_eq!(
        sshd_child.session.entry_leader,
        Some(id(2)),
        "the service under init"
    );
    // A leader that exited is not named.
    through(&mut t, ev(EventKind::Exit, 4, 3));
    let late = through(
        &mut t,
        with_session(exec(5, 4, "/bin/cat", &["cat"]), 4, 5, true),
    );
    assert_eq!(late.session.leader, None);
}

#[test]
fn procfs_parents_are_found_by_pid_unless_younger_than_the_child() {
    let mut t = ProcessTable::new(1024, 16);
    through(&mut t, exec(9, 0, "/bin/parent", &["p"]));
    let mut child = exec(3, 0, "/bin/child", &["c"]);
    child.parent = Some(Parent {
        pid: 109,
        ..Parent::default()
    });
    // The holder of pid 109 started at 9, after the child (3): a reused pid.
    let c = through(&mut t, child.clone());
    assert!(c.parent.expect("parent").unknown);
    child.start_time = Some(10);
    child.entity_id = Some(id(10));
    let c = through(&mut t, child);
    assert_eq!(c.parent.expect("parent").entity_id, Some(id(9)));
}
