//! End-to-end enrichment on the real kernel: container attribution from
//! real cgroups, and executable hashes of real files (`procmond watch`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use common::{Watch, argv_contains, ebpf_unavailable, entity_id, is_root, marker, run_shell};

/// The cgroup v2 mount, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// A cgroup directory tree, removed (innermost first) on drop.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn hex64(seed: &str) -> String {
    let mut out = String::new();
    let mut x: u64 = seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    while out.len() < 64 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        out.push_str(&format!("{:016x}", x));
    }
    out.truncate(64);
    out
}

/// The exec of `/bin/true <needle>` (not the shell that started it).
fn exec_with<'a>(events: &'a [Value], needle: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["kind"] == "exec" && e["argv"][0] == "/bin/true" && argv_contains(e, needle))
}

#[test]
fn containers_are_attributed_from_real_cgroups_and_host_processes_have_none() {
    if !is_root() || ebpf_unavailable().is_some() {
        eprintln!("skipped: needs root and the kernel source");
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        eprintln!("skipped: no cgroup v2 hierarchy");
        return;
    };
    let m = marker("ctr");
    let id = hex64(&m);
    let uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    let slice = mount.join(format!("{m}.slice"));
    let docker = slice.join(format!("docker-{id}.scope"));
    let pod = slice.join(format!(
        "kubepods-burstable-pod{}.slice",
        uid.replace('-', "_")
    ));
    let k8s_id = hex64(&format!("{m}-k8s"));
    let k8s = pod.join(format!("cri-containerd-{k8s_id}.scope"));
    let _cleanup = Cgroups(vec![
        slice.clone(),
        docker.clone(),
        pod.clone(),
        k8s.clone(),
    ]);
    for dir in [&slice, &docker, &pod, &k8s] {
        if std::fs::create_dir(dir).is_err() {
            eprintln!("skipped: cannot create cgroups under {}", mount.display());
            return;
        }
    }
    let watch = Watch::start(&["--source", "ebpf", "--format", "json"]);
    // Each process moves itself into its cgroup, then execs a marker that
    // exits at once: attribution must not depend on it still being alive.
    let inside = |dir: &Path, tag: &str| {
        run_shell(&format!(
            "echo $$ > {}/cgroup.procs && exec /bin/true {m}-{tag}",
            dir.display()
        ));
    };
    inside(&docker, "docker");
    inside(&k8s, "k8s");
    run_shell(&format!("/bin/true {m}-host"));
    for tag in ["docker", "k8s", "host"] {
        let needle = format!("/bin/true\",\"{m}-{tag}");
        watch.wait_for_stdout(&needle, Duration::from_secs(20), |line| {
            line.contains(&needle)
        });
    }
    let out = watch.stop();
    let docker_exec = exec_with(&out.events, &format!("{m}-docker")).expect("docker exec");
    assert_eq!(docker_exec["container_id"], id.as_str(), "{docker_exec}");
    assert_eq!(docker_exec["container_runtime"], "docker", "{docker_exec}");
    assert!(docker_exec.get("pod_uid").is_none(), "{docker_exec}");
    let k8s_exec = exec_with(&out.events, &format!("{m}-k8s")).expect("k8s exec");
    assert_eq!(k8s_exec["container_id"], k8s_id.as_str(), "{k8s_exec}");
    assert_eq!(k8s_exec["container_runtime"], "containerd", "{k8s_exec}");
    assert_eq!(k8s_exec["pod_uid"], uid, "{k8s_exec}");
    let host = exec_with(&out.events, &format!("{m}-host")).expect("host exec");
    assert!(
        host.get("container_id").is_none() && host.get("container_runtime").is_none(),
        "{host}"
    );
}

/// The sha256 reported for the exec of `bin` whose argv holds `needle`:
/// inline, or in the `modify` of the same (pid, start_time). That pair, not
/// the entity_id, is the hasher's documented key (`sha256_pending`): its
/// `modify` carries no entity_id (`pipeline::hash::pending_template`); one
/// that does must carry the exec's.
fn hash_in(stdout: &str, bin: &str, needle: &str) -> Option<String> {
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let exec = events
        .iter()
        .find(|e| e["kind"] == "exec" && e["argv"][0] == bin && argv_contains(e, needle))?;
    if let Some(h) = exec["sha256"].as_str() {
        return Some(h.to_string());
    }
    assert_eq!(exec["sha256_pending"], true, "{exec}");
    let id = entity_id(exec);
    let modify = events.iter().find(|e| {
        e["kind"] == "modify" && e["pid"] == exec["pid"] && e["start_time"] == exec["start_time"]
    })?;
    assert!(
        modify["entity_id"].is_null() || modify["entity_id"] == id,
        "the hash's modify names another process than its exec:\n{exec}\n{modify}"
    );
    modify["sha256"].as_str().map(str::to_string)
}

#[test]
fn exec_events_carry_the_sha256_of_the_file_run_and_see_it_change() {
    if !is_root() || ebpf_unavailable().is_some() {
        eprintln!("skipped: needs root and the kernel source");
        return;
    }
    let m = marker("hash");
    let dir = std::env::temp_dir().join(&m);
    std::fs::create_dir_all(&dir).expect("dir");
    let bin = dir.join("tool");
    std::fs::copy("/bin/true", &bin).expect("copy /bin/true");
    let config = dir.join("procmond.yaml");
    std::fs::write(&config, "compute_hashes: true\n").expect("config");
    let sha256sum = |p: &Path| -> String {
        let out = std::process::Command::new("sha256sum")
            .arg(p)
            .output()
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let watch = Watch::start(&[
        "--source",
        "ebpf",
        "--format",
        "json",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    let first = sha256sum(&bin);
    run_shell(&format!("{} {m}-a", bin.display()));
    // Other processes on the host may run /bin/true too: wait for the hash
    // of this exec (by its pid and start time), before the file changes.
    let bin_path = bin.display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while hash_in(&watch.stdout_now(), &bin_path, &format!("{m}-a")).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no hash for the first exec"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Rewritten in place (same inode, new content): the next exec reports
    // the new hash.
    let mut bytes = std::fs::read(&bin).expect("read");
    bytes.extend_from_slice(b"procmond-test-trailer");
    std::fs::write(&bin, &bytes).expect("rewrite in place");
    let second = sha256sum(&bin);
    assert_ne!(first, second);
    run_shell(&format!("{} {m}-b", bin.display()));
    run_shell(&format!("{} {m}-c", bin.display()));
    // Both later execs carry it, inline or in their `modify`: b's hash
    // is computed first (a cache miss), so c may find it cached before b's
    // `modify` is out.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for tag in ["b", "c"] {
        while hash_in(&watch.stdout_now(), &bin_path, &format!("{m}-{tag}")).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "no hash for exec {tag}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let out = watch.stop();
    let _ = std::fs::remove_dir_all(&dir);
    // Each exec has its hash: inline from the cache, or pending and then in
    // a `modify` event for the same (pid, start_time).
    let stdout = out.stdout.clone();
    let hash_of = |tag: &str| hash_in(&stdout, &bin_path, &format!("{m}-{tag}"));
    assert_eq!(hash_of("a").as_deref(), Some(first.as_str()));
    assert_eq!(hash_of("b").as_deref(), Some(second.as_str()));
    assert_eq!(hash_of("c").as_deref(), Some(second.as_str()));
    let stats = out.stats();
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
    assert!(n("hashes_computed") >= 2, "{stats}");
    assert!(
        n("hash_cache_hits") + n("hash_cache_misses") >= 3,
        "{stats}"
    );
}
