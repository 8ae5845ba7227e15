//! Tests of the ES message → `ProcessEvent` mapping, on constructed
//! messages shaped like what macOS delivers (they run on every platform).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

use super::event_type::{NOTIFY_EXEC as EXEC, NOTIFY_EXIT as EXIT, NOTIFY_FORK as FORK};

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

fn process(pid: i32, path: &[u8]) -> EsProcess<'_> {
    EsProcess {
        pid,
        pidversion: 31,
        ruid: 501,
        euid: 0,
        rgid: 20,
        ppid: 1,
        original_ppid: 77,
        executable: EsFile {
            path,
            truncated: false,
        },
        start_time: Some(at(1_700_000_000, 987_654_000)),
        signing_id: b"com.apple.ls",
        team_id: b"",
        cdhash: [0xab; 20],
        is_platform_binary: true,
    }
}

fn message<'a>(event_type: u32, process: EsProcess<'a>, event: EsEvent<'a>) -> EsMessage<'a> {
    EsMessage {
        version: 8,
        time: at(1_700_000_123, 456_789_000),
        event_type,
        seq_num: Some(1),
        global_seq_num: Some(1),
        thread_id: Some(4242),
        process,
        event,
    }
}

fn exec<'a>(path: &'a [u8], args: Vec<&'a [u8]>, cwd: &'a [u8]) -> EsMessage<'a> {
    let arg_count = u32::try_from(args.len()).expect("small");
    message(
        EXEC,
        process(900, b"/bin/zsh"),
        EsEvent::Exec {
            target: process(900, path),
            args,
            arg_count,
            cwd: Some(EsFile {
                path: cwd,
                truncated: false,
            }),
        },
    )
}

#[test]
fn exec_with_args_maps_every_field() {
    let msg = exec(b"/bin/ls", vec![b"ls", b"-la", b"/tmp dir"], b"/Users/me");
    let e = to_event(&msg).expect("decodes");
    assert_eq!(e.kind, EventKind::Exec);
    assert_eq!(e.source, EventSource::EndpointSecurity);
    assert_eq!(e.timestamp, 1_700_000_123_456_789_000);
    assert_eq!((e.pid, e.ppid), (900, Some(1)));
    assert_eq!(e.tid, None, "a Mach thread id is not a BSD tid");
    assert_eq!((e.uid, e.euid, e.gid), (Some(501), Some(0), Some(20)));
    assert_eq!(e.name, "ls");
    assert_eq!(e.exe.as_deref(), Some("/bin/ls"));
    assert_eq!(e.argv, ["ls", "-la", "/tmp dir"]);
    assert!(!e.argv_truncated);
    assert_eq!(e.cwd.as_deref(), Some("/Users/me"));
    // Whole seconds, like the sysinfo snapshot it is reconciled against.
    assert_eq!(e.start_time, Some(1_700_000_000_000_000_000));
    assert_eq!(e.exit_code, None);
    let p = &e.platform;
    assert_eq!(p.original_ppid, Some(77));
    assert_eq!(p.signing_id.as_deref(), Some("com.apple.ls"));
    assert_eq!(p.team_id, None, "an empty team id is left out");
    assert_eq!(p.cdhash.as_deref(), Some("ab".repeat(20).as_str()));
    assert_eq!(p.platform_binary, Some(true));
    assert_eq!((p.signal, p.exec_filename.as_ref()), (None, None));
    let json = serde_json::to_value(&e).expect("serializes");
    assert_eq!(json["source"], "endpoint_security");
    assert_eq!(json["platform"]["cdhash"], "ab".repeat(20));
}

#[test]
fn fork_describes_the_child() {
    let mut child = process(1001, b"/bin/zsh");
    child.ppid = 900;
    child.original_ppid = 900;
    child.team_id = b"ABCDE12345";
    child.cdhash = [0; 20];
    child.is_platform_binary = false;
    let msg = message(FORK, process(900, b"/bin/zsh"), EsEvent::Fork { child });
    let e = to_event(&msg).expect("decodes");
    assert_eq!(e.kind, EventKind::Fork);
    assert_eq!((e.pid, e.ppid), (1001, Some(900)));
    assert_eq!(e.name, "zsh");
    assert_eq!(e.exe.as_deref(), Some("/bin/zsh"));
    assert!(e.argv.is_empty(), "fork carries no argv");
    assert_eq!(e.platform.original_ppid, Some(900));
    assert_eq!(e.platform.team_id.as_deref(), Some("ABCDE12345"));
    assert_eq!(e.platform.cdhash, None, "all-zero cdhash: unsigned");
    assert_eq!(e.platform.platform_binary, Some(false));
    assert_eq!(e.platform.exec_filename, None);
}

