//! `procmond ctl`: operator RPCs to a collector through the agent's broker.
//!
//! Prints the collector's JSON answer; exits non-zero when the answer is not
//! `ok`, the broker refuses the connection, or the deadline passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use procmond::bus::client;
use procmond::bus::protocol::{Envelope, FrameKind, Status, TOPIC_AGENT, control_topic};
use procmond::bus::rpc::{Request, to_payload};
use procmond::config::AgentConfig;

use procmond::agent::launcher::broker_socket_from_env;

/// Where the broker is: `--socket`, else `PROCMOND_BROKER_SOCKET` (or the
/// contract's `DAEMONEYE_BROKER_SOCKET`), else
/// the agent.yaml at the default path, else the default socket.
pub fn socket_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(broker_socket_from_env)
        .or_else(|| {
            AgentConfig::load(Path::new(super::DEFAULT_AGENT_CONFIG))
                .ok()
                .map(|c| c.broker.socket)
        })
        .unwrap_or_else(|| procmond::config::agent::BrokerConfig::default().socket)
}

/// Parses `KEY=VALUE` pairs; the error names the bad argument.
pub fn parse_sets(sets: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--set {s:?}: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--set {s:?}: empty key");
        }
        out.insert(k.to_string(), v.to_string());
    }
    if out.is_empty() {
        bail!("--set KEY=VALUE is required");
    }
    Ok(out)
}

pub fn run(
    socket: Option<PathBuf>,
    collector: &str,
    timeout: Duration,
    request: Request,
) -> Result<()> {
    let socket = socket_path(socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let with_agent = matches!(request, Request::HealthCheck { .. });
    let (response, agent) = runtime.block_on(async {
        let within = timeout + Duration::from_secs(1);
        let topic = control_topic(collector);
        let response = tokio::time::timeout(within, call(&socket, &topic, timeout, &request))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))??;
        // Health includes the agent's side: broker and sink counters.
        let agent = if with_agent {
            tokio::time::timeout(within, call(&socket, TOPIC_AGENT, timeout, &request))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).ok())
        } else {
            None
        };
        anyhow::Ok((response, agent))
    })?;
    let body: serde_json::Value = serde_json::from_slice(&response.payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&response.payload).into_owned())
    });
    let status = serde_json::to_value(response.status)?;
    let mut out = serde_json::json!({ "status": status, "collector": collector, "response": body });
    if let Some(agent) = agent {
        out["agent"] = agent;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    if response.status != Status::Ok {
        bail!(
            "{collector} answered {}",
            status.as_str().unwrap_or("an error")
        );
    }
    Ok(())
}

async fn call(
    socket: &Path,
    topic: &str,
    timeout: Duration,
    request: &Request,
) -> Result<Envelope> {
    let (mut writer, mut reader) = client::connect(socket)
        .await
        .with_context(|| format!("connecting to the broker at {}", socket.display()))?;
    let mut env = Envelope::new(FrameKind::Request, topic, 1, to_payload(request));
    let now_ms = (procmond::clock::now_unix_ns() / 1_000_000).max(0) as u64;
    env.deadline_unix_ms = now_ms + timeout.as_millis() as u64;
    let refused = "the broker closed the connection (is this uid in broker.allowed_uids?)";
    writer.send(&env).await.context(refused)?;
    loop {
        match reader.next().await {
            Some(Ok(resp)) if resp.kind == FrameKind::Response && resp.correlation_id == 1 => {
                return Ok(resp);
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(anyhow::Error::new(e).context(refused)),
            None => bail!(refused),
        }
    }
}
