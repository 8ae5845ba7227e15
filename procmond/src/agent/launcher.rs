//! Privilege separation: the launcher.
//!
//! The agent drops to an unprivileged user once its collectors are ready,
//! yet it must still stop and restart root collectors. So before anything
//! else it starts `procmond agent-launcher`: a small process that stays root,
//! reads agent.yaml itself, and on the agent's word (JSON lines on its
//! stdin) starts, signals and reaps the collectors it lists — only those,
//! by id: a compromised agent cannot make it run anything else. When the
//! agent goes away (stdin closes) the launcher stops every collector and
//! exits, so no collector is ever orphaned.
//!
//! On Windows there is no privilege drop, but the same launcher runs the
//! collectors (one code path for supervision). There are no signals: TERM
//! closes the collector's stdin (`procmond run` stops on EOF when
//! `STOP_ON_STDIN_EOF_ENV` is set) and KILL is TerminateProcess; the
//! collectors' configs go to `%ProgramData%\procmond\launcher`, whose ACL
//! admits only SYSTEM, Administrators and the agent's account.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::config::AgentConfig;
use crate::config::agent::CollectorConfig;

/// Environment variable that tells a collector where the broker is.
pub const BROKER_SOCKET_ENV: &str = "PROCMOND_BROKER_SOCKET";
/// The same, under the name the product's contract gives it
/// (docs/reference.md §3): exported too, and read when the first is unset.
pub const CONTRACT_BROKER_SOCKET_ENV: &str = "DAEMONEYE_BROKER_SOCKET";

/// The broker socket named in this process's environment, if any.
pub fn broker_socket_from_env() -> Option<std::path::PathBuf> {
    std::env::var_os(BROKER_SOCKET_ENV)
        .or_else(|| std::env::var_os(CONTRACT_BROKER_SOCKET_ENV))
        .map(std::path::PathBuf::from)
}

/// Windows: set by the launcher, tells `procmond run` that its stdin
/// closing is the request to stop (there is no SIGTERM).
pub const STOP_ON_STDIN_EOF_ENV: &str = "PROCMOND_STOP_ON_STDIN_EOF";

/// Agent → launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Order {
    /// Start collector `id`, handing it `credential` to register with
    /// (`bus/authz.rs`); the agent issues a new one for every start.
    Spawn {
        id: String,
        credential: String,
    },
    Signal {
        id: String,
        signal: Sig,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sig {
    TERM,
    KILL,
}

/// Launcher → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    Started {
        id: String,
        pid: u32,
    },
    Exited {
        id: String,
        pid: u32,
        status: String,
        success: bool,
    },
    Failed {
        id: String,
        message: String,
    },
}

/// What supervision asks of a launcher: orders in (reports come back on
/// the channel it was started with), and a last word at shutdown. The real
/// one is the privileged process below; the agent's in-process tests use a
/// recording fake (`agent/supervision_tests.rs`).
pub trait Launch: Send {
    /// Hands `order` over; an error means the launcher did not take it.
    fn order(&mut self, order: &Order) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Lets the launcher go: it stops what still runs, within `grace`.
    fn finish(self, grace: Duration) -> impl Future<Output = ()> + Send
    where
        Self: Sized;
}

impl Launch for Launcher {
    fn order(&mut self, order: &Order) -> impl Future<Output = std::io::Result<()>> + Send {
        Launcher::order(self, order)
    }

    fn finish(self, grace: Duration) -> impl Future<Output = ()> + Send {
        Launcher::finish(self, grace)
    }
}

/// The agent's side: orders go in, reports come out.
#[derive(Debug)]
pub struct Launcher {
    child: Child,
    stdin: ChildStdin,
}

impl Launcher {
    /// Starts `procmond agent-launcher --config CONFIG`; reports arrive on the channel.
    pub fn start(config: &Path) -> std::io::Result<(Self, mpsc::Receiver<Report>)> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("agent-launcher")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("launcher stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("launcher stdout"))?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Report>(&line) {
                    Ok(report) => {
                        if tx.send(report).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "invalid report from the launcher"),
                }
            }
        });
        Ok((Self { child, stdin }, rx))
    }

    pub async fn order(&mut self, order: &Order) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(order).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await
    }

    /// Closes the launcher's stdin (it stops every collector) and waits.
    pub async fn finish(mut self, grace: Duration) {
        drop(self.stdin);
        if tokio::time::timeout(grace + Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Creates `dir` 0700, or checks that it is a real directory (not a
/// symlink) owned by this user and closed to everyone else.
#[cfg(unix)]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let own = rustix::process::geteuid().as_raw();
    if !meta.file_type().is_dir() || meta.uid() != own || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory of uid {own} (a symlink, another owner, or open to others): refusing to write collector configs there",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Windows: creates `dir` (a real directory, not a link) and gives it the
/// private ACL (SYSTEM, Administrators, this account), inherited by the
/// files written inside.
#[cfg(windows)]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is a link: refusing to write collector configs there",
                dir.display()
            ),
        ));
    }
    crate::sys::windows::make_private(dir)
}

