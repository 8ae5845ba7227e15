//! agent.yaml's peer-identity keys on each platform (docs/reference.md
//! §3.1): Unix admits and authorizes bus peers by uid (`allowed_uids`,
//! `operators.*_uids`), Windows by user SID (`allowed_sids`,
//! `operators.*_sids`) over a named pipe. A key of the other platform is an
//! error rather than silently ignored, and every SID is checked for form.
//! Pure: the platform is a parameter, so both sides are tested everywhere.

use super::BrokerConfig;
use crate::bus::authz::Operators;
use crate::bus::peer::is_sid_string;
use crate::config::ConfigError;

/// Checks the broker's identity keys and `run_as` for the platform.
pub(super) fn check(
    broker: &BrokerConfig,
    run_as: Option<&str>,
    windows: bool,
) -> Result<(), ConfigError> {
    let ops = &broker.operators;
    for (key, list) in [
        ("broker.allowed_sids", &broker.allowed_sids),
        ("broker.operators.read_sids", &ops.read_sids),
        ("broker.operators.admin_sids", &ops.admin_sids),
    ] {
        if let Some((i, bad)) = list.iter().enumerate().find(|(_, s)| !is_sid_string(s)) {
            return Err(ConfigError::invalid(
                format!("{key}[{i}]"),
                format!("not a SID in string form (S-1-5-…): {bad:?}"),
            ));
        }
    }
    let defaults = BrokerConfig::default();
    let default_ops = Operators::default();
    if windows {
        if !crate::bus::pipe::is_pipe_name(&broker.socket) {
            return Err(ConfigError::invalid(
                "broker.socket",
                format!(
                    "on Windows it must be a local pipe name (\\\\.\\pipe\\NAME), got {}",
                    broker.socket.display()
                ),
            ));
        }
        if run_as.is_some() {
            return Err(ConfigError::invalid(
                "run_as",
                "not supported on Windows (procmond has no privilege drop there): run the agent service under the account it should use",
            ));
        }
        let unix_keys = [
            (
                "broker.allowed_uids",
                broker.allowed_uids != defaults.allowed_uids,
            ),
            (
                "broker.operators.read_uids",
                ops.read_uids != default_ops.read_uids,
            ),
            (
                "broker.operators.admin_uids",
                ops.admin_uids != default_ops.admin_uids,
            ),
        ];
        if let Some((key, _)) = unix_keys.iter().find(|(_, set)| *set) {
            return Err(ConfigError::invalid(
                *key,
                "Unix only: on Windows peers are user SIDs (broker.allowed_sids, broker.operators.read_sids / admin_sids)",
            ));
        }
    } else {
        let windows_keys = [
            (
                "broker.allowed_sids",
                broker.allowed_sids != defaults.allowed_sids,
            ),
            (
                "broker.operators.read_sids",
                ops.read_sids != default_ops.read_sids,
            ),
            (
                "broker.operators.admin_sids",
                ops.admin_sids != default_ops.admin_sids,
            ),
        ];
        if let Some((key, _)) = windows_keys.iter().find(|(_, set)| *set) {
            return Err(ConfigError::invalid(
                *key,
                "Windows only: on this platform peers are uids (broker.allowed_uids, broker.operators.read_uids / admin_uids)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows_broker() -> BrokerConfig {
        BrokerConfig {
            socket: crate::bus::pipe::DEFAULT_PIPE.into(),
            ..BrokerConfig::default()
        }
    }

    fn err(r: Result<(), ConfigError>) -> String {
        r.expect_err("must be refused").to_string()
    }

    #[test]
    fn windows_takes_sids_and_a_pipe_name() {
        let mut b = windows_broker();
        b.allowed_sids = vec!["S-1-5-18".into(), "S-1-5-21-1-2-3-1001".into()];
        b.operators.read_sids = vec!["S-1-5-21-1-2-3-1001".into()];
        assert!(check(&b, None, true).is_ok());
        b.allowed_sids.push("Administrators".into());
        let e = err(check(&b, None, true));
        assert!(
            e.contains("broker.allowed_sids[2]") && e.contains("not a SID"),
            "{e}"
        );
        let mut b = windows_broker();
        b.socket = "/run/procmond/broker.sock".into();
        assert!(err(check(&b, None, true)).contains("broker.socket"));
        let e = err(check(&windows_broker(), Some("nobody"), true));
        assert!(e.contains("run_as") && e.contains("Windows"), "{e}");
        let mut b = windows_broker();
        b.allowed_uids = vec![0, 1000];
        assert!(err(check(&b, None, true)).contains("broker.allowed_uids"));
        let mut b = windows_broker();
        b.operators.admin_uids = vec![];
        assert!(err(check(&b, None, true)).contains("broker.operators.admin_uids"));
    }

    #[test]
    fn unix_refuses_windows_keys() {
        let unix = BrokerConfig {
            socket: "/run/procmond/broker.sock".into(),
            ..BrokerConfig::default()
        };
        assert!(check(&unix, Some("nobody"), false).is_ok());
        let mut b = unix.clone();
        b.allowed_sids = vec!["S-1-5-21-1-2-3-1001".into()];
        let e = err(check(&b, None, false));
        assert!(
            e.contains("broker.allowed_sids") && e.contains("Windows only"),
            "{e}"
        );
        let mut b = unix;
        b.operators.admin_sids = vec!["bogus".into()];
        assert!(err(check(&b, None, false)).contains("broker.operators.admin_sids[0]"));
    }
}
