//! The agent's loop (`run`): set-up in the order the phases need (launcher,
//! broker, `/metrics`, sinks, then the collectors), the supervision state
//! in one struct (`Supervision`) with one handler per input, and the
//! shutdown order (collectors first, they drain into the broker; then the
//! broker and the sinks).

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::escalation::{Answer, on_answer, spawn, supervise};
use super::launcher::{Launch, Launcher, Order, Report, Sig};
use super::supervisor::Tracked;
use super::{
    AgentError, Phase, Sinks, agent_health, become_steady, begin_monitoring, laggards,
    on_heartbeat, on_registration, on_report, start_metrics, start_sinks,
};
use crate::bus::broker::Broker;
use crate::bus::protocol::{self, Envelope, Status};
use crate::bus::rpc::to_payload;
use crate::config::AgentConfig;

/// Runs the agent until `shutdown`. `config_path` is handed to the launcher.
pub async fn run(
    config: AgentConfig,
    config_path: &Path,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let socket = config.broker.socket.clone();
    let (launcher, mut reports) = Launcher::start(config_path).map_err(AgentError::Launcher)?;
    let (broker, listener) = bind_broker(&config)?;
    let metrics_stop = CancellationToken::new();
    let metrics = match &config.metrics {
        Some(m) => Some(start_metrics(m, &broker, &metrics_stop).await?),
        None => None,
    };
    let sinks = start_sinks(&config, &broker)?;
    if sinks.is_empty() {
        tracing::warn!("no sinks configured: published events are acknowledged and not kept");
    }
    let mut registrations = broker.subscribe_local(protocol::TOPIC_REGISTRATION, 256)?;
    let mut heartbeats = broker.subscribe_local("control.health.heartbeat.+", 1024)?;
    let mut requests = broker.serve_local(protocol::TOPIC_AGENT, 16)?;
    let broker_stop = CancellationToken::new();
    let serving = tokio::spawn({
        let broker = broker.clone();
        let stop = broker_stop.clone();
        async move { broker.serve(listener, stop).await }
    });
    let (answers_tx, mut answers) = mpsc::channel::<Answer>(64);
    let mut sup = Supervision::start(&config, broker.clone(), launcher, answers_tx).await;
    let interval = Duration::from_secs(config.heartbeat.interval_secs);
    let mut check = tokio::time::interval(Duration::from_millis(250).min(interval / 2));
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            Some(report) = reports.recv() => on_report(&mut sup.tracked, report),
            Some(env) = registrations.recv() => sup.on_registration(&env).await,
            Some(env) = heartbeats.recv() => on_heartbeat(&mut sup.tracked, &env, &mut sup.forged),
            Some(env) = requests.recv() => sup.on_request(&env, &sinks),
            Some(answer) = answers.recv() => sup.on_answer(answer),
            _ = check.tick() => if let Err(e) = sup.on_check().await {
                break Err(e);
            },
        }
    };
    sup.stop_collectors(&mut reports).await;
    metrics_stop.cancel();
    if let Some(task) = metrics {
        let _ = task.await;
    }
    broker_stop.cancel();
    let _ = serving.await;
    broker.close_local();
    for sink in sinks {
        let _ = sink.task.await;
    }
    let _ = std::fs::remove_file(&socket);
    outcome
}

#[cfg(unix)]
type Listener = tokio::net::UnixListener;
#[cfg(windows)]
type Listener = crate::bus::pipe::PipeListener;

/// The broker and its listening socket (Windows: its named pipe).
fn bind_broker(config: &AgentConfig) -> Result<(Broker, Listener), AgentError> {
    let socket = &config.broker.socket;
    #[cfg(unix)]
    let (broker, listener) = (
        Broker::with_registration(
            config.broker.allowed_uids.clone(),
            config.broker.limits,
            config.broker.operators.clone(),
        ),
        Broker::bind(socket),
    );
    #[cfg(windows)]
    let (broker, listener) = super::service::broker(config);
    let listener = listener.map_err(|source| AgentError::Bind {
        path: socket.display().to_string(),
        source,
    })?;
    tracing::info!(socket = %socket.display(), allowed_uids = ?config.broker.allowed_uids, allowed_sids = ?broker.allowed_sids(), "broker listening");
    Ok((broker, listener))
}

