//! One admitted peer's connection: its place under the connection caps,
//! its reader loop, and what each frame it sends does.
//!
//! At a cap, the new connection is not refused while the same peer (for
//! the per-uid cap) or anyone (for the total cap) has a connection that
//! holds no collector id: the least recently active of those is closed
//! instead and counted as evicted. A collector's registered connection is
//! never evicted, and an operator always gets in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::outbox::{self, Outbox, OutboxRx};
use super::{Broker, Connection, Inner, Sub, SubTx, worth_logging};
use crate::bus::authz::{Allowed, Claim, Refused, decide};
use crate::bus::peer::PeerId;
use crate::bus::protocol::{self, Envelope, FrameKind, ProtocolError, Published, Status};
use crate::bus::rpc::Registration;
use crate::metrics::Metrics;

/// Acks waiting for durable subscribers, in publish order.
type PendingAcks = mpsc::Sender<(u64, Vec<oneshot::Receiver<()>>)>;
/// Publishes waiting for their ack on one connection; a full queue stops
/// reading that peer (backpressure) instead of growing without bound.
const ACK_QUEUE: usize = 4096;

impl Broker {
    /// Serves an admitted peer's connection (its stream's two halves),
    /// within the connection caps.
    pub(crate) fn admit_peer<R, W>(&self, peer: PeerId, r: R, w: W, shutdown: &CancellationToken)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let conn = self.next_id();
        let cancel = shutdown.child_token();
        let (outbox, outbox_rx) = outbox::channel(self.inner.budget.clone());
        let last_active = Arc::new(AtomicU64::new(self.activity_tick()));
        if let Err(why) = self.make_room(&peer) {
            self.refuse(Some(&peer), why);
            return;
        }
        let entry = Connection {
            cancel: cancel.clone(),
            peer: peer.clone(),
            owner: None,
            outbox: outbox.clone(),
            last_active: last_active.clone(),
        };
        self.routes().conns.insert(conn, entry);
        Metrics::incr(&self.inner.stats.connections);
        let broker = self.clone();
        tokio::spawn(async move {
            tokio::spawn(write_loop(w, outbox_rx, cancel.clone()));
            let reason = broker
                .connection(r, conn, outbox, last_active, cancel.clone())
                .await;
            cancel.cancel();
            broker.forget(conn);
            match reason {
                Ok(()) => tracing::debug!(conn, %peer, "connection closed"),
                // The peer went away mid-stream: a close, not a bad frame.
                Err(ProtocolError::Framing(e)) if is_hang_up(&e) => {
                    tracing::debug!(conn, %peer, error = %e, "connection closed by the peer")
                }
                Err(e) => {
                    let n = broker.inner.stats.frames_rejected.fetch_add(1, Relaxed) + 1;
                    if worth_logging(n) {
                        tracing::warn!(conn, %peer, error = %e, rejected_so_far = n, "connection dropped");
                    }
                }
            }
        });
    }

    /// Frees a cap for `peer`: when it (or everyone) is at the cap, closes
    /// the least recently active connection holding no collector id.
    fn make_room(&self, peer: &PeerId) -> Result<(), &'static str> {
        let limits = &self.inner.limits;
        let mut routes = self.routes();
        let same_peer = routes.conns.values().filter(|c| c.peer == *peer).count();
        let victim_of = |only_peer: bool| {
            routes
                .conns
                .iter()
                .filter(|(_, c)| c.owner.is_none() && !c.cancel.is_cancelled())
                .filter(|(_, c)| !only_peer || c.peer == *peer)
                .min_by_key(|(_, c)| c.last_active.load(Relaxed))
                .map(|(id, _)| *id)
        };
        let victim = if same_peer >= limits.max_connections_per_uid {
            Some(victim_of(true).ok_or("per-uid connection cap reached by registered collectors")?)
        } else if routes.conns.len() >= limits.max_connections {
            Some(victim_of(false).ok_or("connection cap reached by registered collectors")?)
        } else {
            None
        };
        if let Some(victim) = victim {
            // Gone from the count now; its task cleans up the rest.
            routes.close(victim);
            routes.conns.remove(&victim);
            drop(routes);
            let n = self.inner.stats.connections_evicted.fetch_add(1, Relaxed) + 1;
            if worth_logging(n) {
                tracing::warn!(%peer, evicted = victim, evicted_so_far = n, "connection cap reached: closed the least recently active connection without a collector id");
            }
        }
        Ok(())
    }

    /// Everything that routed to a connection that has ended.
    fn forget(&self, conn: u64) {
        let mut routes = self.routes();
        routes.conns.remove(&conn);
        routes.subs.retain(|s| s.conn != conn);
        routes.pending.retain(|_, call| !call.involves(conn));
    }

    async fn connection<R>(
        &self,
        r: R,
        conn: u64,
        outbox: Outbox,
        last_active: Arc<AtomicU64>,
        cancel: CancellationToken,
    ) -> Result<(), ProtocolError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let mut reader = FramedRead::new(r, protocol::frame_codec());
        let acks = spawn_acker(outbox.clone(), self.inner.clone());
        // On the agent's broker a peer must do something (register,
        // subscribe, publish, call) before the idle timeout.
        let mut active = !self.inner.require_registration;
        let idle = tokio::time::sleep(self.inner.limits.idle_timeout());
        tokio::pin!(idle);
        loop {
            let frame = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                () = &mut idle, if !active => {
                    Metrics::incr(&self.inner.stats.idle_closed);
                    tracing::debug!(conn, "connection closed: idle since it connected");
                    return Ok(());
                }
                frame = reader.next() => frame,
            };
            let Some(frame) = frame else { return Ok(()) };
            let envelope = protocol::decode(&frame?)?;
            active = true;
            last_active.store(self.activity_tick(), Relaxed);
            self.handle(envelope, conn, &outbox, &acks).await?;
        }
    }

    async fn handle(
        &self,
        env: Envelope,
        conn: u64,
        outbox: &Outbox,
        acks: &PendingAcks,
    ) -> Result<(), ProtocolError> {
        match env.kind {
            FrameKind::Publish => self.publish(env, conn, outbox, acks).await?,
            FrameKind::Subscribe => self.subscribe(env, conn, outbox).await?,
            FrameKind::Request => self.request(env, conn, outbox).await?,
            FrameKind::Response => self.complete_request(env, Some(conn)),
            FrameKind::Ack | FrameKind::Deliver | FrameKind::Error => {
                return Err(ProtocolError::Envelope {
                    len: env.payload.len(),
                    reason: format!("{:?} frames are sent by the broker, not to it", env.kind),
                });
            }
        }
        Ok(())
    }

    async fn publish(
        &self,
        mut env: Envelope,
        conn: u64,
        outbox: &Outbox,
        acks: &PendingAcks,
    ) -> Result<(), ProtocolError> {
        let published = protocol::validate_publish(&env)?;
        if let Err(why) = self.authorize(conn, &mut env, published.as_ref()) {
            let n = self.inner.stats.publishes_refused.fetch_add(1, Relaxed) + 1;
            if worth_logging(n) {
                tracing::warn!(conn, topic = %env.topic, reason = %why, refused_so_far = n, "publish refused");
            }
            let refusal =
                Envelope::error(env.correlation_id, Status::InvalidRequest, &why.to_string());
            let _ = outbox.push(refusal).await;
            return Ok(());
        }
        let corr = env.correlation_id;
        let confirmations = self.route(env, published.map(|p| p.batch)).await;
        let _ = acks.send((corr, confirmations)).await;
        Ok(())
    }

    async fn subscribe(
        &self,
        env: Envelope,
        conn: u64,
        outbox: &Outbox,
    ) -> Result<(), ProtocolError> {
        protocol::validate_topic(&env.topic, true)?;
        let held = self.routes().subs.iter().filter(|s| s.conn == conn).count();
        if held >= self.inner.limits.max_subscriptions_per_connection {
            Metrics::incr(&self.inner.stats.subscriptions_refused);
            tracing::warn!(conn, held, "subscription refused: per-connection limit");
            let refusal = Envelope::error(
                env.correlation_id,
                Status::Busy,
                "subscription limit reached",
            );
            let _ = outbox.push(refusal).await;
            return Ok(());
        }
        self.routes()
            .subs
            .push(Sub::new(conn, env.topic, SubTx::Remote(outbox.clone())));
        let _ = outbox.push(Envelope::ack(env.correlation_id)).await;
        Ok(())
    }

    /// Applies `bus/authz.rs` to a remote publish, updating the connection's
    /// binding when it registers or deregisters; a registration leaves here
    /// without its credential.
    fn authorize(
        &self,
        conn: u64,
        env: &mut Envelope,
        published: Option<&Published>,
    ) -> Result<(), Refused> {
        if !self.inner.require_registration {
            return Ok(());
        }
        let mut routes = self.routes();
        let held = routes.owner(conn).map(str::to_owned);
        let collectors = published.map(|p| p.collectors.as_slice());
        let decision = decide(
            &env.topic,
            &env.payload,
            collectors,
            held.as_deref(),
            |id, credential| Claim {
                held_elsewhere: routes
                    .conns
                    .iter()
                    .any(|(c, x)| *c != conn && x.owner.as_deref() == Some(id)),
                credential_ok: self.inner.credentials.check(id, credential),
            },
        )?;
        let id = match decision {
            Allowed::Publish => return Ok(()),
            Allowed::Unbind => {
                if let Some(c) = routes.conns.get_mut(&conn) {
                    c.owner = None;
                }
                return Ok(());
            }
            Allowed::Bind(id) => id,
            Allowed::Takeover(id) => {
                let stale: Vec<u64> = routes
                    .conns
                    .iter()
                    .filter(|(c, x)| **c != conn && x.owner.as_deref() == Some(id.as_str()))
                    .map(|(c, _)| *c)
                    .collect();
                for c in &stale {
                    routes.close(*c);
                }
                Metrics::incr(&self.inner.stats.takeovers);
                tracing::warn!(collector = %id, stale = ?stale, "collector registered with a fresh credential: closed the stale connection that held its id");
                id
            }
        };
        if let Some(c) = routes.conns.get_mut(&conn) {
            c.owner = Some(id);
        }
        drop(routes);
        // Subscribers see the registration, never the credential.
        if let Ok(reg) = serde_json::from_slice::<Registration>(&env.payload) {
            env.payload = crate::bus::rpc::to_payload(&reg.without_credential());
        }
        Ok(())
    }
}

