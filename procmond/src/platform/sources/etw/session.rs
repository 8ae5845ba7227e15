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
//! only copies the event's properties (`decode::*_FIELDS`) into the bounded
//! queue of `feed`; when that is full the callback waits, ETW's buffers
//! fill, and ETW counts what it drops. Barriers and the stop go through
//! `feed::Control`, which never blocks the async sensor loop. One
//! "etw-correlator" thread decodes, joins the two sides (`correlate`, which
//! also restores time order), sends `SourceMsg::Events` batches, answers
//! barriers once everything received before them has left, and every
//! second asks both sessions what they lost (`ControlTraceW` QUERY:
//! EventsLost + RealTimeBuffersLost) for `kernel_lost` (`health`, a counter
//! that never goes down). A session that ends without being asked to — a
//! `logman stop` or `xperf` from outside — or that cannot be queried is the
//! source failing: the correlator logs why and ends, and the sensor sees
//! its reader gone.
//!
//! Stopping: both sessions are stopped by name first (ETW then delivers
//! what their buffers still hold and `ProcessTrace` returns), their
//! threads are joined, and only then are the ferrisetw handles dropped —
//! ferrisetw's own stop closes the consumer first and loses that tail.
//!
//! The probe (`capabilities`, the agent's start-up check) starts the same
//! sessions under fixed names (`procmond-probe-…`, stopped first if an
//! earlier probe left them) with a feed that keeps nothing, so the rundown
//! of every live process cannot fill a queue nobody reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
use super::correlate::CorrelateConfig;
use super::decode::{self, Kind, Props, Value};
use super::feed::{self, Control, Event, Feed};
use super::identity::Identities;
use super::pump::{Watch, correlate_loop};
use super::rundown::Rundown;
use crate::metrics::Metrics;
use crate::sources::SourceMsg;
use crate::sources::snapshot::SnapshotReader;
use crate::sources::stream::{KernelStream, StartedStream};

const BUFFER_KB: u32 = 64;
const MIN_BUFFERS: u32 = 64;
const MAX_BUFFERS: u32 = 512;
/// Events waiting between the callbacks and the correlator thread.
const INPUT_QUEUE: usize = 65_536;
/// The probe's collector id: fixed, so a probe left by a crash is found.
const PROBE_ID: &str = "probe";

