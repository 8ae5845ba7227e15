//! The event model of docs/reference.md §2: one `ProcessEvent` per observed process change.
//!
//! The same struct is encoded once with rkyv (WAL, bus, subscribers read it in
//! place) and rendered as JSON for humans and sinks. Unknown values are `None`
//! and omitted from JSON: procmond never invents a value it did not observe.

pub mod batch;
pub mod codec;
pub mod identity;
pub mod lineage;
pub mod v1;

pub use identity::EntityId;
pub use lineage::{Creds, Parent, Session, Tty};

use std::fmt::Write as _;

use serde::{Serialize, Serializer};

/// What happened to the process.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum EventKind {
    /// The process replaced its image (kernel source).
    Exec,
    /// The process's last thread exited (kernel source).
    Exit,
    /// A new process was created (kernel source).
    Fork,
    /// The process was alive when the inventory was taken.
    Snapshot,
    /// A process appeared (polling or reconciliation).
    Start,
    /// A process disappeared (polling or reconciliation).
    Stop,
    /// A live process changed its image or command line (polling).
    Modify,
    /// A running process changed its user or group ids without an exec
    /// (kernel source); `previous_creds` holds the ids before.
    #[serde(rename = "setuid")]
    SetUid,
}

impl EventKind {
    /// The name used in JSON and in bus topics (`events.process.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Exit => "exit",
            Self::Fork => "fork",
            Self::Snapshot => "snapshot",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Modify => "modify",
            Self::SetUid => "setuid",
        }
    }

    /// Every kind, in `as_u8` order.
    pub const ALL: [EventKind; 8] = [
        Self::Exec,
        Self::Exit,
        Self::Fork,
        Self::Snapshot,
        Self::Start,
        Self::Stop,
        Self::Modify,
        Self::SetUid,
    ];

    /// A small stable number (batch entries carry it).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n)).copied()
    }
}

impl ArchivedEventKind {
    /// The native kind of an archived (in-place) event.
    pub fn to_native(&self) -> EventKind {
        match self {
            Self::Exec => EventKind::Exec,
            Self::Exit => EventKind::Exit,
            Self::Fork => EventKind::Fork,
            Self::Snapshot => EventKind::Snapshot,
            Self::Start => EventKind::Start,
            Self::Stop => EventKind::Stop,
            Self::Modify => EventKind::Modify,
            Self::SetUid => EventKind::SetUid,
        }
    }
}

/// Which mechanism observed the event.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum EventSource {
    Ebpf,
    Etw,
    EndpointSecurity,
    Poll,
    Reconcile,
    /// FreeBSD audit(4) through /dev/auditpipe.
    Audit,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Etw => "etw",
            Self::EndpointSecurity => "endpoint_security",
            Self::Poll => "poll",
            Self::Reconcile => "reconcile",
            Self::Audit => "audit",
        }
    }

    /// Every source, in declaration order.
    pub const ALL: [EventSource; 6] = [
        Self::Ebpf,
        Self::Etw,
        Self::EndpointSecurity,
        Self::Poll,
        Self::Reconcile,
        Self::Audit,
    ];
}

/// Platform-specific extras, rendered under `platform`.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Platform {
    /// Signal that terminated the process (`exit` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The terminating signal dumped core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_dumped: Option<bool>,
    /// Kernel cgroup v2 id of the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// The path handed to execve, when it was not absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_filename: Option<String>,
    /// Inode of the executable the probe saw run (`exec`, Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_inode: Option<u64>,
    /// Device of that inode, as `stat(2)` reports `st_dev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_dev: Option<u64>,
    /// The parent at creation, which survives reparenting (EndpointSecurity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_ppid: Option<u32>,
    /// Code-signing team id (EndpointSecurity; absent for Apple's own and
    /// unsigned code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Code-signing identifier (EndpointSecurity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_id: Option<String>,
    /// Code-directory hash, lowercase hex (EndpointSecurity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdhash: Option<String>,
    /// Signed as part of the operating system (EndpointSecurity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_binary: Option<bool>,
    /// FreeBSD jail id (`ki_jid`), absent on the host (audit events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jail_id: Option<i32>,
    /// FreeBSD jail name, from the audit record's zonename token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jail_name: Option<String>,
    /// Windows: the user SID the process runs as (ETW, classic provider).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_sid: Option<String>,
    /// Windows: the logon session (terminal services session id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u32>,
    /// Windows: the kernel's process sequence number, unique per boot
    /// (Kernel-Process events of version 3, stops of version 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    /// Windows: the parent's process sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_sequence_number: Option<u64>,
}