/// Whether a read error only says that the peer hung up.
fn is_hang_up(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
}

/// Writes what the broker queued for the peer until the connection ends.
async fn write_loop<W>(w: W, mut rx: OutboxRx, cancel: CancellationToken)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut writer = FramedWrite::new(w, protocol::frame_codec());
    loop {
        let env = tokio::select! {
            _ = cancel.cancelled() => break,
            env = rx.recv() => match env { Some(e) => e, None => break },
        };
        let sent = match protocol::encode(&env) {
            Ok(bytes) => writer.send(bytes).await.map_err(ProtocolError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "write to peer failed");
            cancel.cancel();
            break;
        }
    }
}

/// Acknowledges publishes in order, each once its durable subscribers have
/// stored it. A subscriber that fails leaves the publish unacknowledged:
/// the collector keeps it in its WAL and sends it again after reconnecting.
fn spawn_acker(outbox: Outbox, inner: Arc<Inner>) -> PendingAcks {
    let (acks, mut pending) = mpsc::channel::<(u64, Vec<oneshot::Receiver<()>>)>(ACK_QUEUE);
    tokio::spawn(async move {
        while let Some((corr, confirmations)) = pending.recv().await {
            let mut stored = true;
            for c in confirmations {
                stored &= c.await.is_ok();
            }
            if !stored {
                let n = inner.stats.unstored.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(
                        correlation_id = corr,
                        unstored = n,
                        "a sink did not store the event: not acknowledging it (it stays in the collector's WAL)"
                    );
                }
                continue;
            }
            if outbox.push(Envelope::ack(corr)).await.is_err() {
                break;
            }
        }
    });
    acks
}
