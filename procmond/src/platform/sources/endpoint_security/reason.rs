//! Why the EndpointSecurity source cannot run, in words an operator can act
//! on (pure, tested on every platform).
//!
//! Each `es_new_client` failure becomes its own degraded reason: it is what
//! `capabilities`, registration and health show, what `source: auto` logs
//! before it falls back to polling, and the error `source:
//! endpoint_security` exits with. The checks made before any client is
//! created (root, macOS version) are here too.

/// The `es_new_client` results (`es_new_client_result_t`), with Apple's
/// numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NewClientFailure {
    #[error(
        "es_new_client: invalid argument (ES_NEW_CLIENT_RESULT_ERR_INVALID_ARGUMENT): a procmond bug, please report it"
    )]
    InvalidArgument,
    #[error(
        "es_new_client: internal error (ES_NEW_CLIENT_RESULT_ERR_INTERNAL): communication with the EndpointSecurity subsystem failed; see `log show --last 5m --predicate 'subsystem == \"com.apple.endpointsecurity\"'`"
    )]
    Internal,
    #[error(
        "es_new_client: not entitled (ES_NEW_CLIENT_RESULT_ERR_NOT_ENTITLED): this binary is not signed with the com.apple.developer.endpoint-security.client entitlement, or no provisioning profile authorises it; run it from procmond.app with its embedded provisioning profile, signed with config/macos/procmond.entitlements (docs/platforms.md, macOS)"
    )]
    NotEntitled,
    #[error(
        "es_new_client: not permitted (ES_NEW_CLIENT_RESULT_ERR_NOT_PERMITTED): Full Disk Access is not granted to procmond (or to the process responsible for it, such as Terminal); grant it in System Settings > Privacy & Security > Full Disk Access or with an MDM PPPC profile"
    )]
    NotPermitted,
    #[error(
        "es_new_client: not privileged (ES_NEW_CLIENT_RESULT_ERR_NOT_PRIVILEGED): EndpointSecurity clients must run as root"
    )]
    NotPrivileged,
    #[error(
        "es_new_client: too many clients (ES_NEW_CLIENT_RESULT_ERR_TOO_MANY_CLIENTS): the system's limit of simultaneous EndpointSecurity clients is reached; stop another client (another procmond, or another security product)"
    )]
    TooManyClients,
    #[error("es_new_client is not available on this version of macOS")]
    ApiUnavailable,
    #[error("es_new_client: unknown result {0}")]
    Unknown(u32),
}

impl NewClientFailure {
    /// The failure an `es_new_client_result_t` value names; `None` for 0
    /// (`ES_NEW_CLIENT_RESULT_SUCCESS`).
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => return None,
            1 => Self::InvalidArgument,
            2 => Self::Internal,
            3 => Self::NotEntitled,
            4 => Self::NotPermitted,
            5 => Self::NotPrivileged,
            6 => Self::TooManyClients,
            other => Self::Unknown(other),
        })
    }
}

/// Why the source did not start.
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    #[error(transparent)]
    NewClient(#[from] NewClientFailure),
    #[error("es_subscribe to NOTIFY_EXEC, NOTIFY_FORK and NOTIFY_EXIT failed: {0}")]
    Subscribe(String),
    #[error("starting the EndpointSecurity client thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the EndpointSecurity client thread ended before the client was ready")]
    ThreadGone,
}

/// The oldest macOS the source supports: message version 4 (global
/// sequence numbers, parent audit tokens) and the crate's `macos_11_0_0`
/// API.
pub const MIN_MACOS: (u64, u64, u64) = (11, 0, 0);

/// Why the source cannot even be tried, before any client is created:
/// not root, or a macOS older than `MIN_MACOS` (an unknown version is
/// tried, and `es_new_client` decides).
pub fn precheck(euid: u32, macos: Option<(u64, u64, u64)>) -> Option<String> {
    if euid != 0 {
        return Some(format!(
            "EndpointSecurity needs root: es_new_client refuses clients that do not run as root (euid {euid})"
        ));
    }
    match macos {
        Some(v) if v < MIN_MACOS => Some(format!(
            "macOS {}.{}.{} is older than {}.{}, the oldest procmond's EndpointSecurity source supports",
            v.0, v.1, v.2, MIN_MACOS.0, MIN_MACOS.1
        )),
        _ => None,
    }
}

/// `(major, minor, patch)` from `kern.osproductversion` ("14.5",
/// "15.0.1"). "10.16" is what Big Sur tells binaries built against an old
/// SDK: it is 11.0.
pub fn parse_macos_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    if parts.next().is_some() {
        return None;
    }
    if (major, minor) == (10, 16) {
        return Some((11, 0, patch));
    }
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_new_client_result_has_its_own_actionable_reason() {
        let cases = [
            (1, "invalid argument", "report"),
            (2, "internal error", "log show"),
            (
                3,
                "not entitled",
                "com.apple.developer.endpoint-security.client",
            ),
            (4, "not permitted", "Full Disk Access"),
            (5, "not privileged", "root"),
            (6, "too many clients", "stop another client"),
        ];
        let mut seen = std::collections::HashSet::new();
        for (code, what, hint) in cases {
            let failure = NewClientFailure::from_code(code).expect("a failure");
            let reason = EsError::from(failure).to_string();
            assert!(reason.starts_with("es_new_client: "), "{reason}");
            assert!(reason.contains(what), "{code}: {reason}");
            assert!(reason.contains(hint), "{code}: {reason}");
            assert!(seen.insert(reason), "code {code} shares a reason");
        }
        assert_eq!(NewClientFailure::from_code(0), None);
        assert_eq!(
            NewClientFailure::from_code(99).map(|f| f.to_string()),
            Some("es_new_client: unknown result 99".into())
        );
        assert!(
            EsError::Subscribe("ES_RETURN_ERROR".into())
                .to_string()
                .contains("NOTIFY_EXEC")
        );
    }

    #[test]
    fn precheck_needs_root_and_a_new_enough_macos() {
        let not_root = precheck(501, Some((14, 5, 0))).expect("refused");
        assert!(not_root.contains("root") && not_root.contains("euid 501"));
        let old = precheck(0, Some((10, 15, 7))).expect("refused");
        assert!(old.contains("10.15.7") && old.contains("11.0"), "{old}");
        assert_eq!(precheck(0, Some((11, 0, 0))), None);
        assert_eq!(precheck(0, Some((15, 4, 1))), None);
        assert_eq!(precheck(0, None), None, "unknown: let es_new_client decide");
    }

    #[test]
    fn macos_versions_parse() {
        assert_eq!(parse_macos_version("14.5"), Some((14, 5, 0)));
        assert_eq!(parse_macos_version("15.0.1\n"), Some((15, 0, 1)));
        assert_eq!(parse_macos_version("26"), Some((26, 0, 0)));
        assert_eq!(parse_macos_version("10.16"), Some((11, 0, 0)));
        for bad in ["", "x.1", "14.", "1.2.3.4", "-1.0"] {
            assert_eq!(parse_macos_version(bad), None, "{bad:?}");
        }
    }
}
