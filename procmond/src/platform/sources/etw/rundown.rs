//! The command lines the classic kernel provider reports, kept for the
//! inventory.
//!
//! When the classic session starts, the kernel replays every live process
//! (`DCStart`, the rundown) with its command line and user SID; after that
//! `Start` and `End` keep the table current. sysinfo, which takes the
//! inventory and the reconciliation snapshots, cannot read the command line
//! of protected processes or of other users' processes without
//! SeDebugPrivilege: the snapshot reader fills those gaps from this table
//! (`fill`) when pid and parent agree. Pure; shared with the reader behind
//! a mutex.

use std::collections::HashMap;

use super::decode::{Classic, ClassicOp, split_command_line};
use crate::sources::snapshot::Snapshot;

/// Most processes remembered (far above any real process table).
const MAX_ENTRIES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    ppid: Option<u32>,
    argv: Vec<String>,
    argv_truncated: bool,
    name: Option<String>,
}

/// Live processes' command lines, by pid.
#[derive(Debug, Default)]
pub struct Rundown {
    by_pid: HashMap<u32, Known>,
}

impl Rundown {
    /// Applies one classic event: rundown and starts add, ends remove.
    pub fn observe(&mut self, op: ClassicOp, c: &Classic) {
        match op {
            ClassicOp::DcStart | ClassicOp::Start => {
                if self.by_pid.len() >= MAX_ENTRIES && !self.by_pid.contains_key(&c.pid) {
                    return;
                }
                let (argv, argv_truncated) = c
                    .command_line
                    .as_deref()
                    .map(split_command_line)
                    .unwrap_or_default();
                self.by_pid.insert(
                    c.pid,
                    Known {
                        ppid: c.ppid,
                        argv,
                        argv_truncated,
                        name: c.image_file_name.clone(),
                    },
                );
            }
            ClassicOp::End | ClassicOp::DcEnd => {
                self.by_pid.remove(&c.pid);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// Gives processes the snapshot read no command line for the one the
    /// kernel reported, when the pid's parent agrees (a reused pid does
    /// not); returns how many were filled.
    pub fn fill(&self, snapshot: &mut Snapshot) -> usize {
        let mut filled = 0;
        for p in snapshot.processes.iter_mut().filter(|p| p.argv.is_empty()) {
            let Some(k) = self.by_pid.get(&p.pid) else {
                continue;
            };
            let parent_agrees = k.ppid.zip(p.ppid).is_none_or(|(a, b)| a == b);
            if !parent_agrees || k.argv.is_empty() {
                continue;
            }
            p.argv.clone_from(&k.argv);
            p.argv_truncated = k.argv_truncated;
            if p.name.is_empty()
                && let Some(name) = &k.name
            {
                p.name.clone_from(name);
            }
            filled += 1;
        }
        filled
    }
}
