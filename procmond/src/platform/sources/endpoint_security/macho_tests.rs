//! Tests of the entitlement reader on constructed Mach-O files: thin and
//! universal, XML and DER, unsigned, and damaged ones.

use std::io::Cursor;

use super::*;

const KEY: &str = "com.apple.developer.endpoint-security.client";

fn plist(body: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">\n<dict>\n{body}</dict>\n</plist>\n"
    )
    .into_bytes()
}

fn read(bytes: &[u8], cpu: u32) -> Result<Entitlements, MachoError> {
    read_entitlements(&mut Cursor::new(bytes), cpu)
}

fn der_entry(key: &str, value: &[u8]) -> Vec<u8> {
    let mut pair = vec![0x0c, u8::try_from(key.len()).expect("short")];
    pair.extend_from_slice(key.as_bytes());
    pair.extend_from_slice(value);
    let mut seq = vec![0x30, u8::try_from(pair.len()).expect("short")];
    seq.extend_from_slice(&pair);
    seq
}

/// A universal binary holding `slices` (cpu, thin Mach-O), 32-bit table.
fn fat(slices: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&FAT_MAGIC.to_be_bytes());
    f.extend_from_slice(&u32::try_from(slices.len()).expect("few").to_be_bytes());
    let mut offset = 4096u32;
    let mut bodies = Vec::new();
    for (cpu, body) in slices {
        let size = u32::try_from(body.len()).expect("small");
        for v in [*cpu, 0, offset, size, 12] {
            f.extend_from_slice(&v.to_be_bytes());
        }
        bodies.push((offset, body));
        offset += size.div_ceil(4096) * 4096;
    }
    for (at, body) in bodies {
        f.resize(at as usize, 0);
        f.extend_from_slice(body);
    }
    f
}

#[test]
fn xml_entitlement_is_found_and_must_be_true() {
    let yes = plist(&format!("\t<key>{KEY}</key>\n\t<true/>\n"));
    let m = fixture(
        CPU_TYPE_ARM64,
        Some(&[(0, 0xfade_0c02, b"code directory"), (5, 0xfade_7171, &yes)]),
    );
    let e = read(&m, CPU_TYPE_ARM64).expect("reads");
    assert!(matches!(e, Entitlements::Xml(_)));
    assert!(e.grants(KEY));
    assert!(!e.grants("com.apple.security.get-task-allow"));

    let no = plist(&format!("<key>{KEY}</key><false/>"));
    let m = fixture(CPU_TYPE_ARM64, Some(&[(5, 0xfade_7171, &no)]));
    assert!(!read(&m, CPU_TYPE_ARM64).expect("reads").grants(KEY));
    // A prefix of the key is another key.
    let other = plist(&format!("<key>{KEY}.extra</key><true/>"));
    let m = fixture(CPU_TYPE_ARM64, Some(&[(5, 0xfade_7171, &other)]));
    assert!(!read(&m, CPU_TYPE_ARM64).expect("reads").grants(KEY));
}

#[test]
fn der_only_signatures_are_read_too() {
    let mut der = der_entry("com.apple.security.app-sandbox", &[0x01, 0x01, 0x00]);
    der.extend(der_entry(KEY, &[0x01, 0x01, 0xff]));
    let m = fixture(CPU_TYPE_X86_64, Some(&[(7, 0xfade_7172, &der)]));
    let e = read(&m, CPU_TYPE_X86_64).expect("reads");
    assert!(matches!(e, Entitlements::Der(_)));
    assert!(e.grants(KEY));
    assert!(!e.grants("com.apple.security.app-sandbox"), "set to false");
}

#[test]
fn unsigned_and_entitlement_free_binaries() {
    let m = fixture(CPU_TYPE_ARM64, None);
    assert_eq!(
        read(&m, CPU_TYPE_ARM64).expect("reads"),
        Entitlements::Unsigned
    );
    let m = fixture(CPU_TYPE_ARM64, Some(&[(0, 0xfade_0c02, b"cd")]));
    let e = read(&m, CPU_TYPE_ARM64).expect("reads");
    assert_eq!(e, Entitlements::None);
    assert!(!e.grants(KEY));
}

#[test]
fn universal_binaries_use_this_cpus_slice() {
    let yes = plist(&format!("<key>{KEY}</key><true/>"));
    let arm = fixture(CPU_TYPE_ARM64, Some(&[(5, 0xfade_7171, &yes)]));
    let intel = fixture(CPU_TYPE_X86_64, None);
    let both = fat(&[(CPU_TYPE_X86_64, intel), (CPU_TYPE_ARM64, arm)]);
    assert!(read(&both, CPU_TYPE_ARM64).expect("reads").grants(KEY));
    assert_eq!(
        read(&both, CPU_TYPE_X86_64).expect("reads"),
        Entitlements::Unsigned
    );
    assert!(matches!(read(&both, 0x0100_0012), Err(MachoError::NoSlice)));
}

#[test]
fn damaged_files_are_errors_not_panics() {
    assert!(matches!(read(b"", CPU_TYPE_ARM64), Err(MachoError::Io(_))));
    assert!(matches!(
        read(
            b"#!/bin/sh\necho hi\n................................",
            CPU_TYPE_ARM64
        ),
        Err(MachoError::NotMacho(_))
    ));
    let yes = plist(&format!("<key>{KEY}</key><true/>"));
    let good = fixture(CPU_TYPE_ARM64, Some(&[(5, 0xfade_7171, &yes)]));
    // Every truncation of a good file fails cleanly (or reads what is there).
    for cut in 0..good.len() {
        let _ = read(&good[..cut], CPU_TYPE_ARM64);
    }
    // Every single corrupted byte, too.
    for at in 0..good.len() {
        for v in [0x00, 0x7f, 0xff] {
            let mut bad = good.clone();
            bad[at] = v;
            let _ = read(&bad, CPU_TYPE_ARM64);
        }
    }
    // A huge sizeofcmds is refused before anything is allocated.
    let mut bad = good.clone();
    bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        read(&bad, CPU_TYPE_ARM64),
        Err(MachoError::Malformed(_))
    ));
    // A zero-sized load command would loop forever: refused.
    let mut bad = good;
    bad[36..40].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        read(&bad, CPU_TYPE_ARM64),
        Err(MachoError::Malformed(_))
    ));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = read(&data, CPU_TYPE_ARM64);
        let _ = Entitlements::Xml(data.clone()).grants(KEY);
        let _ = Entitlements::Der(data).grants(KEY);
    }
}
