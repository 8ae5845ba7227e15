//! exec → subscriber latency on the real kernel (docs/reference.md §8: "exec → subscriber
//! latency p99 < 10 ms").
//!
//! It runs the real binary, `procmond watch --source ebpf --format json`, which
//! is the full event path: kernel probe → ring buffer → pipeline → WAL
//! (group commit, synced) → Unix socket → broker → local subscriber → JSON on
//! stdout. It spawns short marker processes (`/bin/true <marker>-<i>`) at a
//! steady pace and, for each marker `exec` line, takes latency = the wall
//! clock when the line is read from the pipe − the event's `timestamp` (the
//! kernel's exec time). p50 / p90 / p99 / p99.9 / max are printed.
//!
//! Peer, in the same run: the harness's own floor — a thread writes lines
//! carrying the same RFC 3339 timestamps into a pipe at the same pace, read
//! and parsed by the same reader code. It is what this measurement costs by
//! itself (pipe, thread wake-up, clock), not a competing sensor: polling
//! (`--source poll`) misses short processes and is not comparable. A second
//! kernel run with `TMPDIR=/dev/shm` (WAL on tmpfs, where its sync costs
//! nothing; not a durable setup) times the disk sync's share of the path.
//!
//! `cargo bench -p procmond --bench latency` (as root; `PROCMOND_BENCH_EXECS`
//! and `PROCMOND_BENCH_RATE` change the count, default 2000, and the pace,
//! default 400/s). Without eBPF it says so loudly and exits 0. Under
//! `cargo test --benches` it runs 20 processes once and prints no verdict.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const DEFAULT_EXECS: usize = 2000;
const DEFAULT_RATE: u64 = 400;
const SMOKE_EXECS: usize = 20;
const SMOKE_RATE: u64 = 200;
/// docs/reference.md §8 goal for p99, in ms.
const GOAL_P99_MS: f64 = 10.0;

/// The binary under test: this build's, or `PROCMOND_BENCH_BINARY` (an
/// earlier build, for an A/B in the same minute).
fn procmond() -> Command {
    Command::new(
        std::env::var_os("PROCMOND_BENCH_BINARY")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_procmond").into()),
    )
}

/// Criterion's convention: benchmark mode only with `--bench` (what
/// `cargo bench` passes) and without `--test` / `--list`.
fn benchmark_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn now_unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn parse_rfc3339_ns(s: &str) -> Option<i128> {
    let t = humantime::parse_rfc3339(s).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_nanos() as i128)
}

fn loud(lines: &[&str]) {
    let bar = "!".repeat(78);
    eprintln!("\n{bar}");
    for l in lines {
        eprintln!("!!! {l}");
    }
    eprintln!("{bar}\n");
}

/// Why the eBPF source cannot run here, per `procmond capabilities`.
fn ebpf_unavailable() -> Option<String> {
    let out = match procmond().arg("capabilities").output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            return Some(format!(
                "`procmond capabilities` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(e) => return Some(format!("cannot run procmond: {e}")),
    };
    let caps: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => return Some(format!("capabilities is not JSON: {e}")),
    };
    let ebpf = caps["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "ebpf"))
        .cloned()
        .unwrap_or(Value::Null);
    if ebpf["available"] == true {
        None
    } else {
        Some(
            ebpf["reason"]
                .as_str()
                .unwrap_or("not a Linux host")
                .to_owned(),
        )
    }
}

/// One line as it arrived: wall-clock arrival time (taken before any
/// parsing) and the line.
struct Arrival {
    at_ns: i128,
    line: String,
}

/// Reads lines as they arrive; keeps those containing `needle` and counts
/// them so the driver knows when everything has come through.
fn spawn_reader<R: std::io::Read + Send + 'static>(
    source: R,
    needle: String,
    seen: Arc<AtomicUsize>,
) -> JoinHandle<Vec<Arrival>> {
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(64 * 1024, source);
        let mut kept = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let at_ns = now_unix_ns();
                    if line.contains(&needle) {
                        kept.push(Arrival {
                            at_ns,
                            line: line.trim_end().to_owned(),
                        });
                        seen.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        kept
    })
}

/// Latency figures of one series, in ns.
struct Summary {
    count: usize,
    p50: i128,
    p90: i128,
    p99: i128,
    p999: i128,
    max: i128,
    min: i128,
}

