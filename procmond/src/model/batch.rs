//! The batch: the unit that moves through the pipeline, the WAL, the bus and
//! the sinks. Events are encoded once, one after another into one buffer;
//! the WAL stores a batch under one key, the bus carries it in one frame with
//! one acknowledgement, and a sink stores it with one `fdatasync`. This is
//! what makes the per-event cost small: every fixed cost (a sled flush, a
//! socket write, a thread wake-up, an fsync) is paid per batch.
//!
//! Layout (all little-endian; offsets in the buffer are 16-byte aligned so
//! each event can be read in place):
//!
//! ```text
//! batch  := "PMB2" count:u32 first_seq:u64 layout:u16 flags:u16 0{12}  entry{count}
//! entry  := seq:u64 len:u32 kind:u8 0 0 0  event-bytes[len]  zero-pad to 16
//! ```
//!
//! Versioned, so that an upgrade with events still pending in the WAL loses
//! none: `layout` names the rkyv layout of the events (`EVENT_LAYOUT` is the
//! one this build writes), and `flags` says how the batch travels
//! (`UNPERSISTED`: sent from memory while the WAL could not store it).
//! [`Batch::parse`] also reads the previous format, `"PMB1" count first_seq`
//! (a 16-byte header, events in layout 1), and rewrites it to the current
//! header. A batch in an older event layout is converted event by event
//! (`upgrade_events`); a layout newer than this build knows is refused.
//! When `ProcessEvent`'s archived layout changes: bump `EVENT_LAYOUT`, keep
//! the previous struct frozen under `model::` as `ProcessEventV<n>`, and
//! convert from it in `upgrade_events`.
//!
//! A batch read from outside (a socket, the WAL) is untrusted: [`Batch::parse`]
//! checks the structure, and each event is validated (bytecheck) when it is
//! read; nothing here can panic or read out of bounds.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::codec::{DecodeError, EncodeError, EventBytes};
use super::{ArchivedProcessEvent, EventKind, ProcessEvent};

const MAGIC: &[u8; 4] = b"PMB2";
/// The format before versioning: a 16-byte header, events in layout 1.
const MAGIC_V1: &[u8; 4] = b"PMB1";
const HEADER_V1: usize = 16;
const HEADER: usize = 32;
/// The rkyv layout of `ProcessEvent` this build writes and reads in place.
pub const EVENT_LAYOUT: u16 = 2;
/// Flag: sent to the agent from memory, never stored in the WAL.
pub const UNPERSISTED: u16 = 1;
const LAYOUT_AT: usize = 16;
const FLAGS_AT: usize = 18;
const ENTRY_HEADER: usize = 16;
const ALIGN: usize = 16;

/// A batch closes at this many bytes (well under the bus's 1 MiB frame).
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// … or at this many events.
pub const MAX_BATCH_EVENTS: usize = 2048;

