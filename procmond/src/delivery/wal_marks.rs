//! The WAL's marks: a few numbers kept with sled's data, so that storage
//! damaged or rolled back behind the collector's back is noticed and
//! counted instead of silently recovered.
//!
//! sled recovers what it can from a damaged log and says nothing: a
//! truncated file gives back an older prefix, random bytes give an empty
//! tree. The marks say what the tree should hold: how many events this WAL
//! stored and how many were acknowledged, and the next sequence number. On
//! open, `stored - acked` minus what the tree holds is what was lost
//! (`wal_lost`), and `next_seq` never goes back, so a rolled-back tree cannot
//! hand out a sequence number a sink has already seen.
//!
//! Where they live: in the tree itself (`m:marks`, 48 bytes), written in
//! sled's log after the batches they count and before the removals they
//! count (`wal::write_in_order`). sled recovers a prefix of its log, so
//! after a crash or power cut the tree holds at least what they say is
//! pending: they never report a loss that did not happen. A copy, the witness, is rewritten in
//! place beside sled's files (`procmond.marks`, one `pwrite` after each
//! write sled took, no fsync): it judges only what the tree's own marks
//! cannot see, a tree replaced whole or rolled back below what it had
//! confirmed (`lost_events`), and it carries the marks of a WAL written
//! before they moved into the tree.

use std::fs::File;
use std::path::Path;

use crate::platform::private_files;

/// The marks file, in the WAL directory.
pub const MARKS_FILE: &str = "procmond.marks";
const MAGIC: &[u8; 8] = b"PMWMARK1";
const LEN: usize = 48;

/// What the tree should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Marks {
    pub epoch: u64,
    pub next_seq: u64,
    /// Events ever stored in this epoch.
    pub stored: u64,
    /// Events ever acknowledged (and removed) in this epoch.
    pub acked: u64,
}

impl Marks {
    /// Events that should be pending in the tree.
    pub fn pending(&self) -> u64 {
        self.stored.saturating_sub(self.acked)
    }

    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..8].copy_from_slice(MAGIC);
        for (i, v) in [self.epoch, self.next_seq, self.stored, self.acked]
            .iter()
            .enumerate()
        {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let sum = crc32fast::hash(&b[..40]);
        b[40..44].copy_from_slice(&sum.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != LEN {
            return Err(format!("{} bytes, expected {LEN}", b.len()));
        }
        if &b[..8] != MAGIC {
            return Err("bad magic".into());
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[8 + i * 8..16 + i * 8]);
            u64::from_le_bytes(w)
        };
        let mut sum = [0u8; 4];
        sum.copy_from_slice(&b[40..44]);
        if u32::from_le_bytes(sum) != crc32fast::hash(&b[..40]) {
            return Err("checksum mismatch".into());
        }
        Ok(Self {
            epoch: word(0),
            next_seq: word(1),
            stored: word(2),
            acked: word(3),
        })
    }
}

/// What the marks file said when the WAL was opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No file: a new WAL, or one from before marks existed.
    Missing,
    /// A file that is not a valid record (named reason).
    Unreadable(String),
    Read(Marks),
}

/// The open marks file.
#[derive(Debug)]
pub struct MarksFile {
    file: File,
}

impl MarksFile {
    /// Opens (creating, 0600, never following a symlink) the marks in `dir`
    /// and reads what they say.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Found)> {
        let file = private_files::open_rw(&dir.join(MARKS_FILE))?;
        let mut buf = [0u8; LEN + 1];
        let mut len = 0;
        while len < buf.len() {
            match private_files::read_at(&file, &mut buf[len..], len as u64)? {
                0 => break,
                n => len += n,
            }
        }
        let found = match len {
            0 => Found::Missing,
            _ => match Marks::decode(&buf[..len]) {
                Ok(m) => Found::Read(m),
                Err(e) => Found::Unreadable(e),
            },
        };
        Ok((Self { file }, found))
    }

    /// Rewrites the record in place.
    pub fn write(&self, marks: &Marks) -> std::io::Result<()> {
        private_files::write_all_at(&self.file, &marks.encode(), 0)
    }
}

