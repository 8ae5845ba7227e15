//! End-to-end on Windows, run under wine by `cargo xtask test`: the Windows
//! build of `procmond agent` with a polling collector (ETW cannot start
//! under wine: the degraded path) over the named-pipe bus delivers the
//! start and stop of a marker process to the jsonl sink; an operator whose
//! SID is not allowed is refused; killing the agent stops its collector
//! (the launcher closes the collector's stdin); and the agent runs as a
//! Windows service (install, `sc.exe start`, log file, `sc.exe stop`,
//! uninstall).
//!
//! Wine gives every process the same user SID, so a *connection* from a
//! foreign SID cannot be made here; that refusal is tested in-process
//! (`bus/pipe_tests.rs`) by leaving the SID out of the allow-list.
#![cfg(windows)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const MARKER_ENV: &str = "PROCMOND_E2E_MARKER";

/// Not a test of its own: the marker process, when spawned with
/// `MARKER_ENV` set (this test binary, re-run with a unique argument).
#[test]
fn marker_process() {
    if let Ok(secs) = std::env::var(MARKER_ENV) {
        std::thread::sleep(Duration::from_secs(secs.parse().unwrap_or(3)));
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("procmond-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn pipe(tag: &str) -> String {
    format!(r"\\.\pipe\procmond-e2e-{tag}-{}", std::process::id())
}

/// The Windows build of procmond, as a Windows path (cargo's
/// `CARGO_BIN_EXE_procmond` is the Linux path it was built at).
fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("self");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("procmond.exe")
}

fn procmond(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("procmond runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits up to `limit` for `check`, which returns `Some` when done.
fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn yaml_path(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Kills the agent at the end, whatever happened.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alive(pid: u32) -> bool {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let Ok(mut sys) = System::new() else {
        return false;
    };
    let pid = Pid::from_u32(pid);
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing(),
    );
    sys.process(pid).is_some()
}

#[test]
fn capabilities_explain_why_etw_does_not_run_and_polling_does() {
    let out = procmond(&["capabilities"]);
    assert!(out.status.success(), "{}", text(&out));
    let caps: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(caps["platform"]["os"], "windows");
    assert_eq!(caps["sources"][0]["name"], "etw");
    assert_eq!(caps["sources"][0]["available"], false, "{caps}");
    let reason = caps["sources"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not elevated") || reason.contains("did not start"),
        "{reason}"
    );
    assert_eq!(caps["active_source"], "poll");
    assert_eq!(caps["degraded"], true);
    let names: Vec<&str> = caps["privileges"]["capabilities"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"elevated") && names.contains(&"SeDebugPrivilege"),
        "{caps}"
    );
}

#[test]
fn agent_over_a_named_pipe_delivers_marker_start_and_stop() {
    let dir = temp_dir("agent");
    let sink = dir.join("events.jsonl");
    let log = dir.join("agent.log");
    let socket = pipe("agent");
    let id = format!("e2e{}", std::process::id());
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "broker:\n  socket: '{socket}'\n  operators:\n    read_sids: []\n    admin_sids: []\n\
             startup_timeout_secs: 60\n\
             sinks:\n  - type: jsonl\n    path: {sink}\n\
             collectors:\n  - id: {id}\n    type: process-monitor\n    binary_path: {bin}\n    args: [run]\n\
             \x20   config:\n      collection_interval_secs: 1\n      wal_dir: {wal}\n",
            sink = yaml_path(&sink),
            bin = yaml_path(&bin()),
            wal = yaml_path(&dir.join("wal")),
        ),
    )
    .expect("config");
    let check = procmond(&["config", "validate", &config.display().to_string()]);
    assert!(check.status.success(), "{}", text(&check));

    let agent = Agent(
        Command::new(bin())
            .args(["agent", "--config", &config.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("agent starts"),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(Duration::from_secs(90), "steady state", || {
        let l = read_log();
        assert!(!l.contains("collectors not ready"), "{l}");
        l.contains("steady state").then_some(())
    });
    let l = read_log();
    assert!(
        l.contains("falling back to polling")
            && (l.contains("not elevated") || l.contains("did not start")),
        "the collector says why it polls:\n{l}"
    );

    // A marker process that lives 3 polling intervals.
    let nonce = format!(
        "marker-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let status = Command::new(std::env::current_exe().expect("self"))
        .args(["marker_process", &nonce, "--exact", "--quiet"])
        .env(MARKER_ENV, "3")
        .stdout(Stdio::null())
        .status()
        .expect("marker runs");
    assert!(status.success());
    let with_nonce = |e: &Value| {
        e["argv"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(nonce.as_str())))
    };
    let (start, stop) = wait_for(
        Duration::from_secs(30),
        "the marker's start and stop",
        || {
            let all = events(&sink);
            let start = all
                .iter()
                .find(|e| e["kind"] == "start" && with_nonce(e))?
                .clone();
            // The Windows poll source computes no entity_id (sysinfo lists
            // no CPID facts, `sources::sysinfo_snapshot`): the stop is paired
            // with the start by (pid, start_time), the poll's own key, and
            // the nonce; checked below.
            let stop = all
                .iter()
                .find(|e| {
                    e["kind"] == "stop"
                        && e["pid"] == start["pid"]
                        && e["start_time"] == start["start_time"]
                        && with_nonce(e)
                })?
                .clone();
            Some((start, stop))
        },
    );
    assert!(
        start.get("entity_id").is_none() && stop.get("entity_id").is_none(),
        "the Windows poll source now reports an entity_id: pair by it\n{start}\n{stop}"
    );
    assert!(start["start_time"].is_string(), "{start}");
    assert_eq!(start["source"], "poll", "{start}");
    assert_eq!(start["collector_id"], id.as_str());
    assert_eq!(stop["source"], "poll");
    assert!(
        start["exe"].as_str().is_some_and(|e| e.ends_with(".exe")),
        "{start}"
    );

    // An operator whose SID is not in broker.operators is refused.
    let ctl = procmond(&[
        "ctl",
        "--socket",
        &socket,
        "--collector",
        &id,
        "--timeout",
        "5",
        "health",
    ]);
    assert!(!ctl.status.success(), "{}", text(&ctl));
    let said = text(&ctl);
    assert!(
        said.contains("may not make read calls") && said.contains("SID S-1-"),
        "{said}"
    );

    // Killing the agent: its launcher closes the collector's stdin, and the
    // collector drains and exits.
    let collector = wait_for(Duration::from_secs(5), "the collector's pid", || {
        let l = read_log();
        let at = l.find("collector started")?;
        let pid = l[at..].split("pid=").nth(1)?;
        pid.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u32>()
            .ok()
    });
    assert!(alive(collector));
    drop(agent);
    wait_for(Duration::from_secs(45), "the collector to stop", || {
        (!alive(collector)).then_some(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn sc(args: &[&str]) -> Output {
    Command::new("sc.exe")
        .args(args)
        .output()
        .expect("sc.exe runs")
}

#[test]
fn the_agent_runs_as_a_windows_service() {
    let dir = temp_dir("service");
    let socket = pipe("service");
    let config = dir.join("agent.yaml");
    std::fs::write(&config, format!("broker:\n  socket: '{socket}'\n")).expect("config");
    let log = dir.join(r"logs\service.log");
    let _ = procmond(&["service", "uninstall"]);
    let out = procmond(&[
        "service",
        "install",
        "--config",
        &config.display().to_string(),
        "--log-file",
        &log.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let installed = Installed;
    let tail = || std::fs::read_to_string(&log).unwrap_or_default();
    // Right after CreateService, wine's service manager may still answer
    // "no such service" (1060) to another process: retry briefly.
    let mut start = sc(&["start", "procmond"]);
    for _ in 0..20 {
        if start.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        start = sc(&["start", "procmond"]);
    }
    assert!(
        start.status.success(),
        "{}\nservice log: {}",
        text(&start),
        tail()
    );
    wait_for(Duration::from_secs(60), "the service's broker", || {
        let t = tail();
        (t.contains("procmond service running")
            && t.contains("broker listening")
            && t.contains(&socket))
        .then_some(())
    });
    let stop = sc(&["stop", "procmond"]);
    assert!(stop.status.success(), "{}", text(&stop));
    wait_for(Duration::from_secs(60), "the service to stop", || {
        tail().contains("service manager: stopping").then_some(())
    });
    std::mem::forget(installed);
    let out = procmond(&["service", "uninstall"]);
    assert!(out.status.success(), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Removes the service if the test failed half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = procmond(&["service", "uninstall"]);
    }
}

#[test]
fn the_shipped_windows_config_validates_and_the_unix_one_does_not() {
    let dir = temp_dir("configs");
    let windows = include_str!("../config/agent.windows.yaml").replace(
        r"C:\Program Files\procmond\procmond.exe",
        &bin().display().to_string(),
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, windows).expect("write");
    let out = procmond(&["config", "validate", &path.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&path, include_str!("../config/agent.yaml")).expect("write");
    let out = procmond(&["config", "validate", &path.display().to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("broker.socket"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
