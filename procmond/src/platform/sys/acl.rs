//! Who may change procmond's files on Windows, decided from SDDL text: the
//! owner a private path must have (`trusted_owner`), and which ACEs of a
//! DACL let someone else write (`untrusted_writers`, for the config file a
//! privileged agent reads). Pure string logic, compiled and tested on
//! every platform; the Win32 reads and writes are `sys::windows_fs`.

/// SYSTEM, BUILTIN\Administrators and TrustedInstaller: owners (and
/// writers) that are the machine's administration, not a user.
pub const ADMIN_SIDS: [&str; 3] = [
    "S-1-5-18",
    "S-1-5-32-544",
    "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464",
];

/// SDDL's aliases for the SIDs above.
const ADMIN_ALIASES: [&str; 2] = ["SY", "BA"];

/// The ACL of the agent's private files and directories (WAL, sinks, the
/// launcher's collector configs): SYSTEM, Administrators and the account
/// procmond runs as (LocalSystem for the service) full control, inherited
/// by everything created inside; nothing inherited from above; nobody else.
pub fn private_sddl(own_sid: &str) -> String {
    format!("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;{own_sid})")
}

/// Whether `sid` (a SID string or an SDDL alias) is SYSTEM, Administrators,
/// TrustedInstaller or `own_sid` (the account procmond runs as).
pub fn trusted_owner(sid: &str, own_sid: &str) -> bool {
    ADMIN_SIDS
        .iter()
        .chain(ADMIN_ALIASES.iter())
        .chain(std::iter::once(&own_sid))
        .any(|t| t.eq_ignore_ascii_case(sid))
}

/// The owner part of an SDDL string (`O:BA…` → `BA`), if there is one.
pub fn sddl_owner(sddl: &str) -> Option<&str> {
    let rest = sddl.strip_prefix("O:")?;
    let end = rest.find(':').map_or(rest.len(), |i| i.saturating_sub(1));
    Some(&rest[..end])
}

/// Access bits that let a trustee change a file or its security:
/// FILE_WRITE_DATA, FILE_APPEND_DATA, FILE_WRITE_EA, FILE_WRITE_ATTRIBUTES,
/// DELETE, WRITE_DAC, WRITE_OWNER, GENERIC_WRITE, GENERIC_ALL.
const WRITE_BITS: u32 =
    0x2 | 0x4 | 0x10 | 0x100 | 0x1_0000 | 0x4_0000 | 0x8_0000 | 0x4000_0000 | 0x1000_0000;

/// An SDDL rights field (`FA`, `GRGW`, `0x1200a9`) as an access mask;
/// `None` for a token it does not know (treated as writing, to be safe).
fn rights_mask(rights: &str) -> Option<u32> {
    if let Some(hex) = rights
        .strip_prefix("0x")
        .or_else(|| rights.strip_prefix("0X"))
    {
        return u32::from_str_radix(hex, 16).ok();
    }
    let mut mask = 0;
    for token in rights.as_bytes().chunks(2) {
        mask |= match token {
            b"GA" => 0x1000_0000,
            b"GR" => 0x8000_0000,
            b"GW" => 0x4000_0000,
            b"GX" => 0x2000_0000,
            b"FA" => 0x1F_01FF,
            b"FR" => 0x12_0089,
            b"FW" => 0x12_0116,
            b"FX" => 0x12_00A0,
            b"RC" => 0x2_0000,
            b"SD" => 0x1_0000,
            b"WD" => 0x4_0000,
            b"WO" => 0x8_0000,
            // Directory-service names for the low bits, as Windows prints
            // file rights it has no file token for.
            b"CC" => 0x1,
            b"DC" => 0x2,
            b"LC" => 0x4,
            b"SW" => 0x8,
            b"RP" => 0x10,
            b"WP" => 0x20,
            b"DT" => 0x40,
            b"LO" => 0x80,
            b"CR" => 0x100,
            _ => return None,
        };
    }
    Some(mask)
}

/// The trustees of `sddl`'s allow ACEs that may write the object, other
/// than SYSTEM, Administrators, TrustedInstaller, `own_sid` and CREATOR
/// OWNER on inherit-only ACEs.
pub fn untrusted_writers(sddl: &str, own_sid: &str) -> Vec<String> {
    let Some(dacl) = sddl.find("D:").map(|i| &sddl[i + 2..]) else {
        return Vec::new();
    };
    let dacl = dacl.find("S:").map_or(dacl, |i| &dacl[..i]);
    let mut out = Vec::new();
    for ace in dacl.split('(').skip(1) {
        let ace = ace.trim_end_matches(')');
        let fields: Vec<&str> = ace.split(';').collect();
        let [kind, flags, rights, _, _, trustee, ..] = fields[..] else {
            continue;
        };
        if !kind.eq_ignore_ascii_case("A") || flags.contains("IO") {
            continue;
        }
        let writes = rights_mask(rights).is_none_or(|m| m & WRITE_BITS != 0);
        if writes && !trusted_owner(trustee, own_sid) && !out.iter().any(|t| t == trustee) {
            out.push(trustee.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "S-1-5-21-1-2-3-1000";

    #[test]
    fn owners_are_the_administration_or_this_account() {
        for ok in ["S-1-5-18", "BA", "SY", "S-1-5-32-544", ME] {
            assert!(trusted_owner(ok, ME), "{ok}");
        }
        for bad in ["S-1-5-21-1-2-3-1001", "BU", "S-1-5-32-545", "WD", "S-1-1-0"] {
            assert!(!trusted_owner(bad, ME), "{bad}");
        }
        assert_eq!(sddl_owner("O:BAD:P(A;;FA;;;SY)"), Some("BA"));
        assert_eq!(
            sddl_owner("O:S-1-5-21-1-2-3-1001G:SYD:"),
            Some("S-1-5-21-1-2-3-1001")
        );
        assert_eq!(sddl_owner("D:P(A;;FA;;;SY)"), None);
    }

    #[test]
    fn writers_other_than_admins_are_named() {
        // ProgramData's default for a new file: Users may read and execute.
        let inherited = "D:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)(A;ID;0x1200a9;;;BU)";
        assert!(untrusted_writers(inherited, ME).is_empty());
        // ProgramData subfolders let Users create files (append/write).
        let programdata = "D:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)(A;OICIID;0x1200a9;;;BU)(A;CIID;DCLCRPCR;;;BU)(A;OICIIOID;GA;;;CO)";
        assert_eq!(untrusted_writers(programdata, ME), ["BU"]);
        assert_eq!(untrusted_writers("D:(A;;FA;;;WD)", ME), ["WD"]);
        assert_eq!(untrusted_writers("D:(A;;GRGW;;;AU)", ME), ["AU"]);
        assert_eq!(
            untrusted_writers("D:(A;;0x12019f;;;S-1-5-21-9)", ME),
            ["S-1-5-21-9"]
        );
        assert!(untrusted_writers("D:(D;;FA;;;WD)(A;;FA;;;S-1-5-21-1-2-3-1000)", ME).is_empty());
        assert_eq!(
            untrusted_writers("D:(A;;ZZ;;;BU)", ME),
            ["BU"],
            "unknown rights count"
        );
    }
}
