//! The broker: a Unix-socket server in the agent (and embedded in `watch`)
//! that routes frames by topic.
//!
//! * Who may connect: the peer's uid (SO_PEERCRED) must be the broker's own
//!   or in `allowed_uids`; the socket file is 0660. On Windows the peer's
//!   user SID must be the broker's own or in `allowed_sids`, and the pipe's
//!   DACL admits no one else (`bus/pipe.rs`).
//! * Publishes are validated, delivered to every matching subscriber, then
//!   acknowledged — the ack is what lets a collector drop the event from its
//!   WAL. A subscriber that cannot keep up blocks delivery (backpressure
//!   reaches the collector); a remote one stalled for `SLOW_SUBSCRIBER` is
//!   disconnected, logged and counted. In-process sinks are never dropped.
//! * Requests are routed to the topic's subscriber with a broker-assigned
//!   correlation id and answered `timeout` when the deadline passes.
//! * A bad frame (oversized, truncated, not an envelope, an invalid event)
//!   drops that connection with the reason logged; nothing else is affected.
//! * On the agent's broker, `bus/authz.rs` decides what a peer may publish
//!   and call, and `bus/limits.rs` what it may hold.
//!
//! Here: connections and frame handling. `route.rs` decides who gets a
//! publish, `local.rs` is the agent's in-process side, `socket.rs` binds the
//! socket file; `bus/pipe.rs` is the Windows listener. Both hand each
//! admitted peer's stream halves to `admit_peer`, so frames, routing and
//! limits do not depend on the transport.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::authz::Operators;
use super::limits::BrokerLimits;
use super::peer::PeerId;
use super::protocol::{self, Envelope, FrameKind, ProtocolError, Status};
use crate::metrics::Metrics;

mod local;
mod route;
#[cfg(unix)]
mod socket;

/// How long a remote subscriber may block delivery before it is dropped.
const SLOW_SUBSCRIBER: Duration = Duration::from_secs(5);
/// Default RPC deadline when a request carries none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
const CONNECTION_QUEUE: usize = 1024;

/// Broker-side counters (reach `ctl health`).
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub connections: AtomicU64,
    pub connections_refused: AtomicU64,
    pub frames_rejected: AtomicU64,
    /// Remote subscribers disconnected for blocking delivery (what they
    /// would have received is lost to them).
    pub subscribers_dropped: AtomicU64,
    pub published: AtomicU64,
    /// Publishes left unacknowledged because a sink did not store them.
    pub unstored: AtomicU64,
    /// Publishes refused by the authorization rules (`bus/authz.rs`).
    pub publishes_refused: AtomicU64,
    /// Subscriptions refused: the connection held its cap (`bus/limits.rs`).
    pub subscriptions_refused: AtomicU64,
    /// RPCs refused: the connection had its cap waiting.
    pub rpcs_refused: AtomicU64,
    /// Connections closed for doing nothing within the idle timeout.
    pub idle_closed: AtomicU64,
    /// Operator calls refused by `broker.operators` (`bus/authz.rs`).
    pub calls_unauthorized: AtomicU64,
}

impl BrokerStats {
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Relaxed);
        serde_json::json!({
            "connections": get(&self.connections),
            "connections_refused": get(&self.connections_refused),
            "frames_rejected": get(&self.frames_rejected),
            "subscribers_dropped": get(&self.subscribers_dropped),
            "published": get(&self.published),
            "unstored": get(&self.unstored),
            "publishes_refused": get(&self.publishes_refused),
            "subscriptions_refused": get(&self.subscriptions_refused),
            "rpcs_refused": get(&self.rpcs_refused),
            "idle_closed": get(&self.idle_closed),
            "calls_unauthorized": get(&self.calls_unauthorized),
        })
    }
}

/// A delivery to a durable in-process subscriber (a sink): the publisher
/// is acknowledged only once `done` is sent, i.e. once the event is stored.
#[derive(Debug)]
pub struct Durable {
    pub envelope: Envelope,
    pub done: oneshot::Sender<()>,
}

