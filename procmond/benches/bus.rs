//! Event-path throughput benchmarks (docs/reference.md §8: "WAL writes > 100 000 events/s
//! with durability"; "event publish throughput > 100 000 events/s over the
//! socket").
//!
//! Two groups, each against a peer measured in the same run:
//!
//! * `wal_append/<batch>`: `Wal::append` of one batch (sled write + `flush`, the
//!   group-commit policy of ADR 3 in docs/decisions.md; on Linux sled's
//!   flush is `pwrite` + `sync_file_range`, not fsync) for batches of 1, 64
//!   and 512 realistic events, vs. the same bytes appended to a plain file
//!   with `write_all` + `sync_data()` per batch (what a hand-rolled log with
//!   fdatasync would cost), plus the same writes without any sync as a
//!   reference floor. Acks happen between timed batches so the WAL never
//!   fills; their cost is reported on its own line.
//! * `publish`: N events pipelined by a real bus client over the real Unix
//!   socket to an in-process broker (tokio, 2 workers) with one local
//!   subscriber draining; the client feeds all N, flushes and reads N acks.
//!   Peer: the same frame bytes, length-delimited, over a plain
//!   `UnixStream` pair to a reader that only counts frames (no decode, no
//!   validation, no routing, no acks) — the transport's cost floor. On
//!   Windows the broker listens on a named pipe and the peer is a pipe
//!   pair (`raw_pair`), so the bench type-checks and runs there too.
//!
//! Criterion prints absolute figures; after each group, an interleaved loop
//! prints events/s for every routine and the ratio. The host is shared and
//! noisy: the same-run ratio is what we quote, and no test asserts a timing.
//!
//! `cargo bench -p procmond --bench bus`. Under `cargo test --benches` it
//! runs a small smoke pass instead (tiny batches, each routine once, no
//! ratios). See docs/benchmarks.md.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use futures_util::{SinkExt, StreamExt};
use procmond::bus::broker::Broker;
use procmond::bus::client::{self, BusReader, BusWriter};
use procmond::bus::protocol::{self, Envelope, FrameKind, TOPIC_EVENT_BATCH, TOPIC_EVENTS};
use procmond::delivery::wal::Wal;
use procmond::metrics::Metrics;
use procmond::model::batch::{Batch, BatchBuilder};
use procmond::model::codec::{self, EventBytes};
use procmond::model::{EventKind, EventSource, ProcessEvent};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// WAL batch sizes in benchmark mode (events per appended batch).
const WAL_BATCHES: [usize; 3] = [1, 64, 512];
/// Batch sizes of the smoke pass.
const SMOKE_WAL_BATCHES: [usize; 2] = [1, 8];
/// Events published per measured round.
const PUBLISH_EVENTS: usize = 10_000;
const SMOKE_PUBLISH_EVENTS: usize = 100;
/// Events per published frame (what the connector sends under load).
const PUBLISH_BATCH: usize = 64;
/// Interleaved rounds per routine for the ratio lines.
const RATIO_ROUNDS: usize = 15;
/// The docs/reference.md §8 goal for both groups.
const GOAL_EVENTS_PER_SEC: f64 = 100_000.0;
/// WAL size cap, as configured by default (docs/reference.md §5).
const WAL_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// The peer's log file is truncated (untimed) when it passes this size.
const PEER_FILE_ROTATE: u64 = 64 * 1024 * 1024;

/// A realistic exec event: ~400 bytes encoded, like a package-manager child.
fn sample_event(i: u32) -> ProcessEvent {
    let ts = 1_764_000_000_000_000_000 + i64::from(i) * 1_000;
    let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, ts, 20_000 + i);
    e.seq = u64::from(i) + 1;
    e.collector_id = "procmond".into();
    e.ppid = Some(19_876);
    e.tid = Some(20_000 + i);
    e.uid = Some(1000);
    e.gid = Some(1000);
    e.euid = Some(1000);
    e.name = "python3".into();
    e.exe = Some("/usr/bin/python3.12".into());
    e.argv = [
        "/usr/bin/python3",
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--requirement",
        "/srv/app/releases/2026-11-26/requirements.txt",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    e.cwd = Some("/srv/app/releases/2026-11-26".into());
    e.start_time = Some(ts - ts % 10_000_000);
    e.cgroup = Some("/system.slice/app-deploy.service".into());
    e.platform.cgroup_id = Some(7_123);
    e
}

