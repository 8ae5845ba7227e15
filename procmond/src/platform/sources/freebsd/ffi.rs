//! The only unsafe code of the FreeBSD sources: sysctl(3) reads, ioctl(2)
//! on /dev/auditpipe, and auditon(2) queries. Every call hands the kernel a
//! buffer owned here together with its exact size, and nothing the kernel
//! returns is used beyond the length it reports; the bytes are parsed by
//! the safe, pure modules (`kinfo`, `bsm`).
//!
//! It also pins the layouts those modules assume: the `const` block below
//! fails the build (FreeBSD targets) if the libc crate's `kinfo_proc`,
//! `kinfo_file` or `au_mask_t` differ from the offsets in `kinfo::off` and
//! `auditpipe`.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_int, c_uint, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::auditpipe::{AuMask, EvClassMap};

#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};

    use super::kinfo::{KINFO_PROC_SIZE, off};
    assert!(size_of::<libc::kinfo_proc>() == KINFO_PROC_SIZE);
    assert!(offset_of!(libc::kinfo_proc, ki_structsize) == off::STRUCTSIZE);
    assert!(offset_of!(libc::kinfo_proc, ki_pid) == off::PID);
    assert!(offset_of!(libc::kinfo_proc, ki_ppid) == off::PPID);
    assert!(offset_of!(libc::kinfo_proc, ki_uid) == off::UID);
    assert!(offset_of!(libc::kinfo_proc, ki_ruid) == off::RUID);
    assert!(offset_of!(libc::kinfo_proc, ki_rgid) == off::RGID);
    assert!(offset_of!(libc::kinfo_proc, ki_groups) == off::GROUPS);
    assert!(offset_of!(libc::kinfo_proc, ki_start) == off::START);
    assert!(offset_of!(libc::kinfo_proc, ki_stat) == off::STAT);
    assert!(offset_of!(libc::kinfo_proc, ki_comm) == off::COMM);
    assert!(offset_of!(libc::kinfo_proc, ki_jid) == off::JID);
    assert!(offset_of!(libc::kinfo_file, kf_path) == off::KF_PATH);
    assert!(size_of::<libc::au_mask_t>() == size_of::<AuMask>());
};

unsafe extern "C" {
    /// `int auditon(int cmd, void *data, int length)` (OpenBSM
    /// `sys/bsm/audit.h`), a system call wrapper in FreeBSD's libc.
    fn auditon(cmd: c_int, data: *mut c_void, length: c_int) -> c_int;
}

/// Plain data every bit pattern of which is a valid value, so the kernel
/// may write any bytes into it.
trait Pod: Copy + Default {}
impl Pod for u32 {}
impl Pod for i32 {}
impl Pod for [u8; 8] {}
impl Pod for AuMask {}
impl Pod for EvClassMap {}

/// Largest sysctl answer accepted (the process table of a very big host is
/// a few MiB).
const MAX_SYSCTL: usize = 256 << 20;