#[test]
fn exit_with_status_and_by_signal() {
    let exit = |stat| {
        let msg = message(EXIT, process(900, b"/bin/sh"), EsEvent::Exit { stat });
        to_event(&msg).expect("decodes")
    };
    let e = exit(3 << 8);
    assert_eq!(
        (e.kind, e.pid, e.exit_code),
        (EventKind::Exit, 900, Some(3))
    );
    assert_eq!((e.platform.signal, e.platform.core_dumped), (None, None));
    assert_eq!(e.exe.as_deref(), Some("/bin/sh"));
    assert_eq!(exit(0).exit_code, Some(0));
    // SIGKILL (9), no core.
    let k = exit(9);
    assert_eq!(k.exit_code, None);
    assert_eq!(
        (k.platform.signal, k.platform.core_dumped),
        (Some(9), Some(false))
    );
    // SIGSEGV (11) with a core dump (0x80).
    let s = exit(11 | 0x80);
    assert_eq!(
        (s.platform.signal, s.platform.core_dumped),
        (Some(11), Some(true))
    );
    // A "stopped" status is not an exit status: nothing is made up.
    let w = exit(0x137f);
    assert_eq!((w.exit_code, w.platform.signal), (None, None));
}

#[test]
fn hostile_paths_and_argv_never_panic_and_stay_bounded() {
    // Invalid UTF-8 and control characters are kept (escaped on output).
    let msg = exec(
        b"/tmp/\xff\xfe\x1b[31mevil\n",
        vec![b"\xff", b"a\x00b", b"\x07\x1b"],
        b"/tmp/\xc3",
    );
    let e = to_event(&msg).expect("decodes");
    assert_eq!(
        e.exe.as_deref(),
        Some("/tmp/\u{fffd}\u{fffd}\u{1b}[31mevil\n")
    );
    assert_eq!(e.name, "\u{fffd}\u{fffd}\u{1b}[31mevil\n");
    // An argument holding a NUL splits there, as it would in a C argv.
    assert_eq!(e.argv, ["\u{fffd}", "a", "b", "\u{7}\u{1b}"]);
    assert_eq!(e.cwd.as_deref(), Some("/tmp/\u{fffd}"));

    // A huge path: no exe (it would be a cut one), the cut path kept aside,
    // and a huge cwd dropped.
    let huge = [b"/".as_slice(), &vec![b'a'; 1 << 20]].concat();
    let msg = exec(&huge, vec![b"x"], &huge);
    let e = to_event(&msg).expect("decodes");
    assert_eq!(e.exe, None);
    let kept = e.platform.exec_filename.as_deref().expect("kept aside");
    assert_eq!(kept.len(), PATH_MAX_BYTES);
    assert_eq!(e.cwd, None);
    assert_eq!(e.name.len(), PATH_MAX_BYTES - 1);

    // A path ES marked truncated, and a relative one.
    let mut msg = exec(b"/very/long/pa", vec![], b"/");
    if let EsEvent::Exec { target, cwd, .. } = &mut msg.event {
        target.executable.truncated = true;
        if let Some(c) = cwd {
            c.truncated = true;
        }
    }
    let e = to_event(&msg).expect("decodes");
    assert_eq!(e.exe, None);
    assert_eq!(e.platform.exec_filename.as_deref(), Some("/very/long/pa"));
    assert_eq!(e.cwd, None);
    let e = to_event(&exec(b"rel/x", vec![], b"rel")).expect("decodes");
    assert_eq!((e.exe, e.cwd), (None, None));
    assert_eq!(e.platform.exec_filename.as_deref(), Some("rel/x"));

    // An empty path: no exe, no name, nothing invented.
    let e = to_event(&exec(b"", vec![], b"")).expect("decodes");
    assert_eq!(
        (e.exe, e.platform.exec_filename, e.name.as_str()),
        (None, None, "")
    );
}

