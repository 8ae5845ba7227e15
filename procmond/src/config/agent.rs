//! `agent.yaml` (docs/reference.md §3.1): the agent's broker, supervision and sinks, and
//! the collectors it spawns.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, ProcmondConfig, parse_yaml, read_config_file};
use crate::bus::authz::Operators;
use crate::bus::limits::BrokerLimits;

mod identity;
mod outputs;
pub use outputs::{MetricsConfig, NatsSinkConfig, NatsTlsConfig, Secret, SinkConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub broker: BrokerConfig,
    /// User the agent drops to once its collectors are ready.
    #[serde(default)]
    pub run_as: Option<String>,
    #[serde(default = "default_timeout")]
    pub startup_timeout_secs: u64,
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    #[serde(default)]
    pub collectors: Vec<CollectorConfig>,
    /// The Prometheus `/metrics` endpoint; off unless configured.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// A Unix socket path; on Windows a pipe name (`\\.\pipe\procmond`).
    pub socket: PathBuf,
    pub allowed_uids: Vec<u32>,
    /// Windows: user SIDs admitted besides the agent's own account.
    pub allowed_sids: Vec<String>,
    /// What one peer may hold (`bus/limits.rs`).
    pub limits: BrokerLimits,
    /// Which uids may make operator calls (`bus/authz.rs`).
    pub operators: Operators,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(if cfg!(windows) {
                crate::bus::pipe::DEFAULT_PIPE
            } else {
                "/run/procmond/broker.sock"
            }),
            allowed_uids: vec![0],
            allowed_sids: vec![crate::bus::peer::SID_LOCAL_SYSTEM.to_string()],
            limits: BrokerLimits::default(),
            operators: Operators::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    pub interval_secs: u64,
    pub missed_threshold: u32,
    pub health_check_timeout_secs: u64,
    pub graceful_shutdown_timeout_secs: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval_secs: 30,
            missed_threshold: 3,
            health_check_timeout_secs: 5,
            graceful_shutdown_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub binary_path: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub auto_restart: bool,
    #[serde(default = "default_timeout")]
    pub startup_timeout_secs: u64,
    #[serde(default)]
    pub config: ProcmondConfig,
}

fn default_timeout() -> u64 {
    60
}
fn yes() -> bool {
    true
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_config_file(path)?, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = parse_yaml(text, path)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        identity::check(&self.broker, self.run_as.as_deref(), cfg!(windows))?;
        if !cfg!(windows) && !self.broker.socket.is_absolute() {
            return Err(ConfigError::invalid(
                "broker.socket",
                "must be an absolute path",
            ));
        }
        self.check_ranges()?;
        if self.run_as.is_some() && !self.broker.allowed_uids.contains(&0) {
            return Err(ConfigError::invalid(
                "broker.allowed_uids",
                "must include 0 when run_as is set: collectors run as root and must reconnect after the agent drops its privileges",
            ));
        }
        if let Some(user) = &self.run_as
            && user.is_empty()
        {
            return Err(ConfigError::invalid("run_as", "must name a user"));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, c) in self.collectors.iter().enumerate() {
            check_collector(i, c, &mut ids)?;
        }
        for (i, s) in self.sinks.iter().enumerate() {
            check_sink(i, s)?;
        }
        if let Some(m) = &self.metrics {
            m.listen_addr()?;
        }
        Ok(())
    }

    /// Every duration is bounded: later arithmetic on it (deadlines,
    /// Instant + Duration) can then never overflow.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let ranged = [
            ("startup_timeout_secs", self.startup_timeout_secs, 1, 3600),
            (
                "heartbeat.interval_secs",
                self.heartbeat.interval_secs,
                1,
                3600,
            ),
            (
                "heartbeat.missed_threshold",
                u64::from(self.heartbeat.missed_threshold),
                1,
                100,
            ),
            (
                "heartbeat.health_check_timeout_secs",
                self.heartbeat.health_check_timeout_secs,
                1,
                300,
            ),
            (
                "heartbeat.graceful_shutdown_timeout_secs",
                self.heartbeat.graceful_shutdown_timeout_secs,
                1,
                3600,
            ),
        ];
        for (key, value, lo, hi) in ranged.into_iter().chain(self.broker.limits.ranges()) {
            in_range(key, value, lo, hi)?;
        }
        Ok(())
    }
}

/// `collectors[i]`: a unique topic-safe id, a known type, a root-owned
/// absolute binary, a bounded start-up, and a valid procmond.yaml.
fn check_collector<'a>(
    i: usize,
    c: &'a CollectorConfig,
    ids: &mut std::collections::HashSet<&'a str>,
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("collectors[{i}].{field}");
    if !super::is_topic_segment(&c.id) {
        return Err(ConfigError::invalid(
            key("id"),
            format!(
                "must be 1-64 characters of [A-Za-z0-9_-] (it is a bus topic segment), got {:?}",
                c.id
            ),
        ));
    }
    if !ids.insert(c.id.as_str()) {
        return Err(ConfigError::invalid(
            key("id"),
            format!("duplicate collector id {:?}", c.id),
        ));
    }
    if c.kind != "process-monitor" {
        return Err(ConfigError::invalid(
            key("type"),
            format!(
                "unknown collector type {:?} (known: process-monitor)",
                c.kind
            ),
        ));
    }
    if !c.binary_path.is_absolute() {
        return Err(ConfigError::invalid(
            key("binary_path"),
            "must be an absolute path (the launcher runs it as root)",
        ));
    }
    if c.enabled {
        check_executable(&c.binary_path)
            .map_err(|reason| ConfigError::invalid(key("binary_path"), reason))?;
    }
    in_range(
        &key("startup_timeout_secs"),
        c.startup_timeout_secs,
        1,
        3600,
    )?;
    c.config.validate().map_err(|e| match e {
        ConfigError::Invalid { key: k, reason } => {
            ConfigError::invalid(key(&format!("config.{k}")), reason)
        }
        other => other,
    })
}