/// Windows: replaces `path` with a new file holding `bytes` (created
/// exclusively, so a link put in its place is not written through).
#[cfg(windows)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)
}

/// Where the launcher writes the collectors' configs: a root-only
/// directory beside the socket; on Windows under `%ProgramData%`.
fn launcher_dir(socket: &Path) -> PathBuf {
    if cfg!(windows) {
        std::env::var_os("ProgramData")
            .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from)
            .join("procmond")
            .join("launcher")
    } else {
        socket
            .parent()
            .map_or_else(|| PathBuf::from("/run/procmond"), Path::to_path_buf)
            .join("launcher")
    }
}

/// Replaces `path` with a new 0600 file holding `bytes`, never following a
/// symlink (unlink removes a link itself; O_EXCL|O_NOFOLLOW then create).
#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    file.write_all(bytes)
}

/// The launcher process itself (`procmond agent-launcher`).
pub async fn serve(config_path: &Path) -> std::io::Result<()> {
    let config = AgentConfig::load(config_path).map_err(std::io::Error::other)?;
    let grace = Duration::from_secs(config.heartbeat.graceful_shutdown_timeout_secs);
    let (exits_tx, mut exits) = mpsc::channel::<Report>(64);
    let mut launching = Launching {
        // The collectors' configs live in a root-only directory of their
        // own: the socket's directory may be reachable by the allowed users.
        runtime_dir: launcher_dir(&config.broker.socket),
        socket: config.broker.socket.clone(),
        heartbeat_secs: config.heartbeat.interval_secs,
        collectors: config
            .collectors
            .iter()
            .filter(|c| c.enabled)
            .map(|c| (c.id.clone(), c.clone()))
            .collect(),
        running: HashMap::new(),
        exits: exits_tx,
    };
    let mut orders = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    loop {
        tokio::select! {
            line = orders.next_line() => {
                let Ok(Some(line)) = line else { break };
                let order: Order = match serde_json::from_str(&line) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(error = %e, "launcher: invalid order ignored");
                        continue;
                    }
                };
                if let Some(r) = launching.obey(order) {
                    write_report(&mut out, &r).await?;
                }
            }
            Some(report) = exits.recv() => {
                if let Report::Exited { id, .. } = &report {
                    launching.running.remove(id);
                }
                write_report(&mut out, &report).await?;
            }
        }
    }
    // The agent is gone: stop everything we started.
    stop_all(launching.running, &mut exits, grace).await;
    Ok(())
}

/// What the launcher runs, and what it may run.
struct Launching {
    runtime_dir: PathBuf,
    socket: PathBuf,
    heartbeat_secs: u64,
    collectors: HashMap<String, CollectorConfig>,
    running: HashMap<String, (u32, mpsc::UnboundedSender<Sig>)>,
    exits: mpsc::Sender<Report>,
}

impl Launching {
    /// Carries out one order; what to report, if anything.
    fn obey(&mut self, order: Order) -> Option<Report> {
        match order {
            Order::Spawn { id, credential } => Some(self.spawn(id, &credential)),
            Order::Signal { id, signal } => {
                if let Some(entry) = self.running.get(&id) {
                    send_signal(entry, signal);
                }
                None
            }
        }
    }

    /// Starts collector `id` if agent.yaml names it and it is not running.
    fn spawn(&mut self, id: String, credential: &str) -> Report {
        let failed = |id, message: &str| Report::Failed {
            id,
            message: message.into(),
        };
        let Some(c) = self.collectors.get(&id) else {
            return failed(id, "not a collector in agent.yaml");
        };
        if self.running.contains_key(&id) {
            return failed(id, "already running");
        }
        let launched = launch(
            c,
            &self.runtime_dir,
            &self.socket,
            self.heartbeat_secs,
            credential,
        );
        match launched {
            Ok(child) => {
                let pid = child.id().unwrap_or(0);
                let (sig_tx, sig_rx) = mpsc::unbounded_channel();
                self.running.insert(id.clone(), (pid, sig_tx));
                tokio::spawn(reap(id.clone(), child, sig_rx, self.exits.clone()));
                Report::Started { id, pid }
            }
            Err(e) => failed(id, &e.to_string()),
        }
    }
}

