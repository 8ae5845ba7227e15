//! Opening a BPF iterator from an iterator link's file descriptor.
//!
//! When the probes are loaded by the short-lived loader process
//! (`sources::ebpf::handover`), the task iterator arrives here as a bare
//! link fd, and aya offers no safe way to open an iterator from one: its
//! link types are built only by its own loader. `BPF_ITER_CREATE` is a
//! single command of bpf(2) taking that fd; this module is that one call.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `BPF_ITER_CREATE` in `enum bpf_cmd` (include/uapi/linux/bpf.h, 5.8+).
const BPF_ITER_CREATE: libc::c_long = 33;

/// `attr.iter_create` of `union bpf_attr`: the link fd and flags (0).
#[repr(C)]
struct IterCreate {
    link_fd: u32,
    flags: u32,
}

/// A new iterator over `link` (a `BPF_LINK_TYPE_ITER` link): a file whose
/// reads run the iterator program once, from the start.
pub fn create(link: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let attr = IterCreate {
        link_fd: link.as_raw_fd() as u32,
        flags: 0,
    };
    // SAFETY: `attr` is a live, initialised `repr(C)` value laid out like
    // the kernel's `iter_create` member (two u32s); the size passed is its
    // own, and the kernel reads no further (it zero-fills the rest of
    // `union bpf_attr`). The kernel only reads `attr` and keeps no pointer
    // to it after the call returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ITER_CREATE,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<IterCreate>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(ret).map_err(|_| std::io::Error::other("bpf(2) returned no fd"))?;
    // SAFETY: on success bpf(BPF_ITER_CREATE) returns a new file
    // descriptor that this process owns and nothing else refers to.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
