//! The broker's in-process side: the agent's own subscribers (sinks, its
//! registration and heartbeat handlers, `watch`'s stdout writer), its
//! broadcasts and its RPCs. No socket, no admission, no authorization:
//! these are the agent itself.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::call::Reply;
use super::{Broker, Durable, Sub, SubTx};
use crate::bus::protocol::{self, Envelope, FrameKind, ProtocolError, Status};
use crate::model::batch::Batch;

impl Broker {
    /// Subscribes an in-process consumer; never dropped for slowness, and
    /// publishers are acknowledged once a delivery is queued to it.
    pub fn subscribe_local(
        &self,
        pattern: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Envelope>, ProtocolError> {
        let (tx, rx) = mpsc::channel(capacity);
        self.add_local(pattern, SubTx::Local(tx))?;
        Ok(rx)
    }

    /// Serves the requests on `topic` in-process (the agent's own RPC);
    /// answer each with `respond`. Publishes on it are delivered too.
    pub fn serve_local(
        &self,
        topic: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Envelope>, ProtocolError> {
        let (tx, rx) = mpsc::channel(capacity);
        self.add_local(topic, SubTx::Server(tx))?;
        Ok(rx)
    }

    /// Subscribes an in-process consumer that stores what it gets (a sink):
    /// publishers are acknowledged only after it confirms each delivery.
    /// It gets the process events `pattern` matches, as the batches the
    /// broker validated.
    pub fn subscribe_durable(
        &self,
        pattern: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Durable>, ProtocolError> {
        let (tx, rx) = mpsc::channel(capacity);
        self.add_events(pattern, SubTx::Durable(tx))?;
        Ok(rx)
    }

    /// Subscribes an in-process reader of process events (`watch`'s
    /// writer): never dropped, publishers acknowledged once a batch is
    /// queued to it; it gets the batches the broker validated.
    pub fn subscribe_batches(
        &self,
        pattern: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Batch>, ProtocolError> {
        let (tx, rx) = mpsc::channel(capacity);
        self.add_events(pattern, SubTx::Batches(tx))?;
        Ok(rx)
    }

    /// A subscription that takes process events only: its pattern must
    /// match the topic of at least one kind.
    fn add_events(&self, pattern: &str, tx: SubTx) -> Result<(), ProtocolError> {
        protocol::validate_topic(pattern, true)?;
        if super::route::kinds_matching(pattern) == 0 {
            return Err(ProtocolError::Topic {
                topic: pattern.to_string(),
                reason: "matches no process-event topic (this subscriber takes events only)",
            });
        }
        self.add_local(pattern, tx)
    }

    fn add_local(&self, pattern: &str, tx: SubTx) -> Result<(), ProtocolError> {
        protocol::validate_topic(pattern, true)?;
        let conn = self.next_id();
        self.routes()
            .subs
            .push(Sub::new(conn, pattern.to_string(), tx));
        Ok(())
    }

    /// Answers a request that an in-process subscriber received.
    pub fn respond(&self, request: &Envelope, status: Status, payload: Vec<u8>) {
        self.complete_request(
            Envelope::response(request.correlation_id, status, payload),
            None,
        );
    }

    /// Drops every in-process subscription: their receivers drain and end.
    pub fn close_local(&self) {
        self.routes()
            .subs
            .retain(|s| matches!(s.tx, SubTx::Remote(_)));
    }

    /// Publishes from inside the broker's process (agent broadcasts).
    pub async fn publish_local(&self, topic: &str, payload: Vec<u8>) -> Result<(), ProtocolError> {
        let env = Envelope::new(FrameKind::Publish, topic, 0, payload);
        let published = protocol::validate_publish(&env)?;
        let _ = self.route(env, published.map(|p| p.batch)).await;
        Ok(())
    }

    /// An RPC from inside the broker's process; a `Response` envelope always
    /// comes back (`timeout` / `unavailable` when no one answered).
    pub async fn request_local(
        &self,
        topic: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Envelope {
        let (tx, rx) = oneshot::channel();
        let mut env = Envelope::new(FrameKind::Request, topic, 0, payload);
        let deadline = crate::clock::now_unix_ns() / 1_000_000 + timeout.as_millis() as i64;
        env.deadline_unix_ms = deadline.max(0) as u64;
        self.dispatch_request(env, Reply::Local(tx));
        match tokio::time::timeout(timeout + Duration::from_millis(100), rx).await {
            Ok(Ok(resp)) => resp,
            _ => Envelope::response(0, Status::Timeout, b"deadline passed".to_vec()),
        }
    }
}
