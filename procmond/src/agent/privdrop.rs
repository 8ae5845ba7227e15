//! Dropping the agent's privileges (docs/reference.md §6): supplementary groups first,
//! then the gid, then the uid — real, effective and saved alike — and a
//! check that the drop cannot be undone.
//!
//! nix's wrappers go through libc, whose set*id calls apply to every thread
//! of the process; a raw syscall would change only the calling thread.

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
    }
    Ok(Dropped {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
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

/// macOS has no setres*id: setuid as root sets real, effective and saved.
/// Supplementary groups are not reset there (docs/platforms.md).
#[cfg(target_vendor = "apple")]
fn set_ids(uid: Uid, gid: nix::unistd::Gid) -> Result<(), PrivDropError> {
    use nix::unistd::{getegid, geteuid, getgid, getuid, setgid, setuid};
    setgid(gid).map_err(step("setgid"))?;
    setuid(uid).map_err(step("setuid"))?;
    if !uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivDropError::Reversible(uid.as_raw()));
    }
    if [getuid(), geteuid()] != [uid; 2] || [getgid(), getegid()] != [gid; 2] {
        return Err(PrivDropError::Mismatch(format!(
            "uid {}/{} gid {}/{}",
            getuid(),
            geteuid(),
            getgid(),
            getegid()
        )));
    }
    Ok(())
}