/// Real-time, and independent (EVENT_TRACE_INDEPENDENT_SESSION_MODE): an
/// EventWrite failure in another session on the same provider does not
/// drop the event here.
fn properties() -> TraceProperties {
    TraceProperties {
        buffer_size: BUFFER_KB,
        min_buffer: MIN_BUFFERS,
        max_buffer: MAX_BUFFERS,
        flush_timer: Duration::from_secs(1),
        log_file_mode: LoggingMode::EVENT_TRACE_REAL_TIME_MODE
            | LoggingMode::EVENT_TRACE_INDEPENDENT_SESSION_MODE,
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
    /// Set before the sessions are stopped: an end after it was asked for.
    stopping: Arc<AtomicBool>,
    /// ProcessTrace threads that returned.
    ended: Arc<AtomicUsize>,
}

fn start_sessions(
    config: &crate::platform::options::KernelOptions,
    input: &Feed,
    metrics: &Arc<Metrics>,
) -> (Sessions, Vec<String>) {
    let (modern_name, classic_name) = session_names(&config.collector_id);
    let mut s = Sessions {
        _lock: None,
        modern: None,
        classic: None,
        processors: Vec::new(),
        names: Vec::new(),
        stopping: Arc::new(AtomicBool::new(false)),
        ended: Arc::new(AtomicUsize::new(0)),
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
    match UserTrace::new()
        .named(modern_name.clone())
        .set_trace_properties(properties())
        .enable(modern_provider(input, metrics))
        .start()
    {
        Ok((trace, handle)) => {
            s.process(&modern_name, move || UserTrace::process_from_handle(handle));
            s.modern = Some(trace);
            s.names.push(modern_name);
        }
        Err(e) => failures.push(failure(&modern_name, &e)),
    }

    clean_up(&classic_name);
    match KernelTrace::new()
        .named(classic_name.clone())
        .set_trace_properties(properties())
        .enable(classic_provider(input, metrics))
        .start()
    {
        Ok((trace, handle)) => {
            s.process(&classic_name, move || {
                KernelTrace::process_from_handle(handle)
            });
            s.classic = Some(trace);
            s.names.push(classic_name);
        }
        Err(e) => failures.push(failure(&classic_name, &e)),
    }
    (s, failures)
}

/// Kernel-Process, keyword 0x10: events 1 and 2 copied into the feed.
fn modern_provider(input: &Feed, metrics: &Arc<Metrics>) -> Provider {
    let (tx, m) = (input.clone(), metrics.clone());
    Provider::by_guid(decode::KERNEL_PROCESS_GUID)
        .any(decode::KEYWORD_PROCESS)
        .add_callback(move |record: &EventRecord, locator: &SchemaLocator| {
            let id = record.event_id();
            let fields = match id {
                decode::EVENT_PROCESS_START => decode::KP_START_FIELDS,
                decode::EVENT_PROCESS_STOP => decode::KP_STOP_FIELDS,
                _ => return,
            };
            match extract(record, locator, fields) {
                Some(props) => tx.push(Event::Modern {
                    id,
                    timestamp: u64::try_from(record.raw_timestamp()).unwrap_or(0),
                    props,
                }),
                None => malformed(&m),
            }
        })
        .build()
}

/// The classic kernel provider's process flag: Start, End, DCStart and
/// DCEnd copied into the feed.
fn classic_provider(input: &Feed, metrics: &Arc<Metrics>) -> Provider {
    let (tx, m) = (input.clone(), metrics.clone());
    Provider::kernel(&kernel_providers::PROCESS_PROVIDER)
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
                Some(props) => tx.push(Event::Classic {
                    opcode,
                    timestamp: u64::try_from(record.raw_timestamp()).unwrap_or(0),
                    pointer_size,
                    props,
                }),
                None => malformed(&m),
            }
        })
        .build()
}

impl Sessions {
    /// Runs a session's `ProcessTrace` on a thread of its own, counting in
    /// `ended` when it returns (asked to, or stopped from outside).
    fn process<F>(&mut self, name: &str, run: F)
    where
        F: FnOnce() -> Result<(), TraceError> + Send + 'static,
    {
        let (name, ended) = (name.to_string(), self.ended.clone());
        self.processors.push(std::thread::spawn(move || {
            let r = run();
            ended.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(session = %name, result = ?r, "ProcessTrace returned");
        }));
    }

    /// Stops both sessions by name (ETW delivers what their buffers hold,
    /// then ProcessTrace returns), joins those threads, then drops the
    /// ferrisetw handles (their own stop, now a no-op, closes first and
    /// would lose that tail).
    fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for name in &self.names {
            if let Err(e) = stop_trace_by_name(name) {
                tracing::warn!(session = %name, error = ?e, "stopping an ETW session");
            }
        }
        for t in self.processors {
            let _ = t.join();
        }
        drop(self.modern);
        drop(self.classic);
    }
}

/// The running ETW stream.
struct EtwStream {
    control: Control,
    sessions: Sessions,
    correlator: JoinHandle<()>,
}

impl KernelStream for EtwStream {
    /// Never blocks: the sensor loop calls it from async code.
    fn barrier(&self, id: u64) {
        self.control.barrier(id);
    }

    fn stop(self: Box<Self>) {
        let Self {
            control,
            sessions,
            correlator,
        } = *self;
        sessions.stop();
        control.stop();
        let _ = correlator.join();
    }
}

