//! `procmond agent --config agent.yaml`, and its launcher `procmond agent-helper`.

use std::path::Path;

use anyhow::Result;
use procmond::config::AgentConfig;
use tokio_util::sync::CancellationToken;

pub fn run(config_path: &Path) -> Result<()> {
    let config = AgentConfig::load(config_path)?;
    super::restrict_umask();
    super::log_privileges();
    super::runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        super::spawn_stop_triggers(shutdown.clone(), None)?;
        procmond::agent::run(config, config_path, shutdown).await?;
        Ok(())
    })
}

/// The privileged launcher the agent starts for itself (not for operators).
pub fn helper(config_path: &Path) -> Result<()> {
    super::runtime()?.block_on(procmond::agent::helper::serve(config_path))?;
    Ok(())
}
