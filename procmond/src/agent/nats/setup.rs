//! The NATS sink's setup: connection options (credentials and TLS files
//! read once, before the agent drops its privileges), subject names, the
//! stream check, and the connection events that feed the sink's counters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tokio::sync::watch;

use crate::agent::sink::SinkStats;
use crate::config::agent::NatsSinkConfig;

pub(super) use crate::agent::sink::{BACKOFF_MIN, backoff};

#[derive(Debug, thiserror::Error)]
pub enum NatsSinkError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {path}: {reason}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("connecting to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
}

/// A sink ready to run: files read (before the agent drops its privileges),
/// names resolved.
pub struct Prepared {
    pub(super) options: async_nats::ConnectOptions,
    pub(super) url: String,
    pub(super) stream: String,
    pub(super) create_stream: bool,
    pub(super) duplicate_window: Duration,
    pub(super) ack_timeout: Duration,
    pub(super) prefix: String,
    /// `<prefix>.<host>.process`: the subject without the kind.
    pub(super) subject_base: String,
    /// `<host>.<boot>`: what makes a `Nats-Msg-Id` this host's own.
    pub(super) id_prefix: String,
    /// How each event is written (`format:`).
    pub(super) format: crate::output::EventFormat,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("subject_base", &self.subject_base)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// The subject of one kind of event.
    pub fn subject(&self, kind: &str) -> String {
        format!("{}.{kind}", self.subject_base)
    }

    /// `Nats-Msg-Id` of an event: `<host>.<boot>.<collector_id>-<epoch>-<seq>`.
    pub fn msg_id(&self, collector: &str, epoch: u64, seq: u64) -> String {
        format!("{}.{collector}-{epoch}-{seq}", self.id_prefix)
    }
}

/// This boot of this host as one token: the kernel's random boot id (32 hex
/// digits) on Linux, else `t<boot time in seconds>`. Hosts cloned from one
/// image share their hostname, collector ids and even WAL epochs, never
/// their boot id, so their message ids never collide.
pub fn boot_token() -> String {
    if let Some(id) = crate::platform::boot_id() {
        let hex: String = id.chars().filter(char::is_ascii_hexdigit).collect();
        if !hex.is_empty() {
            return hex;
        }
    }
    match sysinfo::System::boot_time() {
        Ok(secs) => format!("t{secs}"),
        Err(_) => "unknown".into(),
    }
}

