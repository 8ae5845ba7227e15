//! Fixture tests and property tests for the BSM parser, the event mapping
//! and the tracker, run on every platform (records from `fixtures`).

use proptest::prelude::*;

use super::auditpipe as ap;
use super::bsm::{self, Addr, BsmError, RecordStream, token};
use super::event::{self, ProcTable, Tracker, aue};
use super::fixtures::*;
use super::kinfo::Kinfo;
use crate::model::EventKind;

fn event_of(rec: &[u8]) -> Option<crate::model::ProcessEvent> {
    let r = bsm::parse_record(rec).expect("parses");
    event::to_event(&r).expect("attributable")
}

#[test]
fn exec_with_argv() {
    let rec = exec_record(4242, "/usr/bin/env", &[b"env", b"-i", b"FOO=bar baz"]);
    let e = event_of(&rec).expect("an exec event");
    assert_eq!(e.kind, EventKind::Exec);
    assert_eq!(e.source, crate::model::EventSource::Audit);
    assert_eq!(e.pid, 4242);
    assert_eq!((e.uid, e.euid, e.gid), (Some(1001), Some(0), Some(20)));
    assert_eq!(e.exe.as_deref(), Some("/usr/bin/env"));
    assert_eq!(e.name, "env");
    assert_eq!(e.argv, ["env", "-i", "FOO=bar baz"]);
    assert!(!e.argv_truncated);
    assert_eq!(e.timestamp, 1_700_000_000_250_000_000);
    assert_eq!(e.ppid, None, "an exec record does not name the parent");
}

#[test]
fn exec_relative_path_and_long_name() {
    let rec = exec_record(7, "bin/a-very-long-command-name-here", &[b"x"]);
    let e = event_of(&rec).expect("exec");
    assert_eq!(e.exe, None);
    assert_eq!(
        e.platform.exec_filename.as_deref(),
        Some("bin/a-very-long-command-name-here")
    );
    assert_eq!(e.name.len(), event::MAXCOMLEN);
}

