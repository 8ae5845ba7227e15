//! Process-table snapshot benchmark (docs/reference.md §8: "enumerate 1 000 processes:
//! < 10 ms, and faster than the `sysinfo` crate on the same host"; "10 000
//! processes: linear, < 100 ms per snapshot").
//!
//! It creates its own load — N extra `/bin/sleep 600` children, killed and
//! reaped when each group ends (also on panic) — then measures, in the same
//! run, procmond's procfs reader against four ways of using sysinfo. Criterion
//! prints absolute times; after each group one line per sysinfo variant gives
//! the ratio of interleaved medians. The host is shared and noisy, so the
//! same-run ratio is what we quote, and no test ever asserts a timing.
//!
//! `PROCMOND_BENCH_PROCS=1000,10000 cargo bench -p procmond --bench snapshot`
//! (comma-separated extra-process counts; default `1000,10000`). Under
//! `cargo test --benches` it runs a small smoke pass instead (16 processes,
//! each routine once, no ratios). See docs/benchmarks.md.

use std::hint::black_box;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use procmond::platform::procfs;
use procmond::sources::ebpf::iter::TaskIter;
use procmond::sources::snapshot::SnapshotOptions;
use procmond::sources::sysinfo_snapshot::refresh_kind;
use sysinfo::{ProcessesToUpdate, System};

/// The fields procmond reports, cwd included (`enhanced_metadata`).
const OPTIONS: SnapshotOptions = SnapshotOptions { cwd: true };
/// Interleaved iterations per routine for the ratio lines.
const RATIO_ITERATIONS: usize = 20;
/// PIDs left free for the rest of the host when sizing the load.
const HEADROOM: u64 = 1000;
/// Extra processes in the smoke pass run by `cargo test --benches`.
const SMOKE_PROCS: usize = 16;

/// N idle child processes; dropping the guard kills and reaps every one.
struct Load {
    children: Vec<Child>,
}

