//! ETW decoding and correlation from constructed property sets, shaped as
//! the providers' manifests describe them (Kernel-Process ProcessStart v3,
//! ProcessStop v2; classic `Process_TypeGroup1` v4). These run on Linux and
//! under the Windows build (wine): no ETW session is needed.

use super::correlate::{CorrelateConfig, Correlator, MAX_PENDING};
use super::decode::*;
use super::ntpath::DeviceMap;
use super::rundown::Rundown;
use crate::model::{EventKind, EventSource};
use crate::sources::snapshot::{ARGV_MAX_BYTES, ProcessInfo, Snapshot};

/// 2026-01-02T03:04:05.678901200Z.
const CREATED_NS: i64 = 1_767_323_045_678_901_200;
const SID: &str = "S-1-5-21-1004336348-1177238915-682003330-1000";
const SEC: u64 = 1_000_000_000;

fn ft(unix_ns: i64) -> u64 {
    (unix_ns / 100 + 116_444_736_000_000_000) as u64
}

fn sid_bytes() -> Vec<u8> {
    let mut b = vec![1u8, 5, 0, 0, 0, 0, 0, 5];
    for sub in [21u32, 1_004_336_348, 1_177_238_915, 682_003_330, 1000] {
        b.extend_from_slice(&sub.to_le_bytes());
    }
    b
}

/// TOKEN_USER (a pointer and the attributes, padded) then the SID.
fn wbem_sid(pointer_size: usize) -> Vec<u8> {
    let mut b = vec![0u8; 2 * pointer_size];
    b[0] = 0x10;
    b.extend(sid_bytes());
    b
}

fn start_props(pid: u32, ppid: u32, created: i64) -> Props {
    Props::default()
        .with("ProcessID", Value::U32(pid))
        .with("ProcessSequenceNumber", Value::U64(7001))
        .with("CreateTime", Value::U64(ft(created)))
        .with("ParentProcessID", Value::U32(ppid))
        .with("ParentProcessSequenceNumber", Value::U64(6999))
        .with("SessionID", Value::U32(1))
        .with(
            "ImageName",
            Value::Str(r"\Device\HarddiskVolume3\Windows\System32\notepad.exe".into()),
        )
}

fn classic_props(pid: u32, ppid: u32) -> Props {
    Props::default()
        .with("ProcessId", Value::U32(pid))
        .with("ParentId", Value::U32(ppid))
        .with("SessionId", Value::U32(1))
        .with("ExitStatus", Value::I32(259))
        .with("UserSID", Value::Bytes(wbem_sid(8)))
        .with("ImageFileName", Value::Str("notepad.exe".into()))
        .with(
            "CommandLine",
            Value::Str(
                r#""C:\Windows\System32\notepad.exe" C:\Users\bob\notes.txt --token=abc"#.into(),
            ),
        )
}

fn devices() -> DeviceMap {
    DeviceMap::new(
        vec![(r"\Device\HarddiskVolume3".into(), "C:".into())],
        Some(r"C:\Windows".into()),
    )
}

/// The join alone: no reorder window (order_tests.rs has the order).
fn join_only() -> CorrelateConfig {
    CorrelateConfig {
        reorder_ns: 0,
        ..CorrelateConfig::default()
    }
}

fn correlator() -> Correlator {
    Correlator::new(join_only(), devices())
}

fn modern(pid: u32, ppid: u32, created: i64) -> KpStart {
    kp_start(&start_props(pid, ppid, created)).expect("decodes")
}

fn classic_at(pid: u32, ppid: u32, at: i64) -> Classic {
    classic(&classic_props(pid, ppid), ft(at), 8).expect("decodes")
}

