//! The sink benchmark's entry point: the bench itself (`sinks/bench.rs`)
//! measures jsonl against the NATS sink, which is not built on Apple
//! targets (ring's C needs Apple's SDK); there this binary says so, and
//! every target still type-checks (`cargo clippy --all-targets`).

#[cfg(not(target_vendor = "apple"))]
#[path = "sinks/bench.rs"]
mod bench;

fn main() {
    #[cfg(not(target_vendor = "apple"))]
    bench::main();
    #[cfg(target_vendor = "apple")]
    println!("sinks bench: not on Apple targets (no NATS sink there)");
}
