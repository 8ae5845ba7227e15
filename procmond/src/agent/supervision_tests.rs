//! The agent's supervision in-process, without root: the real broker (no
//! socket), a recording launcher in place of the privileged process, and
//! tokio's paused clock, so a minute of heartbeats, timeouts and restart
//! backoff runs in milliseconds. Each test drives `Supervision`'s handlers
//! the way the agent loop does and checks the orders the launcher got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::agent_loop::Supervision;
use super::escalation::Answer;
use super::launcher::{Launch, Order, Report, Sig};
use super::{on_heartbeat, on_report};
use crate::bus::authz::Operators;
use crate::bus::broker::Broker;
use crate::bus::limits::BrokerLimits;
use crate::bus::protocol::{self, Envelope, FrameKind, Status};
use crate::bus::rpc::{Heartbeat, Registration, to_payload};
use crate::config::AgentConfig;
use crate::config::agent::{BrokerConfig, CollectorConfig, HeartbeatConfig};
use crate::health::AgentPhase;

/// Records every order; takes them all.
#[derive(Clone, Default)]
struct RecordingLauncher {
    orders: Arc<Mutex<Vec<Order>>>,
}

impl RecordingLauncher {
    fn orders(&self) -> Vec<Order> {
        self.orders.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn spawns(&self) -> usize {
        let spawn = |o: &&Order| matches!(o, Order::Spawn { .. });
        self.orders().iter().filter(spawn).count()
    }

    fn kills(&self) -> usize {
        let kill = |o: &&Order| {
            matches!(
                o,
                Order::Signal {
                    signal: Sig::KILL,
                    ..
                }
            )
        };
        self.orders().iter().filter(kill).count()
    }
}

impl Launch for RecordingLauncher {
    fn order(&mut self, order: &Order) -> impl Future<Output = std::io::Result<()>> + Send {
        if let Ok(mut orders) = self.orders.lock() {
            orders.push(order.clone());
        }
        async { Ok(()) }
    }

    async fn finish(self, _grace: Duration) {}
}

const ID: &str = "c";

/// One collector; beats every second, three missed start an escalation,
/// a health check waits 2 s, a graceful shutdown 5 s.
fn config(auto_restart: bool) -> AgentConfig {
    AgentConfig {
        broker: BrokerConfig::default(),
        run_as: None,
        startup_timeout_secs: 60,
        heartbeat: HeartbeatConfig {
            interval_secs: 1,
            missed_threshold: 3,
            health_check_timeout_secs: 2,
            graceful_shutdown_timeout_secs: 5,
        },
        sinks: Vec::new(),
        collectors: vec![CollectorConfig {
            id: ID.into(),
            kind: "process-monitor".into(),
            binary_path: "/bin/true".into(),
            args: vec![],
            enabled: true,
            auto_restart,
            startup_timeout_secs: 10,
            config: Default::default(),
        }],
        metrics: None,
    }
}

fn broker() -> Broker {
    Broker::with_registration(Vec::new(), BrokerLimits::default(), Operators::default())
}

fn ready() -> Envelope {
    let msg = Registration::Ready {
        collector_id: ID.into(),
    };
    Envelope::new(
        FrameKind::Publish,
        protocol::TOPIC_REGISTRATION,
        1,
        to_payload(&msg),
    )
}

fn beat(named: &str) -> Envelope {
    let beat = Heartbeat {
        collector_id: named.into(),
        sequence: 1,
        status: "healthy".into(),
        timestamp: "t".into(),
        metrics: crate::health::Summary::default(),
    };
    let topic = protocol::heartbeat_topic(ID);
    Envelope::new(FrameKind::Publish, &topic, 1, to_payload(&beat))
}

/// Starts supervision and brings the collector (pid `pid`) to SteadyState.
async fn steady<'a>(
    config: &'a AgentConfig,
    launcher: &RecordingLauncher,
    answers: mpsc::Sender<Answer>,
    pid: u32,
) -> Supervision<'a, RecordingLauncher> {
    let before = launcher.spawns();
    let mut sup = Supervision::start(config, broker(), launcher.clone(), answers).await;
    assert_eq!(launcher.spawns(), before + 1, "started at once");
    on_report(&mut sup.tracked, started(pid));
    sup.on_registration(&ready()).await;
    sup.on_check().await.expect("check");
    assert_eq!(sup.phase, AgentPhase::SteadyState);
    sup
}

fn started(pid: u32) -> Report {
    Report::Started { id: ID.into(), pid }
}

fn crashed(pid: u32) -> Report {
    Report::Exited {
        id: ID.into(),
        pid,
        status: "signal 9".into(),
        success: false,
    }
}

async fn advance(secs: f64) {
    tokio::time::advance(Duration::from_secs_f64(secs)).await;
}

/// The next escalation answer (the paused clock runs to its timeout).
async fn answer(answers: &mut mpsc::Receiver<Answer>) -> Answer {
    tokio::time::timeout(Duration::from_secs(60), answers.recv())
        .await
        .expect("an escalation step within a minute")
        .expect("an answer")
}

