//! The inventory benchmark's entry point: the bench itself (`snapshot/linux.rs`)
//! compares procfs with the eBPF task iterator, so it exists on Linux only;
//! elsewhere this binary says so, and every target still type-checks
//! (`cargo clippy --all-targets` for each platform).

#[cfg(target_os = "linux")]
#[path = "snapshot/linux.rs"]
mod linux;

fn main() {
    #[cfg(target_os = "linux")]
    linux::main();
    #[cfg(not(target_os = "linux"))]
    println!("snapshot bench: Linux only (procfs against the eBPF task iterator)");
}
