//! procmond's private files and directories on Windows (`%ProgramData%\
//! procmond\…`: the WAL, sinks, logs, the ETW lock, collector configs), and
//! the config file a privileged agent reads.
//!
//! `make_private` refuses a path that is a reparse point (a link or
//! junction someone put there) or that an account other than SYSTEM,
//! Administrators or procmond's own owns — a directory a user pre-created
//! while the agent was not installed, whose owner keeps WRITE_DAC however
//! the DACL is set — and then sets owner and DACL together. The config
//! check refuses a file others may write (`sys::acl::untrusted_writers`).
//! Win32 calls, so `unsafe`, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::io;
use std::os::windows::fs::MetadataExt;
use std::path::Path;

use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    DACL_SECURITY_INFORMATION, GetFileSecurityW, OBJECT_SECURITY_INFORMATION,
    OWNER_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION, SetFileSecurityW,
};
use windows_sys::Win32::Storage::FileSystem::FILE_ATTRIBUTE_REPARSE_POINT;

use super::acl::{sddl_owner, trusted_owner, untrusted_writers};
use super::windows::{Local, SecurityDescriptor, check, from_wide_ptr, wide_path};

/// The parts `info` names of `path`'s security descriptor, as SDDL.
pub fn path_sddl(path: &Path, info: OBJECT_SECURITY_INFORMATION) -> io::Result<String> {
    let name = wide_path(path);
    let mut needed = 0u32;
    // SAFETY: a null buffer of length 0 only asks for the size.
    unsafe { GetFileSecurityW(name.as_ptr(), info, std::ptr::null_mut(), 0, &mut needed) };
    let mut buf = vec![0u64; (needed as usize).div_ceil(8).max(1)];
    // SAFETY: `buf` is writable for its whole length in bytes and aligned.
    check(
        unsafe {
            GetFileSecurityW(
                name.as_ptr(),
                info,
                buf.as_mut_ptr().cast(),
                (buf.len() * 8) as u32,
                &mut needed,
            )
        },
        "GetFileSecurityW",
    )?;
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `buf` holds the descriptor just read; `text` receives a
    // LocalAlloc'd string that `Local` frees.
    check(
        unsafe {
            ConvertSecurityDescriptorToStringSecurityDescriptorW(
                buf.as_mut_ptr().cast(),
                SDDL_REVISION_1,
                info,
                &mut text,
                std::ptr::null_mut(),
            )
        },
        "ConvertSecurityDescriptorToStringSecurityDescriptorW",
    )?;
    let _owned = Local(text.cast());
    // SAFETY: the API returned a NUL-terminated string it allocated.
    Ok(unsafe { from_wide_ptr(text) })
}

/// Writes the parts `info` names from `sddl` onto `path`.
fn set_path_security(path: &Path, sddl: &str, info: OBJECT_SECURITY_INFORMATION) -> io::Result<()> {
    let sd = SecurityDescriptor::from_sddl(sddl)?;
    let name = wide_path(path);
    // SAFETY: `name` is NUL-terminated, `sd` a valid descriptor; both
    // outlive the call, which copies what it needs into the file system.
    check(
        unsafe { SetFileSecurityW(name.as_ptr(), info, sd.as_ptr()) },
        "SetFileSecurityW",
    )
}

fn denied(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg)
}

/// Gives `path` (an existing file or directory) procmond's private ACL
/// (`acl::private_sddl`) and an owner of the administration's (BA
/// when elevated, else this account); refuses a reparse point or a path
/// owned by anyone else.
pub fn make_private(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_attributes() & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        return Err(denied(format!(
            "{} is a link or junction: refusing to use it",
            path.display()
        )));
    }
    let own = super::windows::own_user_sid()?;
    let current = path_sddl(path, OWNER_SECURITY_INFORMATION)?;
    let owner = sddl_owner(&current).unwrap_or("");
    if !trusted_owner(owner, &own) {
        return Err(denied(format!(
            "{} is owned by {owner}, not SYSTEM, Administrators or this account: it was made by another user; remove it and start again",
            path.display()
        )));
    }
    let new_owner = if super::windows::token_elevated().unwrap_or(false) {
        "BA".to_string()
    } else {
        own.clone()
    };
    let sddl = format!("O:{new_owner}{}", super::acl::private_sddl(&own));
    set_path_security(
        path,
        &sddl,
        OWNER_SECURITY_INFORMATION
            | DACL_SECURITY_INFORMATION
            | PROTECTED_DACL_SECURITY_INFORMATION,
    )
    .map_err(|e| io::Error::new(e.kind(), format!("restricting {}: {e}", path.display())))
}

/// Refuses, for an elevated process, a config file that accounts other
/// than SYSTEM, Administrators, TrustedInstaller and this one may write.
pub fn refuse_writable_config(path: &Path) -> io::Result<()> {
    if !super::windows::token_elevated().unwrap_or(false) {
        return Ok(());
    }
    let own = super::windows::own_user_sid()?;
    let dacl = path_sddl(path, DACL_SECURITY_INFORMATION)?;
    let writers = untrusted_writers(&dacl, &own);
    if writers.is_empty() {
        return Ok(());
    }
    Err(denied(format!(
        "config {} may be written by {writers:?}: a privileged agent will not read it (leave write access to SYSTEM and Administrators, e.g. `icacls FILE /inheritance:r /grant:r SYSTEM:F Administrators:F`)",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("procmond-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn private_paths_get_an_owner_and_refuse_other_owners() {
        let dir = fresh("owner");
        make_private(&dir).expect("ours");
        let sddl = path_sddl(&dir, OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION)
            .expect("read back");
        let own = super::super::windows::own_user_sid().expect("own");
        let owner = sddl_owner(&sddl).unwrap_or("");
        assert!(trusted_owner(owner, &own), "{sddl}");
        // A directory another account made (here: Everyone as owner).
        let taken = set_path_security(&dir, "O:WD", OWNER_SECURITY_INFORMATION);
        let now = path_sddl(&dir, OWNER_SECURITY_INFORMATION).unwrap_or_default();
        if taken.is_err() || !now.contains("O:WD") {
            eprintln!("cannot give the directory another owner here ({taken:?}, {now}): skipped");
        } else {
            let e = make_private(&dir).expect_err("another owner");
            assert!(e.to_string().contains("owned by WD"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn private_paths_refuse_links() {
        let dir = fresh("link");
        let target = dir.join("target");
        std::fs::create_dir_all(&target).expect("target");
        let link = dir.join("link");
        match std::os::windows::fs::symlink_dir(&target, &link) {
            Ok(()) => {
                // wine cannot even stat its links: any refusal will do.
                let e = make_private(&link).expect_err("a link");
                if !e.to_string().contains("link or junction") {
                    eprintln!("the link was refused with: {e}");
                }
            }
            Err(e) => eprintln!("no symbolic link here ({e}): skipped"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
