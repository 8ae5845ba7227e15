//! Process identity: the values that let a consumer join events without a
//! bare pid (docs/reference.md §2.3).
//!
//! `entity_id` follows OCSF's Common Process Identifier (CPID): SHA-256 over
//! facts every observer of the process can read (on Linux the boot id, the
//! pid namespace the process was created in, its start time in clock ticks
//! and its tgid in that namespace), the first 16 bytes kept as an RFC 9562
//! version-8 UUID. The kernel probe, the task iterator and procfs read the
//! same facts, so they name a process the same way, and so does any other
//! tool that follows the specification; a restart of procmond changes none
//! of them. `exec_id` adds what changes on each exec of the same process.

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A 128-bit identifier, rendered as RFC 9562 UUID text.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct EntityId(pub [u8; 16]);

impl EntityId {
    /// The UUIDv8 of `input`'s SHA-256 digest (the CPID construction): the
    /// digest's first 16 bytes with version 8 and the RFC 9562 variant set.
    pub fn from_digest_input(input: &[u8]) -> Self {
        let digest = Sha256::digest(input);
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0F) | 0x80;
        b[8] = (b[8] & 0x3F) | 0x80;
        Self(b)
    }

    /// Parses UUID text (`8-4-4-4-12` hex digits).
    pub fn parse(text: &str) -> Option<Self> {
        let hex: Vec<u8> = text.bytes().filter(|c| *c != b'-').collect();
        if hex.len() != 32 || text.len() != 36 {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            b[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Self(b))
    }
}

impl EntityId {
    /// The 36 bytes of the UUID text (lowercase hex, dashes at 8-4-4-4-12).
    pub fn text(&self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut at = 0;
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        out
    }
}

impl std::fmt::Display for EntityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        // Hex digits and dashes only: always UTF-8.
        f.write_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl std::fmt::Debug for EntityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for ArchivedEntityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&EntityId(self.0), f)
    }
}

impl Serialize for EntityId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// The facts of this boot that every Linux process id is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinuxBoot {
    /// `/proc/sys/kernel/random/boot_id`, as its 16 RFC 9562 bytes.
    pub boot_id: [u8; 16],
    /// `sysconf(_SC_CLK_TCK)`: the unit of `/proc/PID/stat`'s start time.
    pub clock_ticks_per_sec: u64,
}

/// What names one Linux process in the CPID: its pid namespace (the one it
/// was created in, by inode number), its tgid there and its start time
/// since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinuxProcessFacts {
    pub pid_ns: u64,
    pub ns_tgid: u64,
    pub start_boottime_ns: u64,
}

impl LinuxBoot {
    /// The start time in clock ticks since boot, as `/proc/PID/stat`
    /// field 22 gives it.
    pub fn ticks(&self, start_boottime_ns: u64) -> u64 {
        let per_tick = 1_000_000_000 / self.clock_ticks_per_sec.max(1);
        start_boottime_ns / per_tick
    }

    /// The process's CPID (the 40-byte Linux digest input, native-endian
    /// integers as the specification says).
    pub fn entity_id(&self, p: &LinuxProcessFacts) -> EntityId {
        self.entity_id_ticks(p.pid_ns, self.ticks(p.start_boottime_ns), p.ns_tgid)
    }

    /// The CPID from the start time already in clock ticks.
    pub fn entity_id_ticks(&self, pid_ns: u64, start_ticks: u64, ns_tgid: u64) -> EntityId {
        let mut input = [0u8; 40];
        input[..16].copy_from_slice(&self.boot_id);
        input[16..24].copy_from_slice(&pid_ns.to_ne_bytes());
        input[24..32].copy_from_slice(&start_ticks.to_ne_bytes());
        input[32..40].copy_from_slice(&ns_tgid.to_ne_bytes());
        EntityId::from_digest_input(&input)
    }
}

/// A GUID as Windows keeps it in memory (`guiddef.h`: `Data1` u32,
/// `Data2` u16, `Data3` u16 little-endian, then `Data4` as 8 bytes) from
/// its text, e.g. the registry's `MachineGuid` (braces allowed).
pub fn guid_memory_from_text(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    let text = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    Some(rfc_to_guid_memory(EntityId::parse(text)?.0))
}