#[test]
fn subject_variants_and_terminal_ids() {
    for (tok, port, machine) in [
        (subject32(5, 1, 2, 3), 0x0102_0304, Addr::V4([10, 0, 0, 1])),
        (subject64(5), 0x1_0000_0002, Addr::V4([10, 0, 0, 2])),
        (subject64_ex_v4(5), 5, Addr::V4([172, 16, 0, 9])),
        (
            subject32_ex_v6(5),
            9,
            Addr::V6([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
        ),
    ] {
        for hdr in [Hdr::H32, Hdr::H32ExV4, Hdr::H64, Hdr::H64ExV6] {
            let rec = record(
                hdr,
                aue::EXIT,
                10,
                5,
                &[exit_token(0), tok.clone(), ret32(0, 0)],
            );
            let r = bsm::parse_record(&rec).expect("parses");
            let s = r.subject.expect("subject");
            assert_eq!((s.pid, s.sid, s.auid, s.port), (5, 7, 1000, port));
            assert_eq!(s.machine, machine);
            assert_eq!(r.header.unix_ns(), 10_005_000_000);
            assert_eq!(
                r.header.host.is_some(),
                matches!(hdr, Hdr::H32ExV4 | Hdr::H64ExV6)
            );
        }
    }
}

#[test]
fn fork_names_the_child() {
    let rec = record(
        Hdr::H32,
        aue::FORK,
        1,
        0,
        &[
            arg32(0, 5001, "child PID"),
            subject32(5000, 1, 1, 1),
            ret32(0, 5001),
        ],
    );
    let e = event_of(&rec).expect("fork");
    assert_eq!((e.kind, e.pid, e.ppid), (EventKind::Fork, 5001, Some(5000)));
    // vfork with only the return value; pdfork's return value is an fd.
    let vfork = record(
        Hdr::H32,
        aue::VFORK,
        1,
        0,
        &[subject32(9, 1, 1, 1), ret32(0, 10)],
    );
    assert_eq!(event_of(&vfork).map(|e| e.pid), Some(10));
    let pdfork = record(
        Hdr::H32,
        aue::PDFORK,
        1,
        0,
        &[subject32(9, 1, 1, 1), ret32(0, 3)],
    );
    assert!(event_of(&pdfork).is_none());
    // rfork without RFPROC creates no process.
    let rfork = record(
        Hdr::H32,
        aue::RFORK,
        1,
        0,
        &[arg32(1, 0x4, "flags"), subject32(9, 1, 1, 1), ret32(0, 0)],
    );
    assert!(event_of(&rfork).is_none());
    let rfork = record(
        Hdr::H32,
        aue::RFORK,
        1,
        0,
        &[
            arg32(1, 0x14, "flags"),
            arg32(0, 77, "child PID"),
            subject32(9, 1, 1, 1),
            ret32(0, 77),
        ],
    );
    assert_eq!(event_of(&rfork).map(|e| e.pid), Some(77));
}

#[test]
fn exit_with_status_and_failures() {
    let rec = record(
        Hdr::H32,
        aue::EXIT,
        1,
        0,
        &[exit_token(256 + 7), subject32(31, 1, 1, 1), ret32(0, 0)],
    );
    let e = event_of(&rec).expect("exit");
    assert_eq!((e.kind, e.pid, e.exit_code), (EventKind::Exit, 31, Some(7)));
    // A failed execve replaced nothing.
    let failed = record(
        Hdr::H32,
        aue::EXECVE,
        1,
        0,
        &[
            counted(token::PATH, b"/nope"),
            subject32(31, 1, 1, 1),
            ret32(2, u32::MAX),
        ],
    );
    assert!(event_of(&failed).is_none());
    // Other events are not process events.
    let open = record(Hdr::H32, 72, 1, 0, &[subject32(31, 1, 1, 1), ret32(0, 3)]);
    assert!(event_of(&open).is_none());
    // A process event nobody did is malformed.
    let nobody = record(Hdr::H32, aue::EXIT, 1, 0, &[exit_token(0)]);
    let r = bsm::parse_record(&nobody).expect("parses");
    assert_eq!(event::to_event(&r), Err(BsmError::NoSubject));
}

#[test]
fn jail_name_from_zonename() {
    let rec = record(
        Hdr::H32,
        aue::EXIT,
        1,
        0,
        &[
            exit_token(0),
            counted(token::ZONENAME, b"www"),
            subject32(3, 1, 1, 1),
        ],
    );
    let e = event_of(&rec).expect("exit");
    assert_eq!(e.platform.jail_name.as_deref(), Some("www"));
    let json = serde_json::to_value(&e).expect("serializes");
    assert_eq!(json["platform"]["jail_name"], "www");
}

#[test]
fn hostile_records_are_refused() {
    let good = exec_record(1, "/bin/sh", &[b"sh"]);
    // Every prefix: more bytes needed, or an error; never a panic.
    for n in 0..good.len() {
        assert_eq!(bsm::frame(&good[..n]), Ok(None), "prefix {n}");
        assert!(bsm::parse_record(&good[..n]).is_err());
    }
    let mut bad = good.clone();
    let magic = bad.len() - 6;
    bad[magic] = 0xde;
    assert_eq!(bsm::parse_record(&bad), Err(BsmError::TrailerMagic(0xde05)));
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        bsm::parse_record(&bad),
        Err(BsmError::TrailerLength { .. })
    ));
    assert_eq!(
        bsm::parse_record(&[0x42; 40]),
        Err(BsmError::NotHeader(0x42))
    );
    let mut huge = good.clone();
    huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(bsm::parse_record(&huge), Err(BsmError::Length(_))));
    // An unknown token whose length cannot be derived.
    let unknown = record(Hdr::H32, aue::EXIT, 1, 0, &[vec![0xfe, 1, 2, 3]]);
    assert_eq!(
        bsm::parse_record(&unknown),
        Err(BsmError::UnknownToken { id: 0xfe, at: 18 })
    );
    // exec_args claiming more strings than the token holds.
    let mut lying = exec_args(&[b"a"]);
    lying[1..5].copy_from_slice(&1_000_000u32.to_be_bytes());
    let rec = record(Hdr::H32, aue::EXECVE, 1, 0, &[lying, subject32(1, 1, 1, 1)]);
    assert_eq!(
        bsm::parse_record(&rec),
        Err(BsmError::Unterminated("exec_args"))
    );
    // A subject cut short by the trailer.
    let cut = record(
        Hdr::H32,
        aue::EXIT,
        1,
        0,
        &[subject32(1, 1, 1, 1)[..20].to_vec()],
    );
    assert!(matches!(
        bsm::parse_record(&cut),
        Err(BsmError::Truncated { .. })
    ));
    // Sub-second field out of range.
    let time = record(Hdr::H64, aue::EXIT, 1, 2_000_000_000, &[]);
    assert_eq!(bsm::parse_record(&time), Err(BsmError::Time(2_000_000_000)));
    // A bad terminal address type.
    let mut ex = subject32_ex_v6(1);
    ex[33..37].copy_from_slice(&8u32.to_be_bytes());
    let rec = record(Hdr::H32, aue::EXIT, 1, 0, &[ex]);
    assert_eq!(bsm::parse_record(&rec), Err(BsmError::AddressType(8)));
}