impl Summary {
    fn of(mut v: Vec<i128>) -> Option<Summary> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        // Nearest rank: the smallest value with at least q of the samples at or below it.
        let pick = |q: f64| {
            let rank = (q * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Some(Summary {
            count: v.len(),
            p50: pick(0.50),
            p90: pick(0.90),
            p99: pick(0.99),
            p999: pick(0.999),
            max: v[v.len() - 1],
            min: v[0],
        })
    }

    fn print(&self, label: &str) {
        let ms = |ns: i128| ns as f64 / 1e6;
        println!(
            "latency {label}: n={} p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (min {:.3} ms)",
            self.count,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            ms(self.min),
        );
    }
}

/// Sleeps until `start + i / rate`.
fn pace(start: Instant, i: usize, rate: u64) {
    let due = start + Duration::from_nanos(i as u64 * 1_000_000_000 / rate.max(1));
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// A running `procmond watch`, stopped with SIGINT (and killed if need be).
struct Watch {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// `wal_tmpdir`: the `TMPDIR` `watch` puts its WAL and socket in.
    fn start(wal_tmpdir: Option<&str>) -> (Watch, ChildStdout) {
        let mut cmd = procmond();
        if let Some(dir) = wal_tmpdir {
            cmd.env("TMPDIR", dir);
        }
        let mut child = cmd
            .args(["watch", "--source", "ebpf", "--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn procmond watch");
        let stdout = child.stdout.take().expect("watch stdout");
        let stderr = child.stderr.take().expect("watch stderr");
        let buf = Arc::new(Mutex::new(String::new()));
        let sink = buf.clone();
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("stderr buffer lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut watch = Watch {
            child,
            stderr: buf,
            stderr_thread: Some(stderr_thread),
        };
        watch.wait_for("monitoring started", Duration::from_secs(60));
        (watch, stdout)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer lock").clone()
    }

    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "procmond watch exited ({status}) before {needle:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from procmond watch within {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, wait for exit (30 s at most); returns the closing stats line.
    fn stop(mut self) -> String {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("procmond watch exited with {status}");
                    }
                    break;
                }
                _ if Instant::now() > deadline => {
                    eprintln!("procmond watch did not stop within 30 s; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let stderr = self.stderr();
        stderr
            .lines()
            .rev()
            .find(|l| l.contains("procmond watch finished"))
            .map(|l| l.find("stats=").map_or(l, |i| &l[i + 6..]).to_owned())
            .unwrap_or_else(|| format!("(no stats line; stderr:\n{stderr})"))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one kernel run measured.
struct KernelRun {
    exec_latency: Option<Summary>,
    spawn_latency: Option<Summary>,
    received: usize,
    rate: f64,
    stats: String,
}

/// Spawns `n` marker processes at `rate`/s under `procmond watch` and
/// measures each marker exec's arrival on stdout. `wal_tmpdir` moves the
/// WAL (default: the temp dir, on disk).
fn kernel_run(n: usize, rate: u64, wal_tmpdir: Option<&str>) -> KernelRun {
    let marker = format!(
        "pm-latency-{}-{}",
        std::process::id(),
        now_unix_ns() % 1_000_000_000
    );
    let (watch, stdout) = Watch::start(wal_tmpdir);
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = spawn_reader(stdout, marker.clone(), seen.clone());

    // Children are reaped off the pacing thread so a slow wait never delays a spawn.
    let (reap_tx, reap_rx) = mpsc::channel::<Child>();
    let reaper = std::thread::spawn(move || {
        for mut child in reap_rx {
            let _ = child.wait();
        }
    });
    let mut spawned_at = vec![0i128; n];
    let start = Instant::now();
    for (i, at) in spawned_at.iter_mut().enumerate() {
        pace(start, i, rate);
        *at = now_unix_ns();
        let child = Command::new("/bin/true")
            .arg(format!("{marker}-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /bin/true");
        reap_tx.send(child).expect("reaper alive");
    }
    let spawn_secs = start.elapsed().as_secs_f64();
    drop(reap_tx);
    reaper.join().expect("reaper thread");

    // Each marker process yields an exec line (its exit line has no argv).
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.load(Relaxed) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = watch.stop();
    let lines = reader.join().expect("stdout reader thread");

    let mut exec_latency = Vec::with_capacity(n);
    let mut spawn_latency = Vec::with_capacity(n);
    let prefix = format!("{marker}-");
    for arrival in &lines {
        let Ok(event) = serde_json::from_str::<Value>(&arrival.line) else {
            continue;
        };
        if event["kind"] != "exec" {
            continue;
        }
        let Some(index) = event["argv"][1]
            .as_str()
            .and_then(|a| a.strip_prefix(&prefix))
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < n)
        else {
            continue;
        };
        let Some(ts) = event["timestamp"].as_str().and_then(parse_rfc3339_ns) else {
            continue;
        };
        exec_latency.push(arrival.at_ns - ts);
        spawn_latency.push(arrival.at_ns - spawned_at[index]);
    }
    KernelRun {
        received: exec_latency.len(),
        exec_latency: Summary::of(exec_latency),
        spawn_latency: Summary::of(spawn_latency),
        rate: n as f64 / spawn_secs.max(1e-9),
        stats,
    }
}

/// The peer: lines with an RFC 3339 timestamp written to a pipe at the same
/// pace, read by the same reader; latency = arrival − the line's timestamp.
fn pipe_floor(n: usize, rate: u64) -> Option<Summary> {
    let (read_end, mut write_end) = std::io::pipe().expect("pipe");
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = spawn_reader(read_end, "floor".to_owned(), seen);
    let start = Instant::now();
    for i in 0..n {
        pace(start, i, rate);
        let now = SystemTime::now();
        let line = format!(
            "{{\"kind\":\"floor\",\"i\":{i},\"timestamp\":\"{}\"}}\n",
            humantime::format_rfc3339_nanos(now)
        );
        write_end.write_all(line.as_bytes()).expect("write to pipe");
    }
    drop(write_end);
    let lines = reader.join().expect("pipe reader thread");
    let latencies = lines
        .iter()
        .filter_map(|a| {
            let v: Value = serde_json::from_str(&a.line).ok()?;
            Some(a.at_ns - parse_rfc3339_ns(v["timestamp"].as_str()?)?)
        })
        .collect();
    Summary::of(latencies)
}

/// A tmpfs directory to put the WAL of a second run on, if this host has one.
fn tmpfs_dir() -> Option<&'static str> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            (f.nth(1), f.next()) == (Some("/dev/shm"), Some("tmpfs"))
        })
        .then_some("/dev/shm")
}

fn print_run(label: &str, run: &KernelRun, n: usize) {
    println!(
        "latency {label}: spawned {n} at {:.0}/s achieved; {} marker exec events received ({} missing)",
        run.rate,
        run.received,
        n - run.received.min(n)
    );
    println!("latency {label}: watch stats {}", run.stats);
    match &run.exec_latency {
        Some(s) => s.print(&format!(
            "{label} exec→stdout (kernel exec timestamp → line read by the subscriber)"
        )),
        None => println!("latency {label} exec→stdout: no marker exec events arrived"),
    }
    if let Some(s) = &run.spawn_latency {
        s.print(&format!(
            "{label} spawn→stdout (harness clock before fork → line read; includes fork+exec)"
        ));
    }
}

pub fn main() {
    let full = benchmark_mode();
    let (n, rate) = if full {
        (
            env_or("PROCMOND_BENCH_EXECS", DEFAULT_EXECS),
            env_or("PROCMOND_BENCH_RATE", DEFAULT_RATE),
        )
    } else {
        (SMOKE_EXECS, SMOKE_RATE)
    };
    if !rustix::process::geteuid().is_root() {
        loud(&[
            "exec → subscriber latency NOT MEASURED: not root",
            "run `cargo bench -p procmond --bench latency` as root",
        ]);
        return;
    }
    if let Some(reason) = ebpf_unavailable() {
        loud(&[
            &format!("exec → subscriber latency NOT MEASURED: eBPF unavailable: {reason}"),
            "polling misses short-lived processes, so there is nothing comparable to measure",
        ]);
        return;
    }
    println!(
        "latency: kernel {}; {n} × /bin/true at {rate}/s under `procmond watch --source ebpf --format json`{}",
        uname(),
        if full { "" } else { " (smoke pass)" }
    );

    // The real configuration: the WAL in the temp dir, on disk, synced per batch.
    let disk = kernel_run(n, rate, None);
    print_run("wal-on-disk", &disk, n);
    if !full {
        return;
    }
    // Timing a part: the same path with the WAL on tmpfs, where its sync is
    // free. Not a durable configuration; it shows what the disk sync costs.
    let tmpfs = tmpfs_dir().map(|dir| {
        let run = kernel_run(n, rate, Some(dir));
        print_run("wal-on-tmpfs", &run, n);
        run
    });
    if tmpfs.is_none() {
        println!("latency wal-on-tmpfs: skipped, no tmpfs at /dev/shm");
    }
    let floor = pipe_floor(n, rate);
    if let Some(s) = &floor {
        s.print("pipe floor (peer: harness thread → pipe → same reader, same pace)");
    }
    assert!(
        disk.received * 100 >= n * 99,
        "only {} of {n} marker execs arrived: not a latency measurement",
        disk.received
    );
    let Some(exec) = &disk.exec_latency else {
        return;
    };
    let ratio = |a: i128, b: i128| a as f64 / (b as f64).max(1.0);
    if let Some(floor) = &floor {
        println!(
            "ratio latency: exec→stdout / pipe floor = p50 {:.1}x, p99 {:.1}x, max {:.1}x",
            ratio(exec.p50, floor.p50),
            ratio(exec.p99, floor.p99),
            ratio(exec.max, floor.max)
        );
    }
    if let Some(mem) = tmpfs.as_ref().and_then(|r| r.exec_latency.as_ref()) {
        println!(
            "ratio latency: wal-on-disk / wal-on-tmpfs = p50 {:.1}x, p99 {:.1}x, max {:.1}x (the disk sync's share)",
            ratio(exec.p50, mem.p50),
            ratio(exec.p99, mem.p99),
            ratio(exec.max, mem.max)
        );
    }
    let p99_ms = exec.p99 as f64 / 1e6;
    println!(
        "goal latency: exec → subscriber p99 < {GOAL_P99_MS} ms: {} (p99 {p99_ms:.3} ms, {:.0} % of the budget)",
        if p99_ms < GOAL_P99_MS {
            "MET"
        } else {
            "NOT MET"
        },
        100.0 * p99_ms / GOAL_P99_MS
    );
}

fn uname() -> String {
    let u = rustix::system::uname();
    format!(
        "{} {}",
        u.sysname().to_string_lossy(),
        u.release().to_string_lossy()
    )
}
