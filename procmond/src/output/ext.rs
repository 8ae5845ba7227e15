//! The `procmond` object of the ECS and OCSF documents: facts of the event
//! that neither schema has a field for (WAL identity, source, exec id,
//! ancestors, login uid, the ids before a setuid, platform extras). ECS
//! carries it as `procmond.*`, OCSF as `unmapped.procmond.*`; each renderer
//! fills only what its own schema does not already hold, so no fact is
//! written twice and none is lost.

use serde::Serialize;

use crate::model::{Creds, EntityId, Platform, ProcessEvent, Tty};

/// procmond's own facts; `None`, empty and false members are omitted.
#[derive(Debug, Serialize)]
pub(super) struct Ext<'a> {
    /// With `epoch` and `seq`: the event's unique WAL identity (the jsonl
    /// sink reads these back to skip what it already stored).
    pub collector_id: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pub epoch: u64,
    pub seq: u64,
    /// `ebpf`, `etw`, `endpoint_security`, `poll`, `reconcile`, `audit`.
    pub source: &'static str,
    /// The event kind, where the schema's own activity does not name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<EntityId>,
    #[serde(skip_serializing_if = "<[EntityId]>::is_empty")]
    pub ancestors: &'a [EntityId],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_creds: Option<&'a Creds>,
    /// The ids OCSF's single `user` cannot hold (ECS maps them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creds: Option<Ids>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Leaders>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<Tty>,
    #[serde(skip_serializing_if = "is_false")]
    pub argv_truncated: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub sha256_pending: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub parent_unknown: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Platform::is_empty")]
    pub platform: &'a Platform,
}

/// Real and effective user and group ids, as far as known.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub(super) struct Ids {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egid: Option<u32>,
}

/// POSIX session and process group and their leaders.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub(super) struct Leaders {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_leader: Option<EntityId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_leader: Option<EntityId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_leader: Option<EntityId>,
}

impl<'a> Ext<'a> {
    /// The facts both schemas lack; each renderer adds what its own lacks.
    pub fn new(e: &'a ProcessEvent) -> Self {
        Self {
            collector_id: &e.collector_id,
            epoch: e.epoch,
            seq: e.seq,
            source: e.source.as_str(),
            kind: None,
            exec_id: None,
            ancestors: &e.ancestors,
            login_uid: e.session.login_uid,
            previous_creds: e.previous_creds.as_ref(),
            creds: None,
            session: None,
            tty: None,
            argv_truncated: e.argv_truncated,
            sha256_pending: e.sha256_pending,
            parent_unknown: e.parent.as_ref().is_some_and(|p| p.unknown),
            cgroup: e.cgroup.as_deref(),
            pod_uid: None,
            platform: &e.platform,
        }
    }
}

impl Ids {
    pub fn of(e: &ProcessEvent) -> Option<Self> {
        let ids = Self {
            uid: e.uid,
            euid: e.euid,
            gid: e.gid,
            egid: e.egid,
        };
        (ids != Self::default()).then_some(ids)
    }
}

impl Leaders {
    pub fn of(e: &ProcessEvent) -> Option<Self> {
        let s = &e.session;
        let l = Self {
            sid: s.id,
            pgid: s.pgid,
            session_leader: s.leader,
            group_leader: s.group_leader,
            entry_leader: s.entry_leader,
        };
        (l != Self::default()).then_some(l)
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An RFC 3339 time from ns since the epoch, written without a `String` field.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rfc3339(pub i64);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::model::format_rfc3339(self.0))
    }
}

/// argv as one command line: the arguments joined by single spaces (no
/// quoting is added, so an argument with a space reads as two).
#[derive(Debug, Clone, Copy)]
pub(super) struct CommandLine<'a>(pub &'a [String]);

impl CommandLine<'_> {
    pub fn of(argv: &[String]) -> Option<CommandLine<'_>> {
        (!argv.is_empty()).then_some(CommandLine(argv))
    }
}

impl std::fmt::Display for CommandLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, arg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(arg)?;
        }
        Ok(())
    }
}

impl Serialize for CommandLine<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A number written as a JSON string (ECS ids are keywords, OCSF's `uid`s
/// strings).
#[derive(Debug, Clone, Copy)]
pub(super) struct NumStr(pub u32);

impl Serialize for NumStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The last path component (`/usr/bin/ls` → `ls`; `C:\\x\\a.exe` → `a.exe`).
pub(super) fn base_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}