#[test]
fn skipped_tokens() {
    let mut data = vec![token::DATA, 3, 2, 3];
    data.extend([0u8; 12]);
    let mut sock = vec![token::SOCKET_EX, 0, 2, 0, 1, 0, 4];
    sock.extend([0u8; 2 + 4 + 2 + 4]);
    let rec = record(
        Hdr::H32,
        aue::EXECVE,
        1,
        0,
        &[
            data,
            sock,
            counted(token::TEXT, b"note"),
            vec![token::SEQ, 0, 0, 0, 1],
            {
                let mut env = vec![token::EXEC_ENV];
                env.extend(2u32.to_be_bytes());
                env.extend(b"A=1\0B=2\0");
                env
            },
            exec_args(&[b"true"]),
            counted(token::PATH, b"/usr/bin/true"),
            subject32(8, 1, 1, 1),
            ret32(0, 0),
        ],
    );
    let r = bsm::parse_record(&rec).expect("parses");
    assert_eq!(r.texts, vec![&b"note"[..]]);
    let e = event::to_event(&r).expect("ok").expect("exec");
    assert_eq!(e.argv, ["true"]);
}

#[test]
fn stream_reassembles_and_resyncs() {
    let a = exec_record(1, "/bin/a", &[b"a"]);
    let b = record(
        Hdr::H32,
        aue::EXIT,
        2,
        0,
        &[exit_token(0), subject32(1, 1, 1, 1)],
    );
    let mut bytes = a.clone();
    bytes.extend(b"garbage\x14\x00");
    bytes.extend(&b);
    bytes.extend(&a);
    for chunk in [1, 3, 7, 64, bytes.len()] {
        let mut s = RecordStream::default();
        let (mut ok, mut errors) = (Vec::new(), 0);
        for part in bytes.chunks(chunk) {
            s.feed(part);
            while let Some(r) = s.next_record() {
                match r {
                    Ok(rec) => ok.push(rec.to_vec()),
                    Err(_) => errors += 1,
                }
            }
        }
        assert_eq!(ok, [a.clone(), b.clone(), a.clone()], "chunk {chunk}");
        assert_eq!(errors, 1, "one error per damaged stretch (chunk {chunk})");
        assert_eq!(s.buffered(), 0);
    }
}

#[test]
fn ioctl_numbers() {
    // _IOR('A', 102, u_int64_t) etc., by hand from ioccom.h.
    assert_eq!(ap::GET_DROPS, 0x4008_4166);
    assert_eq!(ap::GET_TRUNCATES, 0x4008_4167);
    assert_eq!(ap::GET_QLIMIT, 0x4004_4102);
    assert_eq!(ap::SET_QLIMIT, 0x8004_4103);
    assert_eq!(ap::GET_QLIMIT_MAX, 0x4004_4105);
    assert_eq!(ap::SET_PRESELECT_FLAGS, 0x8008_4107);
    assert_eq!(ap::SET_PRESELECT_NAFLAGS, 0x8008_4109);
    assert_eq!(ap::FLUSH_PRESELECT_AUID, 0x2000_410d);
    assert_eq!(ap::SET_PRESELECT_MODE, 0x8004_410f);
    assert_eq!(std::mem::size_of::<ap::EvClassMap>(), 8);
}

