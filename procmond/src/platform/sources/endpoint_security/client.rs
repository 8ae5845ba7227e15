//! The EndpointSecurity client (macOS only): one `endpoint_sec::Client`
//! subscribed to NOTIFY_EXEC, NOTIFY_FORK and NOTIFY_EXIT, and the thread
//! that owns it.
//!
//! ES calls the handler on its own serial dispatch queue. It kills only
//! clients that miss an AUTH message's deadline (`es_message_t.deadline`),
//! and procmond subscribes to NOTIFY events only; but while the handler
//! runs, ES queues further messages for this client and drops them when
//! that queue is full (the gaps `seq` counts). So the handler only hands
//! the message on:
//! `try_send` of the retained `Message` (a reference-count bump on macOS
//! 11+, no copy) into a bounded, preallocated queue (`HANDOFF_CAPACITY`).
//! It never blocks and never allocates. When the queue is full the message
//! is released and counted (`handoff_dropped`); its sequence numbers leave
//! a gap that the reader counts into `kernel_lost` with every other loss
//! (`seq`), so nothing is counted twice.
//!
//! The thread that creates the client (it is neither `Send` nor `Sync`,
//! and must be deleted where it was created) is also the reader: it drains
//! the queue, counts sequence gaps, decodes (`decode`: the allocations
//! happen here) and sends `SourceMsg::Events` batches; a barrier is
//! answered once a drain that started after it has emptied the queue, as on
//! Linux. It reads at most a queue's worth between two looks at its stop
//! flag; on stop it deletes the client first, so nothing new arrives, then
//! sends what the queue still holds.

use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use endpoint_sec::sys::{NewClientError, es_event_type_t};
use endpoint_sec::{Client, Event, File, Message, Process};
use tokio::sync::mpsc;

use super::decode::{self, ARGS_TAKEN, EsEvent, EsFile, EsMessage, EsProcess};
use super::reason::{EsError, NewClientFailure};
use super::seq::GapCounter;
use crate::metrics::Metrics;
use crate::model::ProcessEvent;
use crate::model::identity::MacBoot;
use crate::sources::SourceMsg;
use crate::sources::stream::{ReaderThread, StartedStream};

const SUBSCRIPTIONS: [es_event_type_t; 3] = [
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_EXEC,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_FORK,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_EXIT,
];
// The numbers the platform-neutral modules and their tests use are the
// SDK's (endpoint-sec-sys mirrors ESTypes.h).
const _: () = {
    use super::decode::event_type;
    assert!(es_event_type_t::ES_EVENT_TYPE_NOTIFY_EXEC.0 == event_type::NOTIFY_EXEC);
    assert!(es_event_type_t::ES_EVENT_TYPE_NOTIFY_FORK.0 == event_type::NOTIFY_FORK);
    assert!(es_event_type_t::ES_EVENT_TYPE_NOTIFY_EXIT.0 == event_type::NOTIFY_EXIT);
};
/// Messages the handler may queue ahead of the reader (about a second of a
/// fork storm); each slot holds a retained pointer.
const HANDOFF_CAPACITY: usize = 16_384;
/// How long the reader waits for a message before looking at its stop flag
/// and barriers.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Most events in one batch sent to the sensor.
const MAX_BATCH: usize = 4096;
/// Most messages read between two looks at the stop flag (one queue's
/// worth): a storm cannot keep the thread from stopping.
const MAX_PER_ROUND: usize = HANDOFF_CAPACITY;

/// What the handler counts; shared with the reader for its warnings.
#[derive(Debug, Default)]
struct HandoffCounters {
    /// Messages released because the queue was full.
    dropped: AtomicU64,
}

/// Tells the crate which macOS runs (it picks `es_retain_message` over a
/// copy from 11.0 on); left at its conservative default when unknown.
pub fn set_runtime_version() {
    if let Some((major, minor, patch)) = super::macos_version() {
        // The crate panics below 10.15; `precheck` refuses below 11.
        if (major, minor) >= (10, 15) {
            endpoint_sec::version::set_runtime_version(major, minor, patch);
        }
    }
}

/// Starts the client thread; returns once the client is subscribed, or
/// with the reason it could not be.
pub fn start(tx: mpsc::Sender<SourceMsg>, metrics: Arc<Metrics>) -> Result<StartedStream, String> {
    set_runtime_version();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = ReaderThread::spawn("es-client", move |stop, barriers| {
        run(&tx, &metrics, stop, barriers, &ready_tx)
    })
    .map_err(|e| EsError::Thread(e).to_string())?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(StartedStream {
            source: crate::model::EventSource::EndpointSecurity,
            degraded_reason: None,
            stream: Box::new(thread),
            snapshot_reader: None,
            probes: None,
        }),
        Ok(Err(e)) => {
            thread.join();
            Err(e.to_string())
        }
        Err(_) => {
            thread.join();
            Err(EsError::ThreadGone.to_string())
        }
    }
}

