//! The only unsafe code of the macOS source: the facts of this boot that
//! every process id is computed with (docs/reference.md, "entity_id on
//! Windows, macOS and FreeBSD"):
//!
//! * the serial number: IOKit's `IOPlatformSerialNumber` property of the
//!   `IOPlatformExpertDevice` service (IOKitLib.h, CFString.h);
//! * the hardware UUID: gethostuuid(2), which XNU answers with
//!   `uuid_parse` of the platform's `IOPlatformUUID` property
//!   (bsd/kern/sys_generic.c, iokit/bsddev/IOKitBSDInit.cpp
//!   `IOBSDGetPlatformUUID`): the same 16 bytes as parsing the property;
//! * process start times: sysctl `kern.proc.pid.PID` (`struct kinfo_proc`,
//!   whose `kp_proc.p_starttime` is the process's `p_start`,
//!   bsd/kern/kern_sysctl.c), parsed by `decode::parse_kinfo_proc_start`.
//!
//! The declarations below follow Apple's headers as the `core-foundation-sys`
//! 0.8.7 and `objc2-io-kit` 0.3.2 crates (already in Cargo.lock through
//! sysinfo) transcribe them: `io_object_t` is a `mach_port_t` (u32),
//! `IOOptionBits` u32, `CFIndex` isize, `CFTypeID` usize, `Boolean` u8,
//! `kCFStringEncodingUTF8` 0x08000100, and `kIOMainPortDefault` is
//! `MACH_PORT_NULL` ("a synonym for NULL", IOKitLib.h).
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::io;

use super::decode::parse_kinfo_proc_start;
use crate::model::identity::Timeval;

type CFTypeRef = *const c_void;
type CFStringRef = *const c_void;
type CFAllocatorRef = *const c_void;
type CFMutableDictionaryRef = *mut c_void;
type IoObject = libc::mach_port_t;

const CF_STRING_ENCODING_UTF8: u32 = 0x0800_0100;
/// `kIOMainPortDefault`: MACH_PORT_NULL, "use the default" main port.
const MAIN_PORT_DEFAULT: libc::mach_port_t = 0;

#[link(name = "IOKit", kind = "framework")]
unsafe extern "C" {
    fn IOServiceMatching(name: *const c_char) -> CFMutableDictionaryRef;
    /// Consumes one reference to `matching`.
    fn IOServiceGetMatchingService(
        main_port: libc::mach_port_t,
        matching: CFMutableDictionaryRef,
    ) -> IoObject;
    fn IORegistryEntryCreateCFProperty(
        entry: IoObject,
        key: CFStringRef,
        allocator: CFAllocatorRef,
        options: u32,
    ) -> CFTypeRef;
    fn IOObjectRelease(object: IoObject) -> libc::kern_return_t;
}

#[link(name = "CoreFoundation", kind = "framework")]
unsafe extern "C" {
    fn CFStringCreateWithCString(
        alloc: CFAllocatorRef,
        c_str: *const c_char,
        encoding: u32,
    ) -> CFStringRef;
    fn CFStringGetCString(
        string: CFStringRef,
        buffer: *mut c_char,
        buffer_size: isize,
        encoding: u32,
    ) -> u8;
    fn CFGetTypeID(cf: CFTypeRef) -> usize;
    fn CFStringGetTypeID() -> usize;
    fn CFRelease(cf: CFTypeRef);
}

/// A Core Foundation object we own one reference to, released on drop.
struct Cf(CFTypeRef);

impl Drop for Cf {
    fn drop(&mut self) {
        // SAFETY: the pointer is non-null (checked where made) and came from
        // a Create-rule function, so this value owns one reference; it is
        // released once, here.
        unsafe { CFRelease(self.0) };
    }
}

/// An IOKit object we own, released on drop.
struct Io(IoObject);

impl Drop for Io {
    fn drop(&mut self) {
        // SAFETY: a non-null object returned to us by IOKit, released once.
        unsafe { IOObjectRelease(self.0) };
    }
}

