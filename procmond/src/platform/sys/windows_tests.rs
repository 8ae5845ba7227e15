//! The Win32 wrappers against the real (or wine's) API: identities, SDDL,
//! ACLs, the ETW query of a session that does not exist, the DOS device
//! table. Built for x86_64-pc-windows-gnu and run under wine by
//! `cargo xtask test`.

use super::*;
use crate::bus::peer::is_sid_string;

#[test]
fn identities_come_from_tokens() {
    let own = own_user_sid().expect("own SID");
    assert!(is_sid_string(&own), "{own}");
    let via_pid = process_user_sid(std::process::id()).expect("by pid");
    assert_eq!(via_pid, own);
    assert!(process_user_sid(0x7fff_fff0).is_err(), "no such process");
    token_elevated().expect("elevation is readable");
    privilege("SeDebugPrivilege").expect("privileges are readable");
    assert!(privilege("SeNoSuchPrivilege").is_err());
}

#[test]
fn sddl_and_acls() {
    assert!(SecurityDescriptor::from_sddl("D:P(A;;GA;;;SY)").is_ok());
    assert!(SecurityDescriptor::from_sddl("D:P(A;;GA;;;not-a-sid)").is_err());
    let dir = std::env::temp_dir().join(format!("procmond-acl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    make_private(&dir).expect("restricted");
    let dacl = path_dacl(&dir).expect("read back");
    assert!(dacl.contains(";SY)"), "{dacl}");
    assert!(!dacl.contains(";WD)") && !dacl.contains(";BU)"), "{dacl}");
    assert!(make_private(&dir.join("missing")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn etw_query_of_a_missing_session_fails_cleanly() {
    let found = query_trace("procmond-no-such-session");
    if under_wine() {
        // wine 8.0's ControlTraceW is a stub: success, nothing filled in.
        eprintln!("wine: ControlTraceW is a stub ({found:?}); the loss query is not exercised");
        assert_eq!(found.ok(), Some(TraceLoss::default()));
        return;
    }
    let e = found.expect_err("no session");
    assert!(e.raw_os_error().is_some(), "{e}");
}

#[test]
fn drive_letters_map_to_devices() {
    let devices = dos_devices();
    let c = devices.iter().find(|(_, d)| d == "C:");
    assert!(c.is_some(), "{devices:?}");
}

#[test]
fn identity_facts_are_readable() {
    let guid = machine_guid().expect("MachineGuid");
    assert!(
        crate::model::identity::guid_memory_from_text(&guid).is_some(),
        "{guid:?}"
    );
    let own = process_create_time(std::process::id()).expect("own creation time");
    // FILETIME now, from the Unix clock: the process started before it.
    let now_ft = crate::clock::now_unix_ns() / 100 + 116_444_736_000_000_000;
    assert!(
        own > 116_444_736_000_000_000 && own as i64 <= now_ft,
        "{own}"
    );
    assert_eq!(process_create_time(std::process::id()).ok(), Some(own));
    assert!(process_create_time(0x7fff_fff0).is_err(), "no such process");
}