/// A process table that answers from a list.
#[derive(Default)]
pub(super) struct FakeTable(pub(super) Vec<(Kinfo, Option<i64>)>);

impl ProcTable for FakeTable {
    fn process(&mut self, pid: u32) -> Option<(Kinfo, Option<i64>)> {
        self.0.iter().find(|(k, _)| k.pid == pid).cloned()
    }
    fn args(&mut self, pid: u32) -> Option<Vec<u8>> {
        self.process(pid)
            .map(|(k, _)| format!("{}\0--late\0", k.comm).into_bytes())
    }
    fn exe(&mut self, _pid: u32) -> Option<String> {
        Some("/resolved".into())
    }
    fn cwd(&mut self, _pid: u32) -> Option<String> {
        Some("/tmp".into())
    }
}

pub(super) fn kinfo(pid: u32, ppid: u32, comm: &str, jid: i32) -> Kinfo {
    Kinfo {
        pid,
        ppid,
        euid: 0,
        ruid: 0,
        rgid: 0,
        egid: 0,
        start_us: Some(1),
        comm: comm.into(),
        jid,
        zombie: false,
    }
}

#[test]
fn tracker_completes_events() {
    let mut table = FakeTable(vec![
        (kinfo(10, 1, "sh", 0), Some(111)),
        (kinfo(11, 10, "sh", 3), Some(222)),
    ]);
    let mut t = Tracker::new(true);
    t.seed([(kinfo(10, 1, "sh", 0), Some(111))]);
    // fork of 11 by 10: the child's start time and jail from the table.
    let mut fork = event_of(&fork_record(11, 10)).expect("fork");
    t.complete(&mut fork, &mut table, false);
    assert_eq!(
        (fork.start_time, fork.ppid, fork.platform.jail_id),
        (Some(222), Some(10), Some(3))
    );
    // exec by 11 without argv in the record: argv read from the table.
    let mut exec = event_of(&record(
        Hdr::H32,
        aue::EXECVE,
        1,
        0,
        &[counted(token::PATH, b"/bin/ls"), subject32(11, 0, 0, 0)],
    ))
    .expect("exec");
    t.complete(&mut exec, &mut table, false);
    assert_eq!(
        (exec.start_time, exec.ppid, exec.name.as_str()),
        (Some(222), Some(10), "ls")
    );
    assert_eq!(exec.argv, ["sh", "--late"]);
    assert_eq!(exec.cwd.as_deref(), Some("/tmp"));
    // 11 is gone from the table: its exit still gets the start time.
    table.0.retain(|(k, _)| k.pid != 11);
    let mut exit = event_of(&exit_record(11, 0)).expect("exit");
    t.complete(&mut exit, &mut table, false);
    assert_eq!(
        (exit.start_time, exit.name.as_str(), exit.platform.jail_id),
        (Some(222), "ls", Some(3))
    );
    // The seeded host process exits: no jail id on the host.
    let mut exit = event_of(&exit_record(10, 0)).expect("exit");
    t.complete(&mut exit, &mut table, false);
    assert_eq!((exit.start_time, exit.platform.jail_id), (Some(111), None));
    assert!(t.is_empty());
}

