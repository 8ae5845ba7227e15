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
//! account), which sled's files inherit. How each OS does it is in
//! `platform/private_files.rs`; this file says what the WAL asks for.

use std::path::Path;

use super::wal::WalError;
use crate::platform::private_files::{self, PrivateError};

pub(super) fn dir_error(dir: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Dir {
        path: dir.display().to_string(),
        source,
    }
}

fn wal_error(dir: &Path) -> impl Fn(PrivateError) -> WalError + '_ {
    move |e| match e {
        PrivateError::Refused { path, reason } => WalError::Refused { path, reason },
        PrivateError::Io { path, source } => WalError::Dir { path, source },
        // Only opening a file through a path checks that (not used here).
        #[allow(unreachable_patterns)]
        other => WalError::Refused {
            path: dir.display().to_string(),
            reason: other.to_string(),
        },
    }
}

/// Creates (or checks) `dir` as the WAL's private directory.
pub(super) fn prepare(dir: &Path) -> Result<(), WalError> {
    private_files::prepare_dir(dir, "wal_dir").map_err(wal_error(dir))
}

/// sled creates files with the process umask; the WAL holds command lines.
pub(super) fn restrict_files(dir: &Path) -> Result<(), WalError> {
    private_files::restrict_tree(dir).map_err(wal_error(dir))
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
