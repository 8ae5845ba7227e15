//! RPCs through the broker: which topics take requests, who serves them,
//! and whose answer counts.
//!
//! * Only RPC topics take requests: `control.agent` (served in-process by
//!   the agent) and `control.collector.<id>` (served by the connection
//!   holding `<id>` on the agent's broker). Requests to any other topic —
//!   heartbeats, registration, lifecycle, events — are refused, so no
//!   request reaches a handler that expects publishes.
//! * Each call gets a broker-assigned id and remembers the connection it
//!   went to; a response counts only from that connection.
//! * A call ends at its answer or its deadline, whichever is first; its
//!   deadline timer is cancelled when the answer comes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::outbox::Outbox;
use super::{Broker, SubTx, worth_logging};
use crate::bus::protocol::{self, Envelope, FrameKind, ProtocolError, Status, TOPIC_AGENT};
use crate::metrics::Metrics;

/// Default RPC deadline when a request carries none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// Who waits for an answer.
#[derive(Debug)]
pub(super) enum Reply {
    Remote {
        outbox: Outbox,
        corr: u64,
        /// The asking connection (its pending calls are capped).
        conn: u64,
    },
    Local(oneshot::Sender<Envelope>),
}

/// A call in flight.
#[derive(Debug)]
pub(super) struct Call {
    reply: Reply,
    /// The connection serving it; `None` for an in-process server.
    server: Option<u64>,
    timer: Option<AbortHandle>,
}

impl Call {
    /// Whether `conn` asked or serves this call.
    pub(super) fn involves(&self, conn: u64) -> bool {
        self.server == Some(conn) || self.asked_by(conn)
    }

    fn asked_by(&self, conn: u64) -> bool {
        matches!(self.reply, Reply::Remote { conn: c, .. } if c == conn)
    }
}

/// What serves an RPC topic.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Agent,
    Collector(&'a str),
}

fn rpc_target(topic: &str) -> Option<Target<'_>> {
    if topic == TOPIC_AGENT {
        return Some(Target::Agent);
    }
    let id = topic.strip_prefix("control.collector.")?;
    let reserved = [protocol::TOPIC_LIFECYCLE, protocol::TOPIC_REGISTRATION];
    (!reserved.contains(&topic) && protocol::is_topic_segment(id)).then_some(Target::Collector(id))
}

impl Broker {
    /// A request from a remote peer: checked, capped, then dispatched.
    pub(super) async fn request(
        &self,
        env: Envelope,
        conn: u64,
        outbox: &Outbox,
    ) -> Result<(), ProtocolError> {
        protocol::validate_topic(&env.topic, false)?;
        let corr = env.correlation_id;
        let refuse = |status, why: &str| Envelope::response(corr, status, why.as_bytes().to_vec());
        if rpc_target(&env.topic).is_none() {
            let n = self.inner.stats.requests_refused.fetch_add(1, Relaxed) + 1;
            if worth_logging(n) {
                tracing::warn!(conn, topic = %env.topic, refused_so_far = n, "request refused: not an RPC topic");
            }
            let _ = outbox
                .push(refuse(Status::InvalidRequest, "not an RPC topic"))
                .await;
            return Ok(());
        }
        if self.inner.require_registration {
            let peer = self.routes().conns.get(&conn).map(|c| c.peer.clone());
            let peer = peer.unwrap_or(crate::bus::peer::PeerId::Uid(u32::MAX));
            if let Err(why) = crate::bus::authz::decide_call(
                &env.topic,
                &env.payload,
                peer.clone(),
                &self.inner.operators,
            ) {
                let n = self.inner.stats.calls_unauthorized.fetch_add(1, Relaxed) + 1;
                if worth_logging(n) {
                    tracing::warn!(conn, %peer, topic = %env.topic, reason = %why, "operator call refused");
                }
                let _ = outbox
                    .push(refuse(Status::InvalidRequest, &why.to_string()))
                    .await;
                return Ok(());
            }
        }
        let waiting = self
            .routes()
            .pending
            .values()
            .filter(|c| c.asked_by(conn))
            .count();
        if waiting >= self.inner.limits.max_pending_rpcs_per_connection {
            Metrics::incr(&self.inner.stats.rpcs_refused);
            tracing::warn!(
                conn,
                waiting,
                "RPC refused: per-connection limit of pending calls"
            );
            let _ = outbox
                .push(refuse(Status::Busy, "too many calls pending"))
                .await;
            return Ok(());
        }
        let reply = Reply::Remote {
            outbox: outbox.clone(),
            corr,
            conn,
        };
        self.dispatch_request(env, reply);
        Ok(())
    }

