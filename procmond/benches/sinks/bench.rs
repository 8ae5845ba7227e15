//! Sink throughput: events per second *acknowledged* through the durable
//! path, for the NATS JetStream sink against the jsonl sink in the same run
//! (docs/benchmarks.md, "Sinks").
//!
//! Each routine has its own in-process broker on a Unix socket with one
//! durable sink subscribed (`subscribe_durable`, as the agent does). A real
//! bus client publishes N realistic exec events in frames of 64 (what a
//! collector sends under load) and waits for every Ack; the broker acks a
//! frame only once the sink confirmed it: after write + `fdatasync` (jsonl),
//! or after JetStream's PublishAck for each of its events (nats, a local
//! `nats-server -js` with file storage started here). Rounds alternate
//! between the two, each round with fresh `seq`s (neither sink may treat
//! them as duplicates); the median round is reported.
//!
//! `cargo bench -p procmond --bench sinks`. Under `cargo test --benches` a
//! smoke pass runs instead (few events, one round each, no figures). Needs
//! `nats-server` on PATH (`apt-get install nats-server`; `cargo xtask test`
//! installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use procmond::agent::{nats, sink};
use procmond::bus::broker::Broker;
use procmond::bus::client::{self, BusReader, BusWriter};
use procmond::bus::protocol::{Envelope, FrameKind, TOPIC_EVENT_BATCH, TOPIC_EVENTS};
use procmond::config::agent::NatsSinkConfig;
use procmond::model::batch::BatchBuilder;
use procmond::model::{EventKind, EventSource, ProcessEvent};
use procmond::output::EventFormat;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 20_000;
const SMOKE_EVENTS: usize = 256;
const ROUNDS: usize = 7;
const FRAME: usize = 64;

/// A realistic exec event (~400 bytes encoded, ~700 as JSON).
fn event(seq: u64) -> ProcessEvent {
    let ts = 1_764_000_000_000_000_000 + seq as i64 * 1_000;
    let pid = 20_000 + (seq % 100_000) as u32;
    let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, ts, pid);
    e.seq = seq;
    e.epoch = 7;
    e.collector_id = "procmond".into();
    e.ppid = Some(19_876);
    e.uid = Some(1000);
    e.gid = Some(1000);
    e.name = "python3".into();
    e.exe = Some("/usr/bin/python3.12".into());
    e.argv = [
        "/usr/bin/python3",
        "-m",
        "pip",
        "install",
        "--requirement",
        "/srv/app/requirements.txt",
    ]
    .map(String::from)
    .to_vec();
    e.cwd = Some("/srv/app/releases/2026-11-26".into());
    e.cgroup = Some("/system.slice/app-deploy.service".into());
    e
}

/// `n` events from `first` as publish frames of `FRAME` events.
fn frames(first: u64, n: usize) -> Vec<Envelope> {
    (0..n.div_ceil(FRAME))
        .map(|i| {
            let start = first + (i * FRAME) as u64;
            let mut b = BatchBuilder::new();
            for seq in start..start + FRAME.min(n - i * FRAME) as u64 {
                b.push(&event(seq)).expect("event encodes");
            }
            let payload = b.finish().into_bytes().into_vec();
            Envelope::new(FrameKind::Publish, TOPIC_EVENT_BATCH, start, payload)
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Jsonl,
    Nats,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Jsonl => "jsonl (write + fdatasync)",
            Kind::Nats => "nats (JetStream PublishAck)",
        }
    }
}

/// One broker, one durable sink, one publishing client.
struct Rig {
    writer: BusWriter,
    reader: BusReader,
    stats: Arc<sink::SinkStats>,
    stop: CancellationToken,
}

