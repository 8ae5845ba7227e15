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
        /// json (procmond's own, also `native`), text, ecs (ECS 8.x) or
        /// ocsf (OCSF 1.x Process Activity).
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
        /// json (also `native`), text, ecs or ocsf, as for watch.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
    /// Platform, privileges, available sources and why not (JSON).
    Capabilities,
    /// The agent: broker, collectors, sinks (reads agent.yaml).
    Agent {
        #[arg(long, default_value = commands::DEFAULT_AGENT_CONFIG)]
        config: PathBuf,
        /// Windows: run under the service manager (logs to --log-file).
        #[arg(long, hide = cfg!(not(windows)))]
        service: bool,
        /// Windows, with --service: the log file (default
        /// %ProgramData%\procmond\logs\procmond.log).
        #[arg(long, hide = cfg!(not(windows)), requires = "service")]
        log_file: Option<PathBuf>,
    },
    /// The agent's privileged launcher (started by `procmond agent`).
    #[command(hide = true)]
    AgentLauncher {
        #[arg(long)]
        config: PathBuf,
    },
    /// Loads and attaches the eBPF probes, hands their descriptors to the
    /// collector on stdin and exits (started by the collector).
    #[command(hide = true)]
    ProbeLoader {
        /// What to load, as JSON.
        #[arg(long)]
        request: String,
    },
    /// Collector service mode (spawned by the agent; needs PROCMOND_BROKER_SOCKET or DAEMONEYE_BROKER_SOCKET).
    Run {
        /// procmond.yaml
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Operator RPCs to a collector through the agent's broker (prints JSON).
    Ctl {
        /// Broker socket (default: $PROCMOND_BROKER_SOCKET, $DAEMONEYE_BROKER_SOCKET, then /etc/procmond/agent.yaml).
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
        /// Collector id.
        #[arg(long, global = true, default_value = "procmond")]
        collector: String,
        /// Seconds to wait for the answer.
        #[arg(long, global = true, default_value_t = 10)]
        timeout: u64,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Windows: register or remove the `procmond` service.
    #[cfg(windows)]
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
}

#[cfg(windows)]
#[derive(Subcommand)]
enum ServiceCommand {
    /// Register `procmond agent --service --config FILE` (auto start, LocalSystem).
    Install {
        #[arg(long, default_value = commands::DEFAULT_AGENT_CONFIG)]
        config: PathBuf,
        /// The executable to register (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Where the service logs (default %ProgramData%\procmond\logs\procmond.log).
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
    /// Stop the service if it runs, then remove it.
    Uninstall,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Status, source, buffer fill, connection and loss counters.
    Health {
        /// Add recent errors and cycle statistics.
        #[arg(long)]
        detailed: bool,
    },
    /// Change hot-reloadable settings; applied at the next cycle boundary.
    Config {
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Finish the cycle, flush, deregister and exit 0.
    Shutdown,
    /// Resume collection after `stop`.
    Start,
    /// Pause collection (the source is detached).
    Stop,
    /// Re-attach the source and take a fresh inventory.
    Restart,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate procmond.yaml or agent.yaml; errors name the key.
    Validate { file: PathBuf },
}

fn main() -> std::process::ExitCode {
    procmond::sys::tune_allocator();
    let cli = Cli::parse();
    procmond::telemetry::init();
    commands::probe_loader::register();
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
        Command::Agent {
            config,
            service,
            log_file,
        } => commands::agent::run(&config, service, log_file),
        Command::AgentLauncher { config } => commands::agent::launcher(&config),
        Command::ProbeLoader { request } => commands::probe_loader::run(&request),
        Command::Run { config } => commands::run::run(config.as_deref()),
        Command::Config {
            command: ConfigCommand::Validate { file },
        } => commands::config::validate(&file),
        #[cfg(windows)]
        Command::Service { command } => match command {
            ServiceCommand::Install {
                config,
                binary,
                log_file,
            } => commands::service::install(&config, binary, log_file),
            ServiceCommand::Uninstall => commands::service::uninstall(),
        },
        Command::Ctl {
            socket,
            collector,
            timeout,
            command,
        } => {
            use procmond::bus::rpc::Request;
            let request = match command {
                CtlCommand::Health { detailed } => Ok(Request::HealthCheck { detailed }),
                CtlCommand::Config { set } => {
                    commands::ctl::parse_sets(&set).map(|set| Request::UpdateConfig { set })
                }
                CtlCommand::Shutdown => Ok(Request::GracefulShutdown),
                CtlCommand::Start => Ok(Request::Start),
                CtlCommand::Stop => Ok(Request::Stop),
                CtlCommand::Restart => Ok(Request::Restart),
            };
            request.and_then(|r| {
                commands::ctl::run(
                    socket,
                    &collector,
                    std::time::Duration::from_secs(timeout),
                    r,
                )
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("procmond: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
