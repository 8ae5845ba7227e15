//! Standalone output: encoded events rendered as JSON lines or text on stdout.
//!
//! JSON is one object per line whatever the process put in its name or argv
//! (serde escapes control characters). Text is for people: control and
//! escape characters are shown escaped, so a hostile name cannot repaint the
//! operator's terminal.

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::bus::protocol::Envelope;
use crate::metrics::Metrics;
use crate::model::batch::Batch;
use crate::model::{ProcessEvent, format_rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// One event as a line (with the trailing newline).
pub fn render(event: &ProcessEvent, format: Format, line: &mut Vec<u8>) {
    match format {
        Format::Json => {
            // Serializing plain structs to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *line, event);
        }
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

/// Writes every event of the delivered batches from `rx` until it closes,
/// flushing whenever it is idle. Each event is validated before it is
/// rendered.
pub async fn write_events<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Envelope>,
    writer: W,
    format: Format,
    metrics: Arc<Metrics>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    let mut line = Vec::with_capacity(1024);
    let mut broken = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(delivery) = next {
            let batch = match Batch::parse_slice(&delivery.payload) {
                Ok(b) => b,
                Err(e) => {
                    Metrics::incr(&metrics.events_output_dropped);
                    tracing::error!(error = %e, topic = %delivery.topic, "delivery dropped: not a batch");
                    next = rx.try_recv().ok();
                    continue;
                }
            };
            for entry in batch.iter() {
                if broken {
                    Metrics::incr(&metrics.events_output_dropped);
                    continue;
                }
                match entry.decode() {
                    Ok(event) => {
                        line.clear();
                        render(&event, format, &mut line);
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
    fn hostile_strings_stay_on_one_line() {
        let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 0, 1);
        e.name = "a\nb\u{1b}[2J\u{fffd}".into();
        e.argv = vec!["x\ry".into(), "\u{7}".into()];
        for format in [Format::Json, Format::Text] {
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
