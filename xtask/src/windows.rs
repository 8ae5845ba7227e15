//! The Windows part of `cargo xtask test` (docs/platforms.md, "Windows"):
//! procmond built for `x86_64-pc-windows-gnu` with Debian's mingw-w64, its
//! unit tests and the Windows end-to-end test (`tests/windows.rs`) run
//! under wine64 through cargo's target runner (.cargo/config.toml).
//!
//! Each run gets a private WINEPREFIX (target/wine/prefix-PID), booted
//! once, with the ProcessPrng shim (`xtask/wine/processprng.c`, built here
//! with mingw) as its `bcryptprimitives.dll`: Debian's wine 8.0 lacks that
//! DLL, which every Rust >= 1.78 Windows binary imports. The prefix's
//! processes (wine's service manager included) are ended and the prefix
//! removed when the tests are done.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use super::run;

const TARGET: &str = "x86_64-pc-windows-gnu";
const WINE: &str = "/usr/lib/wine/wine64";
const WINESERVER: &str = "/usr/lib/wine/wineserver";
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";
/// Debian packages: the mingw-w64 C toolchain (linker, the shim) and wine.
const PACKAGES: [&str; 2] = ["gcc-mingw-w64-x86-64", "wine64"];

/// Unit tests that assume a Unix host, left out under wine: each reads a
/// Unix-only example or file (paths like /run and /bin/sh, run_as, the
/// shipped Linux procmond.yaml, macOS file semantics).
const UNIX_ONLY_TESTS: [&str; 4] = [
    "config::agent::tests::",
    "config::agent::outputs::tests::",
    "config::procmond::tests::defaults_and_shipped_file_are_valid",
    "sources::endpoint_security::access::tests::full_disk_access_states_from_opening_the_tcc_database",
];

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs mingw-w64 and wine when missing (as root, with apt).
pub fn ensure_packages() -> Result<()> {
    if have(MINGW_GCC) && Path::new(WINE).exists() {
        return Ok(());
    }
    println!("xtask: installing Debian packages for the Windows build: {PACKAGES:?}");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(PACKAGES))
}

/// A wine prefix for this run, ended and removed on drop.
struct Prefix {
    path: PathBuf,
}

impl Prefix {
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("WINEPREFIX", &self.path)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=");
        c
    }

    /// Boots the prefix and installs the ProcessPrng shim into it.
    fn create(root: &Path) -> Result<Self> {
        let path = root
            .join("target/wine")
            .join(format!("prefix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let prefix = Self { path };
        println!("xtask: wineboot --init ({})", prefix.path.display());
        run(prefix.command(WINE).args(["wineboot", "--init"]))?;
        // Let the boot finish (its service manager settles and the server
        // exits) before tests create services in the prefix.
        run(prefix.command(WINESERVER).arg("-w"))?;
        let dll = prefix
            .path
            .join("drive_c/windows/system32/bcryptprimitives.dll");
        run(Command::new(MINGW_GCC)
            .args(["-shared", "-O2", "-o"])
            .arg(&dll)
            .arg(root.join("xtask/wine/processprng.c"))
            .arg("-ladvapi32"))?;
        Ok(prefix)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // Wait for the server to be gone before the directory is: a new
        // prefix that reuses its inode would otherwise reach the old server
        // (and its service database) while that one winds down.
        let _ = self.command(WINESERVER).arg("-k").status();
        let _ = self.command(WINESERVER).arg("-w").status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `cargo xtask test-windows`: the packages, the MSVC clippy, the tests.
pub fn test_alone() -> Result<()> {
    let started = Instant::now();
    ensure_packages()?;
    run(Command::new("rustup").args(["target", "add", "x86_64-pc-windows-msvc"]))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace root")?;
    super::clippy_target(root, "x86_64-pc-windows-msvc")?;
    test(root)?;
    println!(
        "xtask: the Windows checks took {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds procmond for Windows and runs its unit tests and the Windows
/// end-to-end test under wine; prints how long it took.
pub fn test(root: &Path) -> Result<()> {
    let started = Instant::now();
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        eprintln!("!!! xtask: `rustup target add {TARGET}` failed:");
        eprintln!("!!! the Windows build and tests under wine are SKIPPED in this run");
        return Ok(());
    }
    let prefix = Prefix::create(root)?;
    let with_prefix = |args: &[&str]| -> Result<()> {
        println!("xtask: cargo {} (under wine)", args.join(" "));
        run(prefix
            .command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(args))
    };
    let mut unit = vec!["test", "--target", TARGET, "-p", "procmond", "--lib", "--"];
    for skip in UNIX_ONLY_TESTS {
        unit.extend(["--skip", skip]);
    }
    with_prefix(&unit)?;
    with_prefix(&[
        "test",
        "--target",
        TARGET,
        "-p",
        "procmond",
        "--test",
        "e2e_windows",
        "--",
        // One at a time: wine's service manager, started on demand, has
        // failed `sc.exe start` while the agent test ran beside it.
        "--test-threads=1",
    ])?;
    drop(prefix);
    println!(
        "xtask: Windows build and tests under wine took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
