//! Reading the entitlements a Mach-O executable is signed with, without the
//! Security framework (pure Rust, no `unsafe`, tested on every platform).
//!
//! `procmond capabilities` reports whether the running binary carries the
//! `com.apple.developer.endpoint-security.client` entitlement. The code
//! signature is a blob inside the executable (`LC_CODE_SIGNATURE`): a
//! SuperBlob whose entitlements slot holds the XML plist (slot 5) and, from
//! macOS 12's codesign on, the same in DER (slot 7). Only headers, the blob
//! index and that one blob are read. The file is untrusted input: every
//! count, offset and length is bounded and checked.
//!
//! Carrying the entitlement is not being granted it: a restricted
//! entitlement is honoured only with a matching provisioning profile (or
//! with SIP off). `es_new_client` is the authority; this is a hint for
//! operators.

use std::io::{Read, Seek, SeekFrom};

const FAT_MAGIC: u32 = 0xcafe_babe;
const FAT_MAGIC_64: u32 = 0xcafe_babf;
const MH_MAGIC_64: u32 = 0xfeed_facf;
const LC_CODE_SIGNATURE: u32 = 0x1d;
const CSMAGIC_EMBEDDED_SIGNATURE: u32 = 0xfade_0cc0;
const CSMAGIC_EMBEDDED_ENTITLEMENTS: u32 = 0xfade_7171;
const CSMAGIC_EMBEDDED_DER_ENTITLEMENTS: u32 = 0xfade_7172;
const CSSLOT_ENTITLEMENTS: u32 = 5;
const CSSLOT_DER_ENTITLEMENTS: u32 = 7;
pub const CPU_TYPE_X86_64: u32 = 0x0100_0007;
pub const CPU_TYPE_ARM64: u32 = 0x0100_000c;

const MAX_FAT_ARCHS: u32 = 32;
const MAX_LOAD_COMMANDS_BYTES: u32 = 1 << 20;
const MAX_BLOBS: u32 = 64;
const MAX_ENTITLEMENTS_BYTES: u32 = 1 << 20;

/// Why the signature could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MachoError {
    #[error("reading the executable: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a 64-bit little-endian Mach-O (magic {0:#010x})")]
    NotMacho(u32),
    #[error("universal binary without a slice for this CPU")]
    NoSlice,
    #[error("malformed Mach-O: {0}")]
    Malformed(&'static str),
}

/// What the code signature says about entitlements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entitlements {
    /// No `LC_CODE_SIGNATURE`: unsigned.
    Unsigned,
    /// Signed, without an entitlements blob.
    None,
    /// The XML plist (slot 5).
    Xml(Vec<u8>),
    /// Only the DER form (slot 7).
    Der(Vec<u8>),
}

impl Entitlements {
    /// Whether `key` is set to true.
    pub fn grants(&self, key: &str) -> bool {
        match self {
            Self::Unsigned | Self::None => false,
            Self::Xml(xml) => xml_grants(xml, key),
            Self::Der(der) => der_grants(der, key),
        }
    }
}

/// The entitlements of the slice for `cpu` (`CPU_TYPE_*`) in `file`.
pub fn read_entitlements<R: Read + Seek>(
    file: &mut R,
    cpu: u32,
) -> Result<Entitlements, MachoError> {
    let magic_bytes: [u8; 4] = read_array(file, 0)?;
    let slice = match u32::from_be_bytes(magic_bytes) {
        FAT_MAGIC => fat_slice(file, cpu, false)?,
        FAT_MAGIC_64 => fat_slice(file, cpu, true)?,
        _ => 0,
    };
    let header: [u8; 32] = read_array(file, slice)?;
    let magic = le32(&header, 0);
    if magic != MH_MAGIC_64 {
        return Err(MachoError::NotMacho(magic));
    }
    let (ncmds, sizeofcmds) = (le32(&header, 16), le32(&header, 20));
    if sizeofcmds > MAX_LOAD_COMMANDS_BYTES {
        return Err(MachoError::Malformed("load commands too large"));
    }
    let cmds = read_vec(file, slice.saturating_add(32), sizeofcmds)?;
    let Some((dataoff, datasize)) = code_signature(&cmds, ncmds)? else {
        return Ok(Entitlements::Unsigned);
    };
    read_signature(file, slice.saturating_add(u64::from(dataoff)), datasize)
}

/// The offset of `cpu`'s slice in a universal binary (big-endian headers).
fn fat_slice<R: Read + Seek>(file: &mut R, cpu: u32, wide: bool) -> Result<u64, MachoError> {
    let head: [u8; 8] = read_array(file, 0)?;
    let count = be32(&head, 4);
    if count > MAX_FAT_ARCHS {
        return Err(MachoError::Malformed("too many architectures"));
    }
    let entry = if wide { 32 } else { 20 };
    let table = read_vec(file, 8, count * entry)?;
    for arch in table.chunks_exact(entry as usize) {
        if be32(arch, 0) == cpu {
            return Ok(if wide {
                (u64::from(be32(arch, 8)) << 32) | u64::from(be32(arch, 12))
            } else {
                u64::from(be32(arch, 8))
            });
        }
    }
    Err(MachoError::NoSlice)
}

/// `(dataoff, datasize)` of `LC_CODE_SIGNATURE`, if there is one.
fn code_signature(cmds: &[u8], ncmds: u32) -> Result<Option<(u32, u32)>, MachoError> {
    let mut at = 0usize;
    for _ in 0..ncmds {
        let Some(head) = cmds.get(at..at.saturating_add(8)) else {
            return Err(MachoError::Malformed("load command past sizeofcmds"));
        };
        let (cmd, size) = (le32(head, 0), le32(head, 4) as usize);
        if size < 8 {
            return Err(MachoError::Malformed(
                "load command smaller than its header",
            ));
        }
        if cmd == LC_CODE_SIGNATURE {
            let body = cmds
                .get(at..at.saturating_add(16))
                .ok_or(MachoError::Malformed("short LC_CODE_SIGNATURE"))?;
            return Ok(Some((le32(body, 8), le32(body, 12))));
        }
        at = at.saturating_add(size);
    }
    Ok(None)
}

