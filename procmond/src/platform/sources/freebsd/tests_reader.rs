//! Tests of what the audit reader makes of records the way a FreeBSD 13+
//! kernel writes them for today's programs: posix_spawn children
//! (rfork(RFSPAWN)), records the reader must skip, the order records
//! arrive in, and the pipe's loss counters. Records from `fixtures`.

use super::bsm;
use super::event::{self, Tracker, aue};
use super::fixtures::*;
use super::tests::{FakeTable, kinfo};
use crate::model::EventKind;

fn event_of(rec: &[u8]) -> Option<crate::model::ProcessEvent> {
    let r = bsm::parse_record(rec).expect("parses");
    event::to_event(&r).expect("attributable")
}

/// libc's posix_spawn calls rfork(RFSPAWN): the record's flags arg is
/// exactly `1U << 31` (sys_rfork audits `uap->flags` before it turns
/// RFSPAWN into RFFDG | RFPROC | RFPPWAIT | RFMEM), with the child in the
/// "child PID" arg token (audit_bsm.c, AUE_RFORK falls through to FORK).
#[test]
fn posix_spawn_child_is_a_fork() {
    let spawn = record(
        Hdr::H32,
        aue::RFORK,
        1,
        0,
        &[
            arg32(1, 1 << 31, "flags"),
            arg32(0, 4321, "child PID"),
            subject32(4000, 1001, 1001, 20),
            ret32(0, 4321),
        ],
    );
    let e = event_of(&spawn).expect("a posix_spawn child is a fork");
    assert_eq!((e.kind, e.pid, e.ppid), (EventKind::Fork, 4321, Some(4000)));
    // RFSPAWN without the arg token: the return value names the child.
    let spawn = record(
        Hdr::H32,
        aue::RFORK,
        1,
        0,
        &[
            arg32(1, 1 << 31, "flags"),
            subject32(4000, 1, 1, 1),
            ret32(0, 4322),
        ],
    );
    assert_eq!(event_of(&spawn).map(|e| e.pid), Some(4322));
    // Without RFPROC or RFSPAWN and without a child, still nothing.
    let none = record(
        Hdr::H32,
        aue::RFORK,
        1,
        0,
        &[arg32(1, 0x4, "flags"), subject32(9, 1, 1, 1), ret32(0, 0)],
    );
    assert!(event_of(&none).is_none());
}

/// A child's exec record can come before its parent's fork record (they
/// are queued as the system calls return): the fork must not put the
/// parent's name back on a child that has exec'd.
#[test]
fn late_fork_keeps_the_name_the_exec_set() {
    let mut table = FakeTable(vec![
        (kinfo(10, 1, "sh", 0), Some(111)),
        (kinfo(11, 10, "ls", 0), Some(222)),
    ]);
    let mut t = Tracker::new(false);
    t.seed([(kinfo(10, 1, "sh", 0), Some(111))]);
    let mut exec = event_of(&bare_exec_record(11, "/bin/ls")).expect("exec");
    t.complete(&mut exec, &mut table, false);
    let mut fork = event_of(&fork_record(11, 10)).expect("fork");
    t.complete(&mut fork, &mut table, false);
    assert_eq!(
        fork.name, "sh",
        "at the fork the child bore its parent's name"
    );
    table.0.retain(|(k, _)| k.pid != 11);
    let mut exit = event_of(&exit_record(11, 0)).expect("exit");
    t.complete(&mut exit, &mut table, false);
    assert_eq!((exit.name.as_str(), exit.start_time), ("ls", Some(222)));
}

