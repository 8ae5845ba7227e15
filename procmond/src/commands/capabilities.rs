//! `procmond capabilities`: what this host lets procmond do, as JSON.
//!
//! The eBPF check really loads and attaches the probes (then detaches them):
//! anything less would guess.

use anyhow::Result;
use serde_json::json;

pub fn run() -> Result<()> {
    let privileges = procmond::privileges::detect();
    let kernel_reason = kernel_source_check();
    let mut sources = Vec::new();
    #[cfg(target_os = "linux")]
    sources.push(json!({
        "name": "ebpf",
        "available": kernel_reason.is_none(),
        "reason": kernel_reason,
    }));
    sources.push(json!({ "name": "poll", "available": true }));
    let degraded: Vec<String> = kernel_reason.iter().cloned().collect();
    let report = json!({
        "platform": {
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "kernel": kernel_release(),
        },
        "privileges": privileges,
        "sources": sources,
        "active_source": if kernel_reason.is_none() { "ebpf" } else { "poll" },
        "degraded": !degraded.is_empty(),
        "degraded_reasons": degraded,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `None` when the kernel source can start here; otherwise why not.
fn kernel_source_check() -> Option<String> {
    if let Some(reason) = procmond::sources::kernel_source_unavailable_reason() {
        return Some(reason);
    }
    #[cfg(target_os = "linux")]
    {
        let config = procmond::config::ProcmondConfig::default();
        procmond::sources::ebpf::attach(config.ring_buffer_bytes, config.ebpf_attach)
            .err()
            .map(|e| e.to_string())
    }
    #[cfg(not(target_os = "linux"))]
    None
}

fn kernel_release() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        Some(
            rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
        )
    }
    #[cfg(not(target_os = "linux"))]
    None
}