impl Load {
    /// Spawns up to `n` children; stops early (and says so) if the kernel refuses.
    fn spawn(n: usize) -> Load {
        let mut load = Load {
            children: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let spawned = Command::new("/bin/sleep")
                .arg("600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match spawned {
                Ok(child) => load.children.push(child),
                Err(e) => {
                    eprintln!(
                        "load: could only spawn {} of {n} processes ({e}); measuring with {}",
                        load.children.len(),
                        load.children.len()
                    );
                    break;
                }
            }
        }
        load
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.children {
            // Already gone is fine: the wait below reaps it either way.
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// The four routines measured in every group.
#[derive(Clone, Copy)]
enum Routine {
    /// procmond: `procfs::snapshot("/proc", cwd: true)`, a fresh `Snapshot` each time.
    Procmond,
    /// procmond with the kernel source running: the BPF task iterator (as
    /// root, where it loads), same fields, a fresh `Snapshot` each time.
    ProcmondBpfIter,
    /// sysinfo, persistent `System`, refreshing the same fields procmond reads.
    SysinfoSameFields,
    /// sysinfo, persistent `System`, its default `refresh_processes(All, true)`.
    SysinfoDefault,
    /// sysinfo cold: `System::new()` then the same-fields refresh, each time.
    SysinfoCold,
    /// Extra: the same-fields refresh without `tasks`, which sysinfo's
    /// `ProcessRefreshKind::nothing()` keeps on (it lists every thread as a
    /// process, one more readdir of `/proc/PID/task` per process). procmond
    /// lists no threads, so this is the closest like-for-like peer.
    SysinfoSameFieldsNoTasks,
}

const ROUTINES: [Routine; 6] = [
    Routine::Procmond,
    Routine::ProcmondBpfIter,
    Routine::SysinfoSameFields,
    Routine::SysinfoDefault,
    Routine::SysinfoCold,
    Routine::SysinfoSameFieldsNoTasks,
];

impl Routine {
    fn name(self) -> &'static str {
        match self {
            Routine::Procmond => "procmond",
            Routine::ProcmondBpfIter => "procmond_bpf_iter",
            Routine::SysinfoSameFields => "sysinfo_same_fields",
            Routine::SysinfoDefault => "sysinfo_default_refresh",
            Routine::SysinfoCold => "sysinfo_cold",
            Routine::SysinfoSameFieldsNoTasks => "sysinfo_same_fields_no_tasks",
        }
    }
}

/// The persistent sysinfo state one group measures against.
struct Peers {
    iter: Option<TaskIter>,
    same_fields: System,
    default_refresh: System,
    no_tasks: System,
}

impl Peers {
    /// Both `System`s, already filled once so the measured refreshes are updates.
    fn new() -> Peers {
        let iter = match TaskIter::load_standalone() {
            Ok(i) => Some(i),
            Err(e) => {
                println!("procmond_bpf_iter NOT MEASURED (procfs timed in its place): {e}");
                None
            }
        };
        let mut peers = Peers {
            iter,
            same_fields: System::new().expect("sysinfo System::new"),
            default_refresh: System::new().expect("sysinfo System::new"),
            no_tasks: System::new().expect("sysinfo System::new"),
        };
        peers.run(Routine::SysinfoSameFields);
        peers.run(Routine::SysinfoDefault);
        peers.run(Routine::SysinfoSameFieldsNoTasks);
        peers
    }

    /// Runs one routine once; returns how many processes it saw or updated.
    fn run(&mut self, routine: Routine) -> usize {
        match routine {
            Routine::Procmond => procfs::snapshot(Path::new("/proc"), OPTIONS)
                .expect("procfs snapshot of /proc")
                .processes
                .len(),
            Routine::ProcmondBpfIter => match &mut self.iter {
                Some(iter) => iter
                    .snapshot(OPTIONS)
                    .expect("iterator snapshot")
                    .processes
                    .len(),
                None => procfs::snapshot(Path::new("/proc"), OPTIONS)
                    .expect("procfs snapshot of /proc")
                    .processes
                    .len(),
            },
            Routine::SysinfoSameFields => self.same_fields.refresh_processes_specifics(
                ProcessesToUpdate::All,
                true,
                refresh_kind(OPTIONS),
            ),
            Routine::SysinfoDefault => self
                .default_refresh
                .refresh_processes(ProcessesToUpdate::All, true),
            Routine::SysinfoCold => {
                let mut system = System::new().expect("sysinfo System::new");
                system.refresh_processes_specifics(
                    ProcessesToUpdate::All,
                    true,
                    refresh_kind(OPTIONS),
                )
            }
            Routine::SysinfoSameFieldsNoTasks => self.no_tasks.refresh_processes_specifics(
                ProcessesToUpdate::All,
                true,
                refresh_kind(OPTIONS).without_tasks(),
            ),
        }
    }
}

/// Criterion's own reading of its arguments: benchmark mode only with
/// `--bench` and without `--test` / `--list` (so `cargo test --benches`
/// and `--list` never spawn thousands of processes).
fn benchmark_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// Extra-process counts from `PROCMOND_BENCH_PROCS` (default `1000,10000`).
fn requested_sizes() -> Vec<usize> {
    let spec = std::env::var("PROCMOND_BENCH_PROCS").unwrap_or_else(|_| "1000,10000".into());
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .expect("PROCMOND_BENCH_PROCS: comma-separated process counts")
        })
        .collect()
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_u64(path: &str) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// Tasks (processes and threads) alive now: `/proc/loadavg` field 4 is `running/total`.
fn tasks_now() -> u64 {
    read_trimmed("/proc/loadavg")
        .and_then(|s| {
            let field = s.split_whitespace().nth(3)?.to_owned();
            field.split('/').nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Soft RLIMIT_NPROC from `/proc/self/limits` (not enforced for root).
fn nproc_limit() -> Option<u64> {
    let limits = read_trimmed("/proc/self/limits")?;
    let line = limits.lines().find(|l| l.starts_with("Max processes"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Room left under this process's cgroup `pids.max`, v1 or v2, if limited.
fn cgroup_pids_room() -> Option<u64> {
    let cgroups = read_trimmed("/proc/self/cgroup")?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let dir = match controllers {
            "" => format!("/sys/fs/cgroup{path}"),
            c if c.split(',').any(|c| c == "pids") => format!("/sys/fs/cgroup/pids{path}"),
            _ => continue,
        };
        let max = read_u64(&format!("{dir}/pids.max"));
        let current = read_u64(&format!("{dir}/pids.current"));
        if let (Some(max), Some(current)) = (max, current) {
            return Some(max.saturating_sub(current));
        }
    }
    None
}

/// How many extra processes this host can take now, and what bounds it.
fn feasible_procs() -> (u64, String) {
    let tasks = tasks_now();
    let mut bounds: Vec<(u64, String)> = Vec::new();
    if let Some(pid_max) = read_u64("/proc/sys/kernel/pid_max") {
        bounds.push((pid_max.saturating_sub(tasks), format!("pid_max {pid_max}")));
    }
    if let Some(threads_max) = read_u64("/proc/sys/kernel/threads-max") {
        bounds.push((
            threads_max.saturating_sub(tasks),
            format!("threads-max {threads_max}"),
        ));
    }
    if !rustix::process::geteuid().is_root()
        && let Some(nproc) = nproc_limit()
    {
        bounds.push((nproc.saturating_sub(tasks), format!("RLIMIT_NPROC {nproc}")));
    }
    if let Some(room) = cgroup_pids_room() {
        bounds.push((room, format!("cgroup pids.max room {room}")));
    }
    let mem_kb = read_trimmed("/proc/meminfo").and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    if let Some(kb) = mem_kb {
        // A sleeping /bin/sleep costs well under 1 MiB of unshared memory.
        bounds.push((kb / 1024, format!("MemAvailable {} MiB", kb / 1024)));
    }
    let (room, why) = bounds
        .into_iter()
        .min_by_key(|(room, _)| *room)
        .unwrap_or((u64::MAX, "no limit found".into()));
    (
        room.saturating_sub(HEADROOM),
        format!("{why}, {tasks} tasks running"),
    )
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Our own timing loop: every routine `RATIO_ITERATIONS` times, interleaved
/// with a rotating start so none always runs right after another; medians.
fn print_ratios(group: &str, peers: &mut Peers) {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); ROUTINES.len()];
    let mut seen = vec![0usize; ROUTINES.len()];
    for i in 0..RATIO_ITERATIONS {
        for k in 0..ROUTINES.len() {
            let idx = (i + k) % ROUTINES.len();
            let start = Instant::now();
            seen[idx] = black_box(peers.run(ROUTINES[idx]));
            samples[idx].push(start.elapsed());
        }
    }
    let medians: Vec<Duration> = samples.iter_mut().map(|s| median(s)).collect();
    let base = medians[0];
    println!(
        "ratio {group}: procmond median {:.2} ms ({} processes, {RATIO_ITERATIONS} interleaved runs)",
        ms(base),
        seen[0]
    );
    for (b, label) in [(0, "procmond"), (1, "procmond_bpf_iter")] {
        for (idx, routine) in ROUTINES.iter().enumerate().skip(2) {
            println!(
                "ratio {group}: {} / {label} = {:.2}x (median {:.2} ms vs {:.2} ms)",
                routine.name(),
                medians[idx].as_secs_f64() / medians[b].as_secs_f64(),
                ms(medians[idx]),
                ms(medians[b])
            );
        }
    }
    println!(
        "ratio {group}: procmond (procfs) / procmond_bpf_iter = {:.2}x (median {:.2} ms vs {:.2} ms, {} processes)",
        base.as_secs_f64() / medians[1].as_secs_f64(),
        ms(base),
        ms(medians[1]),
        seen[1]
    );
}

fn bench_size(c: &mut Criterion, requested: usize, full: bool) {
    let (room, why) = feasible_procs();
    let target = if full { requested } else { SMOKE_PROCS };
    let target_u64 = u64::try_from(target).unwrap_or(u64::MAX);
    let target = if target_u64 > room {
        let n = usize::try_from(room).unwrap_or(usize::MAX);
        eprintln!("load: {target} extra processes do not fit ({why}); using {n}");
        n
    } else {
        target
    };

    let started = Instant::now();
    let load = Load::spawn(target);
    let n = load.children.len();
    let mut peers = Peers::new();
    let procmond_sees = peers.run(Routine::Procmond);
    let sysinfo_sees = peers.same_fields.processes().len();
    let sysinfo_no_tasks_sees = peers.no_tasks.processes().len();
    println!(
        "load: {n} extra /bin/sleep processes in {:.1} s; procmond sees {procmond_sees} processes, \
         sysinfo {sysinfo_sees} (threads included), {sysinfo_no_tasks_sees} without tasks",
        started.elapsed().as_secs_f64()
    );

    let name = format!("snapshot/{n}_extra");
    {
        let mut group = c.benchmark_group(&name);
        group
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(
                u64::try_from(procmond_sees).unwrap_or(0),
            ));
        for routine in ROUTINES {
            group.bench_function(routine.name(), |b| {
                b.iter(|| black_box(peers.run(routine)));
            });
        }
        group.finish();
    }
    if full {
        print_ratios(&name, &mut peers);
    }
    drop(peers);
    drop(load);
}

pub fn main() {
    let full = benchmark_mode();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let sizes = if full {
        requested_sizes()
    } else {
        vec![SMOKE_PROCS]
    };
    for requested in sizes {
        bench_size(&mut c, requested, full);
    }
    c.final_summary();
}
