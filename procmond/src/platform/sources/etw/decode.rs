//! From the two ETW providers' property sets to procmond's records: plain
//! functions over plain structs, compiled and tested on every platform.
//!
//! The session callbacks (`session.rs`, Windows) copy each event's
//! properties into a `Props` by the names listed here (`KP_START_FIELDS`,
//! …) — whatever the event's version carries; a field a version lacks is
//! simply absent — and everything after that is here: which event is
//! which, FILETIME conversion, the classic provider's `UserSID` (a WBEM SID:
//! TOKEN_USER then the SID), the ANSI image names (`ansi_or_wide`), and
//! the Windows command-line split.

use std::collections::BTreeMap;

use crate::sources::snapshot::{ARGV_MAX_ARGS, ARGV_MAX_BYTES};

/// How a property is read from the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    U32,
    U64,
    I32,
    Str,
    Bytes,
    /// An ANSI string (`win:AnsiString`, the MOF's `string`): handed over
    /// as bytes and decoded here in the ANSI code page, never as UTF-8.
    Ansi,
}

/// One property's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    U32(u32),
    U64(u64),
    I32(i32),
    Str(String),
    Bytes(Vec<u8>),
}

/// An event's properties by name (only those that were present).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props(pub BTreeMap<String, Value>);

impl Props {
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.0.insert(name.to_string(), value);
        self
    }

    pub fn u32(&self, name: &str) -> Option<u32> {
        match self.0.get(name)? {
            Value::U32(v) => Some(*v),
            Value::U64(v) => u32::try_from(*v).ok(),
            Value::I32(v) => Some(*v as u32),
            _ => None,
        }
    }

    pub fn u64(&self, name: &str) -> Option<u64> {
        match self.0.get(name)? {
            Value::U64(v) => Some(*v),
            Value::U32(v) => Some(u64::from(*v)),
            _ => None,
        }
    }

    pub fn i32(&self, name: &str) -> Option<i32> {
        match self.0.get(name)? {
            Value::I32(v) => Some(*v),
            Value::U32(v) => Some(*v as i32),
            _ => None,
        }
    }

    /// A string property; empty strings count as absent.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.0.get(name)? {
            Value::Str(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// A name that may be an ANSI string (`Kind::Ansi`, bytes) or a
    /// string already decoded; empty counts as absent.
    pub fn text(&self, name: &str) -> Option<String> {
        let s = match self.0.get(name)? {
            Value::Str(s) => s.clone(),
            Value::Bytes(b) => ansi_or_wide(b),
            _ => return None,
        };
        (!s.is_empty()).then_some(s)
    }

    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        match self.0.get(name)? {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// Microsoft-Windows-Kernel-Process.
pub const KERNEL_PROCESS_GUID: &str = "22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716";
/// `WINEVENT_KEYWORD_PROCESS`: ProcessStart (1) and ProcessStop (2).
pub const KEYWORD_PROCESS: u64 = 0x10;
pub const EVENT_PROCESS_START: u16 = 1;
pub const EVENT_PROCESS_STOP: u16 = 2;

/// The classic kernel provider's `Process` class (`Process_TypeGroup1`).
pub const CLASSIC_PROCESS_GUID: &str = "3D6FA8D0-FE05-11D0-9DDA-00C04FD7BA7C";
pub const OPCODE_START: u8 = 1;
pub const OPCODE_END: u8 = 2;
pub const OPCODE_DC_START: u8 = 3;
pub const OPCODE_DC_END: u8 = 4;

/// What ProcessStart carries (version 0–3: the sequence numbers only from 3).
pub const KP_START_FIELDS: &[(&str, Kind)] = &[
    ("ProcessID", Kind::U32),
    ("ProcessSequenceNumber", Kind::U64),
    ("CreateTime", Kind::U64),
    ("ParentProcessID", Kind::U32),
    ("ParentProcessSequenceNumber", Kind::U64),
    ("SessionID", Kind::U32),
    ("ImageName", Kind::Str),
];

/// What ProcessStop carries (the sequence number from version 2).
pub const KP_STOP_FIELDS: &[(&str, Kind)] = &[
    ("ProcessID", Kind::U32),
    ("ProcessSequenceNumber", Kind::U64),
    ("CreateTime", Kind::U64),
    ("ExitTime", Kind::U64),
    ("ExitCode", Kind::U32),
    // win:AnsiString in ProcessStop (ProcessStart's is UTF-16).
    ("ImageName", Kind::Ansi),
];

/// What `Process_TypeGroup1` carries that procmond uses.
pub const CLASSIC_FIELDS: &[(&str, Kind)] = &[
    ("ProcessId", Kind::U32),
    ("ParentId", Kind::U32),
    ("SessionId", Kind::U32),
    ("ExitStatus", Kind::I32),
    ("UserSID", Kind::Bytes),
    // The MOF's `string`: ANSI.
    ("ImageFileName", Kind::Ansi),
    ("CommandLine", Kind::Str),
];

/// Why an event could not be used (counted as `records_malformed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{event}: no {field}")]
    Missing {
        event: &'static str,
        field: &'static str,
    },
}

/// ProcessStart, as the Kernel-Process provider reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KpStart {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// Unix ns, full precision.
    pub create_time: Option<i64>,
    /// `CreateTime` as the event gave it (FILETIME ticks): the CPID input.
    pub create_filetime: Option<u64>,
    pub session: Option<u32>,
    /// NT path (`\Device\HarddiskVolume3\…`).
    pub image: Option<String>,
    pub seq: Option<u64>,
    pub parent_seq: Option<u64>,
}