#[derive(Debug, Clone)]
enum SubTx {
    /// A client connection; dropped if it blocks delivery too long.
    Remote(mpsc::Sender<Envelope>),
    /// In-process, never dropped, acknowledged on queueing.
    Local(mpsc::Sender<Envelope>),
    /// In-process, never dropped, acknowledged when it confirms.
    Durable(mpsc::Sender<Durable>),
}

impl SubTx {
    /// Where requests can go (durable subscribers take only publishes).
    fn requests(&self) -> Option<mpsc::Sender<Envelope>> {
        match self {
            Self::Remote(tx) | Self::Local(tx) => Some(tx.clone()),
            Self::Durable(_) => None,
        }
    }
}

#[derive(Debug)]
struct Sub {
    conn: u64,
    pattern: String,
    tx: SubTx,
}

/// Acks waiting for durable subscribers, in publish order.
type PendingAcks = mpsc::Sender<(u64, Vec<oneshot::Receiver<()>>)>;
/// Publishes waiting for their ack on one connection; a full queue stops
/// reading that peer (backpressure) instead of growing without bound.
const ACK_QUEUE: usize = 4096;

#[derive(Debug)]
enum Pending {
    Remote {
        tx: mpsc::Sender<Envelope>,
        corr: u64,
        /// The asking connection (its pending RPCs are capped and freed
        /// when it goes).
        conn: u64,
    },
    Local(oneshot::Sender<Envelope>),
}

#[derive(Debug, Default)]
struct Routes {
    subs: Vec<Sub>,
    pending: HashMap<u64, Pending>,
    conns: HashMap<u64, CancellationToken>,
    /// Connection → the collector id it registered (`bus/authz.rs`).
    owners: HashMap<u64, String>,
    /// Connection → its peer (per-uid / per-SID connection cap).
    peers: HashMap<u64, PeerId>,
}

#[derive(Debug)]
struct Inner {
    routes: Mutex<Routes>,
    #[cfg_attr(windows, allow(dead_code))]
    allowed_uids: Vec<u32>,
    /// Windows: the user SIDs admitted.
    allowed_sids: Vec<String>,
    /// Enforce `bus/authz.rs` on remote publishes and close idle
    /// connections (the agent's broker).
    require_registration: bool,
    limits: BrokerLimits,
    operators: Operators,
    next_id: AtomicU64,
    stats: BrokerStats,
}