/// Bytes that are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid batch ({len} bytes): {reason}")]
pub struct BatchError {
    pub len: usize,
    pub reason: String,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Writes the current header at the start of `buf`.
fn write_header(buf: &mut [u8], count: u32, first_seq: u64, flags: u16) {
    buf[0..4].copy_from_slice(MAGIC);
    buf[4..8].copy_from_slice(&count.to_le_bytes());
    buf[8..16].copy_from_slice(&first_seq.to_le_bytes());
    buf[LAYOUT_AT..LAYOUT_AT + 2].copy_from_slice(&EVENT_LAYOUT.to_le_bytes());
    buf[FLAGS_AT..FLAGS_AT + 2].copy_from_slice(&flags.to_le_bytes());
    buf[20..HEADER].fill(0);
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Bytes in the current format: the previous format's header rewritten,
/// events in an older layout converted. Anything else is returned as is
/// (the caller's structure checks refuse it).
fn upgrade(bytes: AlignedVec) -> Result<AlignedVec, String> {
    if bytes.len() >= HEADER_V1 && &bytes[0..4] == MAGIC_V1 {
        let mut v2 = AlignedVec::with_capacity(bytes.len() + HEADER - HEADER_V1);
        v2.extend_from_slice(&[0u8; HEADER]);
        v2.extend_from_slice(&bytes[HEADER_V1..]);
        let count = u32_at(&bytes, 4).unwrap_or(0);
        let first_seq = u64_at(&bytes, 8).unwrap_or(0);
        write_header(&mut v2, count, first_seq, 0);
        return upgrade_events(1, v2);
    }
    match u16_at(&bytes, LAYOUT_AT) {
        Some(layout) if bytes.len() >= HEADER && &bytes[0..4] == MAGIC => {
            upgrade_events(layout, bytes)
        }
        _ => Ok(bytes),
    }
}

/// Converts a batch's events from `layout` to `EVENT_LAYOUT`: layout 1
/// (before process identity) is decoded entry by entry as the frozen
/// `v1::ProcessEventV1` and re-encoded; the fields it did not carry stay
/// unknown. A later layout adds its arm here.
fn upgrade_events(layout: u16, bytes: AlignedVec) -> Result<AlignedVec, String> {
    match layout {
        EVENT_LAYOUT => Ok(bytes),
        1 => upgrade_from_v1(&bytes),
        other => Err(format!(
            "event layout {other}: this build reads layout {EVENT_LAYOUT} and earlier"
        )),
    }
}

fn upgrade_from_v1(bytes: &[u8]) -> Result<AlignedVec, String> {
    let count = u32_at(bytes, 4).unwrap_or(0);
    let flags = u16_at(bytes, FLAGS_AT).unwrap_or(0);
    let mut out = BatchBuilder::new();
    let mut at = HEADER;
    for i in 0..count {
        let (len, _) = entry_header(bytes, at)
            .ok_or_else(|| format!("layout 1 entry {i} of {count}: header out of bounds"))?;
        let body = bytes
            .get(at + ENTRY_HEADER..at + ENTRY_HEADER + len)
            .ok_or_else(|| format!("layout 1 entry {i}: {len} bytes past the end"))?;
        let aligned = super::codec::aligned_copy(body);
        let old = rkyv::from_bytes::<super::v1::ProcessEventV1, rancor::Error>(&aligned)
            .map_err(|e| format!("layout 1 entry {i}: {e}"))?;
        out.push(&ProcessEvent::from(old))
            .map_err(|e| format!("layout 1 entry {i}: re-encoding: {e}"))?;
        at = (at + ENTRY_HEADER + len).next_multiple_of(ALIGN);
    }
    let mut batch = out.finish().bytes;
    let first_seq = u64_at(bytes, 8).unwrap_or(0);
    write_header(&mut batch, count, first_seq, flags);
    Ok(batch)
}

fn pad(buf: &mut AlignedVec) {
    let rem = buf.len() % ALIGN;
    if rem != 0 {
        buf.extend_from_slice(&[0u8; ALIGN][..ALIGN - rem]);
    }
}

/// Builds a batch, encoding each event straight into the batch's buffer.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: AlignedVec,
    count: u32,
    first_seq: u64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        let mut buf = AlignedVec::with_capacity(64 * 1024);
        buf.extend_from_slice(&[0u8; HEADER]);
        Self {
            buf,
            count: 0,
            first_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// True once the batch should be closed and sent.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= MAX_BATCH_BYTES || self.len() >= MAX_BATCH_EVENTS
    }

    /// Appends `event` (its `seq` must be set). On failure the batch is
    /// unchanged.
    pub fn push(&mut self, event: &ProcessEvent) -> Result<(), EncodeError> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&event.seq.to_le_bytes());
        self.buf.extend_from_slice(&[0u8; 4]); // len, filled in below
        self.buf.extend_from_slice(&[event.kind.as_u8(), 0, 0, 0]);
        let body = self.buf.len();
        if let Err(e) = rkyv::api::high::to_bytes_in::<_, rancor::Error>(event, &mut self.buf) {
            self.buf.resize(start, 0);
            return Err(EncodeError::new(e.to_string()));
        }
        let len = (self.buf.len() - body) as u32;
        self.buf[start + 8..start + 12].copy_from_slice(&len.to_le_bytes());
        pad(&mut self.buf);
        if self.count == 0 {
            self.first_seq = event.seq;
        }
        self.count += 1;
        Ok(())
    }

    /// Closes the batch; the builder starts over empty.
    pub fn finish(&mut self) -> Batch {
        let mut buf = std::mem::replace(&mut self.buf, AlignedVec::with_capacity(64 * 1024));
        self.buf.extend_from_slice(&[0u8; HEADER]);
        write_header(&mut buf, self.count, self.first_seq, 0);
        let batch = Batch {
            bytes: buf,
            count: self.count,
            first_seq: self.first_seq,
        };
        self.count = 0;
        self.first_seq = 0;
        batch
    }
}