/// ProcessStop, as the Kernel-Process provider reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KpStop {
    pub pid: u32,
    pub create_time: Option<i64>,
    /// `CreateTime` as the event gave it (FILETIME ticks).
    pub create_filetime: Option<u64>,
    pub exit_time: Option<i64>,
    pub exit_code: Option<u32>,
    /// The short image name (the kernel's 15-character copy).
    pub image_name: Option<String>,
    pub seq: Option<u64>,
}

/// Which classic process event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicOp {
    Start,
    End,
    /// Rundown: a process alive when the session started.
    DcStart,
    DcEnd,
}

/// A classic kernel process event (`Process_TypeGroup1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classic {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub session: Option<u32>,
    pub exit_status: Option<i32>,
    pub sid: Option<String>,
    pub image_file_name: Option<String>,
    pub command_line: Option<String>,
    /// When the event was logged, Unix ns.
    pub timestamp: i64,
}

/// FILETIME (100 ns since 1601) to Unix ns; 0 (unset) is `None`.
pub fn filetime_to_unix_ns(ft: u64) -> Option<i64> {
    const EPOCH_DIFF: i64 = 116_444_736_000_000_000;
    let ft = i64::try_from(ft).ok().filter(|t| *t > 0)?;
    (ft - EPOCH_DIFF).checked_mul(100)
}

/// Unix ns cut to whole seconds: the precision of the sysinfo snapshots
/// that `start_time` is reconciled against.
pub fn whole_seconds(ns: i64) -> i64 {
    ns.div_euclid(1_000_000_000) * 1_000_000_000
}

/// Kernel-Process ProcessStart.
pub fn kp_start(p: &Props) -> Result<KpStart, DecodeError> {
    Ok(KpStart {
        pid: p.u32("ProcessID").ok_or(DecodeError::Missing {
            event: "ProcessStart",
            field: "ProcessID",
        })?,
        ppid: p.u32("ParentProcessID"),
        create_time: p.u64("CreateTime").and_then(filetime_to_unix_ns),
        create_filetime: p
            .u64("CreateTime")
            .filter(|t| filetime_to_unix_ns(*t).is_some()),
        session: p.u32("SessionID"),
        image: p.text("ImageName"),
        seq: p.u64("ProcessSequenceNumber"),
        parent_seq: p.u64("ParentProcessSequenceNumber"),
    })
}

/// Kernel-Process ProcessStop.
pub fn kp_stop(p: &Props) -> Result<KpStop, DecodeError> {
    Ok(KpStop {
        pid: p.u32("ProcessID").ok_or(DecodeError::Missing {
            event: "ProcessStop",
            field: "ProcessID",
        })?,
        create_time: p.u64("CreateTime").and_then(filetime_to_unix_ns),
        create_filetime: p
            .u64("CreateTime")
            .filter(|t| filetime_to_unix_ns(*t).is_some()),
        exit_time: p.u64("ExitTime").and_then(filetime_to_unix_ns),
        exit_code: p.u32("ExitCode"),
        image_name: p.text("ImageName"),
        seq: p.u64("ProcessSequenceNumber"),
    })
}

