//! Giving freed heap back to the kernel after the eBPF load.
//!
//! Loading the probes in-process (the library in tests and benchmarks, or
//! when the probe loader cannot start: `sources::ebpf::handover`) parses
//! the kernel's BTF for CO-RE: ~25 MiB of small, short-lived allocations.
//! glibc keeps freed heap pages mapped, so without this the process would
//! carry ~16 MiB of dead heap in its RSS for its whole life. `malloc_trim(0)` returns every whole free page (glibc ≥ 2.8
//! releases pages inside the heap too, not only at its top).
#![allow(unsafe_code)]

/// Returns free heap pages to the kernel; true if any were released.
pub fn release_free_heap() -> bool {
    // SAFETY: malloc_trim takes a plain integer, touches only the allocator's
    // own state under its locks, and is safe to call from any thread at any
    // time; no Rust object is read or written.
    unsafe { libc::malloc_trim(0) == 1 }
}
