//! The ETW sessions themselves (Windows only), with ferrisetw 1.2.
//!
//! Two named real-time sessions per collector (`access::session_names`):
//! * a user session on Microsoft-Windows-Kernel-Process, keyword 0x10,
//!   whose callback keeps events 1 (ProcessStart) and 2 (ProcessStop);
//! * a system-logger session on the classic kernel provider's process
//!   flag (`Process_TypeGroup1`: Start, End, and DCStart/DCEnd, the rundown
//!   of live processes when it starts).
//!
//! Both use 64 KiB buffers, 64 to 512 of them, flushed every second: the
//! defaults (a handful of small buffers) lose starts under a fork storm.
//! A session of the same name left by a crashed run is stopped first — but
//! only once this process holds the collector's lock file
//! (`%ProgramData%\procmond\etw\<id>.lock`, opened without sharing): a live
//! collector with the same id holds it, so its sessions are never taken
//! away; a crashed one's lock went with its process.
//!
//! Each session's `ProcessTrace` runs on its own thread and its callback
//! only copies the event's properties (`decode::*_FIELDS`) into a bounded
//! channel; when that is full the callback waits, ETW's buffers fill, and
//! ETW counts what it drops. One "etw-correlator" thread decodes, joins the
//! two sides (`correlate`), sends `SourceMsg::Events` batches, answers
//! barriers once everything received before them has left, and every
//! second asks both sessions what they lost (`ControlTraceW` QUERY:
//! EventsLost + RealTimeBuffersLost) for `kernel_lost`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrisetw::parser::Parser;
use ferrisetw::provider::{Provider, kernel_providers};
use ferrisetw::trace::{
    KernelTrace, LoggingMode, TraceError, TraceProperties, TraceTrait, UserTrace,
    stop_trace_by_name,
};
use ferrisetw::{EventRecord, SchemaLocator};
use tokio::sync::mpsc;

use super::access::{self, session_names};
use super::correlate::{CorrelateConfig, Correlator};
use super::decode::{self, Kind, Props, Value};
use super::identity::Identities;
use super::ntpath::DeviceMap;
use super::rundown::Rundown;
use crate::metrics::Metrics;
use crate::model::ProcessEvent;
use crate::sources::SourceMsg;
use crate::sources::snapshot::SnapshotReader;
use crate::sources::stream::{KernelStream, StartedStream};

const BUFFER_KB: u32 = 64;
const MIN_BUFFERS: u32 = 64;
const MAX_BUFFERS: u32 = 512;
/// Events waiting between the callbacks and the correlator thread.
const INPUT_QUEUE: usize = 65_536;
/// Most events in one batch sent to the sensor.
const MAX_BATCH: usize = 4096;
const LOSS_EVERY: Duration = Duration::from_secs(1);

/// What the callbacks and the stream hand the correlator thread.
enum Input {
    Modern {
        id: u16,
        props: Props,
    },
    Classic {
        opcode: u8,
        timestamp: u64,
        pointer_size: usize,
        props: Props,
    },
    Barrier(u64),
    Stop,
}

fn properties() -> TraceProperties {
    TraceProperties {
        buffer_size: BUFFER_KB,
        min_buffer: MIN_BUFFERS,
        max_buffer: MAX_BUFFERS,
        flush_timer: Duration::from_secs(1),
        log_file_mode: LoggingMode::EVENT_TRACE_REAL_TIME_MODE,
    }
}

fn failure(session: &str, e: &TraceError) -> String {
    let code = match e {
        TraceError::EtwNativeError(ferrisetw::native::EvntraceNativeError::IoError(io)) => {
            io.raw_os_error()
        }
        TraceError::EtwNativeError(ferrisetw::native::EvntraceNativeError::AlreadyExist) => {
            Some(183)
        }
        _ => None,
    };
    access::start_failure(session, code, &format!("{e:?}"))
}

/// Stops a session of this name left by an earlier run, if there is one.
fn clean_up(name: &str) {
    if stop_trace_by_name(name).is_ok() {
        tracing::warn!(
            session = name,
            "stopped an ETW session left by a previous run"
        );
    }
}

