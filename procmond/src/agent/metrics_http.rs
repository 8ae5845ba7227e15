//! The HTTP side of the agent's `/metrics` (the encoding is `prometheus.rs`):
//! a deliberately small responder on a tokio `TcpListener` rather than an HTTP
//! framework (ADR 16 in docs/decisions.md). One request per connection, a
//! request head of at most 8 KiB, 10 s for the whole exchange, 8 connections
//! at once, `GET`/`HEAD /metrics` only (404, 405, 400, 431 otherwise).
//!
//! Each scrape asks the agent for its health over the broker (`control.agent`,
//! what `ctl health` shows), so `/metrics` and `ctl` never disagree.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::bus::broker::Broker;
use crate::bus::protocol::{Status, TOPIC_AGENT};

/// The longest request head read; more is answered 431.
const MAX_HEAD: usize = 8 * 1024;
/// A whole exchange (read, health answer, write) must fit in this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent may take to answer its health RPC.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed without an answer.
const MAX_CONNECTIONS: usize = 8;
const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, broker: Broker, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "metrics: too many connections; closing this one");
            continue;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream, &broker)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics: exchange failed"),
                Err(_) => tracing::debug!(%peer, "metrics: exchange timed out"),
            }
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

async fn exchange(mut stream: TcpStream, broker: &Broker) -> std::io::Result<()> {
    let route = match read_head(&mut stream).await? {
        Ok(head) => route(&head),
        Err(r) => r,
    };
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
    let health: Value = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("the agent's answer is not JSON: {e}"))?;
    super::prometheus::encode(health).map_err(|_| "encoding failed".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
