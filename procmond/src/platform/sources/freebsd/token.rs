//! BSM token ids (`AUT_*`, OpenBSM `sys/bsm/audit_record.h`) and the
//! lengths of the tokens procmond skips (from `libbsm/bsm_token.c`, the
//! writer the FreeBSD kernel compiles): a token whose length can be derived
//! is stepped over, any other is an error, since what follows it could not
//! be found.

use super::bsm::{BsmError, Cursor};

/// Token ids.
pub mod ids {
    pub const OTHER_FILE32: u8 = 0x11;
    pub const TRAILER: u8 = 0x13;
    pub const HEADER32: u8 = 0x14;
    pub const HEADER32_EX: u8 = 0x15;
    pub const DATA: u8 = 0x21;
    pub const IPC: u8 = 0x22;
    pub const PATH: u8 = 0x23;
    pub const SUBJECT32: u8 = 0x24;
    pub const XATPATH: u8 = 0x25;
    pub const PROCESS32: u8 = 0x26;
    pub const RETURN32: u8 = 0x27;
    pub const TEXT: u8 = 0x28;
    pub const OPAQUE: u8 = 0x29;
    pub const IN_ADDR: u8 = 0x2a;
    pub const IP: u8 = 0x2b;
    pub const IPORT: u8 = 0x2c;
    pub const ARG32: u8 = 0x2d;
    pub const SEQ: u8 = 0x2f;
    pub const IPC_PERM: u8 = 0x32;
    pub const NEWGROUPS: u8 = 0x3b;
    pub const EXEC_ARGS: u8 = 0x3c;
    pub const EXEC_ENV: u8 = 0x3d;
    pub const ATTR32: u8 = 0x3e;
    pub const EXIT: u8 = 0x52;
    pub const ZONENAME: u8 = 0x60;
    pub const ARG64: u8 = 0x71;
    pub const RETURN64: u8 = 0x72;
    pub const ATTR64: u8 = 0x73;
    pub const HEADER64: u8 = 0x74;
    pub const SUBJECT64: u8 = 0x75;
    pub const PROCESS64: u8 = 0x77;
    pub const HEADER64_EX: u8 = 0x79;
    pub const SUBJECT32_EX: u8 = 0x7a;
    pub const PROCESS32_EX: u8 = 0x7b;
    pub const SUBJECT64_EX: u8 = 0x7c;
    pub const PROCESS64_EX: u8 = 0x7d;
    pub const IN_ADDR_EX: u8 = 0x7e;
    pub const SOCKET_EX: u8 = 0x7f;
    pub const SOCKINET32: u8 = 0x80;
    pub const SOCKINET128: u8 = 0x81;
    pub const SOCKUNIX: u8 = 0x82;
    pub const ARG_UUID: u8 = 0x84;
    pub const RETURN_UUID: u8 = 0x85;
}

/// Tokens procmond does not use, skipped by their documented lengths.
pub(super) fn skip(c: &mut Cursor<'_>, id: u8, at: usize) -> Result<(), BsmError> {
    use ids::*;
    let fixed = match id {
        // mode (2 pad + 2), uid, gid, fsid, node id (8), device (4 / 8).
        ATTR32 => 28,
        ATTR64 => 32,
        IPC => 5,
        IN_ADDR => 4,
        IP => 20,
        IPORT => 2,
        SEQ => 4,
        // uid, gid, cuid, cgid (2 + 2 each), mode (4), seq (4), key (4).
        IPC_PERM => 28,
        // family (2), port (2), IPv4 address.
        SOCKINET32 => 8,
        // 0, family (1 + 1), port (2), IPv6 address.
        SOCKINET128 => 20,
        _ => 0,
    };
    if fixed > 0 {
        c.take(fixed, "token")?;
        return Ok(());
    }
    match id {
        // seconds, milliseconds, then a counted name.
        OTHER_FILE32 => {
            c.take(8, "file token")?;
            c.counted("file name")?;
        }
        XATPATH | OPAQUE => {
            c.counted("counted token")?;
        }
        DATA => {
            let _how = c.u8("data print")?;
            let unit = c.u8("data unit")?;
            let count = usize::from(c.u8("data count")?);
            let size = match unit {
                0 => 1,
                1 => 2,
                2 => 4,
                3 => 8,
                other => return Err(BsmError::DataUnit(other)),
            };
            c.take(size * count, "data")?;
        }
        NEWGROUPS => {
            let n = usize::from(c.u16("group count")?);
            c.take(4 * n, "groups")?;
        }
        IN_ADDR_EX => {
            let kind = c.u32("address type")?;
            c.addr(kind, "address")?;
        }
        // domain, type, address type (2 each), then port + address twice.
        SOCKET_EX => {
            c.take(4, "socket")?;
            let kind = u32::from(c.u16("socket address type")?);
            for _ in 0..2 {
                c.take(2, "socket port")?;
                c.addr(kind, "socket address")?;
            }
        }
        // 0, family, then a NUL-terminated path.
        SOCKUNIX => {
            c.take(2, "socket family")?;
            c.cstr("socket path")?;
        }
        // number, UUID (16), counted text.
        ARG_UUID | RETURN_UUID => {
            c.take(17, "uuid")?;
            c.counted("uuid text")?;
        }
        _ => return Err(BsmError::UnknownToken { id, at }),
    }
    Ok(())
}