/// Copies `fields` of one event into `Props`; `None` when it has no schema.
fn extract(
    record: &EventRecord,
    locator: &SchemaLocator,
    fields: &[(&str, Kind)],
) -> Option<Props> {
    let schema = locator.event_schema(record).ok()?;
    let parser = Parser::create(record, &schema);
    let mut props = Props::default();
    for (name, kind) in fields {
        let value = match kind {
            Kind::U32 => parser.try_parse::<u32>(name).ok().map(Value::U32),
            Kind::U64 => parser.try_parse::<u64>(name).ok().map(Value::U64),
            Kind::I32 => parser.try_parse::<i32>(name).ok().map(Value::I32),
            Kind::Str => parser.try_parse::<String>(name).ok().map(Value::Str),
            Kind::Bytes => parser.try_parse::<Vec<u8>>(name).ok().map(Value::Bytes),
            // The raw bytes: ferrisetw would decode them as UTF-8.
            Kind::Ansi => parser.try_parse::<Vec<u8>>(name).ok().map(Value::Bytes),
        };
        if let Some(v) = value {
            props.0.insert((*name).to_string(), v);
        }
    }
    Some(props)
}

fn malformed(metrics: &Metrics) {
    let n = metrics.records_malformed.fetch_add(1, Ordering::Relaxed);
    if n < 10 || n.is_power_of_two() {
        tracing::warn!(
            dropped_so_far = n + 1,
            "ETW event without a readable schema dropped"
        );
    }
}

/// Takes the collector's ETW lock: `Err` when another live process holds
/// it (the sessions of that name are its own).
fn lock(collector_id: &str) -> Result<std::fs::File, String> {
    use std::os::windows::fs::OpenOptionsExt;
    let dir = std::env::var_os("ProgramData")
        .map_or_else(|| r"C:\ProgramData".into(), std::path::PathBuf::from)
        .join("procmond")
        .join("etw");
    if !dir.exists() {
        std::fs::create_dir_all(&dir)
            .and_then(|()| crate::sys::windows::make_private(&dir))
            .map_err(|e| format!("ETW lock directory {}: {e}", dir.display()))?;
    }
    let path = dir.join(format!("{collector_id}.lock"));
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .share_mode(0)
        .open(&path)
        .map_err(|e| {
            if e.raw_os_error() == Some(32) {
                format!(
                    "another procmond collector with id {collector_id:?} runs its ETW sessions (it holds {})",
                    path.display()
                )
            } else {
                format!("ETW lock {}: {e}", path.display())
            }
        })
}

/// The two sessions, while they run.
struct Sessions {
    /// Held while the sessions run (see `lock`).
    _lock: Option<std::fs::File>,
    modern: Option<UserTrace>,
    classic: Option<KernelTrace>,
    processors: Vec<JoinHandle<()>>,
    names: Vec<String>,
}

