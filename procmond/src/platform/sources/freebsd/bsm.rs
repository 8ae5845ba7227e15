//! BSM audit records (audit.log(5)) as FreeBSD's audit(4) writes them to
//! /dev/auditpipe: cutting the pipe's byte stream into records
//! (`RecordStream`) and parsing one record's tokens (`parse_record`).
//!
//! Pure and compiled on every platform, so the fixture tests and proptests
//! run on Linux. Every read is bounds-checked: a hostile or truncated record
//! gives a `BsmError` (the reader counts it in `records_malformed` and drops
//! that record), never a panic, and no allocation is larger than the record.
//!
//! The layouts come from OpenBSM's `sys/bsm/audit_record.h` (token ids),
//! `libbsm/bsm_token.c` (the writer; the FreeBSD kernel compiles the same
//! file as `sys/security/audit/bsm_token.c`) and audit.log(5). All integers
//! are big-endian. Where the manual and the writer disagree, the writer
//! wins: the header's sub-second field holds milliseconds, the attribute
//! token's mode is 4 bytes, and the `_ex` tokens' address type is 4 bytes.

pub use super::token::ids as token;

/// `AUT_TRAILER_MAGIC`.
pub const TRAILER_MAGIC: u16 = 0xb105;
/// Terminal and host address types (`AU_IPv4`, `AU_IPv6`): the length.
pub const AU_IPV4: u32 = 4;
pub const AU_IPV6: u32 = 16;
/// Trailer token: id, magic (2), record length (4).
pub const TRAILER_LEN: usize = 7;
/// The smallest header (header32 without address): 1 + 4 + 1 + 2 + 2 + 4 + 4.
const HEADER32_LEN: usize = 18;
/// A header and a trailer with nothing between.
pub const MIN_RECORD_LEN: usize = HEADER32_LEN + TRAILER_LEN;
/// The largest record accepted. exec records carry the whole argv (and the
/// environment under the `arge` policy), each bounded by kern.argmax
/// (512 KiB by default); anything claiming more is garbage.
pub const MAX_RECORD_LEN: usize = 4 << 20;
/// Most path/arg/text tokens kept per record (the rest are skipped).
const MAX_KEPT: usize = 16;

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BsmError {
    #[error("{what} needs {need} bytes at offset {at} of a {len}-byte record")]
    Truncated {
        what: &'static str,
        at: usize,
        need: usize,
        len: usize,
    },
    #[error("record starts with token {0:#04x}, not a header")]
    NotHeader(u8),
    #[error("header version {0} is not a BSM record version")]
    Version(u8),
    #[error("header claims {0} bytes (allowed {MIN_RECORD_LEN}..={MAX_RECORD_LEN})")]
    Length(u64),
    #[error("header says {header} bytes but {actual} were given")]
    LengthMismatch { header: usize, actual: usize },
    #[error("trailer token is {0:#04x}, not 0x13")]
    NoTrailer(u8),
    #[error("trailer magic {0:#06x} is not 0xb105")]
    TrailerMagic(u16),
    #[error("trailer says {trailer} bytes, header {header}")]
    TrailerLength { header: usize, trailer: usize },
    #[error("token {id:#04x} at offset {at} is unknown and its length cannot be derived")]
    UnknownToken { id: u8, at: usize },
    #[error("{0:#04x} token at offset {1} inside a record")]
    Misplaced(u8, usize),
    #[error("address type {0} is neither 4 (IPv4) nor 16 (IPv6)")]
    AddressType(u32),
    #[error("data token unit type {0} is unknown")]
    DataUnit(u8),
    #[error("header sub-second field {0} is neither milliseconds nor nanoseconds")]
    Time(u64),
    #[error("{0} has no terminating NUL")]
    Unterminated(&'static str),
    #[error("process record without a subject token")]
    NoSubject,
}

/// A terminal (or host) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// The header token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The whole record, header and trailer included.
    pub len: usize,
    pub version: u8,
    /// `AUE_*` event number.
    pub event: u16,
    pub modifier: u16,
    /// The host address of the `_ex` headers.
    pub host: Option<Addr>,
    pub seconds: u64,
    pub nanos: u32,
}

impl Header {
    /// When the event happened, ns since the Unix epoch (saturating).
    pub fn unix_ns(&self) -> i64 {
        i64::try_from(self.seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(self.nanos))
    }
}

/// A subject token (who did it) or a process token (whom it was done to):
/// the two share their layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    pub auid: u32,
    pub euid: u32,
    pub egid: u32,
    pub ruid: u32,
    pub rgid: u32,
    pub pid: u32,
    pub sid: u32,
    /// Terminal port (32 or 64 bits in the token).
    pub port: u64,
    pub machine: Addr,
}

