//! procmond's own JSON straight from an archived (validated, in-place)
//! event, for the outputs that write every event as it comes (`watch`, the
//! jsonl sink in `native` format).
//!
//! Decoding an event into an owned `ProcessEvent` first costs an
//! allocation per string and list (some twenty for an exec with its
//! parent), only for the renderer to copy those strings again. This writes
//! the same bytes as `serde_json` of the decoded event, field for field in
//! the model's order with its rules for what is left out; the small nested
//! parts without strings of their own (session, creds, platform) are
//! deserialized and written with their derives. `tests` compares the two
//! renderings byte for byte on full and empty events of every kind.

use rkyv::rancor;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::model::lineage::ArchivedParent;
use crate::model::{
    ArchivedEventSource, ArchivedProcessEvent, Creds, EntityId, EventSource, Platform, Session,
    format_rfc3339, identity::ArchivedEntityId,
};

/// An archived event, serialized as `ProcessEvent` serializes.
pub struct Native<'a>(pub &'a ArchivedProcessEvent);

impl std::fmt::Debug for Native<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Native")
            .field("seq", &self.0.seq.to_native())
            .finish_non_exhaustive()
    }
}

fn id(a: &ArchivedEntityId) -> EntityId {
    EntityId(a.0)
}

fn source(s: &ArchivedEventSource) -> EventSource {
    match s {
        ArchivedEventSource::Ebpf => EventSource::Ebpf,
        ArchivedEventSource::Etw => EventSource::Etw,
        ArchivedEventSource::EndpointSecurity => EventSource::EndpointSecurity,
        ArchivedEventSource::Poll => EventSource::Poll,
        ArchivedEventSource::Reconcile => EventSource::Reconcile,
        ArchivedEventSource::Audit => EventSource::Audit,
    }
}

/// A nested part without strings of its own, owned (no allocation).
fn owned<T, A>(a: &A) -> Option<T>
where
    A: rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
{
    rkyv::deserialize::<T, rancor::Error>(a).ok()
}

struct Strs<'a>(&'a rkyv::vec::ArchivedVec<rkyv::string::ArchivedString>);

impl Serialize for Strs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| a.as_str()))
    }
}

struct Ids<'a>(&'a rkyv::vec::ArchivedVec<ArchivedEntityId>);

impl Serialize for Ids<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(id))
    }
}

struct ParentJson<'a>(&'a ArchivedParent);

impl Serialize for ParentJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(None)?;
        if let Some(e) = p.entity_id.as_ref() {
            m.serialize_entry("entity_id", &id(e))?;
        }
        m.serialize_entry("pid", &p.pid.to_native())?;
        if let Some(t) = p.start_time.as_ref() {
            m.serialize_entry("start_time", &format_rfc3339(t.to_native()))?;
        }
        if let Some(n) = p.name.as_ref() {
            m.serialize_entry("name", n.as_str())?;
        }
        if let Some(x) = p.exe.as_ref() {
            m.serialize_entry("exe", x.as_str())?;
        }
        if !p.argv.is_empty() {
            m.serialize_entry("argv", &Strs(&p.argv))?;
        }
        if p.unknown {
            m.serialize_entry("unknown", &true)?;
        }
        m.end()
    }
}

impl Serialize for Native<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("seq", &e.seq.to_native())?;
        if e.epoch.to_native() != 0 {
            m.serialize_entry("epoch", &e.epoch.to_native())?;
        }
        m.serialize_entry("collector_id", e.collector_id.as_str())?;
        m.serialize_entry("kind", e.kind.to_native().as_str())?;
        m.serialize_entry("source", source(&e.source).as_str())?;
        if let Some(x) = e.entity_id.as_ref() {
            m.serialize_entry("entity_id", &id(x))?;
        }
        if let Some(x) = e.exec_id.as_ref() {
            m.serialize_entry("exec_id", &id(x))?;
        }
        m.serialize_entry("timestamp", &format_rfc3339(e.timestamp.to_native()))?;
        m.serialize_entry("pid", &e.pid.to_native())?;
        for (key, v) in [
            ("ppid", &e.ppid),
            ("tid", &e.tid),
            ("uid", &e.uid),
            ("gid", &e.gid),
            ("euid", &e.euid),
            ("egid", &e.egid),
        ] {
            if let Some(v) = v.as_ref() {
                m.serialize_entry(key, &v.to_native())?;
            }
        }
        if let Some(c) = e.previous_creds.as_ref().and_then(owned::<Creds, _>) {
            m.serialize_entry("previous_creds", &c)?;
        }
        m.serialize_entry("name", e.name.as_str())?;
        if let Some(x) = e.exe.as_ref() {
            m.serialize_entry("exe", x.as_str())?;
        }
        if !e.argv.is_empty() {
            m.serialize_entry("argv", &Strs(&e.argv))?;
        }
        if e.argv_truncated {
            m.serialize_entry("argv_truncated", &true)?;
        }
        if let Some(x) = e.cwd.as_ref() {
            m.serialize_entry("cwd", x.as_str())?;
        }
        if let Some(t) = e.start_time.as_ref() {
            m.serialize_entry("start_time", &format_rfc3339(t.to_native()))?;
        }
        if let Some(c) = e.exit_code.as_ref() {
            m.serialize_entry("exit_code", &c.to_native())?;
        }
        for (key, v) in [
            ("cgroup", &e.cgroup),
            ("container_id", &e.container_id),
            ("container_runtime", &e.container_runtime),
            ("pod_uid", &e.pod_uid),
            ("sha256", &e.sha256),
        ] {
            if let Some(v) = v.as_ref() {
                m.serialize_entry(key, v.as_str())?;
            }
        }
        if e.sha256_pending {
            m.serialize_entry("sha256_pending", &true)?;
        }
        if let Some(p) = e.parent.as_ref() {
            m.serialize_entry("parent", &ParentJson(p))?;
        }
        if !e.ancestors.is_empty() {
            m.serialize_entry("ancestors", &Ids(&e.ancestors))?;
        }
        if let Some(session) = owned::<Session, _>(&e.session).filter(|s| !s.is_empty()) {
            m.serialize_entry("session", &session)?;
        }
        if let Some(platform) = owned::<Platform, _>(&e.platform).filter(|p| !p.is_empty()) {
            m.serialize_entry("platform", &platform)?;
        }
        m.end()
    }
}

#[cfg(test)]
#[path = "archived_tests.rs"]
mod tests;
