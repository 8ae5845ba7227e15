//! The Windows kernel event source: ETW (docs/platforms.md, "Windows").
//!
//! * `decode` — the two providers' property sets → plain records (FILETIME,
//!   WBEM SIDs, the Windows command-line split);
//! * `correlate` — Kernel-Process (image path, times, exit code, sequence
//!   numbers) joined with the classic kernel provider (command line, user
//!   SID) into one `exec` / `exit` per process;
//! * `ntpath` — `\Device\HarddiskVolume3\…` → `C:\…`;
//! * `rundown` — the classic provider's command lines for the inventory;
//! * `access` — elevation, privileges, and why a session did not start;
//! * `session` (Windows only) — the ferrisetw sessions, the correlator
//!   thread, loss from `ControlTraceW`.
//!
//! Everything but `session` is compiled and tested on every platform.

pub mod access;
pub mod correlate;
pub mod decode;
pub mod ntpath;
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