/// Starts the sessions and the correlator: the Windows kernel stream, with
/// the rundown's command lines filling the snapshots' gaps.
pub fn start(
    config: &crate::platform::options::KernelOptions,
    tx: mpsc::Sender<SourceMsg>,
    metrics: Arc<Metrics>,
) -> Result<StartedStream, String> {
    let (input, control, intake) = feed::channel(INPUT_QUEUE);
    let (sessions, failures) = start_sessions(config, &input, &metrics);
    drop(input);
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
    let watch = Watch {
        names: sessions.names.clone(),
        stopping: sessions.stopping.clone(),
        ended: sessions.ended.clone(),
    };
    let shared = rundown.clone();
    let ids = super::boot().map(|boot| {
        Identities::new(
            *boot,
            Box::new(|pid| crate::sys::windows::process_create_time(pid).ok()),
        )
    });
    let correlator = std::thread::Builder::new()
        .name("etw-correlator".into())
        .spawn(move || correlate_loop(intake, &tx, &metrics, correlate, ids, &watch, &shared))
        .map_err(|e| format!("starting the ETW correlator thread: {e}"))?;
    if classic {
        await_rundown(&rundown);
    }
    Ok(StartedStream {
        source: crate::model::EventSource::Etw,
        degraded_reason,
        stream: Box::new(EtwStream {
            control,
            sessions,
            correlator,
        }),
        snapshot_reader: Some(SnapshotReader::new(RundownTable(rundown))),
        probes: None,
    })
}

/// sysinfo's process table, with the command lines it cannot read taken
/// from the classic session's rundown (`rundown::Rundown::fill`).
struct RundownTable(Arc<Mutex<Rundown>>);

impl crate::sources::snapshot::ProcessTable for RundownTable {
    fn name(&self) -> &'static str {
        "sysinfo"
    }

    fn take(
        &self,
        options: crate::sources::snapshot::SnapshotOptions,
    ) -> std::io::Result<crate::sources::snapshot::Snapshot> {
        let native = crate::platform::Platform::process_table(&crate::platform::Host);
        let mut snapshot = native.take(options)?;
        let filled = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fill(&mut snapshot);
        tracing::debug!(filled, "command lines from the ETW rundown");
        Ok(snapshot)
    }
}

/// Waits (at most 5 s) for the classic session's rundown to arrive: the
/// first inventory is taken right after start and fills its command lines
/// from it. Done when the table has stopped growing for more than one
/// flush interval.
fn await_rundown(rundown: &Mutex<Rundown>) {
    let len = || rundown.lock().map_or(0, |r| r.len());
    let began = Instant::now();
    let (mut last, mut since) = (0, Instant::now());
    while began.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        let now = len();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if now > 0 && since.elapsed() > Duration::from_millis(1_500) {
            break;
        }
    }
    tracing::debug!(processes = last, waited = ?began.elapsed(), "ETW rundown received");
}

/// Whether the sessions can start here: starts them under the probe's
/// fixed names with a feed that keeps nothing, and stops them again.
pub fn probe(config: &crate::platform::options::KernelOptions) -> Result<(), String> {
    let mut probe = config.clone();
    probe.collector_id = PROBE_ID.to_string();
    let metrics = Arc::new(Metrics::default());
    // Another probe (the agent's and `capabilities` at once) holds the
    // lock for a moment: wait for it rather than report ETW missing.
    let mut attempt = 0;
    let (sessions, failures) = loop {
        let (sessions, failures) = start_sessions(&probe, &Feed::discard(), &metrics);
        let busy = failures
            .first()
            .is_some_and(|f| f.contains("another procmond collector"));
        attempt += 1;
        if !busy || attempt >= 20 {
            break (sessions, failures);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let started = sessions.modern.is_some() || sessions.classic.is_some();
    sessions.stop();
    if started {
        Ok(())
    } else {
        Err(failures.join("; "))
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
        }
        .kernel_options();
        let (sessions, failures) =
            start_sessions(&config, &Feed::discard(), &Arc::new(Metrics::default()));
        assert!(sessions.modern.is_none() && sessions.classic.is_none());
        assert!(
            failures[0].contains("another procmond collector"),
            "{failures:?}"
        );
        drop(held);
        assert!(lock(&id).is_ok(), "free again once the holder is gone");
    }
}
