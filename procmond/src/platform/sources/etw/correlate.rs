//! Joins the two ETW providers into one event per process start or stop.
//!
//! Microsoft-Windows-Kernel-Process ("modern") has the image path, the
//! create and exit times, the exit code and sequence numbers, but no
//! command line in any version; the classic kernel provider has the
//! command line and the user SID. They run in two sessions with their own
//! buffers, so either side may come first, late (a buffer flush, ~1 s), or
//! never (a side's session lost it — counted in `kernel_lost`).
//!
//! Matching: a start pairs with the other side's start of the same pid
//! whose parent agrees and whose time is within `tolerance` (modern
//! CreateTime against the classic event's timestamp); a stop pairs by pid
//! and time (modern ExitTime). Events leave in the order their first side
//! arrived, each once complete — or, when the other side has not come
//! within `hold`, alone:
//! * modern only: exe, times, exit code — no `argv`, no `user_sid`;
//! * classic only: the short image name, `argv`, `user_sid`, the event's
//!   time as `start_time` (the create time is the modern side's) — no `exe`.
//!
//! When only one session runs, nothing waits for the other side: every
//! event is complete as it arrives.
//!
//! Order: each session's per-processor buffers flush on their own, so
//! events reach the callbacks out of time order by up to the flush window
//! (1 s). A joined event therefore waits `reorder_ns` after its first side
//! arrived in a second stage (`held`), which lets events out by event time;
//! a stop leaves after its process's start — held up to `hold_ns` when the
//! start has not been seen and the process began after the first event
//! this correlator saw. Pure and clock-free: callers pass a monotonic `now`
//! in ns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use super::decode::{Classic, KpStart, KpStop, file_name, split_command_line, whole_seconds};
use super::identity::Identities;
use super::ntpath::DeviceMap;
use crate::model::{EventKind, EventSource, ProcessEvent};

/// Most events waiting for their other side; beyond it the oldest leave
/// incomplete (a storm must not grow memory without bound).
pub const MAX_PENDING: usize = 65_536;

#[derive(Debug, Clone, Copy)]
pub struct CorrelateConfig {
    /// How long a side waits for the other, ns.
    pub hold_ns: u64,
    /// Largest time difference between the two sides of one process, ns.
    pub tolerance_ns: i64,
    /// How long a joined event waits for earlier ones from other CPUs'
    /// buffers, ns (above the sessions' 1 s flush timer); 0 lets events
    /// out in arrival order.
    pub reorder_ns: u64,
    /// Which sessions run.
    pub modern: bool,
    pub classic: bool,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        Self {
            hold_ns: 3_000_000_000,
            tolerance_ns: 2_000_000_000,
            reorder_ns: 1_500_000_000,
            modern: true,
            classic: true,
        }
    }
}

/// How the events left (reported when the source stops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorrelateStats {
    pub matched: u64,
    pub modern_only: u64,
    pub classic_only: u64,
    /// Left early because `MAX_PENDING` was reached.
    pub forced: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Start,
    Stop,
}

#[derive(Debug)]
enum Modern {
    Start(KpStart),
    Stop(KpStop),
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    pid: u32,
    modern: Option<Modern>,
    classic: Option<Classic>,
    /// When its first side arrived (`now`).
    arrived: u64,
    deadline: u64,
}

/// A joined event in the reorder stage.
#[derive(Debug)]
struct Held {
    event: ProcessEvent,
    release: u64,
}

/// Most pids remembered as started (a stop's start was seen); beyond it
/// the set restarts, and a stop may wait its hold for nothing.
const MAX_STARTED: usize = 1 << 20;

/// The join, with its queue of events waiting for their other side.
#[derive(Debug)]
pub struct Correlator {
    config: CorrelateConfig,
    devices: DeviceMap,
    queue: VecDeque<Entry>,
    /// Id of `queue[0]`; ids grow by one per entry.
    head_id: u64,
    /// Incomplete entries by (kind, pid).
    open: HashMap<(Kind, u32), Vec<u64>>,
    /// Names the processes (`identity`); `None` leaves ids out.
    ids: Option<Identities>,
    /// Joined events by (event time, id), until `release`.
    held: BTreeMap<(i64, u64), Held>,
    /// Ids in `held` (a barrier waits for the smallest).
    held_ids: BTreeSet<u64>,
    /// Held starts by pid: a stop of that pid leaves after them.
    held_starts: HashMap<u32, (i64, u64)>,
    /// Pids whose start has left, until their stop does.
    started: HashSet<u32>,
    /// The earliest event time seen: processes created after it have a
    /// start event to wait for.
    first_time: Option<i64>,
    pub stats: CorrelateStats,
}

