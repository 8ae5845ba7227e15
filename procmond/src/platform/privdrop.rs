//! Dropping the agent's privileges (docs/reference.md §6): supplementary groups first,
//! then the gid, then the uid — real, effective and saved alike — and a
//! check that the drop cannot be undone.
//!
//! nix's wrappers go through libc, whose set*id calls apply to every thread
//! of the process; a raw syscall would change only the calling thread. The
//! capability bounding set and no_new_privs, though, are per thread, and
//! only new threads inherit them: so the drop ends by checking every thread
//! of the process (`/proc/self/task`), waiting briefly for idle runtime
//! threads created before the drop to exit, and refuses to go on while any
//! thread still has a bounding set, lacks no_new_privs or kept an id.

use nix::unistd::{Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum PrivDropError {
    #[error("run_as: no user named {0:?}")]
    NoSuchUser(String),
    #[error("run_as: looking up {user:?}: {source}")]
    Lookup {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("run_as: {step} failed: {source}")]
    Step {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("run_as: privileges could be regained after dropping to uid {0}: refusing to continue")]
    Reversible(u32),
    #[error("run_as: after the drop the ids are {0}")]
    Mismatch(String),
    #[error("run_as: clearing the capability bounding set or setting no_new_privs failed: {0}")]
    Caps(String),
    #[error("run_as: thread {tid} still has {what} after the drop")]
    Thread { tid: String, what: String },
}

/// What the process runs as after the drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub uid: u32,
    pub gid: u32,
}

/// Drops to `user` for good.
pub fn drop_to(user: &str) -> Result<Dropped, PrivDropError> {
    let entry = User::from_name(user)
        .map_err(|source| PrivDropError::Lookup {
            user: user.to_string(),
            source,
        })?
        .ok_or_else(|| PrivDropError::NoSuchUser(user.to_string()))?;
    let (uid, gid) = (entry.uid, entry.gid);
    #[cfg(target_os = "linux")]
    if !uid.is_root() {
        // No capability can come back through an exec or a setuid binary:
        // the bounding set is emptied while still root (CAP_SETPCAP)...
        caps::clear(None, caps::CapSet::Bounding)
            .map_err(|e| PrivDropError::Caps(e.to_string()))?;
    }
    set_ids(uid, gid)?;
    #[cfg(target_os = "linux")]
    if !uid.is_root() {
        // ...and no_new_privs makes setuid/file capabilities inert for good.
        rustix::thread::set_no_new_privs(true).map_err(|e| PrivDropError::Caps(e.to_string()))?;
        every_thread_dropped(uid.as_raw(), std::time::Duration::from_secs(3))?;
    }
    Ok(Dropped {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}

/// Waits up to `patience` until every thread of this process has the
/// dropped uid, no_new_privs and an empty bounding set.
#[cfg(target_os = "linux")]
fn every_thread_dropped(uid: u32, patience: std::time::Duration) -> Result<(), PrivDropError> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match undropped_thread(uid) {
            None => return Ok(()),
            Some((tid, what)) if std::time::Instant::now() >= deadline => {
                return Err(PrivDropError::Thread { tid, what });
            }
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// The first thread (and what it kept) that is not dropped to `uid`.
#[cfg(target_os = "linux")]
fn undropped_thread(uid: u32) -> Option<(String, String)> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        // A thread that exits meanwhile has nothing left to keep.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        if let Some(what) = kept(&status, uid) {
            return Some((tid, what));
        }
    }
    None
}

/// What a `/proc/…/status` shows kept after a drop to `uid`, if anything.
#[cfg(any(target_os = "linux", test))]
fn kept(status: &str, uid: u32) -> Option<String> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("?")
            .to_string()
    };
    let uids = field("Uid:");
    if uids.split_whitespace().any(|u| u != uid.to_string()) {
        return Some(format!("uids {uids}"));
    }
    if field("NoNewPrivs:") != "1" {
        return Some("no no_new_privs".into());
    }
    let bounding = field("CapBnd:");
    if !bounding.trim_start_matches('0').is_empty() {
        return Some(format!("capability bounding set {bounding}"));
    }
    None
}

fn step(step: &'static str) -> impl Fn(nix::Error) -> PrivDropError {
    move |source| PrivDropError::Step { step, source }
}