/// Creates a client, subscribes it and deletes it again (`capabilities`).
pub fn probe() -> Result<(), String> {
    set_runtime_version();
    let client = open(|_: &mut Client<'_>, _: Message| {}).map_err(|e| e.to_string())?;
    client
        .delete()
        .map_err(|e| format!("es_delete_client failed: {e}"))
}

/// `es_new_client` with `handler`, then `es_subscribe`.
fn open<'b, F>(handler: F) -> Result<Client<'b>, EsError>
where
    F: Fn(&mut Client<'_>, Message) + std::panic::RefUnwindSafe + 'b,
{
    let mut client = Client::new(handler).map_err(|e| EsError::NewClient(failure(e)))?;
    client
        .subscribe(&SUBSCRIPTIONS)
        .map_err(|e| EsError::Subscribe(e.to_string()))?;
    Ok(client)
}

fn failure(e: NewClientError) -> NewClientFailure {
    match e {
        NewClientError::InvalidArgument => NewClientFailure::InvalidArgument,
        NewClientError::Internal => NewClientFailure::Internal,
        NewClientError::NotEntitled => NewClientFailure::NotEntitled,
        NewClientError::NotPermitted => NewClientFailure::NotPermitted,
        NewClientError::NotPrivileged => NewClientFailure::NotPrivileged,
        NewClientError::TooManyClients => NewClientFailure::TooManyClients,
        NewClientError::ApiUnavailable => NewClientFailure::ApiUnavailable,
        NewClientError::Unknown(code) => NewClientFailure::Unknown(code.0),
    }
}

/// The client thread: create, report ready, read until stopped.
fn run(
    tx: &mpsc::Sender<SourceMsg>,
    metrics: &Metrics,
    stop: &AtomicBool,
    barriers: &Receiver<u64>,
    ready: &SyncSender<Result<(), EsError>>,
) {
    let (handoff, queue) = std::sync::mpsc::sync_channel::<Message>(HANDOFF_CAPACITY);
    let counters = Arc::new(HandoffCounters::default());
    // The handler must be unwind-safe: a panic inside it (the crate
    // catches it) leaves the channel and the counter consistent.
    let shared = AssertUnwindSafe((handoff, counters.clone()));
    let client = open(move |_: &mut Client<'_>, msg: Message| {
        let (handoff, counters) = &*shared;
        if let Err(TrySendError::Full(msg)) = handoff.try_send(msg) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            drop(msg);
        }
    });
    let mut client = match client {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    tracing::info!(
        handoff_capacity = HANDOFF_CAPACITY,
        "EndpointSecurity client subscribed to NOTIFY_EXEC, NOTIFY_FORK, NOTIFY_EXIT"
    );
    let mut reader = Reader {
        boot: super::boot(),
        tx,
        metrics,
        gaps: GapCounter::default(),
        dropped_seen: 0,
    };
    let mut pending: Vec<u64> = Vec::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let first = if stopping {
            // Deleted on the thread that created it; nothing new after this.
            if let Some(c) = client.take()
                && let Err(e) = c.delete()
            {
                tracing::warn!(error = %e, "es_delete_client failed");
            }
            None
        } else {
            match queue.recv_timeout(POLL_INTERVAL) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    tracing::error!("EndpointSecurity released its handler: the client is gone");
                    return;
                }
            }
        };
        // Requests seen before a drain are answered once a drain has
        // emptied the queue: everything queued before them has been sent.
        pending.extend(barriers.try_iter());
        let limit = if stopping { usize::MAX } else { MAX_PER_ROUND };
        let Some(emptied) = reader.drain(first, &queue, limit) else {
            return;
        };
        reader.report_handoff_drops(&counters);
        if emptied {
            for id in pending.drain(..) {
                if tx.blocking_send(SourceMsg::Barrier(id)).is_err() {
                    return;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// The reader's state.
struct Reader<'a> {
    /// This boot's facts for `entity_id` (`super::boot`); `None` leaves ids
    /// out.
    boot: Option<&'static MacBoot>,
    tx: &'a mpsc::Sender<SourceMsg>,
    metrics: &'a Metrics,
    gaps: GapCounter,
    dropped_seen: u64,
}

impl Reader<'_> {
    /// Sends `first` and what is queued behind it, in batches, up to
    /// `limit` messages; whether the queue was emptied, or `None` when the
    /// sensor is gone.
    fn drain(
        &mut self,
        first: Option<Message>,
        queue: &Receiver<Message>,
        limit: usize,
    ) -> Option<bool> {
        let mut batch = Vec::new();
        let mut next = first.or_else(|| queue.try_recv().ok());
        let mut read = 0usize;
        while let Some(msg) = next {
            if let Some(event) = self.take(&msg) {
                batch.push(event);
            }
            drop(msg);
            if batch.len() >= MAX_BATCH {
                self.send(std::mem::take(&mut batch))?;
            }
            read += 1;
            if read >= limit {
                break;
            }
            next = queue.try_recv().ok();
        }
        if !batch.is_empty() {
            self.send(batch)?;
        }
        Some(read < limit)
    }

    /// Counts the message's sequence gaps, then decodes it.
    fn take(&mut self, msg: &Message) -> Option<ProcessEvent> {
        let gap = self
            .gaps
            .observe(msg.event_type().0, msg.seq_num(), msg.global_seq_num());
        if gap.lost > 0 {
            self.metrics
                .kernel_lost
                .fetch_add(gap.lost, Ordering::Relaxed);
            tracing::warn!(
                lost = gap.lost,
                total = self.gaps.lost(),
                "EndpointSecurity sequence gap: messages dropped (reconciliation will catch long-lived processes)"
            );
        }
        if gap.reset {
            tracing::warn!(
                "EndpointSecurity sequence numbers started over; counting from the new ones"
            );
        }
        let boot = self.boot;
        let decoded = view(msg)
            .ok_or_else(|| format!("unexpected event type {}", msg.event_type().0))
            .and_then(|m| {
                let mut event = decode::to_event(&m).map_err(|e| e.to_string())?;
                if let Some(boot) = boot {
                    // A fork names its parent itself; otherwise the parent's
                    // start is read now (it may have exited: no id then).
                    let parent_start = match m.event {
                        EsEvent::Fork { .. } => None,
                        _ => event.ppid.and_then(|p| super::ffi::start_time(p).ok()),
                    };
                    decode::identify(&mut event, &m, boot, parent_start);
                }
                Ok(event)
            });
        match decoded {
            Ok(event) => Some(event),
            Err(error) => {
                let n = self
                    .metrics
                    .records_malformed
                    .fetch_add(1, Ordering::Relaxed);
                if n < 10 || n.is_power_of_two() {
                    tracing::warn!(%error, dropped_so_far = n + 1, "EndpointSecurity message dropped");
                }
                None
            }
        }
    }

    fn send(&self, batch: Vec<ProcessEvent>) -> Option<()> {
        Metrics::add(&self.metrics.events_observed, batch.len() as u64);
        self.tx.blocking_send(SourceMsg::Events(batch)).ok()
    }

    /// Warns about messages the handler had to release (already counted
    /// as sequence gaps).
    fn report_handoff_drops(&mut self, counters: &HandoffCounters) {
        let total = counters.dropped.load(Ordering::Relaxed);
        if total > self.dropped_seen {
            tracing::warn!(
                dropped = total - self.dropped_seen,
                total,
                "EndpointSecurity hand-off queue full: messages released unread (counted in kernel_lost through their sequence gaps)"
            );
            self.dropped_seen = total;
        }
    }
}

/// The plain-data view of `msg` that `decode` maps; `None` for an event
/// procmond did not subscribe to.
fn view(msg: &Message) -> Option<EsMessage<'_>> {
    let event = match msg.event()? {
        Event::NotifyExec(exec) => EsEvent::Exec {
            target: process(&exec.target()),
            args: exec
                .args()
                .take(ARGS_TAKEN)
                .map(OsStrExt::as_bytes)
                .collect(),
            arg_count: exec.arg_count(),
            cwd: exec.cwd().map(|f| file(&f)),
        },
        Event::NotifyFork(fork) => EsEvent::Fork {
            child: process(&fork.child()),
        },
        Event::NotifyExit(exit) => EsEvent::Exit { stat: exit.stat() },
        _ => return None,
    };
    Some(EsMessage {
        version: msg.version(),
        time: msg.time(),
        event_type: msg.event_type().0,
        seq_num: msg.seq_num(),
        global_seq_num: msg.global_seq_num(),
        thread_id: msg.thread().map(|t| t.thread_id()),
        process: process(&msg.process()),
        event,
    })
}

fn process<'a>(p: &Process<'a>) -> EsProcess<'a> {
    let token = p.audit_token();
    EsProcess {
        pid: token.pid(),
        pidversion: token.pidversion(),
        ruid: token.ruid(),
        euid: token.euid(),
        rgid: token.rgid(),
        ppid: p.ppid(),
        original_ppid: p.original_ppid(),
        executable: file(&p.executable()),
        start_time: p.start_time(),
        signing_id: p.signing_id().as_bytes(),
        team_id: p.team_id().as_bytes(),
        cdhash: p.cdhash(),
        is_platform_binary: p.is_platform_binary(),
    }
}

fn file<'a>(f: &File<'a>) -> EsFile<'a> {
    EsFile {
        path: f.path().as_bytes(),
        truncated: f.path_truncated(),
    }
}
