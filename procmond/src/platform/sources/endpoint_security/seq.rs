//! Counting what EndpointSecurity dropped, from the sequence numbers on its
//! messages (pure, tested on every platform).
//!
//! Apple numbers each client's messages twice: `seq_num` per event type
//! (message version ≥ 2) and `global_seq_num` across all types (version
//! ≥ 4). Both start at 0 and grow by one per message delivered to the
//! client; a jump of `n + 1` means `n` messages were dropped before
//! delivery. The global number counts every loss once, so it is the count
//! when present; the per-type numbers count only on older messages without
//! it (adding both would count each loss twice).
//!
//! Messages procmond itself drops when its hand-off queue is full
//! (`client.rs`) leave the same gaps, so this one counter sees both kinds
//! of loss, and each exactly once.
//!
//! A number that goes backwards, or jumps by more than
//! `MAX_PLAUSIBLE_GAP`, is not a loss: the sequence was reset (a new
//! client) and counting starts over from it. u64 wrap-around is an
//! ordinary step.

/// Largest jump still read as a loss; anything larger is a reset.
pub const MAX_PLAUSIBLE_GAP: u64 = 1 << 32;
/// Event types followed separately; procmond subscribes to three.
const TRACKED_TYPES: usize = 8;

/// What one message revealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gap {
    /// Messages lost before this one (what `kernel_lost` grows by).
    pub lost: u64,
    /// The gap in this event type's own sequence.
    pub per_type: u64,
    /// The gap in the client's global sequence (0 when it has none).
    pub global: u64,
    /// A sequence started over: nothing was counted for it.
    pub reset: bool,
}

/// The last sequence numbers seen, per client; fixed size, no allocation.
#[derive(Debug, Clone, Default)]
pub struct GapCounter {
    global: Option<u64>,
    types: [(u32, u64); TRACKED_TYPES],
    tracked: usize,
    lost: u64,
    resets: u64,
}

impl GapCounter {
    /// Takes the next message's event type and sequence numbers.
    pub fn observe(
        &mut self,
        event_type: u32,
        seq_num: Option<u64>,
        global_seq_num: Option<u64>,
    ) -> Gap {
        let mut gap = Gap::default();
        if let Some(now) = seq_num {
            let (n, reset) = self.step_type(event_type, now);
            gap.per_type = n;
            gap.reset |= reset;
        }
        if let Some(now) = global_seq_num {
            let (n, reset) = step(&mut self.global, now);
            gap.global = n;
            gap.reset |= reset;
        }
        gap.lost = if global_seq_num.is_some() {
            gap.global
        } else {
            gap.per_type
        };
        self.lost = self.lost.saturating_add(gap.lost);
        self.resets += u64::from(gap.reset);
        gap
    }

    /// Every message counted lost so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// How many times a sequence started over.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    fn step_type(&mut self, event_type: u32, now: u64) -> (u64, bool) {
        let known = self.types[..self.tracked]
            .iter()
            .position(|(t, _)| *t == event_type);
        match known {
            Some(i) => {
                let mut last = Some(self.types[i].1);
                let r = step(&mut last, now);
                self.types[i].1 = now;
                r
            }
            None if self.tracked < TRACKED_TYPES => {
                self.types[self.tracked] = (event_type, now);
                self.tracked += 1;
                (0, false)
            }
            // More types than anyone subscribes to: not followed.
            None => (0, false),
        }
    }
}