/// `n` sample events as one batch, the unit the WAL and the bus carry.
fn sample_batch(first_seq: u64, n: usize) -> Batch {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let mut e = sample_event(u32::try_from(i).expect("event index fits u32"));
        e.seq = first_seq + i as u64;
        b.push(&e).expect("sample event encodes");
    }
    b.finish()
}

fn encoded_events(n: usize) -> Vec<EventBytes> {
    (0..n)
        .map(|i| {
            let i = u32::try_from(i).expect("event index fits u32");
            codec::encode(&sample_event(i)).expect("sample event encodes")
        })
        .collect()
}

/// A fresh private directory under the temp dir (the WAL of `watch` lives there too).
fn bench_dir(tag: &str) -> PathBuf {
    let nanos = procmond::clock::now_unix_ns();
    let dir = std::env::temp_dir().join(format!(
        "procmond-bench-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create bench directory");
    dir
}

/// Removes its directory when dropped (also on panic).
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn per_sec(events: usize, d: Duration) -> f64 {
    events as f64 / d.as_secs_f64().max(1e-12)
}

fn verdict(rate: f64) -> &'static str {
    if rate > GOAL_EVENTS_PER_SEC {
        "MET"
    } else {
        "NOT MET"
    }
}

// ---------------------------------------------------------------- WAL group

/// One criterion group: each routine timed with `iter_custom`, `elements`
/// events per run.
fn bench_group<R: Copy>(
    c: &mut Criterion,
    name: &str,
    elements: u64,
    routines: &[R],
    label: fn(R) -> &'static str,
    mut run: impl FnMut(R) -> Duration,
) {
    let mut group = c.benchmark_group(name);
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(elements));
    for &routine in routines {
        group.bench_function(label(routine), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += black_box(run(routine));
                }
                total
            });
        });
    }
    group.finish();
}

/// `rounds` runs of every routine, interleaved with a rotating start so
/// host noise falls on all of them alike; samples per routine, in order.
fn interleaved<R: Copy>(
    rounds: usize,
    routines: &[R],
    mut run: impl FnMut(R) -> Duration,
) -> Vec<Vec<Duration>> {
    let mut samples = vec![Vec::new(); routines.len()];
    for i in 0..rounds {
        for k in 0..routines.len() {
            let idx = (i + k) % routines.len();
            samples[idx].push(run(routines[idx]));
        }
    }
    samples
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WalRoutine {
    /// procmond's WAL: `append` of one batch (sled write + flush).
    Sled,
    /// Peer: `write_all` of the framed batch + `sync_data()` (fdatasync).
    FileFdatasync,
    /// Reference floor: the same `write_all`, no sync at all (page cache only).
    FileNoSync,
}

const WAL_ROUTINES: [WalRoutine; 3] = [
    WalRoutine::Sled,
    WalRoutine::FileFdatasync,
    WalRoutine::FileNoSync,
];

impl WalRoutine {
    fn name(self) -> &'static str {
        match self {
            WalRoutine::Sled => "sled_wal",
            WalRoutine::FileFdatasync => "file_write_fdatasync",
            WalRoutine::FileNoSync => "file_write_nosync",
        }
    }
}

/// A hand-rolled append-only log: `seq (8) | len (4) | bytes` per record.
struct PlainLog {
    file: File,
    len: u64,
    buf: Vec<u8>,
}

