//! EventBusConnector: moves encoded batches from the pipeline into the WAL
//! and from the WAL to the broker, surviving broker outages.
//!
//! * Every batch is appended to the WAL (durably; batches that arrive
//!   together share one write) before it is published, as one frame; it
//!   leaves the WAL when the broker acknowledges that frame.
//! * Group commit: under load the connector lets batches gather for up to
//!   10 ms after the previous commit (`pacer`), so the WAL's fixed cost per
//!   flush is paid ~100 times a second, not once per batch.
//! * The WAL is the queue: a publish cursor walks it, and after a reconnect
//!   the cursor goes back to the oldest unacknowledged event, so everything
//!   not acknowledged is sent again (at-least-once; consumers dedupe on
//!   `(collector_id, seq)`).
//! * At most `buffer_bytes` (10 MiB) are in flight unacknowledged; the
//!   backlog beyond that waits in the WAL. Backpressure follows all
//!   unacknowledged bytes (in flight plus waiting) against `buffer_bytes`:
//!   on at 70 %, off at 50 %, published on a watch channel.
//! * A WAL that cannot be written (disk full, storage error) neither ends
//!   the connector nor blinds it: `storage` reports the fault, new batches
//!   go to the broker straight from memory (flagged un-persisted; an ack
//!   forgets them, so nothing confirmed is sent again), and storing is
//!   retried; once it works, publishing resumes from the WAL.
//! * Start-up: `connect_at_startup` tries 3 times with backoff. At run time
//!   a lost connection is retried forever, backing off 1, 2, 4 … 30 s, while
//!   new events keep going to the WAL.
//!
//! This file holds the connection and the publishing; the loop that drives
//! them, one handler per input, is `connector_loop.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::storage::Storage;
use super::wal::{Wal, WalError};
use crate::backoff::Backoff;
use crate::bus::client::{self, BusReader, BusWriter};
use crate::bus::protocol::{Envelope, FrameKind, TOPIC_EVENT_BATCH};
use crate::bus::rpc::{CONTROL_CORRELATION, READY_CORRELATION, REGISTER_CORRELATION};
use crate::metrics::Metrics;

const BACKPRESSURE_ON: f64 = 0.70;
const BACKPRESSURE_OFF: f64 = 0.50;
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the reconnect backoff.
pub(super) const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Batches read from the WAL at a time.
const READ_BATCHES: usize = 16;
/// Most bytes of batches gathered into one WAL write.
pub(super) const APPEND_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub socket: PathBuf,
    /// Unacknowledged bytes in flight before publishing pauses (10 MiB).
    pub buffer_bytes: u64,
    /// How long to wait for the last acknowledgements at shutdown.
    pub drain_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("cannot reach the broker at {path} after {attempts} attempts: {last}")]
    Unreachable {
        path: String,
        attempts: u32,
        last: std::io::Error,
    },
    #[error(transparent)]
    Wal(#[from] WalError),
}

