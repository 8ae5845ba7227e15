//! Helpers for the end-to-end tests: run the real `procmond` binary, feed it
//! real processes, and read back what it printed.

#![allow(dead_code)]

pub mod agent;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn procmond() -> Command {
    Command::new(env!("CARGO_BIN_EXE_procmond"))
}

pub fn is_root() -> bool {
    // /proc/self/status "Uid:" real effective ...
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether the eBPF source can start here, per `procmond capabilities`; the
/// reason when it cannot. Kernel tests then say SKIPPED loudly and stop;
/// with `PROCMOND_REQUIRE_EBPF` set (`.ci/run` sets it: CI has eBPF) this
/// fails instead, so a kernel test never passes without the kernel.
pub fn ebpf_unavailable() -> Option<String> {
    let out = procmond()
        .arg("capabilities")
        .output()
        .expect("run capabilities");
    assert!(
        out.status.success(),
        "capabilities failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let caps: Value = serde_json::from_slice(&out.stdout).expect("capabilities prints JSON");
    let ebpf = caps["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "ebpf"))
        .cloned()
        .unwrap_or(Value::Null);
    if ebpf["available"] == true {
        None
    } else {
        let reason = ebpf["reason"]
            .as_str()
            .unwrap_or("not a Linux host")
            .to_string();
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        assert!(
            std::env::var_os("PROCMOND_REQUIRE_EBPF").is_none(),
            "PROCMOND_REQUIRE_EBPF is set but eBPF cannot start here: {reason}"
        );
        eprintln!("!!! eBPF UNAVAILABLE: {reason}");
        eprintln!("!!! this test is SKIPPED (or checks only what polling can show)");
        eprintln!(
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        Some(reason)
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or fails naming `what`
/// after `within`.
pub fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A two-worker runtime for tests that speak the bus protocol themselves.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A unique marker for this test's processes.
pub fn marker(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("pm-{tag}-{}-{nanos}", std::process::id())
}

/// A running `procmond watch`.
pub struct Watch {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

/// What a finished watch printed.
pub struct Output {
    pub events: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

impl Output {
    /// The closing stats line's counters.
    pub fn stats(&self) -> Value {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| l.contains("procmond watch finished"))
            .unwrap_or_else(|| panic!("no stats line in stderr:\n{}", self.stderr));
        let json = &line[line.find("stats=").expect("stats=") + 6..];
        serde_json::from_str(json).unwrap_or_else(|e| panic!("stats JSON {json}: {e}"))
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| e["kind"] == kind)
    }
}

/// The `entity_id` of `e` (OCSF CPID: one process from fork to exit, never
/// shared by two processes that reuse a pid): the key that pairs the events
/// of one process. Panics, printing the event, when it has none or it is not
/// a UUID: every event a Linux source (ebpf, reconcile, procfs polling)
/// reports carries one, so a missing id is a bug, never a reason to fall
/// back to the pid.
pub fn entity_id(e: &Value) -> &str {
    let id = e["entity_id"]
        .as_str()
        .unwrap_or_else(|| panic!("event without an entity_id: {e}"));
    assert!(
        id.len() == 36 && id.bytes().filter(|b| *b == b'-').count() == 4,
        "entity_id is not a UUID: {e}"
    );
    id
}

/// Pairs `exits` with `execs` by `entity_id`: checks that no two execs share
/// an entity_id, that every exec has an exit with its entity_id, and that no
/// entity_id of `execs` has two exits. Exits of other processes are ignored,
/// so `exits` may hold every exit of the run (no prefilter by pid: the ids
/// decide). Returns the exits in the order of `execs`; `what` names the
/// processes in the messages.
pub fn exits_of<'a>(what: &str, execs: &[&'a Value], exits: &[&'a Value]) -> Vec<&'a Value> {
    use std::collections::HashMap;
    let mut by_id: HashMap<&str, &Value> = HashMap::with_capacity(execs.len());
    for e in execs {
        if let Some(first) = by_id.insert(entity_id(e), e) {
            panic!("{what}: two execs with one entity_id:\n{first}\n{e}");
        }
    }
    let mut exit_of: HashMap<&str, &Value> = HashMap::with_capacity(exits.len());
    for x in exits {
        let id = entity_id(x);
        if !by_id.contains_key(id) {
            continue;
        }
        if let Some(first) = exit_of.insert(id, x) {
            panic!("{what}: two exits for entity_id {id}:\n{first}\n{x}");
        }
    }
    execs
        .iter()
        .map(|e| {
            *exit_of
                .get(entity_id(e))
                .unwrap_or_else(|| panic!("{what}: no exit with the entity_id of {e}"))
        })
        .collect()
}

/// Whether an event's argv contains `needle` in some argument.
pub fn argv_contains(e: &Value, needle: &str) -> bool {
    e["argv"].as_array().is_some_and(|a| {
        a.iter()
            .any(|s| s.as_str().is_some_and(|s| s.contains(needle)))
    })
}

impl Watch {
    /// Starts `procmond watch ARGS` and waits until it reports
    /// "monitoring started" (kernel source attached, inventory emitted).
    pub fn start(args: &[&str]) -> Watch {
        Self::start_with(procmond(), args)
    }

    pub fn start_with(mut cmd: Command, args: &[&str]) -> Watch {
        let mut child = cmd
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn procmond watch");
        let (stdout, stdout_thread) = collect_lines(child.stdout.take().expect("stdout"));
        let (stderr_buf, stderr_thread) = collect_lines(child.stderr.take().expect("stderr"));
        let mut watch = Watch {
            child,
            stdout,
            stdout_thread: Some(stdout_thread),
            stderr: stderr_buf,
            stderr_thread: Some(stderr_thread),
        };
        watch.wait_for_stderr("monitoring started", Duration::from_secs(60));
        watch
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stdout line satisfies `pred` (the sensor's output as it
    /// comes, not only at the end); panics with stderr on timeout.
    pub fn wait_for_stdout(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        while !self.stdout_now().lines().any(&pred) {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the sensor printed on stdout so far.
    pub fn stdout_now(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Waits until stderr contains `needle`; panics with stderr on timeout or exit.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "procmond exited ({status}) before {needle:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {needle:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        kill(sig, self.pid());
    }

    /// SIGINT, then collect everything it printed (60 s at most).
    pub fn stop(self) -> Output {
        self.signal("INT");
        self.finish()
    }

    /// Waits for exit (60 s at most) and collects the output.
    pub fn finish(mut self) -> Output {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "procmond did not exit within 60 s; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for t in [self.stdout_thread.take(), self.stderr_thread.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.join();
        }
        let stdout = self
            .stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let lines: Vec<&str> = stdout.lines().collect();
        let stderr = self.stderr();
        let events = lines
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("stdout line is not one JSON object ({e}): {l:?}"))
            })
            .collect();
        Output {
            events,
            stdout: lines.join("\n"),
            stderr,
            success: status.success(),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `stream` line by line on a thread into a shared string.
pub fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let thread = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            s.push_str(&line);
            s.push('\n');
        }
    });
    (log, thread)
}

/// Sends `-SIG` to `pid` with kill(1).
pub fn kill(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Runs `sh -c SCRIPT` to completion; returns the shell's pid.
pub fn run_shell(script: &str) -> u32 {
    let mut child = Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    let status = child.wait().expect("wait sh");
    assert!(status.success(), "script failed: {script}");
    pid
}
