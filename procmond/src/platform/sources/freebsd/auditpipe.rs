//! The numbers of FreeBSD's audit interfaces: auditpipe(4) ioctls and
//! auditon(2) commands. Pure constants, compiled everywhere so that their
//! encoding is tested on Linux; only `ffi.rs` (FreeBSD) passes them to the
//! kernel.
//!
//! Sources: `sys/security/audit/audit_ioctl.h` (the `AUDITPIPE_*` ioctls,
//! group 'A'), `sys/sys/ioccom.h` (the `_IO`/`_IOR`/`_IOW` encoding), and
//! OpenBSM's `sys/bsm/audit.h` (auditon commands, conditions, policy bits,
//! `au_mask_t`, `struct au_evclass_map`).

/// `IOCPARM_MASK`: 13 bits of parameter length.
const IOCPARM_MASK: u64 = (1 << 13) - 1;
const IOC_VOID: u64 = 0x2000_0000;
const IOC_OUT: u64 = 0x4000_0000;
const IOC_IN: u64 = 0x8000_0000;
/// `AUDITPIPE_IOBASE`.
const GROUP: u64 = b'A' as u64;

/// `_IOC(inout, group, num, len)` of ioccom.h.
pub const fn ioc(inout: u64, num: u64, len: usize) -> u64 {
    inout | ((len as u64 & IOCPARM_MASK) << 16) | (GROUP << 8) | num
}
/// `_IOR('A', num, T)`: the kernel copies a `T` out.
pub const fn ior<T>(num: u64) -> u64 {
    ioc(IOC_OUT, num, std::mem::size_of::<T>())
}
/// `_IOW('A', num, T)`: the kernel copies a `T` in.
pub const fn iow<T>(num: u64) -> u64 {
    ioc(IOC_IN, num, std::mem::size_of::<T>())
}
/// `_IO('A', num)`: no parameter.
pub const fn io(num: u64) -> u64 {
    ioc(IOC_VOID, num, 0)
}

/// `au_mask_t`: class bits that select successful and failed events.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuMask {
    pub success: u32,
    pub failure: u32,
}

/// `struct au_evclass_map` for auditon(A_GETCLASS): event in, class out;
/// for A_SETCLASS both in.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvClassMap {
    pub event: u16,
    pub class: u32,
}

pub const GET_QLIMIT: u64 = ior::<u32>(2);
pub const SET_QLIMIT: u64 = iow::<u32>(3);
pub const GET_QLIMIT_MAX: u64 = ior::<u32>(5);
pub const SET_PRESELECT_FLAGS: u64 = iow::<AuMask>(7);
pub const SET_PRESELECT_NAFLAGS: u64 = iow::<AuMask>(9);
pub const FLUSH_PRESELECT_AUID: u64 = io(13);
pub const SET_PRESELECT_MODE: u64 = iow::<i32>(15);
/// Declared with a `u_int64_t`; the kernel stores a `u_int` at the start
/// of the 8-byte buffer (audit_pipe.c): read it with `counter`.
pub const GET_DROPS: u64 = ior::<u64>(102);
/// Records cut because a read was too short: 0 on kernels whose pipe
/// continues a record on the next read.
pub const GET_TRUNCATES: u64 = ior::<u64>(103);

/// `AUDITPIPE_PRESELECT_MODE_LOCAL`: the pipe's own masks decide.
pub const PRESELECT_MODE_LOCAL: i32 = 2;

/// auditon(2) commands.
pub const A_GETCLASS: i32 = 22;
/// Sets one event's class mask in the kernel's map (`au_evclassmap_insert`).
pub const A_SETCLASS: i32 = 23;
pub const A_GETPOLICY: i32 = 33;
pub const A_GETCOND: i32 = 37;
/// The audit condition while a trail is being written.
pub const AUC_AUDITING: i32 = 1;
/// Policy bit: exec records carry argv.
pub const AUDIT_ARGV: i32 = 0x0004;

/// One loss counter as GET_DROPS / GET_TRUNCATES leave it in their 8-byte
/// buffer: the ioctls are declared with a `u_int64_t`, but the kernel
/// stores a `u_int` at the buffer's start (audit_pipe.c:
/// `*(u_int *)data = ap->ap_drops`), in the machine's byte order. The
/// other four bytes are not the counter's (zero on kernels that clear an
/// `_IOR` buffer; reading all eight as one number is wrong on big-endian
/// machines).
pub fn counter(buf: [u8; 8]) -> u32 {
    u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]])
}

/// The pipe's two loss counters, as last read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    pub drops: u32,
    pub truncates: u32,
}

impl Losses {
    /// Records lost between `prev` and `self`: the counters are 32 bits
    /// wide and wrap, so a smaller value is a wrap, not a reset.
    pub fn since(self, prev: Losses) -> u64 {
        u64::from(self.drops.wrapping_sub(prev.drops))
            + u64::from(self.truncates.wrapping_sub(prev.truncates))
    }
}