#[test]
fn huge_argv_is_cut_at_the_common_bounds() {
    // One enormous argument: cut at ARGV_MAX_BYTES, flagged.
    let big = vec![b'a'; 10 * ARGV_MAX_BYTES];
    let (argv, truncated) = argv_from_args(&[&big], 1);
    assert!(truncated);
    assert_eq!((argv.len(), argv[0].len()), (1, ARGV_MAX_BYTES));
    // Many arguments: 256 kept, flagged.
    let many: Vec<&[u8]> = vec![b"x"; ARGS_TAKEN];
    let (argv, truncated) = argv_from_args(&many, 100_000);
    assert_eq!((argv.len(), truncated), (ARGV_MAX_ARGS, true));
    // ES counted more than the client copied: flagged even if it fits.
    let (argv, truncated) = argv_from_args(&[b"a", b"b"], 3);
    assert_eq!((argv, truncated), (vec!["a".to_string(), "b".into()], true));
    // Empty arguments in the middle and at the end survive.
    let (argv, truncated) = argv_from_args(&[b"a", b"", b"b", b""], 4);
    assert_eq!(argv, ["a", "", "b", ""]);
    assert!(!truncated);
    assert_eq!(argv_from_args(&[], 0), (vec![], false));
    // Exactly at the byte bound: kept whole, not flagged.
    let fits = vec![b'z'; ARGV_MAX_BYTES - 1];
    let (argv, truncated) = argv_from_args(&[&fits], 1);
    assert_eq!((argv[0].len(), truncated), (ARGV_MAX_BYTES - 1, false));
}

#[test]
fn ids_times_and_hashes_at_their_edges() {
    let mut msg = exec(b"/bin/ls", vec![], b"/");
    if let EsEvent::Exec { target, .. } = &mut msg.event {
        target.pid = -5;
    }
    assert_eq!(to_event(&msg), Err(DecodeError::NegativePid(-5)));

    let mut msg = exec(b"/bin/ls", vec![], b"/");
    msg.thread_id = Some(u64::MAX); // a Mach thread id: never a `tid`
    msg.time = UNIX_EPOCH - Duration::from_secs(1);
    if let EsEvent::Exec { target, .. } = &mut msg.event {
        target.ppid = -1;
        target.original_ppid = -1;
        target.start_time = Some(UNIX_EPOCH); // the crate's overflow value
    }
    let e = to_event(&msg).expect("decodes");
    assert_eq!(
        (e.tid, e.ppid, e.platform.original_ppid),
        (None, None, None)
    );
    assert_eq!((e.timestamp, e.start_time), (0, None));
    // launchd: parent 0 is a real value, kept.
    let mut msg = exec(b"/sbin/launchd", vec![], b"/");
    if let EsEvent::Exec { target, .. } = &mut msg.event {
        target.ppid = 0;
        target.start_time = None; // message version < 3
    }
    let e = to_event(&msg).expect("decodes");
    assert_eq!((e.ppid, e.start_time), (Some(0), None));

    let mut h = [0u8; 20];
    h[0] = 0x0f;
    h[19] = 0xa0;
    assert_eq!(
        cdhash_hex(&h).as_deref(),
        Some("0f000000000000000000000000000000000000a0")
    );
    assert_eq!(
        start_time_ns(at(1_700_000_001, 999_999_999)),
        Some(1_700_000_001_000_000_000)
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        path in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..8),
        stat in proptest::num::i32::ANY,
    ) {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let e = to_event(&exec(&path, refs, &path)).expect("pid is positive");
        proptest::prop_assert!(e.argv.len() <= ARGV_MAX_ARGS);
        let msg = message(EXIT, process(1, &path), EsEvent::Exit { stat });
        let e = to_event(&msg).expect("pid is positive");
        proptest::prop_assert!(e.exit_code.is_some() as u8 + e.platform.signal.is_some() as u8 <= 1);
    }
}

fn mac_boot() -> MacBoot {
    MacBoot {
        serial: MacBoot::serial_field("C02ZX0ABCDEF").expect("serial"),
        hardware_uuid: [3; 16],
        kernel_task_start: Timeval {
            sec: 1_699_990_000,
            usec: 1,
        },
        launchd_start: Timeval {
            sec: 1_699_990_000,
            usec: 70_000,
        },
    }
}

