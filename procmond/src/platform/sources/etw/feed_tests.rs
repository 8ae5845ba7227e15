//! The queue between the ETW callbacks and the correlator thread (issue
//! 20, "Barrier deadlock under load"): the sensor loop asks barriers from
//! async code and must never block, even when the queue is full because
//! the correlator itself waits on the sensor.

use std::sync::mpsc;
use std::time::Duration;

use super::decode::Props;
use super::feed::{Event, Item, channel};

fn event(id: u16) -> Event {
    Event::Modern {
        id,
        timestamp: 0,
        props: Props::default(),
    }
}

fn kinds(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            Item::Event(Event::Modern { id, .. }) => format!("e{id}"),
            Item::Event(Event::Classic { .. }) => "classic".into(),
            Item::Barrier(b) => format!("b{b}"),
            Item::Stop => "stop".into(),
        })
        .collect()
}

#[test]
fn a_barrier_never_blocks_on_a_full_queue() {
    let (feed, control, mut intake) = channel(1);
    feed.push(event(1));
    let (done_tx, done) = mpsc::channel();
    let asker = std::thread::spawn(move || {
        control.barrier(7);
        let _ = done_tx.send(());
        control
    });
    let returned = done.recv_timeout(Duration::from_secs(2));
    // Unblock the old design before failing, so the test ends.
    let _ = intake.next(Duration::from_millis(10), 16);
    assert!(returned.is_ok(), "barrier() blocked on the full queue");
    let _control = asker.join().expect("asker");
}

#[test]
fn barriers_and_stop_come_after_what_was_fed_before_them() {
    let (feed, control, mut intake) = channel(4);
    feed.push(event(1));
    feed.push(event(2));
    control.barrier(7);
    feed.push(event(3));
    control.stop();
    let mut items = Vec::new();
    for _ in 0..5 {
        items.extend(intake.next(Duration::from_millis(10), 16));
    }
    assert_eq!(kinds(&items), ["e1", "e2", "b7", "e3", "stop"]);
}

/// The probe's feed (issue 20, "Probe hang"): the classic session's rundown
/// replays every live process into the callbacks; with nobody reading, a
/// bounded queue blocked the 17th and the probe's stop waited forever.
#[test]
fn the_probe_feed_never_blocks() {
    use super::feed::Feed;
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let feed = Feed::discard();
        for i in 0..10_000 {
            feed.push(event(i));
        }
        let _ = done_tx.send(());
    });
    assert!(
        done.recv_timeout(Duration::from_secs(5)).is_ok(),
        "a rundown of 10 000 processes blocked the probe's callbacks"
    );
}
