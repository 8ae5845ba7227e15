//! Every Win32 call procmond makes itself, and therefore every `unsafe`
//! block of the Windows build: the named pipe's client identity and DACL,
//! token queries (user SID, elevation, privileges), directory ACLs, the
//! ETW loss query (`ControlTraceW`), the DOS device map that turns NT
//! paths into drive paths, and the facts process ids are computed with
//! (`MachineGuid`, process creation times).
//!
//! Each function hands back owned Rust values (strings, numbers, RAII
//! wrappers); no raw pointer or handle leaves this module except where the
//! caller passes its own handle in. The workspace denies `unsafe_code`;
//! this file alone lifts it, and every block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::os::windows::io::RawHandle;

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_INSUFFICIENT_BUFFER, ERROR_SUCCESS, FILETIME, HANDLE, LUID, LocalFree,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    AdjustTokenPrivileges, DACL_SECURITY_INFORMATION, GetTokenInformation, LUID_AND_ATTRIBUTES,
    LookupPrivilegeValueW, PSECURITY_DESCRIPTOR, SE_PRIVILEGE_ENABLED, SECURITY_ATTRIBUTES,
    TOKEN_ADJUST_PRIVILEGES, TOKEN_ELEVATION, TOKEN_INFORMATION_CLASS, TOKEN_PRIVILEGES,
    TOKEN_QUERY, TOKEN_USER, TokenElevation, TokenPrivileges, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{GetLogicalDrives, QueryDosDeviceW};
use windows_sys::Win32::System::Diagnostics::Etw::{
    CONTROLTRACE_HANDLE, ControlTraceW, EVENT_TRACE_CONTROL_QUERY, EVENT_TRACE_PROPERTIES,
    WNODE_FLAG_TRACED_GUID,
};
use windows_sys::Win32::System::Pipes::GetNamedPipeClientProcessId;
use windows_sys::Win32::System::Registry::{
    HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ, RRF_SUBKEY_WOW6464KEY, RegGetValueW,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetProcessTimes, OpenProcess, OpenProcessToken,
    PROCESS_QUERY_LIMITED_INFORMATION,
};

/// `s` as a NUL-terminated UTF-16 string.
pub(super) fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

pub(super) fn wide_path(p: &std::path::Path) -> Vec<u16> {
    use std::os::windows::ffi::OsStrExt;
    p.as_os_str()
        .encode_wide()
        .chain(std::iter::once(0))
        .collect()
}

/// A `BOOL` result as `io::Result`, with the thread's last error.
pub(super) fn check(ok: i32, what: &str) -> io::Result<()> {
    if ok != 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// A kernel handle closed on drop.
pub(super) struct Handle(pub(super) HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was returned open by the API that created it,
        // is owned by this value alone and is closed exactly once, here.
        unsafe { CloseHandle(self.0) };
    }
}

/// Memory the system allocated with LocalAlloc for us, freed on drop.
pub(super) struct Local(pub(super) *mut c_void);

impl Drop for Local {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from an API documented to allocate
            // with LocalAlloc and hand ownership to the caller; it is freed
            // once, and nothing borrowed from it outlives this value.
            unsafe { LocalFree(self.0) };
        }
    }
}

/// A NUL-terminated UTF-16 string at `p`, as a Rust string.
///
/// SAFETY (for callers): `p` must point to a NUL-terminated UTF-16 string
/// that stays valid for the duration of the call.
pub(super) unsafe fn from_wide_ptr(p: *const u16) -> String {
    let mut len = 0;
    // SAFETY: the caller guarantees a terminating NUL, so every read up to
    // and including it is inside the string.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` elements were just read one by one above.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Opens the token of the current process (`access`).
fn own_token(access: u32) -> io::Result<Handle> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no
    // closing; `token` is a valid out-pointer for the new handle.
    check(
        unsafe { OpenProcessToken(GetCurrentProcess(), access, &mut token) },
        "OpenProcessToken",
    )?;
    Ok(Handle(token))
}

