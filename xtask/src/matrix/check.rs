//! What one run of the in-guest check (xtask/guest/init.sh) must show, and
//! whether it did: a pure function of the run's files, so the rules are
//! tested here on fixtures and the guest only reports.
//!
//! Processes are found by the `km-*` marker in their argv and joined by
//! `entity_id` (never by pid): each spawn's exec, exit and fork exactly
//! once with the right fields, a non-zero exit code, a kill by signal, a
//! fork without exec, an orphan reparented away from its parent, the
//! inventory against /proc, and every userspace loss counter at zero.
//!
//! The kernel may skip a probe run (a preempted probe re-entered on the
//! same CPU: `recursion_misses`, which procmond counts in `kernel_lost`).
//! An event missing from a run is therefore accepted only while the
//! missing ones are no more than `kernel_lost` says were lost: a loss
//! that procmond counted passes, and is shown; a silent one fails.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// The files one run wrote (sections `<run>/<file>`).
#[derive(Debug, Default, Clone)]
pub struct RunFiles {
    pub meta: String,
    pub log: String,
    pub events: String,
    pub procs_before: String,
    pub procs_after: String,
}

/// Expected against seen, for one kind of event.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub expected: usize,
    pub seen: usize,
}

/// The verdict on one run.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// The probe variant procmond reported (`tp_btf/bpf_loop`, ...).
    pub probes: String,
    /// The snapshot reader (`bpf_iter` or `procfs`).
    pub snapshots: String,
    pub execs: Tally,
    pub exits: Tally,
    pub forks: Tally,
    /// The drop to nobody, seen as setuid events (BTF runs).
    pub setuid: Tally,
    /// Processes in the inventory, and those missing from it or extra.
    pub inventory: usize,
    pub inventory_missing: usize,
    pub inventory_extra: usize,
    /// `kernel_lost` at the end: what the kernel side says it lost.
    pub lost: u64,
    /// Expected events that never came (each described).
    pub missing: Vec<String>,
    /// Seconds from procmond's start to its exit (guest clock).
    pub seconds: f64,
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// `pass`, `pass, N missing (counted)` or `FAIL`.
    pub fn verdict(&self) -> String {
        match (self.passed(), self.missing.len()) {
            (false, _) => "FAIL".into(),
            (true, 0) => "pass".into(),
            (true, n) => format!("pass, {n} missing (counted in kernel_lost)"),
        }
    }
}

/// Which attach method a run must end up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// BTF tracepoints (forks seen).
    Btf,
    /// Classic tracepoints (no fork events).
    Classic,
}

/// Userspace loss counters, which must be zero after a run (from `watch`'s
/// final log line); `kernel_lost` is read beside them.
const LOSS_COUNTERS: [&str; 6] = [
    "events_output_dropped",
    "events_unstored_lost",
    "wal_lost",
    "wal_dropped_full",
    "records_malformed",
    "events_encode_failed",
];

/// Checks one run of `spawns` spawns per spawner.
pub fn check(files: &RunFiles, expect: Expect, spawns: usize) -> Outcome {
    let mut out = Outcome::default();
    let mut c = Checker::new(&files.events, &mut out);
    if !c.startup(&files.log, expect) {
        return out; // nothing else to judge: the reason is the problem
    }
    c.spawns(spawns, expect);
    c.exit_codes();
    if expect == Expect::Btf {
        c.fork_without_exec();
        c.orphan();
        c.setuid();
    }
    c.no_duplicates();
    c.inventory(&files.procs_before, &files.procs_after);
    c.losses(&files.log);
    c.seconds(&files.meta);
    if out.missing.len() as u64 > out.lost {
        let n = out.missing.len();
        out.problems.push(format!(
            "{n} expected events missing, kernel_lost only {}",
            out.lost
        ));
        out.problems.extend(out.missing.iter().take(10).cloned());
    }
    out
}

struct Checker<'a> {
    events: Vec<Value>,
    out: &'a mut Outcome,
}

fn s<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn argv(v: &Value) -> Vec<&str> {
    v.get("argv")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn parent_entity(v: &Value) -> &str {
    v.get("parent").map_or("", |p| s(p, "entity_id"))
}

/// `key="value"` from a tracing log line.
fn log_field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let at = line.find(&format!(" {key}=\""))? + key.len() + 3;
    let rest = &line[at..];
    Some(&rest[..rest.find('"')?])
}

