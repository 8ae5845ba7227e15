//! The jsonl sink against a real full disk: a 64 KiB tmpfs mounted for the
//! test (root only; skipped otherwise) and unmounted when it ends.

use std::process::Command;

use tokio::sync::oneshot::error::TryRecvError;

use super::*;
use crate::model::batch::BatchBuilder;
use crate::model::{EventKind, EventSource, ProcessEvent};

/// A tiny tmpfs, unmounted (lazily, so a failed test cannot leave it busy)
/// and removed on drop.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(tag: &str) -> Option<TinyDisk> {
        let dir =
            std::env::temp_dir().join(format!("procmond-enospc-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("cannot mount a tmpfs (not root?): skipped");
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(TinyDisk(dir))
    }

    /// Fills the disk; returns the filler to remove.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = File::create(&filler).expect("filler");
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        filler
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A delivery of events `seqs` of collector `c`, and its confirmation.
fn delivery(seqs: std::ops::Range<u64>) -> (Durable, oneshot::Receiver<()>) {
    let mut b = BatchBuilder::new();
    for seq in seqs.clone() {
        let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Poll, 1, seq as u32);
        (e.collector_id, e.epoch, e.seq) = ("c".into(), 7, seq);
        e.argv = vec!["/bin/true".into(), "x".repeat(200)];
        b.push(&e).expect("encodes");
    }
    let (done, confirmed) = oneshot::channel();
    (
        Durable {
            batch: b.finish(),
            done,
        },
        confirmed,
    )
}

async fn confirmed_within(rx: &mut oneshot::Receiver<()>, secs: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), rx)
        .await
        .is_ok_and(|r| r.is_ok())
}

fn seqs_in(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).expect("sink file");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial line was left"
    );
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("every line is JSON");
            v["seq"].as_u64().expect("seq")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_deliveries_and_stores_them_once_it_clears() {
    let Some(disk) = TinyDisk::mount("retry") else {
        return;
    };
    let path = disk.0.join("events.jsonl");
    let file = JsonlFile::open(&path).expect("opens");
    let stats = Arc::new(SinkStats::default());
    let (tx, rx) = mpsc::channel(64);
    let sink = tokio::spawn({
        let stats = stats.clone();
        async move { run_jsonl_file(file, EventFormat::Native, rx, &stats).await }
    });
    let (d, mut first) = delivery(1..11);
    tx.send(d).await.expect("send");
    assert!(
        confirmed_within(&mut first, 5).await,
        "stored while there is room"
    );

    let filler = disk.fill();
    let mut waiting = Vec::new();
    for n in 0..5 {
        let (d, c) = delivery(11 + n * 10..21 + n * 10);
        tx.send(d).await.expect("send");
        waiting.push(c);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for c in &mut waiting {
        assert_eq!(
            c.try_recv(),
            Err(TryRecvError::Empty),
            "confirmed while the disk is full"
        );
    }
    let j = stats.to_json();
    assert_eq!(j["status"], "degraded", "{j}");
    assert!(j["errors"].as_u64() >= Some(2), "retried: {j}");
    assert!(
        j["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&*path.to_string_lossy())),
        "{j}"
    );
    assert_eq!(j["lag"], 50, "{j}");

    std::fs::remove_file(&filler).expect("free the disk");
    for c in &mut waiting {
        assert!(
            confirmed_within(c, 10).await,
            "stored once the disk has room"
        );
    }
    assert_eq!(
        seqs_in(&path),
        (1..61).collect::<Vec<_>>(),
        "each event once, in order"
    );
    let j = stats.to_json();
    assert_eq!(
        (
            j["status"].as_str(),
            j["written"].as_u64(),
            j["lag"].as_u64()
        ),
        (Some("ok"), Some(60), Some(0)),
        "{j}"
    );

    // Closed while the disk is full: it gives up within the drain time,
    // and what it held is not confirmed (it stays in the WALs).
    let filler = disk.fill();
    let (d, mut last) = delivery(61..71);
    tx.send(d).await.expect("send");
    drop(tx);
    tokio::time::timeout(DRAIN_AT_CLOSE + Duration::from_secs(5), sink)
        .await
        .expect("the sink ends after closing")
        .expect("no panic");
    assert!(last.try_recv().is_err(), "never confirmed unstored");
    std::fs::remove_file(&filler).expect("rm");
    assert_eq!(seqs_in(&path).len(), 60);
    assert_eq!(stats.to_json()["lag"], 0);
}

#[test]
fn the_open_error_names_the_path() {
    let dir = std::env::temp_dir().join(format!("procmond-jsonl-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let victim = dir.join("victim");
    std::fs::write(&victim, "keep\n").expect("victim");
    let path = dir.join("events.jsonl");
    std::os::unix::fs::symlink(&victim, &path).expect("link");
    let e = JsonlFile::open(&path).expect_err("a link").to_string();
    assert!(
        e.starts_with("jsonl sink: ")
            && e.contains(&*path.to_string_lossy())
            && e.contains("symbolic link"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_partial_last_line_is_cut_before_new_lines() {
    let dir = std::env::temp_dir().join(format!("procmond-jsonl-partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("events.jsonl");
    std::fs::write(
        &path,
        "{\"collector_id\":\"c\",\"epoch\":7,\"seq\":1}\n{\"collector_id\":\"c\",\"ep",
    )
    .expect("file");
    let file = JsonlFile::open(&path).expect("opens");
    let stats = SinkStats::default();
    let (tx, rx) = mpsc::channel(4);
    let (d, mut c) = delivery(1..4);
    tx.send(d).await.expect("send");
    drop(tx);
    run_jsonl_file(file, EventFormat::Native, rx, &stats).await;
    assert!(c.try_recv().is_ok(), "confirmed");
    assert_eq!(
        seqs_in(&path),
        [1, 2, 3],
        "seq 1 was already there; the partial line is gone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each format writes its own documents, and a restart (in any format)
/// finds what they stored and skips it.
#[tokio::test]
async fn every_format_is_written_and_deduplicated_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("procmond-jsonl-formats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let formats = [EventFormat::Native, EventFormat::Ecs, EventFormat::Ocsf];
    for (i, format) in formats.into_iter().enumerate() {
        let path = dir.join(format!("{}.jsonl", format.as_str()));
        for restart in [format, formats[(i + 1) % 3]] {
            let file = JsonlFile::open(&path).expect("opens");
            let stats = SinkStats::default();
            let (tx, rx) = mpsc::channel(4);
            tx.send(delivery(1..4).0).await.expect("send");
            drop(tx);
            run_jsonl_file(file, restart, rx, &stats).await;
            let expect = if restart == format { (3, 0) } else { (0, 3) };
            assert_eq!(
                (stats.written.load(Relaxed), stats.duplicates.load(Relaxed)),
                expect,
                "{} then {}",
                format.as_str(),
                restart.as_str()
            );
        }
        let text = std::fs::read_to_string(&path).expect("sink file");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        assert_eq!(lines.len(), 3, "{}", format.as_str());
        let keys: Vec<_> = lines.iter().filter_map(crate::output::dedupe_key).collect();
        assert_eq!(keys, [("c", 7, 1), ("c", 7, 2), ("c", 7, 3)]);
        let marker = match format {
            EventFormat::Native => lines[0]["kind"] == "exec",
            EventFormat::Ecs => lines[0]["ecs"]["version"].is_string(),
            EventFormat::Ocsf => lines[0]["class_uid"] == 1007,
        };
        assert!(marker, "{}: {}", format.as_str(), lines[0]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