/// RFC 9562 byte order ⇄ GUID memory order (the swap is its own inverse).
fn rfc_to_guid_memory(mut b: [u8; 16]) -> [u8; 16] {
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

impl EntityId {
    /// The CPID construction on Windows: the digest's first 16 bytes are
    /// cast to a GUID (whose first three fields are little-endian), the
    /// version set in `Data3` and the variant in `Data4[0]`, and the text
    /// is the GUID's. Held here in RFC byte order, so `Display` gives that
    /// text.
    pub fn from_digest_input_as_guid(input: &[u8]) -> Self {
        let digest = Sha256::digest(input);
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        let mut b = rfc_to_guid_memory(b);
        b[6] = (b[6] & 0x0F) | 0x80;
        b[8] = (b[8] & 0x3F) | 0x80;
        Self(b)
    }
}

/// The facts of one Windows boot every process id is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowsBoot {
    /// `HKLM\SOFTWARE\Microsoft\Cryptography\MachineGuid`, as the GUID
    /// struct lies in memory (`guid_memory_from_text`).
    pub machine_guid: [u8; 16],
    /// The creation time of the System process (pid 4), FILETIME ticks
    /// (100 ns since 1601).
    pub system_create_time: u64,
}

impl WindowsBoot {
    /// The process's CPID: the 40-byte Windows digest input (machine GUID,
    /// System's creation time, the process's creation time, pid as u64;
    /// native-endian integers).
    pub fn entity_id(&self, create_time: u64, pid: u32) -> EntityId {
        let mut input = [0u8; 40];
        input[..16].copy_from_slice(&self.machine_guid);
        input[16..24].copy_from_slice(&self.system_create_time.to_ne_bytes());
        input[24..32].copy_from_slice(&create_time.to_ne_bytes());
        input[32..40].copy_from_slice(&u64::from(pid).to_ne_bytes());
        EntityId::from_digest_input_as_guid(&input)
    }
}

/// Seconds and microseconds since the Unix epoch, as macOS and FreeBSD
/// report process start times (`struct timeval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timeval {
    pub sec: u64,
    pub usec: u64,
}

impl Timeval {
    /// From Unix-epoch µs; `None` before the epoch.
    pub fn from_us(us: i64) -> Option<Self> {
        let us = u64::try_from(us).ok()?;
        Some(Self {
            sec: us / 1_000_000,
            usec: us % 1_000_000,
        })
    }

    fn put(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.sec.to_ne_bytes());
        out[8..16].copy_from_slice(&self.usec.to_ne_bytes());
    }
}

/// The facts of one macOS boot every process id is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacBoot {
    /// `IOPlatformSerialNumber`, ASCII, NUL-padded to 16 bytes.
    pub serial: [u8; 16],
    /// The hardware UUID (`IOPlatformUUID`), 16 RFC 9562 bytes.
    pub hardware_uuid: [u8; 16],
    /// Start of kernel_task (pid 0) and launchd (pid 1), `p_starttime`.
    pub kernel_task_start: Timeval,
    pub launchd_start: Timeval,
}

impl MacBoot {
    /// The serial number's 16-byte field: its bytes, NUL-padded; `None`
    /// when it is empty, longer than 16 bytes, or not ASCII.
    pub fn serial_field(serial: &str) -> Option<[u8; 16]> {
        let bytes = serial.as_bytes();
        if bytes.is_empty() || bytes.len() > 16 || !serial.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        out[..bytes.len()].copy_from_slice(bytes);
        Some(out)
    }

    /// The process's CPID: the 88-byte macOS digest input (serial, hardware
    /// UUID, kernel_task's and launchd's start, the process's start, pid
    /// as u64; native-endian integers).
    pub fn entity_id(&self, start: Timeval, pid: u32) -> EntityId {
        let mut input = [0u8; 88];
        input[..16].copy_from_slice(&self.serial);
        input[16..32].copy_from_slice(&self.hardware_uuid);
        self.kernel_task_start.put(&mut input[32..48]);
        self.launchd_start.put(&mut input[48..64]);
        start.put(&mut input[64..80]);
        input[80..88].copy_from_slice(&u64::from(pid).to_ne_bytes());
        EntityId::from_digest_input(&input)
    }
}

