//! The Linux kernel event source: loads the CO-RE probes with aya, attaches
//! them (`attach`: BTF tracepoints, else classic ones), and reads their ring
//! buffer on a dedicated thread.
//!
//! The reader thread waits on the ring buffer's fd with poll(2), decodes
//! every record the ring holds (see `record`) into one batch, and sends the
//! batch down a bounded channel: one hand-off per drain, not per event.
//! When a record wakes it, it waits a moment before draining
//! (`batch_window`: 1 ms, growing with the size of the last drain up to
//! 8 ms), so the rest of the burst lands first: a spawn's fork, exec and
//! exit go as one batch and one WAL commit. Meanwhile the kernel does not
//! wake it (the ring only signals a reader that has caught up), so under a
//! fork storm the thread wakes ~150 times a second instead of once per
//! event, at a few hundred events a second batches add about 1 ms, and an
//! idle host wakes it once a second (an eventfd in the same poll brings
//! stop and barrier requests at once). When the channel is full the thread blocks, the ring fills, and
//! the kernel counts what it cannot write. `kernel_lost` is that count plus
//! the probe runs the kernel skipped (`misses`): every kernel-side loss is
//! counted.
#![cfg(target_os = "linux")]

mod attach;
pub mod handover;
pub mod iter;
mod layout;
mod misses;
pub mod record;

pub use attach::{AttachKind, AttachMode, Attached, EbpfError, ProbeBuild};

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use tokio::sync::mpsc;

use super::SourceMsg;
use crate::metrics::Metrics;

/// How long records gather in the ring once one has arrived, when the last
/// drain took `drained`: the latency a batch may add, traded for fewer
/// wake-ups and larger batches. It grows by 0.5 ms per record drained, so
/// it stays at the 1 ms floor below ~2 000 events/s and reaches the 8 ms
/// cap under a storm.
fn batch_window(drained: usize) -> Duration {
    Duration::from_micros((drained as u64 * 500).clamp(1_000, 8_000))
}
/// Most events in one batch sent to the sensor.
const MAX_DRAIN: usize = 4096;
/// How often the probes' skipped runs are read (a file read per program);
/// also the longest the reader sleeps with nothing to read. A stop or a
/// barrier wakes it at once (an eventfd beside the ring in the same poll).
const MISSES_EVERY: Duration = Duration::from_secs(1);

/// An error and its causes on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// Attached probes plus their maps.
pub struct EbpfSource {
    probes: Probes,
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    attached: Attached,
    task_iter: Option<iter::TaskIter>,
}

/// What keeps the probes attached: aya's objects when loaded here, the
/// descriptors the probe loader handed over otherwise. Dropping it
/// detaches them.
enum Probes {
    Loaded(Ebpf),
    Received {
        programs: Vec<OwnedFd>,
        _held: Vec<OwnedFd>,
    },
}

impl Probes {
    /// The probes' skipped runs (`misses`), summed over the programs.
    fn misses(&self) -> Option<u64> {
        match self {
            Self::Loaded(ebpf) => misses::total(
                ebpf.programs()
                    .filter_map(|(_, p)| p.fd().ok())
                    .map(|fd| fd.as_fd()),
            ),
            Self::Received { programs, .. } => misses::total(programs.iter().map(AsFd::as_fd)),
        }
    }
}

impl std::fmt::Debug for EbpfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfSource")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

/// Loads and attaches the probes (see `attach`); `ring_buffer_bytes` sizes
/// the ring buffer (a power of two, multiple of the page size).
/// `setuid_events` attaches the credential probes too (`setuid_events`
/// in procmond.yaml). The load runs in the probe loader process where the
/// binary registered one (`handover`), else here.
pub fn attach(
    ring_buffer_bytes: u32,
    mode: AttachMode,
    build: ProbeBuild,
    setuid_events: bool,
) -> Result<EbpfSource, EbpfError> {
    let request = handover::LoadRequest {
        ring_buffer_bytes,
        mode,
        build,
        setuid_events,
    };
    if let Some(exe) = handover::loader() {
        match handover::load(exe, request) {
            Ok(Ok(received)) => return from_received(received),
            Ok(Err(text)) => return Err(EbpfError::Loader(text)),
            Err(e) => tracing::warn!(
                error = %e,
                "loading the probes in this process instead (its peak memory then includes the kernel's BTF)"
            ),
        }
    }
    let (mut ebpf, attached, task_iter) =
        attach::load_and_attach(ring_buffer_bytes, mode, build, setuid_events)?;
    let ring = ebpf
        .take_map("EVENTS")
        .ok_or_else(|| EbpfError::Map("EVENTS", "missing".into()))
        .and_then(ring_of)?;
    let lost = ebpf
        .take_map("LOST")
        .ok_or_else(|| EbpfError::Map("LOST", "missing".into()))
        .and_then(lost_of)?;
    Ok(EbpfSource {
        probes: Probes::Loaded(ebpf),
        ring,
        lost,
        attached,
        task_iter,
    })
}

