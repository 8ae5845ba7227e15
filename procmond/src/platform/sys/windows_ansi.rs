//! ANSI text from the kernel (ETW's `win:AnsiString` image names) in this
//! host's ANSI code page: `MultiByteToWideChar(CP_ACP)`. Its own small
//! module because it is a Win32 call, so `unsafe` with a SAFETY argument.
#![allow(unsafe_code)]

use windows_sys::Win32::Globalization::{CP_ACP, MultiByteToWideChar};

/// `bytes` (no NUL needed) decoded in the ANSI code page; `None` when the
/// call fails (the caller falls back to Windows-1252).
pub fn acp_to_string(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return Some(String::new());
    }
    let len = i32::try_from(bytes.len()).ok()?;
    // Every ANSI code page yields at most one UTF-16 unit per byte.
    let mut wide = vec![0u16; bytes.len()];
    // SAFETY: `bytes` is readable for `len` bytes and `wide` writable for
    // `len` units; the call writes at most that many and keeps no pointer.
    let n = unsafe { MultiByteToWideChar(CP_ACP, 0, bytes.as_ptr(), len, wide.as_mut_ptr(), len) };
    let n = usize::try_from(n).ok().filter(|n| *n > 0)?;
    Some(String::from_utf16_lossy(&wide[..n]))
}
