//! The interface every kernel event source plugs into: eBPF on Linux,
//! EndpointSecurity on macOS, audit(4) on FreeBSD, ETW on Windows.
//!
//! A source runs its own reader (a thread, or the OS's dispatch queue) and
//! sends `SourceMsg`s on the channel it was started with: events in the
//! order the kernel gave them, batched by whatever the reader drained at
//! once, and `Barrier(id)` when asked. The sensor's stream loop
//! (`sensor/kernel_loop.rs`) does the rest on every platform: inventory,
//! reconciliation against snapshots, the pipeline. Losses the kernel
//! reports (ring overflow, sequence gaps, pipe drops) go into
//! `Metrics::kernel_lost`. Which source starts is decided in `platform`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use super::snapshot::SnapshotReader;
use crate::model::EventSource;

/// A running kernel event stream.
pub trait KernelStream: Send {
    /// Asks for `SourceMsg::Barrier(id)` on the channel once every event the
    /// source received before this call has been sent ahead of it.
    fn barrier(&self, id: u64);

    /// Stops the stream: what is still buffered is sent, then the reader
    /// ends (the channel's sender is dropped) and this returns. Blocking.
    fn stop(self: Box<Self>);
}

/// A source's reader thread: its stop flag, its barrier queue and the
/// thread itself, joined on stop. The sources that read on a thread of
/// their own (eBPF, EndpointSecurity, audit) share it.
pub struct ReaderThread {
    stop: Arc<AtomicBool>,
    barriers: std::sync::mpsc::Sender<u64>,
    thread: Option<JoinHandle<()>>,
    /// Wakes a body that sleeps in the kernel until events come (the eBPF
    /// reader's poll), so a stop or a barrier is seen at once, not at its
    /// next timeout.
    nudge: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ReaderThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderThread")
            .field("stop", &self.stop)
            .field("nudge", &self.nudge.is_some())
            .finish_non_exhaustive()
    }
}

impl ReaderThread {
    /// Spawns thread `name` running `body(stop flag, barrier ids)`; the
    /// body sends its events and barriers on the channel it captured.
    pub fn spawn<F>(name: &str, body: F) -> std::io::Result<Self>
    where
        F: FnOnce(&AtomicBool, &Receiver<u64>) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (barriers, ids) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&flag, &ids))?;
        Ok(Self {
            stop,
            barriers,
            thread: Some(thread),
            nudge: None,
        })
    }

    /// Calls `nudge` after every stop or barrier request.
    pub fn with_nudge(mut self, nudge: impl Fn() + Send + Sync + 'static) -> Self {
        self.nudge = Some(Box::new(nudge));
        self
    }

    fn wake(&self) {
        if let Some(nudge) = &self.nudge {
            nudge();
        }
    }

    /// Asks for `SourceMsg::Barrier(id)` once everything received before
    /// this call has been sent.
    pub fn barrier(&self, id: u64) {
        let _ = self.barriers.send(id);
        self.wake();
    }

    /// Sets the stop flag and waits for the thread (which sends what it
    /// still holds first).
    pub fn join(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl KernelStream for ReaderThread {
    fn barrier(&self, id: u64) {
        ReaderThread::barrier(self, id);
    }

    fn stop(self: Box<Self>) {
        self.join();
    }
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }
}

/// A kernel source that started.
pub struct StartedStream {
    /// What events will say they came from.
    pub source: EventSource,
    /// Set when it runs with less than its full capability.
    pub degraded_reason: Option<String>,
    pub stream: Box<dyn KernelStream>,
    /// A snapshot reader the source brings (the Linux task iterator);
    /// `None` keeps the platform's default.
    pub snapshot_reader: Option<SnapshotReader>,
    /// Which variant of the kernel probes runs, where there are several
    /// (Linux: attach method and build, e.g. `tp_btf/bpf_loop`).
    pub probes: Option<String>,
}

impl std::fmt::Debug for StartedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedStream")
            .field("source", &self.source)
            .field("degraded_reason", &self.degraded_reason)
            .field("probes", &self.probes)
            .finish_non_exhaustive()
    }
}
