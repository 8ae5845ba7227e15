//! The pipeline every event goes through, whatever its source:
//! enrich → sanitize → stamp (collector id, seq) → encode once with rkyv.
//!
//! What comes out (`Encoded`) is what the WAL stores, the bus carries and
//! subscribers read; JSON is rendered from it only at the edges.

pub mod enrich;
pub mod sanitize;

use std::sync::Arc;

use crate::config::ProcmondConfig;
use crate::metrics::Metrics;
use crate::model::codec::{self, EventBytes};
use crate::model::{EventKind, ProcessEvent};
use enrich::Enricher;
use sanitize::Sanitizer;

/// One event, encoded, with what routing needs without decoding it.
#[derive(Debug)]
pub struct Encoded {
    pub seq: u64,
    pub kind: EventKind,
    pub bytes: EventBytes,
}

#[derive(Debug)]
pub struct Pipeline {
    collector_id: String,
    next_seq: u64,
    enricher: Enricher,
    sanitizer: Sanitizer,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// `next_seq` is the first sequence number to hand out.
    pub fn new(config: &ProcmondConfig, next_seq: u64, metrics: Arc<Metrics>) -> Self {
        Self {
            collector_id: config.collector_id.clone(),
            next_seq,
            enricher: Enricher::new(config.enhanced_metadata),
            sanitizer: Sanitizer::new(&config.sanitize.extra_flags, &config.sanitize.extra_keys),
            metrics,
        }
    }

    /// Takes new hot-reloadable settings (enrichment, redaction patterns).
    pub fn reconfigure(&mut self, config: &ProcmondConfig) {
        self.enricher = Enricher::new(config.enhanced_metadata);
        self.sanitizer = Sanitizer::new(&config.sanitize.extra_flags, &config.sanitize.extra_keys);
    }

    /// Runs one event through every stage; `None` if it could not be encoded
    /// (counted and logged).
    pub fn process(&mut self, mut event: ProcessEvent) -> Option<Encoded> {
        self.enricher.enrich(&mut event);
        let redacted = self.sanitizer.sanitize_argv(&mut event.argv);
        Metrics::add(&self.metrics.redactions, redacted as u64);
        event.collector_id.clone_from(&self.collector_id);
        event.seq = self.next_seq;
        match codec::encode(&event) {
            Ok(bytes) => {
                self.next_seq += 1;
                Metrics::incr(&self.metrics.events_encoded);
                Some(Encoded {
                    seq: event.seq,
                    kind: event.kind,
                    bytes,
                })
            }
            Err(e) => {
                Metrics::incr(&self.metrics.events_encode_failed);
                tracing::error!(error = %e, pid = event.pid, "event dropped: encoding failed");
                None
            }
        }
    }
}
