//! Portable snapshot through the sysinfo crate: the process table on Windows,
//! macOS and FreeBSD (and the peer the Linux procfs reader is benchmarked
//! against).

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use super::snapshot::{ARGV_MAX_ARGS, ARGV_MAX_BYTES, ProcessInfo, Snapshot, SnapshotOptions};
use crate::clock;

/// The refresh that gathers every field procmond reports.
pub fn refresh_kind(options: SnapshotOptions) -> ProcessRefreshKind {
    let kind = ProcessRefreshKind::nothing()
        .with_cmd(UpdateKind::Always)
        .with_exe(UpdateKind::Always)
        .with_user(UpdateKind::Always);
    if options.cwd {
        kind.with_cwd(UpdateKind::Always)
    } else {
        kind
    }
}

/// Enumerates every process with sysinfo (macOS and Windows add their
/// identities in `platform::Host`).
pub fn snapshot(options: SnapshotOptions) -> std::io::Result<Snapshot> {
    let taken_at = clock::now_unix_ns();
    let mut system = System::new().map_err(std::io::Error::other)?;
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, refresh_kind(options));
    #[cfg_attr(not(any(target_os = "macos", windows)), allow(unused_mut))]
    let processes: Vec<ProcessInfo> = system
        .processes()
        .values()
        .map(|p| {
            let mut argv = Vec::new();
            let mut bytes = 0;
            let mut truncated = false;
            for arg in p.cmd() {
                let arg = arg.to_string_lossy().into_owned();
                bytes += arg.len() + 1;
                if argv.len() == ARGV_MAX_ARGS || bytes > ARGV_MAX_BYTES {
                    truncated = true;
                    break;
                }
                argv.push(arg);
            }
            #[cfg(unix)]
            let (uid, euid, gid) = (
                p.user_id().map(|u| **u),
                p.effective_user_id().map(|u| **u),
                p.group_id().map(|g| *g),
            );
            #[cfg(not(unix))]
            let (uid, euid, gid) = (None, None, None);
            ProcessInfo {
                pid: p.pid().as_u32(),
                ppid: p.parent().map(|pp| pp.as_u32()),
                uid,
                gid,
                euid,
                name: p.name().to_string_lossy().into_owned(),
                exe: p.exe().map(|e| e.to_string_lossy().into_owned()),
                argv,
                argv_truncated: truncated,
                cwd: p.cwd().map(|c| c.to_string_lossy().into_owned()),
                start_time: Some(
                    i64::try_from(p.start_time())
                        .unwrap_or(0)
                        .saturating_mul(1_000_000_000),
                ),
                cgroup_id: None,
                jail_id: None,
                ..ProcessInfo::default()
            }
        })
        .collect();
    Ok(Snapshot {
        taken_at,
        taken_at_event_clock: None,
        processes,
    })
}
