//! Supervision: what the agent knows about each collector, and what it does
//! when one goes quiet or away.
//!
//! A collector is healthy while its heartbeats arrive. After
//! `missed_threshold` missed beats the agent escalates, logging every step:
//! HealthCheck RPC → (no answer) GracefulShutdown RPC → (still alive at the
//! deadline) SIGKILL → restart if `auto_restart`. An answered health check
//! resets the count. Three restarts within ten minutes raise an alert.
//! Signals and restarts go through the launcher (`helper`), which keeps the
//! privileges the agent gives up.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::agent::CollectorConfig;

const ALERT_RESTARTS: usize = 3;
const ALERT_WINDOW: Duration = Duration::from_secs(600);
/// Pause before a restart, so a crash loop does not spin.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

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
    pub last_status: Option<String>,
    pub escalation: Option<Escalation>,
    pub restart_at: Option<Instant>,
    restarts: VecDeque<Instant>,
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
            last_status: None,
            escalation: None,
            restart_at: None,
            restarts: VecDeque::new(),
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
    }

    pub fn heartbeat(&mut self, status: &str) {
        self.last_heartbeat = Instant::now();
        if self.last_status.as_deref() != Some(status) {
            tracing::info!(collector = %self.id(), status, "collector health changed");
            self.last_status = Some(status.to_string());
        }
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
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > ALERT_WINDOW)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= ALERT_RESTARTS {
            tracing::error!(collector = %self.id(), restarts = self.restarts.len(), "ALERT: collector restarted {ALERT_RESTARTS} or more times in 10 minutes");
        }
        self.restart_at = Some(now + RESTART_DELAY);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(auto_restart: bool) -> CollectorConfig {
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
    fn counts_missed_beats_and_decides_restarts() {
        let mut t = Tracked::new(collector(true));
        t.started(10);
        let now = Instant::now() + Duration::from_millis(3500);
        assert_eq!(t.missed(Duration::from_secs(1), now), 3);
        t.heartbeat("healthy");
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
