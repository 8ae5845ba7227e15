//! Container attribution: which container (and runtime, and Kubernetes pod)
//! a process runs in, read from its cgroup v2 path.
//!
//! Container runtimes name the cgroup they create for a container after it,
//! in a handful of layouts (systemd driver: `<runtime>-<id>.scope`; cgroupfs
//! driver: `/<runtime>/<id>` or `/kubepods/<qos>/pod<uid>/<id>`). Host
//! cgroups (`*.slice`, `*.service`, `session-*.scope`) have none. Pure and
//! cheap: the enricher runs it once per cgroup id and caches the answer.

/// The container a cgroup path belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The runtime's container id (64 hex digits).
    pub id: String,
    /// `docker`, `containerd`, `cri-o` or `podman`; `None` where the layout
    /// does not tell (Kubernetes with the cgroupfs driver).
    pub runtime: Option<&'static str>,
    /// The Kubernetes pod UID, when the path has a pod level.
    pub pod_uid: Option<String>,
}

/// systemd-driver scope prefixes, and the runtime each names.
const SCOPE_PREFIXES: [(&str, &str); 4] = [
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// cgroupfs-driver parent directories, and the runtime each names.
const PARENT_DIRS: [(&str, &str); 3] = [
    ("docker", "docker"),
    ("libpod_parent", "podman"),
    ("machine.slice", "podman"),
];

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container `cgroup` (a v2 path such as `/system.slice/docker-<id>.scope`)
/// belongs to, if any.
pub fn attribute(cgroup: &str) -> Option<Container> {
    let segments: Vec<&str> = cgroup.split('/').filter(|s| !s.is_empty()).collect();
    // The innermost container-named segment: a process in a nested cgroup
    // (`…/docker-<id>.scope/init`) still belongs to that container.
    let (at, id, runtime) = segments.iter().enumerate().rev().find_map(|(i, seg)| {
        let name = seg.strip_suffix(".scope").unwrap_or(seg);
        // conmon, the monitor beside a CRI-O or podman container, is not it.
        if name.starts_with("crio-conmon-") || name.starts_with("libpod-conmon-") {
            return None;
        }
        for (prefix, runtime) in SCOPE_PREFIXES {
            if let Some(id) = name.strip_prefix(prefix)
                && is_container_id(id)
            {
                return Some((i, id, Some(runtime)));
            }
        }
        if is_container_id(name) {
            let parent = i.checked_sub(1).and_then(|p| segments.get(p)).copied();
            let runtime = PARENT_DIRS
                .iter()
                .find(|(dir, _)| Some(*dir) == parent)
                .map(|(_, r)| *r);
            return Some((i, name, runtime));
        }
        None
    })?;
    let pod_uid = segments[..at].iter().rev().find_map(|seg| pod_uid(seg));
    Some(Container {
        id: id.to_ascii_lowercase(),
        runtime,
        pod_uid,
    })
}

/// The pod UID in a Kubernetes pod cgroup: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid with _ for ->.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let at = name.rfind("pod")?;
    if at > 0 && !name[..at].ends_with('-') {
        return None;
    }
    let uid = name[at + 3..].replace('_', "-");
    let shape_ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    shape_ok.then(|| uid.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    fn seen(path: &str) -> Option<(String, Option<&'static str>, Option<String>)> {
        attribute(path).map(|c| (c.id, c.runtime, c.pod_uid))
    }

    #[test]
    fn every_common_layout_names_its_container_and_runtime() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), Some("docker")),
            (format!("/docker/{ID}"), Some("docker")),
            (
                format!("/system.slice/cri-containerd-{ID}.scope"),
                Some("containerd"),
            ),
            (format!("/machine.slice/libpod-{ID}.scope"), Some("podman")),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Some("podman"),
            ),
            (format!("/libpod_parent/{ID}"), Some("podman")),
            (format!("/system.slice/crio-{ID}.scope"), Some("cri-o")),
        ];
        for (path, runtime) in cases {
            assert_eq!(seen(&path), Some((ID.to_string(), runtime, None)), "{path}");
        }
    }

    #[test]
    fn kubernetes_pods_give_their_uid() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(
            seen(&systemd),
            Some((ID.to_string(), Some("containerd"), Some(UID.to_string())))
        );
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(
            seen(&cgroupfs),
            Some((ID.to_string(), None, Some(UID.to_string())))
        );
        let crio = format!(
            "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(
            seen(&crio),
            Some((ID.to_string(), Some("cri-o"), Some(UID.to_string())))
        );
    }

    #[test]
    fn host_cgroups_and_lookalikes_have_none() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/sshd.service",
            "/init.scope",
            "/system.slice/docker-short.scope",
            "/system.slice/docker.service",
            "/kubepods.slice/kubepods-burstable.slice",
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            &format!("/system.slice/docker-{}.scope", &ID[..63]),
            &format!("/system.slice/docker-{ID}x.scope"),
        ] {
            assert_eq!(seen(path), None, "{path}");
        }
        assert_eq!(pod_uid("notapod1234"), None);
        assert_eq!(pod_uid(&format!("xpod{UID}")), None);
    }
}