/// How many events the tree lost, judged against what it holds now
/// (`epoch`, `pending` events) by the marks stored in it (`in_tree`, of this
/// epoch) and by the witness file (`found`). `None`: nothing to judge by.
///
/// The marks in the tree are durable exactly when the data is, so after a
/// crash or power cut they agree with it. They cannot see the tree rolled
/// back as a whole, with them: the witness is written only after sled took
/// a write, so a witness that numbered further (`next_seq`) than the tree's
/// marks means the tree lost writes it had confirmed, and the witness then
/// judges. A tree replaced whole (no marks in it) is judged by the witness.
pub fn lost_events(
    found: &Found,
    in_tree: Option<&Marks>,
    epoch: u64,
    pending: u64,
) -> Option<u64> {
    match (in_tree, found) {
        (Some(t), Found::Read(w)) if w.epoch == t.epoch && w.next_seq > t.next_seq => {
            Some(w.pending().saturating_sub(pending))
        }
        (Some(t), _) => Some(t.pending().saturating_sub(pending)),
        (None, _) => witness_lost(found, epoch, pending),
    }
}

fn witness_lost(found: &Found, epoch: u64, pending: u64) -> Option<u64> {
    match found {
        Found::Read(m) if m.epoch == epoch => Some(m.pending().saturating_sub(pending)),
        // The tree was replaced under the marks: all it should hold is gone.
        Found::Read(m) => Some(m.pending()),
        Found::Missing | Found::Unreadable(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let m = Marks {
            epoch: 7,
            next_seq: 100,
            stored: 99,
            acked: 40,
        };
        let b = m.encode();
        assert_eq!(Marks::decode(&b), Ok(m));
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(Marks::decode(&bad), Err("checksum mismatch".to_string()));
        assert!(Marks::decode(&b[..10]).is_err());
        assert_eq!(m.pending(), 59);
    }

    #[test]
    fn loss_is_what_the_marks_expect_and_the_tree_lacks() {
        let m = Marks {
            epoch: 7,
            next_seq: 100,
            stored: 99,
            acked: 40,
        };
        assert_eq!(lost_events(&Found::Read(m), None, 7, 59), Some(0));
        assert_eq!(lost_events(&Found::Read(m), None, 7, 25), Some(34));
        assert_eq!(lost_events(&Found::Read(m), None, 7, 70), Some(0));
        assert_eq!(lost_events(&Found::Read(m), None, 8, 0), Some(59));
        assert_eq!(lost_events(&Found::Missing, None, 7, 0), None);
        // The tree's own marks judge; a stale witness (acks it missed) does not.
        let t = Marks { acked: 90, ..m };
        assert_eq!(lost_events(&Found::Read(m), Some(&t), 7, 9), Some(0));
        assert_eq!(lost_events(&Found::Missing, Some(&t), 7, 5), Some(4));
        // A witness that numbered past the tree: the tree rolled back.
        let behind = Marks {
            next_seq: 50,
            stored: 49,
            acked: 40,
            ..m
        };
        assert_eq!(lost_events(&Found::Read(m), Some(&behind), 7, 9), Some(50));
    }

    #[test]
    fn file_is_created_private_and_rewritten_in_place() {
        let dir = std::env::temp_dir().join(format!("procmond-marks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (f, found) = MarksFile::open(&dir).expect("open");
        assert_eq!(found, Found::Missing);
        let m = Marks {
            epoch: 1,
            next_seq: 2,
            stored: 3,
            acked: 1,
        };
        f.write(&m).expect("write");
        f.write(&Marks { acked: 2, ..m }).expect("write");
        drop(f);
        let (_, found) = MarksFile::open(&dir).expect("reopen");
        assert_eq!(found, Found::Read(Marks { acked: 2, ..m }));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(MARKS_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.join(MARKS_FILE), b"garbage").expect("garble");
        let (_, found) = MarksFile::open(&dir).expect("reopen");
        assert!(matches!(found, Found::Unreadable(_)), "{found:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
