//! Paths that root writes to, binds or executes, resolved without trusting
//! anyone else's directories or symbolic links.
//!
//! The agent starts as root and takes paths from its configuration: the
//! broker socket, the jsonl sink, the collectors' binaries. If any directory
//! on such a path is writable by another user, that user can swap what lies
//! below it — a symlink to `/etc/ld.so.preload` where the sink appends, a
//! socket of their own, a binary root then runs. So every path is walked
//! from `/`, one component at a time, through directory descriptors:
//!
//! * each directory (and `/` itself) must be owned by root or by the user
//!   procmond runs as, and writable by neither group nor others — unless it
//!   is sticky (`/tmp`), where others cannot remove or rename what they do
//!   not own;
//! * a symbolic link on the way is followed only if it is owned by root or
//!   that user (it sits in a directory just checked, so nobody else could
//!   have placed it); what it points to is checked the same way;
//! * the last component is the caller's business: the jsonl sink refuses a
//!   link there outright (`open_append`), a binary may be a trusted link
//!   (`check_executable`).
//!
//! The user named by `run_as` is deliberately not trusted here: the agent
//! runs as that user after its privilege drop, and trusting it would let a
//! compromised agent turn its next start, or the launcher, into root.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Symbolic links followed on one path at most (Linux's own limit).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is writable by other users (owner uid {uid}, mode {mode:o}): another user could replace what lies below it"
    )]
    Writable { path: PathBuf, uid: u32, mode: u32 },
    #[error("{path} is owned by uid {uid}, not by root or uid {own} (procmond's user)")]
    Owner { path: PathBuf, uid: u32, own: u32 },
    #[error("{path} is a symbolic link: refusing to follow it")]
    Symlink { path: PathBuf },
    #[error("{path}: more than {MAX_LINKS} symbolic links")]
    Loop { path: PathBuf },
    #[error("{path} is not a {want}")]
    Kind { path: PathBuf, want: &'static str },
    #[error("{path} has {links} hard links: refusing to write to a file linked elsewhere")]
    Linked { path: PathBuf, links: u64 },
}

fn io(path: &Path, e: impl Into<std::io::Error>) -> PathError {
    PathError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Owned by root or procmond's own user (all a link needs: its mode means
/// nothing).
fn check_owner(path: &Path, st: &Stat) -> Result<(), PathError> {
    let own = own_uid();
    if st.st_uid != 0 && st.st_uid != own {
        return Err(PathError::Owner {
            path: path.to_path_buf(),
            uid: st.st_uid,
            own,
        });
    }
    Ok(())
}

/// `check_owner`, and for a directory writable by no one else unless
/// sticky; for a file, writable by no one else at all.
fn check_owner_and_mode(path: &Path, st: &Stat, sticky_ok: bool) -> Result<(), PathError> {
    check_owner(path, st)?;
    let mode = Mode::from_raw_mode(st.st_mode);
    let shared = mode.intersects(Mode::WGRP | Mode::WOTH);
    if shared && !(sticky_ok && mode.contains(Mode::SVTX)) {
        #[allow(clippy::useless_conversion)] // a u16 on some platforms
        let mode = u32::from(mode.bits());
        return Err(PathError::Writable {
            path: path.to_path_buf(),
            uid: st.st_uid,
            mode,
        });
    }
    Ok(())
}

/// The last component of a walked path, in a directory that passed.
#[derive(Debug)]
pub struct Leaf {
    pub dir: OwnedFd,
    /// The directory as resolved (trusted links followed), for messages.
    pub dir_path: PathBuf,
    pub name: OsString,
}

impl Leaf {
    /// The leaf's full path, for messages.
    pub fn path(&self) -> PathBuf {
        self.dir_path.join(&self.name)
    }

    /// `lstat` of the leaf; `None` when it does not exist.
    pub fn stat(&self) -> Result<Option<Stat>, PathError> {
        match rustix::fs::statat(&self.dir, self.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io(&self.path(), e)),
        }
    }
}

fn open_dir(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<OwnedFd, PathError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
        // Swapped for a link or a file since it was looked at.
        Errno::LOOP | Errno::NOTDIR => PathError::Kind {
            path: path.to_path_buf(),
            want: "directory",
        },
        e => io(path, e),
    })
}

/// Creates directory `name` with exactly `mode` (not narrowed by the umask).
fn make_dir(dir: &OwnedFd, name: &OsStr, path: &Path, mode: u32) -> Result<(), PathError> {
    let mode = Mode::from_raw_mode(mode as rustix::fs::RawMode);
    match rustix::fs::mkdirat(dir, name, mode) {
        Ok(()) => {
            let fd = open_dir(dir, name, path)?;
            rustix::fs::fchmod(&fd, mode).map_err(|e| io(path, e))
        }
        Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(io(path, e)),
    }
}

