//! `procmond probe-loader`: the short-lived process that loads the eBPF
//! probes for the collector, so the collector never parses the kernel's
//! BTF itself (platform/sources/ebpf/handover.rs says why and how).

use anyhow::Result;

/// Makes this binary the probe loader of every eBPF load it does.
pub fn register() {
    procmond::platform::register_probe_loader();
}

/// Runs the loader: `request` is the load, as the collector wrote it.
pub fn run(request: &str) -> Result<()> {
    procmond::platform::serve_probe_load(request).map_err(|e| anyhow::anyhow!(e))
}
