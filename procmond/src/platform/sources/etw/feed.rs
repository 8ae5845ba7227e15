//! The queue between the ETW callbacks and the correlator thread, and the
//! stream's barriers and stop on their own channel.
//!
//! The callbacks block when the event queue is full (`Feed::push`): ETW's
//! buffers then fill and ETW counts what it drops — the loss is reported,
//! never hidden. The sensor loop is async and must never block, while the
//! correlator may itself wait on the sensor's channel: so `Control`'s
//! barrier and stop go through an unbounded channel and never wait. Each
//! carries a mark, how many events had been fed when it was asked, and the
//! intake hands it to the correlator right after that many events
//! (`Intake::next`): a barrier still covers exactly what came before it.
//!
//! The probe feeds nothing (`Feed::discard`): its callbacks return at once
//! while the rundown replays every live process. Pure std; the tests run
//! everywhere (`feed_tests.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, channel as unbounded,
    sync_channel,
};
use std::time::Duration;

use super::decode::Props;

/// One event a callback copied out of ETW.
#[derive(Debug)]
pub enum Event {
    Modern {
        id: u16,
        /// EVENT_HEADER.TimeStamp (FILETIME).
        timestamp: u64,
        props: Props,
    },
    Classic {
        opcode: u8,
        timestamp: u64,
        pointer_size: usize,
        props: Props,
    },
}

/// What the correlator thread gets, in order.
#[derive(Debug)]
pub enum Item {
    Event(Event),
    /// Answer once everything before it has left.
    Barrier(u64),
    /// Everything fed before the stop was asked has been handed over.
    Stop,
}

#[derive(Debug)]
enum Ctl {
    Barrier { id: u64, mark: u64 },
    Stop { mark: u64 },
}

/// The callbacks' end (cloned into each).
#[derive(Debug, Clone)]
pub struct Feed {
    events: Option<SyncSender<Event>>,
    fed: Arc<AtomicU64>,
}

/// The stream's end: barriers and stop, never blocking.
#[derive(Debug)]
pub struct Control {
    control: Sender<Ctl>,
    fed: Arc<AtomicU64>,
}

/// The correlator thread's end.
#[derive(Debug)]
pub struct Intake {
    events: Receiver<Event>,
    control: Receiver<Ctl>,
    received: u64,
    waiting: VecDeque<Ctl>,
    fed: Arc<AtomicU64>,
}

/// A queue of `capacity` events with its control channel.
pub fn channel(capacity: usize) -> (Feed, Control, Intake) {
    let (events_tx, events) = sync_channel(capacity);
    let (control_tx, control) = unbounded();
    let fed = Arc::new(AtomicU64::new(0));
    (
        Feed {
            events: Some(events_tx),
            fed: fed.clone(),
        },
        Control {
            control: control_tx,
            fed: fed.clone(),
        },
        Intake {
            events,
            control,
            received: 0,
            waiting: VecDeque::new(),
            fed,
        },
    )
}

impl Feed {
    /// A feed that drops every event (the probe reads nothing).
    pub fn discard() -> Self {
        Self {
            events: None,
            fed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues one event, waiting while the queue is full (ETW then counts
    /// its losses); counted before it is sent, so a mark taken meanwhile
    /// includes it.
    pub fn push(&self, event: Event) {
        let Some(tx) = &self.events else { return };
        self.fed.fetch_add(1, Ordering::SeqCst);
        if tx.send(event).is_err() {
            // The correlator is gone; nothing waits for this count.
        }
    }
}

impl Control {
    /// Asks for `Item::Barrier(id)` after everything fed so far.
    pub fn barrier(&self, id: u64) {
        let mark = self.fed.load(Ordering::SeqCst);
        let _ = self.control.send(Ctl::Barrier { id, mark });
    }

    /// Asks for `Item::Stop` after everything fed so far (call it once the
    /// sessions' threads have returned: nothing is fed after it).
    pub fn stop(&self) {
        let mark = self.fed.load(Ordering::SeqCst);
        let _ = self.control.send(Ctl::Stop { mark });
    }
}

impl Intake {
    /// The next items: waits up to `wait` for the first event, takes up to
    /// `max` more that are ready, with each barrier or stop placed after
    /// the events fed before it was asked.
    pub fn next(&mut self, wait: Duration, max: usize) -> Vec<Item> {
        let mut out = Vec::new();
        self.due(&mut out);
        if matches!(out.last(), Some(Item::Stop)) {
            return out;
        }
        let first = match self.events.recv_timeout(wait) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // No feed is left: whatever was fed has been received.
                self.fed.store(self.received, Ordering::SeqCst);
                None
            }
        };
        let Some(first) = first else {
            self.due(&mut out);
            return out;
        };
        self.take(first, &mut out);
        for _ in 0..max {
            match self.events.try_recv() {
                Ok(event) => self.take(event, &mut out),
                Err(_) => break,
            }
        }
        self.due(&mut out);
        out
    }

    fn take(&mut self, event: Event, out: &mut Vec<Item>) {
        self.received += 1;
        out.push(Item::Event(event));
        self.due(out);
    }

    /// Moves new control messages in, and out those whose mark is reached.
    fn due(&mut self, out: &mut Vec<Item>) {
        loop {
            match self.control.try_recv() {
                Ok(c) => self.waiting.push_back(c),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // The stream is gone without a stop: stop after all.
                    let mark = self.fed.load(Ordering::SeqCst);
                    if !self.waiting.iter().any(|c| matches!(c, Ctl::Stop { .. })) {
                        self.waiting.push_back(Ctl::Stop { mark });
                    }
                    break;
                }
            }
        }
        while let Some(c) = self.waiting.front() {
            let mark = match c {
                Ctl::Barrier { mark, .. } | Ctl::Stop { mark } => *mark,
            };
            if mark > self.received {
                break;
            }
            match self.waiting.pop_front() {
                Some(Ctl::Barrier { id, .. }) => out.push(Item::Barrier(id)),
                Some(Ctl::Stop { .. }) => {
                    out.push(Item::Stop);
                    return;
                }
                None => break,
            }
        }
    }
}
