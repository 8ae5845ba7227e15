//! The broker: a Unix-socket server in the agent (and embedded in `watch`)
//! that routes frames by topic.
//!
//! * Who may connect: the peer's uid (SO_PEERCRED) must be the broker's own
//!   or in `allowed_uids`; the socket file is 0660. On Windows the peer's
//!   user SID must be the broker's own or in `allowed_sids`, and the pipe's
//!   DACL admits no one else (`bus/pipe.rs`). A peer at its connection cap
//!   gets in by closing its own least recently active connection that
//!   holds no collector id (`conn.rs`), so a flood of idle connections
//!   cannot lock an operator out.
//! * Publishes are validated, delivered once to every connection with a
//!   matching subscription, then acknowledged — the ack is what lets a
//!   collector drop the event from its WAL. No publisher ever waits on a
//!   remote subscriber: each connection's outbound queue is capped in bytes
//!   (`outbox.rs`), and a subscriber whose queue is full is disconnected,
//!   logged and counted. In-process sinks are never dropped.
//! * Requests go only to RPC topics (`call.rs`), to the one connection
//!   that serves them — for a collector's topic, the connection holding
//!   that collector id — and only that connection's response is accepted.
//! * A bad frame (oversized, truncated, not an envelope, an invalid event)
//!   drops that connection with the reason logged; nothing else is affected.
//! * On the agent's broker, `bus/authz.rs` decides what a peer may publish
//!   and call (collector ids need the launcher's credential), and
//!   `bus/limits.rs` what it may hold.
//!
//! Here: the broker's state and handle. `conn.rs` serves one connection,
//! `route.rs` decides who gets a publish, `call.rs` carries RPCs,
//! `outbox.rs` bounds what waits for a peer, `local.rs` is the agent's
//! in-process side, `socket.rs` binds the socket file; `bus/pipe.rs` is
//! the Windows listener.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(unix)]
use std::time::Duration;

#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::authz::{Credentials, Operators};
use super::limits::BrokerLimits;
use super::peer::PeerId;
use super::protocol::Envelope;
use crate::model::batch::Batch;

mod call;
mod conn;
mod local;
mod outbox;
mod route;
#[cfg(unix)]
mod socket;

use call::Call;
use outbox::{Budget, Outbox};

/// Broker-side counters (reach `ctl health`).
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub connections: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Connections closed to make room for a new one from the same peer
    /// (its least recently active one holding no collector id).
    pub connections_evicted: AtomicU64,
    pub frames_rejected: AtomicU64,
    /// Remote subscribers disconnected because their outbound queue was
    /// full (what they would have received is lost to them).
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
    /// Requests to a topic that is not an RPC topic.
    pub requests_refused: AtomicU64,
    /// Responses from a connection the request was not sent to.
    pub responses_refused: AtomicU64,
    /// Connections closed for doing nothing within the idle timeout.
    pub idle_closed: AtomicU64,
    /// Operator calls refused by `broker.operators` (`bus/authz.rs`).
    pub calls_unauthorized: AtomicU64,
    /// Stale connections whose collector id a freshly started instance
    /// took over with its new credential.
    pub takeovers: AtomicU64,
}

impl BrokerStats {
    /// Every counter by name (`ctl health`, `/metrics`).
    pub fn counters(&self) -> std::collections::BTreeMap<String, u64> {
        [
            ("connections", &self.connections),
            ("connections_refused", &self.connections_refused),
            ("connections_evicted", &self.connections_evicted),
            ("frames_rejected", &self.frames_rejected),
            ("subscribers_dropped", &self.subscribers_dropped),
            ("published", &self.published),
            ("unstored", &self.unstored),
            ("publishes_refused", &self.publishes_refused),
            ("subscriptions_refused", &self.subscriptions_refused),
            ("rpcs_refused", &self.rpcs_refused),
            ("requests_refused", &self.requests_refused),
            ("responses_refused", &self.responses_refused),
            ("idle_closed", &self.idle_closed),
            ("calls_unauthorized", &self.calls_unauthorized),
            ("takeovers", &self.takeovers),
        ]
        .into_iter()
        .map(|(name, c)| (name.to_string(), c.load(Relaxed)))
        .collect()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }
}

/// A delivery to a durable in-process subscriber (a sink): the publisher
/// is acknowledged only once `done` is sent, i.e. once the events are
/// stored. The batch is the one the broker validated (its structure and
/// every event), not bytes to parse again.
#[derive(Debug)]
pub struct Durable {
    pub batch: Batch,
    pub done: oneshot::Sender<()>,
}

#[derive(Debug, Clone)]
enum SubTx {
    /// A client connection; dropped when its outbound queue is full.
    Remote(Outbox),
    /// In-process, never dropped, acknowledged on queueing; takes no
    /// requests.
    Local(mpsc::Sender<Envelope>),
    /// In-process, serves the requests on its topic (the agent's own RPC).
    Server(mpsc::Sender<Envelope>),
    /// In-process, never dropped, acknowledged when it confirms; process
    /// events only, as validated batches.
    Durable(mpsc::Sender<Durable>),
    /// In-process, never dropped, acknowledged on queueing; process events
    /// only, as validated batches (`watch`'s writer).
    Batches(mpsc::Sender<Batch>),
}

