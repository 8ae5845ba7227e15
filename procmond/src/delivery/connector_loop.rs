//! The connector's loop (`Connector::run`): its state between two inputs in
//! one struct (`Link`) and one handler per input — a batch from the
//! pipeline, a frame for the broker, an acknowledgement, a reconnect, a
//! storage retry, a WAL settle, the drain deadline, a lost connection.
//! connector.rs holds the connection and the publishing itself.

use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::connector::{
    APPEND_BYTES, Conn, Connector, ConnectorError, FIRST_BACKOFF, MAX_BACKOFF, STABLE_CONNECTION,
    send_batch,
};
use super::pacer::CommitPacer;
use super::storage::Storage;
use super::wal::{Wal, WalError};
use crate::backoff::Backoff;
use crate::bus::client::{self, BusReader, BusWriter};
use crate::bus::protocol::Envelope;
use crate::metrics::Metrics;
use crate::model::batch::Batch;

/// Everything the loop keeps between two inputs.
struct Link {
    conn: Option<Conn>,
    /// Control frames for the broker (`None` once their sender is gone).
    outbox: Option<mpsc::UnboundedReceiver<Envelope>>,
    backoff: Backoff,
    retry_at: Instant,
    input_open: bool,
    drain_deadline: Option<Instant>,
    batches: Vec<Batch>,
    pacer: CommitPacer,
    storage: Storage,
}

/// What the loop does after an input.
enum Step {
    Continue,
    /// The broker connection ended.
    Lost,
    /// Stop (drained, or the drain deadline passed).
    Done,
}

fn start_cursor(wal: &Wal) -> Result<u64, WalError> {
    wal.first_seq().map(|s| s.unwrap_or_else(|| wal.next_seq()))
}

