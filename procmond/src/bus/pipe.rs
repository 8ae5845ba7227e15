//! The bus on Windows: a local named pipe (`\\.\pipe\procmond`) instead of
//! a Unix socket, with the same frames (docs/reference.md §4).
//!
//! Who may connect is decided twice, as on Unix (socket mode + SO_PEERCRED):
//! * the pipe's DACL (from SDDL, `pipe_sddl`): network logons denied,
//!   SYSTEM, Administrators and the agent's own account full control, the
//!   SIDs of `broker.allowed_sids` read/write, nobody else;
//! * per connection, the client's process id (`GetNamedPipeClientProcessId`)
//!   and that process's token user SID must be in the broker's allow-list
//!   (`broker.allowed_sids` plus the agent's own SID, added by the agent).
//!
//! The first instance is created with `first_pipe_instance`, so binding
//! fails if another process already owns the name (no squatting), and every
//! instance rejects remote clients. After each client connects, the next
//! instance is created before the connected one is handed to the broker.
//!
//! The name and SDDL helpers are plain functions compiled everywhere (and
//! tested on Linux); the pipe itself is `cfg(windows)`.

use std::path::Path;

/// The prefix every local pipe name has.
pub const PIPE_PREFIX: &str = r"\\.\pipe\";

/// The default broker endpoint on Windows.
pub const DEFAULT_PIPE: &str = r"\\.\pipe\procmond";

/// Whether `path` is a local pipe name: `\\.\pipe\` then 1–256 characters,
/// none of them a backslash.
pub fn is_pipe_name(path: &Path) -> bool {
    let Some(s) = path.to_str() else { return false };
    let Some(head) = s.get(..PIPE_PREFIX.len()) else {
        return false;
    };
    let rest = &s[PIPE_PREFIX.len()..];
    head.eq_ignore_ascii_case(PIPE_PREFIX)
        && (1..=256).contains(&rest.chars().count())
        && !rest.contains('\\')
}

/// The pipe's DACL: deny network logons; SYSTEM, Administrators and the
/// agent's account (`own_sid`) full control; each of `allowed` read and
/// write; nobody else (`P`: nothing inherited).
pub fn pipe_sddl(own_sid: &str, allowed: &[String]) -> String {
    let mut s = format!("D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;{own_sid})");
    for sid in allowed {
        s.push_str(&format!("(A;;GRGW;;;{sid})"));
    }
    s
}

/// The ACL of the agent's private files and directories (WAL, sinks, the
/// launcher's collector configs): SYSTEM, Administrators and the account
/// procmond runs as (LocalSystem for the service) full control, inherited
/// by everything created inside; nothing inherited from above; nobody else.
pub fn private_sddl(own_sid: &str) -> String {
    format!("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;{own_sid})")
}

/// Whether a client running as `client` may connect (`allowed` already
/// holds the agent's own SID when it should).
pub fn admits(client: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| a.eq_ignore_ascii_case(client))
}

#[cfg(windows)]
pub use imp::{PipeListener, bind, connect};

#[cfg(windows)]
mod imp {
    use std::ffi::OsString;
    use std::io;
    use std::os::windows::io::AsRawHandle;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use tokio::net::windows::named_pipe::{
        ClientOptions, NamedPipeClient, NamedPipeServer, PipeMode, ServerOptions,
    };
    use tokio_util::sync::CancellationToken;

    use super::{admits, is_pipe_name, pipe_sddl};
    use crate::bus::broker::Broker;
    use crate::bus::peer::PeerId;
    use crate::sys::windows as sys;

    /// `ERROR_PIPE_BUSY`: every instance is taken; wait for the next.
    const PIPE_BUSY: i32 = 231;
    /// How long a client waits for a free instance.
    const BUSY_WAIT: Duration = Duration::from_secs(5);

    /// The listening side: one instance waits for the next client.
    #[derive(Debug)]
    pub struct PipeListener {
        name: OsString,
        sd: sys::SecurityDescriptor,
        waiting: NamedPipeServer,
    }