/// The facts of one FreeBSD boot procmond computes process ids with (the
/// CPID specification has no FreeBSD section; docs/reference.md, "entity_id
/// on Windows, macOS and FreeBSD", defines this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeBsdBoot {
    /// `kern.hostuuid`, 16 RFC 9562 bytes.
    pub hostuuid: [u8; 16],
    /// `kern.boottime` as procmond first read it.
    pub boottime: Timeval,
}

impl FreeBsdBoot {
    /// The process's id: UUIDv8 of SHA-256 over 56 bytes: hostuuid,
    /// boottime seconds and µs, the process's start (`ki_start` re-based on
    /// the boottime above) seconds and µs, pid; native-endian u64s.
    pub fn entity_id(&self, start: Timeval, pid: u32) -> EntityId {
        let mut input = [0u8; 56];
        input[..16].copy_from_slice(&self.hostuuid);
        self.boottime.put(&mut input[16..32]);
        start.put(&mut input[32..48]);
        input[48..56].copy_from_slice(&u64::from(pid).to_ne_bytes());
        EntityId::from_digest_input(&input)
    }
}

/// The id of one image of a process: its entity id and the kernel's count
/// of execs along its line (`task_struct.self_exec_id` on Linux, which
/// every exec increments and a fork copies), hashed into a UUIDv8. A shell
/// that execs a program keeps its `entity_id` and gets a new `exec_id`.
pub fn exec_id(entity: EntityId, exec_count: u64) -> EntityId {
    let mut input = [0u8; 24];
    input[..16].copy_from_slice(&entity.0);
    input[16..24].copy_from_slice(&exec_count.to_le_bytes());
    EntityId::from_digest_input(&input)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the CPID specification's Linux section.
    #[test]
    fn linux_cpid_matches_the_specification_example() {
        let boot = LinuxBoot {
            boot_id: EntityId::parse("2899dae4-4fa4-4eef-95b6-6bc95325f61a")
                .expect("uuid")
                .0,
            clock_ticks_per_sec: 100,
        };
        let id = boot.entity_id_ticks(4_026_532_263, 55_558, 29);
        assert_eq!(id.to_string(), "b770a0ed-8463-822c-b5f6-30d9081ddbd9");
        // Ticks from nanoseconds: 55 558 ticks of 10 ms.
        let facts = LinuxProcessFacts {
            pid_ns: 4_026_532_263,
            ns_tgid: 29,
            start_boottime_ns: 555_589_999_999,
        };
        assert_eq!(boot.entity_id(&facts), id);
        // Any one fact changed gives another id.
        assert_ne!(boot.entity_id_ticks(4_026_532_263, 55_558, 30), id);
        assert_ne!(boot.entity_id_ticks(4_026_532_263, 55_559, 29), id);
        assert_ne!(boot.entity_id_ticks(4_026_531_836, 55_558, 29), id);
    }

    /// The worked example of the CPID specification's Windows section:
    /// the GUID layout both of the machine GUID in the input and of the
    /// result decide the text.
    #[test]
    fn windows_cpid_matches_the_specification_example() {
        let boot = WindowsBoot {
            machine_guid: guid_memory_from_text("b3b44fe1-8a3b-4191-a91e-d3581e766fac")
                .expect("guid"),
            system_create_time: 133_494_576_686_106_382,
        };
        let id = boot.entity_id(133_494_576_996_587_731, 4992);
        assert_eq!(id.to_string(), "ec88c71a-1d67-853c-a76c-3f10f2acdb6e");
        assert_eq!(&id.to_string()[14..15], "8", "version 8");
        assert_ne!(boot.entity_id(133_494_576_996_587_731, 4993), id);
        assert_ne!(boot.entity_id(133_494_576_996_587_732, 4992), id);
        // The machine GUID in RFC byte order is another input, another id.
        let rfc = WindowsBoot {
            machine_guid: EntityId::parse("b3b44fe1-8a3b-4191-a91e-d3581e766fac")
                .expect("uuid")
                .0,
            ..boot
        };
        assert_ne!(rfc.entity_id(133_494_576_996_587_731, 4992), id);
        // The registry's text may carry braces.
        assert_eq!(
            guid_memory_from_text("{b3b44fe1-8a3b-4191-a91e-d3581e766fac}"),
            Some(boot.machine_guid)
        );
        assert_eq!(boot.machine_guid[..4], [0xe1, 0x4f, 0xb4, 0xb3]);
        assert_eq!(guid_memory_from_text("b3b44fe1"), None);
    }

    fn mac_example() -> MacBoot {
        MacBoot {
            serial: MacBoot::serial_field("T2T3GKP272").expect("serial"),
            hardware_uuid: EntityId::parse("8e923375-9510-5729-a6cc-2f66444573c9")
                .expect("uuid")
                .0,
            kernel_task_start: Timeval {
                sec: 1_703_173_115,
                usec: 212_514,
            },
            launchd_start: Timeval {
                sec: 1_703_173_115,
                usec: 282_857,
            },
        }
    }

    /// The CPID specification's macOS example. Its table names pid 1330,
    /// but the id it prints is the one of the same facts with pid 4 (found
    /// by recomputing the 88-byte input with Python's hashlib for pids
    /// around 1330; no other field change reproduces it): the printed id is
    /// checked with pid 4, and pid 1330 against the value hashlib gives for
    /// the table as written (docs/platforms.md).
    #[test]
    fn macos_cpid_matches_the_specification_example() {
        let boot = mac_example();
        let start = Timeval {
            sec: 1_703_174_125,
            usec: 741_886,
        };
        assert_eq!(
            boot.entity_id(start, 4).to_string(),
            "e6d6d95b-5d2b-8bb5-8296-02908ea24c8f"
        );
        assert_eq!(
            boot.entity_id(start, 1330).to_string(),
            "6082233e-8eed-8457-a287-daa46ebdbdf7"
        );
        let later = Timeval {
            usec: 741_887,
            ..start
        };
        assert_ne!(boot.entity_id(later, 1330), boot.entity_id(start, 1330));
        assert_eq!(MacBoot::serial_field(""), None);
        assert_eq!(MacBoot::serial_field("0123456789abcdefg"), None);
        assert_eq!(
            MacBoot::serial_field("0123456789abcdef"),
            Some(*b"0123456789abcdef")
        );
        assert_eq!(
            Timeval::from_us(1_703_174_125_741_886),
            Some(start),
            "µs split into seconds and µs"
        );
        assert_eq!(Timeval::from_us(-1), None);
    }

    /// procmond's FreeBSD id: a vector computed independently (Python
    /// hashlib over the 56 bytes, docs/reference.md).
    #[test]
    fn freebsd_id_matches_the_documented_vector() {
        let boot = FreeBsdBoot {
            hostuuid: EntityId::parse("5a3e1b2c-9d4f-11ee-8c90-0242ac120002")
                .expect("uuid")
                .0,
            boottime: Timeval {
                sec: 1_703_173_115,
                usec: 212_514,
            },
        };
        let start = Timeval {
            sec: 1_703_174_125,
            usec: 741_886,
        };
        let id = boot.entity_id(start, 1330);
        assert_eq!(id.to_string(), "73684b6e-fbd8-882d-b704-b3cae7ffd6e3");
        assert_ne!(boot.entity_id(start, 1331), id);
        let other_boot = FreeBsdBoot {
            boottime: Timeval {
                sec: 1_703_173_116,
                ..boot.boottime
            },
            ..boot
        };
        assert_ne!(other_boot.entity_id(start, 1330), id);
    }

    #[test]
    fn text_round_trips_and_bad_text_is_refused() {
        let id = EntityId::from_digest_input(b"x");
        assert_eq!(EntityId::parse(&id.to_string()), Some(id));
        assert_eq!(&id.to_string()[14..15], "8", "version 8");
        assert!(matches!(&id.to_string()[19..20], "8" | "9" | "a" | "b"));
        for bad in [
            "",
            "zz",
            "2899dae4-4fa4-4eef-95b6-6bc95325f61",
            "2899dae4x4fa4-4eef-95b6-6bc95325f61a1",
        ] {
            assert_eq!(EntityId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn exec_id_changes_with_each_exec_and_each_process() {
        let a = EntityId::from_digest_input(b"a");
        let b = EntityId::from_digest_input(b"b");
        assert_ne!(exec_id(a, 1), exec_id(a, 2));
        assert_ne!(exec_id(a, 1), exec_id(b, 1));
        assert_eq!(exec_id(a, 7), exec_id(a, 7));
    }
}
