//! Who may publish what on the agent's bus.
//!
//! Admission (the peer's uid) says who may connect; this says what an
//! admitted peer may write. A collector identity belongs to the connection
//! that registered it, for as long as that connection lives:
//!
//! * `control.collector.registration`: `register` binds the connection to a
//!   collector id no live connection holds; `ready` and `deregister` only for
//!   the id the connection holds; one id per connection.
//! * `control.health.heartbeat.<id>`: only from the connection holding `<id>`.
//! * process events: every event's `collector_id` must be the connection's.
//! * any other `control.*` publish (the lifecycle broadcast above all) comes
//!   from the agent itself, never from a peer.
//!
//! Operator calls (`ctl`) are allowed per uid (`broker.operators` in
//! agent.yaml): health checks to `read_uids`, everything that changes
//! something (config, shutdown, start, stop, restart) to `admin_uids`. On
//! Windows the peer is a SID and the lists are `read_sids` / `admin_sids`.
//!
//! Pure decisions over the connection's binding; the broker keeps the
//! bindings and counts and logs each refusal. Without `require_registration`
//! (the private broker embedded in `watch`, in-process tests) everything an
//! admitted peer sends is allowed, as before.

use serde::{Deserialize, Serialize};

use crate::bus::peer::{PeerId, SID_LOCAL_SYSTEM};
use crate::bus::protocol::{TOPIC_AGENT, TOPIC_REGISTRATION, heartbeat_topic};
use crate::bus::rpc::{Registration, Request};

/// What a publish does to the connection's binding, when it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Nothing changes.
    Publish,
    /// The connection now holds this collector id.
    Bind(String),
    /// The connection gives its collector id up.
    Unbind,
}

/// Why a publish was refused (logged and counted by the broker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("control topic {0} is written by the agent only")]
    ControlTopic(String),
    #[error("not a registration message: {0}")]
    BadRegistration(String),
    #[error("collector id {0:?} is held by another connection")]
    Taken(String),
    #[error("this connection holds collector id {held:?}, not {claimed:?}")]
    NotYours {
        held: Option<String>,
        claimed: String,
    },
    #[error("{who} may not make {what} calls (broker.operators in agent.yaml)")]
    Operator { who: String, what: &'static str },
}

/// Which uids may call what (agent.yaml `broker.operators`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Operators {
    /// May ask for health (`ctl health`).
    pub read_uids: Vec<u32>,
    /// May change things (`ctl config`, `shutdown`, `start`, `stop`, `restart`).
    pub admin_uids: Vec<u32>,
    /// Windows: the user SIDs that may ask for health.
    pub read_sids: Vec<String>,
    /// Windows: the user SIDs that may change things.
    pub admin_sids: Vec<String>,
}

impl Default for Operators {
    fn default() -> Self {
        Self {
            read_uids: vec![0],
            admin_uids: vec![0],
            read_sids: vec![SID_LOCAL_SYSTEM.to_string()],
            admin_sids: vec![SID_LOCAL_SYSTEM.to_string()],
        }
    }
}

/// Decides on an RPC to `topic` by `peer` (a uid, or a SID on Windows).
pub fn decide_call(
    topic: &str,
    payload: &[u8],
    peer: impl Into<PeerId>,
    ops: &Operators,
) -> Result<(), Refused> {
    let peer = peer.into();
    let read_only = if topic == TOPIC_AGENT {
        true
    } else if topic.starts_with("control.collector.") {
        // Unreadable requests count as changes: the strict side.
        matches!(
            serde_json::from_slice::<Request>(payload),
            Ok(Request::HealthCheck { .. })
        )
    } else {
        return Ok(());
    };
    let allowed = peer.listed(&ops.admin_uids, &ops.admin_sids)
        || read_only && peer.listed(&ops.read_uids, &ops.read_sids);
    if allowed {
        Ok(())
    } else {
        Err(Refused::Operator {
            who: peer.to_string(),
            what: if read_only { "read" } else { "admin" },
        })
    }
}

