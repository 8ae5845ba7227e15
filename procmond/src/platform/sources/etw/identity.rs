//! Process ids on ETW events (docs/reference.md, "entity_id on Windows,
//! macOS and FreeBSD"): the CPID of the process from Kernel-Process's
//! `CreateTime` (a FILETIME, the value GetProcessTimes gives) and its pid;
//! `exec_id` with count 0 (a Windows process never replaces its image); the
//! parent's CPID from the parent's creation time.
//!
//! ProcessStart names the parent by pid (and, from version 3, its sequence
//! number) but not by creation time. The parent's time is read when the
//! event leaves the correlator: from the ProcessStart this source saw for
//! that pid when its sequence number is the parent's, else from the system
//! (`lookup`, i.e. OpenProcess + GetProcessTimes on Windows), else from
//! that seen ProcessStart when no sequence numbers tell. A time later than the child's
//! creation belongs to a process that reused the parent's pid and is not
//! used: the parent's id is then left out, as it is when the child's own
//! creation time is unknown (an event only the classic provider reported).
//! Pure; the lookup is passed in.

use std::collections::HashMap;

use super::decode::{filetime_to_unix_ns, whole_seconds};
use crate::model::identity::{WindowsBoot, exec_id};
use crate::model::{Parent, ProcessEvent};

/// The System process, whose creation time is part of every id.
pub const SYSTEM_PID: u32 = 4;
/// Most live processes remembered; beyond, the memory starts over.
const MAX_CREATED: usize = 1 << 20;

/// Reads a live process's creation time (FILETIME ticks).
pub type CreateTimeLookup = Box<dyn FnMut(u32) -> Option<u64> + Send>;

/// What the correlator needs to name processes.
pub struct Identities {
    boot: WindowsBoot,
    /// Creation times and sequence numbers of the processes whose start
    /// this source reported and whose stop it has not, by pid.
    created: HashMap<u32, (u64, Option<u64>)>,
    lookup: CreateTimeLookup,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("boot", &self.boot)
            .field("created", &self.created.len())
            .finish_non_exhaustive()
    }
}

impl Identities {
    pub fn new(boot: WindowsBoot, lookup: CreateTimeLookup) -> Self {
        Self {
            boot,
            created: HashMap::new(),
            lookup,
        }
    }

    /// Names a process start: `create_time` is ProcessStart's (absent when
    /// only the classic side arrived: its timestamp is when the event was
    /// logged, not the creation time the CPID hashes, so no id).
    pub fn exec(&mut self, e: &mut ProcessEvent, create_time: Option<u64>) {
        if let Some(t) = create_time {
            if self.created.len() >= MAX_CREATED && !self.created.contains_key(&e.pid) {
                self.created.clear();
            }
            self.created.insert(e.pid, (t, e.platform.sequence_number));
        }
        self.name(e, create_time);
    }

    /// Names a process stop (`create_time` from ProcessStop).
    pub fn exit(&mut self, e: &mut ProcessEvent, create_time: Option<u64>) {
        self.name(e, create_time);
        if create_time.is_some() && self.created.get(&e.pid).map(|c| c.0) == create_time {
            self.created.remove(&e.pid);
        }
    }

    fn name(&mut self, e: &mut ProcessEvent, create_time: Option<u64>) {
        e.entity_id = create_time.map(|t| self.boot.entity_id(t, e.pid));
        e.exec_id = e.entity_id.map(|id| exec_id(id, 0));
        let Some(ppid) = e.ppid else {
            return;
        };
        let parent_time = self.parent_time(ppid, e.platform.parent_sequence_number, create_time);
        e.parent = Some(Parent {
            entity_id: parent_time.map(|t| self.boot.entity_id(t, ppid)),
            pid: ppid,
            start_time: parent_time.and_then(filetime_to_unix_ns).map(whole_seconds),
            ..Parent::default()
        });
    }

    /// The creation time of the process that was `ppid` when a child was
    /// created at `child` (FILETIME); `None` when it cannot be known —
    /// also when the child's own creation time is unknown, since nothing
    /// then tells the parent from a later holder of its pid.
    ///
    /// The start this source saw for `ppid` is taken first when its
    /// sequence number is the `ParentProcessSequenceNumber` the child's
    /// ProcessStart gave (the kernel numbers processes once per boot, so
    /// that is the parent itself); one with another sequence number is
    /// another process and is never taken.
    fn parent_time(
        &mut self,
        ppid: u32,
        parent_seq: Option<u64>,
        child: Option<u64>,
    ) -> Option<u64> {
        let child = child?;
        if ppid == SYSTEM_PID {
            return Some(self.boot.system_create_time);
        }
        let seen = self.created.get(&ppid).copied();
        if let (Some((t, Some(seq))), Some(want)) = (seen, parent_seq) {
            return (seq == want && t <= child).then_some(t).or_else(|| {
                // Not the parent: the system's answer still may be.
                (self.lookup)(ppid).filter(|t| *t <= child && *t != seen.map_or(0, |s| s.0))
            });
        }
        let before_child = |t: &u64| *t <= child;
        (self.lookup)(ppid)
            .filter(before_child)
            .or_else(|| seen.map(|s| s.0).filter(before_child))
    }
}