/// The return token: BSM errno (0 = success) and the return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Return {
    pub error: u8,
    pub value: u64,
}

/// The exit token: the status passed to exit(2), and a return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub value: u32,
}

/// An arg token: argument number, value, description (no NUL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg<'a> {
    pub num: u8,
    pub value: u64,
    pub text: &'a [u8],
}

/// The exec_args token: how many strings, and their NUL-terminated bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecArgs<'a> {
    pub count: u32,
    pub raw: &'a [u8],
}

/// One parsed record, borrowing its strings from the record bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub header: Header,
    pub subject: Option<Subject>,
    pub process: Option<Subject>,
    /// Path tokens in order, without their NUL.
    pub paths: Vec<&'a [u8]>,
    pub exec_args: Option<ExecArgs<'a>>,
    pub args: Vec<Arg<'a>>,
    pub texts: Vec<&'a [u8]>,
    pub ret: Option<Return>,
    pub exit: Option<Exit>,
    /// The jail's name (FreeBSD writes it for jailed credentials).
    pub zonename: Option<&'a [u8]>,
}

fn is_header(id: u8) -> bool {
    matches!(
        id,
        token::HEADER32 | token::HEADER32_EX | token::HEADER64 | token::HEADER64_EX
    )
}

/// `AUDIT_HEADER_VERSION_*`: old Darwin, Solaris, TSOL 2.5, TSOL,
/// OpenBSM 1.0, OpenBSM 1.1 (what FreeBSD writes).
fn is_version(v: u8) -> bool {
    matches!(v, 1..=4 | 10 | 11)
}