/// One event's place in a batch.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub seq: u64,
    pub kind: EventKind,
    pub bytes: &'a [u8],
}

impl<'a> Entry<'a> {
    /// Validates the event (bytecheck) and reads it in place.
    pub fn event(&self) -> Result<&'a ArchivedProcessEvent, DecodeError> {
        super::codec::access(self.bytes)
    }

    /// Validates the event and builds an owned copy.
    pub fn decode(&self) -> Result<ProcessEvent, DecodeError> {
        super::codec::decode(self.bytes)
    }
}

/// A structurally valid batch.
#[derive(Debug, Clone)]
pub struct Batch {
    bytes: AlignedVec,
    count: u32,
    first_seq: u64,
}

impl Batch {
    /// Checks the header and every entry's bounds (not the events themselves:
    /// [`Entry::event`] validates each one where it is read).
    /// A batch of the previous format (or an older event layout) comes back
    /// in the current one.
    pub fn parse(bytes: AlignedVec) -> Result<Self, BatchError> {
        let len = bytes.len();
        let bytes = upgrade(bytes).map_err(|reason| BatchError { len, reason })?;
        let fail = |reason: String| BatchError {
            len: bytes.len(),
            reason,
        };
        if bytes.len() < HEADER || &bytes[0..4] != MAGIC {
            return Err(fail("no batch header".into()));
        }
        let count = u32_at(&bytes, 4).unwrap_or(0);
        let first_seq = u64_at(&bytes, 8).unwrap_or(0);
        let mut at = HEADER;
        for i in 0..count {
            let (len, kind) = entry_header(&bytes, at)
                .ok_or_else(|| fail(format!("entry {i} of {count}: header out of bounds")))?;
            EventKind::from_u8(kind)
                .ok_or_else(|| fail(format!("entry {i}: unknown kind {kind}")))?;
            let end = (at + ENTRY_HEADER)
                .checked_add(len)
                .filter(|end| *end <= bytes.len())
                .ok_or_else(|| fail(format!("entry {i}: {len} bytes past the end")))?;
            at = end.next_multiple_of(ALIGN);
        }
        if at != bytes.len() {
            return Err(fail(format!(
                "{} trailing bytes after {count} entries",
                bytes.len().saturating_sub(at)
            )));
        }
        Ok(Self {
            bytes,
            count,
            first_seq,
        })
    }