/// Walks `path` (absolute) to its last component, checking `/` and every
/// directory on the way and following only trusted links. `create`: make
/// missing directories with this mode. `follow_last`: a trusted link as the
/// last component is followed too (else it is returned as the leaf).
pub fn walk(path: &Path, create: Option<u32>, follow_last: bool) -> Result<Leaf, PathError> {
    if !path.is_absolute() {
        return Err(PathError::Kind {
            path: path.to_path_buf(),
            want: "absolute path",
        });
    }
    let root = Path::new("/");
    let open_root = || -> Result<(OwnedFd, PathBuf), PathError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(root, flags, Mode::empty()).map_err(|e| io(root, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io(root, e))?;
        check_owner_and_mode(root, &st, true)?;
        Ok((fd, root.to_path_buf()))
    };
    let mut stack = vec![open_root()?];
    let mut queue: VecDeque<OsString> = components(path);
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let last = queue.is_empty();
        let (dir, dir_path) = stack.last().ok_or_else(|| io(root, Errno::NOENT))?;
        let here = dir_path.join(&name);
        let mut st = rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW);
        if matches!(st, Err(Errno::NOENT))
            && !last
            && let Some(mode) = create
        {
            make_dir(dir, &name, &here, mode)?;
            st = rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW);
        }
        let st = match st {
            Ok(st) => Some(st),
            Err(Errno::NOENT) if last => None,
            Err(e) => return Err(io(&here, e)),
        };
        let is_link = st.is_some_and(|s| FileType::from_raw_mode(s.st_mode).is_symlink());
        if let Some(st) = st.filter(|_| is_link && (follow_last || !last)) {
            check_owner(&here, &st)?;
            links += 1;
            if links > MAX_LINKS {
                return Err(PathError::Loop { path: here });
            }
            let target = rustix::fs::readlinkat(dir, name.as_os_str(), Vec::new())
                .map_err(|e| io(&here, e))?;
            let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
            if target.is_absolute() {
                stack.truncate(1);
            }
            for part in components(&target).into_iter().rev() {
                queue.push_front(part);
            }
            continue;
        }
        if last {
            let (dir, dir_path) = stack.pop().ok_or_else(|| io(root, Errno::NOENT))?;
            return Ok(Leaf {
                dir,
                dir_path,
                name,
            });
        }
        let fd = open_dir(dir, &name, &here)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io(&here, e))?;
        check_owner_and_mode(&here, &st, true)?;
        stack.push((fd, here));
    }
    Err(PathError::Kind {
        path: path.to_path_buf(),
        want: "file path (it names a directory)",
    })
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Opens `path` to read and append (created 0600 if missing) with every
/// directory checked (missing ones made with `dir_mode`), never following a
/// link at `path` itself, and refusing anything but a regular file owned by
/// root or procmond's user with a single link. Nothing is chmod-ed.
pub fn open_append(path: &Path, dir_mode: u32) -> Result<File, PathError> {
    let leaf = walk(path, Some(dir_mode), false)?;
    let full = leaf.path();
    if let Some(st) = leaf.stat()? {
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind.is_symlink() {
            return Err(PathError::Symlink { path: full });
        }
        if !kind.is_file() {
            return Err(PathError::Kind {
                path: full,
                want: "regular file",
            });
        }
    }
    let flags = OFlags::RDWR
        | OFlags::APPEND
        | OFlags::CREATE
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NOCTTY;
    let fd = rustix::fs::openat(
        &leaf.dir,
        leaf.name.as_os_str(),
        flags,
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(|e| match e {
        Errno::LOOP => PathError::Symlink { path: full.clone() },
        e => io(&full, e),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io(&full, e))?;
    if !FileType::from_raw_mode(st.st_mode).is_file() {
        return Err(PathError::Kind {
            path: full,
            want: "regular file",
        });
    }
    check_owner(&full, &st)?;
    #[allow(clippy::useless_conversion)] // nlink's type differs per platform
    let links = u64::from(st.st_nlink);
    if links > 1 {
        return Err(PathError::Linked { path: full, links });
    }
    Ok(File::from(fd))
}

/// A binary root will run: every directory checked, trusted links followed,
/// and the file regular, owned by root or procmond's user, and writable by
/// neither group nor others.
pub fn check_executable(path: &Path) -> Result<(), PathError> {
    let leaf = walk(path, None, true)?;
    let full = leaf.path();
    let st = leaf.stat()?.ok_or_else(|| io(&full, Errno::NOENT))?;
    if !FileType::from_raw_mode(st.st_mode).is_file() {
        return Err(PathError::Kind {
            path: full,
            want: "regular file",
        });
    }
    check_owner_and_mode(&full, &st, false)
}

#[cfg(test)]
#[path = "safe_path_tests.rs"]
mod tests;
