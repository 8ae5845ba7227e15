//! `cargo xtask bench-overhead`: what procmond costs the host under a fork
//! storm, against a bare tracer (libbpf-tools `execsnoop`) measured in the
//! same run on the same workload.
//!
//! Method (docs/benchmarks.md): K spawners run N `/bin/true` each from a
//! `sh` loop (every spawn is a fork, an exec and two exits). Each variant —
//! no sensor, execsnoop, `procmond watch --format json > file`, and the
//! production path (`procmond agent` + launcher + collector, jsonl sink) — is
//! started and waited on until it is attached; then the workload runs. The
//! sensor's CPU is the user+sys time of its whole process tree (every thread,
//! from /proc) between the workload's start and the moment its output holds
//! every exec and exit (or stops growing); the sensor's peak RSS in the
//! storm is the largest VmHWM in its tree after resetting it (clear_refs)
//! when the workload starts, and its start-up peak is the VmHWM before. Variants are interleaved round by round and medians reported, as
//! ratios against execsnoop and against the workload alone.
//!
//! `--rates 10,100,1000,max` runs the same comparison at fixed exec rates
//! (spawned from this process on a schedule, `--seconds` long) as well as
//! in the storm (`max`): most hosts are not in a storm, and a flush or wake-up
//! per event costs most where events are few. Per exec CPU and the share of
//! one core are reported beside the ratios.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Baseline,
    Execsnoop,
    Watch,
    /// `watch` of another build (`--compare`): the same run's A/B.
    WatchCompare,
    Agent,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Self::Baseline => "workload alone",
            Self::Execsnoop => "execsnoop (libbpf-tools)",
            Self::Watch => "procmond watch --format json > file",
            Self::WatchCompare => "the same, comparison build (--compare)",
            Self::Agent => "procmond agent + collector, jsonl sink",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Sample {
    cpu_s: f64,
    wall_s: f64,
    rss_mib: f64,
    startup_rss_mib: f64,
    execs: usize,
    exits: usize,
    lost: Option<u64>,
}

pub struct Options {
    pub spawners: usize,
    pub spawns: usize,
    /// Execs per second spread over the spawners; `None`: as fast as the
    /// `sh` loops go (`spawns` each).
    pub rate: Option<u32>,
    /// How long a fixed-rate workload runs.
    pub seconds: u64,
    pub rounds: usize,
    pub procmond: PathBuf,
    /// Another procmond binary whose `watch` is measured in the same rounds.
    pub compare: Option<PathBuf>,
}

