//! Linux's part of enrichment (`pipeline::enrich`): what procfs and the
//! cgroup v2 tree still know of a process after its kernel record.
//!
//! * the cgroup path is resolved once per cgroup id and cached (a fork storm
//!   runs in one cgroup: one read for all of it). It is read from
//!   `/proc/PID/cgroup` while the process lives, else found by walking the
//!   cgroup v2 tree (a cgroup's id is its directory's inode number), at most
//!   once a second, so a short-lived process in a new cgroup is attributed
//!   too;
//! * `exe` is read (`/proc/PID/exe`) only when execve got a relative path,
//!   and kept only if that file is the one the probe saw the exec run (same
//!   device and inode);
//! * `cwd` is read only when the probe could not walk it, on `exec`, with
//!   `enhanced_metadata`.

use std::collections::HashMap;
use std::sync::Arc;

use super::container::{self, Container};
use crate::model::{EventKind, ProcessEvent};

/// Most cgroup ids remembered; the cache starts over when it is full.
const CGROUP_CACHE: usize = 4096;
/// Most cgroup directories one walk of the cgroup v2 tree visits.
const WALK_MAX_DIRS: usize = 65_536;
/// The least time between two walks.
const WALK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A cgroup's path and the container it implies.
type CgroupInfo = (Arc<str>, Option<Arc<Container>>);

/// procfs and cgroup lookups, with their caches.
#[derive(Debug, Clone, Default)]
pub struct NativeEnricher {
    /// cgroup id → (path, container id); `None` for a cgroup that could not
    /// be resolved (its process was gone), retried after the next reset.
    cgroups: HashMap<u64, Option<CgroupInfo>>,
    /// The cgroup v2 mount (found once) and when its tree was last walked.
    walk: (
        Option<Option<std::path::PathBuf>>,
        Option<std::time::Instant>,
    ),
}

impl NativeEnricher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills what procfs still knows of a live process (`enhanced`: the
    /// operator's `enhanced_metadata`).
    pub fn enrich(&mut self, event: &mut ProcessEvent, enhanced: bool) {
        let link = |name: &str| {
            std::fs::read_link(format!("/proc/{}/{name}", event.pid))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        };
        if event.kind == EventKind::Exec
            && event.exe.is_none()
            && event.platform.exec_filename.is_some()
        {
            event.exe = link("exe").filter(|_| runs_probed_file(event));
        }
        if !enhanced {
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
            if let Some(c) = container {
                event.container_id = Some(c.id.clone());
                event.container_runtime = c.runtime.map(str::to_string);
                event.pod_uid.clone_from(&c.pod_uid);
            }
        }
    }

    /// The cgroup of kernel id `id`, read from `pid` the first time.
    fn cgroup_by_id(&mut self, id: u64, pid: u32) -> Option<CgroupInfo> {
        if let Some(Some(hit)) = self.cgroups.get(&id) {
            return Some(hit.clone());
        }
        if self.cgroups.len() >= CGROUP_CACHE {
            self.cgroups.clear();
        }
        let found = read_cgroup(pid).or_else(|| self.walk_for(id));
        // Only a found answer is cached: a cgroup's id never names another
        // path (the process may have moved since the event: best effort).
        if found.is_some() {
            self.cgroups.insert(id, found.clone());
        }
        found
    }

    /// Walks the cgroup v2 tree (at most once per `WALK_EVERY`), caching
    /// every directory by its inode number, which is its cgroup id.
    fn walk_for(&mut self, id: u64) -> Option<CgroupInfo> {
        let now = std::time::Instant::now();
        if self
            .walk
            .1
            .is_some_and(|t| now.duration_since(t) < WALK_EVERY)
        {
            return None;
        }
        self.walk.1 = Some(now);
        let mount = self.walk.0.get_or_insert_with(cgroup2_mount).clone()?;
        let mut found = None;
        // The root cgroup too (its id is the mount's inode): without it, a
        // storm of short-lived processes in `/` would walk again every second.
        if let Ok(meta) = std::fs::metadata(&mount) {
            let ino = std::os::unix::fs::MetadataExt::ino(&meta);
            let root: CgroupInfo = (Arc::from("/"), None);
            if ino == id {
                found = Some(root.clone());
            }
            self.cgroups.entry(ino).or_insert(Some(root));
        }
        let mut stack = vec![mount.clone()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                seen += 1;
                if seen > WALK_MAX_DIRS {
                    return found;
                }
                let path = entry.path();
                let ino = std::os::unix::fs::DirEntryExt::ino(&entry);
                let rel = path.strip_prefix(&mount).ok()?;
                let cgroup = format!("/{}", rel.display());
                let info: CgroupInfo = (
                    Arc::from(cgroup.as_str()),
                    container::attribute(&cgroup).map(Arc::new),
                );
                if ino == id {
                    found = Some(info.clone());
                }
                if self.cgroups.len() < CGROUP_CACHE {
                    self.cgroups.entry(ino).or_insert(Some(info));
                }
                stack.push(path);
            }
        }
        found
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts), from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))
            .flatten()
    })
}