/// Ids on audit events: the process's from its start time, the parent's
/// from what the tracker remembers or the table, none without a boot.
#[test]
fn tracker_names_processes_and_parents() {
    use crate::model::identity::{FreeBsdBoot, Timeval};
    let boot = FreeBsdBoot {
        hostuuid: [9; 16],
        boottime: Timeval { sec: 1, usec: 0 },
    };
    let id = |pid, start_ns: i64| super::kinfo::entity_id(&boot, pid, Some(start_ns));
    let mut table = FakeTable(vec![
        (kinfo(10, 1, "sh", 0), Some(5_000_111_000)),
        (kinfo(11, 10, "sh", 0), Some(6_000_222_000)),
        (kinfo(12, 77, "orphan", 0), Some(7_000_000_000)),
    ]);
    let fork_of = |child: u32, parent: u32| event_of(&fork_record(child, parent)).expect("fork");
    let mut t = Tracker::new(false).with_boot(Some(boot));
    t.seed([(kinfo(10, 1, "sh", 0), Some(5_000_111_000))]);
    let mut fork = fork_of(11, 10);
    t.complete(&mut fork, &mut table, false);
    assert_eq!(fork.entity_id, id(11, 6_000_222_000));
    let parent = fork.parent.clone().expect("parent");
    assert_eq!((parent.pid, parent.entity_id), (10, id(10, 5_000_111_000)));
    assert_eq!(parent.start_time, Some(5_000_111_000));
    assert_ne!(fork.entity_id, parent.entity_id);
    assert_eq!(fork.exec_id, None, "FreeBSD has no exec count");
    // The exec keeps the id of the process it replaces the image of.
    let mut exec = event_of(&record(
        Hdr::H32,
        aue::EXECVE,
        1,
        0,
        &[counted(token::PATH, b"/bin/ls"), subject32(11, 0, 0, 0)],
    ))
    .expect("exec");
    t.complete(&mut exec, &mut table, false);
    assert_eq!(exec.entity_id, fork.entity_id);
    assert_eq!(exec.parent.and_then(|p| p.entity_id), parent.entity_id);
    // A parent neither remembered nor in the table: pid only.
    let mut exec = event_of(&record(
        Hdr::H32,
        aue::EXECVE,
        1,
        0,
        &[counted(token::PATH, b"/bin/ls"), subject32(12, 0, 0, 0)],
    ))
    .expect("exec");
    t.complete(&mut exec, &mut table, false);
    assert_eq!(exec.entity_id, id(12, 7_000_000_000));
    let p = exec.parent.expect("parent pid");
    assert_eq!((p.pid, p.entity_id), (77, None));
    // Without the boot's facts, no ids at all.
    let mut t = Tracker::new(false);
    let mut fork = fork_of(11, 10);
    t.complete(&mut fork, &mut table, false);
    assert_eq!((fork.entity_id, fork.parent), (None, None));
}

/// set*id(2): a `setuid` event with the ids before (the record's subject)
/// and after (the table); a failed call reports nothing.
#[test]
fn setuid_records_report_before_and_after() {
    use crate::model::Creds;
    let setuid = |event: u16, error: u8| {
        record(
            Hdr::H32,
            event,
            1,
            0,
            &[
                arg32(1, 0, "uid"),
                subject32(11, 1001, 1001, 20),
                ret32(error, 0),
            ],
        )
    };
    for event in [
        aue::SETUID,
        aue::SETEUID,
        aue::SETREUID,
        aue::SETRESUID,
        aue::SETGID,
        aue::SETEGID,
        aue::SETREGID,
        aue::SETRESGID,
    ] {
        assert!(aue::ALL.contains(&event), "{event} is asked for");
        let e = event_of(&setuid(event, 0)).expect("a setuid event");
        assert_eq!((e.kind, e.pid), (EventKind::SetUid, 11), "{event}");
        assert_eq!(
            e.previous_creds,
            Some(Creds {
                uid: 1001,
                euid: 1001,
                gid: 20,
                egid: 21,
            })
        );
        assert_eq!((e.uid, e.euid, e.gid, e.egid), (None, None, None, None));
    }
    let r = setuid(aue::SETUID, 1);
    let r = bsm::parse_record(&r).expect("parses");
    assert_eq!(
        event::to_event(&r).expect("attributable"),
        None,
        "failed call"
    );
    // Completed from the table: the ids now, the start time and the name.
    let mut after = kinfo(11, 10, "su", 0);
    (after.ruid, after.euid, after.rgid, after.egid) = (0, 0, 5, 6);
    let mut table = FakeTable(vec![(after, Some(222))]);
    let mut t = Tracker::new(false);
    let mut e = event_of(&setuid(aue::SETUID, 0)).expect("event");
    t.complete(&mut e, &mut table, false);
    assert_eq!(
        (e.uid, e.euid, e.gid, e.egid),
        (Some(0), Some(0), Some(5), Some(6))
    );
    assert_eq!(
        (e.start_time, e.ppid, e.name.as_str()),
        (Some(222), Some(10), "su")
    );
    // The process is gone: the ids after stay unknown.
    let mut e = event_of(&setuid(aue::SETUID, 0)).expect("event");
    t.complete(&mut e, &mut FakeTable::default(), false);
    assert_eq!((e.uid, e.euid), (None, None));
    assert!(e.previous_creds.is_some());
}

