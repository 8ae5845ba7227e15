//! The bus on Windows: a local named pipe (`\\.\pipe\procmond`) instead of
//! a Unix socket, with the same frames (docs/reference.md §4).
//!
//! Who may connect is decided twice, as on Unix (socket mode + SO_PEERCRED):
//! * the pipe's DACL (from SDDL, `pipe_sddl`): network logons denied,
//!   SYSTEM, Administrators and the agent's own account full control, the
//!   SIDs of `broker.allowed_sids` read and FILE_WRITE_DATA only — not
//!   GENERIC_WRITE, whose FILE_CREATE_PIPE_INSTANCE would let them create
//!   server instances of the name and take other clients' frames;
//! * per connection, the client's token user SID, read by impersonating
//!   the client after its first bytes (`sys::windows_pipe::client_sid`; a
//!   process id could be reused by then), must be in the broker's
//!   allow-list (`broker.allowed_sids` plus the agent's own SID).
//!
//! The first instance is created with `first_pipe_instance`, so binding
//! fails if another process already owns the name, and every instance
//! rejects remote clients. While the agent is down anyone may create the
//! name, so a client checks the server before it sends anything: the pipe
//! must be owned by SYSTEM, Administrators or the client's own account
//! (`trusted_owner`). After each client connects, the next instance is
//! created before the connected one is handed to the broker.
//!
//! The name and SDDL helpers are plain functions compiled everywhere (and
//! tested on Linux); the pipe itself is `cfg(windows)`.

use std::path::Path;

/// The prefix every local pipe name has.
pub const PIPE_PREFIX: &str = r"\\.\pipe\";

/// The default broker endpoint on Windows.
pub const DEFAULT_PIPE: &str = r"\\.\pipe\procmond";

/// The longest pipe name, `\\.\pipe\` included (CreateNamedPipeW: "the
/// entire pipe name string can be up to 256 characters long").
pub const PIPE_NAME_MAX: usize = 256;

/// Whether `path` is a local pipe name: `\\.\pipe\` then at least one
/// character, none of them a backslash, 256 characters in all.
pub fn is_pipe_name(path: &Path) -> bool {
    let Some(s) = path.to_str() else { return false };
    let Some(head) = s.get(..PIPE_PREFIX.len()) else {
        return false;
    };
    let rest = &s[PIPE_PREFIX.len()..];
    head.eq_ignore_ascii_case(PIPE_PREFIX)
        && !rest.is_empty()
        && s.encode_utf16().count() <= PIPE_NAME_MAX
        && !rest.contains('\\')
}

/// What `broker.allowed_sids` get: FILE_GENERIC_READ (0x120089) and
/// FILE_WRITE_DATA (0x2). Not FILE_CREATE_PIPE_INSTANCE (0x4, in
/// GENERIC_WRITE), nor WRITE_DAC / WRITE_OWNER.
pub const ALLOWED_RIGHTS: u32 = 0x0012_0089 | 0x2;

/// The pipe's DACL: deny network logons; SYSTEM, Administrators and the
/// agent's account (`own_sid`) full control; each of `allowed` read and
/// write data (`ALLOWED_RIGHTS`); nobody else (`P`: nothing inherited).
pub fn pipe_sddl(own_sid: &str, allowed: &[String]) -> String {
    let mut s = format!("D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;{own_sid})");
    for sid in allowed {
        s.push_str(&format!("(A;;{ALLOWED_RIGHTS:#x};;;{sid})"));
    }
    s
}

/// SYSTEM and BUILTIN\Administrators: a pipe they own was made by the
/// agent (a service, or an elevated prompt).
const TRUSTED_OWNERS: [&str; 2] = ["S-1-5-18", "S-1-5-32-544"];

/// Whether a client running as `own_sid` may talk to a pipe owned by
/// `owner`: SYSTEM, Administrators, or the client's own account (a private
/// `watch` broker). Anyone else made the name while the agent was down.
pub fn trusted_owner(owner: &str, own_sid: &str) -> bool {
    TRUSTED_OWNERS
        .iter()
        .chain(std::iter::once(&own_sid))
        .any(|t| t.eq_ignore_ascii_case(owner))
}

