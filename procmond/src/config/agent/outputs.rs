//! agent.yaml's outputs: `sinks[]` (jsonl, nats) and `metrics:`, with their
//! validation (docs/reference.md §3.1). Apart from the collectors because the
//! NATS sink alone has a dozen keys.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{in_range, yes};
use crate::config::ConfigError;
use crate::output::EventFormat;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Every `events.process.*` event as one JSON line, deduplicated.
    Jsonl {
        path: PathBuf,
        /// `native` (default), `ecs` or `ocsf`: how each event is written.
        /// Kept as written; `validate` refuses a name that is not a format.
        #[serde(default)]
        format: Option<String>,
    },
    /// Every event to a NATS JetStream stream, acknowledged to the
    /// collector only after JetStream's PublishAck (`agent/nats.rs`).
    /// Boxed: it is far larger than `Jsonl` (clippy's large_enum_variant
    /// on Windows, where paths are larger).
    Nats(Box<NatsSinkConfig>),
}

impl SinkConfig {
    /// `jsonl` or `nats`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Jsonl { .. } => "jsonl",
            Self::Nats(_) => "nats",
        }
    }

    /// How it writes each event (`format:`; validated, so never a name
    /// that is not a format).
    pub fn format(&self) -> EventFormat {
        match self {
            Self::Jsonl { format, .. } => format
                .as_deref()
                .and_then(EventFormat::parse)
                .unwrap_or_default(),
            Self::Nats(n) => n.event_format(),
        }
    }

    fn format_name(&self) -> Option<&str> {
        match self {
            Self::Jsonl { format, .. } => format.as_deref(),
            Self::Nats(n) => n.format.as_deref(),
        }
    }

    /// `format:` names one of `EventFormat::ALL`; `at` is `sinks[i]`.
    pub(super) fn validate_format(&self, at: &str) -> Result<(), ConfigError> {
        match self.format_name() {
            Some(name) if EventFormat::parse(name).is_none() => Err(ConfigError::invalid(
                format!("{at}.format"),
                format!("must be one of {}, got {name:?}", EventFormat::allowed()),
            )),
            _ => Ok(()),
        }
    }

    /// Where it writes, without secrets: a path, or `<url> stream <name>`.
    pub fn target(&self) -> String {
        match self {
            Self::Jsonl { path, .. } => path.display().to_string(),
            Self::Nats(n) => format!("{} stream {}", n.url, n.stream),
        }
    }
}

/// A string that never appears in `Debug` output (passwords, tokens).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// `sinks[] {type: nats}` (docs/reference.md §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// One server URL or several, comma-separated (`nats://`, `tls://`).
    pub url: String,
    /// First subject tokens: subjects are `<prefix>.<host>.process.<kind>`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// The host token of the subject; default: this host's name, sanitized.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Create the stream (subjects `<prefix>.>`) when it does not exist.
    #[serde(default = "yes")]
    pub create_stream: bool,
    /// The duplicate window of a stream the sink creates.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window_secs: u64,
    /// How long a publish waits for its PublishAck before it is sent again.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: u64,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub tls: Option<NatsTlsConfig>,
    /// `native` (default), `ecs` or `ocsf`: the payload of each message
    /// (`SinkConfig::format`).
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTlsConfig {
    /// PEM roots to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key (mutual TLS); both or neither.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Refuse a server that does not speak TLS.
    #[serde(default)]
    pub required: bool,
}

fn default_subject_prefix() -> String {
    "procmond".into()
}
fn default_stream() -> String {
    "PROCMOND".into()
}
fn default_duplicate_window() -> u64 {
    120
}
fn default_ack_timeout() -> u64 {
    5
}

/// `metrics:` — the Prometheus endpoint (`agent/prometheus.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `address:port` to listen on, e.g. `127.0.0.1:9464`.
    pub listen: String,
    /// Allow a non-loopback `listen` address (the endpoint has no auth).
    #[serde(default)]
    pub allow_remote: bool,
}

impl MetricsConfig {
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        let addr: std::net::SocketAddr = self.listen.parse().map_err(|e| {
            ConfigError::invalid(
                "metrics.listen",
                format!("not an address:port ({e}): {:?}", self.listen),
            )
        })?;
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(ConfigError::invalid(
                "metrics.listen",
                format!(
                    "{addr} is not a loopback address; the endpoint has no authentication: set metrics.allow_remote: true to serve it anyway"
                ),
            ));
        }
        Ok(addr)
    }
}