/// Decides on a publish to `topic` by a connection holding `held`;
/// `collectors` are the ids a process-event publish names; `taken(id)`
/// tells whether another live connection holds `id`.
pub fn decide(
    topic: &str,
    payload: &[u8],
    collectors: Option<&[String]>,
    held: Option<&str>,
    taken: impl Fn(&str) -> bool,
) -> Result<Allowed, Refused> {
    let not_yours = |claimed: &str| Refused::NotYours {
        held: held.map(str::to_owned),
        claimed: claimed.to_owned(),
    };
    if let Some(collectors) = collectors {
        // Process events: every one must name the connection's collector.
        if let Some(other) = collectors.iter().find(|c| held != Some(c.as_str())) {
            return Err(not_yours(other));
        }
        return Ok(Allowed::Publish);
    }
    if topic == TOPIC_REGISTRATION {
        let msg: Registration =
            serde_json::from_slice(payload).map_err(|e| Refused::BadRegistration(e.to_string()))?;
        return match msg {
            Registration::Register { collector_id, .. } => match held {
                Some(h) if h == collector_id => Ok(Allowed::Publish),
                Some(_) => Err(not_yours(&collector_id)),
                None if taken(&collector_id) => Err(Refused::Taken(collector_id)),
                None => Ok(Allowed::Bind(collector_id)),
            },
            Registration::Ready { collector_id } if held == Some(collector_id.as_str()) => {
                Ok(Allowed::Publish)
            }
            Registration::Deregister { collector_id } if held == Some(collector_id.as_str()) => {
                Ok(Allowed::Unbind)
            }
            Registration::Ready { collector_id } | Registration::Deregister { collector_id } => {
                Err(not_yours(&collector_id))
            }
        };
    }
    if let Some(id) = topic.strip_prefix("control.health.heartbeat.") {
        return if held.is_some_and(|h| heartbeat_topic(h) == topic) {
            Ok(Allowed::Publish)
        } else {
            Err(not_yours(id))
        };
    }
    if topic.starts_with("control.") {
        return Err(Refused::ControlTopic(topic.to_owned()));
    }
    Ok(Allowed::Publish)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::protocol::TOPIC_LIFECYCLE;

    fn register(id: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"register","collector_id":"{id}","collector_type":"process-monitor","version":"1","pid":1,"hostname":"h","source":"ebpf","capabilities":{{}}}}"#
        )
        .into_bytes()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn registration_binds_once_and_only_free_ids() {
        let free = |_: &str| false;
        assert_eq!(
            decide(TOPIC_REGISTRATION, &register("p"), None, None, free),
            Ok(Allowed::Bind("p".into()))
        );
        assert_eq!(
            decide(TOPIC_REGISTRATION, &register("p"), None, None, |id| id
                == "p"),
            Err(Refused::Taken("p".into()))
        );
        assert!(decide(TOPIC_REGISTRATION, &register("q"), None, Some("p"), free).is_err());
        let ready = br#"{"type":"ready","collector_id":"p"}"#;
        assert!(decide(TOPIC_REGISTRATION, ready, None, Some("p"), free).is_ok());
        assert!(decide(TOPIC_REGISTRATION, ready, None, None, free).is_err());
        let dereg = br#"{"type":"deregister","collector_id":"p"}"#;
        assert_eq!(
            decide(TOPIC_REGISTRATION, dereg, None, Some("p"), free),
            Ok(Allowed::Unbind)
        );
        assert!(decide(TOPIC_REGISTRATION, b"junk", None, None, free).is_err());
    }

    #[test]
    fn operator_calls_follow_the_uid_lists() {
        let ops = Operators {
            read_uids: vec![0, 1000],
            admin_uids: vec![0],
            ..Operators::default()
        };
        let health = br#"{"op":"health_check","detailed":true}"#;
        let stop = br#"{"op":"graceful_shutdown"}"#;
        let coll = "control.collector.procmond";
        assert!(decide_call(coll, health, 1000, &ops).is_ok());
        assert!(decide_call(TOPIC_AGENT, b"{}", 1000, &ops).is_ok());
        assert!(decide_call(coll, stop, 1000, &ops).is_err());
        assert!(
            decide_call(coll, b"garbage", 1000, &ops).is_err(),
            "unreadable = admin"
        );
        assert!(decide_call(coll, stop, 0, &ops).is_ok());
        assert!(decide_call(coll, health, 2000, &ops).is_err());
        assert!(
            decide_call("app.echo", stop, 2000, &ops).is_ok(),
            "not an operator topic"
        );
        let ops = Operators {
            read_sids: vec!["S-1-5-21-1-2-3-1001".into()],
            ..Operators::default()
        };
        let reader = PeerId::Sid("S-1-5-21-1-2-3-1001".into());
        assert!(decide_call(coll, health, reader.clone(), &ops).is_ok());
        assert!(decide_call(coll, stop, reader, &ops).is_err());
        assert!(decide_call(coll, stop, PeerId::Sid("S-1-5-18".into()), &ops).is_ok());
        let e = decide_call(coll, stop, PeerId::Sid("S-1-5-21-9".into()), &ops)
            .expect_err("unlisted SID");
        assert!(
            e.to_string()
                .starts_with("SID S-1-5-21-9 may not make admin"),
            "{e}"
        );
        assert!(
            decide_call(coll, health, 18, &ops).is_err(),
            "a uid never matches a SID list"
        );
    }

    #[test]
    fn heartbeats_events_and_control_topics_follow_the_binding() {
        let free = |_: &str| false;
        let beat = heartbeat_topic("p");
        assert!(decide(&beat, b"{}", None, Some("p"), free).is_ok());
        assert!(
            decide(&beat, b"{}", None, Some("q"), free).is_err(),
            "forged heartbeat"
        );
        assert!(decide(&beat, b"{}", None, None, free).is_err());
        let shutdown = br#"{"type":"shutdown"}"#;
        assert_eq!(
            decide(TOPIC_LIFECYCLE, shutdown, None, Some("p"), free),
            Err(Refused::ControlTopic(TOPIC_LIFECYCLE.into()))
        );
        let mine = ids(&["p"]);
        assert!(decide("events.process", &[], Some(&mine), Some("p"), free).is_ok());
        let forged = ids(&["p", "victim"]);
        assert!(decide("events.process", &[], Some(&forged), Some("p"), free).is_err());
        assert!(decide("events.process", &[], Some(&mine), None, free).is_err());
        assert!(decide("app.custom", b"x", None, None, free).is_ok());
    }
}