/// Messages lost between `last` and `now`, and whether the sequence was
/// reset; `last` becomes `now`. The first number seen is a baseline.
fn step(last: &mut Option<u64>, now: u64) -> (u64, bool) {
    let before = last.replace(now);
    let Some(before) = before else {
        return (0, false);
    };
    match now.wrapping_sub(before) {
        0 => (0, false), // a repeat: nothing new lost
        d if d <= MAX_PLAUSIBLE_GAP => (d - 1, false),
        _ => (0, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sources::endpoint_security::decode::event_type::{
        NOTIFY_EXEC as EXEC, NOTIFY_EXIT as EXIT, NOTIFY_FORK as FORK,
    };

    #[test]
    fn consecutive_numbers_lose_nothing() {
        let mut c = GapCounter::default();
        for (i, t) in [EXEC, FORK, EXIT, EXEC].into_iter().enumerate() {
            let per_type = [0, 0, 0, 1][i];
            let g = c.observe(t, Some(per_type), Some(i as u64));
            assert_eq!(g, Gap::default(), "message {i}");
        }
        assert_eq!((c.lost(), c.resets()), (0, 0));
    }

    #[test]
    fn global_gaps_count_once_even_when_per_type_gaps_agree() {
        let mut c = GapCounter::default();
        c.observe(EXEC, Some(0), Some(0));
        c.observe(FORK, Some(0), Some(1));
        // Two execs and one fork dropped (global 2, 3, 4).
        let g = c.observe(EXEC, Some(3), Some(5));
        assert_eq!((g.lost, g.per_type, g.global, g.reset), (3, 2, 3, false));
        // The fork's own gap shows now, but it was already counted.
        let g = c.observe(FORK, Some(2), Some(6));
        assert_eq!((g.lost, g.per_type, g.global), (0, 1, 0));
        assert_eq!(c.lost(), 3);
    }

    #[test]
    fn per_type_numbers_count_when_there_is_no_global_one() {
        let mut c = GapCounter::default();
        c.observe(EXEC, Some(10), None);
        c.observe(EXIT, Some(4), None);
        assert_eq!(c.observe(EXEC, Some(15), None).lost, 4);
        assert_eq!(c.observe(EXIT, Some(5), None).lost, 0);
        assert_eq!(c.observe(EXIT, Some(7), None).lost, 1);
        // No numbers at all (message version 1): nothing can be known.
        assert_eq!(c.observe(EXIT, None, None), Gap::default());
        assert_eq!(c.lost(), 5);
    }

    #[test]
    fn wrap_reset_and_repeats() {
        let mut c = GapCounter::default();
        c.observe(EXEC, Some(u64::MAX - 1), Some(u64::MAX - 1));
        // Wrapping past u64::MAX is an ordinary step...
        assert_eq!(c.observe(EXEC, Some(u64::MAX), Some(u64::MAX)).lost, 0);
        assert_eq!(c.observe(EXEC, Some(0), Some(0)).lost, 0);
        // ...and a gap across it is counted (jumping back near the top
        // first is itself a reset).
        assert!(
            c.observe(EXEC, Some(u64::MAX - 2), Some(u64::MAX - 2))
                .reset
        );
        assert_eq!(c.observe(EXEC, Some(2), Some(2)).lost, 4);
        // Going backwards: a new client's sequence, not a loss.
        let g = c.observe(EXEC, Some(0), Some(0));
        assert_eq!((g.lost, g.reset), (0, true));
        // And counting goes on from the new baseline.
        assert_eq!(c.observe(EXEC, Some(3), Some(3)).lost, 2);
        // An absurd jump is a reset too.
        let g = c.observe(EXEC, Some(4), Some(3 + MAX_PLAUSIBLE_GAP + 1));
        assert_eq!((g.lost, g.reset), (0, true));
        // The same number twice: a repeat, nothing lost.
        let g = c.observe(EXEC, Some(4), Some(3 + MAX_PLAUSIBLE_GAP + 1));
        assert_eq!(g, Gap::default());
        assert_eq!((c.lost(), c.resets()), (6, 3));
    }

    #[test]
    fn many_event_types_stay_bounded() {
        let mut c = GapCounter::default();
        for t in 0..100 {
            c.observe(t, Some(0), None);
        }
        // Tracked types still count; the overflow is simply not followed.
        assert_eq!(c.observe(0, Some(2), None).lost, 1);
        assert_eq!(c.observe(99, Some(50), None).lost, 0);
    }
}
