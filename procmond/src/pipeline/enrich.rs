//! Enrichment: what the kernel record does not carry, read from procfs while
//! the process is (probably) still alive — the resolved executable when
//! execve got a relative path, the working directory, the cgroup and the
//! container it implies. Best effort: a process that is already gone keeps
//! what the kernel captured, and nothing is invented.

use crate::model::{EventKind, ProcessEvent};

#[derive(Debug, Clone)]
pub struct Enricher {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    enhanced: bool,
}

impl Enricher {
    pub fn new(enhanced_metadata: bool) -> Self {
        Self {
            enhanced: enhanced_metadata,
        }
    }

    pub fn enrich(&self, event: &mut ProcessEvent) {
        // A process that is gone has nothing left to read.
        if !matches!(event.kind, EventKind::Exit | EventKind::Stop) {
            #[cfg(target_os = "linux")]
            self.enrich_from_procfs(event);
        }
    }

    #[cfg(target_os = "linux")]
    fn enrich_from_procfs(&self, event: &mut ProcessEvent) {
        let dir = format!("/proc/{}", event.pid);
        let link = |name: &str| {
            std::fs::read_link(format!("{dir}/{name}"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        };
        if event.exe.is_none() && event.platform.exec_filename.is_some() {
            event.exe = link("exe");
        }
        if !self.enhanced {
            return;
        }
        if event.cwd.is_none() {
            event.cwd = link("cwd");
        }
        if event.cgroup.is_none()
            && let Ok(text) = std::fs::read_to_string(format!("{dir}/cgroup"))
            && let Some(path) = unified_cgroup(&text)
        {
            event.container_id = container_id(path).map(str::to_owned);
            event.cgroup = Some(path.to_owned());
        }
    }
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
