//! The event bus wire protocol.
//!
//! A connection carries length-delimited frames (u32 big-endian length,
//! `MAX_FRAME_BYTES` at most, enforced before anything is buffered). Each
//! frame is one rkyv-encoded `Envelope`: what it is, its topic, a
//! correlation id, a deadline, a status and an opaque payload — for
//! `events.process.*` the event's own rkyv bytes, carried as-is. Every frame
//! is validated before use; an invalid one names what was wrong.

use bytes::Bytes;
use rkyv::rancor;
use tokio_util::codec::LengthDelimitedCodec;

use crate::model::EventKind;
use crate::model::batch::{Batch, BatchBuilder};
use crate::model::codec;

/// Largest frame accepted or sent (docs/reference.md §4 default).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum FrameKind {
    /// Client → broker: deliver `payload` to subscribers of `topic`; acked.
    Publish,
    /// Broker → client: the publish or subscribe with this correlation id is done.
    Ack,
    /// Client → broker: receive frames whose topic matches `topic` (wildcards).
    Subscribe,
    /// Broker → subscriber: a published payload.
    Deliver,
    /// RPC request to whoever serves `topic`; answered by one `Response`.
    Request,
    /// RPC response, matched by correlation id.
    Response,
    /// Broker → client: the frame with this correlation id was refused.
    Error,
}

/// RPC status codes (docs/reference.md §4).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Status {
    Ok,
    InvalidRequest,
    Timeout,
    Busy,
    Unavailable,
    Internal,
}

/// One frame's content.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Envelope {
    pub kind: FrameKind,
    pub topic: String,
    pub correlation_id: u64,
    /// RPC deadline, Unix ms; 0 when none.
    pub deadline_unix_ms: u64,
    pub status: Status,
    pub payload: Vec<u8>,
}

impl Envelope {
    pub fn new(
        kind: FrameKind,
        topic: impl Into<String>,
        correlation_id: u64,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            kind,
            topic: topic.into(),
            correlation_id,
            deadline_unix_ms: 0,
            status: Status::Ok,
            payload,
        }
    }

    pub fn ack(correlation_id: u64) -> Self {
        Self::new(FrameKind::Ack, "", correlation_id, Vec::new())
    }

    pub fn error(correlation_id: u64, status: Status, reason: &str) -> Self {
        let mut e = Self::new(
            FrameKind::Error,
            "",
            correlation_id,
            reason.as_bytes().to_vec(),
        );
        e.status = status;
        e
    }

    pub fn response(correlation_id: u64, status: Status, payload: Vec<u8>) -> Self {
        let mut e = Self::new(FrameKind::Response, "", correlation_id, payload);
        e.status = status;
        e
    }
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("framing: {0}")]
    Framing(#[from] std::io::Error),
    #[error("invalid envelope ({len} bytes): {reason}")]
    Envelope { len: usize, reason: String },
    #[error("invalid topic {topic:?}: {reason}")]
    Topic { topic: String, reason: &'static str },
    #[error("invalid event payload on {topic}: {reason}")]
    Payload { topic: String, reason: String },
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
}

/// The framing codec, with the size limit.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .length_field_type::<u32>()
        .new_codec()
}

pub fn encode(envelope: &Envelope) -> Result<Bytes, ProtocolError> {
    let bytes = rkyv::to_bytes::<rancor::Error>(envelope).map_err(|e| ProtocolError::Envelope {
        len: 0,
        reason: e.to_string(),
    })?;
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge(bytes.len()));
    }
    Ok(Bytes::from(bytes.into_vec()))
}

/// Validates and decodes one frame (bytes of any alignment).
pub fn decode(frame: &[u8]) -> Result<Envelope, ProtocolError> {
    let aligned = codec::aligned_copy(frame);
    rkyv::from_bytes::<Envelope, rancor::Error>(&aligned).map_err(|e| ProtocolError::Envelope {
        len: frame.len(),
        reason: e.to_string(),
    })
}

/// Process events of one publish, validated, with the collector ids they
/// name (read in the validating pass, for `bus/authz.rs`).
#[derive(Debug)]
pub struct Published {
    pub batch: Batch,
    pub collectors: Vec<String>,
}