impl<'a> Checker<'a> {
    fn new(events: &str, out: &'a mut Outcome) -> Self {
        let mut parsed = Vec::new();
        for (n, line) in events.lines().enumerate() {
            match serde_json::from_str::<Value>(line) {
                Ok(v) => parsed.push(v),
                Err(e) => out
                    .problems
                    .push(format!("events line {}: not JSON ({e})", n + 1)),
            }
        }
        Self {
            events: parsed,
            out,
        }
    }

    fn problem(&mut self, p: String) {
        self.out.problems.push(p);
    }

    /// The start-up line: the eBPF source, on the expected attach method;
    /// false when procmond never started.
    fn startup(&mut self, log: &str, expect: Expect) -> bool {
        let Some(line) = log.lines().find(|l| l.contains("monitoring started")) else {
            let why = log
                .lines()
                .find(|l| l.starts_with("Error") || l.contains(" ERROR "))
                .or_else(|| log.lines().last())
                .unwrap_or("(empty log)");
            self.problem(format!("procmond never started monitoring: {why}"));
            return false;
        };
        if log_field(line, "source") != Some("ebpf") {
            self.problem(format!("not the eBPF source: {line}"));
        }
        self.out.probes = log_field(line, "probes").unwrap_or("?").to_string();
        self.out.snapshots = log_field(line, "snapshot_reader")
            .unwrap_or("?")
            .to_string();
        let want = match expect {
            Expect::Btf => "tp_btf/",
            Expect::Classic => "tracepoint/",
        };
        if !self.out.probes.starts_with(want) {
            self.problem(format!(
                "probes {} where {want}* was expected",
                self.out.probes
            ));
        }
        true
    }

    /// The only event of `kind` that `pred` matches, counted in its tally.
    fn one(&mut self, what: &str, kind: &str, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let found: Vec<&Value> = self
            .events
            .iter()
            .filter(|v| s(v, "kind") == kind && pred(v))
            .collect();
        let tally = match kind {
            "exec" => &mut self.out.execs,
            "exit" => &mut self.out.exits,
            _ => &mut self.out.forks,
        };
        tally.expected += 1;
        if let [only] = found.as_slice() {
            tally.seen += 1;
            return Some((*only).clone());
        }
        let n = found.len();
        let text = format!("{what}: {n} {kind} events, want 1");
        if n == 0 {
            self.out.missing.push(text);
        } else {
            self.problem(text);
        }
        None
    }

    fn exec_marked(&mut self, marker: &str) -> Option<Value> {
        self.one(marker, "exec", |v| argv(v).last() == Some(&marker))
    }

    fn exit_of(&mut self, what: &str, exec: &Value) -> Option<Value> {
        let (entity, exec_id) = (s(exec, "entity_id"), s(exec, "exec_id"));
        self.one(&format!("{what} exit"), "exit", |v| {
            s(v, "entity_id") == entity && s(v, "exec_id") == exec_id
        })
    }

    /// Each `/bin/true km-<s>-<i>`: exec with its fields, one exit with
    /// code 0, one fork (BTF), parent the spawner.
    fn spawns(&mut self, spawns: usize, expect: Expect) {
        for spawner in ["a", "b"] {
            let parent = self.one(&format!("spawner {spawner}"), "exec", |v| {
                argv(v).get(3..5) == Some(&["km-spawner", spawner][..])
            });
            let parent_id = parent
                .as_ref()
                .map_or("", |p| s(p, "entity_id"))
                .to_string();
            for i in 1..=spawns {
                let marker = format!("km-{spawner}-{i}");
                let Some(exec) = self.exec_marked(&marker) else {
                    continue;
                };
                let fields = (s(&exec, "exe"), s(&exec, "name"), s(&exec, "cwd"));
                if fields != ("/bin/true", "true", "/") {
                    self.problem(format!("{marker}: exe, name, cwd were {fields:?}"));
                }
                if !parent_id.is_empty() && parent_entity(&exec) != parent_id {
                    self.problem(format!("{marker}: parent is not spawner {spawner}"));
                }
                if let Some(exit) = self.exit_of(&marker, &exec) {
                    self.exit_code(&marker, &exit, 0);
                }
                if expect == Expect::Btf {
                    let entity = s(&exec, "entity_id").to_string();
                    self.one(&format!("{marker} fork"), "fork", |v| {
                        s(v, "entity_id") == entity
                    });
                }
            }
        }
    }