    /// Copies bytes of any alignment, then parses them.
    pub fn parse_slice(bytes: &[u8]) -> Result<Self, BatchError> {
        Self::parse(super::codec::aligned_copy(bytes))
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The sequence number of the first event (the batch's key and ack id).
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The header's flags (`UNPERSISTED`).
    pub fn flags(&self) -> u16 {
        u16_at(&self.bytes, FLAGS_AT).unwrap_or(0)
    }

    /// True when the batch was sent from memory, never stored in the WAL.
    pub fn is_unpersisted(&self) -> bool {
        self.flags() & UNPERSISTED != 0
    }

    /// Flags the batch as sent without being stored.
    pub fn mark_unpersisted(&mut self) {
        self.set_flags(self.flags() | UNPERSISTED);
    }

    /// Clears `UNPERSISTED` (the batch is being stored).
    pub fn mark_persisted(&mut self) {
        self.set_flags(self.flags() & !UNPERSISTED);
    }

    fn set_flags(&mut self, flags: u16) {
        if let Some(at) = self.bytes.get_mut(FLAGS_AT..FLAGS_AT + 2) {
            at.copy_from_slice(&flags.to_le_bytes());
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> EventBytes {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = Entry<'_>> {
        let mut at = HEADER;
        let b = &self.bytes;
        (0..self.count).filter_map(move |_| {
            let (len, kind) = entry_header(b, at)?;
            let seq = u64_at(b, at)?;
            let body = at + ENTRY_HEADER;
            at = (body + len).next_multiple_of(ALIGN);
            Some(Entry {
                seq,
                kind: EventKind::from_u8(kind)?,
                bytes: b.get(body..body + len)?,
            })
        })
    }

    /// A bit per `EventKind` present in the batch.
    pub fn kinds(&self) -> u8 {
        self.iter().fold(0, |m, e| m | (1 << e.kind.as_u8()))
    }

    /// A batch of the entries `keep` accepts, copied as they are (no
    /// re-encoding); `None` when none is kept.
    pub fn filter(&self, mut keep: impl FnMut(&Entry<'_>) -> bool) -> Option<Batch> {
        let mut buf = AlignedVec::with_capacity(self.bytes.len());
        buf.extend_from_slice(&[0u8; HEADER]);
        let (mut count, mut first_seq) = (0u32, 0u64);
        for e in self.iter() {
            if !keep(&e) {
                continue;
            }
            if count == 0 {
                first_seq = e.seq;
            }
            count += 1;
            buf.extend_from_slice(&e.seq.to_le_bytes());
            buf.extend_from_slice(&(e.bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(&[e.kind.as_u8(), 0, 0, 0]);
            buf.extend_from_slice(e.bytes);
            pad(&mut buf);
        }
        if count == 0 {
            return None;
        }
        write_header(&mut buf, count, first_seq, self.flags());
        Some(Batch {
            bytes: buf,
            count,
            first_seq,
        })
    }

    /// Validates every event; returns the batch of the valid ones (`None`
    /// if none is) and how many were not.
    pub fn validated(self) -> (Option<Batch>, usize) {
        self.validated_visit(|_| {})
    }

    /// Like `validated`, calling `visit` on each valid event as it is
    /// checked, so a caller reads what it needs in the same pass.
    pub fn validated_visit(
        self,
        mut visit: impl FnMut(&ArchivedProcessEvent),
    ) -> (Option<Batch>, usize) {
        let mut invalid = 0;
        for e in self.iter() {
            match checked(&e) {
                Some(ev) => visit(ev),
                None => invalid += 1,
            }
        }
        if invalid == 0 {
            return ((!self.is_empty()).then_some(self), 0);
        }
        (self.filter(|e| checked(e).is_some()), invalid)
    }
}

/// The event, if it validates and agrees with its entry header.
fn checked<'a>(e: &Entry<'a>) -> Option<&'a ArchivedProcessEvent> {
    e.event()
        .ok()
        .filter(|ev| ev.seq.to_native() == e.seq && ev.kind.to_native() == e.kind)
}

/// `(len, kind)` of the entry at `at`, if its header is in bounds.
fn entry_header(b: &[u8], at: usize) -> Option<(usize, u8)> {
    let len = u32_at(b, at + 8)? as usize;
    let kind = *b.get(at + 12)?;
    Some((len, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventSource;

    fn event(seq: u64, kind: EventKind) -> ProcessEvent {
        let mut e = ProcessEvent::new(kind, EventSource::Ebpf, 1, seq as u32);
        e.seq = seq;
        e.name = "n\u{1b}".into();
        e.argv = vec!["a".repeat(seq as usize % 40)];
        e
    }

    fn batch(seqs: impl IntoIterator<Item = (u64, EventKind)>) -> Batch {
        let mut b = BatchBuilder::new();
        for (s, k) in seqs {
            b.push(&event(s, k)).expect("encodes");
        }
        b.finish()
    }

    #[test]
    fn round_trips_and_reads_each_event_in_place() {
        let b = batch((5..15).map(|s| (s, EventKind::Exec)));
        assert_eq!((b.len(), b.first_seq()), (10, 5));
        let parsed = Batch::parse_slice(b.as_bytes()).expect("valid");
        let seqs: Vec<u64> = parsed.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (5..15).collect::<Vec<_>>());
        for e in parsed.iter() {
            assert_eq!(e.decode().expect("valid"), event(e.seq, EventKind::Exec));
        }
        let (valid, invalid) = parsed.clone().validated();
        assert_eq!(invalid, 0);
        assert_eq!(valid.expect("all").as_bytes(), parsed.as_bytes());
    }

    #[test]
    fn filter_keeps_matching_entries_without_reencoding() {
        let b = batch([
            (1, EventKind::Exec),
            (2, EventKind::Exit),
            (3, EventKind::Exec),
        ]);
        assert_eq!(
            b.kinds(),
            1 << EventKind::Exec.as_u8() | 1 << EventKind::Exit.as_u8()
        );
        let only_exit = b.filter(|e| e.kind == EventKind::Exit).expect("one");
        assert_eq!((only_exit.len(), only_exit.first_seq()), (1, 2));
        let e = only_exit
            .iter()
            .next()
            .expect("entry")
            .decode()
            .expect("valid");
        assert_eq!(e, event(2, EventKind::Exit));
        assert!(b.filter(|e| e.kind == EventKind::Fork).is_none());
    }

    #[test]
    fn refuses_bad_structure_and_filters_bad_events() {
        let b = batch([(1, EventKind::Exec), (2, EventKind::Exit)]);
        let bytes = b.as_bytes().to_vec();
        assert!(Batch::parse_slice(&bytes[..bytes.len() - 20]).is_err());
        assert!(Batch::parse_slice(b"PMB1").is_err());
        let mut wrong_count = bytes.clone();
        wrong_count[4] = 9;
        assert!(Batch::parse_slice(&wrong_count).is_err());
        // Garble the first event's body: structure holds, validation drops it.
        let mut garbled = bytes.clone();
        for byte in &mut garbled[HEADER + ENTRY_HEADER..HEADER + ENTRY_HEADER + 24] {
            *byte = 0xff;
        }
        let parsed = Batch::parse_slice(&garbled).expect("structure is fine");
        let (valid, invalid) = parsed.validated();
        assert_eq!(invalid, 1);
        let valid = valid.expect("one left");
        assert_eq!(valid.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        // A header that lies about the event's seq is refused too.
        let mut lying = bytes;
        lying[HEADER] = 77;
        assert_eq!(
            Batch::parse_slice(&lying).expect("structure").validated().1,
            1
        );
    }

    /// `b` in the format before versioning: a 16-byte "PMB1" header and
    /// its events in layout 1.
    fn as_previous_format(b: &Batch) -> Vec<u8> {
        let mut v1 = AlignedVec::<16>::new();
        v1.extend_from_slice(b"PMB1");
        v1.extend_from_slice(&(b.len() as u32).to_le_bytes());
        v1.extend_from_slice(&b.first_seq().to_le_bytes());
        for e in b.iter() {
            let e = e.decode().expect("valid");
            let (seq, kind) = (e.seq, e.kind);
            let old = crate::model::v1::ProcessEventV1::from(e);
            let bytes = rkyv::to_bytes::<rancor::Error>(&old).expect("encodes");
            v1.extend_from_slice(&seq.to_le_bytes());
            v1.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            v1.extend_from_slice(&[kind.as_u8(), 0, 0, 0]);
            v1.extend_from_slice(&bytes);
            pad(&mut v1);
        }
        v1.to_vec()
    }

    #[test]
    fn the_previous_format_is_read_and_rewritten_as_the_current_one() {
        let b = batch([(7, EventKind::Exec), (8, EventKind::Exit)]);
        assert_eq!(&b.as_bytes()[..4], b"PMB2");
        let old = Batch::parse_slice(&as_previous_format(&b)).expect("previous format");
        assert_eq!(
            old.as_bytes(),
            b.as_bytes(),
            "rewritten to the current header"
        );
        let (valid, invalid) = old.validated();
        assert_eq!((valid.map(|v| v.len()), invalid), (Some(2), 0));
        // A layout newer than this build is refused, not misread.
        let mut newer = b.as_bytes().to_vec();
        newer[LAYOUT_AT..LAYOUT_AT + 2].copy_from_slice(&(EVENT_LAYOUT + 1).to_le_bytes());
        let err = Batch::parse_slice(&newer).expect_err("newer layout");
        assert!(err.reason.contains("event layout"), "{err}");
    }

    #[test]
    fn the_unpersisted_flag_travels_with_the_batch() {
        let mut b = batch([(1, EventKind::Exec), (2, EventKind::Exit)]);
        assert!(!b.is_unpersisted());
        b.mark_unpersisted();
        let parsed = Batch::parse_slice(b.as_bytes()).expect("valid");
        assert!(parsed.is_unpersisted());
        let filtered = parsed.filter(|e| e.kind == EventKind::Exit).expect("one");
        assert!(filtered.is_unpersisted(), "a subscriber's copy keeps it");
        b.mark_persisted();
        assert!(
            !Batch::parse_slice(b.as_bytes())
                .expect("valid")
                .is_unpersisted()
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut bytes = b"PMB1".to_vec();
            bytes.extend_from_slice(&data);
            if let Ok(b) = Batch::parse_slice(&bytes) {
                let _ = b.kinds();
                let _ = b.validated();
            }
        }
    }
}