impl Platform {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// One process event, as every output carries it.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct ProcessEvent {
    /// Per collector and WAL, monotonic.
    pub seq: u64,
    /// The identity of the WAL that numbered this event (created with it):
    /// `(collector_id, epoch, seq)` is unique, so a wiped or replaced WAL
    /// starting over at seq 1 never collides with the old one. 0 when no
    /// WAL numbered it (`procmond snapshot`).
    #[serde(skip_serializing_if = "is_zero")]
    pub epoch: u64,
    pub collector_id: String,
    pub kind: EventKind,
    pub source: EventSource,
    /// The process's identity from its fork to its exit, the same from every
    /// source and across restarts (OCSF CPID, `model::identity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<EntityId>,
    /// The identity of the image it runs: changes on each exec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<EntityId>,
    /// When it happened, nanoseconds since the Unix epoch (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: i64,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egid: Option<u32>,
    /// The ids before a `setuid` event (its `uid`/`euid`/`gid`/`egid` are
    /// the ids after).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_creds: Option<Creds>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Empty (and omitted) when not captured, as on `exit` and `fork`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub argv_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Process start, ns since the Unix epoch, at clock-tick (10 ms) precision
    /// so that every source names the same process with the same value.
    #[serde(
        serialize_with = "opt_rfc3339",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `cri-o` or `podman`, when the cgroup layout names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<String>,
    /// The Kubernetes pod the container belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The executable's hash is being computed: a `modify` event for the
    /// same `(pid, start_time)` carries it.
    #[serde(skip_serializing_if = "is_false")]
    pub sha256_pending: bool,
    /// The parent: who it was, from the process table (`model::lineage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    /// The `entity_id`s above the parent, nearest first, as far as the
    /// table knows them and `lineage.max_ancestors` allows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<EntityId>,
    /// Session, process group, their leaders, tty and login uid.
    #[serde(skip_serializing_if = "Session::is_empty")]
    pub session: Session,
    #[serde(skip_serializing_if = "Platform::is_empty")]
    pub platform: Platform,
}

impl ProcessEvent {
    /// An event with only the identifying fields set; sources fill the rest.
    pub fn new(kind: EventKind, source: EventSource, timestamp: i64, pid: u32) -> Self {
        Self {
            seq: 0,
            epoch: 0,
            collector_id: String::new(),
            kind,
            source,
            entity_id: None,
            exec_id: None,
            timestamp,
            pid,
            ppid: None,
            tid: None,
            uid: None,
            gid: None,
            euid: None,
            egid: None,
            previous_creds: None,
            name: String::new(),
            exe: None,
            argv: Vec::new(),
            argv_truncated: false,
            cwd: None,
            start_time: None,
            exit_code: None,
            cgroup: None,
            container_id: None,
            container_runtime: None,
            pod_uid: None,
            sha256: None,
            sha256_pending: false,
            parent: None,
            ancestors: Vec::new(),
            session: Session::default(),
            platform: Platform::default(),
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Formats ns since the epoch as RFC 3339 UTC with nanoseconds.
///
/// Every event carries two or three timestamps, mostly within the same
/// second as the one before, so the date and time of day are formatted
/// once per second per thread and kept; only the nanoseconds are new.
pub fn format_rfc3339(ns: i64) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let ns = ns.max(0) as u64;
    let (secs, nanos) = (ns / 1_000_000_000, ns % 1_000_000_000);
    LAST.with_borrow_mut(|(at, prefix)| {
        if *at != secs {
            *prefix = format_seconds(secs);
            *at = secs;
        }
        let mut out = String::with_capacity(prefix.len() + 11);
        out.push_str(prefix);
        let _ = write!(out, ".{nanos:09}Z");
        out
    })
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch, UTC.
fn format_seconds(secs: u64) -> String {
    // Whole seconds through SystemTime, nanoseconds by the caller: Windows'
    // SystemTime holds only 100 ns ticks and would drop the last digits.
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.trim_end_matches('Z').to_owned()
}

fn rfc3339<S: Serializer>(ns: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339(*ns))
}

fn opt_rfc3339<S: Serializer>(ns: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ns {
        Some(ns) => rfc3339(ns, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_the_same_second_keep_their_own_nanoseconds() {
        let base = 1_796_322_593_i64 * 1_000_000_000;
        for ns in [
            base,
            base + 1,
            base + 999_999_999,
            base + 1_000_000_000,
            0,
            -5,
        ] {
            let secs = std::time::Duration::from_secs((ns.max(0) / 1_000_000_000) as u64);
            let whole = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + secs).to_string();
            let want = format!(
                "{}.{:09}Z",
                whole.trim_end_matches('Z'),
                ns.max(0) % 1_000_000_000
            );
            assert_eq!(format_rfc3339(ns), want);
        }
        assert_eq!(format_rfc3339(base + 42), "2026-12-03T18:29:53.000000042Z");
    }

    #[test]
    fn json_omits_unknown_and_formats_time() {
        let mut e = ProcessEvent::new(
            EventKind::Exit,
            EventSource::Ebpf,
            1_700_000_000_123_456_789,
            42,
        );
        e.exit_code = Some(3);
        let json = serde_json::to_value(&e).expect("serializes");
        assert_eq!(json["timestamp"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(json["kind"], "exit");
        assert_eq!(json["source"], "ebpf");
        assert_eq!(json["exit_code"], 3);
        assert!(json.get("exe").is_none());
        assert!(json.get("platform").is_none());
        assert!(json.get("argv_truncated").is_none());
    }
}
