//! Standalone output: encoded events rendered as JSON lines or text on stdout,
//! and the event formats every output shares (`watch`, `snapshot`, the jsonl
//! and NATS sinks).
//!
//! JSON is one object per line whatever the process put in its name or argv
//! (serde escapes control characters). Text is for people: control and
//! escape characters are shown escaped, so a hostile name cannot repaint the
//! operator's terminal. Besides procmond's own JSON (`native`), an event can
//! be rendered as an ECS 8.x document (`ecs`) or an OCSF 1.x Process Activity
//! event (`ocsf`): docs/reference.md §2.6.

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::model::batch::Batch;
use crate::model::{ProcessEvent, format_rfc3339};

pub mod archived;
pub mod ecs;
mod ext;
pub mod ocsf;
#[cfg(test)]
mod schema_tests;

/// How `watch` and `snapshot` print events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// procmond's own JSON (also accepted as `native`).
    #[value(alias = "native")]
    Json,
    Text,
    /// Elastic Common Schema 8.x, one document per line.
    Ecs,
    /// OCSF 1.x Process Activity, one event per line.
    Ocsf,
}

/// The JSON an event is written as: a sink's `format:` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventFormat {
    /// The event as procmond models it (docs/reference.md §2).
    #[default]
    Native,
    Ecs,
    Ocsf,
}

impl EventFormat {
    /// Every format, in the order the docs and errors list them.
    pub const ALL: [EventFormat; 3] = [Self::Native, Self::Ecs, Self::Ocsf];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Ecs => "ecs",
            Self::Ocsf => "ocsf",
        }
    }

    /// The format named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// `native, ecs, ocsf`: for error messages.
    pub fn allowed() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// Appends the event as one JSON object (no newline) to `out`.
    pub fn write_json(self, event: &ProcessEvent, out: &mut Vec<u8>) {
        // Serializing plain structs to a Vec cannot fail.
        let _ = match self {
            Self::Native => serde_json::to_writer(&mut *out, event),
            Self::Ecs => serde_json::to_writer(&mut *out, &ecs::Document::new(event, host())),
            Self::Ocsf => serde_json::to_writer(&mut *out, &ocsf::Event::new(event, host())),
        };
    }
}

impl EventFormat {
    /// `write_json` for an archived (already validated) event: the native
    /// format is written from it in place (`archived::Native`, no
    /// allocation per string); ECS and OCSF build from the decoded event.
    pub fn write_archived(
        self,
        event: &crate::model::ArchivedProcessEvent,
        out: &mut Vec<u8>,
    ) -> Result<(), rkyv::rancor::Error> {
        match self {
            Self::Native => {
                // Serializing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, &archived::Native(event));
            }
            Self::Ecs | Self::Ocsf => {
                let owned = rkyv::deserialize::<ProcessEvent, rkyv::rancor::Error>(event)?;
                self.write_json(&owned, out);
            }
        }
        Ok(())
    }
}

impl serde::Serialize for EventFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Facts about this host that the ECS and OCSF documents carry, read once:
/// every event an agent or `watch` renders was observed on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `None` when the name cannot be read.
    pub hostname: Option<String>,
}

impl Host {
    pub fn read() -> Self {
        let name = crate::sys::hostname();
        Self {
            hostname: (!name.is_empty()).then_some(name),
        }
    }
}

/// This host's facts, read on first use.
pub fn host() -> &'static Host {
    static HOST: std::sync::OnceLock<Host> = std::sync::OnceLock::new();
    HOST.get_or_init(Host::read)
}

/// Where a rendered line keeps `(collector_id, epoch, seq)`, whichever
/// format wrote it: the jsonl sink reads them back to skip what it stored.
pub fn dedupe_key(line: &serde_json::Value) -> Option<(&str, u64, u64)> {
    let at = [line, &line["procmond"], &line["unmapped"]["procmond"]]
        .into_iter()
        .find(|v| v["collector_id"].is_string())?;
    Some((
        at["collector_id"].as_str()?,
        at["epoch"].as_u64().unwrap_or(0),
        at["seq"].as_u64()?,
    ))
}