#[test]
fn ids_of_an_exec_a_fork_and_an_exit() {
    let boot = mac_boot();
    // process(): started 1_700_000_000 s + 987_654 µs, pid version 31.
    let start = Timeval {
        sec: 1_700_000_000,
        usec: 987_654,
    };
    let msg = exec(b"/bin/ls", vec![b"ls"], b"/");
    let mut e = to_event(&msg).expect("decodes");
    let parent_start = Timeval {
        sec: 1_699_999_000,
        usec: 5,
    };
    identify(&mut e, &msg, &boot, Some(parent_start));
    let id = boot.entity_id(start, 900);
    assert_eq!(e.entity_id, Some(id));
    assert_eq!(e.exec_id, Some(exec_id(id, 31)));
    let parent = e.parent.clone().expect("parent");
    assert_eq!(parent.pid, 1);
    assert_eq!(parent.entity_id, Some(boot.entity_id(parent_start, 1)));
    assert_eq!(parent.start_time, Some(1_699_999_000_000_000_000));
    // The next exec of the same process: same entity, new image id.
    let mut msg2 = exec(b"/bin/cat", vec![b"cat"], b"/");
    if let EsEvent::Exec { target, .. } = &mut msg2.event {
        target.pidversion = 32;
    }
    let mut e2 = to_event(&msg2).expect("decodes");
    identify(&mut e2, &msg2, &boot, Some(parent_start));
    assert_eq!(e2.entity_id, e.entity_id);
    assert_ne!(e2.exec_id, e.exec_id);
    // A "parent" started after the child is a reuse of its pid: no id.
    let later = Timeval {
        sec: 1_700_000_001,
        usec: 0,
    };
    let mut e3 = to_event(&msg).expect("decodes");
    identify(&mut e3, &msg, &boot, Some(later));
    assert_eq!(e3.parent.map(|p| (p.pid, p.entity_id)), Some((1, None)));
    // A fork: the message's process is the parent, with its own start.
    let mut forker = process(900, b"/bin/zsh");
    forker.start_time = Some(at(1_699_999_999, 250_000_000));
    let mut child = process(1001, b"/bin/zsh");
    child.ppid = 900;
    child.start_time = Some(at(1_700_000_100, 7_000));
    let fork = message(FORK, forker, EsEvent::Fork { child });
    let mut f = to_event(&fork).expect("decodes");
    identify(&mut f, &fork, &boot, None);
    let child_start = Timeval {
        sec: 1_700_000_100,
        usec: 7,
    };
    assert_eq!(f.entity_id, Some(boot.entity_id(child_start, 1001)));
    let fp = f.parent.expect("parent");
    let forker_start = Timeval {
        sec: 1_699_999_999,
        usec: 250_000,
    };
    assert_eq!(
        (fp.pid, fp.entity_id),
        (900, Some(boot.entity_id(forker_start, 900)))
    );
    // An exit names the exiting process; without a start time, no ids.
    let mut quitter = process(900, b"/bin/zsh");
    quitter.start_time = Some(UNIX_EPOCH);
    let exit = message(EXIT, quitter, EsEvent::Exit { stat: 0 });
    let mut x = to_event(&exit).expect("decodes");
    identify(&mut x, &exit, &boot, None);
    assert_eq!((x.entity_id, x.exec_id), (None, None));
    assert_eq!(x.parent.map(|p| (p.pid, p.entity_id)), Some((1, None)));
}

#[test]
fn kinfo_proc_start_time() {
    let mut b = vec![0u8; 648];
    b[..8].copy_from_slice(&1_703_173_115i64.to_ne_bytes());
    b[8..12].copy_from_slice(&282_857i32.to_ne_bytes());
    b[40..44].copy_from_slice(&1i32.to_ne_bytes());
    assert_eq!(
        parse_kinfo_proc_start(&b, 1),
        Some(Timeval {
            sec: 1_703_173_115,
            usec: 282_857
        })
    );
    assert_eq!(parse_kinfo_proc_start(&b, 2), None, "another pid's entry");
    assert_eq!(parse_kinfo_proc_start(&b[..40], 1), None, "cut short");
    assert_eq!(parse_kinfo_proc_start(&[], 1), None, "no such process");
    b[8..12].copy_from_slice(&1_000_000i32.to_ne_bytes());
    assert_eq!(parse_kinfo_proc_start(&b, 1), None, "µs out of range");
    b[8..12].copy_from_slice(&0i32.to_ne_bytes());
    b[..8].copy_from_slice(&0i64.to_ne_bytes());
    assert_eq!(parse_kinfo_proc_start(&b, 1), None, "no start time");
    assert_eq!(start_timeval(UNIX_EPOCH), None);
    assert_eq!(
        start_timeval(at(5, 1_999)),
        Some(Timeval { sec: 5, usec: 1 })
    );
}
