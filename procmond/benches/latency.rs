//! The end-to-end latency benchmark's entry point: the bench itself
//! (`latency/linux.rs`) times the eBPF source from exec to the bus, so it
//! exists on Linux only; elsewhere this binary says so, and every target
//! still type-checks (`cargo clippy --all-targets` for each platform).

#[cfg(target_os = "linux")]
#[path = "latency/linux.rs"]
mod linux;

fn main() {
    #[cfg(target_os = "linux")]
    linux::main();
    #[cfg(not(target_os = "linux"))]
    println!("latency bench: Linux only (exec to bus through the eBPF source)");
}