#[derive(Debug)]
struct Sub {
    conn: u64,
    pattern: String,
    /// A bit per process-event kind whose topic the pattern matches,
    /// worked out once at subscription.
    kinds: u8,
    tx: SubTx,
}

/// One live remote connection.
#[derive(Debug)]
struct Connection {
    cancel: CancellationToken,
    peer: PeerId,
    /// The collector id it registered (`bus/authz.rs`).
    owner: Option<String>,
    outbox: Outbox,
    /// When it connected or last sent a frame (an activity tick).
    last_active: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Routes {
    subs: Vec<Sub>,
    pending: HashMap<u64, Call>,
    conns: HashMap<u64, Connection>,
}

impl Routes {
    fn owner(&self, conn: u64) -> Option<&str> {
        self.conns.get(&conn).and_then(|c| c.owner.as_deref())
    }

    /// Closes a connection and forgets what routes to it (its task cleans
    /// up the rest when it ends); false when it was closed already.
    fn close(&mut self, conn: u64) -> bool {
        self.subs.retain(|s| s.conn != conn);
        match self.conns.get_mut(&conn) {
            Some(c) if !c.cancel.is_cancelled() => {
                c.owner = None;
                c.cancel.cancel();
                true
            }
            _ => false,
        }
    }
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
    credentials: Credentials,
    budget: Arc<Budget>,
    next_id: AtomicU64,
    /// Ticks once per frame any connection sends: orders connections by
    /// their last activity without ties (a millisecond clock tied two
    /// connections active in the same millisecond, and the eviction then
    /// picked between them in hash order).
    activity: AtomicU64,
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
    /// (events and heartbeats for the collector id they registered with
    /// the launcher's credential; control topics are the agent's), within
    /// `limits`.
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
        let budget = Budget::new(
            limits.max_queued_bytes_per_connection,
            limits.max_queued_bytes,
        );
        Self {
            inner: Arc::new(Inner {
                routes: Mutex::new(Routes::default()),
                allowed_uids,
                allowed_sids,
                require_registration,
                limits,
                operators,
                credentials: Credentials::default(),
                budget: Arc::new(budget),
                next_id: AtomicU64::new(1),
                activity: AtomicU64::new(0),
                stats: BrokerStats::default(),
            }),
        }
    }

    pub fn stats(&self) -> &BrokerStats {
        &self.inner.stats
    }

    /// The counters, with the bytes queued for peers right now.
    /// The counters and `queued_bytes`, by name (the agent's health).
    pub fn stats_map(&self) -> std::collections::BTreeMap<String, u64> {
        let mut map = self.inner.stats.counters();
        map.insert("queued_bytes".into(), self.inner.budget.total() as u64);
        map
    }

    /// Issues the registration credential for the next start of collector
    /// `id` (the launcher hands it over; `bus/authz.rs`).
    pub fn issue_credential(&self, id: &str) -> std::io::Result<String> {
        self.inner.credentials.issue(id)
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic while holding the lock cannot leave routes inconsistent
        // (every update is a single push/remove), so poisoning is ignored.
        self.inner.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Relaxed)
    }

    /// The next activity tick: later activity, larger tick.
    fn activity_tick(&self) -> u64 {
        self.inner.activity.fetch_add(1, Relaxed)
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
        let conns: Vec<_> = self
            .routes()
            .conns
            .values()
            .map(|c| c.cancel.clone())
            .collect();
        conns.iter().for_each(CancellationToken::cancel);
    }

    /// Counts and logs a peer refused before it got a connection.
    pub(crate) fn refuse(&self, peer: Option<&PeerId>, why: &str) {
        let n = self.inner.stats.connections_refused.fetch_add(1, Relaxed) + 1;
        if !worth_logging(n) {
            return;
        }
        match peer {
            Some(peer) => {
                tracing::warn!(%peer, reason = why, refused_so_far = n, "connection refused")
            }
            None => tracing::warn!(reason = why, refused_so_far = n, "connection refused"),
        }
    }

    #[cfg(unix)]
    fn admit(&self, stream: UnixStream, shutdown: &CancellationToken) {
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                self.refuse(None, &format!("no peer credentials: {e}"));
                return;
            }
        };
        // The agent's own user changes when it drops privileges: ask each time.
        if uid != own_uid() && !self.inner.allowed_uids.contains(&uid) {
            let why = format!(
                "uid not in broker.allowed_uids {:?}",
                self.inner.allowed_uids
            );
            self.refuse(Some(&PeerId::Uid(uid)), &why);
            return;
        }
        let (r, w) = stream.into_split();
        self.admit_peer(PeerId::Uid(uid), r, w, shutdown);
    }
}

/// Whether the `n`th occurrence of a repeated warning is logged: the first
/// ten, then at powers of two, so a peer in a loop cannot flood the log.
pub fn worth_logging(n: u64) -> bool {
    n <= 10 || n.is_power_of_two()
}

#[cfg(unix)]
fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(all(test, unix))]
#[path = "local_tests.rs"]
mod local_tests;
#[cfg(test)]
mod tests;
