//! `procmond snapshot`: one enumeration, rendered like `watch` output.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use procmond::config::ProcmondConfig;
use procmond::metrics::Metrics;
use procmond::model::{EventKind, EventSource};
use procmond::output::{Format, render};
use procmond::pipeline::Pipeline;
use procmond::sources::snapshot::{self, SnapshotOptions};

pub fn run(format: Format) -> Result<()> {
    let config = ProcmondConfig::default();
    let snap =
        snapshot::take(SnapshotOptions { cwd: true }).context("reading the process table")?;
    let mut pipeline = Pipeline::new(&config, 0, 1, Arc::new(Metrics::default()));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = Vec::with_capacity(1024);
    let mut processes = snap.processes.iter().peekable();
    while processes.peek().is_some() {
        for p in processes.by_ref() {
            let event = p.to_event(EventKind::Snapshot, EventSource::Poll, snap.taken_at);
            if pipeline.push(event) {
                break;
            }
        }
        let Some(batch) = pipeline.take() else {
            continue;
        };
        for entry in batch.iter() {
            line.clear();
            render(&entry.decode()?, format, &mut line);
            out.write_all(&line)?;
        }
    }
    out.flush()?;
    Ok(())
}