fn arb_text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..40)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = bsm::frame(&bytes);
        if let Ok(r) = bsm::parse_record(&bytes) {
            let _ = event::to_event(&r);
        }
        let mut s = RecordStream::default();
        s.feed(&bytes);
        while let Some(r) = s.next_record() {
            if let Ok(rec) = r {
                let _ = bsm::parse_record(rec);
            }
        }
    }

    #[test]
    fn arbitrary_tokens_never_panic(
        event in prop_oneof![Just(aue::EXECVE), Just(aue::FORK), Just(aue::EXIT), any::<u16>()],
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        // A valid frame around garbage: every token path sees hostile bytes.
        let rec = record(Hdr::H32, event, 1, 1, &[body]);
        if let Ok(r) = bsm::parse_record(&rec) {
            let _ = event::to_event(&r);
        }
    }

    #[test]
    fn mutated_records_never_panic(at in 0usize..200, byte in any::<u8>()) {
        let mut rec = exec_record(99, "/usr/local/bin/tool", &[b"tool", b"--flag", b"value"]);
        let at = at % rec.len();
        rec[at] = byte;
        if let Ok(r) = bsm::parse_record(&rec) {
            let _ = event::to_event(&r);
        }
    }

    #[test]
    fn exec_round_trips(
        pid in 1u32..=99_999,
        ruid in any::<u32>(),
        euid in any::<u32>(),
        rgid in 0u32..=u32::MAX - 1,
        sec in 0u64..=u32::MAX as u64,
        ms in 0u64..1000,
        path in arb_text(),
        argv in proptest::collection::vec(proptest::collection::vec(1u8..=255, 1..40), 0..20),
    ) {
        let mut full = b"/".to_vec();
        full.extend(&path);
        let args: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let rec = record(
            Hdr::H32,
            aue::EXECVE,
            sec,
            ms,
            &[exec_args(&args), counted(token::PATH, &full), attr32(), subject32(pid, ruid, euid, rgid), ret32(0, 0)],
        );
        let e = event_of(&rec).expect("exec");
        prop_assert_eq!(e.pid, pid);
        prop_assert_eq!((e.uid, e.euid, e.gid), (Some(ruid), Some(euid), Some(rgid)));
        prop_assert_eq!(e.exe, Some(String::from_utf8_lossy(&full).into_owned()));
        prop_assert_eq!(e.timestamp, (sec * 1_000_000_000 + ms * 1_000_000) as i64);
        let want: Vec<String> = argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        prop_assert_eq!(e.argv, want);
    }
}

proptest! {
    #[test]
    fn stream_keeps_every_record_around_garbage(
        pids in proptest::collection::vec(1u32..100_000, 1..8),
        garbage in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("not a header id", |b| !matches!(b, 0x14 | 0x15 | 0x74 | 0x79)), 0..30),
            1..8,
        ),
        chunk in 1usize..200,
    ) {
        let records: Vec<Vec<u8>> = pids
            .iter()
            .map(|&pid| record(Hdr::H32, aue::EXIT, 1, 0, &[exit_token(pid), subject32(pid, 1, 1, 1)]))
            .collect();
        let mut bytes = Vec::new();
        for (i, r) in records.iter().enumerate() {
            bytes.extend(&garbage[i % garbage.len()]);
            bytes.extend(r);
        }
        let mut s = RecordStream::default();
        let (mut ok, mut errors) = (Vec::new(), 0);
        for part in bytes.chunks(chunk) {
            s.feed(part);
            while let Some(r) = s.next_record() {
                match r {
                    Ok(rec) => ok.push(rec.to_vec()),
                    Err(_) => errors += 1,
                }
            }
        }
        prop_assert_eq!(ok, records);
        let stretches = (0..pids.len()).filter(|i| !garbage[i % garbage.len()].is_empty()).count();
        prop_assert!(errors <= stretches);
    }
}
