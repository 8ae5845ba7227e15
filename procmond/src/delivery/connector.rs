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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pacer::CommitPacer;
use super::storage::Storage;
use super::wal::{Wal, WalError};
use crate::backoff::Backoff;
use crate::bus::client::{self, BusReader, BusWriter};
use crate::bus::protocol::{Envelope, FrameKind, TOPIC_EVENT_BATCH};
use crate::bus::rpc::{CONTROL_CORRELATION, READY_CORRELATION, REGISTER_CORRELATION};
use crate::metrics::Metrics;
use crate::model::batch::Batch;

const BACKPRESSURE_ON: f64 = 0.70;
const BACKPRESSURE_OFF: f64 = 0.50;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Batches read from the WAL at a time.
const READ_BATCHES: usize = 16;
/// Most bytes of batches gathered into one WAL write.
const APPEND_BYTES: usize = 4 * 1024 * 1024;

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
struct Conn {
    frames: mpsc::UnboundedSender<Envelope>,
    writer: Option<tokio::task::JoinHandle<()>>,
    acks: mpsc::UnboundedReceiver<u64>,
    cancel: CancellationToken,
    cursor: u64,
    /// WAL key → bytes of the batch in flight.
    inflight: BTreeMap<u64, u64>,
    inflight_bytes: u64,
    since: Instant,
}

