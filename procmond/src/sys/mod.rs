//! The few calls into the C library that no safe crate offers. Each lives in
//! its own small module, the only places where `unsafe` is allowed.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod trim;
#[cfg(windows)]
pub mod windows;