    /// Fails unless `exit` has exit code `code`.
    fn exit_code(&mut self, what: &str, exit: &Value, code: i64) {
        let got = exit.get("exit_code").and_then(Value::as_i64);
        if got != Some(code) {
            self.problem(format!("{what}: exit_code {got:?}, want {code}"));
        }
    }

    /// `sh -c 'exit 7'` exits 7; `sh -c 'kill -9 $$'` dies of signal 9.
    fn exit_codes(&mut self) {
        if let Some(exec) = self.exec_marked("km-exit7")
            && let Some(exit) = self.exit_of("km-exit7", &exec)
        {
            self.exit_code("km-exit7", &exit, 7);
        }
        if let Some(exec) = self.exec_marked("km-kill")
            && let Some(exit) = self.exit_of("km-kill", &exec)
        {
            let signal = exit.pointer("/platform/signal").and_then(Value::as_i64);
            if signal != Some(9) || exit.get("exit_code").is_some() {
                self.problem(format!(
                    "km-kill: signal {signal:?}, exit_code {:?}",
                    exit.get("exit_code")
                ));
            }
        }
    }

    /// The one child `marker`'s shell forked, which never execs and exits
    /// `code`: returns (child's fork, its exit).
    fn forked_child(&mut self, marker: &str, code: i64) -> Option<(Value, Value)> {
        let shell = self.exec_marked(marker)?;
        let shell_id = s(&shell, "entity_id").to_string();
        let fork = self.one(&format!("{marker} child fork"), "fork", |v| {
            parent_entity(v) == shell_id
        })?;
        let child = s(&fork, "entity_id").to_string();
        if self
            .events
            .iter()
            .any(|v| s(v, "kind") == "exec" && s(v, "entity_id") == child)
        {
            self.problem(format!("{marker}: the forked child has an exec"));
        }
        let exit = self.one(&format!("{marker} child exit"), "exit", |v| {
            s(v, "entity_id") == child
        })?;
        self.exit_code(&format!("{marker} child"), &exit, code);
        Some((fork, exit))
    }

    /// `sh -c '(exit 5); exit 0'`: a fork that never execs, exit code 5.
    fn fork_without_exec(&mut self) {
        self.forked_child("km-fork", 5);
    }

    /// `sh -c '(sleep 1; exit 6) & exit 0'`: the subshell outlives its
    /// parent and exits with another parent (init, or a subreaper).
    fn orphan(&mut self) {
        let Some((fork, exit)) = self.forked_child("km-orphan", 6) else {
            return;
        };
        let first = fork.get("ppid").and_then(Value::as_u64);
        let last = exit.get("ppid").and_then(Value::as_u64);
        if first.is_none() || first == last {
            self.problem(format!(
                "km-orphan: not reparented (ppid {first:?} at fork, {last:?} at exit)"
            ));
        }
    }

    /// `setpriv --reuid=65534 ... /bin/true km-setuid`: setuid events for
    /// that process before its exec of /bin/true, from root to nobody.
    fn setuid(&mut self) {
        let Some(exec) = self.one("km-setuid setpriv", "exec", |v| {
            argv(v).first().is_some_and(|a| a.ends_with("setpriv"))
                && argv(v).last() == Some(&"km-setuid")
        }) else {
            return;
        };
        let (entity, exec_id) = (s(&exec, "entity_id"), s(&exec, "exec_id"));
        let changes: Vec<&Value> = self
            .events
            .iter()
            .filter(|v| s(v, "kind") == "setuid" && s(v, "entity_id") == entity)
            .collect();
        self.out.setuid.expected += 1;
        let (Some(first), Some(last)) = (changes.first(), changes.last()) else {
            self.out
                .missing
                .push("km-setuid: 0 setuid events, want 1 or more".into());
            return;
        };
        let before = first.pointer("/previous_creds/uid").and_then(Value::as_u64);
        let after = (last.get("uid").and_then(Value::as_u64), s(last, "exec_id"));
        if before != Some(0) || after != (Some(65534), exec_id) {
            self.problem(format!(
                "km-setuid: previous uid {before:?}, then {after:?}; want 0, then 65534 in setpriv's image"
            ));
        } else {
            self.out.setuid.seen += 1;
        }
    }