impl Rig {
    fn new(rt: &Runtime, kind: Kind, dir: &Path, nats_url: &str) -> Rig {
        let socket = dir.join(format!("broker-{}.sock", kind as u8));
        let stats = Arc::new(sink::SinkStats::default());
        let stop = CancellationToken::new();
        let (writer, reader) = rt.block_on(async {
            let broker = Broker::new(Vec::new());
            let listener = Broker::bind(&socket).expect("bind broker socket");
            let rx = broker
                .subscribe_durable(TOPIC_EVENTS, 4096)
                .expect("durable subscription");
            let s = stats.clone();
            match kind {
                Kind::Jsonl => {
                    let path = dir.join("events.jsonl");
                    tokio::spawn(async move {
                        sink::run_jsonl(&path, EventFormat::Native, rx, &s)
                            .await
                            .expect("jsonl sink")
                    });
                }
                Kind::Nats => {
                    let config: NatsSinkConfig = serde_json::from_value(
                        serde_json::json!({ "url": nats_url, "host": "bench" }),
                    )
                    .expect("nats sink config");
                    let prepared = nats::prepare(&config).expect("prepare nats sink");
                    tokio::spawn(
                        async move { nats::run(prepared, rx, s).await.expect("nats sink") },
                    );
                }
            }
            let token = stop.clone();
            tokio::spawn(async move { broker.serve(listener, token).await });
            client::connect(&socket).await.expect("connect to broker")
        });
        Rig {
            writer,
            reader,
            stats,
            stop,
        }
    }

    /// Publishes `envelopes`; returns the time until the last is acknowledged.
    fn round(&mut self, rt: &Runtime, envelopes: &[Envelope]) -> Duration {
        let (writer, reader) = (&mut self.writer, &mut self.reader);
        let start = Instant::now();
        rt.block_on(async {
            let write = async {
                for env in envelopes {
                    writer.feed(env).await.expect("feed publish");
                }
                writer.flush().await.expect("flush publishes");
            };
            let read = async {
                let mut acks = 0;
                while acks < envelopes.len() {
                    match tokio::time::timeout(Duration::from_secs(60), reader.next()).await {
                        Ok(Some(Ok(env))) if env.kind == FrameKind::Ack => acks += 1,
                        other => panic!("expected an ack, got {other:?}"),
                    }
                }
            };
            tokio::join!(write, read);
        });
        start.elapsed()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct NatsServer(Child);

impl NatsServer {
    fn start(store: &Path) -> (NatsServer, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run nats-server (apt-get install nats-server, or cargo xtask test)");
        let server = NatsServer(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (server, format!("nats://127.0.0.1:{port}"))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn benchmark_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

pub fn main() {
    let full = benchmark_mode();
    let (n, rounds) = if full {
        (EVENTS, ROUNDS)
    } else {
        (SMOKE_EVENTS, 1)
    };
    let dir: PathBuf =
        std::env::temp_dir().join(format!("procmond-bench-sinks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (server, url) = NatsServer::start(&dir.join("js"));
    let kinds = [Kind::Jsonl, Kind::Nats];
    let mut rigs: Vec<Rig> = kinds
        .iter()
        .map(|k| Rig::new(&rt, *k, &dir, &url))
        .collect();
    // A warm-up round each (connection, stream creation, file creation).
    let mut next_seq = 1u64;
    for rig in &mut rigs {
        rig.round(&rt, &frames(next_seq, FRAME));
        next_seq += FRAME as u64;
    }
    let mut samples = vec![Vec::new(); kinds.len()];
    for r in 0..rounds {
        for k in 0..kinds.len() {
            let idx = (r + k) % kinds.len();
            let envelopes = frames(next_seq, n);
            next_seq += n as u64;
            samples[idx].push(rigs[idx].round(&rt, &envelopes));
        }
    }
    let mut rates = Vec::new();
    for (idx, kind) in kinds.iter().enumerate() {
        let written = rigs[idx].stats.written.load(Relaxed);
        let expected = (FRAME + n * rounds) as u64;
        assert_eq!(
            written,
            expected,
            "{}: every event stored once",
            kind.name()
        );
        let s = &mut samples[idx];
        s.sort_unstable();
        let median = s[s.len() / 2];
        let rate = n as f64 / median.as_secs_f64().max(1e-9);
        rates.push(rate);
        if full {
            println!(
                "sinks: {} median {:.1} ms per {n} events = {rate:.0} events/s acknowledged (min {:.1} ms, max {:.1} ms, {rounds} rounds)",
                kind.name(),
                median.as_secs_f64() * 1e3,
                s[0].as_secs_f64() * 1e3,
                s[s.len() - 1].as_secs_f64() * 1e3,
            );
        }
    }
    if full {
        println!(
            "sinks: nats / jsonl = {:.2}x events/s acknowledged",
            rates[1] / rates[0]
        );
    } else {
        println!(
            "sinks: smoke pass, {n} events through each sink, every one acknowledged and stored once"
        );
    }
    drop(rigs);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