/// One GetTokenInformation class, in a buffer aligned for its structure.
fn token_info(token: &Handle, class: TOKEN_INFORMATION_CLASS) -> io::Result<Vec<u64>> {
    let mut needed = 0u32;
    // SAFETY: a null buffer of length 0 only asks for the size needed.
    let ok = unsafe { GetTokenInformation(token.0, class, std::ptr::null_mut(), 0, &mut needed) };
    if ok == 0
        && io::Error::last_os_error().raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32)
    {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u64; (needed as usize).div_ceil(8).max(1)];
    let len = (buf.len() * 8) as u32;
    // SAFETY: `buf` is writable for `len` bytes and 8-byte aligned, which
    // satisfies every TOKEN_* structure; the call writes at most `len`.
    check(
        unsafe { GetTokenInformation(token.0, class, buf.as_mut_ptr().cast(), len, &mut needed) },
        "GetTokenInformation",
    )?;
    Ok(buf)
}

/// The user SID of `token` as a string (`S-1-5-18`).
pub(super) fn token_user_sid(token: &Handle) -> io::Result<String> {
    let buf = token_info(token, TokenUser)?;
    // SAFETY: GetTokenInformation(TokenUser) filled `buf` with a TOKEN_USER
    // (aligned, see token_info) whose SID pointer points into `buf` itself.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID inside `buf`, alive for this call;
    // `text` receives a LocalAlloc'd string that `Local` frees.
    check(
        unsafe { ConvertSidToStringSidW(sid, &mut text) },
        "ConvertSidToStringSidW",
    )?;
    let owned = Local(text.cast());
    // SAFETY: the API returned a NUL-terminated string it allocated.
    let s = unsafe { from_wide_ptr(text) };
    drop(owned);
    Ok(s)
}

/// The user SID this process runs as.
pub fn own_user_sid() -> io::Result<String> {
    token_user_sid(&own_token(TOKEN_QUERY)?)
}

/// The user SID of process `pid` (its primary token).
pub fn process_user_sid(pid: u32) -> io::Result<String> {
    let process = open_process_query(pid)?;
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is an open handle with query access; `token` is a
    // valid out-pointer.
    check(
        unsafe { OpenProcessToken(process.0, TOKEN_QUERY, &mut token) },
        "OpenProcessToken(client)",
    )?;
    token_user_sid(&Handle(token))
}

/// Opens process `pid` with `PROCESS_QUERY_LIMITED_INFORMATION`.
fn open_process_query(pid: u32) -> io::Result<Handle> {
    // SAFETY: plain call; a null result is checked before use.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("OpenProcess({pid}): {e}")));
    }
    Ok(Handle(process))
}

/// The creation time of process `pid` (GetProcessTimes), as FILETIME ticks
/// (100 ns since 1601) in one u64: what the CPID hashes.
pub fn process_create_time(pid: u32) -> io::Result<u64> {
    let process = open_process_query(pid)?;
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: `process` is open with PROCESS_QUERY_LIMITED_INFORMATION, the
    // access GetProcessTimes documents; the four out-pointers are live
    // FILETIMEs owned here.
    check(
        unsafe { GetProcessTimes(process.0, &mut created, &mut exited, &mut kernel, &mut user) },
        "GetProcessTimes",
    )?;
    Ok(u64::from(created.dwHighDateTime) << 32 | u64::from(created.dwLowDateTime))
}

/// `HKLM\SOFTWARE\Microsoft\Cryptography\MachineGuid` (REG_SZ), from the
/// 64-bit view of the registry whatever this build's bitness.
pub fn machine_guid() -> io::Result<String> {
    let key = wide(r"SOFTWARE\Microsoft\Cryptography");
    let value = wide("MachineGuid");
    let mut buf = [0u16; 128];
    let mut bytes = u32::try_from(std::mem::size_of_val(&buf)).map_err(io::Error::other)?;
    // SAFETY: `key` and `value` are NUL-terminated UTF-16; `buf` is `bytes`
    // writable bytes, and RegGetValueW writes at most that many (with
    // RRF_RT_REG_SZ the string comes back NUL-terminated) and stores the
    // count in `bytes`; the type out-pointer may be null.
    let rc = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_SZ | RRF_SUBKEY_WOW6464KEY,
            std::ptr::null_mut(),
            buf.as_mut_ptr().cast(),
            &mut bytes,
        )
    };
    if rc != ERROR_SUCCESS {
        let e = io::Error::from_raw_os_error(rc as i32);
        return Err(io::Error::new(
            e.kind(),
            format!("RegGetValueW(MachineGuid): {e}"),
        ));
    }
    let units = (bytes as usize / 2).min(buf.len());
    let text = &buf[..units];
    let end = text.iter().position(|c| *c == 0).unwrap_or(text.len());
    Ok(String::from_utf16_lossy(&text[..end]))
}

