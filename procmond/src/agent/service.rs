//! The agent on Windows: its broker on a named pipe, and the Windows
//! service around it (`procmond agent --service`, `procmond service
//! install|uninstall`).
//!
//! The service manager starts `procmond agent --service --config FILE`;
//! `run` connects to it (`StartServiceCtrlDispatcher`), reports Running,
//! turns Stop, Preshutdown and Shutdown into the agent's shutdown token,
//! reports StopPending (a checkpoint every 2 s) while the agent drains, and
//! Stopped with the agent's outcome. Preshutdown (30 s, set at install)
//! lets the agent flush before the system goes down. Install also sets
//! recovery actions: restart after 5 s, 30 s, then every 60 s, also when
//! the service stops itself with an error. A service has no console: the log
//! (and the launcher's and collectors' stderr, inherited) goes to
//! `--log-file` (install's default: `%ProgramData%\procmond\logs\procmond.log`),
//! in a directory procmond creates for SYSTEM, Administrators and the
//! service's account only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
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

/// How often StopPending is reported again (with the next checkpoint).
const STOP_CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// How long the system waits for the agent at shutdown (Preshutdown).
const PRESHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

fn status(state: ServiceState, exit: u32, checkpoint: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP
                | ServiceControlAccept::PRESHUTDOWN
                | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: if exit == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(exit)
        },
        checkpoint,
        // Within this the manager expects the next checkpoint.
        wait_hint: if state == ServiceState::StopPending {
            STOP_CHECKPOINT_EVERY * 5
        } else {
            Duration::ZERO
        },
        process_id: None,
    }
}

/// What the service manager does when the agent dies or stops with an
/// error: restart it after 5 s, 30 s, then 60 s; the count resets after a
/// day without failures.
fn recovery() -> ServiceFailureActions {
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(5), restart(30), restart(60)]),
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
    let (asked_tx, asked) = std::sync::mpsc::channel::<()>();
    let handle = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            tracing::info!(?control, "service manager: stopping");
            stop.cancel();
            let _ = asked_tx.send(());
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .map_err(|e| format!("registering the service control handler: {e} ({e:?})"))?;
    let _ = handle.set_service_status(status(ServiceState::Running, 0, 0));
    tracing::info!(config = %config.display(), "procmond service running");
    // StopPending, with a new checkpoint every 2 s, from the stop request
    // until the agent is done.
    let done = Arc::new(AtomicBool::new(false));
    let pending = {
        let done = done.clone();
        std::thread::spawn(move || {
            if asked.recv().is_err() {
                return;
            }
            let mut checkpoint = 1;
            while !done.load(Ordering::SeqCst) {
                let _ = handle.set_service_status(status(ServiceState::StopPending, 0, checkpoint));
                checkpoint += 1;
                std::thread::sleep(STOP_CHECKPOINT_EVERY);
            }
        })
    };
    let outcome = body(config, shutdown);
    done.store(true, Ordering::SeqCst);
    let _ = handle.set_service_status(status(
        ServiceState::StopPending,
        u32::from(outcome.is_err()),
        0,
    ));
    let _ = handle.set_service_status(status(
        ServiceState::Stopped,
        u32::from(outcome.is_err()),
        0,
    ));
    drop(pending);
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
    // START: ChangeServiceConfig2 with SC_ACTION_RESTART needs it.
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
        .map_err(scm("creating the service"))?;
    service
        .set_description(DESCRIPTION)
        .map_err(scm("setting the description"))?;
    service
        .update_failure_actions(recovery())
        .map_err(scm("setting the recovery actions"))?;
    // Both since Vista; a service manager without them (wine's answers
    // ERROR_INVALID_LEVEL) still runs the service: say so and go on.
    if let Err(e) = service.set_failure_actions_on_non_crash_failures(true) {
        tracing::warn!(error = %e, "recovery only after crashes: this service manager does not take SERVICE_CONFIG_FAILURE_ACTIONS_FLAG");
    }
    if let Err(e) = service.set_preshutdown_timeout(PRESHUTDOWN_TIMEOUT) {
        tracing::warn!(error = %e, "no preshutdown timeout: this service manager does not take SERVICE_CONFIG_PRESHUTDOWN_INFO");
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_drains_on_stop_and_at_shutdown() {
        let running = status(ServiceState::Running, 0, 0);
        assert!(
            running
                .controls_accepted
                .contains(ServiceControlAccept::STOP | ServiceControlAccept::PRESHUTDOWN),
            "{running:?}"
        );
        let pending = status(ServiceState::StopPending, 0, 3);
        assert_eq!(pending.checkpoint, 3);
        assert!(pending.wait_hint > STOP_CHECKPOINT_EVERY, "{pending:?}");
        assert!(pending.controls_accepted.is_empty());
        let failed = status(ServiceState::Stopped, 1, 0);
        assert!(matches!(
            failed.exit_code,
            ServiceExitCode::ServiceSpecific(1)
        ));
    }

    #[test]
    fn a_failed_agent_is_restarted() {
        let r = recovery();
        let actions = r.actions.expect("actions");
        assert!(!actions.is_empty());
        assert!(
            actions
                .iter()
                .all(|a| matches!(a.action_type, ServiceActionType::Restart)),
            "{actions:?}"
        );
        assert!(matches!(
            r.reset_period,
            ServiceFailureResetPeriod::After(_)
        ));
    }
}
