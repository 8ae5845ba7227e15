//! The broker's socket file: where it is bound and who could tamper with it.

use std::path::Path;

use tokio::net::UnixListener;

use super::{Broker, own_uid};

impl Broker {
    /// Binds the socket: creates the parent directory (0755) or checks that
    /// an existing one is writable by no one but root and this user,
    /// replaces a stale socket (never another kind of file), and restricts
    /// the socket to mode 0660.
    pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
        if let Some(parent) = path.parent() {
            if parent.exists() {
                let meta = std::fs::metadata(parent)?;
                let owner_ok = meta.uid() == 0 || meta.uid() == own_uid();
                if !owner_ok || meta.mode() & 0o022 != 0 {
                    return Err(refuse(format!(
                        "socket directory {} is writable by other users (owner {}, mode {:o}): another user could replace the socket",
                        parent.display(),
                        meta.uid(),
                        meta.mode() & 0o7777
                    )));
                }
            } else {
                // Reachable by the allowed users; the socket's own 0660 and the
                // peer-credential check decide who may talk.
                std::fs::create_dir_all(parent)?;
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(refuse(format!(
                    "{} exists and is not a socket: refusing to replace it",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
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
        let _ = std::fs::remove_dir_all(&base);
    }
}
