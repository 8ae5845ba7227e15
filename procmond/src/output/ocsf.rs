//! An event as an OCSF 1.8 Process Activity event (class 1007, System
//! Activity category 1), for pipelines that normalize on OCSF (security data
//! lakes and the SIEMs that read them). Borrowed structs serialized straight
//! to the output buffer, like `ecs`.
//!
//! Attributes, types and required members are those of the OCSF 1.8.0
//! definitions vendored in `fixtures/ocsf/` and checked by `schema_tests`;
//! facts OCSF has no attribute for go under `unmapped.procmond` (`ext::Ext`).
//! The mapping is docs/reference.md §2.6.

use serde::Serialize;

use super::Host;
use super::ext::{CommandLine, Ext, Ids, Leaders, NumStr, base_name};
use crate::model::{EntityId, EventKind, Parent, ProcessEvent};

/// The OCSF version the events follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.8.0";
pub const CATEGORY_UID: u32 = 1;
pub const CLASS_UID: u32 = 1007;
/// Informational: a process event is a fact, not a finding.
const SEVERITY_INFORMATIONAL: u8 = 1;
/// `file.type_id` of an executable: a regular file.
const FILE_REGULAR: u8 = 1;
/// `fingerprint.algorithm_id` of SHA-256.
const HASH_SHA256: u8 = 3;
/// `device.type_id`: procmond does not know whether it is a server or desktop.
const DEVICE_UNKNOWN: u8 = 0;

/// One OCSF Process Activity event.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    activity_id: u8,
    activity_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: &'static str,
    severity_id: u8,
    /// ms since the epoch.
    time: i64,
    metadata: Metadata<'a>,
    process: Process<'a>,
    actor: Actor<'a>,
    device: Device<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    launch_type_id: Option<u8>,
    unmapped: Unmapped<'a>,
}

#[derive(Debug, Serialize)]
struct Metadata<'a> {
    version: &'static str,
    product: Product,
    /// `<collector_id>-<epoch>-<seq>`: unique per event.
    uid: EventUid<'a>,
}

#[derive(Debug, Serialize)]
struct Product {
    name: &'static str,
    version: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct EventUid<'a>(&'a ProcessEvent);

impl Serialize for EventUid<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        s.collect_str(&format_args!("{}-{}-{}", e.collector_id, e.epoch, e.seq))
    }
}

/// OCSF's `process` object, also the parent, the actor and (with only
/// `pid`/`cpid`) each ancestor.
#[derive(Debug, Default, Serialize)]
struct Process<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpid: Option<EntityId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<EntityId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<File<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd_line: Option<CommandLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    terminated_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_directory: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<Session>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Container<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ancestry: Option<Vec<Process<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_process: Option<Box<Process<'a>>>,
}

#[derive(Debug, Serialize)]
struct File<'a> {
    name: &'a str,
    path: &'a str,
    type_id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    hashes: Option<[Fingerprint<'a>; 1]>,
}

#[derive(Debug, Serialize)]
struct Fingerprint<'a> {
    algorithm_id: u8,
    value: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum UserUid<'a> {
    Num(NumStr),
    Sid(&'a str),
}

#[derive(Debug, Serialize)]
struct User<'a> {
    uid: UserUid<'a>,
}

#[derive(Debug, Serialize)]
struct Session {
    uid: EntityId,
}

#[derive(Debug, Serialize)]
struct Container<'a> {
    uid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_uuid: Option<EntityId>,
}

#[derive(Debug, Serialize)]
struct Actor<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<Process<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User<'a>>,
}

#[derive(Debug, Serialize)]
struct Device<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    type_id: u8,
}

#[derive(Debug, Serialize)]
struct Unmapped<'a> {
    procmond: Ext<'a>,
}

/// `(activity_id, activity_name, type_name)` of each kind. Snapshot and
/// modify are Other (99): the process was seen, not launched or ended.
pub fn activity(kind: EventKind) -> (u8, &'static str, &'static str) {
    match kind {
        EventKind::Exec | EventKind::Fork | EventKind::Start => {
            (1, "Launch", "Process Activity: Launch")
        }
        EventKind::Exit | EventKind::Stop => (2, "Terminate", "Process Activity: Terminate"),
        EventKind::SetUid => (5, "Set User ID", "Process Activity: Set User ID"),
        EventKind::Snapshot => (99, "Snapshot", "Process Activity: Other"),
        EventKind::Modify => (99, "Modify", "Process Activity: Other"),
    }
}

