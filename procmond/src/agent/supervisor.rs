//! Supervision: what the agent knows about each collector, and what it does
//! when one goes quiet or away.
//!
//! A collector is healthy while its heartbeats arrive. After
//! `missed_threshold` missed beats the agent escalates, logging every step:
//! HealthCheck RPC → (no answer) GracefulShutdown RPC → (still alive at the
//! deadline) SIGKILL → restart if `auto_restart`. An answered health check
//! resets the count. Restarts back off exponentially with the restarts of
//! the last ten minutes (1, 2, 4 … 60 s), and three of them raise an alert
//! that health shows until the window has passed.
//! Signals and restarts go through the launcher (`launcher.rs`), which keeps the
//! privileges the agent gives up.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::agent::CollectorConfig;

const ALERT_RESTARTS: usize = 3;
const ALERT_WINDOW: Duration = Duration::from_secs(600);
/// Pause before the first restart; doubled for each restart in the window.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// The longest pause between restarts of a crash-looping collector.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// Where an escalation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escalation {
    /// A health check is out, answer awaited.
    HealthCheck,
    /// A graceful shutdown was requested; kill at the deadline.
    GracefulShutdown { deadline: Instant },
    /// SIGKILL sent; waiting for the exit report.
    Killed,
}

/// One collector as the agent tracks it.
#[derive(Debug)]
pub struct Tracked {
    pub config: CollectorConfig,
    pub pid: Option<u32>,
    pub registered: bool,
    pub ready: bool,
    /// It said goodbye: its exit is intended, no restart.
    pub deregistered: bool,
    pub last_heartbeat: Instant,
    /// When the running process was started.
    pub started_at: Instant,
    pub last_status: Option<String>,
    pub escalation: Option<Escalation>,
    pub restart_at: Option<Instant>,
    restarts: VecDeque<Instant>,
    /// Restarts since the agent started.
    pub restarts_total: u64,
    /// The collector's counters from its last heartbeat.
    pub last_metrics: Option<crate::health::Summary>,
}

