//! Routing a publish: which connections get it, what each gets (for
//! process events, the kinds its subscriptions match), and which
//! deliveries gate the publisher's acknowledgement.
//!
//! A connection gets one delivery per publish however many of its
//! subscriptions match. Remote deliveries never wait: a subscriber whose
//! outbound queue is full is disconnected (`outbox.rs`), so a stalled peer
//! costs the publisher nothing.

use tokio::sync::oneshot;

use super::outbox::Refused;
use super::{Broker, Durable, Sub, SubTx, worth_logging};
use crate::bus::protocol::{self, Envelope, FrameKind};
use crate::metrics::Metrics;
use crate::model::EventKind;
use crate::model::batch::Batch;

impl Sub {
    pub(super) fn new(conn: u64, pattern: String, tx: SubTx) -> Self {
        let kinds = kinds_matching(&pattern);
        Self {
            conn,
            pattern,
            kinds,
            tx,
        }
    }
}

/// What one connection gets of a publish.
enum Part {
    /// A plain publish, as it came.
    Plain(Envelope),
    /// Every event of the published batch.
    Whole,
    /// The events of the kinds it subscribed to.
    Kinds(Batch),
}

impl Part {
    /// The part as a validated batch, for in-process event subscribers.
    fn into_batch(self, whole: Option<&Batch>) -> Option<Batch> {
        match self {
            Part::Plain(_) => None,
            Part::Whole => whole.cloned(),
            Part::Kinds(b) => Some(b),
        }
    }

    /// The part as a `Deliver` frame (the batch copied once into it).
    fn into_envelope(self, whole: Option<&Batch>, correlation_id: u64) -> Envelope {
        let bytes = match self {
            Part::Plain(env) => return env,
            Part::Whole => whole.map(|b| b.as_bytes().to_vec()).unwrap_or_default(),
            Part::Kinds(b) => b.as_bytes().to_vec(),
        };
        let topic = protocol::TOPIC_EVENT_BATCH;
        Envelope::new(FrameKind::Deliver, topic, correlation_id, bytes)
    }
}

impl Broker {
    /// Delivers `env` (a publish) to every connection with a matching
    /// subscription; returns the confirmations of durable subscribers,
    /// which gate the publisher's ack. Process events (`batch`, validated)
    /// go to connections whose patterns match the topic of at least one
    /// kind in it, each getting the kinds it matches: in-process
    /// subscribers as the batch itself, connections as a frame.
    pub(super) async fn route(
        &self,
        env: Envelope,
        batch: Option<Batch>,
    ) -> Vec<oneshot::Receiver<()>> {
        let corr = env.correlation_id;
        let deliveries = match &batch {
            Some(batch) => self.batch_deliveries(batch),
            None => self.plain_deliveries(env),
        };
        let whole = batch.as_ref();
        let mut confirmations = Vec::new();
        for (conn, tx, part) in deliveries {
            match tx {
                SubTx::Local(tx) | SubTx::Server(tx) => {
                    let _ = tx.send(part.into_envelope(whole, corr)).await;
                }
                SubTx::Batches(tx) => {
                    if let Some(batch) = part.into_batch(whole) {
                        let _ = tx.send(batch).await;
                    }
                }
                SubTx::Durable(tx) => {
                    let Some(batch) = part.into_batch(whole) else {
                        continue;
                    };
                    let (done, confirmed) = oneshot::channel();
                    confirmations.push(confirmed);
                    // A failed sink keeps its place: if it is gone, `done`
                    // drops with the message and the publish stays
                    // unacknowledged (kept in the collector's WAL).
                    let _ = tx.send(Durable { batch, done }).await;
                }
                SubTx::Remote(outbox) => {
                    self.push_remote(conn, &outbox, part.into_envelope(whole, corr))
                }
            }
        }
        confirmations
    }

