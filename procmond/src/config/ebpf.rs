//! The two eBPF keys of procmond.yaml (`ebpf_attach`, `ebpf_probes`):
//! parsed on every platform like the rest of the file, used where the eBPF
//! source runs (`sources/ebpf/attach.rs` gives them their meaning).

/// Which attach method the operator allows (`ebpf_attach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// BTF tracepoints, else classic tracepoints.
    Auto,
    /// BTF tracepoints only.
    Btf,
    /// Classic tracepoints only.
    Tracepoint,
}

/// Which build of the probes to load (`ebpf_probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeBuild {
    /// `bpf_loop` where the kernel has it, else `bounded_loop`.
    Auto,
    /// Path walks with `bpf_loop` (5.17+).
    BpfLoop,
    /// Path walks in a bounded loop (5.8+).
    BoundedLoop,
}

impl ProbeBuild {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::BpfLoop => "bpf_loop",
            Self::BoundedLoop => "bounded_loop",
        }
    }
}
