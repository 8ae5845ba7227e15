//! Giving freed heap back to the kernel after the eBPF load.
//!
//! Loading the probes in-process (the library in tests and benchmarks, or
//! when the probe loader cannot start: `sources::ebpf::handover`) parses
//! the kernel's BTF for CO-RE: ~25 MiB of small, short-lived allocations.
//! glibc keeps freed heap pages mapped, so without this the process would
//! carry ~16 MiB of dead heap in its RSS for its whole life. `malloc_trim(0)` returns every whole free page (glibc ≥ 2.8
//! releases pages inside the heap too, not only at its top).
//!
//! The second call fixes glibc's mmap and trim thresholds at 128 KiB for the
//! process's life. By default glibc raises its mmap threshold after a large
//! block is freed, and from then on large buffers (ring-buffer batches, WAL
//! frames, sled's segments) come from the heap, where one live block near
//! the top keeps everything below it resident. At 1 000 execs/s that made the
//! collector's peak vary from 27 to 40 MiB between runs of the same build
//! (docs/benchmarks.md, "Memory at 1 000 execs/s").
#![allow(unsafe_code)]

/// The fixed threshold for both knobs: glibc's own starting mmap threshold.
const THRESHOLD_BYTES: i32 = 128 * 1024;

/// Returns free heap pages to the kernel; true if any were released.
pub fn release_free_heap() -> bool {
    // SAFETY: malloc_trim takes a plain integer, touches only the allocator's
    // own state under its locks, and is safe to call from any thread at any
    // time; no Rust object is read or written.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Fixes glibc's mmap and trim thresholds at 128 KiB, unless the operator set
/// either through glibc's own environment variables (`MALLOC_MMAP_THRESHOLD_`,
/// `MALLOC_TRIM_THRESHOLD_`), which then win. Returns whether it set them.
/// Called first thing in `main`, before any thread starts.
pub fn fix_heap_thresholds() -> bool {
    let operator_chose = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if operator_chose {
        return false;
    }
    // SAFETY: mallopt takes two plain integers and changes only the
    // allocator's own parameters under its lock; both parameters are
    // documented for glibc (mallopt(3)) and no Rust object is touched.
    let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD_BYTES) };
    // SAFETY: as above.
    let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD_BYTES) };
    mmap == 1 && trim == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_accepted_by_glibc() {
        // mallopt returns 0 for a value glibc refuses (an mmap threshold
        // above HEAP_MAX/2, for one); ours must be accepted.
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
            && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none()
        {
            assert!(fix_heap_thresholds());
        }
    }
}