#[test]
fn property_sets_decode() {
    let kp = modern(4242, 1000, CREATED_NS);
    assert_eq!(kp.pid, 4242);
    assert_eq!(kp.ppid, Some(1000));
    assert_eq!(kp.create_time, Some(CREATED_NS));
    assert_eq!(
        (kp.seq, kp.parent_seq, kp.session),
        (Some(7001), Some(6999), Some(1))
    );
    // Version 0-2 events have no sequence numbers: simply absent.
    let mut v2 = start_props(1, 0, CREATED_NS);
    v2.0.remove("ProcessSequenceNumber");
    assert_eq!(kp_start(&v2).expect("v2").seq, None);
    assert!(kp_start(&Props::default()).is_err(), "no ProcessID");
    let c = classic_at(4242, 1000, CREATED_NS);
    assert_eq!(c.sid.as_deref(), Some(SID));
    assert_eq!(c.exit_status, Some(259));
    assert_eq!(c.timestamp, CREATED_NS);
    let stop = kp_stop(
        &Props::default()
            .with("ProcessID", Value::U32(4242))
            .with("ProcessSequenceNumber", Value::U64(7001))
            .with("CreateTime", Value::U64(ft(CREATED_NS)))
            .with("ExitTime", Value::U64(ft(CREATED_NS + 5_000_000_000)))
            .with("ExitCode", Value::U32(0xC000_0005))
            .with("ImageName", Value::Str("notepad.exe".into())),
    )
    .expect("stop");
    assert_eq!(stop.exit_time, Some(CREATED_NS + 5_000_000_000));
    assert_eq!(classic_op(3), Some(ClassicOp::DcStart));
    assert_eq!(classic_op(39), None);
}

#[test]
fn filetimes_and_sids() {
    assert_eq!(filetime_to_unix_ns(0), None);
    assert_eq!(filetime_to_unix_ns(116_444_736_000_000_000), Some(0));
    assert_eq!(filetime_to_unix_ns(u64::MAX), None);
    assert_eq!(whole_seconds(CREATED_NS), 1_767_323_045_000_000_000);
    assert_eq!(wbem_sid_to_string(&wbem_sid(8), 8).as_deref(), Some(SID));
    assert_eq!(wbem_sid_to_string(&wbem_sid(4), 4).as_deref(), Some(SID));
    assert_eq!(
        wbem_sid_to_string(&[0, 0, 0, 0], 4),
        None,
        "null TOKEN_USER"
    );
    let full = wbem_sid(8);
    assert_eq!(wbem_sid_to_string(&full[..full.len() - 1], 8), None, "cut");
    let mut bad = sid_bytes();
    bad[0] = 2;
    assert_eq!(sid_to_string(&bad), None, "revision");
    assert_eq!(
        sid_to_string(&[1, 0, 0, 0, 0, 0, 0, 18]).as_deref(),
        Some("S-1-18")
    );
    assert_eq!(sid_to_string(&[1, 16, 0, 0, 0, 0, 0, 5]), None, "16 subs");
}