impl PlainLog {
    fn create(path: &std::path::Path) -> PlainLog {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)
            .expect("create peer log file");
        PlainLog {
            file,
            len: 0,
            buf: Vec::with_capacity(1 << 20),
        }
    }

    /// Frames the batch and appends it in one `write_all`; syncs if asked.
    fn append(&mut self, first_seq: u64, events: &[EventBytes], sync: bool) {
        self.buf.clear();
        for (seq, bytes) in (first_seq..).zip(events) {
            self.buf.extend_from_slice(&seq.to_be_bytes());
            let len = u32::try_from(bytes.len()).expect("event fits u32");
            self.buf.extend_from_slice(&len.to_be_bytes());
            self.buf.extend_from_slice(bytes);
        }
        self.file.write_all(&self.buf).expect("append to peer log");
        if sync {
            self.file.sync_data().expect("fdatasync peer log");
        }
        self.len += self.buf.len() as u64;
    }

    /// Untimed: keeps the file bounded, as a real log would rotate.
    fn maybe_rotate(&mut self) {
        if self.len > PEER_FILE_ROTATE {
            self.file.set_len(0).expect("truncate peer log");
            self.file.sync_all().expect("sync truncated peer log");
            use std::io::Seek;
            self.file
                .seek(std::io::SeekFrom::Start(0))
                .expect("rewind peer log");
            self.len = 0;
        }
    }
}

/// Everything one WAL group measures against.
struct WalRig {
    _dir: DirGuard,
    wal: Wal,
    synced: PlainLog,
    unsynced: PlainLog,
    next_seq: u64,
    events: Vec<EventBytes>,
    ack_time: Duration,
    acked: u64,
}

impl WalRig {
    fn new(batch: usize) -> WalRig {
        let dir = bench_dir("wal");
        let wal = Wal::open(
            &dir.join("wal"),
            WAL_MAX_BYTES,
            Arc::new(Metrics::default()),
        )
        .expect("open WAL");
        let synced = PlainLog::create(&dir.join("peer-fdatasync.log"));
        let unsynced = PlainLog::create(&dir.join("peer-nosync.log"));
        WalRig {
            _dir: DirGuard(dir),
            next_seq: wal.next_seq(),
            wal,
            synced,
            unsynced,
            events: encoded_events(batch),
            ack_time: Duration::ZERO,
            acked: 0,
        }
    }

    /// Runs one batch of `routine`; returns the time of the durable write only.
    fn run(&mut self, routine: WalRoutine) -> Duration {
        let first = self.next_seq;
        self.next_seq += self.events.len() as u64;
        match routine {
            WalRoutine::Sled => {
                let batch = sample_batch(first, self.events.len());
                let start = Instant::now();
                let stored = self.wal.append(&[batch]).expect("WAL append");
                let elapsed = start.elapsed();
                assert_eq!(stored as usize, self.events.len(), "WAL dropped events");
                // Untimed here (reported separately): forget what was appended.
                let ack_start = Instant::now();
                self.wal.ack(first).expect("WAL ack");
                self.ack_time += ack_start.elapsed();
                self.acked += self.events.len() as u64;
                elapsed
            }
            WalRoutine::FileFdatasync | WalRoutine::FileNoSync => {
                let sync = routine == WalRoutine::FileFdatasync;
                let log = if sync {
                    &mut self.synced
                } else {
                    &mut self.unsynced
                };
                let start = Instant::now();
                log.append(first, &self.events, sync);
                let elapsed = start.elapsed();
                log.maybe_rotate();
                elapsed
            }
        }
    }
}