/// The process id at the other end of the named pipe `pipe` (a handle the
/// caller owns and keeps open across the call).
pub fn pipe_client_pid(pipe: RawHandle) -> io::Result<u32> {
    let mut pid = 0u32;
    // SAFETY: `pipe` is a live pipe handle borrowed from the caller's
    // NamedPipeServer; `pid` is a valid out-pointer.
    check(
        unsafe { GetNamedPipeClientProcessId(pipe.cast(), &mut pid) },
        "GetNamedPipeClientProcessId",
    )?;
    Ok(pid)
}

/// A self-relative security descriptor built from SDDL.
#[derive(Debug)]
pub struct SecurityDescriptor {
    sd: PSECURITY_DESCRIPTOR,
}

// SAFETY: the descriptor is an immutable, self-contained block of memory
// that no other code holds a pointer to; moving it across threads is fine.
unsafe impl Send for SecurityDescriptor {}
// SAFETY: it is only ever read after construction.
unsafe impl Sync for SecurityDescriptor {}

impl SecurityDescriptor {
    /// Parses `sddl` (e.g. `D:P(A;;GA;;;SY)`).
    pub fn from_sddl(sddl: &str) -> io::Result<Self> {
        let text = wide(sddl);
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `text` is NUL-terminated and outlives the call; `sd`
        // receives a LocalAlloc'd descriptor that Drop frees.
        check(
            unsafe {
                ConvertStringSecurityDescriptorToSecurityDescriptorW(
                    text.as_ptr(),
                    SDDL_REVISION_1,
                    &mut sd,
                    std::ptr::null_mut(),
                )
            },
            "ConvertStringSecurityDescriptorToSecurityDescriptorW",
        )?;
        Ok(Self { sd })
    }
}

impl SecurityDescriptor {
    /// The descriptor, for a call that only reads it.
    pub(super) fn as_ptr(&self) -> PSECURITY_DESCRIPTOR {
        self.sd
    }
}

impl Drop for SecurityDescriptor {
    fn drop(&mut self) {
        drop(Local(self.sd));
    }
}

/// Creates a named-pipe server instance whose DACL is `sd`.
pub fn create_pipe(
    options: &tokio::net::windows::named_pipe::ServerOptions,
    name: &std::ffi::OsStr,
    sd: &SecurityDescriptor,
) -> io::Result<tokio::net::windows::named_pipe::NamedPipeServer> {
    let mut attrs = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.sd,
        bInheritHandle: 0,
    };
    // SAFETY: `attrs` is a fully initialized SECURITY_ATTRIBUTES whose
    // descriptor `sd` outlives the call; CreateNamedPipeW copies what it
    // needs and keeps no pointer to either.
    unsafe { options.create_with_security_attributes_raw(name, (&raw mut attrs).cast::<c_void>()) }
}

pub use super::windows_fs::make_private;

/// The DACL of `path`, as SDDL (`D:P(A;OICI;FA;;;SY)…`).
pub fn path_dacl(path: &std::path::Path) -> io::Result<String> {
    super::windows_fs::path_sddl(path, DACL_SECURITY_INFORMATION)
}

/// Whether this process's token is elevated (a full administrator token,
/// or LocalSystem).
pub fn token_elevated() -> io::Result<bool> {
    let buf = token_info(&own_token(TOKEN_QUERY)?, TokenElevation)?;
    // SAFETY: TokenElevation filled `buf` (aligned) with a TOKEN_ELEVATION.
    Ok(unsafe { (*buf.as_ptr().cast::<TOKEN_ELEVATION>()).TokenIsElevated } != 0)
}