/// Checks a publish: a concrete topic, and for process events a payload
/// whose every event is valid. Process events come back as a batch: a batch
/// published on `events.process` as it is, a single event published on
/// `events.process.<kind>` wrapped in a batch of one.
pub fn validate_publish(envelope: &Envelope) -> Result<Option<Published>, ProtocolError> {
    validate_topic(&envelope.topic, false)?;
    let fail = |reason: String| ProtocolError::Payload {
        topic: envelope.topic.clone(),
        reason,
    };
    if envelope.topic == TOPIC_EVENT_BATCH {
        let batch = Batch::parse_slice(&envelope.payload).map_err(|e| fail(e.to_string()))?;
        let total = batch.len();
        let mut collectors: Vec<String> = Vec::new();
        let (valid, invalid) = batch.validated_visit(|ev| {
            if !collectors.iter().any(|c| c == ev.collector_id.as_str()) {
                collectors.push(ev.collector_id.to_string());
            }
        });
        return match valid {
            Some(batch) if invalid == 0 => Ok(Some(Published { batch, collectors })),
            _ => Err(fail(format!(
                "{invalid} of {total} events in the batch are invalid"
            ))),
        };
    }
    if let Some(kind) = envelope.topic.strip_prefix("events.process.") {
        let event = codec::decode(&codec::aligned_copy(&envelope.payload))
            .map_err(|e| fail(e.to_string()))?;
        if event.kind.as_str() != kind {
            return Err(fail(format!(
                "a {} event published on the {kind} topic",
                event.kind.as_str()
            )));
        }
        let mut one = BatchBuilder::new();
        one.push(&event).map_err(|e| fail(e.to_string()))?;
        return Ok(Some(Published {
            batch: one.finish(),
            collectors: vec![event.collector_id],
        }));
    }
    Ok(None)
}

/// A topic is dot-separated non-empty segments of `[A-Za-z0-9_-]`; a
/// pattern may also use `+` (one segment) and a final `#` (the rest).
pub fn validate_topic(topic: &str, pattern: bool) -> Result<(), ProtocolError> {
    let fail = |reason| {
        Err(ProtocolError::Topic {
            topic: topic.chars().take(200).collect(),
            reason,
        })
    };
    if topic.is_empty() || topic.len() > 255 {
        return fail("must be 1-255 bytes");
    }
    let segments: Vec<&str> = topic.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "+" if pattern => {}
            "#" if pattern && i == segments.len() - 1 => {}
            "+" | "#" => {
                return fail("wildcards are only allowed in subscriptions, and # only last");
            }
            "" => return fail("empty segment"),
            s if !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                return fail("segments are [A-Za-z0-9_-]");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `topic` matches `pattern` (`+` one segment, `#` the rest).
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `events.process.<kind>`.
pub fn event_topic(kind: EventKind) -> String {
    format!("events.process.{}", kind.as_str())
}

pub const TOPIC_EVENTS: &str = "events.process.#";
/// Where collectors publish batches, and the topic of every delivery of
/// process events: a subscriber to `events.process.<kind>` patterns gets
/// batches holding only the kinds its pattern matches.
pub const TOPIC_EVENT_BATCH: &str = "events.process";
pub const TOPIC_LIFECYCLE: &str = "control.collector.lifecycle";
pub const TOPIC_REGISTRATION: &str = "control.collector.registration";
/// RPC topic the agent itself answers (its own health).
pub const TOPIC_AGENT: &str = "control.agent";

/// An id that is also a bus topic segment: 1–64 of `[A-Za-z0-9_-]`.
pub fn is_topic_segment(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// RPC topic of one collector.
pub fn control_topic(collector_id: &str) -> String {
    format!("control.collector.{collector_id}")
}

/// Heartbeat topic of one collector.
pub fn heartbeat_topic(collector_id: &str) -> String {
    format!("control.health.heartbeat.{collector_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_specified() {
        assert!(topic_matches("events.process.#", "events.process.exec"));
        assert!(topic_matches("events.+.exec", "events.process.exec"));
        assert!(!topic_matches("events.+.exec", "events.process.exit"));
        assert!(topic_matches("#", "a.b.c"));
        assert!(!topic_matches("events.process", "events.process.exec"));
        assert!(!topic_matches(
            "events.process.exec.x",
            "events.process.exec"
        ));
        assert!(topic_matches(
            "control.health.heartbeat.+",
            "control.health.heartbeat.procmond"
        ));
    }

    #[test]
    fn topics_are_validated() {
        assert!(validate_topic("events.process.exec", false).is_ok());
        assert!(validate_topic("events.#", true).is_ok());
        assert!(validate_topic("events.#", false).is_err());
        assert!(validate_topic("a.#.b", true).is_err());
        assert!(validate_topic("a..b", true).is_err());
        assert!(validate_topic("a.b\n", true).is_err());
    }

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let e = Envelope::new(FrameKind::Publish, "events.process.exec", 7, vec![1, 2, 3]);
        let bytes = encode(&e).expect("encodes");
        assert_eq!(decode(&bytes).expect("valid"), e);
        // Misaligned input is fine: it is copied before validation.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode(&shifted[1..]).expect("valid"), e);
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode(b"garbage!").is_err());
        assert!(validate_publish(&e).is_err(), "payload is not an event");
    }
}