/// The entitlements blob of the SuperBlob at `at` (`size` bytes).
fn read_signature<R: Read + Seek>(
    file: &mut R,
    at: u64,
    size: u32,
) -> Result<Entitlements, MachoError> {
    let head: [u8; 12] = read_array(file, at)?;
    if be32(&head, 0) != CSMAGIC_EMBEDDED_SIGNATURE {
        return Err(MachoError::Malformed("no embedded-signature SuperBlob"));
    }
    let count = be32(&head, 8);
    if count > MAX_BLOBS {
        return Err(MachoError::Malformed("too many signature blobs"));
    }
    let index = read_vec(file, at.saturating_add(12), count * 8)?;
    let slot = |wanted: u32| {
        index
            .chunks_exact(8)
            .find(|e| be32(e, 0) == wanted)
            .map(|e| be32(e, 4))
    };
    let (offset, magic, der) = match (slot(CSSLOT_ENTITLEMENTS), slot(CSSLOT_DER_ENTITLEMENTS)) {
        (Some(o), _) => (o, CSMAGIC_EMBEDDED_ENTITLEMENTS, false),
        (None, Some(o)) => (o, CSMAGIC_EMBEDDED_DER_ENTITLEMENTS, true),
        (None, None) => return Ok(Entitlements::None),
    };
    let blob_at = at.saturating_add(u64::from(offset));
    let blob_head: [u8; 8] = read_array(file, blob_at)?;
    let length = be32(&blob_head, 4);
    if be32(&blob_head, 0) != magic || length < 8 {
        return Err(MachoError::Malformed("bad entitlements blob"));
    }
    if length > MAX_ENTITLEMENTS_BYTES || u64::from(offset) + u64::from(length) > u64::from(size) {
        return Err(MachoError::Malformed("entitlements blob out of bounds"));
    }
    let body = read_vec(file, blob_at.saturating_add(8), length - 8)?;
    Ok(if der {
        Entitlements::Der(body)
    } else {
        Entitlements::Xml(body)
    })
}

/// `<key>KEY</key>` followed by `<true/>` in an XML plist.
fn xml_grants(xml: &[u8], key: &str) -> bool {
    let needle = format!("<key>{key}</key>");
    let Some(at) = find(xml, needle.as_bytes()) else {
        return false;
    };
    let rest = &xml[at + needle.len()..];
    let start = rest
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let rest = &rest[start..];
    rest.starts_with(b"<true/>") || rest.starts_with(b"<true />")
}

/// The key as a DER UTF8String followed by BOOLEAN TRUE.
fn der_grants(der: &[u8], key: &str) -> bool {
    let Ok(len) = u8::try_from(key.len()) else {
        return false;
    };
    if len >= 0x80 {
        return false; // long-form lengths: not an entitlement name
    }
    let mut needle = vec![0x0c, len];
    needle.extend_from_slice(key.as_bytes());
    needle.extend_from_slice(&[0x01, 0x01, 0xff]);
    find(der, &needle).is_some()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn read_array<R: Read + Seek, const N: usize>(file: &mut R, at: u64) -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_vec<R: Read + Seek>(file: &mut R, at: u64, len: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A minimal signed Mach-O for `cpu` with `blobs` (slot, magic, payload)
/// in its signature, for tests; `None` leaves the signature out.
#[cfg(test)]
pub(super) fn fixture(cpu: u32, blobs: Option<&[(u32, u32, &[u8])]>) -> Vec<u8> {
    let mut f = Vec::new();
    let ncmds: u32 = if blobs.is_some() { 2 } else { 1 };
    let sizeofcmds = 24 + if blobs.is_some() { 16 } else { 0 };
    for v in [MH_MAGIC_64, cpu, 0, 2, ncmds, sizeofcmds, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    // An unrelated command first (LC_UUID-sized), to be skipped.
    f.extend_from_slice(&0x1bu32.to_le_bytes());
    f.extend_from_slice(&24u32.to_le_bytes());
    f.extend_from_slice(&[0x11; 16]);
    let Some(blobs) = blobs else { return f };
    let dataoff = u32::try_from(f.len() + 16).expect("small");
    let mut sig = Vec::new();
    let count = u32::try_from(blobs.len()).expect("small");
    let mut offset = 12 + 8 * count;
    let mut index = Vec::new();
    let mut bodies = Vec::new();
    for (slot, magic, payload) in blobs {
        index.extend_from_slice(&slot.to_be_bytes());
        index.extend_from_slice(&offset.to_be_bytes());
        let len = u32::try_from(payload.len() + 8).expect("small");
        bodies.extend_from_slice(&magic.to_be_bytes());
        bodies.extend_from_slice(&len.to_be_bytes());
        bodies.extend_from_slice(payload);
        offset += len;
    }
    sig.extend_from_slice(&CSMAGIC_EMBEDDED_SIGNATURE.to_be_bytes());
    sig.extend_from_slice(&offset.to_be_bytes());
    sig.extend_from_slice(&count.to_be_bytes());
    sig.extend_from_slice(&index);
    sig.extend_from_slice(&bodies);
    let datasize = u32::try_from(sig.len()).expect("small");
    for v in [LC_CODE_SIGNATURE, 16, dataoff, datasize] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&sig);
    f
}

#[cfg(test)]
#[path = "macho_tests.rs"]
mod tests;
