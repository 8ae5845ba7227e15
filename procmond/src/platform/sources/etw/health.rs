//! What the ETW sessions lost, as `kernel_lost`: a Prometheus counter, so
//! it never goes down. Each session's loss query (`ControlTraceW` QUERY:
//! EventsLost + RealTimeBuffersLost) reports a running total; what it
//! added since the last answer is added here. A query that fails keeps
//! what was counted and is handed back as a failure: a session that
//! cannot be queried is usually one stopped from outside, and the caller
//! treats that as the source failing (`session.rs`). Pure; tested
//! everywhere (`health_tests.rs`).

/// The running total over the sessions' answers.
#[derive(Debug, Default)]
pub struct LossBook {
    last: Vec<u64>,
    total: u64,
}

impl LossBook {
    /// A book for `sessions` sessions, nothing lost yet.
    pub fn new(sessions: usize) -> Self {
        Self {
            last: vec![0; sessions],
            total: 0,
        }
    }

    /// One round of answers, one per session in order; returns the total
    /// (never lower than before) and the failures' reasons.
    pub fn update(&mut self, answers: &[Result<u64, String>]) -> (u64, Vec<String>) {
        let mut failures = Vec::new();
        for (i, answer) in answers.iter().enumerate() {
            if i >= self.last.len() {
                self.last.resize(i + 1, 0);
            }
            match answer {
                Ok(now) => {
                    let before = self.last[i];
                    // Lower than before: the session restarted at zero.
                    let added = if *now >= before { now - before } else { *now };
                    self.total = self.total.saturating_add(added);
                    self.last[i] = *now;
                }
                Err(why) => failures.push(why.clone()),
            }
        }
        (self.total, failures)
    }
}
