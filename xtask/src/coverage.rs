//! `cargo xtask coverage`: line coverage of the procmond library by its
//! in-process tests (`cargo test --lib`), measured with cargo-llvm-cov, for
//! the whole library and for the critical path on its own (kernel record →
//! pipeline → encoding → WAL → bus → sink). Installs what it needs (the
//! `llvm-tools-preview` component, `cargo-llvm-cov`), prints the tables and
//! writes them to docs/coverage.md, so the number in the docs is the one the
//! command printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The files an event crosses from the kernel to the sink, by path under
/// `procmond/src/`. A prefix ending in `/` names a whole folder.
const CRITICAL_PATH: [&str; 19] = [
    "platform/sources/ebpf/record.rs",
    "platform/sources/ebpf/layout.rs",
    "sensor/kernel_loop.rs",
    "pipeline/",
    "platform/procfs_enrich.rs",
    "model/codec.rs",
    "model/batch.rs",
    "model/v1.rs",
    "delivery/wal.rs",
    "delivery/wal_marks.rs",
    "delivery/storage.rs",
    "delivery/pacer.rs",
    "delivery/connector.rs",
    "delivery/connector_loop.rs",
    "delivery/wal_open.rs",
    "bus/protocol.rs",
    "bus/broker/",
    "agent/sink.rs",
    "agent/sink/",
];

/// Lines (instrumented, covered) of one file or group.
#[derive(Debug, Default, Clone, Copy)]
struct Lines {
    count: u64,
    covered: u64,
}

impl Lines {
    fn add(&mut self, other: Lines) {
        self.count += other.count;
        self.covered += other.covered;
    }

    fn percent(self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        100.0 * self.covered as f64 / self.count as f64
    }
}

/// Runs the measurement, prints and writes the tables.
pub fn run(root: &Path) -> Result<()> {
    ensure_tools()?;
    let out = root.join("target/coverage");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let summary = out.join("summary.json");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root)
        .args([
            "llvm-cov",
            "--lib",
            "-p",
            "procmond",
            "--json",
            "--summary-only",
        ])
        .arg("--output-path")
        .arg(&summary)
        .status()
        .context("running cargo llvm-cov")?;
    if !status.success() {
        bail!("cargo llvm-cov --lib -p procmond failed with {status}");
    }
    let text =
        fs::read_to_string(&summary).with_context(|| format!("reading {}", summary.display()))?;
    let files = per_file(&text)?;
    let report = render(&files);
    print!("{report}");
    let doc = root.join("docs/coverage.md");
    fs::write(&doc, document(&report)).with_context(|| format!("writing {}", doc.display()))?;
    println!("xtask: wrote {}", doc.display());
    Ok(())
}

/// `llvm-tools-preview` and `cargo-llvm-cov`, installed when missing.
fn ensure_tools() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let have = Command::new(&cargo)
        .args(["llvm-cov", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let status = Command::new("rustup")
        .args(["component", "add", "llvm-tools-preview"])
        .status()
        .context("running rustup (needed for llvm-tools-preview)")?;
    if !status.success() {
        bail!("rustup component add llvm-tools-preview failed with {status}");
    }
    if !have {
        println!("xtask: installing cargo-llvm-cov (cargo install --locked)");
        let status = Command::new(&cargo)
            .args(["install", "--locked", "cargo-llvm-cov"])
            .status()
            .context("running cargo install cargo-llvm-cov")?;
        if !status.success() {
            bail!("cargo install cargo-llvm-cov failed with {status}");
        }
    }
    Ok(())
}

/// Line counts per library file (path under `procmond/src/`), test-only
/// files left out: they are the measuring stick, not what is measured.
fn per_file(json: &str) -> Result<BTreeMap<String, Lines>> {
    let value: serde_json::Value =
        serde_json::from_str(json).context("cargo llvm-cov's JSON summary does not parse")?;
    let files = value["data"][0]["files"]
        .as_array()
        .context("cargo llvm-cov's JSON summary has no data[0].files")?;
    let mut out = BTreeMap::new();
    for file in files {
        let name = file["filename"].as_str().context("a file without a name")?;
        let Some((_, rel)) = name.split_once("procmond/src/") else {
            continue;
        };
        if is_test_file(rel) {
            continue;
        }
        let lines = &file["summary"]["lines"];
        out.insert(
            rel.to_string(),
            Lines {
                count: lines["count"].as_u64().context("lines.count")?,
                covered: lines["covered"].as_u64().context("lines.covered")?,
            },
        );
    }
    if out.is_empty() {
        bail!("the coverage summary names no file under procmond/src/");
    }
    Ok(out)
}

fn is_test_file(rel: &str) -> bool {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file == "tests.rs" || file == "proptests.rs" || file.ends_with("_tests.rs")
}

fn on_critical_path(rel: &str) -> bool {
    CRITICAL_PATH.iter().any(|p| {
        if p.ends_with('/') {
            rel.starts_with(p)
        } else {
            rel == *p
        }
    })
}

/// The tables: the totals, each top-level module, then each critical-path file.
fn render(files: &BTreeMap<String, Lines>) -> String {
    let mut total = Lines::default();
    let mut critical = Lines::default();
    let mut modules: BTreeMap<&str, Lines> = BTreeMap::new();
    for (rel, lines) in files {
        total.add(*lines);
        if on_critical_path(rel) {
            critical.add(*lines);
        }
        let module = rel.split('/').next().unwrap_or(rel);
        modules.entry(module).or_default().add(*lines);
    }
    let mut s = String::new();
    let row = |s: &mut String, name: &str, l: Lines| {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {:.1} % |",
            l.covered,
            l.count,
            l.percent()
        );
    };
    let _ = writeln!(
        s,
        "| scope | lines covered | lines | coverage |\n|---|---|---|---|"
    );
    row(&mut s, "library (`procmond/src`)", total);
    row(&mut s, "critical path (files below)", critical);
    let _ = writeln!(
        s,
        "\nBy top-level module:\n\n| module | lines covered | lines | coverage |\n|---|---|---|---|"
    );
    for (module, lines) in &modules {
        row(&mut s, &format!("`{module}`"), *lines);
    }
    let _ = writeln!(
        s,
        "\nCritical path, by file:\n\n| file | lines covered | lines | coverage |\n|---|---|---|---|"
    );
    for (rel, lines) in files.iter().filter(|(rel, _)| on_critical_path(rel)) {
        row(&mut s, &format!("`{rel}`"), *lines);
    }
    s
}

