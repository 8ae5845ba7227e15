//! The pipeline as one piece: what a source pushes comes out of `take`
//! stamped (collector, epoch, consecutive seqs), stripped of secrets and
//! encoded once, with every step counted. The stages have their own tests
//! (sanitize/, lineage_tests.rs); these check that `Pipeline` runs them.

use super::*;
use crate::model::{EventKind, EventSource};

fn config(extra_keys: &[&str]) -> ProcmondConfig {
    let mut config = ProcmondConfig {
        collector_id: "collector-a".into(),
        ..ProcmondConfig::default()
    };
    config.sanitize.extra_keys = extra_keys.iter().map(|k| (*k).to_string()).collect();
    config
}

fn exec(pid: u32, argv: &[&str]) -> ProcessEvent {
    let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, pid);
    e.name = argv[0].into();
    e.argv = argv.iter().map(|a| (*a).to_string()).collect();
    e
}

fn events(batch: &Batch) -> Vec<ProcessEvent> {
    batch
        .iter()
        .map(|entry| entry.decode().expect("decodes"))
        .collect()
}

#[test]
fn events_come_out_stamped_redacted_and_counted() {
    let metrics = Arc::new(Metrics::default());
    let mut pipeline = Pipeline::new(&config(&[]), 7, 100, metrics.clone());
    assert!(pipeline.take().is_none(), "nothing pushed, no batch");
    pipeline.push(exec(10, &["mysql", "--password=hunter2", "db"]));
    let mut exit = ProcessEvent::new(EventKind::Exit, EventSource::Ebpf, 2, 10);
    exit.exit_code = Some(0);
    pipeline.push(exit);
    let batch = pipeline.take().expect("a batch");
    let out = events(&batch);
    assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [100, 101]);
    assert!(
        out.iter()
            .all(|e| e.collector_id == "collector-a" && e.epoch == 7)
    );
    assert!(
        !out[0].argv.iter().any(|a| a.contains("hunter2")),
        "secret left in argv: {:?}",
        out[0].argv
    );
    assert_eq!(out[0].argv[2], "db", "what is not secret stays");
    assert_eq!(
        metrics
            .redactions
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        metrics
            .events_encoded
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert!(
        pipeline.take().is_none(),
        "a taken batch is not taken twice"
    );
    pipeline.push(exec(11, &["true"]));
    let next = pipeline.take().expect("the next batch");
    assert_eq!(events(&next)[0].seq, 102, "seqs go on across batches");
}

#[test]
fn reconfigure_applies_new_secret_keys_to_the_next_event() {
    let metrics = Arc::new(Metrics::default());
    let mut pipeline = Pipeline::new(&config(&[]), 1, 1, metrics);
    pipeline.push(exec(20, &["app", "QQZONK=plain"]));
    pipeline.reconfigure(&config(&["QQZONK"]));
    pipeline.push(exec(21, &["app", "QQZONK=plain"]));
    let out = events(&pipeline.take().expect("a batch"));
    assert_eq!(
        out[0].argv[1], "QQZONK=plain",
        "not a secret before the reload"
    );
    assert!(
        !out[1].argv[1].contains("plain"),
        "the reloaded key is redacted: {:?}",
        out[1].argv
    );
}

#[test]
fn a_full_batch_is_reported_so_the_source_takes_it() {
    let mut pipeline = Pipeline::new(&config(&[]), 1, 1, Arc::new(Metrics::default()));
    let long = "x".repeat(4096);
    let mut full_after = None;
    for n in 0..10_000u32 {
        if pipeline.push(exec(1000 + n, &["app", &long])) {
            full_after = Some(n + 1);
            break;
        }
    }
    let pushed = full_after.expect("push reports a full batch");
    let batch = pipeline.take().expect("the full batch");
    assert_eq!(batch.len() as u32, pushed, "every event pushed is in it");
}
