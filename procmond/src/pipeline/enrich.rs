//! Enrichment: what the kernel record does not carry. The probes capture
//! what they can at the event (pid, parent, credentials, start time, comm,
//! argv, the exec path, the cgroup id); what is left is read from the
//! platform (`platform::NativeEnricher`: procfs on Linux), but never more
//! than it must on the hot path:
//!
//! * the cgroup path is resolved once per cgroup id and cached (a fork storm
//!   runs in one cgroup: one read for all of it). It is read from
//!   `/proc/PID/cgroup` while the process lives, else found by walking the
//!   cgroup v2 tree (a cgroup's id is its directory's inode number), at most
//!   once a second, so a short-lived process in a new cgroup is attributed
//!   too;
//! * `exe` is read (`/proc/PID/exe`) only when execve got a relative path,
//!   and kept only if that file is the one the probe saw the exec run (same
//!   device and inode): a process that already exec'd again is not given
//!   its next image's path;
//! * `cwd` comes from the probe (a walk of the dentries); procfs is read
//!   only when the probe could not walk it, on `exec`, with
//!   `enhanced_metadata`;
//! * `fork` events need nothing: the child is its parent's copy, and its
//!   exec (if any) carries the rest.
//!
//! Events without a kernel cgroup id (inventory, polling) read their cgroup
//! from procfs. The container (id, runtime, pod) comes from the cgroup path
//! (`platform::container`), cached with it. Best effort: a process that is already gone keeps what the
//! kernel captured, and nothing is invented.

use crate::model::{EventKind, ProcessEvent};
use crate::platform::NativeEnricher;

#[derive(Debug, Clone)]
pub struct Enricher {
    enhanced: bool,
    native: NativeEnricher,
}

impl Enricher {
    pub fn new(enhanced_metadata: bool) -> Self {
        Self {
            enhanced: enhanced_metadata,
            native: NativeEnricher::new(),
        }
    }

    /// Takes a new `enhanced_metadata` setting, keeping the cache.
    pub fn set_enhanced(&mut self, enhanced: bool) {
        self.enhanced = enhanced;
    }

    pub fn enrich(&mut self, event: &mut ProcessEvent) {
        // Sources capture the cwd where they can; the setting decides.
        if !self.enhanced {
            event.cwd = None;
        }
        // A process that is gone has nothing left to read.
        if !matches!(event.kind, EventKind::Exit | EventKind::Stop) {
            self.native.enrich(event, self.enhanced);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_enhanced_metadata_no_cwd_is_kept() {
        let mut e = ProcessEvent::new(EventKind::Exec, crate::model::EventSource::Poll, 1, 1);
        e.cwd = Some("/from/the/source".into());
        Enricher::new(false).enrich(&mut e);
        assert_eq!(e.cwd, None);
    }
}