impl Connector {
    /// Runs until `input` closes and everything is acknowledged (or
    /// `drain_timeout` passes; what is left stays in the WAL for next time).
    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<Batch>,
        initial: Option<(BusWriter, BusReader)>,
    ) -> Result<(), ConnectorError> {
        let greeting = self.greeting.borrow_and_update().clone();
        let conn = match initial {
            Some((w, r)) => {
                let from = start_cursor(&self.wal)?;
                Some(Conn::start(w, r, from, self.control.clone(), &greeting))
            }
            None => None,
        };
        self.metrics
            .connected
            .store(u64::from(conn.is_some()), Relaxed);
        let mut link = Link {
            conn,
            outbox: self.outbox.take(),
            backoff: Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
            retry_at: Instant::now() + FIRST_BACKOFF,
            input_open: true,
            drain_deadline: None,
            batches: Vec::new(),
            pacer: CommitPacer::new(Instant::now()),
            storage: Storage::new(self.wal.clone(), self.metrics.clone()),
        };
        loop {
            self.publish(&mut link);
            if self.drained(&link) {
                return self.finish(link).await;
            }
            let step = tokio::select! {
                received = input.recv(), if link.input_open => {
                    self.on_input(&mut link, received, &mut input).await?
                }
                frame = next_frame(&mut link.outbox) => on_frame(&mut link, frame),
                Ok(()) = self.greeting.changed() => self.on_greeting(&link),
                Ok(()) = self.gate.changed() => Step::Continue,
                ack = next_ack(&mut link.conn) => self.on_ack(&mut link, ack),
                _ = tokio::time::sleep_until(link.retry_at), if link.conn.is_none() => {
                    self.reconnect(&mut link).await
                }
                _ = sleep_opt(link.storage.retry_at()) => self.on_storage_retry(&mut link)?,
                _ = sleep_opt(self.wal.settle_at().map(Instant::from_std)) => {
                    // Acknowledged batches no append carried out of the tree.
                    if let Err(e) = self.wal.settle() {
                        link.storage.failed(&e);
                    }
                    Step::Continue
                }
                _ = sleep_opt(link.drain_deadline) => self.on_drain_deadline(&mut link),
            };
            match step {
                Step::Continue => {}
                Step::Lost => self.on_lost(&mut link),
                Step::Done => return Ok(()),
            }
        }
    }

    /// While the gate is open: WAL batches to the broker (from memory while
    /// the WAL is faulted); backpressure follows what is left.
    fn publish(&self, link: &mut Link) {
        if let Some(c) = link.conn.as_mut()
            && *self.gate.borrow()
        {
            if link.storage.is_faulted() {
                link.storage
                    .send_direct(|key, batch| send_batch(c, key, batch.as_bytes().to_vec()));
            } else if let Err(e) = self.pump(c) {
                link.storage.failed(&e);
            }
        }
        self.update_backpressure();
    }

    fn drained(&self, link: &Link) -> bool {
        !link.input_open
            && self.wal.pending_count() == 0
            && link.outbox.is_none()
            && !link.storage.is_faulted()
    }

    /// Everything acknowledged: close, and let the acknowledged batches
    /// leave the tree now, so the next start replays none (`Wal::settle`).
    async fn finish(&self, mut link: Link) -> Result<(), ConnectorError> {
        if let Some(c) = link.conn.take() {
            c.close().await;
        }
        if let Err(e) = self.wal.flush() {
            tracing::warn!(error = %e, "final WAL flush failed; acknowledged batches may replay on the next start");
        }
        Ok(())
    }

    /// A batch from the pipeline, stored with whatever else is waiting
    /// (group commit: under load, batches gather until the pacer's time).
    async fn on_input(
        &self,
        link: &mut Link,
        received: Option<Batch>,
        input: &mut mpsc::Receiver<Batch>,
    ) -> Result<Step, ConnectorError> {
        let Some(first) = received else {
            link.input_open = false;
            link.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
            return Ok(Step::Continue);
        };
        let at = link.pacer.next_commit_at(Instant::now());
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        let mut bytes = first.as_bytes().len();
        link.batches.push(first);
        while bytes < APPEND_BYTES {
            match input.try_recv() {
                Ok(b) => {
                    bytes += b.as_bytes().len();
                    link.batches.push(b);
                }
                Err(_) => break,
            }
        }
        let events = link.batches.iter().map(|b| b.len() as u64).sum();
        link.storage.store(&mut link.batches)?;
        link.pacer.committed(Instant::now(), events);
        Ok(Step::Continue)
    }

    /// The greeting changed (registered): send it on the live connection.
    fn on_greeting(&mut self, link: &Link) -> Step {
        if let Some(c) = &link.conn {
            for env in self.greeting.borrow_and_update().iter() {
                let _ = c.frames.send(env.clone());
            }
        }
        Step::Continue
    }

    /// An acknowledgement; every one already here is applied with it (one
    /// WAL write for the burst). `None`: the connection ended.
    fn on_ack(&self, link: &mut Link, ack: Option<u64>) -> Step {
        let Some(seq) = ack else {
            return Step::Lost;
        };
        let mut keys = vec![seq];
        while let Some(seq) = link.conn.as_mut().and_then(|c| c.acks.try_recv().ok()) {
            keys.push(seq);
        }
        if let Err(e) = self.acked(link.conn.as_mut(), &mut link.storage, &keys) {
            link.storage.failed(&e);
        }
        Step::Continue
    }

    /// Time to try the broker again; publishing restarts from the oldest
    /// unacknowledged batch.
    async fn reconnect(&mut self, link: &mut Link) -> Step {
        match client::connect(&self.config.socket).await {
            Ok((w, r)) => {
                tracing::info!(
                    pending = self.wal.pending_count(),
                    "reconnected to the broker; replaying unacknowledged events"
                );
                let greeting = self.greeting.borrow_and_update().clone();
                let from = start_cursor(&self.wal).unwrap_or_else(|e| {
                    link.storage.failed(&e);
                    self.wal.next_seq()
                });
                link.conn = Some(Conn::start(w, r, from, self.control.clone(), &greeting));
                self.metrics.connected.store(1, Relaxed);
            }
            Err(e) => {
                let wait = link.backoff.next_wait();
                tracing::warn!(error = %e, retry_in = ?wait, pending = self.wal.pending_count(), "broker unreachable; events kept in the WAL");
                link.retry_at = Instant::now() + wait;
            }
        }
        Step::Continue
    }

    /// Storing is retried; once it works, publishing resumes from the oldest
    /// unacknowledged batch, past what is already on its way (sent from
    /// memory, now stored, or sent from the WAL before the fault).
    fn on_storage_retry(&self, link: &mut Link) -> Result<Step, ConnectorError> {
        if link.storage.retry()?
            && let Some(c) = link.conn.as_mut()
        {
            c.cursor = start_cursor(&self.wal)?;
            for (key, len) in link.storage.take_stored_in_flight() {
                if c.inflight.insert(key, len).is_none() {
                    c.inflight_bytes += len;
                }
            }
        }
        Ok(Step::Continue)
    }

    fn on_drain_deadline(&self, link: &mut Link) -> Step {
        tracing::warn!(
            pending = self.wal.pending_count(),
            "stopping with unacknowledged events; they stay in the WAL and replay on the next start"
        );
        link.storage.abandon_held();
        if let Err(e) = self.wal.flush() {
            tracing::error!(error = %e, "final WAL flush failed");
        }
        Step::Done
    }

    /// The connection ended: count it, buffer in the WAL, retry later. A
    /// connection that held a while starts the backoff over; one refused at
    /// once (registration) keeps doubling it.
    fn on_lost(&self, link: &mut Link) {
        Metrics::incr(&self.metrics.broker_disconnects);
        self.metrics.connected.store(0, Relaxed);
        if link
            .conn
            .take()
            .is_some_and(|c| c.since.elapsed() >= STABLE_CONNECTION)
        {
            link.backoff.reset();
        }
        link.storage.connection_lost();
        let wait = link.backoff.next_wait();
        tracing::warn!(retry_in = ?wait, "lost the broker connection; buffering in the WAL");
        link.retry_at = Instant::now() + wait;
    }
}

/// A control frame for the broker, sent on the live connection if any.
fn on_frame(link: &mut Link, frame: Option<Envelope>) -> Step {
    match frame {
        Some(env) => {
            if let Some(c) = &link.conn {
                let _ = c.frames.send(env);
            }
        }
        None => link.outbox = None,
    }
    Step::Continue
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
