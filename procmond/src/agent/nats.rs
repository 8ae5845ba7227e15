//! The `nats` sink: every `events.process.*` event to a NATS JetStream
//! stream, at least once, for fleets that collect in one place.
//!
//! It is a durable subscriber like the jsonl sink: a delivery is confirmed to
//! the broker — which then acknowledges the publish, and the collector drops
//! it from its WAL — only once JetStream has answered a PublishAck for every
//! event in it. Each message carries
//! `Nats-Msg-Id: <host>.<boot>.<collector_id>-<epoch>-<seq>` (`boot_token`:
//! hosts cloned from one image share the rest), so a resend (a retry, or a
//! collector replaying its WAL after a crash) is dropped by the server within
//! the stream's duplicate window; events this
//! sink saw acknowledged are also skipped on its side (the jsonl sink's
//! `Dedupe`, for as long as the agent runs).
//!
//! When NATS is down or slow nothing is confirmed: deliveries wait here (up
//! to `HOLD_BYTES`, then the broker waits too), publishes are retried with
//! backoff after a reconnection, and the collectors keep their events in
//! their WALs, where backpressure and `wal_dropped_full` report a long
//! outage. Subjects are `<subject_prefix>.<host>.process.<kind>`; the payload
//! is the event in the sink's `format` (one JSON object, no newline).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, publish::PublishAck};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::sink::{Dedupe, SinkStats};
use crate::bus::broker::Durable;

mod setup;
use setup::{BACKOFF_MIN, backoff, ensure_stream, on_event};
pub use setup::{NatsSinkError, Prepared, boot_token, host_token, prepare, subject_matches};

/// Publishes awaiting their PublishAck at once.
const MAX_IN_FLIGHT: usize = 4096;
/// Event JSON held while waiting to be stored; beyond it the sink stops
/// taking deliveries and the broker (then the collectors' WALs) waits.
const HOLD_BYTES: usize = 64 * 1024 * 1024;
/// After the agent closes the sink, how long it still tries to store what it holds.
const DRAIN_AT_CLOSE: Duration = Duration::from_secs(5);

/// One event waiting for its PublishAck.
struct Item {
    delivery: u64,
    collector: String,
    epoch: u64,
    seq: u64,
    subject: String,
    payload: Bytes,
}

/// A delivery whose events are not all stored yet.
struct Held {
    remaining: usize,
    bytes: usize,
    done: oneshot::Sender<()>,
}

/// What the sink holds, and its bookkeeping.
struct State<'a> {
    prepared: &'a Prepared,
    stats: &'a SinkStats,
    dedupe: Dedupe,
    queue: VecDeque<Item>,
    held: HashMap<u64, Held>,
    held_bytes: usize,
    next_delivery: u64,
    line: Vec<u8>,
}

impl State<'_> {
    /// Queues the events of a delivery; confirms at once if there are none to store.
    fn accept(&mut self, Durable { batch, done }: Durable) {
        let delivery = self.next_delivery;
        self.next_delivery += 1;
        let (mut count, mut bytes) = (0, 0);
        for entry in batch.iter() {
            let event = match entry.decode() {
                Ok(e) => e,
                Err(e) => {
                    self.stats.invalid.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, seq = entry.seq, "nats sink dropped an invalid event");
                    continue;
                }
            };
            if self
                .dedupe
                .seen(&event.collector_id, event.epoch, event.seq)
            {
                self.stats.duplicates.fetch_add(1, Relaxed);
                continue;
            }
            self.line.clear();
            self.prepared.format.write_json(&event, &mut self.line);
            bytes += self.line.len();
            count += 1;
            self.queue.push_back(Item {
                delivery,
                subject: self.prepared.subject(event.kind.as_str()),
                collector: event.collector_id,
                epoch: event.epoch,
                seq: event.seq,
                payload: Bytes::copy_from_slice(&self.line),
            });
        }
        if count == 0 {
            let _ = done.send(());
            return;
        }
        self.held.insert(
            delivery,
            Held {
                remaining: count,
                bytes,
                done,
            },
        );
        self.held_bytes += bytes;
        self.stats.lag.fetch_add(count as u64, Relaxed);
    }

    /// One event is stored: confirms its delivery when it was the last.
    fn stored(&mut self, item: &Item, duplicate: bool) {
        let counter = if duplicate {
            &self.stats.duplicates
        } else {
            &self.stats.written
        };
        counter.fetch_add(1, Relaxed);
        self.dedupe.is_new(&item.collector, item.epoch, item.seq);
        self.stats.lag.fetch_sub(1, Relaxed);
        let Some(held) = self.held.get_mut(&item.delivery) else {
            return;
        };
        held.remaining -= 1;
        if held.remaining == 0
            && let Some(held) = self.held.remove(&item.delivery)
        {
            self.held_bytes -= held.bytes;
            let _ = held.done.send(());
        }
    }

    fn lag(&self) -> u64 {
        self.held.values().map(|h| h.remaining as u64).sum()
    }
}

/// Retry pacing after a failed attempt; reset by a success.
#[derive(Default)]
struct Retry {
    failures: usize,
    until: Option<Instant>,
}

