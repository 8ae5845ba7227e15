//! The correlator's order (issue 20, "Order"): per-processor ETW buffers
//! flush independently, so events reach the callback out of time order by
//! up to the flush window; a short-lived process's stop may come before
//! its start. What leaves must be in event-time order, a stop never ahead
//! of its start. Pure: constructed records, a fake clock.

use super::correlate::{CorrelateConfig, Correlator};
use super::decode::{KpStart, KpStop};
use super::ntpath::DeviceMap;
use crate::model::{EventKind, ProcessEvent};

const T0: i64 = 1_767_323_045_000_000_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

fn modern_only() -> Correlator {
    let config = CorrelateConfig {
        classic: false,
        ..CorrelateConfig::default()
    };
    Correlator::new(config, DeviceMap::new(Vec::new(), None))
}

fn start(pid: u32, at: i64) -> KpStart {
    KpStart {
        pid,
        ppid: Some(1),
        create_time: Some(at),
        image: Some(format!(r"\Device\HarddiskVolume3\p{pid}.exe")),
        ..KpStart::default()
    }
}

fn stop(pid: u32, created: i64, at: i64) -> KpStop {
    KpStop {
        pid,
        create_time: Some(created),
        exit_time: Some(at),
        exit_code: Some(0),
        ..KpStop::default()
    }
}

/// Polls `ready` at each instant, then drains; everything that left.
fn run(c: &mut Correlator, at: &[u64]) -> Vec<ProcessEvent> {
    let mut out = Vec::new();
    for now in at {
        out.extend(c.ready(*now));
    }
    out
}

#[test]
fn events_leave_in_time_order_across_cpus() {
    let mut c = modern_only();
    // CPU 1's buffer flushed first: B (later) arrives before A (earlier).
    c.modern_start(start(200, T0 + 100 * MS as i64), 0);
    let mut out = run(&mut c, &[0, 100 * MS]);
    c.modern_start(start(100, T0), 500 * MS);
    out.extend(run(&mut c, &[600 * MS, 2 * SEC, 5 * SEC]));
    let pids: Vec<u32> = out.iter().map(|e| e.pid).collect();
    assert_eq!(pids, [100, 200], "event-time order, not arrival order");
}

#[test]
fn a_stop_waits_for_its_start() {
    let mut c = modern_only();
    // Something from before the process: the session ran before it began.
    c.modern_start(start(10, T0 - SEC as i64), 0);
    // The stop arrives first, and its start only after the flush window.
    c.modern_stop(stop(60, T0, T0 + 10 * MS as i64), 100 * MS);
    let mut out = run(&mut c, &[100 * MS, SEC, 2 * SEC]);
    c.modern_start(start(60, T0), 2 * SEC + 100 * MS);
    out.extend(run(&mut c, &[2 * SEC + 200 * MS, 10 * SEC]));
    let of_60: Vec<EventKind> = out.iter().filter(|e| e.pid == 60).map(|e| e.kind).collect();
    assert_eq!(of_60, [EventKind::Exec, EventKind::Exit], "{out:#?}");
}

#[test]
fn a_stop_whose_start_never_comes_leaves_after_the_hold() {
    let mut c = modern_only();
    c.modern_start(start(10, T0 - SEC as i64), 0);
    c.modern_stop(stop(61, T0, T0 + 10 * MS as i64), 0);
    let early = run(&mut c, &[SEC, 2 * SEC]);
    assert!(early.iter().all(|e| e.pid != 61), "held: {early:#?}");
    let late = run(&mut c, &[10 * SEC]);
    assert!(
        late.iter()
            .any(|e| e.pid == 61 && e.kind == EventKind::Exit)
    );
}

#[test]
fn barriers_wait_for_the_reorder_window() {
    let mut c = modern_only();
    c.modern_start(start(70, T0), 0);
    let barrier = c.next_id();
    assert!(c.ready(0).is_empty(), "held for the window");
    assert!(c.head_id() < barrier, "not answered while it is held");
    assert_eq!(c.ready(5 * SEC).len(), 1);
    assert!(c.head_id() >= barrier);
}
