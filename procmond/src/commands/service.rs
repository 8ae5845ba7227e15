//! Windows: `procmond agent --service` (the agent under the service
//! manager) and `procmond service install|uninstall` (registering it).
//! The service itself is `procmond::agent::service`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use procmond::agent::service;

/// Runs the agent as the service until the service manager stops it.
pub fn run_agent(config_path: &Path, log_file: Option<PathBuf>) -> Result<()> {
    let log_file = log_file.unwrap_or_else(service::default_log_file);
    service::run(config_path.to_path_buf(), &log_file, |path, shutdown| {
        super::agent::run_until(path, shutdown).map_err(|e| format!("{e:#}"))
    })?;
    Ok(())
}

/// Registers this binary as the `procmond` service with `config`.
pub fn install(config: &Path, binary: Option<PathBuf>, log_file: Option<PathBuf>) -> Result<()> {
    let log_file = log_file.unwrap_or_else(service::default_log_file);
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe().context("locating this executable")?,
    };
    let config =
        std::path::absolute(config).with_context(|| format!("resolving {}", config.display()))?;
    procmond::config::AgentConfig::load(&config)
        .with_context(|| format!("the service would not start with {}", config.display()))?;
    service::install(&binary, &config, &log_file)?;
    println!(
        "installed service {}: {} agent --service --config {} --log-file {}\nstart: sc.exe start {0}   stop: sc.exe stop {0}",
        service::SERVICE_NAME,
        binary.display(),
        config.display(),
        log_file.display()
    );
    Ok(())
}

/// Stops (up to 90 s) and removes the `procmond` service.
pub fn uninstall() -> Result<()> {
    service::uninstall(Duration::from_secs(90))?;
    println!("removed service {}", service::SERVICE_NAME);
    Ok(())
}