impl Correlator {
    pub fn new(config: CorrelateConfig, devices: DeviceMap) -> Self {
        Self {
            config,
            devices,
            queue: VecDeque::new(),
            head_id: 0,
            open: HashMap::new(),
            ids: None,
            held: BTreeMap::new(),
            held_ids: BTreeSet::new(),
            held_starts: HashMap::new(),
            started: HashSet::new(),
            first_time: None,
            stats: CorrelateStats::default(),
        }
    }

    /// The DOS device map, read again (a drive mounted since start).
    pub fn set_devices(&mut self, devices: DeviceMap) {
        self.devices = devices;
    }

    /// Gives every event leaving the correlator its ids.
    pub fn with_identities(mut self, ids: Identities) -> Self {
        self.ids = Some(ids);
        self
    }

    /// The id the next entry will get: a barrier asked now is answered
    /// once `head_id()` reaches it.
    pub fn next_id(&self) -> u64 {
        self.head_id + self.queue.len() as u64
    }

    /// The id of the oldest entry not yet out of both stages (= `next_id`
    /// when none waits).
    pub fn head_id(&self) -> u64 {
        self.held_ids
            .first()
            .map_or(self.head_id, |h| (*h).min(self.head_id))
    }

    /// Entries still waiting for their other side.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    pub fn modern_start(&mut self, kp: KpStart, now: u64) {
        let (ppid, time) = (kp.ppid, kp.create_time);
        self.offer(
            Kind::Start,
            kp.pid,
            now,
            Some(Modern::Start(kp)),
            None,
            |e, tol| {
                e.modern.is_none()
                    && e.classic
                        .as_ref()
                        .is_some_and(|c| agrees(c.ppid, ppid) && close(c.timestamp, time, tol))
            },
        );
    }

    pub fn modern_stop(&mut self, kp: KpStop, now: u64) {
        let time = kp.exit_time;
        self.offer(
            Kind::Stop,
            kp.pid,
            now,
            Some(Modern::Stop(kp)),
            None,
            |e, tol| {
                e.modern.is_none()
                    && e.classic
                        .as_ref()
                        .is_some_and(|c| close(c.timestamp, time, tol))
            },
        );
    }

    /// A classic Start (`end` false) or End (`end` true).
    pub fn classic(&mut self, c: Classic, end: bool, now: u64) {
        let kind = if end { Kind::Stop } else { Kind::Start };
        let (ppid, time) = (c.ppid, c.timestamp);
        self.offer(kind, c.pid, now, None, Some(c), |e, tol| {
            e.classic.is_none()
                && match &e.modern {
                    Some(Modern::Start(kp)) => {
                        agrees(kp.ppid, ppid) && close(time, kp.create_time, tol)
                    }
                    Some(Modern::Stop(kp)) => close(time, kp.exit_time, tol),
                    None => false,
                }
        });
    }

    /// Completes the first open entry `fits` accepts, or queues a new one.
    fn offer(
        &mut self,
        kind: Kind,
        pid: u32,
        now: u64,
        modern: Option<Modern>,
        classic: Option<Classic>,
        fits: impl Fn(&Entry, i64) -> bool,
    ) {
        let tol = self.config.tolerance_ns;
        let key = (kind, pid);
        let found = self.open.get(&key).and_then(|ids| {
            ids.iter().copied().position(|id| {
                let e = &self.queue[(id - self.head_id) as usize];
                fits(e, tol)
            })
        });
        if let Some(pos) = found {
            let ids = self.open.get_mut(&key).expect("found above");
            let id = ids.remove(pos);
            if ids.is_empty() {
                self.open.remove(&key);
            }
            let e = &mut self.queue[(id - self.head_id) as usize];
            if modern.is_some() {
                e.modern = modern;
            }
            if classic.is_some() {
                e.classic = classic;
            }
            return;
        }
        let entry = Entry {
            kind,
            pid,
            modern,
            classic,
            arrived: now,
            deadline: now.saturating_add(self.config.hold_ns),
        };
        if !self.complete(&entry) {
            let id = self.next_id();
            self.open.entry(key).or_default().push(id);
        }
        self.queue.push_back(entry);
    }

    fn complete(&self, e: &Entry) -> bool {
        (e.modern.is_some() || !self.config.modern) && (e.classic.is_some() || !self.config.classic)
    }

    /// The events whose turn has come: joined (complete, or waited
    /// `hold`), then out of the reorder stage in event-time order.
    pub fn ready(&mut self, now: u64) -> Vec<ProcessEvent> {
        while let Some(head) = self.queue.front() {
            let over = self.queue.len() > MAX_PENDING;
            if !(self.complete(head) || head.deadline <= now || over) {
                break;
            }
            if over && !self.complete(head) && head.deadline > now {
                self.stats.forced += 1;
            }
            self.pop();
        }
        self.release(Some(now))
    }

    /// Everything still waiting, complete or not (the source is stopping).
    pub fn drain(&mut self) -> Vec<ProcessEvent> {
        while !self.queue.is_empty() {
            self.pop();
        }
        self.release(None)
    }

    /// Lets out of `held`, in time order, what is due at `now` (all with
    /// `None`); a stop's held start goes first.
    fn release(&mut self, now: Option<u64>) -> Vec<ProcessEvent> {
        let mut out = Vec::new();
        while let Some((&key, h)) = self.held.first_key_value() {
            // Bounded like the join: beyond MAX_PENDING the oldest leave.
            let over = self.held.len() > MAX_PENDING;
            if !over && now.is_some_and(|now| h.release > now) {
                break;
            }
            let (kind, pid) = (h.event.kind, h.event.pid);
            let start_first = match kind {
                EventKind::Exit => self.held_starts.get(&pid).copied(),
                _ => None,
            };
            if let Some(start) = start_first.filter(|s| *s != key) {
                out.push(self.unhold(start));
            }
            out.push(self.unhold(key));
        }
        out
    }

    fn unhold(&mut self, key: (i64, u64)) -> ProcessEvent {
        let h = self.held.remove(&key).expect("caller found it");
        self.held_ids.remove(&key.1);
        let pid = h.event.pid;
        if h.event.kind == EventKind::Exit {
            self.started.remove(&pid);
        } else {
            if self.held_starts.get(&pid) == Some(&key) {
                self.held_starts.remove(&pid);
            }
            if self.started.len() >= MAX_STARTED {
                self.started.clear();
            }
            self.started.insert(pid);
        }
        h.event
    }

    /// Puts a joined event into the reorder stage.
    fn hold(&mut self, id: u64, event: ProcessEvent, arrived: u64, created: Option<i64>) {
        let key = (event.timestamp, id);
        let first = *self.first_time.get_or_insert(event.timestamp);
        self.first_time = Some(first.min(event.timestamp));
        let mut wait = self.config.reorder_ns;
        if event.kind == EventKind::Exit {
            // Its process began while we watched, and no start came yet.
            let expects_start = created.is_some_and(|c| c > first)
                && !self.started.contains(&event.pid)
                && !self.held_starts.contains_key(&event.pid)
                && !self.open.contains_key(&(Kind::Start, event.pid));
            if expects_start {
                wait = wait.max(self.config.hold_ns);
            }
        } else {
            self.held_starts.insert(event.pid, key);
        }
        self.held_ids.insert(id);
        let release = arrived.saturating_add(wait);
        self.held.insert(key, Held { event, release });
    }

    fn pop(&mut self) {
        let id = self.head_id;
        let e = self.queue.pop_front().expect("caller checked");
        self.head_id += 1;
        if let Some(ids) = self.open.get_mut(&(e.kind, e.pid)) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.open.remove(&(e.kind, e.pid));
            }
        }
        match (e.modern.is_some(), e.classic.is_some()) {
            (true, true) => self.stats.matched += 1,
            (true, false) => self.stats.modern_only += 1,
            _ => self.stats.classic_only += 1,
        }
        let created_ns = match &e.modern {
            Some(Modern::Stop(kp)) => kp.create_time,
            _ => None,
        };
        let (mut event, created) = match (e.kind, e.modern) {
            (Kind::Start, Some(Modern::Start(kp))) => (
                exec_event(Some(&kp), e.classic.as_ref(), &self.devices),
                kp.create_filetime,
            ),
            (Kind::Stop, Some(Modern::Stop(kp))) => (
                exit_event(Some(&kp), e.classic.as_ref()),
                kp.create_filetime,
            ),
            (Kind::Start, _) => (exec_event(None, e.classic.as_ref(), &self.devices), None),
            (Kind::Stop, _) => (exit_event(None, e.classic.as_ref()), None),
        };
        if let Some(ids) = &mut self.ids {
            match e.kind {
                Kind::Start => ids.exec(&mut event, created),
                Kind::Stop => ids.exit(&mut event, created),
            }
        }
        self.hold(id, event, e.arrived, created_ns);
    }
}