pub fn run(opts: &Options) -> Result<()> {
    ensure_execsnoop()?;
    let work = std::env::temp_dir().join(format!("procmond-overhead-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let variants: Vec<Variant> = [
        Variant::Baseline,
        Variant::Execsnoop,
        Variant::Watch,
        Variant::WatchCompare,
        Variant::Agent,
    ]
    .into_iter()
    .filter(|v| *v != Variant::WatchCompare || opts.compare.is_some())
    .collect();
    let mut results: HashMap<&'static str, Vec<Sample>> = HashMap::new();
    for round in 1..=opts.rounds {
        for &v in &variants {
            let s = measure(v, opts, &work.join(format!("r{round}")))
                .with_context(|| format!("round {round}, {}", v.label()))?;
            eprintln!(
                "round {round} {:<40} cpu {:6.2} s  wall {:6.2} s  rss {:5.1} MiB  exec {} exit {} lost {:?}",
                v.label(),
                s.cpu_s,
                s.wall_s,
                s.rss_mib,
                s.execs,
                s.exits,
                s.lost
            );
            results.entry(v.label()).or_default().push(s);
        }
    }
    let _ = fs::remove_dir_all(&work);
    print_table(opts, &variants, &results);
    Ok(())
}

impl Options {
    /// Execs (and exits) the workload makes.
    fn want(&self) -> usize {
        match self.rate {
            Some(rate) => rate as usize * self.seconds as usize,
            None => self.spawners * self.spawns,
        }
    }

    fn workload(&self) -> String {
        match self.rate {
            Some(rate) => format!("{rate} /bin/true a second for {} s", self.seconds),
            None => format!("{} spawners x {} /bin/true", self.spawners, self.spawns),
        }
    }
}

/// Runs the workload to its end.
pub(crate) fn run_workload(opts: &Options) -> Result<()> {
    let Some(rate) = opts.rate else {
        let spawners: Vec<Child> = (0..opts.spawners)
            .map(|_| {
                Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "i=0; while [ $i -lt {} ]; do /bin/true; i=$((i+1)); done",
                        opts.spawns
                    ))
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        for mut s in spawners {
            s.wait()?;
        }
        return Ok(());
    };
    // Spawn j at start + j / rate, spawner j % K: on schedule, not in bursts.
    let (want, k) = (opts.want(), opts.spawners.max(1));
    let start = Instant::now();
    let threads: Vec<_> = (0..k)
        .map(|i| {
            std::thread::spawn(move || -> std::io::Result<()> {
                for j in (i..want).step_by(k) {
                    let at = start + Duration::from_secs_f64(j as f64 / f64::from(rate));
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    Command::new("/bin/true").status()?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a spawner thread panicked"))??;
    }
    Ok(())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_table(opts: &Options, variants: &[Variant], r: &HashMap<&'static str, Vec<Sample>>) {
    let med = |v: Variant, f: fn(&Sample) -> f64| median(r[v.label()].iter().map(f).collect());
    let snoop_cpu = med(Variant::Execsnoop, |s| s.cpu_s);
    let base_wall = med(Variant::Baseline, |s| s.wall_s);
    let want = opts.want();
    println!(
        "\n{}, {} rounds (medians; expected {want} execs and exits)\n",
        opts.workload(),
        opts.rounds
    );
    println!(
        "| path | sensor CPU (s) | vs execsnoop | CPU per exec (µs) | % of a core | workload wall (s) | slowdown | peak RSS in the storm (MiB) | peak RSS at start-up (MiB) | execs seen | exits seen | kernel_lost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for v in variants {
        let samples = &r[v.label()];
        let cpu = med(*v, |s| s.cpu_s);
        let wall = med(*v, |s| s.wall_s);
        let min_exec = samples.iter().map(|s| s.execs).min().unwrap_or(0);
        let min_exit = samples.iter().map(|s| s.exits).min().unwrap_or(0);
        let lost = samples.iter().filter_map(|s| s.lost).max();
        let (ratio, seen) = if *v == Variant::Baseline {
            ("—".to_string(), ("—".to_string(), "—".to_string()))
        } else {
            (
                format!("{:.1}×", cpu / snoop_cpu),
                (min_exec.to_string(), min_exit.to_string()),
            )
        };
        let (seen_exec, seen_exit) = seen;
        let seen_exit = if *v == Variant::Execsnoop {
            "n/a".into()
        } else {
            seen_exit
        };
        println!(
            "| {} | {:.2} | {ratio} | {:.0} | {:.2} | {wall:.2} | {:+.0} % | {} | {} | {seen_exec} | {seen_exit} | {} |",
            v.label(),
            cpu,
            cpu * 1e6 / want as f64,
            cpu * 100.0 / wall,
            (wall / base_wall - 1.0) * 100.0,
            if *v == Variant::Baseline {
                "—".to_string()
            } else {
                format!("{:.1}", med(*v, |s| s.rss_mib))
            },
            if *v == Variant::Baseline {
                "—".to_string()
            } else {
                format!("{:.1}", med(*v, |s| s.startup_rss_mib))
            },
            lost.map_or("—".into(), |l| l.to_string()),
        );
    }
}

fn ensure_execsnoop() -> Result<()> {
    if Path::new("/usr/sbin/execsnoop").exists() {
        return Ok(());
    }
    println!("xtask: installing the Debian package libbpf-tools (execsnoop)");
    crate::run(Command::new("apt-get").arg("update").arg("-qq"))?;
    crate::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "libbpf-tools",
            ]),
    )
}

/// One variant, once: start, wait until attached, run the workload, wait
/// for the output to settle, sample, stop.
fn measure(v: Variant, opts: &Options, dir: &Path) -> Result<Sample> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let out = dir.join("out");
    let err = dir.join("err");
    let mut child = match v {
        Variant::Baseline => None,
        Variant::Execsnoop => Some(spawn(
            Command::new("unshare").args([
                "-m",
                "sh",
                "-c",
                "{ mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; } && exec stdbuf -oL /usr/sbin/execsnoop",
            ]),
            &out,
            &err,
        )?),
        Variant::Watch | Variant::WatchCompare => {
            let bin = match (&opts.compare, v) {
                (Some(other), Variant::WatchCompare) => other,
                _ => &opts.procmond,
            };
            Some(spawn(
                Command::new(bin).args(["watch", "--format", "json"]),
                &out,
                &err,
            )?)
        }
        Variant::Agent => {
            let config = write_agent_config(dir, &opts.procmond)?;
            Some(spawn(
                Command::new(&opts.procmond)
                    .arg("agent")
                    .arg("--config")
                    .arg(config),
                &out,
                &err,
            )?)
        }
    };
    let (events, ready_text, ready_file): (PathBuf, &str, &Path) = match v {
        Variant::Execsnoop => (out.clone(), "PCOMM", &out),
        Variant::Watch | Variant::WatchCompare => (out.clone(), "monitoring started", &err),
        Variant::Agent => (dir.join("events.jsonl"), "steady state", &err),
        Variant::Baseline => (out.clone(), "", &out),
    };
    if let Some(c) = child.as_mut() {
        wait_for_text(c, ready_file, ready_text, Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(500)); // inventory settles
    }
    let root = child.as_ref().map(Child::id);
    // The peak so far is start-up's (procmond: parsing the kernel BTF);
    // then the peak is reset so the storm's own peak is measured.
    let startup_rss_mib = root.map_or(0.0, |r| tree_max_hwm_kib(r) as f64 / 1024.0);
    if let Some(r) = root {
        reset_hwm(r);
    }
    let cpu_before = root.map_or(0.0, tree_cpu_s);
    let started = Instant::now();
    run_workload(opts)?;
    let wall_s = started.elapsed().as_secs_f64();
    let mut sample = Sample {
        wall_s,
        startup_rss_mib,
        ..Sample::default()
    };
    let Some(mut child) = child else {
        return Ok(sample);
    };
    let (execs, exits) = settle(v, &events, opts.want());
    sample.execs = execs;
    sample.exits = exits;
    let root = child.id();
    sample.cpu_s = tree_cpu_s(root) - cpu_before;
    sample.rss_mib = tree_max_hwm_kib(root) as f64 / 1024.0;
    if v == Variant::Agent {
        sample.lost = agent_kernel_lost(&opts.procmond, dir);
    }
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(root.to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{} did not stop within 30 s of SIGINT", v.label());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if matches!(v, Variant::Watch | Variant::WatchCompare) {
        sample.lost = closing_lost(&err);
    }
    Ok(sample)
}

pub(crate) fn spawn(cmd: &mut Command, out: &Path, err: &Path) -> Result<Child> {
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(out)?)
        .stderr(fs::File::create(err)?)
        .spawn()?)
}

