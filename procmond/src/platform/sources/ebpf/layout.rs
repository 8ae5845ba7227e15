//! Where each field of a kernel record's header sits: `struct record_header`
//! of `procmond-ebpf/include/procmond_record.h`, named as there.
//!
//! The probes write the C struct; the decoder (`record`) reads these
//! offsets. So the two cannot drift apart unseen, the test below lays the
//! C struct out itself from the header's text (every field little-endian
//! and naturally aligned, as the header promises and clang does for BPF)
//! and compares it field by field with this table, and the header's
//! constants with the decoder's.

pub const VERSION: usize = 0;
pub const KIND: usize = 2;
pub const FLAGS: usize = 4;
pub const KTIME_BOOT_NS: usize = 8;
pub const START_BOOTTIME_NS: usize = 16;
pub const CGROUP_ID: usize = 24;
pub const PID: usize = 32;
pub const TID: usize = 36;
pub const PPID: usize = 40;
pub const UID: usize = 44;
pub const GID: usize = 48;
pub const EUID: usize = 52;
pub const EXIT_CODE: usize = 56;
pub const FILENAME_LEN: usize = 60;
pub const ARGS_LEN: usize = 62;
pub const COMM: usize = 64;
pub const COMM_LEN: usize = 16;
pub const CWD_LEN: usize = 80;
pub const EXE_INO: usize = 88;
pub const EXE_DEV: usize = 96;
pub const EGID: usize = 100;
pub const EXEC_COUNT: usize = 104;
pub const PARENT_START_BOOTTIME_NS: usize = 112;
pub const PID_NS: usize = 120;
pub const NS_TGID: usize = 124;
pub const PARENT_PID_NS: usize = 128;
pub const PARENT_NS_TGID: usize = 132;
pub const SID: usize = 136;
pub const PGID: usize = 140;
pub const TTY_NR: usize = 144;
pub const LOGINUID: usize = 148;
pub const PREV_UID: usize = 152;
pub const PREV_EUID: usize = 156;
pub const PREV_GID: usize = 160;
pub const PREV_EGID: usize = 164;
/// The header's size (`_Static_assert` in the C header).
pub const HEADER_LEN: usize = 168;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ebpf::record;

    const HEADER: &str = include_str!("../../../../../procmond-ebpf/include/procmond_record.h");

    /// This table: every field of `struct record_header` but the padding.
    const FIELDS: [(&str, usize); 34] = [
        ("version", VERSION),
        ("kind", KIND),
        ("flags", FLAGS),
        ("ktime_boot_ns", KTIME_BOOT_NS),
        ("start_boottime_ns", START_BOOTTIME_NS),
        ("cgroup_id", CGROUP_ID),
        ("pid", PID),
        ("tid", TID),
        ("ppid", PPID),
        ("uid", UID),
        ("gid", GID),
        ("euid", EUID),
        ("exit_code", EXIT_CODE),
        ("filename_len", FILENAME_LEN),
        ("args_len", ARGS_LEN),
        ("comm", COMM),
        ("cwd_len", CWD_LEN),
        ("exe_ino", EXE_INO),
        ("exe_dev", EXE_DEV),
        ("egid", EGID),
        ("exec_count", EXEC_COUNT),
        ("parent_start_boottime_ns", PARENT_START_BOOTTIME_NS),
        ("pid_ns", PID_NS),
        ("ns_tgid", NS_TGID),
        ("parent_pid_ns", PARENT_PID_NS),
        ("parent_ns_tgid", PARENT_NS_TGID),
        ("sid", SID),
        ("pgid", PGID),
        ("tty_nr", TTY_NR),
        ("loginuid", LOGINUID),
        ("prev_uid", PREV_UID),
        ("prev_euid", PREV_EUID),
        ("prev_gid", PREV_GID),
        ("prev_egid", PREV_EGID),
    ];

    /// `#define NAME value` of the header, as a number.
    fn define(text: &str, name: &str) -> u64 {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name) && l.starts_with("#define"))
            .unwrap_or_else(|| panic!("no #define {name} in procmond_record.h"));
        let value = line.split_whitespace().skip(2).collect::<String>();
        let value = value.trim_start_matches('(').trim_end_matches(')');
        if let Some(shift) = value.strip_prefix("1u<<") {
            return 1 << shift.parse::<u32>().expect("shift");
        }
        let value = value.trim_end_matches('u');
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).expect("hex"),
            None => value.parse().expect("number"),
        }
    }

    /// `struct record_header` laid out from its text: (name, offset, size),
    /// and the struct's size.
    fn c_layout(text: &str) -> (Vec<(String, usize, usize)>, usize) {
        let body = text
            .split("struct record_header {")
            .nth(1)
            .and_then(|rest| rest.split("};").next())
            .expect("struct record_header in procmond_record.h");
        let mut fields = Vec::new();
        let (mut at, mut align_max) = (0usize, 1usize);
        for line in body.lines() {
            let decl = line.split("/*").next().unwrap_or("").trim();
            let Some(decl) = decl.strip_suffix(';') else {
                continue;
            };
            let mut words = decl.split_whitespace();
            let (Some(ty), Some(name)) = (words.next(), words.next()) else {
                panic!("unreadable field {decl:?}");
            };
            let elem = match ty {
                "__u16" => 2,
                "__u32" => 4,
                "__u64" => 8,
                "char" => 1,
                other => panic!("field type {other} is not one this test can lay out"),
            };
            let (name, count) = match name.split_once('[') {
                Some((n, len)) => {
                    let len = len.trim_end_matches(']');
                    let count = len.parse().unwrap_or_else(|_| define(text, len) as usize);
                    (n, count)
                }
                None => (name, 1),
            };
            at = at.next_multiple_of(elem);
            align_max = align_max.max(elem);
            fields.push((name.to_owned(), at, elem * count));
            at += elem * count;
        }
        (fields, at.next_multiple_of(align_max))
    }

    #[test]
    fn every_header_offset_is_where_the_c_struct_puts_it() {
        let (fields, size) = c_layout(HEADER);
        assert_eq!(size, HEADER_LEN, "sizeof(struct record_header)");
        assert!(HEADER.contains(&format!("sizeof(struct record_header) == {HEADER_LEN}")));
        for (name, at) in FIELDS {
            let c = fields
                .iter()
                .find(|(n, ..)| n == name)
                .unwrap_or_else(|| panic!("{name} is not in struct record_header"));
            assert_eq!(at, c.1, "offset of {name}");
        }
        for (name, ..) in fields.iter().filter(|(n, ..)| !n.starts_with('_')) {
            assert!(
                FIELDS.iter().any(|(n, _)| n == name),
                "struct record_header has {name}, which the decoder does not place"
            );
        }
        let comm = fields.iter().find(|(n, ..)| n == "comm").expect("comm");
        assert_eq!(comm.2, COMM_LEN);
    }

    #[test]
    fn the_header_constants_are_the_decoders() {
        assert_eq!(
            define(HEADER, "RECORD_VERSION"),
            u64::from(record::RECORD_VERSION)
        );
        assert_eq!(define(HEADER, "COMM_LEN") as usize, COMM_LEN);
        for (c, rust) in record::CONSTANTS {
            assert_eq!(define(HEADER, c), rust, "{c}");
        }
    }

    #[test]
    fn a_field_widened_in_the_header_moves_the_ones_after_it() {
        // The comparison above can fail: widen one field in a copy of the
        // header and everything after it moves.
        let drifted = HEADER.replace("__u32 flags;", "__u64 flags;");
        assert_ne!(drifted, HEADER, "the header has `__u32 flags;`");
        let (fields, size) = c_layout(&drifted);
        let at = |name: &str| fields.iter().find(|(n, ..)| n == name).map(|f| f.1);
        assert_eq!(at("flags"), Some(FLAGS + 4));
        assert_ne!(at("ktime_boot_ns"), Some(KTIME_BOOT_NS));
        assert_ne!(size, HEADER_LEN);
    }
}