/// Parents agree unless both are known and differ.
fn agrees(a: Option<u32>, b: Option<u32>) -> bool {
    a.zip(b).is_none_or(|(a, b)| a == b)
}

/// Times agree unless the modern one is known and far from the classic one.
fn close(classic: i64, modern: Option<i64>, tol: i64) -> bool {
    modern.is_none_or(|m| (m - classic).abs() <= tol)
}

/// The `exec` for one process start, from whichever sides arrived.
pub fn exec_event(kp: Option<&KpStart>, c: Option<&Classic>, devices: &DeviceMap) -> ProcessEvent {
    let created = kp.and_then(|k| k.create_time).or(c.map(|c| c.timestamp));
    let pid = kp.map_or_else(|| c.map_or(0, |c| c.pid), |k| k.pid);
    let mut e = ProcessEvent::new(EventKind::Exec, EventSource::Etw, created.unwrap_or(0), pid);
    e.ppid = kp.and_then(|k| k.ppid).or(c.and_then(|c| c.ppid));
    e.start_time = created.map(whole_seconds);
    if let Some(image) = kp.and_then(|k| k.image.as_deref()) {
        match devices.to_dos(image) {
            Some(dos) => e.exe = Some(dos),
            None => e.platform.exec_filename = Some(image.to_string()),
        }
        e.name = file_name(image).to_string();
    } else if let Some(name) = c.and_then(|c| c.image_file_name.as_deref()) {
        e.name = name.to_string();
    }
    if let Some(line) = c.and_then(|c| c.command_line.as_deref()) {
        (e.argv, e.argv_truncated) = split_command_line(line);
    }
    e.platform.user_sid = c.and_then(|c| c.sid.clone());
    e.platform.session_id = kp.and_then(|k| k.session).or(c.and_then(|c| c.session));
    e.platform.sequence_number = kp.and_then(|k| k.seq);
    e.platform.parent_sequence_number = kp.and_then(|k| k.parent_seq);
    e
}

/// The `exit` for one process stop, from whichever sides arrived.
pub fn exit_event(kp: Option<&KpStop>, c: Option<&Classic>) -> ProcessEvent {
    let at = kp.and_then(|k| k.exit_time).or(c.map(|c| c.timestamp));
    let pid = kp.map_or_else(|| c.map_or(0, |c| c.pid), |k| k.pid);
    let mut e = ProcessEvent::new(EventKind::Exit, EventSource::Etw, at.unwrap_or(0), pid);
    e.ppid = c.and_then(|c| c.ppid);
    e.start_time = kp.and_then(|k| k.create_time).map(whole_seconds);
    e.name = kp
        .and_then(|k| k.image_name.clone())
        .or(c.and_then(|c| c.image_file_name.clone()))
        .unwrap_or_default();
    // NTSTATUS codes (0xC0000005) read as negative i32, as Windows tools show.
    e.exit_code = kp
        .and_then(|k| k.exit_code.map(|x| x as i32))
        .or(c.and_then(|c| c.exit_status));
    e.platform.user_sid = c.and_then(|c| c.sid.clone());
    e.platform.session_id = c.and_then(|c| c.session);
    e.platform.sequence_number = kp.and_then(|k| k.seq);
    e
}