fn document(report: &str) -> String {
    format!(
        "# Coverage\n\n\
         Written by `cargo xtask coverage` (xtask/src/coverage.rs): line coverage of the \
         procmond library by its in-process tests (`cargo llvm-cov --lib -p procmond`, run \
         as root on the development host, so the unit tests that load probes count). Test \
         files (`tests.rs`, `*_tests.rs`, `proptests.rs`) are left out of the counts. The \
         end-to-end tests in `tests/` run the real binary and are not counted here. The \
         critical path is the files an event crosses from the kernel record to the sink \
         (`CRITICAL_PATH` in xtask/src/coverage.rs). The goals are more than 80 % for the \
         library and more than 90 % for the critical path. The sensor and the collector \
         run in-process on the fake platform (`platform/fake.rs`), the agent's supervision \
         on a recording launcher (`agent/supervision_tests.rs`); the largest gap left is \
         the launcher process itself (`agent/launcher.rs`), the Windows service and the \
         agent's start-up (`agent/agent_loop.rs::run`), which spawn real processes and \
         are covered by the end-to-end tests.\n\n{report}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = r#"{"data":[{"files":[
        {"filename":"/w/procmond/src/delivery/wal.rs","summary":{"lines":{"count":100,"covered":90}}},
        {"filename":"/w/procmond/src/delivery/wal_tests.rs","summary":{"lines":{"count":500,"covered":500}}},
        {"filename":"/w/procmond/src/agent/service.rs","summary":{"lines":{"count":100,"covered":10}}},
        {"filename":"/w/procmond/src/pipeline/sanitize/rules.rs","summary":{"lines":{"count":50,"covered":50}}},
        {"filename":"/root/.cargo/registry/src/x/lib.rs","summary":{"lines":{"count":7,"covered":0}}}
    ]}]}"#;

    #[test]
    fn totals_leave_out_tests_and_dependencies() {
        let files = per_file(SUMMARY).expect("parses");
        assert_eq!(files.len(), 3);
        let report = render(&files);
        // library: 150 of 250; critical path: wal.rs and the sanitizer, 140 of 150.
        assert!(
            report.contains("| library (`procmond/src`) | 150 | 250 | 60.0 % |"),
            "{report}"
        );
        assert!(
            report.contains("| critical path (files below) | 140 | 150 | 93.3 % |"),
            "{report}"
        );
        assert!(
            report.contains("| `agent` | 10 | 100 | 10.0 % |"),
            "{report}"
        );
        assert!(!report.contains("`agent/service.rs`"), "{report}");
    }

    #[test]
    fn a_summary_without_library_files_is_an_error() {
        let err = per_file(r#"{"data":[{"files":[]}]}"#).expect_err("empty");
        assert!(
            err.to_string().contains("no file under procmond/src/"),
            "{err}"
        );
    }
}
