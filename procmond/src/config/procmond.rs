//! `procmond.yaml`: the collector's settings (also handed to it by the agent
//! as a collector's `config:` block). See docs/operations.md for which keys
//! hot-reload.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, parse_yaml, read_config_file};
use crate::platform::options::{AttachMode, KernelOptions, ProbeBuild, SourceChoice};

/// The collector's configuration, with docs/reference.md §5 defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcmondConfig {
    /// Names this collector in every event and on the bus.
    pub collector_id: String,
    /// `auto`, `kernel`, a platform's kernel source, or `poll`.
    pub source: SourceChoice,
    /// How eBPF probes attach: `auto` (BTF tracepoints, else classic), `btf`, `tracepoint`.
    pub ebpf_attach: AttachMode,
    /// Which build of the probes loads: `auto` (`bpf_loop` where the kernel
    /// has it, else `bounded_loop`), `bpf_loop`, `bounded_loop`.
    pub ebpf_probes: ProbeBuild,
    /// `setuid` events from the kernel (Linux). Where only the `sys_exit`
    /// fallback loads, it runs on every system call's exit on the host:
    /// `false` saves that, and reports no setuid events.
    pub setuid_events: bool,
    /// Reconciliation / polling interval, 1–3600 s.
    pub collection_interval_secs: u64,
    /// Read cwd, cgroup and container id for each process.
    pub enhanced_metadata: bool,
    /// Heartbeat period on the bus (service mode; the agent sets it from agent.yaml).
    pub heartbeat_interval_secs: u64,
    /// SHA-256 of each exec's executable (kernel sources on Linux;
    /// `pipeline/hash.rs`).
    pub compute_hashes: bool,
    /// Executables larger than this are not hashed (counted as skipped),
    /// 1 KiB – 4 GiB.
    pub hash_max_file_bytes: u64,
    /// Write-ahead log directory (used by `procmond run`).
    pub wal_dir: PathBuf,
    /// Kernel ring buffer size: a power of two, 64 KiB – 1 GiB.
    pub ring_buffer_bytes: u32,
    /// WAL cap on unacknowledged event bytes (new events dropped and counted beyond).
    pub wal_max_bytes: u64,
    /// Most unacknowledged bytes in flight to the broker; backpressure when all
    /// unacknowledged bytes (in flight + waiting in the WAL) reach 70 % of it, off at 50 %.
    pub buffer_bytes: u64,
    /// Redaction patterns added to the built-in ones.
    pub sanitize: SanitizeConfig,
    /// The process table behind `parent`, `ancestors` and the leaders.
    pub lineage: LineageConfig,
}

/// `lineage:` (docs/reference.md §5): bounds of the process table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineageConfig {
    /// Processes the table holds, live and recently exited, 1024 – 4194304.
    pub max_processes: usize,
    /// `entity_id`s in an event's `ancestors`, 0 – 64.
    pub max_ancestors: usize,
}

impl Default for LineageConfig {
    fn default() -> Self {
        Self {
            max_processes: 65_536,
            max_ancestors: 16,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SanitizeConfig {
    /// Flags whose value is secret, e.g. `--db-pass`.
    pub extra_flags: Vec<String>,
    /// Substrings of `KEY=value` keys whose value is secret, e.g. `SESSION`.
    pub extra_keys: Vec<String>,
}

impl ProcmondConfig {
    /// What a kernel source starts with.
    pub fn kernel_options(&self) -> KernelOptions {
        KernelOptions {
            collector_id: self.collector_id.clone(),
            source: self.source,
            ring_buffer_bytes: self.ring_buffer_bytes,
            ebpf_attach: self.ebpf_attach,
            ebpf_probes: self.ebpf_probes,
            setuid_events: self.setuid_events,
            enhanced_metadata: self.enhanced_metadata,
        }
    }
}

impl Default for ProcmondConfig {
    fn default() -> Self {
        Self {
            collector_id: "procmond".into(),
            source: SourceChoice::Auto,
            ebpf_attach: AttachMode::Auto,
            ebpf_probes: ProbeBuild::Auto,
            setuid_events: true,
            collection_interval_secs: 30,
            enhanced_metadata: true,
            heartbeat_interval_secs: 30,
            compute_hashes: false,
            hash_max_file_bytes: 64 * 1024 * 1024,
            wal_dir: PathBuf::from(if cfg!(windows) {
                r"C:\ProgramData\procmond\wal"
            } else {
                "/var/lib/procmond/wal"
            }),
            ring_buffer_bytes: 4 * 1024 * 1024,
            wal_max_bytes: 100 * 1024 * 1024,
            buffer_bytes: 10 * 1024 * 1024,
            sanitize: SanitizeConfig::default(),
            lineage: LineageConfig::default(),
        }
    }
}

pub const INTERVAL_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;

impl ProcmondConfig {
    /// Loads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_config_file(path)?, path)
    }

    /// Parses and validates YAML text (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            parse_yaml(text, path)?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !super::is_topic_segment(&self.collector_id) {
            return Err(ConfigError::invalid(
                "collector_id",
                format!(
                    "must be 1-64 characters of [A-Za-z0-9_-] (it is a bus topic segment), got {:?}",
                    self.collector_id
                ),
            ));
        }
        if !INTERVAL_RANGE.contains(&self.collection_interval_secs) {
            return Err(ConfigError::invalid(
                "collection_interval_secs",
                format!(
                    "must be between {} and {} seconds, got {}",
                    INTERVAL_RANGE.start(),
                    INTERVAL_RANGE.end(),
                    self.collection_interval_secs
                ),
            ));
        }
        if !INTERVAL_RANGE.contains(&self.heartbeat_interval_secs) {
            return Err(ConfigError::invalid(
                "heartbeat_interval_secs",
                format!(
                    "must be between 1 and 3600 seconds, got {}",
                    self.heartbeat_interval_secs
                ),
            ));
        }
        if self.compute_hashes && !cfg!(target_os = "linux") {
            return Err(ConfigError::invalid(
                "compute_hashes",
                "executable hashing is built for Linux only; set it to false",
            ));
        }
        if !(1024..=4 << 30).contains(&self.hash_max_file_bytes) {
            return Err(ConfigError::invalid(
                "hash_max_file_bytes",
                format!(
                    "must be between 1024 and 4294967296, got {}",
                    self.hash_max_file_bytes
                ),
            ));
        }
        self.source
            .check_platform()
            .map_err(|e| ConfigError::invalid("source", e))?;
        self.check_storage()?;
        self.check_lineage_and_sanitize()
    }