/// A privilege in this process's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivilegeState {
    /// In the token: it can be enabled.
    pub present: bool,
    pub enabled: bool,
}

fn lookup_privilege(name: &str) -> io::Result<LUID> {
    let text = wide(name);
    let mut luid = LUID::default();
    // SAFETY: `text` is NUL-terminated; `luid` a valid out-pointer.
    check(
        unsafe { LookupPrivilegeValueW(std::ptr::null(), text.as_ptr(), &mut luid) },
        "LookupPrivilegeValueW",
    )?;
    Ok(luid)
}

/// Whether the token holds privilege `name` (`SeDebugPrivilege`), and
/// whether it is enabled.
pub fn privilege(name: &str) -> io::Result<PrivilegeState> {
    let luid = lookup_privilege(name)?;
    let buf = token_info(&own_token(TOKEN_QUERY)?, TokenPrivileges)?;
    let base = buf.as_ptr().cast::<TOKEN_PRIVILEGES>();
    // SAFETY: TokenPrivileges filled `buf` with a TOKEN_PRIVILEGES header
    // followed by `PrivilegeCount` entries, all inside `buf`.
    let count = unsafe { (*base).PrivilegeCount } as usize;
    // SAFETY: as above: the entries start at the `Privileges` field and
    // `count` of them lie within the buffer GetTokenInformation sized.
    let entries: &[LUID_AND_ATTRIBUTES] =
        unsafe { std::slice::from_raw_parts((&raw const (*base).Privileges).cast(), count) };
    Ok(entries
        .iter()
        .find(|e| e.Luid.LowPart == luid.LowPart && e.Luid.HighPart == luid.HighPart)
        .map_or(
            PrivilegeState {
                present: false,
                enabled: false,
            },
            |e| PrivilegeState {
                present: true,
                enabled: e.Attributes & SE_PRIVILEGE_ENABLED != 0,
            },
        ))
}

/// Enables privilege `name` in this process's token; false when the token
/// does not hold it.
pub fn enable_privilege(name: &str) -> io::Result<bool> {
    let luid = lookup_privilege(name)?;
    let token = own_token(TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY)?;
    let state = TOKEN_PRIVILEGES {
        PrivilegeCount: 1,
        Privileges: [LUID_AND_ATTRIBUTES {
            Luid: luid,
            Attributes: SE_PRIVILEGE_ENABLED,
        }],
    };
    // SAFETY: `state` is a complete one-entry TOKEN_PRIVILEGES; no previous
    // state is requested (null, 0).
    check(
        unsafe {
            AdjustTokenPrivileges(
                token.0,
                0,
                &state,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        },
        "AdjustTokenPrivileges",
    )?;
    // It "succeeds" with ERROR_NOT_ALL_ASSIGNED when the token lacks it.
    Ok(io::Error::last_os_error().raw_os_error() == Some(ERROR_SUCCESS as i32))
}

/// Makes `file` this process's standard error for good (the service has
/// none): std's `stderr`, so the log, writes there, and children spawned
/// with an inherited stderr (the launcher, the collectors) write there too.
pub fn redirect_stderr(file: std::fs::File) -> io::Result<()> {
    use std::os::windows::io::IntoRawHandle;
    use windows_sys::Win32::System::Console::{STD_ERROR_HANDLE, SetStdHandle};
    let handle = file.into_raw_handle();
    // SAFETY: `handle` is an open file handle whose ownership is given up
    // here (into_raw_handle) and never closed: it stays valid for the rest
    // of the process, as a standard handle must.
    check(
        unsafe { SetStdHandle(STD_ERROR_HANDLE, handle.cast()) },
        "SetStdHandle",
    )
}

/// Whether this runs under wine (ntdll exports `wine_get_version`): the
/// tests name wine's gaps (a stub ControlTraceW, FILE_FLAG_FIRST_PIPE_INSTANCE
/// not enforced) instead of failing on them.
pub fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
    let ntdll = wide("ntdll.dll");
    // SAFETY: `ntdll` is NUL-terminated; ntdll is always loaded, and a null
    // result is checked before use.
    let module = unsafe { GetModuleHandleW(ntdll.as_ptr()) };
    if module.is_null() {
        return false;
    }
    // SAFETY: `module` is a loaded module's handle; the name is a
    // NUL-terminated ASCII string; the result is only tested for presence.
    unsafe { GetProcAddress(module, c"wine_get_version".as_ptr().cast()) }.is_some()
}

