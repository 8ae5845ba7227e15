//! Clock conversions shared by every source.
//!
//! The kernel stamps events with CLOCK_BOOTTIME and procfs gives start times in
//! clock ticks since boot. Both are turned into Unix-epoch nanoseconds with one
//! offset measured once per run, so the same process gets the same
//! `start_time` from the eBPF stream and from a procfs snapshot — which is
//! what `(pid, start_time)` identity and reconciliation rely on.

/// Nanoseconds since the Unix epoch, now.
pub fn now_unix_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::OnceLock;

    use rustix::time::{ClockId, clock_gettime};

    fn ts_ns(t: rustix::time::Timespec) -> i64 {
        t.tv_sec
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec)
    }

    /// CLOCK_BOOTTIME now, in ns (the eBPF probes' clock).
    pub fn boottime_ns() -> u64 {
        u64::try_from(ts_ns(clock_gettime(ClockId::Boottime))).unwrap_or(0)
    }

    /// Unix-epoch ns at boot: realtime minus boottime, measured once.
    pub fn boot_epoch_ns() -> i64 {
        static OFFSET: OnceLock<i64> = OnceLock::new();
        *OFFSET.get_or_init(|| {
            let real = ts_ns(clock_gettime(ClockId::Realtime));
            let boot = ts_ns(clock_gettime(ClockId::Boottime));
            real - boot
        })
    }

    /// Clock ticks per second for procfs times (USER_HZ, normally 100).
    pub fn ticks_per_sec() -> u64 {
        static HZ: OnceLock<u64> = OnceLock::new();
        *HZ.get_or_init(|| rustix::param::clock_ticks_per_second().max(1))
    }

    /// A boot-relative ns instant as Unix-epoch ns.
    pub fn boot_to_unix_ns(boot_ns: u64) -> i64 {
        boot_epoch_ns().saturating_add(i64::try_from(boot_ns).unwrap_or(i64::MAX))
    }

    /// A process start time from procfs ticks, as Unix-epoch ns.
    pub fn start_from_ticks(ticks: u64) -> i64 {
        let ns_per_tick = 1_000_000_000 / ticks_per_sec();
        boot_to_unix_ns(ticks.saturating_mul(ns_per_tick))
    }

    /// A process start time from the kernel's `start_boottime`, truncated to
    /// ticks exactly as procfs does, as Unix-epoch ns.
    pub fn start_from_boot_ns(boot_ns: u64) -> i64 {
        start_from_ticks(boot_ns / (1_000_000_000 / ticks_per_sec()))
    }
}

#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_and_procfs_start_times_agree() {
        use super::*;
        let hz = ticks_per_sec();
        let ticks = 123_456u64;
        let boot_ns = ticks * (1_000_000_000 / hz) + 9_999_999;
        assert_eq!(start_from_boot_ns(boot_ns), start_from_ticks(ticks));
        assert!(boot_to_unix_ns(boottime_ns()) <= now_unix_ns() + 1_000_000);
    }
}