    /// Queues a delivery to a connection; a full queue disconnects it (or,
    /// when all queues together are full, the one holding the most).
    fn push_remote(&self, conn: u64, outbox: &super::outbox::Outbox, deliver: Envelope) {
        let mut pushed = outbox.try_push(deliver);
        if let Err((Refused::BrokerFull, deliver)) = pushed {
            // All queues together are full: the largest goes,
            // and this one (within its own cap) is served.
            match self.largest_queue() {
                Some((hog, queued)) if hog != conn => {
                    self.drop_subscriber(hog, Refused::BrokerFull, queued);
                    pushed = outbox.try_push_over_total(deliver);
                }
                _ => pushed = Err((Refused::BrokerFull, deliver)),
            }
        }
        if let Err((why, _)) = pushed {
            self.drop_subscriber(conn, why, outbox.queued());
        }
    }

    /// One delivery per connection of the kinds of `batch` it subscribed to.
    fn batch_deliveries(&self, batch: &Batch) -> Vec<(u64, SubTx, Part)> {
        let present = batch.kinds();
        let mut wanted: Vec<(u64, SubTx, u8)> = Vec::new();
        for s in self.routes().subs.iter().filter(|s| s.kinds & present != 0) {
            match wanted.iter_mut().find(|(c, _, _)| *c == s.conn) {
                Some(w) => w.2 |= s.kinds & present,
                None => wanted.push((s.conn, s.tx.clone(), s.kinds & present)),
            }
        }
        Metrics::add(&self.inner.stats.published, batch.len() as u64);
        wanted
            .into_iter()
            .filter_map(|(conn, tx, mask)| {
                let part = if mask == present {
                    Part::Whole
                } else {
                    Part::Kinds(batch.filter(|e| mask & (1 << e.kind.as_u8()) != 0)?)
                };
                Some((conn, tx, part))
            })
            .collect()
    }

    /// One delivery of `env` per connection with a matching subscription
    /// (event-only subscribers excepted).
    fn plain_deliveries(&self, mut env: Envelope) -> Vec<(u64, SubTx, Part)> {
        Metrics::incr(&self.inner.stats.published);
        env.kind = FrameKind::Deliver;
        let mut targets: Vec<(u64, SubTx)> = Vec::new();
        for s in &self.routes().subs {
            if matches!(s.tx, SubTx::Durable(_) | SubTx::Batches(_)) {
                continue;
            }
            let matches = protocol::topic_matches(&s.pattern, &env.topic);
            if matches && !targets.iter().any(|(c, _)| *c == s.conn) {
                targets.push((s.conn, s.tx.clone()));
            }
        }
        targets
            .into_iter()
            .map(|(conn, tx)| (conn, tx, Part::Plain(env.clone())))
            .collect()
    }

    /// The open connection with the most bytes queued.
    fn largest_queue(&self) -> Option<(u64, usize)> {
        self.routes()
            .conns
            .iter()
            .filter(|(_, c)| !c.cancel.is_cancelled())
            .map(|(id, c)| (*id, c.outbox.queued()))
            .max_by_key(|(_, q)| *q)
    }

    /// Disconnects a remote subscriber whose queue could not take a
    /// delivery, counting it unless it was already gone.
    fn drop_subscriber(&self, conn: u64, why: Refused, queued: usize) {
        if !self.routes().close(conn) || why == Refused::Closed {
            return;
        }
        let n = self
            .inner
            .stats
            .subscribers_dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if worth_logging(n) {
            let reason = match why {
                Refused::BrokerFull => {
                    "the broker's queued-bytes cap (broker.max_queued_bytes) is reached"
                }
                _ => "its outbound queue is full (broker.max_queued_bytes_per_connection)",
            };
            tracing::warn!(
                conn,
                queued_bytes = queued,
                reason,
                dropped_so_far = n,
                "subscriber disconnected: it does not read what it subscribed to"
            );
        }
    }
}

/// A bit per `EventKind` whose topic `pattern` matches.
pub(super) fn kinds_matching(pattern: &str) -> u8 {
    EventKind::ALL
        .iter()
        .filter(|k| protocol::topic_matches(pattern, &protocol::event_topic(**k)))
        .fold(0, |m, k| m | (1 << k.as_u8()))
}
