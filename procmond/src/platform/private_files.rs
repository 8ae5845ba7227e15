//! Files and directories only this account may read, never reached
//! through a link: the WAL's directory and its marks file, the jsonl sink's
//! file. The collector and the agent run privileged, so a planted symbolic
//! link must never make them create, chmod or write somewhere else.
//!
//! Unix: a directory is checked, created with `mkdir`, opened with
//! `O_NOFOLLOW | O_DIRECTORY` and chmodded 0700 through that descriptor; it
//! must belong to this uid, and its parent must not let another user swap it
//! out (writable by others without the sticky bit, or owned by someone else
//! than root or this uid). Files are 0600, opened with `O_NOFOLLOW`.
//! Windows: a private ACL (SYSTEM, Administrators, this account) that files
//! inherit; files are opened as the reparse point itself
//! (`FILE_FLAG_OPEN_REPARSE_POINT`) and a link is refused.

use std::fs::File;
#[cfg(unix)]
use std::os::unix::fs::{FileExt, OpenOptionsExt};
#[cfg(windows)]
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Why a private file or directory could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    #[error("{path} refused: {reason}")]
    Refused { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[cfg(unix)]
    #[error(transparent)]
    Path(#[from] crate::safe_path::PathError),
}

pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> PrivateError + '_ {
    move |source| PrivateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates (or checks) `dir` as a private directory; refusals name it as
/// `what` (the config key, e.g. `wal_dir`).
pub fn prepare_dir(dir: &Path, what: &str) -> Result<(), PrivateError> {
    #[cfg(unix)]
    unix::prepare(dir, what)?;
    #[cfg(not(unix))]
    let _ = what;
    #[cfg(windows)]
    {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        crate::sys::windows::make_private(dir).map_err(io_error(dir))?;
    }
    #[cfg(not(any(unix, windows)))]
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    Ok(())
}

/// Makes what another library created in `dir` private: files 0600,
/// directories 0700 (they are made with the umask); a link inside is left
/// alone, never followed. Windows: the directory's ACL is inherited.
pub fn restrict_tree(dir: &Path) -> Result<(), PrivateError> {
    #[cfg(unix)]
    unix::restrict_files(dir)?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Opens `path` for reading and writing, created private, never through a link.
pub fn open_rw(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    options.mode(0o600).custom_flags(nix::libc::O_NOFOLLOW);
    // FILE_FLAG_OPEN_REPARSE_POINT: never follow a link (the file inherits
    // its directory's private ACL).
    #[cfg(windows)]
    options.custom_flags(0x0020_0000);
    options.open(path)
}

/// Reads at `offset` without moving a cursor; 0 at the end.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    #[cfg(unix)]
    return file.read_at(buf, offset);
    #[cfg(windows)]
    return file.seek_read(buf, offset);
}

/// Writes all of `bytes` at `offset` without moving a cursor.
pub fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    return file.write_all_at(bytes, offset);
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < bytes.len() {
            match file.seek_write(&bytes[done..], offset + done as u64)? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => done += n,
            }
        }
        Ok(())
    }
}

/// Opens `path` to append, creating it private and the directories on the
/// way (0750 on Unix; on Windows the private ACL on those procmond made,
/// while one that existed keeps its own, as it may be shared). No link is
/// followed at any step.
pub fn open_append(path: &Path) -> Result<File, PrivateError> {
    #[cfg(unix)]
    return Ok(crate::safe_path::open_append(path, 0o750)?);
    #[cfg(windows)]
    return open_append_windows(path).map_err(io_error(path));
}

#[cfg(windows)]
fn open_append_windows(path: &Path) -> std::io::Result<File> {
    use windows_sys::Win32::Storage::FileSystem::FILE_FLAG_OPEN_REPARSE_POINT;
    if let Some(parent) = path.parent() {
        let created = !parent.exists();
        std::fs::create_dir_all(parent)?;
        if created {
            crate::sys::windows::make_private(parent)?;
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)?;
    if file.metadata()?.file_type().is_symlink() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symbolic link or junction: refusing to follow it",
                path.display()
            ),
        ));
    }
    crate::sys::windows::make_private(path)?;
    Ok(file)
}

#[cfg(unix)]
mod unix {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;

    use super::{PrivateError, io_error as dir_error};

    fn refused(path: &Path, reason: String) -> PrivateError {
        PrivateError::Refused {
            path: path.display().to_string(),
            reason,
        }
    }

    pub fn prepare(dir: &Path, what: &str) -> Result<(), PrivateError> {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(dir_error(parent))?;
        check_parent(parent, what)?;
        let link = || {
            refused(
                dir,
                format!("is a symbolic link; {what} must be a real directory"),
            )
        };
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => return Err(link()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(dir_error(dir)(e)),
            },
            Err(e) => return Err(dir_error(dir)(e)),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(dir, flags, Mode::empty()) {
            Ok(fd) => fd,
            // A link planted since the check above.
            Err(Errno::LOOP) => return Err(link()),
            Err(e) => return Err(dir_error(dir)(e.into())),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| dir_error(dir)(e.into()))?;
        let me = rustix::process::geteuid().as_raw();
        if stat.st_uid != me {
            return Err(refused(
                dir,
                format!(
                    "is owned by uid {}, not by the collector's uid {me}",
                    stat.st_uid
                ),
            ));
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(|e| dir_error(dir)(e.into()))
    }

    /// Refuses a parent in which another user could replace `what`.
    fn check_parent(parent: &Path, what: &str) -> Result<(), PrivateError> {
        let meta = std::fs::metadata(parent).map_err(dir_error(parent))?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(refused(
                parent,
                format!(
                    "the parent of {what} is writable by other users (mode {mode:o}) without the sticky bit"
                ),
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(refused(
                parent,
                format!(
                    "the parent of {what} is owned by uid {}, neither root nor the collector",
                    meta.uid()
                ),
            ));
        }
        Ok(())
    }

    pub fn restrict_files(dir: &Path) -> Result<(), PrivateError> {
        for entry in std::fs::read_dir(dir).map_err(dir_error(dir))? {
            let entry = entry.map_err(dir_error(dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(dir_error(&path))?;
            if kind.is_symlink() {
                tracing::warn!(path = %path.display(), "symbolic link in the WAL directory left alone");
                continue;
            }
            let mode = if kind.is_dir() { 0o700 } else { 0o600 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(dir_error(&path))?;
            if kind.is_dir() {
                restrict_files(&path)?;
            }
        }
        Ok(())
    }
}