fn sysctl_with(
    mut read: impl FnMut(*mut c_void, &mut libc::size_t) -> c_int,
) -> io::Result<Vec<u8>> {
    // The answer may grow between the size query and the read (a process
    // table): retry with the new size.
    for _ in 0..8 {
        let mut len: libc::size_t = 0;
        if read(std::ptr::null_mut(), &mut len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let cap = len.saturating_add(len / 8).saturating_add(64);
        if cap > MAX_SYSCTL {
            return Err(io::Error::other(format!("sysctl answer of {len} bytes")));
        }
        let mut buf = vec![0u8; cap];
        let mut got = cap;
        if read(buf.as_mut_ptr().cast(), &mut got) == 0 {
            buf.truncate(got.min(cap));
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOMEM) {
            return Err(err);
        }
    }
    Err(io::Error::other("sysctl answer kept growing while read"))
}

/// Reads a sysctl by MIB.
pub fn sysctl(mib: &[c_int]) -> io::Result<Vec<u8>> {
    let namelen = c_uint::try_from(mib.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    sysctl_with(|buf, len| {
        // SAFETY: `mib` is a live slice of `namelen` ints; `buf` is either
        // null (a size query) or `*len` writable bytes owned by the caller,
        // and the kernel writes at most `*len` bytes and stores the count
        // in `*len`; no new value is set (null, 0).
        unsafe { libc::sysctl(mib.as_ptr(), namelen, buf, len, std::ptr::null(), 0) }
    })
}

/// Reads a sysctl by name.
pub fn sysctl_by_name(name: &CStr) -> io::Result<Vec<u8>> {
    sysctl_with(|buf, len| {
        // SAFETY: `name` is NUL-terminated and outlives the call; `buf` and
        // `len` as in `sysctl` above.
        unsafe { libc::sysctlbyname(name.as_ptr(), buf, len, std::ptr::null(), 0) }
    })
}

/// `IOCPARM_LEN` and the direction bits of an ioctl request.
fn check_request<T>(request: u64, direction: u64) -> io::Result<libc::c_ulong> {
    let len = (request >> 16) & 0x1fff;
    if len != std::mem::size_of::<T>() as u64 || request & 0xe000_0000 != direction {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ioctl {request:#x} does not carry a {}-byte parameter",
                std::mem::size_of::<T>()
            ),
        ));
    }
    libc::c_ulong::try_from(request).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// An `_IOR` ioctl: the kernel copies a `T` out.
fn ioctl_get<T: Pod>(fd: BorrowedFd<'_>, request: u64) -> io::Result<T> {
    let request = check_request::<T>(request, 0x4000_0000)?;
    let mut value = T::default();
    // SAFETY: the request encodes exactly `size_of::<T>()` bytes to copy out
    // (checked above), `value` is that many writable bytes owned here, and
    // any bit pattern is a valid `T` (`Pod`). `fd` is open for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut value as *mut T) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// An `_IOW` ioctl: the kernel copies a `T` in.
fn ioctl_set<T: Pod>(fd: BorrowedFd<'_>, request: u64, value: T) -> io::Result<()> {
    let request = check_request::<T>(request, 0x8000_0000)?;
    // SAFETY: the request encodes exactly `size_of::<T>()` bytes to copy in
    // (checked above) and `value` is that many readable bytes; the kernel
    // does not keep the pointer. `fd` is open for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, &value as *const T) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An `_IO` ioctl: no parameter.
fn ioctl_void(fd: BorrowedFd<'_>, request: u64) -> io::Result<()> {
    let request = check_request::<()>(request, 0x2000_0000)?;
    // SAFETY: the request carries no parameter (checked above), so the
    // kernel reads and writes no user memory. `fd` is open for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn get_u32(fd: BorrowedFd<'_>, request: u64) -> io::Result<u32> {
    ioctl_get(fd, request)
}
/// The 8-byte buffer of GET_DROPS / GET_TRUNCATES (decoded by
/// `auditpipe::counter`).
pub fn get_counter(fd: BorrowedFd<'_>, request: u64) -> io::Result<[u8; 8]> {
    ioctl_get(fd, request)
}
pub fn set_u32(fd: BorrowedFd<'_>, request: u64, value: u32) -> io::Result<()> {
    ioctl_set(fd, request, value)
}
pub fn set_i32(fd: BorrowedFd<'_>, request: u64, value: i32) -> io::Result<()> {
    ioctl_set(fd, request, value)
}
pub fn set_mask(fd: BorrowedFd<'_>, request: u64, value: AuMask) -> io::Result<()> {
    ioctl_set(fd, request, value)
}
pub fn call(fd: BorrowedFd<'_>, request: u64) -> io::Result<()> {
    ioctl_void(fd, request)
}

/// auditon(2) with a `T` the kernel reads and fills.
fn auditon_io<T: Pod>(cmd: c_int, mut value: T) -> io::Result<T> {
    let length =
        c_int::try_from(std::mem::size_of::<T>()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `value` is `length` bytes owned here, readable and writable;
    // the kernel copies at most `length` bytes in and out (it refuses other
    // lengths with EINVAL), and any bit pattern is a valid `T` (`Pod`).
    let rc = unsafe { auditon(cmd, (&mut value as *mut T).cast(), length) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// auditon(A_GETCOND) or (A_GETPOLICY): an `int`.
pub fn auditon_int(cmd: c_int) -> io::Result<c_int> {
    auditon_io(cmd, 0i32)
}

/// The class bits the kernel maps `event` to (auditon A_GETCLASS).
pub fn event_class(event: u16) -> io::Result<u32> {
    let map = EvClassMap { event, class: 0 };
    auditon_io(super::auditpipe::A_GETCLASS, map).map(|m| m.class)
}

/// Sets the class bits the kernel maps `event` to (auditon A_SETCLASS).
pub fn set_event_class(event: u16, class: u32) -> io::Result<()> {
    let map = EvClassMap { event, class };
    auditon_io(super::auditpipe::A_SETCLASS, map).map(drop)
}