fn bench_wal(c: &mut Criterion, batch: usize, full: bool) {
    let mut rig = WalRig::new(batch);
    let bytes: usize = rig.events.iter().map(|e| e.len()).sum();
    println!(
        "wal_append/{batch}: {batch} events per batch, {bytes} bytes ({} per event)",
        bytes / batch
    );
    let name = format!("wal_append/{batch}");
    bench_group(
        c,
        &name,
        batch as u64,
        &WAL_ROUTINES,
        WalRoutine::name,
        |r| rig.run(r),
    );
    if !full {
        return;
    }
    // Small batches are cheap: more rounds give a steadier median.
    let rounds = RATIO_ROUNDS * (512 / batch).clamp(4, 20);
    let mut samples = interleaved(rounds, &WAL_ROUTINES, |r| rig.run(r));
    let medians: Vec<Duration> = samples.iter_mut().map(|s| median(s)).collect();
    let rates: Vec<f64> = medians.iter().map(|m| per_sec(batch, *m)).collect();
    for (idx, routine) in WAL_ROUTINES.iter().enumerate() {
        // `median` sorted the samples: the tail is at the end.
        let sorted = &samples[idx];
        let p99 = sorted[(sorted.len() * 99).div_ceil(100).clamp(1, sorted.len()) - 1];
        println!(
            "ratio {name}: {} median {:.1} µs per batch = {:.0} events/s; p99 {:.1} µs, max {:.1} µs ({rounds} interleaved rounds)",
            routine.name(),
            medians[idx].as_secs_f64() * 1e6,
            rates[idx],
            p99.as_secs_f64() * 1e6,
            sorted[sorted.len() - 1].as_secs_f64() * 1e6,
        );
    }
    println!(
        "ratio {name}: sled_wal / file_write_fdatasync = {:.2}x events/s (>1: the WAL is faster)",
        rates[0] / rates[1]
    );
    println!(
        "ratio {name}: sled_wal / file_write_nosync = {:.2}x events/s",
        rates[0] / rates[2]
    );
    println!(
        "ratio {name}: WAL ack (sled remove, untimed above) costs {:.2} µs per event on average",
        rig.ack_time.as_secs_f64() * 1e6 / rig.acked.max(1) as f64
    );
    println!(
        "goal {name}: WAL > 100 000 events/s with durability: {} ({:.0} events/s)",
        verdict(rates[0]),
        rates[0]
    );
}

// ------------------------------------------------------------ publish group

#[derive(Clone, Copy)]
enum PublishRoutine {
    /// Real client → Unix socket → broker (validate, route, ack) → subscriber.
    Broker,
    /// Peer: the same frames over a plain `UnixStream` pair, counted only.
    RawSocket,
}

const PUBLISH_ROUTINES: [PublishRoutine; 2] = [PublishRoutine::Broker, PublishRoutine::RawSocket];

impl PublishRoutine {
    fn name(self) -> &'static str {
        match self {
            PublishRoutine::Broker => "broker_publish_acked",
            PublishRoutine::RawSocket => "raw_unix_frames",
        }
    }
}

/// The raw peer's writing end, whatever the transport.
type RawWrite = Box<dyn AsyncWrite + Unpin + Send>;
/// The raw peer's reading (counting) end.
type RawRead = Box<dyn AsyncRead + Unpin + Send>;

/// Where the broker listens: a socket in `dir` on Unix, a pipe on Windows.
fn broker_endpoint(dir: &std::path::Path) -> PathBuf {
    if cfg!(windows) {
        let tag = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        PathBuf::from(format!(r"\\.\pipe\{}", tag.unwrap_or_default()))
    } else {
        dir.join("broker.sock")
    }
}

/// A connected pair for the raw peer: a socket pair on Unix.
#[cfg(unix)]
async fn raw_pair(_dir: &std::path::Path) -> (RawWrite, RawRead) {
    let (near, far) = tokio::net::UnixStream::pair().expect("socketpair");
    let (_, near_write) = near.into_split();
    (Box::new(near_write), Box::new(far))
}

/// A connected pair for the raw peer: one named-pipe instance on Windows.
#[cfg(windows)]
async fn raw_pair(dir: &std::path::Path) -> (RawWrite, RawRead) {
    use tokio::net::windows::named_pipe::{ClientOptions, ServerOptions};
    let name = format!("{}-raw", broker_endpoint(dir).display());
    let server = ServerOptions::new()
        .first_pipe_instance(true)
        .create(&name)
        .expect("raw pipe");
    let client = ClientOptions::new().open(&name).expect("open raw pipe");
    server.connect().await.expect("raw pipe connects");
    (Box::new(client), Box::new(server))
}