impl Conn {
    fn start(
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
    async fn close(mut self) {
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
    /// Runs until `input` closes and everything is acknowledged (or
    /// `drain_timeout` passes; what is left stays in the WAL for next time).
    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<Batch>,
        initial: Option<(BusWriter, BusReader)>,
    ) -> Result<(), ConnectorError> {
        let start_cursor = |wal: &Wal| wal.first_seq().map(|s| s.unwrap_or_else(|| wal.next_seq()));
        let mut outbox = self.outbox.take();
        let greeting = self.greeting.borrow_and_update().clone();
        let mut conn = match initial {
            Some((w, r)) => Some(Conn::start(
                w,
                r,
                start_cursor(&self.wal)?,
                self.control.clone(),
                &greeting,
            )),
            None => None,
        };
        self.metrics
            .connected
            .store(u64::from(conn.is_some()), Relaxed);
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut retry_at = Instant::now() + FIRST_BACKOFF;
        let mut input_open = true;
        let mut drain_deadline = None;
        let mut batches: Vec<Batch> = Vec::new();
        let mut pacer = CommitPacer::new(Instant::now());
        let mut storage = Storage::new(self.wal.clone(), self.metrics.clone());
        loop {
            if let Some(c) = conn.as_mut()
                && *self.gate.borrow()
            {
                if storage.is_faulted() {
                    storage.send_direct(|key, batch| send_batch(c, key, batch.as_bytes().to_vec()));
                } else if let Err(e) = self.pump(c) {
                    storage.failed(&e);
                }
            }
            self.update_backpressure();
            if !input_open
                && self.wal.pending_count() == 0
                && outbox.is_none()
                && !storage.is_faulted()
            {
                if let Some(c) = conn.take() {
                    c.close().await;
                }
                // Drained: the acknowledged batches leave the tree now, so
                // the next start replays none of them (`Wal::settle`).
                if let Err(e) = self.wal.flush() {
                    tracing::warn!(error = %e, "final WAL flush failed; acknowledged batches may replay on the next start");
                }
                return Ok(());
            }
            let lost = tokio::select! {
                received = input.recv(), if input_open => {
                    match received {
                        Some(first) => {
                            // Group commit: under load, let batches gather.
                            let at = pacer.next_commit_at(Instant::now());
                            if at > Instant::now() {
                                tokio::time::sleep_until(at).await;
                            }
                            let mut bytes = first.as_bytes().len();
                            batches.push(first);
                            while bytes < APPEND_BYTES {
                                match input.try_recv() {
                                    Ok(b) => {
                                        bytes += b.as_bytes().len();
                                        batches.push(b);
                                    }
                                    Err(_) => break,
                                }
                            }
                            let events = batches.iter().map(|b| b.len() as u64).sum();
                            storage.store(&mut batches)?;
                            pacer.committed(Instant::now(), events);
                        }
                        None => {
                            input_open = false;
                            drain_deadline = Some(Instant::now() + self.config.drain_timeout);
                        }
                    }
                    false
                }
                frame = next_frame(&mut outbox) => {
                    match frame {
                        Some(env) => {
                            if let Some(c) = &conn {
                                let _ = c.frames.send(env);
                            }
                        }
                        None => outbox = None,
                    }
                    false
                }
                Ok(()) = self.greeting.changed() => {
                    if let Some(c) = &conn {
                        for env in self.greeting.borrow_and_update().iter() {
                            let _ = c.frames.send(env.clone());
                        }
                    }
                    false
                }
                Ok(()) = self.gate.changed() => false,
                ack = next_ack(&mut conn) => match ack {
                    Some(seq) => {
                        // Every ack already here is applied with it: one
                        // WAL write for the burst.
                        let mut keys = vec![seq];
                        while let Some(seq) = conn.as_mut().and_then(|c| c.acks.try_recv().ok()) {
                            keys.push(seq);
                        }
                        if let Err(e) = self.acked(conn.as_mut(), &mut storage, &keys) {
                            storage.failed(&e);
                        }
                        false
                    }
                    None => true,
                },
                _ = tokio::time::sleep_until(retry_at), if conn.is_none() => {
                    match client::connect(&self.config.socket).await {
                        Ok((w, r)) => {
                            tracing::info!(pending = self.wal.pending_count(), "reconnected to the broker; replaying unacknowledged events");
                            let greeting = self.greeting.borrow_and_update().clone();
                            let from = start_cursor(&self.wal).unwrap_or_else(|e| {
                                storage.failed(&e);
                                self.wal.next_seq()
                            });
                            conn = Some(Conn::start(w, r, from, self.control.clone(), &greeting));
                            self.metrics.connected.store(1, Relaxed);
                        }
                        Err(e) => {
                            let wait = backoff.next_wait();
                            tracing::warn!(error = %e, retry_in = ?wait, pending = self.wal.pending_count(), "broker unreachable; events kept in the WAL");
                            retry_at = Instant::now() + wait;
                        }
                    }
                    false
                }
                _ = sleep_opt(storage.retry_at()) => {
                    if storage.retry()?
                        && let Some(c) = conn.as_mut()
                    {
                        // Publish from the oldest unacknowledged batch again,
                        // past what is already on its way (sent from memory,
                        // now stored, or sent from the WAL before the fault).
                        c.cursor = start_cursor(&self.wal)?;
                        for (key, len) in storage.take_stored_in_flight() {
                            if c.inflight.insert(key, len).is_none() {
                                c.inflight_bytes += len;
                            }
                        }
                    }
                    false
                }
                _ = sleep_opt(self.wal.settle_at().map(Instant::from_std)) => {
                    // Acknowledged batches no append carried out of the tree.
                    if let Err(e) = self.wal.settle() {
                        storage.failed(&e);
                    }
                    false
                }
                _ = sleep_opt(drain_deadline) => {
                    tracing::warn!(pending = self.wal.pending_count(), "stopping with unacknowledged events; they stay in the WAL and replay on the next start");
                    storage.abandon_held();
                    if let Err(e) = self.wal.flush() {
                        tracing::error!(error = %e, "final WAL flush failed");
                    }
                    return Ok(());
                }
            };
            if lost {
                Metrics::incr(&self.metrics.broker_disconnects);
                self.metrics.connected.store(0, Relaxed);
                // A connection that held a while starts the backoff over;
                // one refused at once (registration) keeps doubling it.
                if conn
                    .take()
                    .is_some_and(|c| c.since.elapsed() >= STABLE_CONNECTION)
                {
                    backoff.reset();
                }
                storage.connection_lost();
                let wait = backoff.next_wait();
                tracing::warn!(retry_in = ?wait, "lost the broker connection; buffering in the WAL");
                retry_at = Instant::now() + wait;
            }
        }
    }

    /// Sends WAL batches past the cursor while the in-flight budget allows.
    fn pump(&self, conn: &mut Conn) -> Result<(), WalError> {
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
    fn acked(
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

    fn update_backpressure(&self) {
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
fn send_batch(conn: &Conn, key: u64, payload: Vec<u8>) -> bool {
    let env = Envelope::new(FrameKind::Publish, TOPIC_EVENT_BATCH, key, payload);
    conn.frames.send(env).is_ok()
}

async fn next_ack(conn: &mut Option<Conn>) -> Option<u64> {
    match conn {
        Some(c) => c.acks.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_frame(outbox: &mut Option<mpsc::UnboundedReceiver<Envelope>>) -> Option<Envelope> {
    match outbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(all(test, unix))]
#[path = "connector_tests.rs"]
mod tests;