fn ring_of(map: Map) -> Result<RingBuf<MapData>, EbpfError> {
    RingBuf::try_from(map).map_err(|e| EbpfError::Map("EVENTS", chain(&e)))
}

fn lost_of(map: Map) -> Result<PerCpuArray<MapData, u64>, EbpfError> {
    PerCpuArray::try_from(map).map_err(|e| EbpfError::Map("LOST", chain(&e)))
}

/// A map from a handed-over descriptor.
fn map_from(fd: OwnedFd, name: &'static str) -> Result<Map, EbpfError> {
    MapData::from_fd(fd)
        .and_then(Map::from_map_data)
        .map_err(|e| EbpfError::Map(name, chain(&e)))
}

/// The source built from what the probe loader handed over.
fn from_received(received: handover::Received) -> Result<EbpfSource, EbpfError> {
    let handover::Received {
        attached,
        events,
        lost,
        programs,
        iter_link,
        held,
    } = received;
    Ok(EbpfSource {
        ring: ring_of(map_from(events, "EVENTS")?)?,
        lost: lost_of(map_from(lost, "LOST")?)?,
        probes: Probes::Received {
            programs,
            _held: held,
        },
        attached,
        task_iter: iter_link.map(iter::TaskIter::from_link),
    })
}

impl EbpfSource {
    /// Which kind of tracepoint the probes are attached to.
    pub fn kind(&self) -> &AttachKind {
        &self.attached.kind
    }

    /// The attach method and probe build, as health names them.
    pub fn variant(&self) -> String {
        self.attached.variant()
    }

    /// The task iterator loaded with the probes, if it could be.
    pub fn take_task_iter(&mut self) -> Option<iter::TaskIter> {
        self.task_iter.take()
    }
}

/// Controls the running reader thread.
pub type Reader = super::stream::ReaderThread;

/// Attaches the probes and starts the reader: the Linux kernel stream,
/// with the task iterator as its snapshot reader when it loaded.
pub fn start(
    config: &crate::platform::options::KernelOptions,
    tx: mpsc::Sender<SourceMsg>,
    metrics: Arc<Metrics>,
) -> Result<super::stream::StartedStream, String> {
    let mut source = attach(
        config.ring_buffer_bytes,
        config.ebpf_attach,
        config.ebpf_probes,
        config.setuid_events,
    )
    .map_err(|e| e.to_string())?;
    let snapshot_reader = source
        .take_task_iter()
        .map(|iter| super::snapshot::SnapshotReader::new(iter::IterTable::new(iter)));
    // Where the BTF was parsed here (no probe loader), hand its freed
    // pages back (sys::trim); after a hand-over there is little to return.
    #[cfg(target_env = "gnu")]
    crate::sys::trim::release_free_heap();
    let degraded_reason = source.kind().degraded_reason();
    let probes = Some(source.variant());
    let reader = source
        .spawn_reader(tx, metrics)
        .map_err(|e| format!("starting the eBPF reader thread: {e}"))?;
    Ok(super::stream::StartedStream {
        source: crate::model::EventSource::Ebpf,
        degraded_reason,
        stream: Box::new(reader),
        snapshot_reader,
        probes,
    })
}