pub(crate) fn wait_for_text(
    child: &mut Child,
    file: &Path,
    text: &str,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if fs::read_to_string(file).is_ok_and(|s| s.contains(text)) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "exited ({status}) before it was ready: {}",
                fs::read_to_string(file).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "not ready after {limit:?} (no {text:?} in {})",
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Counts `/bin/true` execs and `true` exits in the output until all are
/// there or the count stops growing for two seconds.
fn settle(v: Variant, events: &Path, want: usize) -> (usize, usize) {
    let mut last = (0, 0);
    let mut still_since = Instant::now();
    loop {
        let now = count(v, events);
        let done = now.0 >= want && (v == Variant::Execsnoop || now.1 >= want);
        if done || still_since.elapsed() > Duration::from_secs(2) {
            return now;
        }
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count(v: Variant, events: &Path) -> (usize, usize) {
    let text = fs::read_to_string(events).unwrap_or_default();
    if v == Variant::Execsnoop {
        let execs = text
            .lines()
            .filter(|l| l.split_whitespace().next() == Some("true"))
            .count();
        return (execs, 0);
    }
    let (mut execs, mut exits) = (0, 0);
    for line in text.lines() {
        if line.contains("\"kind\":\"exec\"") && line.contains("\"exe\":\"/bin/true\"")
            || line.contains("\"kind\":\"exec\"") && line.contains("\"exe\":\"/usr/bin/true\"")
        {
            execs += 1;
        } else if line.contains("\"kind\":\"exit\"") && line.contains("\"name\":\"true\"") {
            exits += 1;
        }
    }
    (execs, exits)
}

pub(crate) fn write_agent_config(dir: &Path, procmond: &Path) -> Result<PathBuf> {
    let text = format!(
        "broker:\n  socket: {d}/run/broker.sock\n  allowed_uids: [0]\nsinks:\n  - type: jsonl\n    path: {d}/events.jsonl\ncollectors:\n  - id: procmond\n    type: process-monitor\n    binary_path: {bin}\n    args: [run]\n    config:\n      wal_dir: {d}/wal\n",
        d = dir.display(),
        bin = procmond.display()
    );
    let path = dir.join("agent.yaml");
    fs::write(&path, text)?;
    Ok(path)
}

pub(crate) fn agent_kernel_lost(procmond: &Path, dir: &Path) -> Option<u64> {
    let out = Command::new(procmond)
        .args(["ctl", "health", "--socket"])
        .arg(dir.join("run/broker.sock"))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    find_u64(&v, "kernel_lost")
}

fn closing_lost(err: &Path) -> Option<u64> {
    let text = fs::read_to_string(err).ok()?;
    let at = text.rfind("kernel_lost")?;
    let digits: String = text[at + "kernel_lost".len()..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn find_u64(v: &serde_json::Value, key: &str) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .or_else(|| m.values().find_map(|x| find_u64(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_u64(x, key)),
        _ => None,
    }
}

/// `(pid, ppid, utime + stime ticks)` of every process.
pub(crate) fn processes() -> Vec<(u32, u32, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised comm: state ppid ... utime(14) stime(15).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        out.push((pid, num(1) as u32, num(11) + num(12)));
    }
    out
}

pub(crate) fn descendants(root: u32, procs: &[(u32, u32, u64)]) -> Vec<u32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(procs.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    tree
}

/// CPU seconds used so far by `root` and every live descendant.
fn tree_cpu_s(root: u32) -> f64 {
    let procs = processes();
    let tree = descendants(root, &procs);
    let ticks: u64 = procs
        .iter()
        .filter(|p| tree.contains(&p.0))
        .map(|p| p.2)
        .sum();
    ticks as f64 / 100.0
}

/// Resets the peak RSS (VmHWM) of every process in the tree.
fn reset_hwm(root: u32) {
    for pid in descendants(root, &processes()) {
        let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

/// The largest VmHWM (peak RSS) in the tree: the collector's, for procmond.
fn tree_max_hwm_kib(root: u32) -> u64 {
    let procs = processes();
    descendants(root, &procs)
        .iter()
        .filter_map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .max()
        .unwrap_or(0)
}
