//! The process table: who each process's parent was, its ancestors and the
//! leaders of its session, group and entry, on every event.
//!
//! The inventory seeds it and every event keeps it current (fork adds a
//! process running its parent's image, exec replaces the image, exit marks
//! it exited, setuid changes its ids). Exited processes stay for a while, so
//! a child whose exec is read after its parent exited still gets the
//! parent's name, executable and argv. The table is bounded: exited entries
//! retire first, oldest first; only when live ones must go are they
//! counted (`lineage_evicted`), and a parent the table does not hold is
//! said to be unknown (`parent.unknown`, `lineage_parent_unknown`), never
//! guessed. Ids are computed from kernel facts (`model::identity`), so the
//! table rebuilt from the inventory after a restart names every process as
//! before.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::model::{Creds, EntityId, EventKind, ProcessEvent, Tty};

/// What the table knows of one process.
#[derive(Debug, Clone)]
struct Entry {
    pid: u32,
    parent: Option<EntityId>,
    start_time: Option<i64>,
    name: String,
    exe: Option<String>,
    /// Sanitized; shared by a fork with its parent until either execs.
    argv: Arc<Vec<String>>,
    sid: Option<u32>,
    pgid: Option<u32>,
    tty: Option<Tty>,
    creds: Option<Creds>,
    exited: bool,
    /// The table's clock when last touched (eviction order).
    touched: u64,
}

impl Entry {
    fn is_session_leader(&self) -> bool {
        self.sid == Some(self.pid)
    }
}

/// What `record` did that the counters need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Live entries dropped to make room.
    pub evicted: u64,
    /// A setuid event that changed nothing the table knew (the kernel's
    /// sys_exit probe reports every successful call): not worth emitting.
    pub unchanged_setuid: bool,
}

/// Entity ids are SHA-256 output: their first 8 bytes are already a
/// uniform hash, and nobody outside the kernel chooses them, so the table
/// hashes them by taking those bytes (pids, the other key, are mixed).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The bounded table; one per pipeline.
#[derive(Debug)]
pub struct ProcessTable {
    entries: FastMap<EntityId, Entry>,
    /// The live process holding each pid.
    live: FastMap<u32, EntityId>,
    /// Exited processes, oldest first.
    exited: VecDeque<EntityId>,
    max_processes: usize,
    max_ancestors: usize,
    clock: u64,
}

/// Hops walked up the tree at most (a cycle or a very deep tree ends there).
const MAX_WALK: usize = 128;
/// Exited processes kept: this share of the table (4 096 of the default
/// 65 536). A child's exec is read milliseconds after it happens, so its
/// parent is almost always still here; a storm of short-lived processes
/// does not grow the table past it.
const EXITED_SHARE: usize = 16;

impl ProcessTable {
    pub fn new(max_processes: usize, max_ancestors: usize) -> Self {
        Self {
            entries: FastMap::default(),
            live: FastMap::default(),
            exited: VecDeque::new(),
            max_processes: max_processes.max(16),
            max_ancestors,
            clock: 0,
        }
    }

