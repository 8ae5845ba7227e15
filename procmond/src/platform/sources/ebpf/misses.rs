//! Runs of the probes the kernel skipped, counted.
//!
//! The kernel does not run a tracing program on a CPU where that program
//! is already running: when a probe is preempted mid-run (tracepoint
//! programs are preemptible on recent kernels) and another task on the same
//! CPU hits the same tracepoint, that second event is never seen. The
//! kernel counts these in the program's `recursion_misses` (5.12+), which
//! /proc/self/fdinfo shows for the program's fd; procmond adds them to
//! `kernel_lost`, beside what the ring buffer could not hold. Seen on
//! Debian's 7.3 kernel: 1 to 3 misses in 600 execs under QEMU
//! (docs/platforms.md, kernel matrix).

use std::os::fd::{AsRawFd, BorrowedFd};

/// The `recursion_misses` line of one fdinfo text (absent before 5.12).
pub fn parse_misses(fdinfo: &str) -> Option<u64> {
    fdinfo.lines().find_map(|line| {
        let value = line.strip_prefix("recursion_misses:")?;
        value.trim().parse().ok()
    })
}

/// The misses of the programs behind `programs`, summed; `None` where the
/// kernel does not report them.
pub fn total<'a>(programs: impl Iterator<Item = BorrowedFd<'a>>) -> Option<u64> {
    let mut sum = None;
    for fd in programs {
        let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        if let Some(n) = parse_misses(&text) {
            sum = Some(sum.unwrap_or(0) + n);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_misses_line_is_read_and_its_absence_is_none() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_id:\t5\n\
                    run_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t3\nverified_insns:\t912\n";
        assert_eq!(parse_misses(text), Some(3));
        assert_eq!(parse_misses("prog_type:\t26\nrun_cnt:\t0\n"), None);
        assert_eq!(parse_misses("recursion_misses:\tlots\n"), None);
    }
}