impl EbpfSource {
    /// Starts the reader thread; events go to `tx` until `Reader::stop`.
    pub fn spawn_reader(
        self,
        tx: mpsc::Sender<SourceMsg>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Reader> {
        let wake = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        let nudge = wake.clone();
        let reader = Reader::spawn("ebpf-reader", move |stop, barriers| {
            self.read_loop(&tx, &metrics, stop, barriers, &wake)
        })?;
        // A full counter (2^64 - 2 nudges unread) cannot happen: the reader
        // resets it on every wake. Nothing else can fail here.
        Ok(reader.with_nudge(move || {
            let _ = rustix::io::write(&*nudge, &1u64.to_ne_bytes());
        }))
    }

    fn read_loop(
        self,
        tx: &mpsc::Sender<SourceMsg>,
        metrics: &Metrics,
        stop: &AtomicBool,
        barriers: &std::sync::mpsc::Receiver<u64>,
        wake: &OwnedFd,
    ) {
        let Self {
            probes,
            mut ring,
            lost,
            ..
        } = self;
        let timeout = rustix::time::Timespec {
            tv_sec: MISSES_EVERY.as_secs() as i64,
            tv_nsec: 0,
        };
        let mut probes = Some(probes);
        let mut losses = Losses::default();
        let mut last_drained = 0;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if stopping {
                if let Some(probes) = &probes {
                    losses.read_misses(probes);
                }
                drop(probes.take()); // detach: nothing new arrives after this
            } else {
                let mut fds = [
                    rustix::event::PollFd::new(&ring, rustix::event::PollFlags::IN),
                    rustix::event::PollFd::new(wake, rustix::event::PollFlags::IN),
                ];
                let _ = rustix::event::poll(&mut fds, Some(&timeout));
                let (record, nudged) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
                if nudged {
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(wake, &mut count);
                } else if record {
                    // Woken by a record: let the rest of its burst (a
                    // spawn's fork, exec and exit land within a
                    // millisecond) reach the ring, so it travels as one
                    // batch and costs one WAL commit, not one per record.
                    std::thread::sleep(batch_window(last_drained));
                }
            }
            // Requests seen before the drain are answered after it.
            let pending: Vec<u64> = barriers.try_iter().collect();
            let Some(drained) = drain(&mut ring, tx, metrics) else {
                return;
            };
            if let Some(probes) = &probes
                && losses.misses_read.elapsed() >= MISSES_EVERY
            {
                losses.read_misses(probes);
            }
            losses.update(&lost, metrics);
            for id in pending {
                if tx.blocking_send(SourceMsg::Barrier(id)).is_err() {
                    return;
                }
            }
            if stopping {
                return;
            }
            last_drained = drained;
        }
    }
}

/// Sends every record in the ring, in batches; how many, or `None` when
/// the receiver is gone.
fn drain(
    ring: &mut RingBuf<MapData>,
    tx: &mpsc::Sender<SourceMsg>,
    metrics: &Metrics,
) -> Option<usize> {
    let mut total = 0;
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        let event = match record::parse(&item) {
            // Task records come from the iterator, never from the ring.
            Ok(r) if r.kind == crate::model::EventKind::Snapshot => {
                Metrics::incr(&metrics.records_malformed);
                continue;
            }
            Ok(r) => r.to_event(),
            Err(e) => {
                let n = metrics.records_malformed.fetch_add(1, Ordering::Relaxed);
                if n < 10 || n.is_power_of_two() {
                    tracing::warn!(error = %e, dropped_so_far = n + 1, "malformed kernel record dropped");
                }
                continue;
            }
        };
        drop(item);
        batch.push(event);
        if batch.len() >= MAX_DRAIN {
            total += batch.len();
            send(tx, metrics, std::mem::take(&mut batch))?;
        }
    }
    total += batch.len();
    if !batch.is_empty() {
        send(tx, metrics, batch)?;
    }
    Some(total)
}

fn send(
    tx: &mpsc::Sender<SourceMsg>,
    metrics: &Metrics,
    batch: Vec<crate::model::ProcessEvent>,
) -> Option<()> {
    Metrics::add(&metrics.events_observed, batch.len() as u64);
    tx.blocking_send(SourceMsg::Events(batch)).ok()
}

/// The two kernel-side losses `kernel_lost` adds up.
struct Losses {
    /// Records the ring could not hold (the probes' LOST counter).
    ring: u64,
    /// Probe runs the kernel skipped (`misses`), as last read.
    misses: u64,
    misses_read: std::time::Instant,
}

impl Default for Losses {
    fn default() -> Self {
        Self {
            ring: 0,
            misses: 0,
            misses_read: std::time::Instant::now(),
        }
    }
}

impl Losses {
    fn read_misses(&mut self, probes: &Probes) {
        self.misses_read = std::time::Instant::now();
        let Some(total) = probes.misses() else {
            return;
        };
        if total > self.misses {
            tracing::warn!(
                missed = total - self.misses,
                total,
                "the kernel skipped probe runs (a probe preempted and re-entered on one CPU): events lost"
            );
            self.misses = total;
        }
    }

    fn update(&mut self, lost: &PerCpuArray<MapData, u64>, metrics: &Metrics) {
        if let Ok(values) = lost.get(&0, 0) {
            let ring: u64 = values.iter().sum();
            if ring > self.ring {
                tracing::warn!(
                    lost = ring - self.ring,
                    total = ring,
                    "kernel ring buffer full: records lost (reconciliation will catch long-lived processes)"
                );
                self.ring = ring;
            }
        }
        metrics
            .kernel_lost
            .fetch_max(self.ring + self.misses, Ordering::Relaxed);
    }
}
