//! The collector's control plane: answers RPCs, follows lifecycle
//! broadcasts, and builds its registration.
//!
//! Requests are rate-limited here (a token bucket), so a flood is answered
//! `busy` at once. Health checks are answered here from the sensor's shared
//! status and the counters, never through its mailbox: a reconciliation
//! pass (or a full mailbox) cannot delay them, nor the agent's escalation
//! that asks for one. Every other request goes to the mailbox. Heartbeats
//! run in their own task and are never delayed by either.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::bus::protocol::{self, Envelope, FrameKind, Status};
use crate::bus::rpc::{
    CONTROL_CORRELATION, Lifecycle, READY_CORRELATION, REGISTER_CORRELATION, Registration, Request,
    to_payload,
};
use crate::metrics::Metrics;
use crate::sensor::mailbox::{Command, SensorStatus};

/// What the control plane reads and where it sends.
#[derive(Debug, Clone)]
pub struct Plane {
    pub mailbox: mpsc::Sender<Command>,
    pub outbox: mpsc::UnboundedSender<Envelope>,
    pub status: watch::Receiver<SensorStatus>,
    pub metrics: std::sync::Arc<Metrics>,
}

/// Bucket: `BURST` requests at once, refilled at `PER_SECOND`.
const BURST: f64 = 20.0;
const PER_SECOND: f64 = 10.0;

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * PER_SECOND).min(BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn respond(outbox: &mpsc::UnboundedSender<Envelope>, corr: u64, status: Status, body: &Value) {
    let _ = outbox.send(Envelope::response(corr, status, to_payload(body)));
}

/// Serves frames from the broker until `inbox` closes.
pub async fn dispatch(mut inbox: mpsc::Receiver<Envelope>, plane: Plane) {
    let Plane {
        mailbox,
        outbox,
        status,
        metrics,
    } = plane;
    let mut bucket = TokenBucket {
        tokens: BURST,
        last: Instant::now(),
    };
    while let Some(env) = inbox.recv().await {
        match env.kind {
            FrameKind::Deliver if env.topic == protocol::TOPIC_LIFECYCLE => {
                match serde_json::from_slice(&env.payload) {
                    Ok(Lifecycle::BeginMonitoring) => {
                        let _ = mailbox.send(Command::BeginMonitoring).await;
                    }
                    Ok(Lifecycle::Shutdown) => {
                        let (reply, _) = oneshot::channel();
                        let _ = mailbox.send(Command::GracefulShutdown { reply }).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring an invalid lifecycle broadcast"),
                }
            }
            FrameKind::Request => {
                let corr = env.correlation_id;
                if !bucket.take() {
                    respond(
                        &outbox,
                        corr,
                        Status::Busy,
                        &json!({"error": "rate limited: too many requests"}),
                    );
                    continue;
                }
                let request: Request = match serde_json::from_slice(&env.payload) {
                    Ok(r) => r,
                    Err(e) => {
                        respond(
                            &outbox,
                            corr,
                            Status::InvalidRequest,
                            &json!({"error": format!("invalid request: {e}")}),
                        );
                        continue;
                    }
                };
                if let Request::HealthCheck { detailed } = request {
                    let body = status.borrow().report(&metrics, detailed);
                    respond(&outbox, corr, Status::Ok, &body);
                    continue;
                }
                submit(
                    request,
                    corr,
                    deadline(env.deadline_unix_ms),
                    &mailbox,
                    &outbox,
                );
            }
            _ => tracing::debug!(topic = %env.topic, "ignoring frame"),
        }
    }
}

fn deadline(unix_ms: u64) -> Duration {
    if unix_ms == 0 {
        return Duration::from_secs(5);
    }
    let now = (crate::clock::now_unix_ns() / 1_000_000).max(0) as u64;
    Duration::from_millis(unix_ms.saturating_sub(now))
}

type Answer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Result<Value, String>>> + Send>>;

/// A command whose reply is a plain body, and the future of that reply.
fn plain(make: impl FnOnce(oneshot::Sender<Value>) -> Command) -> (Command, Answer) {
    let (tx, rx) = oneshot::channel();
    (make(tx), Box::pin(async move { rx.await.ok().map(Ok) }))
}

/// Hands one request to the sensor and answers when it replies.
fn submit(
    request: Request,
    corr: u64,
    within: Duration,
    mailbox: &mpsc::Sender<Command>,
    outbox: &mpsc::UnboundedSender<Envelope>,
) {
    let (command, answer) = match request {
        // Answered by `dispatch` itself; never queued.
        Request::HealthCheck { .. } => return,
        Request::UpdateConfig { set } => {
            let (reply, rx) = oneshot::channel();
            let changes = set.into_iter().collect();
            let answer: Answer = Box::pin(async move { rx.await.ok() });
            (Command::UpdateConfig { changes, reply }, answer)
        }
        Request::GracefulShutdown => plain(|reply| Command::GracefulShutdown { reply }),
        Request::Start => plain(|reply| Command::Start { reply }),
        Request::Stop => plain(|reply| Command::Stop { reply }),
        Request::Restart => plain(|reply| Command::Restart { reply }),
    };
    match mailbox.try_send(command) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!("sensor mailbox full: answering busy");
            return respond(
                outbox,
                corr,
                Status::Busy,
                &json!({"error": "collector busy: mailbox full"}),
            );
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return respond(
                outbox,
                corr,
                Status::Unavailable,
                &json!({"error": "collector is stopping"}),
            );
        }
    }
    let outbox = outbox.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(within, answer).await {
            Ok(Some(Ok(body))) => respond(&outbox, corr, Status::Ok, &body),
            Ok(Some(Err(e))) => respond(
                &outbox,
                corr,
                Status::InvalidRequest,
                &json!({ "error": e }),
            ),
            Ok(None) => respond(
                &outbox,
                corr,
                Status::Internal,
                &json!({"error": "the sensor dropped the request"}),
            ),
            Err(_) => respond(
                &outbox,
                corr,
                Status::Timeout,
                &json!({"error": "deadline passed"}),
            ),
        }
    });
}