/// Connects with `attempts` tries, backing off 1 s, 2 s, … between them.
pub async fn connect_at_startup(
    path: &Path,
    attempts: u32,
) -> Result<(BusWriter, BusReader), ConnectorError> {
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut attempt = 1;
    loop {
        match client::connect(path).await {
            Ok(c) => return Ok(c),
            Err(e) if attempt >= attempts => {
                return Err(ConnectorError::Unreachable {
                    path: path.display().to_string(),
                    attempts,
                    last: e,
                });
            }
            Err(e) => {
                let delay = backoff.next_wait();
                tracing::warn!(attempt, error = %e, socket = %path.display(), "broker not reachable yet; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// One live connection: a writer task, a reader task, and what is in flight.
pub(super) struct Conn {
    pub(super) frames: mpsc::UnboundedSender<Envelope>,
    writer: Option<tokio::task::JoinHandle<()>>,
    pub(super) acks: mpsc::UnboundedReceiver<u64>,
    cancel: CancellationToken,
    pub(super) cursor: u64,
    /// WAL key → bytes of the batch in flight.
    pub(super) inflight: BTreeMap<u64, u64>,
    pub(super) inflight_bytes: u64,
    pub(super) since: Instant,
}

impl Conn {
    pub(super) fn start(
        writer: BusWriter,
        reader: BusReader,
        from: u64,
        control: Option<mpsc::Sender<Envelope>>,
        greeting: &[Envelope],
    ) -> Self {
        let cancel = CancellationToken::new();
        let (frames, frames_rx) = mpsc::unbounded_channel();
        let (acks_tx, acks) = mpsc::unbounded_channel();
        // Subscriptions and registration go first on every connection.
        for env in greeting {
            let _ = frames.send(env.clone());
        }
        let writer = tokio::spawn(write_loop(writer, frames_rx, cancel.clone()));
        tokio::spawn(read_loop(reader, acks_tx, control, cancel.clone()));
        Self {
            frames,
            writer: Some(writer),
            acks,
            cancel,
            cursor: from,
            inflight: BTreeMap::new(),
            inflight_bytes: 0,
            since: Instant::now(),
        }
    }
}

impl Conn {
    /// Lets the writer send what is queued, then closes the connection.
    pub(super) async fn close(mut self) {
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.frames, closed));
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn write_loop(
    mut writer: BusWriter,
    mut rx: mpsc::UnboundedReceiver<Envelope>,
    cancel: CancellationToken,
) {
    loop {
        let env = tokio::select! {
            _ = cancel.cancelled() => return,
            env = rx.recv() => match env { Some(e) => e, None => return },
        };
        let mut result = writer.feed(&env).await;
        while result.is_ok() {
            match rx.try_recv() {
                Ok(env) => result = writer.feed(&env).await,
                Err(_) => break,
            }
        }
        if result.is_ok() {
            result = writer.flush().await;
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "writing to the broker failed");
            cancel.cancel();
            return;
        }
    }
}

async fn read_loop(
    mut reader: BusReader,
    acks: mpsc::UnboundedSender<u64>,
    control: Option<mpsc::Sender<Envelope>>,
    cancel: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return,
            f = reader.next() => f,
        };
        match frame {
            None => {
                tracing::warn!("broker closed the connection");
                break;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "invalid frame from the broker; reconnecting");
                break;
            }
            Some(Ok(env)) => match env.kind {
                FrameKind::Ack if env.correlation_id & CONTROL_CORRELATION != 0 => {}
                FrameKind::Ack => {
                    let _ = acks.send(env.correlation_id);
                }
                FrameKind::Error
                    if matches!(env.correlation_id, REGISTER_CORRELATION | READY_CORRELATION) =>
                {
                    // Not registered, so not supervised: never stay like
                    // that. Reconnecting (with backoff) registers again.
                    tracing::error!(reason = %String::from_utf8_lossy(&env.payload), "broker refused the registration; reconnecting to try again");
                    break;
                }
                FrameKind::Error => {
                    tracing::error!(correlation_id = env.correlation_id, reason = %String::from_utf8_lossy(&env.payload), "broker refused a frame");
                }
                _ => {
                    if let Some(control) = &control
                        && control.send(env).await.is_err()
                    {
                        break;
                    }
                }
            },
        }
    }
    cancel.cancel();
}

/// The connector task.
#[derive(Debug)]
pub struct Connector {
    pub wal: Arc<Wal>,
    pub config: ConnectorConfig,
    pub metrics: Arc<Metrics>,
    pub backpressure: watch::Sender<bool>,
    /// Where requests and deliveries for this collector go (service mode).
    pub control: Option<mpsc::Sender<Envelope>>,
    /// Control frames to send (responses, heartbeats, registration); sent
    /// when connected, dropped otherwise. The connector finishes only after
    /// every sender is gone.
    pub outbox: Option<mpsc::UnboundedReceiver<Envelope>>,
    /// Frames sent first on every connection (subscriptions, registration).
    pub greeting: watch::Receiver<Vec<Envelope>>,
    /// Events are published only while this is true (`begin_monitoring`);
    /// until then they wait in the WAL.
    pub gate: watch::Receiver<bool>,
}

impl Connector {
    /// Sends WAL batches past the cursor while the in-flight budget allows.
    pub(super) fn pump(&self, conn: &mut Conn) -> Result<(), WalError> {
        while conn.inflight_bytes < self.config.buffer_bytes {
            let batches = self.wal.read_from(conn.cursor, READ_BATCHES)?;
            if batches.is_empty() {
                break;
            }
            for (key, batch) in batches {
                conn.cursor = key + 1;
                if conn.inflight.contains_key(&key) {
                    continue; // on its way already (see the WAL's recovery)
                }
                let len = batch.as_bytes().len() as u64;
                conn.inflight.insert(key, len);
                conn.inflight_bytes += len;
                if !send_batch(conn, key, batch.into_bytes().into_vec()) {
                    return Ok(()); // the connection is going away; reconnect replays
                }
            }
        }
        Ok(())
    }

    /// The broker acknowledged the batches with `keys`: each sent from
    /// memory while the WAL was faulted, or stored in the WAL.
    pub(super) fn acked(
        &self,
        mut conn: Option<&mut Conn>,
        storage: &mut Storage,
        keys: &[u64],
    ) -> Result<(), WalError> {
        let mut events = 0;
        let mut stored = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(c) = conn.as_deref_mut()
                && let Some(len) = c.inflight.remove(key)
            {
                c.inflight_bytes -= len;
            }
            match storage.acked(*key) {
                Some(n) => events += n,
                None => stored.push(*key),
            }
        }
        if !stored.is_empty() {
            events += self.wal.ack_all(&stored)?;
        }
        Metrics::add(&self.metrics.events_published, events);
        Ok(())
    }

    pub(super) fn update_backpressure(&self) {
        let fill = self.wal.pending_bytes() as f64 / self.config.buffer_bytes.max(1) as f64;
        self.metrics
            .buffer_percent
            .store((fill * 100.0) as u64, Relaxed);
        let on = *self.backpressure.borrow();
        if !on && fill >= BACKPRESSURE_ON {
            tracing::info!(
                buffer_percent = (fill * 100.0) as u64,
                "backpressure on: buffer above 70 %"
            );
            self.backpressure.send_replace(true);
        } else if on && fill <= BACKPRESSURE_OFF {
            tracing::info!(
                buffer_percent = (fill * 100.0) as u64,
                "backpressure off: buffer below 50 %"
            );
            self.backpressure.send_replace(false);
        }
    }
}

/// Queues one batch for the broker; false when the connection is going away.
pub(super) fn send_batch(conn: &Conn, key: u64, payload: Vec<u8>) -> bool {
    let env = Envelope::new(FrameKind::Publish, TOPIC_EVENT_BATCH, key, payload);
    conn.frames.send(env).is_ok()
}

#[cfg(all(test, unix))]
#[path = "connector_tests.rs"]
mod tests;
