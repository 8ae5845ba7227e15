//! The broker's socket file: where it is bound and who could tamper with it.
//!
//! Every directory from `/` to the socket must be owned by root or the
//! agent's own user and writable by no one else unless sticky, and a
//! symbolic link on the way is followed only when root or that user owns it
//! (`sys::safe_path`): otherwise another user could move the socket aside
//! and put their own in its place, and the collectors (root) would publish
//! to them.

use std::path::Path;

use tokio::net::UnixListener;

use super::Broker;
use crate::sys::safe_path::{self, PathError};

impl Broker {
    /// Binds the socket: checks every directory on the way (creating
    /// missing ones 0755), replaces a stale socket (never another kind of
    /// file), and restricts the socket to mode 0660.
    pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
        // Reachable by the allowed users; the socket's own 0660 and the
        // peer-credential check decide who may talk.
        let leaf = safe_path::walk(path, Some(0o755), false).map_err(|e| match e {
            PathError::Io { source, .. }
                if source.kind() != std::io::ErrorKind::PermissionDenied =>
            {
                std::io::Error::new(
                    source.kind(),
                    format!("socket {}: {source}", path.display()),
                )
            }
            e => refuse(format!(
                "socket {}: {e}: another user could replace the socket",
                path.display()
            )),
        })?;
        // From here on only trusted directories are on the way.
        let path = leaf.path();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(&path)?,
            Ok(_) => {
                return Err(refuse(format!(
                    "{} exists and is not a socket: refusing to replace it",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
        Ok(listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_refuses_open_directories_and_non_sockets() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("procmond-bind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("base");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        // A regular file where the socket goes is never deleted.
        let file = base.join("broker.sock");
        std::fs::write(&file, "keep").expect("file");
        assert!(Broker::bind(&file).is_err());
        assert_eq!(std::fs::read_to_string(&file).expect("still there"), "keep");
        std::fs::remove_file(&file).expect("rm");
        // A stale socket is replaced.
        drop(Broker::bind(&file).expect("binds"));
        drop(Broker::bind(&file).expect("rebinds over the stale socket"));
        // A directory others can write: refused.
        let open = base.join("open");
        std::fs::create_dir(&open).expect("dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = Broker::bind(&open.join("s.sock")).expect_err("open directory");
        assert!(e.to_string().contains("writable by other users"), "{e}");
        // Not just the parent: any directory on the way.
        let below = open.join("private");
        std::fs::create_dir(&below).expect("dir");
        std::fs::set_permissions(&below, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let e = Broker::bind(&below.join("s.sock")).expect_err("open grandparent");
        assert!(e.to_string().contains(&*open.to_string_lossy()), "{e}");
        // A link on the way is followed only when root (or we) own it.
        let real = base.join("real");
        std::fs::create_dir(&real).expect("dir");
        let link = base.join("link");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        drop(Broker::bind(&link.join("s.sock")).expect("our own link"));
        assert!(real.join("s.sock").exists());
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::lchown(&link, Some(65534), None).expect("lchown");
            let e = Broker::bind(&link.join("t.sock")).expect_err("nobody's link");
            assert!(e.to_string().contains("uid 65534"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&base);
    }
}
