//! The kernels of the matrix: Debian's cloud kernel images, fetched with
//! `apt-get download` against a private sources list in the cache (the
//! system's apt sources are not touched), only their `vmlinuz` kept, and
//! kept between runs.
//!
//! Each suite's `linux-image-cloud-amd64` names the current kernel; from
//! 7.x the image package moved `vmlinuz` into `linux-binary-*`, which is
//! followed when the image itself has none.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// (label, Debian suite) for each kernel booted in QEMU.
pub const SUITES: [(&str, &str); 4] = [
    ("5.10", "bullseye"),
    ("6.1", "bookworm"),
    ("6.12", "trixie"),
    ("7.x", "trixie-backports"),
];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel ready to boot.
pub struct Kernel {
    pub label: String,
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// apt-get or apt-cache with every state path inside `cache`.
fn apt(tool: &str, cache: &Path) -> Command {
    let mut cmd = Command::new(tool);
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    for o in [
        opt("Dir::Etc::SourceList", &cache.join("sources.list")),
        opt("Dir::Etc::SourceParts", &cache.join("sources.list.d")),
        opt("Dir::State::Lists", &cache.join("lists")),
        opt("Dir::Cache", &cache.join("cache")),
        opt("Dir::State::status", Path::new("/dev/null")),
    ] {
        cmd.arg("-o").arg(o);
    }
    cmd.args([
        "-o",
        "Acquire::Languages=none",
        "-o",
        "APT::Sandbox::User=root",
    ]);
    cmd
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Refreshes the private package lists (one `apt-get update`).
fn update(cache: &Path) -> Result<()> {
    for d in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        fs::create_dir_all(cache.join(d))?;
    }
    let sources: String = SUITES
        .iter()
        .map(|(_, suite)| {
            format!("deb [signed-by={KEYRING}] http://deb.debian.org/debian {suite} main\n")
        })
        .collect();
    fs::write(cache.join("sources.list"), sources)?;
    println!(
        "xtask: apt-get update (private lists in {})",
        cache.display()
    );
    output(apt("apt-get", cache).args(["update", "-qq"]))?;
    Ok(())
}

/// `name (= version)` pairs of `package`'s Depends in `suite`.
fn depends(cache: &Path, package: &str, suite: &str) -> Result<Vec<(String, String)>> {
    let text = output(apt("apt-cache", cache).args(["show", &format!("{package}/{suite}")]))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .with_context(|| format!("{package}/{suite} has no Depends"))?;
    Ok(line
        .split(',')
        .filter_map(|dep| {
            let (name, rest) = dep.trim().split_once(" (= ")?;
            Some((name.to_string(), rest.trim_end_matches(')').to_string()))
        })
        .collect())
}

/// Downloads `name=version` into `dir`; the .deb's path.
fn download(cache: &Path, dir: &Path, name: &str, version: &str) -> Result<PathBuf> {
    output(apt("apt-get", cache).current_dir(dir).args([
        "download",
        "-qq",
        &format!("{name}={version}"),
    ]))?;
    fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(".deb"))
        })
        .with_context(|| format!("apt-get download {name} left no .deb"))
}

/// Copies the package's vmlinuz to `out`; false if it holds none.
fn extract_vmlinuz(deb: &Path, out: &Path) -> Result<bool> {
    let list = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let Some(path) = list.lines().find_map(|l| {
        let path = l.split_whitespace().nth(5)?;
        (l.starts_with('-') && path.rsplit('/').next()?.starts_with("vmlinuz")).then_some(path)
    }) else {
        return Ok(false);
    };
    let mut tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = tar.stdout.take().context("dpkg-deb stdout")?;
    let image = Command::new("tar")
        .args(["-x", "-O", path])
        .stdin(stdout)
        .output()?;
    tar.wait()?;
    if !image.status.success() || image.stdout.is_empty() {
        bail!("extracting {path} from {} failed", deb.display());
    }
    fs::write(out, image.stdout)?;
    Ok(true)
}

/// Every kernel in `SUITES` whose label `wanted` names (all when empty),
/// fetched into `cache` unless already there.
pub fn fetch(cache: &Path, wanted: &[String]) -> Result<Vec<Kernel>> {
    update(cache)?;
    let mut kernels = Vec::new();
    for (label, suite) in SUITES {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == label) {
            continue;
        }
        let (image, version) = depends(cache, "linux-image-cloud-amd64", suite)?
            .into_iter()
            .find(|(name, _)| name.starts_with("linux-image-"))
            .with_context(|| format!("no kernel image in {suite}"))?;
        let dir = cache.join("kernels").join(&image);
        let vmlinuz = dir.join("vmlinuz");
        if !vmlinuz.exists() {
            println!("xtask: fetching {image} {version} ({suite})");
            fs::create_dir_all(&dir)?;
            let deb = download(cache, &dir, &image, &version)?;
            if !extract_vmlinuz(&deb, &vmlinuz)? {
                let (binary, v) = depends(cache, &image, suite)?
                    .into_iter()
                    .find(|(name, _)| name.starts_with("linux-binary-"))
                    .with_context(|| format!("{image} has no vmlinuz and no linux-binary"))?;
                let deb = download(cache, &dir, &binary, &v)?;
                if !extract_vmlinuz(&deb, &vmlinuz)? {
                    bail!("neither {image} nor {binary} holds a vmlinuz");
                }
            }
            for e in fs::read_dir(&dir)?.flatten() {
                if e.path().extension().is_some_and(|x| x == "deb") {
                    fs::remove_file(e.path()).ok();
                }
            }
        }
        kernels.push(Kernel {
            label: label.to_string(),
            package: format!("{image} {version}"),
            vmlinuz,
        });
    }
    Ok(kernels)
}