fn start_sessions(
    config: &crate::config::ProcmondConfig,
    input: &SyncSender<Input>,
    metrics: &Arc<Metrics>,
) -> (Sessions, Vec<String>) {
    let (modern_name, classic_name) = session_names(&config.collector_id);
    let mut s = Sessions {
        _lock: None,
        modern: None,
        classic: None,
        processors: Vec::new(),
        names: Vec::new(),
    };
    let mut failures = Vec::new();
    match lock(&config.collector_id) {
        Ok(file) => s._lock = Some(file),
        Err(why) => {
            failures.push(why);
            return (s, failures);
        }
    }

    clean_up(&modern_name);
    let (tx, m) = (input.clone(), metrics.clone());
    let provider = Provider::by_guid(decode::KERNEL_PROCESS_GUID)
        .any(decode::KEYWORD_PROCESS)
        .add_callback(move |record: &EventRecord, locator: &SchemaLocator| {
            let id = record.event_id();
            let fields = match id {
                decode::EVENT_PROCESS_START => decode::KP_START_FIELDS,
                decode::EVENT_PROCESS_STOP => decode::KP_STOP_FIELDS,
                _ => return,
            };
            match extract(record, locator, fields) {
                Some(props) => {
                    let _ = tx.send(Input::Modern { id, props });
                }
                None => malformed(&m),
            }
        })
        .build();
    match UserTrace::new()
        .named(modern_name.clone())
        .set_trace_properties(properties())
        .enable(provider)
        .start()
    {
        Ok((trace, handle)) => {
            s.processors.push(std::thread::spawn(move || {
                let _ = UserTrace::process_from_handle(handle);
            }));
            s.modern = Some(trace);
            s.names.push(modern_name);
        }
        Err(e) => failures.push(failure(&modern_name, &e)),
    }

    clean_up(&classic_name);
    let (tx, m) = (input.clone(), metrics.clone());
    let provider = Provider::kernel(&kernel_providers::PROCESS_PROVIDER)
        .add_callback(move |record: &EventRecord, locator: &SchemaLocator| {
            let opcode = record.opcode();
            if decode::classic_op(opcode).is_none() {
                return;
            }
            // EVENT_HEADER_FLAG_32_BIT_HEADER: the SID header's pointers.
            let pointer_size = if record.event_flags() & 0x0020 != 0 {
                4
            } else {
                8
            };
            match extract(record, locator, decode::CLASSIC_FIELDS) {
                Some(props) => {
                    let _ = tx.send(Input::Classic {
                        opcode,
                        timestamp: u64::try_from(record.raw_timestamp()).unwrap_or(0),
                        pointer_size,
                        props,
                    });
                }
                None => malformed(&m),
            }
        })
        .build();
    match KernelTrace::new()
        .named(classic_name.clone())
        .set_trace_properties(properties())
        .enable(provider)
        .start()
    {
        Ok((trace, handle)) => {
            s.processors.push(std::thread::spawn(move || {
                let _ = KernelTrace::process_from_handle(handle);
            }));
            s.classic = Some(trace);
            s.names.push(classic_name);
        }
        Err(e) => failures.push(failure(&classic_name, &e)),
    }
    (s, failures)
}

impl Sessions {
    /// Stops both sessions and waits for their ProcessTrace threads.
    fn stop(self) {
        if let Some(t) = self.modern
            && let Err(e) = t.stop()
        {
            tracing::warn!(error = ?e, "stopping the Kernel-Process ETW session");
        }
        if let Some(t) = self.classic
            && let Err(e) = t.stop()
        {
            tracing::warn!(error = ?e, "stopping the classic kernel ETW session");
        }
        for t in self.processors {
            let _ = t.join();
        }
    }
}

/// The running ETW stream.
struct EtwStream {
    input: SyncSender<Input>,
    sessions: Sessions,
    correlator: JoinHandle<()>,
}

impl KernelStream for EtwStream {
    fn barrier(&self, id: u64) {
        let _ = self.input.send(Input::Barrier(id));
    }

    fn stop(self: Box<Self>) {
        let Self {
            input,
            sessions,
            correlator,
        } = *self;
        sessions.stop();
        let _ = input.send(Input::Stop);
        let _ = correlator.join();
    }
}

/// Starts the sessions and the correlator: the Windows kernel stream, with
/// the rundown's command lines filling the snapshots' gaps.
pub fn start(
    config: &crate::config::ProcmondConfig,
    tx: mpsc::Sender<SourceMsg>,
    metrics: Arc<Metrics>,
) -> Result<StartedStream, String> {
    let (input, rx) = sync_channel(INPUT_QUEUE);
    let (sessions, failures) = start_sessions(config, &input, &metrics);
    let (modern, classic) = (sessions.modern.is_some(), sessions.classic.is_some());
    if !modern && !classic {
        sessions.stop();
        return Err(failures.join("; "));
    }
    let degraded_reason = (!failures.is_empty()).then(|| {
        let missing = if modern {
            "no command lines or user SIDs"
        } else {
            "no image paths, create times or exit codes"
        };
        format!("{} ({missing})", failures.join("; "))
    });
    let rundown = Arc::new(Mutex::new(Rundown::default()));
    let correlate = CorrelateConfig {
        modern,
        classic,
        ..CorrelateConfig::default()
    };
    let names = sessions.names.clone();
    let shared = rundown.clone();
    let ids = super::boot().map(|boot| {
        Identities::new(
            *boot,
            Box::new(|pid| crate::sys::windows::process_create_time(pid).ok()),
        )
    });
    let correlator = std::thread::Builder::new()
        .name("etw-correlator".into())
        .spawn(move || correlate_loop(&rx, &tx, &metrics, correlate, ids, &names, &shared))
        .map_err(|e| format!("starting the ETW correlator thread: {e}"))?;
    Ok(StartedStream {
        source: crate::model::EventSource::Etw,
        degraded_reason,
        stream: Box::new(EtwStream {
            input,
            sessions,
            correlator,
        }),
        snapshot_reader: Some(SnapshotReader::with_rundown(rundown)),
    })
}