pub use crate::sys::acl::private_sddl;

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
        NamedPipeClient, NamedPipeServer, PipeMode, ServerOptions,
    };
    use tokio_util::sync::CancellationToken;

    use tokio::io::AsyncReadExt;

    use super::{admits, is_pipe_name, pipe_sddl, trusted_owner};
    use crate::bus::broker::Broker;
    use crate::bus::peer::PeerId;
    use crate::sys::windows as sys;
    use crate::sys::windows_pipe as pipe_sys;

    /// `ERROR_PIPE_BUSY`: every instance is taken; wait for the next.
    const PIPE_BUSY: i32 = 231;
    /// How long a client waits for a free instance.
    const BUSY_WAIT: Duration = Duration::from_secs(5);
    /// How long a new client has to send its first bytes (the server can
    /// impersonate it only after reading from it).
    const FIRST_READ: Duration = Duration::from_secs(10);

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

    /// Opens the pipe at `path` (read + write data only), waiting up to
    /// 5 s while every instance is busy, and checks who owns it before
    /// anything is sent (`trusted_owner`).
    pub async fn connect(path: &Path) -> io::Result<NamedPipeClient> {
        let deadline = Instant::now() + BUSY_WAIT;
        let client = loop {
            match pipe_sys::open_client(path.as_os_str()) {
                Ok(client) => break client,
                Err(e) if e.raw_os_error() == Some(PIPE_BUSY) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        // The pipe's owner, or else the serving process's account (readable
        // when the client may read that token; wine reports a group as
        // every pipe's owner): SYSTEM, Administrators or this account.
        let handle = client.as_raw_handle();
        let own = sys::own_user_sid()?;
        let owner = pipe_sys::owner_sid(handle)?;
        let server = pipe_sys::server_user_sid(handle).ok();
        let trusted = trusted_owner(&owner, &own)
            || server.as_deref().is_some_and(|s| trusted_owner(s, &own));
        if !trusted {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "pipe {} is owned by {owner} and served by {}, not SYSTEM, Administrators \
                     or this account: not the agent (a process may have taken the name while \
                     it was down)",
                    path.display(),
                    server
                        .as_deref()
                        .unwrap_or("an account this one cannot read")
                ),
            ));
        }
        Ok(client)
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

        /// Identifies the client on a task of its own (it must send first).
        fn admit_pipe(&self, server: NamedPipeServer, shutdown: &CancellationToken) {
            let (broker, shutdown) = (self.clone(), shutdown.clone());
            tokio::spawn(async move { broker.identify_pipe(server, &shutdown).await });
        }

        /// Reads the client's first bytes, names it by impersonation, and
        /// hands it to the broker with those bytes put back in front.
        async fn identify_pipe(&self, mut server: NamedPipeServer, shutdown: &CancellationToken) {
            let mut first = vec![0u8; 4096];
            let n = match tokio::time::timeout(FIRST_READ, server.read(&mut first)).await {
                Ok(Ok(n)) if n > 0 => n,
                Ok(Ok(_)) => return,
                Ok(Err(e)) => return self.refuse(None, &format!("reading from the client: {e}")),
                Err(_) => return self.refuse(None, "the client sent nothing within 10 s"),
            };
            first.truncate(n);
            let sid = match pipe_sys::client_sid(server.as_raw_handle()) {
                Ok(sid) => sid,
                Err(e) => return self.refuse(None, &format!("no client identity: {e}")),
            };
            let peer = PeerId::Sid(sid.clone());
            if !admits(&sid, self.allowed_sids()) {
                self.refuse(Some(&peer), "SID not in broker.allowed_sids");
                return;
            }
            tracing::debug!(%peer, "pipe client admitted");
            let (r, w) = tokio::io::split(server);
            self.admit_peer(peer, std::io::Cursor::new(first).chain(r), w, shutdown);
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
        // The 256-character limit is for the whole name, prefix included.
        let longest = format!("{PIPE_PREFIX}{}", "x".repeat(256 - PIPE_PREFIX.len()));
        assert!(is_pipe_name(Path::new(&longest)));
        let over = format!("{longest}x");
        assert!(!is_pipe_name(Path::new(&over)), "{} characters", over.len());
    }

    #[test]
    fn pipe_dacl_names_exactly_who_may_connect() {
        let sddl = pipe_sddl("S-1-5-21-1-2-3-1000", &["S-1-5-21-1-2-3-1001".into()]);
        assert!(sddl.starts_with("D:P(D;;GA;;;NU)"), "{sddl}");
        for ace in [
            "(A;;GA;;;SY)",
            "(A;;GA;;;BA)",
            "(A;;GA;;;S-1-5-21-1-2-3-1000)",
            // FILE_GENERIC_READ | FILE_WRITE_DATA: no GENERIC_WRITE, whose
            // FILE_CREATE_PIPE_INSTANCE (0x4) would let an allowed user
            // create server instances and take other clients' frames.
            "(A;;0x12008b;;;S-1-5-21-1-2-3-1001)",
        ] {
            assert!(sddl.contains(ace), "{ace} in {sddl}");
        }
        assert!(!sddl.contains("GW"), "{sddl}");
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
    fn clients_talk_only_to_a_pipe_owned_by_system_admins_or_themselves() {
        let me = "S-1-5-21-1-2-3-1000";
        assert!(trusted_owner("S-1-5-18", me));
        assert!(trusted_owner("S-1-5-32-544", me));
        assert!(
            trusted_owner("s-1-5-21-1-2-3-1000", me),
            "a private watch broker"
        );
        assert!(
            !trusted_owner("S-1-5-21-1-2-3-1001", me),
            "another user squatting"
        );
        assert!(!trusted_owner("S-1-5-32-545", me), "BUILTIN\\Users");
        assert!(!trusted_owner("S-1-1-0", me), "Everyone");
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
