//! The agent on Windows: its broker on a named pipe, and the Windows
//! service around it (`procmond agent --service`, `procmond service
//! install|uninstall`).
//!
//! The service manager starts `procmond agent --service --config FILE`;
//! `run` connects to it (`StartServiceCtrlDispatcher`), reports Running,
//! turns Stop and Shutdown into the agent's shutdown token, and reports
//! Stopped with the agent's outcome. A service has no console: the log
//! (and the launcher's and collectors' stderr, inherited) goes to
//! `--log-file` (install's default: `%ProgramData%\procmond\logs\procmond.log`),
//! in a directory procmond creates for SYSTEM, Administrators and the
//! service's account only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use crate::bus::broker::Broker;
use crate::bus::pipe::{self, PipeListener};
use crate::config::AgentConfig;

/// The service's name in the service manager (`sc.exe query procmond`).
pub const SERVICE_NAME: &str = "procmond";
const DISPLAY_NAME: &str = "procmond process sensor agent";
const DESCRIPTION: &str =
    "Reports every process start and stop to local sinks (procmond agent --service).";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "not started by the service manager ({0}): run `procmond agent` on a console, or start the service with `sc.exe start {SERVICE_NAME}`"
    )]
    NotAService(#[source] windows_service::Error),
    #[error("{what}: {source}")]
    Scm {
        what: &'static str,
        #[source]
        source: windows_service::Error,
    },
    #[error("log file {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Agent(String),
}

fn scm(what: &'static str) -> impl Fn(windows_service::Error) -> ServiceError {
    move |source| ServiceError::Scm { what, source }
}

/// The agent's broker: admits the agent's own account plus
/// `broker.allowed_sids`, on a pipe whose DACL says the same.
pub(super) fn broker(config: &AgentConfig) -> (Broker, std::io::Result<PipeListener>) {
    let mut allowed = config.broker.allowed_sids.clone();
    match crate::sys::windows::own_user_sid() {
        Ok(own) => allowed.push(own),
        Err(e) => {
            tracing::error!(error = %e, "cannot read this account's SID: it is not admitted to its own broker")
        }
    }
    let broker = Broker::with_registration_sids(
        allowed,
        config.broker.limits,
        config.broker.operators.clone(),
    );
    let listener = pipe::bind(&config.broker.socket, &config.broker.allowed_sids);
    (broker, listener)
}

/// The agent's body: runs until the token is cancelled.
type Body = Box<dyn Fn(&Path, CancellationToken) -> Result<(), String> + Send + Sync>;

/// What the dispatcher thread needs: the config path and the agent body.
static ENTRY: OnceLock<(PathBuf, Body)> = OnceLock::new();
/// The outcome `service_main` leaves for `run`.
static OUTCOME: Mutex<Option<Result<(), String>>> = Mutex::new(None);

windows_service::define_windows_service!(ffi_service_main, service_main);

/// Runs `body` as the service, logging to `log_file`: returns when the
/// service manager stopped it (or the agent ended on its own). Fails at
/// once outside the manager.
pub fn run<F>(config: PathBuf, log_file: &Path, body: F) -> Result<(), ServiceError>
where
    F: Fn(&Path, CancellationToken) -> Result<(), String> + Send + Sync + 'static,
{
    redirect_log(log_file)?;
    let _ = ENTRY.set((config, Box::new(body)));
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(ServiceError::NotAService)?;
    let outcome = OUTCOME.lock().map(|mut o| o.take()).unwrap_or(None);
    outcome.unwrap_or(Ok(())).map_err(ServiceError::Agent)
}

/// `%ProgramData%\procmond\logs\procmond.log`, as the installing shell
/// sees `%ProgramData%` (install puts it on the service's command line: a
/// service's environment may differ; wine gives services another one).
pub fn default_log_file() -> PathBuf {
    std::env::var_os("ProgramData")
        .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from)
        .join("procmond")
        .join("logs")
        .join("procmond.log")
}

/// Sends stderr (the log) to `path`, appending; its directory is created
/// with the private ACL when it does not exist.
fn redirect_log(path: &Path) -> Result<(), ServiceError> {
    let log_error = |source| ServiceError::Log {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(log_error)?;
        crate::sys::windows::make_private(dir).map_err(log_error)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(log_error)?;
    crate::sys::windows::redirect_stderr(file).map_err(log_error)
}

fn status(state: ServiceState, exit: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: if exit == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(exit)
        },
        checkpoint: 0,
        wait_hint: Duration::from_secs(if state == ServiceState::StopPending {
            90
        } else {
            0
        }),
        process_id: None,
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let outcome = serve();
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "procmond service failed");
    }
    if let Ok(mut o) = OUTCOME.lock() {
        *o = Some(outcome);
    }
}

fn serve() -> Result<(), String> {
    let Some((config, body)) = ENTRY.get() else {
        return Err("service started without its configuration".into());
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let handle = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            tracing::info!(?control, "service manager: stopping");
            stop.cancel();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .map_err(|e| format!("registering the service control handler: {e} ({e:?})"))?;
    let _ = handle.set_service_status(status(ServiceState::Running, 0));
    tracing::info!(config = %config.display(), "procmond service running");
    let outcome = body(config, shutdown);
    let _ = handle.set_service_status(status(ServiceState::Stopped, u32::from(outcome.is_err())));
    outcome
}

/// Registers the service: `procmond agent --service --config CONFIG
/// --log-file LOG`, started automatically at boot, as LocalSystem.
pub fn install(binary: &Path, config: &Path, log_file: &Path) -> Result<(), ServiceError> {
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(scm("opening the service manager (run as an administrator)"))?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: binary.to_path_buf(),
        launch_arguments: vec![
            "agent".into(),
            "--service".into(),
            "--config".into(),
            config.as_os_str().to_owned(),
            "--log-file".into(),
            log_file.as_os_str().to_owned(),
        ],
        dependencies: Vec::new(),
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG)
        .map_err(scm("creating the service"))?;
    service
        .set_description(DESCRIPTION)
        .map_err(scm("setting the description"))
}

/// Stops the service if it runs (waiting up to `wait`), then deletes it.
pub fn uninstall(wait: Duration) -> Result<(), ServiceError> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(scm("opening the service manager (run as an administrator)"))?;
    let service = manager
        .open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .map_err(scm("opening the service"))?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        let state = service
            .query_status()
            .map_err(scm("querying the service"))?
            .current_state;
        if state == ServiceState::Stopped || std::time::Instant::now() >= deadline {
            break;
        }
        if state == ServiceState::Running {
            service.stop().map_err(scm("stopping the service"))?;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    service.delete().map_err(scm("deleting the service"))
}
