//! `procmond agent --config agent.yaml`.

use std::path::Path;

use anyhow::Result;
use procmond::config::AgentConfig;
use tokio_util::sync::CancellationToken;

pub fn run(config_path: &Path) -> Result<()> {
    let config = AgentConfig::load(config_path)?;
    super::runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        super::spawn_stop_triggers(shutdown.clone(), None)?;
        procmond::agent::run(config, shutdown).await?;
        Ok(())
    })
}
