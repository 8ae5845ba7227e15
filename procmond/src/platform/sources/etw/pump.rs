//! The "etw-correlator" thread (Windows only; `session.rs` starts it): takes
//! the callbacks' events, barriers and stop from `feed`, joins and orders
//! them (`correlate`), sends them to the sensor, answers barriers, keeps
//! `kernel_lost` (`health`) and the DOS device map current, and ends —
//! logging why — when a session ended without being asked to or cannot be
//! queried: the sensor then sees its reader gone instead of a source that
//! silently went blind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::correlate::{CorrelateConfig, Correlator};
use super::decode;
use super::feed::{Event, Intake, Item};
use super::health::LossBook;
use super::identity::Identities;
use super::ntpath::DeviceMap;
use super::rundown::Rundown;
use crate::metrics::Metrics;
use crate::model::ProcessEvent;
use crate::sources::SourceMsg;

/// Most events in one batch sent to the sensor.
const MAX_BATCH: usize = 4096;
const LOSS_EVERY: Duration = Duration::from_secs(1);
/// How often the DOS device map is read again (drives come and go).
const DEVICES_EVERY: Duration = Duration::from_secs(30);

/// What the correlator watches besides its queue: the sessions' names
/// (for the loss query) and whether one ended without being asked to.
pub(super) struct Watch {
    pub names: Vec<String>,
    pub stopping: Arc<AtomicBool>,
    pub ended: Arc<AtomicUsize>,
}

impl Watch {
    /// Why the source is failing, if it is: a session ended from outside,
    /// or could not be asked what it lost.
    fn failure(&self, lost: &[String]) -> Option<String> {
        if self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let ended = self.ended.load(Ordering::SeqCst);
        if ended > 0 {
            return Some(format!(
                "{ended} ETW session(s) of {:?} ended without procmond stopping them (stopped from outside?)",
                self.names
            ));
        }
        (!lost.is_empty()).then(|| lost.join("; "))
    }
}

pub(super) fn correlate_loop(
    mut intake: Intake,
    tx: &mpsc::Sender<SourceMsg>,
    metrics: &Metrics,
    config: CorrelateConfig,
    ids: Option<Identities>,
    watch: &Watch,
    rundown: &Mutex<Rundown>,
) {
    let began = Instant::now();
    let now = || began.elapsed().as_nanos() as u64;
    let mut corr = Correlator::new(config, DeviceMap::current());
    if let Some(ids) = ids {
        corr = corr.with_identities(ids);
    }
    let mut book = LossBook::new(watch.names.len());
    let mut barriers: VecDeque<(u64, u64)> = VecDeque::new();
    let (mut last_loss, mut last_devices) = (Instant::now(), Instant::now());
    let mut stopping = false;
    while !stopping {
        for item in intake.next(Duration::from_millis(50), MAX_BATCH) {
            match item {
                Item::Stop => stopping = true,
                Item::Barrier(id) => barriers.push_back((id, corr.next_id())),
                Item::Event(e) => apply(e, &mut corr, rundown, metrics, now()),
            }
        }
        let events = if stopping {
            corr.drain()
        } else {
            corr.ready(now())
        };
        if send(tx, metrics, events).is_none() {
            return;
        }
        while let Some((id, _)) = barriers.front().filter(|(_, wait)| *wait <= corr.head_id()) {
            if tx.blocking_send(SourceMsg::Barrier(*id)).is_err() {
                return;
            }
            barriers.pop_front();
        }
        if stopping || last_loss.elapsed() >= LOSS_EVERY {
            let failed = update_lost(&watch.names, metrics, &mut book);
            last_loss = Instant::now();
            if let Some(why) = watch.failure(&failed) {
                tracing::error!(reason = %why, "ETW source failed: the host is no longer watched");
                let _ = send(tx, metrics, corr.drain());
                return;
            }
        }
        if last_devices.elapsed() >= DEVICES_EVERY {
            corr.set_devices(DeviceMap::current());
            last_devices = Instant::now();
        }
    }
    tracing::info!(stats = ?corr.stats, "ETW correlation finished");
}

fn apply(msg: Event, corr: &mut Correlator, rundown: &Mutex<Rundown>, metrics: &Metrics, now: u64) {
    match msg {
        Event::Modern { id, props, .. } => {
            let decoded = if id == decode::EVENT_PROCESS_START {
                decode::kp_start(&props).map(|kp| corr.modern_start(kp, now))
            } else {
                decode::kp_stop(&props).map(|kp| corr.modern_stop(kp, now))
            };
            if decoded.is_err() {
                Metrics::incr(&metrics.records_malformed);
            }
        }
        Event::Classic {
            opcode,
            timestamp,
            pointer_size,
            props,
        } => {
            let (Some(op), Ok(c)) = (
                decode::classic_op(opcode),
                decode::classic(&props, timestamp, pointer_size),
            ) else {
                Metrics::incr(&metrics.records_malformed);
                return;
            };
            rundown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(op, &c);
            match op {
                decode::ClassicOp::Start => corr.classic(c, false, now),
                decode::ClassicOp::End => corr.classic(c, true, now),
                decode::ClassicOp::DcStart | decode::ClassicOp::DcEnd => {}
            }
        }
    }
}

fn send(tx: &mpsc::Sender<SourceMsg>, metrics: &Metrics, events: Vec<ProcessEvent>) -> Option<()> {
    if events.is_empty() {
        return Some(());
    }
    for chunk in events.chunks(MAX_BATCH) {
        Metrics::add(&metrics.events_observed, chunk.len() as u64);
        tx.blocking_send(SourceMsg::Events(chunk.to_vec())).ok()?;
    }
    Some(())
}

/// Adds to `kernel_lost` what the sessions report lost since the last
/// query (events, plus real-time buffers: a lost buffer held an unknown
/// number of events and counts as one), warning when it grew; never lowers
/// it. Returns why a session could not be queried.
fn update_lost(names: &[String], metrics: &Metrics, book: &mut LossBook) -> Vec<String> {
    let answers: Vec<Result<u64, String>> = names
        .iter()
        .map(|n| {
            crate::sys::windows::query_trace(n)
                .map(|q| u64::from(q.events_lost) + u64::from(q.realtime_buffers_lost))
                .map_err(|e| format!("ETW session {n} cannot be queried: {e}"))
        })
        .collect();
    let (total, failed) = book.update(&answers);
    let before = metrics.kernel_lost.fetch_max(total, Ordering::Relaxed);
    if total > before {
        tracing::warn!(
            lost = total - before,
            total,
            "ETW sessions lost events (reconciliation will catch long-lived processes)"
        );
    }
    failed
}
