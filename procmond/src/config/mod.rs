//! Configuration files: `procmond.yaml` (the collector) and `agent.yaml`.
//!
//! Parsing is strict — an unknown key is an error, since it is usually a
//! typo that would otherwise silently leave a default in force — and every
//! error names the key and the reason. Files that anyone may write are
//! refused: a sensor's config is part of its trust boundary.

pub mod agent;
pub mod procmond;

use std::path::{Path, PathBuf};

pub use agent::AgentConfig;
pub use procmond::ProcmondConfig;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: refusing a world-writable config file (chmod o-w)")]
    WorldWritable { path: PathBuf },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

pub use crate::bus::protocol::is_topic_segment;

/// Reads a config file after checking who may write it.
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o002 != 0 {
            return Err(ConfigError::WorldWritable {
                path: path.to_path_buf(),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    std::fs::read_to_string(path).map_err(io)
}

/// Parses YAML strictly; the error carries serde's key path and position.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Which kind of file this is, judged by its top-level keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Procmond,
    Agent,
}

pub fn detect_kind(text: &str) -> ConfigKind {
    let agent_keys = ["broker:", "collectors:", "sinks:", "run_as:", "heartbeat:"];
    if text
        .lines()
        .any(|l| agent_keys.iter().any(|k| l.starts_with(k)))
    {
        ConfigKind::Agent
    } else {
        ConfigKind::Procmond
    }
}

/// Validates either kind of file; `Ok` names the kind.
pub fn validate_file(path: &Path) -> Result<ConfigKind, ConfigError> {
    let text = read_config_file(path)?;
    let kind = detect_kind(&text);
    match kind {
        ConfigKind::Procmond => {
            ProcmondConfig::parse(&text, path)?;
        }
        ConfigKind::Agent => {
            AgentConfig::parse(&text, path)?;
        }
    }
    Ok(kind)
}