/// One event as a line (with the trailing newline).
pub fn render(event: &ProcessEvent, format: Format, line: &mut Vec<u8>) {
    match format {
        Format::Json => EventFormat::Native.write_json(event, line),
        Format::Ecs => EventFormat::Ecs.write_json(event, line),
        Format::Ocsf => EventFormat::Ocsf.write_json(event, line),
        Format::Text => {
            use std::io::Write;
            let _ = write!(
                line,
                "{} {:<8} {:<9} pid={} ppid={} uid={} name={} exe={}",
                format_rfc3339(event.timestamp),
                event.kind.as_str(),
                event.source.as_str(),
                event.pid,
                opt(event.ppid),
                opt(event.uid),
                escape(&event.name),
                escape(event.exe.as_deref().unwrap_or("-")),
            );
            if let Some(code) = event.exit_code {
                let _ = write!(line, " exit_code={code}");
            }
            if let Some(sig) = event.platform.signal {
                let _ = write!(line, " signal={sig}");
            }
            if !event.argv.is_empty() {
                let argv: Vec<String> = event.argv.iter().map(|a| escape(a)).collect();
                let _ = write!(line, " argv=[{}]", argv.join(" "));
            }
        }
    }
    line.push(b'\n');
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Escapes control characters (including ESC) for a terminal.
pub fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Writes every event of the delivered batches from `rx` (validated by the
/// broker) until it closes, flushing whenever it is idle. Each event is
/// read in place, which checks it again.
pub async fn write_events<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Batch>,
    writer: W,
    format: Format,
    metrics: Arc<Metrics>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    let mut line = Vec::with_capacity(1024);
    let mut broken = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(batch) = next {
            for entry in batch.iter() {
                if broken {
                    Metrics::incr(&metrics.events_output_dropped);
                    continue;
                }
                let rendered = match (format, entry.event()) {
                    (Format::Json, Ok(archived)) => {
                        line.clear();
                        EventFormat::Native
                            .write_archived(archived, &mut line)
                            .map(|()| line.push(b'\n'))
                            .map_err(|e| e.to_string())
                    }
                    (_, Ok(archived)) => {
                        rkyv::deserialize::<ProcessEvent, rkyv::rancor::Error>(archived)
                            .map(|event| {
                                line.clear();
                                render(&event, format, &mut line);
                            })
                            .map_err(|e| e.to_string())
                    }
                    (_, Err(e)) => Err(e.to_string()),
                };
                match rendered {
                    Ok(()) => {
                        if let Err(e) = out.write_all(&line).await {
                            tracing::error!(error = %e, "output closed: later events are counted as dropped");
                            broken = true;
                            Metrics::incr(&metrics.events_output_dropped);
                        } else {
                            Metrics::incr(&metrics.events_emitted);
                        }
                    }
                    Err(e) => {
                        Metrics::incr(&metrics.events_output_dropped);
                        tracing::error!(error = %e, seq = entry.seq, "event dropped: invalid encoding");
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if !broken && let Err(e) = out.flush().await {
            tracing::error!(error = %e, "output closed: later events are counted as dropped");
            broken = true;
        }
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, EventSource};

    #[test]
    fn format_names() {
        use clap::ValueEnum;
        for (name, format) in [
            ("json", Format::Json),
            ("native", Format::Json),
            ("text", Format::Text),
            ("ecs", Format::Ecs),
            ("ocsf", Format::Ocsf),
        ] {
            assert_eq!(Format::from_str(name, false), Ok(format), "{name}");
        }
        assert!(Format::from_str("xml", false).is_err());
        for f in EventFormat::ALL {
            assert_eq!(EventFormat::parse(f.as_str()), Some(f));
        }
        assert_eq!(EventFormat::parse("json"), None);
        assert_eq!(EventFormat::allowed(), "native, ecs, ocsf");
    }

    #[test]
    fn hostile_strings_stay_on_one_line() {
        let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 0, 1);
        e.name = "a\nb\u{1b}[2J\u{fffd}".into();
        e.argv = vec!["x\ry".into(), "\u{7}".into()];
        for format in [Format::Json, Format::Text, Format::Ecs, Format::Ocsf] {
            let mut line = Vec::new();
            render(&e, format, &mut line);
            let text = String::from_utf8(line).expect("utf-8");
            assert_eq!(text.matches('\n').count(), 1, "{text}");
            assert!(
                !text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'),
                "{text}"
            );
        }
    }
}
