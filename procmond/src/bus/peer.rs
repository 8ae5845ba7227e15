//! Who is at the other end of a bus connection: a uid on Unix (from
//! SO_PEERCRED / getpeereid), a user SID on Windows (from the named pipe's
//! client process token). The broker admits, caps and authorizes peers by
//! this identity; the SID grammar check is here so that agent.yaml is
//! validated the same way on every platform.

use std::fmt;

/// A connected peer's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerId {
    /// Unix: the peer's effective uid.
    Uid(u32),
    /// Windows: the peer's user SID, `S-1-5-…`.
    Sid(String),
}

impl From<u32> for PeerId {
    fn from(uid: u32) -> Self {
        Self::Uid(uid)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uid(u) => write!(f, "uid {u}"),
            Self::Sid(s) => write!(f, "SID {s}"),
        }
    }
}

impl PeerId {
    /// Whether this peer is listed: uids against `uids`, SIDs against
    /// `sids` (compared case-insensitively, as Windows does).
    pub fn listed(&self, uids: &[u32], sids: &[String]) -> bool {
        match self {
            Self::Uid(u) => uids.contains(u),
            Self::Sid(s) => sids.iter().any(|x| x.eq_ignore_ascii_case(s)),
        }
    }
}

/// LocalSystem, the account Windows services run as by default.
pub const SID_LOCAL_SYSTEM: &str = "S-1-5-18";

/// Whether `s` is a SID in string form: `S-1-<authority>-<sub>…`, with a
/// 48-bit authority and 1 to 15 32-bit sub-authorities (the limits of the
/// binary SID). Well-known aliases (`SY`, `BA`) are not accepted: the
/// allow-list compares exact SIDs.
pub fn is_sid_string(s: &str) -> bool {
    let mut parts = s.split('-');
    if !matches!(parts.next(), Some("S" | "s")) || parts.next() != Some("1") {
        return false;
    }
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match parts.next() {
        Some(a) if digits(a) && a.parse::<u64>().is_ok_and(|v| v < 1 << 48) => {}
        _ => return false,
    }
    let subs: Vec<&str> = parts.collect();
    (1..=15).contains(&subs.len()) && subs.iter().all(|p| digits(p) && p.parse::<u32>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_grammar() {
        for good in [
            "S-1-5-18",
            "S-1-5-32-544",
            "S-1-5-21-3623811015-3361044348-30300820-1013",
            "s-1-5-80-0",
        ] {
            assert!(is_sid_string(good), "{good}");
        }
        for bad in [
            "",
            "SY",
            "S-1-5",
            "S-2-5-18",
            "S-1-x-18",
            "S-1-5-18-",
            "S-1-5--18",
            "S-1-5-4294967296",
            "S-1-281474976710656-1",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
            " S-1-5-18",
        ] {
            assert!(!is_sid_string(bad), "{bad}");
        }
    }

    #[test]
    fn listing_compares_the_right_kind() {
        let sids = vec!["S-1-5-18".to_string()];
        assert!(PeerId::Sid("s-1-5-18".into()).listed(&[], &sids));
        assert!(!PeerId::Sid("S-1-5-19".into()).listed(&[18], &sids));
        assert!(PeerId::Uid(0).listed(&[0], &sids));
        assert!(!PeerId::Uid(18).listed(&[], &sids));
        assert_eq!(PeerId::from(7).to_string(), "uid 7");
    }
}
