//! Who may publish what on the agent's bus.
//!
//! Admission (the peer's uid) says who may connect; this says what an
//! admitted peer may write. A collector identity belongs to the connection
//! that registered it, for as long as that connection lives:
//!
//! * `control.collector.registration`: `register` binds the connection to a
//!   collector id, and only with the credential the agent issued for that
//!   id when its launcher started the collector (`Credentials`): a peer
//!   that did not get it from the launcher cannot claim any id. A valid
//!   credential for an id another connection still holds takes the id over
//!   (that connection is a stale instance of the same collector: the
//!   launcher runs one at a time). `ready` and `deregister` only for the id
//!   the connection holds; one id per connection.
//! * `control.health.heartbeat.<id>`: only from the connection holding
//!   `<id>`, and only a heartbeat that names `<id>` itself.
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

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::bus::peer::{PeerId, SID_LOCAL_SYSTEM};
use crate::bus::protocol::{TOPIC_AGENT, TOPIC_REGISTRATION, heartbeat_topic};
use crate::bus::rpc::{Heartbeat, Registration, Request};

/// What a publish does to the connection's binding, when it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Nothing changes.
    Publish,
    /// The connection now holds this collector id.
    Bind(String),
    /// The connection gives its collector id up.
    Unbind,
    /// The connection now holds this collector id, taken from the stale
    /// connection that held it.
    Takeover(String),
}

/// What the broker knows of a collector id a connection registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Another live connection holds the id.
    pub held_elsewhere: bool,
    /// The registration carries the credential issued for the id.
    pub credential_ok: bool,
}

/// Why a publish was refused (logged and counted by the broker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("control topic {0} is written by the agent only")]
    ControlTopic(String),
    #[error("not a registration message: {0}")]
    BadRegistration(String),
    #[error("not a heartbeat: {0}")]
    BadHeartbeat(String),
    #[error(
        "collector id {0:?}: no valid credential (only collectors the agent's launcher started may register)"
    )]
    Credential(String),
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

/// Environment variable through which the launcher hands a collector the
/// credential it registers with (`procmond run` reads it).
pub const CREDENTIAL_ENV: &str = "PROCMOND_COLLECTOR_CREDENTIAL";

/// The registration credentials the agent issued, one per collector id:
/// a fresh random token each time the launcher starts that collector, so a
/// token outlives neither its process nor the next start.
#[derive(Debug, Default)]
pub struct Credentials {
    issued: Mutex<HashMap<String, String>>,
}

impl Credentials {
    /// A new credential for `id`, replacing the one issued before.
    pub fn issue(&self, id: &str) -> std::io::Result<String> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.lock().insert(id.to_string(), token.clone());
        Ok(token)
    }

    /// Whether `presented` is the credential issued for `id`.
    pub fn check(&self, id: &str, presented: Option<&str>) -> bool {
        let issued = self.lock();
        match (issued.get(id), presented) {
            (Some(expected), Some(given)) => same_secret(expected.as_bytes(), given.as_bytes()),
            _ => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A map of strings cannot be left half-updated by a panic.
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Compares two secrets in time that depends on their length only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
/// `collectors` are the ids a process-event publish names; `claim(id,
/// credential)` tells what the broker knows of an id being registered.
pub fn decide(
    topic: &str,
    payload: &[u8],
    collectors: Option<&[String]>,
    held: Option<&str>,
    claim: impl Fn(&str, Option<&str>) -> Claim,
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
            Registration::Register {
                collector_id,
                credential,
                ..
            } => {
                if !crate::bus::protocol::is_topic_segment(&collector_id) {
                    return Err(Refused::BadRegistration(
                        "collector_id must be 1-64 of [A-Za-z0-9_-]".into(),
                    ));
                }
                match held {
                    Some(h) if h == collector_id => Ok(Allowed::Publish),
                    Some(_) => Err(not_yours(&collector_id)),
                    None => {
                        let c = claim(&collector_id, credential.as_deref());
                        if !c.credential_ok {
                            Err(Refused::Credential(collector_id))
                        } else if c.held_elsewhere {
                            Ok(Allowed::Takeover(collector_id))
                        } else {
                            Ok(Allowed::Bind(collector_id))
                        }
                    }
                }
            }
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
        if held.is_none_or(|h| heartbeat_topic(h) != topic) {
            return Err(not_yours(id));
        }
        // The payload must name the topic's collector too: the agent reads
        // the id from the topic, and nothing else may disagree with it.
        return match serde_json::from_slice::<Heartbeat>(payload) {
            Ok(beat) if beat.collector_id == id => Ok(Allowed::Publish),
            Ok(beat) => Err(not_yours(&beat.collector_id)),
            Err(e) => Err(Refused::BadHeartbeat(e.to_string())),
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

    /// Nobody else holds the id; the credential is good.
    fn free(_: &str, _: Option<&str>) -> Claim {
        Claim {
            held_elsewhere: false,
            credential_ok: true,
        }
    }

    #[test]
    fn registration_needs_the_issued_credential_and_takes_stale_ids_over() {
        let creds = Credentials::default();
        let token = creds.issue("p").expect("random");
        let with = |t: &str| register(&format!(r#"p","credential":"{t}"#));
        let creds = &creds;
        let claim = |held_elsewhere| {
            move |id: &str, c: Option<&str>| Claim {
                held_elsewhere,
                credential_ok: creds.check(id, c),
            }
        };
        assert_eq!(
            decide(TOPIC_REGISTRATION, &with(&token), None, None, claim(false)),
            Ok(Allowed::Bind("p".into()))
        );
        assert_eq!(
            decide(TOPIC_REGISTRATION, &with(&token), None, None, claim(true)),
            Ok(Allowed::Takeover("p".into()))
        );
        let wrong = "0".repeat(token.len());
        for bad in [register("p"), with(&wrong), with("short")] {
            assert_eq!(
                decide(TOPIC_REGISTRATION, &bad, None, None, claim(true)),
                Err(Refused::Credential("p".into()))
            );
        }
        // A new start's credential replaces the old one.
        let newer = creds.issue("p").expect("random");
        assert!(!creds.check("p", Some(&token)));
        assert!(creds.check("p", Some(&newer)));
        assert!(!creds.check("q", Some(&newer)), "issued for p only");
        // An id that would forge log lines or topics is refused outright.
        let forged = register("p\n2026-01-01 INFO collector ready");
        assert!(matches!(
            decide(TOPIC_REGISTRATION, &forged, None, None, free),
            Err(Refused::BadRegistration(_))
        ));
    }

    #[test]
    fn registration_binds_once() {
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
        let beat = heartbeat_topic("p");
        let payload = |id: &str| {
            format!(r#"{{"collector_id":"{id}","sequence":1,"status":"healthy","timestamp":"t","metrics":{{}}}}"#)
                .into_bytes()
        };
        assert!(decide(&beat, &payload("p"), None, Some("p"), free).is_ok());
        assert!(
            decide(&beat, &payload("p"), None, Some("q"), free).is_err(),
            "forged heartbeat"
        );
        assert!(decide(&beat, &payload("p"), None, None, free).is_err());
        assert_eq!(
            decide(&beat, &payload("victim"), None, Some("p"), free),
            Err(Refused::NotYours {
                held: Some("p".into()),
                claimed: "victim".into()
            }),
            "a heartbeat on its own topic naming another collector"
        );
        assert!(decide(&beat, b"{}", None, Some("p"), free).is_err());
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