/// This host's name as one subject token: `[A-Za-z0-9_-]`, at most 64 bytes.
pub fn host_token(raw: &str) -> String {
    let token: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if token.is_empty() {
        "unknown".into()
    } else {
        token
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, NatsSinkError> {
    std::fs::read(path).map_err(|source| NatsSinkError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads credentials and TLS files and builds the connection options.
pub fn prepare(config: &NatsSinkConfig) -> Result<Prepared, NatsSinkError> {
    let ack_timeout = Duration::from_secs(config.ack_timeout_secs);
    let mut options = async_nats::ConnectOptions::new()
        .name("procmond-agent")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(backoff)
        .ping_interval(Duration::from_secs(20))
        .request_timeout(Some(ack_timeout));
    if let Some(path) = &config.credentials_file {
        let text = String::from_utf8(read("credentials_file", path)?).map_err(|_| {
            NatsSinkError::Invalid {
                key: "credentials_file",
                path: path.clone(),
                reason: "not UTF-8".into(),
            }
        })?;
        options = options
            .credentials(&text)
            .map_err(|e| NatsSinkError::Invalid {
                key: "credentials_file",
                path: path.clone(),
                reason: e.to_string(),
            })?;
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.0.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.0.clone());
    }
    if let Some(tls) = &config.tls {
        options = options.require_tls(tls.required);
        let client = match (&tls.cert_file, &tls.key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        if tls.ca_file.is_some() || client.is_some() {
            // Built from bytes read now: a reconnection, after the privilege
            // drop, must never need to read the key again.
            options = options.tls_client_config(tls_config(tls.ca_file.as_deref(), client)?);
        }
    }
    let host = config
        .host
        .clone()
        .unwrap_or_else(|| host_token(&crate::sys::hostname()));
    let boot = boot_token();
    Ok(Prepared {
        options,
        url: config.url.clone(),
        stream: config.stream.clone(),
        create_stream: config.create_stream,
        duplicate_window: Duration::from_secs(config.duplicate_window_secs),
        ack_timeout,
        subject_base: format!("{}.{host}.process", config.subject_prefix),
        id_prefix: format!("{host}.{boot}"),
        prefix: config.subject_prefix.clone(),
        format: config.event_format(),
    })
}

/// A rustls client configuration trusting only the PEM roots in `ca`, or
/// the system's (read now) without it; with the client certificate and key
/// of `client`, read now.
fn tls_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<async_nats::rustls::ClientConfig, NatsSinkError> {
    use async_nats::rustls::{self, pki_types::pem::PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |key, path: &Path, reason: String| NatsSinkError::Invalid {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let certs = |key, path: &Path| -> Result<Vec<CertificateDer<'static>>, NatsSinkError> {
        let pem = read(key, path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(key, path, format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(invalid(key, path, "no certificate in it".into()));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in certs("tls.ca_file", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid("tls.ca_file", ca, e.to_string()))?;
            }
        }
        None => {
            let system = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(system.certs);
            if added == 0 {
                let errors: Vec<String> = system.errors.iter().map(|e| e.to_string()).collect();
                let reason = format!("no usable root certificate: {}", errors.join("; "));
                return Err(invalid("tls", Path::new("(system trust store)"), reason));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", Path::new("(protocol versions)"), e.to_string()))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certs("tls.cert_file", cert)?;
            let pem = read("tls.key_file", key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| invalid("tls.key_file", key, format!("no PEM private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| invalid("tls.cert_file", cert, e.to_string()))
        }
    }
}

/// Whether NATS subject `pattern` (with `*` and `>`) matches `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}
pub(super) fn on_event(
    event: &async_nats::Event,
    stats: &SinkStats,
    url: &str,
    ever: &AtomicBool,
    up: &watch::Sender<bool>,
) {
    match event {
        async_nats::Event::Connected => {
            stats.recovered();
            if ever.swap(true, Relaxed) {
                stats.reconnects.fetch_add(1, Relaxed);
                tracing::info!(url, "nats sink reconnected");
            } else {
                tracing::info!(url, "nats sink connected");
            }
            up.send_replace(true);
        }
        async_nats::Event::Disconnected => {
            tracing::warn!(
                url,
                "nats sink disconnected: holding events until it reconnects"
            );
            stats.degrade(&format_args!("disconnected from {url}"));
            up.send_replace(false);
        }
        async_nats::Event::ClientError(e) => {
            // A failed (re)connection attempt: counted, retried with backoff.
            let n = stats.failed(&format_args!("connecting to {url}: {e}"));
            if n <= 10 || n.is_power_of_two() {
                tracing::warn!(url, error = %e, errors = n, "nats sink: connecting failed; retrying");
            }
        }
        other => tracing::warn!(url, event = %other, "nats sink: connection event"),
    }
}

/// Makes sure the stream exists (creating it if allowed) and takes our subjects.
pub(super) async fn ensure_stream(js: &jetstream::Context, p: &Prepared) -> Result<(), String> {
    let stream = if p.create_stream {
        js.get_or_create_stream(stream::Config {
            name: p.stream.clone(),
            subjects: vec![format!("{}.>", p.prefix)],
            storage: stream::StorageType::File,
            duplicate_window: p.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {}: {e}", p.stream))?
    } else {
        js.get_stream(&p.stream)
            .await
            .map_err(|e| format!("stream {} (create_stream is off): {e}", p.stream))?
    };
    let probe = p.subject("exec");
    let subjects = &stream.cached_info().config.subjects;
    if subjects.iter().any(|s| subject_matches(s, &probe)) {
        Ok(())
    } else {
        Err(format!(
            "stream {} does not take subject {probe} (its subjects: {subjects:?})",
            p.stream
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_carries_the_format() {
        use crate::output::EventFormat;
        for (format, expect) in [
            (None, EventFormat::Native),
            (Some("ecs"), EventFormat::Ecs),
            (Some("ocsf"), EventFormat::Ocsf),
        ] {
            let mut json = serde_json::json!({ "url": "nats://127.0.0.1:4222" });
            if let Some(f) = format {
                json["format"] = f.into();
            }
            let config: NatsSinkConfig = serde_json::from_value(json).expect("config");
            assert_eq!(prepare(&config).expect("prepared").format, expect);
        }
    }

    #[test]
    fn host_names_become_one_subject_token() {
        assert_eq!(host_token("web-01.example.com"), "web-01_example_com");
        assert_eq!(host_token("a b*>c"), "a_b__c");
        assert_eq!(host_token(""), "unknown");
        assert_eq!(host_token(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn subject_patterns_match_like_nats() {
        assert!(subject_matches("procmond.>", "procmond.h.process.exec"));
        assert!(subject_matches(
            "procmond.*.process.*",
            "procmond.h.process.exec"
        ));
        assert!(subject_matches(
            "procmond.h.process.exec",
            "procmond.h.process.exec"
        ));
        assert!(!subject_matches("procmond.>", "procmond"));
        assert!(!subject_matches("procmond.*", "procmond.h.process"));
        assert!(!subject_matches("other.>", "procmond.h.process.exec"));
        assert!(!subject_matches(
            "procmond.h.process.exec.x",
            "procmond.h.process.exec"
        ));
    }
}
