//! `procmond capabilities`: what this host lets procmond do, as JSON.
//!
//! The kernel-source check really starts the source and stops it again
//! (`platform::probe_kernel_source`): anything less would guess.

use anyhow::Result;
use serde_json::json;

pub fn run() -> Result<()> {
    let privileges = procmond::privileges::detect();
    let config = procmond::config::ProcmondConfig::default();
    let probe = procmond::platform::probe_kernel_source(&config.kernel_options());
    let probes = probe.as_ref().ok().cloned().flatten();
    let kernel_reason = probe.err();
    let kernel_name = procmond::sources::SourceChoice::platform_kernel().name();
    let sources = [
        json!({
            "name": kernel_name,
            "available": kernel_reason.is_none(),
            "reason": kernel_reason,
            "probes": probes,
        }),
        json!({ "name": "poll", "available": true }),
    ];
    let degraded: Vec<String> = kernel_reason.iter().cloned().collect();
    let report = json!({
        "platform": {
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
            "kernel": procmond::platform::kernel_release(),
        },
        "privileges": privileges,
        "sources": sources,
        "active_source": if kernel_reason.is_none() { kernel_name.as_str() } else { "poll" },
        "probes": probes,
        "degraded": !degraded.is_empty(),
        "degraded_reasons": degraded,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