    /// Creates the pipe's first instance (failing if another process owns
    /// the name), with the DACL of `pipe_sddl` for this account and
    /// `allowed` (the SIDs besides it that may open the pipe).
    pub fn bind(path: &Path, allowed: &[String]) -> io::Result<PipeListener> {
        if !is_pipe_name(path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a local pipe name (\\\\.\\pipe\\NAME)",
                    path.display()
                ),
            ));
        }
        let own = sys::own_user_sid()?;
        let sd = sys::SecurityDescriptor::from_sddl(&pipe_sddl(&own, allowed))?;
        let name = path.as_os_str().to_owned();
        let waiting = create(&name, &sd, true).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "creating pipe {} (is another agent running?): {e}",
                    path.display()
                ),
            )
        })?;
        Ok(PipeListener { name, sd, waiting })
    }

    fn create(
        name: &OsString,
        sd: &sys::SecurityDescriptor,
        first: bool,
    ) -> io::Result<NamedPipeServer> {
        let mut options = ServerOptions::new();
        options
            .first_pipe_instance(first)
            .reject_remote_clients(true)
            .pipe_mode(PipeMode::Byte);
        sys::create_pipe(&options, name, sd)
    }

    impl PipeListener {
        /// The next connected client; a fresh instance takes its place.
        pub async fn accept(&mut self) -> io::Result<NamedPipeServer> {
            if let Err(e) = self.waiting.connect().await {
                // A client that came and went: replace the instance.
                self.waiting = create(&self.name, &self.sd, false)?;
                return Err(e);
            }
            let next = create(&self.name, &self.sd, false)?;
            Ok(std::mem::replace(&mut self.waiting, next))
        }
    }

    /// Opens the pipe at `path`, waiting up to 5 s while every instance is
    /// busy.
    pub async fn connect(path: &Path) -> io::Result<NamedPipeClient> {
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            match ClientOptions::new().open(path.as_os_str()) {
                Ok(client) => return Ok(client),
                Err(e) if e.raw_os_error() == Some(PIPE_BUSY) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The client's user SID: its process id from the pipe, then that
    /// process's token.
    fn client_sid(server: &NamedPipeServer) -> io::Result<(u32, String)> {
        let pid = sys::pipe_client_pid(server.as_raw_handle())?;
        Ok((pid, sys::process_user_sid(pid)?))
    }

    impl Broker {
        /// Binds the pipe for a private broker (`watch`): only this account,
        /// SYSTEM and Administrators may open it.
        pub fn bind(path: &Path) -> io::Result<PipeListener> {
            bind(path, &[])
        }

        /// Accepts connections until `shutdown`.
        pub async fn serve(&self, mut listener: PipeListener, shutdown: CancellationToken) {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(server) => self.admit_pipe(server, &shutdown),
                        Err(e) => {
                            tracing::warn!(error = %e, "pipe accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                }
            }
            self.close_connections();
        }

        fn admit_pipe(&self, server: NamedPipeServer, shutdown: &CancellationToken) {
            let (pid, sid) = match client_sid(&server) {
                Ok(found) => found,
                Err(e) => {
                    self.refuse(None, &format!("no client identity: {e}"));
                    return;
                }
            };
            let peer = PeerId::Sid(sid.clone());
            if !admits(&sid, self.allowed_sids()) {
                self.refuse(
                    Some(&peer),
                    &format!("client pid {pid}: SID not in broker.allowed_sids"),
                );
                return;
            }
            tracing::debug!(pid, %peer, "pipe client admitted");
            let (r, w) = tokio::io::split(server);
            self.admit_peer(peer, r, w, shutdown);
        }
    }
}

#[cfg(all(test, windows))]
#[path = "pipe_tests.rs"]
mod windows_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_names() {
        assert!(is_pipe_name(Path::new(DEFAULT_PIPE)));
        assert!(is_pipe_name(Path::new(r"\\.\PIPE\procmond-test_1")));
        for bad in [
            r"\\.\pipe\",
            r"\\server\pipe\procmond",
            r"\\.\pipe\a\b",
            "/run/procmond/broker.sock",
            r"C:\procmond",
        ] {
            assert!(!is_pipe_name(Path::new(bad)), "{bad}");
        }
        let long = format!("{PIPE_PREFIX}{}", "x".repeat(257));
        assert!(!is_pipe_name(Path::new(&long)));
    }

    #[test]
    fn pipe_dacl_names_exactly_who_may_connect() {
        let sddl = pipe_sddl("S-1-5-21-1-2-3-1000", &["S-1-5-21-1-2-3-1001".into()]);
        assert!(sddl.starts_with("D:P(D;;GA;;;NU)"), "{sddl}");
        for ace in [
            "(A;;GA;;;SY)",
            "(A;;GA;;;BA)",
            "(A;;GA;;;S-1-5-21-1-2-3-1000)",
            "(A;;GRGW;;;S-1-5-21-1-2-3-1001)",
        ] {
            assert!(sddl.contains(ace), "{ace} in {sddl}");
        }
        assert_eq!(sddl.matches("(A;").count(), 4, "{sddl}");
        assert!(!sddl.contains("WD"), "no Everyone ACE: {sddl}");
    }

    #[test]
    fn private_acl_is_system_admins_and_self() {
        let sddl = private_sddl("S-1-5-18");
        assert!(sddl.starts_with("D:P("), "protected: {sddl}");
        assert_eq!(sddl.matches("(A;OICI;FA;;;").count(), 3, "{sddl}");
        assert!(!sddl.contains("WD") && !sddl.contains(";BU)"), "{sddl}");
    }

    #[test]
    fn admission_is_by_exact_sid() {
        let allowed = vec!["S-1-5-18".to_string(), "S-1-5-21-1-2-3-1000".into()];
        assert!(admits("S-1-5-18", &allowed));
        assert!(admits("s-1-5-21-1-2-3-1000", &allowed));
        assert!(!admits("S-1-5-21-1-2-3-100", &allowed));
        assert!(!admits("S-1-5-19", &allowed));
        assert!(!admits("S-1-5-18", &[]));
    }
}
