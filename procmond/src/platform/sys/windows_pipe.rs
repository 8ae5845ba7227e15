//! The Win32 calls of the named-pipe bus that check who is at the other
//! end (`bus::pipe`): the client opens the pipe asking only for what the
//! DACL grants it (read + FILE_WRITE_DATA, never FILE_CREATE_PIPE_INSTANCE)
//! and reads the pipe's owner before it sends anything; the server names
//! its client by impersonating it (`ImpersonateNamedPipeClient` →
//! `OpenThreadToken` → `RevertToSelf`), not by a process id that can be
//! reused. Its own module because every call is `unsafe`; each says why it
//! is sound.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::RawHandle;

use tokio::net::windows::named_pipe::NamedPipeClient;
use windows_sys::Win32::Foundation::{ERROR_SUCCESS, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, GetSecurityInfo, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, RevertToSelf, TOKEN_QUERY,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_OVERLAPPED, FILE_GENERIC_READ, FILE_WRITE_DATA, OPEN_EXISTING,
    SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{GetNamedPipeServerProcessId, ImpersonateNamedPipeClient};
use windows_sys::Win32::System::Threading::{GetCurrentThread, OpenThreadToken};

use super::windows::{Handle, Local, check, from_wide_ptr, token_user_sid};

/// What a client asks for: read, and write data — the rights the pipe's
/// DACL gives `broker.allowed_sids` (`bus::pipe::pipe_sddl`).
pub const CLIENT_ACCESS: u32 = FILE_GENERIC_READ | FILE_WRITE_DATA;

/// Opens the client end of pipe `name` for overlapped I/O with
/// `CLIENT_ACCESS`, letting the server identify (not impersonate) us.
/// Call inside a tokio runtime.
pub fn open_client(name: &OsStr) -> io::Result<NamedPipeClient> {
    let wide: Vec<u16> = name.encode_wide().chain(std::iter::once(0)).collect();
    // SAFETY: `wide` is NUL-terminated and outlives the call; no security
    // attributes or template are passed.
    let handle = unsafe {
        CreateFileW(
            wide.as_ptr(),
            CLIENT_ACCESS,
            0,
            std::ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
            std::ptr::null_mut(),
        )
    };
    if handle == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `handle` is a pipe client handle just opened with
    // FILE_FLAG_OVERLAPPED and owned by nobody else; tokio takes it over
    // (and closes it on drop, also on error).
    unsafe { NamedPipeClient::from_raw_handle(handle.cast()) }
}

/// The owner SID of the pipe object behind `pipe` (a handle the caller
/// keeps open), as `S-1-…`.
pub fn owner_sid(pipe: RawHandle) -> io::Result<String> {
    let mut owner: PSID = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `pipe` is a live handle opened with READ_CONTROL (in
    // FILE_GENERIC_READ); `owner` points into `sd`, which the call
    // LocalAlloc's and `Local` frees after the SID was converted.
    let status = unsafe {
        GetSecurityInfo(
            pipe.cast(),
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    let _sd = Local(sd);
    if status != ERROR_SUCCESS {
        return Err(io::Error::from_raw_os_error(status as i32));
    }
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `owner` is a valid SID inside `sd`, alive until `_sd` drops.
    check(
        unsafe { ConvertSidToStringSidW(owner, &mut text) },
        "ConvertSidToStringSidW",
    )?;
    let _text = Local(text.cast());
    // SAFETY: the API returned a NUL-terminated string it allocated.
    Ok(unsafe { from_wide_ptr(text) })
}

/// The user SID of the process serving the pipe behind `pipe` (a client
/// handle the caller keeps open; the server process is alive while the
/// connection is). Fails where this account may not read that process's
/// token (a standard user and a SYSTEM service): `owner_sid` decides then.
pub fn server_user_sid(pipe: RawHandle) -> io::Result<String> {
    let mut pid = 0u32;
    // SAFETY: `pipe` is a live client handle borrowed from the caller;
    // `pid` is a valid out-pointer.
    check(
        unsafe { GetNamedPipeServerProcessId(pipe.cast(), &mut pid) },
        "GetNamedPipeServerProcessId",
    )?;
    super::windows::process_user_sid(pid)
}

/// The user SID of the client at the other end of `pipe` (a server handle
/// the caller keeps open, from which data has been read: impersonation
/// takes the security context of the last message read).
pub fn client_sid(pipe: RawHandle) -> io::Result<String> {
    // SAFETY: `pipe` is a live server-end handle borrowed from the caller.
    check(
        unsafe { ImpersonateNamedPipeClient(pipe.cast()) },
        "ImpersonateNamedPipeClient",
    )?;
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: GetCurrentThread is a pseudo-handle; OpenAsSelf (TRUE) opens
    // the token with this process's own rights; `token` is an out-pointer.
    let opened = check(
        unsafe { OpenThreadToken(GetCurrentThread(), TOKEN_QUERY, 1, &mut token) },
        "OpenThreadToken",
    );
    // SAFETY: ends the impersonation this thread started above, before
    // anything else runs on it; a failure here must not be ignored.
    let reverted = check(unsafe { RevertToSelf() }, "RevertToSelf");
    if let Err(e) = reverted {
        // RevertToSelf's documentation: running on in the client's
        // context is not appropriate; shut down.
        tracing::error!(error = %e, "cannot stop impersonating a pipe client: aborting");
        std::process::abort();
    }
    opened?;
    token_user_sid(&Handle(token))
}
