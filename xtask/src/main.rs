//! Developer tasks that are not plain `cargo build`.
//!
//! `cargo xtask build-ebpf` compiles the C probes in `procmond-ebpf/` into the
//! object that procmond embeds; `--check` proves the committed object is what
//! the committed source builds to (CI runs it). The object is committed so
//! that building procmond needs nothing but Rust; this task is the only place
//! that needs clang.

#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod coverage;
#[cfg(test)]
mod layering;
mod matrix;
mod overhead;
mod soak;
mod windows;

/// Debian packages that provide what `build-ebpf` runs and includes.
const NEEDED_PACKAGES: &str = "clang llvm libbpf-dev";
/// Debian packages the tests run: `nats-server` for the NATS sink's
/// end-to-end tests and benchmark (tests/nats.rs, benches/sinks.rs).
const TEST_PACKAGES: &str = "nats-server";
/// Each probe source, the object it builds to, and the defines it is built
/// with: the event probes twice, with bpf_loop (5.17+) and with a bounded
/// loop in its place for older kernels (platform/sources/ebpf/attach.rs picks one).
const OBJECTS: [(&str, &str, &[&str]); 3] = [
    ("src/procmond.bpf.c", "procmond.bpf.o", &[]),
    (
        "src/procmond.bpf.c",
        "procmond_compat.bpf.o",
        &["-DPROCMOND_BOUNDED_LOOP"],
    ),
    ("src/procmond_iter.bpf.c", "procmond_iter.bpf.o", &[]),
];

