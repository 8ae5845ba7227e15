//! Records built byte by byte from the token layouts (audit.log(5),
//! OpenBSM's bsm_token.c): big-endian, the record length in the header and
//! the trailer, trailer magic 0xb105. Shared by the tests.

use super::bsm::token;
use super::event::aue;

/// The header variants.
#[derive(Clone, Copy)]
pub enum Hdr {
    H32,
    H32ExV4,
    H64,
    H64ExV6,
}

/// A whole record: header (version 11), tokens, trailer.
pub fn record(hdr: Hdr, event: u16, sec: u64, ms: u64, tokens: &[Vec<u8>]) -> Vec<u8> {
    let body = tokens.concat();
    let head_len = match hdr {
        Hdr::H32 => 18,
        Hdr::H32ExV4 => 18 + 4 + 4,
        Hdr::H64 => 26,
        Hdr::H64ExV6 => 26 + 4 + 16,
    };
    let total = (head_len + body.len() + 7) as u32;
    let mut r = Vec::new();
    r.push(match hdr {
        Hdr::H32 => token::HEADER32,
        Hdr::H32ExV4 => token::HEADER32_EX,
        Hdr::H64 => token::HEADER64,
        Hdr::H64ExV6 => token::HEADER64_EX,
    });
    r.extend(total.to_be_bytes());
    r.push(11);
    r.extend(event.to_be_bytes());
    r.extend(0u16.to_be_bytes());
    match hdr {
        Hdr::H32ExV4 => {
            r.extend(4u32.to_be_bytes());
            r.extend([192, 0, 2, 1]);
        }
        Hdr::H64ExV6 => {
            r.extend(16u32.to_be_bytes());
            r.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        }
        _ => {}
    }
    match hdr {
        Hdr::H64 | Hdr::H64ExV6 => {
            r.extend(sec.to_be_bytes());
            r.extend(ms.to_be_bytes());
        }
        _ => {
            r.extend((sec as u32).to_be_bytes());
            r.extend((ms as u32).to_be_bytes());
        }
    }
    r.extend(body);
    r.push(token::TRAILER);
    r.extend(0xb105u16.to_be_bytes());
    r.extend(total.to_be_bytes());
    assert_eq!(r.len(), total as usize);
    r
}

/// Subject ids: auid, euid, egid, ruid, rgid, pid, sid.
pub fn ids(pid: u32, ruid: u32, euid: u32, rgid: u32) -> Vec<u8> {
    [1000, euid, rgid + 1, ruid, rgid, pid, 7]
        .iter()
        .flat_map(|v: &u32| v.to_be_bytes())
        .collect()
}

pub fn subject32(pid: u32, ruid: u32, euid: u32, rgid: u32) -> Vec<u8> {
    let mut t = vec![token::SUBJECT32];
    t.extend(ids(pid, ruid, euid, rgid));
    t.extend(0x0102_0304u32.to_be_bytes());
    t.extend([10, 0, 0, 1]);
    t
}

pub fn subject32_ex_v6(pid: u32) -> Vec<u8> {
    let mut t = vec![token::SUBJECT32_EX];
    t.extend(ids(pid, 1, 2, 3));
    t.extend(9u32.to_be_bytes());
    t.extend(16u32.to_be_bytes());
    t.extend([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    t
}

pub fn subject64(pid: u32) -> Vec<u8> {
    let mut t = vec![token::SUBJECT64];
    t.extend(ids(pid, 1, 2, 3));
    t.extend(0x1_0000_0002u64.to_be_bytes());
    t.extend([10, 0, 0, 2]);
    t
}

pub fn subject64_ex_v4(pid: u32) -> Vec<u8> {
    let mut t = vec![token::SUBJECT64_EX];
    t.extend(ids(pid, 1, 2, 3));
    t.extend(5u64.to_be_bytes());
    t.extend(4u32.to_be_bytes());
    t.extend([172, 16, 0, 9]);
    t
}

pub fn counted(id: u8, s: &[u8]) -> Vec<u8> {
    let mut t = vec![id];
    t.extend(((s.len() + 1) as u16).to_be_bytes());
    t.extend(s);
    t.push(0);
    t
}

pub fn exec_args(args: &[&[u8]]) -> Vec<u8> {
    let mut t = vec![token::EXEC_ARGS];
    t.extend((args.len() as u32).to_be_bytes());
    for a in args {
        t.extend(*a);
        t.push(0);
    }
    t
}

pub fn ret32(error: u8, value: u32) -> Vec<u8> {
    let mut t = vec![token::RETURN32, error];
    t.extend(value.to_be_bytes());
    t
}

pub fn arg32(num: u8, value: u32, text: &str) -> Vec<u8> {
    let mut t = vec![token::ARG32, num];
    t.extend(value.to_be_bytes());
    t.extend(counted(0, text.as_bytes()).split_off(1));
    t
}

pub fn exit_token(status: u32) -> Vec<u8> {
    let mut t = vec![token::EXIT];
    t.extend(status.to_be_bytes());
    t.extend(0u32.to_be_bytes());
    t
}

/// The attribute token exec records carry for the image (skipped).
pub fn attr32() -> Vec<u8> {
    let mut t = vec![token::ATTR32];
    t.extend([0u8; 28]);
    t
}

/// fork(2) of `child` by `parent`, as a FreeBSD kernel audits it: the
/// child in the "child PID" arg token and in the return token.
pub fn fork_record(child: u32, parent: u32) -> Vec<u8> {
    record(
        Hdr::H32,
        aue::FORK,
        1,
        0,
        &[
            arg32(0, child, "child PID"),
            subject32(parent, 0, 0, 0),
            ret32(0, child),
        ],
    )
}

/// exit(2) of `pid` with `status`.
pub fn exit_record(pid: u32, status: u32) -> Vec<u8> {
    record(
        Hdr::H32,
        aue::EXIT,
        1,
        0,
        &[exit_token(status), subject32(pid, 0, 0, 0)],
    )
}

/// execve(2) of `path` by `pid`, with no argv token (audit policy without
/// `argv`).
pub fn bare_exec_record(pid: u32, path: &str) -> Vec<u8> {
    record(
        Hdr::H32,
        aue::EXECVE,
        1,
        0,
        &[
            counted(token::PATH, path.as_bytes()),
            subject32(pid, 0, 0, 0),
        ],
    )
}

pub fn exec_record(pid: u32, path: &str, argv: &[&[u8]]) -> Vec<u8> {
    record(
        Hdr::H32,
        aue::EXECVE,
        1_700_000_000,
        250,
        &[
            exec_args(argv),
            counted(token::PATH, path.as_bytes()),
            attr32(),
            subject32(pid, 1001, 0, 20),
            ret32(0, 0),
        ],
    )
}