    /// No kernel event twice: (kind, entity, exec, time) is unique.
    fn no_duplicates(&mut self) {
        let mut seen = HashSet::new();
        let mut dups = 0;
        for v in &self.events {
            let kind = s(v, "kind");
            if kind == "snapshot" {
                continue;
            }
            let key = (kind, s(v, "entity_id"), s(v, "exec_id"), s(v, "timestamp"));
            if !seen.insert(key) {
                dups += 1;
            }
        }
        if dups > 0 {
            self.problem(format!("{dups} events were delivered twice"));
        }
    }

    /// The inventory (snapshot events) against /proc listed before and after
    /// it: every process in both lists is in it, with its comm as name; none
    /// in it is in neither list unless its exit was seen.
    fn inventory(&mut self, before: &str, after: &str) {
        let parse = |text: &str| -> HashMap<u64, String> {
            text.lines()
                .filter_map(|l| {
                    let (pid, comm) = l.split_once(' ')?;
                    Some((pid.parse().ok()?, comm.to_string()))
                })
                .collect()
        };
        let (before, after) = (parse(before), parse(after));
        let snapshot: HashMap<u64, (&str, &str)> = self
            .events
            .iter()
            .filter(|v| s(v, "kind") == "snapshot")
            .filter_map(|v| Some((v.get("pid")?.as_u64()?, (s(v, "name"), s(v, "entity_id")))))
            .collect();
        let exited: HashSet<&str> = self
            .events
            .iter()
            .filter(|v| s(v, "kind") == "exit")
            .map(|v| s(v, "entity_id"))
            .collect();
        self.out.inventory = snapshot.len();
        let mut problems = Vec::new();
        for (pid, comm) in &before {
            if after.get(pid) != Some(comm) {
                continue; // came or went while the inventory was taken
            }
            match snapshot.get(pid) {
                None => {
                    self.out.inventory_missing += 1;
                    problems.push(format!("pid {pid} ({comm}) missing"));
                }
                // /proc shows kernel threads' full names (a kworker's with
                // its work queue); the kernel's comm is their first 15 bytes.
                Some((name, _)) if name.is_empty() || !comm.starts_with(name) => {
                    problems.push(format!("pid {pid}: name {name:?}, comm {comm:?}"))
                }
                Some(_) => {}
            }
        }
        // One that lived only while the inventory was taken (the script's
        // own grep or sleep) is real if its exit was seen.
        for (pid, (_, entity)) in &snapshot {
            if !before.contains_key(pid) && !after.contains_key(pid) && !exited.contains(entity) {
                self.out.inventory_extra += 1;
                problems.push(format!("pid {pid} in the inventory, not in /proc"));
            }
        }
        if self.out.inventory == 0 {
            problems.push("no inventory".into());
        }
        problems.truncate(5);
        for p in problems {
            self.problem(format!("inventory: {p}"));
        }
    }

    /// `kernel_lost`, and the userspace loss counters all zero, from
    /// `watch`'s final statistics.
    fn losses(&mut self, log: &str) {
        let stats = log
            .lines()
            .find(|l| l.contains("procmond watch finished"))
            .and_then(|l| l.split_once("stats="))
            .and_then(|(_, json)| serde_json::from_str::<Value>(json.trim()).ok());
        let Some(stats) = stats else {
            self.problem("no final statistics in the log (did procmond stop cleanly?)".into());
            return;
        };
        match stats.get("kernel_lost").and_then(Value::as_u64) {
            Some(n) => self.out.lost = n,
            None => self.problem("statistics lack kernel_lost".into()),
        }
        for key in LOSS_COUNTERS {
            match stats.get(key).and_then(Value::as_u64) {
                Some(0) => {}
                Some(n) => self.problem(format!("{key} is {n}: procmond itself lost events")),
                None => self.problem(format!("statistics lack {key}")),
            }
        }
    }

    /// `rc=0 ... started=S ended=E`: procmond exited 0; E - S seconds.
    fn seconds(&mut self, meta: &str) {
        let field = |key: &str| {
            meta.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse::<f64>().ok())
        };
        if field("rc=") != Some(0.0) {
            self.problem(format!("procmond did not exit 0: {}", meta.trim()));
        }
        if let (Some(a), Some(b)) = (field("started="), field("ended=")) {
            self.out.seconds = b - a;
        }
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
