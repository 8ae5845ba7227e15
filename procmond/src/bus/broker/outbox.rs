//! A connection's outbound queue, bounded in frames and in bytes.
//!
//! Every frame the broker sends a peer (deliveries, acks, RPC requests and
//! responses) waits here until the connection's writer takes it. A peer that
//! subscribes and never reads must not grow the agent without bound: each
//! queue counts the bytes it holds against the connection's cap, and all
//! queues together against the broker's. Deliveries never wait for room
//! (`try_push`): a full queue means the subscriber is too slow and the
//! caller drops it, so no publisher ever waits on another peer. Only frames
//! a peer gets in answer to its own frames (acks, refusals) wait (`push`):
//! a peer that does not read its acks slows itself down, no one else.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tokio::sync::mpsc;

use crate::bus::protocol::Envelope;

/// Frames one connection may have queued, whatever their size.
const QUEUE_FRAMES: usize = 1024;

/// The broker-wide byte budget of all outbound queues.
#[derive(Debug)]
pub(super) struct Budget {
    total: AtomicUsize,
    pub(super) per_connection: usize,
    pub(super) max_total: usize,
}

impl Budget {
    pub(super) fn new(per_connection: usize, max_total: usize) -> Self {
        Self {
            total: AtomicUsize::new(0),
            per_connection,
            max_total,
        }
    }

    /// Bytes queued on every connection together.
    pub(super) fn total(&self) -> usize {
        self.total.load(Relaxed)
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The connection's own byte or frame cap.
    ConnectionFull,
    /// All queues together hold the broker's cap.
    BrokerFull,
    /// The connection is gone.
    Closed,
}

/// The sending side, cloned into routes and pending calls.
#[derive(Debug, Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Envelope>,
    queued: Arc<AtomicUsize>,
    budget: Arc<Budget>,
}

/// The writer's side; what it still holds when dropped is released.
#[derive(Debug)]
pub(super) struct OutboxRx {
    rx: mpsc::Receiver<Envelope>,
    queued: Arc<AtomicUsize>,
    budget: Arc<Budget>,
}

/// What a queued frame counts for: its payload and topic plus the
/// envelope's fixed fields.
fn cost(env: &Envelope) -> usize {
    env.payload.len() + env.topic.len() + 48
}

pub(super) fn channel(budget: Arc<Budget>) -> (Outbox, OutboxRx) {
    let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
    let queued = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox {
        tx,
        queued: queued.clone(),
        budget: budget.clone(),
    };
    (outbox, OutboxRx { rx, queued, budget })
}

impl Outbox {
    /// Bytes this connection has queued.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    fn reserve(&self, n: usize) -> (usize, usize) {
        let mine = self.queued.fetch_add(n, Relaxed) + n;
        let total = self.budget.total.fetch_add(n, Relaxed) + n;
        (mine, total)
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Relaxed);
        self.budget.total.fetch_sub(n, Relaxed);
    }

    /// Queues `env` if it fits both caps and the frame queue has room;
    /// never waits. A refused frame comes back with the reason.
    pub(super) fn try_push(&self, env: Envelope) -> Result<(), (Refused, Envelope)> {
        self.push_within(env, true)
    }

    /// `try_push` without the broker-wide cap, for a connection whose own
    /// queue is within its cap while the broker sheds the largest queue.
    pub(super) fn try_push_over_total(&self, env: Envelope) -> Result<(), (Refused, Envelope)> {
        self.push_within(env, false)
    }

    fn push_within(&self, env: Envelope, total_cap: bool) -> Result<(), (Refused, Envelope)> {
        let n = cost(&env);
        let (mine, total) = self.reserve(n);
        let result = if mine > self.budget.per_connection {
            Err((Refused::ConnectionFull, env))
        } else if total_cap && total > self.budget.max_total {
            Err((Refused::BrokerFull, env))
        } else {
            self.tx.try_send(env).map_err(|e| match e {
                mpsc::error::TrySendError::Full(env) => (Refused::ConnectionFull, env),
                mpsc::error::TrySendError::Closed(env) => (Refused::Closed, env),
            })
        };
        if result.is_err() {
            self.release(n);
        }
        result
    }

    /// Queues a frame the peer gets in answer to its own (an ack, a
    /// refusal), waiting for room in the frame queue: counted, not capped.
    pub(super) async fn push(&self, env: Envelope) -> Result<(), Refused> {
        let n = cost(&env);
        self.reserve(n);
        self.tx.send(env).await.map_err(|_| {
            self.release(n);
            Refused::Closed
        })
    }
}

impl OutboxRx {
    /// The next frame to write; its bytes leave the budget.
    pub(super) async fn recv(&mut self) -> Option<Envelope> {
        let env = self.rx.recv().await?;
        self.release(cost(&env));
        Some(env)
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Relaxed);
        self.budget.total.fetch_sub(n, Relaxed);
    }
}

impl Drop for OutboxRx {
    fn drop(&mut self) {
        // Nothing more can be queued once closed; what is left is released.
        self.rx.close();
        while let Ok(env) = self.rx.try_recv() {
            self.release(cost(&env));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::protocol::FrameKind;

    fn frame(bytes: usize) -> Envelope {
        Envelope::new(FrameKind::Deliver, "t", 0, vec![0; bytes])
    }

    #[tokio::test]
    async fn caps_hold_and_bytes_come_back() {
        let budget = Arc::new(Budget::new(10_000, 15_000));
        let (a, mut a_rx) = channel(budget.clone());
        let (b, b_rx) = channel(budget.clone());
        a.try_push(frame(4_000)).expect("fits");
        a.try_push(frame(4_000)).expect("fits");
        let why = |r: Result<(), (Refused, Envelope)>| r.err().map(|e| e.0);
        assert_eq!(why(a.try_push(frame(4_000))), Some(Refused::ConnectionFull));
        b.try_push(frame(4_000)).expect("fits");
        // 16 KiB would be queued in all: the broker's cap refuses it, unless
        // the broker is shedding another queue for it.
        assert_eq!(why(b.try_push(frame(4_000))), Some(Refused::BrokerFull));
        b.try_push_over_total(frame(4_000))
            .expect("within b's own cap");
        assert_eq!(
            why(b.try_push_over_total(frame(4_000))),
            Some(Refused::ConnectionFull)
        );
        rx_take(&mut a_rx).await;
        assert_eq!(budget.total(), 3 * cost(&frame(4_000)));
        // The writer took one of a's: its bytes are free again.
        assert_eq!(a.queued(), cost(&frame(4_000)));
        // A connection that goes away releases everything it held.
        drop(b_rx);
        assert_eq!(b.queued(), 0);
        assert_eq!(budget.total(), a.queued());
        assert_eq!(why(b.try_push(frame(1))), Some(Refused::Closed));
        assert_eq!(budget.total(), a.queued());
    }

    async fn rx_take(rx: &mut OutboxRx) {
        rx.recv().await.expect("queued");
    }

    #[tokio::test]
    async fn acks_wait_for_room_but_are_counted() {
        let budget = Arc::new(Budget::new(100, 100));
        let (a, mut rx) = channel(budget.clone());
        a.push(frame(200)).await.expect("queued beyond the cap");
        assert!(budget.total() > 100);
        assert!(matches!(
            a.try_push(frame(1)),
            Err((Refused::ConnectionFull, _))
        ));
        rx.recv().await.expect("frame");
        assert_eq!(budget.total(), 0);
    }
}
