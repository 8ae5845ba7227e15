//! The pipeline every event goes through, whatever its source:
//! enrich → sanitize → lineage (the process table: parent, ancestors,
//! leaders) → stamp (collector id, seq) → encode once with rkyv, straight
//! into the open batch.
//!
//! What comes out is a `Batch`: what the WAL stores under one key, the bus
//! carries in one frame and a sink stores with one fsync; JSON is rendered
//! from it only at the edges. Sources push events one by one and close the
//! batch at their natural boundary (one drain of the kernel ring, one
//! snapshot), or when it is full.

pub mod enrich;
#[cfg(unix)]
pub mod hash;
pub mod lineage;
pub mod sanitize;

use std::sync::Arc;

use crate::config::ProcmondConfig;
use crate::metrics::Metrics;
use crate::model::ProcessEvent;
use crate::model::batch::{Batch, BatchBuilder};
use enrich::Enricher;
use lineage::ProcessTable;
use sanitize::Sanitizer;

#[derive(Debug)]
pub struct Pipeline {
    collector_id: String,
    epoch: u64,
    next_seq: u64,
    enricher: Enricher,
    sanitizer: Sanitizer,
    table: ProcessTable,
    batch: BatchBuilder,
    metrics: Arc<Metrics>,
    /// Executable hashing, while a kernel source runs with `compute_hashes`.
    #[cfg(unix)]
    hasher: Option<hash::Hasher>,
}

impl Pipeline {
    /// `next_seq` is the first sequence number to hand out, `epoch` the
    /// identity of the WAL they belong to.
    pub fn new(config: &ProcmondConfig, epoch: u64, next_seq: u64, metrics: Arc<Metrics>) -> Self {
        Self {
            collector_id: config.collector_id.clone(),
            epoch,
            next_seq,
            enricher: Enricher::new(config.enhanced_metadata),
            sanitizer: Sanitizer::new(&config.sanitize.extra_flags, &config.sanitize.extra_keys),
            table: ProcessTable::new(config.lineage.max_processes, config.lineage.max_ancestors),
            batch: BatchBuilder::new(),
            metrics,
            #[cfg(unix)]
            hasher: None,
        }
    }

    /// Takes new hot-reloadable settings (enrichment, redaction patterns).
    pub fn reconfigure(&mut self, config: &ProcmondConfig) {
        self.enricher.set_enhanced(config.enhanced_metadata);
        self.sanitizer = Sanitizer::new(&config.sanitize.extra_flags, &config.sanitize.extra_keys);
        self.table
            .set_limits(config.lineage.max_processes, config.lineage.max_ancestors);
    }

    /// Runs one event through every stage into the open batch. Returns true
    /// when the batch is full and should be taken. An event that cannot be
    /// encoded is counted and logged.
    pub fn push(&mut self, mut event: ProcessEvent) -> bool {
        if self.prepare(&mut event) {
            self.push_prepared(event)
        } else {
            self.batch.is_full()
        }
    }

    /// Prepares a whole enumeration before any of it is encoded, so each
    /// process finds its parent and leaders in the table whatever the order
    /// (pids wrap: a child can come before its parent). Then each goes to
    /// `push_prepared`.
    pub fn prepare_all(&mut self, events: &mut Vec<ProcessEvent>) {
        events.retain_mut(|e| self.prepare(e));
    }

    /// Enrich, sanitize, and take the event into the process table. False
    /// for an event not worth sending (a setuid call that changed nothing).
    fn prepare(&mut self, event: &mut ProcessEvent) -> bool {
        self.enricher.enrich(event);
        #[cfg(unix)]
        if let Some(hasher) = &self.hasher {
            hasher.annotate(event);
        }
        let redacted = self
            .sanitizer
            .sanitize_argv_truncated(&mut event.argv, event.argv_truncated);
        if redacted > 0 {
            Metrics::add(&self.metrics.redactions, redacted as u64);
        }
        let recorded = self.table.record(event);
        if recorded.evicted > 0 {
            Metrics::add(&self.metrics.lineage_evicted, recorded.evicted);
        }
        self.metrics.lineage_entries.store(
            self.table.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        !recorded.unchanged_setuid
    }

    /// Lineage, stamp, encode: the rest of `push` for a prepared event.
    pub fn push_prepared(&mut self, mut event: ProcessEvent) -> bool {
        if self.table.annotate(&mut event) {
            Metrics::incr(&self.metrics.lineage_parent_unknown);
        }
        event.collector_id.clone_from(&self.collector_id);
        event.epoch = self.epoch;
        event.seq = self.next_seq;
        match self.batch.push(&event) {
            Ok(()) => {
                self.next_seq += 1;
                self.metrics.count_event(event.kind, event.source);
            }
            Err(e) => {
                Metrics::incr(&self.metrics.events_encode_failed);
                tracing::error!(error = %e, pid = event.pid, "event dropped: encoding failed");
            }
        }
        self.batch.is_full()
    }

    /// Starts hashing executables when `compute_hashes` asks for it (the
    /// config refuses it where it is not supported); `tx` is the kernel
    /// source's channel, where the workers send their `modify` events.
    pub fn start_hashing(
        &mut self,
        config: &ProcmondConfig,
        tx: &tokio::sync::mpsc::Sender<crate::sources::SourceMsg>,
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<()> {
        #[cfg(unix)]
        if config.compute_hashes {
            let hasher =
                hash::Hasher::start(config.hash_max_file_bytes, tx.clone(), metrics.clone())?;
            self.hasher = Some(hasher);
        }
        #[cfg(not(unix))]
        let _ = (config, tx, metrics);
        Ok(())
    }

    /// Stops hashing: the workers end and drop their senders.
    pub fn stop_hashing(&mut self) {
        #[cfg(unix)]
        {
            self.hasher = None;
        }
    }

    /// Closes the open batch, if it holds anything.
    pub fn take(&mut self) -> Option<Batch> {
        if self.batch.is_empty() {
            return None;
        }
        let batch = self.batch.finish();
        Metrics::add(&self.metrics.events_encoded, batch.len() as u64);
        Some(batch)
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
