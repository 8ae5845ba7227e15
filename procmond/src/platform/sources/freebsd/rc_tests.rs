//! The rc.d script (`config/procmond.rc`) run by the host's POSIX sh with
//! a stand-in for /etc/rc.subr that, like rc.subr's `run_rc_command
//! start`, runs `start_precmd`, refuses to start when it fails, and
//! otherwise prints the command line rc.subr would run
//! (`$command $rc_flags $command_args`). What daemon(8) and rc.subr do
//! with that line is checked on FreeBSD only (docs/platforms.md).

use std::path::PathBuf;
use std::process::Command;

const SCRIPT: &str = include_str!("../../../../../config/procmond.rc");

const RC_SUBR: &str = r#"
load_rc_config() { :; }
warn() { echo "${0##*/}: WARNING: $*" >&2; }
err() { _e=$1; shift; echo "${0##*/}: ERROR: $*" >&2; exit "$_e"; }
run_rc_command() {
	if [ -n "$start_precmd" ] && ! eval "$start_precmd"; then
		warn "failed precmd routine for ${name}"
		return 1
	fi
	echo "$command $rc_flags $command_args"
}
"#;

/// Runs `procmond.rc start` with `vars` in its environment (as rc.conf
/// would set them): the exit status and what it printed (stdout, stderr).
fn start(test: &str, vars: &[(&str, &str)]) -> (bool, String, String) {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("procmond-rc-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let subr = dir.join("rc.subr");
    std::fs::write(&subr, RC_SUBR).expect("rc.subr");
    let script = SCRIPT.replace(". /etc/rc.subr", &format!(". {}", subr.display()));
    assert_ne!(script, SCRIPT, "the script sources /etc/rc.subr");
    let path = dir.join("procmond");
    std::fs::write(&path, script).expect("script");
    let mut cmd = Command::new("sh");
    cmd.arg(&path)
        .arg("start")
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("sh runs");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A binary that is not there is refused before daemon(8) starts: daemon
/// would otherwise restart the failing exec every few seconds, forever.
#[test]
fn missing_binary_is_refused() {
    let (ok, out, err) = start("missing", &[("procmond_binary", "/nonexistent/procmond")]);
    assert!(!ok, "started without a binary: {out}");
    assert!(err.contains("/nonexistent/procmond"), "{err}");
    assert!(!out.contains("/usr/sbin/daemon"), "{out}");
}

/// The command line: daemon(8) supervising `procmond agent`.
#[test]
fn daemon_supervises_the_agent() {
    let (ok, out, err) = start("runs", &[("procmond_binary", "/bin/sh")]);
    assert!(ok, "{err}");
    assert!(out.starts_with("/usr/sbin/daemon "), "{out}");
    assert!(out.contains(" -r -R 5 "), "{out}");
    assert!(
        out.contains(" /bin/sh agent --config /usr/local/etc/procmond/agent.yaml"),
        "{out}"
    );
}

/// daemon(8) refuses `-R 0` (strtonum from 1): 0 means no restart, and
/// what is not a number of seconds is refused before daemon(8) runs.
#[test]
fn restart_delay_zero_and_garbage() {
    let zero = [
        ("procmond_binary", "/bin/sh"),
        ("procmond_restart_delay", "0"),
    ];
    let (ok, out, err) = start("zero", &zero);
    assert!(ok, "{err}");
    assert!(!out.contains(" -R "), "{out}");
    assert!(!out.contains(" -r "), "{out}");
    for bad in ["x", "-1", "2s", "99999999999"] {
        let vars = [
            ("procmond_binary", "/bin/sh"),
            ("procmond_restart_delay", bad),
        ];
        let (ok, out, err) = start("bad", &vars);
        assert!(!ok, "delay {bad:?} accepted: {out}");
        assert!(err.contains("procmond_restart_delay"), "{err}");
    }
}
