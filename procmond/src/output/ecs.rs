//! An event as an Elastic Common Schema 8.x document, for consumers that
//! index ECS (Elasticsearch, Elastic Security and the tools that speak it)
//! without a mapping of their own. Borrowed structs serialized straight to
//! the output buffer: nothing is built per event but the few strings ECS
//! wants where procmond holds numbers.
//!
//! Fields and their types are those of ECS 8.17.0 (the definitions vendored
//! in `fixtures/ecs/`, checked by `schema_tests`); facts ECS has no field for
//! go under `procmond.*` (`ext::Ext`). The mapping is docs/reference.md §2.6.

use serde::Serialize;

use super::Host;
use super::ext::{CommandLine, Ext, NumStr, Rfc3339};
use crate::model::{EntityId, EventKind, ProcessEvent};

/// The ECS version the documents follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.17.0";

/// One ECS document.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: Rfc3339,
    ecs: Ecs,
    event: Event,
    process: Process<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Container<'a>>,
    host: HostDoc<'a>,
    agent: Agent,
    procmond: Ext<'a>,
}

#[derive(Debug, Serialize)]
struct Ecs {
    version: &'static str,
}

#[derive(Debug, Serialize)]
struct Event {
    kind: &'static str,
    category: [&'static str; 1],
    #[serde(rename = "type")]
    types: [&'static str; 1],
    action: &'static str,
    sequence: u64,
}

#[derive(Debug, Serialize)]
struct Process<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_id: Option<EntityId>,
    pid: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    executable: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    args: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    args_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_line: Option<CommandLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_directory: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<Hash<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tty: Option<TtyDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Id<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    real_user: Option<Id<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<Id<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    real_group: Option<Id<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interactive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread: Option<Thread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<Parent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_leader: Option<Leader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_leader: Option<Leader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry_leader: Option<Leader>,
}

#[derive(Debug, Serialize)]
struct Hash<'a> {
    sha256: &'a str,
}

#[derive(Debug, Serialize)]
struct TtyDoc {
    char_device: CharDevice,
}

#[derive(Debug, Serialize)]
struct CharDevice {
    major: u32,
    minor: u32,
}

/// `user.id` / `group.id`: a keyword, the number as text or a Windows SID.
#[derive(Debug, Serialize)]
struct Id<'a> {
    id: IdValue<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum IdValue<'a> {
    Num(NumStr),
    Sid(&'a str),
}

#[derive(Debug, Serialize)]
struct Thread {
    id: u32,
}

#[derive(Debug, Serialize)]
struct Parent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_id: Option<EntityId>,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executable: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    args: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    args_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_line: Option<CommandLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<Rfc3339>,
}

#[derive(Debug, Serialize)]
struct Leader {
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_id: Option<EntityId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
}

impl Leader {
    fn of(entity_id: Option<EntityId>, pid: Option<u32>) -> Option<Self> {
        (entity_id.is_some() || pid.is_some()).then_some(Self { entity_id, pid })
    }
}

#[derive(Debug, Serialize)]
struct Container<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct HostDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    os: Os,
}

#[derive(Debug, Serialize)]
struct Os {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct Agent {
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
}

/// `event.type` of each kind: a start, an end, a change or a fact.
pub fn event_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Exec | EventKind::Fork | EventKind::Start => "start",
        EventKind::Exit | EventKind::Stop => "end",
        EventKind::Modify | EventKind::SetUid => "change",
        EventKind::Snapshot => "info",
    }
}

/// `host.os.type`: ECS's closed list has no FreeBSD, which is `unix`.
fn os_type() -> &'static str {
    if cfg!(target_os = "linux") {
        "linux"
    } else if cfg!(target_os = "macos") {
        "macos"
    } else if cfg!(windows) {
        "windows"
    } else {
        "unix"
    }
}

impl<'a> Document<'a> {
    pub fn new(e: &'a ProcessEvent, host: &'a Host) -> Self {
        let mut ext = Ext::new(e);
        ext.exec_id = e.exec_id;
        ext.pod_uid = e.pod_uid.as_deref();
        Self {
            timestamp: Rfc3339(e.timestamp),
            ecs: Ecs {
                version: ECS_VERSION,
            },
            event: Event {
                kind: "event",
                category: ["process"],
                types: [event_type(e.kind)],
                action: e.kind.as_str(),
                sequence: e.seq,
            },
            process: Process::new(e),
            container: e.container_id.as_deref().map(|id| Container {
                id,
                runtime: e.container_runtime.as_deref(),
            }),
            host: HostDoc {
                hostname: host.hostname.as_deref(),
                os: Os { kind: os_type() },
            },
            agent: Agent {
                kind: "procmond",
                version: env!("CARGO_PKG_VERSION"),
            },
            procmond: ext,
        }
    }
}

impl<'a> Process<'a> {
    fn new(e: &'a ProcessEvent) -> Self {
        let s = &e.session;
        let exited = matches!(e.kind, EventKind::Exit | EventKind::Stop);
        // ECS's process.user is the effective user, real_user the real one.
        // A Windows process has a SID instead of a uid.
        let sid = e.platform.user_sid.as_deref();
        let user = match (e.euid, sid) {
            (Some(id), _) => Some(IdValue::Num(NumStr(id))),
            (None, Some(sid)) if e.uid.is_none() => Some(IdValue::Sid(sid)),
            _ => None,
        };
        let id = |v: Option<u32>| {
            v.map(|n| Id {
                id: IdValue::Num(NumStr(n)),
            })
        };
        Self {
            entity_id: e.entity_id,
            pid: e.pid,
            name: &e.name,
            executable: e.exe.as_deref(),
            args: &e.argv,
            args_count: (!e.argv.is_empty()).then_some(e.argv.len()),
            command_line: CommandLine::of(&e.argv),
            working_directory: e.cwd.as_deref(),
            start: e.start_time.map(Rfc3339),
            end: exited.then_some(Rfc3339(e.timestamp)),
            exit_code: e.exit_code,
            hash: e.sha256.as_deref().map(|sha256| Hash { sha256 }),
            tty: s.tty.map(|t| TtyDoc {
                char_device: CharDevice {
                    major: t.major,
                    minor: t.minor,
                },
            }),
            user: user.map(|id| Id { id }),
            real_user: id(e.uid),
            group: id(e.egid),
            real_group: id(e.gid),
            // A controlling terminal makes it interactive; its absence
            // proves nothing (the source may not have read it).
            interactive: s.tty.map(|_| true),
            thread: e.tid.map(|id| Thread { id }),
            parent: Parent::of(e),
            group_leader: Leader::of(s.group_leader, s.pgid),
            session_leader: Leader::of(s.leader, s.id),
            entry_leader: Leader::of(s.entry_leader, None),
        }
    }
}

impl<'a> Parent<'a> {
    /// The table's parent, else only the kernel's ppid.
    fn of(e: &'a ProcessEvent) -> Option<Self> {
        if let Some(p) = &e.parent {
            return Some(Self {
                entity_id: p.entity_id,
                pid: p.pid,
                name: p.name.as_deref(),
                executable: p.exe.as_deref(),
                args: &p.argv,
                args_count: (!p.argv.is_empty()).then_some(p.argv.len()),
                command_line: CommandLine::of(&p.argv),
                start: p.start_time.map(Rfc3339),
            });
        }
        e.ppid.map(|pid| Self {
            entity_id: None,
            pid,
            name: None,
            executable: None,
            args: &[],
            args_count: None,
            command_line: None,
            start: None,
        })
    }
}
