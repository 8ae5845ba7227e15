//! Hostile input at scale: every decoder of outside bytes, fed mutated real
//! inputs for a time budget, must never panic.
//!
//! A coverage-guided fuzzer (cargo-fuzz) needs a nightly toolchain; this
//! runs on the project's stable one. Each target starts from valid seeds
//! (a kernel record, a bus frame, a batch, a config file, real command
//! lines) and applies random byte flips, insertions, deletions, truncations,
//! splices and interesting values, so most cases get past the first checks.
//! `cargo xtask fuzz --secs N` runs each target for N seconds (release
//! build) and prints the cases run; `cargo test` runs each for a moment.
//! Budget: `PROCMOND_FUZZ_SECS` (default 1); seed: `PROCMOND_FUZZ_SEED`.
//!
//! Linux only: it drives the Linux build (eBPF, procfs, Unix sockets and
//! modes); on other targets this test crate is empty but still type-checks.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::time::{Duration, Instant};

use procmond::bus::protocol::{self, Envelope, FrameKind};
use procmond::config::{AgentConfig, ProcmondConfig};
use procmond::model::batch::{Batch, BatchBuilder};
use procmond::model::{EventKind, EventSource, ProcessEvent};
use procmond::pipeline::sanitize::Sanitizer;
use procmond::sources::ebpf::{iter, record};

/// xorshift64*: deterministic for a seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [&[u8]; 8] = [
    &[0],
    &[0xff],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0x80, 0, 0, 0],
    b"\x1b[2J",
    b"\xc3\x28",
    b"--password=",
];

/// One to four random edits of `seed`.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            2 => b.insert(at, rng.next() as u8),
            3 if at < b.len() => {
                let n = rng.below(b.len() - at) + 1;
                b.drain(at..at + n.min(16));
            }
            4 => b.truncate(at),
            5 => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let end = (at + v.len()).min(b.len());
                b.splice(at..end, v.iter().copied());
            }
            _ if !other.is_empty() => {
                let from = rng.below(other.len());
                let n = rng.below(other.len() - from) + 1;
                b.splice(at..at, other[from..from + n].iter().copied());
            }
            _ => {}
        }
    }
    b
}

