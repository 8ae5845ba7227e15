//! Lineage on the event: who the parent was, which session and process
//! group the process belongs to and who leads them, and the ids before a
//! credential change. The values come from the process table
//! (`pipeline::lineage`) and the kernel; what is not known stays `None`.

use serde::Serialize;

use super::EntityId;

/// The parent as the process table knew it when the event was read.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Parent {
    /// Computed from the kernel's facts, so known even when the table has
    /// never seen the parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<EntityId>,
    pub pid: u32,
    #[serde(
        serialize_with = "super::opt_rfc3339",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Sanitized, on `exec` events only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// The table held nothing about this parent (never seen, or evicted):
    /// only what the kernel said of it is here.
    #[serde(skip_serializing_if = "super::is_false")]
    pub unknown: bool,
}

/// A controlling terminal, as a character device number.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct Tty {
    pub major: u32,
    pub minor: u32,
}

impl Tty {
    /// Decodes the kernel's `dev_t` encoding of `/proc/PID/stat` field 7
    /// (`tty_nr`): minor in bits 0–7 and 20–31, major in bits 8–19. 0 is
    /// no terminal.
    pub fn from_tty_nr(nr: u32) -> Option<Self> {
        let tty = Self {
            major: (nr >> 8) & 0xfff,
            minor: (nr & 0xff) | ((nr >> 12) & 0xfff00),
        };
        (nr != 0).then_some(tty)
    }
}

/// Session and process group of the process, and their leaders.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Session {
    /// Session id (the session leader's pid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Process group id (the group leader's pid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgid: Option<u32>,
    /// The session leader's `entity_id`, when the table holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<EntityId>,
    /// The process group leader's `entity_id`, when the table holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_leader: Option<EntityId>,
    /// Where the user or service entered: the nearest session leader with a
    /// terminal whose parent has none (a login), else the ancestor started
    /// by init (a service). docs/reference.md §2.4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_leader: Option<EntityId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<Tty>,
    /// The audit login uid (`/proc/PID/loginuid`); absent when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_uid: Option<u32>,
}

impl Session {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// User and group ids at one moment.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Creds {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_nr_decodes_like_the_kernel_encodes() {
        // /dev/pts/3 is 136:3; /dev/tty1 is 4:1; a minor above 255.
        assert_eq!(
            Tty::from_tty_nr(34819),
            Some(Tty {
                major: 136,
                minor: 3
            })
        );
        assert_eq!(Tty::from_tty_nr(1025), Some(Tty { major: 4, minor: 1 }));
        let big = (136 << 8) | (300 & 0xff) | ((300 & !0xff) << 12);
        assert_eq!(
            Tty::from_tty_nr(big),
            Some(Tty {
                major: 136,
                minor: 300
            })
        );
        assert_eq!(Tty::from_tty_nr(0), None);
    }
}
