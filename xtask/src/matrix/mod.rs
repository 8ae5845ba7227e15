//! `cargo xtask kernel-matrix`: procmond's probes loaded and checked on
//! several Linux kernels, each booted in QEMU under software emulation,
//! and on the host's own kernel.
//!
//! One VM at a time boots a Debian cloud kernel (`kernels`) with an
//! initramfs holding procmond and the check script (`guest`). The script
//! runs `procmond watch --source ebpf` — never `auto`, so a kernel where
//! the probes cannot load fails instead of quietly polling — once as
//! configured and once forced onto classic tracepoints, under a known
//! workload, and sends back what procmond printed; `check` judges it.
//! The table goes to stdout and to target/kernel-matrix/table.md; any
//! shortfall fails the task.

mod check;
mod guest;
mod kernels;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use check::{Expect, Outcome, RunFiles};

/// What to run.
pub struct Options {
    /// `/bin/true` spawns per spawner (two spawners).
    pub spawns: usize,
    /// `ebpf_probes` for the runs (`auto`; `bpf_loop` to break 5.10).
    pub probes: String,
    /// Kernel labels to boot (all when empty).
    pub kernels: Vec<String>,
    /// Also run on the host's kernel.
    pub host: bool,
    /// Longest one VM may take.
    pub limit: Duration,
}

/// The runs the script makes on each kernel, and what each must attach.
const RUNS: [(&str, Expect); 2] = [("auto", Expect::Btf), ("classic", Expect::Classic)];

/// One row of the table: a run on a kernel.
struct Row {
    kernel: String,
    run: String,
    outcome: Outcome,
    wall: Duration,
}

pub fn run(root: &Path, procmond: &Path, opts: &Options) -> Result<()> {
    let work = root.join("target/kernel-matrix");
    fs::create_dir_all(&work)?;
    let initramfs = work.join("initramfs.cpio");
    guest::build_initramfs(procmond, &initramfs)?;
    let env = vec![
        ("KM_SPAWNS", opts.spawns.to_string()),
        ("KM_PROBES", opts.probes.clone()),
        ("KM_RUNS", "auto,classic".to_string()),
    ];
    let mut rows = Vec::new();
    for kernel in kernels::fetch(&work.join("apt"), &opts.kernels)? {
        println!("xtask: booting {} ({})", kernel.label, kernel.package);
        let dir = work.join("boots").join(&kernel.label);
        fs::create_dir_all(&dir)?;
        let boot = guest::boot(&kernel.vmlinuz, &initramfs, &env, &dir, opts.limit)?;
        if boot.timed_out {
            println!(
                "xtask: {} did not power off within {:?}",
                kernel.label, opts.limit
            );
        }
        rows.extend(judge(&kernel.label, &boot, opts.spawns));
    }
    if opts.host {
        let dir = work.join("host");
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let boot = guest::run_on_host(procmond, &env, &dir)?;
        let release = host_release();
        rows.extend(judge(&format!("host {release}"), &boot, opts.spawns));
    }
    let table = table(&rows);
    println!("{table}");
    fs::write(work.join("table.md"), &table)?;
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.outcome.passed()).collect();
    for row in &failed {
        println!("FAILED {} {}:", row.kernel, row.run);
        for p in row.outcome.problems.iter().take(12) {
            println!("  - {p}");
        }
    }
    if !failed.is_empty() {
        bail!(
            "kernel matrix: {} of {} runs failed",
            failed.len(),
            rows.len()
        );
    }
    println!("kernel matrix: {} runs passed", rows.len());
    Ok(())
}

/// The rows of one boot: each run checked, or one failed row that says
/// why there was nothing to check.
fn judge(kernel: &str, boot: &guest::Boot, spawns: usize) -> Vec<Row> {
    let row = |run: &str, outcome: Outcome| Row {
        kernel: kernel.to_string(),
        run: run.to_string(),
        outcome,
        wall: boot.wall,
    };
    let failed = |why: String| {
        let tail: Vec<&str> = boot.console.lines().rev().take(15).collect();
        let mut problems = vec![why];
        problems.extend(tail.into_iter().rev().map(|l| format!("console: {l}")));
        Outcome {
            problems,
            ..Outcome::default()
        }
    };
    let (sections, finished) = match guest::sections(&boot.data) {
        Ok(s) => s,
        Err(e) => return vec![row("-", failed(format!("unreadable output: {e:#}")))],
    };
    let mut rows = Vec::new();
    for (run, expect) in RUNS {
        let get = |f: &str| sections.get(&format!("{run}/{f}")).cloned();
        let Some(meta) = get("meta") else {
            let why = if boot.timed_out {
                "the guest timed out before this run reported"
            } else {
                "this run never reported"
            };
            rows.push(row(run, failed(why.into())));
            continue;
        };
        let files = RunFiles {
            meta,
            log: get("log").unwrap_or_default(),
            events: get("events").unwrap_or_default(),
            procs_before: get("procs-before").unwrap_or_default(),
            procs_after: get("procs-after").unwrap_or_default(),
        };
        rows.push(row(run, check::check(&files, expect, spawns)));
    }
    if !finished && let Some(last) = rows.last_mut() {
        last.outcome
            .problems
            .push("the check script did not finish".into());
    }
    rows
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| kernel | run | probes | snapshots | execs | exits | forks | setuid | inventory (missing, extra) | lost | run s | boot + test s | result |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let o = &r.outcome;
        let tally = |t: check::Tally| format!("{}/{}", t.seen, t.expected);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({}, {}) | {} | {:.1} | {:.0} | {} |",
            r.kernel,
            r.run,
            o.probes,
            o.snapshots,
            tally(o.execs),
            tally(o.exits),
            tally(o.forks),
            tally(o.setuid),
            o.inventory,
            o.inventory_missing,
            o.inventory_extra,
            o.lost,
            o.seconds,
            r.wall.as_secs_f64(),
            o.verdict(),
        );
    }
    t
}

/// The host's kernel release, from /proc.
fn host_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Debian packages the matrix needs: QEMU and a static busybox.
pub fn ensure_packages() -> Result<()> {
    let have = |bin: &str| {
        std::process::Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // ldd fails on a static binary ("not a dynamic executable").
    let static_busybox = Path::new("/bin/busybox").exists()
        && std::process::Command::new("ldd")
            .arg("/bin/busybox")
            .output()
            .is_ok_and(|o| !o.status.success());
    if have("qemu-system-x86_64") && static_busybox {
        return Ok(());
    }
    println!("xtask: installing qemu-system-x86 and busybox-static for the kernel matrix");
    crate::run(std::process::Command::new("apt-get").args(["update", "-qq"]))?;
    crate::run(
        std::process::Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(["qemu-system-x86", "busybox-static"]),
    )
}

/// The release procmond binary, built.
pub fn build_procmond(root: &Path) -> Result<PathBuf> {
    crate::cargo(&["build", "--release", "--quiet", "-p", "procmond"])?;
    let bin = root.join("target/release/procmond");
    bin.exists()
        .then_some(bin)
        .context("target/release/procmond was not built")
}