/// `(cgroup path, container id)` of a live process, from procfs.
fn read_cgroup(pid: u32) -> Option<CgroupInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = unified_cgroup(&text)?;
    Some((Arc::from(path), container::attribute(path).map(Arc::new)))
}

/// The cgroup v2 path (`0::/path`) from `/proc/PID/cgroup`.
pub fn unified_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| !p.is_empty())
}

/// Whether `/proc/PID/exe` is still the file the probe saw the exec run
/// (no probe identity: nothing to compare, so yes).
fn runs_probed_file(event: &ProcessEvent) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = event.platform.exe_dev.zip(event.platform.exe_inode) else {
        return true;
    };
    std::fs::metadata(format!("/proc/{}/exe", event.pid))
        .is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::enrich::Enricher;

    #[test]
    fn finds_the_unified_cgroup() {
        assert_eq!(unified_cgroup("0::/a/b\n"), Some("/a/b"));
        assert_eq!(unified_cgroup("1:name=systemd:/x\n0::/y\n"), Some("/y"));
        assert_eq!(unified_cgroup("1:name=systemd:/x\n"), None);
        assert_eq!(unified_cgroup("0::\n"), None);
    }

    #[test]
    fn a_relative_exec_gets_exe_only_if_it_still_runs_the_probed_file() {
        use crate::model::EventSource;
        use std::os::unix::fs::MetadataExt;
        // This test's own process stands for the exec'd one: its
        // /proc/PID/exe is the test binary.
        let me = std::fs::metadata("/proc/self/exe").expect("own exe");
        let other = std::fs::metadata("/bin/sh").expect("/bin/sh");
        let exec = |(dev, ino): (u64, u64)| {
            let mut e =
                ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, std::process::id());
            e.platform.exec_filename = Some("./relative".into());
            e.platform.exe_dev = Some(dev);
            e.platform.exe_inode = Some(ino);
            Enricher::new(false).enrich(&mut e);
            e.exe
        };
        let own = std::fs::read_link("/proc/self/exe").expect("link");
        assert_eq!(
            exec((me.dev(), me.ino())),
            Some(own.to_string_lossy().into_owned())
        );
        assert_eq!(
            exec((other.dev(), other.ino())),
            None,
            "it exec'd again: unknown, not the next image"
        );
    }

    /// A process that has already exited: its pid names nothing in /proc.
    fn gone_pid() -> u32 {
        let mut child = std::process::Command::new("/bin/true")
            .spawn()
            .expect("spawn /bin/true");
        let pid = child.id();
        child.wait().expect("reap");
        pid
    }

    #[test]
    fn with_enhanced_metadata_an_exec_gets_cwd_and_cgroup_from_procfs() {
        use crate::model::EventSource;
        let me = std::process::id();
        let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
        let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, me);
        Enricher::new(true).enrich(&mut e);
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(e.cwd.as_deref(), Some(cwd.to_string_lossy().as_ref()));
        assert_eq!(e.cgroup.as_deref(), unified_cgroup(&own_cgroup));

        let mut plain = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, me);
        plain.cwd = Some("/from/the/probe".into());
        Enricher::new(false).enrich(&mut plain);
        assert_eq!(plain.cwd, None, "enhanced_metadata off: no cwd at all");
        assert_eq!(plain.cgroup, None, "enhanced_metadata off: procfs not read");

        let mut exit = ProcessEvent::new(EventKind::Exit, EventSource::Ebpf, 1, me);
        Enricher::new(true).enrich(&mut exit);
        assert_eq!(
            (exit.cwd, exit.cgroup),
            (None, None),
            "an exit is not enriched"
        );
    }

    #[test]
    fn the_cgroup_of_a_gone_process_is_found_by_its_id_and_cached() {
        use crate::model::EventSource;
        use std::os::unix::fs::MetadataExt;
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 hierarchy mounted on this host");
            return;
        };
        let root_id = std::fs::metadata(&mount).expect("cgroup2 mount").ino();
        let mut enricher = NativeEnricher::new();
        let exec_in = |enricher: &mut NativeEnricher, id: u64| {
            let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, gone_pid());
            e.platform.cgroup_id = Some(id);
            enricher.enrich(&mut e, true);
            e.cgroup
        };
        assert_eq!(
            exec_in(&mut enricher, root_id).as_deref(),
            Some("/"),
            "found by walking"
        );
        assert!(enricher.cgroups.contains_key(&root_id));
        // Walks are at most one a second, so this answer is the cache's.
        assert_eq!(
            exec_in(&mut enricher, root_id).as_deref(),
            Some("/"),
            "from the cache"
        );
        assert_eq!(
            exec_in(&mut enricher, u64::MAX),
            None,
            "an unknown id is not invented"
        );
    }
}