/// `sinks[i]`: a known format, and where it writes.
fn check_sink(i: usize, s: &SinkConfig) -> Result<(), ConfigError> {
    s.validate_format(&format!("sinks[{i}]"))?;
    match s {
        SinkConfig::Jsonl { path, .. } => {
            if !path.is_absolute() {
                return Err(ConfigError::invalid(
                    format!("sinks[{i}].path"),
                    "must be an absolute path",
                ));
            }
            Ok(())
        }
        SinkConfig::Nats(n) => n.validate(&format!("sinks[{i}]")),
    }
}

fn in_range(key: &str, value: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be between {lo} and {hi}, got {value}"),
        ))
    }
}

fn check_executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(format!("{} is not executable", path.display()));
        }
        // The launcher runs it as root: neither it nor any directory (or
        // link) on the way may be someone else's to change.
        crate::safe_path::check_executable(path).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const REFERENCE_EXAMPLE: &str = "
broker:
  socket: /run/procmond/broker.sock
  allowed_uids: [0]
run_as: nobody
startup_timeout_secs: 60
heartbeat:
  interval_secs: 30
  missed_threshold: 3
  health_check_timeout_secs: 5
  graceful_shutdown_timeout_secs: 60
sinks:
  - type: jsonl
    path: /var/lib/procmond/events.jsonl
collectors:
  - id: procmond
    type: process-monitor
    binary_path: /bin/sh
    args: [run]
    enabled: true
    auto_restart: true
    startup_timeout_secs: 60
    config:
      collection_interval_secs: 30
      enhanced_metadata: true
      compute_hashes: false
      wal_dir: /var/lib/procmond/wal
";

    pub(super) fn parse(text: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(text, Path::new("agent.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn spec_example_parses() {
        let c = parse(REFERENCE_EXAMPLE).expect("valid");
        assert_eq!(c.collectors[0].config.collection_interval_secs, 30);
        assert_eq!(c.run_as.as_deref(), Some("nobody"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(&REFERENCE_EXAMPLE.replace("/bin/sh", "/nonexistent/procmond"))
            .expect_err("must be refused");
        assert!(e.contains("collectors[0].binary_path"), "{e}");
        let plain = std::env::temp_dir().join(format!("procmond-not-exec-{}", std::process::id()));
        std::fs::write(&plain, "x").expect("temp file");
        let e = parse(&REFERENCE_EXAMPLE.replace("/bin/sh", &plain.display().to_string()))
            .expect_err("must be refused");
        let _ = std::fs::remove_file(&plain);
        assert!(
            e.contains("collectors[0].binary_path") && e.contains("not executable"),
            "{e}"
        );
        let e = parse(&REFERENCE_EXAMPLE.replace("missed_threshold", "missed_treshold"))
            .expect_err("must be refused");
        assert!(e.contains("missed_treshold"), "{e}");
        let e = parse(&REFERENCE_EXAMPLE.replace(
            "collection_interval_secs: 30",
            "collection_interval_secs: 0",
        ))
        .expect_err("must be refused");
        assert!(
            e.contains("collectors[0].config.collection_interval_secs"),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_binary_others_could_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("procmond-binpath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("open")).expect("dir");
        let bin = dir.join("open/collector");
        std::fs::write(&bin, "#!/bin/sh\n").expect("bin");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let config = |p: &Path| REFERENCE_EXAMPLE.replace("/bin/sh", &p.display().to_string());
        parse(&config(&bin)).expect("root's binary in root's directory");
        let perm = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        perm(&bin, 0o757).expect("chmod");
        let e = parse(&config(&bin)).expect_err("writable by others");
        assert!(
            e.contains("collectors[0].binary_path") && e.contains("writable by other users"),
            "{e}"
        );
        perm(&bin, 0o755).expect("chmod");
        perm(&dir.join("open"), 0o777).expect("chmod");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&bin, &link).expect("link");
        let e = parse(&config(&link)).expect_err("a link into a directory anyone can write");
        assert!(
            e.contains("open") && e.contains("writable by other users"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn values_that_would_break_later_are_refused_at_validation() {
        let cases = [
            (
                "interval_secs: 30",
                "interval_secs: 7200",
                "heartbeat.interval_secs",
            ),
            (
                "graceful_shutdown_timeout_secs: 60",
                "graceful_shutdown_timeout_secs: 18446744073709551615",
                "heartbeat.graceful_shutdown_timeout_secs",
            ),
            (
                "health_check_timeout_secs: 5",
                "health_check_timeout_secs: 9999999999",
                "heartbeat.health_check_timeout_secs",
            ),
            (
                "missed_threshold: 3",
                "missed_threshold: 0",
                "heartbeat.missed_threshold",
            ),
            (
                "allowed_uids: [0]",
                "allowed_uids: []",
                "broker.allowed_uids",
            ),
            (
                "binary_path: /bin/sh",
                "binary_path: bin/sh",
                "collectors[0].binary_path",
            ),
            (
                "    startup_timeout_secs: 60\n    config",
                "    startup_timeout_secs: 86400\n    config",
                "collectors[0].startup_timeout_secs",
            ),
        ];
        for (from, to, key) in cases {
            assert!(REFERENCE_EXAMPLE.contains(from), "{from}");
            let e = parse(&REFERENCE_EXAMPLE.replacen(from, to, 1)).expect_err(to);
            assert!(e.contains(key), "{to}: {e}");
        }
    }
}
