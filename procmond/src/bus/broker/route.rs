//! Routing a publish: which subscribers get it, what each gets (for
//! process events, the kinds its pattern matches), and which deliveries
//! gate the publisher's acknowledgement.

use tokio::sync::{mpsc, oneshot};

use super::{Broker, Durable, SLOW_SUBSCRIBER, SubTx};
use crate::bus::protocol::{self, Envelope, FrameKind};
use crate::metrics::Metrics;
use crate::model::EventKind;
use crate::model::batch::Batch;

impl Broker {
    /// Delivers `env` (a publish) to every matching subscriber; returns the
    /// confirmations of durable subscribers, which gate the publisher's ack.
    /// Process events (`batch`) go to subscribers whose pattern matches the
    /// topic of at least one kind in it, each getting the kinds it matches.
    pub(super) async fn route(
        &self,
        env: Envelope,
        batch: Option<Batch>,
    ) -> Vec<oneshot::Receiver<()>> {
        let mut deliveries: Vec<(u64, SubTx, Envelope)> = Vec::new();
        match batch {
            Some(batch) => {
                let present = batch.kinds();
                let subs: Vec<(u64, SubTx, u8)> = self
                    .routes()
                    .subs
                    .iter()
                    .map(|s| (s.conn, s.tx.clone(), kinds_matching(&s.pattern) & present))
                    .filter(|(_, _, m)| *m != 0)
                    .collect();
                Metrics::add(&self.inner.stats.published, batch.len() as u64);
                for (conn, tx, mask) in subs {
                    // The whole batch is copied once into the frame, not
                    // cloned first.
                    let payload = if mask == present {
                        Some(batch.as_bytes().to_vec())
                    } else {
                        batch
                            .filter(|e| mask & (1 << e.kind.as_u8()) != 0)
                            .map(|part| part.as_bytes().to_vec())
                    };
                    if let Some(payload) = payload {
                        let deliver = Envelope::new(
                            FrameKind::Deliver,
                            protocol::TOPIC_EVENT_BATCH,
                            env.correlation_id,
                            payload,
                        );
                        deliveries.push((conn, tx, deliver));
                    }
                }
            }
            None => {
                Metrics::incr(&self.inner.stats.published);
                let mut deliver = env;
                deliver.kind = FrameKind::Deliver;
                let subs: Vec<(u64, SubTx)> = self
                    .routes()
                    .subs
                    .iter()
                    .filter(|s| protocol::topic_matches(&s.pattern, &deliver.topic))
                    .map(|s| (s.conn, s.tx.clone()))
                    .collect();
                deliveries.extend(subs.into_iter().map(|(c, t)| (c, t, deliver.clone())));
            }
        }
        let mut confirmations = Vec::new();
        for (conn, tx, deliver) in deliveries {
            let sent = match tx {
                SubTx::Local(tx) => tx.send(deliver).await.map_err(|_| "closed"),
                SubTx::Durable(tx) => {
                    let (done, confirmed) = oneshot::channel();
                    confirmations.push(confirmed);
                    let durable = Durable {
                        envelope: deliver,
                        done,
                    };
                    // A failed sink keeps its place: if it is gone, `done`
                    // drops with the message and the publish stays
                    // unacknowledged (kept in the collector's WAL).
                    let _ = tx.send(durable).await;
                    Ok(())
                }
                SubTx::Remote(tx) => tx
                    .send_timeout(deliver, SLOW_SUBSCRIBER)
                    .await
                    .map_err(|e| match e {
                        mpsc::error::SendTimeoutError::Timeout(_) => "too slow",
                        mpsc::error::SendTimeoutError::Closed(_) => "closed",
                    }),
            };
            if let Err(why) = sent {
                let mut routes = self.routes();
                routes.subs.retain(|s| s.conn != conn);
                if let Some(c) = routes.conns.get(&conn) {
                    c.cancel();
                }
                drop(routes);
                if why == "too slow" {
                    Metrics::incr(&self.inner.stats.subscribers_dropped);
                    tracing::warn!(
                        conn,
                        "subscriber disconnected: blocked delivery for {SLOW_SUBSCRIBER:?}"
                    );
                }
            }
        }
        confirmations
    }
}

/// A bit per `EventKind` whose topic `pattern` matches.
fn kinds_matching(pattern: &str) -> u8 {
    EventKind::ALL
        .iter()
        .filter(|k| protocol::topic_matches(pattern, &protocol::event_topic(**k)))
        .fold(0, |m, k| m | (1 << k.as_u8()))
}
