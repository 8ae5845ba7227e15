//! Tests of the write-ahead log: reopen and replay, the cap, corrupt and
//! damaged storage (kept apart so `wal.rs` reads as the log itself).

use super::*;
use crate::delivery::wal_marks;
use crate::model::batch::BatchBuilder;
use crate::model::{EventKind, EventSource, ProcessEvent};
use open::open_db;

/// One batch of one event per seq.
pub(crate) fn batch(seqs: impl IntoIterator<Item = u64>) -> Batch {
    let mut b = BatchBuilder::new();
    for seq in seqs {
        let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, 42);
        e.seq = seq;
        b.push(&e).expect("encodes");
    }
    b.finish()
}

fn keys(wal: &Wal) -> Vec<u64> {
    wal.read_from(0, 100)
        .expect("read")
        .iter()
        .map(|(k, _)| *k)
        .collect()
}

/// Opens the WAL in `dir` again once the previous handle has let go of it:
/// sled's own threads release the file lock a moment after the last handle
/// drops.
pub(crate) fn reopen(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Wal {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Wal::open(dir, max_bytes, metrics.clone()) {
            Ok(wal) => return wal,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "reopen: {e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("procmond-wal-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn survives_reopen_replays_in_order_and_forgets_acked() {
    let dir = temp_dir("reopen");
    let metrics = Arc::new(Metrics::default());
    {
        let wal = reopen(&dir, 1 << 20, metrics.clone());
        assert_eq!(wal.next_seq(), 1);
        assert_eq!(
            wal.append(&[batch(1..=2), batch(3..=3)]).expect("append"),
            3
        );
        assert_eq!(wal.append(&[batch(4..=5)]).expect("append"), 2);
        assert_eq!(wal.ack(3).expect("ack"), 1);
    }
    let wal = reopen(&dir, 1 << 20, metrics);
    assert_eq!(wal.next_seq(), 6);
    assert_eq!(keys(&wal), [1, 4]);
    let seqs: Vec<u64> = wal.read_from(0, 100).expect("read")[1]
        .1
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [4, 5]);
    assert_eq!(wal.pending_count(), 4);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for f in std::fs::read_dir(&dir).expect("ls").flatten() {
            if f.path().is_file() {
                assert_eq!(
                    f.metadata().expect("meta").permissions().mode() & 0o077,
                    0,
                    "{:?}",
                    f.path()
                );
            }
        }
    }
    // Windows: the directory's ACL names SYSTEM and grants nothing to
    // Everyone, Users or Authenticated Users. (Wine keeps ACLs as Unix
    // modes where it has no xattrs: it reads back SYSTEM and the owner.)
    #[cfg(windows)]
    {
        let dacl = crate::sys::windows::path_dacl(&dir).expect("dacl");
        assert!(dacl.contains(";SY)"), "{dacl}");
        for broad in [";WD)", ";BU)", ";AU)"] {
            assert!(!dacl.contains(broad), "{dacl}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every batch key in the tree, acknowledged or not.
fn tree_keys(wal: &Wal) -> Vec<u64> {
    wal.db()
        .expect("db")
        .scan_prefix([EVENT_PREFIX])
        .map(|item| key_seq(&item.expect("item").0).expect("key"))
        .collect()
}

#[test]
fn an_ack_leaves_the_tree_with_the_next_write_and_is_forgotten_at_once() {
    let dir = temp_dir("deferred-ack");
    let wal = reopen(&dir, 1 << 20, Arc::new(Metrics::default()));
    wal.append(&[batch(1..=2)]).expect("append");
    wal.append(&[batch(3..=3)]).expect("append");
    assert_eq!(wal.ack(1).expect("ack"), 2);
    assert_eq!(wal.ack(1).expect("ack again"), 0, "an ack counts once");
    // No write of its own: still in the tree, gone for everyone else.
    assert_eq!(tree_keys(&wal), [1, 3]);
    assert_eq!(
        (keys(&wal), wal.first_seq().expect("first")),
        (vec![3], Some(3))
    );
    assert_eq!(wal.pending_count(), 1);
    assert!(wal.settle_at().is_some());
    // The next append carries the removal and the marks that count it.
    wal.append(&[batch(4..=4)]).expect("append");
    assert_eq!(tree_keys(&wal), [3, 4]);
    assert_eq!(wal.settle_at(), None);
    assert_eq!(wal.current_marks().pending(), 2);
    // With no append to carry it, `settle` writes it alone.
    wal.ack(3).expect("ack");
    wal.settle().expect("settle");
    assert_eq!(tree_keys(&wal), [4]);
    assert_eq!(wal.current_marks().pending(), 1);
    // A reopen in this process (after a storage error) keeps them apart.
    wal.ack(4).expect("ack");
    wal.reopen().expect("reopen");
    assert_eq!((wal.pending_count(), keys(&wal)), (0, vec![]));
    drop(wal);
    let metrics = Arc::new(Metrics::default());
    let wal = reopen(&dir, 1 << 20, metrics.clone());
    assert_eq!(
        (tree_keys(&wal), wal.pending_count()),
        (vec![], 0),
        "closed cleanly: settled"
    );
    assert_eq!(metrics.wal_lost.load(Relaxed), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_settle_that_cannot_write_keeps_the_acks_and_waits() {
    let dir = temp_dir("settle-closed");
    let wal = reopen(&dir, 1 << 20, Arc::new(Metrics::default()));
    wal.append(&[batch(1..=2)]).expect("append");
    wal.ack(1).expect("ack");
    // As after a storage error, before the reopen.
    let db = wal.db.lock().expect("lock").take().expect("open");
    assert!(matches!(wal.settle(), Err(WalError::Closed)));
    let retry = wal.settle_at().expect("still waiting");
    assert!(
        retry >= Instant::now() + SETTLE_AFTER / 2,
        "retried later, not at once"
    );
    *wal.db.lock().expect("lock") = Some(db);
    wal.settle().expect("settle");
    assert_eq!((tree_keys(&wal), wal.settle_at()), (vec![], None));
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn full_wal_keeps_oldest_and_counts_drops() {
    let dir = temp_dir("full");
    let metrics = Arc::new(Metrics::default());
    let one = batch(1..=2).as_bytes().len() as u64;
    let wal = reopen(&dir, one * 2, metrics.clone());
    let batches = [batch(1..=2), batch(3..=4), batch(5..=6)];
    assert_eq!(wal.append(&batches).expect("append"), 4);
    assert_eq!(metrics.wal_dropped_full.load(Relaxed), 2);
    assert_eq!(keys(&wal), [1, 3]);
    assert_eq!(wal.next_seq(), 7, "dropped events still consume their seq");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stores 3 batches of 20 events under `dir`, acknowledges the first.
fn stored_run(dir: &Path) -> u64 {
    let wal = reopen(dir, 1 << 24, Arc::new(Metrics::default()));
    for first in [1u64, 21, 41] {
        wal.append(&[batch(first..first + 20)]).expect("append");
    }
    wal.ack(1).expect("ack");
    wal.next_seq()
}

fn sled_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != wal_marks::MARKS_FILE))
        .collect()
}

#[test]
fn damaged_storage_is_counted_as_lost_and_seq_never_goes_back() {
    // Overwritten with garbage: sled opens an empty tree without a word.
    let dir = temp_dir("garbage");
    let next = stored_run(&dir);
    let db_file = dir.join("db");
    let len = std::fs::metadata(&db_file).expect("db file").len();
    std::fs::write(&db_file, vec![0x5a; len as usize]).expect("garble");
    let metrics = Arc::new(Metrics::default());
    let wal = reopen(&dir, 1 << 24, metrics.clone());
    let lost = metrics.wal_lost.load(Relaxed);
    assert_eq!(
        lost + wal.pending_count(),
        40,
        "every pending event is replayed or counted"
    );
    assert!(lost > 0, "the damage was noticed");
    assert!(wal.next_seq() >= next, "{} < {next}", wal.next_seq());
    drop(wal);
    // Marks are rewritten to what the tree now holds: no double count.
    let metrics = Arc::new(Metrics::default());
    let _wal = reopen(&dir, 1 << 24, metrics.clone());
    assert_eq!(metrics.wal_lost.load(Relaxed), 0);
    let _ = std::fs::remove_dir_all(&dir);

    // sled's files wiped, marks kept: the old epoch's pending are lost.
    let dir = temp_dir("wiped");
    stored_run(&dir);
    for f in sled_files(&dir) {
        if f.is_dir() {
            std::fs::remove_dir_all(f).expect("rm");
        } else {
            std::fs::remove_file(f).expect("rm");
        }
    }
    let metrics = Arc::new(Metrics::default());
    let wal = reopen(&dir, 1 << 24, metrics.clone());
    assert_eq!(
        (metrics.wal_lost.load(Relaxed), wal.pending_count()),
        (40, 0)
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Undamaged: nothing is lost, and a reopen in place keeps the epoch.
    let dir = temp_dir("clean");
    stored_run(&dir);
    let metrics = Arc::new(Metrics::default());
    let wal = reopen(&dir, 1 << 24, metrics.clone());
    let epoch = wal.epoch();
    wal.reopen().expect("reopen in place");
    assert_eq!(
        (
            metrics.wal_lost.load(Relaxed),
            wal.pending_count(),
            wal.epoch()
        ),
        (0, 40, epoch)
    );
    assert_eq!(wal.append(&[batch(61..=62)]).expect("append"), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_records_are_skipped_counted_and_the_rest_replays() {
    let dir = temp_dir("corrupt");
    let metrics = Arc::new(Metrics::default());
    Wal::open(&dir, 1 << 20, metrics.clone())
        .and_then(|w| w.append(&[batch([10]), batch([14, 15])]))
        .expect("append");
    // Reopened: what is on disk now comes from an earlier run.
    let wal = reopen(&dir, 1 << 20, metrics.clone());
    wal.insert_raw_for_test(11, b"\xff\x00garbage")
        .expect("plant");
    // A batch whose structure holds but whose first event is garbled.
    let mut bytes = batch([12, 13]).as_bytes().to_vec();
    for b in &mut bytes[48..72] {
        *b = 0xff;
    }
    wal.insert_raw_for_test(12, &bytes).expect("plant");
    assert!(
        wal.insert_raw_for_test(wal.next_seq(), b"x").is_err(),
        "keys of this run are not planted"
    );
    let read = wal.read_from(0, 100).expect("read");
    let seqs: Vec<Vec<u64>> = read
        .iter()
        .map(|(_, b)| b.iter().map(|e| e.seq).collect())
        .collect();
    assert_eq!(seqs, [vec![10], vec![13], vec![14, 15]]);
    assert_eq!(metrics.wal_corrupt.load(Relaxed), 2);
    assert_eq!(keys(&wal), [10, 12, 14], "the garbage record is gone");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The records of a WAL tree written before the batch format was versioned
/// (fixtures/README.md): `key_len:u32le key value_len:u32le value`, repeated.
const PREVIOUS_FORMAT: &[u8] = include_bytes!("fixtures/wal_pmb1.records");

fn fixture_records() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = PREVIOUS_FORMAT;
    let take = |rest: &mut &[u8]| {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (field, tail) = tail.split_at(len);
        *rest = tail;
        field.to_vec()
    };
    while !rest.is_empty() {
        let key = take(&mut rest);
        let value = take(&mut rest);
        out.push((key, value));
    }
    out
}

#[test]
fn a_wal_of_the_previous_format_replays() {
    let dir = temp_dir("previous-format");
    {
        // The tree exactly as the previous release left it.
        let db = open_db(&dir).expect("sled");
        for (k, v) in fixture_records() {
            db.insert(k, v).expect("insert");
        }
        db.flush().expect("flush");
    }
    let metrics = Arc::new(Metrics::default());
    let wal = reopen(&dir, 1 << 20, metrics.clone());
    assert_eq!((wal.pending_count(), wal.next_seq()), (5, 6));
    let read = wal.read_from(0, 100).expect("read");
    let mut seen = Vec::new();
    for (key, batch) in &read {
        assert_eq!(&batch.as_bytes()[..4], b"PMB2", "rewritten on replay");
        assert!(!batch.is_unpersisted());
        for entry in batch.iter() {
            let event = entry.decode().expect("the previous layout validates");
            assert_eq!(event.collector_id, "fixture");
            assert_eq!(
                event.argv,
                ["fixture".to_string(), format!("arg-{}", event.seq)]
            );
            seen.push((*key, event.seq, event.kind));
        }
    }
    assert_eq!(
        seen,
        [
            (1, 1, EventKind::Exec),
            (1, 2, EventKind::Exec),
            (1, 3, EventKind::Exec),
            (4, 4, EventKind::Fork),
            (4, 5, EventKind::Exit),
        ]
    );
    assert_eq!(
        metrics.wal_corrupt.load(Relaxed),
        0,
        "nothing counted as corrupt"
    );
    assert_eq!((wal.ack(1).expect("ack"), wal.ack(4).expect("ack")), (3, 2));
    assert_eq!(wal.pending_count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn witness(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(wal_marks::MARKS_FILE)).expect("marks witness")
}

#[test]
fn marks_written_with_the_data_do_not_miscount_after_a_power_cut() {
    // The page cache lost the witness's last rewrites (it saw the appends,
    // not the acknowledgements): the marks in the tree still judge right.
    let dir = temp_dir("power-cut");
    let stale = {
        let wal = reopen(&dir, 1 << 24, Arc::new(Metrics::default()));
        for first in [1u64, 21, 41] {
            wal.append(&[batch(first..first + 20)]).expect("append");
        }
        let stale = witness(&dir);
        wal.ack(1).expect("ack");
        wal.ack(21).expect("ack");
        wal.flush().expect("flush");
        stale
    };
    std::fs::write(dir.join(wal_marks::MARKS_FILE), &stale).expect("stale witness");
    let metrics = Arc::new(Metrics::default());
    let wal = reopen(&dir, 1 << 24, metrics.clone());
    assert_eq!(
        (metrics.wal_lost.load(Relaxed), wal.pending_count()),
        (0, 20),
        "no acknowledged event counted as lost"
    );
    drop(wal);

    // The tree rolled back as a whole, its marks with it, below what it had
    // confirmed (the witness numbered further): the difference is lost.
    let snapshot = temp_dir("power-cut-snapshot");
    std::fs::create_dir_all(&snapshot).expect("snapshot dir");
    for f in sled_files(&dir).into_iter().filter(|f| f.is_file()) {
        std::fs::copy(&f, snapshot.join(f.file_name().expect("name"))).expect("copy");
    }
    {
        let wal = reopen(&dir, 1 << 24, Arc::new(Metrics::default()));
        wal.append(&[batch(61..71)]).expect("append");
    }
    for f in sled_files(&snapshot) {
        std::fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("restore");
    }
    let metrics = Arc::new(Metrics::default());
    let wal = reopen(&dir, 1 << 24, metrics.clone());
    assert_eq!(
        (metrics.wal_lost.load(Relaxed), wal.pending_count()),
        (10, 20)
    );
    assert!(wal.next_seq() >= 71, "seq never goes back");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&snapshot);
}

/// Run by `a_crash_mid_stream_leaves_marks_that_agree_with_the_data` in a
/// child process, which it kills: appends and acknowledges until then.
#[test]
#[ignore = "a child process of the crash test"]
fn crash_child() {
    let Some(dir) = std::env::var_os("PROCMOND_WAL_CRASH_DIR") else {
        return;
    };
    let wal = reopen(Path::new(&dir), 1 << 26, Arc::new(Metrics::default()));
    let mut pending = Vec::new();
    for i in 0u64.. {
        let first = wal.next_seq();
        wal.append(&[batch(first..first + 10)]).expect("append");
        pending.push(first);
        if i % 5 == 4 {
            for key in pending.drain(..) {
                wal.ack(key).expect("ack");
            }
        }
    }
}

#[test]
fn a_crash_mid_stream_leaves_marks_that_agree_with_the_data() {
    let dir = temp_dir("crash");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "delivery::wal::tests::crash_child"])
        .env("PROCMOND_WAL_CRASH_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("child");
    // Killed (SIGKILL: no flush, no close) at an arbitrary point once it is
    // appending (its marks rewritten at least once: a start can take seconds
    // on a loaded host or under wine), with the witness as the page cache
    // had it a moment before.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut first = None;
    loop {
        if let Ok(now) = std::fs::read(dir.join(wal_marks::MARKS_FILE)) {
            match &first {
                None => first = Some(now),
                Some(before) if *before != now => break,
                Some(_) => {}
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never started appending"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(400));
    let stale = witness(&dir);
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().expect("kill");
    child.wait().expect("reaped");
    std::fs::write(dir.join(wal_marks::MARKS_FILE), &stale).expect("stale witness");
    let metrics = Arc::new(Metrics::default());
    let wal = reopen(&dir, 1 << 26, metrics.clone());
    assert!(wal.next_seq() > 1, "the child stored events");
    assert_eq!(metrics.wal_lost.load(Relaxed), 0, "nothing miscounted");
    let held: u64 = wal
        .read_from(0, usize::MAX)
        .expect("read")
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum();
    assert_eq!(held, wal.pending_count(), "every pending event replays");
    let _ = std::fs::remove_dir_all(&dir);
}