    /// The WAL, the ring buffer and the in-flight budget.
    fn check_storage(&self) -> Result<(), ConfigError> {
        if !self.wal_dir.is_absolute() {
            return Err(ConfigError::invalid(
                "wal_dir",
                format!("must be an absolute path, got {}", self.wal_dir.display()),
            ));
        }
        let rb = self.ring_buffer_bytes;
        if !rb.is_power_of_two() || !(64 * 1024..=1 << 30).contains(&rb) {
            return Err(ConfigError::invalid(
                "ring_buffer_bytes",
                format!("must be a power of two between 65536 and 1073741824, got {rb}"),
            ));
        }
        if self.buffer_bytes < 64 * 1024 || self.buffer_bytes > 1 << 30 {
            return Err(ConfigError::invalid(
                "buffer_bytes",
                format!(
                    "must be between 65536 and 1073741824, got {}",
                    self.buffer_bytes
                ),
            ));
        }
        if self.wal_max_bytes < self.buffer_bytes {
            return Err(ConfigError::invalid(
                "wal_max_bytes",
                format!(
                    "must be at least buffer_bytes ({}), got {}",
                    self.buffer_bytes, self.wal_max_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The process table's bounds and the operator's secret patterns.
    fn check_lineage_and_sanitize(&self) -> Result<(), ConfigError> {
        if !(1024..=4 << 20).contains(&self.lineage.max_processes) {
            return Err(ConfigError::invalid(
                "lineage.max_processes",
                format!(
                    "must be between 1024 and 4194304, got {}",
                    self.lineage.max_processes
                ),
            ));
        }
        if self.lineage.max_ancestors > 64 {
            return Err(ConfigError::invalid(
                "lineage.max_ancestors",
                format!(
                    "must be between 0 and 64, got {}",
                    self.lineage.max_ancestors
                ),
            ));
        }
        for (i, f) in self.sanitize.extra_flags.iter().enumerate() {
            if !f.starts_with('-') || f.len() < 2 || f.contains(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    format!("sanitize.extra_flags[{i}]"),
                    format!("must be a flag such as --db-pass, got {f:?}"),
                ));
            }
        }
        for (i, k) in self.sanitize.extra_keys.iter().enumerate() {
            if k.is_empty() || k.contains(char::is_whitespace) || k.contains('=') {
                return Err(ConfigError::invalid(
                    format!("sanitize.extra_keys[{i}]"),
                    format!("must be a key fragment such as SESSION, got {k:?}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProcmondConfig, String> {
        ProcmondConfig::parse(text, Path::new("procmond.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_shipped_file_are_valid() {
        assert_eq!(
            parse("").expect("empty is defaults"),
            ProcmondConfig::default()
        );
        let shipped = include_str!("../../../config/procmond.yaml");
        assert_eq!(
            parse(shipped).expect("shipped config is valid"),
            ProcmondConfig::default()
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("collection_interval_secs: 0").expect_err("must be refused");
        assert!(
            e.contains("collection_interval_secs") && e.contains("between 1 and 3600"),
            "{e}"
        );
        let e = parse("colection_interval_secs: 5").expect_err("must be refused");
        assert!(e.contains("colection_interval_secs"), "{e}");
        let e = parse("ring_buffer_bytes: 1000").expect_err("must be refused");
        assert!(e.contains("ring_buffer_bytes"), "{e}");
        let e = parse("sanitize:\n  extra_flags: [nodash]").expect_err("must be refused");
        assert!(e.contains("sanitize.extra_flags[0]"), "{e}");
        let e = parse("enhanced_metadata: maybe").expect_err("must be refused");
        assert!(e.contains("enhanced_metadata"), "{e}");
    }
}
