//! The Windows kernel event source: ETW (docs/platforms.md, "Windows").
//!
//! * `decode` — the two providers' property sets → plain records (FILETIME,
//!   WBEM SIDs, the Windows command-line split);
//! * `correlate` — Kernel-Process (image path, times, exit code, sequence
//!   numbers) joined with the classic kernel provider (command line, user
//!   SID) into one `exec` / `exit` per process;
//! * `ntpath` — `\Device\HarddiskVolume3\…` → `C:\…`;
//! * `identity` — `entity_id`, `exec_id` and the parent's id (CPID);
//! * `rundown` — the classic provider's command lines for the inventory;
//! * `access` — elevation, privileges, and why a session did not start;
//! * `feed` — the queue from the callbacks, with barriers and stop that
//!   never block; `health` — `kernel_lost`, a counter that only grows;
//! * `session` (Windows only) — the ferrisetw sessions, their start, stop
//!   and probe; `pump` (Windows only) — the correlator thread, loss from
//!   `ControlTraceW`, a session ended from outside as a source failure.
//!
//! Everything but `session` is compiled and tested on every platform.

pub mod access;
pub mod correlate;
pub mod decode;
pub mod feed;
#[cfg(test)]
mod feed_tests;
pub mod health;
#[cfg(test)]
mod health_tests;
pub mod identity;
pub mod ntpath;
#[cfg(test)]
mod order_tests;
#[cfg(windows)]
mod pump;
pub mod rundown;
#[cfg(windows)]
mod session;
#[cfg(test)]
mod tests;

#[cfg(windows)]
pub use session::{probe, start};

/// Why the ETW source cannot start here, before trying: it needs an
/// elevated token.
#[cfg(windows)]
pub fn unavailable_reason() -> Option<String> {
    let elevated = crate::sys::windows::token_elevated().unwrap_or(false);
    (!elevated).then(|| access::NOT_ELEVATED.to_string())
}

/// This boot's facts for `entity_id` (`MachineGuid`, the System process's
/// creation time), read once; `None` (logged once) when either cannot be
/// read.
#[cfg(windows)]
pub fn boot() -> Option<&'static crate::model::identity::WindowsBoot> {
    use crate::model::identity::{WindowsBoot, guid_memory_from_text};
    static BOOT: std::sync::OnceLock<Option<WindowsBoot>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        let read = || -> Result<WindowsBoot, String> {
            let text = crate::sys::windows::machine_guid().map_err(|e| e.to_string())?;
            let machine_guid = guid_memory_from_text(&text)
                .ok_or_else(|| format!("MachineGuid {text:?} is not a GUID"))?;
            let system_create_time =
                crate::sys::windows::process_create_time(identity::SYSTEM_PID)
                    .map_err(|e| format!("the System process's creation time: {e}"))?;
            Ok(WindowsBoot {
                machine_guid,
                system_create_time,
            })
        };
        read()
            .inspect_err(|e| tracing::error!(error = %e, "no entity_id on any event: this boot's facts cannot be read"))
            .ok()
    })
    .as_ref()
}

/// Fills the ids of a sysinfo snapshot's processes: `entity_id` and
/// `exec_id` from each one's creation time (GetProcessTimes; a process it
/// cannot open keeps none), the parent's from its entry in the same
/// snapshot when that one was created first.
#[cfg(windows)]
pub fn fill_snapshot_ids(processes: &mut [crate::sources::snapshot::ProcessInfo]) {
    let Some(boot) = boot() else {
        return;
    };
    let mut created = std::collections::HashMap::with_capacity(processes.len());
    for p in processes.iter_mut() {
        let Ok(t) = crate::sys::windows::process_create_time(p.pid) else {
            continue;
        };
        let id = boot.entity_id(t, p.pid);
        p.entity_id = Some(id);
        p.exec_id = Some(crate::model::identity::exec_id(id, 0));
        created.insert(p.pid, (t, id));
    }
    for p in processes.iter_mut() {
        let mine = created.get(&p.pid).map(|(t, _)| *t);
        p.parent_entity_id = p
            .ppid
            .and_then(|pp| created.get(&pp))
            .filter(|(t, _)| mine.is_some_and(|m| *t <= m))
            .map(|(_, id)| *id);
    }
}
