//! `cargo xtask soak --minutes N [--rate 200]`: does the production path
//! stay flat over time? Whatever leaks (memory, descriptors, WAL space that
//! acknowledgements never free) shows as a slope, not in a minute's bench.
//!
//! Method (docs/benchmarks.md): the agent, its launcher and one collector
//! (`procmond agent`, jsonl sink, WAL in a scratch directory) run while
//! `/bin/true` is spawned on a fixed schedule at `rate` a second. Every
//! minute each procmond process's RSS (VmRSS) and open descriptors are read
//! from /proc, with the WAL directory's bytes on disk (sled's files) and the
//! sink's size. At the end: a table, and per series the growth from minute 2
//! (start-up over) to the last and the least-squares slope per hour. It is
//! a measurement, not a test: nothing is asserted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::overhead;

pub struct Options {
    pub minutes: u64,
    pub rate: u32,
    pub procmond: PathBuf,
}

/// One minute's reading.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    minute: u64,
    collector_rss_kib: u64,
    collector_fds: u64,
    agent_rss_kib: u64,
    agent_fds: u64,
    launcher_rss_kib: u64,
    wal_kib: u64,
    sink_mib: f64,
}

pub fn run(opts: &Options) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("procmond-soak-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let config = overhead::write_agent_config(&dir, &opts.procmond)?;
    let err = dir.join("agent.err");
    let mut agent = overhead::spawn(
        Command::new(&opts.procmond)
            .arg("agent")
            .arg("--config")
            .arg(config),
        &dir.join("agent.out"),
        &err,
    )?;
    overhead::wait_for_text(&mut agent, &err, "steady state", Duration::from_secs(60))
        .context("starting the agent")?;
    let workload = overhead::Options {
        spawners: 2,
        spawns: 0,
        rate: Some(opts.rate),
        seconds: opts.minutes * 60,
        rounds: 1,
        procmond: opts.procmond.clone(),
        compare: None,
    };
    let spawner = std::thread::spawn(move || overhead::run_workload(&workload));
    let start = Instant::now();
    let mut readings = Vec::new();
    for minute in 0..=opts.minutes {
        let at = start + Duration::from_secs(minute * 60);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let r = read(&agent, &dir, minute);
        eprintln!("{}", row(&r));
        readings.push(r);
    }
    spawner
        .join()
        .map_err(|_| anyhow::anyhow!("the spawner panicked"))??;
    let lost = overhead::agent_kernel_lost(&opts.procmond, &dir);
    stop(&mut agent)?;
    println!(
        "\nsoak: procmond agent path, {} /bin/true a second for {} min; kernel_lost at the end: {lost:?}\n",
        opts.rate, opts.minutes
    );
    println!("{HEADER}");
    for r in &readings {
        println!("{}", row(r));
    }
    println!();
    summarize(&readings);
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

const HEADER: &str = "| minute | collector RSS (MiB) | collector fds | agent RSS (MiB) | agent fds | launcher RSS (MiB) | WAL on disk (MiB) | sink (MiB) |\n|---|---|---|---|---|---|---|---|";

fn row(r: &Reading) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    format!(
        "| {} | {:.1} | {} | {:.1} | {} | {:.1} | {:.2} | {:.0} |",
        r.minute,
        mib(r.collector_rss_kib),
        r.collector_fds,
        mib(r.agent_rss_kib),
        r.agent_fds,
        mib(r.launcher_rss_kib),
        mib(r.wal_kib),
        r.sink_mib
    )
}

/// The processes of the agent's tree, told apart by their command line.
fn read(agent: &Child, dir: &Path, minute: u64) -> Reading {
    let procs = overhead::processes();
    let mut r = Reading {
        minute,
        wal_kib: dir_bytes(&dir.join("wal")) / 1024,
        sink_mib: fs::metadata(dir.join("events.jsonl"))
            .map_or(0.0, |m| m.len() as f64 / 1048576.0),
        ..Reading::default()
    };
    for pid in overhead::descendants(agent.id(), &procs) {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let (rss, fds) = (rss_kib(pid), fd_count(pid));
        match args.get(1).copied() {
            Some(b"agent") => (r.agent_rss_kib, r.agent_fds) = (rss, fds),
            Some(b"agent-launcher") => r.launcher_rss_kib = rss,
            Some(b"run") => (r.collector_rss_kib, r.collector_fds) = (rss, fds),
            _ => {}
        }
    }
    r
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Bytes of the files under `dir`, as allocated on disk.
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn stop(agent: &mut Child) -> Result<()> {
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(agent.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = agent.kill();
            anyhow::bail!("the agent did not stop within 60 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One column of the readings, as a number.
type Series = fn(&Reading) -> f64;

/// Growth and slope per series, from minute 2 (start-up over) on.
fn summarize(readings: &[Reading]) {
    let settled: Vec<&Reading> = readings.iter().filter(|r| r.minute >= 2).collect();
    if settled.len() < 2 {
        println!("(too short for a slope: run at least 3 minutes)");
        return;
    }
    let series: [(&str, Series); 5] = [
        ("collector RSS (MiB)", |r| {
            r.collector_rss_kib as f64 / 1024.0
        }),
        ("collector fds", |r| r.collector_fds as f64),
        ("agent RSS (MiB)", |r| r.agent_rss_kib as f64 / 1024.0),
        ("agent fds", |r| r.agent_fds as f64),
        ("WAL on disk (MiB)", |r| r.wal_kib as f64 / 1024.0),
    ];
    println!(
        "| series (minute 2 on) | first | last | min | max | slope per hour |\n|---|---|---|---|---|---|"
    );
    for (name, f) in series {
        let ys: Vec<f64> = settled.iter().map(|r| f(r)).collect();
        let xs: Vec<f64> = settled.iter().map(|r| r.minute as f64).collect();
        let (min, max) = ys
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(*y), b.max(*y)));
        println!(
            "| {name} | {:.1} | {:.1} | {min:.1} | {max:.1} | {:+.2} |",
            ys[0],
            ys[ys.len() - 1],
            slope(&xs, &ys) * 60.0
        );
    }
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

#[cfg(test)]
mod tests {
    use super::slope;

    #[test]
    fn the_slope_of_a_line_is_its_gradient_and_of_a_flat_series_zero() {
        let xs = [2.0, 3.0, 4.0, 5.0];
        assert!((slope(&xs, &[1.0, 3.0, 5.0, 7.0]) - 2.0).abs() < 1e-9);
        assert!(slope(&xs, &[4.0, 4.0, 4.0, 4.0]).abs() < 1e-9);
        assert!((slope(&xs, &[4.0, 5.0, 4.0, 5.0]) - 0.2).abs() < 1e-9);
    }
}