/// A bounds-checked big-endian reader over one record.
pub(super) struct Cursor<'a> {
    pub(super) b: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], BsmError> {
        let err = BsmError::Truncated {
            what,
            at: self.at,
            need: n,
            len: self.b.len(),
        };
        let end = self.at.checked_add(n).ok_or(err.clone())?;
        let s = self.b.get(self.at..end).ok_or(err)?;
        self.at = end;
        Ok(s)
    }

    pub(super) fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BsmError> {
        let at = self.at;
        let s = self.take(N, what)?;
        <[u8; N]>::try_from(s).map_err(|_| BsmError::Truncated {
            what,
            at,
            need: N,
            len: self.b.len(),
        })
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, BsmError> {
        Ok(self.arr::<1>(what)?[0])
    }
    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, BsmError> {
        self.arr(what).map(u16::from_be_bytes)
    }
    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, BsmError> {
        self.arr(what).map(u32::from_be_bytes)
    }
    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, BsmError> {
        self.arr(what).map(u64::from_be_bytes)
    }

    /// A u16 length, then that many bytes (a string whose NUL is counted).
    pub(super) fn counted(&mut self, what: &'static str) -> Result<&'a [u8], BsmError> {
        let n = self.u16(what)?;
        let s = self.take(usize::from(n), what)?;
        Ok(until_nul(s))
    }

    /// Bytes up to and including a NUL; returns them without it.
    pub(super) fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], BsmError> {
        let rest = self.b.get(self.at..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(BsmError::Unterminated(what))?;
        let s = self.take(n + 1, what)?;
        Ok(&s[..n])
    }

    /// An address of `len` bytes (4 or 16).
    pub(super) fn addr(&mut self, len: u32, what: &'static str) -> Result<Addr, BsmError> {
        match len {
            AU_IPV4 => self.arr(what).map(Addr::V4),
            AU_IPV6 => self.arr(what).map(Addr::V6),
            other => Err(BsmError::AddressType(other)),
        }
    }
}

/// A counted string stops at its first NUL.
fn until_nul(s: &[u8]) -> &[u8] {
    s.iter().position(|b| *b == 0).map_or(s, |n| &s[..n])
}

/// The length of the record at the start of `b`, once it is all there and
/// its trailer matches; `Ok(None)` while more bytes are needed to tell.
pub fn frame(b: &[u8]) -> Result<Option<usize>, BsmError> {
    let Some(&id) = b.first() else {
        return Ok(None);
    };
    if !is_header(id) {
        return Err(BsmError::NotHeader(id));
    }
    let Some(len) = b.get(1..5) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if !(MIN_RECORD_LEN..=MAX_RECORD_LEN).contains(&len) {
        return Err(BsmError::Length(len as u64));
    }
    let Some(&version) = b.get(5) else {
        return Ok(None);
    };
    if !is_version(version) {
        return Err(BsmError::Version(version));
    }
    let Some(record) = b.get(..len) else {
        return Ok(None);
    };
    check_trailer(record)?;
    Ok(Some(len))
}

/// The trailer closing `record`: magic and the same length.
fn check_trailer(record: &[u8]) -> Result<(), BsmError> {
    let start = record.len().saturating_sub(TRAILER_LEN);
    let mut c = Cursor {
        b: record,
        at: start,
    };
    let id = c.u8("trailer")?;
    if id != token::TRAILER {
        return Err(BsmError::NoTrailer(id));
    }
    let magic = c.u16("trailer magic")?;
    if magic != TRAILER_MAGIC {
        return Err(BsmError::TrailerMagic(magic));
    }
    let trailer = usize::try_from(c.u32("trailer length")?).unwrap_or(usize::MAX);
    if trailer != record.len() {
        return Err(BsmError::TrailerLength {
            header: record.len(),
            trailer,
        });
    }
    Ok(())
}

/// The event number of a framed record, read from its header without
/// parsing anything else: every header variant starts with the token id
/// (1), the record length (4), the version (1) and the event (2).
pub fn header_event(rec: &[u8]) -> Option<u16> {
    let b = rec.get(6..8)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Cuts the audit pipe's byte stream into records. Reads may end inside a
/// record (the pipe continues it on the next read), so bytes are buffered
/// until a record is complete. After bytes that are not a record, the next
/// plausible header (id, length, version, trailer) is looked for: one error
/// per damaged stretch, then records flow again.
#[derive(Debug, Default)]
pub struct RecordStream {
    buf: Vec<u8>,
    pos: usize,
    /// Looking for the next header after bytes that were not a record.
    resync: bool,
    /// At a header found while resyncing whose record has not all arrived:
    /// if it proves false, the damaged stretch goes on (no new error).
    tentative: bool,
}

impl RecordStream {
    /// Appends bytes read from the pipe.
    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held for a record not yet complete.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next complete record; an error for bytes that are not one; `None`
    /// until more bytes arrive.
    pub fn next_record(&mut self) -> Option<Result<&[u8], BsmError>> {
        loop {
            if self.resync {
                let rest = self.buf.get(self.pos..).unwrap_or_default();
                // A header is a candidate unless it is certainly not a record.
                let found =
                    (0..rest.len()).find(|&i| is_header(rest[i]) && frame(&rest[i..]).is_ok());
                let Some(i) = found else {
                    self.pos = self.buf.len();
                    return None;
                };
                self.pos += i;
                self.resync = false;
                self.tentative = true;
            }
            let start = self.pos;
            match frame(self.buf.get(start..).unwrap_or_default()) {
                Ok(None) => return None,
                Ok(Some(len)) => {
                    self.pos = start + len;
                    self.tentative = false;
                    return self.buf.get(start..start + len).map(Ok);
                }
                Err(e) => {
                    self.pos = start + 1;
                    self.resync = true;
                    if !std::mem::take(&mut self.tentative) {
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// Parses exactly one record (as `RecordStream` or a trail file gives it).
pub fn parse_record(rec: &[u8]) -> Result<Record<'_>, BsmError> {
    let len = match frame(rec)? {
        Some(len) => len,
        None => {
            return Err(BsmError::Truncated {
                what: "record",
                at: 0,
                need: MIN_RECORD_LEN,
                len: rec.len(),
            });
        }
    };
    if len != rec.len() {
        return Err(BsmError::LengthMismatch {
            header: len,
            actual: rec.len(),
        });
    }
    // Tokens lie between the header and the trailer (checked by `frame`).
    let body = &rec[..len - TRAILER_LEN];
    let mut c = Cursor { b: body, at: 0 };
    let header = parse_header(&mut c, len)?;
    let mut r = Record {
        header,
        subject: None,
        process: None,
        paths: Vec::new(),
        exec_args: None,
        args: Vec::new(),
        texts: Vec::new(),
        ret: None,
        exit: None,
        zonename: None,
    };
    while c.at < body.len() {
        parse_token(&mut c, &mut r)?;
    }
    Ok(r)
}

fn parse_header(c: &mut Cursor<'_>, len: usize) -> Result<Header, BsmError> {
    let id = c.u8("header")?;
    let _len = c.u32("header length")?;
    let version = c.u8("header version")?;
    let event = c.u16("event type")?;
    let modifier = c.u16("event modifier")?;
    let host = if matches!(id, token::HEADER32_EX | token::HEADER64_EX) {
        let kind = c.u32("host address type")?;
        Some(c.addr(kind, "host address")?)
    } else {
        None
    };
    let (seconds, sub) = if matches!(id, token::HEADER64 | token::HEADER64_EX) {
        (c.u64("seconds")?, c.u64("milliseconds")?)
    } else {
        (
            u64::from(c.u32("seconds")?),
            u64::from(c.u32("milliseconds")?),
        )
    };
    // bsm_token.c writes milliseconds; accept nanoseconds as audit.log(5)
    // documents them, since both cannot be confused above 999.
    let nanos = match sub {
        0..=999 => sub * 1_000_000,
        1_000..=999_999_999 => sub,
        other => return Err(BsmError::Time(other)),
    };
    Ok(Header {
        len,
        version,
        event,
        modifier,
        host,
        seconds,
        nanos: u32::try_from(nanos).map_err(|_| BsmError::Time(sub))?,
    })
}

/// Subject and process tokens: 7 × u32, the port (32/64), then the
/// machine address (4 bytes, or a 4-byte type and 4/16 bytes for `_ex`).
fn parse_subject(c: &mut Cursor<'_>, port64: bool, ex: bool) -> Result<Subject, BsmError> {
    let auid = c.u32("audit uid")?;
    let euid = c.u32("euid")?;
    let egid = c.u32("egid")?;
    let ruid = c.u32("ruid")?;
    let rgid = c.u32("rgid")?;
    let pid = c.u32("pid")?;
    let sid = c.u32("session id")?;
    let port = if port64 {
        c.u64("terminal port")?
    } else {
        u64::from(c.u32("terminal port")?)
    };
    let machine = if ex {
        let kind = c.u32("terminal address type")?;
        c.addr(kind, "terminal address")?
    } else {
        c.addr(AU_IPV4, "terminal address")?
    };
    Ok(Subject {
        auid,
        euid,
        egid,
        ruid,
        rgid,
        pid,
        sid,
        port,
        machine,
    })
}

/// `count` NUL-terminated strings (exec_args, exec_env); their bytes.
fn strings<'a>(c: &mut Cursor<'a>, count: u32, what: &'static str) -> Result<&'a [u8], BsmError> {
    let start = c.at;
    // Every string takes at least its NUL, so this ends within the record.
    for _ in 0..count {
        c.cstr(what)?;
    }
    Ok(c.b.get(start..c.at).unwrap_or_default())
}

fn push<T>(v: &mut Vec<T>, item: T) {
    if v.len() < MAX_KEPT {
        v.push(item);
    }
}

fn parse_token<'a>(c: &mut Cursor<'a>, r: &mut Record<'a>) -> Result<(), BsmError> {
    use token::*;
    let at = c.at;
    let id = c.u8("token id")?;
    match id {
        HEADER32 | HEADER32_EX | HEADER64 | HEADER64_EX | TRAILER => {
            return Err(BsmError::Misplaced(id, at));
        }
        SUBJECT32 | SUBJECT64 | SUBJECT32_EX | SUBJECT64_EX => {
            let ex = matches!(id, SUBJECT32_EX | SUBJECT64_EX);
            let s = parse_subject(c, matches!(id, SUBJECT64 | SUBJECT64_EX), ex)?;
            r.subject.get_or_insert(s);
        }
        PROCESS32 | PROCESS64 | PROCESS32_EX | PROCESS64_EX => {
            let ex = matches!(id, PROCESS32_EX | PROCESS64_EX);
            let s = parse_subject(c, matches!(id, PROCESS64 | PROCESS64_EX), ex)?;
            r.process.get_or_insert(s);
        }
        PATH => push(&mut r.paths, c.counted("path")?),
        TEXT => push(&mut r.texts, c.counted("text")?),
        ZONENAME => {
            let z = c.counted("zonename")?;
            r.zonename.get_or_insert(z);
        }
        RETURN32 | RETURN64 => {
            let error = c.u8("return errno")?;
            let value = if id == RETURN64 {
                c.u64("return value")?
            } else {
                u64::from(c.u32("return value")?)
            };
            r.ret.get_or_insert(Return { error, value });
        }
        EXIT => {
            let status = c.u32("exit status")?;
            let value = c.u32("exit return value")?;
            r.exit.get_or_insert(Exit { status, value });
        }
        ARG32 | ARG64 => {
            let num = c.u8("arg number")?;
            let value = if id == ARG64 {
                c.u64("arg value")?
            } else {
                u64::from(c.u32("arg value")?)
            };
            let text = c.counted("arg text")?;
            push(&mut r.args, Arg { num, value, text });
        }
        EXEC_ARGS => {
            let count = c.u32("exec_args count")?;
            let raw = strings(c, count, "exec_args")?;
            r.exec_args.get_or_insert(ExecArgs { count, raw });
        }
        EXEC_ENV => {
            let count = c.u32("exec_env count")?;
            strings(c, count, "exec_env")?;
        }
        _ => super::token::skip(c, id, at)?,
    }
    Ok(())
}
