//! Heartbeats: every `heartbeat_interval_secs`, from a task of their own
//! that reads shared state and counters — collection cannot block it, so a
//! missing heartbeat means the process itself is stuck or gone.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::bus::protocol::{Envelope, FrameKind, heartbeat_topic};
use crate::bus::rpc::{CONTROL_CORRELATION, Heartbeat, to_payload};
use crate::metrics::Metrics;
use crate::sensor::mailbox::SensorStatus;

pub async fn run(
    collector_id: String,
    status: watch::Receiver<SensorStatus>,
    metrics: Arc<Metrics>,
    outbox: mpsc::UnboundedSender<Envelope>,
    cancel: CancellationToken,
) {
    let topic = heartbeat_topic(&collector_id);
    let mut sequence = 0u64;
    loop {
        let period = Duration::from_secs(status.borrow().config.heartbeat_interval_secs.max(1));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        sequence += 1;
        let connected = metrics.connected.load(Relaxed) == 1;
        let health = status.borrow().health(connected, &metrics);
        metrics.losses_at_last_beat.store(metrics.losses(), Relaxed);
        let beat = Heartbeat {
            collector_id: collector_id.clone(),
            sequence,
            status: health.into(),
            timestamp: crate::model::format_rfc3339(crate::clock::now_unix_ns()),
            metrics: metrics.summary(),
        };
        let env = Envelope::new(
            FrameKind::Publish,
            topic.clone(),
            CONTROL_CORRELATION | (1 << 32) | sequence,
            to_payload(&beat),
        );
        if outbox.send(env).is_err() {
            return;
        }
    }
}