#[test]
fn command_lines_split_like_the_c_runtime() {
    let cases: [(&str, &[&str]); 8] = [
        (r#""abc" d e"#, &["abc", "d", "e"]),
        (r#"a\\\b d"e f"g h"#, &[r"a\\\b", "de fg", "h"]),
        (r#"prog a\\\"b c d"#, &["prog", r#"a\"b"#, "c", "d"]),
        (r#"prog a\\\\"b c" d e"#, &["prog", r"a\\b c", "d", "e"]),
        (r#"prog a"b"" c d"#, &["prog", r#"ab" c d"#]),
        (
            r#""C:\Program Files\x.exe" "" -v"#,
            &[r"C:\Program Files\x.exe", "", "-v"],
        ),
        ("  spaced\targs  ", &["", "spaced", "args"]),
        ("", &[]),
    ];
    for (line, want) in cases {
        let (got, cut) = split_command_line(line);
        assert_eq!(got, want.to_vec(), "{line:?}");
        assert!(!cut);
    }
    let huge = format!("p {}", "é".repeat(ARGV_MAX_BYTES));
    let (got, cut) = split_command_line(&huge);
    assert!(cut);
    assert!(got.iter().map(|a| a.len() + 1).sum::<usize>() <= ARGV_MAX_BYTES);
}

#[test]
fn both_sides_make_one_exec_in_either_order() {
    for modern_first in [true, false] {
        let mut c = correlator();
        let (kp, cl) = (
            modern(4242, 1000, CREATED_NS),
            classic_at(4242, 1000, CREATED_NS + 300_000),
        );
        if modern_first {
            c.modern_start(kp, 0);
            assert!(c.ready(SEC).is_empty(), "waits for the command line");
            c.classic(cl, false, SEC);
        } else {
            c.classic(cl, false, 0);
            assert!(c.ready(SEC).is_empty(), "waits for the image path");
            c.modern_start(kp, SEC);
        }
        let out = c.ready(SEC);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!(
            (e.kind, e.source, e.pid, e.ppid),
            (EventKind::Exec, EventSource::Etw, 4242, Some(1000))
        );
        assert_eq!(e.exe.as_deref(), Some(r"C:\Windows\System32\notepad.exe"));
        assert_eq!(e.name, "notepad.exe");
        assert_eq!(e.argv[1..], [r"C:\Users\bob\notes.txt", "--token=abc"]);
        assert_eq!(e.timestamp, CREATED_NS);
        assert_eq!(e.start_time, Some(whole_seconds(CREATED_NS)));
        assert_eq!(e.platform.user_sid.as_deref(), Some(SID));
        assert_eq!(e.platform.session_id, Some(1));
        assert_eq!(
            (
                e.platform.sequence_number,
                e.platform.parent_sequence_number
            ),
            (Some(7001), Some(6999))
        );
        assert_eq!(c.stats.matched, 1);
    }
}

#[test]
fn one_side_alone_leaves_after_the_hold() {
    let mut c = correlator();
    c.modern_start(modern(10, 1, CREATED_NS), 0);
    assert!(c.ready(2 * SEC).is_empty());
    let out = c.ready(3 * SEC);
    assert_eq!(out.len(), 1);
    assert!(out[0].argv.is_empty() && out[0].platform.user_sid.is_none());
    assert!(out[0].exe.is_some());
    c.classic(classic_at(11, 1, CREATED_NS), false, 10 * SEC);
    let out = c.ready(13 * SEC);
    assert_eq!(out.len(), 1);
    assert!(out[0].exe.is_none(), "no image path without Kernel-Process");
    assert_eq!(out[0].name, "notepad.exe");
    assert_eq!(out[0].argv.len(), 3);
    assert_eq!(out[0].start_time, Some(whole_seconds(CREATED_NS)));
    assert_eq!((c.stats.modern_only, c.stats.classic_only), (1, 1));
}

#[test]
fn a_different_parent_or_time_is_another_process() {
    let mut c = correlator();
    c.modern_start(modern(20, 1, CREATED_NS), 0);
    c.classic(classic_at(20, 2, CREATED_NS), false, 0);
    c.classic(classic_at(20, 1, CREATED_NS + 10_000_000_000), false, 0);
    assert!(c.ready(SEC).is_empty());
    assert_eq!(c.drain().len(), 3);
    assert_eq!(c.stats.matched, 0);
}

#[test]
fn stops_join_and_never_overtake_their_start() {
    let mut c = correlator();
    c.modern_start(modern(30, 1, CREATED_NS), 0);
    let stop = KpStop {
        pid: 30,
        create_time: Some(CREATED_NS),
        create_filetime: Some(ft(CREATED_NS)),
        exit_time: Some(CREATED_NS + SEC as i64),
        exit_code: Some(0xC000_0005),
        image_name: Some("notepad.exe".into()),
        seq: Some(7001),
    };
    c.modern_stop(stop, SEC / 2);
    let mut end = classic_at(30, 1, CREATED_NS + SEC as i64);
    end.exit_status = Some(-1_073_741_819);
    c.classic(end, true, SEC / 2);
    assert!(c.ready(SEC).is_empty(), "the stop waits behind its start");
    c.classic(classic_at(30, 1, CREATED_NS), false, SEC);
    let out = c.ready(SEC);
    assert_eq!(
        out.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Exec, EventKind::Exit]
    );
    let exit = &out[1];
    assert_eq!(exit.exit_code, Some(-1_073_741_819));
    assert_eq!(exit.start_time, Some(whole_seconds(CREATED_NS)));
    assert_eq!(exit.platform.user_sid.as_deref(), Some(SID));
    assert_eq!(c.stats.matched, 2);
}

#[test]
fn barriers_wait_for_what_came_before() {
    let mut c = correlator();
    c.modern_start(modern(40, 1, CREATED_NS), 0);
    let barrier = c.next_id();
    c.modern_start(modern(41, 1, CREATED_NS), 0);
    assert!(c.head_id() < barrier);
    let _ = c.ready(3 * SEC);
    assert!(c.head_id() >= barrier);
    assert_eq!(c.head_id(), c.next_id());
}

#[test]
fn one_session_means_no_waiting_and_a_storm_is_bounded() {
    let only_modern = CorrelateConfig {
        classic: false,
        ..join_only()
    };
    let mut c = Correlator::new(only_modern, devices());
    c.modern_start(modern(50, 1, CREATED_NS), 0);
    assert_eq!(c.ready(0).len(), 1);
    let mut c = correlator();
    for pid in 0..(MAX_PENDING as u32 + 10) {
        c.modern_start(modern(pid, 1, CREATED_NS), 0);
    }
    let out = c.ready(0);
    assert_eq!(out.len(), 10);
    assert_eq!(c.stats.forced, 10);
    assert_eq!(c.pending(), MAX_PENDING);
}

#[test]
fn unknown_devices_keep_the_nt_path_aside() {
    let mut kp = modern(60, 1, CREATED_NS);
    kp.image = Some(r"\Device\HarddiskVolumeShadowCopy2\x.exe".into());
    let e = super::correlate::exec_event(Some(&kp), None, &devices());
    assert_eq!(e.exe, None);
    assert_eq!(e.platform.exec_filename.as_deref(), kp.image.as_deref());
    assert_eq!(e.name, "x.exe");
    let json = serde_json::to_value(&e).expect("json");
    assert_eq!(json["platform"]["sequence_number"], 7001);
    assert_eq!(json["platform"]["session_id"], 1);
    assert_eq!(json["source"], "etw");
}

#[test]
fn the_rundown_fills_what_sysinfo_could_not_read() {
    let mut r = Rundown::default();
    r.observe(ClassicOp::DcStart, &classic_at(70, 4, CREATED_NS));
    r.observe(ClassicOp::Start, &classic_at(71, 4, CREATED_NS));
    r.observe(ClassicOp::End, &classic_at(71, 4, CREATED_NS));
    assert_eq!(r.len(), 1);
    let proc_ = |pid, ppid| ProcessInfo {
        pid,
        ppid: Some(ppid),
        ..ProcessInfo::default()
    };
    let mut snap = Snapshot {
        processes: vec![proc_(70, 4), proc_(71, 4), proc_(70, 9)],
        ..Snapshot::default()
    };
    snap.processes.swap(1, 2);
    assert_eq!(r.fill(&mut snap), 1);
    assert_eq!(
        snap.processes[0].argv[0],
        r"C:\Windows\System32\notepad.exe"
    );
    assert_eq!(snap.processes[0].name, "notepad.exe");
    assert!(
        snap.processes[1].argv.is_empty(),
        "a reused pid with another parent"
    );
    assert!(snap.processes[2].argv.is_empty(), "ended");
}

/// Under wine (and for a non-elevated user) no ETW session starts: the
/// source must say why, in words an operator can act on. Where it starts
/// (an elevated Windows), the probe stops its sessions again.
#[cfg(windows)]
#[test]
fn the_probe_starts_or_says_why_not() {
    let config = crate::config::ProcmondConfig::default();
    let elevated = crate::sys::windows::token_elevated().expect("token");
    assert_eq!(super::unavailable_reason().is_none(), elevated);
    match crate::platform::probe_kernel_source(&config.kernel_options()) {
        Ok(_) => assert!(elevated, "started without elevation?"),
        Err(why) => assert!(
            why.contains("not elevated") || why.contains("did not start"),
            "{why}"
        ),
    }
}

fn win_boot() -> crate::model::identity::WindowsBoot {
    crate::model::identity::WindowsBoot {
        machine_guid: crate::model::identity::guid_memory_from_text(
            "b3b44fe1-8a3b-4191-a91e-d3581e766fac",
        )
        .expect("guid"),
        system_create_time: ft(CREATED_NS - 3_600 * SEC as i64),
    }
}

/// Ids on correlated events: the CPID from ProcessStart's CreateTime, exec
/// id 0, the parent's from the system's answer, or from the start this
/// source saw, never from a process younger than the child.
#[test]
fn events_carry_cpids_and_their_parents() {
    use super::identity::Identities;
    use crate::model::identity::exec_id;
    let boot = win_boot();
    // The "system": pid 900 started an hour ago; 901 started after the
    // child (a reuse of the parent's pid); nothing else answers.
    let parent_ft = ft(CREATED_NS - 3_000 * SEC as i64);
    let lookup = move |pid: u32| match pid {
        900 => Some(parent_ft),
        901 => Some(ft(CREATED_NS + SEC as i64)),
        _ => None,
    };
    let modern_only = CorrelateConfig {
        classic: false,
        ..join_only()
    };
    let mut c = Correlator::new(modern_only, devices())
        .with_identities(Identities::new(boot, Box::new(lookup)));
    c.modern_start(modern(40, 900, CREATED_NS), 0);
    c.modern_start(modern(41, 901, CREATED_NS), 0);
    // 42's parent is 40 (whose ProcessStart carried sequence number 7001).
    let child_of_40 = start_props(42, 40, CREATED_NS + SEC as i64)
        .with("ProcessSequenceNumber", Value::U64(7002))
        .with("ParentProcessSequenceNumber", Value::U64(7001));
    c.modern_start(kp_start(&child_of_40).expect("decodes"), 0);
    c.modern_start(modern(43, 4, CREATED_NS), 0);
    let out = c.ready(0);
    assert_eq!(out.len(), 4);
    let id40 = boot.entity_id(ft(CREATED_NS), 40);
    assert_eq!(out[0].entity_id, Some(id40));
    assert_eq!(out[0].exec_id, Some(exec_id(id40, 0)));
    let p = out[0].parent.clone().expect("parent");
    assert_eq!(
        (p.pid, p.entity_id),
        (900, Some(boot.entity_id(parent_ft, 900)))
    );
    assert_eq!(
        p.start_time,
        filetime_to_unix_ns(parent_ft).map(whole_seconds)
    );
    assert_eq!(
        out[1].parent.clone().map(|p| (p.pid, p.entity_id)),
        Some((901, None)),
        "a parent younger than the child is another process"
    );
    // Out in event-time order: 43 (created with 40) before 42.
    let by_pid = |pid: u32| out.iter().find(|e| e.pid == pid).expect("left");
    // 40 is not known to the system here: its start, seen above, names it.
    assert_eq!(
        by_pid(42).parent.clone().and_then(|p| p.entity_id),
        Some(id40)
    );
    assert_eq!(
        by_pid(43).parent.clone().and_then(|p| p.entity_id),
        Some(boot.entity_id(boot.system_create_time, 4))
    );
    // The stop names the same process, and forgets its start.
    let stop = KpStop {
        pid: 40,
        create_time: Some(CREATED_NS),
        create_filetime: Some(ft(CREATED_NS)),
        exit_time: Some(CREATED_NS + 2 * SEC as i64),
        exit_code: Some(0),
        image_name: Some("notepad.exe".into()),
        seq: Some(7001),
    };
    c.modern_stop(stop, 0);
    let out = c.ready(0);
    assert_eq!(out[0].kind, EventKind::Exit);
    assert_eq!(out[0].entity_id, Some(id40));
    c.modern_start(modern(44, 40, CREATED_NS + 3 * SEC as i64), 0);
    let out = c.ready(0);
    assert_eq!(
        out[0].parent.clone().map(|p| (p.pid, p.entity_id)),
        Some((40, None)),
        "an exited parent the system no longer knows"
    );
}

/// An event only the classic provider reported has no creation time: no
/// ids, and the parent by pid only.
#[test]
fn classic_only_events_have_no_ids() {
    use super::identity::Identities;
    let classic_only = CorrelateConfig {
        modern: false,
        ..join_only()
    };
    let mut c = Correlator::new(classic_only, devices())
        .with_identities(Identities::new(win_boot(), Box::new(|_| Some(1))));
    c.classic(classic_at(50, 900, CREATED_NS), false, 0);
    let out = c.ready(0);
    assert_eq!((out[0].entity_id, out[0].exec_id), (None, None));
    assert_eq!(
        out[0].parent.clone().map(|p| (p.pid, p.entity_id)),
        Some((900, None))
    );
}

/// The boot's facts and a real snapshot's ids (Windows; under wine when
/// the System process cannot be opened, only that is checked).
#[cfg(windows)]
#[test]
fn snapshot_ids_from_the_system() {
    use crate::sys::windows::process_create_time;
    let Some(boot) = super::boot() else {
        let system = process_create_time(super::identity::SYSTEM_PID);
        assert!(
            crate::sys::windows::under_wine(),
            "boot facts unreadable: {system:?}"
        );
        eprintln!("wine: no System process to read ({system:?}); snapshot ids not exercised");
        return;
    };
    // The host's table: sysinfo, then the identities ETW's rules give.
    let table = crate::platform::Platform::process_table(&crate::platform::Host);
    let mut snapshot = table.take(Default::default()).expect("snapshot");
    let own = std::process::id();
    let me = snapshot
        .processes
        .iter_mut()
        .find(|p| p.pid == own)
        .expect("this process is in the snapshot");
    let created = process_create_time(own).expect("own creation time");
    assert_eq!(me.entity_id, Some(boot.entity_id(created, own)));
    assert!(me.exec_id.is_some());
    let one = std::slice::from_mut(me);
    super::fill_snapshot_ids(one);
    assert_eq!(one[0].entity_id, Some(boot.entity_id(created, own)));
}

/// ProcessStart's parent sequence number picks the start this source saw
/// when it names that process, and refuses one that names another.
#[test]
fn parent_sequence_numbers_decide_between_seen_starts() {
    use super::identity::Identities;
    let boot = win_boot();
    let with_seqs = |pid: u32, ppid: u32, created: i64, seq: u64, parent_seq: u64| {
        let props = start_props(pid, ppid, created)
            .with("ProcessSequenceNumber", Value::U64(seq))
            .with("ParentProcessSequenceNumber", Value::U64(parent_seq));
        kp_start(&props).expect("decodes")
    };
    let modern_only = CorrelateConfig {
        classic: false,
        ..join_only()
    };
    // The system answers nothing: only the seen starts can name parents.
    let mut c = Correlator::new(modern_only, devices())
        .with_identities(Identities::new(boot, Box::new(|_| None)));
    let parent_at = CREATED_NS - 10 * SEC as i64;
    c.modern_start(with_seqs(60, 1, parent_at, 500, 1), 0);
    c.modern_start(with_seqs(61, 60, CREATED_NS, 501, 500), 0);
    c.modern_start(with_seqs(62, 60, CREATED_NS, 502, 499), 0);
    let out = c.ready(0);
    assert_eq!(
        out[1].parent.clone().and_then(|p| p.entity_id),
        Some(boot.entity_id(ft(parent_at), 60)),
        "the seen start with the parent's sequence number"
    );
    assert_eq!(
        out[2].parent.clone().map(|p| (p.pid, p.entity_id)),
        Some((60, None)),
        "the seen start is another process than sequence number 499"
    );
}
