//! One module per `procmond` command, plus what they share.

pub mod agent;
pub mod capabilities;
pub mod config;
pub mod ctl;
pub mod run;
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

/// Files procmond creates (WAL, sockets' directories) are private by default.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Logs what this process may do (docs/reference.md §6: detected and logged at start).
pub fn log_privileges() {
    let p = procmond::privileges::detect();
    tracing::info!(euid = ?p.euid, capabilities = %p.effective_summary(), can_load_bpf = p.can_load_bpf(), can_read_all_processes = p.can_read_all_processes(), "privileges");
}

/// Cancels `shutdown` on SIGINT, SIGTERM or after `duration` seconds.
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
