//! FreeBSD: the audit(4) event source and the sysctl process table.
//!
//! * `bsm` — BSM record framing and token parsing (pure); `token` — token
//!   ids and the lengths of the tokens it skips.
//! * `event` — a parsed record as a `ProcessEvent`, completed from the
//!   process table (pure, with the table behind a trait).
//! * `kinfo` — `kinfo_proc` / `kinfo_file` decoding and the mapping to
//!   `ProcessInfo` (pure); on FreeBSD also the sysctl reads and the
//!   snapshot the polling collector and reconciliation use.
//! * `auditpipe` — auditpipe(4) ioctl and auditon(2) numbers (pure).
//! * `preselect` — the private audit class the pipe selects (pure).
//! * `reason` — why the audit source cannot run (pure).
//! * `ffi` — every unsafe call (sysctl, ioctl, auditon), FreeBSD only.
//! * `audit` — the /dev/auditpipe reader, `KernelStream`, FreeBSD only.
//!
//! The pure modules are compiled on every platform so that their fixture
//! tests and proptests run on Linux (`cargo test -p procmond --lib
//! freebsd`); what needs a FreeBSD kernel is type-checked only.

#[cfg(target_os = "freebsd")]
pub mod audit;
pub mod auditpipe;
pub mod bsm;
pub mod event;
#[cfg(target_os = "freebsd")]
mod ffi;
pub mod kinfo;
pub mod preselect;
pub mod reason;
mod token;

#[cfg(test)]
mod fixtures;
#[cfg(all(test, unix))]
mod rc_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_reader;
