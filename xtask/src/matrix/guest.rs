//! The guest: an initramfs that holds procmond and the check script, a QEMU
//! boot of one kernel with it (software emulation: no KVM here), and the
//! sections the script sends back on the second serial port.
//!
//! The initramfs is a plain `newc` cpio written here (no cpio tool): the
//! script as /init, dash as /bin/sh, coreutils' `true` and `sleep` (real
//! execs, where busybox would run applets in-process), util-linux's
//! `setpriv`, busybox for the rest, procmond, and every shared library
//! they load (from `ldd`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;

/// The check script (xtask/guest/init.sh).
pub const INIT: &str = include_str!("../../guest/init.sh");

/// Busybox applets the script uses besides the real binaries.
const APPLETS: [&str; 10] = [
    "mount", "poweroff", "gzip", "base64", "cat", "grep", "cut", "mkdir", "sync", "uname",
];

/// A cpio `newc` archive being written.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn new() -> Self {
        Self {
            out: Vec::new(),
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// `path`'s parent directories, each once.
    fn parents(&mut self, path: &str) {
        let mut at = String::new();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push('/');
            at.push_str(part);
            if self.dirs.insert(at.clone()) {
                self.entry(&at, 0o040_755, &[]);
            }
        }
    }

    fn dir(&mut self, path: &str) {
        self.parents(&format!("{path}/x"));
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parents(path);
        self.entry(path, 0o100_000 | mode, data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entry(path, 0o120_777, target.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// The shared libraries (and loader) `binary` needs, by the path it asks for.
fn libraries(binary: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("running ldd {}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || !out.status.success() {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(path.to_string());
        }
    }
    Ok(libs)
}

/// A host binary by name, resolved through PATH.
fn which(name: &str) -> Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(["/usr/bin".into(), "/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not installed"))
}

/// Writes the initramfs with `procmond` to `out`.
pub fn build_initramfs(procmond: &Path, out: &Path) -> Result<()> {
    let mut cpio = Cpio::new();
    for d in ["/proc", "/sys", "/dev", "/tmp", "/run", "/var/lib", "/etc"] {
        cpio.dir(d);
    }
    cpio.file("/init", 0o755, INIT.as_bytes());
    // (path in the guest, host binary)
    let binaries = [
        ("/bin/procmond", procmond.to_path_buf()),
        ("/bin/sh", which("dash")?),
        ("/bin/true", which("true")?),
        ("/bin/sleep", which("sleep")?),
        ("/bin/setpriv", which("setpriv")?),
        ("/sbin/busybox", which("busybox")?),
    ];
    let mut libs = BTreeMap::new();
    for (guest, host) in &binaries {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        cpio.file(guest, 0o755, &data);
        for lib in libraries(host)? {
            libs.entry(lib.clone()).or_insert(lib);
        }
    }
    if libraries(&which("busybox")?)?.len() > 1 {
        bail!("busybox is not static: install the Debian package busybox-static");
    }
    for lib in libs.keys() {
        let data = fs::read(lib).with_context(|| format!("reading {lib}"))?;
        cpio.file(lib, 0o755, &data);
    }
    for applet in APPLETS {
        cpio.symlink(&format!("/sbin/{applet}"), "busybox");
    }
    fs::write(out, cpio.finish()).with_context(|| format!("writing {}", out.display()))
}

/// What one boot left: the console and the data port's text.
pub struct Boot {
    pub console: String,
    pub data: String,
    pub wall: Duration,
    pub timed_out: bool,
}

/// Boots `kernel` with `initramfs` under TCG, settings on the command line
/// (`KEY=value` words reach /init as its environment), until it powers off
/// or `limit` passes.
pub fn boot(
    kernel: &Path,
    initramfs: &Path,
    env: &[(&str, String)],
    work: &Path,
    limit: Duration,
) -> Result<Boot> {
    let console = work.join("console.log");
    let data = work.join("data.txt");
    let mut append = String::from("console=ttyS0 rdinit=/init panic=-1 quiet");
    for (k, v) in env {
        append.push_str(&format!(" {k}={v}"));
    }
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", data.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(&append)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut timed_out = false;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    e.read_to_string(&mut err).ok();
                }
                bail!("qemu exited with {status}: {}", err.trim());
            }
            break;
        }
        if started.elapsed() > limit {
            timed_out = true;
            child.kill().ok();
            child.wait().ok();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    Ok(Boot {
        console: read(&console),
        data: read(&data),
        wall: started.elapsed(),
        timed_out,
    })
}

/// The sections in the script's output: name to decoded text; `finished`
/// is whether it got to the end.
pub fn sections(data: &str) -> Result<(BTreeMap<String, String>, bool)> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut finished = false;
    for line in data.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some((name, b64)) = current.as_mut() {
            if line == "KM-END" {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .with_context(|| format!("section {name}: bad base64"))?;
                let mut text = String::new();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_string(&mut text)
                    .with_context(|| format!("section {name}: bad gzip"))?;
                out.insert(std::mem::take(name), text);
                current = None;
            } else {
                b64.push_str(line.trim());
            }
        } else if let Some(name) = line.strip_prefix("KM-SECTION ") {
            current = Some((name.to_string(), String::new()));
        } else if line == "KM-FINISHED" {
            finished = true;
        }
    }
    Ok((out, finished))
}

/// Runs the script on this host (`KM_HOST=1`): the host kernel's row.
pub fn run_on_host(procmond: &Path, env: &[(&str, String)], work: &Path) -> Result<Boot> {
    let script = work.join("init.sh");
    fs::write(&script, INIT)?;
    let data = work.join("data.txt");
    let started = Instant::now();
    let status = Command::new("sh")
        .arg(&script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("KM_HOST", "1")
        .env("KM_OUT", &data)
        .env("KM_WORK", work.join("runs"))
        .env("PROCMOND", procmond)
        .stdout(Stdio::null())
        .status()
        .context("running the check script on the host")?;
    if !status.success() {
        bail!("the check script failed on the host: {status}");
    }
    let mut text = String::new();
    fs::File::open(&data)?.read_to_string(&mut text)?;
    Ok(Boot {
        console: String::new(),
        data: text,
        wall: started.elapsed(),
        timed_out: false,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn sections_round_trip_through_gzip_and_base64() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"line one\nline two\n").expect("gzip");
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
        let (first, rest) = b64.split_at(10);
        let data =
            format!("KM-BEGIN 6.1\r\nKM-SECTION auto/log\r\n{first}\r\n{rest}\r\nKM-END\r\n");
        let (s, finished) = sections(&data).expect("sections");
        assert_eq!(s["auto/log"], "line one\nline two\n");
        assert!(!finished, "no KM-FINISHED line");
        let (_, finished) = sections(&(data + "KM-FINISHED\n")).expect("sections");
        assert!(finished);
        assert!(sections("KM-SECTION x\n!!!\nKM-END\n").is_err());
    }

    #[test]
    fn the_cpio_has_parents_before_children_and_a_trailer() {
        let mut c = Cpio::new();
        c.file("/a/b/f", 0o644, b"hello");
        c.symlink("/a/l", "f");
        let out = c.finish();
        let text = String::from_utf8_lossy(&out);
        let at = |s: &str| text.find(s).unwrap_or(usize::MAX);
        assert!(at("a\0") < at("a/b\0") && at("a/b\0") < at("a/b/f\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
    }
}
