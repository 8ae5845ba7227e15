//! `procmond agent --config agent.yaml`, and its launcher `procmond agent-launcher`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use procmond::config::AgentConfig;
use tokio_util::sync::CancellationToken;

/// `service`: run under the Windows service manager (`--service`), logging
/// to `log_file`.
pub fn run(config_path: &Path, service: bool, log_file: Option<PathBuf>) -> Result<()> {
    if service {
        #[cfg(windows)]
        return super::service::run_agent(config_path, log_file);
        #[cfg(not(windows))]
        {
            let _ = log_file;
            anyhow::bail!(
                "--service is for the Windows service manager; on this platform use the service files in config/ (systemd, rc.d, launchd)"
            );
        }
    }
    #[cfg(windows)]
    procmond::sys::windows_fs::refuse_writable_config(config_path)?;
    let config = AgentConfig::load(config_path)?;
    super::restrict_umask();
    super::log_privileges();
    // Idle blocking threads made before the privilege drop keep their own
    // bounding set and no_new_privs: let them go quickly, so that the drop's
    // check of every thread (platform/privdrop.rs) finds only dropped ones.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_millis(200))
        .build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        super::spawn_stop_triggers(shutdown.clone(), None)?;
        procmond::agent::run(config, config_path, shutdown).await?;
        Ok(())
    })
}

/// The agent until `shutdown`, without installing signal handlers (the
/// Windows service manager decides when it stops).
#[cfg(windows)]
pub fn run_until(config_path: &Path, shutdown: CancellationToken) -> Result<()> {
    procmond::sys::windows_fs::refuse_writable_config(config_path)?;
    let config = AgentConfig::load(config_path)?;
    super::log_privileges();
    super::runtime()?.block_on(procmond::agent::run(config, config_path, shutdown))?;
    Ok(())
}

/// The privileged launcher the agent starts for itself (not for operators).
pub fn launcher(config_path: &Path) -> Result<()> {
    super::runtime()?.block_on(procmond::agent::launcher::serve(config_path))?;
    Ok(())
}