/// TERM to every collector, KILL to those still running after `grace`.
async fn stop_all(
    mut running: HashMap<String, (u32, mpsc::UnboundedSender<Sig>)>,
    exits: &mut mpsc::Receiver<Report>,
    grace: Duration,
) {
    for entry in running.values() {
        send_signal(entry, Sig::TERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, exits.recv()).await {
            Ok(Some(Report::Exited { id, .. })) => {
                running.remove(&id);
            }
            Ok(_) => {}
            Err(_) => {
                for entry in running.values() {
                    send_signal(entry, Sig::KILL);
                }
                break;
            }
        }
    }
}

async fn write_report(out: &mut tokio::io::Stdout, report: &Report) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await
}

/// Signals a running collector: kill(2) on Unix; on Windows its reaper
/// closes its stdin (TERM) or terminates it (KILL).
fn send_signal(entry: &(u32, mpsc::UnboundedSender<Sig>), sig: Sig) {
    #[cfg(windows)]
    let _ = entry.1.send(sig);
    #[cfg(unix)]
    kill(entry.0, sig);
}

#[cfg(unix)]
fn kill(pid: u32, sig: Sig) {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let signal = match sig {
        Sig::TERM => rustix::process::Signal::TERM,
        Sig::KILL => rustix::process::Signal::KILL,
    };
    let _ = rustix::process::kill_process(pid, signal);
}

async fn reap(
    id: String,
    mut child: Child,
    #[cfg_attr(unix, allow(unused_mut))] mut signals: mpsc::UnboundedReceiver<Sig>,
    exits: mpsc::Sender<Report>,
) {
    let pid = child.id().unwrap_or(0);
    #[cfg(unix)]
    let waited = {
        let _keep = signals;
        child.wait().await
    };
    #[cfg(windows)]
    let waited = {
        let mut stdin = child.stdin.take();
        loop {
            tokio::select! {
                status = child.wait() => break status,
                Some(sig) = signals.recv() => match sig {
                    Sig::TERM => drop(stdin.take()),
                    Sig::KILL => {
                        let _ = child.start_kill();
                    }
                },
            }
        }
    };
    let report = match waited {
        Ok(status) => Report::Exited {
            id,
            pid,
            status: status.to_string(),
            success: status.success(),
        },
        Err(e) => Report::Exited {
            id,
            pid,
            status: e.to_string(),
            success: false,
        },
    };
    let _ = exits.send(report).await;
}

/// Writes the collector's config (its `config:` block with the id and the
/// heartbeat period filled in) to a new 0600 file in the launcher's private
/// directory, then starts it with its registration credential in its
/// environment (readable only by its own user and root). Never follows a
/// symlink: the directory must be a real root-only directory, and the file
/// is created exclusively.
fn launch(
    collector: &CollectorConfig,
    runtime_dir: &Path,
    socket: &Path,
    heartbeat_secs: u64,
    credential: &str,
) -> std::io::Result<Child> {
    let mut config = collector.config.clone();
    config.collector_id.clone_from(&collector.id);
    config.heartbeat_interval_secs = heartbeat_secs;
    let text = serde_norway::to_string(&config).map_err(std::io::Error::other)?;
    private_dir(runtime_dir)?;
    let path = runtime_dir.join(format!("{}.yaml", collector.id));
    write_private(&path, text.as_bytes())?;
    let mut command = Command::new(&collector.binary_path);
    command
        .args(&collector.args)
        .arg("--config")
        .arg(&path)
        .env(BROKER_SOCKET_ENV, socket)
        .env(CONTRACT_BROKER_SOCKET_ENV, socket)
        .env(crate::bus::authz::CREDENTIAL_ENV, credential)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // Windows: the collector's stdin is its stop request (closed on TERM).
    #[cfg(windows)]
    command
        .stdin(Stdio::piped())
        .env(STOP_ON_STDIN_EOF_ENV, "1");
    command.spawn()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("procmond-launcher-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn collector_configs_never_follow_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let base = temp("symlink");
        std::fs::create_dir_all(&base).expect("base");
        let victim = base.join("victim");
        std::fs::write(&victim, "untouched").expect("victim");
        // A private directory whose config name is a symlink to the victim:
        // the link is replaced, the victim is not written through it.
        let dir = base.join("launcher");
        private_dir(&dir).expect("created");
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::os::unix::fs::symlink(&victim, dir.join("c.yaml")).expect("link");
        write_private(&dir.join("c.yaml"), b"new").expect("written");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "untouched"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("c.yaml")).expect("file"),
            "new"
        );
        // The directory itself a symlink, or open to others: refused.
        let link_dir = base.join("link-dir");
        std::os::unix::fs::symlink(&base, &link_dir).expect("dir link");
        assert!(private_dir(&link_dir).is_err());
        let open = base.join("open");
        std::fs::create_dir(&open).expect("open dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(private_dir(&open).is_err());
        let _ = std::fs::remove_dir_all(&base);
    }
}
