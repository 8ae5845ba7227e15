//! `procmond probe-loader`: the short-lived process that loads the eBPF
//! probes for the collector, so the collector never parses the kernel's
//! BTF itself (sources/ebpf/handover.rs says why and how).

use anyhow::Result;

/// Makes this binary the probe loader of every eBPF load it does.
pub fn register() {
    #[cfg(target_os = "linux")]
    procmond::sources::ebpf::handover::enable(std::path::Path::new("/proc/self/exe"));
}

/// Runs the loader: `request` is the load, as the collector wrote it.
pub fn run(request: &str) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use anyhow::Context;
        use procmond::sources::ebpf::handover;
        let request: handover::LoadRequest =
            serde_json::from_str(request).context("reading the load request")?;
        handover::serve(request).map_err(|e| anyhow::anyhow!(e))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = request;
        anyhow::bail!("the probe loader exists on Linux only")
    }
}