/// A cheap handle to one broker.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// `allowed_uids` may connect besides the broker's own user; every
    /// admitted peer may publish anything (a private broker, as in `watch`).
    pub fn new(allowed_uids: Vec<u32>) -> Self {
        // Windows: the private broker admits this account only.
        #[cfg(windows)]
        let own: Vec<String> = crate::sys::windows::own_user_sid()
            .ok()
            .into_iter()
            .collect();
        #[cfg(not(windows))]
        let own = Vec::new();
        Self::build(
            allowed_uids,
            own,
            false,
            BrokerLimits::default(),
            Operators::default(),
        )
    }

    /// The agent's broker: peers publish only what `bus/authz.rs` allows
    /// (events and heartbeats for the collector id they registered; control
    /// topics are the agent's), within `limits`.
    pub fn with_registration(
        allowed_uids: Vec<u32>,
        limits: BrokerLimits,
        operators: Operators,
    ) -> Self {
        Self::build(allowed_uids, Vec::new(), true, limits, operators)
    }

    /// The agent's broker on Windows: peers are admitted by user SID,
    /// exactly those in `allowed_sids` (the agent adds its own).
    pub fn with_registration_sids(
        allowed_sids: Vec<String>,
        limits: BrokerLimits,
        operators: Operators,
    ) -> Self {
        Self::build(Vec::new(), allowed_sids, true, limits, operators)
    }

    /// The user SIDs admitted (Windows).
    pub fn allowed_sids(&self) -> &[String] {
        &self.inner.allowed_sids
    }

    fn build(
        allowed_uids: Vec<u32>,
        allowed_sids: Vec<String>,
        require_registration: bool,
        limits: BrokerLimits,
        operators: Operators,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                routes: Mutex::new(Routes::default()),
                allowed_uids,
                allowed_sids,
                require_registration,
                limits,
                operators,
                next_id: AtomicU64::new(1),
                stats: BrokerStats::default(),
            }),
        }
    }

    pub fn stats(&self) -> &BrokerStats {
        &self.inner.stats
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic while holding the lock cannot leave routes inconsistent
        // (every update is a single push/remove), so poisoning is ignored.
        self.inner.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Relaxed)
    }

    /// Accepts connections until `shutdown`.
    #[cfg(unix)]
    pub async fn serve(&self, listener: UnixListener, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => self.admit(stream, &shutdown),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        self.close_connections();
    }

    /// Cancels every live connection (the listener has stopped).
    pub(crate) fn close_connections(&self) {
        let conns: Vec<_> = self.routes().conns.values().cloned().collect();
        conns.iter().for_each(CancellationToken::cancel);
    }

    /// Counts and logs a peer refused before it got a connection.
    #[cfg(windows)]
    pub(crate) fn refuse(&self, peer: Option<&PeerId>, why: &str) {
        Metrics::incr(&self.inner.stats.connections_refused);
        match peer {
            Some(peer) => tracing::warn!(%peer, reason = why, "connection refused"),
            None => tracing::warn!(reason = why, "connection refused"),
        }
    }

    #[cfg(unix)]
    fn admit(&self, stream: UnixStream, shutdown: &CancellationToken) {
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                Metrics::incr(&self.inner.stats.connections_refused);
                tracing::warn!(error = %e, "connection refused: no peer credentials");
                return;
            }
        };
        // The agent's own user changes when it drops privileges: ask each time.
        if uid != own_uid() && !self.inner.allowed_uids.contains(&uid) {
            Metrics::incr(&self.inner.stats.connections_refused);
            tracing::warn!(uid, allowed = ?self.inner.allowed_uids, "connection refused: uid not in broker.allowed_uids");
            return;
        }
        let (r, w) = stream.into_split();
        self.admit_peer(PeerId::Uid(uid), r, w, shutdown);
    }

    /// Serves an admitted peer's connection (its stream's two halves),
    /// within the connection caps.
    pub(crate) fn admit_peer<R, W>(&self, peer: PeerId, r: R, w: W, shutdown: &CancellationToken)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let conn = self.next_id();
        let cancel = shutdown.child_token();
        {
            let mut routes = self.routes();
            let limits = &self.inner.limits;
            let same_peer = routes.peers.values().filter(|p| **p == peer).count();
            if routes.conns.len() >= limits.max_connections
                || same_peer >= limits.max_connections_per_uid
            {
                drop(routes);
                Metrics::incr(&self.inner.stats.connections_refused);
                tracing::warn!(
                    %peer,
                    total_cap = limits.max_connections,
                    per_uid_cap = limits.max_connections_per_uid,
                    "connection refused: connection limit reached"
                );
                return;
            }
            routes.conns.insert(conn, cancel.clone());
            routes.peers.insert(conn, peer.clone());
        }
        Metrics::incr(&self.inner.stats.connections);
        let broker = self.clone();
        tokio::spawn(async move {
            let reason = broker.connection(r, w, conn, cancel.clone()).await;
            cancel.cancel();
            let mut routes = broker.routes();
            routes.conns.remove(&conn);
            routes.owners.remove(&conn);
            routes.peers.remove(&conn);
            routes
                .pending
                .retain(|_, p| !matches!(p, Pending::Remote { conn: c, .. } if *c == conn));
            routes.subs.retain(|s| s.conn != conn);
            drop(routes);
            match reason {
                Ok(()) => tracing::debug!(conn, %peer, "connection closed"),
                Err(e) => {
                    Metrics::incr(&broker.inner.stats.frames_rejected);
                    tracing::warn!(conn, %peer, error = %e, "connection dropped");
                }
            }
        });
    }

    async fn connection<R, W>(
        &self,
        r: R,
        w: W,
        conn: u64,
        cancel: CancellationToken,
    ) -> Result<(), ProtocolError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut reader = FramedRead::new(r, protocol::frame_codec());
        let mut writer = FramedWrite::new(w, protocol::frame_codec());
        let (tx, mut rx) = mpsc::channel::<Envelope>(CONNECTION_QUEUE);
        let write_cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                let env = tokio::select! {
                    _ = write_cancel.cancelled() => break,
                    env = rx.recv() => match env { Some(e) => e, None => break },
                };
                let sent = match protocol::encode(&env) {
                    Ok(bytes) => writer.send(bytes).await.map_err(ProtocolError::from),
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "write to peer failed");
                    write_cancel.cancel();
                    break;
                }
            }
        });
        let acks = spawn_acker(tx.clone(), self.inner.clone());
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
                    tracing::warn!(conn, "connection closed: idle since it connected");
                    return Ok(());
                }
                frame = reader.next() => frame,
            };
            let Some(frame) = frame else { return Ok(()) };
            let envelope = protocol::decode(&frame?)?;
            active = true;
            self.handle(envelope, conn, &tx, &acks).await?;
        }
    }

    async fn handle(
        &self,
        env: Envelope,
        conn: u64,
        tx: &mpsc::Sender<Envelope>,
        acks: &PendingAcks,
    ) -> Result<(), ProtocolError> {
        match env.kind {
            FrameKind::Publish => {
                let published = protocol::validate_publish(&env)?;
                if let Err(why) = self.authorize(conn, &env, published.as_ref()) {
                    let n = self.inner.stats.publishes_refused.fetch_add(1, Relaxed) + 1;
                    if n <= 10 || n.is_power_of_two() {
                        tracing::warn!(conn, topic = %env.topic, reason = %why, refused_so_far = n, "publish refused");
                    }
                    let refusal = Envelope::error(
                        env.correlation_id,
                        Status::InvalidRequest,
                        &why.to_string(),
                    );
                    let _ = tx.send(refusal).await;
                    return Ok(());
                }
                let corr = env.correlation_id;
                let confirmations = self.route(env, published.map(|p| p.batch)).await;
                let _ = acks.send((corr, confirmations)).await;
            }
            FrameKind::Subscribe => {
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
                    let _ = tx.send(refusal).await;
                    return Ok(());
                }
                self.routes().subs.push(Sub {
                    conn,
                    pattern: env.topic,
                    tx: SubTx::Remote(tx.clone()),
                });
                let _ = tx.send(Envelope::ack(env.correlation_id)).await;
            }
            FrameKind::Request => {
                protocol::validate_topic(&env.topic, false)?;
                let corr = env.correlation_id;
                if self.inner.require_registration {
                    let peer = self
                        .routes()
                        .peers
                        .get(&conn)
                        .cloned()
                        .unwrap_or(PeerId::Uid(u32::MAX));
                    if let Err(why) = super::authz::decide_call(
                        &env.topic,
                        &env.payload,
                        peer.clone(),
                        &self.inner.operators,
                    ) {
                        Metrics::incr(&self.inner.stats.calls_unauthorized);
                        tracing::warn!(conn, %peer, topic = %env.topic, reason = %why, "operator call refused");
                        let refusal = Envelope::response(
                            corr,
                            Status::InvalidRequest,
                            why.to_string().into_bytes(),
                        );
                        let _ = tx.send(refusal).await;
                        return Ok(());
                    }
                }
                let waiting = self
                    .routes()
                    .pending
                    .values()
                    .filter(|p| matches!(p, Pending::Remote { conn: c, .. } if *c == conn))
                    .count();
                if waiting >= self.inner.limits.max_pending_rpcs_per_connection {
                    Metrics::incr(&self.inner.stats.rpcs_refused);
                    tracing::warn!(
                        conn,
                        waiting,
                        "RPC refused: per-connection limit of pending calls"
                    );
                    let refusal =
                        Envelope::response(corr, Status::Busy, b"too many calls pending".to_vec());
                    let _ = tx.send(refusal).await;
                    return Ok(());
                }
                self.dispatch_request(
                    env,
                    Pending::Remote {
                        tx: tx.clone(),
                        corr,
                        conn,
                    },
                );
            }
            FrameKind::Response => self.complete_request(env),
            FrameKind::Ack | FrameKind::Deliver | FrameKind::Error => {
                return Err(ProtocolError::Envelope {
                    len: env.payload.len(),
                    reason: format!("{:?} frames are sent by the broker, not to it", env.kind),
                });
            }
        }
        Ok(())
    }

    /// Applies `bus/authz.rs` to a remote publish, updating the connection's
    /// binding when it registers or deregisters.
    fn authorize(
        &self,
        conn: u64,
        env: &Envelope,
        published: Option<&protocol::Published>,
    ) -> Result<(), super::authz::Refused> {
        use super::authz::{Allowed, decide};
        if !self.inner.require_registration {
            return Ok(());
        }
        let mut routes = self.routes();
        let held = routes.owners.get(&conn).cloned();
        let collectors = published.map(|p| p.collectors.as_slice());
        let decision = decide(
            &env.topic,
            &env.payload,
            collectors,
            held.as_deref(),
            |id| {
                routes
                    .owners
                    .iter()
                    .any(|(c, owned)| *c != conn && owned == id)
            },
        )?;
        match decision {
            Allowed::Publish => {}
            Allowed::Bind(id) => {
                routes.owners.insert(conn, id);
            }
            Allowed::Unbind => {
                routes.owners.remove(&conn);
            }
        }
        Ok(())
    }

    fn dispatch_request(&self, mut env: Envelope, reply: Pending) {
        let id = self.next_id();
        let target = {
            let mut routes = self.routes();
            let found = routes
                .subs
                .iter()
                .filter(|s| protocol::topic_matches(&s.pattern, &env.topic))
                .find_map(|s| s.tx.requests());
            match found {
                Some(tx) => {
                    routes.pending.insert(id, reply);
                    Ok(tx)
                }
                None => Err(reply),
            }
        };
        let tx = match target {
            Ok(tx) => tx,
            Err(reply) => {
                let msg = b"no one serves this topic".to_vec();
                return answer(reply, Envelope::response(0, Status::Unavailable, msg));
            }
        };
        let requested = (env.deadline_unix_ms != 0).then(|| {
            let now = (crate::clock::now_unix_ns() / 1_000_000).max(0) as u64;
            Duration::from_millis(env.deadline_unix_ms.saturating_sub(now))
        });
        let deadline = self.inner.limits.rpc_deadline(requested, DEFAULT_DEADLINE);
        env.correlation_id = id;
        let broker = self.clone();
        tokio::spawn(async move {
            if tx.try_send(env).is_err() {
                let msg = b"collector queue full".to_vec();
                broker.finish(id, Envelope::response(0, Status::Busy, msg));
                return;
            }
            tokio::time::sleep(deadline).await;
            broker.finish(
                id,
                Envelope::response(0, Status::Timeout, b"deadline passed".to_vec()),
            );
        });
    }

    fn complete_request(&self, env: Envelope) {
        let id = env.correlation_id;
        self.finish(id, env);
    }

    /// Sends `response` to whoever is waiting on request `id`, if anyone still is.
    fn finish(&self, id: u64, response: Envelope) {
        let pending = self.routes().pending.remove(&id);
        if let Some(p) = pending {
            answer(p, response);
        }
    }
}

/// Acknowledges publishes in order, each once its durable subscribers have
/// stored it. A subscriber that fails leaves the publish unacknowledged:
/// the collector keeps it in its WAL and sends it again after reconnecting.
fn spawn_acker(tx: mpsc::Sender<Envelope>, inner: Arc<Inner>) -> PendingAcks {
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
            if tx.send(Envelope::ack(corr)).await.is_err() {
                break;
            }
        }
    });
    acks
}

fn answer(pending: Pending, mut response: Envelope) {
    response.kind = FrameKind::Response;
    match pending {
        Pending::Remote { tx, corr, .. } => {
            response.correlation_id = corr;
            let _ = tx.try_send(response);
        }
        Pending::Local(tx) => {
            let _ = tx.send(response);
        }
    }
}

#[cfg(unix)]
fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}