#[tokio::test(start_paused = true)]
async fn a_hung_collector_is_checked_asked_to_stop_killed_and_restarted() {
    let config = config(true);
    let launcher = RecordingLauncher::default();
    let (tx, mut answers) = mpsc::channel(8);
    let mut sup = steady(&config, &launcher, tx, 100).await;
    // It serves its control topic but never answers: hung.
    let _hung = sup
        .broker
        .serve_local(&protocol::control_topic(ID), 8)
        .expect("serve");

    advance(2.5).await;
    sup.on_check().await.expect("check");
    assert!(
        sup.tracked[0].escalation.is_none(),
        "two beats missed: not yet"
    );
    advance(1.0).await;
    sup.on_check().await.expect("check");
    let check = answer(&mut answers).await;
    assert_eq!(check.status, Status::Timeout, "the health check timed out");
    sup.on_answer(check);
    let stop = answer(&mut answers).await;
    assert!(matches!(
        stop.step,
        crate::bus::rpc::Request::GracefulShutdown
    ));
    sup.on_answer(stop);
    assert_eq!(launcher.kills(), 0, "killed before the graceful deadline");

    advance(5.0).await;
    sup.on_check().await.expect("check");
    assert_eq!(launcher.kills(), 1, "killed at the graceful deadline");
    on_report(&mut sup.tracked, crashed(100));
    advance(0.9).await;
    sup.on_check().await.expect("check");
    assert_eq!(launcher.spawns(), 1, "restarted before the 1 s backoff");
    advance(0.1).await;
    sup.on_check().await.expect("check");
    assert_eq!(launcher.spawns(), 2, "restarted after 1 s");
}

#[tokio::test(start_paused = true)]
async fn an_answered_health_check_resets_the_count_and_nothing_is_killed() {
    let config = config(true);
    let launcher = RecordingLauncher::default();
    let (tx, mut answers) = mpsc::channel(8);
    let mut sup = steady(&config, &launcher, tx, 100).await;
    let mut control = sup
        .broker
        .serve_local(&protocol::control_topic(ID), 8)
        .expect("serve");
    let broker = sup.broker.clone();
    tokio::spawn(async move {
        while let Some(req) = control.recv().await {
            broker.respond(&req, Status::Ok, b"{}".to_vec());
        }
    });
    advance(3.5).await;
    sup.on_check().await.expect("check");
    let check = answer(&mut answers).await;
    assert_eq!(check.status, Status::Ok);
    sup.on_answer(check);
    assert!(sup.tracked[0].escalation.is_none(), "reset by the answer");
    advance(2.0).await;
    sup.on_check().await.expect("check");
    assert!(
        sup.tracked[0].escalation.is_none(),
        "the count starts again"
    );
    assert_eq!((launcher.kills(), launcher.spawns()), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_naming_another_collector_keeps_nobody_alive() {
    let config = config(true);
    let launcher = RecordingLauncher::default();
    let (tx, _answers) = mpsc::channel(8);
    let mut sup = steady(&config, &launcher, tx, 100).await;
    for _ in 0..4 {
        advance(1.0).await;
        on_heartbeat(&mut sup.tracked, &beat("someone-else"), &mut sup.forged);
    }
    assert_eq!(sup.forged, 4, "each forged beat is counted");
    sup.on_check().await.expect("check");
    assert!(
        sup.tracked[0].escalation.is_some(),
        "forged beats did not count as the collector's"
    );

    let mut sup = steady(&config, &launcher, mpsc::channel(8).0, 200).await;
    for _ in 0..4 {
        advance(1.0).await;
        on_heartbeat(&mut sup.tracked, &beat(ID), &mut sup.forged);
    }
    sup.on_check().await.expect("check");
    assert!(sup.tracked[0].escalation.is_none(), "its own beats do");
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_and_a_restart_that_never_comes_up_is_killed() {
    let config = config(true);
    let launcher = RecordingLauncher::default();
    let (tx, _answers) = mpsc::channel(8);
    let mut sup = steady(&config, &launcher, tx, 100).await;
    let mut pid = 100;
    for (n, backoff) in [(2, 1.0), (3, 2.0), (4, 4.0)] {
        on_report(&mut sup.tracked, crashed(pid));
        advance(backoff - 0.1).await;
        sup.on_check().await.expect("check");
        assert_eq!(launcher.spawns(), n - 1, "restart {n} waits {backoff} s");
        advance(0.1).await;
        sup.on_check().await.expect("check");
        assert_eq!(launcher.spawns(), n, "restart {n} after {backoff} s");
        pid += 1;
        on_report(&mut sup.tracked, started(pid));
    }
    let now = tokio::time::Instant::now();
    assert!(
        sup.tracked[0].alerting(now),
        "three restarts raise the alert"
    );

    // The last start never reports ready: killed after its 10 s timeout.
    advance(9.9).await;
    sup.on_check().await.expect("check");
    assert_eq!(launcher.kills(), 0);
    advance(0.1).await;
    sup.on_check().await.expect("check");
    assert_eq!(launcher.kills(), 1, "killed after its startup timeout");
}

#[tokio::test(start_paused = true)]
async fn collectors_that_are_not_ready_in_time_stop_the_agent_naming_them() {
    let config = config(true);
    let launcher = RecordingLauncher::default();
    let (tx, _answers) = mpsc::channel(8);
    let mut sup = Supervision::start(&config, broker(), launcher.clone(), tx).await;
    on_report(&mut sup.tracked, started(100));
    // The shorter of the agent's 60 s and the collector's 10 s.
    advance(9.0).await;
    sup.on_check().await.expect("still loading");
    advance(1.0).await;
    let err = sup.on_check().await.expect_err("startup timeout");
    assert!(err.to_string().contains(ID), "{err}");

    // Without auto_restart a crash is final.
    let config = self::config(false);
    let (tx, _answers) = mpsc::channel(8);
    let mut sup = steady(&config, &launcher, tx, 300).await;
    on_report(&mut sup.tracked, crashed(300));
    advance(120.0).await;
    sup.on_check().await.expect("check");
    assert_eq!(launcher.spawns(), 2, "not restarted");
}