/// `[A-Za-z0-9_-]`, 1 to `max` bytes: a NATS subject token or stream name
/// with no wildcard, separator or space in it.
fn is_plain_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl NatsSinkConfig {
    /// `format:` (validated with the rest of agent.yaml).
    pub fn event_format(&self) -> EventFormat {
        self.format
            .as_deref()
            .and_then(EventFormat::parse)
            .unwrap_or_default()
    }

    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        if self.url.trim().is_empty() {
            return Err(ConfigError::invalid(key("url"), "must name a NATS server"));
        }
        if cfg!(target_vendor = "apple") {
            return Err(ConfigError::invalid(
                at,
                "the nats sink is not built for macOS (its TLS library needs Apple's SDK to build): forward with another host's agent",
            ));
        }
        #[cfg(not(target_vendor = "apple"))]
        for part in self.url.split(',') {
            // The value is not echoed: a URL may carry a password.
            let addr: async_nats::ServerAddr = part
                .trim()
                .parse()
                .map_err(|e| ConfigError::invalid(key("url"), format!("{e}")))?;
            if addr.is_websocket() {
                return Err(ConfigError::invalid(
                    key("url"),
                    "websocket URLs are not supported: use nats:// or tls://",
                ));
            }
            if addr.has_user_pass() {
                return Err(ConfigError::invalid(
                    key("url"),
                    "must not carry credentials (they would show in health and logs): use user/password, token or credentials_file",
                ));
            }
        }
        if self.subject_prefix.len() > 128
            || !self
                .subject_prefix
                .split('.')
                .all(|t| is_plain_token(t, 128))
        {
            return Err(ConfigError::invalid(
                key("subject_prefix"),
                format!(
                    "must be dot-separated tokens of [A-Za-z0-9_-], at most 128 bytes, got {:?}",
                    self.subject_prefix
                ),
            ));
        }
        if let Some(host) = &self.host
            && !is_plain_token(host, 64)
        {
            return Err(ConfigError::invalid(
                key("host"),
                format!(
                    "must be 1-64 characters of [A-Za-z0-9_-] (one subject token), got {host:?}"
                ),
            ));
        }
        if !is_plain_token(&self.stream, 64) {
            return Err(ConfigError::invalid(
                key("stream"),
                format!(
                    "must be 1-64 characters of [A-Za-z0-9_-], got {:?}",
                    self.stream
                ),
            ));
        }
        in_range(
            &key("duplicate_window_secs"),
            self.duplicate_window_secs,
            1,
            604_800,
        )?;
        in_range(&key("ack_timeout_secs"), self.ack_timeout_secs, 1, 300)?;
        self.check_auth(at)
    }

    /// One way to authenticate, and every file named by an absolute path.
    fn check_auth(&self, at: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        let methods = [
            self.credentials_file.is_some(),
            self.user.is_some(),
            self.token.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(ConfigError::invalid(
                at,
                "choose one of credentials_file, user/password and token",
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(ConfigError::invalid(
                key(if self.user.is_some() {
                    "password"
                } else {
                    "user"
                }),
                "user and password go together",
            ));
        }
        let mut files = vec![("credentials_file", self.credentials_file.as_ref())];
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(ConfigError::invalid(
                    key("tls"),
                    "cert_file and key_file go together",
                ));
            }
            files.extend([
                ("tls.ca_file", tls.ca_file.as_ref()),
                ("tls.cert_file", tls.cert_file.as_ref()),
                ("tls.key_file", tls.key_file.as_ref()),
            ]);
        }
        for (field, path) in files {
            if path.is_some_and(|p| !p.is_absolute()) {
                return Err(ConfigError::invalid(key(field), "must be an absolute path"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::agent::tests::{REFERENCE_EXAMPLE, parse};

    const NATS_SINK: &str = "  - type: nats\n    url: nats://127.0.0.1:4222\n";

    fn with_nats(extra: &str) -> String {
        REFERENCE_EXAMPLE.replace(
            "collectors:\n",
            &format!("{NATS_SINK}{extra}metrics:\n  listen: 127.0.0.1:9464\ncollectors:\n"),
        )
    }

    #[test]
    fn nats_sink_and_metrics_parse_with_defaults() {
        let c = parse(&with_nats("")).expect("valid");
        let SinkConfig::Nats(n) = &c.sinks[1] else {
            panic!("second sink is nats: {:?}", c.sinks)
        };
        assert_eq!(n.subject_prefix, "procmond");
        assert_eq!(n.stream, "PROCMOND");
        assert!(n.create_stream);
        assert_eq!((n.duplicate_window_secs, n.ack_timeout_secs), (120, 5));
        assert_eq!(c.sinks[1].target(), "nats://127.0.0.1:4222 stream PROCMOND");
        let m = c.metrics.expect("metrics");
        assert_eq!(m.listen_addr().expect("loopback").port(), 9464);
        let c = parse(&with_nats("    user: u\n    password: hunter2\n")).expect("valid");
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn sink_format_defaults_to_native_and_takes_ecs_and_ocsf() {
        let c = parse(&with_nats("")).expect("valid");
        assert_eq!(c.sinks[0].format(), EventFormat::Native);
        assert_eq!(c.sinks[1].format(), EventFormat::Native);
        let text = with_nats("    format: ocsf\n").replace(
            "path: /var/lib/procmond/events.jsonl\n",
            "path: /var/lib/procmond/events.jsonl\n    format: ecs\n",
        );
        let c = parse(&text).expect("valid");
        assert_eq!(c.sinks[0].format(), EventFormat::Ecs);
        assert_eq!(c.sinks[1].format(), EventFormat::Ocsf);
        for bad in ["json", "ECS", "\"\""] {
            let e = parse(&with_nats(&format!("    format: {bad}\n"))).expect_err(bad);
            assert!(
                e.starts_with("sinks[1].format: must be one of native, ecs, ocsf"),
                "{bad}: {e}"
            );
            let jsonl = REFERENCE_EXAMPLE.replace(
                "path: /var/lib/procmond/events.jsonl\n",
                &format!("path: /var/lib/procmond/events.jsonl\n    format: {bad}\n"),
            );
            let e = parse(&jsonl).expect_err(bad);
            assert!(e.starts_with("sinks[0].format: "), "{bad}: {e}");
        }
        let e = parse(&with_nats("    format: [ecs]\n")).expect_err("a list");
        assert!(e.contains("format") || e.contains("sinks"), "{e}");
    }

    #[test]
    fn nats_and_metrics_errors_name_the_key() {
        let cases = [
            ("    stream: a.b\n", "sinks[1].stream"),
            ("    subject_prefix: a.*\n", "sinks[1].subject_prefix"),
            ("    subject_prefix: a..b\n", "sinks[1].subject_prefix"),
            ("    host: my.host\n", "sinks[1].host"),
            ("    ack_timeout_secs: 0\n", "sinks[1].ack_timeout_secs"),
            (
                "    duplicate_window_secs: 0\n",
                "sinks[1].duplicate_window_secs",
            ),
            ("    user: u\n", "sinks[1].password"),
            ("    user: u\n    password: p\n    token: t\n", "sinks[1]"),
            (
                "    credentials_file: my.creds\n",
                "sinks[1].credentials_file",
            ),
            ("    tls: {cert_file: /c.pem}\n", "sinks[1].tls"),
            ("    tls: {ca_file: ca.pem}\n", "sinks[1].tls.ca_file"),
            ("    tls: {verify: false}\n", "verify"),
            ("    stream_name: X\n", "stream_name"),
        ];
        for (extra, key) in cases {
            let e = parse(&with_nats(extra)).expect_err(extra);
            assert!(e.contains(key), "{extra}: {e}");
        }
        let urls = [
            "nats://u:secret@127.0.0.1:4222",
            "ws://127.0.0.1:80",
            "http://127.0.0.1:4222",
            "\"\"",
        ];
        for url in urls {
            let text = with_nats("").replace("nats://127.0.0.1:4222", url);
            let e = parse(&text).expect_err(url);
            assert!(
                e.contains("sinks[1].url") && !e.contains("secret"),
                "{url}: {e}"
            );
        }
        let remote = with_nats("").replace("127.0.0.1:9464", "0.0.0.0:9464");
        let e = parse(&remote).expect_err("non-loopback");
        assert!(
            e.contains("metrics.listen") && e.contains("allow_remote"),
            "{e}"
        );
        let allowed = remote.replace(
            "listen: 0.0.0.0:9464",
            "listen: 0.0.0.0:9464\n  allow_remote: true",
        );
        parse(&allowed).expect("allowed explicitly");
        let e = parse(&with_nats("").replace("127.0.0.1:9464", "localhost")).expect_err("no port");
        assert!(e.contains("metrics.listen"), "{e}");
    }
}