/// Subscriptions and registration, sent on every (re)connection.
pub fn greeting(
    collector_id: &str,
    source: &str,
    degraded_reason: Option<String>,
) -> Vec<Envelope> {
    let register = Registration::Register {
        collector_id: collector_id.to_string(),
        collector_type: "process-monitor".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        hostname: crate::sys::hostname(),
        source: source.to_string(),
        degraded_reason,
        capabilities: serde_json::to_value(crate::privileges::detect()).unwrap_or(Value::Null),
        // Handed over by the agent's launcher; absent for a private broker.
        credential: std::env::var(crate::bus::authz::CREDENTIAL_ENV).ok(),
    };
    let ready = Registration::Ready {
        collector_id: collector_id.to_string(),
    };
    vec![
        Envelope::new(
            FrameKind::Subscribe,
            protocol::control_topic(collector_id),
            CONTROL_CORRELATION | 1,
            Vec::new(),
        ),
        Envelope::new(
            FrameKind::Subscribe,
            protocol::TOPIC_LIFECYCLE,
            CONTROL_CORRELATION | 2,
            Vec::new(),
        ),
        Envelope::new(
            FrameKind::Publish,
            protocol::TOPIC_REGISTRATION,
            REGISTER_CORRELATION,
            to_payload(&register),
        ),
        Envelope::new(
            FrameKind::Publish,
            protocol::TOPIC_REGISTRATION,
            READY_CORRELATION,
            to_payload(&ready),
        ),
    ]
}

pub fn deregistration(collector_id: &str) -> Envelope {
    let msg = Registration::Deregister {
        collector_id: collector_id.to_string(),
    };
    Envelope::new(
        FrameKind::Publish,
        protocol::TOPIC_REGISTRATION,
        CONTROL_CORRELATION | 5,
        to_payload(&msg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::protocol::control_topic;
    use crate::config::ProcmondConfig;

    fn request(corr: u64, request: &Request) -> Envelope {
        Envelope::new(
            FrameKind::Request,
            control_topic("procmond"),
            corr,
            to_payload(request),
        )
    }

    /// A sensor stuck in a long reconciliation pass: its mailbox is full and
    /// nobody takes from it. Health is still answered, at once and from the
    /// shared status; a request that needs the sensor is answered busy.
    #[tokio::test]
    async fn health_is_answered_while_the_sensor_is_busy() {
        let (mailbox, _stuck_sensor) = mpsc::channel(1);
        mailbox
            .try_send(Command::BeginMonitoring)
            .expect("the one slot");
        let (outbox, mut answers) = mpsc::unbounded_channel();
        let mut status = SensorStatus::new(ProcmondConfig::default());
        status.probes = Some("tp_btf/bpf_loop".into());
        status.cycles = 41;
        let (_status_tx, status) = watch::channel(status);
        let metrics = std::sync::Arc::new(Metrics::default());
        metrics
            .connected
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let (inbox_tx, inbox) = mpsc::channel(8);
        let plane = Plane {
            mailbox,
            outbox,
            status,
            metrics,
        };
        tokio::spawn(dispatch(inbox, plane));
        inbox_tx
            .send(request(1, &Request::HealthCheck { detailed: true }))
            .await
            .expect("inbox");
        inbox_tx
            .send(request(2, &Request::Stop))
            .await
            .expect("inbox");
        let within = Duration::from_secs(5);
        let health = tokio::time::timeout(within, answers.recv())
            .await
            .expect("health answered without the sensor")
            .expect("an answer");
        assert_eq!(health.correlation_id, 1);
        assert_eq!(health.status, Status::Ok);
        let body: Value = serde_json::from_slice(&health.payload).expect("JSON");
        assert_eq!(body["probes"], "tp_btf/bpf_loop", "{body}");
        assert_eq!(body["cycles"]["completed"], 41, "{body}");
        assert_eq!(body["collector_id"], "procmond", "{body}");
        let stop = tokio::time::timeout(within, answers.recv())
            .await
            .expect("stop answered")
            .expect("an answer");
        assert_eq!((stop.correlation_id, stop.status), (2, Status::Busy));
    }
}
