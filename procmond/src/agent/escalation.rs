//! What the agent does to its collectors, through the launcher and the
//! broker: starts each one with a fresh registration credential, and
//! escalates when one goes quiet or never comes up (health check →
//! graceful shutdown → kill → restart; `supervisor.rs` holds the state and
//! the rules, this file the actions).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::find;
use super::launcher::{Launch, Order, Sig};
use super::supervisor::{Escalation, Tracked};
use crate::bus::broker::Broker;
use crate::bus::protocol::{self, Status};
use crate::bus::rpc::{Request, to_payload};
use crate::config::AgentConfig;

/// An escalation step's outcome, sent back to the agent loop.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) id: String,
    pub(super) step: Request,
    pub(super) status: Status,
}

/// Starts collector `id` through the launcher with a fresh credential.
pub(super) async fn spawn(launcher: &mut impl Launch, broker: &Broker, id: &str) {
    let order = match broker.issue_credential(id) {
        Ok(credential) => Order::Spawn {
            id: id.to_string(),
            credential,
        },
        Err(e) => {
            tracing::error!(collector = %id, error = %e, "no randomness for a registration credential: not starting the collector");
            return;
        }
    };
    if let Err(e) = launcher.order(&order).await {
        tracing::error!(collector = %id, error = %e, "the launcher did not take the start order");
    }
}

/// Heartbeat supervision, one step per check.
pub(super) async fn supervise(
    tracked: &mut [Tracked],
    launcher: &mut impl Launch,
    broker: &Broker,
    config: &AgentConfig,
    now: Instant,
    answers: &mpsc::Sender<Answer>,
) {
    let hb = &config.heartbeat;
    let interval = Duration::from_secs(hb.interval_secs);
    for t in tracked.iter_mut().filter(|t| t.never_ready(now)) {
        tracing::error!(collector = %t.id(), timeout_secs = t.config.startup_timeout_secs, "started but not ready within its startup timeout: killing it to start it again");
        t.escalation = Some(Escalation::Killed);
        let signal = Order::Signal {
            id: t.config.id.clone(),
            signal: Sig::KILL,
        };
        let _ = launcher.order(&signal).await;
    }
    for t in tracked.iter_mut().filter(|t| t.pid.is_some() && t.ready) {
        match t.escalation {
            None => {
                let missed = t.missed(interval, now);
                if missed >= u64::from(hb.missed_threshold) {
                    tracing::warn!(collector = %t.id(), missed, "missed heartbeats: sending a health check");
                    t.escalation = Some(Escalation::HealthCheck);
                    rpc(
                        broker,
                        t.id(),
                        Request::HealthCheck { detailed: false },
                        hb.health_check_timeout_secs,
                        answers,
                    );
                }
            }
            Some(Escalation::GracefulShutdown { deadline }) if now >= deadline => {
                tracing::error!(collector = %t.id(), "still alive after the graceful-shutdown timeout: killing");
                t.escalation = Some(Escalation::Killed);
                let _ = launcher
                    .order(&Order::Signal {
                        id: t.config.id.clone(),
                        signal: Sig::KILL,
                    })
                    .await;
            }
            Some(_) => {}
        }
    }
}

fn rpc(
    broker: &Broker,
    id: &str,
    request: Request,
    timeout_secs: u64,
    answers: &mpsc::Sender<Answer>,
) {
    let broker = broker.clone();
    let answers = answers.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let topic = protocol::control_topic(&id);
        let response = broker
            .request_local(
                &topic,
                to_payload(&request),
                Duration::from_secs(timeout_secs),
            )
            .await;
        let _ = answers
            .send(Answer {
                id,
                step: request,
                status: response.status,
            })
            .await;
    });
}

pub(super) fn on_answer(
    tracked: &mut [Tracked],
    answer: Answer,
    broker: &Broker,
    graceful_secs: u64,
    answers: &mpsc::Sender<Answer>,
) {
    let Some(t) = find(tracked, &answer.id) else {
        return;
    };
    match (answer.step, t.escalation) {
        (Request::HealthCheck { .. }, Some(Escalation::HealthCheck)) => {
            if answer.status == Status::Ok {
                tracing::warn!(collector = %answer.id, "health check answered: heartbeat count reset");
                t.escalation = None;
                t.last_heartbeat = Instant::now();
            } else {
                tracing::error!(collector = %answer.id, status = ?answer.status, "health check failed: requesting graceful shutdown");
                let deadline = Instant::now() + Duration::from_secs(graceful_secs);
                t.escalation = Some(Escalation::GracefulShutdown { deadline });
                rpc(
                    broker,
                    &answer.id,
                    Request::GracefulShutdown,
                    graceful_secs,
                    answers,
                );
            }
        }
        (Request::GracefulShutdown, Some(Escalation::GracefulShutdown { .. })) => {
            tracing::warn!(collector = %answer.id, status = ?answer.status, "graceful shutdown request answered; waiting for exit");
        }
        _ => {}
    }
}