    /// Finds the server of `env.topic`, sends it the request under a new
    /// id and starts the deadline; answers `unavailable` / `busy` at once
    /// when no one can take it.
    pub(super) fn dispatch_request(&self, mut env: Envelope, reply: Reply) {
        let id = self.next_id();
        env.correlation_id = id;
        let requested = (env.deadline_unix_ms != 0).then(|| {
            let now = (crate::clock::now_unix_ns() / 1_000_000).max(0) as u64;
            Duration::from_millis(env.deadline_unix_ms.saturating_sub(now))
        });
        let deadline = self.inner.limits.rpc_deadline(requested, DEFAULT_DEADLINE);
        let mut routes = self.routes();
        let Some((server, tx)) = self.server_of(&routes, &env.topic) else {
            drop(routes);
            let msg = b"no one serves this topic".to_vec();
            return answer(reply, Envelope::response(0, Status::Unavailable, msg));
        };
        let sent = match &tx {
            SubTx::Remote(outbox) => outbox.try_push(env).is_ok(),
            SubTx::Server(tx) => tx.try_send(env).is_ok(),
            SubTx::Local(_) | SubTx::Durable(_) | SubTx::Batches(_) => false,
        };
        if !sent {
            drop(routes);
            let msg = b"the server's queue is full".to_vec();
            return answer(reply, Envelope::response(0, Status::Busy, msg));
        }
        let broker = self.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            broker.finish(
                id,
                None,
                Envelope::response(0, Status::Timeout, b"deadline passed".to_vec()),
            );
        });
        let call = Call {
            reply,
            server,
            timer: Some(timer.abort_handle()),
        };
        routes.pending.insert(id, call);
    }

    /// The connection (or in-process server) that serves `topic`.
    fn server_of(&self, routes: &super::Routes, topic: &str) -> Option<(Option<u64>, SubTx)> {
        let target = rpc_target(topic)?;
        routes
            .subs
            .iter()
            .filter(|s| protocol::topic_matches(&s.pattern, topic))
            .find_map(|s| match (&s.tx, &target) {
                (SubTx::Server(_), _) => Some((None, s.tx.clone())),
                (SubTx::Remote(_), Target::Collector(id)) => {
                    let serves =
                        !self.inner.require_registration || routes.owner(s.conn) == Some(*id);
                    serves.then(|| (Some(s.conn), s.tx.clone()))
                }
                _ => None,
            })
    }

    /// A response to call `id`, from connection `from` (`None`: in-process).
    pub(super) fn complete_request(&self, env: Envelope, from: Option<u64>) {
        let id = env.correlation_id;
        self.finish(id, Some(from), env);
    }

    /// Sends `response` to whoever waits on call `id`, if anyone still
    /// does and `from` is its server (`None` = the deadline passed).
    pub(super) fn finish(&self, id: u64, from: Option<Option<u64>>, response: Envelope) {
        let mut routes = self.routes();
        let accepted = match (routes.pending.get(&id), from) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(call), Some(server)) => call.server == server,
        };
        if !accepted {
            drop(routes);
            if from.is_some_and(|f| f.is_some()) {
                let n = self.inner.stats.responses_refused.fetch_add(1, Relaxed) + 1;
                if worth_logging(n) {
                    tracing::warn!(
                        call = id,
                        refused_so_far = n,
                        "response refused: not from the connection the request went to"
                    );
                }
            }
            return;
        }
        let Some(call) = routes.pending.remove(&id) else {
            return;
        };
        drop(routes);
        if let Some(timer) = call.timer {
            timer.abort();
        }
        answer(call.reply, response);
    }
}

fn answer(reply: Reply, mut response: Envelope) {
    response.kind = FrameKind::Response;
    match reply {
        Reply::Remote { outbox, corr, .. } => {
            response.correlation_id = corr;
            let _ = outbox.try_push(response);
        }
        Reply::Local(tx) => {
            let _ = tx.send(response);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rpc_topics_take_requests() {
        assert_eq!(rpc_target(TOPIC_AGENT), Some(Target::Agent));
        assert_eq!(
            rpc_target("control.collector.procmond"),
            Some(Target::Collector("procmond"))
        );
        for not_rpc in [
            protocol::TOPIC_LIFECYCLE,
            protocol::TOPIC_REGISTRATION,
            "control.health.heartbeat.procmond",
            "events.process.exec",
            "events.process",
            "control.collector",
            "app.echo",
        ] {
            assert_eq!(rpc_target(not_rpc), None, "{not_rpc}");
        }
    }
}