/// The serial number: `IOPlatformSerialNumber` of `IOPlatformExpertDevice`.
pub fn serial_number() -> io::Result<String> {
    let fail = |what: &str| io::Error::other(format!("IOPlatformSerialNumber: {what}"));
    // SAFETY: a NUL-terminated name; the dictionary returned (or null) is
    // handed straight to IOServiceGetMatchingService, which consumes it
    // (also when null, which it refuses).
    let service = unsafe {
        IOServiceGetMatchingService(
            MAIN_PORT_DEFAULT,
            IOServiceMatching(c"IOPlatformExpertDevice".as_ptr()),
        )
    };
    if service == 0 {
        return Err(fail("no IOPlatformExpertDevice service"));
    }
    let service = Io(service);
    // SAFETY: a NUL-terminated ASCII key; null allocator is the default.
    let key = unsafe {
        CFStringCreateWithCString(
            std::ptr::null(),
            c"IOPlatformSerialNumber".as_ptr(),
            CF_STRING_ENCODING_UTF8,
        )
    };
    if key.is_null() {
        return Err(fail("the key could not be made"));
    }
    let key = Cf(key);
    // SAFETY: `service` is a live registry entry and `key` a live CFString;
    // the result follows the Create rule (owned here) or is null.
    let value = unsafe { IORegistryEntryCreateCFProperty(service.0, key.0, std::ptr::null(), 0) };
    if value.is_null() {
        return Err(fail("the property is absent"));
    }
    let value = Cf(value);
    // SAFETY: `value` is a live CF object; both calls only read type ids.
    if unsafe { CFGetTypeID(value.0) != CFStringGetTypeID() } {
        return Err(fail("the property is not a string"));
    }
    let mut buf = [0 as c_char; 64];
    let size = isize::try_from(buf.len()).map_err(|_| fail("buffer size"))?;
    // SAFETY: `value` is a CFString (checked above); `buf` is `size`
    // writable bytes, and CFStringGetCString writes at most that many,
    // NUL included, or fails.
    let ok =
        unsafe { CFStringGetCString(value.0, buf.as_mut_ptr(), size, CF_STRING_ENCODING_UTF8) };
    if ok == 0 {
        return Err(fail("longer than 63 bytes or not convertible"));
    }
    // SAFETY: on success the buffer holds a NUL-terminated string within
    // its 64 bytes.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(text.to_string_lossy().into_owned())
}

/// The hardware UUID (gethostuuid(2)), 16 RFC 9562 bytes.
pub fn hardware_uuid() -> io::Result<[u8; 16]> {
    let mut uuid = [0u8; 16];
    let timeout = libc::timespec {
        tv_sec: 5,
        tv_nsec: 0,
    };
    // SAFETY: `uuid` is the 16 writable bytes of a `uuid_t`; `timeout` is a
    // live timespec; the kernel copies out exactly 16 bytes.
    if unsafe { libc::gethostuuid(uuid.as_mut_ptr(), &timeout) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uuid)
}

/// The start time of `pid` (`kp_proc.p_starttime` of sysctl
/// `kern.proc.pid.PID`); an error when there is no such process.
pub fn start_time(pid: u32) -> io::Result<Timeval> {
    let id = libc::c_int::try_from(pid).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, id];
    // `struct kinfo_proc` is 648 bytes on 64-bit macOS; room to spare.
    let mut buf = [0u8; 1024];
    let mut len: libc::size_t = buf.len();
    // SAFETY: `mib` is 4 live ints; `buf` is `len` writable bytes and the
    // kernel writes at most `len` and stores the count in `len`; nothing
    // is set (null, 0).
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            4,
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    parse_kinfo_proc_start(buf.get(..len).unwrap_or_default(), pid).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("kern.proc.pid.{pid}: no such process, or no start time"),
        )
    })
}
