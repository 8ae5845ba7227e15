//! What Windows lets the ETW source and the snapshots do: elevation and
//! the token privileges that matter (shown by `capabilities`, logged at
//! start, sent in `register`), and the operator-facing reasons when a
//! session cannot start. The reasons are pure and tested everywhere; the
//! token reads are Windows-only (`sys::windows`).

use crate::privileges::CapabilityState;

/// Why the ETW source does not even try without elevation.
pub const NOT_ELEVATED: &str = "not elevated: ETW kernel sessions need an elevated administrator token or LocalSystem (run the agent as the service, or from an elevated prompt); polling with sysinfo instead";

/// The token privileges reported, and why each matters.
pub const PRIVILEGES: [(&str, &str); 3] = [
    (
        "SeDebugPrivilege",
        "open every process: command lines and images of services and other users",
    ),
    (
        "SeSystemProfilePrivilege",
        "system-wide profiling; held by administrators, not needed for process events",
    ),
    (
        "SeSecurityPrivilege",
        "manage auditing and the security log; held by administrators",
    ),
];

/// Why `session` could not start, from the OS error code when there is
/// one: the common causes named, the rest passed through.
pub fn start_failure(session: &str, code: Option<i32>, detail: &str) -> String {
    let why = match code.map(win32_code) {
        Some(5) => "access denied (not an elevated administrator, or a policy blocks ETW)",
        Some(183) => "a session of that name exists and could not be stopped",
        Some(1450) => "no room for another ETW session (the system allows 64)",
        Some(87) => "invalid parameter (this Windows does not accept the session's settings)",
        _ => detail,
    };
    format!("ETW session {session} did not start: {why}")
}

/// A Win32 error code from either form the ETW calls report: ferrisetw
/// turns StartTraceW's status into an HRESULT (`HRESULT_FROM_WIN32`:
/// 0x8007xxxx) before it becomes an `io::Error`, while `ControlTraceW`
/// called directly returns the plain code.
pub fn win32_code(code: i32) -> i32 {
    const FACILITY_WIN32: u32 = 7;
    let raw = code as u32;
    if raw & 0x8000_0000 != 0 && (raw >> 16) & 0x1FFF == FACILITY_WIN32 {
        (raw & 0xFFFF) as i32
    } else {
        code
    }
}

/// The ETW session names for a collector: one per provider, fixed so that a
/// session left by a crashed run is found and stopped at the next start.
pub fn session_names(collector_id: &str) -> (String, String) {
    (
        format!("procmond-{collector_id}-kernel-process"),
        format!("procmond-{collector_id}-kernel-classic"),
    )
}

/// Elevation and the privileges of `PRIVILEGES`; `effective` means held
/// by the token (enabled, or enabled when needed).
#[cfg(windows)]
pub fn detect() -> Vec<CapabilityState> {
    use crate::sys::windows;
    let mut out = vec![CapabilityState {
        name: "elevated",
        effective: windows::token_elevated().unwrap_or(false),
        why: "start ETW kernel sessions (the event source)",
    }];
    for (name, why) in PRIVILEGES {
        out.push(CapabilityState {
            name,
            effective: windows::privilege(name).is_ok_and(|p| p.present),
            why,
        });
    }
    out
}

/// Whether the capabilities say the token is elevated.
pub fn elevated(caps: &[CapabilityState]) -> bool {
    caps.iter().any(|c| c.name == "elevated" && c.effective)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_their_cause_and_session() {
        let r = start_failure("procmond-x-kernel-process", Some(5), "os error 5");
        assert!(
            r.contains("procmond-x-kernel-process") && r.contains("access denied"),
            "{r}"
        );
        let r = start_failure("s", Some(4242), "EtwNativeError(IoError(..))");
        assert!(r.ends_with("EtwNativeError(IoError(..))"), "{r}");
        // ferrisetw reports StartTraceW's status as an HRESULT
        // (HRESULT_FROM_WIN32): 0x80070005 is ERROR_ACCESS_DENIED.
        let r = start_failure("s", Some(0x8007_0005_u32 as i32), "os error -2147024891");
        assert!(r.contains("access denied"), "{r}");
        let r = start_failure("s", Some(0x8007_05AA_u32 as i32), "");
        assert!(r.contains("no room"), "{r}");
        let (a, b) = session_names("procmond");
        assert_ne!(a, b);
        assert!(a.starts_with("procmond-procmond-"), "{a}");
        assert!(!elevated(&[CapabilityState {
            name: "elevated",
            effective: false,
            why: ""
        }]));
    }
}
