//! Reconciliation: the kernel stream checked against the live process table.
//!
//! The `Reconciler` keeps the set of live processes as the kernel stream
//! describes it (inventory, then every fork/exec/exit). A periodic snapshot
//! is compared with it; whatever the stream missed — a start lost to a full
//! ring buffer, an exit never seen — is reported with `source: reconcile`.
//!
//! A snapshot is not atomic, and events keep arriving while it is read. Two
//! rules keep that race from producing false reports:
//! * an entry first seen *after* the snapshot started may be missing from it;
//! * a process that exited while the snapshot was read may still be in it —
//!   exits seen during a pass are remembered until the pass is diffed.
//!
//! The caller must apply every kernel event written before the snapshot
//! finished before calling `reconcile` (the eBPF reader's barrier does that).

use std::collections::{HashMap, HashSet};

use crate::model::{EventKind, EventSource, ProcessEvent};
use crate::sources::snapshot::{ProcessInfo, Snapshot};

#[derive(Debug, Clone)]
struct Entry {
    start_time: Option<i64>,
    /// When the stream (or inventory) first showed this process, Unix ns.
    seen_at: i64,
    info: ProcessInfo,
}

/// The kernel stream's view of the live processes.
#[derive(Debug, Default)]
pub struct Reconciler {
    live: HashMap<u32, Entry>,
    /// Exits seen since the current pass began (`None` when no pass runs).
    exited_during_pass: Option<HashSet<(u32, Option<i64>)>>,
}

impl Reconciler {
    /// Starts from the inventory taken after the kernel source attached.
    pub fn from_inventory(snapshot: &Snapshot, seen_at: i64) -> Self {
        let live = snapshot
            .processes
            .iter()
            .map(|p| {
                let entry = Entry {
                    start_time: p.start_time,
                    seen_at,
                    info: p.clone(),
                };
                (p.pid, entry)
            })
            .collect();
        Self {
            live,
            exited_during_pass: None,
        }
    }

    /// Live processes as the stream knows them.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Applies one kernel event; fills in what an `exit` lacks (the exe) from
    /// what the stream saw earlier.
    pub fn observe(&mut self, event: &mut ProcessEvent) {
        match event.kind {
            EventKind::Exec | EventKind::Fork => {
                let entry = self.live.entry(event.pid).or_insert_with(|| Entry {
                    start_time: event.start_time,
                    seen_at: event.timestamp,
                    info: ProcessInfo::default(),
                });
                if entry.start_time != event.start_time {
                    // A reused PID whose previous owner's exit we never saw:
                    // the next pass reports it as stopped-and-started.
                    entry.start_time = event.start_time;
                    entry.seen_at = event.timestamp;
                }
                entry.info.pid = event.pid;
                entry.info.ppid = event.ppid;
                entry.info.name.clone_from(&event.name);
                entry.info.start_time = event.start_time;
                // A stop found later names the process the stream named.
                entry.info.entity_id = event.entity_id;
                entry.info.exec_id = event.exec_id;
                entry.info.parent_entity_id = event.parent.as_ref().and_then(|p| p.entity_id);
                if event.kind == EventKind::Exec {
                    entry.info.exe.clone_from(&event.exe);
                    entry.info.argv.clone_from(&event.argv);
                }
            }
            EventKind::Exit => {
                if let Some(entry) = self.live.get(&event.pid)
                    && entry.start_time == event.start_time
                {
                    if event.exe.is_none() {
                        event.exe.clone_from(&entry.info.exe);
                    }
                    self.live.remove(&event.pid);
                }
                if let Some(exited) = &mut self.exited_during_pass {
                    exited.insert((event.pid, event.start_time));
                }
            }
            _ => {}
        }
    }

    /// Call when a snapshot starts being read.
    pub fn begin_pass(&mut self) {
        self.exited_during_pass = Some(HashSet::new());
    }

    /// Call when a pass is abandoned (its snapshot failed).
    pub fn abort_pass(&mut self) {
        self.exited_during_pass = None;
    }