/// Bytes this account may still write on the volume holding `dir`
/// (`GetDiskFreeSpaceExW`: quotas included), for the WAL's reserve.
pub fn free_bytes(dir: &std::path::Path) -> io::Result<u64> {
    use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;
    let name = wide_path(dir);
    let mut available = 0u64;
    // SAFETY: `name` is NUL-terminated; `available` is a valid out-pointer;
    // the two totals are not requested (null).
    check(
        unsafe {
            GetDiskFreeSpaceExW(
                name.as_ptr(),
                &mut available,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        },
        "GetDiskFreeSpaceExW",
    )?;
    Ok(available)
}

/// What an ETW session says it lost (`ControlTraceW` QUERY).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceLoss {
    pub events_lost: u32,
    pub realtime_buffers_lost: u32,
    pub log_buffers_lost: u32,
    pub buffers: u32,
}

/// Room after EVENT_TRACE_PROPERTIES for the logger and log file names.
const NAME_CHARS: usize = 1024;

/// Queries the running session named `name`.
pub fn query_trace(name: &str) -> io::Result<TraceLoss> {
    let header = std::mem::size_of::<EVENT_TRACE_PROPERTIES>();
    let total = header + 2 * NAME_CHARS * 2;
    let mut buf = vec![0u64; total.div_ceil(8)];
    let props = buf.as_mut_ptr().cast::<EVENT_TRACE_PROPERTIES>();
    // SAFETY: `buf` is zeroed, 8-byte aligned and larger than the header,
    // so writing the header's fields through `props` stays inside it.
    unsafe {
        (*props).Wnode.BufferSize = (buf.len() * 8) as u32;
        (*props).Wnode.Flags = WNODE_FLAG_TRACED_GUID;
        (*props).LoggerNameOffset = header as u32;
        (*props).LogFileNameOffset = (header + NAME_CHARS * 2) as u32;
    }
    let text = wide(name);
    // SAFETY: `props` heads a buffer of Wnode.BufferSize bytes with room
    // for both names at the offsets given; `text` is NUL-terminated.
    let rc = unsafe {
        ControlTraceW(
            CONTROLTRACE_HANDLE { Value: 0 },
            text.as_ptr(),
            props,
            EVENT_TRACE_CONTROL_QUERY,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    // SAFETY: ControlTraceW filled the header it was given.
    let p = unsafe { &*props };
    Ok(TraceLoss {
        events_lost: p.EventsLost,
        realtime_buffers_lost: p.RealTimeBuffersLost,
        log_buffers_lost: p.LogBuffersLost,
        buffers: p.NumberOfBuffers,
    })
}

/// Each drive letter with the NT device it names (`C:` →
/// `\Device\HarddiskVolume3`), for `sources::etw::ntpath`.
pub fn dos_devices() -> Vec<(String, String)> {
    // SAFETY: plain call without arguments.
    let drives = unsafe { GetLogicalDrives() };
    let mut out = Vec::new();
    let mut target = vec![0u16; 1024];
    for (bit, letter) in (b'A'..=b'Z').enumerate() {
        if drives & (1 << bit) == 0 {
            continue;
        }
        let drive = format!("{}:", letter as char);
        let name = wide(&drive);
        // SAFETY: `name` is NUL-terminated; `target` is writable for the
        // length passed; the result is the number of chars written.
        let n = unsafe { QueryDosDeviceW(name.as_ptr(), target.as_mut_ptr(), target.len() as u32) };
        if n == 0 {
            continue;
        }
        // The first of the NUL-separated targets is the current one.
        let first: Vec<u16> = target[..n as usize]
            .iter()
            .copied()
            .take_while(|c| *c != 0)
            .collect();
        out.push((String::from_utf16_lossy(&first), drive));
    }
    out
}

#[cfg(test)]
#[path = "windows_tests.rs"]
mod tests;