struct PublishRig {
    runtime: Runtime,
    _dir: DirGuard,
    stop: CancellationToken,
    /// The events as the connector publishes them (payload = rkyv event).
    envelopes: Vec<Envelope>,
    writer: BusWriter,
    reader: BusReader,
    delivered: Arc<AtomicU64>,
    acks: u64,
    /// The same envelopes, already encoded, for the raw peer.
    frames: Vec<Bytes>,
    raw_writer: FramedWrite<RawWrite, LengthDelimitedCodec>,
    raw_counted: mpsc::UnboundedReceiver<u64>,
}

impl PublishRig {
    fn new(n: usize) -> PublishRig {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = bench_dir("bus");
        let socket = broker_endpoint(&dir);
        let stop = CancellationToken::new();
        let delivered = Arc::new(AtomicU64::new(0));
        let envelopes: Vec<Envelope> = (0..n.div_ceil(PUBLISH_BATCH))
            .map(|i| {
                let first = (i * PUBLISH_BATCH) as u64 + 1;
                let batch = sample_batch(first, PUBLISH_BATCH.min(n - i * PUBLISH_BATCH));
                Envelope::new(
                    FrameKind::Publish,
                    TOPIC_EVENT_BATCH,
                    first,
                    batch.into_bytes().into_vec(),
                )
            })
            .collect();
        let frames_per_round = envelopes.len() as u64;
        let frames: Vec<Bytes> = envelopes
            .iter()
            .map(|e| protocol::encode(e).expect("envelope encodes"))
            .collect();
        let (writer, reader, raw_writer, raw_counted) = runtime.block_on(async {
            // The broker, with one in-process subscriber draining (as in `watch`).
            let broker = Broker::new(Vec::new());
            let listener = Broker::bind(&socket).expect("bind broker socket");
            let mut events = broker
                .subscribe_local(TOPIC_EVENTS, 4096)
                .expect("local subscription");
            let counter = delivered.clone();
            tokio::spawn(async move {
                while let Some(env) = events.recv().await {
                    black_box(&env);
                    counter.fetch_add(1, Relaxed);
                }
            });
            let serving = broker.clone();
            let token = stop.clone();
            tokio::spawn(async move { serving.serve(listener, token).await });
            let (writer, reader) = client::connect(&socket).await.expect("connect to broker");

            // The peer: a socket pair whose far end only counts frames.
            let (near_write, far) = raw_pair(&dir).await;
            let raw_writer = FramedWrite::new(near_write, protocol::frame_codec());
            let (count_tx, raw_counted) = mpsc::unbounded_channel();
            let token = stop.clone();
            tokio::spawn(async move {
                let mut frames = FramedRead::new(far, protocol::frame_codec());
                let mut seen = 0u64;
                loop {
                    let frame = tokio::select! {
                        _ = token.cancelled() => break,
                        f = frames.next() => f,
                    };
                    match frame {
                        Some(Ok(f)) => {
                            black_box(&f);
                            seen += 1;
                            if seen.is_multiple_of(frames_per_round) && count_tx.send(seen).is_err()
                            {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            });
            (writer, reader, raw_writer, raw_counted)
        });
        PublishRig {
            runtime,
            _dir: DirGuard(dir),
            stop,
            envelopes,
            writer,
            reader,
            delivered,
            acks: 0,
            frames,
            raw_writer,
            raw_counted,
        }
    }

    /// Publishes every event once; returns the time until the last is acked
    /// (or, for the peer, counted by the far end).
    fn run(&mut self, routine: PublishRoutine) -> Duration {
        let n = self.envelopes.len();
        match routine {
            PublishRoutine::Broker => {
                let (writer, reader, envelopes) =
                    (&mut self.writer, &mut self.reader, &self.envelopes);
                let start = Instant::now();
                self.runtime.block_on(async {
                    let write = async {
                        for env in envelopes {
                            writer.feed(env).await.expect("feed publish");
                        }
                        writer.flush().await.expect("flush publishes");
                    };
                    let read = async {
                        let mut acks = 0usize;
                        while acks < n {
                            match reader.next().await {
                                Some(Ok(env)) if env.kind == FrameKind::Ack => acks += 1,
                                other => panic!("expected an ack, got {other:?}"),
                            }
                        }
                    };
                    tokio::join!(write, read);
                });
                let elapsed = start.elapsed();
                self.acks += n as u64;
                elapsed
            }
            PublishRoutine::RawSocket => {
                let (writer, frames, counted) =
                    (&mut self.raw_writer, &self.frames, &mut self.raw_counted);
                let start = Instant::now();
                self.runtime.block_on(async {
                    for frame in frames {
                        writer.feed(frame.clone()).await.expect("feed raw frame");
                    }
                    SinkExt::<Bytes>::flush(writer)
                        .await
                        .expect("flush raw frames");
                    counted.recv().await.expect("raw reader counted the round");
                });
                start.elapsed()
            }
        }
    }

    /// Every acked publish reached the subscriber (acks follow delivery).
    fn check_delivered(&self) {
        let delivered = self.delivered.load(Relaxed);
        assert_eq!(
            delivered, self.acks,
            "the subscriber received every acknowledged event"
        );
    }
}

impl Drop for PublishRig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn bench_publish(c: &mut Criterion, n: usize, full: bool) {
    let mut rig = PublishRig::new(n);
    println!(
        "publish: {n} events per round, frames of {} bytes (event payload {} bytes)",
        rig.frames[0].len(),
        rig.envelopes[0].payload.len()
    );
    bench_group(
        c,
        "publish",
        n as u64,
        &PUBLISH_ROUTINES,
        PublishRoutine::name,
        |r| rig.run(r),
    );
    // Deliveries may trail the last ack by one channel hop.
    std::thread::sleep(Duration::from_millis(100));
    rig.check_delivered();
    if !full {
        return;
    }
    let mut samples = interleaved(RATIO_ROUNDS, &PUBLISH_ROUTINES, |r| rig.run(r));
    std::thread::sleep(Duration::from_millis(100));
    rig.check_delivered();
    let medians: Vec<Duration> = samples.iter_mut().map(|s| median(s)).collect();
    let rates: Vec<f64> = medians.iter().map(|m| per_sec(n, *m)).collect();
    for (idx, routine) in PUBLISH_ROUTINES.iter().enumerate() {
        println!(
            "ratio publish: {} median {:.2} ms per {n} events = {:.0} events/s ({RATIO_ROUNDS} interleaved rounds)",
            routine.name(),
            medians[idx].as_secs_f64() * 1e3,
            rates[idx],
        );
    }
    println!(
        "ratio publish: broker_publish_acked / raw_unix_frames = {:.2}x events/s (the broker path runs at {:.0} % of the transport floor)",
        rates[0] / rates[1],
        100.0 * rates[0] / rates[1]
    );
    println!(
        "goal publish: > 100 000 events/s over the socket: {} ({:.0} events/s, all {} acked events delivered)",
        verdict(rates[0]),
        rates[0],
        rig.acks
    );
}

/// Criterion's own reading of its arguments: benchmark mode only with
/// `--bench` and without `--test` / `--list` (so `cargo test --benches`
/// runs a smoke pass only).
fn benchmark_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

fn main() {
    let full = benchmark_mode();
    let mut c = Criterion::default()
        .sample_size(15)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let batches: &[usize] = if full {
        &WAL_BATCHES
    } else {
        &SMOKE_WAL_BATCHES
    };
    for &batch in batches {
        bench_wal(&mut c, batch, full);
    }
    let n = if full {
        PUBLISH_EVENTS
    } else {
        SMOKE_PUBLISH_EVENTS
    };
    bench_publish(&mut c, n, full);
    c.final_summary();
}
