//! One module per `procmond` command, plus what they share.

pub mod agent;
pub mod capabilities;
pub mod config;
pub mod ctl;
pub mod probe_loader;
pub mod run;
#[cfg(windows)]
pub mod service;
pub mod snapshot;
pub mod watch;

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

/// One thread runs every task of a procmond process (docs/architecture.md):
/// the work per batch is small, and a second worker would only add thread
/// hand-offs (futex wake-ups were the largest cost per event). Blocking
/// work has its own threads: the kernel reader, snapshots (spawn_blocking)
/// and sled's I/O.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// agent.yaml's default place (`agent --config`, `ctl`).
pub const DEFAULT_AGENT_CONFIG: &str = if cfg!(windows) {
    r"C:\ProgramData\procmond\agent.yaml"
} else {
    "/etc/procmond/agent.yaml"
};

/// Files procmond creates (WAL, sockets' directories) are private by default.
/// (Windows: each private directory gets its own ACL where it is created.)
pub fn restrict_umask() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Logs what this process may do (docs/reference.md §6: detected and logged at start).
pub fn log_privileges() {
    // Windows: SeDebugPrivilege (held by administrators and LocalSystem)
    // lets snapshots open every process; enabling it is harmless otherwise.
    #[cfg(windows)]
    let _ = procmond::sys::windows::enable_privilege("SeDebugPrivilege");
    let p = procmond::privileges::detect();
    tracing::info!(euid = ?p.euid, capabilities = %p.effective_summary(), can_load_bpf = p.can_load_bpf(), can_read_all_processes = p.can_read_all_processes(), "privileges");
}

/// Cancels `shutdown` on SIGINT, SIGTERM or after `duration` seconds.
#[cfg(unix)]
pub fn spawn_stop_triggers(shutdown: CancellationToken, duration: Option<u64>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let limit = async {
            match duration {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining and stopping"),
            _ = int.recv() => tracing::info!("SIGINT: draining and stopping"),
            _ = limit => tracing::info!("--duration reached: draining and stopping"),
            _ = shutdown.cancelled() => {}
        }
        shutdown.cancel();
    });
    Ok(())
}

/// Windows: cancels `shutdown` on Ctrl-C, Ctrl-Break, console close or
/// system shutdown, after `duration` seconds, or — for a collector the
/// launcher started (`STOP_ON_STDIN_EOF_ENV`) — when its stdin closes.
#[cfg(windows)]
pub fn spawn_stop_triggers(shutdown: CancellationToken, duration: Option<u64>) -> Result<()> {
    use procmond::agent::launcher::STOP_ON_STDIN_EOF_ENV;
    use tokio::signal::windows;
    if std::env::var_os(STOP_ON_STDIN_EOF_ENV).is_some() {
        // A plain thread: a blocked read must not hold the runtime at exit.
        let stop = shutdown.clone();
        std::thread::Builder::new()
            .name("stop-on-eof".into())
            .spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 64];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                tracing::info!("stdin closed by the launcher: draining and stopping");
                stop.cancel();
            })
            .context("starting the stdin watcher")?;
    }
    // A process without a console (a service's collector) may not get
    // every handler: each missing one is logged, none is fatal.
    let warn = |what: &'static str| move |e: std::io::Error| tracing::warn!(error = %e, "no {what} handler");
    let mut c = windows::ctrl_c().map_err(warn("Ctrl-C")).ok();
    let mut brk = windows::ctrl_break().map_err(warn("Ctrl-Break")).ok();
    let mut close = windows::ctrl_close().map_err(warn("console-close")).ok();
    let mut off = windows::ctrl_shutdown().map_err(warn("shutdown")).ok();
    tokio::spawn(async move {
        let limit = async {
            match duration {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        let ctrl_c = async {
            match c.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let ctrl_break = async {
            match brk.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let closed = async {
            match close.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let off = async {
            match off.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => tracing::info!("Ctrl-C: draining and stopping"),
            _ = ctrl_break => tracing::info!("Ctrl-Break: draining and stopping"),
            _ = closed => tracing::info!("console closed: draining and stopping"),
            _ = off => tracing::info!("system shutdown: draining and stopping"),
            _ = limit => tracing::info!("--duration reached: draining and stopping"),
            _ = shutdown.cancelled() => {}
        }
        shutdown.cancel();
    });
    Ok(())
}