    /// Diffs a finished snapshot against the stream's view; `started` is
    /// when the snapshot began, on the events' clock. Returns the events the
    /// stream missed.
    pub fn reconcile(&mut self, snapshot: &Snapshot, started: i64) -> Vec<ProcessEvent> {
        let exited = self.exited_during_pass.take().unwrap_or_default();
        let mut events = Vec::new();
        let mut listed = HashSet::with_capacity(snapshot.processes.len());
        for p in &snapshot.processes {
            listed.insert(p.pid);
            if exited.contains(&p.key()) {
                continue;
            }
            match self.live.get(&p.pid) {
                Some(e) if e.start_time == p.start_time => continue,
                Some(e) if e.seen_at >= started => continue,
                Some(e) => {
                    // The PID was reused under us: the old process stopped.
                    events.push(
                        e.info
                            .to_event(EventKind::Stop, EventSource::Reconcile, started),
                    );
                }
                None => {}
            }
            let when = p.start_time.unwrap_or(started);
            events.push(p.to_event(EventKind::Start, EventSource::Reconcile, when));
            self.live.insert(
                p.pid,
                Entry {
                    start_time: p.start_time,
                    seen_at: started,
                    info: p.clone(),
                },
            );
        }
        let gone: Vec<u32> = self
            .live
            .iter()
            .filter(|(pid, e)| !listed.contains(pid) && e.seen_at < started)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some(e) = self.live.remove(&pid) {
                events.push(
                    e.info
                        .to_event(EventKind::Stop, EventSource::Reconcile, started),
                );
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EntityId;

    /// A process as the kernel iterator lists it: with its entity_id (here
    /// from `pid/start`, a stand-in for the CPID facts).
    fn info(pid: u32, start: i64) -> ProcessInfo {
        ProcessInfo {
            pid,
            start_time: Some(start),
            name: format!("p{pid}"),
            entity_id: Some(id(pid, start)),
            ..ProcessInfo::default()
        }
    }

    fn id(pid: u32, start: i64) -> EntityId {
        EntityId::from_digest_input(format!("{pid}/{start}").as_bytes())
    }

    fn snap(p: Vec<ProcessInfo>) -> Snapshot {
        Snapshot {
            taken_at: 0,
            taken_at_event_clock: None,
            processes: p,
        }
    }

    fn kernel(kind: EventKind, pid: u32, start: i64, at: i64) -> ProcessEvent {
        let mut e = ProcessEvent::new(kind, EventSource::Ebpf, at, pid);
        e.start_time = Some(start);
        e
    }

    #[test]
    fn a_complete_stream_produces_nothing() {
        let mut r = Reconciler::from_inventory(&snap(vec![info(1, 1), info(2, 2)]), 10);
        r.observe(&mut kernel(EventKind::Fork, 3, 3, 20));
        r.observe(&mut kernel(EventKind::Exit, 2, 2, 21));
        r.begin_pass();
        // Exits during the pass: listed by the snapshot but already gone.
        r.observe(&mut kernel(EventKind::Exit, 3, 3, 101));
        // Started after the pass began: not in the snapshot, not a stop.
        r.observe(&mut kernel(EventKind::Fork, 4, 4, 102));
        assert!(
            r.reconcile(&snap(vec![info(1, 1), info(3, 3)]), 100)
                .is_empty()
        );
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn reports_missed_starts_stops_and_reuse() {
        let mut r = Reconciler::from_inventory(&snap(vec![info(1, 1), info(2, 2), info(5, 5)]), 10);
        r.begin_pass();
        let events = r.reconcile(&snap(vec![info(1, 1), info(3, 3), info(5, 50)]), 100);
        // By entity_id: the reused pid 5 is two processes, the old one's
        // stop and the new one's start.
        let got: Vec<_> = events.iter().map(|e| (e.kind, e.entity_id)).collect();
        let want: HashSet<_> = [
            (EventKind::Stop, Some(id(2, 2))),
            (EventKind::Start, Some(id(3, 3))),
            (EventKind::Stop, Some(id(5, 5))),
            (EventKind::Start, Some(id(5, 50))),
        ]
        .into_iter()
        .collect();
        assert_eq!(got.len(), want.len(), "{got:?}");
        assert_eq!(got.into_iter().collect::<HashSet<_>>(), want);
        assert!(events.iter().all(|e| e.source == EventSource::Reconcile));
        r.begin_pass();
        assert!(
            r.reconcile(&snap(vec![info(1, 1), info(3, 3), info(5, 50)]), 200)
                .is_empty()
        );
    }
}