#[derive(Parser)]
#[command(about = "procmond developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object from procmond-ebpf/src with clang (CO-RE).
    BuildEbpf {
        /// Do not write: fail if the committed object differs from a fresh build.
        #[arg(long)]
        check: bool,
    },
    /// Type-check (clippy, warnings denied) for the other targets (FreeBSD,
    /// macOS, Windows MSVC).
    CheckTargets,
    /// The whole test suite, as CI runs it: installs the Debian packages the
    /// probe check needs (when root), checks the probe object, formatting and
    /// lints, then runs every test (the end-to-end ones need root), then the
    /// kernel matrix (`kernel-matrix`).
    Test,
    /// The Windows part of `test` alone: clippy for x86_64-pc-windows-msvc,
    /// then the windows-gnu build, unit tests and end-to-end test under
    /// wine (installs mingw-w64 and wine when missing).
    TestWindows,
    /// Runs each hostile-input target (tests/fuzz.rs) for SECS seconds in a
    /// release build and prints how many cases each survived.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
    /// The probes on Debian's 5.10, 6.1, 6.12 and 7.x cloud kernels, each
    /// booted in QEMU (software emulation), and on the host's kernel:
    /// `watch --source ebpf` under a known workload, every event checked.
    KernelMatrix {
        /// `/bin/true` spawns per spawner (two spawners).
        #[arg(long, default_value_t = 150)]
        spawns: usize,
        /// `ebpf_probes` for every run (`bpf_loop` forces the 5.17+ build
        /// everywhere: the 5.10 row must then fail).
        #[arg(long, default_value = "auto")]
        probes: String,
        /// Only these kernels (labels: 5.10, 6.1, 6.12, 7.x).
        #[arg(long, value_delimiter = ',')]
        kernels: Vec<String>,
        /// Skip the run on the host's kernel.
        #[arg(long)]
        no_host: bool,
        /// Longest one VM may run, in seconds.
        #[arg(long, default_value_t = 600)]
        limit_secs: u64,
    },
    /// CPU, slowdown and RSS of procmond under a fork storm, against
    /// execsnoop in the same run (as root; builds the release binary).
    BenchOverhead {
        /// Concurrent spawner loops.
        #[arg(long, default_value_t = 2)]
        spawners: usize,
        /// `/bin/true` spawns per spawner.
        #[arg(long, default_value_t = 10_000)]
        spawns: usize,
        /// Interleaved rounds (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Another procmond binary whose `watch` runs in the same rounds
        /// (an A/B against an earlier build).
        #[arg(long)]
        compare: Option<std::path::PathBuf>,
        /// Fixed exec rates to measure, comma-separated, `max` for the
        /// storm (e.g. `10,100,1000,max`); without it, the storm only.
        #[arg(long, value_delimiter = ',')]
        rates: Vec<String>,
        /// How long each fixed-rate workload runs.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Line coverage of the library by its in-process tests, whole and on
    /// the critical path (cargo-llvm-cov, installed when missing); prints
    /// the tables and writes docs/coverage.md.
    Coverage,
    /// The production path (agent + collector, jsonl sink) for MINUTES at a
    /// fixed exec rate, RSS, descriptors and WAL size sampled every minute,
    /// with the slope of each (docs/benchmarks.md).
    Soak {
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// `/bin/true` spawned a second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf { check } => build_ebpf(check),
        Task::Test => test(),
        Task::CheckTargets => check_targets(),
        Task::TestWindows => windows::test_alone(),
        Task::KernelMatrix {
            spawns,
            probes,
            kernels,
            no_host,
            limit_secs,
        } => kernel_matrix(&matrix::Options {
            spawns,
            probes,
            kernels,
            host: !no_host,
            limit: std::time::Duration::from_secs(limit_secs),
        }),
        Task::Fuzz { secs } => {
            println!("xtask: each fuzz target runs {secs} s (release build)");
            run(
                Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                    .env("PROCMOND_FUZZ_SECS", secs.to_string())
                    .args([
                        "test",
                        "--release",
                        "-p",
                        "procmond",
                        "--test",
                        "fuzz",
                        "--",
                    ])
                    .args(["--nocapture", "--test-threads=1"]),
            )
        }
        Task::Soak { minutes, rate } => soak(minutes, rate),
        Task::Coverage => coverage::run(ebpf_dir()?.parent().context("no workspace root")?),
        Task::BenchOverhead {
            spawners,
            spawns,
            rounds,
            compare,
            rates,
            seconds,
        } => {
            let root = ebpf_dir()?
                .parent()
                .context("no workspace root")?
                .to_path_buf();
            cargo(&["build", "--release", "--quiet", "-p", "procmond"])?;
            let rates = if rates.is_empty() {
                vec![None]
            } else {
                rates
                    .iter()
                    .map(|r| match r.as_str() {
                        "max" => Ok(None),
                        n => n
                            .parse::<u32>()
                            .ok()
                            .filter(|n| *n > 0)
                            .map(Some)
                            .with_context(|| {
                                format!("--rates: {n:?} is not a rate (execs a second) or max")
                            }),
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            for rate in rates {
                overhead::run(&overhead::Options {
                    spawners,
                    spawns,
                    rate,
                    seconds,
                    rounds,
                    procmond: root.join("target/release/procmond"),
                    compare: compare.clone(),
                })?;
            }
            Ok(())
        }
    }
}

fn soak(minutes: u64, rate: u32) -> Result<()> {
    let root = ebpf_dir()?
        .parent()
        .context("no workspace root")?
        .to_path_buf();
    cargo(&["build", "--release", "--quiet", "-p", "procmond"])?;
    soak::run(&soak::Options {
        minutes,
        rate,
        procmond: root.join("target/release/procmond"),
    })
}

fn kernel_matrix(opts: &matrix::Options) -> Result<()> {
    let root = ebpf_dir()?
        .parent()
        .context("no workspace root")?
        .to_path_buf();
    matrix::ensure_packages()?;
    let procmond = matrix::build_procmond(&root)?;
    matrix::run(&root, &procmond, opts)
}

fn ebpf_dir() -> Result<PathBuf> {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = xtask.parent().context("xtask has no parent directory")?;
    Ok(root.join("procmond-ebpf"))
}

/// First tool in `candidates` that runs with `--version`, or the env override.
fn find_tool(env: &str, candidates: &[&str]) -> Result<String> {
    if let Ok(tool) = std::env::var(env) {
        return Ok(tool);
    }
    for name in candidates {
        let ok = Command::new(name)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok((*name).to_string());
        }
    }
    bail!(
        "none of {candidates:?} found (set {env}); install the Debian packages: apt-get install {NEEDED_PACKAGES}"
    )
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Installs `NEEDED_PACKAGES` and `TEST_PACKAGES` with apt when a tool is
/// missing, saying so.
fn ensure_packages() -> Result<()> {
    // mingw-w64 and wine for the Windows build and tests (xtask/src/windows.rs).
    windows::ensure_packages()?;
    let have_clang = find_tool("CLANG", &["clang", "clang-14", "clang-16", "clang-22"]).is_ok();
    let have_headers = Path::new("/usr/include/bpf/bpf_helpers.h").exists();
    let have_strip = find_tool(
        "LLVM_STRIP",
        &["llvm-strip", "llvm-strip-14", "llvm-strip-16"],
    )
    .is_ok();
    let have_nats = Command::new("nats-server")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let mut missing: Vec<&str> = Vec::new();
    if !(have_clang && have_headers && have_strip) {
        missing.extend(NEEDED_PACKAGES.split(' '));
    }
    if !have_nats {
        missing.extend(TEST_PACKAGES.split(' '));
    }
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "xtask: installing Debian packages for the probe check and the tests: {}",
        missing.join(" ")
    );
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("xtask: cargo {}", args.join(" "));
    run(Command::new(cargo).args(args))
}

/// Targets whose procmond code is type-checked here (docs/platforms.md):
/// clippy with every feature and `-D warnings`, std from rustup. (MSVC:
/// ring's C is compiled by clang with mingw's headers, .cargo/config.toml.)
const OTHER_TARGETS: [&str; 4] = [
    "x86_64-unknown-freebsd",
    "aarch64-apple-darwin",
    "x86_64-apple-darwin",
    "x86_64-pc-windows-msvc",
];

/// `cargo clippy -D warnings` of procmond's lib and bins, every feature,
/// for `target` (std must be installed), in `target/cross`.
fn clippy_target(root: &Path, target: &str) -> Result<()> {
    println!("xtask: clippy for {target}");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .env("CARGO_TARGET_DIR", root.join("target/cross"))
            .args([
                "clippy",
                "-p",
                "procmond",
                // Benches and tests too: each must type-check on every
                // platform (a Linux-only suite is an empty crate elsewhere).
                "--all-targets",
                "--all-features",
                "--target",
                target,
            ])
            .args(["--", "-D", "warnings"]),
    )
}

fn check_targets() -> Result<()> {
    let root = ebpf_dir()?
        .parent()
        .context("no workspace root")?
        .to_path_buf();
    for target in OTHER_TARGETS {
        let have_std = Command::new("rustup")
            .args(["target", "add", target])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !have_std {
            // Say so loudly rather than fail the whole suite on a registry
            // outage: these checks only type-check other operating systems.
            eprintln!("!!! xtask: `rustup target add {target}` failed:");
            eprintln!("!!! the {target} type check is SKIPPED in this run");
            continue;
        }
        clippy_target(&root, target)?;
    }
    Ok(())
}

fn test() -> Result<()> {
    ensure_packages()?;
    build_ebpf(true)?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    // The FreeBSD rc.d script: POSIX sh syntax (no FreeBSD here to run it).
    let root = ebpf_dir()?
        .parent()
        .context("no workspace root")?
        .to_path_buf();
    run(Command::new("sh")
        .arg("-n")
        .arg(root.join("config/procmond.rc")))?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    check_targets()?;
    windows::test(&root)?;
    cargo(&["test", "--workspace", "--all-targets"])?;
    // The probes on four more kernels in QEMU, and on this one again.
    kernel_matrix(&matrix::Options {
        spawns: 150,
        probes: "auto".into(),
        kernels: Vec::new(),
        host: true,
        limit: std::time::Duration::from_secs(600),
    })
}

fn build_ebpf(check: bool) -> Result<()> {
    for (source, object, defines) in OBJECTS {
        build_object(source, object, defines, check)?;
    }
    Ok(())
}

fn build_object(source: &str, object: &str, defines: &[&str], check: bool) -> Result<()> {
    let dir = ebpf_dir()?;
    let clang = find_tool("CLANG", &["clang", "clang-14", "clang-16", "clang-22"])?;
    let strip = find_tool(
        "LLVM_STRIP",
        &["llvm-strip", "llvm-strip-14", "llvm-strip-16"],
    )?;
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        bail!("/usr/include/bpf/bpf_helpers.h is missing; install the Debian package libbpf-dev");
    }
    let out_dir = dir
        .parent()
        .context("no workspace root")?
        .join("target/ebpf");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let fresh = out_dir.join(object);

    // -fdebug-prefix-map plus stripping DWARF keeps the output independent of
    // the checkout path; BTF and its CO-RE relocations stay in the object.
    run(Command::new(&clang)
        .current_dir(&dir)
        .args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
        ])
        .args(defines)
        .arg(format!("-fdebug-prefix-map={}=.", dir.display()))
        .args(["-Iinclude", "-c", source, "-o"])
        .arg(&fresh))?;
    run(Command::new(&strip).arg("-g").arg(&fresh))?;

    let committed = dir.join(object);
    let fresh_bytes = fs::read(&fresh)?;
    if check {
        let old = fs::read(&committed)
            .with_context(|| format!("reading committed object {}", committed.display()))?;
        if old != fresh_bytes {
            let version = Command::new(&clang).arg("--version").output()?;
            bail!(
                "{} is not what {source} builds to ({} vs {} bytes) with {}; run `cargo xtask build-ebpf` and commit the object",
                committed.display(),
                old.len(),
                fresh_bytes.len(),
                String::from_utf8_lossy(&version.stdout)
                    .lines()
                    .next()
                    .unwrap_or("clang")
            );
        }
        println!("{} matches its source", committed.display());
    } else {
        fs::write(&committed, &fresh_bytes)?;
        println!(
            "wrote {} ({} bytes)",
            committed.display(),
            fresh_bytes.len()
        );
    }
    Ok(())
}
