//! FallbackProcessCollector: process events from successive snapshots.
//!
//! Where no kernel source can run (FreeBSD, no privilege, no BTF), procmond
//! still reports: each poll is diffed against the previous one by
//! `(pid, start_time)`, so a reused PID is a stop plus a start, never a
//! silent continuation. Processes shorter than the interval are invisible
//! here; that limit is why the kernel source exists and why `capabilities`
//! reports the degraded mode.

use std::collections::HashMap;

use super::snapshot::{ProcessInfo, Snapshot};
use crate::model::{EventKind, EventSource, ProcessEvent};

type Key = (u32, Option<i64>);

/// Diffs snapshots into `start`, `stop` and `modify` events.
#[derive(Debug, Default)]
pub struct FallbackProcessCollector {
    previous: HashMap<Key, ProcessInfo>,
}

impl FallbackProcessCollector {
    /// Starts from the inventory snapshot (already reported as `snapshot`).
    pub fn new(initial: &Snapshot) -> Self {
        Self {
            previous: initial
                .processes
                .iter()
                .map(|p| (p.key(), p.clone()))
                .collect(),
        }
    }

    /// Number of processes in the last snapshot.
    pub fn len(&self) -> usize {
        self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.previous.is_empty()
    }

    /// Events for everything that changed since the previous snapshot.
    pub fn diff(&mut self, snapshot: Snapshot) -> Vec<ProcessEvent> {
        let now = snapshot.taken_at;
        let mut events = Vec::new();
        let mut current: HashMap<Key, ProcessInfo> =
            HashMap::with_capacity(snapshot.processes.len());
        for info in snapshot.processes {
            let key = info.key();
            match self.previous.remove(&key) {
                None => {
                    let when = info.start_time.unwrap_or(now);
                    events.push(info.to_event(EventKind::Start, EventSource::Poll, when));
                }
                Some(old)
                    if old.exe != info.exe || old.argv != info.argv || old.name != info.name =>
                {
                    events.push(info.to_event(EventKind::Modify, EventSource::Poll, now));
                }
                Some(_) => {}
            }
            current.insert(key, info);
        }
        // What is left in `previous` is gone.
        let mut gone: Vec<_> = self.previous.drain().map(|(_, v)| v).collect();
        gone.sort_by_key(|p| p.pid);
        events.extend(
            gone.iter()
                .map(|p| p.to_event(EventKind::Stop, EventSource::Poll, now)),
        );
        self.previous = current;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, start: i64, exe: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            start_time: Some(start),
            exe: Some(exe.into()),
            name: exe.into(),
            ..ProcessInfo::default()
        }
    }

    fn snap(at: i64, p: Vec<ProcessInfo>) -> Snapshot {
        Snapshot {
            taken_at: at,
            taken_at_event_clock: None,
            processes: p,
        }
    }

    #[test]
    fn reports_start_stop_modify_and_pid_reuse() {
        let mut c = FallbackProcessCollector::new(&snap(
            0,
            vec![proc(1, 10, "/init"), proc(2, 20, "/a"), proc(3, 30, "/b")],
        ));
        let events = c.diff(snap(
            100,
            vec![
                proc(1, 10, "/init"),
                proc(2, 20, "/a2"),
                proc(3, 90, "/c"),
                proc(4, 95, "/d"),
            ],
        ));
        // Synthetic processes without an entity_id, as a platform that cannot
        // compute one lists them (FreeBSD, Windows, macOS polling): this
        // collector diffs by (pid, start_time), so the test names each event
        // by pid and exe, and pid 3's reuse is told apart by its exe.
        assert!(
            events.iter().all(|e| e.entity_id.is_none()),
            "the synthetic data has no entity_id: {events:?}"
        );
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.kind, e.pid, e.exe.clone().unwrap_or_default()))
            .collect();
        assert!(got.contains(&(EventKind::Modify, 2, "/a2".into())));
        assert!(got.contains(&(EventKind::Start, 3, "/c".into())));
        assert!(got.contains(&(EventKind::Stop, 3, "/b".into())));
        assert!(got.contains(&(EventKind::Start, 4, "/d".into())));
        assert_eq!(got.len(), 4);
        assert!(events.iter().all(|e| e.source == EventSource::Poll));
        assert!(
            c.diff(snap(
                200,
                vec![
                    proc(1, 10, "/init"),
                    proc(2, 20, "/a2"),
                    proc(3, 90, "/c"),
                    proc(4, 95, "/d")
                ]
            ))
            .is_empty()
        );
    }
}
