//! The WAL's directory: private (0700, files 0600, it holds command lines)
//! and never reached through a link, because the collector runs as root and
//! would otherwise chmod or write wherever a planted symlink points.
//!
//! * `wal_dir` itself must not be a symbolic link: it is checked, then
//!   created with `mkdir` and opened with `O_NOFOLLOW | O_DIRECTORY`, and its
//!   mode is set through that descriptor (`fchmod`), never by path. A
//!   directory that already exists must belong to the collector's user.
//! * Its parent must not let another user swap `wal_dir` out: refused when
//!   it is writable by group or others without the sticky bit, or owned by
//!   someone other than root or the collector's user.
//! * sled's files are then made 0600 (sled creates them with the umask); a
//!   symbolic link found inside is left alone, never followed.
//!
//! Windows: the directory gets a private ACL (SYSTEM, Administrators, this
//! account), which sled's files inherit.

use std::path::Path;

use super::wal::WalError;

pub(super) fn dir_error(dir: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Dir {
        path: dir.display().to_string(),
        source,
    }
}

/// Creates (or checks) `dir` as the WAL's private directory.
pub(super) fn prepare(dir: &Path) -> Result<(), WalError> {
    #[cfg(unix)]
    unix::prepare(dir)?;
    #[cfg(windows)]
    {
        std::fs::create_dir_all(dir).map_err(dir_error(dir))?;
        crate::sys::windows::make_private(dir).map_err(dir_error(dir))?;
    }
    #[cfg(not(any(unix, windows)))]
    std::fs::create_dir_all(dir).map_err(dir_error(dir))?;
    Ok(())
}

/// sled creates files with the process umask; the WAL holds command lines.
pub(super) fn restrict_files(dir: &Path) -> Result<(), WalError> {
    #[cfg(unix)]
    unix::restrict_files(dir)?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(unix)]
mod unix {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;

    use super::dir_error;
    use crate::delivery::wal::WalError;

    fn refused(path: &Path, reason: String) -> WalError {
        WalError::Refused {
            path: path.display().to_string(),
            reason,
        }
    }

    pub fn prepare(dir: &Path) -> Result<(), WalError> {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(dir_error(parent))?;
        check_parent(parent)?;
        let link = || {
            refused(
                dir,
                "is a symbolic link; wal_dir must be a real directory".into(),
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

    /// Refuses a parent in which another user could replace `wal_dir`.
    fn check_parent(parent: &Path) -> Result<(), WalError> {
        let meta = std::fs::metadata(parent).map_err(dir_error(parent))?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(refused(
                parent,
                format!(
                    "the parent of wal_dir is writable by other users (mode {mode:o}) without the sticky bit"
                ),
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(refused(
                parent,
                format!(
                    "the parent of wal_dir is owned by uid {}, neither root nor the collector",
                    meta.uid()
                ),
            ));
        }
        Ok(())
    }

    pub fn restrict_files(dir: &Path) -> Result<(), WalError> {
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

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::sync::Arc;

    use crate::delivery::wal::{Wal, WalError};
    use crate::metrics::Metrics;

    fn base(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("procmond-waldir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("base");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        d
    }

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::symlink_metadata(p)
            .expect("meta")
            .permissions()
            .mode()
            & 0o7777
    }

    fn open(dir: &std::path::Path) -> Result<Wal, WalError> {
        Wal::open(dir, 1 << 20, Arc::new(Metrics::default()))
    }

    #[test]
    fn a_symlinked_wal_dir_is_refused_and_nothing_is_chmodded_through_it() {
        let base = base("link");
        let target = base.join("elsewhere");
        std::fs::create_dir(&target).expect("target");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let file = target.join("precious");
        std::fs::write(&file, b"x").expect("file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let wal_dir = base.join("wal");
        std::os::unix::fs::symlink(&target, &wal_dir).expect("symlink");
        let err = open(&wal_dir).expect_err("refused");
        let text = err.to_string();
        assert!(matches!(err, WalError::Refused { .. }), "{text}");
        assert!(
            text.contains(&wal_dir.display().to_string()),
            "names the path: {text}"
        );
        assert!(text.contains("symbolic link"), "{text}");
        assert_eq!((mode(&target), mode(&file)), (0o755, 0o644), "untouched");
        assert_eq!(
            std::fs::read_dir(&target).expect("ls").count(),
            1,
            "no WAL there"
        );

        // A link inside a real WAL directory is not followed either.
        let real = base.join("real");
        std::fs::create_dir(&real).expect("real");
        std::os::unix::fs::symlink(&file, real.join("planted")).expect("symlink");
        drop(open(&real).expect("a real directory opens"));
        assert_eq!(mode(&file), 0o644, "not chmodded through the link");
        assert_eq!(mode(&real), 0o700);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_parent_others_can_write_without_the_sticky_bit_is_refused() {
        let base = base("parent");
        let open_parent = base.join("open");
        std::fs::create_dir(&open_parent).expect("dir");
        std::fs::set_permissions(&open_parent, std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let err = open(&open_parent.join("wal")).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains(&open_parent.display().to_string()), "{text}");
        assert!(text.contains("sticky"), "{text}");
        assert!(!open_parent.join("wal").exists(), "nothing created");
        // With the sticky bit (as /tmp): accepted.
        std::fs::set_permissions(&open_parent, std::fs::Permissions::from_mode(0o1777))
            .expect("chmod");
        drop(open(&open_parent.join("wal")).expect("sticky parent is fine"));
        let _ = std::fs::remove_dir_all(&base);
    }
}
