//! The few calls into the C library that no safe crate offers. Each lives in
//! its own small module, the only places where `unsafe` is allowed; and the
//! small host facts several parts need (`hostname`). Which paths root may
//! trust is `crate::safe_path` (no unsafe code), re-exported here.

pub mod acl;
#[cfg(target_os = "linux")]
pub mod bpf_iter;
#[cfg(unix)]
pub use crate::safe_path;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod trim;
#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
pub mod windows_ansi;
#[cfg(windows)]
pub mod windows_fs;
#[cfg(windows)]
pub mod windows_pipe;

/// Fixes the C allocator's thresholds where that keeps the sensor's memory
/// steady (glibc: `trim::fix_heap_thresholds`); nothing elsewhere.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trim::fix_heap_thresholds();
}

/// This host's name: uname's nodename on Unix, `COMPUTERNAME` on Windows
/// (empty when unknown). Registration and the nats sink's subjects use it.
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").unwrap_or_default()
    }
}