fn budget() -> Duration {
    let secs = std::env::var("PROCMOND_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// Runs `target` on mutations of `seeds` until the budget is spent.
fn run(name: &str, seeds: &[Vec<u8>], mut target: impl FnMut(&[u8])) {
    let seed = std::env::var("PROCMOND_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15_u64);
    let mut rng = Rng(seed | 1);
    for s in seeds {
        target(s);
    }
    let (start, budget) = (Instant::now(), budget());
    let mut cases = 0u64;
    while start.elapsed() < budget {
        for _ in 0..256 {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, a, b);
            target(&input);
            cases += 1;
        }
    }
    println!(
        "fuzz {name}: {cases} cases in {:.1} s without a panic (seed {seed})",
        start.elapsed().as_secs_f64()
    );
}

fn sample_event(kind: EventKind, seq: u64) -> ProcessEvent {
    let mut e = ProcessEvent::new(kind, EventSource::Ebpf, 1_700_000_000_000_000_000, 4242);
    e.seq = seq;
    e.epoch = 77;
    e.collector_id = "procmond".into();
    e.name = "curl".into();
    e.exe = Some("/usr/bin/curl".into());
    e.argv = vec![
        "curl".into(),
        "-u".into(),
        "me:pw".into(),
        "https://x".into(),
    ];
    e.cwd = Some("/tmp".into());
    e
}

#[test]
fn fuzz_kernel_records() {
    let seeds = vec![
        record::fixture(1, b"/bin/sh", b"sh\0-c\0exit 3\0", b"tmp\0"),
        record::fixture(2, b"", b"", b""),
        record::fixture(3, b"", b"", b""),
        record::fixture(4, b"sh\0bin\0", b"sh\0", b"\0"),
    ];
    let joined: Vec<u8> = seeds.concat();
    run("kernel_records", &[seeds, vec![joined]].concat(), |b| {
        if let Ok(r) = record::parse(b) {
            let _ = r.to_event();
            let _ = r.to_process_info();
        }
        let _ = iter::parse_records(b);
    });
}

#[test]
fn fuzz_bus_frames() {
    let mut batch = BatchBuilder::new();
    for (i, k) in [EventKind::Exec, EventKind::Exit, EventKind::Fork]
        .iter()
        .enumerate()
    {
        batch
            .push(&sample_event(*k, i as u64 + 1))
            .expect("encodes");
    }
    let batch = batch.finish();
    let frames: Vec<Vec<u8>> = [
        Envelope::new(
            FrameKind::Publish,
            "events.process",
            1,
            batch.as_bytes().to_vec(),
        ),
        Envelope::new(
            FrameKind::Publish,
            "events.process.exec",
            2,
            procmond::model::codec::encode(&sample_event(EventKind::Exec, 9))
                .expect("encodes")
                .into_vec(),
        ),
        Envelope::new(
            FrameKind::Request,
            "control.agent",
            3,
            b"{\"op\":\"health\"}".to_vec(),
        ),
        Envelope::new(
            FrameKind::Publish,
            "control.collector.registration",
            4,
            br#"{"type":"ready","collector_id":"procmond"}"#.to_vec(),
        ),
    ]
    .iter()
    .map(|e| protocol::encode(e).expect("encodes").to_vec())
    .collect();
    run("bus_frames", &frames, |b| {
        if let Ok(env) = protocol::decode(b)
            && let Ok(Some(published)) = protocol::validate_publish(&env)
        {
            let _ = published.batch.kinds();
            let _ = procmond::bus::authz::decide(
                &env.topic,
                &env.payload,
                Some(&published.collectors),
                Some("procmond"),
                |_, _| procmond::bus::authz::Claim {
                    held_elsewhere: false,
                    credential_ok: false,
                },
            );
        }
    });
}

#[test]
fn fuzz_batches() {
    let mut b = BatchBuilder::new();
    for seq in 1..=4 {
        b.push(&sample_event(EventKind::Exec, seq))
            .expect("encodes");
    }
    let seeds = vec![b.finish().as_bytes().to_vec()];
    run("batches", &seeds, |bytes| {
        if let Ok(batch) = Batch::parse_slice(bytes) {
            let _ = batch.filter(|e| e.seq % 2 == 0);
            let (valid, _) = batch.validated();
            if let Some(v) = valid {
                for e in v.iter() {
                    let _ = e.decode();
                }
            }
        }
    });
}

#[test]
fn fuzz_config_files() {
    let seeds = vec![
        std::fs::read("../config/procmond.yaml").expect("config/procmond.yaml"),
        std::fs::read("../config/agent.yaml").expect("config/agent.yaml"),
        b"collection_interval_secs: 5\nsanitize: {extra_flags: [--x], extra_keys: [K]}\n".to_vec(),
    ];
    run("config_files", &seeds, |b| {
        let text = String::from_utf8_lossy(b);
        let _ = ProcmondConfig::parse(&text, Path::new("fuzz.yaml"));
        let _ = AgentConfig::parse(&text, Path::new("fuzz.yaml"));
    });
}

#[test]
fn fuzz_sanitizer() {
    let lines = [
        "mysql -u root -psecret db",
        "curl -H Authorization: Bearer abc https://u:p@h/x",
        "app --password hunter2 --token=t API_KEY=k",
        "ssh -p 22 host",
        "tar -p -xf f.tar",
    ];
    let seeds: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    let sanitizer = Sanitizer::new(&["--x".into()], &["K".into()]);
    run("sanitizer", &seeds, |b| {
        let mut argv: Vec<String> = String::from_utf8_lossy(b)
            .split([' ', '\0'])
            .map(str::to_owned)
            .collect();
        let before = argv.len();
        sanitizer.sanitize_argv(&mut argv);
        assert_eq!(
            argv.len(),
            before,
            "sanitizing never adds or removes arguments"
        );
    });
}