/// `launch_type_id`: Exec and Fork are the two Unix steps; a start seen by
/// polling or ETW is both at once (Spawn).
pub fn launch_type(kind: EventKind) -> Option<u8> {
    match kind {
        EventKind::Start => Some(1),
        EventKind::Fork => Some(2),
        EventKind::Exec => Some(3),
        _ => None,
    }
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

impl<'a> Event<'a> {
    pub fn new(e: &'a ProcessEvent, host: &'a Host) -> Self {
        let (activity_id, activity_name, type_name) = activity(e.kind);
        let mut ext = Ext::new(e);
        ext.kind = (activity_id == 99).then_some(e.kind.as_str());
        ext.creds = Ids::of(e);
        ext.session = Leaders::of(e);
        ext.tty = e.session.tty;
        // `process.ancestry` holds them.
        ext.ancestors = &[];
        let pod_uuid = e.pod_uid.as_deref().and_then(EntityId::parse);
        if pod_uuid.is_none() {
            ext.pod_uid = e.pod_uid.as_deref();
        }
        Self {
            activity_id,
            activity_name,
            category_uid: CATEGORY_UID,
            category_name: "System Activity",
            class_uid: CLASS_UID,
            class_name: "Process Activity",
            type_uid: CLASS_UID * 100 + u32::from(activity_id),
            type_name,
            severity_id: SEVERITY_INFORMATIONAL,
            time: ms(e.timestamp),
            metadata: Metadata {
                version: OCSF_VERSION,
                product: Product {
                    name: "procmond",
                    version: env!("CARGO_PKG_VERSION"),
                },
                uid: EventUid(e),
            },
            process: Process::of_event(e, pod_uuid),
            actor: Actor::of(e),
            device: Device {
                hostname: host.hostname.as_deref(),
                type_id: DEVICE_UNKNOWN,
            },
            exit_code: e.exit_code,
            launch_type_id: launch_type(e.kind),
            unmapped: Unmapped { procmond: ext },
        }
    }
}

/// The user the process runs as: effective when known, else real, else
/// (Windows) its SID.
fn user(e: &ProcessEvent) -> Option<User<'_>> {
    let uid = match (e.euid.or(e.uid), e.platform.user_sid.as_deref()) {
        (Some(n), _) => UserUid::Num(NumStr(n)),
        (None, Some(sid)) => UserUid::Sid(sid),
        (None, None) => return None,
    };
    Some(User { uid })
}

fn file<'a>(exe: Option<&'a str>, sha256: Option<&'a str>) -> Option<File<'a>> {
    exe.map(|path| File {
        name: base_name(path),
        path,
        type_id: FILE_REGULAR,
        hashes: sha256.map(|value| {
            [Fingerprint {
                algorithm_id: HASH_SHA256,
                value,
            }]
        }),
    })
}

impl<'a> Process<'a> {
    fn of_event(e: &'a ProcessEvent, pod_uuid: Option<EntityId>) -> Self {
        let exited = matches!(e.kind, EventKind::Exit | EventKind::Stop);
        Self {
            pid: Some(e.pid),
            cpid: e.entity_id,
            uid: e.exec_id,
            name: (!e.name.is_empty()).then_some(e.name.as_str()),
            path: e.exe.as_deref(),
            file: file(e.exe.as_deref(), e.sha256.as_deref()),
            cmd_line: CommandLine::of(&e.argv),
            created_time: e.start_time.map(ms),
            terminated_time: exited.then_some(ms(e.timestamp)),
            working_directory: e.cwd.as_deref(),
            tid: e.tid,
            user: user(e),
            session: e.session.entry_leader.map(|uid| Session { uid }),
            container: e.container_id.as_deref().map(|uid| Container {
                uid,
                runtime: e.container_runtime.as_deref(),
                pod_uuid,
            }),
            ancestry: ancestry(e),
            parent_process: Self::parent(e).map(Box::new),
        }
    }

    /// The parent as the table knew it, else only the kernel's ppid.
    fn parent(e: &'a ProcessEvent) -> Option<Self> {
        match &e.parent {
            Some(p) => Some(Self::of_parent(p)),
            None => e.ppid.map(|pid| Self {
                pid: Some(pid),
                ..Self::default()
            }),
        }
    }

    fn of_parent(p: &'a Parent) -> Self {
        Self {
            pid: Some(p.pid),
            cpid: p.entity_id,
            name: p.name.as_deref(),
            path: p.exe.as_deref(),
            file: file(p.exe.as_deref(), None),
            cmd_line: CommandLine::of(&p.argv),
            created_time: p.start_time.map(ms),
            ..Self::default()
        }
    }

    /// Only who it is: the actor of its own exec, exit or setuid.
    fn itself(e: &ProcessEvent) -> Self {
        Self {
            pid: Some(e.pid),
            cpid: e.entity_id,
            ..Self::default()
        }
    }
}

/// OCSF's ancestry starts at the direct parent; procmond's `ancestors`
/// start above it. Only written when there are ancestors above the parent.
fn ancestry(e: &ProcessEvent) -> Option<Vec<Process<'_>>> {
    if e.ancestors.is_empty() {
        return None;
    }
    let parent = Process {
        pid: e.parent.as_ref().map(|p| p.pid).or(e.ppid),
        cpid: e.parent.as_ref().and_then(|p| p.entity_id),
        ..Process::default()
    };
    let above = e.ancestors.iter().map(|id| Process {
        cpid: Some(*id),
        ..Process::default()
    });
    Some(std::iter::once(parent).chain(above).collect())
}

impl<'a> Actor<'a> {
    /// Who acted: the parent for a fork or a start, the process itself for
    /// everything else (an exec, an exit, a setuid are its own doing).
    /// After a setuid, `actor.user` is the effective user it had before.
    fn of(e: &'a ProcessEvent) -> Self {
        let process = match e.kind {
            EventKind::Fork | EventKind::Start => Process::parent(e),
            _ => Some(Process::itself(e)),
        };
        let user = match (e.kind, e.previous_creds) {
            (EventKind::SetUid, Some(c)) => Some(User {
                uid: UserUid::Num(NumStr(c.euid)),
            }),
            _ => None,
        };
        Self { process, user }
    }
}