/// The classic provider's opcode, if it is one procmond uses.
pub fn classic_op(opcode: u8) -> Option<ClassicOp> {
    match opcode {
        OPCODE_START => Some(ClassicOp::Start),
        OPCODE_END => Some(ClassicOp::End),
        OPCODE_DC_START => Some(ClassicOp::DcStart),
        OPCODE_DC_END => Some(ClassicOp::DcEnd),
        _ => None,
    }
}

/// A classic process event logged at `timestamp` (FILETIME); `pointer_size`
/// is the event's (4 or 8), which the SID's TOKEN_USER header depends on.
pub fn classic(p: &Props, timestamp: u64, pointer_size: usize) -> Result<Classic, DecodeError> {
    Ok(Classic {
        pid: p.u32("ProcessId").ok_or(DecodeError::Missing {
            event: "Process_TypeGroup1",
            field: "ProcessId",
        })?,
        ppid: p.u32("ParentId"),
        session: p.u32("SessionId"),
        exit_status: p.i32("ExitStatus"),
        sid: p
            .bytes("UserSID")
            .and_then(|b| wbem_sid_to_string(b, pointer_size)),
        image_file_name: p.text("ImageFileName"),
        command_line: p.str("CommandLine").map(str::to_string),
        timestamp: filetime_to_unix_ns(timestamp).unwrap_or(0),
    })
}

/// A name property's bytes as text: UTF-16LE when it looks like it (a NUL
/// high byte before the terminator — a provider version that reports the
/// name as `win:UnicodeString`), otherwise an ANSI string up to its NUL,
/// in this host's ANSI code page (`ansi_to_string`).
pub fn ansi_or_wide(bytes: &[u8]) -> String {
    let body = bytes.len().saturating_sub(2);
    let wide = bytes.len() >= 2
        && bytes.len().is_multiple_of(2)
        && bytes
            .iter()
            .skip(1)
            .step_by(2)
            .take(body / 2)
            .any(|b| *b == 0);
    if wide {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        return String::from_utf16_lossy(&units);
    }
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    ansi_to_string(&bytes[..end])
}

/// ANSI bytes in this host's code page: `MultiByteToWideChar(CP_ACP)` on
/// Windows, Windows-1252 (the Western default) where that fails and on
/// other platforms.
pub fn ansi_to_string(bytes: &[u8]) -> String {
    #[cfg(windows)]
    if let Some(s) = crate::sys::windows_ansi::acp_to_string(bytes) {
        return s;
    }
    windows_1252(bytes)
}

/// Windows-1252: Latin-1 but for 0x80–0x9F (€, quotes, dashes, Š, Ž …);
/// its five unassigned bytes map to the C1 controls, as Windows does.
pub fn windows_1252(bytes: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}',
        '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}',
        '\u{178}',
    ];
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9F => HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        })
        .collect()
}

/// The classic provider's `UserSID` (a WBEM SID: a TOKEN_USER of two
/// pointer-sized words, then the SID itself) as `S-1-…`; `None` when the
/// event has none or the bytes do not hold a whole SID.
pub fn wbem_sid_to_string(bytes: &[u8], pointer_size: usize) -> Option<String> {
    let header = 2 * pointer_size;
    let first = bytes.get(..pointer_size)?;
    if first.iter().all(|b| *b == 0) {
        return None;
    }
    sid_to_string(bytes.get(header..)?)
}

/// A binary SID (revision 1, up to 15 sub-authorities) as `S-1-…`.
pub fn sid_to_string(sid: &[u8]) -> Option<String> {
    let (&revision, &count) = (sid.first()?, sid.get(1)?);
    let count = usize::from(count);
    if revision != 1 || count > 15 || sid.len() < 8 + 4 * count {
        return None;
    }
    let authority = sid[2..8]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut s = format!("S-1-{authority}");
    for i in 0..count {
        let at = 8 + 4 * i;
        let sub = u32::from_le_bytes([sid[at], sid[at + 1], sid[at + 2], sid[at + 3]]);
        s.push_str(&format!("-{sub}"));
    }
    Some(s)
}

