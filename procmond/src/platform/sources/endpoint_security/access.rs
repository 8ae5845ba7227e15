//! What EndpointSecurity needs on macOS, as `privileges::detect` reports it
//! (`capabilities`, `register`): root, the ES client entitlement, and Full
//! Disk Access, each yes, no or unknown with the evidence.
//!
//! * Root: `geteuid`.
//! * Entitlement: read from the running executable's code signature
//!   (`macho`); carried is not granted (see there).
//! * Full Disk Access: whether the system TCC database, which TCC itself
//!   protects, can be opened. TCC judges the *responsible* process: run
//!   from Terminal, Terminal's grant is what this sees, and what
//!   `es_new_client` sees too.
//!
//! The mapping from what was observed to the report is pure and tested on
//! every platform; only `detect` touches the system, on macOS.

use std::path::Path;

use serde::Serialize;

use super::macho::{self, Entitlements};

/// The entitlement an ES client must be signed with.
pub const ENTITLEMENT: &str = "com.apple.developer.endpoint-security.client";
/// The system TCC database: readable only with Full Disk Access.
pub const TCC_DB: &str = "/Library/Application Support/com.apple.TCC/TCC.db";

/// A fact that may not be knowable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Yes,
    No,
    Unknown,
}

/// One requirement: its state and how it was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub state: State,
    pub detail: String,
}

impl Check {
    fn new(state: State, detail: impl Into<String>) -> Self {
        Self {
            state,
            detail: detail.into(),
        }
    }
}

/// What `capabilities` shows under `privileges.endpoint_security`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EsAccess {
    pub root: bool,
    pub entitlement: Check,
    pub full_disk_access: Check,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Unknown => "unknown",
        }
    }
}

impl EsAccess {
    /// One line for the start-up "privileges" log.
    pub fn summary(&self) -> String {
        format!(
            "root={},es_entitlement={},full_disk_access={}",
            if self.root { "yes" } else { "no" },
            self.entitlement.state.as_str(),
            self.full_disk_access.state.as_str()
        )
    }
}

/// How to get the entitlement honoured.
const SIGN_HINT: &str = "ship it as procmond.app/Contents/MacOS/procmond with an embedded provisioning profile and sign it with config/macos/procmond.entitlements (with SIP off, for development, the bare binary signed with config/procmond.entitlements); docs/platforms.md, macOS";

/// Where the provisioning profile of the app-like bundle `exe` runs from
/// would be (`X.app/Contents/MacOS/exe` → `X.app/Contents/
/// embedded.provisionprofile`); `None` when `exe` is not in a bundle.
pub fn embedded_profile(exe: &Path) -> Option<std::path::PathBuf> {
    let macos = exe.parent()?;
    let contents = macos.parent()?;
    let bundle = contents.parent()?;
    let is_bundle = macos.file_name()? == "MacOS"
        && contents.file_name()? == "Contents"
        && bundle.extension()? == "app";
    is_bundle.then(|| contents.join("embedded.provisionprofile"))
}

/// What the profile means for the entitlement: `present` is whether the
/// bundle's profile exists (`None`: `exe` is not in a bundle). A restricted
/// entitlement without a profile that authorises it gets the process
/// killed by AMFI at launch unless SIP is off; whether the profile does
/// authorise it, `es_new_client` decides.
fn profile_note(exe: &Path, present: Option<bool>) -> String {
    match present {
        Some(true) => "the bundle embeds a provisioning profile (Contents/embedded.provisionprofile), which must authorise it".into(),
        Some(false) => format!(
            "the bundle has no Contents/embedded.provisionprofile: honoured only with SIP off ({} would be killed at launch otherwise)",
            exe.display()
        ),
        None => "not inside an app bundle, so no provisioning profile can authorise it: honoured only with SIP off".into(),
    }
}

/// The entitlement check for the executable at `exe`, slice `cpu`.
pub fn entitlement_check(exe: &Path, cpu: u32) -> Check {
    let read = std::fs::File::open(exe)
        .map_err(macho::MachoError::from)
        .and_then(|mut f| macho::read_entitlements(&mut f, cpu));
    let shown = exe.display();
    match read {
        Ok(e) if e.grants(ENTITLEMENT) => Check::new(
            State::Yes,
            format!(
                "{shown} is signed with {ENTITLEMENT}; {}",
                profile_note(exe, embedded_profile(exe).map(|p| p.exists()))
            ),
        ),
        Ok(Entitlements::Unsigned) => Check::new(
            State::No,
            format!("{shown} has no code signature; {SIGN_HINT}"),
        ),
        Ok(_) => Check::new(
            State::No,
            format!("{shown} is signed without {ENTITLEMENT}; {SIGN_HINT}"),
        ),
        Err(e) => Check::new(
            State::Unknown,
            format!("could not read the code signature of {shown}: {e}"),
        ),
    }
}

/// The Full Disk Access check from the result of opening `TCC_DB`.
pub fn full_disk_access_check(open: &std::io::Result<()>) -> Check {
    use std::io::ErrorKind;
    match open {
        Ok(()) => Check::new(
            State::Yes,
            format!("{TCC_DB} is readable (Full Disk Access)"),
        ),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Check::new(
            State::No,
            format!(
                "{TCC_DB} is not readable ({e}): grant Full Disk Access in System Settings > Privacy & Security, or with an MDM PPPC profile"
            ),
        ),
        Err(e) => Check::new(State::Unknown, format!("could not tell from {TCC_DB}: {e}")),
    }
}