/// What the agent knows of its collectors between two inputs.
pub(super) struct Supervision<'a, L: Launch> {
    config: &'a AgentConfig,
    pub(super) broker: Broker,
    launcher: L,
    pub(super) tracked: Vec<Tracked>,
    pub(super) phase: Phase,
    started: Instant,
    answers: mpsc::Sender<Answer>,
    /// Heartbeats refused as forged or unknown.
    pub(super) forged: u64,
}

impl<'a, L: Launch> Supervision<'a, L> {
    /// Spawns the enabled collectors, in agent.yaml order: Loading.
    pub(super) async fn start(
        config: &'a AgentConfig,
        broker: Broker,
        mut launcher: L,
        answers: mpsc::Sender<Answer>,
    ) -> Self {
        let tracked: Vec<Tracked> = config
            .collectors
            .iter()
            .filter(|c| c.enabled)
            .cloned()
            .map(Tracked::new)
            .collect();
        for t in &tracked {
            spawn(&mut launcher, &broker, t.id()).await;
        }
        tracing::info!(
            collectors = tracked.len(),
            "loading: waiting for collectors to register and report ready"
        );
        Self {
            config,
            broker,
            launcher,
            tracked,
            phase: Phase::Loading,
            started: Instant::now(),
            answers,
            forged: 0,
        }
    }

    /// A registration; a collector ready after SteadyState (a restart) gets
    /// its own `begin_monitoring`.
    pub(super) async fn on_registration(&mut self, env: &Envelope) {
        if let Some(id) = on_registration(&mut self.tracked, env)
            && self.phase == Phase::SteadyState
        {
            tracing::info!(collector = %id, "late ready: sending begin_monitoring");
            begin_monitoring(&self.broker).await;
        }
    }

    /// A request to the agent itself: its health.
    pub(super) fn on_request(&mut self, env: &Envelope, sinks: &Sinks) {
        let body = agent_health(self.phase, &mut self.tracked, &self.broker, sinks);
        self.broker.respond(env, Status::Ok, to_payload(&body));
    }

    /// A health check's answer (or its timeout), for escalation.
    pub(super) fn on_answer(&mut self, answer: Answer) {
        let grace = self.config.heartbeat.graceful_shutdown_timeout_secs;
        on_answer(
            &mut self.tracked,
            answer,
            &self.broker,
            grace,
            &self.answers,
        );
    }

    /// The periodic check: while Loading, SteadyState once every collector
    /// is ready (or stop naming the laggards); then supervise heartbeats;
    /// and restart what is due.
    pub(super) async fn on_check(&mut self) -> Result<(), AgentError> {
        let now = Instant::now();
        if self.phase == Phase::Loading {
            if self.tracked.iter().all(|t| t.ready) {
                self.phase = Phase::SteadyState;
                become_steady(self.config, &self.broker, &self.tracked).await?;
            } else if let Some(laggards) = laggards(&self.tracked, self.config, self.started, now) {
                tracing::error!(laggards = %laggards, "collectors did not report ready in time: stopping");
                return Err(AgentError::StartupTimeout(laggards));
            }
        } else {
            supervise(
                &mut self.tracked,
                &mut self.launcher,
                &self.broker,
                self.config,
                now,
                &self.answers,
            )
            .await;
        }
        let due = |t: &&mut Tracked| t.restart_at.is_some_and(|at| at <= now);
        for t in self.tracked.iter_mut().filter(due) {
            t.restart_at = None;
            tracing::warn!(collector = %t.id(), "restarting collector");
            spawn(&mut self.launcher, &self.broker, t.id()).await;
        }
        Ok(())
    }

    /// Asks every running collector to stop, waits for them (at most the
    /// graceful timeout), then lets the launcher go.
    pub(super) async fn stop_collectors(mut self, reports: &mut mpsc::Receiver<Report>) {
        let grace = Duration::from_secs(self.config.heartbeat.graceful_shutdown_timeout_secs);
        for t in self.tracked.iter_mut().filter(|t| t.pid.is_some()) {
            t.deregistered = true;
            let signal = Order::Signal {
                id: t.config.id.clone(),
                signal: Sig::TERM,
            };
            let _ = self.launcher.order(&signal).await;
        }
        let deadline = Instant::now() + grace;
        while self.tracked.iter().any(|t| t.pid.is_some()) {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(report)) => on_report(&mut self.tracked, report),
                _ => break,
            }
        }
        self.launcher.finish(grace).await;
    }
}
