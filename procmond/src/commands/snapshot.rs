//! `procmond snapshot`: one enumeration, rendered like `watch` output. On
//! Linux it reads the BPF task iterator where it can load (the kernel's
//! view, with each process's `exec_id`), else procfs, as the sensor does.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use procmond::config::ProcmondConfig;
use procmond::metrics::Metrics;
use procmond::model::{EventKind, EventSource};
use procmond::output::{Format, render};
use procmond::pipeline::Pipeline;
use procmond::sources::snapshot::SnapshotOptions;

pub fn run(format: Format) -> Result<()> {
    let config = ProcmondConfig::default();
    let snap = procmond::platform::snapshot_once(SnapshotOptions { cwd: true })
        .context("reading the process table")?;
    let mut pipeline = Pipeline::new(&config, 0, 1, Arc::new(Metrics::default()));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = Vec::with_capacity(1024);
    let mut events: Vec<_> = snap
        .processes
        .iter()
        .map(|p| p.to_event(EventKind::Snapshot, EventSource::Poll, snap.taken_at))
        .collect();
    // Every process in the table first: parents and leaders resolve
    // whatever the order (pids wrap).
    pipeline.prepare_all(&mut events);
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        for event in events.by_ref() {
            if pipeline.push_prepared(event) {
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