/// This build's Mach-O CPU type.
pub fn this_cpu() -> u32 {
    if cfg!(target_arch = "x86_64") {
        macho::CPU_TYPE_X86_64
    } else {
        macho::CPU_TYPE_ARM64
    }
}

/// Root, entitlement and Full Disk Access of this process.
#[cfg(target_os = "macos")]
pub fn detect(euid: u32) -> EsAccess {
    let entitlement = match std::env::current_exe() {
        Ok(exe) => entitlement_check(&exe, this_cpu()),
        Err(e) => Check::new(
            State::Unknown,
            format!("the running executable's path is unknown: {e}"),
        ),
    };
    let open = std::fs::File::open(TCC_DB).map(drop);
    EsAccess {
        root: euid == 0,
        entitlement,
        full_disk_access: full_disk_access_check(&open),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("procmond-es-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("temp file");
        path
    }

    #[test]
    fn entitlement_states_come_from_the_file() {
        let xml = format!("<plist><dict><key>{ENTITLEMENT}</key><true/></dict></plist>");
        let signed = macho::fixture(
            macho::CPU_TYPE_ARM64,
            Some(&[(5, 0xfade_7171, xml.as_bytes())]),
        );
        let path = temp_file("signed", &signed);
        let c = entitlement_check(&path, macho::CPU_TYPE_ARM64);
        assert_eq!(c.state, State::Yes, "{}", c.detail);
        let plain = macho::fixture(macho::CPU_TYPE_ARM64, Some(&[(0, 0xfade_0c02, b"cd")]));
        std::fs::write(&path, plain).expect("rewrite");
        let c = entitlement_check(&path, macho::CPU_TYPE_ARM64);
        assert_eq!(c.state, State::No);
        assert!(c.detail.contains("signed without"), "{}", c.detail);
        std::fs::write(&path, macho::fixture(macho::CPU_TYPE_ARM64, None)).expect("rewrite");
        let c = entitlement_check(&path, macho::CPU_TYPE_ARM64);
        assert_eq!(c.state, State::No);
        assert!(c.detail.contains("no code signature"), "{}", c.detail);
        // This test binary is an ELF file: not a Mach-O, so unknown.
        std::fs::write(
            &path,
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0\x01\0\0\0........",
        )
        .expect("rewrite");
        let c = entitlement_check(&path, macho::CPU_TYPE_ARM64);
        assert_eq!(c.state, State::Unknown);
        let _ = std::fs::remove_file(&path);
        let c = entitlement_check(Path::new("/nonexistent/procmond"), macho::CPU_TYPE_ARM64);
        assert_eq!(c.state, State::Unknown);
        assert!(c.detail.contains("/nonexistent/procmond"));
    }

    #[test]
    fn the_profile_is_looked_for_in_the_bundle() {
        let exe =
            Path::new("/Library/Application Support/procmond/procmond.app/Contents/MacOS/procmond");
        assert_eq!(
            embedded_profile(exe).as_deref(),
            Some(Path::new(
                "/Library/Application Support/procmond/procmond.app/Contents/embedded.provisionprofile"
            ))
        );
        for bare in [
            "/usr/local/bin/procmond",
            "/x/Contents/MacOS/procmond",
            "procmond",
        ] {
            assert_eq!(embedded_profile(Path::new(bare)), None, "{bare}");
        }
        assert!(profile_note(exe, Some(false)).contains("SIP off"));
        assert!(profile_note(exe, None).contains("SIP off"));
        assert!(!profile_note(exe, Some(true)).contains("SIP off"));
    }

    #[test]
    fn full_disk_access_states_from_opening_the_tcc_database() {
        assert_eq!(full_disk_access_check(&Ok(())).state, State::Yes);
        // TCC refuses with EPERM ("Operation not permitted").
        let denied = full_disk_access_check(&Err(Error::from_raw_os_error(1)));
        assert_eq!(denied.state, State::No);
        assert!(denied.detail.contains("Full Disk Access"));
        let eacces = full_disk_access_check(&Err(Error::from(ErrorKind::PermissionDenied)));
        assert_eq!(eacces.state, State::No);
        let missing = full_disk_access_check(&Err(Error::from(ErrorKind::NotFound)));
        assert_eq!(missing.state, State::Unknown);
    }

    #[test]
    fn report_serializes_as_capabilities_shows_it() {
        let access = EsAccess {
            root: true,
            entitlement: Check::new(State::Unknown, "why"),
            full_disk_access: Check::new(State::No, "denied"),
        };
        let json = serde_json::to_value(&access).expect("serializes");
        assert_eq!(json["root"], true);
        assert_eq!(json["entitlement"]["state"], "unknown");
        assert_eq!(json["full_disk_access"]["state"], "no");
        assert_eq!(json["full_disk_access"]["detail"], "denied");
        assert_eq!(
            access.summary(),
            "root=yes,es_entitlement=unknown,full_disk_access=no"
        );
    }
}