#[cfg(not(target_vendor = "apple"))]
fn set_ids(uid: Uid, gid: nix::unistd::Gid) -> Result<(), PrivDropError> {
    use nix::unistd::{getresgid, getresuid, setgroups, setresgid, setresuid};
    setgroups(&[gid]).map_err(step("setgroups"))?;
    setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    if !uid.is_root() && setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err(PrivDropError::Reversible(uid.as_raw()));
    }
    let u = getresuid().map_err(step("getresuid"))?;
    let g = getresgid().map_err(step("getresgid"))?;
    if [u.real, u.effective, u.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err(PrivDropError::Mismatch(format!(
            "uid {}/{}/{} gid {}/{}/{}",
            u.real, u.effective, u.saved, g.real, g.effective, g.saved
        )));
    }
    Ok(())
}

/// macOS has no setres*id: as root, setgid and setuid set the real,
/// effective and saved ids alike. Supplementary groups are reset first with
/// setgroups(2) (`apple_groups`); on XNU that also opts the process out of
/// opendirectoryd's dynamic group resolution, so the list stays `[gid]`.
/// There is no getter for saved ids: they are checked by trying to regain
/// 0, which setuid/setegid allow only while 0 is a real or saved id.
#[cfg(target_vendor = "apple")]
fn set_ids(uid: Uid, gid: nix::unistd::Gid) -> Result<(), PrivDropError> {
    use nix::unistd::{Gid, getegid, geteuid, getgid, getuid, setegid, setgid, setuid};
    apple_groups::set_only(gid).map_err(step("setgroups"))?;
    setgid(gid).map_err(step("setgid"))?;
    setuid(uid).map_err(step("setuid"))?;
    if !uid.is_root() {
        let regained_uid = setuid(Uid::from_raw(0)).is_ok();
        let regained_gid = gid.as_raw() != 0 && setegid(Gid::from_raw(0)).is_ok();
        if regained_uid || regained_gid {
            return Err(PrivDropError::Reversible(uid.as_raw()));
        }
    }
    let groups = rustix::process::getgroups().map_err(|e| PrivDropError::Step {
        step: "getgroups",
        source: nix::Error::from_raw(e.raw_os_error()),
    })?;
    let extra: Vec<u32> = groups
        .iter()
        .map(|g| g.as_raw())
        .filter(|g| *g != gid.as_raw())
        .collect();
    if [getuid(), geteuid()] != [uid; 2] || [getgid(), getegid()] != [gid; 2] || !extra.is_empty() {
        return Err(PrivDropError::Mismatch(format!(
            "uid {}/{} gid {}/{} supplementary groups besides {gid}: {extra:?}",
            getuid(),
            geteuid(),
            getgid(),
            getegid()
        )));
    }
    Ok(())
}

/// setgroups(2), which neither nix nor rustix offers on Apple targets: the
/// one libc call of the macOS privilege drop.
#[cfg(target_vendor = "apple")]
#[allow(unsafe_code)]
mod apple_groups {
    /// Makes `[gid]` the whole supplementary group list.
    pub(super) fn set_only(gid: nix::unistd::Gid) -> nix::Result<()> {
        let groups: [libc::gid_t; 1] = [gid.as_raw()];
        // SAFETY: `groups` is an initialized array of exactly one gid_t that
        // outlives the call; setgroups reads `ngroups` (1) entries from it,
        // keeps no pointer to it, and writes no memory of this process.
        let rc = unsafe { libc::setgroups(1, groups.as_ptr()) };
        nix::errno::Errno::result(rc).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::kept;

    #[test]
    fn a_thread_that_kept_anything_is_named() {
        let dropped =
            "Uid:\t65534\t65534\t65534\t65534\nNoNewPrivs:\t1\nCapBnd:\t0000000000000000\n";
        assert_eq!(kept(dropped, 65534), None);
        let root = dropped.replace(
            "Uid:\t65534\t65534\t65534\t65534",
            "Uid:\t65534\t65534\t0\t65534",
        );
        assert!(kept(&root, 65534).is_some_and(|w| w.contains("uids")));
        let nnp = dropped.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0");
        assert_eq!(kept(&nnp, 65534).as_deref(), Some("no no_new_privs"));
        let bnd = dropped.replace("0000000000000000", "000001ffffffffff");
        assert!(kept(&bnd, 65534).is_some_and(|w| w.contains("bounding")));
        assert!(
            kept("", 65534).is_some(),
            "an unreadable status is not a drop"
        );
    }
}
