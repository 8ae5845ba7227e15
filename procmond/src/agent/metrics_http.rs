//! The HTTP side of the agent's `/metrics` (the encoding is `prometheus.rs`):
//! a deliberately small responder on a tokio `TcpListener` rather than an HTTP
//! framework (ADR 16 in docs/decisions.md). One request per connection, a
//! request head of at most 8 KiB within 2 s, 10 s for the whole exchange, 8
//! connections at once — at the cap the oldest one that has not sent its
//! request is closed for the newcomer, so idle connections cannot blind
//! the endpoint — `GET`/`HEAD /metrics` only (404, 405, 400, 431 otherwise).
//!
//! Each scrape asks the agent for its health over the broker (`control.agent`,
//! what `ctl health` shows), so `/metrics` and `ctl` never disagree.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::bus::broker::Broker;
use crate::bus::protocol::{Status, TOPIC_AGENT};

/// The longest request head read; more is answered 431.
const MAX_HEAD: usize = 8 * 1024;
/// A whole exchange (read, health answer, write) must fit in this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The request head must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the agent may take to answer its health RPC.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed without an answer.
const MAX_CONNECTIONS: usize = 8;
const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One connection being served.
#[derive(Debug)]
struct Slot {
    id: u64,
    /// Its request head has arrived (it is being answered).
    head_done: Arc<AtomicBool>,
    cancel: CancellationToken,
}

/// The connections served at once. At the cap, the oldest one still
/// sending its request head is closed for the newcomer: holding every slot
/// open without asking anything cannot blind `/metrics`.
#[derive(Debug, Default)]
struct Slots {
    active: Mutex<Vec<Slot>>,
    evicted: AtomicU64,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for connection `id`, or `None` when every slot is answering.
    fn take(&self, id: u64) -> Option<(Arc<AtomicBool>, CancellationToken)> {
        let mut active = self.lock();
        if active.len() >= MAX_CONNECTIONS {
            // Oldest first: the vector is in arrival order.
            let idle = active.iter().position(|s| !s.head_done.load(Relaxed))?;
            active.remove(idle).cancel.cancel();
            let n = self.evicted.fetch_add(1, Relaxed) + 1;
            if crate::bus::broker::worth_logging(n) {
                tracing::warn!(
                    evicted_so_far = n,
                    "metrics: all connections busy; closed the oldest one that has not sent a request"
                );
            }
        }
        let slot = Slot {
            id,
            head_done: Arc::new(AtomicBool::new(false)),
            cancel: CancellationToken::new(),
        };
        let handles = (slot.head_done.clone(), slot.cancel.clone());
        active.push(slot);
        Some(handles)
    }

    fn release(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }
}

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, broker: Broker, stop: CancellationToken) {
    let slots = Arc::new(Slots::default());
    let mut refused = 0u64;
    for id in 0u64.. {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some((head_done, cancel)) = slots.take(id) else {
            refused += 1;
            if crate::bus::broker::worth_logging(refused) {
                tracing::warn!(%peer, refused_so_far = refused, "metrics: every connection is being answered; closing this one");
            }
            continue;
        };
        let (broker, slots) = (broker.clone(), slots.clone());
        tokio::spawn(async move {
            let exchange =
                tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream, &broker, &head_done));
            tokio::select! {
                _ = cancel.cancelled() => tracing::debug!(%peer, "metrics: closed for a newer connection"),
                done = exchange => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics: exchange failed"),
                    Err(_) => tracing::debug!(%peer, "metrics: exchange timed out"),
                },
            }
            slots.release(id);
        });
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (`head_only` for `HEAD`).
    Metrics {
        head_only: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
    TooLarge,
}

/// Reads the request head (up to the blank line) within `MAX_HEAD`.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Result<Vec<u8>, Route>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Ok(head));
        }
        if head.len() >= MAX_HEAD {
            return Ok(Err(Route::TooLarge));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(Err(Route::BadRequest));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// Decides from the request line alone; headers are ignored.
fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { head_only: false },
        ("HEAD", "/metrics") => Route::Metrics { head_only: true },
        (_, "/metrics") => Route::MethodNotAllowed,
        _ => Route::NotFound,
    }
}

async fn exchange(
    mut stream: TcpStream,
    broker: &Broker,
    head_done: &AtomicBool,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no request head in time")
        })?;
    let route = match head? {
        Ok(head) => route(&head),
        Err(r) => r,
    };
    head_done.store(true, Relaxed);
    let (status, body, head_only) = match route {
        Route::Metrics { head_only } => match scrape(broker).await {
            Ok(text) => ("200 OK", text, head_only),
            Err(why) => ("503 Service Unavailable", format!("{why}\n"), head_only),
        },
        Route::NotFound => ("404 Not Found", "try /metrics\n".into(), false),
        Route::MethodNotAllowed => ("405 Method Not Allowed", "GET only\n".into(), false),
        Route::BadRequest => ("400 Bad Request", "bad request\n".into(), false),
        Route::TooLarge => (
            "431 Request Header Fields Too Large",
            "request head too large\n".into(),
            false,
        ),
    };
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if route == Route::MethodNotAllowed {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if !head_only {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Asks the agent for its health and encodes it.
async fn scrape(broker: &Broker) -> Result<String, String> {
    let answer = broker
        .request_local(TOPIC_AGENT, b"{}".to_vec(), HEALTH_TIMEOUT)
        .await;
    if answer.status != Status::Ok {
        return Err(format!("the agent did not answer: {:?}", answer.status));
    }
    let health: crate::health::AgentHealth = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("the agent's answer does not parse as its health: {e}"))?;
    super::prometheus::encode(health).map_err(|_| "encoding failed".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_make_room_and_busy_ones_keep_theirs() {
        let slots = Slots::default();
        let taken: Vec<_> = (0..MAX_CONNECTIONS as u64)
            .map(|id| slots.take(id).expect("free slot"))
            .collect();
        // Connection 1 is being answered; 0 only connected.
        taken[1].0.store(true, Relaxed);
        let _ = slots.take(100).expect("room made");
        assert!(taken[0].1.is_cancelled(), "the oldest idle one was closed");
        assert!(!taken[1].1.is_cancelled());
        for (done, _) in &taken[2..] {
            done.store(true, Relaxed);
        }
        let newest = slots.take(101).expect("room made");
        assert_eq!(slots.evicted.load(Relaxed), 2, "100 was idle too");
        newest.0.store(true, Relaxed);
        assert!(
            slots.take(102).is_none(),
            "all answering: the newcomer waits its turn"
        );
        slots.release(1);
        assert!(slots.take(103).is_some());
    }

    #[test]
    fn only_get_and_head_of_metrics_are_served() {
        let cases: [(&[u8], Route); 8] = [
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Route::Metrics { head_only: false },
            ),
            (
                b"GET /metrics?x=1 HTTP/1.0\r\n\r\n",
                Route::Metrics { head_only: false },
            ),
            (
                b"HEAD /metrics HTTP/1.1\r\n\r\n",
                Route::Metrics { head_only: true },
            ),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Route::MethodNotAllowed),
            (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metrics/x HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metrics\r\n\r\n", Route::BadRequest),
            (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", Route::BadRequest),
        ];
        for (head, want) in cases {
            assert_eq!(route(head), want, "{}", String::from_utf8_lossy(head));
        }
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
    }
}
