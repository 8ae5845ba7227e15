//! Collector supervision: spawn each enabled collector with the broker
//! socket in its environment and its config in a private file, restart it
//! when it exits (if `auto_restart`), and stop it gracefully at shutdown.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::agent::CollectorConfig;

/// Environment variable that tells a collector where the broker is.
pub const BROKER_SOCKET_ENV: &str = "DAEMONEYE_BROKER_SOCKET";
const RESTART_DELAY: Duration = Duration::from_secs(1);
const ALERT_RESTARTS: usize = 3;
const ALERT_WINDOW: Duration = Duration::from_secs(600);

/// Writes the collector's config (its `config:` block, id filled in) to a
/// 0600 file in `runtime_dir`.
pub fn write_collector_config(
    collector: &CollectorConfig,
    runtime_dir: &Path,
) -> std::io::Result<PathBuf> {
    let mut config = collector.config.clone();
    config.collector_id.clone_from(&collector.id);
    let text = serde_norway::to_string(&config).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(runtime_dir)?;
    let path = runtime_dir.join(format!("{}.yaml", collector.id));
    std::fs::write(&path, text)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

fn spawn(collector: &CollectorConfig, config_file: &Path, socket: &Path) -> std::io::Result<Child> {
    Command::new(&collector.binary_path)
        .args(&collector.args)
        .arg("--config")
        .arg(config_file)
        .env(BROKER_SOCKET_ENV, socket)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

/// Keeps one collector running until `shutdown`; then SIGTERM, and SIGKILL
/// after `grace`.
pub async fn supervise(
    collector: CollectorConfig,
    socket: PathBuf,
    runtime_dir: PathBuf,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let id = collector.id.clone();
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let child = write_collector_config(&collector, &runtime_dir)
            .and_then(|file| spawn(&collector, &file, &socket));
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(collector = %id, error = %e, binary = %collector.binary_path.display(), "cannot start collector");
                if !collector.auto_restart || wait_or_shutdown(RESTART_DELAY * 5, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        tracing::info!(collector = %id, pid, "collector started");
        let status = tokio::select! {
            status = child.wait() => status,
            _ = shutdown.cancelled() => {
                stop(&mut child, &id, grace).await;
                return;
            }
        };
        log_exit(&id, pid, status);
        if !collector.auto_restart {
            tracing::warn!(collector = %id, "auto_restart is off: not restarting");
            return;
        }
        let now = Instant::now();
        restarts.push_back(now);
        while restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > ALERT_WINDOW)
        {
            restarts.pop_front();
        }
        if restarts.len() >= ALERT_RESTARTS {
            tracing::error!(collector = %id, restarts = restarts.len(), "ALERT: collector restarted {ALERT_RESTARTS} or more times in 10 minutes");
        }
        if wait_or_shutdown(RESTART_DELAY, &shutdown).await {
            return;
        }
        tracing::warn!(collector = %id, "restarting collector");
    }
}

fn log_exit(id: &str, pid: u32, status: std::io::Result<ExitStatus>) {
    match status {
        Ok(s) if s.success() => tracing::warn!(collector = %id, pid, "collector exited cleanly"),
        Ok(s) => tracing::error!(collector = %id, pid, status = %s, "collector exited"),
        Err(e) => tracing::error!(collector = %id, pid, error = %e, "lost track of collector"),
    }
}

/// True if shutdown came first.
async fn wait_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// SIGTERM, then SIGKILL if it outlives `grace`.
pub async fn stop(child: &mut Child, id: &str, grace: Duration) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => log_stopped(id, status),
        Err(_) => {
            tracing::error!(collector = %id, "collector ignored SIGTERM for {grace:?}: killing");
            let _ = child.kill().await;
        }
    }
}

fn log_stopped(id: &str, status: std::io::Result<ExitStatus>) {
    match status {
        Ok(s) if s.success() => tracing::info!(collector = %id, "collector stopped"),
        Ok(s) => tracing::warn!(collector = %id, status = %s, "collector stopped with an error"),
        Err(e) => tracing::warn!(collector = %id, error = %e, "collector stop not observed"),
    }
}
