//! The event layout 1 (`EVENT_LAYOUT` before process identity), frozen so
//! that batches still pending in a WAL written by an older build are read
//! and converted (`batch::upgrade_events`), never lost. Do not edit: a
//! change here would misread those batches.

use super::{EventKind, EventSource, Platform, ProcessEvent};

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProcessEventV1 {
    pub seq: u64,
    pub epoch: u64,
    pub collector_id: String,
    pub kind: EventKind,
    pub source: EventSource,
    pub timestamp: i64,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub tid: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub euid: Option<u32>,
    pub name: String,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub cwd: Option<String>,
    pub start_time: Option<i64>,
    pub exit_code: Option<i32>,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    pub container_runtime: Option<String>,
    pub pod_uid: Option<String>,
    pub sha256: Option<String>,
    pub sha256_pending: bool,
    pub platform: Platform,
}

impl From<ProcessEventV1> for ProcessEvent {
    /// What layout 1 did not carry stays unknown.
    fn from(v: ProcessEventV1) -> Self {
        let unknown = ProcessEvent::new(v.kind, v.source, v.timestamp, v.pid);
        ProcessEvent {
            seq: v.seq,
            epoch: v.epoch,
            collector_id: v.collector_id,
            kind: v.kind,
            source: v.source,
            timestamp: v.timestamp,
            pid: v.pid,
            ppid: v.ppid,
            tid: v.tid,
            uid: v.uid,
            gid: v.gid,
            euid: v.euid,
            name: v.name,
            exe: v.exe,
            argv: v.argv,
            argv_truncated: v.argv_truncated,
            cwd: v.cwd,
            start_time: v.start_time,
            exit_code: v.exit_code,
            cgroup: v.cgroup,
            container_id: v.container_id,
            container_runtime: v.container_runtime,
            pod_uid: v.pod_uid,
            sha256: v.sha256,
            sha256_pending: v.sha256_pending,
            platform: v.platform,
            ..unknown
        }
    }
}

/// A current event as layout 1 held it (tests write old batches with it).
#[cfg(test)]
impl From<ProcessEvent> for ProcessEventV1 {
    fn from(e: ProcessEvent) -> Self {
        Self {
            seq: e.seq,
            epoch: e.epoch,
            collector_id: e.collector_id,
            kind: e.kind,
            source: e.source,
            timestamp: e.timestamp,
            pid: e.pid,
            ppid: e.ppid,
            tid: e.tid,
            uid: e.uid,
            gid: e.gid,
            euid: e.euid,
            name: e.name,
            exe: e.exe,
            argv: e.argv,
            argv_truncated: e.argv_truncated,
            cwd: e.cwd,
            start_time: e.start_time,
            exit_code: e.exit_code,
            cgroup: e.cgroup,
            container_id: e.container_id,
            container_runtime: e.container_runtime,
            pod_uid: e.pod_uid,
            sha256: e.sha256,
            sha256_pending: e.sha256_pending,
            platform: e.platform,
        }
    }
}
