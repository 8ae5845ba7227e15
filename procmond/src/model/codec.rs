//! rkyv encoding of events: done once, then the same bytes travel everywhere.
//!
//! Bytes that come back in (from the WAL, a socket, a subscriber's buffer) are
//! untrusted: `access` validates them with bytecheck before anything reads
//! them in place, and a failure names what was wrong instead of panicking.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::model::{ArchivedProcessEvent, ProcessEvent};

/// An event's canonical encoding.
pub type EventBytes = AlignedVec;

/// Bytes that are not a valid encoded `ProcessEvent`.
#[derive(Debug, thiserror::Error)]
#[error("invalid event encoding ({len} bytes): {reason}")]
pub struct DecodeError {
    pub len: usize,
    pub reason: String,
}

/// Encoding failed (it only can on allocation failure).
#[derive(Debug, thiserror::Error)]
#[error("could not encode event: {0}")]
pub struct EncodeError(String);

impl EncodeError {
    pub(crate) fn new(reason: String) -> Self {
        Self(reason)
    }
}

pub fn encode(event: &ProcessEvent) -> Result<EventBytes, EncodeError> {
    rkyv::to_bytes::<rancor::Error>(event).map_err(|e| EncodeError(e.to_string()))
}

/// Validates `bytes` and returns the archived event, read in place. The slice
/// must be aligned as rkyv writes it (an `EventBytes` is); use
/// [`aligned_copy`] for bytes of unknown alignment.
pub fn access(bytes: &[u8]) -> Result<&ArchivedProcessEvent, DecodeError> {
    rkyv::access::<ArchivedProcessEvent, rancor::Error>(bytes).map_err(|e| DecodeError {
        len: bytes.len(),
        reason: e.to_string(),
    })
}

/// Validates `bytes` and builds an owned event (for JSON rendering).
pub fn decode(bytes: &[u8]) -> Result<ProcessEvent, DecodeError> {
    rkyv::from_bytes::<ProcessEvent, rancor::Error>(bytes).map_err(|e| DecodeError {
        len: bytes.len(),
        reason: e.to_string(),
    })
}

/// Copies bytes of unknown alignment (from a socket or file) into an aligned buffer.
pub fn aligned_copy(bytes: &[u8]) -> EventBytes {
    let mut v = AlignedVec::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, EventSource};

    fn sample() -> ProcessEvent {
        let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Ebpf, 1, 7);
        e.name = "bad\nname\u{1b}[31m".into();
        e.argv = vec!["a".into(), "\u{fffd}".into()];
        e
    }

    #[test]
    fn round_trips_and_reads_in_place() {
        let bytes = encode(&sample()).expect("encodes");
        assert_eq!(access(&bytes).expect("valid").pid, 7);
        assert_eq!(decode(&bytes).expect("valid"), sample());
    }

    #[test]
    fn rejects_garbage_and_truncation_without_panicking() {
        let bytes = encode(&sample()).expect("encodes");
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        let mut corrupt = bytes.clone();
        corrupt.iter_mut().for_each(|b| *b = 0xff);
        assert!(access(&corrupt).is_err());
        assert!(decode(&aligned_copy(&[0xff; 3])).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&aligned_copy(&data));
        }
    }
}