    pub fn set_limits(&mut self, max_processes: usize, max_ancestors: usize) {
        self.max_processes = max_processes.max(16);
        self.max_ancestors = max_ancestors;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The parent's id: the one the kernel named, else the live process
    /// holding `ppid` if it started no later than the child (procfs).
    fn parent_of(&self, e: &ProcessEvent) -> Option<EntityId> {
        let p = e.parent.as_ref()?;
        if p.entity_id.is_some() {
            return p.entity_id;
        }
        let id = self.live.get(&p.pid)?;
        let parent = self.entries.get(id)?;
        match (parent.start_time, e.start_time) {
            (Some(ps), Some(cs)) if ps > cs => None,
            _ => Some(*id),
        }
    }

    /// Takes what `e` says about its process into the table; fills a
    /// setuid event's `previous_creds` from what the table held.
    pub fn record(&mut self, e: &mut ProcessEvent) -> Recorded {
        let Some(id) = e.entity_id else {
            return Recorded::default();
        };
        self.clock += 1;
        let mut out = Recorded::default();
        if !self.entries.contains_key(&id) {
            out.evicted = self.make_room();
            let entry = self.new_entry(e);
            self.entries.insert(id, entry);
        }
        let parent = self.parent_of(e);
        let inherited = (e.kind == EventKind::Fork)
            .then(|| parent.and_then(|p| self.entries.get(&p)))
            .flatten()
            .map(|p| (p.name.clone(), p.exe.clone(), p.argv.clone()));
        let clock = self.clock;
        let Some(entry) = self.entries.get_mut(&id) else {
            return out;
        };
        entry.touched = clock;
        if parent.is_some() {
            entry.parent = parent;
        }
        update_facts(entry, e, inherited);
        if e.kind == EventKind::SetUid {
            out.unchanged_setuid = update_creds(entry, e);
        } else if let Some(c) = creds_of(e) {
            entry.creds = Some(c);
        }
        let exited = matches!(e.kind, EventKind::Exit | EventKind::Stop);
        if exited && !entry.exited {
            entry.exited = true;
            if self.live.get(&e.pid) == Some(&id) {
                self.live.remove(&e.pid);
            }
            self.exited.push_back(id);
            self.retire_exited(self.max_processes / EXITED_SHARE);
        } else if !exited && !entry.exited {
            self.live.insert(e.pid, id);
        }
        out
    }

    fn new_entry(&self, e: &ProcessEvent) -> Entry {
        Entry {
            pid: e.pid,
            parent: None,
            start_time: e.start_time,
            name: String::new(),
            exe: None,
            argv: Arc::default(),
            sid: None,
            pgid: None,
            tty: None,
            creds: None,
            exited: false,
            touched: self.clock,
        }
    }

    /// Fills `parent`, `ancestors` and the leaders from the table.
    pub fn annotate(&self, e: &mut ProcessEvent) -> bool {
        if e.parent.as_ref().is_some_and(|p| p.pid == 0) {
            e.parent = None;
        }
        let parent_id = self.parent_of(e);
        let mut parent_unknown = false;
        if let Some(p) = e.parent.as_mut() {
            p.entity_id = parent_id.or(p.entity_id);
            match parent_id.and_then(|id| self.entries.get(&id)) {
                Some(entry) => {
                    p.name = Some(entry.name.clone()).filter(|n| !n.is_empty());
                    p.exe.clone_from(&entry.exe);
                    // The full parent (start, argv) on exec events; the
                    // others name it, and join to its exec by entity_id.
                    if e.kind == EventKind::Exec {
                        p.start_time = p.start_time.or(entry.start_time);
                        p.argv = entry.argv.to_vec();
                    } else {
                        p.start_time = None;
                    }
                }
                None => {
                    p.unknown = true;
                    parent_unknown = true;
                }
            }
            if describes_image(e.kind) {
                e.ancestors = self.ancestors(parent_id);
            }
        }
        if describes_image(e.kind) {
            self.leaders(e, parent_id);
        }
        parent_unknown
    }

    /// The ids above `parent`, nearest first, while the table knows them.
    fn ancestors(&self, parent: Option<EntityId>) -> Vec<EntityId> {
        let mut out = Vec::new();
        let mut cur = parent.and_then(|p| self.entries.get(&p)?.parent);
        while let Some(id) = cur {
            if out.len() >= self.max_ancestors || out.contains(&id) {
                break;
            }
            out.push(id);
            cur = self.entries.get(&id).and_then(|a| a.parent);
        }
        out
    }

    /// Session, group and entry leaders, where the table holds them.
    fn leaders(&self, e: &mut ProcessEvent, parent: Option<EntityId>) {
        let holder = |pid: Option<u32>, same: fn(&Entry) -> Option<u32>| {
            let pid = pid?;
            let id = self.live.get(&pid)?;
            (same(self.entries.get(id)?) == Some(pid)).then_some(*id)
        };
        e.session.leader = holder(e.session.id, |l| l.sid);
        e.session.group_leader = holder(e.session.pgid, |l| l.pgid);
        e.session.entry_leader = e.entity_id.and_then(|id| self.entry_leader(id, parent));
    }

    /// Where the process's line entered the system: the nearest session
    /// leader (itself included) with a terminal whose parent has none (a
    /// login: getty, sshd, a terminal emulator), else the ancestor whose
    /// parent is pid 1 (a service). `None` when the line breaks first.
    fn entry_leader(&self, id: EntityId, parent: Option<EntityId>) -> Option<EntityId> {
        let mut cur = id;
        let mut next_parent = parent.or_else(|| self.entries.get(&id)?.parent);
        for _ in 0..MAX_WALK {
            let entry = self.entries.get(&cur)?;
            let up = next_parent.and_then(|p| self.entries.get(&p).map(|e| (p, e)));
            if entry.is_session_leader()
                && entry.tty.is_some()
                && up.is_some_and(|(_, p)| p.tty.is_none())
            {
                return Some(cur);
            }
            let (up_id, up_entry) = up?;
            if up_entry.pid == 1 && entry.pid != 1 {
                return Some(cur);
            }
            cur = up_id;
            next_parent = up_entry.parent;
        }
        None
    }

    /// Retires exited entries beyond `keep`, oldest first.
    fn retire_exited(&mut self, keep: usize) {
        while self.exited.len() > keep {
            if let Some(id) = self.exited.pop_front() {
                self.entries.remove(&id);
            }
        }
    }

    /// Before an insert into a full table: exited entries go first; if the
    /// live ones alone fill it, the least recently touched sixteenth goes
    /// (counted: their children will have unknown parents).
    fn make_room(&mut self) -> u64 {
        if self.entries.len() < self.max_processes {
            return 0;
        }
        self.retire_exited(0);
        if self.entries.len() < self.max_processes {
            return 0;
        }
        let n = (self.max_processes / 16).max(1);
        let mut by_age: Vec<(u64, EntityId)> = self
            .entries
            .iter()
            .map(|(id, e)| (e.touched, *id))
            .collect();
        by_age.select_nth_unstable(n - 1);
        for (_, id) in &by_age[..n] {
            if let Some(gone) = self.entries.remove(id)
                && self.live.get(&gone.pid) == Some(id)
            {
                self.live.remove(&gone.pid);
            }
        }
        n as u64
    }
}

/// Events that describe a process's image (exec, inventory, a start
/// found by reconciliation or polling) carry `ancestors` and the leaders'
/// ids; the others (fork, exit, stop, modify, setuid) name the parent
/// only: a consumer joins them to the exec by `entity_id`.
fn describes_image(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Exec | EventKind::Snapshot | EventKind::Start
    )
}