/// Whether the sessions can start here: starts them and stops them again.
pub fn probe(config: &crate::config::ProcmondConfig) -> Result<(), String> {
    let (input, _rx) = sync_channel(16);
    let mut probe = config.clone();
    probe.collector_id = format!("probe-{}", std::process::id());
    let (sessions, failures) = start_sessions(&probe, &input, &Arc::new(Metrics::default()));
    let started = sessions.modern.is_some() || sessions.classic.is_some();
    sessions.stop();
    if started {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn correlate_loop(
    rx: &Receiver<Input>,
    tx: &mpsc::Sender<SourceMsg>,
    metrics: &Metrics,
    config: CorrelateConfig,
    ids: Option<Identities>,
    names: &[String],
    rundown: &Mutex<Rundown>,
) {
    let began = Instant::now();
    let now = || began.elapsed().as_nanos() as u64;
    let mut corr = Correlator::new(config, DeviceMap::current());
    if let Some(ids) = ids {
        corr = corr.with_identities(ids);
    }
    let mut barriers: VecDeque<(u64, u64)> = VecDeque::new();
    let mut last_loss = Instant::now();
    let mut stopping = false;
    while !stopping {
        let first = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Input::Stop),
        };
        for msg in first.into_iter().chain(rx.try_iter().take(MAX_BATCH)) {
            match msg {
                Input::Stop => stopping = true,
                Input::Barrier(id) => barriers.push_back((id, corr.next_id())),
                other => apply(other, &mut corr, rundown, metrics, now()),
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
            update_lost(names, metrics);
            last_loss = Instant::now();
        }
    }
    tracing::info!(stats = ?corr.stats, "ETW correlation finished");
}

fn apply(msg: Input, corr: &mut Correlator, rundown: &Mutex<Rundown>, metrics: &Metrics, now: u64) {
    match msg {
        Input::Modern { id, props } => {
            let decoded = if id == decode::EVENT_PROCESS_START {
                decode::kp_start(&props).map(|kp| corr.modern_start(kp, now))
            } else {
                decode::kp_stop(&props).map(|kp| corr.modern_stop(kp, now))
            };
            if decoded.is_err() {
                Metrics::incr(&metrics.records_malformed);
            }
        }
        Input::Classic {
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
        Input::Barrier(_) | Input::Stop => {}
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

/// Sets `kernel_lost` to what the sessions report lost (events, plus
/// real-time buffers: a lost buffer held an unknown number of events and
/// counts as one), warning when it grew.
fn update_lost(names: &[String], metrics: &Metrics) {
    let total: u64 = names
        .iter()
        .filter_map(|n| crate::sys::windows::query_trace(n).ok())
        .map(|q| u64::from(q.events_lost) + u64::from(q.realtime_buffers_lost))
        .sum();
    let before = metrics.kernel_lost.swap(total, Ordering::Relaxed);
    if total > before {
        tracing::warn!(
            lost = total - before,
            total,
            "ETW sessions lost events (reconciliation will catch long-lived processes)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_collector_keeps_its_sessions() {
        let id = format!("lock-test-{}", std::process::id());
        let held = lock(&id).expect("free");
        let e = lock(&id).expect_err("held");
        assert!(e.contains("another procmond collector"), "{e}");
        // The probe-like start of a second collector with that id refuses
        // before it touches the sessions, naming why.
        let config = crate::config::ProcmondConfig {
            collector_id: id.clone(),
            ..Default::default()
        };
        let (input, _rx) = sync_channel(1);
        let (sessions, failures) = start_sessions(&config, &input, &Arc::new(Metrics::default()));
        assert!(sessions.modern.is_none() && sessions.classic.is_none());
        assert!(
            failures[0].contains("another procmond collector"),
            "{failures:?}"
        );
        drop(held);
        assert!(lock(&id).is_ok(), "free again once the holder is gone");
    }
}
