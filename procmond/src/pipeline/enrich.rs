//! Enrichment: what the kernel record does not carry. The probes capture
//! what they can at the event (pid, parent, credentials, start time, comm,
//! argv, the exec path, the cgroup id); what is left comes from procfs, but
//! never more than it must on the hot path:
//!
//! * the cgroup path is resolved once per cgroup id and cached (a fork storm
//!   runs in one cgroup: one read for all of it);
//! * `exe` is read (`/proc/PID/exe`) only when execve got a relative path;
//! * `cwd` comes from the probe (a walk of the dentries); procfs is read
//!   only when the probe could not walk it, on `exec`, with
//!   `enhanced_metadata`;
//! * `fork` events need nothing: the child is its parent's copy, and its
//!   exec (if any) carries the rest.
//!
//! Events without a kernel cgroup id (inventory, polling) read their cgroup
//! from procfs. Best effort: a process that is already gone keeps what the
//! kernel captured, and nothing is invented.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{EventKind, ProcessEvent};

/// Most cgroup ids remembered; the cache starts over when it is full.
#[cfg(target_os = "linux")]
const CGROUP_CACHE: usize = 4096;

/// A cgroup's path and the container id it implies.
type CgroupInfo = (Arc<str>, Option<Arc<str>>);

#[derive(Debug, Clone)]
pub struct Enricher {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    enhanced: bool,
    /// cgroup id → (path, container id); `None` for a cgroup that could not
    /// be resolved (its process was gone), retried after the next reset.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    cgroups: HashMap<u64, Option<CgroupInfo>>,
}

impl Enricher {
    pub fn new(enhanced_metadata: bool) -> Self {
        Self {
            enhanced: enhanced_metadata,
            cgroups: HashMap::new(),
        }
    }

    /// Takes a new `enhanced_metadata` setting, keeping the cache.
    pub fn set_enhanced(&mut self, enhanced: bool) {
        self.enhanced = enhanced;
    }

    pub fn enrich(&mut self, event: &mut ProcessEvent) {
        // A process that is gone has nothing left to read.
        if !matches!(event.kind, EventKind::Exit | EventKind::Stop) {
            #[cfg(target_os = "linux")]
            self.enrich_from_procfs(event);
        }
    }

    #[cfg(target_os = "linux")]
    fn enrich_from_procfs(&mut self, event: &mut ProcessEvent) {
        let link = |name: &str| {
            std::fs::read_link(format!("/proc/{}/{name}", event.pid))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        };
        if event.kind == EventKind::Exec
            && event.exe.is_none()
            && event.platform.exec_filename.is_some()
        {
            event.exe = link("exe");
        }
        if !self.enhanced {
            event.cwd = None; // the probe captures it; the setting decides
            return;
        }
        if event.kind == EventKind::Fork && event.platform.cgroup_id.is_none() {
            return;
        }
        if event.kind == EventKind::Exec && event.cwd.is_none() {
            event.cwd = link("cwd");
        }
        if event.cgroup.is_some() {
            return;
        }
        let resolved = match event.platform.cgroup_id {
            Some(id) => self.cgroup_by_id(id, event.pid),
            None => read_cgroup(event.pid),
        };
        if let Some((path, container)) = resolved {
            event.cgroup = Some(path.to_string());
            event.container_id = container.map(|c| c.to_string());
        }
    }

    /// The cgroup of kernel id `id`, read from `pid` the first time.
    #[cfg(target_os = "linux")]
    fn cgroup_by_id(&mut self, id: u64, pid: u32) -> Option<CgroupInfo> {
        if let Some(Some(hit)) = self.cgroups.get(&id) {
            return Some(hit.clone());
        }
        if self.cgroups.len() >= CGROUP_CACHE {
            self.cgroups.clear();
        }
        let found = read_cgroup(pid);
        // Only a live answer is cached: the process may have moved since
        // the event, but a cgroup's id never names another path.
        if found.is_some() {
            self.cgroups.insert(id, found.clone());
        }
        found
    }
}

/// `(cgroup path, container id)` of a live process, from procfs.
#[cfg(target_os = "linux")]
fn read_cgroup(pid: u32) -> Option<CgroupInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = unified_cgroup(&text)?;
    Some((Arc::from(path), container_id(path).map(Arc::from)))
}

/// The cgroup v2 path (`0::/path`) from `/proc/PID/cgroup`.
pub fn unified_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| !p.is_empty())
}

/// A container id (64 hex digits) in a cgroup path, as docker, containerd,
/// CRI-O and podman name their scopes.
pub fn container_id(cgroup: &str) -> Option<&str> {
    cgroup.rsplit('/').find_map(|segment| {
        let s = segment.strip_suffix(".scope").unwrap_or(segment);
        let s = s.rsplit(['-', ':']).next().unwrap_or(s);
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_container_ids() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            Some(id.as_str())
        );
        assert_eq!(
            container_id(&format!("/kubepods/besteffort/pod1/{id}")),
            Some(id.as_str())
        );
        assert_eq!(
            container_id(&format!("/k/cri-containerd-{id}.scope")),
            Some(id.as_str())
        );
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(unified_cgroup("0::/a/b\n"), Some("/a/b"));
        assert_eq!(unified_cgroup("1:name=systemd:/x\n"), None);
    }
}
