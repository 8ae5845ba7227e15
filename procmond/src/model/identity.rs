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

impl std::fmt::Display for EntityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
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
        s.collect_str(self)
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
    /// Reads this machine's boot id and clock-tick rate.
    #[cfg(target_os = "linux")]
    pub fn read() -> std::io::Result<Self> {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
        let boot_id = EntityId::parse(text.trim()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "/proc/sys/kernel/random/boot_id is not a UUID: {:?}",
                    text.trim()
                ),
            )
        })?;
        Ok(Self {
            boot_id: boot_id.0,
            clock_ticks_per_sec: crate::clock::ticks_per_sec(),
        })
    }

    /// This boot's facts, read once; `None` where they cannot be read (the
    /// reason is logged once). Every Linux reader computes ids with these.
    #[cfg(target_os = "linux")]
    pub fn get() -> Option<&'static Self> {
        static BOOT: std::sync::OnceLock<Option<LinuxBoot>> = std::sync::OnceLock::new();
        BOOT.get_or_init(|| {
            Self::read()
                .inspect_err(|e| tracing::error!(error = %e, "no entity_id on any event: the boot id cannot be read"))
                .ok()
        })
        .as_ref()
    }

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
