//! The one `procmond` binary: sensor, (later) agent and operator CLI.
//!
//! This file only parses the command line and sets up logging; each command
//! lives in `commands/`. Errors reach the operator with their context chain
//! and a non-zero exit status.

mod commands;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use procmond::output::Format;
use procmond::sources::SourceChoice;

#[derive(Parser)]
#[command(
    name = "procmond",
    version,
    about = "Reports every process start and stop, from the kernel, as it happens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Standalone sensor: events to stdout, logs to stderr.
    Watch {
        /// auto = eBPF when it can start, else polling.
        #[arg(long, value_enum)]
        source: Option<SourceChoice>,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Stop after this many seconds (flushing everything).
        #[arg(long)]
        duration: Option<u64>,
        /// Reconciliation / polling interval in seconds (1-3600).
        #[arg(long)]
        interval: Option<u64>,
        /// procmond.yaml
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// One enumeration of all processes, then exit.
    Snapshot {
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
    /// Platform, privileges, available sources and why not (JSON).
    Capabilities,
    /// The agent: broker, collectors, sinks (reads agent.yaml).
    Agent {
        #[arg(long, default_value = "/etc/procmond/agent.yaml")]
        config: PathBuf,
    },
    /// Collector service mode (spawned by the agent; needs DAEMONEYE_BROKER_SOCKET).
    Run {
        /// procmond.yaml
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate procmond.yaml or agent.yaml; errors name the key.
    Validate { file: PathBuf },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Watch {
            source,
            format,
            duration,
            interval,
            config,
        } => commands::watch::run(commands::watch::WatchArgs {
            source,
            format,
            duration,
            interval,
            config,
        }),
        Command::Snapshot { format } => commands::snapshot::run(format),
        Command::Capabilities => commands::capabilities::run(),
        Command::Agent { config } => commands::agent::run(&config),
        Command::Run { config } => commands::run::run(config.as_deref()),
        Command::Config {
            command: ConfigCommand::Validate { file },
        } => commands::config::validate(&file),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("procmond: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