impl Tracked {
    pub fn new(config: CollectorConfig) -> Self {
        Self {
            config,
            pid: None,
            registered: false,
            ready: false,
            deregistered: false,
            last_heartbeat: Instant::now(),
            started_at: Instant::now(),
            last_status: None,
            escalation: None,
            restart_at: None,
            restarts: VecDeque::new(),
            restarts_total: 0,
            last_metrics: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// A new process took over: it must register and beat again.
    pub fn started(&mut self, pid: u32) {
        self.pid = Some(pid);
        self.registered = false;
        self.ready = false;
        self.deregistered = false;
        self.escalation = None;
        self.restart_at = None;
        self.last_heartbeat = Instant::now();
        self.started_at = self.last_heartbeat;
    }

    /// A running process that has not reported ready within its startup
    /// timeout (a restart that never came up: it is killed and retried).
    pub fn never_ready(&self, now: Instant) -> bool {
        let limit = Duration::from_secs(self.config.startup_timeout_secs);
        self.pid.is_some()
            && !self.ready
            && self.escalation.is_none()
            && now.duration_since(self.started_at) >= limit
    }

    pub fn heartbeat(&mut self, status: &str, metrics: crate::health::Summary) {
        self.last_heartbeat = Instant::now();
        if self.last_status.as_deref() != Some(status) {
            if status == "healthy" {
                tracing::info!(collector = %self.id(), ?status, "collector health changed");
            } else {
                // Escaped (`?`): these strings come from the collector.
                let (wal_fault, losses) = (&metrics.wal_fault, &metrics.losses);
                tracing::warn!(collector = %self.id(), ?status, ?wal_fault, ?losses, "collector health changed");
            }
            self.last_status = Some(status.to_string());
        }
        self.last_metrics = Some(metrics);
    }

    /// Whole heartbeat periods since the last beat.
    pub fn missed(&self, interval: Duration, now: Instant) -> u64 {
        (now.duration_since(self.last_heartbeat).as_millis() / interval.as_millis().max(1)) as u64
    }

    /// The process exited; returns whether to restart it.
    pub fn exited(&mut self, now: Instant) -> bool {
        self.pid = None;
        self.ready = false;
        self.registered = false;
        self.escalation = None;
        if self.deregistered || !self.config.auto_restart {
            return false;
        }
        self.restarts.push_back(now);
        self.restarts_total += 1;
        let recent = self.recent_restarts(now);
        let delay = restart_delay(recent);
        if recent >= ALERT_RESTARTS {
            tracing::error!(collector = %self.id(), restarts = recent, next_in = ?delay, "ALERT: collector restarted {ALERT_RESTARTS} or more times in 10 minutes; backing off");
        }
        self.restart_at = Some(now + delay);
        true
    }

    /// Restarts within the alert window (older ones are forgotten).
    pub fn recent_restarts(&mut self, now: Instant) -> usize {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > ALERT_WINDOW)
        {
            self.restarts.pop_front();
        }
        self.restarts.len()
    }

    /// Whether the crash-loop alert stands.
    pub fn alerting(&mut self, now: Instant) -> bool {
        self.recent_restarts(now) >= ALERT_RESTARTS
    }
}

/// The pause before restart number `recent` of the window: 1, 2, 4 … 60 s.
pub fn restart_delay(recent: usize) -> Duration {
    let attempt = u32::try_from(recent.saturating_sub(1)).unwrap_or(u32::MAX);
    crate::backoff::delay(RESTART_DELAY, MAX_RESTART_DELAY, attempt)
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn restarts_back_off_exponentially_and_alert() {
        let delays: Vec<u64> = (1..=9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let mut t = Tracked::new(super::tests::collector(true));
        let start = Instant::now();
        let mut at = start;
        for n in 1..=4u32 {
            t.started(n);
            assert!(t.exited(at));
            let wait = t.restart_at.map(|r| r.duration_since(at));
            assert_eq!(wait, Some(restart_delay(n as usize)), "restart {n}");
            assert_eq!(t.alerting(at), n >= 3, "restart {n}");
            at += Duration::from_secs(5);
        }
        assert_eq!(t.restarts_total, 4);
        // Ten quiet minutes later the window is empty: back to 1 s, no alert.
        let later = at + ALERT_WINDOW + Duration::from_secs(1);
        assert!(!t.alerting(later));
        t.started(9);
        assert!(t.exited(later));
        assert_eq!(
            t.restart_at.map(|r| r.duration_since(later)),
            Some(RESTART_DELAY)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn collector(auto_restart: bool) -> CollectorConfig {
        CollectorConfig {
            id: "c".into(),
            kind: "process-monitor".into(),
            binary_path: "/bin/true".into(),
            args: vec![],
            enabled: true,
            auto_restart,
            startup_timeout_secs: 60,
            config: Default::default(),
        }
    }

    #[test]
    fn a_start_that_never_reports_ready_is_found_after_its_timeout() {
        let mut t = Tracked::new(collector(true));
        t.started(10);
        let at = t.started_at;
        assert!(!t.never_ready(at + Duration::from_secs(59)));
        assert!(t.never_ready(at + Duration::from_secs(60)));
        t.ready = true;
        assert!(!t.never_ready(at + Duration::from_secs(600)));
        t.ready = false;
        t.escalation = Some(Escalation::Killed);
        assert!(
            !t.never_ready(at + Duration::from_secs(600)),
            "already being killed"
        );
    }

    #[test]
    fn counts_missed_beats_and_decides_restarts() {
        let mut t = Tracked::new(collector(true));
        t.started(10);
        let now = Instant::now() + Duration::from_millis(3500);
        assert_eq!(t.missed(Duration::from_secs(1), now), 3);
        t.heartbeat("healthy", crate::health::Summary::default());
        assert_eq!(t.missed(Duration::from_secs(1), Instant::now()), 0);
        assert!(t.exited(Instant::now()));
        t.started(11);
        t.deregistered = true;
        assert!(
            !t.exited(Instant::now()),
            "a deregistered collector stays down"
        );
        let mut t = Tracked::new(collector(false));
        t.started(12);
        assert!(!t.exited(Instant::now()));
    }
}