/// The same, when the child has exec'd and is gone before its fork record
/// is read: the exec's name and start time stay.
#[test]
fn late_fork_of_a_gone_child() {
    let mut table = FakeTable(vec![(kinfo(11, 10, "ls", 0), Some(222))]);
    let mut t = Tracker::new(false);
    t.seed([(kinfo(10, 1, "sh", 0), Some(111))]);
    let mut exec = event_of(&bare_exec_record(11, "/bin/ls")).expect("exec");
    t.complete(&mut exec, &mut table, false);
    table.0.clear();
    let mut fork = event_of(&record(
        Hdr::H32,
        aue::FORK,
        1,
        0,
        &[arg32(0, 11, "child PID"), subject32(10, 0, 0, 0)],
    ))
    .expect("fork");
    t.complete(&mut fork, &mut table, false);
    assert_eq!((fork.name.as_str(), fork.start_time), ("sh", Some(222)));
    let mut exit = event_of(&exit_record(11, 0)).expect("exit");
    t.complete(&mut exit, &mut table, false);
    assert_eq!((exit.name.as_str(), exit.start_time), ("ls", Some(222)));
}

/// Records of other events (the `pc` class's chdir, wait4, kill …, and
/// user records, which every pipe gets) are skipped by the header's event
/// number, before their tokens are parsed: a token procmond cannot size in
/// one of them is not a malformed process record.
#[test]
fn other_events_are_skipped_unparsed() {
    let wait4 = record(
        Hdr::H32,
        19, // AUE_WAIT4
        1,
        0,
        &[subject32(5, 1, 1, 1), vec![0xfe, 1, 2, 3], ret32(0, 0)],
    );
    assert!(
        bsm::parse_record(&wait4).is_err(),
        "the body is not parseable"
    );
    assert_eq!(event::record_event(&wait4), Ok(None));
    // A process record is still parsed (and refused when damaged).
    let exec = exec_record(7, "/bin/sh", &[b"sh"]);
    let (e, had_argv) = event::record_event(&exec).expect("parses").expect("exec");
    assert_eq!((e.pid, had_argv), (7, true));
    let bad = record(Hdr::H32, aue::EXIT, 1, 0, &[vec![0xfe, 1, 2, 3]]);
    assert!(event::record_event(&bad).is_err());
}

/// GET_DROPS and GET_TRUNCATES are declared with a `u_int64_t`, but the
/// kernel stores a `u_int` at the start of the buffer (audit_pipe.c), and
/// the count wraps at 2^32.
#[test]
fn loss_counters_are_32_bit_and_wrap() {
    use super::auditpipe::{Losses, counter};
    let mut buf = [0xa5u8; 8];
    buf[..4].copy_from_slice(&5u32.to_ne_bytes());
    assert_eq!(counter(buf), 5, "only the u_int the kernel wrote");
    let prev = Losses {
        drops: u32::MAX - 1,
        truncates: 0,
    };
    let now = Losses {
        drops: 3,
        truncates: 0,
    };
    assert_eq!(now.since(prev), 5, "across the wrap");
    let later = Losses {
        drops: 3,
        truncates: 2,
    };
    assert_eq!(later.since(now), 2);
    assert_eq!(now.since(now), 0);
}

/// Inside a jail auditon(2) fails with ENOSYS, as on a kernel without
/// audit: `security.jail.jailed` tells them apart.
#[test]
fn enosys_in_a_jail_is_the_jail() {
    use super::reason::{Auditon, auditon_failed};
    let jailed = auditon_failed(Auditon::NoSys, Some(true), "ENOSYS");
    assert!(jailed.contains("jail"), "{jailed}");
    assert!(!jailed.contains("options AUDIT"), "{jailed}");
    let host = auditon_failed(Auditon::NoSys, Some(false), "ENOSYS");
    assert!(host.contains("options AUDIT"), "{host}");
    let unknown = auditon_failed(Auditon::NoSys, None, "ENOSYS");
    assert!(
        unknown.contains("options AUDIT") && unknown.contains("jail"),
        "{unknown}"
    );
    let perm = auditon_failed(Auditon::Perm, Some(false), "EPERM");
    assert!(perm.contains("PRIV_AUDIT_CONTROL"), "{perm}");
}