/// Splits a Windows command line into arguments the way the C runtime and
/// `CommandLineToArgvW` do: the program name runs to the closing quote or
/// the first blank; after it, blanks separate, quotes group, `2n`
/// backslashes before a quote are `n` backslashes and the quote toggles,
/// `2n+1` are `n` and a literal quote, `""` inside quotes is a literal
/// quote, other backslashes are literal. Bounded like every source
/// (`ARGV_MAX_BYTES`, `ARGV_MAX_ARGS`); the flag says whether it was cut.
pub fn split_command_line(line: &str) -> (Vec<String>, bool) {
    let chars: Vec<char> = line.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    // The program name: no escapes.
    let mut program = String::new();
    if chars.first() == Some(&'"') {
        i = 1;
        while i < chars.len() && chars[i] != '"' {
            program.push(chars[i]);
            i += 1;
        }
        i += 1;
    } else {
        while i < chars.len() && !matches!(chars[i], ' ' | '\t') {
            program.push(chars[i]);
            i += 1;
        }
    }
    if !program.is_empty() || !chars.is_empty() {
        args.push(program);
    }
    loop {
        while i < chars.len() && matches!(chars[i], ' ' | '\t') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let mut arg = String::new();
        let mut quoted = false;
        while i < chars.len() {
            match chars[i] {
                '\\' => {
                    let start = i;
                    while i < chars.len() && chars[i] == '\\' {
                        i += 1;
                    }
                    let n = i - start;
                    if i < chars.len() && chars[i] == '"' {
                        arg.extend(std::iter::repeat_n('\\', n / 2));
                        if n % 2 == 1 {
                            arg.push('"');
                            i += 1;
                        }
                    } else {
                        arg.extend(std::iter::repeat_n('\\', n));
                    }
                }
                '"' if quoted && chars.get(i + 1) == Some(&'"') => {
                    arg.push('"');
                    i += 2;
                }
                '"' => {
                    quoted = !quoted;
                    i += 1;
                }
                ' ' | '\t' if !quoted => break,
                c => {
                    arg.push(c);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
    bound(args)
}

/// Keeps at most `ARGV_MAX_ARGS` arguments and `ARGV_MAX_BYTES` bytes
/// (each argument counted with one separator), cutting on a character
/// boundary.
fn bound(args: Vec<String>) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    for arg in args {
        if out.len() == ARGV_MAX_ARGS {
            return (out, true);
        }
        let room = ARGV_MAX_BYTES.saturating_sub(bytes);
        if arg.len() + 1 > room {
            let mut cut = room.saturating_sub(1).min(arg.len());
            while !arg.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut > 0 {
                out.push(arg[..cut].to_string());
            }
            return (out, true);
        }
        bytes += arg.len() + 1;
        out.push(arg);
    }
    (out, false)
}

/// The last component of a Windows or NT path (`notepad.exe`).
pub fn file_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ImageFileName` (classic) and ProcessStop's `ImageName` are ANSI
    /// strings: the callback hands their bytes over, and a name with a
    /// non-ASCII character (here é, and € from Windows-1252's 0x80–0x9F
    /// block) must come out whole, not be dropped as invalid UTF-8.
    #[test]
    fn ansi_names_decode_as_the_ansi_code_page() {
        let name = Value::Bytes(b"caf\xe9\x80.exe\0".to_vec());
        let c = classic(
            &Props::default()
                .with("ProcessId", Value::U32(4242))
                .with("ImageFileName", name.clone()),
            0,
            8,
        )
        .expect("decodes");
        assert_eq!(c.image_file_name.as_deref(), Some("café€.exe"));
        let stop = kp_stop(
            &Props::default()
                .with("ProcessID", Value::U32(4242))
                .with("ImageName", name),
        )
        .expect("decodes");
        assert_eq!(stop.image_name.as_deref(), Some("café€.exe"));
        // A provider version that reports the name as UTF-16 still reads.
        let wide: Vec<u8> = "naïve.exe\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let c = classic(
            &Props::default()
                .with("ProcessId", Value::U32(1))
                .with("ImageFileName", Value::Bytes(wide)),
            0,
            8,
        )
        .expect("decodes");
        assert_eq!(c.image_file_name.as_deref(), Some("naïve.exe"));
        // Plain strings (UTF-16 properties ferrisetw decoded) pass through.
        let c = classic(
            &Props::default()
                .with("ProcessId", Value::U32(1))
                .with("ImageFileName", Value::Str("cmd.exe".into())),
            0,
            8,
        )
        .expect("decodes");
        assert_eq!(c.image_file_name.as_deref(), Some("cmd.exe"));
    }
}
