//! Helpers for agent tests: a private directory with agent.yaml, the broker
//! socket, the WAL and the sink; the real `procmond agent` process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct AgentDir {
    pub dir: PathBuf,
}

impl AgentDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(super::marker(tag));
        std::fs::create_dir_all(&dir).expect("agent dir");
        Self { dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/broker.sock")
    }

    pub fn sink(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    pub fn wal(&self) -> PathBuf {
        self.dir.join("wal")
    }

    /// Writes agent.yaml: one collector (this build) unless `collectors` is
    /// given; `extra` is appended to the collector's `config:` block.
    pub fn write_config(&self, top: &str, collector_extra: &str, with_collector: bool) -> PathBuf {
        let collectors = if with_collector {
            format!(
                "collectors:
  - id: procmond
    type: process-monitor
    binary_path: {bin}
    args: [run]
    enabled: true
    auto_restart: true
    config:
      collection_interval_secs: 30
      wal_dir: {wal}
{collector_extra}",
                bin = env!("CARGO_BIN_EXE_procmond"),
                wal = self.wal().display(),
            )
        } else {
            "collectors: []\n".to_string()
        };
        let text = format!(
            "broker:
  socket: {socket}
  allowed_uids: [0]
sinks:
  - type: jsonl
    path: {sink}
{top}
{collectors}",
            socket = self.socket().display(),
            sink = self.sink().display(),
        );
        let path = self.dir.join("agent.yaml");
        std::fs::write(&path, text).expect("write agent.yaml");
        path
    }

    /// Every JSON line the sink holds.
    pub fn sink_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.sink()).unwrap_or_default();
        text.lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("sink line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits until `pred` holds for the sink's events.
    pub fn wait_for_sink(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.sink_events();
            if pred(&events) {
                return events;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; sink has {} events",
                    events.len()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for AgentDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `procmond agent`.
pub struct Agent {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Agent {
    pub fn start(config: &Path) -> Agent {
        Self::start_with(super::procmond(), config)
    }

    pub fn start_with(mut cmd: Command, config: &Path) -> Agent {
        let mut child = cmd
            .arg("agent")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        let (log, _) = super::collect_lines(child.stderr.take().expect("stderr"));
        Agent { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!("agent exited ({status}) before {needle:?}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {needle:?} in the agent log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Count of `needle` in the log.
    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    pub fn signal(&self, sig: &str) {
        super::kill(sig, self.pid());
    }

    /// SIGTERM and wait (60 s at most); returns whether it exited 0.
    pub fn stop(mut self) -> (bool, String) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(100));
                return (status.success(), self.log());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("agent did not stop within 60 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `(pid, ppid, cmdline)` of every process.
fn processes() -> Vec<(u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid: u32 = rest
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        out.push((pid, ppid, cmdline));
    }
    out
}

/// Pids of live `procmond run` collectors under `agent` (through its launcher).
pub fn collector_pids(agent: u32) -> Vec<u32> {
    let all = processes();
    let launchers: Vec<u32> = all
        .iter()
        .filter(|(_, ppid, cmd)| {
            *ppid == agent && cmd.windows(15).any(|w| w == b"agent-launcher\0")
        })
        .map(|(pid, _, _)| *pid)
        .collect();
    all.iter()
        .filter(|(_, ppid, cmd)| launchers.contains(ppid) && cmd.windows(4).any(|w| w == b"run\0"))
        .map(|(pid, _, _)| *pid)
        .collect()
}

/// `Uid:` and `Gid:` lines of /proc/PID/status: real, effective, saved, fs.
pub fn ids(pid: u32) -> (Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|s| s.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    (line("Uid:"), line("Gid:"))
}

/// `procmond ctl --socket <dir's socket> ARGS`: the output and its JSON.
pub fn ctl(dir: &AgentDir, args: &[&str]) -> (std::process::Output, Value) {
    let out = super::procmond()
        .arg("ctl")
        .arg("--socket")
        .arg(dir.socket())
        .args(args)
        .output()
        .expect("run ctl");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

impl AgentDir {
    /// agent.yaml with `sinks` (YAML list items), `top` (more top-level
    /// keys, each line ending in a newline) and one collector.
    pub fn write_config_with_sinks(&self, sinks: &str, top: &str) -> PathBuf {
        let text = format!(
            "broker:
  socket: {socket}
  allowed_uids: [0]
sinks:
{sinks}{top}collectors:
  - id: procmond
    type: process-monitor
    binary_path: {bin}
    args: [run]
    config:
      collection_interval_secs: 30
      wal_dir: {wal}
",
            socket = self.socket().display(),
            bin = env!("CARGO_BIN_EXE_procmond"),
            wal = self.wal().display(),
        );
        let path = self.dir.join("agent.yaml");
        std::fs::write(&path, text).expect("write agent.yaml");
        path
    }
}

/// agent.yaml `heartbeat:` for supervision tests: 1 s beats, escalation in
/// seconds rather than minutes.
pub const FAST_HEARTBEAT: &str = "heartbeat:
  interval_secs: 1
  missed_threshold: 3
  health_check_timeout_secs: 1
  graceful_shutdown_timeout_secs: 2";

/// An agent with one collector, in steady state.
pub fn started_agent(tag: &str, top: &str) -> (AgentDir, Agent) {
    let dir = AgentDir::new(tag);
    let config = dir.write_config(top, "", true);
    let mut agent = Agent::start(&config);
    agent.wait_for_log("steady state", Duration::from_secs(60));
    (dir, agent)
}

/// Runs `n` marker execs and waits until the sink has every one of them
/// (paired by the marker in argv, never by pid).
pub fn markers_in_sink(dir: &AgentDir, m: &str, n: usize, within: Duration) {
    super::run_shell(&format!(
        "i=0; while [ $i -lt {n} ]; do /bin/sh -c 'exit 0' {m}-$i; i=$((i+1)); done"
    ));
    dir.wait_for_sink(within, "every marker exec", |ev| {
        let mut seen: Vec<&str> = ev
            .iter()
            .filter(|e| e["kind"] == "exec")
            .filter_map(|e| e["argv"][3].as_str())
            .filter(|a| a.starts_with(m))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len() >= n
    });
}