/// Name, image, argv, session and start from the event (a fork runs its
/// parent's image until it execs: `inherited`).
fn update_facts(
    entry: &mut Entry,
    e: &ProcessEvent,
    inherited: Option<(String, Option<String>, Arc<Vec<String>>)>,
) {
    entry.pid = e.pid;
    entry.start_time = entry.start_time.or(e.start_time);
    if let Some((name, exe, argv)) = inherited {
        entry.name = name;
        entry.exe = exe;
        entry.argv = argv;
    }
    if !e.name.is_empty() {
        entry.name.clone_from(&e.name);
    }
    if e.exe.is_some() {
        entry.exe.clone_from(&e.exe);
    }
    if !e.argv.is_empty() || e.kind == EventKind::Exec {
        entry.argv = Arc::new(e.argv.clone());
    }
    if e.session.id.is_some() {
        entry.sid = e.session.id;
        entry.pgid = e.session.pgid;
        entry.tty = e.session.tty;
    }
}

fn creds_of(e: &ProcessEvent) -> Option<Creds> {
    Some(Creds {
        uid: e.uid?,
        euid: e.euid?,
        gid: e.gid?,
        egid: e.egid?,
    })
}

/// A setuid event: fills its `previous_creds` from the table if the probe
/// could not, records the new ids; true when nothing changed.
fn update_creds(entry: &mut Entry, e: &mut ProcessEvent) -> bool {
    let after = creds_of(e);
    if e.previous_creds.is_none() {
        e.previous_creds = entry.creds;
    }
    let unchanged = after.is_some() && e.previous_creds == after;
    if after.is_some() {
        entry.creds = after;
    }
    unchanged
}

#[cfg(test)]
#[path = "lineage_tests.rs"]
mod tests;