impl Retry {
    fn failed(&mut self, stats: &SinkStats, what: &str, error: &dyn std::fmt::Display) {
        let n = stats.failed(&format_args!("{what}: {error}"));
        self.failures += 1;
        let wait = backoff(self.failures).max(BACKOFF_MIN);
        if n <= 10 || n.is_power_of_two() {
            tracing::warn!(error = %error, errors = n, retry_in = ?wait, "nats sink: {what} failed; retrying (nothing is confirmed until stored)");
        }
        self.until = Some(Instant::now() + wait);
    }
}

type AckFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (Item, Result<PublishAck, jetstream::context::PublishError>),
            > + Send,
    >,
>;

/// Runs the sink until `rx` closes (then at most `DRAIN_AT_CLOSE` more).
pub async fn run(
    prepared: Prepared,
    mut rx: mpsc::Receiver<Durable>,
    stats: Arc<SinkStats>,
) -> Result<(), NatsSinkError> {
    let (up_tx, mut up) = watch::channel(false);
    let ever = Arc::new(AtomicBool::new(false));
    let options = {
        let (stats, url, ever) = (stats.clone(), prepared.url.clone(), ever.clone());
        prepared.options.clone().event_callback(move |event| {
            on_event(&event, &stats, &url, &ever, &up_tx);
            std::future::ready(())
        })
    };
    let client = options.connect(prepared.url.as_str()).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(prepared.ack_timeout)
        .max_ack_inflight(MAX_IN_FLIGHT)
        .backpressure_on_inflight(true)
        .build(client);
    let mut state = State {
        prepared: &prepared,
        stats: &stats,
        dedupe: Dedupe::default(),
        queue: VecDeque::new(),
        held: HashMap::new(),
        held_bytes: 0,
        next_delivery: 0,
        line: Vec::with_capacity(1024),
    };
    let mut in_flight: FuturesUnordered<AckFuture> = FuturesUnordered::new();
    let mut retry = Retry::default();
    let mut stream_ready = false;
    let mut closing: Option<Instant> = None;
    loop {
        if retry.until.is_some_and(|t| t <= Instant::now()) {
            retry.until = None;
        }
        if *up.borrow() {
            let link = Link {
                js: &js,
                in_flight: &mut in_flight,
                retry: &mut retry,
                stream_ready: &mut stream_ready,
            };
            send_queued(&mut state, link).await;
        }
        if closing.is_some() && state.held.is_empty() {
            break;
        }
        let taking = closing.is_none() && state.held_bytes < HOLD_BYTES;
        tokio::select! {
            Some((item, result)) = in_flight.next(), if !in_flight.is_empty() => {
                on_ack(&mut state, &mut retry, &mut stream_ready, item, result);
            }
            delivery = rx.recv(), if taking => match delivery {
                Some(d) => state.accept(d),
                None => closing = Some(Instant::now() + DRAIN_AT_CLOSE),
            },
            _ = up.changed() => {}
            () = sleep_until(retry.until), if retry.until.is_some() => {}
            () = sleep_until(closing), if closing.is_some() => break,
        }
    }
    let left = state.lag();
    if left > 0 {
        tracing::warn!(
            events = left,
            "nats sink closed with events not stored: their publishes stay unacknowledged in the collectors' WALs"
        );
    }
    Ok(())
}

/// What publishing needs besides the sink's state.
struct Link<'a> {
    js: &'a jetstream::Context,
    in_flight: &'a mut FuturesUnordered<AckFuture>,
    retry: &'a mut Retry,
    stream_ready: &'a mut bool,
}

/// While connected and not backing off: checks the stream once, then
/// publishes queued events while the in-flight window has room.
async fn send_queued(state: &mut State<'_>, link: Link<'_>) {
    let Link {
        js,
        in_flight,
        retry,
        stream_ready,
    } = link;
    let (prepared, stats) = (state.prepared, state.stats);
    if retry.until.is_none() && !*stream_ready && !state.queue.is_empty() {
        match ensure_stream(js, prepared).await {
            Ok(()) => *stream_ready = true,
            Err(e) => retry.failed(stats, "checking the stream", &e),
        }
    }
    while *stream_ready && retry.until.is_none() && in_flight.len() < MAX_IN_FLIGHT {
        let Some(item) = state.queue.pop_front() else {
            break;
        };
        let message = PublishMessage::build()
            .message_id(prepared.msg_id(&item.collector, item.epoch, item.seq))
            .payload(item.payload.clone());
        match js.send_publish(item.subject.clone(), message).await {
            Ok(ack) => in_flight.push(Box::pin(async move { (item, ack.await) })),
            Err(e) => {
                state.queue.push_front(item);
                retry.failed(stats, "publishing", &e);
            }
        }
    }
}

/// A PublishAck (stored, perhaps as a duplicate) or its failure (sent
/// again after a backoff; a missing stream is created again first).
fn on_ack(
    state: &mut State<'_>,
    retry: &mut Retry,
    stream_ready: &mut bool,
    item: Item,
    result: Result<PublishAck, jetstream::context::PublishError>,
) {
    match result {
        Ok(ack) => {
            retry.failures = 0;
            if state.stats.recovered() {
                tracing::info!(url = %state.prepared.url, "nats sink stores again");
            }
            state.stored(&item, ack.duplicate);
        }
        Err(e) => {
            if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                *stream_ready = false;
            }
            state.queue.push_front(item);
            retry.failed(state.stats, "waiting for a PublishAck", &e);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
