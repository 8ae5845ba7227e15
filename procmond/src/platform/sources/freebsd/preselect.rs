//! Which audit classes procmond's pipe selects, so that the kernel queues
//! for it only the records it reports.
//!
//! The stock classes of exec, fork and exit (`ex`, `pc` in
//! /etc/security/audit_event) hold about 115 other events (chdir, wait4,
//! kill, umask …). An audit pipe queues at most 1 024 records
//! (`AUDIT_PIPE_QLIMIT_MAX`, audit_pipe.c) and drops the rest
//! (`kernel_lost`), so selecting `pc` lets that noise crowd out the events
//! procmond reports. Instead procmond adds a class bit of
//! its own, `PRIVATE_CLASS`, to the classes of the events it reports
//! (auditon `A_SETCLASS`, which replaces one event's class mask in the
//! kernel's map) and selects only that bit. The bit is one that OpenBSM's
//! stock /etc/security/audit_class leaves unnamed, so no `flags:` in
//! audit_control selects it except `all`, which selects these events
//! anyway: the trail keeps what it kept.
//!
//! auditd loads the whole map again from /etc/security/audit_event when it
//! starts and on `audit -s` (`auditd_set_evcmap`: one `A_SETCLASS` per
//! event), which removes the bit; the reader looks every second and marks
//! the events again. If the host's audit_class names a class with that bit,
//! procmond does not touch the map and selects the stock classes.
//!
//! Pure, compiled everywhere; the auditon calls are in `audit.rs`/`ffi.rs`.

/// The class bit procmond adds to its events: unnamed in the stock
/// audit_class (which names 0x1 … 0x4000 and 0x20000000 … 0x80000000).
pub const PRIVATE_CLASS: u32 = 0x0080_0000;

/// The classes named in an audit_class(5) file (`mask:name:description`
/// lines) whose mask has `bit`, except the all-bits ones (`all`).
pub fn classes_using(audit_class: &str, bit: u32) -> Vec<String> {
    audit_class
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.splitn(3, ':');
            let mask = fields.next()?.trim();
            let name = fields.next()?.trim();
            let hex = mask.strip_prefix("0x").or_else(|| mask.strip_prefix("0X"));
            let mask = match hex {
                Some(h) => u32::from_str_radix(h, 16).ok()?,
                None => mask.parse().ok()?,
            };
            (mask != u32::MAX && mask & bit != 0).then(|| name.to_string())
        })
        .collect()
}

/// The events (of `classes`, as the kernel maps them) that lack `bit`,
/// each with the class mask to set: its classes and the bit.
pub fn to_mark(classes: &[(u16, u32)], bit: u32) -> Vec<(u16, u32)> {
    classes
        .iter()
        .filter(|(_, class)| class & bit == 0)
        .map(|&(event, class)| (event, class | bit))
        .collect()
}

/// The mask that selects every one of `classes` without a private class.
pub fn stock_mask(classes: &[(u16, u32)]) -> u32 {
    classes.iter().fold(0, |mask, (_, class)| mask | class)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenBSM's etc/audit_class, as FreeBSD installs it.
    const STOCK: &str = "#\n# This file must match audit.h\n#\n0x00000000:no:invalid class\n0x00000001:fr:file read\n0x00000002:fw:file write\n0x00000004:fa:file attribute access\n0x00000008:fm:file attribute modify\n0x00000010:fc:file create\n0x00000020:fd:file delete\n0x00000040:cl:file close\n0x00000080:pc:process\n0x00000100:nt:network\n0x00000200:ip:ipc\n0x00000400:na:non attributable\n0x00000800:ad:administrative\n0x00001000:lo:login_logout\n0x00002000:aa:authentication and authorization\n0x00004000:ap:application\n0x20000000:io:ioctl\n0x40000000:ex:exec\n0x80000000:ot:miscellaneous\n0xffffffff:all:all flags set\n";

    #[test]
    fn the_private_bit_is_free_in_the_stock_classes() {
        assert!(classes_using(STOCK, PRIVATE_CLASS).is_empty());
        assert_eq!(classes_using(STOCK, 0x80), ["pc"]);
        let local = format!("{STOCK}0x00c00000:xx:a site's own class\n");
        assert_eq!(classes_using(&local, PRIVATE_CLASS), ["xx"]);
        assert!(classes_using("garbage\n:\n0xzz:a:b\n", PRIVATE_CLASS).is_empty());
    }

    #[test]
    fn marking_adds_the_bit_once() {
        let classes = [(23, 0x4000_0000), (2, 0x80 | PRIVATE_CLASS), (1, 0x80)];
        assert_eq!(
            to_mark(&classes, PRIVATE_CLASS),
            [(23, 0x4000_0000 | PRIVATE_CLASS), (1, 0x80 | PRIVATE_CLASS)]
        );
        let marked: Vec<_> = classes
            .iter()
            .map(|&(e, c)| (e, c | PRIVATE_CLASS))
            .collect();
        assert!(to_mark(&marked, PRIVATE_CLASS).is_empty());
        assert_eq!(stock_mask(&[(23, 0x4000_0000), (1, 0x80)]), 0x4000_0080);
    }
}
