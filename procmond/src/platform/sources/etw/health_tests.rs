//! `kernel_lost` from the sessions' loss queries (issue 20, "Blindness not
//! reported"): a Prometheus counter, so it never goes down, and a query
//! that fails is a failure to report, not a zero.

use super::health::LossBook;

#[test]
fn lost_only_grows_and_failed_queries_are_reported() {
    let mut book = LossBook::new(2);
    assert_eq!(book.update(&[Ok(5), Ok(0)]).0, 5);
    let (total, failures) = book.update(&[Err("session gone".into()), Ok(0)]);
    assert_eq!(total, 5, "a failed query does not take its losses back");
    assert_eq!(failures, ["session gone"]);
    assert_eq!(book.update(&[Ok(7), Ok(1)]).0, 8);
    // A session restarted with fresh counters: its new losses add up.
    assert_eq!(book.update(&[Ok(2), Ok(1)]).0, 10);
}
